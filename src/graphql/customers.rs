//! `Customer`, `CustomersOrderBy`, `CustomerCondition` and `CustomersConnection`, named as
//! PostGraphile names them for the `customers` table, plus what no PostGraphile schema had:
//! the customer's typed entitlements and its access decision. Tombstones are never read.

use std::sync::{Arc, OnceLock};

use async_graphql::{Context, Enum, InputObject, Json, MaybeUndefined, Object, Result};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool, Row};

use super::entitlements::{self, AccessDecision, Entitlement};
use super::error::{or_null, Internal};
use super::loaders::Loaders;
use super::page::{
    self, connection, Args, Column, Connection, Kind, Node, OrderBy, Page, Scope, Spec, Table, Term,
    Value,
};
use super::scalars::{Cursor, Datetime};
use super::subscriptions::{
    self, Subscription, SubscriptionCondition, SubscriptionsConnection, SubscriptionsOrderBy,
};
use crate::reads::{Read, ReadPool};

const fn text(sql: &'static str, nullable: bool) -> Column {
    Column {
        sql,
        kind: Kind::Text,
        nullable,
    }
}

const fn time(sql: &'static str) -> Column {
    Column {
        sql,
        kind: Kind::Time,
        nullable: false,
    }
}

pub const CUSTOMER_ID: Column = text("customer_id", false);
const NAME: Column = text("name", true);
const EMAIL: Column = text("email", true);
const BILLING_ID: Column = text("billing_id", true);
const CREATED_AT: Column = time("created_at");
const UPDATED_AT: Column = time("updated_at");

pub const SELECT: &str = "t.customer_id, t.name, t.email, t.billing_id, t.created_at, t.updated_at";

pub static TABLE: Table = Table {
    name: "customers",
    select: SELECT,
    visible: "NOT t.is_deleted",
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

impl Node for Customer {
    const TABLE: &'static Table = &TABLE;

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

/// A live customer by id.
pub async fn by_id(reads: &ReadPool, id: &str) -> Result<Option<Customer>, Internal> {
    const SQL: &str = "SELECT t.customer_id, t.name, t.email, t.billing_id, t.created_at,
            t.updated_at
         FROM customers t WHERE t.customer_id = $1 AND NOT t.is_deleted";
    let read: Read<str, _> = |conn, id| Box::pin(sqlx::query_as(SQL).bind(id).fetch_optional(conn));
    Ok(reads.run(id, read).await?)
}

/// A live customer by id with the first page of its subscriptions, in one round trip (the
/// hot path of `customer(customerId) { … subscriptions { nodes { … } } }`).
pub async fn by_id_with_subscriptions(
    reads: &ReadPool,
    id: &str,
) -> Result<Option<Customer>, Internal> {
    const SQL: &str = "SELECT t.customer_id, t.name, t.email, t.billing_id, t.created_at,
            t.updated_at, s.*
         FROM customers t
         LEFT JOIN LATERAL (
             SELECT t.subscription_id, t.customer_id, t.status, t.plan_id, t.plan_name,
                    t.billing_id, t.resource_id, t.billing_period, t.start_date, t.end_date,
                    t.cancellation_date, t.trial_end_date, t.created_at, t.updated_at
             FROM subscriptions t WHERE t.customer_id = $1
             ORDER BY t.subscription_id LIMIT 1001) s ON TRUE
         WHERE t.customer_id = $1 AND NOT t.is_deleted";
    let read: Read<str, _> = |conn, id| Box::pin(sqlx::query(SQL).bind(id).fetch_all(conn));
    let rows = reads.run(id, read).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    // by position: the subscription columns repeat some of the customer's names
    let mut customer = Customer {
        customer_id: first.try_get(0)?,
        name: first.try_get(1)?,
        email: first.try_get(2)?,
        billing_id: first.try_get(3)?,
        created_at: first.try_get(4)?,
        updated_at: first.try_get(5)?,
        subscriptions: None,
    };
    let subs = rows
        .iter()
        .filter_map(|r| Subscription::at(r, 6).transpose())
        .collect::<sqlx::Result<Vec<_>>>()?;
    customer.subscriptions = Some(Arc::new(Page::from_preloaded(subs)));
    Ok(Some(customer))
}

/// Whether `nodes { subscriptions }` or `edges { node { subscriptions } }` is asked
/// without arguments somewhere in this connection's selection, and if so whether its
/// `totalCount` is.
pub fn plain_subscriptions_wanted(ctx: &Context<'_>) -> Option<bool> {
    let la = ctx.look_ahead();
    let mut selections = la.field("nodes").field("subscriptions").selection_fields();
    selections.extend(
        la.field("edges")
            .field("node")
            .field("subscriptions")
            .selection_fields(),
    );
    let plain: Vec<_> = selections
        .into_iter()
        .filter(|s| s.arguments().is_ok_and(|a| a.is_empty()))
        .collect();
    if plain.is_empty() {
        return None;
    }
    Some(
        plain
            .into_iter()
            .any(|s| s.selection_set().any(|f| f.name() == "totalCount")),
    )
}

/// The spec of `subscriptions` with no arguments, made once.
fn plain_subscriptions_spec() -> Arc<Spec> {
    static PLAIN: OnceLock<Arc<Spec>> = OnceLock::new();
    PLAIN
        .get_or_init(|| Arc::new(Spec::plain(subscriptions::SUBSCRIPTION_ID)))
        .clone()
}

/// Loads the first page of subscriptions (no arguments) of every customer of a page, in
/// one query (two with the counts), so that no dataloader window decides the round trips.
pub async fn preload_subscriptions(
    pool: &PgPool,
    customers: &mut [Customer],
    want_total: bool,
) -> Result<(), Internal> {
    let ids: Vec<String> = customers.iter().map(|c| c.customer_id.clone()).collect();
    let mut spec = Spec::plain(subscriptions::SUBSCRIPTION_ID);
    spec.want_total = want_total;
    let mut pages = page::fetch_children::<Subscription>(pool, "customer_id", &ids, &spec).await?;
    for c in customers {
        c.subscriptions = pages.remove(&c.customer_id).map(Arc::new);
    }
    Ok(())
}

#[Object]
impl Customer {
    async fn customer_id(&self) -> &str {
        &self.customer_id
    }

    async fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    async fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    async fn billing_id(&self) -> Option<&str> {
        self.billing_id.as_deref()
    }

    async fn created_at(&self) -> Datetime {
        Datetime(self.created_at)
    }

    async fn updated_at(&self) -> Datetime {
        Datetime(self.updated_at)
    }

    /// The customer-level entitlements as Stigg sent them, each with its `currentUsage` set
    /// to the latest usage reported for it. Null until Stigg sent a customer-level set.
    async fn entitlements(&self, ctx: &Context<'_>) -> Option<Json<serde_json::Value>> {
        let list = Loaders::of(ctx)
            .entitlement_json()
            .load_one(self.customer_id.clone())
            .await;
        or_null(ctx, list.map_err(Into::into)).map(Json)
    }

    /// Reads and enables pagination through a set of `Subscription`.
    #[graphql(complexity = "page::cost(first, last, 10, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn subscriptions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only read the first `n` values of the set.")] first: Option<i32>,
        #[graphql(desc = "Only read the last `n` values of the set.")] last: Option<i32>,
        #[graphql(
            desc = "Skip the first `n` values from our `after` cursor, an alternative to cursor based pagination. May not be used with `last`."
        )]
        offset: Option<i32>,
        #[graphql(desc = "Read all values in the set before (above) this cursor.")] before: Option<
            Cursor,
        >,
        #[graphql(desc = "Read all values in the set after (below) this cursor.")] after: Option<
            Cursor,
        >,
        #[graphql(
            desc = "The method to use when ordering `Subscription`.",
            default_with = "Some(vec![SubscriptionsOrderBy::PrimaryKeyAsc])"
        )]
        order_by: Option<Vec<SubscriptionsOrderBy>>,
        #[graphql(
            desc = "A condition to be used in determining which values should be returned by the collection."
        )]
        condition: Option<SubscriptionCondition>,
    ) -> Result<SubscriptionsConnection> {
        let loaders = Loaders::of(ctx);
        let args = Args {
            first,
            last,
            offset,
            before,
            after,
        };
        let scope = Scope::Child {
            column: "customer_id",
            key: self.customer_id.clone(),
        };
        let plain = args.is_empty()
            && condition.is_none()
            && order_by.as_deref() == Some(&[SubscriptionsOrderBy::PrimaryKeyAsc][..]);
        let la = ctx.look_ahead();
        if la.field("nodes").field("customer").exists()
            || la.field("edges").field("node").field("customer").exists()
        {
            // each subscription's customer is this one: no query for it
            let mut me = self.clone();
            me.subscriptions = None;
            loaders.customers().feed_one(me.customer_id.clone(), me).await;
        }
        if let (true, Some(page)) = (plain, &self.subscriptions) {
            return Ok(SubscriptionsConnection(Connection {
                pool: loaders.pool.clone(),
                scope,
                spec: plain_subscriptions_spec(),
                page: page.clone(),
            }));
        }
        let filter = SubscriptionCondition::filter(condition.as_ref());
        let mut spec = Spec::new(
            args,
            order_by.as_deref(),
            subscriptions::SUBSCRIPTION_ID,
            filter,
        )?;
        (spec.want_rows, spec.want_total) = page::wants(ctx);
        let spec = Arc::new(spec);
        let page = loaders
            .subscription_pages()
            .load_one((self.customer_id.clone(), spec.clone()))
            .await?
            .unwrap_or_else(|| {
                Arc::new(Page {
                    rows: Vec::new(),
                    has_more: false,
                    total: Some(0),
                })
            });
        Ok(SubscriptionsConnection(Connection {
            pool: loaders.pool.clone(),
            scope,
            spec,
            page,
        }))
    }

    /// The customer's entitlements, typed: the customer-level set, or a resource's set when
    /// `resourceId` is given. Current usage and periods are those `/check-access` reports.
    async fn entitlement_list(
        &self,
        ctx: &Context<'_>,
        resource_id: Option<String>,
    ) -> Result<Vec<Entitlement>> {
        let key = entitlements::resource_key(resource_id.as_deref())?;
        let list = Loaders::of(ctx)
            .entitlement_lists()
            .load_one((self.customer_id.clone(), key))
            .await?
            .unwrap_or_default();
        let now = Utc::now();
        Ok(list.iter().map(|e| Entitlement::view(e, now)).collect())
    }

    /// Whether the customer may use a feature: the same decision as `POST /check-access`.
    #[graphql(complexity = 5)]
    async fn access(
        &self,
        ctx: &Context<'_>,
        feature_id: String,
        resource_id: Option<String>,
        requested_usage: Option<f64>,
        requested_values: Option<Vec<String>>,
    ) -> Result<AccessDecision> {
        entitlements::access(
            &Loaders::of(ctx).pool,
            &self.customer_id,
            feature_id,
            resource_id,
            requested_usage,
            requested_values,
        )
        .await
    }
}

/// Methods to use when ordering `Customer`.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomersOrderBy {
    Natural,
    CustomerIdAsc,
    CustomerIdDesc,
    NameAsc,
    NameDesc,
    EmailAsc,
    EmailDesc,
    BillingIdAsc,
    BillingIdDesc,
    CreatedAtAsc,
    CreatedAtDesc,
    UpdatedAtAsc,
    UpdatedAtDesc,
    PrimaryKeyAsc,
    PrimaryKeyDesc,
}

impl OrderBy for CustomersOrderBy {
    fn term(self) -> Option<Term> {
        use CustomersOrderBy as O;
        let (col, desc) = match self {
            O::Natural => return None,
            O::CustomerIdAsc | O::PrimaryKeyAsc => (CUSTOMER_ID, false),
            O::CustomerIdDesc | O::PrimaryKeyDesc => (CUSTOMER_ID, true),
            O::NameAsc => (NAME, false),
            O::NameDesc => (NAME, true),
            O::EmailAsc => (EMAIL, false),
            O::EmailDesc => (EMAIL, true),
            O::BillingIdAsc => (BILLING_ID, false),
            O::BillingIdDesc => (BILLING_ID, true),
            O::CreatedAtAsc => (CREATED_AT, false),
            O::CreatedAtDesc => (CREATED_AT, true),
            O::UpdatedAtAsc => (UPDATED_AT, false),
            O::UpdatedAtDesc => (UPDATED_AT, true),
        };
        Some(Term { col, desc })
    }
}

/// A condition to be used against `Customer` object types. All fields are tested for
/// equality and combined with a logical ‘and.’
#[derive(InputObject, Debug, Default)]
pub struct CustomerCondition {
    /// Checks for equality with the object’s `customerId` field.
    pub customer_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `name` field.
    pub name: MaybeUndefined<String>,
    /// Checks for equality with the object’s `email` field.
    pub email: MaybeUndefined<String>,
    /// Checks for equality with the object’s `billingId` field.
    pub billing_id: MaybeUndefined<String>,
    /// Checks for equality with the object’s `createdAt` field.
    pub created_at: MaybeUndefined<Datetime>,
    /// Checks for equality with the object’s `updatedAt` field.
    pub updated_at: MaybeUndefined<Datetime>,
}

impl CustomerCondition {
    pub fn filter(condition: Option<&Self>) -> Vec<(Column, Value)> {
        let Some(c) = condition else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (col, v) in [
            (CUSTOMER_ID, &c.customer_id),
            (NAME, &c.name),
            (EMAIL, &c.email),
            (BILLING_ID, &c.billing_id),
        ] {
            page::text_condition(&mut out, col, v);
        }
        for (col, v) in [(CREATED_AT, &c.created_at), (UPDATED_AT, &c.updated_at)] {
            page::time_condition(&mut out, col, v);
        }
        out
    }
}

connection!(
    CustomersConnection,
    CustomersEdge,
    Customer,
    "A list of `Customer` objects."
);
