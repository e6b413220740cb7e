//! The root query type, with PostGraphile's field names (pg-simplify-inflector, no Node
//! interface). There is no mutation or subscription root at all.

use std::sync::Arc;

use async_graphql::{Context, Object};

use super::customers::{self, CustomerCondition, CustomersConnection, CustomersOrderBy};
use super::error::or_null;
use super::page::{self, fetch, Args, Connection, Scope, Spec};
use super::rows::{self, Customer, Loaders, Subscription};
use super::scalars::Cursor;
use super::subscriptions::{SubscriptionCondition, SubscriptionsConnection, SubscriptionsOrderBy};
use crate::access::storable;

/// The root query type which gives access points into the data universe.
pub struct Query;

#[Object(name = "Query")]
impl Query {
    /// Exposes the root query type nested one level down. This is helpful for Relay 1
    /// which can only query top level fields if they are in a particular form.
    async fn query(&self) -> Query {
        Query
    }

    /// Reads and enables pagination through a set of `Customer`.
    #[graphql(complexity = "page::cost(first, last, page::MAX_PAGE as usize, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn customers(
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
            desc = "The method to use when ordering `Customer`.",
            default_with = "Some(vec![CustomersOrderBy::PrimaryKeyAsc])"
        )]
        order_by: Option<Vec<CustomersOrderBy>>,
        #[graphql(
            desc = "A condition to be used in determining which values should be returned by the collection."
        )]
        condition: Option<CustomerCondition>,
    ) -> Option<CustomersConnection> {
        let args = Args {
            first,
            last,
            offset,
            before,
            after,
        };
        let pool = &Loaders::of(ctx).pool;
        let load = |spec: Arc<Spec>| async move {
            let mut page = fetch::<Customer>(pool, &Scope::All, &spec).await?;
            if let Some(want_total) = customers::plain_subscriptions_wanted(ctx) {
                customers::preload_subscriptions(pool, &mut page.rows, want_total).await?;
            }
            Ok(Arc::new(page))
        };
        let result = Connection::resolve(ctx, Scope::All, args, order_by, condition, load).await;
        or_null(ctx, result.map(|c| Some(CustomersConnection(c))))
    }

    /// Reads and enables pagination through a set of `Subscription`.
    #[graphql(complexity = "page::cost(first, last, page::MAX_PAGE as usize, child_complexity)")]
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
    ) -> Option<SubscriptionsConnection> {
        let args = Args {
            first,
            last,
            offset,
            before,
            after,
        };
        let pool = &Loaders::of(ctx).pool;
        let load = |spec: Arc<Spec>| async move {
            Ok(Arc::new(
                fetch::<Subscription>(pool, &Scope::All, &spec).await?,
            ))
        };
        let result = Connection::resolve(ctx, Scope::All, args, order_by, condition, load).await;
        or_null(ctx, result.map(|c| Some(SubscriptionsConnection(c))))
    }

    async fn customer(&self, ctx: &Context<'_>, customer_id: String) -> Option<Customer> {
        if !storable(&customer_id) {
            return None; // no such customer, as /check-access answers
        }
        let loaders = Loaders::of(ctx);
        // from the cache, which keeps it with its first page of subscriptions (one round trip
        // when it is loaded)
        let result = loaders
            .access
            .customer(&customer_id, || {
                rows::customer_with_subscriptions(&loaders.reads, &customer_id)
            })
            .await;
        or_null(ctx, result.map_err(Into::into))
    }

    async fn subscription(
        &self,
        ctx: &Context<'_>,
        subscription_id: String,
    ) -> Option<Subscription> {
        if !storable(&subscription_id) {
            return None;
        }
        let result = rows::subscription(&Loaders::of(ctx).reads, &subscription_id).await;
        or_null(ctx, result.map_err(Into::into))
    }
}
