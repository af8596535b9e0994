//! The control plane as separate processes: it survives `kill -9` at any moment, and on
//! PostgreSQL a second replica takes over from a dead leader while a stale leader's
//! writes are refused.

use crate::kit::{Server, wait_for};
use rollwave_api::client::Client;
use rollwave_api::*;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MANIFEST: &str = "\
service: crash
environments:
  beta: { regions: { r1: { zones: { b1: 2, b2: 2 } } } }
  prod: { regions: { r1: { zones: { p1: 3, p2: 3 } }, r2: { zones: { q1: 2, q2: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: 1s }
  rolling: { batch: 50%, zone_bake: 1s }
stages:
  - { name: beta, environment: beta, bake: 1s }
  - name: prod
    environment: prod
    approval: true
    waves:
      - { name: wave-1, regions: [r1], bake: 1s }
      - { name: wave-2, regions: [r2], bake: 1s }
";

/// A replica named `name` on `db`: the noop driver taking 100 ms a host, a 2 s lease.
fn replica(db: &str, name: &str) -> Server {
    Server::builder()
        .db(db)
        .node_id(name)
        .args(&["--noop-delay", "100ms", "--lease-ttl", "2s"])
        .env("RUST_LOG", "warn")
        .start()
}

fn cluster(server: &Server) -> Option<Cluster> {
    server.client().get("/v1/cluster").ok()
}

/// Applies the manifest, creates v2 and approves it.
fn start_rollout(client: &Client, version: &str) {
    if client.services().map(|s| s.is_empty()).unwrap_or(true) {
        client.apply("crash.yaml", MANIFEST).unwrap();
    }
    client
        .create_release("crash", &CreateRelease { version: version.into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    client.action("crash", version, rollwave_api::OperatorAction::Approve, None).unwrap();
}

fn outcome(client: &Client, version: &str) -> Option<Outcome> {
    client.release("crash", version).ok().map(|r| r.release.outcome)
}

/// (kind, release, scope) of every event the engine decided, in log order; also checks
/// sequence numbers. Approvals are left out (and counted): an operator's request arrives
/// when it arrives, and through a follower a little later than through the leader.
fn event_sequence(client: &Client) -> Vec<(EventKind, Option<String>, String)> {
    let all = all_events(client);
    let approvals = all.iter().filter(|e| e.0 == rollwave_api::EventKind::Approved).count();
    let releases: std::collections::BTreeSet<_> =
        all.iter().filter(|e| e.0 == rollwave_api::EventKind::ReleaseCreated).map(|e| e.1.clone()).collect();
    assert_eq!(approvals, releases.len(), "one approval per release");
    all.into_iter().filter(|e| e.0 != rollwave_api::EventKind::Approved).collect()
}

fn all_events(client: &Client) -> Vec<(EventKind, Option<String>, String)> {
    let mut after = 0;
    let mut out = Vec::new();
    let mut last_seq = 0;
    loop {
        let page = client.events(after, 1000).unwrap();
        if page.events.is_empty() {
            break;
        }
        for e in page.events {
            let seq = e.seq.unwrap();
            assert!(seq > last_seq, "sequence numbers increase: {seq} after {last_seq}");
            last_seq = seq;
            out.push((e.kind, e.release, e.scope));
        }
        after = page.next;
    }
    out
}

fn final_versions(client: &Client) -> Vec<EnvironmentVersions> {
    client.status("crash").unwrap().environments
}

/// The event sequence and final state of a rollout nobody interrupts.
/// (kind, release, scope) of each event.
type Events = Vec<(EventKind, Option<String>, String)>;
/// Hosts per version, per environment.
type Versions = Vec<(String, Vec<(String, u64)>)>;

fn uninterrupted() -> &'static (Events, Versions) {
    static BASELINE: OnceLock<(Events, Versions)> = OnceLock::new();
    BASELINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let server = replica(&sqlite_url(dir.path(), "baseline"), "baseline");
        let client = server.client();
        start_rollout(&client, "v2");
        wait_for("the uninterrupted rollout", Duration::from_secs(120), || {
            (outcome(&client, "v2") == Some(Outcome::Completed)).then_some(())
        });
        let versions = final_versions(&client).into_iter().map(|e| (e.environment, e.versions)).collect();
        (event_sequence(&client), versions)
    })
}

fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(format!("{name}.db")).display())
}

/// A small deterministic generator for kill moments; the seed is printed.
struct Lcg(u64);

impl Lcg {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let (expected_events, expected_versions) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let mut server = replica(&sqlite_url(dir.path(), "crash"), "crash");
    start_rollout(&server.client(), "v2");

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("kill moments seeded with {seed}");
    let mut rng = Lcg(seed);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(rng.next_ms(200, 2500)));
        server.kill9();
        server.restart();
    }
    let client = server.client();
    wait_for("the interrupted rollout to finish", Duration::from_secs(120), || {
        (outcome(&client, "v2") == Some(Outcome::Completed)).then_some(())
    });
    let events = event_sequence(&client);
    assert_eq!(&events, expected_events, "the same events, in the same order, none lost or duplicated (seed {seed})");
    let versions: Vec<_> = final_versions(&client).into_iter().map(|e| (e.environment, e.versions)).collect();
    assert_eq!(&versions, expected_versions);
}

#[test]
fn on_postgres_a_replica_takes_over_and_a_stale_leader_is_fenced() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = runtime.block_on(rollwave_testkit::fresh_postgres("on_postgres_a_replica_takes_over")) else {
        return;
    };
    let (expected_events, expected_versions) = uninterrupted();
    let mut a = replica(&url, "replica-a");
    let mut b = replica(&url, "replica-b");
    let leader_is = |s: &Server| cluster(s).is_some_and(|c| c.leader);
    wait_for("a leader", Duration::from_secs(20), || (leader_is(&a) || leader_is(&b)).then_some(()));
    if leader_is(&b) {
        std::mem::swap(&mut a, &mut b);
    }
    // Changes sent to the follower reach the leader through the inbox.
    start_rollout(&b.client(), "v2");
    wait_for("the rollout to get going", Duration::from_secs(30), || {
        (event_sequence(&b.client()).len() >= 12).then_some(())
    });

    // The leader dies mid-rollout; the other replica takes over within 15 s of expiry.
    a.kill9();
    let died = Instant::now();
    wait_for("the takeover", Duration::from_secs(2 + 15), || leader_is(&b).then_some(()));
    println!("takeover after {:?}", died.elapsed());
    let client = b.client();
    wait_for("the rollout to finish on the new leader", Duration::from_secs(120), || {
        (outcome(&client, "v2") == Some(Outcome::Completed)).then_some(())
    });
    assert_eq!(&event_sequence(&client), expected_events);
    let versions: Vec<_> = final_versions(&client).into_iter().map(|e| (e.environment, e.versions)).collect();
    assert_eq!(&versions, expected_versions);

    // Fencing: freeze the leader until its lease is taken, then let it run again with
    // writes in flight. None of them may land.
    a.restart();
    client
        .create_release("crash", &CreateRelease { version: "v3".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    b.process.signal("-STOP");
    wait_for("the takeover from a frozen leader", Duration::from_secs(20), || leader_is(&a).then_some(()));
    let new_term = cluster(&a).unwrap().term.unwrap();
    b.process.signal("-CONT");
    wait_for("the stale leader to step down", Duration::from_secs(20), || {
        cluster(&b).is_some_and(|c| !c.leader).then_some(())
    });
    a.client().action("crash", "v3", rollwave_api::OperatorAction::Approve, None).unwrap();
    wait_for("v3 to finish", Duration::from_secs(120), || {
        (outcome(&a.client(), "v3") == Some(Outcome::Completed)).then_some(())
    });
    let store = runtime.block_on(rollwave_store::Store::open(&url)).unwrap();
    let log = runtime.block_on(store.read_log(0, 1_000_000, None)).unwrap();
    let terms: Vec<i64> = log.iter().map(|r| r.term).collect();
    assert!(terms.windows(2).all(|w| w[0] <= w[1]), "no record of an older term after a newer one: {terms:?}");
    assert!(terms.contains(&new_term));
}
