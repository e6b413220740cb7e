//! The console: `/api/status` and `/api/dead-letters` (JSON, behind the bearer token like
//! `/graphql`), and the pages that read them, written in `console/` and embedded at compile
//! time. The pages and their assets are static and open; every request they make for data
//! carries the token the page asked for. Every page and asset carries a
//! `Content-Security-Policy` that allows this origin only: no other host is ever contacted.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::store;
use crate::telemetry;

/// The most dead letters `/api/dead-letters` returns (the newest).
pub const DEAD_LETTERS_SHOWN: i64 = 200;

/// The policy of every page and asset: this origin only, no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// The embedded files: path served, content type, content.
pub const FILES: [(&str, &str, &str); 6] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../console/status.html"),
    ),
    (
        "/graphiql",
        "text/html; charset=utf-8",
        include_str!("../../console/graphiql.html"),
    ),
    (
        "/console/access",
        "text/html; charset=utf-8",
        include_str!("../../console/access.html"),
    ),
    (
        "/console/dead-letters",
        "text/html; charset=utf-8",
        include_str!("../../console/dead-letters.html"),
    ),
    (
        "/console/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "/console/app.css",
        "text/css; charset=utf-8",
        include_str!("../../console/app.css"),
    ),
];

/// `GET /api/status`, `GET /api/dead-letters` (guarded by the bearer-token layer).
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/dead-letters", get(dead_letters))
}

/// The pages and their assets (open).
pub fn page_routes() -> Router<AppState> {
    FILES
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            router.route(path, get(move || async move { page(content_type, body) }))
        })
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let counts = store::status::counts(&state.pool)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let last_sync = store::status::last_sync(&state.pool)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let now = chrono::Utc::now();
    let newest = telemetry::newest_event_ms().and_then(chrono::DateTime::from_timestamp_millis);
    let messages: serde_json::Map<String, Value> = telemetry::messages_by_outcome()
        .into_iter()
        .map(|(outcome, n)| (outcome.to_string(), json!(n)))
        .collect();
    let [visible, in_flight, delayed] = telemetry::last_queue_depth();
    let queue = (visible.is_some() || in_flight.is_some() || delayed.is_some())
        .then(|| json!({ "visible": visible, "in_flight": in_flight, "delayed": delayed }));
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": telemetry::uptime().as_secs(),
        "now": crate::events::format_time(now),
        "customers": counts.customers,
        "subscriptions": counts.subscriptions,
        "entitlement_sets": counts.entitlement_sets,
        "dead_letters": counts.dead_letters,
        "newest_event": newest.map(crate::events::format_time),
        "newest_event_age_seconds": newest.map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0),
        "last_apply_lag_seconds": telemetry::last_apply_lag_ms().map(|ms| ms as f64 / 1000.0),
        "messages": messages,
        "queue": queue,
        "last_sync": last_sync.map(|s| json!({
            "started_at": crate::events::format_time(s.started_at),
            "finished_at": s.finished_at.map(crate::events::format_time),
            "phase": s.phase,
            "complete": s.complete,
            "error": s.error,
            "counts": s.counts,
        })),
        "consumer": state.health.consumer_ok(),
        "access_cache": state.access.is_listening(),
    })))
}

async fn dead_letters(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (letters, total) = store::newest_dead_letters(&state.pool, DEAD_LETTERS_SHOWN)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let letters: Vec<Value> = letters
        .into_iter()
        .map(|d| {
            json!({
                "source_id": d.source_id,
                "event_message_id": d.event_message_id,
                "event_type": d.event_type,
                "reason": d.reason,
                "first_seen": crate::events::format_time(d.first_seen),
                "attempts": d.attempts,
                "body": String::from_utf8_lossy(&d.body),
            })
        })
        .collect();
    Ok(Json(json!({
        "total": total,
        "shown": letters.len(),
        "dead_letters": letters,
    })))
}
