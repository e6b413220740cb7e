//! Batching: what many nodes of one response ask for is loaded in one query per kind, so a
//! page of customers with their subscriptions (and each subscription's customer) costs a
//! bounded number of round trips, not one per node. The loaders live for one request and
//! cache within it, so a request may be served what it already loaded, never what another
//! request loaded.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use async_graphql::Context;
use serde_json::{Map, Value};
use sqlx::{PgPool, Row};

use super::customers::Customer;
use super::entitlements::{merge_usage, StoredRow};
use super::error::Internal;
use super::page::{fetch_children, Page, Spec};
use super::subscriptions::Subscription;
use crate::reads::ReadPool;
use crate::store;

type Cached<L> = OnceLock<DataLoader<L, HashMapCache>>;

/// What one request reads the replica through: its loaders (each made on first use, and
/// caching for this request only), and the pools for the queries no loader batches.
pub struct Loaders {
    pub pool: PgPool,
    /// For the single-row lookups ([`crate::reads`]).
    pub reads: Arc<ReadPool>,
    customers: Cached<CustomerLoader>,
    subscription_pages: Cached<SubscriptionPageLoader>,
    entitlement_json: Cached<EntitlementJsonLoader>,
    entitlement_lists: Cached<EntitlementListLoader>,
}

impl Loaders {
    pub fn new(pool: PgPool, reads: Arc<ReadPool>) -> Self {
        Loaders {
            pool,
            reads,
            customers: OnceLock::new(),
            subscription_pages: OnceLock::new(),
            entitlement_json: OnceLock::new(),
            entitlement_lists: OnceLock::new(),
        }
    }

    pub fn of<'a>(ctx: &Context<'a>) -> &'a Loaders {
        ctx.data_unchecked::<Loaders>()
    }

    pub fn customers(&self) -> &DataLoader<CustomerLoader, HashMapCache> {
        self.customers.get_or_init(|| {
            DataLoader::with_cache(
                CustomerLoader(self.pool.clone()),
                tokio::spawn,
                HashMapCache::default(),
            )
        })
    }

    pub fn subscription_pages(&self) -> &DataLoader<SubscriptionPageLoader, HashMapCache> {
        self.subscription_pages.get_or_init(|| {
            DataLoader::with_cache(
                SubscriptionPageLoader(self.pool.clone()),
                tokio::spawn,
                HashMapCache::default(),
            )
        })
    }

    pub fn entitlement_json(&self) -> &DataLoader<EntitlementJsonLoader, HashMapCache> {
        self.entitlement_json.get_or_init(|| {
            DataLoader::with_cache(
                EntitlementJsonLoader(self.pool.clone()),
                tokio::spawn,
                HashMapCache::default(),
            )
        })
    }

    pub fn entitlement_lists(&self) -> &DataLoader<EntitlementListLoader, HashMapCache> {
        self.entitlement_lists.get_or_init(|| {
            DataLoader::with_cache(
                EntitlementListLoader(self.pool.clone()),
                tokio::spawn,
                HashMapCache::default(),
            )
        })
    }
}

/// Live customers by id (`Subscription.customer`).
pub struct CustomerLoader(PgPool);

impl Loader<String> for CustomerLoader {
    type Value = Customer;
    type Error = Internal;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Customer>, Internal> {
        const SQL: &str = "SELECT t.customer_id, t.name, t.email, t.billing_id, t.created_at,
                t.updated_at
             FROM customers t WHERE t.customer_id = ANY($1) AND NOT t.is_deleted";
        let rows: Vec<Customer> = sqlx::query_as(SQL).bind(keys).fetch_all(&self.0).await?;
        Ok(rows
            .into_iter()
            .map(|c| (c.customer_id.clone(), c))
            .collect())
    }
}

/// A page of a customer's subscriptions; the customers asking for the same page (same
/// arguments) are served by one query.
pub struct SubscriptionPageLoader(PgPool);

pub type PageKey = (String, Arc<Spec>);

impl Loader<PageKey> for SubscriptionPageLoader {
    type Value = Arc<Page<Subscription>>;
    type Error = Internal;

    async fn load(&self, keys: &[PageKey]) -> Result<HashMap<PageKey, Self::Value>, Internal> {
        let mut by_spec: HashMap<&Arc<Spec>, Vec<String>> = HashMap::new();
        for (customer, spec) in keys {
            by_spec.entry(spec).or_default().push(customer.clone());
        }
        let mut out = HashMap::with_capacity(keys.len());
        for (spec, customers) in by_spec {
            let pages =
                fetch_children::<Subscription>(&self.0, "customer_id", &customers, spec).await?;
            for (customer, page) in pages {
                out.insert((customer, spec.clone()), Arc::new(page));
            }
        }
        Ok(out)
    }
}

/// `Customer.entitlements`: the customer-level list with current usage merged in.
pub struct EntitlementJsonLoader(PgPool);

impl Loader<String> for EntitlementJsonLoader {
    type Value = Value;
    type Error = Internal;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Value>, Internal> {
        const SQL: &str = "SELECT s.customer_id, s.entitlements,
                (SELECT jsonb_object_agg(u.feature_id, u.current_usage) FROM usage u
                 WHERE u.customer_id = s.customer_id AND u.resource_key = '') AS usage
             FROM entitlement_sets s
             WHERE s.customer_id = ANY($1) AND s.resource_key = ''";
        let rows = sqlx::query(SQL).bind(keys).fetch_all(&self.0).await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let usage: Option<Value> = row.try_get(2)?;
            let usage = match usage {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            out.insert(row.try_get(0)?, merge_usage(row.try_get(1)?, &usage));
        }
        Ok(out)
    }
}

/// `Customer.entitlementList`: the typed entitlements of (customer, resource key).
pub struct EntitlementListLoader(PgPool);

impl Loader<(String, String)> for EntitlementListLoader {
    type Value = Arc<Vec<StoredRow>>;
    type Error = Internal;

    async fn load(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), Self::Value>, Internal> {
        const SQL: &str = "SELECT e.customer_id, e.resource_key, e.feature_id, e.feature_type,
                e.meter_type, e.usage_limit, e.has_unlimited, e.has_soft_limit, e.period_anchor,
                e.period_start, e.period_end, e.reset_period, e.enum_values, e.credit_remaining,
                u.current_usage, u.period_start AS u_start, u.period_end AS u_end
             FROM unnest($1::text[], $2::text[]) AS k(customer_id, resource_key)
             JOIN entitlements e ON e.customer_id = k.customer_id
                                AND e.resource_key = k.resource_key
             LEFT JOIN usage u ON u.customer_id = e.customer_id
                              AND u.resource_key = e.resource_key
                              AND u.feature_id = e.feature_id
             ORDER BY e.feature_id";
        let (customers, resources): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
        let rows = sqlx::query(SQL)
            .bind(customers)
            .bind(resources)
            .fetch_all(&self.0)
            .await?;
        let mut out: HashMap<(String, String), Vec<StoredRow>> = HashMap::new();
        for row in rows {
            let stored = StoredRow {
                feature_id: row.try_get("feature_id")?,
                resource_key: row.try_get("resource_key")?,
                entitlement: store::entitlement_from_row(&row, row.try_get("feature_type")?)?,
                usage: store::usage_from_row(&row)?,
            };
            let customer: String = row.try_get("customer_id")?;
            out.entry((customer, stored.resource_key.clone()))
                .or_default()
                .push(stored);
        }
        Ok(out.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}
