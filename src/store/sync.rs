//! The SQL of `stigg-byos sync` (see [`crate::sync`]): its bookkeeping (`sync_runs`,
//! `sync_listed`, `sync_resources`) and the reads it needs to tell "unchanged" from "older than
//! the replica". State itself is written by the same functions as events, with the same
//! version guards (the parent module).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};

use super::CustomerGate;
use crate::events::EmbeddedCustomer;

/// One pass as recorded.
#[derive(Debug, Clone)]
pub struct Run {
    pub run_id: i64,
    pub started_at: DateTime<Utc>,
    pub phase: String,
    pub cursor: Option<String>,
    pub after: Option<(String, String)>,
    pub counts: Value,
    pub complete: bool,
    pub finished: bool,
}

fn run_from_row(row: sqlx::postgres::PgRow) -> sqlx::Result<Run> {
    let after_customer: Option<String> = row.try_get("after_customer")?;
    let after_resource: Option<String> = row.try_get("after_resource")?;
    let finished_at: Option<DateTime<Utc>> = row.try_get("finished_at")?;
    Ok(Run {
        run_id: row.try_get("run_id")?,
        started_at: row.try_get("started_at")?,
        phase: row.try_get("phase")?,
        cursor: row.try_get("cursor")?,
        after: after_customer.zip(after_resource),
        counts: row.try_get("counts")?,
        complete: row.try_get("complete")?,
        finished: finished_at.is_some(),
    })
}

const RUN_COLUMNS: &str = "run_id, started_at, phase, cursor, after_customer, after_resource, \
                           counts, complete, finished_at";

/// Starts a pass now.
pub async fn start_run(pool: &PgPool) -> sqlx::Result<Run> {
    let row = sqlx::query(&format!(
        "INSERT INTO sync_runs DEFAULT VALUES RETURNING {RUN_COLUMNS}"
    ))
    .fetch_one(pool)
    .await?;
    run_from_row(row)
}

/// The newest pass, complete or not.
pub async fn latest_run(pool: &PgPool) -> sqlx::Result<Option<Run>> {
    sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs ORDER BY run_id DESC LIMIT 1"
    ))
    .fetch_optional(pool)
    .await?
    .map(run_from_row)
    .transpose()
}

/// The newest complete pass: when it started and ended, and its counts.
pub async fn last_complete_run(
    pool: &PgPool,
) -> sqlx::Result<Option<(DateTime<Utc>, DateTime<Utc>, Value)>> {
    let row = sqlx::query(
        "SELECT started_at, finished_at, counts FROM sync_runs WHERE complete
         ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
}

/// Records how far the pass got, on the caller's transaction (so a page's writes and its
/// progress commit together).
pub async fn save_progress(
    conn: &mut PgConnection,
    run_id: i64,
    phase: &str,
    cursor: Option<&str>,
    after: Option<(&str, &str)>,
    counts: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sync_runs SET phase = $2, cursor = $3, after_customer = $4, after_resource = $5,
             counts = $6, finished_at = NULL, error = NULL
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(phase)
    .bind(cursor)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(counts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a pass: complete (its lists are then dropped, no later prune needs them), or stopped
/// early with why (kept, for `--resume`).
pub async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    counts: &Value,
    error: Option<&str>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE sync_runs SET finished_at = now(), complete = $2, error = $3, counts = $4,
             phase = CASE WHEN $2 THEN 'done' ELSE phase END
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(error.is_none())
    .bind(error)
    .bind(counts)
    .execute(&mut *tx)
    .await?;
    if error.is_none() {
        sqlx::query("DELETE FROM sync_listed WHERE run_id <= $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sync_resources WHERE run_id <= $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Remembers the customers a page listed, with the version Stigg gave each.
pub async fn add_listed(
    conn: &mut PgConnection,
    run_id: i64,
    ids: &[String],
    versions: &[Option<DateTime<Utc>>],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_listed (run_id, customer_id, updated_at)
         SELECT $1, x.id, x.v FROM unnest($2::text[], $3::timestamptz[]) AS x(id, v)
         ON CONFLICT (run_id, customer_id) DO UPDATE SET updated_at = EXCLUDED.updated_at",
    )
    .bind(run_id)
    .bind(ids)
    .bind(versions)
    .execute(conn)
    .await?;
    Ok(())
}

/// Remembers the (customer, resource) pairs a page of subscriptions named.
pub async fn add_resources(
    conn: &mut PgConnection,
    run_id: i64,
    customers: &[String],
    resources: &[String],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_resources (run_id, customer_id, resource_id)
         SELECT $1, x.c, x.r FROM unnest($2::text[], $3::text[]) AS x(c, r)
         ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(customers)
    .bind(resources)
    .execute(conn)
    .await?;
    Ok(())
}

/// One entitlement state to read: a customer's own set (`resource_key` `''`) or one of its
/// resources', with the version the listing gave the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub customer_id: String,
    pub resource_key: String,
    pub listed_at: Option<DateTime<Utc>>,
}

/// The next `limit` entitlement states to read, in key order, after `after`.
pub async fn work_items(
    pool: &PgPool,
    run_id: i64,
    after: Option<(&str, &str)>,
    limit: i64,
) -> sqlx::Result<Vec<WorkItem>> {
    let rows = sqlx::query(
        "WITH items AS (
             SELECT customer_id, '' AS resource_key FROM sync_listed WHERE run_id = $1
             UNION
             SELECT customer_id, resource_id FROM sync_resources WHERE run_id = $1)
         SELECT i.customer_id, i.resource_key, l.updated_at
         FROM items i
         LEFT JOIN sync_listed l ON l.run_id = $1 AND l.customer_id = i.customer_id
         WHERE $2::text IS NULL OR (i.customer_id, i.resource_key) > ($2, $3)
         ORDER BY i.customer_id, i.resource_key
         LIMIT $4",
    )
    .bind(run_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(WorkItem {
                customer_id: r.try_get(0)?,
                resource_key: r.try_get(1)?,
                listed_at: r.try_get(2)?,
            })
        })
        .collect()
}

/// How many customers' own entitlement states the pass reads in all, and how many of them
/// are at or before `after` (done).
pub async fn customer_progress(
    pool: &PgPool,
    run_id: i64,
    after: Option<&str>,
) -> sqlx::Result<(u64, u64)> {
    let (total, done): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE customer_id <= $2)
         FROM sync_listed WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(after)
    .fetch_one(pool)
    .await?;
    Ok((total as u64, done as u64))
}

/// Live customers of the replica that the pass did not list and whose stored version (for a
/// placeholder: its newest embedded copy, else when the row was made) is older than the
/// pass's start; and how many live customers the replica has.
pub async fn prune_candidates(
    pool: &PgPool,
    run_id: i64,
    started_at: DateTime<Utc>,
) -> sqlx::Result<(Vec<String>, u64)> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT c.customer_id FROM customers c
         WHERE NOT c.is_deleted
           AND NOT EXISTS (SELECT 1 FROM sync_listed l
                           WHERE l.run_id = $1 AND l.customer_id = c.customer_id)
           AND COALESCE(GREATEST(c.version, c.embedded_at), c.created_at) < $2
         ORDER BY c.customer_id",
    )
    .bind(run_id)
    .bind(started_at)
    .fetch_all(pool)
    .await?;
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM customers WHERE NOT is_deleted")
        .fetch_one(pool)
        .await?;
    Ok((ids, live as u64))
}

/// The customer fields a listing carries, as stored, and whether the row is a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCustomer {
    pub version: Option<DateTime<Utc>>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub billing_id: Option<String>,
    pub is_deleted: bool,
}

pub async fn stored_customer(
    conn: &mut PgConnection,
    id: &str,
) -> sqlx::Result<Option<StoredCustomer>> {
    let row = sqlx::query(
        "SELECT version, name, email, billing_id, is_deleted FROM customers
         WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(StoredCustomer {
            version: r.try_get(0)?,
            name: r.try_get(1)?,
            email: r.try_get(2)?,
            billing_id: r.try_get(3)?,
            is_deleted: r.try_get(4)?,
        })
    })
    .transpose()
}

/// The subscription fields a listing carries, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSubscription {
    pub customer_id: String,
    pub status: Option<String>,
    pub plan_id: Option<String>,
    pub plan_name: Option<String>,
    pub billing_id: Option<String>,
    pub resource_id: Option<String>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub cancellation_date: Option<DateTime<Utc>>,
    pub trial_end_date: Option<DateTime<Utc>>,
}

pub async fn stored_subscription(
    conn: &mut PgConnection,
    id: &str,
) -> sqlx::Result<Option<StoredSubscription>> {
    let row = sqlx::query(
        "SELECT customer_id, status, plan_id, plan_name, billing_id, resource_id, start_date,
             end_date, cancellation_date, trial_end_date
         FROM subscriptions WHERE subscription_id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(StoredSubscription {
            customer_id: r.try_get(0)?,
            status: r.try_get(1)?,
            plan_id: r.try_get(2)?,
            plan_name: r.try_get(3)?,
            billing_id: r.try_get(4)?,
            resource_id: r.try_get(5)?,
            start_date: r.try_get(6)?,
            end_date: r.try_get(7)?,
            cancellation_date: r.try_get(8)?,
            trial_end_date: r.try_get(9)?,
        })
    })
    .transpose()
}

/// A stored entitlement set: its version and the list as written.
pub async fn stored_set(
    conn: &mut PgConnection,
    customer_id: &str,
    resource_key: &str,
) -> sqlx::Result<Option<(Option<DateTime<Utc>>, Value)>> {
    let row = sqlx::query(
        "SELECT version, entitlements FROM entitlement_sets
         WHERE customer_id = $1 AND resource_key = $2",
    )
    .bind(customer_id)
    .bind(resource_key)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// The usage rows of (customer, resource): version and value by feature.
pub async fn stored_usage(
    conn: &mut PgConnection,
    customer_id: &str,
    resource_key: &str,
) -> sqlx::Result<std::collections::HashMap<String, (Option<DateTime<Utc>>, f64)>> {
    let rows = sqlx::query(
        "SELECT feature_id, version, current_usage FROM usage
         WHERE customer_id = $1 AND resource_key = $2",
    )
    .bind(customer_id)
    .bind(resource_key)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
        .collect()
}

/// The gate of snapshot state about a customer, as events have it: a live customer lets
/// state at `at` through unless it was deleted at or after `at` (§7.6); an unknown or deleted
/// one goes through [`super::ensure_customer`] (placeholder, revival). Unlike an event, a
/// snapshot carries no embedded copy, so a live customer's recorded copy is left alone.
/// Returns the gate and the deletion time the customer keeps.
pub async fn customer_gate(
    conn: &mut PgConnection,
    id: &str,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<(CustomerGate, Option<DateTime<Utc>>)> {
    let row = sqlx::query("SELECT is_deleted, deleted_at FROM customers WHERE customer_id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let (is_deleted, deleted_at): (bool, Option<DateTime<Utc>>) = match &row {
        Some(r) => (r.try_get(0)?, r.try_get(1)?),
        None => (true, None),
    };
    if !is_deleted {
        let stale = deleted_at.is_some_and(|d| at.is_none_or(|t| t <= d));
        let gate = if stale {
            CustomerGate::Stale
        } else {
            CustomerGate::Live
        };
        return Ok((gate, deleted_at));
    }
    let bare = EmbeddedCustomer {
        id: id.to_owned(),
        name: None,
        email: None,
        billing_id: None,
    };
    let gate = super::ensure_customer(conn, &bare, at).await?;
    Ok((gate, deleted_at))
}
