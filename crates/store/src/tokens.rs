//! API tokens: only the SHA-256 of a secret is kept. Names are unique; every change to
//! the tokens is audited in the same transaction.

use crate::audit::audit_in;
use crate::{NewAudit, Pool, Result, Store, StoreError, now_ms};
use sqlx::Row;

/// A token as stored (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// For agent tokens: the host it may speak for (`service/environment/host`).
    pub host: Option<String>,
    /// For router tokens: the region it fronts (`service/environment/region`).
    pub region: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// When it was last used, as written in batches (it may lag by a flush).
    pub last_used_ms: Option<i64>,
}

/// A token to store.
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub hash: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub host: Option<&'a str>,
    pub region: Option<&'a str>,
    pub expires_ms: Option<i64>,
}

const COLUMNS: &str = "id, name, role, host, region, created_ms, expires_ms, revoked_ms, last_used_ms";

fn token_row<R: Row>(r: &R) -> TokenRow
where
    usize: sqlx::ColumnIndex<R>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<String>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<i64>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    TokenRow {
        id: r.get(0),
        name: r.get(1),
        role: r.get(2),
        host: r.get(3),
        region: r.get(4),
        created_ms: r.get(5),
        expires_ms: r.get(6),
        revoked_ms: r.get(7),
        last_used_ms: r.get(8),
    }
}

fn duplicate(name: &str, e: sqlx::Error) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Duplicate(format!("the token name {name:?}")),
        _ => StoreError::Database(e),
    }
}

impl Store {
    pub async fn token_count(&self) -> Result<i64> {
        let n = on_pool!(self, p => sqlx::query("SELECT COUNT(*) FROM tokens").fetch_one(p).await?.get::<i64, _>(0));
        Ok(n)
    }

    /// Stores the first admin token when there is no token at all; false if one exists.
    pub async fn bootstrap_token(&self, secret_hash: &str, name: &str) -> Result<bool> {
        let now = now_ms();
        macro_rules! run {
            ($tx:expr) => {{
                let mut tx = $tx;
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM tokens").fetch_one(&mut *tx).await?.get(0);
                if n == 0 {
                    sqlx::query(
                        "INSERT INTO tokens (hash, name, role, host, created_ms) VALUES ($1, $2, 'admin', NULL, $3)",
                    )
                    .bind(secret_hash)
                    .bind(name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                n == 0
            }};
        }
        Ok(match &self.pool {
            Pool::Sqlite(p) => run!(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("LOCK TABLE tokens IN EXCLUSIVE MODE").execute(&mut *tx).await?;
                run!(tx)
            }
        })
    }

    /// Stores a token's hash with the audit row of its creation (made from the new id);
    /// returns its id. A name that is taken is [`StoreError::Duplicate`].
    pub async fn insert_token(&self, token: &NewToken<'_>, audit: impl FnOnce(i64) -> NewAudit) -> Result<i64> {
        macro_rules! run {
            ($tx:expr, $lock:literal) => {{
                let mut tx = $tx;
                let id: i64 = sqlx::query(
                    "INSERT INTO tokens (hash, name, role, host, region, created_ms, expires_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(token.hash)
                .bind(token.name)
                .bind(token.role)
                .bind(token.host)
                .bind(token.region)
                .bind(now_ms())
                .bind(token.expires_ms)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| duplicate(token.name, e))?
                .get(0);
                audit_in(&mut tx, $lock, &[audit(id)]).await?;
                tx.commit().await?;
                id
            }};
        }
        Ok(match &self.pool {
            Pool::Sqlite(p) => run!(p.begin_with("BEGIN IMMEDIATE").await?, ""),
            Pool::Postgres(p) => run!(p.begin().await?, " FOR UPDATE"),
        })
    }

    /// Marks a token revoked, with the audit row; false if there is no such token or it
    /// was revoked already.
    pub async fn revoke_token(&self, id: i64, audit: &NewAudit) -> Result<bool> {
        macro_rules! run {
            ($tx:expr, $lock:literal) => {{
                let mut tx = $tx;
                let done = sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    audit_in(&mut tx, $lock, std::slice::from_ref(audit)).await?;
                }
                tx.commit().await?;
                done
            }};
        }
        Ok(match &self.pool {
            Pool::Sqlite(p) => run!(p.begin_with("BEGIN IMMEDIATE").await?, ""),
            Pool::Postgres(p) => run!(p.begin().await?, " FOR UPDATE"),
        })
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!("SELECT {COLUMNS} FROM tokens ORDER BY id");
        let rows = on_pool!(self, p => {
            sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?.iter().map(token_row).collect()
        });
        Ok(rows)
    }

    pub async fn find_token(&self, secret_hash: &str) -> Result<Option<TokenRow>> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE hash = $1");
        let row = on_pool!(self, p => {
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(secret_hash).fetch_optional(p).await?.as_ref().map(token_row)
        });
        Ok(row)
    }

    /// Records when tokens were last used: (id, unix ms), a batch at a time.
    pub async fn touch_tokens(&self, used: &[(i64, i64)]) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (id, at) in used {
                sqlx::query("UPDATE tokens SET last_used_ms = $1 WHERE id = $2 AND (last_used_ms IS NULL OR last_used_ms < $1)")
                    .bind(*at).bind(*id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
