//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`. It is written
//! here by hand beside the wire types of [`crate::api`]; the test `tests/it/openapi.rs`
//! holds it to the router (every served route, every path parameter), to
//! `openapi-spec-validator`, and CI runs Schemathesis against a live server with it.
//!
//! The dashboard's HTML pages are not part of it: they are for browsers, log in with a
//! cookie and post forms checked against their origin, and answer HTML for every status.

use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Access {
    /// Anyone, no token.
    Open,
    /// A person's token (viewer or more), or anyone when the server runs with `--anonymous-read`.
    Read,
    /// A person's token with at least this role.
    Role(&'static str),
    /// An admin token, or the agent token of the host in the path or body.
    Host,
    /// A reader, or the router token of the region in the path.
    RouterOrRead,
    /// An admin, an agent (gauges and traffic of its own host) or a router (traffic of its region's hosts).
    Pusher,
    /// A reader, or an agent token of the service in the path.
    AgentOrRead,
}

impl Access {
    fn describe(self) -> String {
        match self {
            Access::Open => "No token needed.".into(),
            Access::Read => "Needs a person's token (viewer or more) unless the server runs with `--anonymous-read`; \
                             agent and router tokens are refused (403)."
                .into(),
            Access::Role(role) => format!("Needs a token with the `{role}` role or higher."),
            Access::Host => "Needs an admin token, or the agent token of this very host.".into(),
            Access::RouterOrRead => {
                "A reader's token (see reads), or the router token of this region; only that router may send \
                 `router`."
                    .into()
            }
            Access::Pusher => "Needs an admin token, an agent token (its own host's gauges and traffic) or a router \
                               token (traffic of its region's hosts)."
                .into(),
            Access::AgentOrRead => "A reader's token (see reads), or an agent token of this service.".into(),
        }
    }

    /// The statuses refusing a caller: 401 without a valid token, 403 without the right.
    fn refusals(self) -> &'static [u16] {
        match self {
            Access::Open => &[],
            _ => &[401, 403],
        }
    }
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}

fn integer() -> Value {
    json!({ "type": "integer", "format": "int64" })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// An object with these properties, the `required` ones always present.
fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

/// `(version, hosts running it)` pairs.
fn version_counts() -> Value {
    array(json!({ "type": "array", "prefixItems": [string(), count()], "minItems": 2, "maxItems": 2 }))
}

fn path_param(name: &str) -> Value {
    let kind = if name == "id" { integer() } else { string() };
    json!({ "name": name, "in": "path", "required": true, "schema": kind })
}

fn query(name: &str, required: bool, kind: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": required, "schema": kind, "description": description })
}

/// One operation: `ok` is its success status with its schema (or a media type and
/// description for non-JSON answers), `errors` the other statuses it can answer.
struct Op {
    summary: &'static str,
    access: Access,
    params: Vec<Value>,
    body: Option<(&'static str, bool)>,
    ok: Vec<(u16, Value)>,
    errors: Vec<u16>,
}

impl Op {
    fn new(summary: &'static str, access: Access) -> Self {
        Op { summary, access, params: Vec::new(), body: None, ok: Vec::new(), errors: Vec::new() }
    }

    fn json(mut self, status: u16, name: &str) -> Self {
        self.ok.push((
            status,
            json!({ "description": "OK", "content": { "application/json": { "schema": schema(name) } } }),
        ));
        self
    }

    fn text(mut self, status: u16, media: &str, description: &str) -> Self {
        self.ok.push((status, json!({ "description": description, "content": { media: { "schema": string() } } })));
        self
    }

    /// A JSON body of schema `name`; `required: false` when an empty body counts as `{}`.
    fn body(mut self, name: &'static str, required: bool) -> Self {
        self.body = Some((name, required));
        self
    }

    fn params(mut self, params: Vec<Value>) -> Self {
        self.params.extend(params);
        self
    }

    fn errors(mut self, codes: &[u16]) -> Self {
        self.errors.extend_from_slice(codes);
        self
    }

    fn build(self, path: &str) -> Value {
        let mut responses = Map::new();
        for (status, response) in self.ok {
            responses.insert(status.to_string(), response);
        }
        let mut errors: Vec<u16> = self.access.refusals().iter().copied().chain(self.errors).collect();
        if self.body.is_some() {
            errors.extend([400, 413, 422]);
        }
        errors.sort_unstable();
        errors.dedup();
        for code in errors {
            responses.insert(code.to_string(), json!({ "$ref": "#/components/responses/Error" }));
        }
        let mut params: Vec<Value> = path_params(path).into_iter().map(path_param).collect();
        params.extend(self.params);
        let mut o = json!({ "summary": self.summary, "description": self.access.describe(), "responses": responses });
        if !params.is_empty() {
            o["parameters"] = Value::Array(params);
        }
        o["security"] = match self.access {
            Access::Open => json!([]),
            Access::Read | Access::RouterOrRead | Access::AgentOrRead => json!([{ "bearer": [] }, {}]),
            _ => json!([{ "bearer": [] }]),
        };
        if let Some((name, required)) = self.body {
            o["requestBody"] =
                json!({ "required": required, "content": { "application/json": { "schema": schema(name) } } });
        }
        o
    }
}

/// The `{name}` parts of a path template.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|part| part.strip_prefix('{')?.strip_suffix('}')).collect()
}

/// Statuses of a change the leader applies: unknown service, refused by the engine,
/// no leader to apply it.
const CHANGE: [u16; 3] = [404, 409, 503];

fn operations() -> Vec<(&'static str, &'static str, Op)> {
    use Access::*;
    let wait = || query("wait", false, count(), "Seconds to wait for a change (at most 60 are waited); 0 by default.");
    let service_filter = || query("service", false, string(), "Only this service's events.");
    vec![
        ("/healthz", "get", Op::new("Liveness", Open).text(200, "text/plain", "ok")),
        (
            "/readyz",
            "get",
            Op::new("Readiness: the log has been replayed", Open)
                .text(200, "text/plain", "ready")
                .text(503, "text/plain", "replaying the log"),
        ),
        ("/metrics", "get", Op::new("Prometheus metrics (counts per route and per release outcome)", Open).text(
            200,
            "text/plain",
            "Prometheus text format",
        )),
        ("/v1/openapi.json", "get", Op::new("This document", Open).json(200, "Document")),
        ("/v1/services", "get", Op::new("List services", Read).json(200, "ServiceList")),
        (
            "/v1/services",
            "post",
            Op::new("Apply a manifest: creates (201) or updates (200) the service it names", Role("admin"))
                .body("ApplyService", true)
                .json(200, "ServiceSummary")
                .json(201, "ServiceSummary")
                .errors(&CHANGE),
        ),
        (
            "/v1/services/{service}",
            "get",
            Op::new("A service's status: versions, releases, what is blocked and why", Read)
                .json(200, "ServiceStatus")
                .errors(&[404]),
        ),
        ("/v1/services/{service}/releases", "get", Op::new("List releases", Read).json(200, "ReleaseList").errors(&[404])),
        (
            "/v1/services/{service}/releases",
            "post",
            Op::new("Create a release: it enters the pipeline's first stage", Role("deployer"))
                .body("CreateRelease", true)
                .json(201, "Release")
                .errors(&CHANGE),
        ),
        (
            "/v1/services/{service}/releases/{version}",
            "get",
            Op::new("A release with per-scope versions and its event timeline", Read)
                .json(200, "ReleaseDetail")
                .errors(&[404]),
        ),
        (
            "/v1/services/{service}/releases/{version}/{action}",
            "post",
            Op::new(
                "approve (needs approver), rollback, retry or roll_forward (need deployer); another action is 404",
                Role("deployer"),
            )
            .body("Action", false)
            .json(200, "Release")
            .errors(&CHANGE),
        ),
        (
            "/v1/services/{service}/hold",
            "post",
            Op::new("Hold the service, or one stage", Role("deployer"))
                .body("Action", false)
                .json(200, "ServiceStatus")
                .errors(&CHANGE),
        ),
        (
            "/v1/services/{service}/resume",
            "post",
            Op::new("Resume the service, or one stage", Role("deployer"))
                .body("Action", false)
                .json(200, "ServiceStatus")
                .errors(&CHANGE),
        ),
        (
            "/v1/hosts/register",
            "post",
            Op::new("Register a host; returns what it should run", Host)
                .body("RegisterHost", true)
                .json(200, "Registered")
                .errors(&CHANGE),
        ),
        (
            "/v1/services/{service}/hosts/{environment}/{host}/desired",
            "get",
            Op::new("Long-poll a host's desired version: answers when `command` differs from `after`, or after `wait` seconds; a heartbeat", Host)
                .params(vec![
                    query("after", false, count(), "The command the host has."),
                    wait(),
                    query("flags_after", false, count(), "The flag command the host has: a different one answers too."),
                ])
                .json(200, "Desired")
                .errors(&[400, 404, 409, 422, 503]),
        ),
        (
            "/v1/services/{service}/hosts/{environment}/{host}/report",
            "post",
            Op::new("Report the outcome of a deployment command", Host)
                .body("HostReport", true)
                .json(200, "Accepted")
                .errors(&CHANGE),
        ),
        (
            "/v1/events",
            "get",
            Op::new("Events in log order, paged with `after` and `limit`", Read)
                .params(vec![
                    query("after", false, integer(), "Events after this sequence number (the previous page's `next`)."),
                    query("limit", false, integer(), "Log records read, 1 to 1000 (100 by default)."),
                    service_filter(),
                ])
                .json(200, "EventPage")
                .errors(&[400]),
        ),
        (
            "/v1/events/stream",
            "get",
            Op::new("Live events as Server-Sent Events; resumes after `after` or the Last-Event-ID header", Read)
                .params(vec![
                    query("after", false, integer(), "Send the events after this sequence number first."),
                    service_filter(),
                    json!({ "name": "Last-Event-ID", "in": "header", "required": false, "schema": string() }),
                ])
                .text(200, "text/event-stream", "a stream of Event objects, each with its seq as id and its kind as event")
                .errors(&[400]),
        ),
        ("/v1/tokens", "get", Op::new("Every token, without secrets or hashes", Role("admin")).json(200, "TokenList")),
        (
            "/v1/tokens",
            "post",
            Op::new("Create a token; its secret is returned once", Role("admin"))
                .body("CreateToken", true)
                .json(201, "TokenCreated")
                .errors(&[409]),
        ),
        (
            "/v1/tokens/{id}",
            "delete",
            Op::new("Revoke a token: refused on every replica within a second", Role("admin"))
                .json(200, "Accepted")
                .errors(&[404, 422]),
        ),
        (
            "/v1/tokens/{id}/revoke",
            "post",
            Op::new("Revoke a token (as DELETE /v1/tokens/{id})", Role("admin")).json(200, "Accepted").errors(&[404, 422]),
        ),
        (
            "/v1/audit/verify",
            "get",
            Op::new("Check the audit log's hash chain and its head", Role("admin")).json(200, "AuditVerdict"),
        ),
        ("/v1/cluster", "get", Op::new("This replica and the lease", Read).json(200, "Cluster")),
        (
            "/v1/services/{service}/routes/{environment}/{region}",
            "get",
            Op::new("A region's routing table; with `after`, waits up to `wait` s for a different one", RouterOrRead)
                .params(vec![
                    query("after", false, integer(), "The generation the router has."),
                    wait(),
                    query("router", false, string(), "The router's own `host:port`, through which monitors probe the region."),
                ])
                .json(200, "Routes")
                .errors(&[400, 404, 422]),
        ),
        (
            "/v1/services/{service}/flags/{environment}/{region}",
            "get",
            Op::new(
                "The flag sets a region serves to relays: the flag release rolling out there at its share, and the one before it; with `after`, waits up to `wait` s for a different answer",
                RouterOrRead,
            )
            .params(vec![
                query("after", false, integer(), "The generation the relay has."),
                wait(),
                query("router", false, string(), "Not taken here (400)."),
            ])
            .json(200, "RegionFlags")
            .errors(&[400, 404, 422]),
        ),
        (
            "/v1/services/{service}/flag-sets/{version}",
            "get",
            Op::new("A flag release's flagd document (`baseline` is the empty set)", AgentOrRead)
                .json(200, "FlagSetDocument")
                .errors(&[404]),
        ),
        (
            "/v1/flag-evaluations",
            "post",
            Op::new(
                "Push flag evaluation counts per flag, variant and flag-set version (a region's relay, or an agent of the service); taken whole or not at all",
                Pusher,
            )
            .body("FlagEvaluationsPush", true)
            .json(200, "Accepted")
            .errors(&[404, 422]),
        ),
        (
            "/v1/metrics",
            "get",
            Op::new("A built-in metric in 10 s bins", Read)
                .params(vec![
                    query("service", true, string(), "The service."),
                    query("metric", true, string(), "error_rate, latency_p99_ms, a gauge (cpu_percent, memory_percent, restarts) or monitor:NAME:success_rate…"),
                    query("scope", true, string(), "`environment`, `environment/region`, `environment/region/zone` or `environment/host`."),
                    query("version", false, string(), "Only this version's hosts."),
                    query("since", false, count(), "Seconds back from now (3600 by default, at most 7 days)."),
                ])
                .json(200, "MetricSeries")
                .errors(&[400, 404, 422]),
        ),
        (
            "/v1/metrics",
            "post",
            Op::new("Push traffic and gauges; taken whole or not at all", Pusher)
                .body("MetricsPush", true)
                .json(200, "Accepted")
                .errors(&[404]),
        ),
    ]
}

fn schemas() -> Value {
    let release = object(
        &["version", "outcome", "created_at", "reached", "rolled_back_scopes"],
        json!({
            "version": string(),
            "outcome": { "type": "string", "enum": ["in_progress", "halted", "completed", "rolled_back", "superseded"] },
            "reason": string(), "created_at": string(), "completed_at": string(), "lead_time_s": integer(),
            "reached": array(string()), "rolled_back_scopes": array(string()),
            "at": { "type": "string", "description": "stage/wave it deploys in or waits at" },
            "waiting": { "type": "boolean" }, "artifact": string(), "sha256": string(),
            "lane": { "type": "string", "enum": ["code", "flags"], "description": "left out for code" }
        }),
    );
    let event = object(
        &["t", "service", "kind", "release", "scope"],
        json!({ "seq": integer(), "t": string(), "service": string(), "kind": string(), "release": nullable("string"),
                "scope": string(), "reason": string(), "output": { "type": "string", "description": "the tail of a hook's output" } }),
    );
    let desired = object(
        &["command", "version", "purpose"],
        json!({ "command": count(), "version": string(), "artifact": string(), "sha256": string(),
                "purpose": { "type": "string", "enum": ["rollout", "rollback"] },
                "flags": object(&["command", "version", "purpose"], json!({ "command": count(), "version": string(),
                    "purpose": { "type": "string", "enum": ["rollout", "rollback"] } })),
                "signatures": object(&["required", "keys"], json!({ "required": { "type": "boolean" },
                    "keys": array(object(&["name", "public_key"], json!({ "name": string(),
                        "public_key": { "type": "string", "description": "a minisign public key, base64" } }))) })) }),
    );
    let flag_set = object(
        &["version", "flags"],
        json!({ "version": string(),
        "flags": { "type": "object", "description": "a flagd flag definition document" } }),
    );
    let mut all = json!({
        "Document": { "type": "object", "required": ["openapi", "paths"] },
        "Error": object(&["code", "message"], json!({
            "code": { "type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict", "too_large", "invalid", "unavailable", "internal"] },
            "message": string(),
            "details": { "description": "For `invalid` manifests: a list of {line, col, message}; for other errors the field at fault" } })),
        "ApplyService": object(&["manifest"], json!({ "manifest": { "type": "string", "description": "the manifest's YAML text" },
            "file": { "type": ["string", "null"], "description": "the file name used in error locations" } })),
        "ServiceSummary": object(&["name", "stages", "hosts", "releases", "lead_time_s"], json!({
            "name": string(), "stages": array(string()), "hosts": count(), "releases": count(), "lead_time_s": count() })),
        "ServiceList": array(schema("ServiceSummary")),
        "ServiceStatus": object(&["service", "stages", "environments", "releases", "blocked", "holds", "notifications"], json!({
            "service": string(),
            "stages": array(object(&["name", "environment", "waves"], json!({ "name": string(), "environment": string(), "waves": array(string()) }))),
            "environments": array(object(&["environment", "versions"], json!({ "environment": string(), "versions": version_counts() }))),
            "releases": array(schema("Release")),
            "blocked": array(object(&["release", "scope", "reason", "since"], json!({ "release": nullable("string"), "scope": string(), "reason": string(), "since": string() }))),
            "holds": array(string()),
            "notifications": array(object(&["url", "delivered", "failed_attempts", "given_up", "last_error"], json!({
                "url": { "type": "string", "description": "scheme://host/… of a literal URL, or env:NAME / file:PATH; never a secret" },
                "delivered": count(), "failed_attempts": count(), "given_up": count(), "last_error": nullable("string") }))) })),
        "CreateRelease": object(&["version"], json!({
            "version": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$" },
            "artifact": { "type": ["string", "null"], "maxLength": 4096, "description": "an https, http or file URL" },
            "sha256": { "type": ["string", "null"], "pattern": "^[0-9a-fA-F]{64}$" },
            "flags": { "type": ["object", "null"], "description": "a flag release: a whole flagd flag definition document, checked before anything is logged (then no artifact)" } })),
        "Release": release,
        "ReleaseList": array(schema("Release")),
        "ReleaseDetail": { "allOf": [ schema("Release"), object(&["scopes", "events"], json!({
            "scopes": array(object(&["scope", "versions"], json!({ "scope": string(), "versions": version_counts() }))),
            "events": array(schema("Event")) })) ] },
        "Action": object(&[], json!({ "stage": { "type": ["string", "null"], "description": "one stage rather than the whole service or release" } })),
        "RegisterHost": object(&["environment", "host"], json!({
            "service": { "type": ["string", "null"], "description": "may be left out when exactly one service has this zone" },
            "environment": string(), "host": string(),
            "region": { "type": ["string", "null"], "description": "needed" }, "zone": { "type": ["string", "null"], "description": "needed" },
            "address": { "type": ["string", "null"], "description": "host:port where the host's service answers, for routers" } })),
        "Desired": desired,
        "Registered": object(&["service", "host", "desired"], json!({ "service": string(), "host": string(), "desired": schema("Desired") })),
        "HostReport": object(&["command", "ok"], json!({
            "command": count(), "ok": { "type": "boolean" }, "reason": nullable("string"),
            "hooks": array(object(&["name", "duration_ms", "ok"], json!({
                "name": string(), "exit_code": { "type": ["integer", "null"], "format": "int32" }, "duration_ms": count(),
                "output": string(), "timed_out": { "type": "boolean" }, "ok": { "type": "boolean" } }))),
            "lane": { "type": "string", "enum": ["code", "flags"], "description": "which deployment `command` was; code when left out" } })),
        "Accepted": object(&["ok"], json!({ "ok": { "type": "boolean" } })),
        "Event": event,
        "EventPage": object(&["events", "next"], json!({ "events": array(schema("Event")), "next": integer() })),
        "CreateToken": object(&["role"], json!({
            "role": { "type": "string", "enum": ["viewer", "deployer", "approver", "admin", "agent", "router"] },
            "name": { "type": ["string", "null"], "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$", "description": "unique; not clock, driver, signals or agent" },
            "host": { "type": ["string", "null"], "description": "service/environment/host, for agent tokens only" },
            "region": { "type": ["string", "null"], "description": "service/environment/region, for router tokens only" },
            "ttl_s": { "type": ["integer", "null"], "minimum": 1, "description": "seconds until it expires" } })),
        "TokenCreated": object(&["token", "role", "name", "id", "expires_ms"], json!({ "token": string(), "role": string(), "name": string(),
            "id": integer(), "expires_ms": nullable("integer") })),
        "TokenInfo": object(&["id", "name", "role", "host", "region", "created_ms", "expires_ms", "revoked_ms", "last_used_ms"], json!({
            "id": integer(), "name": string(), "role": string(),
            "host": nullable("string"), "region": nullable("string"), "created_ms": integer(),
            "expires_ms": nullable("integer"), "revoked_ms": nullable("integer"), "last_used_ms": nullable("integer") })),
        "TokenList": array(schema("TokenInfo")),
        "AuditVerdict": object(&["intact", "rows", "problem", "database"], json!({ "intact": { "type": "boolean" }, "rows": count(),
            "problem": nullable("string"), "database": string() })),
        "Cluster": object(&["node", "leader", "term", "lease_holder", "lease_term", "applied_seq"], json!({
            "node": string(), "leader": { "type": "boolean" }, "term": nullable("integer"), "lease_holder": nullable("string"),
            "lease_term": nullable("integer"), "applied_seq": integer() })),
        "Routes": object(&["salt", "canary_share", "release", "hosts", "generation"], json!({
            "salt": string(), "canary_share": { "type": "integer", "minimum": 0, "maximum": 10000, "description": "basis points" },
            "release": nullable("string"),
            "hosts": array(object(&["host", "address", "version", "track", "draining"], json!({
                "host": string(), "address": string(), "version": string(),
                "track": { "type": "string", "enum": ["stable", "canary"] }, "draining": { "type": "boolean" } }))),
            "generation": integer() })),
        "MetricsPush": object(&["service", "environment"], json!({
            "service": string(), "environment": string(),
            "samples": array(object(&["host", "version", "requests", "errors"], json!({
                "host": string(), "version": string(), "requests": count(), "errors": count(), "latency_buckets": array(count()) }))),
            "gauges": array(object(&["host", "version", "name", "value"], json!({
                "host": string(), "version": string(),
                "name": { "type": "string", "enum": ["cpu_percent", "memory_percent", "restarts"] }, "value": { "type": "number" } }))) })),
        "MetricSeries": object(&["service", "metric", "scope", "version", "points"], json!({
            "service": string(), "metric": string(), "scope": string(), "version": nullable("string"),
            "points": array(json!({ "type": "array", "prefixItems": [integer(), { "type": "number" }], "minItems": 2, "maxItems": 2 })) })),
    });
    // Kept out of the one `json!` above, which would otherwise nest too deep for the macro.
    all["FlagSetDocument"] = flag_set.clone();
    all["RegionFlags"] = object(
        &["salt", "canary_share", "generation"],
        json!({
            "salt": string(), "canary_share": { "type": "integer", "minimum": 0, "maximum": 10000, "description": "basis points" },
            "stable": flag_set.clone(), "canary": flag_set, "generation": integer() }),
    );
    all["FlagEvaluationsPush"] = object(
        &["service", "environment", "region", "counts"],
        json!({
            "service": string(), "environment": string(), "region": string(),
            "counts": array(object(&["flag", "version", "count"], json!({
                "flag": string(), "variant": { "type": ["string", "null"] }, "version": string(), "count": count() }))) }),
    );
    all
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for (path, method, op) in operations() {
        let item = paths.entry(path).or_insert_with(|| json!({}));
        item[method] = op.build(path);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "rollwave", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Control plane of rollwave: services, releases, operator actions, hosts and events. Reads need a viewer token unless the server runs with --anonymous-read; changes need a bearer token of their role. Errors are JSON bodies with a stable code." },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": { "description": "An error", "content": { "application/json": { "schema": schema("Error") } } }
            },
            "schemas": schemas(),
        }
    })
}
