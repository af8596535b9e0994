//! The router end to end: real HTTP on 127.0.0.1, backends as tokio tasks.

mod support;

use clap::Parser;
use rollwave_core::share::BasisPoints;
use rollwave_router::track::{self, Track};
use rollwave_router::{Config, Router, RouterArgs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn share(bp: u32) -> BasisPoints {
    BasisPoints::new(bp).unwrap()
}

fn key_header(key: &str) -> [(&'static str, &[u8]); 1] {
    [("x-rollwave-key", key.as_bytes())]
}

/// A stable backend named `stable` and a canary backend named `canary`.
async fn two_tracks() -> (Backend, Backend) {
    (Backend::start("stable").await, Backend::start("canary").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_keeps_its_track_and_growing_the_share_only_moves_stable_to_canary() {
    let (stable, canary) = two_tracks().await;
    let hosts = [host(&stable, "v2", "stable"), host(&canary, "v3", "canary")];
    let router = TestRouter::start(&routes_yaml("checkout-v3", "10%", &hosts)).await;
    let http = Http::new();

    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut before = Vec::new();
    for key in &keys {
        let first = http.get(router.addr, "/", &key_header(key)).await;
        let again = http.get(router.addr, "/", &key_header(key)).await;
        assert_eq!(first.track(), again.track(), "key {key}");
        assert_eq!(first.backend(), first.track(), "the request went to a host of its track");
        assert_eq!(first.track(), track::assign("checkout-v3", key.as_bytes(), share(1000)).as_str());
        before.push(first.track().to_owned());
    }

    router.rewrite_routes(&routes_yaml("checkout-v3", "30%", &hosts), "applied").await;
    let mut moved = 0;
    for (key, was) in keys.iter().zip(&before) {
        let now = http.get(router.addr, "/", &key_header(key)).await;
        if was == "canary" {
            assert_eq!(now.track(), "canary", "key {key} went back to stable when the share grew");
        } else if now.track() == "canary" {
            moved += 1;
        }
    }
    assert!(moved > 20, "growing the share from 10% to 30% moved only {moved} of 300 keys");

    // The same rule for the hash itself, over many keys and every step of 5%.
    for i in 0..5_000 {
        let key = format!("key-{i}");
        let mut previous = Track::Stable;
        for bp in (0..=10_000).step_by(500) {
            let now = track::assign("checkout-v3", key.as_bytes(), share(bp));
            assert!(!(previous == Track::Canary && now == Track::Stable), "{key} at {bp} bp");
            previous = now;
        }
        assert_eq!(previous, Track::Canary, "at 100% every key is canary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_share_holds_within_one_point_over_20000_keys() {
    let (stable, canary) = two_tracks().await;
    let hosts = [host(&stable, "v2", "stable"), host(&canary, "v3", "canary")];
    let router = TestRouter::start(&routes_yaml("checkout-v3", "10%", &hosts)).await;
    let http = Http::new();
    let canaries = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for part in 0..8 {
        let (http, canaries, addr) = (http.clone(), canaries.clone(), router.addr);
        tasks.push(tokio::spawn(async move {
            for i in (part..20_000).step_by(8) {
                let reply = http.get(addr, "/", &key_header(&format!("user-{i}"))).await;
                assert_eq!(reply.backend(), reply.track());
                if reply.track() == "canary" {
                    canaries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let canaries = canaries.load(Ordering::Relaxed);
    assert!((1_800..=2_200).contains(&canaries), "{canaries} of 20000 keys on the canary, expected 10% ± 1%");
    assert_eq!(stable.hits() + canary.hits(), 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_decision_holds_on_the_next_hop() {
    // Second service, behind its own router whose hash alone would send everyone to stable.
    let (b_stable, b_canary) = (Backend::start("b-stable").await, Backend::start("b-canary").await);
    let inner = TestRouter::start(&routes_yaml(
        "payments-v7",
        "0%",
        &[host(&b_stable, "v7", "stable"), host(&b_canary, "v8", "canary")],
    ))
    .await;
    // First service: forwards the decision it received to the second.
    let a_stable = Backend::start_with_next("a-stable", Some(inner.addr)).await;
    let a_canary = Backend::start_with_next("a-canary", Some(inner.addr)).await;
    let edge = TestRouter::start(&routes_yaml(
        "checkout-v3",
        "50%",
        &[host(&a_stable, "v2", "stable"), host(&a_canary, "v3", "canary")],
    ))
    .await;

    let http = Http::new();
    let mut canaries = 0;
    for i in 0..100 {
        let key = format!("user-{i}");
        let reply = http.get(edge.addr, "/", &[("x-rollwave-key", key.as_bytes()), ("baggage", b"tenant=acme")]).await;
        let track = reply.track().to_owned();
        assert_eq!(reply.backend(), format!("a-{track}"));
        assert_eq!(reply.header("x-seen-track"), track);
        assert_eq!(reply.header("x-seen-baggage"), format!("tenant=acme,rollwave.track={track}"));
        assert_eq!(reply.header("x-next-backend"), format!("b-{track}"), "key {key}: the second hop left the track");
        assert_eq!(reply.header("x-next-seen-baggage"), format!("tenant=acme,rollwave.track={track}"));
        canaries += usize::from(track == "canary");
    }
    assert!(canaries > 20 && canaries < 80, "{canaries} of 100 on the canary at 50%");
    assert_eq!(b_canary.hits(), canaries as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_host_gets_no_new_requests_and_finishes_those_in_flight() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let router = TestRouter::start(&routes_yaml("s", "0%", &[host(&a, "v2", "stable")])).await;
    let http = Http::new();

    // A request in flight to `a` when it starts draining.
    let slow = {
        let (http, addr) = (http.clone(), router.addr);
        tokio::spawn(async move { http.get(addr, "/slow", &[]).await })
    };
    wait_until("the slow request reaches a", async || a.hits() == 1).await;
    let draining = Host { draining: true, ..host(&a, "v2", "stable") };
    router.rewrite_routes(&routes_yaml("s", "0%", &[draining, host(&b, "v2", "stable")]), "applied").await;
    assert!(router.router.routes_text().contains(&format!("stable {} v2 draining in_flight=1", a.addr)));

    for i in 0..50 {
        let reply = http.get(router.addr, "/", &key_header(&format!("k{i}"))).await;
        assert_eq!(reply.backend(), "b");
    }
    assert_eq!(a.hits(), 1);
    a.release();
    let slow = slow.await.unwrap();
    assert_eq!((slow.status.as_u16(), slow.backend()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_is_ejected_then_probed_back_after_the_cooldown() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let cooldown = Duration::from_millis(300);
    let router = TestRouter::start_with(
        &routes_yaml("s", "0%", &[host(&a, "v2", "stable"), host(&b, "v2", "stable")]),
        |config| {
            config.eject_after = 3;
            config.cooldown = cooldown;
        },
    )
    .await;
    let http = Http::new();
    let ejections = format!("rollwave_router_ejections_total{{host=\"{}\",version=\"v2\",track=\"stable\"}}", a.addr);

    a.set_mode(Mode::Fail);
    let mut failures = 0;
    for i in 0.. {
        assert!(i < 1_000, "a was never ejected");
        let reply = http.get(router.addr, "/", &[]).await;
        if reply.status == 500 {
            assert_eq!(reply.backend(), "a");
            failures += 1;
        }
        if metric(&router.metrics(), &ejections) == 1 {
            break;
        }
    }
    assert_eq!(failures, 3, "ejected after exactly 3 consecutive failures");

    // While it is out, only probes (one per cooldown) reach it.
    let out_since = Instant::now();
    let hits = a.hits();
    for _ in 0..40 {
        http.get(router.addr, "/", &[]).await;
    }
    let probes = a.hits() - hits;
    let cooldowns_elapsed = (out_since.elapsed().as_millis() / cooldown.as_millis()) as u64;
    assert!(probes <= cooldowns_elapsed + 1, "{probes} requests reached an ejected host");

    // Healthy again: the next probe brings it back.
    a.set_mode(Mode::Ok);
    let hits = a.hits();
    wait_until("a probe brings a back", async || {
        http.get(router.addr, "/", &[]).await;
        a.hits() > hits
    })
    .await;
    let back = a.hits();
    for _ in 0..100 {
        assert_eq!(http.get(router.addr, "/", &[]).await.status, 200);
    }
    assert!(a.hits() - back > 10, "a got {} of 100 requests after coming back", a.hits() - back);
    assert!(router.router.routes_text().contains(&format!("stable {} v2 in-service", a.addr)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_table_under_load_fails_no_request_and_keeps_connections() {
    let (s1, s2, c1) = (Backend::start("s1").await, Backend::start("s2").await, Backend::start("c1").await);
    let tables = [
        routes_yaml("s", "10%", &[host(&s1, "v2", "stable"), host(&c1, "v3", "canary")]),
        routes_yaml("s", "30%", &[host(&s1, "v2", "stable"), host(&s2, "v2", "stable"), host(&c1, "v3", "canary")]),
        routes_yaml("s", "50%", &[host(&s2, "v2", "stable"), host(&c1, "v3", "canary")]),
    ];
    let router = TestRouter::start(&tables[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (stop, addr) = (stop.clone(), router.addr);
        clients.push(tokio::spawn(async move {
            // One connection for the whole run: if the router dropped it, a request fails.
            let mut connection = Connection::open(addr).await;
            let (mut sent, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let key = format!("client-{c}-{sent}");
                match connection.get("/", &[("x-rollwave-key", &key)]).await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failed.push(format!("status {}", reply.status)),
                    Err(err) => failed.push(err.to_string()),
                }
                sent += 1;
            }
            (sent, failed)
        }));
    }
    for round in 0..12 {
        router.rewrite_routes(&tables[(round + 1) % tables.len()], "applied").await;
        if round == 5 {
            router.rewrite_routes("salt: [unclosed\n", "rejected").await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (sent, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        assert!(sent > 0);
        total += sent;
    }
    assert!(total > 100, "only {total} requests were sent during the reloads");
    // The last table applied is tables[0] (12 rounds): s2 is gone again.
    let s2_hits = s2.hits();
    let http = Http::new();
    for i in 0..20 {
        http.get(router.addr, "/", &key_header(&format!("after-{i}"))).await;
    }
    assert_eq!(s2.hits(), s2_hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_oversized_baggage_is_ignored_and_never_fails_the_request() {
    let (stable, canary) = two_tracks().await;
    let router =
        TestRouter::start(&routes_yaml("salt", "50%", &[host(&stable, "v2", "stable"), host(&canary, "v3", "canary")]))
            .await;
    let http = Http::new();
    let key = "user-7";
    let hashed = track::assign("salt", key.as_bytes(), share(5_000));
    let other = hashed.other().as_str();

    let many_then_ours = {
        let mut members: Vec<String> = (0..64).map(|i| format!("m{i}=v")).collect();
        members.push(format!("rollwave.track={other}"));
        members.join(",")
    };
    let huge_then_ours = format!("big={},rollwave.track={other}", "x".repeat(9_000));
    let ignored: Vec<(&str, Vec<u8>)> = vec![
        ("baggage", b"rollwave.track=blue".to_vec()),
        ("x-rollwave-track", b"purple".to_vec()),
        ("baggage", b";;;,,,===,=,rollwave.track".to_vec()),
        ("baggage", format!("rollwave.track=\"{other}\"").into_bytes()),
        ("baggage", format!("Rollwave.Track={other}").into_bytes()),
        ("baggage", many_then_ours.into_bytes()),
        ("baggage", huge_then_ours.into_bytes()),
        ("baggage", b"\xff\xfe=\x80, x=\xc3\xa9".to_vec()),
    ];
    for (name, value) in &ignored {
        let reply = http.get(router.addr, "/", &[("x-rollwave-key", key.as_bytes()), (name, value)]).await;
        let what = String::from_utf8_lossy(&value[..value.len().min(60)]);
        assert_eq!(reply.status, 200, "{name}: {what}");
        assert_eq!(reply.track(), hashed.as_str(), "{name}: {what} should have been ignored");
        assert_eq!(reply.header("x-seen-track"), hashed.as_str());
        let baggage = reply.header("x-seen-baggage");
        assert!(baggage.ends_with(&format!("rollwave.track={hashed}")), "{baggage}");
        assert!(baggage.len() <= 8_192 && baggage.split(',').count() <= 64, "{name}: {what}");
    }

    let honoured: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("baggage", format!(" a=1 ; p , rollwave.track = {other} ;q=1").as_bytes().to_vec().leak())],
        vec![("baggage", b"a=1"), ("baggage", format!("bad member,rollwave.track={other}").as_bytes().to_vec().leak())],
        vec![
            ("x-rollwave-track", other.as_bytes()),
            ("baggage", format!("rollwave.track={hashed}").as_bytes().to_vec().leak()),
        ],
        vec![
            ("x-rollwave-track", b"bogus"),
            (
                "baggage",
                format!("rollwave.track=%{:02x}{}", other.as_bytes()[0], &other[1..]).as_bytes().to_vec().leak(),
            ),
        ],
    ];
    for headers in &honoured {
        let mut all = vec![("x-rollwave-key", key.as_bytes())];
        all.extend(headers.iter().copied());
        let reply = http.get(router.addr, "/", &all).await;
        assert_eq!((reply.status.as_u16(), reply.track()), (200, other), "{headers:?}");
        assert_eq!(reply.backend(), other);
        assert!(reply.header("x-seen-baggage").ends_with(&format!("rollwave.track={other}")));
    }

    // Other members are passed on; only the decision is replaced.
    let reply = http
        .get(router.addr, "/", &[("x-rollwave-key", key.as_bytes()), ("baggage", b"a=1;p, rollwave.track=nope, b=2")])
        .await;
    assert_eq!(reply.header("x-seen-baggage"), format!("a=1;p,b=2,rollwave.track={hashed}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_is_set_when_the_client_has_no_key_and_keeps_it_on_its_track() {
    let (stable, canary) = two_tracks().await;
    let router =
        TestRouter::start(&routes_yaml("salt", "50%", &[host(&stable, "v2", "stable"), host(&canary, "v3", "canary")]))
            .await;
    let http = Http::new();
    let mut tracks = std::collections::HashSet::new();
    for _ in 0..40 {
        let first = http.get(router.addr, "/", &[]).await;
        let set_cookie = first.header("set-cookie").to_owned();
        let value = set_cookie.split(';').next().unwrap();
        let key = value.strip_prefix("rollwave_key=").expect("a rollwave_key cookie");
        assert_eq!(key.len(), 32);
        assert!(set_cookie.contains("Path=/") && set_cookie.contains("Max-Age="));
        assert_eq!(first.track(), track::assign("salt", key.as_bytes(), share(5_000)).as_str());
        for _ in 0..3 {
            let again = http.get(router.addr, "/", &[("cookie", format!("theme=dark; {value}").as_bytes())]).await;
            assert_eq!(again.track(), first.track());
            assert_eq!(again.header("set-cookie"), "", "no new cookie once the client has one");
        }
        tracks.insert(first.track().to_owned());
    }
    assert_eq!(tracks.len(), 2, "new clients are spread over both tracks");

    // A key in the header wins and needs no cookie; so does a decision carried along.
    let reply = http.get(router.addr, "/", &key_header("user-1")).await;
    assert_eq!(reply.header("set-cookie"), "");
    let reply = http.get(router.addr, "/", &[("x-rollwave-track", b"canary")]).await;
    assert_eq!((reply.track(), reply.header("set-cookie")), ("canary", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_the_key_when_cookies_are_off() {
    let (stable, canary) = two_tracks().await;
    let routes = routes_yaml("salt", "50%", &[host(&stable, "v2", "stable"), host(&canary, "v3", "canary")])
        .replace("hosts:", "key: { set_cookie: false }\nhosts:");
    let router = TestRouter::start(&routes).await;
    let http = Http::new();
    let expected = track::assign("salt", b"127.0.0.1", share(5_000));
    for _ in 0..5 {
        let reply = http.get(router.addr, "/", &[]).await;
        assert_eq!((reply.track(), reply.header("set-cookie")), (expected.as_str(), ""));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_without_hosts_falls_back_to_the_other_and_it_is_counted() {
    let stable = Backend::start("stable").await;
    let router = TestRouter::start(&routes_yaml("s", "100%", &[host(&stable, "v2", "stable")])).await;
    let http = Http::new();
    for i in 0..10 {
        let reply = http.get(router.addr, "/", &key_header(&format!("k{i}"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "stable");
        // The decision stays canary for the hops after this one.
        assert_eq!(reply.track(), "canary");
        assert_eq!(reply.header("x-seen-track"), "canary");
    }
    let metrics = router.metrics();
    assert_eq!(metric(&metrics, "rollwave_router_fallbacks_total{from=\"canary\",to=\"stable\"}"), 10);
    assert_eq!(metric(&metrics, "rollwave_router_fallbacks_total{from=\"stable\",to=\"canary\"}"), 0);

    // No host at all: 503, counted.
    router.rewrite_routes(&routes_yaml("s", "100%", &[]), "applied").await;
    let reply = http.get(router.addr, "/", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(metric(&router.metrics(), "rollwave_router_unavailable_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_fails_at_most_one_request_per_connection() {
    let (s1, s2) = (Backend::start("s1").await, Backend::start("s2").await);
    let router = TestRouter::start_with(
        &routes_yaml("s", "0%", &[host(&s1, "v2", "stable"), host(&s2, "v2", "stable")]),
        |config| config.timeout = Duration::from_secs(5),
    )
    .await;
    let sent = Arc::new(AtomicU64::new(0));
    let run = async {
        let mut clients = Vec::new();
        for c in 0..16 {
            let (sent, addr) = (sent.clone(), router.addr);
            clients.push(tokio::spawn(async move {
                let mut connection = Connection::open(addr).await;
                let mut failures = Vec::new();
                for i in 0..150 {
                    sent.fetch_add(1, Ordering::Relaxed);
                    match connection.get("/", &[("x-rollwave-key", &format!("c{c}-{i}"))]).await {
                        Ok(reply) if reply.status == 200 => {}
                        Ok(reply) => failures.push(reply.status.as_u16()),
                        Err(_) => {
                            failures.push(0);
                            connection = Connection::open(addr).await;
                        }
                    }
                }
                failures
            }));
        }
        wait_until("400 requests are sent", async || sent.load(Ordering::Relaxed) > 400).await;
        s1.kill().await;
        let mut results = Vec::new();
        for client in clients {
            results.push(client.await.unwrap());
        }
        results
    };
    // A guard against hanging, far above what the run needs.
    let results = tokio::time::timeout(Duration::from_secs(120), run).await.expect("requests hung");
    for failures in &results {
        assert!(failures.len() <= 1, "one connection saw {failures:?}");
        assert!(failures.iter().all(|&status| status == 502), "{failures:?}");
    }
    assert!(s2.hits() > 16 * 150 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_host_are_reused() {
    let backend = Backend::start("stable").await;
    let router = TestRouter::start(&routes_yaml("s", "0%", &[host(&backend, "v2", "stable")])).await;
    let mut client = Connection::open(router.addr).await;
    for i in 0..200 {
        let reply = client.get("/", &[("x-rollwave-key", &format!("k{i}"))]).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    assert_eq!(backend.connections(), 1, "one client, one request at a time: one connection to the host");

    // Eight clients at once need at most eight connections, however many requests they send.
    let mut clients = Vec::new();
    for c in 0..8 {
        let addr = router.addr;
        clients.push(tokio::spawn(async move {
            let mut client = Connection::open(addr).await;
            for i in 0..200 {
                let reply = client.get("/", &[("x-rollwave-key", &format!("c{c}-{i}"))]).await.unwrap();
                assert_eq!(reply.status, 200);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert!(backend.connections() <= 9, "{} connections for 8 clients", backend.connections());
    assert_eq!(backend.hits(), 1800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_refuses_connections_costs_no_request() {
    let backend = Backend::start("alive").await;
    // An address nothing listens on: bound and never listening, so that no other test's
    // listener or outgoing connection can take the port while this one runs.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = reserved.local_addr().unwrap();
    let routes = format!(
        "salt: s\ncanary_share: 0%\nhosts:\n  - {{ address: {dead}, version: v2, track: stable }}\n  \
         - {{ address: {}, version: v2, track: stable }}\n",
        backend.addr
    );
    let router = TestRouter::start_with(&routes, |config| config.eject_after = 1000).await;
    let http = Http::new();
    for i in 0..100 {
        let reply = http.get(router.addr, "/", &key_header(&format!("k{i}"))).await;
        assert_eq!((reply.status.as_u16(), reply.backend()), (200, "alive"), "request {i}");
    }
    // The dead host was tried (and counted as failing) without costing any request.
    let series = format!("rollwave_router_responses_5xx_total{{host=\"{dead}\",version=\"v2\",track=\"stable\"}}");
    assert!(metric(&router.metrics(), &series) > 10);
    assert_eq!(backend.hits(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_is_cut_at_the_timeout() {
    let hanging = Backend::start("hanging").await;
    hanging.set_mode(Mode::Hang);
    let router = TestRouter::start_with(&routes_yaml("s", "0%", &[host(&hanging, "v2", "stable")]), |config| {
        config.timeout = Duration::from_millis(300)
    })
    .await;
    let reply = Http::new().get(router.addr, "/", &[]).await;
    assert_eq!((reply.status.as_u16(), reply.track()), (504, "stable"));
    let series = format!("{{host=\"{}\",version=\"v2\",track=\"stable\"}}", hanging.addr);
    assert_eq!(metric(&router.metrics(), &format!("rollwave_router_responses_5xx_total{series}")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_per_host_version_and_track() {
    let (stable, canary) = two_tracks().await;
    let router =
        TestRouter::start(&routes_yaml("s", "100%", &[host(&stable, "v2", "stable"), host(&canary, "v3", "canary")]))
            .await;
    let http = Http::new();
    canary.set_mode(Mode::Fail);
    for _ in 0..2 {
        assert_eq!(http.get(router.addr, "/", &[]).await.status, 500);
    }
    let series = format!("{{host=\"{}\",version=\"v3\",track=\"canary\"}}", canary.addr);
    let count = format!("rollwave_router_request_duration_seconds_count{series}");
    wait_until("both requests are timed", async || metric(&router.metrics(), &count) == 2).await;

    let scrape = http.get(router.admin, "/metrics", &[]).await;
    assert_eq!(scrape.status, 200);
    assert_eq!(scrape.header("content-type"), rollwave_router::metrics::CONTENT_TYPE);
    assert_eq!(metric(&scrape.body, &format!("rollwave_router_requests_total{series}")), 2);
    assert_eq!(metric(&scrape.body, &format!("rollwave_router_responses_5xx_total{series}")), 2);
    let stable_series = format!("{{host=\"{}\",version=\"v2\",track=\"stable\"}}", stable.addr);
    assert!(scrape.body.contains(&format!("rollwave_router_requests_total{stable_series} 0")));
    assert!(scrape.body.contains("rollwave_router_fallbacks_total{from=\"canary\",to=\"stable\"} 0"));

    let routes = http.get(router.admin, "/routes", &[]).await;
    assert!(routes.body.starts_with("salt s canary_share 100%\n"), "{}", routes.body);
    assert_eq!(http.get(router.admin, "/healthz", &[]).await.body, "ok\n");
    assert_eq!(http.get(router.admin, "/nope", &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_routes_file_stops_the_start_and_a_bad_reload_keeps_the_table() {
    let path = scratch_file("routes.yaml");
    std::fs::write(&path, "salt: s\ncanary_share: 110%\nhosts: []\n").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Router::start(Config::new(&path), listener, admin).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{}:2:15: invalid percentage \"110%\": it is above 100%", path.display()));

    let stable = Backend::start("stable").await;
    let router = TestRouter::start(&routes_yaml("s", "0%", &[host(&stable, "v2", "stable")])).await;
    router.rewrite_routes("salt: s\ncanary_share: 10%\nhosts:\n  - { address: nowhere }\n", "rejected").await;
    let reply = Http::new().get(router.addr, "/", &[]).await;
    assert_eq!(reply.backend(), "stable");
}

#[test]
fn server_mode_needs_its_service_and_a_reachable_server() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RouterArgs,
    }
    let cli = Cli::try_parse_from([
        "router",
        "--server",
        "http://127.0.0.1:7000",
        "--service",
        "checkout",
        "--environment",
        "prod",
        "--region",
        "eu-west-1",
        "--timeout",
        "250ms",
    ])
    .unwrap();
    assert_eq!(cli.args.timeout, Duration::from_millis(250));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut args = cli.args.clone();
    args.server = Some(format!("http://127.0.0.1:{port}"));
    let err = format!("{:#}", rollwave_router::main(args).unwrap_err());
    assert!(err.contains("cannot reach"), "{err}");
    let mut args = cli.args;
    args.service = None;
    let err = rollwave_router::main(args).unwrap_err().to_string();
    assert!(err.contains("--service, --environment and --region"), "{err}");
}

/// A host that answers by path with the bytes it is told to, one connection at a time
/// and several requests per connection: framing the router must follow exactly.
async fn scripted_host() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut more = [0u8; 4096];
                        match stream.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let answer: Vec<u8> = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
                        [_, "/chunked"] => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                            5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
                            .to_vec(),
                        [_, "/empty"] => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                        ["HEAD", "/head"] => b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n".to_vec(),
                        [_, "/continue"] => {
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
                        }
                        [_, "/big"] => {
                            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
                            answer.resize(answer.len() + 1_048_576, b'x');
                            answer
                        }
                        [_, "/reject"] => {
                            // Answered before the body is read; the rest is read and dropped.
                            let answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big\n";
                            let _ = stream.write_all(answer).await;
                            let _ = stream.shutdown().await;
                            let mut sink = [0u8; 65536];
                            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                            return;
                        }
                        [_, "/close"] => {
                            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                            return;
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_framed_as_the_host_frames_them_and_connections_reused_when_they_may_be() {
    let (host_addr, connections) = scripted_host().await;
    let routes =
        format!("salt: s\ncanary_share: 0%\nhosts:\n  - {{ address: {host_addr}, version: v2, track: stable }}\n");
    let router = TestRouter::start(&routes).await;
    let mut client = Connection::open(router.addr).await;
    let reply = client.get("/chunked", &[]).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "hello world"));
    let reply = client.get("/empty", &[]).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (204, ""));
    let reply = client.get("/continue", &[]).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ok"));
    let reply = client.get("/big", &[]).await.unwrap();
    assert_eq!(reply.body.len(), 1_048_576);
    assert!(reply.body.bytes().all(|b| b == b'x'));
    let reply = client.get("/chunked", &[]).await.unwrap();
    assert_eq!(reply.body, "hello world");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "every response so far left the connection reusable");

    // HEAD: a length but no body.
    let mut raw = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    raw.write_all(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(" world\r\n0\r\n\r\n") {
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut more)).await.unwrap().unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&more[..n]);
    }
    let seen = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(seen.starts_with("http/1.1 200 ok\r\n") && seen.contains("content-length: 11\r\n"), "{seen}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // A body that ends when the host closes: whole, and that connection is not reused.
    let reply = client.get("/close", &[]).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "until the end"));
    let reply = client.get("/chunked", &[]).await.unwrap();
    assert_eq!(reply.body, "hello world");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_host_whole_with_a_length_or_chunked() {
    let backend = Backend::start("echo").await;
    let router = TestRouter::start(&routes_yaml("s", "0%", &[host(&backend, "v2", "stable")])).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut raw = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let read_reply = async |raw: &mut tokio::net::TcpStream| -> String {
        let mut seen = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.starts_with("HTTP/1.1 100 ")
                && let Some(end) = text.find("\r\n\r\n")
            {
                seen.drain(..end + 4);
                continue;
            }
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                    .unwrap_or_else(|| panic!("no length in {text}"));
                if seen.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&seen[end + 4..end + 4 + length]).into_owned();
                }
            }
            let mut more = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut more)).await.unwrap().unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&more[..n]);
        }
    };
    // With a length.
    raw.write_all(format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    raw.write_all(&body).await.unwrap();
    assert_eq!(read_reply(&mut raw).await.as_bytes(), &body[..]);
    // Chunked, in pieces, on the same connection; an Expect: 100-continue is the router's to answer.
    raw.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    for piece in body.chunks(30_000) {
        raw.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
        raw.write_all(piece).await.unwrap();
        raw.write_all(b"\r\n").await.unwrap();
    }
    raw.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = read_reply(&mut raw).await;
    assert_eq!(reply.len(), body.len());
    assert_eq!(reply.as_bytes(), &body[..]);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_answers_before_taking_the_body_is_heard() {
    let (host_addr, _) = scripted_host().await;
    let routes =
        format!("salt: s\ncanary_share: 0%\nhosts:\n  - {{ address: {host_addr}, version: v2, track: stable }}\n");
    let router = TestRouter::start(&routes).await;
    let mut raw = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let size = 64 * 1024 * 1024;
    raw.write_all(format!("POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (mut reader, mut writer) = raw.into_split();
    let upload = tokio::spawn(async move {
        let piece = vec![b'x'; 65536];
        for _ in 0..size / piece.len() {
            if writer.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("too big") {
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut more)).await.unwrap().unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&more[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 413 "), "{}", String::from_utf8_lossy(&seen));
    upload.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_is_told_which_host_answered_and_nobody_else_is() {
    let (stable, canary) = two_tracks().await;
    let hosts = [host(&stable, "v2", "stable"), host(&canary, "v3", "canary")];
    let router = TestRouter::start(&routes_yaml("checkout-v3", "50%", &hosts)).await;
    let http = Http::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let key = format!("probe-{i}");
        let monitor =
            http.get(router.addr, "/", &[("x-rollwave-monitor", b"1"), ("x-rollwave-key", key.as_bytes())]).await;
        let answered_by = if monitor.backend() == "stable" { stable.addr } else { canary.addr };
        assert_eq!(monitor.header("x-rollwave-backend"), answered_by.to_string());
        seen.insert(monitor.header("x-rollwave-backend").to_owned());
        let user = http.get(router.addr, "/", &key_header(&key)).await;
        assert_eq!(user.header("x-rollwave-backend"), "", "a user's answer does not name the host");
    }
    assert_eq!(seen.len(), 2, "both hosts answered some probes: {seen:?}");
}
