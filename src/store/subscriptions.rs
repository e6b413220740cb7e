//! Subscriptions, entitlement sets and usage, each with its version guard in SQL (§4).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, Row};

use super::resource_key;
use crate::events::{Entitlement, EntitlementSet, Subscription};

/// `subscription.*`. `true` when it changed the row. The same statement as a set-based
/// batch's, with one row.
pub async fn upsert_subscription(
    conn: &mut PgConnection,
    s: &Subscription,
    at: Option<DateTime<Utc>>,
    raw: &Value,
) -> sqlx::Result<bool> {
    let row = super::batch::SubscriptionRow {
        s,
        version: at,
        raw,
    };
    Ok(super::batch::write_subscriptions(conn, &[row]).await? == 1)
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

/// One `entitlements` row (without its key columns) as the JSON the inserts read.
pub(crate) fn entitlement_row(e: &Entitlement) -> Value {
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
