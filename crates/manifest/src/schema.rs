//! The manifest's JSON Schema (draft 2020-12), for editors and CI linters.
//!
//! Every object's `properties` are generated from the key lists in [`crate::keys`], the
//! same lists the decoder checks mappings against. A key without a schema here would
//! get the schema `false`, which the tests reject. Metric names, `N of M` with `N <= M`,
//! host counts, shares and durations that must not be zero, monitor methods and
//! thresholds a metric can reach are checked here as strictly as the decoder does.
//! What JSON Schema cannot say is left to `rollwave` itself: a value that must name
//! something defined elsewhere in the document (a stage's environment, a wave's regions,
//! a `monitor:NAME` metric; JSON Schema has no standard way to compare a value with
//! another part of the instance), names unique within a list, every region being in a
//! wave, and thresholds that are always crossed.

use crate::decode::MONITOR_METHODS;
use crate::keys;
use rollwave_core::alarm::{Gauge, MetricRange, MonitorField, TrafficMetric};
use rollwave_core::manifest::{JUDGED_METRICS, JudgeMethod, JudgeSettings};
use serde_json::{Map, Value, json};

/// The schema's name, which editors key their caches on: a URN, since no URL of the
/// project's serves it (`rollwave schema` prints it).
pub const SCHEMA_ID: &str = "urn:rollwave:manifest-schema";

pub const NAME_PATTERN: &str = "^[A-Za-z0-9._-]+$";
/// Units largest first, each at most once; emptiness is excluded by `minLength`.
pub const DURATION_PATTERN: &str = "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$";
pub const PERCENTAGE_PATTERN: &str = "^(100(\\.0{1,2})?|[0-9]{1,2}(\\.[0-9]{1,2})?)%$";
/// A percentage that is not zero (`0%`, `00.00%`).
const ZERO_PERCENTAGE_PATTERN: &str = "^0{1,2}(\\.0{1,2})?%$";
/// A duration of no time at all (`0s`, `0h0m`).
const ZERO_DURATION_PATTERN: &str = "^(0+[dhms])+$";
const DAY: &str = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const TIME: &str = "([01][0-9]|2[0-3]):[0-5][0-9]";
const DATE: &str = "[0-9]{4}-[0-9]{2}-[0-9]{2}";
const NUMBER: &str = "[-+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?";

/// Each object type of the manifest: its name under `$defs` and its keys.
pub(crate) const OBJECTS: &[(&str, &[&str], &[&str])] = &[
    ("manifest", keys::MANIFEST, keys::MANIFEST_REQUIRED),
    ("environment", keys::ENVIRONMENT, keys::ENVIRONMENT_REQUIRED),
    ("region", keys::REGION, keys::REGION_REQUIRED),
    ("function", keys::FUNCTION, keys::FUNCTION_REQUIRED),
    ("functionRouter", keys::FUNCTION_ROUTER, keys::FUNCTION_ROUTER),
    ("exec", keys::EXEC, keys::EXEC_REQUIRED),
    ("notification", keys::NOTIFICATION, keys::NOTIFICATION_REQUIRED),
    ("monitor", keys::MONITOR, keys::MONITOR_REQUIRED),
    ("monitorRequest", keys::MONITOR_REQUEST, keys::MONITOR_REQUEST_REQUIRED),
    ("monitorExpect", keys::MONITOR_EXPECT, &[]),
    ("strategy", keys::STRATEGY, &[]),
    ("oneBoxSettings", keys::ONE_BOX, &[]),
    ("rolling", keys::ROLLING, &[]),
    ("bakeSettings", keys::BAKE, &[]),
    ("judgeSettings", keys::JUDGE, &[]),
    ("judgedMetric", keys::JUDGE_METRIC, keys::JUDGE_METRIC_REQUIRED),
    ("stage", keys::STAGE, keys::STAGE_REQUIRED),
    ("test", keys::TEST, keys::TEST_REQUIRED),
    ("wave", keys::WAVE, keys::WAVE_REQUIRED),
    ("alarm", keys::ALARM, keys::ALARM_REQUIRED),
    ("windows", keys::WINDOWS, &[]),
];

fn reference(def: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{def}") })
}

fn described(mut schema: Value, description: &str) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert("description".to_owned(), Value::String(description.to_owned()));
    }
    schema
}

/// The schema of one key of one object type; `None` for a key this file forgot.
fn property(object: &str, key: &str) -> Option<Value> {
    let duration = reference("duration");
    let schema = match (object, key) {
        ("manifest", "service") => described(reference("name"), "The service this pipeline deploys."),
        ("manifest", "environments") => described(
            named_map(reference("environment")),
            "Where hosts live, by environment name. Counts are for simulation and static fleets.",
        ),
        ("manifest", "strategy") => {
            described(reference("strategy"), "Rollout defaults; a stage or a wave may override any part.")
        }
        ("manifest", "stages") => {
            described(json!({ "type": "array", "minItems": 1, "items": reference("stage") }), "The pipeline, in order.")
        }
        ("manifest", "alarms") => json!({ "type": "array", "items": reference("alarm") }),
        ("manifest", "notifications") => described(
            json!({ "type": "array", "items": reference("notification") }),
            "Webhooks told when a release halts, is rolled back, completes, stays blocked or is suspected of a regression.",
        ),
        ("manifest", "monitors") => described(
            json!({ "type": "array", "items": reference("monitor") }),
            "Synthetic requests sent to every host, day and night; metrics monitor:NAME:success_rate and monitor:NAME:latency_ms.",
        ),
        ("monitor", "name") => reference("name"),
        ("monitor", "request") => reference("monitorRequest"),
        ("monitor", "expect") => reference("monitorExpect"),
        ("monitor", "every") => described(reference("positiveDuration"), "Default 1m."),
        ("monitorRequest", "method") => described(
            json!({ "type": "string", "pattern": method_pattern(), "default": "GET" }),
            "GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, in any case.",
        ),
        ("monitorRequest", "path") => json!({ "type": "string", "pattern": "^/" }),
        ("monitorRequest", "headers") => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        ("monitorRequest", "body") => json!({ "type": "string" }),
        ("monitorExpect", "status") => json!({ "type": "integer", "minimum": 100, "maximum": 599, "default": 200 }),
        ("monitorExpect", "body_contains") => json!({ "type": "string" }),
        ("monitorExpect", "max_latency") => reference("positiveDuration"),
        ("notification", "url") => described(
            json!({ "oneOf": [
                { "type": "string", "pattern": "^\\s*[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+" },
                secret_env(),
                secret_file(),
            ] }),
            "An http(s) URL (shown in reads only as scheme://host/…), or a secret read on the server when a notification is sent: { env: NAME } or { file: /absolute/path }. Required but with format: pagerduty, where it defaults to https://events.pagerduty.com/v2/enqueue.",
        ),
        ("notification", "format") => described(
            json!({ "enum": ["json", "slack", "teams", "pagerduty"], "default": "json" }),
            "json: rollwave's own object; slack: Slack's incoming webhooks; teams: an Adaptive Card for Microsoft Teams; pagerduty: PagerDuty's Events API v2 (trouble triggers, completed resolves).",
        ),
        ("notification", "routing_key") => described(
            secret_reference(),
            "With format: pagerduty only, and required there: the integration key of PagerDuty's Events API v2, read on the server, never written here.",
        ),
        ("notification", "secret") => described(
            secret_reference(),
            "A key read on the server, never written here: each POST then carries x-rollwave-signature: sha256=<hex HMAC-SHA256 of the body>.",
        ),
        ("notification", "on") => described(
            json!({ "type": "array", "minItems": 1, "items": { "enum": ["halted", "rolled_back", "completed", "blocked", "regression_suspected"] } }),
            "Default: all of them.",
        ),
        ("notification", "blocked_after") => {
            described(duration.clone(), "How long a step is blocked before `blocked` is sent. Default 30m.")
        }
        ("manifest", "windows") => reference("windows"),
        ("manifest", "watch") => described(
            duration,
            "After a release finishes in a scope, alarms there are still attributed to it this long. Default 24h.",
        ),
        ("manifest", "signing_keys") => described(
            json!({ "type": "object", "minProperties": 1, "propertyNames": reference("name"),
                    "additionalProperties": { "type": "string", "pattern": "^\\s*RW[A-Za-z0-9+/]{54}\\s*$" } }),
            "Minisign (ed25519) public keys artifacts may be signed with, by name: the base64 line of a .pub file. Agents fetch ARTIFACT.minisig beside the artifact and check it against them.",
        ),
        ("environment", "require_signatures") => described(
            json!({ "type": "boolean", "default": false }),
            "Agents here refuse an artifact without a valid signature by one of signing_keys (a signature that does not verify is refused everywhere). Needs signing_keys, and agents: not for functions or exec environments.",
        ),
        ("environment", "regions") => named_map(reference("region")),
        ("environment", "exec") => described(
            reference("exec"),
            "For targets without an agent: commands the server runs per host to deploy and roll back.",
        ),
        ("exec", "deploy" | "rollback") => described(
            json!({ "type": "string", "minLength": 1, "not": { "pattern": unknown_exec_template() } }),
            "Run with sh -c; {{service}} {{environment}} {{region}} {{zone}} {{host}} {{version}} {{artifact}} {{share}} \
             stand for the variables ROLLWAVE_SERVICE… that carry their values; no other {{name}} is allowed.",
        ),
        ("exec", "timeout") => described(reference("positiveDuration"), "Default 10m."),
        ("region", "timezone") => described(
            json!({ "type": "string" }),
            "IANA time zone that windows are read in, e.g. Europe/Dublin. Default UTC.",
        ),
        ("region", "zones") => described(
            named_map(json!({ "type": "integer", "minimum": 1, "maximum": u32::MAX })),
            "Host count per zone; hosts are named {zone}-{n}. Zone names are unique in an environment.",
        ),
        ("region", "functions") => described(
            json!({ "type": "array", "minItems": 1, "items": reference("function") }),
            "A region of functions instead of zones of hosts: each rollout step shifts every function's alias.",
        ),
        ("function", "name") => {
            described(json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" }), "The Lambda function's name.")
        }
        ("function", "queue") => described(
            json!({ "type": "string", "pattern": "^arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,80}$" }),
            "The SQS queue (ARN) that triggers the function: rollwave keeps two event source mappings from it, \
             canary messages to the canary alias and the rest to the alias.",
        ),
        ("function", "canary_alias") => described(
            json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$", "not": { "pattern": "^[0-9]+$" }, "default": "canary" }),
            "With a queue: the alias rollwave keeps on the version in flight.",
        ),
        ("function", "router") => described(
            reference("functionRouter"),
            "Where rollwave router sends each track of the function's HTTP callers; the alias is then not weighted. \
             At most one function of a region.",
        ),
        ("functionRouter", "stable" | "canary") => described(
            json!({ "type": "string", "pattern": "^[A-Za-z0-9.:\\[\\]-]+:[0-9]{1,5}$" }),
            "host:port reaching the alias (stable) or the canary alias (canary) over HTTP.",
        ),
        ("function", "alias") => described(
            json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$", "not": { "pattern": "^[0-9]+$" } }),
            "The alias callers invoke; rollwave shifts its routing.",
        ),
        ("strategy" | "stage" | "wave", "one_box") => reference("oneBox"),
        ("strategy" | "stage" | "wave", "rolling") => reference("rolling"),
        ("strategy" | "stage" | "wave", "bake") => {
            described(reference("bake"), "The bake after every region of a wave has finished.")
        }
        ("oneBoxSettings", "hosts") => json!({ "type": "integer", "minimum": 1, "maximum": u32::MAX, "default": 1 }),
        ("oneBoxSettings", "max_share") => described(
            reference("nonZeroPercentage"),
            "The one-box never takes more than this share of its region. Default 10%.",
        ),
        ("oneBoxSettings", "bake") => described(reference("bake"), "Default 1h."),
        ("oneBoxSettings", "judge") => described(
            json!({ "oneOf": [{ "type": "boolean", "default": false }, reference("judgeSettings")] }),
            "true (or a mapping): the one-box bake ends only once the one-box judge has passed it.",
        ),
        ("judgeSettings", "method") => described(
            json!({ "enum": JudgeMethod::ALL.map(JudgeMethod::as_str), "default": JudgeMethod::default().as_str() }),
            "mann_whitney: Kayenta's rank test of per-bin values; sequential: anytime-valid tests of error and slow-request rates; off: no verdict, alarms only.",
        ),
        ("judgeSettings", "alpha") => described(
            json!({ "type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": JudgeSettings::default().alpha }),
            "sequential: the bound on the chance that a release no worse than its baseline is ever judged failing.",
        ),
        ("judgeSettings", "metrics") => described(
            json!({ "type": "array", "minItems": 1, "items": reference("judgedMetric") }),
            "The metrics compared, each once. Default: error_rate (critical) and latency_p99_ms.",
        ),
        ("judgeSettings", "min_samples") => described(
            json!({ "type": "integer", "minimum": 1, "default": JudgeSettings::default().min_samples }),
            "sequential: requests each side needs before a pass (default 50); mann_whitney: per-host data bins each side needs before any verdict (default 3).",
        ),
        ("judgedMetric", "metric") => described(
            json!({ "enum": JUDGED_METRICS.map(TrafficMetric::as_str) }),
            "A metric measured per host from traffic; for the sequential judge latency_p99_ms is the share of requests slower than each latency bound.",
        ),
        ("judgedMetric", "direction") => described(
            json!({ "enum": ["increase", "decrease", "either"], "default": "increase" }),
            "The bad direction; the sequential judge tests for a rise only.",
        ),
        ("judgedMetric", "critical") => described(
            json!({ "type": "boolean" }),
            "true: a failure on this metric rolls the one-box back. Otherwise it lowers Kayenta's score (mann_whitney) or holds the one-box for an operator (sequential).",
        ),
        ("judgedMetric", "allowed_increase") => {
            described(json!({ "type": "number", "minimum": 1 }), "The canary-to-baseline ratio still counted as good.")
        }
        ("rolling", "batch") => described(
            json!({ "oneOf": [
                { "$ref": "#/$defs/nonZeroPercentage" },
                { "type": "integer", "minimum": 1, "maximum": u32::MAX },
            ] }),
            "Largest batch: a share of each zone (default 33%) or a host count.",
        ),
        ("rolling", "zone_bake") => described(reference("bake"), "Bake after each zone. Default 0s."),
        ("rolling", "steps") => described(
            json!({ "type": "array", "minItems": 1, "items": { "type": "string", "pattern": "^(100|[1-9][0-9]?)%$" } }),
            "For regions of functions: the share of invocations after each step, rising, the last 100%. \
             Default [25%, 50%, 100%].",
        ),
        ("rolling", "max_failures") => described(
            json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX, "default": 0 }),
            "Failed hosts a zone tolerates before it is rolled back.",
        ),
        ("rolling", "deploy_timeout") => described(
            reference("positiveDuration"),
            "A host deployment that has not reported by then counts as failed. Default 10m.",
        ),
        ("bakeSettings", "time") => duration,
        ("bakeSettings", "min_datapoints") => described(
            json!({ "type": "integer", "minimum": 0 }),
            "Requests the new version must have served; inherits strategy.bake.min_datapoints, default 0.",
        ),
        ("stage" | "test" | "wave" | "alarm", "name") => reference("name"),
        ("stage", "environment") => reference("name"),
        ("stage", "approval") => described(
            json!({ "type": "boolean", "default": false }),
            "A release enters the stage only after an approve command.",
        ),
        ("stage", "tests") => json!({ "type": "array", "items": reference("test") }),
        ("stage", "windows") => described(reference("windows"), "Replaces the top-level allow and/or block lists."),
        ("stage", "waves") => described(
            json!({ "type": "array", "minItems": 1, "items": reference("wave") }),
            "Default: one wave named wave-1 of every region of the environment.",
        ),
        ("test", "run") => json!({ "type": "string", "minLength": 1 }),
        ("test", "timeout") => described(reference("positiveDuration"), "Default 15m."),
        ("wave", "regions") => described(
            json!({ "type": "array", "minItems": 1, "uniqueItems": true, "items": reference("name") }),
            "Regions of the stage's environment, deployed in parallel; each in one wave only.",
        ),
        ("alarm", "metric") => described(
            json!({ "type": "string", "minLength": 1 }),
            "A built-in metric (error_rate, latency_p99_ms, request_rate, cpu_percent, memory_percent, restarts, monitor:NAME:success_rate, monitor:NAME:latency_ms), or any name with source: prometheus.",
        ),
        ("alarm", "scope") => json!({ "enum": ["host", "zone", "region", "environment"], "default": "region" }),
        ("alarm", "threshold") => described(
            json!({ "oneOf": [
                { "type": "number" },
                { "type": "string", "pattern": format!("^\\s*(>=|<=|>|<)?\\s*{NUMBER}\\s*$") },
            ] }),
            "\"> 0.02\", \">= 5\", \"< 1\", \"<= 0.5\"; a bare number means >.",
        ),
        ("alarm", "period") => described(reference("positiveDuration"), "Default 1m; more than 0s."),
        ("alarm", "datapoints") => described(
            json!({ "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 100 },
                { "type": "string", "pattern": datapoints_pattern() },
            ] }),
            "\"N of M\": alarm when N of the last M periods breach (1 <= N <= M <= 100). Default \"1 of 1\".",
        ),
        ("alarm", "missing") => json!({
            "enum": ["missing", "notBreaching", "not_breaching", "breaching", "ignore"],
            "default": "missing",
        }),
        ("alarm", "source") => json!({ "enum": ["builtin", "prometheus", "cloudwatch"], "default": "builtin" }),
        ("alarm", "namespace") => described(
            json!({ "type": "string", "pattern": "^[A-Za-z0-9.\\-_/#:]{1,255}$", "default": "AWS/Lambda" }),
            "With source: cloudwatch, the metric's namespace.",
        ),
        ("alarm", "dimensions") => described(
            json!({ "type": "object", "maxProperties": 30, "additionalProperties": { "type": "string", "minLength": 1 } }),
            "With source: cloudwatch: {{function}}, {{alias}}, {{function_version}}, {{region}}… are filled in per \
             function. Default for AWS/Lambda: FunctionName, Resource (function:alias) and ExecutedVersion.",
        ),
        ("alarm", "statistic") => described(
            json!({ "type": "string", "pattern": "^(Sum|Average|Minimum|Maximum|SampleCount|p[0-9]{1,2}(\\.[0-9]+)?)$", "default": "Sum" }),
            "With source: cloudwatch: Sum, Average, Minimum, Maximum, SampleCount or a percentile such as p99.",
        ),
        ("alarm", "query") => described(
            json!({ "type": "string", "minLength": 1 }),
            "PromQL, required with source: prometheus; {{service}}, {{region}}… are filled in per scope.",
        ),
        ("windows", "allow") => described(
            json!({ "type": "array", "items": {
                "type": "string",
                "pattern": format!(
                    "^\\s*(daily|\\*|{DAY}(-{DAY})?(,{DAY}(-{DAY})?)*)\\s+{TIME}-({TIME}|24:00)\\s*$"
                ),
            } }),
            "\"DAYS HH:MM-HH:MM\" in region-local time; a step starts only inside a window. None: always.",
        ),
        ("windows", "block") => json!({ "type": "array", "items": {
            "type": "string",
            "pattern": format!("^{DATE}(/{DATE})?$"),
        } }),
        _ => return None,
    };
    Some(schema)
}

/// Any of the monitor methods, in any case.
fn method_pattern() -> String {
    let any_case = |method: &str| -> String {
        method.chars().map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())).collect()
    };
    let methods: Vec<String> = MONITOR_METHODS.iter().map(|m| any_case(m)).collect();
    format!("^\\s*({})\\s*$", methods.join("|"))
}

/// The numbers from 1 to `max` (at most 100), written as the decoder reads them.
fn one_to(max: u32) -> String {
    let tens = max / 10;
    let mut parts = Vec::new();
    match (tens, max % 10) {
        (0, units) => parts.push(format!("[1-{units}]")),
        _ => parts.push("[1-9]".to_owned()),
    }
    for t in 1..tens.min(10) {
        parts.push(format!("{t}[0-9]"));
    }
    if (1..10).contains(&tens) {
        parts.push(format!("{tens}[0-{}]", max % 10));
    }
    if max == 100 {
        parts.push("100".to_owned());
    }
    format!("0*({})", parts.join("|"))
}

/// `N of M` with `1 <= N <= M <= 100`, or `N` alone: one alternative per M.
fn datapoints_pattern() -> String {
    let pairs: Vec<String> = (1..=100).map(|m| format!("{}\\s+of\\s+0*{m}", one_to(m))).collect();
    format!("^\\s*({}|{})\\s*$", one_to(100), pairs.join("|"))
}

/// A number as the threshold grammar reads it, limited to what a metric's `range` allows
/// where a regular expression can say so simply: signs and upper bounds of 1 and 100.
fn threshold_pattern(range: Option<MetricRange>) -> String {
    let comparison = "^\\s*(>=|<=|>|<)?\\s*";
    let number = match range.map(|r| (r.min, r.max)) {
        Some((min, Some(max))) if min == 0.0 && max == 1.0 => {
            "([+]?0+(\\.[0-9]*)?|[+]?0*\\.[0-9]+|[+]?0*1(\\.0*)?|[+]?([0-9]*\\.?[0-9]+|[0-9]+\\.)[eE][-+]?[0-9]+)".to_owned()
        }
        Some((min, Some(max))) if min == 0.0 && max == 100.0 => {
            "([+]?0*[0-9]{1,2}(\\.[0-9]*)?|[+]?0*\\.[0-9]+|[+]?0*100(\\.0*)?|[+]?([0-9]*\\.?[0-9]+|[0-9]+\\.)[eE][-+]?[0-9]+)".to_owned()
        }
        Some((0.0, None)) => format!("[+]?{}", NUMBER.trim_start_matches("[-+]?")),
        _ => NUMBER.to_owned(),
    };
    format!("{comparison}{number}\\s*$")
}

/// The threshold's schema for alarms on `names`: numbers within `range`. A bare number
/// means `>`, so it must be below the range's top; a comparison's text is held to the
/// range only, and the decoder refuses the edges that are never or always crossed.
fn threshold_rule(names: Vec<&str>, range: MetricRange) -> Value {
    let mut number = json!({ "type": "number", "minimum": range.min });
    if let Some(max) = range.max {
        number["exclusiveMaximum"] = json!(max);
    }
    json!({
        "if": {
            "properties": { "metric": { "enum": names } },
            "required": ["metric"],
            "not": { "properties": { "source": { "enum": ["prometheus", "cloudwatch"] } }, "required": ["source"] },
        },
        "then": { "properties": { "threshold": { "oneOf": [
            number,
            { "type": "string", "pattern": threshold_pattern(Some(range)) },
        ] } } },
    })
}

/// Built-in metrics by name, and `monitor:NAME:FIELD` by pattern, with the rule for
/// their thresholds; alarms with `source: prometheus` may name any metric.
fn metric_rules() -> Value {
    let mut names: Vec<&str> = TrafficMetric::ALL.iter().map(|(n, _)| *n).collect();
    names.extend(Gauge::ALL.iter().map(|(n, _)| *n));
    let fields: Vec<&str> = MonitorField::ALL.iter().map(|(f, _)| *f).collect();
    let monitor = format!("^monitor:[A-Za-z0-9._-]+:({})$", fields.join("|"));
    let mut rules = vec![json!({
        "if": { "not": { "properties": { "source": { "enum": ["prometheus", "cloudwatch"] } }, "required": ["source"] } },
        "then": { "properties": { "metric": { "anyOf": [
            { "enum": names },
            { "type": "string", "pattern": monitor },
        ] } } },
    })];
    // `namespace`, `dimensions` and `statistic` go with `source: cloudwatch` only.
    rules.push(json!({
        "if": { "not": { "properties": { "source": { "const": "cloudwatch" } }, "required": ["source"] } },
        "then": { "not": { "anyOf": [
            { "required": ["namespace"] }, { "required": ["dimensions"] }, { "required": ["statistic"] },
        ] } },
    }));
    for (name, metric) in TrafficMetric::ALL {
        rules.push(threshold_rule(vec![name], metric.range()));
    }
    for (name, gauge) in Gauge::ALL {
        rules.push(threshold_rule(vec![name], gauge.range()));
    }
    for (field, f) in MonitorField::ALL {
        let range = f.range();
        let pattern = format!("^monitor:[A-Za-z0-9._-]+:{field}$");
        let mut rule = threshold_rule(vec![], range);
        rule["if"]["properties"]["metric"] = json!({ "type": "string", "pattern": pattern });
        rules.push(rule);
    }
    Value::Array(rules)
}

/// `{ env: NAME }`: a secret read from the server's environment.
fn secret_env() -> Value {
    json!({
        "type": "object",
        "properties": { "env": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,255}$" } },
        "required": ["env"],
        "additionalProperties": false,
    })
}

/// `{ file: PATH }`: a secret read from a file on the server.
fn secret_file() -> Value {
    json!({
        "type": "object",
        "properties": { "file": { "type": "string", "pattern": "^/" } },
        "required": ["file"],
        "additionalProperties": false,
    })
}

/// A secret read on the server, never the secret itself: exactly one of `env` and `file`.
fn secret_reference() -> Value {
    json!({ "oneOf": [secret_env(), secret_file()] })
}

/// A mapping from names to values of one schema.
fn named_map(values: Value) -> Value {
    json!({
        "type": "object",
        "minProperties": 1,
        "propertyNames": { "pattern": NAME_PATTERN },
        "additionalProperties": values,
    })
}

fn object(name: &str, keys: &[&str], required: &[&str]) -> Value {
    let properties: Map<String, Value> =
        keys.iter().map(|key| ((*key).to_owned(), property(name, key).unwrap_or(Value::Bool(false)))).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The JSON Schema (draft 2020-12) of a pipeline manifest.
pub fn manifest_schema() -> Value {
    let mut defs = Map::new();
    for (name, keys, required) in OBJECTS.iter().skip(1) {
        defs.insert((*name).to_owned(), object(name, keys, required));
    }
    // A region is zones of hosts or functions: exactly one of the two.
    if let Some(Value::Object(region)) = defs.get_mut("region") {
        region.insert(
            "oneOf".to_owned(),
            json!([{ "required": ["zones"], "not": { "required": ["functions"] } },
                   { "required": ["functions"], "not": { "required": ["zones"] } }]),
        );
    }
    let mut add = |name: &str, schema: Value| defs.insert(name.to_owned(), schema);
    add("name", json!({ "type": "string", "pattern": NAME_PATTERN }));
    add(
        "duration",
        json!({
            "type": "string",
            "minLength": 2,
            "pattern": DURATION_PATTERN,
            "description": "A whole number and a unit (d, h, m, s), largest unit first: 90s, 30m, 12h, 2d, 1h30m.",
        }),
    );
    add(
        "percentage",
        json!({ "type": "string", "pattern": PERCENTAGE_PATTERN, "description": "0% to 100%, e.g. 33% or 10.5%." }),
    );
    add(
        "nonZeroPercentage",
        json!({
            "type": "string",
            "pattern": PERCENTAGE_PATTERN,
            "not": { "pattern": ZERO_PERCENTAGE_PATTERN },
            "description": "More than 0%, up to 100%, e.g. 33% or 10.5%.",
        }),
    );
    add(
        "positiveDuration",
        json!({
            "allOf": [reference("duration"), { "not": { "pattern": ZERO_DURATION_PATTERN } }],
            "description": "A duration longer than 0s.",
        }),
    );
    add(
        "bake",
        json!({
            "description": "A duration (time only) or { time, min_datapoints }: a bake ends when both are met.",
            "oneOf": [reference("duration"), reference("bakeSettings")],
        }),
    );
    add(
        "oneBox",
        json!({
            "description": "false for no one-box; else the first hosts of a region's first zone, deployed and baked first.",
            "oneOf": [{ "type": "boolean" }, reference("oneBoxSettings")],
        }),
    );

    // `query` goes with `source: prometheus`, and only with it.
    if let Some(Value::Object(alarm)) = defs.get_mut("alarm") {
        alarm.insert(
            "if".to_owned(),
            json!({ "properties": { "source": { "const": "prometheus" } }, "required": ["source"] }),
        );
        alarm.insert("then".to_owned(), json!({ "required": ["query"] }));
        alarm.insert("else".to_owned(), json!({ "not": { "required": ["query"] } }));
        alarm.insert("allOf".to_owned(), metric_rules());
    }

    // `blocked_after` only matters to a webhook that hears of `blocked`; `routing_key`
    // goes with `format: pagerduty`, and only with it, whose `url` has a default.
    if let Some(Value::Object(notification)) = defs.get_mut("notification") {
        notification.insert("if".to_owned(), json!({ "required": ["blocked_after", "on"] }));
        notification
            .insert("then".to_owned(), json!({ "properties": { "on": { "contains": { "const": "blocked" } } } }));
        notification.insert(
            "allOf".to_owned(),
            json!([{
                "if": { "properties": { "format": { "const": "pagerduty" } }, "required": ["format"] },
                "then": { "required": ["routing_key"] },
                "else": { "required": ["url"], "not": { "required": ["routing_key"] } },
            }]),
        );
    }

    let (name, keys, required) = OBJECTS[0];
    let mut root = object(name, keys, required);
    if let Value::Object(map) = &mut root {
        let mut head = Map::new();
        head.insert("$schema".to_owned(), json!("https://json-schema.org/draft/2020-12/schema"));
        head.insert("$id".to_owned(), json!(SCHEMA_ID));
        head.insert("title".to_owned(), json!("rollwave pipeline manifest"));
        head.append(map);
        head.insert("$defs".to_owned(), Value::Object(defs));
        *map = head;
    }
    root
}

/// A pattern that finds a `{{name}}` that is not an `exec` template.
fn unknown_exec_template() -> String {
    let known: Vec<&str> = rollwave_core::manifest::ExecTemplate::ALL.iter().map(|t| t.name()).collect();
    format!("\\{{\\{{(?!(?:{})\\}}\\}})[^}}]*\\}}\\}}", known.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_key_has_a_schema_and_nothing_else_does() {
        let schema = manifest_schema();
        for (name, keys, required) in OBJECTS {
            let object = if *name == "manifest" { &schema } else { &schema["$defs"][name] };
            let properties = object["properties"].as_object().expect("generated objects have properties");
            // serde_json sorts object keys, so compare sorted.
            let listed: Vec<&str> = properties.keys().map(String::as_str).collect();
            let mut expected = keys.to_vec();
            expected.sort_unstable();
            assert_eq!(listed, expected, "properties of {name}");
            for (key, value) in properties {
                assert_ne!(value, &Value::Bool(false), "{name}.{key} has no schema");
            }
            assert_eq!(object["additionalProperties"], json!(false), "{name}");
            let required_listed: Vec<&str> =
                object["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            assert_eq!(required_listed, *required, "required keys of {name}");
            assert!(required.iter().all(|r| keys.contains(r)), "{name} requires an unknown key");
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(value: &Value, defs: &Map<String, Value>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let name = target.strip_prefix("#/$defs/").expect("local references only");
                        assert!(defs.contains_key(name), "dangling $ref {target}");
                    }
                    map.values().for_each(|v| walk(v, defs));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, defs)),
                _ => {}
            }
        }
        let schema = manifest_schema();
        let defs = schema["$defs"].as_object().expect("$defs").clone();
        walk(&schema, &defs);
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
}
