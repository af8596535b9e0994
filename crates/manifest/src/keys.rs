//! The keys of every object in a manifest. The decoder checks mappings against these
//! lists and the JSON Schema builds its `properties` from them, so the two cannot drift.

pub const MANIFEST: &[&str] = &[
    "service",
    "environments",
    "strategy",
    "stages",
    "alarms",
    "windows",
    "watch",
    "notifications",
    "monitors",
    "signing_keys",
];
pub const MONITOR: &[&str] = &["name", "request", "expect", "every"];
pub const MONITOR_REQUEST: &[&str] = &["method", "path", "headers", "body"];
pub const MONITOR_EXPECT: &[&str] = &["status", "body_contains", "max_latency"];
pub const NOTIFICATION: &[&str] = &["url", "format", "on", "blocked_after", "routing_key", "secret"];
/// A secret read on the server: exactly one of these.
pub const SECRET_REF: &[&str] = &["env", "file"];
pub const ENVIRONMENT: &[&str] = &["regions", "exec", "require_signatures"];
pub const EXEC: &[&str] = &["deploy", "rollback", "timeout"];
pub const REGION: &[&str] = &["timezone", "zones", "functions"];
pub const FUNCTION: &[&str] = &["name", "alias", "queue", "canary_alias", "router"];
pub const FUNCTION_ROUTER: &[&str] = &["stable", "canary"];
pub const STRATEGY: &[&str] = &["one_box", "rolling", "bake"];
pub const ONE_BOX: &[&str] = &["hosts", "max_share", "bake", "judge"];
pub const ROLLING: &[&str] = &["batch", "zone_bake", "max_failures", "deploy_timeout", "steps"];
pub const BAKE: &[&str] = &["time", "min_datapoints"];
pub const JUDGE: &[&str] = &["method", "alpha", "metrics", "min_samples"];
pub const JUDGE_METRIC: &[&str] = &["metric", "direction", "critical", "allowed_increase"];
pub const STAGE: &[&str] =
    &["name", "environment", "approval", "tests", "bake", "windows", "one_box", "rolling", "waves"];
pub const TEST: &[&str] = &["name", "run", "timeout"];
pub const WAVE: &[&str] = &["name", "regions", "bake", "one_box", "rolling"];
pub const ALARM: &[&str] = &[
    "name",
    "metric",
    "scope",
    "threshold",
    "period",
    "datapoints",
    "missing",
    "source",
    "query",
    "namespace",
    "dimensions",
    "statistic",
];
pub const WINDOWS: &[&str] = &["allow", "block"];

/// Keys that must be present, per object; the schema's `required` lists come from here
/// and the integration tests check, key by key, that the decoder agrees. (`query` is
/// required only with `source: prometheus`; the schema says so with `if`/`then`.)
pub const MANIFEST_REQUIRED: &[&str] = &["service", "environments", "stages"];
pub const ENVIRONMENT_REQUIRED: &[&str] = &["regions"];
pub const EXEC_REQUIRED: &[&str] = &["deploy"];
/// `url` is required but with `format: pagerduty` (whose `url` has a default), which
/// requires `routing_key` instead; the schema says so with `if`/`then`/`else`.
pub const NOTIFICATION_REQUIRED: &[&str] = &[];
pub const MONITOR_REQUIRED: &[&str] = &["name", "request"];
pub const MONITOR_REQUEST_REQUIRED: &[&str] = &["path"];
/// A region has `zones` (hosts) or `functions`: one of them, checked by the decoder
/// and by the schema's `oneOf`.
pub const REGION_REQUIRED: &[&str] = &[];
pub const FUNCTION_REQUIRED: &[&str] = &["name", "alias"];
pub const STAGE_REQUIRED: &[&str] = &["name", "environment"];
pub const TEST_REQUIRED: &[&str] = &["name", "run"];
pub const JUDGE_METRIC_REQUIRED: &[&str] = &["metric"];
pub const WAVE_REQUIRED: &[&str] = &["name", "regions"];
pub const ALARM_REQUIRED: &[&str] = &["name", "metric", "threshold"];
