//! The SQL of dead letters (what they are, their ids and their metric: [`crate::dead_letters`]).

use sqlx::{PgPool, Row};

use crate::dead_letters::{DeadLetter, NewDeadLetter};

/// Records (or re-records) a dead letter. Callers count it: see [`crate::dead_letters`].
pub async fn record_dead_letter(pool: &PgPool, letter: &NewDeadLetter) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (source_id, event_message_id, event_type, reason, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source_id) DO UPDATE SET reason = EXCLUDED.reason,
             attempts = dead_letters.attempts + 1, last_seen = now()",
    )
    .bind(&letter.source_id)
    .bind(&letter.event_message_id)
    .bind(&letter.event_type)
    .bind(&letter.reason)
    .bind(&letter.body)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list_dead_letters(pool: &PgPool) -> sqlx::Result<Vec<DeadLetter>> {
    let rows = sqlx::query(
        "SELECT source_id, event_message_id, event_type, reason, body, attempts, first_seen
         FROM dead_letters ORDER BY first_seen, source_id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(dead_letter_from_row).collect()
}

/// The newest `limit` dead letters, newest first, and how many there are in all.
pub async fn newest_dead_letters(
    pool: &PgPool,
    limit: i64,
) -> sqlx::Result<(Vec<DeadLetter>, i64)> {
    let rows = sqlx::query(
        "SELECT source_id, event_message_id, event_type, reason, body, attempts, first_seen
         FROM dead_letters ORDER BY first_seen DESC, source_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await?;
    let letters = rows
        .into_iter()
        .map(dead_letter_from_row)
        .collect::<sqlx::Result<_>>()?;
    Ok((letters, total))
}

pub async fn get_dead_letter(pool: &PgPool, source_id: &str) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query(
        "SELECT source_id, event_message_id, event_type, reason, body, attempts, first_seen
         FROM dead_letters WHERE source_id = $1",
    )
    .bind(source_id)
    .fetch_optional(pool)
    .await?
    .map(dead_letter_from_row)
    .transpose()
}

pub async fn remove_dead_letter(pool: &PgPool, source_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM dead_letters WHERE source_id = $1")
        .bind(source_id)
        .execute(pool)
        .await?;
    Ok(())
}

fn dead_letter_from_row(row: sqlx::postgres::PgRow) -> sqlx::Result<DeadLetter> {
    Ok(DeadLetter {
        source_id: row.try_get(0)?,
        event_message_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        reason: row.try_get(3)?,
        body: row.try_get(4)?,
        attempts: row.try_get(5)?,
        first_seen: row.try_get(6)?,
    })
}
