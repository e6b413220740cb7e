//! The rows the API shows and the SQL that reads them, in one place: each row type's one
//! select list (written once, as a macro so that it goes into the queries' text at compile
//! time), what makes a row visible, the single-row lookups, and the loaders.
//!
//! Batching: what many nodes of one response ask for is loaded in one query per kind, so a
//! page of customers with their subscriptions (and each subscription's customer) costs a
//! bounded number of round trips, not one per node. The loaders live for one request and
//! cache within it, so a request may be served what it already loaded, never what another
//! request loaded.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use async_graphql::Context;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row};

use super::entitlements::{merge_usage, StoredRow};
use super::error::Internal;
use super::page::{fetch_children, Column, Node, Page, Spec, Table, Value};
use crate::cache::AccessCache;
use crate::reads::{Read, ReadPool};
use crate::store;

// ---- the rows ----------------------------------------------------------------------------

/// The select list of a customer, read through the alias `t`; [`Customer::at`] reads it by
/// position.
macro_rules! customer_columns {
    () => {
        "t.customer_id, t.name, t.email, t.billing_id, t.created_at, t.updated_at"
    };
}

/// What makes a customer visible: it is not a tombstone.
macro_rules! customer_visible {
    () => {
        "NOT t.is_deleted"
    };
}

/// The select list of a subscription, read through the alias `t`; [`Subscription::at`]
/// reads it by position.
macro_rules! subscription_columns {
    () => {
        "t.subscription_id, t.customer_id, t.status, t.plan_id, t.plan_name, t.billing_id, \
         t.resource_id, t.billing_period, t.start_date, t.end_date, t.cancellation_date, \
         t.trial_end_date, t.created_at, t.updated_at"
    };
}

/// What makes a subscription visible: its customer is not a tombstone (none should be).
macro_rules! subscription_visible {
    () => {
        "EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = t.customer_id \
         AND NOT c.is_deleted)"
    };
}

pub static CUSTOMERS: Table = Table {
    name: "customers",
    select: customer_columns!(),
    visible: customer_visible!(),
};

pub static SUBSCRIPTIONS: Table = Table {
    name: "subscriptions",
    select: subscription_columns!(),
    visible: subscription_visible!(),
};

#[derive(Debug, Clone, FromRow)]
pub struct Customer {
    pub customer_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub billing_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The first page of `subscriptions` with no arguments, when loaded with the customer.
    #[sqlx(skip)]
    pub subscriptions: Option<Arc<Page<Subscription>>>,
}

impl Customer {
    /// How many columns `customer_columns!` selects.
    const COLUMNS: usize = 6;

    /// Reads the `customer_columns!` starting at position `base`.
    fn at(row: &PgRow, base: usize) -> sqlx::Result<Customer> {
        Ok(Customer {
            customer_id: row.try_get(base)?,
            name: row.try_get(base + 1)?,
            email: row.try_get(base + 2)?,
            billing_id: row.try_get(base + 3)?,
            created_at: row.try_get(base + 4)?,
            updated_at: row.try_get(base + 5)?,
            subscriptions: None,
        })
    }
}

impl Node for Customer {
    const TABLE: &'static Table = &CUSTOMERS;

    fn value(&self, col: &Column) -> Value {
        match col.sql {
            "customer_id" => Value::Text(Some(self.customer_id.clone())),
            "name" => Value::Text(self.name.clone()),
            "email" => Value::Text(self.email.clone()),
            "billing_id" => Value::Text(self.billing_id.clone()),
            "created_at" => Value::Time(Some(self.created_at)),
            _ => Value::Time(Some(self.updated_at)),
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct Subscription {
    pub subscription_id: String,
    pub customer_id: String,
    pub status: Option<String>,
    pub plan_id: Option<String>,
    pub plan_name: Option<String>,
    pub billing_id: Option<String>,
    pub resource_id: Option<String>,
    pub billing_period: Option<String>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub cancellation_date: Option<DateTime<Utc>>,
    pub trial_end_date: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// Reads the `subscription_columns!` starting at position `base`; `None` when they
    /// are NULL (the empty side of a LEFT JOIN).
    fn at(row: &PgRow, base: usize) -> sqlx::Result<Option<Subscription>> {
        let Some(subscription_id) = row.try_get::<Option<String>, _>(base)? else {
            return Ok(None);
        };
        Ok(Some(Subscription {
            subscription_id,
            customer_id: row.try_get(base + 1)?,
            status: row.try_get(base + 2)?,
            plan_id: row.try_get(base + 3)?,
            plan_name: row.try_get(base + 4)?,
            billing_id: row.try_get(base + 5)?,
            resource_id: row.try_get(base + 6)?,
            billing_period: row.try_get(base + 7)?,
            start_date: row.try_get(base + 8)?,
            end_date: row.try_get(base + 9)?,
            cancellation_date: row.try_get(base + 10)?,
            trial_end_date: row.try_get(base + 11)?,
            created_at: row.try_get(base + 12)?,
            updated_at: row.try_get(base + 13)?,
        }))
    }
}

impl Node for Subscription {
    const TABLE: &'static Table = &SUBSCRIPTIONS;

    fn value(&self, col: &Column) -> Value {
        let t = |s: &Option<String>| Value::Text(s.clone());
        match col.sql {
            "subscription_id" => Value::Text(Some(self.subscription_id.clone())),
            "customer_id" => Value::Text(Some(self.customer_id.clone())),
            "status" => t(&self.status),
            "plan_id" => t(&self.plan_id),
            "plan_name" => t(&self.plan_name),
            "billing_id" => t(&self.billing_id),
            "resource_id" => t(&self.resource_id),
            "billing_period" => t(&self.billing_period),
            "start_date" => Value::Time(self.start_date),
            "end_date" => Value::Time(self.end_date),
            "cancellation_date" => Value::Time(self.cancellation_date),
            "trial_end_date" => Value::Time(self.trial_end_date),
            "created_at" => Value::Time(Some(self.created_at)),
            _ => Value::Time(Some(self.updated_at)),
        }
    }
}

// ---- single rows, by id -------------------------------------------------------------------

/// A live customer by id with the first page of its subscriptions, in one round trip (the
/// hot path of `customer(customerId) { … subscriptions { nodes { … } } }`).
pub async fn customer_with_subscriptions(
    reads: &ReadPool,
    id: &str,
) -> Result<Option<Customer>, Internal> {
    // MAX_PAGE + 1 rows, as a page without `first` or `last` is fetched
    const SQL: &str = concat!(
        "SELECT ",
        customer_columns!(),
        ", s.* FROM customers t LEFT JOIN LATERAL (SELECT ",
        subscription_columns!(),
        " FROM subscriptions t WHERE t.customer_id = $1 \
         ORDER BY t.subscription_id LIMIT 1001) s ON TRUE \
         WHERE t.customer_id = $1 AND ",
        customer_visible!()
    );
    let read: Read<str, _> = |conn, id| Box::pin(sqlx::query(SQL).bind(id).fetch_all(conn));
    let rows = reads.run(id, read).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    // by position: the subscription columns repeat some of the customer's names
    let mut customer = Customer::at(first, 0)?;
    let subs = rows
        .iter()
        .filter_map(|r| Subscription::at(r, Customer::COLUMNS).transpose())
        .collect::<sqlx::Result<Vec<_>>>()?;
    customer.subscriptions = Some(Arc::new(Page::from_preloaded(subs)));
    Ok(Some(customer))
}

/// A visible subscription by id.
pub async fn subscription(reads: &ReadPool, id: &str) -> Result<Option<Subscription>, Internal> {
    const SQL: &str = concat!(
        "SELECT ",
        subscription_columns!(),
        " FROM subscriptions t WHERE t.subscription_id = $1 AND ",
        subscription_visible!()
    );
    let read: Read<str, _> = |conn, id| Box::pin(sqlx::query_as(SQL).bind(id).fetch_optional(conn));
    Ok(reads.run(id, read).await?)
}

// ---- the loaders ---------------------------------------------------------------------------

type Cached<L> = OnceLock<Batch<L>>;

/// What one request reads the replica through: its loaders (each made on first use, and
/// caching for this request only), and the pools for the queries no loader batches.
pub struct Loaders {
    pub pool: PgPool,
    /// For the single-row lookups ([`crate::reads`]).
    pub reads: Arc<ReadPool>,
    /// Customers' access data in memory ([`crate::cache`]).
    pub access: Arc<AccessCache>,
    customers: Cached<CustomerLoader>,
    subscription_pages: Cached<SubscriptionPageLoader>,
    entitlement_json: Cached<EntitlementJsonLoader>,
    entitlement_lists: Cached<EntitlementListLoader>,
}

impl Loaders {
    pub fn new(pool: PgPool, reads: Arc<ReadPool>, access: Arc<AccessCache>) -> Self {
        Loaders {
            pool,
            reads,
            access,
            customers: OnceLock::new(),
            subscription_pages: OnceLock::new(),
            entitlement_json: OnceLock::new(),
            entitlement_lists: OnceLock::new(),
        }
    }

    pub fn of<'a>(ctx: &Context<'a>) -> &'a Loaders {
        ctx.data_unchecked::<Loaders>()
    }

    pub fn customers(&self) -> &Batch<CustomerLoader> {
        batch(&self.customers, || CustomerLoader(self.pool.clone()))
    }

    pub fn subscription_pages(&self) -> &Batch<SubscriptionPageLoader> {
        batch(&self.subscription_pages, || {
            SubscriptionPageLoader(self.pool.clone())
        })
    }

    pub fn entitlement_json(&self) -> &Batch<EntitlementJsonLoader> {
        batch(&self.entitlement_json, || {
            EntitlementJsonLoader(self.pool.clone())
        })
    }

    pub fn entitlement_lists(&self) -> &Batch<EntitlementListLoader> {
        batch(&self.entitlement_lists, || {
            EntitlementListLoader(self.pool.clone())
        })
    }
}

/// A loader batching on tokio, caching for one request.
pub type Batch<L> = DataLoader<L, HashMapCache>;

/// The request's `L`, made on first use.
fn batch<L>(cell: &OnceLock<Batch<L>>, make: impl FnOnce() -> L) -> &Batch<L> {
    cell.get_or_init(|| DataLoader::with_cache(make(), tokio::spawn, HashMapCache::default()))
}

/// Live customers by id (`Subscription.customer`).
pub struct CustomerLoader(PgPool);

impl Loader<String> for CustomerLoader {
    type Value = Customer;
    type Error = Internal;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Customer>, Internal> {
        const SQL: &str = concat!(
            "SELECT ",
            customer_columns!(),
            " FROM customers t WHERE t.customer_id = ANY($1) AND ",
            customer_visible!()
        );
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
    type Value = Json;
    type Error = Internal;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Json>, Internal> {
        const SQL: &str = "SELECT s.customer_id, s.entitlements,
                (SELECT jsonb_object_agg(u.feature_id, u.current_usage) FROM usage u
                 WHERE u.customer_id = s.customer_id AND u.resource_key = '') AS usage
             FROM entitlement_sets s
             WHERE s.customer_id = ANY($1) AND s.resource_key = ''";
        let rows = sqlx::query(SQL).bind(keys).fetch_all(&self.0).await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let usage: Option<Json> = row.try_get(2)?;
            let usage = match usage {
                Some(Json::Object(m)) => m,
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
