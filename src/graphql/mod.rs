//! Read-only GraphQL API over the replica (being written; see issue 4).

use axum::Router;
use sqlx::PgPool;

/// `POST /graphql`, `GET /graphql` (guarded by the bearer-token layer).
pub fn routes<S: Clone + Send + Sync + 'static>(_pool: PgPool) -> Router<S> {
    Router::new()
}

/// `GET /graphiql` (open).
pub fn open_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
}
