//! The HTTP side: `/check-access`, `/graphql`, the console (`/`, `/graphiql`, `/console/…`,
//! `/api/…`: [`console`]), health, readiness and metrics.
//! Errors are JSON `{"error": …}`; 5xx bodies never carry internal details (the cause is
//! logged).

mod access;
mod auth;
pub mod console;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::cache::AccessCache;
use crate::health::Health;
use crate::reads::ReadPool;

/// Bodies over this size are refused with 413 (§7.13).
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares, behind one `Arc` (cloned per request by the extractors and
/// the token layer: one reference count, not one per field).
pub type AppState = Arc<Served>;

#[derive(Clone)]
pub struct Served {
    pub pool: PgPool,
    /// The hot read paths' connections ([`crate::reads`]).
    pub reads: Arc<ReadPool>,
    /// Customers' access data in memory ([`crate::cache`]).
    pub access: Arc<AccessCache>,
    pub health: Arc<Health>,
    pub tokens: Arc<Vec<String>>,
}

/// An HTTP error: status and a message safe to show.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// Logs the cause; the client sees only that something failed.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the replica is unavailable; try again".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub fn router(state: Served) -> Router {
    let state: AppState = Arc::new(state);
    let request_id = HeaderName::from_static("x-request-id");
    let guarded = Router::new()
        .route("/check-access", post(access::check_access))
        .merge(console::api_routes())
        .merge(crate::graphql::routes(
            state.pool.clone(),
            state.reads.clone(),
            state.access.clone(),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(guarded)
        .merge(console::page_routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(too_large_as_json))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the database answers, the consumer runs and the hot reads are warmed up (their
/// connections open), else 503; always within 2 s (§7.3).
async fn readyz(State(state): State<AppState>) -> Response {
    let ping = tokio::time::timeout(
        Duration::from_millis(1500),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    let database = matches!(ping, Ok(Ok(_)));
    let consumer = state.health.consumer_ok();
    let warm = state.health.warm();
    let status = if database && consumer && warm {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "database": database,
            "consumer": consumer,
            "warm": warm,
            "access_cache": state.access.is_listening(),
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::access_cache_bytes(state.access.weighed_bytes());
    crate::telemetry::access_cache_listening(state.access.is_listening());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(),
    )
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such route".into(),
    }
}

/// axum answers an oversized body with a plain-text 413; make it JSON like every error.
async fn too_large_as_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than {} bytes", BODY_LIMIT),
        }
        .into_response();
    }
    response
}
