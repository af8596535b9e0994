//! The router in server mode: it learns its table from the control plane and follows
//! the rollout (the one-box becomes the canary track) without restarting, and pushes
//! the traffic it sends each host back to the control plane.

use crate::kit::{Proc, Server, free_port, rollwave_process, wait_for};
use rollwave_api::client::Client;
use rollwave_api::*;
use std::collections::HashMap;
use std::time::Duration;

/// `rollwave` with these arguments and the server's admin token in its environment.
fn spawn(args: &[&str]) -> Proc {
    rollwave_process(args, &[("ROLLWAVE_BOOTSTRAP_TOKEN", Server::ADMIN)])
}

const WAIT: Duration = Duration::from_secs(60);

/// A sample app playing `host` (failing `error_rate` of its requests), registered in zone
/// z1 of region r1 of `web`'s prod with its address.
fn host(admin: &Client, host: &str, error_rate: &str) -> Proc {
    let listen = format!("127.0.0.1:{}", free_port());
    let app =
        spawn(&["sample-app", "--listen", &listen, "--host-id", host, "--latency-ms", "0", "--error-rate", error_rate]);
    let register = RegisterHost {
        service: Some("web".into()),
        environment: "prod".into(),
        host: host.into(),
        region: Some("r1".into()),
        zone: Some("z1".into()),
        address: Some(listen),
    };
    let _: Registered = admin.post("/v1/hosts/register", &register).unwrap();
    app
}

/// `rollwave router` for region r1 of `web`'s prod, with a router token of that region.
fn router(base: &str, token: &str, listen: u16, extra: &[&str]) -> Proc {
    let (listen, admin) = (format!("127.0.0.1:{listen}"), format!("127.0.0.1:{}", free_port()));
    let mut args = vec!["router", "--server", base, "--service", "web", "--environment", "prod", "--region", "r1"];
    args.extend(["--listen", &listen, "--admin", &admin, "--token", token]);
    args.extend_from_slice(extra);
    spawn(&args)
}

#[test]
fn a_router_in_server_mode_sends_the_canary_share_to_the_one_box() {
    let server = Server::builder().start();
    let base = server.base.clone();
    let admin = server.client();
    admin
        .apply(
            "web.yaml",
            "service: web\nenvironments:\n  prod: { regions: { r1: { zones: { z1: 2 } } } }\n\
             strategy:\n  one_box: { hosts: 1, max_share: 50%, bake: 10m }\n\
             stages:\n  - { name: prod, environment: prod }\n",
        )
        .unwrap();
    // Two hosts, each a sample app that says which host it is.
    let apps: Vec<Proc> = ["z1-1", "z1-2"].iter().map(|h| host(&admin, h, "0")).collect();
    let router_port = free_port();
    // The router reads its region's table with a router token of that region.
    let token = admin
        .create_token(&CreateToken { role: "router".into(), region: Some("web/prod/r1".into()), ..Default::default() })
        .unwrap()
        .token;
    let _router = router(&base, &token, router_port, &[]);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let ask = |key: usize| -> (String, String) {
        let mut r = agent
            .get(format!("http://127.0.0.1:{router_port}/"))
            .header("x-rollwave-key", format!("user-{key}"))
            .call()
            .unwrap();
        let track = r.headers().get("x-rollwave-track").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
        (body["host"].as_str().unwrap_or("").to_owned(), track)
    };
    wait_for("the router", WAIT, || {
        agent.get(format!("http://127.0.0.1:{router_port}/")).call().is_ok_and(|r| r.status() == 200)
    });
    // Before any release everyone is on the stable track.
    assert!((0..20).all(|k| ask(k).1 == "stable"));

    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    wait_for("the one-box to bake", WAIT, || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    // The router follows: half the region is the canary now, and canary users land on the one-box.
    wait_for("the router to see the canary", WAIT, || (0..40).any(|k| ask(k).1 == "canary"));
    let answers: Vec<(String, String)> = (0..400).map(ask).collect();
    let canary = answers.iter().filter(|(_, t)| t == "canary").count();
    assert!((140..260).contains(&canary), "{canary} of 400 users on the canary at a 50% share");
    assert!(answers.iter().all(|(host, track)| (track == "canary") == (host == "z1-1")), "{answers:?}");
    // Sticky: the same users get the same answers.
    assert!((0..400).step_by(7).all(|k| ask(k) == answers[k]));
    drop(apps);
}

/// Sums a host's traffic as the control plane shows it: (requests, errors).
fn pushed(admin: &Client, host: &str, version: &str) -> (u64, u64) {
    let series = |metric: &str| -> MetricSeries {
        admin.get(&format!("/v1/metrics?service=web&metric={metric}&scope=prod/{host}&version={version}")).unwrap()
    };
    // request_rate is requests per second of a 10 s bin; error_rate is errors per request.
    let rates = series("request_rate");
    let errors = series("error_rate");
    let requests: HashMap<i64, f64> = rates.points.iter().map(|&(t, rate)| (t, rate * 10.0)).collect();
    let total_errors: f64 =
        errors.points.iter().map(|(t, share)| share * requests.get(t).copied().unwrap_or(0.0)).sum();
    (requests.values().sum::<f64>().round() as u64, total_errors.round() as u64)
}

#[test]
fn a_router_in_server_mode_pushes_the_traffic_of_each_host_and_version() {
    let server = Server::builder().start();
    let base = server.base.clone();
    let admin = server.client();
    admin
        .apply(
            "web.yaml",
            "service: web\nenvironments:\n  prod: { regions: { r1: { zones: { z1: 2 } } } }\n\
             stages:\n  - { name: prod, environment: prod }\n",
        )
        .unwrap();
    // z1-1 always answers; z1-2 fails a quarter of its requests with a 500.
    let apps: Vec<Proc> = [("z1-1", "0"), ("z1-2", "0.25")].iter().map(|(h, e)| host(&admin, h, e)).collect();
    let token = admin
        .create_token(&CreateToken {
            role: "router".into(),
            name: Some("router-r1".into()),
            region: Some("web/prod/r1".into()),
            ..Default::default()
        })
        .unwrap()
        .token;
    let table: Routes = admin.get("/v1/services/web/routes/prod/r1").unwrap();
    assert_eq!(table.hosts.len(), 2);
    let version = table.hosts[0].version.clone();

    let router_port = free_port();
    // The failing host must keep its share of the traffic for the count.
    let _router = router(&base, &token, router_port, &["--push-every", "1s", "--eject-after", "1000"]);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    // What the router answered, per host: (requests, 500s). Only z1-2 answers 500.
    let mut seen: HashMap<&str, (u64, u64)> = HashMap::new();
    let ask = |seen: &mut HashMap<&str, (u64, u64)>, key: usize| -> bool {
        let Ok(mut r) = agent
            .get(format!("http://127.0.0.1:{router_port}/"))
            .header("x-rollwave-key", format!("user-{key}"))
            .call()
        else {
            return false;
        };
        let status = r.status().as_u16();
        let body: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
        let host = match (status, body["host"].as_str()) {
            (200, Some("z1-1")) => "z1-1",
            (200, Some("z1-2")) | (500, _) => "z1-2",
            other => panic!("unexpected answer {other:?}"),
        };
        let counts = seen.entry(host).or_default();
        counts.0 += 1;
        counts.1 += u64::from(status == 500);
        true
    };
    wait_for("the router", WAIT, || ask(&mut seen, 0));
    for key in 0..300 {
        assert!(ask(&mut seen, key));
    }
    let expected = seen.clone();
    assert!(expected["z1-1"].0 > 50 && expected["z1-2"].0 > 50, "{expected:?}");
    assert_eq!(expected["z1-1"].1, 0);
    assert!(expected["z1-2"].1 > 0, "{expected:?}");
    wait_for("the pushed traffic", WAIT, || {
        pushed(&admin, "z1-1", &version) == expected["z1-1"] && pushed(&admin, "z1-2", &version) == expected["z1-2"]
    });

    // Pushes are deltas: more traffic adds to the totals, nothing is counted twice.
    for key in 300..400 {
        assert!(ask(&mut seen, key));
    }
    let expected = seen.clone();
    wait_for("the next pushes", WAIT, || {
        pushed(&admin, "z1-1", &version) == expected["z1-1"] && pushed(&admin, "z1-2", &version) == expected["z1-2"]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pushed(&admin, "z1-1", &version), expected["z1-1"]);
    assert_eq!(pushed(&admin, "z1-2", &version), expected["z1-2"]);
    drop(apps);
}
