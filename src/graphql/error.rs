//! The one way a database failure leaves this module: logged with its cause, counted, and
//! shown to the client as nothing more than "internal error".

use std::fmt;

use async_graphql::{Context, Result};

/// A failure whose details stay in the log. Its `Display` is all a client ever sees.
#[derive(Debug, Clone, Copy)]
pub struct Internal;

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("internal error")
    }
}

impl From<sqlx::Error> for Internal {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "graphql query failed");
        metrics::counter!("stigg_byos_graphql_internal_errors_total").increment(1);
        Internal
    }
}

/// A nullable field that failed: null in `data`, the error beside it (as GraphQL asks;
/// async-graphql on its own would drop the field from `data`).
pub fn or_null<T>(ctx: &Context<'_>, result: Result<Option<T>>) -> Option<T> {
    match result {
        Ok(value) => value,
        Err(e) => {
            ctx.add_error(ctx.set_error_path(e.into_server_error(ctx.item.pos)));
            None
        }
    }
}
