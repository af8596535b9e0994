//! A replica whose applier panics midway through an input serves, afterwards, the state
//! its log holds: the half-made change is gone and the replica leads again.

use crate::auth::{Actor, Caller, Role, Scope};
use crate::node::{Config, DATAPOINT_BIN, Driver, Node};
use crate::state::{LogInput, ReadModel, fault};
use std::sync::Arc;
use std::time::Duration;

const MANIFEST: &str = "\
service: faulty
environments:
  prod: { regions: { r1: { zones: { z1: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: 0s }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
";

fn admin() -> Actor {
    Actor::Token(Caller { id: 1, name: "admin".into(), role: Role::Admin, scope: Scope::Global })
}

fn config(db: String) -> Config {
    Config {
        db,
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        node_id: "fault".into(),
        driver: Driver::Noop { delay: Duration::from_millis(10) },
        lease_ttl: Duration::from_secs(5),
        bootstrap_token: None,
        anonymous_read: false,
        host_timeout: Duration::from_secs(30),
        prometheus: None,
        datapoint_bin: DATAPOINT_BIN,
        function_traffic_every: Duration::from_secs(60),
        cloudwatch_delay: Duration::from_secs(60),
    }
}

/// What a replica serves of its model: every service's status, holds and timeline.
fn served(model: &ReadModel) -> serde_json::Value {
    let services: Vec<serde_json::Value> = model
        .services
        .values()
        .map(|s| {
            serde_json::json!({
                "status": s.status(Vec::new()),
                "holds": format!("{:?}", s.engine.holds()),
                "events": s.events.iter().map(|e| e.view(&s.name)).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "applied_seq": model.applied_seq, "services": services })
}

/// A read model built from nothing but the log.
async fn replayed(node: &Node) -> ReadModel {
    let mut model = ReadModel::default();
    for r in
        node.store.read_log(0, 100_000, Some(&[crate::log::RecordKind::Input.as_str()])).await.expect("the log reads")
    {
        let input: LogInput = serde_json::from_str(&r.body).expect("a logged input reads");
        model.apply(&r.service, r.at_ms, &input).expect("a logged input applies");
    }
    model.applied_seq = node.store.last_seq().await.expect("the log reads");
    model
}

/// The replica serves exactly what a replay of its log gives, compared at one position of
/// the log (the clock may append a tick between reading the log and reading the model: then
/// both are read again).
async fn assert_serves_the_log(node: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = served(&replayed(node).await);
        let live = node.read(served);
        if live["applied_seq"] == log["applied_seq"] {
            assert_eq!(live, log, "the replica serves what the log holds");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replica never caught up with its log");
        tokio::task::yield_now().await;
    }
}

/// Waits until the replica leads with a model replayed from its log, woken by the lease
/// and readiness changing rather than by polling.
async fn leading_and_ready(node: &Node, what: &str) {
    let (mut lease, mut ready) = (node.lease.subscribe(), node.ready.subscribe());
    let both = async {
        loop {
            if lease.borrow_and_update().is_some() && *ready.borrow_and_update() {
                return;
            }
            tokio::select! {
                _ = lease.changed() => {}
                _ = ready.changed() => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

fn hold() -> LogInput {
    LogInput::Operator { action: rollwave_api::OperatorAction::Hold, release: None, stage: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_applying_leaves_the_replica_serving_what_the_log_holds() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = format!("sqlite://{}", dir.path().join("fault.db").display());
    let store = rollwave_store::Store::open(&db).await.expect("the store opens");
    // In virtual time: the clock stands still, so no tick lands between two reads.
    let node = Node::with_clock(store, config(db), crate::clock::VirtualClock::at_fixed_start());
    tokio::spawn(Arc::clone(&node).run());
    leading_and_ready(&node, "the replica leads").await;
    let apply = LogInput::ApplyManifest { file: "faulty.yaml".into(), text: MANIFEST.into(), agents: false };
    node.submit("faulty", apply, admin()).await.expect("the manifest applies");

    fault::PANIC_ON_NEXT_HOLD.lock().unwrap_or_else(|p| p.into_inner()).insert("faulty".into());
    let refused = tokio::time::timeout(Duration::from_secs(20), node.submit("faulty", hold(), admin()))
        .await
        .expect("the faulty hold is answered")
        .expect_err("the faulty hold is refused");
    assert_eq!(refused.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{refused}");

    leading_and_ready(&node, "the replica leads again, rebuilt").await;
    assert_serves_the_log(&node).await;
    assert!(node.read(|m| !m.services["faulty"].engine.holds().0), "the faulty hold is not in effect");

    node.submit("faulty", hold(), admin()).await.expect("a hold applies afterwards");
    assert!(node.read(|m| m.services["faulty"].engine.holds().0));
    assert_serves_the_log(&node).await;
}
