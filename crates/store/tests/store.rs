//! The store against real SQLite and PostgreSQL: fencing by lease term, the audit chain,
//! and agents' gauges.

use rollwave_store::{AuditProblem, GaugeRow, Lease, MetricRow, NewAudit, NewRecord, NewToken, Store};
use rollwave_testkit::fresh_postgres;
use std::time::Duration;

fn record(body: &str) -> NewRecord {
    NewRecord { at_ms: 1, service: "svc".into(), kind: "input".into(), body: body.into() }
}

async fn sqlite(name: &str) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
    (Store::open(&url).await.unwrap(), dir)
}

/// A leader whose lease expired and was taken cannot write any more; the new one can. The
/// lease is judged at the readings of the clock given, so its expiry needs no waiting.
async fn a_stale_leader_is_fenced(store: Store, other: Store) {
    let ttl = Duration::from_millis(300);
    let t0 = rollwave_store::now_ms();
    let a = store.acquire_lease_at("a", None, ttl, t0).await.unwrap().expect("a free lease is taken");
    let held = other.acquire_lease_at("b", None, ttl, t0 + 300).await.unwrap();
    assert_eq!(held, None, "held, and not expired until a whole time to live has passed");
    store.append(&a, &[record("a1")], &[], &[]).await.unwrap();

    let b = other.acquire_lease_at("b", None, ttl, t0 + 301).await.unwrap().expect("an expired lease is taken over");
    assert_eq!(b.term, a.term + 1, "every takeover raises the term");

    let late = store.append(&a, &[record("a2")], &[], &[]).await;
    assert!(matches!(late, Err(rollwave_store::StoreError::Fenced { .. })), "{late:?}");
    let renewal = store.acquire_lease_at("a", Some(&a), ttl, t0 + 302).await.unwrap();
    assert_eq!(renewal, None, "the old leader cannot renew either");
    let renewed = other.acquire_lease_at("b", Some(&b), ttl, t0 + 601).await.unwrap();
    assert_eq!(renewed, Some(b.clone()), "the holder renews at the last moment of its lease");
    let kept = store.acquire_lease_at("a", None, ttl, t0 + 901).await.unwrap();
    assert_eq!(kept, None, "a renewal counts its time to live from the renewal");
    other.append(&b, &[record("b1")], &[], &[]).await.unwrap();

    let log = other.read_log(0, 100, None).await.unwrap();
    let bodies: Vec<(&str, i64)> = log.iter().map(|r| (r.body.as_str(), r.term)).collect();
    assert_eq!(bodies, [("a1", a.term), ("b1", b.term)]);
    // A forged lease with the right term but another holder is refused too.
    let forged = Lease { holder: "a".into(), term: b.term };
    assert!(store.append(&forged, &[record("x")], &[], &[]).await.is_err());
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

fn audit_row(actor: &str, release: i64) -> NewAudit {
    NewAudit {
        actor: actor.into(),
        token_id: Some(7),
        action: "approve".into(),
        detail: format!("{{\"release\":\"v{release}\"}}"),
    }
}

/// Five audited changes, three written with the log records they audit and two on their own.
async fn five_audited_changes(store: &Store) {
    let lease = store.acquire_lease("a", None, Duration::from_secs(30)).await.unwrap().unwrap();
    for i in 0..3 {
        store.append(&lease, &[record(&format!("r{i}"))], &[], &[audit_row("alice", i)]).await.unwrap();
    }
    store.audit(&[audit_row("alice", 3), audit_row("alice", 4)]).await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
}

async fn the_audit_chain_detects_edits_and_deletions(store: Store) {
    five_audited_changes(&store).await;
    let entries = store.audit_entries().await.unwrap();
    assert_eq!(entries[0].token_id, Some(7), "the token's id is kept with its name");

    store.raw_execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2").await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Err(AuditProblem::Edited { seq: 2 }));
    store.raw_execute("UPDATE audit SET actor = 'alice' WHERE seq = 2").await.unwrap();
    store.raw_execute("UPDATE audit SET token_id = 8 WHERE seq = 2").await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Err(AuditProblem::Edited { seq: 2 }));
    store.raw_execute("UPDATE audit SET token_id = 7 WHERE seq = 2").await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Ok(5));

    store.raw_execute("DELETE FROM audit WHERE seq = 3").await.unwrap();
    let problem = store.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(problem, AuditProblem::Broken { seq: 4 });
    assert!(problem.to_string().contains("audit row 4"), "{problem}");
}

async fn deleting_the_last_rows_is_detected(store: Store) {
    five_audited_changes(&store).await;
    store.raw_execute("DELETE FROM audit WHERE seq = 5").await.unwrap();
    let problem = store.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(problem, AuditProblem::Truncated { recorded: 5, found: 4 });
    assert!(problem.to_string().contains("records 5 row(s) but 4 are there"), "{problem}");
}

async fn deleting_every_row_is_detected(store: Store) {
    five_audited_changes(&store).await;
    store.raw_execute("DELETE FROM audit").await.unwrap();
    let problem = store.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(problem, AuditProblem::Truncated { recorded: 5, found: 0 });
    // And the head with them.
    store.raw_execute("DELETE FROM lease").await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), Err(AuditProblem::HeadMissing));
}

async fn a_refused_append_writes_no_audit_row(store: Store, other: Store) {
    let ttl = Duration::from_millis(200);
    let a = store.acquire_lease("a", None, ttl).await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let b = loop {
        if let Some(b) = other.acquire_lease("b", None, ttl).await.unwrap() {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the lease never expired");
    };
    let late = store.append(&a, &[record("a1")], &[], &[audit_row("alice", 1)]).await;
    assert!(matches!(late, Err(rollwave_store::StoreError::Fenced { .. })), "{late:?}");
    other.append(&b, &[record("b1")], &[], &[audit_row("bob", 2)]).await.unwrap();
    let actors: Vec<String> = other.audit_entries().await.unwrap().into_iter().map(|e| e.actor).collect();
    assert_eq!(actors, ["bob"], "the fenced write's audit row went with it");
    assert_eq!(other.verify_audit().await.unwrap(), Ok(1));
}

#[tokio::test]
async fn sqlite_audit_chain() {
    let (store, _dir) = sqlite("audit").await;
    the_audit_chain_detects_edits_and_deletions(store).await;
    let (store, _dir) = sqlite("audit_tail").await;
    deleting_the_last_rows_is_detected(store).await;
    let (store, _dir) = sqlite("audit_all").await;
    deleting_every_row_is_detected(store).await;
    let (store, dir) = sqlite("audit_fence").await;
    let other = Store::open(&format!("sqlite://{}", dir.path().join("audit_fence.db").display())).await.unwrap();
    a_refused_append_writes_no_audit_row(store, other).await;
}

#[tokio::test]
async fn postgres_audit_chain() {
    for (i, check) in ["edits", "tail", "all", "fence"].into_iter().enumerate() {
        let Some(url) = fresh_postgres(&format!("postgres_audit_chain_{check}")).await else { return };
        let store = Store::open(&url).await.unwrap();
        match i {
            0 => the_audit_chain_detects_edits_and_deletions(store).await,
            1 => deleting_the_last_rows_is_detected(store).await,
            2 => deleting_every_row_is_detected(store).await,
            _ => a_refused_append_writes_no_audit_row(store, Store::open(&url).await.unwrap()).await,
        }
    }
}

fn token<'a>(hash: &'a str, name: &'a str) -> NewToken<'a> {
    NewToken { hash, name, role: "deployer", host: None, region: None, expires_ms: None }
}

fn created(id: i64) -> NewAudit {
    NewAudit {
        actor: "admin".into(),
        token_id: Some(1),
        action: "create_token".into(),
        detail: format!("{{\"id\":{id}}}"),
    }
}

/// Names are unique; a revoked token stays listed, marked; creation and revocation are audited.
async fn tokens_are_unique_and_revocable(store: Store) {
    let id = store.insert_token(&token("h1", "ci"), created).await.unwrap();
    let again = store.insert_token(&token("h2", "ci"), created).await;
    assert!(matches!(&again, Err(rollwave_store::StoreError::Duplicate(what)) if what.contains("\"ci\"")), "{again:?}");
    let revoke = NewAudit { action: "revoke_token".into(), ..created(id) };
    assert!(store.revoke_token(id, &revoke).await.unwrap());
    assert!(!store.revoke_token(id, &revoke).await.unwrap(), "revoked once only");
    let row = store.find_token("h1").await.unwrap().unwrap();
    assert!(row.revoked_ms.is_some());
    store.touch_tokens(&[(id, 1234)]).await.unwrap();
    assert_eq!(store.tokens().await.unwrap()[0].last_used_ms, Some(1234));
    let actions: Vec<String> = store.audit_entries().await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["create_token", "revoke_token"]);
    assert_eq!(store.verify_audit().await.unwrap(), Ok(2));
}

#[tokio::test]
async fn sqlite_tokens() {
    let (store, _dir) = sqlite("tokens").await;
    tokens_are_unique_and_revocable(store).await;
}

#[tokio::test]
async fn postgres_tokens() {
    let Some(url) = fresh_postgres("postgres_tokens").await else { return };
    tokens_are_unique_and_revocable(Store::open(&url).await.unwrap()).await;
}

/// Opening a database to read it never creates one.
#[tokio::test]
async fn reading_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let opened = Store::open_existing(&format!("sqlite://{}", path.display())).await;
    assert!(matches!(opened, Err(rollwave_store::StoreError::Missing(_))), "{opened:?}");
    assert!(!path.exists());
}

#[tokio::test]
async fn inbox_answers_are_written_with_the_records() {
    let (store, _dir) = sqlite("inbox").await;
    let lease = store.acquire_lease("a", None, Duration::from_secs(5)).await.unwrap().unwrap();
    let id = store.submit("{\"x\":1}").await.unwrap();
    assert_eq!(store.pending(0, 10).await.unwrap(), vec![(id, "{\"x\":1}".to_owned())]);
    assert_eq!(store.answer_of(id).await.unwrap(), None);
    let answer = rollwave_store::Answer { inbox_id: id, body: "{}".into(), through_record: Some(1) };
    let seqs = store.append(&lease, &[record("r1"), record("r2")], &[answer], &[]).await.unwrap();
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

/// A database whose tokens share a name (earlier releases allowed it) still opens; every
/// token still authenticates, the later ones under their name with their id appended.
#[tokio::test]
async fn tokens_sharing_a_name_in_an_earlier_schema_are_renamed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE tokens (id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, \
             role TEXT NOT NULL, host TEXT, created_ms BIGINT NOT NULL); \
             INSERT INTO tokens VALUES (1, 'h1', 'ci', 'deployer', NULL, 1); \
             INSERT INTO tokens VALUES (2, 'h2', 'ci', 'viewer', NULL, 2); \
             INSERT INTO tokens VALUES (3, 'h3', 'ops', 'admin', NULL, 3);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = Store::open(&url).await.expect("the old database opens");
    let names: Vec<String> = store.tokens().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["ci", "ci-2", "ops"]);
    for hash in ["h1", "h2", "h3"] {
        assert!(store.find_token(hash).await.unwrap().is_some(), "{hash} still authenticates");
    }
}
