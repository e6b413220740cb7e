//! The reads of the console's `/api/status` ([`crate::http`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row};

/// What the replica holds, counted.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Customers that are not deleted.
    pub customers: i64,
    pub subscriptions: i64,
    pub entitlement_sets: i64,
    pub dead_letters: i64,
}

pub async fn counts(pool: &PgPool) -> sqlx::Result<Counts> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM customers WHERE NOT is_deleted),
                (SELECT count(*) FROM subscriptions),
                (SELECT count(*) FROM entitlement_sets),
                (SELECT count(*) FROM dead_letters)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Counts {
        customers: row.try_get(0)?,
        subscriptions: row.try_get(1)?,
        entitlement_sets: row.try_get(2)?,
        dead_letters: row.try_get(3)?,
    })
}

/// The newest `sync` pass as recorded, finished or not.
#[derive(Debug, Clone)]
pub struct LastSync {
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub phase: String,
    pub complete: bool,
    pub error: Option<String>,
    pub counts: Value,
}

pub async fn last_sync(pool: &PgPool) -> sqlx::Result<Option<LastSync>> {
    sqlx::query(
        "SELECT started_at, finished_at, phase, complete, error, counts FROM sync_runs
         ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .map(|row| {
        Ok(LastSync {
            started_at: row.try_get(0)?,
            finished_at: row.try_get(1)?,
            phase: row.try_get(2)?,
            complete: row.try_get(3)?,
            error: row.try_get(4)?,
            counts: row.try_get(5)?,
        })
    })
    .transpose()
}
