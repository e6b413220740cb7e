//! The statements of a set-based batch ([`crate::apply::batch`]): one per kind of state for
//! the whole batch. The reads return the rows a batch touches; the writes take the final rows
//! of the batch's fold, each row once. The writes of subscriptions, sets and usage keep the
//! version guard in SQL, so that a writer outside the customer lock could never be overwritten
//! by older state.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::apply::fold::{CustomerRow, UsageRow};
use crate::version::Stored;

/// One claim of the inbox.
pub struct Claim<'a> {
    pub key: &'a str,
    pub event_type: &'a str,
    pub customer_id: Option<&'a str>,
    pub outcome: &'static str,
    pub payload: Option<&'a Value>,
}

/// Claims every key at once (the keys are distinct); returns the keys that were new.
pub async fn claim_all(conn: &mut PgConnection, claims: &[Claim<'_>]) -> sqlx::Result<Vec<String>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = claims.iter().map(|c| c.key).collect();
    let types: Vec<&str> = claims.iter().map(|c| c.event_type).collect();
    let customers: Vec<Option<&str>> = claims.iter().map(|c| c.customer_id).collect();
    let outcomes: Vec<&str> = claims.iter().map(|c| c.outcome).collect();
    let payloads: Vec<Option<&Value>> = claims.iter().map(|c| c.payload).collect();
    sqlx::query_scalar(
        "INSERT INTO inbox (message_id, event_type, outcome, customer_id, payload)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id",
    )
    .bind(keys)
    .bind(types)
    .bind(outcomes)
    .bind(customers)
    .bind(payloads)
    .fetch_all(conn)
    .await
}

/// Records the claims whose event turned out stale.
pub async fn mark_stale(conn: &mut PgConnection, keys: &[&str]) -> sqlx::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE inbox SET outcome = 'stale' WHERE message_id = ANY($1)")
        .bind(keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// The customers rows of `ids` that exist.
pub async fn customers(
    conn: &mut PgConnection,
    ids: &[&str],
) -> sqlx::Result<HashMap<String, CustomerRow>> {
    let rows = sqlx::query(
        "SELECT customer_id, name, email, billing_id, metadata, raw, version, is_deleted,
                deleted_at, embedded, embedded_at
         FROM customers WHERE customer_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                CustomerRow {
                    name: r.try_get(1)?,
                    email: r.try_get(2)?,
                    billing_id: r.try_get(3)?,
                    metadata: r.try_get(4)?,
                    raw: r.try_get(5)?,
                    version: r.try_get(6)?,
                    is_deleted: r.try_get(7)?,
                    deleted_at: r.try_get(8)?,
                    embedded: r.try_get(9)?,
                    embedded_at: r.try_get(10)?,
                },
            ))
        })
        .collect()
}

/// Writes final customer rows (insert or overwrite).
pub async fn write_customers(
    conn: &mut PgConnection,
    rows: &[(&str, &CustomerRow)],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rows.iter().map(|(id, _)| *id).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|(_, r)| r.name.as_deref()).collect();
    let emails: Vec<Option<&str>> = rows.iter().map(|(_, r)| r.email.as_deref()).collect();
    let billing: Vec<Option<&str>> = rows.iter().map(|(_, r)| r.billing_id.as_deref()).collect();
    let metadata: Vec<Option<&Value>> = rows.iter().map(|(_, r)| r.metadata.as_ref()).collect();
    let raw: Vec<Option<&Value>> = rows.iter().map(|(_, r)| r.raw.as_ref()).collect();
    let versions: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, r)| r.version).collect();
    let deleted: Vec<bool> = rows.iter().map(|(_, r)| r.is_deleted).collect();
    let deleted_at: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, r)| r.deleted_at).collect();
    let embedded: Vec<Option<&Value>> = rows.iter().map(|(_, r)| r.embedded.as_ref()).collect();
    let embedded_at: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, r)| r.embedded_at).collect();
    sqlx::query(
        "INSERT INTO customers (customer_id, name, email, billing_id, metadata, raw, version,
             is_deleted, deleted_at, embedded, embedded_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
             $6::jsonb[], $7::timestamptz[], $8::bool[], $9::timestamptz[], $10::jsonb[],
             $11::timestamptz[])
         ON CONFLICT (customer_id) DO UPDATE SET
             name = EXCLUDED.name, email = EXCLUDED.email, billing_id = EXCLUDED.billing_id,
             metadata = EXCLUDED.metadata, raw = EXCLUDED.raw, version = EXCLUDED.version,
             is_deleted = EXCLUDED.is_deleted, deleted_at = EXCLUDED.deleted_at,
             embedded = EXCLUDED.embedded, embedded_at = EXCLUDED.embedded_at,
             updated_at = now()",
    )
    .bind(ids)
    .bind(names)
    .bind(emails)
    .bind(billing)
    .bind(metadata)
    .bind(raw)
    .bind(versions)
    .bind(deleted)
    .bind(deleted_at)
    .bind(embedded)
    .bind(embedded_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored versions of the subscriptions `ids` (absent: no row).
pub async fn subscription_versions(
    conn: &mut PgConnection,
    ids: &[&str],
) -> sqlx::Result<HashMap<String, Stored>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT subscription_id, version FROM subscriptions WHERE subscription_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get(0)?, Some(r.try_get(1)?))))
        .collect()
}

/// The final subscription of a batch, with its version ([`crate::apply::fold::as_stored`])
/// and its dates as sqlx binds them.
pub struct SubscriptionRow<'a> {
    pub s: &'a crate::events::Subscription,
    pub version: Option<DateTime<Utc>>,
    pub raw: &'a Value,
}

/// Upserts subscriptions newer than the stored ones; how many rows changed.
pub async fn write_subscriptions(
    conn: &mut PgConnection,
    rows: &[SubscriptionRow<'_>],
) -> sqlx::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    fn text<'r, 'a>(
        rows: &'r [SubscriptionRow<'a>],
        f: impl Fn(&'r SubscriptionRow<'a>) -> Option<&'r str>,
    ) -> Vec<Option<&'r str>> {
        rows.iter().map(f).collect()
    }
    fn time(
        rows: &[SubscriptionRow<'_>],
        f: impl Fn(&SubscriptionRow<'_>) -> Option<DateTime<Utc>>,
    ) -> Vec<Option<DateTime<Utc>>> {
        rows.iter().map(f).collect()
    }
    let addons: Vec<Option<Value>> = rows
        .iter()
        .map(|r| r.s.addons.as_ref().map(|a| Value::Array(a.clone())))
        .collect();
    let metadata: Vec<Option<&Value>> = rows.iter().map(|r| r.s.metadata.as_ref()).collect();
    let raw: Vec<&Value> = rows.iter().map(|r| r.raw).collect();
    let done = sqlx::query(
        "INSERT INTO subscriptions (subscription_id, customer_id, status, plan_id, plan_name,
             billing_id, resource_id, billing_period, start_date, end_date, cancellation_date,
             trial_end_date, addons, metadata, raw, version)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[],
             $11::timestamptz[], $12::timestamptz[], $13::jsonb[], $14::jsonb[], $15::jsonb[],
             $16::timestamptz[])
         ON CONFLICT (subscription_id) DO UPDATE SET
             customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
             plan_id = EXCLUDED.plan_id, plan_name = EXCLUDED.plan_name,
             billing_id = EXCLUDED.billing_id, resource_id = EXCLUDED.resource_id,
             billing_period = EXCLUDED.billing_period, start_date = EXCLUDED.start_date,
             end_date = EXCLUDED.end_date, cancellation_date = EXCLUDED.cancellation_date,
             trial_end_date = EXCLUDED.trial_end_date, addons = EXCLUDED.addons,
             metadata = EXCLUDED.metadata, raw = EXCLUDED.raw, version = EXCLUDED.version,
             updated_at = now()
         WHERE EXCLUDED.version IS NOT NULL
           AND (subscriptions.version IS NULL OR EXCLUDED.version > subscriptions.version)",
    )
    .bind(text(rows, |r| Some(r.s.id.as_str())))
    .bind(text(rows, |r| Some(r.s.customer.id.as_str())))
    .bind(text(rows, |r| r.s.status.as_deref()))
    .bind(text(rows, |r| {
        r.s.plan.as_ref().and_then(|p| p.id.as_deref())
    }))
    .bind(text(rows, |r| {
        r.s.plan.as_ref().and_then(|p| p.name.as_deref())
    }))
    .bind(text(rows, |r| r.s.billing_id.as_deref()))
    .bind(text(rows, |r| r.s.resource.as_ref().map(|x| x.id.as_str())))
    .bind(text(rows, |r| r.s.billing_period.as_deref()))
    .bind(time(rows, |r| r.s.start_date))
    .bind(time(rows, |r| r.s.end_date))
    .bind(time(rows, |r| r.s.cancellation_date))
    .bind(time(rows, |r| r.s.trial_end_date))
    .bind(addons)
    .bind(metadata)
    .bind(raw)
    .bind(time(rows, |r| r.version))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The stored versions of the entitlement sets `keys` (customer, resource key).
pub async fn set_versions(
    conn: &mut PgConnection,
    keys: &[(&str, &str)],
) -> sqlx::Result<HashMap<(String, String), Stored>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    // by the customers (the primary key's first column), so that the plan is an index scan
    // whatever the planner guesses of an array's length; the few other sets come along
    let mut customers: Vec<&str> = keys.iter().map(|k| k.0).collect();
    customers.dedup();
    let rows = sqlx::query(
        "SELECT customer_id, resource_key, version FROM entitlement_sets
         WHERE customer_id = ANY($1)",
    )
    .bind(customers)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), Some(r.try_get(2)?))))
        .collect()
}

/// The final set of one (customer, resource key) of a batch.
pub struct SetRow<'a> {
    pub customer_id: &'a str,
    pub resource_key: &'a str,
    pub version: Option<DateTime<Utc>>,
    pub entitlements: &'a Value,
    /// One JSON object per entitlement, as `entitlements` rows (without the key columns).
    pub rows: Vec<Value>,
}

/// Replaces final entitlement sets that are newer than the stored ones, with their rows.
pub async fn write_sets(conn: &mut PgConnection, sets: &[SetRow<'_>]) -> sqlx::Result<()> {
    if sets.is_empty() {
        return Ok(());
    }
    let customers: Vec<&str> = sets.iter().map(|s| s.customer_id).collect();
    let resources: Vec<&str> = sets.iter().map(|s| s.resource_key).collect();
    let versions: Vec<Option<DateTime<Utc>>> = sets.iter().map(|s| s.version).collect();
    let lists: Vec<&Value> = sets.iter().map(|s| s.entitlements).collect();
    let written = sqlx::query(
        "INSERT INTO entitlement_sets (customer_id, resource_key, version, entitlements)
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[])
         ON CONFLICT (customer_id, resource_key) DO UPDATE SET
             version = EXCLUDED.version, entitlements = EXCLUDED.entitlements, updated_at = now()
         WHERE EXCLUDED.version IS NOT NULL
           AND (entitlement_sets.version IS NULL OR EXCLUDED.version > entitlement_sets.version)
         RETURNING customer_id, resource_key",
    )
    .bind(customers)
    .bind(resources)
    .bind(versions)
    .bind(lists)
    .fetch_all(&mut *conn)
    .await?;
    let mut keys = (Vec::new(), Vec::new());
    for r in &written {
        keys.0.push(r.try_get::<&str, _>(0)?);
        keys.1.push(r.try_get::<&str, _>(1)?);
    }
    if keys.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM entitlements
         WHERE customer_id = ANY($1)
           AND (customer_id, resource_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&keys.0)
    .bind(&keys.1)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<Value> = sets
        .iter()
        .filter(|s| {
            keys.0
                .iter()
                .zip(&keys.1)
                .any(|(c, r)| *c == s.customer_id && *r == s.resource_key)
        })
        .flat_map(|s| {
            s.rows.iter().map(|row| {
                let mut row = row.clone();
                row["customer_id"] = Value::from(s.customer_id);
                row["resource_key"] = Value::from(s.resource_key);
                row
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO entitlements (customer_id, resource_key, feature_id, feature_type,
             meter_type, usage_limit, has_unlimited, has_soft_limit, period_anchor, period_start,
             period_end, reset_period, enum_values, credit_remaining)
         SELECT x.customer_id, x.resource_key, x.feature_id, x.feature_type, x.meter_type,
                x.usage_limit, x.has_unlimited, x.has_soft_limit, x.period_anchor,
                x.period_start, x.period_end, x.reset_period, x.enum_values, x.credit_remaining
         FROM jsonb_to_recordset($1) AS x(customer_id text, resource_key text, feature_id text,
             feature_type text, meter_type text, usage_limit float8, has_unlimited boolean,
             has_soft_limit boolean, period_anchor timestamptz, period_start timestamptz,
             period_end timestamptz, reset_period text, enum_values text[],
             credit_remaining float8)",
    )
    .bind(Value::Array(rows))
    .execute(conn)
    .await?;
    Ok(())
}

/// A usage key: customer, resource key, feature.
pub type UsageKey = (String, String, String);

/// The stored usage rows of `keys`.
pub async fn usage(
    conn: &mut PgConnection,
    keys: &[(&str, &str, &str)],
) -> sqlx::Result<HashMap<UsageKey, UsageRow>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    // by the customers, as for the sets: an index scan, and a customer has few usage rows
    let mut customers: Vec<&str> = keys.iter().map(|k| k.0).collect();
    customers.dedup();
    let rows = sqlx::query(
        "SELECT customer_id, resource_key, feature_id, version, current_usage, period_start,
                period_end
         FROM usage WHERE customer_id = ANY($1)",
    )
    .bind(customers)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
                UsageRow {
                    version: r.try_get(3)?,
                    current_usage: r.try_get(4)?,
                    period_start: r.try_get(5)?,
                    period_end: r.try_get(6)?,
                },
            ))
        })
        .collect()
}

/// Writes final usage rows. The periods go as JSON, as `store::report_usage` sends them, so
/// that PostgreSQL rounds them the same way on both paths.
pub async fn write_usage(
    conn: &mut PgConnection,
    rows: &[(&UsageKey, &UsageRow)],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let json: Vec<Value> = rows
        .iter()
        .map(|((c, r, f), u)| {
            serde_json::json!({"customer_id": c, "resource_key": r, "feature_id": f,
                "current_usage": u.current_usage, "version": u.version,
                "period_start": u.period_start, "period_end": u.period_end})
        })
        .collect();
    sqlx::query(
        "INSERT INTO usage (customer_id, resource_key, feature_id, current_usage, version,
             period_start, period_end)
         SELECT x.customer_id, x.resource_key, x.feature_id, x.current_usage, x.version,
                x.period_start, x.period_end
         FROM jsonb_to_recordset($1) AS x(customer_id text, resource_key text, feature_id text,
             current_usage float8, version timestamptz, period_start timestamptz,
             period_end timestamptz)
         ON CONFLICT (customer_id, resource_key, feature_id) DO UPDATE SET
             current_usage = EXCLUDED.current_usage, version = EXCLUDED.version,
             period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
             updated_at = now()
         WHERE EXCLUDED.version IS NOT NULL
           AND (usage.version IS NULL OR EXCLUDED.version > usage.version
                OR (EXCLUDED.version = usage.version
                    AND EXCLUDED.current_usage > usage.current_usage))",
    )
    .bind(Value::Array(json))
    .execute(conn)
    .await?;
    Ok(())
}
