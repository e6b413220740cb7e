//! The reads of the access decision: one round trip for what `/check-access` needs.

use sqlx::Row;

use super::resource_key;
use crate::access::{StoredAccess, StoredEntitlement, StoredUsage};

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
