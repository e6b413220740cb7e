//! Bearer-token auth for `/check-access` and `/graphql` (§7.15): when API_TOKENS is set the
//! request must carry `Authorization: Bearer <token>` (the scheme in any case, RFC 9110
//! §11.1) matching one exactly. Tokens are compared by their SHA-256 digests in constant
//! time, so that the timing tells neither their content nor their length.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
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
        .and_then(bearer_token)
    else {
        return false;
    };
    // digests have one length: a slice comparison returns early on a length mismatch
    let presented = Sha256::digest(presented.as_bytes());
    // check every token, so timing does not tell which one nearly matched
    tokens.iter().fold(false, |found, t| {
        found | bool::from(Sha256::digest(t.as_bytes()).ct_eq(&presented))
    })
}

/// The token of a `Bearer <token>` credential; the scheme is case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::body::Body;

    use super::*;

    fn with_authorization(value: &str) -> Request {
        Request::builder()
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap()
    }

    fn ok(tokens: &[&str], authorization: &str) -> bool {
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        token_ok(&tokens, &with_authorization(authorization))
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for right in [
            "Bearer alpha",
            "bearer alpha",
            "BEARER alpha",
            "bEaReR  alpha",
        ] {
            assert!(ok(&["alpha"], right), "{right}");
        }
        for wrong in [
            "Bearer alph",
            "Bearer alpha2",
            "Bearer Alpha",
            "alpha",
            "Bearer",
            "Bearer ",
            "Beareralpha",
            "Basic alpha",
        ] {
            assert!(!ok(&["alpha"], wrong), "{wrong}");
        }
    }

    /// The fastest of a few runs of one token check.
    fn fastest(tokens: &[String], request: &Request) -> Duration {
        (0..15)
            .map(|_| {
                let started = Instant::now();
                assert!(!token_ok(tokens, request));
                started.elapsed()
            })
            .min()
            .unwrap()
    }

    #[test]
    fn a_wrong_token_takes_as_long_whatever_its_length() {
        // a long configured token makes a comparison of equal lengths measurable
        let token = "t".repeat(1 << 20);
        let tokens = vec![token.clone()];
        let same_length = with_authorization(&format!("Bearer u{}", &token[1..]));
        let shorter = with_authorization(&format!("Bearer u{}", &token[2..]));
        let (same, short) = (fastest(&tokens, &same_length), fastest(&tokens, &shorter));
        assert!(
            short * 3 > same,
            "a token of another length is refused faster ({short:?}) than one of the right \
             length ({same:?}): the timing tells the length"
        );
    }
}
