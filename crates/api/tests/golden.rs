//! The JSON of every wire type and of every variant of the vocabulary, pinned to files
//! under `tests/golden/`. A renamed field or variant changes the wire for every process
//! that speaks it (and for old agents and routers still running), so it must fail here.
//!
//! `ROLLWAVE_BLESS=1 cargo test -p rollwave-api --test golden` rewrites the files; a
//! diff in them is a wire change and needs a reason.

use rollwave_api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.json"))
}

/// `value` serializes to the golden file `name`, and the file reads back into a value
/// that serializes the same (so fields the reader drops or renames fail too).
fn check<T: Serialize + DeserializeOwned>(name: &str, value: &T) {
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    let path = golden_path(name);
    if std::env::var_os("ROLLWAVE_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(text, golden, "the JSON of {name} differs from {}", path.display());
    let back: T = serde_json::from_str(&golden).unwrap_or_else(|e| panic!("{name}: the golden does not read: {e}"));
    assert_eq!(serde_json::to_string_pretty(&back).unwrap() + "\n", golden, "{name} does not read back the same");
}

fn release_view() -> ReleaseView {
    ReleaseView {
        version: "v2".into(),
        outcome: Outcome::InProgress,
        reason: Some("alarm errors fired in prod/us-east".into()),
        created_at: "2026-01-02T03:04:05Z".into(),
        completed_at: Some("2026-01-02T04:04:05Z".into()),
        lead_time_s: Some(3600),
        reached: vec!["beta".into()],
        rolled_back_scopes: vec!["prod/us-east".into()],
        at: Some("prod/1".into()),
        waiting: Some(true),
        artifact: Some("https://example.com/web-v2.tar.gz".into()),
        sha256: Some("ab".repeat(32)),
        lane: Lane::Code,
    }
}

fn release_view_minimal() -> ReleaseView {
    ReleaseView {
        version: "v1".into(),
        outcome: Outcome::Completed,
        reason: None,
        created_at: "2026-01-02T03:04:05Z".into(),
        completed_at: None,
        lead_time_s: None,
        reached: Vec::new(),
        rolled_back_scopes: Vec::new(),
        at: None,
        waiting: None,
        artifact: None,
        lane: Lane::Code,
        sha256: None,
    }
}

fn event_view() -> EventView {
    EventView {
        seq: Some(7),
        t: "2026-01-02T03:04:05Z".into(),
        service: "web".into(),
        kind: EventKind::AlarmFired,
        release: Some("v2".into()),
        scope: "prod/us-east".into(),
        reason: Some("errors".into()),
        output: None,
    }
}

fn hook_event() -> EventView {
    EventView {
        seq: None,
        t: "2026-01-02T03:04:05Z".into(),
        service: "web".into(),
        kind: EventKind::Hook,
        release: None,
        scope: "prod/h1".into(),
        reason: Some("start: ok in 12 ms".into()),
        output: Some("started\n".into()),
    }
}

#[test]
fn errors() {
    check(
        "error_body",
        &ErrorBody {
            code: "invalid".into(),
            message: "no stage \"gamma\"".into(),
            details: serde_json::json!({ "index": 0 }),
        },
    );
    check(
        "error_body_without_details",
        &ErrorBody { code: "not_found".into(), message: "no service".into(), details: serde_json::Value::Null },
    );
}

#[test]
fn services() {
    check("apply_service", &ApplyService { manifest: "service: web\n".into(), file: Some("web.yaml".into()) });
    check(
        "service_summary",
        &ServiceSummary {
            name: "web".into(),
            stages: vec!["beta".into(), "prod".into()],
            hosts: 6,
            releases: 2,
            lead_time_s: 90,
        },
    );
    check(
        "service_status",
        &ServiceStatus {
            service: "web".into(),
            stages: vec![StageStatus {
                name: "prod".into(),
                environment: "prod".into(),
                waves: vec!["1".into(), "2".into()],
            }],
            environments: vec![EnvironmentVersions {
                environment: "prod".into(),
                versions: vec![("v1".into(), 3), ("v2".into(), 1)],
            }],
            releases: vec![release_view(), release_view_minimal()],
            blocked: vec![BlockedView {
                release: Some("v2".into()),
                scope: "prod/us-east".into(),
                reason: "outside the deployment window".into(),
                since: "2026-01-02T03:04:05Z".into(),
            }],
            holds: vec!["prod".into()],
            notifications: vec![NotificationStatus {
                url: "https://hooks.example.com/…".into(),
                delivered: 3,
                failed_attempts: 1,
                given_up: 0,
                last_error: Some("503".into()),
            }],
        },
    );
}

#[test]
fn releases() {
    check(
        "create_release",
        &CreateRelease {
            version: "v2".into(),
            artifact: Some("https://example.com/web-v2.tar.gz".into()),
            sha256: Some("cd".repeat(32)),
            flags: None,
        },
    );
    check(
        "create_flag_release",
        &CreateRelease {
            version: "f2".into(),
            artifact: None,
            sha256: None,
            flags: Some(
                serde_json::json!({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}),
            ),
        },
    );
    check("flag_release_view", &ReleaseView { lane: Lane::Flags, artifact: None, sha256: None, ..release_view() });
    check("release_view", &release_view());
    check("release_view_minimal", &release_view_minimal());
    check(
        "release_detail",
        &ReleaseDetail {
            release: release_view(),
            scopes: vec![ScopeVersions { scope: "prod/us-east".into(), versions: vec![("v2".into(), 2)] }],
            events: vec![event_view(), hook_event()],
        },
    );
    check("action_request", &ActionRequest { stage: Some("prod".into()) });
}

#[test]
fn events() {
    check("event_view", &event_view());
    check("event_view_hook", &hook_event());
    check("event_page", &EventPage { events: vec![event_view()], next: 8 });
}

#[test]
fn hosts() {
    check(
        "register_host",
        &RegisterHost {
            service: Some("web".into()),
            environment: "prod".into(),
            host: "h1".into(),
            region: Some("us-east".into()),
            zone: Some("us-east-1a".into()),
            address: Some("127.0.0.1:9001".into()),
        },
    );
    let desired = Desired {
        command: 4,
        version: "v2".into(),
        artifact: Some("https://example.com/web-v2.tar.gz".into()),
        sha256: Some("ef".repeat(32)),
        purpose: Purpose::Rollback,
        flags: None,
        signatures: None,
    };
    check("desired", &desired);
    check(
        "desired_minimal",
        &Desired {
            command: 0,
            version: "v1".into(),
            artifact: None,
            sha256: None,
            purpose: Purpose::Rollout,
            flags: None,
            signatures: None,
        },
    );
    check(
        "desired_with_flags",
        &Desired {
            flags: Some(DesiredFlags { command: 2, version: "f3".into(), purpose: Purpose::Rollout }),
            ..desired.clone()
        },
    );
    check(
        "desired_with_signatures",
        &Desired {
            signatures: Some(SignaturePolicy {
                required: true,
                keys: vec![TrustedKey {
                    name: "ci-2026".into(),
                    public_key: "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3".into(),
                }],
            }),
            ..desired.clone()
        },
    );
    check("registered", &Registered { service: "web".into(), host: "h1".into(), desired });
    check(
        "host_report",
        &HostReport {
            command: 4,
            ok: false,
            reason: Some("validate failed".into()),
            hooks: vec![
                HookReport {
                    name: HookStep::Start.as_str().into(),
                    exit_code: Some(0),
                    duration_ms: 12,
                    output: "started\n".into(),
                    timed_out: false,
                    ok: true,
                },
                HookReport {
                    name: HookStep::Validate.as_str().into(),
                    exit_code: None,
                    duration_ms: 30000,
                    output: String::new(),
                    timed_out: true,
                    ok: false,
                },
            ],
            lane: Lane::Code,
        },
    );
    check(
        "host_report_flags",
        &HostReport { command: 2, ok: true, reason: None, hooks: Vec::new(), lane: Lane::Flags },
    );
}

#[test]
fn tokens() {
    check(
        "create_token",
        &CreateToken {
            role: "router".into(),
            name: Some("router-east".into()),
            host: None,
            region: Some("web/prod/us-east".into()),
            ttl_s: Some(86400),
        },
    );
    check(
        "token_created",
        &TokenCreated {
            token: "rw_secret".into(),
            role: Role::Agent,
            name: "agent-abc".into(),
            id: 3,
            expires_ms: Some(1_800_000_000_000),
        },
    );
    check(
        "token_info",
        &TokenInfo {
            id: 3,
            name: "agent-abc".into(),
            role: "agent".into(),
            host: Some("web/prod/h1".into()),
            region: None,
            created_ms: 1_700_000_000_000,
            expires_ms: None,
            revoked_ms: Some(1_700_000_100_000),
            last_used_ms: Some(1_700_000_050_000),
        },
    );
}

#[test]
fn operations() {
    check(
        "audit_verdict",
        &AuditVerdict {
            intact: false,
            rows: 0,
            problem: Some("row 4: hash differs".into()),
            database: "sqlite:rollwave.db".into(),
        },
    );
    check("accepted", &Accepted { ok: true });
    check(
        "cluster",
        &Cluster {
            node: "node-a".into(),
            leader: true,
            term: Some(3),
            lease_holder: Some("node-a".into()),
            lease_term: Some(3),
            applied_seq: 120,
        },
    );
}

#[test]
fn routes() {
    check(
        "routes",
        &Routes {
            salt: "web-v2".into(),
            canary_share: 1000,
            release: Some("v2".into()),
            hosts: vec![
                RouteHost {
                    host: "h1".into(),
                    address: "127.0.0.1:9001".into(),
                    version: "v2".into(),
                    track: Track::Canary,
                    draining: false,
                },
                RouteHost {
                    host: "h2".into(),
                    address: "127.0.0.1:9002".into(),
                    version: "v1".into(),
                    track: Track::Stable,
                    draining: true,
                },
            ],
            generation: 42,
        },
    );
}

#[test]
fn metrics() {
    check(
        "metrics_push",
        &MetricsPush {
            service: "web".into(),
            environment: "prod".into(),
            samples: vec![MetricSample {
                host: "127.0.0.1:9001".into(),
                version: "v2".into(),
                requests: 120,
                errors: 3,
                latency_buckets: vec![0, 120, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            }],
            gauges: vec![GaugeSample {
                host: "h1".into(),
                version: "v2".into(),
                name: Gauge::CpuPercent.as_str().into(),
                value: 12.5,
            }],
        },
    );
    check(
        "metric_series",
        &MetricSeries {
            service: "web".into(),
            metric: MetricRef::Builtin(Builtin::ErrorRate),
            scope: "prod/us-east".into(),
            version: Some("v2".into()),
            points: vec![(1_700_000_000_000, 0.25)],
        },
    );
    check("latency_bounds_ms", &LATENCY_BOUNDS_MS.to_vec());
    check("gauges", &GAUGES.map(str::to_owned).to_vec());
}

/// Every variant of a vocabulary, in declaration order: a renamed, added or removed
/// variant changes the file.
fn check_all<T: Serialize + DeserializeOwned>(name: &str, all: &[T]) {
    check(name, &all.iter().map(|v| serde_json::to_value(v).unwrap()).collect::<Vec<_>>());
    let golden: Vec<T> = serde_json::from_str(&std::fs::read_to_string(golden_path(name)).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&golden).unwrap(), serde_json::to_value(all).unwrap());
}

#[test]
fn vocabulary() {
    check_all("event_kind", &EventKind::ALL);
    check_all("outcome", &Outcome::ALL);
    check_all("alarm_state", &AlarmState::ALL);
    check_all("track", &Track::ALL);
    check_all("lane", &Lane::ALL);
    check_all("purpose", &Purpose::ALL);
    check_all("operator_action", &OperatorAction::ALL);
    check_all("role", &Role::ALL);
    check_all("hook_step", &HookStep::ALL);
    check_all("machine_component", &MachineComponent::ALL);
    check_all("builtin_metric", &Builtin::ALL);
    check_all("gauge", &Gauge::ALL);
    check_all("monitor_field", &MonitorField::ALL);
}

#[test]
fn a_vocabulary_word_is_its_wire_string() {
    for kind in EventKind::ALL {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        assert_eq!(EventKind::named(kind.as_str()), Some(kind));
    }
    for role in Role::ALL {
        assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
    assert_eq!(EventKind::named("no_such_kind"), None);
}

#[test]
fn every_engine_event_kind_has_the_engines_spelling() {
    for &core in rollwave_core::engine::EventKind::ALL {
        let wire = EventKind::from(core);
        assert_eq!(wire.as_str(), core.as_str());
        assert_eq!(wire.to_core(), Some(core));
    }
    assert_eq!(EventKind::Hook.to_core(), None);
    assert_eq!(EventKind::ALL.len(), rollwave_core::engine::EventKind::ALL.len() + 1);
}

#[test]
fn outcomes_and_alarm_states_have_the_engines_spelling() {
    use rollwave_core::engine::ReleaseStatus;
    for status in [
        ReleaseStatus::InProgress,
        ReleaseStatus::Halted,
        ReleaseStatus::Completed,
        ReleaseStatus::RolledBack,
        ReleaseStatus::Superseded,
    ] {
        assert_eq!(Outcome::from(status).as_str(), status.as_str());
        assert_eq!(Outcome::from(status).is_settled(), status.is_settled());
    }
    for state in AlarmState::ALL {
        let core: rollwave_core::alarm::AlarmState = state.into();
        assert_eq!(core.as_str(), state.as_str());
        assert_eq!(AlarmState::from(core), state);
    }
}

#[test]
fn approving_needs_an_approver_and_every_other_action_a_deployer() {
    for action in OperatorAction::ALL {
        let expected = if action == OperatorAction::Approve { Role::Approver } else { Role::Deployer };
        assert_eq!(action.required_role(), expected, "{action}");
    }
    assert_eq!(OperatorAction::from_path("roll-forward"), Some(OperatorAction::RollForward));
    let on_releases: Vec<_> =
        OperatorAction::ALL.iter().filter(|a| a.is_release_action()).map(|a| a.as_str()).collect();
    assert_eq!(on_releases, ["approve", "rollback", "retry", "roll_forward"]);
}

#[test]
fn a_metric_reads_back_from_its_spelling() {
    let cases = [
        ("error_rate", MetricRef::Builtin(Builtin::ErrorRate)),
        ("restarts", MetricRef::Gauge(Gauge::Restarts)),
        ("monitor:home:latency_ms", MetricRef::Monitor { name: "home".into(), field: MonitorField::LatencyMs }),
        ("monitor:a:b:success_rate", MetricRef::Monitor { name: "a:b".into(), field: MonitorField::SuccessRate }),
        ("monitor:home:p50", MetricRef::Prometheus { name: "monitor:home:p50".into() }),
        ("http_errors", MetricRef::Prometheus { name: "http_errors".into() }),
    ];
    for (text, metric) in cases {
        assert_eq!(MetricRef::parse(text), metric, "{text}");
        assert_eq!(metric.to_string(), text);
        assert_eq!(serde_json::to_value(&metric).unwrap(), text);
    }
    assert_eq!(LATENCY_BUCKETS, 13);
}

#[test]
fn region_flags() {
    check(
        "region_flags",
        &RegionFlags {
            salt: "web-f2".into(),
            canary_share: 500,
            stable: Some(FlagSetDocument {
                version: "f1".into(),
                flags: serde_json::json!({"flags": {"checkout-v2": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}),
            }),
            canary: Some(FlagSetDocument {
                version: "f2".into(),
                flags: serde_json::json!({"flags": {"checkout-v2": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}),
            }),
            generation: 7,
        },
    );
}

#[test]
fn flag_evaluations_push() {
    check(
        "flag_evaluations_push",
        &FlagEvaluationsPush {
            service: "web".into(),
            environment: "prod".into(),
            region: "us-east-2".into(),
            counts: vec![
                FlagEvaluationCount {
                    flag: "checkout-v2".into(),
                    variant: Some("on".into()),
                    version: "f2".into(),
                    count: 12,
                },
                FlagEvaluationCount { flag: "missing".into(), variant: None, version: "f2".into(), count: 1 },
            ],
        },
    );
}
