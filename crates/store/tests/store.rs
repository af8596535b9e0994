//! The store against real SQLite and PostgreSQL: fencing by lease term, the audit chain,
//! and agents' gauges.

use rollwave_store::{GaugeRow, Lease, MetricRow, NewRecord, Store, testing::fresh_postgres};
use std::time::Duration;

fn record(body: &str) -> NewRecord {
    NewRecord { at_ms: 1, service: "svc".into(), kind: "input".into(), body: body.into() }
}

async fn sqlite(name: &str) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
    (Store::open(&url).await.unwrap(), dir)
}

/// A leader whose lease expired and was taken cannot write any more; the new one can.
async fn a_stale_leader_is_fenced(store: Store, other: Store) {
    let ttl = Duration::from_millis(300);
    let a = store.acquire_lease("a", None, ttl).await.unwrap().expect("a free lease is taken");
    assert_eq!(other.acquire_lease("b", None, ttl).await.unwrap(), None, "held and not expired");
    store.append(&a, &[record("a1")], &[]).await.unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = other.acquire_lease("b", None, ttl).await.unwrap().expect("an expired lease is taken over");
    assert_eq!(b.term, a.term + 1, "every takeover raises the term");

    let late = store.append(&a, &[record("a2")], &[]).await;
    assert!(matches!(late, Err(rollwave_store::StoreError::Fenced { .. })), "{late:?}");
    let renewal = store.acquire_lease("a", Some(&a), ttl).await.unwrap();
    assert_eq!(renewal, None, "the old leader cannot renew either");
    other.append(&b, &[record("b1")], &[]).await.unwrap();

    let log = other.read_log(0, 100, None).await.unwrap();
    let bodies: Vec<(&str, i64)> = log.iter().map(|r| (r.body.as_str(), r.term)).collect();
    assert_eq!(bodies, [("a1", a.term), ("b1", b.term)]);
    // A forged lease with the right term but another holder is refused too.
    let forged = Lease { holder: "a".into(), term: b.term };
    assert!(store.append(&forged, &[record("x")], &[]).await.is_err());
}

#[tokio::test]
async fn sqlite_fences_a_stale_leader() {
    let (store, dir) = sqlite("fence").await;
    let url = format!("sqlite://{}", dir.path().join("fence.db").display());
    let other = Store::open(&url).await.unwrap();
    a_stale_leader_is_fenced(store, other).await;
}

#[tokio::test]
async fn postgres_fences_a_stale_leader() {
    let Some(url) = fresh_postgres("postgres_fences_a_stale_leader").await else { return };
    let store = Store::open(&url).await.unwrap();
    let other = Store::open(&url).await.unwrap();
    a_stale_leader_is_fenced(store, other).await;
}

async fn the_audit_chain_detects_edits_and_deletions(store: Store, edit: &str, delete: &str) {
    for i in 0..5 {
        store.audit("alice", "approve", &format!("{{\"release\":\"v{i}\"}}")).await.unwrap();
    }
    assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
    store.raw_execute(edit).await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Err(rollwave_store::AuditProblem::Edited { seq: 2 }));
    store.raw_execute("UPDATE audit SET actor = 'alice' WHERE seq = 2").await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
    store.raw_execute(delete).await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Err(rollwave_store::AuditProblem::Broken { seq: 4 }));
}

#[tokio::test]
async fn sqlite_audit_chain() {
    let (store, _dir) = sqlite("audit").await;
    the_audit_chain_detects_edits_and_deletions(
        store,
        "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
    )
    .await;
}

#[tokio::test]
async fn postgres_audit_chain() {
    let Some(url) = fresh_postgres("postgres_audit_chain").await else { return };
    let store = Store::open(&url).await.unwrap();
    the_audit_chain_detects_edits_and_deletions(
        store,
        "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
    )
    .await;
}

#[tokio::test]
async fn inbox_answers_are_written_with_the_records() {
    let (store, _dir) = sqlite("inbox").await;
    let lease = store.acquire_lease("a", None, Duration::from_secs(5)).await.unwrap().unwrap();
    let id = store.submit("{\"x\":1}").await.unwrap();
    assert_eq!(store.pending(0, 10).await.unwrap(), vec![(id, "{\"x\":1}".to_owned())]);
    assert_eq!(store.answer_of(id).await.unwrap(), None);
    let answer = rollwave_store::Answer { inbox_id: id, body: "{}".into(), through_record: Some(1) };
    let seqs = store.append(&lease, &[record("r1"), record("r2")], &[answer]).await.unwrap();
    assert_eq!(store.answer_of(id).await.unwrap(), Some(("{}".to_owned(), seqs[1])));
    assert!(store.pending(0, 10).await.unwrap().is_empty());
}

fn gauge(host: &str, at_ms: i64, name: &str, value: f64) -> GaugeRow {
    GaugeRow {
        service: "svc".into(),
        environment: "prod".into(),
        host: host.into(),
        version: "v1".into(),
        at_ms,
        name: name.into(),
        value,
    }
}

/// Gauges come back as stored, per service and time range, oldest first, and are pruned
/// with the metrics.
async fn gauges_round_trip(store: Store) {
    let rows = vec![
        gauge("h1", 2_000, "memory_percent", 41.25),
        gauge("h1", 1_000, "cpu_percent", 12.5),
        gauge("h2", 1_500, "restarts", 3.0),
        GaugeRow { service: "other".into(), ..gauge("h1", 1_200, "cpu_percent", 99.0) },
    ];
    store.insert_gauges(&rows).await.unwrap();
    let got = store.gauges("svc", 1_000, 2_000).await.unwrap();
    assert_eq!(got, [rows[1].clone(), rows[2].clone()]);
    assert_eq!(store.gauges("svc", 0, 10_000).await.unwrap().len(), 3);

    let traffic = MetricRow {
        service: "svc".into(),
        environment: "prod".into(),
        host: "h1".into(),
        version: "v1".into(),
        at_ms: 1_000,
        requests: 1,
        errors: 0,
        buckets: "1".into(),
        source: "traffic".into(),
    };
    store.insert_metrics(&[traffic]).await.unwrap();
    store.prune_metrics(1_600).await.unwrap();
    assert_eq!(store.gauges("svc", 0, 10_000).await.unwrap(), [rows[0].clone()]);
    assert!(store.gauges("other", 0, 10_000).await.unwrap().is_empty());
    assert!(store.metrics("svc", 0, 10_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_gauges() {
    let (store, _dir) = sqlite("gauges").await;
    gauges_round_trip(store).await;
}

#[tokio::test]
async fn postgres_gauges() {
    let Some(url) = fresh_postgres("postgres_gauges").await else { return };
    gauges_round_trip(Store::open(&url).await.unwrap()).await;
}
