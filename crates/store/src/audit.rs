//! The audit log: who did what, each row chained to the one before by a SHA-256 hash,
//! so that editing or deleting any row breaks the chain from there on. The chain's head
//! (its row count and last hash) is kept in the lease row and moved in the same
//! transaction as every row written, so deleting the last rows, or all of them, is seen.

use crate::{LEASE_NAME, Pool, Result, Store, now_ms};
use sha2::{Digest, Sha256};
use sqlx::{Row, Transaction};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: i64,
    /// The actor as text: a machine component (`clock`, `driver`, …) or a token's name.
    pub actor: String,
    /// The token that acted, when a token did.
    pub token_id: Option<i64>,
    pub action: String,
    pub detail: String,
}

/// An audit row to write, with the change it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAudit {
    pub actor: String,
    pub token_id: Option<i64>,
    pub action: String,
    pub detail: String,
}

/// Where the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditProblem {
    /// The row's content does not match its hash: it was edited.
    Edited { seq: i64 },
    /// The row does not follow the one before it: a row was deleted or inserted.
    Broken { seq: i64 },
    /// The head records more (or fewer) rows than there are: rows were deleted from the end.
    Truncated { recorded: i64, found: i64 },
    /// The last row is not the one the head records.
    HeadMismatch { seq: Option<i64> },
    /// The store was written to but has no head to check the audit rows against.
    HeadMissing,
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditProblem::Edited { seq } => {
                write!(f, "audit row {seq} was edited: its hash does not match its content")
            }
            AuditProblem::Broken { seq } => {
                write!(f, "audit row {seq} does not follow the row before it: a row was deleted or inserted")
            }
            AuditProblem::Truncated { recorded, found } => write!(
                f,
                "the audit log's head records {recorded} row(s) but {found} are there: rows were deleted from the end"
            ),
            AuditProblem::HeadMismatch { seq: Some(seq) } => {
                write!(f, "audit row {seq}, the last one, is not the head the log records: the end was replaced")
            }
            AuditProblem::HeadMismatch { seq: None } => {
                write!(f, "the audit log is empty but its head records a row: every row was deleted")
            }
            AuditProblem::HeadMissing => {
                write!(f, "the audit log's head (the lease row) is missing from a store that was written to")
            }
        }
    }
}

pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn chain_hash(prev: &str, at_ms: i64, row: &NewAudit) -> String {
    let mut h = Sha256::new();
    let at = at_ms.to_string();
    // A row written without a token hashes as rows did before tokens were recorded, so a
    // chain written by an earlier release still verifies.
    let token = row.token_id.map(|id| id.to_string());
    let parts = [
        Some(prev.as_bytes()),
        Some(at.as_bytes()),
        Some(row.actor.as_bytes()),
        token.as_deref().map(str::as_bytes),
        Some(row.action.as_bytes()),
        Some(row.detail.as_bytes()),
    ];
    // Lengths first, so that no two different rows (nor a row with a token and one
    // without) can serialise to the same bytes.
    for part in parts.into_iter().flatten() {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// Writes audit rows inside `tx`, chained from the head kept in the lease row, and moves
/// the head. `lock` is the row lock the backend needs (`FOR UPDATE` on PostgreSQL).
pub(crate) async fn audit_in<DB>(tx: &mut Transaction<'static, DB>, lock: &str, rows: &[NewAudit]) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB> + sqlx::Decode<'q, DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO lease (name, holder, term, expires_ms) VALUES ($1, '', 0, 0) ON CONFLICT (name) DO NOTHING",
    )
    .bind(LEASE_NAME)
    .execute(&mut **tx)
    .await?;
    let sql = format!("SELECT audit_count, audit_hash FROM lease WHERE name = $1{lock}");
    let head = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(LEASE_NAME).fetch_one(&mut **tx).await?;
    let (mut count, mut prev): (i64, String) = (head.get(0), head.get(1));
    let at = now_ms();
    for row in rows {
        let hash = chain_hash(&prev, at, row);
        sqlx::query(
            "INSERT INTO audit (at_ms, actor, token_id, action, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(at)
        .bind(row.actor.as_str())
        .bind(row.token_id)
        .bind(row.action.as_str())
        .bind(row.detail.as_str())
        .bind(prev.as_str())
        .bind(hash.as_str())
        .execute(&mut **tx)
        .await?;
        prev = hash;
        count += 1;
    }
    sqlx::query("UPDATE lease SET audit_count = $1, audit_hash = $2 WHERE name = $3")
        .bind(count)
        .bind(prev.as_str())
        .bind(LEASE_NAME)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Appends audit rows in a transaction of their own (for changes that are not in the
    /// log, such as tokens), chained to the last.
    pub async fn audit(&self, rows: &[NewAudit]) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                audit_in(&mut tx, "", rows).await?;
                tx.commit().await?;
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                audit_in(&mut tx, " FOR UPDATE", rows).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Every audit row in order.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        Ok(self.audit_rows().await?.into_iter().map(|(e, _, _)| e).collect())
    }

    async fn audit_rows(&self) -> Result<Vec<(AuditEntry, String, String)>> {
        let sql = "SELECT seq, at_ms, actor, token_id, action, detail, prev_hash, hash FROM audit ORDER BY seq";
        let rows = on_pool!(self, p => {
            sqlx::query(sql)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| {
                    let entry = AuditEntry {
                        seq: r.get(0), at_ms: r.get(1), actor: r.get(2), token_id: r.get(3), action: r.get(4), detail: r.get(5),
                    };
                    (entry, r.get(6), r.get(7))
                })
                .collect()
        });
        Ok(rows)
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let sql = "SELECT audit_count, audit_hash FROM lease WHERE name = $1";
        let head = on_pool!(self, p => {
            sqlx::query(sql).bind(LEASE_NAME).fetch_optional(p).await?.map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        });
        Ok(head)
    }

    /// Checks the whole chain against its head; returns the number of rows, or the first
    /// problem.
    pub async fn verify_audit(&self) -> Result<std::result::Result<usize, AuditProblem>> {
        let rows = self.audit_rows().await?;
        let mut prev = GENESIS.to_owned();
        for (e, prev_hash, hash) in &rows {
            if *prev_hash != prev {
                return Ok(Err(AuditProblem::Broken { seq: e.seq }));
            }
            let row = NewAudit {
                actor: e.actor.clone(),
                token_id: e.token_id,
                action: e.action.clone(),
                detail: e.detail.clone(),
            };
            if chain_hash(prev_hash, e.at_ms, &row) != *hash {
                return Ok(Err(AuditProblem::Edited { seq: e.seq }));
            }
            prev = hash.clone();
        }
        let found = rows.len() as i64;
        let Some((recorded, head)) = self.audit_head().await? else {
            // No lease row: fine for a store never written to, not for one with a log.
            let written = !rows.is_empty() || self.last_seq().await? > 0;
            return Ok(if written { Err(AuditProblem::HeadMissing) } else { Ok(0) });
        };
        if recorded != found {
            return Ok(Err(AuditProblem::Truncated { recorded, found }));
        }
        if head != prev {
            return Ok(Err(AuditProblem::HeadMismatch { seq: rows.last().map(|(e, _, _)| e.seq) }));
        }
        Ok(Ok(rows.len()))
    }
}
