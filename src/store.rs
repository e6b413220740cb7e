//! PostgreSQL: one function per state change, each carrying the version guard of
//! STIGG-EVENTS §4 in its SQL (the same rules as [`crate::version`], which the tests hold
//! against each other). Every function runs on the caller's connection, inside the caller's
//! transaction; none commits.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool, Row};

use crate::access::{StoredAccess, StoredEntitlement, StoredUsage};
use crate::events::{Customer, EmbeddedCustomer, Entitlement, EntitlementSet, Subscription};

pub mod sync;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `''` stands for "no resource" (the customer-level set) in the keys.
pub fn resource_key(resource_id: Option<&str>) -> &str {
    resource_id.unwrap_or("")
}

/// Applies the migrations. Safe when several processes start at once: sqlx takes an
/// advisory lock around them.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

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

/// Whether an event about a customer known only through an embedded copy may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerGate {
    Live,
    /// Tombstoned at or after the event's time (§7.6), or the event has no time and the
    /// customer was deleted.
    Stale,
}

/// Makes sure the customer of a subscription / entitlement / usage event exists: creates a
/// placeholder from the embedded copy (§7.4), revives a tombstone for an event newer than the
/// deletion (§7.6), and never overwrites what a `customer.*` event wrote (§7.5). Takes a share
/// lock so that a concurrent deletion waits for this transaction.
pub async fn ensure_customer(
    conn: &mut PgConnection,
    c: &EmbeddedCustomer,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<CustomerGate> {
    let copy = serde_json::json!({ "name": c.name, "email": c.email, "billingId": c.billing_id });
    for _ in 0..3 {
        let row = sqlx::query(
            "SELECT is_deleted, deleted_at, embedded, embedded_at FROM customers
             WHERE customer_id = $1 FOR SHARE",
        )
        .bind(&c.id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            None => {
                let inserted = sqlx::query(
                    "INSERT INTO customers (customer_id, name, email, billing_id, embedded,
                         embedded_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id) DO NOTHING",
                )
                .bind(&c.id)
                .bind(&c.name)
                .bind(&c.email)
                .bind(&c.billing_id)
                .bind(&copy)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(CustomerGate::Live);
                }
                // lost a race with another writer: look again
            }
            Some(row) => {
                let is_deleted: bool = row.try_get(0)?;
                let deleted_at: Option<DateTime<Utc>> = row.try_get(1)?;
                if let Some(deleted_at) = deleted_at {
                    if at.is_none_or(|t| t <= deleted_at) {
                        return Ok(CustomerGate::Stale);
                    }
                }
                let sql = if is_deleted {
                    // newer than the deletion: revived as a placeholder (§7.6)
                    "UPDATE customers SET is_deleted = false, version = NULL, name = $2,
                         email = $3, billing_id = $4, metadata = NULL, raw = NULL,
                         embedded = $5, embedded_at = $6, updated_at = now()
                     WHERE customer_id = $1"
                } else if newer_copy(&row, &copy, at)? {
                    // a placeholder shows the newest copy; a customer.* row keeps its own
                    "UPDATE customers SET embedded = $5, embedded_at = $6,
                         name = CASE WHEN raw IS NULL THEN $2 ELSE name END,
                         email = CASE WHEN raw IS NULL THEN $3 ELSE email END,
                         billing_id = CASE WHEN raw IS NULL THEN $4 ELSE billing_id END
                     WHERE customer_id = $1"
                } else {
                    return Ok(CustomerGate::Live);
                };
                sqlx::query(sql)
                    .bind(&c.id)
                    .bind(&c.name)
                    .bind(&c.email)
                    .bind(&c.billing_id)
                    .bind(&copy)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                return Ok(CustomerGate::Live);
            }
        }
    }
    Err(sqlx::Error::Protocol(
        "customer row kept changing under ensure_customer".into(),
    ))
}

/// `customer.created` / `customer.updated`. `true` when it changed the row. A placeholder
/// (made from an embedded copy: no `raw`, no version) counts as never seen (§7.4).
pub async fn upsert_customer(
    conn: &mut PgConnection,
    c: &Customer,
    at: Option<DateTime<Utc>>,
    raw: &Value,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO customers (customer_id, name, email, billing_id, metadata, raw, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (customer_id) DO UPDATE SET
             name = EXCLUDED.name, email = EXCLUDED.email, billing_id = EXCLUDED.billing_id,
             metadata = EXCLUDED.metadata, raw = EXCLUDED.raw, version = EXCLUDED.version,
             is_deleted = false, updated_at = now()
         WHERE ($7::timestamptz IS NULL AND customers.raw IS NULL
                    AND customers.deleted_at IS NULL)
            OR ($7::timestamptz IS NOT NULL
                AND (customers.version IS NULL OR $7 > customers.version)
                AND (customers.deleted_at IS NULL OR $7 > customers.deleted_at))",
    )
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.email)
    .bind(&c.billing_id)
    .bind(&c.metadata)
    .bind(raw)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether an embedded copy must be recorded: none is yet, or this one is newer and differs.
/// An identical newer copy is not written, so that the stream of events about a customer does
/// not rewrite its row each time. The recorded time can therefore lag the content: of copies
/// A at 5, A at 9 and B at 7, arriving in that order, B is recorded, though A is newest. Real
/// streams repeat one copy until a `customer.*` event, whose fields always win.
fn newer_copy(
    row: &sqlx::postgres::PgRow,
    copy: &Value,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<bool> {
    let stored: Option<Value> = row.try_get(2)?;
    let stored_at: Option<DateTime<Utc>> = row.try_get(3)?;
    let Some(stored) = stored else {
        return Ok(true);
    };
    Ok(&stored != copy && crate::version::supersedes(Some(stored_at), at))
}

/// `customer.deleted`. The outcome does not depend on arrival order: state older than the
/// deletion goes, state newer than it stays. When nothing newer remains, the customer becomes
/// a tombstone (no personal data kept); when its own row or some of its state is newer (applied
/// before the deletion arrived), it lives on as it would had the events come in order, with
/// the deletion time remembered so older events stay stale (§7.6). A deletion without a time
/// applies only to a customer never seen and is dated 0001-01-01.
pub async fn delete_customer(
    conn: &mut PgConnection,
    id: &str,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "SELECT version, deleted_at, raw IS NULL FROM customers WHERE customer_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let t = match (row, at) {
        (None, _) => {
            let done = sqlx::query(
                "INSERT INTO customers (customer_id, version, is_deleted, deleted_at)
                 VALUES ($1, $2, true, COALESCE($2, '0001-01-01T00:00:00Z'::timestamptz))
                 ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(true);
            }
            // another transaction created the customer meanwhile: decide against its row
            return Box::pin(delete_customer(conn, id, at)).await;
        }
        (Some(row), None) => {
            let deleted_at: Option<DateTime<Utc>> = row.try_get(1)?;
            let placeholder: bool = row.try_get(2)?;
            if !(placeholder && deleted_at.is_none()) {
                return Ok(false);
            }
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
                .single()
                .expect("valid time")
        }
        (Some(row), Some(t)) => {
            let deleted_at: Option<DateTime<Utc>> = row.try_get(1)?;
            if deleted_at.is_some_and(|d| d >= t) {
                return Ok(false); // this deletion, or a later one, is already applied
            }
            let version: Option<DateTime<Utc>> = row.try_get(0)?;
            if version.is_some_and(|v| v > t) {
                // the customer was written after this deletion: it stays, older state goes
                drop_state_older_than(conn, id, t).await?;
                sqlx::query("UPDATE customers SET deleted_at = $2 WHERE customer_id = $1")
                    .bind(id)
                    .bind(t)
                    .execute(&mut *conn)
                    .await?;
                return Ok(true);
            }
            t
        }
    };
    let survivors = drop_state_older_than(conn, id, t).await?;
    let sql = if survivors {
        // newer state arrived first: in order, the deletion would have cleared the customer
        // and that state's event revived it as a placeholder from its embedded copy (§7.6),
        // which is the newest copy recorded (none only for state written before migration
        // 0002 recorded copies: then the fields stay)
        "UPDATE customers SET is_deleted = false, version = NULL, deleted_at = $2,
                name = CASE WHEN embedded IS NULL THEN name ELSE embedded->>'name' END,
                email = CASE WHEN embedded IS NULL THEN email ELSE embedded->>'email' END,
                billing_id = CASE WHEN embedded IS NULL THEN billing_id
                                  ELSE embedded->>'billingId' END,
                metadata = NULL, raw = NULL,
                updated_at = now()
         WHERE customer_id = $1"
    } else {
        "UPDATE customers SET is_deleted = true, deleted_at = $2, version = $2, name = NULL,
                email = NULL, billing_id = NULL, metadata = NULL, raw = NULL, embedded = NULL,
                embedded_at = NULL, updated_at = now()
         WHERE customer_id = $1"
    };
    sqlx::query(sql)
        .bind(id)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Drops the subscriptions, entitlement sets and usage of a customer that are not newer than
/// `t`; `true` when some newer state remains.
async fn drop_state_older_than(
    conn: &mut PgConnection,
    id: &str,
    t: DateTime<Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "WITH s AS (DELETE FROM subscriptions WHERE customer_id = $1
                      AND (version IS NULL OR version <= $2)),
              e AS (DELETE FROM entitlement_sets WHERE customer_id = $1
                      AND (version IS NULL OR version <= $2)),
              u AS (DELETE FROM usage WHERE customer_id = $1
                      AND (version IS NULL OR version <= $2))
         SELECT EXISTS (SELECT 1 FROM subscriptions WHERE customer_id = $1 AND version > $2)
             OR EXISTS (SELECT 1 FROM entitlement_sets WHERE customer_id = $1 AND version > $2)
             OR EXISTS (SELECT 1 FROM usage WHERE customer_id = $1 AND version > $2)",
    )
    .bind(id)
    .bind(t)
    .fetch_one(conn)
    .await
}

/// `subscription.*`. `true` when it changed the row.
pub async fn upsert_subscription(
    conn: &mut PgConnection,
    s: &Subscription,
    at: Option<DateTime<Utc>>,
    raw: &Value,
) -> sqlx::Result<bool> {
    let plan = s.plan.clone().unwrap_or_default();
    let done = sqlx::query(
        "INSERT INTO subscriptions (subscription_id, customer_id, status, plan_id, plan_name,
             billing_id, resource_id, billing_period, start_date, end_date, cancellation_date,
             trial_end_date, addons, metadata, raw, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (subscription_id) DO UPDATE SET
             customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
             plan_id = EXCLUDED.plan_id, plan_name = EXCLUDED.plan_name,
             billing_id = EXCLUDED.billing_id, resource_id = EXCLUDED.resource_id,
             billing_period = EXCLUDED.billing_period, start_date = EXCLUDED.start_date,
             end_date = EXCLUDED.end_date, cancellation_date = EXCLUDED.cancellation_date,
             trial_end_date = EXCLUDED.trial_end_date, addons = EXCLUDED.addons,
             metadata = EXCLUDED.metadata, raw = EXCLUDED.raw, version = EXCLUDED.version,
             updated_at = now()
         WHERE $16::timestamptz IS NOT NULL
           AND (subscriptions.version IS NULL OR $16 > subscriptions.version)",
    )
    .bind(&s.id)
    .bind(&s.customer.id)
    .bind(&s.status)
    .bind(&plan.id)
    .bind(&plan.name)
    .bind(&s.billing_id)
    .bind(s.resource.as_ref().map(|r| &r.id))
    .bind(&s.billing_period)
    .bind(s.start_date)
    .bind(s.end_date)
    .bind(s.cancellation_date)
    .bind(s.trial_end_date)
    .bind(s.addons.as_ref().map(|a| Value::Array(a.clone())))
    .bind(&s.metadata)
    .bind(raw)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `entitlements.updated`: replaces the whole set of (customer, resource) when newer.
pub async fn replace_entitlements(
    conn: &mut PgConnection,
    set: &EntitlementSet,
) -> sqlx::Result<bool> {
    let key = resource_key(set.resource_id.as_deref());
    let row = sqlx::query(
        "INSERT INTO entitlement_sets (customer_id, resource_key, version, entitlements)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id, resource_key) DO UPDATE SET
             version = EXCLUDED.version, entitlements = EXCLUDED.entitlements, updated_at = now()
         WHERE $3::timestamptz IS NOT NULL
           AND (entitlement_sets.version IS NULL OR $3 > entitlement_sets.version)
         RETURNING (xmax = 0) AS inserted",
    )
    .bind(&set.customer.id)
    .bind(key)
    .bind(set.version)
    .bind(&set.raw_entitlements)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let inserted: bool = row.try_get(0)?;
    if !inserted {
        sqlx::query("DELETE FROM entitlements WHERE customer_id = $1 AND resource_key = $2")
            .bind(&set.customer.id)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    if set.entitlements.is_empty() {
        return Ok(true);
    }
    let rows: Vec<Value> = set.entitlements.iter().map(entitlement_row).collect();
    sqlx::query(
        "INSERT INTO entitlements (customer_id, resource_key, feature_id, feature_type,
             meter_type, usage_limit, has_unlimited, has_soft_limit, period_anchor, period_start,
             period_end, reset_period, enum_values, credit_remaining)
         SELECT $1, $2, x.feature_id, x.feature_type, x.meter_type, x.usage_limit,
                x.has_unlimited, x.has_soft_limit, x.period_anchor, x.period_start,
                x.period_end, x.reset_period, x.enum_values, x.credit_remaining
         FROM jsonb_to_recordset($3) AS x(feature_id text, feature_type text, meter_type text,
             usage_limit float8, has_unlimited boolean, has_soft_limit boolean,
             period_anchor timestamptz, period_start timestamptz, period_end timestamptz,
             reset_period text, enum_values text[], credit_remaining float8)",
    )
    .bind(&set.customer.id)
    .bind(key)
    .bind(Value::Array(rows))
    .execute(conn)
    .await?;
    Ok(true)
}

fn entitlement_row(e: &Entitlement) -> Value {
    json!({
        "feature_id": e.feature.id,
        "feature_type": e.feature.feature_type.as_deref().unwrap_or("").to_ascii_uppercase(),
        "meter_type": e.feature.meter_type,
        "usage_limit": e.usage_limit,
        "has_unlimited": e.has_unlimited_usage.unwrap_or(false),
        "has_soft_limit": e.has_soft_limit.unwrap_or(false),
        "period_anchor": e.usage_period_anchor,
        "period_start": e.usage_period_start,
        "period_end": e.period_end(),
        "reset_period": e.reset_period,
        "enum_values": e.enum_values,
        "credit_remaining": e.credit_balance.as_ref().map(|c| c.remaining_balance.unwrap_or(0.0)),
    })
}

/// One usage report for (customer, resource or none, feature).
#[derive(Debug, Clone)]
pub struct UsageReport<'a> {
    pub feature_id: &'a str,
    pub current_usage: f64,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

/// Usage reports at one time: the newest time wins, a tie goes to the higher value (§7.10).
/// Returns how many rows changed.
pub async fn report_usage(
    conn: &mut PgConnection,
    customer_id: &str,
    resource_id: Option<&str>,
    at: Option<DateTime<Utc>>,
    reports: &[UsageReport<'_>],
) -> sqlx::Result<u64> {
    if reports.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({"feature_id": r.feature_id, "current_usage": r.current_usage,
                   "period_start": r.period_start, "period_end": r.period_end})
        })
        .collect();
    let done = sqlx::query(
        "INSERT INTO usage (customer_id, resource_key, feature_id, current_usage, version,
             period_start, period_end)
         SELECT $1, $2, x.feature_id, x.current_usage, $3, x.period_start, x.period_end
         FROM jsonb_to_recordset($4) AS x(feature_id text, current_usage float8,
             period_start timestamptz, period_end timestamptz)
         ON CONFLICT (customer_id, resource_key, feature_id) DO UPDATE SET
             current_usage = EXCLUDED.current_usage, version = EXCLUDED.version,
             period_start = COALESCE(EXCLUDED.period_start, usage.period_start),
             period_end = COALESCE(EXCLUDED.period_end, usage.period_end),
             updated_at = now()
         WHERE $3::timestamptz IS NOT NULL
           AND (usage.version IS NULL OR $3 > usage.version
                OR ($3 = usage.version AND EXCLUDED.current_usage > usage.current_usage))",
    )
    .bind(customer_id)
    .bind(resource_key(resource_id))
    .bind(at)
    .bind(Value::Array(rows))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Loads everything the access decision needs, in one round trip. The lookups only rule 2 or
/// rule 3 of §5 use are skipped (PostgreSQL evaluates CASE lazily) when the entitlement is
/// found or no resource was asked for: the hot path is three primary-key lookups.
pub async fn load_access(
    db: impl sqlx::PgExecutor<'_>,
    customer_id: &str,
    resource_id: Option<&str>,
    feature_id: &str,
) -> sqlx::Result<StoredAccess> {
    let row = sqlx::query(
        "SELECT
           CASE WHEN $2 = '' THEN false
                WHEN e.feature_type IS NOT NULL THEN true
                ELSE EXISTS (SELECT 1 FROM entitlement_sets s
                             WHERE s.customer_id = c.customer_id AND s.resource_key = $2)
           END AS set_exists,
           CASE WHEN e.feature_type IS NOT NULL THEN false
                ELSE EXISTS (SELECT 1 FROM subscriptions s WHERE s.customer_id = c.customer_id
                             AND s.status IN ('ACTIVE', 'IN_TRIAL'))
           END AS has_active,
           CASE WHEN e.feature_type IS NOT NULL THEN true
                ELSE EXISTS (SELECT 1 FROM entitlements a WHERE a.customer_id = c.customer_id)
           END AS has_any,
           e.feature_type, e.meter_type, e.usage_limit, e.has_unlimited, e.has_soft_limit,
           e.period_anchor, e.period_start, e.period_end, e.reset_period, e.enum_values,
           e.credit_remaining,
           u.current_usage, u.period_start AS u_start, u.period_end AS u_end
         FROM customers c
         LEFT JOIN entitlements e ON e.customer_id = c.customer_id AND e.resource_key = $2
                                 AND e.feature_id = $3
         LEFT JOIN usage u ON u.customer_id = c.customer_id AND u.resource_key = $2
                          AND u.feature_id = $3
         WHERE c.customer_id = $1 AND NOT c.is_deleted",
    )
    .bind(customer_id)
    .bind(resource_key(resource_id))
    .bind(feature_id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(StoredAccess::default());
    };
    let feature_type: Option<String> = row.try_get("feature_type")?;
    Ok(StoredAccess {
        customer_live: true,
        resource_set_exists: row.try_get("set_exists")?,
        has_active_subscription: row.try_get("has_active")?,
        has_any_entitlement: row.try_get("has_any")?,
        entitlement: feature_type
            .map(|t| entitlement_from_row(&row, t))
            .transpose()?,
        usage: usage_from_row(&row)?,
    })
}

/// The entitlement columns of a row (named as in `entitlements`), for the access decision.
pub fn entitlement_from_row(
    row: &sqlx::postgres::PgRow,
    feature_type: String,
) -> sqlx::Result<StoredEntitlement> {
    Ok(StoredEntitlement {
        feature_type,
        meter_type: row.try_get("meter_type")?,
        usage_limit: row.try_get("usage_limit")?,
        has_unlimited: row.try_get("has_unlimited")?,
        has_soft_limit: row.try_get("has_soft_limit")?,
        period_anchor: row.try_get("period_anchor")?,
        period_start: row.try_get("period_start")?,
        period_end: row.try_get("period_end")?,
        reset_period: row.try_get("reset_period")?,
        enum_values: row.try_get("enum_values")?,
        credit_remaining: row.try_get("credit_remaining")?,
    })
}

/// The usage columns of a row (`current_usage`, `u_start`, `u_end`); `None` without usage.
pub fn usage_from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Option<StoredUsage>> {
    let current_usage: Option<f64> = row.try_get("current_usage")?;
    current_usage
        .map(|current_usage| {
            Ok(StoredUsage {
                current_usage,
                period_start: row.try_get("u_start")?,
                period_end: row.try_get("u_end")?,
            })
        })
        .transpose()
}

/// A dead letter as listed by `dlq list`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub source_id: String,
    pub event_message_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    pub body: Vec<u8>,
    pub attempts: i32,
    pub first_seen: DateTime<Utc>,
}

/// Records (or re-records) a dead letter.
pub async fn record_dead_letter(
    pool: &PgPool,
    source_id: &str,
    event_message_id: Option<&str>,
    event_type: Option<&str>,
    reason: &str,
    body: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (source_id, event_message_id, event_type, reason, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source_id) DO UPDATE SET reason = EXCLUDED.reason,
             attempts = dead_letters.attempts + 1, last_seen = now()",
    )
    .bind(source_id)
    .bind(event_message_id)
    .bind(event_type)
    .bind(reason)
    .bind(body)
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
