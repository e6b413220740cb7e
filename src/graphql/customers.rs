//! `Customer`'s fields, `CustomersOrderBy`, `CustomerCondition` and `CustomersConnection`,
//! named as PostGraphile names them for the `customers` table (the row and its SQL are in
//! [`super::rows`]), plus what no PostGraphile schema had: the customer's typed entitlements
//! and its access decision. Tombstones are never read.

use std::sync::{Arc, OnceLock};

use async_graphql::{Context, Enum, InputObject, Json, MaybeUndefined, Object, Result};
use chrono::Utc;
use sqlx::PgPool;

use super::entitlements::{self, AccessDecision, Entitlement};
use super::error::{or_null, Internal};
use super::page::{
    self, connection, Args, Column, Condition, Connection, OrderBy, Page, Scope, Spec, Term, Value,
};
use super::rows::{Customer, Loaders, Subscription};
use super::scalars::{Cursor, Datetime};
use super::subscriptions::{SubscriptionCondition, SubscriptionsConnection, SubscriptionsOrderBy};

pub const CUSTOMER_ID: Column = Column::text("customer_id", false);
const NAME: Column = Column::text("name", true);
const EMAIL: Column = Column::text("email", true);
const BILLING_ID: Column = Column::text("billing_id", true);
const CREATED_AT: Column = Column::time("created_at", false);
const UPDATED_AT: Column = Column::time("updated_at", false);

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
        .get_or_init(|| Arc::new(Spec::plain::<SubscriptionsOrderBy>()))
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
    let mut spec = Spec::plain::<SubscriptionsOrderBy>();
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
            loaders
                .customers()
                .feed_one(me.customer_id.clone(), me)
                .await;
        }
        if let (true, Some(page)) = (plain, &self.subscriptions) {
            return Ok(SubscriptionsConnection(Connection {
                pool: loaders.pool.clone(),
                scope,
                spec: plain_subscriptions_spec(),
                page: page.clone(),
            }));
        }
        let customer_id = &self.customer_id;
        let load = |spec| async move {
            let page = loaders
                .subscription_pages()
                .load_one((customer_id.clone(), spec))
                .await?;
            Ok(page.unwrap_or_else(|| {
                Arc::new(Page {
                    rows: Vec::new(),
                    has_more: false,
                    total: Some(0),
                })
            }))
        };
        let connection = Connection::resolve(ctx, scope, args, order_by, condition, load).await?;
        Ok(SubscriptionsConnection(connection))
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
            Loaders::of(ctx),
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
    const PRIMARY_KEY: Column = CUSTOMER_ID;

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

impl Condition for CustomerCondition {
    fn filter(&self) -> Vec<(Column, Value)> {
        let mut out = Vec::new();
        for (col, v) in [
            (CUSTOMER_ID, &self.customer_id),
            (NAME, &self.name),
            (EMAIL, &self.email),
            (BILLING_ID, &self.billing_id),
        ] {
            page::text_condition(&mut out, col, v);
        }
        for (col, v) in [
            (CREATED_AT, &self.created_at),
            (UPDATED_AT, &self.updated_at),
        ] {
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
