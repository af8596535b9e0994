//! Support for tests, kept out of the crates that ship: only dev-dependencies name it.
//!
//! `fresh_postgres` gives each test a database of its own on the PostgreSQL server named by
//! `ROLLWAVE_TEST_POSTGRES_URL`, or says on stderr that the test is skipped. `wait_for` is
//! the one way a test waits for a real process or thread to reach a condition
//! (`wait_for_async` in a tokio runtime, for its tasks), `Proc` a
//! child process that cannot outlive its test, `free_port` a port to give one.

mod process;

pub use process::{Condition, Proc, free_port, wait_for, wait_for_async};

use sqlx::Connection;

/// The environment variable naming a PostgreSQL server for tests.
pub const POSTGRES_ENV: &str = "ROLLWAVE_TEST_POSTGRES_URL";

/// A fresh, empty PostgreSQL database on the server named by `ROLLWAVE_TEST_POSTGRES_URL`,
/// as a URL; `None` (after saying so on stderr) when the variable is not set, so the
/// caller can skip.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_ENV) else {
        // Written straight to stderr, past the test harness's capture, so a skip is seen.
        use std::io::Write;
        let _ =
            writeln!(std::io::stderr(), "SKIPPED {test}: set {POSTGRES_ENV}=postgres://… to run it against PostgreSQL");
        return None;
    };
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={base} is set but unreachable: {e}"));
    let name = format!(
        "rollwave_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    // Replace the database part of the URL (after the last '/', before any '?').
    let (without_query, query) = match base.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let prefix = match without_query.rfind('/') {
        Some(i) if without_query[..i].contains("://") && i > without_query.find("://").unwrap_or(0) + 2 => {
            &without_query[..i]
        }
        _ => without_query.as_str(),
    };
    Some(format!("{prefix}/{name}{query}"))
}
