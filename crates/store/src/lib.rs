//! The control plane's durable state: an ordered, append-only log of every engine input
//! and decision, a leader lease whose increasing term fences every write, an inbox through
//! which replicas hand requests to the leader, API tokens (hashes only) and a hash-chained
//! audit log.
//!
//! SQLite (one file, WAL, immediate transactions) is the zero-set-up default; PostgreSQL
//! lets several replicas share one log. The SQL is kept to what both understand.

#[macro_use]
mod macros {
    /// Runs the same code against whichever pool the store has.
    macro_rules! on_pool {
        ($self:expr, $pool:ident => $body:expr) => {
            match &$self.pool {
                crate::Pool::Sqlite($pool) => $body,
                crate::Pool::Postgres($pool) => $body,
            }
        };
    }
}

mod audit;
mod migrate;
mod tokens;

pub use audit::{AuditEntry, AuditProblem, NewAudit};
pub use migrate::SCHEMA_VERSION;
pub use tokens::{NewToken, TokenRow};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Row, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The lease has a newer term or another holder: this replica is no longer the leader
    /// and its write was refused.
    #[error("write refused: the leader lease has moved on (this replica held term {held})")]
    Fenced { held: i64 },
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// A row with this unique value (a token's name) is there already.
    #[error("{0} is taken")]
    Duplicate(String),
    /// A database opened for reading only is not there.
    #[error("no database at {0}")]
    Missing(String),
    /// The database records a migration this release does not know: a newer release
    /// wrote it. It is left as it is.
    #[error(
        "the database's schema is at version {found} ({name}), newer than this release knows (version {known}): \
         it was written by a newer release of rollwave; run that release (nothing was changed)"
    )]
    NewerSchema { found: i64, name: String, known: i64 },
    /// The database records, under a version this release knows, a migration that is not
    /// this release's (another name or checksum): a migration was changed after release.
    #[error(
        "the database records migration {version} ({name}) with another name or checksum than this release's: \
         its schema is not one this release knows how to change (nothing was changed)"
    )]
    ChangedMigration { version: i64, name: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// The right to write, as of one term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub term: i64,
}

/// One row of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: i64,
    pub term: i64,
    /// Unix milliseconds of the input the record belongs to.
    pub at_ms: i64,
    pub service: String,
    /// `input` rows are replayed into the engine; `event` and `command` rows are its decisions.
    pub kind: String,
    pub body: String,
}

/// A record to append.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub at_ms: i64,
    pub service: String,
    pub kind: String,
    pub body: String,
}

/// The reply to an inbox entry, written with the records it caused.
#[derive(Clone, Debug)]
pub struct Answer {
    pub inbox_id: i64,
    pub body: String,
    /// The last record of the batch the entry was applied in, so the asker can wait for
    /// its own replica to catch up to it.
    pub through_record: Option<usize>,
}

/// One push of one host's traffic on one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricRow {
    pub service: String,
    pub environment: String,
    pub host: String,
    pub version: String,
    pub at_ms: i64,
    pub requests: i64,
    pub errors: i64,
    /// Latency histogram counts, comma-separated, one per bucket bound and one over.
    pub buckets: String,
    /// `traffic` (what routers saw) or `monitor:NAME` (a synthetic monitor's checks).
    pub source: String,
}

/// One reading of one of a host's gauges (its agent's `cpu_percent`, `memory_percent` or
/// `restarts`), with the version the host ran.
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeRow {
    pub service: String,
    pub environment: String,
    pub host: String,
    pub version: String,
    pub at_ms: i64,
    pub name: String,
    pub value: f64,
}

pub(crate) const LEASE_NAME: &str = "leader";

/// The key of the PostgreSQL advisory lock held while the schema is migrated.
const SCHEMA_LOCK: i64 = 0x726f_6c6c_7761_7665; // "rollwave"

/// One migration as the database records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_ms: i64,
    /// A database from before versions were recorded had it done already: it was
    /// recorded, not run.
    pub found: bool,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The SHA-256 of a secret, in hex: how tokens are stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Opens (creating if needed) the store at `url`: `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // With WAL, NORMAL loses no committed transaction on a process crash
                // (only on power loss, the last few): what `kill -9` needs.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            Pool::Sqlite(SqlitePoolOptions::new().max_connections(8).connect_with(options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10)).connect(url).await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs one SQL statement as it is: for tests and repairs, never with user input.
    pub async fn raw_execute(&self, sql: &str) -> Result<()> {
        on_pool!(self, p => { sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(p).await?; });
        Ok(())
    }

    /// Opens an existing store for reading only: a missing SQLite file is an error, not a
    /// new empty database, and nothing is written (no schema, no journal change).
    pub async fn open_existing(url: &str) -> Result<Self> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?.create_if_missing(false).read_only(true);
            let path = options.get_filename().to_owned();
            if !path.is_file() {
                return Err(StoreError::Missing(path.display().to_string()));
            }
            Pool::Sqlite(SqlitePoolOptions::new().max_connections(1).connect_with(options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(10)).connect(url).await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store = Store { pool };
        store.check_not_newer().await?;
        Ok(store)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Applies the migrations the database lacks, all in one transaction under the
    /// database's write lock (see [`migrate`]).
    async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                migrate::migrate_in(&mut tx, migrate::Backend::Sqlite, migrate::MIGRATIONS).await?;
                tx.commit().await?;
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *tx).await?;
                migrate::migrate_in(&mut tx, migrate::Backend::Postgres, migrate::MIGRATIONS).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The migrations the database records, oldest first; none for a database from
    /// before versions were recorded.
    pub async fn schema_migrations(&self) -> Result<Vec<AppliedMigration>> {
        let sql = "SELECT version, name, checksum, applied_ms, found FROM schema_migrations ORDER BY version";
        let rows = on_pool!(self, p => {
            match sqlx::query(sql).fetch_all(p).await {
                Ok(rows) => rows.into_iter().map(|r| AppliedMigration {
                    version: r.get(0), name: r.get(1), checksum: r.get(2), applied_ms: r.get(3),
                    found: r.get::<i64, _>(4) != 0,
                }).collect(),
                // No such table: a database from before versions were recorded (or empty).
                Err(e) if self.table_missing(&e) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        });
        Ok(rows)
    }

    fn table_missing(&self, e: &sqlx::Error) -> bool {
        let Some(db) = e.as_database_error() else { return false };
        match self.pool {
            // undefined_table
            Pool::Postgres(_) => db.code().as_deref() == Some("42P01"),
            Pool::Sqlite(_) => db.message().starts_with("no such table"),
        }
    }

    /// Refuses a database written by a newer release, without changing it.
    async fn check_not_newer(&self) -> Result<()> {
        let applied = self.schema_migrations().await?;
        match applied.iter().rev().find(|m| m.version > SCHEMA_VERSION) {
            Some(m) => Err(StoreError::NewerSchema { found: m.version, name: m.name.clone(), known: SCHEMA_VERSION }),
            None => Ok(()),
        }
    }

    // -------------------------------------------------------------------------------
    // Lease

    /// Takes the lease if it is free or expired (or already ours), with a new term; or
    /// renews it if we hold it. Returns the lease we hold afterwards, if any.
    pub async fn acquire_lease(&self, holder: &str, current: Option<&Lease>, ttl: Duration) -> Result<Option<Lease>> {
        self.acquire_lease_at(holder, current, ttl, now_ms()).await
    }

    /// [`Store::acquire_lease`] at `now` (unix ms): the lease is judged expired, and its
    /// new expiry set, from that reading. Every process sharing the lease must read the
    /// same clock, which can only be the wall ([`now_ms`]); tests pass other readings to
    /// check expiry without waiting for it.
    pub async fn acquire_lease_at(
        &self,
        holder: &str,
        current: Option<&Lease>,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<Lease>> {
        let expires = now + ttl.as_millis() as i64;
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let lease = acquire_in::<Sqlite>(&mut tx, "", holder, current, now, expires).await?;
                tx.commit().await?;
                Ok(lease)
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("INSERT INTO lease (name, holder, term, expires_ms) VALUES ($1, '', 0, 0) ON CONFLICT (name) DO NOTHING")
                    .bind(LEASE_NAME)
                    .execute(&mut *tx)
                    .await?;
                let lease = acquire_in::<Postgres>(&mut tx, " FOR UPDATE", holder, current, now, expires).await?;
                tx.commit().await?;
                Ok(lease)
            }
        }
    }

    /// Gives the lease up at once, so another replica need not wait for it to expire.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("UPDATE lease SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND term = $3")
                .bind(LEASE_NAME)
                .bind(&lease.holder)
                .bind(lease.term)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The lease as it stands: holder, term and expiry (unix ms).
    pub async fn lease_status(&self) -> Result<Option<(String, i64, i64)>> {
        let row = on_pool!(self, p => {
            sqlx::query("SELECT holder, term, expires_ms FROM lease WHERE name = $1").bind(LEASE_NAME).fetch_optional(p).await?
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1), r.get::<i64, _>(2)))
        });
        Ok(row)
    }

    // -------------------------------------------------------------------------------
    // Log

    /// Appends records in one transaction, fenced by `lease`, and answers inbox entries and
    /// writes the audit rows of the changes in the same transaction. Returns the sequence
    /// numbers given.
    pub async fn append(
        &self,
        lease: &Lease,
        records: &[NewRecord],
        answers: &[Answer],
        audits: &[NewAudit],
    ) -> Result<Vec<i64>> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let seqs = append_in::<Sqlite>(&mut tx, "", lease, records, answers).await?;
                audit::audit_in(&mut tx, "", audits).await?;
                tx.commit().await?;
                Ok(seqs)
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                // The audit head lives in the lease row: moving it needs the row to itself.
                let lock = if audits.is_empty() { " FOR SHARE" } else { " FOR UPDATE" };
                let seqs = append_in::<Postgres>(&mut tx, lock, lease, records, answers).await?;
                audit::audit_in(&mut tx, " FOR UPDATE", audits).await?;
                tx.commit().await?;
                Ok(seqs)
            }
        }
    }

    /// Records after `after`, in order, at most `limit`; only `kinds` when given.
    pub async fn read_log(&self, after: i64, limit: i64, kinds: Option<&[&str]>) -> Result<Vec<Record>> {
        let filter = match kinds {
            Some(kinds) => format!(
                " AND kind IN ({})",
                kinds.iter().map(|k| format!("'{}'", k.replace('\'', ""))).collect::<Vec<_>>().join(",")
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT seq, term, at_ms, service, kind, body FROM log WHERE seq > $1{filter} ORDER BY seq LIMIT $2"
        );
        let rows = on_pool!(self, p => {
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(limit).fetch_all(p).await?
                .into_iter().map(|r| Record {
                    seq: r.get(0), term: r.get(1), at_ms: r.get(2), service: r.get(3), kind: r.get(4), body: r.get(5),
                }).collect()
        });
        Ok(rows)
    }

    pub async fn last_seq(&self) -> Result<i64> {
        let seq = on_pool!(self, p => {
            sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM log").fetch_one(p).await?.get::<i64, _>(0)
        });
        Ok(seq)
    }

    // -------------------------------------------------------------------------------
    // Inbox: how a replica that is not the leader hands a request over.

    pub async fn submit(&self, body: &str) -> Result<i64> {
        let id = on_pool!(self, p => {
            sqlx::query("INSERT INTO inbox (body, created_ms) VALUES ($1, $2) RETURNING id")
                .bind(body).bind(now_ms()).fetch_one(p).await?.get::<i64, _>(0)
        });
        Ok(id)
    }

    /// Unanswered requests after `after`, oldest first.
    pub async fn pending(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = on_pool!(self, p => {
            sqlx::query("SELECT id, body FROM inbox WHERE id > $1 AND result IS NULL ORDER BY id LIMIT $2")
                .bind(after).bind(limit).fetch_all(p).await?
                .into_iter().map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))).collect()
        });
        Ok(rows)
    }

    /// The answer to an inbox entry once the leader has given it, with the log sequence
    /// number it was applied through.
    pub async fn answer_of(&self, id: i64) -> Result<Option<(String, i64)>> {
        let answer = on_pool!(self, p => {
            sqlx::query("SELECT result, result_seq FROM inbox WHERE id = $1").bind(id).fetch_optional(p).await?
                .and_then(|r| r.get::<Option<String>, _>(0).map(|body| (body, r.get::<Option<i64>, _>(1).unwrap_or(0))))
        });
        Ok(answer)
    }

    // -------------------------------------------------------------------------------
    // Heartbeats: every replica records the hosts it hears from; the leader reads them.

    /// Records that hosts were heard from, keeping the latest time per host.
    pub async fn heartbeat(&self, seen: &[(String, String, String, i64)]) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in seen.chunks(1000) {
                let mut q = String::from("INSERT INTO heartbeats (service, environment, host, last_ms) VALUES ");
                for i in 0..chunk.len() {
                    let b = i * 4;
                    if i > 0 { q.push(','); }
                    q.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
                }
                q.push_str(" ON CONFLICT (service, environment, host) DO UPDATE SET last_ms = \
                   CASE WHEN excluded.last_ms > heartbeats.last_ms THEN excluded.last_ms ELSE heartbeats.last_ms END");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
                for (service, env, host, at) in chunk {
                    query = query.bind(service).bind(env).bind(host).bind(*at);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// When each host of a service was last heard from: (environment, host, unix ms).
    pub async fn heartbeats(&self, service: &str) -> Result<Vec<(String, String, i64)>> {
        let rows = on_pool!(self, p => {
            sqlx::query("SELECT environment, host, last_ms FROM heartbeats WHERE service = $1")
                .bind(service).fetch_all(p).await?
                .into_iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<i64, _>(2))).collect()
        });
        Ok(rows)
    }

    // -------------------------------------------------------------------------------
    // Metrics: request counts, errors and latency histograms per host and version, as
    // routers (and monitors) push them. Observations, not decisions: not in the log.

    pub async fn insert_metrics(&self, rows: &[MetricRow]) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for r in rows {
                sqlx::query(
                    "INSERT INTO metrics (service, environment, host, version, at_ms, requests, errors, buckets, source) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&r.service).bind(&r.environment).bind(&r.host).bind(&r.version)
                .bind(r.at_ms).bind(r.requests).bind(r.errors).bind(&r.buckets).bind(&r.source)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A service's metric rows with `from_ms <= at_ms < to_ms`.
    pub async fn metrics(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<MetricRow>> {
        let rows = on_pool!(self, p => {
            sqlx::query(
                "SELECT service, environment, host, version, at_ms, requests, errors, buckets, source FROM metrics \
                 WHERE service = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY at_ms",
            )
            .bind(service).bind(from_ms).bind(to_ms).fetch_all(p).await?
            .into_iter().map(|r| MetricRow {
                service: r.get(0), environment: r.get(1), host: r.get(2), version: r.get(3),
                at_ms: r.get(4), requests: r.get(5), errors: r.get(6), buckets: r.get(7), source: r.get(8),
            }).collect()
        });
        Ok(rows)
    }

    /// Drops metric and gauge rows older than `before_ms`.
    pub async fn prune_metrics(&self, before_ms: i64) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("DELETE FROM metrics WHERE at_ms < $1").bind(before_ms).execute(p).await?;
            sqlx::query("DELETE FROM gauges WHERE at_ms < $1").bind(before_ms).execute(p).await?;
        });
        Ok(())
    }

    // -------------------------------------------------------------------------------
    // Gauges: what agents read on their hosts (CPU, memory, restarts), per host and
    // version. Observations too, kept and pruned with the metrics.

    pub async fn insert_gauges(&self, rows: &[GaugeRow]) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for r in rows {
                sqlx::query(
                    "INSERT INTO gauges (service, environment, host, version, at_ms, name, value) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&r.service).bind(&r.environment).bind(&r.host).bind(&r.version)
                .bind(r.at_ms).bind(&r.name).bind(r.value)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A service's gauge rows with `from_ms <= at_ms < to_ms`, oldest first.
    pub async fn gauges(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<GaugeRow>> {
        let rows = on_pool!(self, p => {
            sqlx::query(
                "SELECT service, environment, host, version, at_ms, name, value FROM gauges \
                 WHERE service = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY at_ms",
            )
            .bind(service).bind(from_ms).bind(to_ms).fetch_all(p).await?
            .into_iter().map(|r| GaugeRow {
                service: r.get(0), environment: r.get(1), host: r.get(2), version: r.get(3),
                at_ms: r.get(4), name: r.get(5), value: r.get(6),
            }).collect()
        });
        Ok(rows)
    }
}

/// `lock` is the row lock the backend needs on the lease row (`FOR UPDATE` on
/// PostgreSQL; nothing on SQLite, whose `BEGIN IMMEDIATE` already holds the write lock).
async fn acquire_in<DB>(
    tx: &mut Transaction<'static, DB>,
    lock: &str,
    holder: &str,
    current: Option<&Lease>,
    now: i64,
    expires: i64,
) -> Result<Option<Lease>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let sql = format!("SELECT holder, term, expires_ms FROM lease WHERE name = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(LEASE_NAME).fetch_optional(&mut **tx).await?;
    let Some(row) = row else {
        sqlx::query("INSERT INTO lease (name, holder, term, expires_ms) VALUES ($1, $2, 1, $3)")
            .bind(LEASE_NAME)
            .bind(holder)
            .bind(expires)
            .execute(&mut **tx)
            .await?;
        return Ok(Some(Lease { holder: holder.to_owned(), term: 1 }));
    };
    let (held_by, term, expires_ms): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let ours = current.is_some_and(|l| l.holder == held_by && l.term == term);
    if ours && expires_ms >= now {
        sqlx::query("UPDATE lease SET expires_ms = $1 WHERE name = $2")
            .bind(expires)
            .bind(LEASE_NAME)
            .execute(&mut **tx)
            .await?;
        return Ok(Some(Lease { holder: holder.to_owned(), term }));
    }
    if expires_ms < now {
        sqlx::query("UPDATE lease SET holder = $1, term = $2, expires_ms = $3 WHERE name = $4")
            .bind(holder)
            .bind(term + 1)
            .bind(expires)
            .bind(LEASE_NAME)
            .execute(&mut **tx)
            .await?;
        return Ok(Some(Lease { holder: holder.to_owned(), term: term + 1 }));
    }
    Ok(None)
}

async fn append_in<DB>(
    tx: &mut Transaction<'static, DB>,
    lock: &str,
    lease: &Lease,
    records: &[NewRecord],
    answers: &[Answer],
) -> Result<Vec<i64>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    // The fence: under the lease row's lock (PostgreSQL) or the database's write lock
    // (SQLite's BEGIN IMMEDIATE), the lease must still be ours.
    let sql = format!("SELECT holder, term FROM lease WHERE name = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(LEASE_NAME).fetch_optional(&mut **tx).await?;
    let still_ours = row.is_some_and(|r| r.get::<String, _>(0) == lease.holder && r.get::<i64, _>(1) == lease.term);
    if !still_ours {
        return Err(StoreError::Fenced { held: lease.term });
    }
    let mut seqs = Vec::with_capacity(records.len());
    for chunk in records.chunks(500) {
        let mut sql = String::from("INSERT INTO log (term, at_ms, service, kind, body) VALUES ");
        for i in 0..chunk.len() {
            let b = i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5));
        }
        sql.push_str(" RETURNING seq");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q.bind(lease.term).bind(r.at_ms).bind(r.service.as_str()).bind(r.kind.as_str()).bind(r.body.as_str());
        }
        let mut got: Vec<i64> = q.fetch_all(&mut **tx).await?.iter().map(|row| row.get(0)).collect();
        got.sort_unstable();
        seqs.extend(got);
    }
    for answer in answers {
        let seq = answer.through_record.and_then(|i| seqs.get(i).copied()).unwrap_or(0);
        sqlx::query("UPDATE inbox SET result = $1, result_seq = $2 WHERE id = $3")
            .bind(answer.body.as_str())
            .bind(seq)
            .bind(answer.inbox_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(seqs)
}

/// A store URL as it may be shown: the SQLite file, or PostgreSQL's host and database
/// without user, password or options.
pub fn describe_url(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let path = path.split('?').next().unwrap_or_default();
        return format!("sqlite {path}");
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('?').next().unwrap_or_default();
    format!("postgres {rest}")
}
