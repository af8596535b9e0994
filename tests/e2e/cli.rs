//! The `rollwave` binary as its users and scripts see it: exit codes, located errors and
//! the JSON contracts of `plan`, `simulate` and `study`.

use crate::kit::{BIN, Server, free_port, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn rollwave(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("rollwave runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn simulate_json(scenario: &str) -> Value {
    let o = rollwave(&["simulate", "examples/pipeline.yaml", "--scenario", scenario, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

#[test]
fn validate_summarises_a_good_manifest_in_one_line() {
    let o = rollwave(&["validate", "examples/pipeline.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("4 stage(s), 8 wave(s)"), "{out}");
}

#[test]
fn validate_lists_every_error_with_its_place() {
    let path = scratch(
        "broken.yaml",
        "service: shop\nenvironments:\n  prod:\n    regions:\n      r1: { timezone: Mars/Olympus, zones: { a: 2 } }\nstages:\n  - name: prod\n    environmnet: prod\n    bake: 3 weeks\n",
    );
    let o = rollwave(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let file = path.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 3, "{err}");
    assert!(lines.iter().all(|l| l.starts_with(&format!("{file}:"))), "{err}");
    assert!(err.contains(&format!("{file}:5:23: ")), "time zone at its value: {err}");
    assert!(err.contains(&format!("{file}:8:5: unknown key \"environmnet\"; did you mean \"environment\"?")), "{err}");
    assert!(err.contains(&format!("{file}:9:11: ")), "bad duration: {err}");
}

#[test]
fn unreadable_files_and_bad_usage_exit_2() {
    assert_eq!(rollwave(&["validate", "no/such/file.yaml"]).status.code(), Some(2));
    assert_eq!(rollwave(&["simulate", "examples/pipeline.yaml"]).status.code(), Some(2));
}

#[test]
fn plan_json_is_the_expanded_tree_with_its_lead_time() {
    let o = rollwave(&["plan", "examples/pipeline.yaml", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    let stages = plan["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma", "prod"]);
    let prod = &stages[3];
    assert_eq!(prod["approval"], true);
    assert_eq!(prod["waves"].as_array().unwrap().len(), 5);
    let wave1 = &prod["waves"][0];
    assert_eq!(wave1["bake"]["time_s"], 12 * 3600);
    let region = &wave1["regions"][0];
    assert_eq!(region["one_box"]["hosts"], serde_json::json!(["cac1-az1-1"]));
    assert_eq!(
        region["zones"][0]["batches"],
        serde_json::json!([1, 1, 1]),
        "4 hosts, 33%: one at a time, one-box done"
    );
    // The lead time is the sum of the waves' critical paths.
    let sum: u64 =
        stages.iter().flat_map(|s| s["waves"].as_array().unwrap()).map(|w| w["lead_time_s"].as_u64().unwrap()).sum();
    assert_eq!(plan["lead_time_s"].as_u64().unwrap(), sum);
    // 1h one-box + 3 × 30m zone bakes + 12h for wave-1.
    assert_eq!(wave1["lead_time_s"], 3600 + 3 * 1800 + 12 * 3600);
}

#[test]
fn schema_is_a_json_schema_of_the_manifest() {
    let o = rollwave(&["schema"]);
    assert!(o.status.success());
    let schema: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(schema["$schema"].as_str().unwrap().contains("json-schema.org"));
    for key in ["service", "environments", "strategy", "stages", "alarms", "windows", "watch"] {
        assert!(schema["properties"].get(key).is_some(), "{key} missing");
    }
}

#[test]
fn simulate_json_keeps_its_contract() {
    let report = simulate_json("examples/bad-release.yaml");
    let releases = report["releases"].as_array().unwrap();
    let v2 = &releases[0];
    assert_eq!((v2["version"].as_str(), v2["outcome"].as_str()), (Some("v2"), Some("completed")));
    assert!(v2["lead_time_s"].as_u64().unwrap() > 0);
    assert!(v2["reached"].as_array().unwrap().contains(&Value::from("prod/wave-5")));
    let v3 = &releases[1];
    assert_eq!(v3["outcome"], "rolled_back");
    assert!(v3.get("lead_time_s").is_none());
    let scopes: Vec<&str> = v3["rolled_back_scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(scopes.contains(&"alpha/us-west-2/usw2-az1"), "{scopes:?}");

    let events = report["events"].as_array().unwrap();
    for e in events {
        let t = e["t"].as_str().unwrap();
        assert!(t.parse::<jiff::Timestamp>().is_ok(), "RFC 3339: {t}");
        assert!(e["kind"].is_string() && e["scope"].is_string() && e.get("release").is_some());
    }
    // v3 is caught by the zone alarm in its first environment, rolled back there, halted.
    let kinds_for_v3: Vec<&str> =
        events.iter().filter(|e| e["release"] == "v3").map(|e| e["kind"].as_str().unwrap()).collect();
    let fired = kinds_for_v3.iter().position(|k| *k == "alarm_fired").unwrap();
    assert_eq!(&kinds_for_v3[fired..fired + 3], ["alarm_fired", "rollback_started", "release_halted"]);
    assert!(!kinds_for_v3.contains(&"stage_completed"), "v3 goes no further");

    let blast = &report["blast_radius"];
    let bad = blast["bad_requests"].as_u64().unwrap();
    let total = blast["total_requests"].as_u64().unwrap();
    assert!(bad > 0 && bad < total / 1000, "{blast}");
    assert_eq!(blast["hosts_exposed"], 1, "only alpha's one host ran v3");
    assert!((blast["fraction"].as_f64().unwrap() - bad as f64 / total as f64).abs() < 1e-12);
}

#[test]
fn a_typo_in_an_alarm_metric_stops_the_simulation_at_its_place() {
    // Once accepted and never evaluated, the typo let v3 reach every host of a zone.
    let pipeline = std::fs::read_to_string("examples/pipeline.yaml").unwrap();
    let typo = pipeline.replace("{ name: errors, metric: error_rate,", "{ name: errors, metric: eror_rate,");
    assert_ne!(typo, pipeline);
    let path = scratch("typo-pipeline.yaml", &typo);
    let o = rollwave(&["simulate", path.to_str().unwrap(), "--scenario", "examples/bad-release.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:62:29: unknown metric \"eror_rate\"; did you mean \"error_rate\"?")),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "no report from a manifest that does not hold");
}

#[test]
fn the_examples_show_every_kind_of_event() {
    let mut kinds = std::collections::BTreeSet::new();
    for scenario in ["good-release", "bad-release", "latent-defect", "incident", "in-flight"] {
        let report = simulate_json(&format!("examples/{scenario}.yaml"));
        for e in report["events"].as_array().unwrap() {
            kinds.insert(e["kind"].as_str().unwrap().to_owned());
        }
    }
    for kind in [
        "release_created",
        "stage_entered",
        "wave_started",
        "region_started",
        "one_box_deployed",
        "bake_started",
        "bake_completed",
        "zone_started",
        "batch_deployed",
        "zone_completed",
        "region_completed",
        "wave_completed",
        "stage_completed",
        "release_completed",
        "blocked",
        "alarm_fired",
        "alarm_cleared",
        "rollback_started",
        "rollback_completed",
        "release_halted",
        "release_superseded",
        "host_failed",
        "regression_suspected",
    ] {
        assert!(kinds.contains(kind), "no example shows {kind}");
    }
}

#[test]
fn a_simulation_is_repeatable_and_the_seed_is_its_only_randomness() {
    let args = ["simulate", "examples/pipeline.yaml", "--scenario", "examples/in-flight.yaml", "--json", "--seed", "7"];
    let a = rollwave(&args);
    let b = rollwave(&args);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let other = rollwave(&[
        "simulate",
        "examples/pipeline.yaml",
        "--scenario",
        "examples/in-flight.yaml",
        "--json",
        "--seed",
        "8",
    ]);
    assert_ne!(a.stdout, other.stdout, "another seed, another world");
}

#[test]
fn until_stops_the_clock() {
    let o = rollwave(&[
        "simulate",
        "examples/pipeline.yaml",
        "--scenario",
        "examples/good-release.yaml",
        "--json",
        "--until",
        "1d",
    ]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["releases"][0]["outcome"], "in_progress");
    assert_eq!(report["ended"], "2026-12-01T08:00:00Z");
}

#[test]
fn a_bad_scenario_is_located_too() {
    let path = scratch(
        "bad-scenario.yaml",
        "start: yesterday\ntraffic: { requests_per_host_per_s: 20 }\nreleases:\n  - { version: v2, at: 0h }\noperators:\n  - { at: 1h, action: aprove, release: v9 }\nincidents:\n  - { at: 2h, region: mars-1, for: 1h }\n",
    );
    let o = rollwave(&["simulate", "examples/pipeline.yaml", "--scenario", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let file = path.display().to_string();
    assert!(err.contains(&format!("{file}:1:8: invalid timestamp")), "{err}");
    assert!(
        err.contains(&format!("{file}:6:23: unknown operator action \"aprove\"; did you mean \"approve\"?")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:6:40: no release \"v9\"")), "{err}");
    assert!(err.contains(&format!("{file}:8:23: no region \"mars-1\"")), "{err}");
}

#[test]
fn the_sample_app_plays_its_version_and_fails_as_told() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let app = crate::kit::rollwave_process(
        &["sample-app", "--listen", &listen, "--version", "v3", "--error-rate", "0.25", "--latency-ms", "0"],
        &[],
    );
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    wait_for("the sample app to answer", Duration::from_secs(20), || {
        agent.get(format!("{base}/health")).call().is_ok()
    });
    let mut failures = 0;
    for _ in 0..400 {
        let mut r = agent.get(format!("{base}/")).header("x-rollwave-track", "canary").call().unwrap();
        let body: Value = r.body_mut().read_json().unwrap();
        assert_eq!(body["version"], "v3");
        if r.status().as_u16() == 500 {
            failures += 1;
        } else {
            assert_eq!(body["track"], "canary");
        }
    }
    drop(app);
    assert!((60..140).contains(&failures), "{failures} of 400 failed; 25% asked");
}

/// `rollwave` with a clean home and the given environment.
fn rollwave_in(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("HOME", home).env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("rollwave runs")
}

#[test]
fn audit_verify_reads_the_server_or_a_named_database_and_never_creates_one() {
    let server = Server::builder().start();
    let home = tempfile::tempdir().unwrap();
    let env = [("ROLLWAVE_SERVER", server.base.as_str()), ("ROLLWAVE_TOKEN", Server::ADMIN)];
    // Something to audit: a token made and revoked through the CLI.
    let made =
        rollwave_in(home.path(), &env, &["token", "create", "--role", "viewer", "--name", "ops", "--ttl", "30d"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let listed = rollwave_in(home.path(), &env, &["token", "list", "--output", "json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let tokens: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let ops = tokens.as_array().unwrap().iter().find(|t| t["name"] == "ops").expect("listed");
    assert!(ops["expires_ms"].as_i64().is_some(), "{ops}");
    assert!(!stdout(&listed).contains(stdout(&made).trim()), "the secret is never listed");
    let id = ops["id"].to_string();
    let revoked = rollwave_in(home.path(), &env, &["token", "revoke", &id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));

    let verified = rollwave_in(home.path(), &env, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let out = stdout(&verified);
    assert!(out.contains("intact: 2 row(s)") && out.contains(&server.base), "{out}");
    assert!(out.contains("server.db"), "it says which database: {out}");
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "nothing was created under $HOME");

    // Without an admin token the server refuses.
    let anonymous = rollwave_in(home.path(), &env[..1], &["audit", "verify"]);
    assert_eq!(anonymous.status.code(), Some(1), "{}", stderr(&anonymous));

    // A named database that is not there is an error, and stays not there.
    let missing = home.path().join("absent.db");
    let url = format!("sqlite://{}", missing.display());
    let absent = rollwave_in(home.path(), &[], &["audit", "verify", "--db", &url]);
    assert!(!absent.status.success());
    assert!(stderr(&absent).contains("no database at"), "{}", stderr(&absent));
    assert!(!missing.exists());
}

#[test]
fn study_json_keeps_its_contract_and_is_the_same_for_the_same_seeds() {
    let args = ["study", "examples/pipeline.yaml", "--scenario", "examples/bad-release.yaml", "--runs", "12"];
    let run = |extra: &[&str]| {
        let o = rollwave(&[&args[..], extra, &["--json"]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<Value>(&o.stdout).expect("one JSON object")
    };
    let study = run(&[]);
    assert_eq!(run(&[]), study, "the same seeds give the same figures");
    assert_eq!(study["runs"], 12);
    let releases = study["releases"].as_array().unwrap();
    let find = |v: &str| releases.iter().find(|r| r["version"] == v).unwrap_or_else(|| panic!("{v} in {study}"));
    let good = find("v2");
    assert_eq!(good["defective"], false);
    assert_eq!(good["outcomes"]["completed"], 12, "{good}");
    assert_eq!(good["false_rollback_rate"], 0.0);
    let ci = good["false_rollback_ci95"].as_array().unwrap();
    assert_eq!(ci[0], 0.0);
    assert!(ci[1].as_f64().unwrap() > 0.0 && ci[1].as_f64().unwrap() < 0.3, "{ci:?}");
    let bad = find("v3");
    assert_eq!(bad["defective"], true);
    assert!(bad.get("false_rollback_rate").is_none(), "only for good releases: {bad}");
    assert_eq!(bad["rolled_back_by"]["alarm"], 12, "{bad}");
    for key in ["p50", "p90", "max"] {
        assert!(bad["detect_s"][key].as_f64().is_some_and(|s| s > 0.0), "{bad}");
    }
    for key in ["p50", "p99"] {
        assert!(bad["exposed_requests"][key].as_f64().is_some_and(|n| n > 0.0), "{bad}");
    }
    assert_ne!(run(&["--seed", "100"]), study, "other seeds, other runs");
    // No runs is refused by name.
    let o = rollwave(&["study", "examples/pipeline.yaml", "--scenario", "examples/bad-release.yaml", "--runs", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--runs"), "{}", stderr(&o));
}

/// A pipeline the noop driver carries through in seconds, with an approval before prod.
const WAITED_FOR: &str = "\
service: shop
environments:
  beta: { regions: { r1: { zones: { b1: 1 } } } }
  prod: { regions: { r1: { zones: { p1: 1 } } } }
strategy:
  one_box: false
  rolling: { batch: 100%, zone_bake: 1s }
stages:
  - { name: beta, environment: beta, bake: 1s }
  - { name: prod, environment: prod, approval: true, bake: 1s }
";

#[test]
fn release_wait_tells_reached_refused_and_timed_out_apart_and_status_watch_shows_each_change() {
    let server = Server::builder().driver(Some("noop")).args(&["--noop-delay", "200ms"]).start();
    let env = [("ROLLWAVE_SERVER", server.base.as_str()), ("ROLLWAVE_TOKEN", Server::ADMIN)];
    let run = |args: &[&str]| Command::new(BIN).args(args).envs(env).output().expect("rollwave runs");
    let manifest = scratch("waited-for.yaml", WAITED_FOR);
    assert!(run(&["service", "apply", manifest.to_str().unwrap()]).status.success());

    let mut watch = Command::new(BIN)
        .args(["status", "shop", "--watch", "--every", "100ms"])
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("status --watch starts");
    let watched = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let watched = std::sync::Arc::clone(&watched);
        let out = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                watched.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    wait_for("status --watch to show the service", Duration::from_secs(10), || {
        watched.lock().unwrap().contains("service shop")
    });

    // Created and waited for up to the stage before the approval: exit 0, progress on stderr.
    let o = run(&["release", "create", "shop", "v2", "--wait", "--until", "beta", "--every", "100ms"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let progress = stderr(&o);
    assert!(
        progress.contains("created v2") && progress.contains("stage_completed") && progress.contains("v2 reached beta"),
        "{progress}"
    );
    assert!(stdout(&o).starts_with("v2 in_progress"), "the release as it ended: {}", stdout(&o));
    // The watch saw the release appear without being asked again.
    wait_for("status --watch to show v2", Duration::from_secs(10), || {
        let seen = watched.lock().unwrap();
        seen.contains("--- ") && seen.contains("v2 ")
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();

    // Waiting at the approval is still in progress: the timeout ends the wait (7), and the
    // release goes on waiting.
    let o = run(&["release", "wait", "shop@v2", "--timeout", "1s", "--every", "100ms"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("v2 waiting at prod"), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out after 1s"), "{}", stderr(&o));
    // A stage the service does not have is refused (1) with the names it has.
    let o = run(&["release", "wait", "v2", "--until", "gama"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("use one of completed, beta, beta/wave-1, prod, prod/wave-1"), "{}", stderr(&o));
    // So is a release that does not exist.
    assert_eq!(run(&["release", "wait", "shop@v9"]).status.code(), Some(1));
    // Approved, it completes: 0, and JSON on stdout when asked.
    assert!(run(&["approve", "shop@v2"]).status.success());
    let o = run(&["release", "wait", "shop@v2", "--every", "100ms", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let release: Value = serde_json::from_slice(&o.stdout).expect("the release as JSON");
    assert_eq!(release["outcome"], "completed");
}

#[test]
fn the_agent_router_and_relay_given_a_ca_bundle_that_trusts_nothing_refuse_to_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key-only.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n").unwrap();
    let work = dir.path().join("work").display().to_string();
    let server = ["--server", "https://127.0.0.1:1", "--token", "rw_x"];
    let place = ["--service", "web", "--environment", "prod", "--region", "r1"];
    let agent = [&["agent"][..], &server, &["--host-id", "h1", "--environment", "prod", "--region", "r1"]]
        .concat()
        .into_iter()
        .chain(["--zone", "z1", "--workdir", work.as_str()])
        .collect::<Vec<_>>();
    let router = [&["router"][..], &server, &place].concat();
    let relay = [&["relay"][..], &server, &place].concat();
    for (args, via_env) in [(agent, true), (router, false), (relay, true)] {
        let mut command = Command::new(BIN);
        command.args(&args);
        if via_env {
            command.env("ROLLWAVE_CA_BUNDLE", &key);
        } else {
            command.arg("--ca-bundle").arg(&key);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: bad usage: {stderr}", args[0]);
        assert!(stderr.contains("--ca-bundle") && stderr.contains("key-only.pem holds no certificate"), "{stderr}");
    }
}

#[test]
fn client_commands_trust_the_ca_bundle_they_are_given_for_an_https_server() {
    use rollwave_testkit::{HttpsServer, tls_fixture};
    // A TLS terminator's stand-in: a real HTTPS server with a private CA's certificate,
    // answering `service list` with the list the API would.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("v1")).unwrap();
    std::fs::write(dir.path().join("v1/services"), "[]").unwrap();
    let https = HttpsServer::start(dir.path());
    let list = |bundle: Option<&Path>| {
        let mut command = Command::new(BIN);
        command.args(["service", "list", "--output", "json", "--server", &https.base]);
        if let Some(bundle) = bundle {
            command.env("ROLLWAVE_CA_BUNDLE", bundle);
        }
        command.output().unwrap()
    };
    let refused = list(None);
    assert_eq!(refused.status.code(), Some(3), "the WebPKI roots do not vouch for it: {}", stderr(&refused));
    assert!(stderr(&refused).to_lowercase().contains("certificate"), "{}", stderr(&refused));
    let trusted = list(Some(&tls_fixture("ca.pem")));
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    assert_eq!(stdout(&trusted).trim(), "[]");
    let bad = list(Some(&tls_fixture("server.key")));
    assert_eq!(bad.status.code(), Some(2), "a bundle with no certificate is a usage error: {}", stderr(&bad));
    assert!(stderr(&bad).contains("--ca-bundle") && stderr(&bad).contains("holds no certificate"), "{}", stderr(&bad));
}
