//! The audit log: who did what, each row chained to the one before by a SHA-256 hash,
//! so that editing or deleting any row breaks the chain from there on.

use crate::{Pool, Result, Store, now_ms};
use sha2::{Digest, Sha256};
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
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
        }
    }
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn chain_hash(prev: &str, at_ms: i64, actor: &str, action: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    // Lengths first, so that no two different rows can serialise to the same bytes.
    for part in [prev.as_bytes(), at_ms.to_string().as_bytes(), actor.as_bytes(), action.as_bytes(), detail.as_bytes()]
    {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

impl Store {
    /// Appends one audit row, chained to the last.
    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
        let at = now_ms();
        macro_rules! run {
            ($tx:expr, $lock:literal) => {{
                let mut tx = $tx;
                let prev: Option<String> =
                    sqlx::query(concat!("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", $lock))
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| r.get(0));
                let prev = prev.unwrap_or_else(|| GENESIS.to_owned());
                let hash = chain_hash(&prev, at, actor, action, detail);
                sqlx::query(
                    "INSERT INTO audit (at_ms, actor, action, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(at)
                .bind(actor)
                .bind(action)
                .bind(detail)
                .bind(&prev)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => run!(p.begin_with("BEGIN IMMEDIATE").await?, ""),
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                // One writer at a time, so the chain never forks.
                sqlx::query("LOCK TABLE audit IN EXCLUSIVE MODE").execute(&mut *tx).await?;
                run!(tx, "")
            }
        }
        Ok(())
    }

    /// Every audit row in order.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        Ok(self.audit_rows().await?.into_iter().map(|(e, _, _)| e).collect())
    }

    async fn audit_rows(&self) -> Result<Vec<(AuditEntry, String, String)>> {
        let sql = "SELECT seq, at_ms, actor, action, detail, prev_hash, hash FROM audit ORDER BY seq";
        let rows = on_pool!(self, p => {
            sqlx::query(sql)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| {
                    let entry =
                        AuditEntry { seq: r.get(0), at_ms: r.get(1), actor: r.get(2), action: r.get(3), detail: r.get(4) };
                    (entry, r.get(5), r.get(6))
                })
                .collect()
        });
        Ok(rows)
    }

    /// Checks the whole chain; returns the number of rows, or the first problem.
    pub async fn verify_audit(&self) -> Result<std::result::Result<usize, AuditProblem>> {
        let rows = self.audit_rows().await?;
        let mut prev = GENESIS.to_owned();
        for (e, prev_hash, hash) in &rows {
            if *prev_hash != prev {
                return Ok(Err(AuditProblem::Broken { seq: e.seq }));
            }
            if chain_hash(prev_hash, e.at_ms, &e.actor, &e.action, &e.detail) != *hash {
                return Ok(Err(AuditProblem::Edited { seq: e.seq }));
            }
            prev = hash.clone();
        }
        Ok(Ok(rows.len()))
    }
}
