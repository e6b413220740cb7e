//! The inbox: every processed event's deduplication key, claimed in the transaction that
//! applies it (claim-then-work), and deleted after `INBOX_RETENTION`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Claims a deduplication key. `false` means it was already processed.
pub async fn claim(
    conn: &mut PgConnection,
    key: &str,
    event_type: &str,
    customer_id: Option<&str>,
    outcome: &str,
    payload: Option<&Value>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO inbox (message_id, event_type, outcome, customer_id, payload)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(key)
    .bind(event_type)
    .bind(outcome)
    .bind(customer_id)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes at most `limit` claims made before `before`; how many went. Rows another
/// process is deleting are skipped, not waited for.
pub async fn delete_inbox_claims_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM inbox WHERE message_id IN (
             SELECT message_id FROM inbox WHERE processed_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn set_outcome(conn: &mut PgConnection, key: &str, outcome: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE inbox SET outcome = $2 WHERE message_id = $1")
        .bind(key)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}
