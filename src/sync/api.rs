//! Stigg's read API as `sync` uses it (STIGG-API.md): the GraphQL lists and the Edge's
//! entitlement state. Every request goes through one pacer (`SYNC_RATE` across both APIs) and
//! one retry rule: 429, 5xx and network errors are retried with jittered backoff for at most
//! `SYNC_RETRY_SECONDS`, and a 429 also slows the pacer, so the whole pass slows down; 401/403
//! stop at once; a GraphQL `errors` answer is an error even with status 200.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::snapshot::{Connection, CustomerNode, EntitlementsState, SubscriptionNode};

/// Page size asked of the lists (the largest Stigg allows is unknown; pages of any size are
/// followed).
pub const PAGE_SIZE: u32 = 100;

/// One request's time limit (Stigg's own clients use 10–30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every subscription status, so that ended subscriptions are listed too.
pub const ALL_STATUSES: [&str; 6] = [
    "ACTIVE",
    "IN_TRIAL",
    "CANCELED",
    "EXPIRED",
    "NOT_STARTED",
    "PAYMENT_PENDING",
];

/// The node fields read from each list.
const CUSTOMER_FIELDS: &str = "customerId name email billingId createdAt updatedAt";
const SUBSCRIPTION_FIELDS: &str = "subscriptionId status startDate endDate cancellationDate \
     trialEndDate billingId customer { customerId } resource { resourceId } plan { refId displayName }";

/// A list query. The arguments are written into the query as literals, so that no name of
/// Stigg's input types is assumed, and are also sent as `variables` (which a query that
/// declares none ignores) for readers of the request.
fn list_query(root: &str, arguments: &Value, fields: &str) -> String {
    let literal = graphql_literal(arguments);
    let inner = literal
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_default();
    format!(
        "query {{ {root}({inner}) {{ totalCount pageInfo {{ hasNextPage endCursor }} \
         edges {{ cursor node {{ {fields} }} }} }} }}"
    )
}

/// A JSON value as a GraphQL input literal: object keys bare, strings as JSON strings (the
/// escapes are the same), and the strings of `enums` (sort fields and directions) bare.
fn graphql_literal(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let fields: Vec<String> = o
                .iter()
                .map(|(k, v)| {
                    let value = match (k.as_str(), v) {
                        ("field" | "direction", Value::String(s)) => s.clone(),
                        _ => graphql_literal(v),
                    };
                    format!("{k}: {value}")
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(graphql_literal).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Why a request to Stigg failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Stigg refused STIGG_SERVER_API_KEY ({status} from {what}): check that the key is a \
         server API key of this environment"
    )]
    BadKey { status: u16, what: String },
    #[error("{what}: still failing after {tries} tries over {seconds} s: {last}")]
    GaveUp {
        what: String,
        tries: u32,
        seconds: u64,
        last: String,
    },
    #[error("{what}: {reason}")]
    Refused { what: String, reason: String },
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    Retry {
        reason: String,
        throttled: bool,
        /// The answer's `Retry-After`, if it gave one (Stigg's 429s do not).
        after: Option<Duration>,
    },
    Fail(ApiError),
}

/// Where to find Stigg and how hard to press it.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub api_url: String,
    pub edge_url: String,
    pub key: String,
    /// Requests a second across both APIs.
    pub rate: u32,
    /// How long one request is retried before the pass stops.
    pub retry_for: Duration,
}

pub struct StiggApi {
    http: reqwest::Client,
    cfg: ApiConfig,
    pacer: Pacer,
    requests: AtomicU64,
    throttled: AtomicU64,
}

impl StiggApi {
    pub fn new(cfg: ApiConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("stigg-byos/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            pacer: Pacer::new(cfg.rate),
            cfg,
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    /// Requests sent so far, and how many of them got a 429.
    pub fn requests(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
        )
    }

    /// One page of customers, oldest first (stable while customers are added).
    pub async fn customers(
        &self,
        after: Option<&str>,
    ) -> Result<Connection<CustomerNode>, ApiError> {
        let variables = json!({
            "paging": {"first": PAGE_SIZE, "after": after},
            "sorting": [{"field": "createdAt", "direction": "ASC"}],
        });
        let (data, _) = self
            .graphql(
                "customers",
                &list_query("customers", &variables, CUSTOMER_FIELDS),
                variables,
            )
            .await?;
        list_of(data, "customers")
    }

    /// One page of subscriptions of every status, oldest first. Also returns when the request
    /// that read it was sent (a subscription's version, STIGG-API.md §4).
    pub async fn subscriptions(
        &self,
        after: Option<&str>,
    ) -> Result<(Connection<SubscriptionNode>, DateTime<Utc>), ApiError> {
        let variables = json!({
            "paging": {"first": PAGE_SIZE, "after": after},
            "filter": {"status": {"in": ALL_STATUSES}},
            "sorting": [{"field": "createdAt", "direction": "ASC"}],
        });
        let (data, sent) = self
            .graphql(
                "subscriptions",
                &list_query("subscriptions", &variables, SUBSCRIPTION_FIELDS),
                variables,
            )
            .await?;
        Ok((list_of(data, "subscriptions")?, sent))
    }

    /// The entitlement state of a customer (`resource` `None`) or of one of its resources,
    /// and when the request was sent.
    pub async fn entitlements_state(
        &self,
        customer_id: &str,
        resource: Option<&str>,
    ) -> Result<(EntitlementsState, DateTime<Utc>), ApiError> {
        let mut url = reqwest::Url::parse(&format!(
            "{}/v1/c/",
            self.cfg.edge_url.trim_end_matches('/')
        ))
        .map_err(|e| ApiError::Refused {
            what: "STIGG_EDGE_URL".into(),
            reason: e.to_string(),
        })?;
        url.path_segments_mut()
            .map_err(|()| ApiError::Refused {
                what: "STIGG_EDGE_URL".into(),
                reason: "cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .push(customer_id)
            .push("entitlements-state.json");
        if let Some(r) = resource {
            url.query_pairs_mut().append_pair("resourceId", r);
        }
        let what = match resource {
            None => format!("entitlement state of {customer_id:?}"),
            Some(r) => format!("entitlement state of {customer_id:?} resource {r:?}"),
        };
        let (value, sent): (Value, _) = self
            .send(
                &what,
                || {
                    self.http
                        .get(url.clone())
                        .header("X-API-KEY", &self.cfg.key)
                        .header("X-API-VERSION", "1")
                },
                Ok,
            )
            .await?;
        let state = value
            .pointer("/data/entitlementsState")
            .cloned()
            .ok_or_else(|| ApiError::Refused {
                what: what.clone(),
                reason: "the answer has no data.entitlementsState".into(),
            })?;
        let state = serde_json::from_value(state).map_err(|e| ApiError::Refused {
            what,
            reason: format!("unexpected entitlement state: {e}"),
        })?;
        Ok((state, sent))
    }

    /// A GraphQL query's `data`, and when its request was sent.
    async fn graphql(
        &self,
        what: &str,
        query: &str,
        variables: Value,
    ) -> Result<(Value, DateTime<Utc>), ApiError> {
        let url = format!("{}/graphql", self.cfg.api_url.trim_end_matches('/'));
        let body = json!({"query": query, "variables": variables});
        let post = || {
            self.http
                .post(&url)
                .header("X-API-KEY", &self.cfg.key)
                .json(&body)
        };
        self.send(what, post, graphql_data).await
    }

    /// Sends a request (built anew for each try) until it succeeds, fails for good, or has
    /// been retried for `retry_for`. `check` turns a 200's JSON into the result or a reason
    /// (`Err((reason, retry))`). Returns the result and when its request was sent.
    async fn send<T>(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
        check: impl Fn(Value) -> Result<T, (String, Verdict)>,
    ) -> Result<(T, DateTime<Utc>), ApiError> {
        let mut backoff = crate::backoff::stigg_api().build();
        let started = Instant::now();
        let deadline = started + self.cfg.retry_for;
        let mut tries = 0;
        loop {
            self.pacer.wait().await;
            tries += 1;
            let sent = Utc::now();
            self.requests.fetch_add(1, Ordering::Relaxed);
            let attempt = match build().send().await {
                Err(e) => Attempt::Retry {
                    reason: format!("request failed: {}", error_chain(&e)),
                    throttled: false,
                    after: None,
                },
                Ok(response) => self.judge(what, response, &check).await,
            };
            let (reason, throttled, after) = match attempt {
                Attempt::Done(t) => {
                    self.pacer.recover();
                    return Ok((t, sent));
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry {
                    reason,
                    throttled,
                    after,
                } => (reason, throttled, after),
            };
            if throttled {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                self.pacer.slow_down();
            }
            // the last wait is cut short so the final try comes at the deadline
            let now = Instant::now();
            if now >= deadline {
                return Err(ApiError::GaveUp {
                    what: what.to_owned(),
                    tries,
                    seconds: started.elapsed().as_secs(),
                    last: reason,
                });
            }
            let wait = backoff
                .next()
                .unwrap_or(Duration::from_secs(20))
                .max(after.unwrap_or_default())
                .min(deadline - now);
            tracing::warn!(what, %reason, ?wait, "Stigg request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn judge<T>(
        &self,
        what: &str,
        response: reqwest::Response,
        check: &impl Fn(Value) -> Result<T, (String, Verdict)>,
    ) -> Attempt<T> {
        let status = response.status();
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let retry = |reason: String, throttled| Attempt::Retry {
            reason,
            throttled,
            after,
        };
        match status.as_u16() {
            401 | 403 => {
                return Attempt::Fail(ApiError::BadKey {
                    status: status.as_u16(),
                    what: what.to_owned(),
                })
            }
            429 => return retry("429 Too Many Requests".into(), true),
            s if s >= 500 => return retry(format!("{status}"), false),
            s if !(200..300).contains(&s) => {
                let body = response.text().await.unwrap_or_default();
                return Attempt::Fail(ApiError::Refused {
                    what: what.to_owned(),
                    reason: format!("{status}: {}", snippet(&body)),
                });
            }
            _ => {}
        }
        let value: Value = match response.json().await {
            Ok(v) => v,
            // a body cut off mid-way is a network fault
            Err(e) if e.is_body() || e.is_timeout() || e.is_request() => {
                return retry(format!("reading the answer: {}", error_chain(&e)), false)
            }
            Err(e) => {
                return Attempt::Fail(ApiError::Refused {
                    what: what.to_owned(),
                    reason: format!("the answer is not JSON: {e}"),
                })
            }
        };
        match check(value) {
            Ok(t) => Attempt::Done(t),
            Err((reason, Verdict::Throttled)) => retry(reason, true),
            Err((_, Verdict::BadKey)) => Attempt::Fail(ApiError::BadKey {
                status: status.as_u16(),
                what: what.to_owned(),
            }),
            Err((reason, Verdict::Refused)) => Attempt::Fail(ApiError::Refused {
                what: what.to_owned(),
                reason,
            }),
        }
    }
}

/// How a 200 answer that carries an error is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Throttled,
    BadKey,
    Refused,
}

/// A GraphQL answer's `data`, or its `errors` as a reason. An error whose code says the key
/// was refused counts as a bad key; one that says the rate was exceeded is retried.
fn graphql_data(mut value: Value) -> Result<Value, (String, Verdict)> {
    if let Some(errors) = value.get("errors").and_then(Value::as_array) {
        if !errors.is_empty() {
            let codes: Vec<&str> = errors
                .iter()
                .filter_map(|e| e.pointer("/extensions/code").and_then(Value::as_str))
                .collect();
            let messages: Vec<&str> = errors
                .iter()
                .map(|e| e.get("message").and_then(Value::as_str).unwrap_or("?"))
                .collect();
            let reason = format!("GraphQL errors: {}", messages.join("; "));
            let verdict = if codes
                .iter()
                .any(|c| matches!(*c, "UNAUTHENTICATED" | "FORBIDDEN"))
            {
                Verdict::BadKey
            } else if codes.iter().any(|c| {
                matches!(
                    *c,
                    "TOO_MANY_REQUESTS" | "RATE_LIMITED" | "RATE_LIMIT_EXCEEDED" | "THROTTLED"
                )
            }) {
                Verdict::Throttled
            } else {
                Verdict::Refused
            };
            return Err((reason, verdict));
        }
    }
    match value.get_mut("data").map(Value::take) {
        Some(data @ Value::Object(_)) => Ok(data),
        _ => Err(("the answer has no data".into(), Verdict::Refused)),
    }
}

fn list_of<N: DeserializeOwned>(mut data: Value, root: &str) -> Result<Connection<N>, ApiError> {
    let list = data.get_mut(root).map(Value::take).unwrap_or(Value::Null);
    serde_json::from_value(list).map_err(|e| ApiError::Refused {
        what: root.to_owned(),
        reason: format!("unexpected page: {e}"),
    })
}

fn snippet(body: &str) -> String {
    let mut s: String = body.chars().take(200).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    s
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Spaces requests evenly at the configured rate across every task of the pass. A 429 halves
/// the rate (down to one request every two seconds); each success wins back 2% of the
/// interval, so the pass settles just under the limit Stigg enforces.
struct Pacer {
    base: Duration,
    state: Mutex<(Instant, Duration)>,
}

impl Pacer {
    const SLOWEST: Duration = Duration::from_secs(2);

    fn new(rate: u32) -> Self {
        let base = Duration::from_secs(1) / rate.max(1);
        Self {
            base,
            state: Mutex::new((Instant::now(), base)),
        }
    }

    async fn wait(&self) {
        let at = {
            let mut s = self.state.lock().expect("pacer lock");
            let at = s.0.max(Instant::now());
            s.0 = at + s.1;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    fn slow_down(&self) {
        let mut s = self.state.lock().expect("pacer lock");
        s.1 = (s.1 * 2).min(Self::SLOWEST.max(self.base));
    }

    fn recover(&self) {
        let mut s = self.state.lock().expect("pacer lock");
        if s.1 > self.base {
            s.1 = s.1.mul_f64(0.98).max(self.base);
        }
    }

    #[cfg(test)]
    fn interval(&self) -> Duration {
        self.state.lock().unwrap().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_arguments_are_written_as_graphql_literals() {
        let args = json!({
            "paging": {"first": 100, "after": "a\"b"},
            "filter": {"status": {"in": ["ACTIVE", "IN_TRIAL"]}},
            "sorting": [{"field": "createdAt", "direction": "ASC"}],
        });
        let q = list_query("subscriptions", &args, "subscriptionId");
        assert_eq!(
            q,
            "query { subscriptions(filter: {status: {in: [\"ACTIVE\", \"IN_TRIAL\"]}}, \
             paging: {after: \"a\\\"b\", first: 100}, sorting: [{direction: ASC, field: createdAt}]) \
             { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { subscriptionId } } } }"
        );
        let first = list_query(
            "customers",
            &json!({"paging": {"first": 100, "after": null}}),
            "x",
        );
        assert!(
            first.contains("customers(paging: {after: null, first: 100})"),
            "{first}"
        );
    }

    #[test]
    fn graphql_errors_are_errors_even_with_data() {
        let v = json!({"data": {"customers": null}, "errors": [{"message": "boom"}]});
        let (reason, verdict) = graphql_data(v).unwrap_err();
        assert_eq!(verdict, Verdict::Refused);
        assert!(reason.contains("boom"));
        let v = json!({"errors": [{"message": "no", "extensions": {"code": "UNAUTHENTICATED"}}]});
        assert_eq!(graphql_data(v).unwrap_err().1, Verdict::BadKey);
        let v =
            json!({"errors": [{"message": "slow", "extensions": {"code": "TOO_MANY_REQUESTS"}}]});
        assert_eq!(graphql_data(v).unwrap_err().1, Verdict::Throttled);
        assert_eq!(
            graphql_data(json!({"data": null})).unwrap_err().1,
            Verdict::Refused
        );
        assert_eq!(
            graphql_data(json!({"data": {"a": 1}, "errors": []})).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn a_429_halves_the_rate_and_successes_win_it_back() {
        let p = Pacer::new(100);
        assert_eq!(p.interval(), Duration::from_millis(10));
        p.slow_down();
        p.slow_down();
        assert_eq!(p.interval(), Duration::from_millis(40));
        for _ in 0..200 {
            p.recover();
        }
        assert_eq!(p.interval(), Duration::from_millis(10));
        for _ in 0..20 {
            p.slow_down();
        }
        assert_eq!(p.interval(), Pacer::SLOWEST);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_at_the_rate() {
        let p = Pacer::new(10);
        let start = Instant::now();
        for _ in 0..11 {
            p.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
