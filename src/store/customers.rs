//! Customers and their tombstones: placeholders from embedded copies (§7.4, §7.5), upserts
//! by `customer.*`, and deletions that end as in-order processing would (§7.6).

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::Contention;
use crate::events::{Customer, EmbeddedCustomer};

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
/// deletion (§7.6), and never overwrites what a `customer.*` event wrote (§7.5). The caller
/// holds the customer's lock ([`super::lock_customers`]), as every writer of a customer does.
pub async fn ensure_customer(
    conn: &mut PgConnection,
    c: &EmbeddedCustomer,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<CustomerGate> {
    let copy = embedded_copy(c);
    for _ in 0..3 {
        let row = sqlx::query(
            "SELECT is_deleted, deleted_at, embedded, embedded_at FROM customers
             WHERE customer_id = $1",
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
    Err(Contention("the customer row kept changing under ensure_customer").into())
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

/// The embedded copy as it is recorded (`customers.embedded`).
pub fn embedded_copy(c: &EmbeddedCustomer) -> Value {
    serde_json::json!({ "name": c.name, "email": c.email, "billingId": c.billing_id })
}

/// Whether an embedded copy must be recorded: none is yet, or this one is newer and differs.
/// An identical newer copy is not written, so that the stream of events about a customer does
/// not rewrite its row each time. The recorded time can therefore lag the content: of copies
/// A at 5, A at 9 and B at 7, arriving in that order, B is recorded, though A is newest. Real
/// streams repeat one copy until a `customer.*` event, whose fields always win.
pub fn copy_is_newer(
    stored: Option<&Value>,
    stored_at: Option<DateTime<Utc>>,
    copy: &Value,
    at: Option<DateTime<Utc>>,
) -> bool {
    stored.is_none_or(|stored| stored != copy && crate::version::supersedes(Some(stored_at), at))
}

/// [`copy_is_newer`] against the row `ensure_customer` read (`embedded`, `embedded_at`).
fn newer_copy(
    row: &sqlx::postgres::PgRow,
    copy: &Value,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<bool> {
    let stored: Option<Value> = row.try_get(2)?;
    let stored_at: Option<DateTime<Utc>> = row.try_get(3)?;
    Ok(copy_is_newer(stored.as_ref(), stored_at, copy, at))
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
        "SELECT version, deleted_at, raw IS NULL FROM customers WHERE customer_id = $1",
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
