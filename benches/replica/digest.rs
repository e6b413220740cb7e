//! What a run left in its database: the digest compared between runs of the same events, and
//! the inbox's outcomes.

use anyhow::Result;
use sqlx::PgPool;

/// A digest of the replicated state, to compare runs of the same events.
pub(super) async fn fingerprint(pool: &PgPool) -> Result<String> {
    let digest: String = sqlx::query_scalar(
        "SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
           SELECT 'u:' || customer_id || '/' || resource_key || '/' || feature_id || '='
                  || current_usage::text || '@' || coalesce(version::text, '') AS x FROM usage
           UNION ALL
           SELECT 'e:' || customer_id || '/' || resource_key || '@' || coalesce(version::text, '')
                  || ':' || (SELECT count(*) FROM entitlements e WHERE e.customer_id = s.customer_id
                                AND e.resource_key = s.resource_key)::text
           FROM entitlement_sets s
           UNION ALL
           SELECT 's:' || subscription_id || '=' || coalesce(status, '') || '@'
                  || coalesce(version::text, '') FROM subscriptions
           UNION ALL
           SELECT 'c:' || customer_id || '=' || coalesce(name, '') || '/' || is_deleted::text
                  || '@' || coalesce(version::text, '') FROM customers
         ) t",
    )
    .fetch_one(pool)
    .await?;
    Ok(digest)
}

/// Messages in the inbox by outcome, and the dead letters.
pub(super) async fn inbox_summary(pool: &PgPool) -> Result<String> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM inbox GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await?;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await?;
    let mut parts: Vec<String> = rows.iter().map(|(o, n)| format!("{o} {n}")).collect();
    parts.push(format!("dead letters {dead}"));
    Ok(parts.join(", "))
}
