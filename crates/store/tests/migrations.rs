//! Versioned schema migrations on real SQLite and PostgreSQL: a fresh database records
//! every migration; databases from before versions were recorded (today's schema, the
//! first release's) are adopted and end with the schema a fresh one has; a database that
//! records a migration this release does not know, or one that changed, is refused and
//! left as it was.

use rollwave_store::{SCHEMA_VERSION, Store, StoreError};
use rollwave_testkit::fresh_postgres;
use sqlx::Connection;

fn fixture(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A SQLite database made from `sql` (nothing when empty), as a URL.
async fn sqlite_with(dir: &tempfile::TempDir, name: &str, sql: &str) -> String {
    let url = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc")).await.unwrap();
    if !sql.is_empty() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    url
}

/// Everything a SQLite database's schema says, table by table and index by index.
async fn sqlite_schema(url: &str) -> Vec<(String, String, String)> {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT type, name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows
}

/// Every column of a PostgreSQL database's tables, with its type, default and nullability,
/// and every index's definition.
async fn postgres_schema(url: &str) -> Vec<(String, String, String, String)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text || ' ' || is_nullable::text, \
         COALESCE(column_default::text, '') FROM information_schema.columns \
         WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let indexes: Vec<(String, String, String)> =
        sqlx::query_as("SELECT tablename::text, indexname::text, indexdef::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    rows.extend(indexes.into_iter().map(|(t, n, d)| (t, n, d, "index".to_owned())));
    conn.close().await.unwrap();
    rows
}

/// The migrations a store records: (version, name, whether it was found done already).
async fn recorded(store: &Store) -> Vec<(i64, String, bool)> {
    store.schema_migrations().await.unwrap().into_iter().map(|m| (m.version, m.name, m.found)).collect()
}

fn versions(recorded: &[(i64, String, bool)]) -> Vec<i64> {
    recorded.iter().map(|(v, _, _)| *v).collect()
}

#[tokio::test]
async fn sqlite_a_fresh_database_records_every_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_with(&dir, "fresh", "").await;
    let store = Store::open(&url).await.unwrap();
    let first = recorded(&store).await;
    assert_eq!(versions(&first), (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert!(first.iter().all(|(_, _, found)| !found), "a fresh database runs every migration: {first:?}");
    drop(store);
    let again = Store::open(&url).await.unwrap();
    assert_eq!(recorded(&again).await, first, "opening again changes nothing");
}

#[tokio::test]
async fn postgres_a_fresh_database_records_every_migration_once_with_replicas_racing() {
    let Some(url) = fresh_postgres("postgres_a_fresh_database_records_every_migration_once_with_replicas_racing").await
    else {
        return;
    };
    // Four replicas open the empty database at once: each migration runs once.
    let opened = futures_join(&url, 4).await;
    for store in &opened {
        let got = recorded(store).await;
        assert_eq!(versions(&got), (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        assert!(got.iter().all(|(_, _, found)| !found), "{got:?}");
    }
}

async fn futures_join(url: &str, n: usize) -> Vec<Store> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move { Store::open(&url).await }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().expect("every replica opens the database"));
    }
    stores
}

/// Migrations 2–4 add columns an unversioned database of today's schema has already.
fn adopted_from_todays_schema(got: &[(i64, String, bool)]) {
    let found: Vec<i64> = got.iter().filter(|(_, _, found)| *found).map(|(v, _, _)| *v).collect();
    assert_eq!(found, [2, 3, 4], "{got:?}");
    assert_eq!(versions(got), (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[tokio::test]
async fn sqlite_a_database_of_the_schema_before_versions_upgrades_to_a_fresh_ones_schema() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = sqlite_with(&dir, "fresh", "").await;
    drop(Store::open(&fresh).await.unwrap());
    let old = sqlite_with(&dir, "old", &fixture("tests/data/schema-unversioned/sqlite.sql")).await;
    let store = Store::open(&old).await.expect("a database of the unversioned schema opens");
    adopted_from_todays_schema(&recorded(&store).await);
    drop(store);
    assert_eq!(sqlite_schema(&old).await, sqlite_schema(&fresh).await);
}

#[tokio::test]
async fn postgres_a_database_of_the_schema_before_versions_upgrades_to_a_fresh_ones_schema() {
    let test = "postgres_a_database_of_the_schema_before_versions_upgrades_to_a_fresh_ones_schema";
    let (Some(fresh), Some(old)) = (fresh_postgres(test).await, fresh_postgres(test).await) else { return };
    drop(Store::open(&fresh).await.unwrap());
    {
        // pg_dump's output empties the session's search_path: a connection of its own.
        let mut conn = sqlx::PgConnection::connect(&old).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(fixture("tests/data/schema-unversioned/postgres.sql")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let before = postgres_schema(&old).await;
    assert!(
        before.iter().any(|c| c.0 == "tokens" && c.1 == "last_used_ms"),
        "the fixture is today's schema: {before:?}"
    );
    let stores = futures_join(&old, 3).await;
    adopted_from_todays_schema(&recorded(&stores[0]).await);
    let without_versions: Vec<_> =
        postgres_schema(&old).await.into_iter().filter(|c| c.0 != "schema_migrations").collect();
    assert_eq!(without_versions, before, "adopting changes none of the tables that were there");
    assert_eq!(postgres_schema(&old).await, postgres_schema(&fresh).await);
}

#[tokio::test]
async fn sqlite_a_database_of_the_first_release_upgrades_and_anchors_its_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = sqlite_with(&dir, "fresh", "").await;
    drop(Store::open(&fresh).await.unwrap());
    let v0 = sqlite_with(&dir, "v0", &fixture("../server/tests/data/log-v0/database.sql")).await;
    let store = Store::open(&v0).await.expect("the first release's database opens");
    let got = recorded(&store).await;
    assert_eq!(versions(&got), (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert!(got.iter().all(|(_, _, found)| !found), "the first release had none of the later columns: {got:?}");
    assert_eq!(store.verify_audit().await.unwrap(), Ok(12), "the first release's audit rows verify");
    drop(store);
    assert_eq!(sqlite_schema(&v0).await, sqlite_schema(&fresh).await);
}

/// A database that records a migration from a newer release is refused and not altered.
async fn a_newer_database_is_refused_unchanged(url: &str, schema: impl AsyncFn() -> String) {
    let store = Store::open(url).await.unwrap();
    store
        .raw_execute(&format!(
            "INSERT INTO schema_migrations (version, name, checksum, applied_ms, found) \
             VALUES ({}, 'from_a_newer_release', 'x', 0, 0)",
            SCHEMA_VERSION + 1
        ))
        .await
        .unwrap();
    // What the newer release might have done, and this release would "repair".
    store.raw_execute("DROP INDEX tokens_name").await.unwrap();
    drop(store);
    let before = schema().await;
    let refused = Store::open(url).await;
    let Err(e @ StoreError::NewerSchema { found, known, .. }) = &refused else { panic!("{refused:?}") };
    assert_eq!((*found, *known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
    let message = e.to_string();
    assert!(
        message.contains(&format!("version {}", SCHEMA_VERSION + 1))
            && message.contains("from_a_newer_release")
            && message.contains("newer release"),
        "{message}"
    );
    assert_eq!(schema().await, before, "nothing was changed");
    let read = Store::open_existing(url).await;
    assert!(matches!(read, Err(StoreError::NewerSchema { .. })), "reading it is refused too: {read:?}");
}

#[tokio::test]
async fn sqlite_a_database_of_a_newer_release_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_with(&dir, "newer", "").await;
    let schema = async || format!("{:?}", sqlite_schema(&url).await);
    a_newer_database_is_refused_unchanged(&url, schema).await;
}

#[tokio::test]
async fn postgres_a_database_of_a_newer_release_is_refused_unchanged() {
    let Some(url) = fresh_postgres("postgres_a_database_of_a_newer_release_is_refused_unchanged").await else {
        return;
    };
    let schema = async || format!("{:?}", postgres_schema(&url).await);
    a_newer_database_is_refused_unchanged(&url, schema).await;
}

#[tokio::test]
async fn a_database_whose_recorded_migration_differs_from_this_releases_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_with(&dir, "changed", "").await;
    let store = Store::open(&url).await.unwrap();
    store.raw_execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 3").await.unwrap();
    drop(store);
    let refused = Store::open(&url).await;
    let Err(e @ StoreError::ChangedMigration { version: 3, .. }) = &refused else { panic!("{refused:?}") };
    assert!(e.to_string().contains("audit_chain_head"), "{e}");
}
