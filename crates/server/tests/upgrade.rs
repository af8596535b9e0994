//! A database written by the first release (`tests/data/log-v0`: its schema, its log and
//! its audit chain) opens in this release: the schema is upgraded in place, the log replays
//! to the releases that release answered, the audit chain still verifies and goes on.

mod support;

use rollwave_server::api::*;
use support::TestServer;

/// The admin token the first release's server was started with.
const V0_ADMIN: &str = "rw_0000000000000000000000000000000000000000000000000000000000000001";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/data/log-v0/{name}", env!("CARGO_MANIFEST_DIR"));
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

#[test]
fn a_database_of_the_first_release_upgrades_replays_and_keeps_its_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v0.db").display());
    let records: i64 = {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(fixture("database.sql"))).execute(&pool).await.unwrap();
            let count: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log").fetch_one(&pool).await.unwrap();
            pool.close().await;
            count.0
        })
    };
    assert!(records > 100, "the fixture holds a real session's log ({records} records)");

    let db = url.clone();
    let s = TestServer::builder()
        .configure(move |c| {
            c.db = db;
            c.bootstrap_token = None;
        })
        .start();
    s.wait_for("the whole first log is replayed", || s.applied_seq() >= records);
    let admin = s.client(Some(V0_ADMIN));

    let releases: serde_json::Value = admin.get("/v1/services/shop/releases").unwrap();
    let expected: serde_json::Value = serde_json::from_str(&fixture("releases.json")).unwrap();
    assert_keeps(&expected, &releases, "releases");

    // The chain the first release wrote verifies, and a change made now extends it.
    let verdict: AuditVerdict = admin.get("/v1/audit/verify").unwrap();
    assert!(verdict.intact, "{verdict:?}");
    let before = verdict.rows;
    assert!(before >= 10, "the first release's audit rows are all there: {verdict:?}");
    admin.hold("shop", false, Some("prod".into())).unwrap();
    let verdict: AuditVerdict = admin.get("/v1/audit/verify").unwrap();
    assert!(verdict.intact, "{verdict:?}");
    assert_eq!(verdict.rows, before + 1, "the hold is audited after the old rows");
}
