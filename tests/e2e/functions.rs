//! `rollwave server` deploying a region of functions through the Lambda API of the AWS
//! emulator (moto in server mode): the alias's routing after each step and after the
//! last, a release whose version is not published blocked before any alias changes, and
//! an alias changed by someone else mid-rollout halting the release instead of being
//! overwritten.

use crate::kit::{Proc, Server, free_port, one_world_at_a_time, wait_for};
use rollwave_api::{CreateRelease, Outcome};
use rollwave_aws::{AliasState, Credentials, Lambda, Retry};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Python of a venv with `moto[server]` (and so boto3); see `.ci/run`.
const PYTHON_ENV: &str = "ROLLWAVE_TEST_MOTO_PYTHON";

struct Moto {
    _process: Proc,
    endpoint: String,
    python: String,
    /// Each test here starts the emulator, a server and sometimes a router, and waits on
    /// real time: it runs alone among the tests that start worlds, so neither starves the
    /// other's bakes and pushes. Last, so it is let go once the emulator has stopped.
    _alone: std::sync::MutexGuard<'static, ()>,
}

impl Moto {
    /// moto on a free port, or `None` (said on stderr) when no venv is given.
    fn start(test: &str) -> Option<Moto> {
        let Ok(python) = std::env::var(PYTHON_ENV) else {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: set {PYTHON_ENV} to the python of a venv with moto[server] (.ci/run makes one)"
            );
            return None;
        };
        let alone = one_world_at_a_time();
        let port = free_port();
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { _process: Proc(child), endpoint, python, _alone: alone };
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        wait_for("moto answers", Duration::from_secs(60), || {
            agent.get(format!("{}/moto-api/", moto.endpoint)).call().is_ok()
        });
        Some(moto)
    }

    /// Runs a fixture command; what it prints.
    fn fixture(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/data/moto_lambda.py");
        let out = Command::new(&self.python).arg(script).arg(&self.endpoint).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn lambda(&self, region: &str) -> Lambda {
        let credentials = Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
            source: "test".into(),
        };
        let endpoint = self.endpoint.parse().unwrap();
        Lambda::new(rollwave_aws::Client::new("lambda", region, endpoint, credentials, Retry::default()))
    }

    fn alias(&self, region: &str, function: &str) -> AliasState {
        self.lambda(region).get_alias(function, "live", &mut Vec::new()).unwrap()
    }

    fn server(&self) -> Server {
        Server::builder()
            .args(&["--function-traffic-every", "2s", "--cloudwatch-delay", "0s"])
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .driver(None)
            .start()
    }
}

/// One region of two functions, one-box 10 %, steps 50 % and 100 %, each baked `bake`.
fn manifest(bake: &str) -> String {
    format!(
        "service: fns\n\
         environments:\n  prod:\n    regions:\n      us-east-1: {{ functions: [{{ name: api, alias: live }}, {{ name: worker, alias: live }}] }}\n\
         strategy:\n  one_box: {{ max_share: 10%, bake: {bake} }}\n  rolling: {{ steps: [50%, 100%], zone_bake: {bake} }}\n\
         stages:\n  - {{ name: prod, environment: prod }}\n"
    )
}

fn routing(a: &AliasState) -> String {
    let weights: Vec<String> = a.weights.iter().map(|(v, w)| format!("{v}@{w}")).collect();
    format!(
        "{}{}",
        a.function_version,
        if weights.is_empty() { String::new() } else { format!("+{}", weights.join(",")) }
    )
}

/// Waits until `version` is no longer in progress; its release, timeline included, as JSON.
fn stopped(client: &rollwave_api::Client, version: &str) -> String {
    wait_for(&format!("{version} stops"), Duration::from_secs(60), || {
        client.release("fns", version).is_ok_and(|r| r.release.outcome != Outcome::InProgress)
    });
    serde_json::to_string(&client.release("fns", version).unwrap()).unwrap()
}

fn release(version: &str, artifact: &str) -> CreateRelease {
    CreateRelease { version: version.into(), artifact: Some(artifact.into()), sha256: None, flags: None }
}

#[test]
fn each_step_sets_the_aliases_routing_and_the_last_moves_the_alias() {
    let Some(moto) = Moto::start("each_step_sets_the_aliases_routing_and_the_last_moves_the_alias") else { return };
    for function in ["api", "worker"] {
        moto.fixture(&["setup", "us-east-1", function, "3"]);
    }
    let server = moto.server();
    let client = server.client();
    client.apply("fns.yaml", &manifest("2s")).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();

    // Every routing the alias goes through, in order, as it is polled.
    let mut seen: Vec<String> = vec![routing(&moto.alias("us-east-1", "api"))];
    wait_for("v2 completes", Duration::from_secs(60), || {
        let now = routing(&moto.alias("us-east-1", "api"));
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        client.release("fns", "v2").is_ok_and(|r| r.release.outcome == Outcome::Completed)
    });
    let last = routing(&moto.alias("us-east-1", "api"));
    if seen.last() != Some(&last) {
        seen.push(last);
    }
    assert_eq!(seen, ["1", "1+2@0.1", "1+2@0.5", "2"], "the api alias's routing, step by step");
    assert_eq!(routing(&moto.alias("us-east-1", "worker")), "2", "every function of the region moves");

    // A version that is not published: refused before any alias changes, Lambda's reason
    // in the timeline.
    client.create_release("fns", &release("v3", "9")).unwrap();
    let timeline = stopped(&client, "v3");
    assert!(timeline.contains("function api has no published version 9"), "{timeline}");
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "2");
    assert_eq!(routing(&moto.alias("us-east-1", "worker")), "2");

    // An ARN names one function: one the region does not have is refused the same way
    // (once the operator has given up on v3, which holds its place while halted).
    client.action("fns", "v3", rollwave_api::OperatorAction::Rollback, None).unwrap();
    wait_for("v3 is rolled back", Duration::from_secs(60), || {
        client.release("fns", "v3").is_ok_and(|r| r.release.outcome == Outcome::RolledBack)
    });
    client.create_release("fns", &release("v4", "arn:aws:lambda:us-east-1:123456789012:function:other:3")).unwrap();
    let timeline = stopped(&client, "v4");
    assert!(timeline.contains("is a version of a function region us-east-1 does not have (api, worker)"), "{timeline}");
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "2");
}

#[test]
fn an_alias_changed_by_someone_else_mid_rollout_halts_the_release_and_is_not_overwritten() {
    let Some(moto) =
        Moto::start("an_alias_changed_by_someone_else_mid_rollout_halts_the_release_and_is_not_overwritten")
    else {
        return;
    };
    for function in ["api", "worker"] {
        moto.fixture(&["setup", "us-east-1", function, "3"]);
    }
    let server = moto.server();
    let client = server.client();
    client.apply("fns.yaml", &manifest("3s")).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();
    wait_for("the one-box routes 10 % to version 2", Duration::from_secs(30), || {
        routing(&moto.alias("us-east-1", "api")) == "1+2@0.1"
    });
    // Someone shifts the alias by hand while the one-box bakes; the next step finds it.
    moto.fixture(&["route", "us-east-1", "api", "1", "3", "0.3"]);
    let timeline = stopped(&client, "v2");
    assert!(timeline.contains("alias api:live was changed by someone else"), "{timeline}");
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "1+3@0.3", "the hand-made routing is kept");
}

#[test]
fn a_cloudwatch_alarm_on_the_new_version_rolls_back_its_region_alone_and_restores_the_alias() {
    let Some(moto) =
        Moto::start("a_cloudwatch_alarm_on_the_new_version_rolls_back_its_region_alone_and_restores_the_alias")
    else {
        return;
    };
    for region in ["us-east-1", "eu-west-1"] {
        moto.fixture(&["setup", region, "api", "3"]);
    }
    // Version 2 fails in us-east-1 only; version 1 fails there too, which the alarm must
    // not see (it reads the version in flight alone).
    moto.fixture(&["errors", "us-east-1", "api", "2", "50"]);
    moto.fixture(&["errors", "eu-west-1", "api", "1", "50"]);
    let server = moto.server();
    let client = server.client();
    let manifest = "service: fns\n\
        environments:\n  prod:\n    regions:\n\
        \x20     us-east-1: { functions: [{ name: api, alias: live }] }\n\
        \x20     eu-west-1: { functions: [{ name: api, alias: live }] }\n\
        strategy:\n  one_box: { max_share: 10%, bake: 5m }\n  rolling: { steps: [100%] }\n\
        stages:\n  - { name: prod, environment: prod }\n\
        alarms:\n  - { name: fn-errors, source: cloudwatch, metric: Errors, statistic: Sum, threshold: \"> 5\", period: 2s, datapoints: 1 of 1 }\n";
    client.apply("fns.yaml", manifest).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();
    wait_for("both one-boxes route 10 % to version 2", Duration::from_secs(30), || {
        ["us-east-1", "eu-west-1"].iter().all(|r| routing(&moto.alias(r, "api")) == "1+2@0.1")
    });
    wait_for("us-east-1 is rolled back", Duration::from_secs(60), || routing(&moto.alias("us-east-1", "api")) == "1");
    let timeline = serde_json::to_string(&client.release("fns", "v2").unwrap()).unwrap();
    assert!(timeline.contains("fn-errors"), "the alarm is named in the timeline: {timeline}");
    assert!(timeline.contains("prod/us-east-1"), "{timeline}");
    assert_eq!(routing(&moto.alias("eu-west-1", "api")), "1+2@0.1", "eu-west-1 is untouched");
}

#[test]
fn a_function_that_does_not_exist_blocks_the_region_before_any_alias_changes() {
    let Some(moto) = Moto::start("a_function_that_does_not_exist_blocks_the_region_before_any_alias_changes") else {
        return;
    };
    moto.fixture(&["setup", "us-east-1", "api", "3"]);
    let server = moto.server();
    let client = server.client();
    // `worker` is in the manifest and not in AWS.
    client.apply("fns.yaml", &manifest("1s")).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();
    let timeline = stopped(&client, "v2");
    assert!(timeline.contains("GetAlias worker:live: 404 ResourceNotFoundException"), "{timeline}");
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "1", "api's alias never changed");
}

#[test]
fn an_sqs_triggered_function_gets_a_canary_alias_and_two_mappings_filtered_on_the_track() {
    let Some(moto) =
        Moto::start("an_sqs_triggered_function_gets_a_canary_alias_and_two_mappings_filtered_on_the_track")
    else {
        return;
    };
    moto.fixture(&["setup", "us-east-1", "api", "3"]);
    let queue = moto.fixture(&["queue", "us-east-1", "orders"]);
    let server = moto.server();
    let client = server.client();
    let manifest = format!(
        "service: fns\n\
         environments:\n  prod:\n    regions:\n      us-east-1: {{ functions: [{{ name: api, alias: live, queue: \"{queue}\" }}] }}\n\
         strategy:\n  one_box: {{ max_share: 10%, bake: 30s }}\n  rolling: {{ steps: [100%] }}\n\
         stages:\n  - {{ name: prod, environment: prod }}\n"
    );
    client.apply("fns.yaml", &manifest).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();
    let lambda = moto.lambda("us-east-1");
    wait_for("the one-box's canary alias and mappings", Duration::from_secs(30), || {
        lambda.get_alias("api", "canary", &mut Vec::new()).is_ok_and(|a| a.function_version == "2")
            && !lambda.mappings(&queue, "api", "canary", &mut Vec::new()).unwrap().is_empty()
    });
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "1+2@0.1", "the weighted alias, as without a queue");
    let (stable, canary) = rollwave_aws::sqs_filters();
    let filters = |alias: &str| lambda.mappings(&queue, "api", alias, &mut Vec::new()).unwrap();
    assert_eq!(filters("canary").len(), 1);
    assert_eq!(filters("canary")[0].filter_criteria, canary);
    assert_eq!(filters("live").len(), 1);
    assert_eq!(filters("live")[0].filter_criteria, stable);
    // The patterns filter on the attribute the router's helpers set.
    assert!(canary.to_string().contains(rollwave_router::messages::ATTRIBUTE));
}

#[test]
fn through_the_router_each_user_stays_on_one_alias_for_the_whole_step() {
    let Some(moto) = Moto::start("through_the_router_each_user_stays_on_one_alias_for_the_whole_step") else {
        return;
    };
    moto.fixture(&["setup", "us-east-1", "api", "3"]);
    // Local HTTP servers stand in for what reaches each alias (its function URL): each
    // says which it is.
    let stand_in = |name: &str| {
        let listen = format!("127.0.0.1:{}", free_port());
        let app = crate::kit::rollwave_process(
            &["sample-app", "--listen", &listen, "--host-id", name, "--latency-ms", "0", "--error-rate", "0"],
            &[],
        );
        (app, listen)
    };
    let (_stable_app, stable) = stand_in("api:live");
    let (_canary_app, canary) = stand_in("api:canary");
    let server = moto.server();
    let client = server.client();
    let manifest = format!(
        "service: fns\n\
         environments:\n  prod:\n    regions:\n      us-east-1: {{ functions: [{{ name: api, alias: live, router: {{ stable: \"{stable}\", canary: \"{canary}\" }} }}] }}\n\
         strategy:\n  one_box: {{ max_share: 10%, bake: 10m }}\n\
         stages:\n  - {{ name: prod, environment: prod }}\n"
    );
    client.apply("fns.yaml", &manifest).unwrap();
    let token = client
        .create_token(&rollwave_api::CreateToken {
            role: "router".into(),
            region: Some("fns/prod/us-east-1".into()),
            ..Default::default()
        })
        .unwrap()
        .token;
    let router_port = free_port();
    let (listen, admin) = (format!("127.0.0.1:{router_port}"), format!("127.0.0.1:{}", free_port()));
    let _router = crate::kit::rollwave_process(
        &[
            "router",
            "--server",
            &server.base,
            "--service",
            "fns",
            "--environment",
            "prod",
            "--region",
            "us-east-1",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--token",
            &token,
        ],
        &[],
    );
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let ask = |key: usize| -> (String, String) {
        let mut r =
            agent.get(format!("http://{listen}/")).header("x-rollwave-key", format!("user-{key}")).call().unwrap();
        let track = r.headers().get("x-rollwave-track").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
        (body["host"].as_str().unwrap_or("").to_owned(), track)
    };
    wait_for("the router serves the alias", Duration::from_secs(30), || {
        agent.get(format!("http://{listen}/")).call().is_ok_and(|r| r.status() == 200) && ask(0).0 == "api:live"
    });

    client.create_release("fns", &release("v2", "2")).unwrap();
    wait_for("the canary alias is on version 2", Duration::from_secs(30), || {
        moto.lambda("us-east-1").get_alias("api", "canary", &mut Vec::new()).is_ok_and(|a| a.function_version == "2")
    });
    wait_for("the router sends some users to the canary alias", Duration::from_secs(30), || {
        (0..100).any(|k| ask(k).0 == "api:canary")
    });
    let answers: Vec<(String, String)> = (0..400).map(ask).collect();
    let on_canary = answers.iter().filter(|(_, t)| t == "canary").count();
    assert!((15..75).contains(&on_canary), "{on_canary} of 400 users on the canary at a 10% share");
    assert!(answers.iter().all(|(at, track)| (track == "canary") == (at == "api:canary")), "{answers:?}");
    // Sticky: each user gets the same alias again.
    assert!((0..400).step_by(3).all(|k| ask(k) == answers[k]));
    // The split is the router's: the alias itself carries no weights.
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "1");
}

#[test]
fn the_one_box_judge_and_the_bakes_count_each_version_s_invocations_from_cloudwatch() {
    let Some(moto) = Moto::start("the_one_box_judge_and_the_bakes_count_each_version_s_invocations_from_cloudwatch")
    else {
        return;
    };
    moto.fixture(&["setup", "us-east-1", "api", "3"]);
    // Versions 1 and 2 are good; version 3 fails half of its invocations.
    moto.fixture(&["traffic", "us-east-1", "api", "1", "100", "1"]);
    moto.fixture(&["traffic", "us-east-1", "api", "2", "100", "1"]);
    moto.fixture(&["traffic", "us-east-1", "api", "3", "100", "50"]);
    let server = moto.server();
    let client = server.client();
    // A judged one-box, and no bake ends before it has counted 300 invocations.
    let manifest = "service: fns\n\
        environments:\n  prod:\n    regions:\n      us-east-1: { functions: [{ name: api, alias: live }] }\n\
        strategy:\n  one_box: { max_share: 10%, bake: 1s, judge: true }\n  rolling: { steps: [100%] }\n\
        \x20 bake: { min_datapoints: 300 }\n\
        stages:\n  - { name: prod, environment: prod }\n";
    client.apply("fns.yaml", manifest).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();
    wait_for("v2 completes", Duration::from_secs(90), || {
        client.release("fns", "v2").is_ok_and(|r| r.release.outcome == Outcome::Completed)
    });
    let v2 = client.release("fns", "v2").unwrap();
    let verdict = v2.events.iter().find(|e| e.kind == rollwave_api::EventKind::JudgeVerdict).expect("a verdict");
    assert!(verdict.reason.as_deref().is_some_and(|r| r.starts_with("sequential (PASS)")), "{verdict:?}");
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "2");

    client.create_release("fns", &release("v3", "3")).unwrap();
    wait_for("v3 is stopped", Duration::from_secs(90), || {
        client.release("fns", "v3").is_ok_and(|r| r.release.outcome != Outcome::InProgress)
    });
    let v3 = serde_json::to_string(&client.release("fns", "v3").unwrap()).unwrap();
    assert!(v3.contains("judge_verdict") && v3.contains("rollback_started"), "{v3}");
    // The release halts as its rollback starts; the alias moves back as the rollback runs.
    wait_for("v3's rollback to complete", Duration::from_secs(30), || {
        client
            .release("fns", "v3")
            .is_ok_and(|r| r.events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackCompleted))
    });
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "2", "the alias is back where v3 found it");
}

/// A proxy in front of moto that answers the first `throttled` requests with Lambda's
/// 429 and passes the rest on (one request per connection).
fn throttling_proxy(upstream: &str, throttled: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut client) = stream else { return };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                // The request: its head, then as much body as it says.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    let Ok(read) = client.read(&mut buf) else { return };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..read]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let Ok(read) = client.read(&mut buf) else { return };
                    if read == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..read]);
                }
                if n < throttled {
                    let body = r#"{"Type":"User","message":"Rate exceeded"}"#;
                    let _ = write!(
                        client,
                        "HTTP/1.1 429 Too Many Requests\r\nx-amzn-errortype: TooManyRequestsException\r\n\
                         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                // Passed on with `connection: close`, so the answer ends with the connection.
                let text = String::from_utf8_lossy(&request[..head_end]).into_owned();
                let text = text.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
                let Ok(mut up) = std::net::TcpStream::connect(&upstream) else { return };
                let _ = up.write_all(text.as_bytes());
                let _ = up.write_all(&request[head_end..]);
                let mut answer = Vec::new();
                let _ = up.read_to_end(&mut answer);
                let _ = client.write_all(&answer);
            });
        }
    });
    address
}

#[test]
fn a_throttled_lambda_call_is_retried_and_the_retries_are_in_the_timeline() {
    let Some(moto) = Moto::start("a_throttled_lambda_call_is_retried_and_the_retries_are_in_the_timeline") else {
        return;
    };
    moto.fixture(&["setup", "us-east-1", "api", "3"]);
    moto.fixture(&["setup", "us-east-1", "worker", "3"]);
    let proxy = throttling_proxy(&moto.endpoint, 2);
    let server = Server::builder()
        .args(&["--cloudwatch-delay", "0s"])
        .env("AWS_ENDPOINT_URL_LAMBDA", &proxy)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .driver(None)
        .start();
    let client = server.client();
    client.apply("fns.yaml", &manifest("1s")).unwrap();
    client.create_release("fns", &release("v2", "2")).unwrap();
    wait_for("v2 completes", Duration::from_secs(60), || {
        client.release("fns", "v2").is_ok_and(|r| r.release.outcome == Outcome::Completed)
    });
    assert_eq!(routing(&moto.alias("us-east-1", "api")), "2");
    // The retries are written down with the step that made them.
    let timeline = serde_json::to_string(&client.release("fns", "v2").unwrap()).unwrap();
    assert!(timeline.contains("429 TooManyRequestsException: Rate exceeded; retry 1 in 200 ms"), "{timeline}");
}
