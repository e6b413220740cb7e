//! The reads of the access decision: one round trip for what `/check-access` needs.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use super::resource_key;
use crate::access::snapshot::Feature;
use crate::access::{CustomerAccess, StoredAccess, StoredEntitlement, StoredUsage};

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

/// Loads a customer's whole access data ([`CustomerAccess`]) in one statement, so from one
/// snapshot: `None` when the customer is unknown or deleted. What the access cache keeps.
pub async fn load_customer_access(
    db: impl sqlx::PgExecutor<'_>,
    customer_id: &str,
) -> sqlx::Result<Option<CustomerAccess>> {
    // one row for the customer, one per entitlement set, entitlement and usage row; the
    // first branch types the columns the others fill with NULL
    let rows = sqlx::query(
        "SELECT 'c' AS kind, '' AS resource_key, '' AS feature_id,
           EXISTS (SELECT 1 FROM subscriptions s WHERE s.customer_id = c.customer_id
                   AND s.status IN ('ACTIVE', 'IN_TRIAL')) AS has_active,
           NULL::text AS feature_type, NULL::text AS meter_type, NULL::float8 AS usage_limit,
           NULL::boolean AS has_unlimited, NULL::boolean AS has_soft_limit,
           NULL::timestamptz AS period_anchor, NULL::timestamptz AS period_start,
           NULL::timestamptz AS period_end, NULL::text AS reset_period,
           NULL::text[] AS enum_values, NULL::float8 AS credit_remaining,
           NULL::float8 AS current_usage, NULL::timestamptz AS u_start,
           NULL::timestamptz AS u_end
         FROM customers c WHERE c.customer_id = $1 AND NOT c.is_deleted
         UNION ALL
         SELECT 's', s.resource_key, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL
         FROM entitlement_sets s WHERE s.customer_id = $1
         UNION ALL
         SELECT 'e', e.resource_key, e.feature_id, NULL, e.feature_type, e.meter_type,
           e.usage_limit, e.has_unlimited, e.has_soft_limit, e.period_anchor, e.period_start,
           e.period_end, e.reset_period, e.enum_values, e.credit_remaining, NULL, NULL, NULL
         FROM entitlements e WHERE e.customer_id = $1
         UNION ALL
         SELECT 'u', u.resource_key, u.feature_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, u.current_usage, u.period_start, u.period_end
         FROM usage u WHERE u.customer_id = $1",
    )
    .bind(customer_id)
    .fetch_all(db)
    .await?;
    let mut live = None;
    let mut sets = BTreeSet::new();
    let mut features: BTreeMap<(Box<str>, Box<str>), Feature> = BTreeMap::new();
    for row in &rows {
        let kind: &str = row.try_get("kind")?;
        let resource: &str = row.try_get("resource_key")?;
        let key = || -> sqlx::Result<(Box<str>, Box<str>)> {
            Ok((
                resource.into(),
                row.try_get::<&str, _>("feature_id")?.into(),
            ))
        };
        match kind {
            "c" => live = Some(row.try_get::<bool, _>("has_active")?),
            "s" => {
                sets.insert(resource.into());
            }
            "e" => {
                let feature_type: String = row.try_get("feature_type")?;
                features.entry(key()?).or_default().entitlement =
                    Some(entitlement_from_row(row, feature_type)?);
            }
            _ => features.entry(key()?).or_default().usage = usage_from_row(row)?,
        }
    }
    Ok(live.map(|has_active| CustomerAccess::new(has_active, sets, features)))
}

/// The channel on which every writer of a customer announces, at its commit, that the
/// customer's data changed; every serving process listens ([`crate::cache`]).
pub const CHANGES_CHANNEL: &str = "stigg_byos_customer_changed";

/// Announces that the transaction changes these customers: one notification per customer
/// (duplicates dropped), delivered by PostgreSQL at the commit, in commit order, and never
/// if the transaction rolls back. Its payload is `<unix µs now>:<customer id>`, so that a
/// listener can tell how long the notification took. Every writer of a customer calls this
/// last, just before its commit.
pub async fn notify_changed<'a>(
    conn: &mut sqlx::PgConnection,
    customer_ids: impl IntoIterator<Item = &'a str>,
) -> sqlx::Result<()> {
    let ids = super::distinct_ids(customer_ids);
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_notify($1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint || ':' || id)
         FROM unnest($2::text[]) AS id",
    )
    .bind(CHANGES_CHANNEL)
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Splits a [`notify_changed`] payload into its send time (unix µs) and customer id.
pub fn parse_change(payload: &str) -> Option<(i64, &str)> {
    let (micros, id) = payload.split_once(':')?;
    Some((micros.parse().ok()?, id))
}
