//! `POST /check-access`: validate the request (§7.11), load the stored state in one query,
//! decide (§5). 200 when allowed, 403 when denied.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::access::{self, AccessRequest};
use crate::telemetry;

pub async fn check_access(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request = parse_request(&body).map_err(ApiError::bad_request)?;
    let decision = access::check(&request, chrono::Utc::now(), |lookup| async move {
        state
            .access
            .access(
                &state.reads,
                lookup.customer,
                lookup.resource,
                lookup.feature,
            )
            .await
            .map_err(|e| ApiError::internal(&e))
    })
    .await?;
    let (status, result) = if decision.has_access {
        (StatusCode::OK, "allowed")
    } else {
        (StatusCode::FORBIDDEN, "denied")
    };
    telemetry::check_access(result, started.elapsed().as_secs_f64());
    Ok((status, Json(decision)).into_response())
}

/// Validates the JSON body into an [`AccessRequest`]; the error says what is wrong.
pub fn parse_request(body: &[u8]) -> Result<AccessRequest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("request body must be a JSON object".into());
    };
    let id = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(format!("{name} is required")),
            Some(_) => Err(format!("{name} must be a string")),
        }
    };
    let customer_id = id("customerId")?;
    let feature_id = id("featureId")?;
    let resource_id = match obj.get("resourceId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("resourceId must be a string".into()),
    };
    let requested_usage = match obj.get("requestedUsage") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().ok_or("requestedUsage is out of range")?),
        Some(_) => return Err("requestedUsage must be a number".into()),
    };
    let requested_values = match obj.get("requestedValues") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("requestedValues must be a list of strings")?,
        ),
        Some(_) => return Err("requestedValues must be a list of strings".into()),
    };
    AccessRequest::new(
        customer_id,
        feature_id,
        resource_id,
        requested_usage,
        requested_values,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_requests() {
        let r = parse_request(br#"{"customerId":"c","featureId":"f"}"#).unwrap();
        assert_eq!(r.requested_usage, 0.0);
        assert_eq!(r.resource_id, None);
        let r = parse_request(
            br#"{"customerId":"c","featureId":"f","resourceId":"r","requestedUsage":2.5,"requestedValues":["us"]}"#,
        )
        .unwrap();
        assert_eq!(r.requested_usage, 2.5);
        assert_eq!(r.resource_id.as_deref(), Some("r"));
        assert_eq!(r.requested_values, Some(vec!["us".to_string()]));
    }

    #[test]
    fn invalid_requests_say_why() {
        for (body, needle) in [
            (&b"{"[..], "not valid JSON"),
            (b"[]", "JSON object"),
            (b"{\"featureId\":\"f\"}", "customerId is required"),
            (
                b"{\"customerId\":\"\",\"featureId\":\"f\"}",
                "customerId must not be empty",
            ),
            (
                b"{\"customerId\":1,\"featureId\":\"f\"}",
                "customerId must be a string",
            ),
            (b"{\"customerId\":\"c\"}", "featureId is required"),
            (
                b"{\"customerId\":\"c\",\"featureId\":\"f\",\"requestedUsage\":\"5\"}",
                "must be a number",
            ),
            (
                b"{\"customerId\":\"c\",\"featureId\":\"f\",\"requestedUsage\":-1}",
                "negative",
            ),
            (
                b"{\"customerId\":\"c\",\"featureId\":\"f\",\"requestedValues\":[1]}",
                "list of strings",
            ),
            (
                b"{\"customerId\":\"c\",\"featureId\":\"f\",\"requestedValues\":\"us\"}",
                "list of strings",
            ),
        ] {
            let err = parse_request(body).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}
