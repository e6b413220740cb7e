//! Read-only GraphQL API over the replica, a drop-in for the PostGraphile one Stigg's Node
//! example served (PostGraphile v4, pg-simplify-inflector, no Node interface, dynamic JSON):
//! `customers` / `subscriptions` connections, `customer` / `subscription` lookups, and
//! typed entitlements and access decisions beyond it.
//!
//! What it must never do: write (there is no mutation type, and only SELECTs are issued),
//! show a deleted customer, or let a database error's text reach the client (see
//! [`error::Internal`]). Every query is bounded: brackets, depth, size ([`guard`]),
//! complexity ([`MAX_COMPLEXITY`]) and page size ([`page::MAX_PAGE`]). The body limit, the
//! bearer-token check and tracing are the caller's layers.

mod customers;
mod entitlements;
mod error;
mod guard;
mod page;
mod query;
pub(crate) mod rows;
mod scalars;
mod subscriptions;

use std::sync::Arc;

use async_graphql::{EmptyMutation, EmptySubscription, Schema};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;

use self::query::Query;
use self::rows::Loaders;
use crate::cache::AccessCache;
use crate::reads::ReadPool;

type ReplicaSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// The most a query may cost: each field counts 1, and a connection counts its selection
/// once per row it may return (`first` / `last`, else 1000 at the top level and 10 for a
/// customer's subscriptions).
pub const MAX_COMPLEXITY: usize = 1_000_000;

/// The schema, built once, the pool each request's loaders use, and the documents of
/// recent queries.
struct Api {
    schema: ReplicaSchema,
    pool: PgPool,
    reads: Arc<ReadPool>,
    access: Arc<AccessCache>,
    documents: guard::Documents,
}

fn schema() -> ReplicaSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema in SDL, as introspection shows it.
pub fn sdl() -> String {
    schema().sdl()
}

/// `POST /graphql`, `GET /graphql` (guarded by the bearer-token layer).
pub fn routes<S: Clone + Send + Sync + 'static>(
    pool: PgPool,
    reads: Arc<ReadPool>,
    access: Arc<AccessCache>,
) -> Router<S> {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .with_state(Arc::new(Api {
            schema: schema(),
            pool,
            reads,
            access,
            documents: guard::Documents::default(),
        }))
}

async fn graphql_post(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => execute(&api, request).await,
        Err(e) => bad_request(&format!("the body is not a GraphQL request: {e}")),
    }
}

async fn graphql_get(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> Response {
    match async_graphql::http::parse_query_string(query.as_deref().unwrap_or_default()) {
        Ok(request) => execute(&api, request).await,
        Err(e) => bad_request(&format!("the query string is not a GraphQL request: {e}")),
    }
}

/// Parses (or recalls) and checks the query ([`guard`]), then lets async-graphql validate
/// and run it with this request's loaders.
async fn execute(api: &Api, mut request: async_graphql::Request) -> Response {
    if let Err(e) = api.documents.prepare(&mut request) {
        return json(&async_graphql::Response::from_errors(vec![e]));
    }
    let request = request.data(Loaders::new(
        api.pool.clone(),
        api.reads.clone(),
        api.access.clone(),
    ));
    json(&api.schema.execute(request).await)
}

fn json(response: &async_graphql::Response) -> Response {
    match serde_json::to_vec(response) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "graphql response not serializable");
            bad_status(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn bad_request(message: &str) -> Response {
    bad_status(StatusCode::BAD_REQUEST, message)
}

fn bad_status(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message }] });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_has_postgraphile_names_and_no_mutations() {
        let sdl = super::sdl();
        for needle in [
            "orderBy: [CustomersOrderBy!] = [PRIMARY_KEY_ASC]",
            "orderBy: [SubscriptionsOrderBy!] = [PRIMARY_KEY_ASC]",
            "): CustomersConnection\n",
            "): SubscriptionsConnection!\n",
            "nodes: [Customer]!",
            "edges: [CustomersEdge!]!",
            "totalCount: Int!",
            "customer(customerId: String!): Customer",
            "subscription(subscriptionId: String!): Subscription",
            "scalar Datetime",
            "scalar Cursor",
            "scalar JSON",
            "entitlements: JSON",
        ] {
            assert!(sdl.contains(needle), "missing {needle}");
        }
        assert!(!sdl.contains("type Mutation"));
        assert!(!sdl.contains("mutation:"));
    }
}
