//! Versioned schema migrations.
//!
//! The schema is the result of [`MIGRATIONS`], applied in order. The `schema_migrations`
//! table records each one applied (its version, name and checksum). [`Store::open`](crate::Store::open)
//! applies the missing ones, in one transaction taken under the database's write lock
//! (SQLite's `BEGIN IMMEDIATE`; a transaction-scoped advisory lock on PostgreSQL), so
//! replicas opening one database at once apply each migration once, and a failed
//! migration leaves the database as it was.
//!
//! A database is refused, unchanged, when it records a migration this release does not
//! know (it was written by a newer release) or one whose checksum differs from this
//! release's (a released migration must never change: add a new one instead).
//!
//! Databases from before versions were recorded (no `schema_migrations` rows, but a `log`
//! table) are adopted: the first [`UNVERSIONED`] migrations each either find what they make
//! there already (the column they add, [`Migration::present`]) and are recorded as applied,
//! or are run; the rest run as usual. Only those migrations may be adopted: every later
//! one runs in full on every database.

use crate::{Result, StoreError};
use sqlx::Row;

/// One step of the schema. Once released it never changes (its checksum is checked).
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// Run in order. `{serial}` stands for the backend's auto-increment key type
    /// (`INTEGER` on SQLite, `BIGSERIAL` on PostgreSQL); the rest is SQL both understand.
    pub statements: &'static [&'static str],
    /// For a database from before versions were recorded: the (table, column) whose
    /// presence shows this migration's work is there already. `None`: its statements do
    /// no harm when run again, so it is run.
    pub present: Option<(&'static str, &'static str)>,
}

/// Migrations a database from before versions were recorded may already have.
pub(crate) const UNVERSIONED: i64 = 5;

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "first_release",
        statements: &[
            "CREATE TABLE IF NOT EXISTS log (seq {serial} PRIMARY KEY, term BIGINT NOT NULL, at_ms BIGINT NOT NULL, service TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS log_service ON log (service, seq)",
            "CREATE TABLE IF NOT EXISTS lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, term BIGINT NOT NULL, expires_ms BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS inbox (id {serial} PRIMARY KEY, body TEXT NOT NULL, result TEXT, result_seq BIGINT, created_ms BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tokens (id {serial} PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL, host TEXT, created_ms BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS heartbeats (service TEXT NOT NULL, environment TEXT NOT NULL, host TEXT NOT NULL, last_ms BIGINT NOT NULL, PRIMARY KEY (service, environment, host))",
            "CREATE TABLE IF NOT EXISTS metrics (service TEXT NOT NULL, environment TEXT NOT NULL, host TEXT NOT NULL, version TEXT NOT NULL, at_ms BIGINT NOT NULL, requests BIGINT NOT NULL, errors BIGINT NOT NULL, buckets TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'traffic')",
            "CREATE INDEX IF NOT EXISTS metrics_time ON metrics (service, at_ms)",
            "CREATE TABLE IF NOT EXISTS gauges (service TEXT NOT NULL, environment TEXT NOT NULL, host TEXT NOT NULL, version TEXT NOT NULL, at_ms BIGINT NOT NULL, name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX IF NOT EXISTS gauges_time ON gauges (service, at_ms)",
            "CREATE TABLE IF NOT EXISTS audit (seq {serial} PRIMARY KEY, at_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        ],
        present: None,
    },
    Migration {
        version: 2,
        name: "audit_token_id",
        statements: &["ALTER TABLE audit ADD COLUMN token_id BIGINT"],
        present: Some(("audit", "token_id")),
    },
    Migration {
        version: 3,
        name: "audit_chain_head",
        // The head of the audit chain moves with the lease row. A store written before it
        // had a head starts it at the chain as it stands, so its rows still verify and new
        // rows follow the last of them. ('leader' is the lease row's name.)
        statements: &[
            "ALTER TABLE lease ADD COLUMN audit_count BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE lease ADD COLUMN audit_hash TEXT NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000'",
            "INSERT INTO lease (name, holder, term, expires_ms) SELECT 'leader', '', 0, 0 \
             WHERE EXISTS (SELECT 1 FROM audit) AND NOT EXISTS (SELECT 1 FROM lease WHERE name = 'leader')",
            "UPDATE lease SET audit_count = (SELECT COUNT(*) FROM audit), \
             audit_hash = COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), audit_hash) WHERE name = 'leader'",
        ],
        present: Some(("lease", "audit_count")),
    },
    Migration {
        version: 4,
        name: "token_scopes_and_lifetimes",
        statements: &[
            "ALTER TABLE tokens ADD COLUMN region TEXT",
            "ALTER TABLE tokens ADD COLUMN expires_ms BIGINT",
            "ALTER TABLE tokens ADD COLUMN revoked_ms BIGINT",
            "ALTER TABLE tokens ADD COLUMN last_used_ms BIGINT",
        ],
        present: Some(("tokens", "last_used_ms")),
    },
    Migration {
        version: 5,
        name: "unique_token_names",
        // Earlier releases let two tokens share a name; names are unique now. Every token
        // after the first of a name gets its id appended, so the index can be made and no
        // token stops working.
        statements: &[
            "UPDATE tokens SET name = name || '-' || CAST(id AS TEXT) \
             WHERE id NOT IN (SELECT MIN(id) FROM tokens GROUP BY name)",
            "CREATE UNIQUE INDEX IF NOT EXISTS tokens_name ON tokens (name)",
        ],
        present: None,
    },
];

/// The schema version this release makes: the last migration's.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Which database a migration runs on: the few things said differently.
#[derive(Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn serial(self) -> &'static str {
        match self {
            Backend::Sqlite => "INTEGER",
            Backend::Postgres => "BIGSERIAL",
        }
    }

    /// Counts the columns named $2 of table $1 (0 or 1), without failing when the table
    /// is not there (a failed statement would abort a PostgreSQL transaction).
    fn column_query(self) -> &'static str {
        match self {
            Backend::Sqlite => "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2",
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
            }
        }
    }
}

impl Migration {
    /// SHA-256 over the name and the statements as written (before `{serial}` is
    /// replaced), so it is the same on both backends.
    pub(crate) fn checksum(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(self.name.as_bytes());
        for statement in self.statements {
            hash.update(b"\n");
            hash.update(statement.as_bytes());
        }
        hex::encode(hash.finalize())
    }
}

/// Brings the schema up to the last of `migrations` inside `tx`, or refuses a database it
/// does not know how to change before changing anything. The caller holds the lock that
/// keeps other replicas' migrations off until it commits.
pub(crate) async fn migrate_in<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    backend: Backend,
    migrations: &[Migration],
) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let known = migrations.last().map_or(0, |m| m.version);
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         checksum TEXT NOT NULL, applied_ms BIGINT NOT NULL, found BIGINT NOT NULL DEFAULT 0)",
    )
    .execute(&mut **tx)
    .await?;
    let applied: Vec<(i64, String, String)> =
        sqlx::query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    if let Some((version, name, _)) = applied.iter().rev().find(|(v, _, _)| *v > known) {
        return Err(StoreError::NewerSchema { found: *version, name: name.clone(), known });
    }
    for (version, name, checksum) in &applied {
        let Some(m) = migrations.iter().find(|m| m.version == *version) else {
            return Err(StoreError::ChangedMigration { version: *version, name: name.clone() });
        };
        if *checksum != m.checksum() || *name != m.name {
            return Err(StoreError::ChangedMigration { version: *version, name: m.name.to_owned() });
        }
    }
    // Empty or from before versions were recorded: a migration whose work is found is
    // recorded, not run (on an empty database, nothing is found).
    let unversioned = applied.is_empty();
    for m in migrations.iter().filter(|m| !applied.iter().any(|(v, _, _)| *v == m.version)) {
        let found = match m.present {
            Some((table, column)) if unversioned && m.version <= UNVERSIONED => {
                column_exists(tx, backend, table, column).await?
            }
            _ => false,
        };
        if !found {
            for statement in m.statements {
                let sql = statement.replace("{serial}", backend.serial());
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut **tx).await?;
            }
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, checksum, applied_ms, found) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(crate::now_ms())
        .bind(i64::from(found))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn column_exists<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    backend: Backend,
    table: &str,
    column: &str,
) -> Result<bool>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let row = sqlx::query(backend.column_query()).bind(table).bind(column).fetch_one(&mut **tx).await?;
    Ok(row.get::<i64, _>(0) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_and_unversioned_ones_come_first() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
        assert!(MIGRATIONS.iter().all(|m| m.present.is_none() || m.version <= UNVERSIONED));
    }

    /// A released migration never changes: a database that recorded it would be refused.
    /// Change the schema with a new migration instead.
    #[test]
    fn released_migrations_keep_their_checksums() {
        let checksums: Vec<(i64, &str, String)> =
            MIGRATIONS.iter().map(|m| (m.version, m.name, m.checksum())).collect();
        let released: &[(i64, &str, &str)] = &[
            (1, "first_release", "fe33f7ae973c4c87c740531f3149a368c0e84eeb3aefb4c1a2b335605b04f456"),
            (2, "audit_token_id", "9d3c33eb72e155651f3c95acea8b5de5c252fb94e02393cedef7f6a2ad13d9d7"),
            (3, "audit_chain_head", "d37c31e7fadc72366c484a949e78e6d85c823a183b031fc5a3e5d1b5fb261a34"),
            (4, "token_scopes_and_lifetimes", "69463dbc4ebab51065656d6c53b0ad8e413ce1535e63623082ec00f33f3a7c60"),
            (5, "unique_token_names", "c13351d8784f5552bb5ad7c28497d15001be2246a10c8f2f278d5659fa131954"),
        ];
        for (version, name, checksum) in released {
            assert_eq!(
                checksums.iter().find(|c| c.0 == *version).map(|c| (c.1, c.2.as_str())),
                Some((*name, *checksum))
            );
        }
        // A new migration is released with this release: pin its checksum here too.
        assert_eq!(checksums.len(), released.len(), "{checksums:#?}");
    }

    #[test]
    fn the_audit_head_is_anchored_in_the_lease_row_by_its_name() {
        let anchor = MIGRATIONS.iter().find(|m| m.name == "audit_chain_head").unwrap();
        let named = format!("name = '{}'", crate::LEASE_NAME);
        assert!(anchor.statements.iter().filter(|s| s.contains(&named)).count() == 2, "{:?}", anchor.statements);
    }
}
