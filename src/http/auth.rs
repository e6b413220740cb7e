//! Bearer-token auth for `/check-access` and `/graphql` (§7.15): when API_TOKENS is set the
//! request must carry `Authorization: Bearer <token>` matching one exactly, compared in
//! constant time.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() || token_ok(&state.tokens, &request) {
        return next.run(request).await;
    }
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "missing or invalid bearer token".into(),
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("valid header"),
    );
    response
}

fn token_ok(tokens: &[String], request: &Request) -> bool {
    let Some(presented) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // check every token, so timing does not tell which one nearly matched
    tokens.iter().fold(false, |found, t| {
        found | bool::from(t.as_bytes().ct_eq(presented.as_bytes()))
    })
}
