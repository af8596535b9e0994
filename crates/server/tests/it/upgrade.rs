//! Databases written by earlier releases open in this release: the first release's
//! (`tests/data/log-v0`) and the one that followed it (`tests/data/log-v1`, which holds every
//! record kind and input kind). Each schema is upgraded in place, each log replays to the
//! releases that release answered, the audit chain still verifies and goes on, and every
//! record of each log reads as this release's format and writes back byte for byte.

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use rollwave_server::log::{FORMAT_VERSION, LogInput, LogRecord, RecordKind};
use std::collections::BTreeSet;
use std::time::Duration;
use support::TestServer;

/// The admin token the earlier releases' servers were started with.
const ADMIN: &str = "rw_0000000000000000000000000000000000000000000000000000000000000001";

fn fixture(log: &str, name: &str) -> String {
    let path = format!("{}/tests/data/{log}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every field `expected` has, `actual` has with the same value (later releases may add
/// fields; none may change or drop one).
fn assert_keeps(expected: &serde_json::Value, actual: &serde_json::Value, at: &str) {
    match (expected, actual) {
        (serde_json::Value::Object(e), serde_json::Value::Object(a)) => {
            for (key, value) in e {
                let found = a.get(key).unwrap_or_else(|| panic!("{at}.{key} is gone; now: {actual}"));
                assert_keeps(value, found, &format!("{at}.{key}"));
            }
        }
        (serde_json::Value::Array(e), serde_json::Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{at} has another length: {actual}");
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                assert_keeps(e, a, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(expected, actual, "{at} changed"),
    }
}

/// A SQLite database made from a fixture's dump, as a URL, with its log's rows
/// (kind and body).
fn load(dir: &tempfile::TempDir, log: &str) -> (String, Vec<(String, String)>) {
    let url = format!("sqlite://{}", dir.path().join(format!("{log}.db")).display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(fixture(log, "database.sql"))).execute(&pool).await.unwrap();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT kind, body FROM log ORDER BY seq").fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    });
    (url, rows)
}

/// Starts a server of this release on the fixture's database and waits until it has
/// replayed the whole log; checks the answers each service's releases gave then.
fn replay(log: &str, services: &[(&str, &str)]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (db, rows) = load(&dir, log);
    let records = rows.len() as i64;
    assert!(records > 100, "the fixture holds a real session's log ({records} records)");
    let s = TestServer::builder()
        .driver(Driver::Noop { delay: Duration::from_millis(50) })
        .configure(move |c| {
            c.db = db;
            c.bootstrap_token = None;
        })
        .start();
    s.wait_for("the whole log is replayed", || s.applied_seq() >= records);
    let admin = s.client(Some(ADMIN));
    for (service, answer) in services {
        let releases: serde_json::Value = admin.get(&format!("/v1/services/{service}/releases")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&fixture(log, answer)).unwrap();
        assert_keeps(&expected, &releases, &format!("{log} {service} releases"));
    }
    (s, dir)
}

/// The chain the earlier release wrote verifies, and a change made now extends it.
fn audit_chain_goes_on(s: &TestServer, at_least: usize) {
    let admin = s.client(Some(ADMIN));
    let verdict: AuditVerdict = admin.get("/v1/audit/verify").unwrap();
    assert!(verdict.intact, "{verdict:?}");
    let before = verdict.rows;
    assert!(before >= at_least, "the earlier release's audit rows are all there: {verdict:?}");
    admin.hold("shop", false, Some("prod".into())).unwrap();
    let verdict: AuditVerdict = admin.get("/v1/audit/verify").unwrap();
    assert!(verdict.intact, "{verdict:?}");
    assert_eq!(verdict.rows, before + 1, "the hold is audited after the old rows");
}

#[test]
fn a_database_of_the_first_release_upgrades_replays_and_keeps_its_audit_chain() {
    let (s, _dir) = replay("log-v0", &[("shop", "releases.json")]);
    audit_chain_goes_on(&s, 10);
}

#[test]
fn a_database_of_format_version_1_upgrades_replays_and_keeps_its_audit_chain() {
    let (s, _dir) = replay("log-v1", &[("shop", "releases.json"), ("fleet", "fleet-releases.json")]);
    // What `rollwave status shop --output json` answered: the same stages and releases.
    let status: serde_json::Value = s.client(Some(ADMIN)).get("/v1/services/shop").unwrap();
    let answered: serde_json::Value = serde_json::from_str(&fixture("log-v1", "status.json")).unwrap();
    let expected = answered.as_array().and_then(|services| services.first()).expect("status.json lists shop");
    for key in ["service", "stages", "environments", "releases"] {
        let value = expected.get(key).unwrap_or_else(|| panic!("status.json has no {key}"));
        assert_keeps(value, &status[key], &format!("status.{key}"));
    }
    audit_chain_goes_on(&s, 12);
}

/// Every record reads as this release's format, and written back gives the bytes it
/// was read from.
fn records_round_trip(log: &str) -> Vec<LogRecord> {
    let dir = tempfile::tempdir().unwrap();
    let (_, rows) = load(&dir, log);
    rows.iter()
        .enumerate()
        .map(|(i, (kind, body))| {
            let record = LogRecord::read(kind, body).unwrap_or_else(|e| panic!("{log} record {}: {e}: {body}", i + 1));
            assert_eq!(record.kind().as_str(), kind);
            assert_eq!(&record.body().unwrap(), body, "{log} record {} writes back otherwise", i + 1);
            record
        })
        .collect()
}

#[test]
fn every_record_of_each_golden_log_reads_and_writes_back_byte_for_byte() {
    assert_eq!(FORMAT_VERSION, 1, "a new format version needs its own golden log here");
    records_round_trip("log-v0");
    let v1 = records_round_trip("log-v1");
    // The version 1 log holds every kind of record and every kind of input.
    let kinds: BTreeSet<RecordKind> = v1.iter().map(LogRecord::kind).collect();
    assert_eq!(kinds, RecordKind::ALL.into_iter().collect());
    let inputs: BTreeSet<&str> = v1
        .iter()
        .filter_map(|r| match r {
            LogRecord::Input(input) => Some(input.type_name()),
            _ => None,
        })
        .collect();
    assert_eq!(inputs, LogInput::TYPE_NAMES.into_iter().collect());
}

#[test]
fn a_record_of_an_unknown_kind_or_shape_is_refused_by_name() {
    let unknown = LogRecord::read("snapshot", "{}").unwrap_err();
    assert!(unknown.to_string().contains("\"snapshot\""), "{unknown}");
    let garbled = LogRecord::read("input", r#"{"type":"teleport"}"#).unwrap_err();
    assert!(garbled.to_string().starts_with("unreadable input record"), "{garbled}");
}
