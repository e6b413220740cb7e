//! A fake of Stigg's read API (STIGG-API.md) for the `sync` tests: the GraphQL `customers` and
//! `subscriptions` listings and the Edge entitlement state, served on 127.0.0.1:0 from a model
//! the test may change between runs, with knobs for the faults a real pass meets and counters
//! of what was asked.
//!
//! Listings are ordered by id (the tests' ids sort in creation order) and a cursor is the id of
//! the last node of its page, so a customer deleted mid-pass does not shift the pages. Every
//! request is counted under a key: `customers:<after>` / `subscriptions:<after>` (`-` for the
//! first page), `edge:<customer>` or `edge:<customer>:<resource>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The server API key the fake accepts unless a test changes it.
pub const KEY: &str = "stigg-test-server-key";

pub const STATUSES: [&str; 6] = [
    "ACTIVE",
    "IN_TRIAL",
    "CANCELED",
    "EXPIRED",
    "NOT_STARTED",
    "PAYMENT_PENDING",
];

/// Stigg's state, the knobs and the counters.
pub struct Model {
    /// Customer nodes of the `customers` listing.
    pub customers: Vec<Value>,
    /// Subscription nodes of the `subscriptions` listing.
    pub subscriptions: Vec<Value>,
    /// `entitlementsState` objects by (customer, resource).
    pub states: BTreeMap<(String, Option<String>), Value>,

    /// The key every request must carry in `X-API-KEY`.
    pub key: String,
    /// The status of an answer to a wrong key (401 or 403).
    pub unauthorized_status: u16,
    /// The largest page the listings answer, whatever `first` asks.
    pub page_size: usize,
    /// Every `throttle_every`-th request (counting all of them) gets a 429; 0 = never.
    pub throttle_every: u64,
    /// Request keys answered 500 once.
    pub fail_once: HashSet<String>,
    /// Request keys answered only after a delay (every time).
    pub slow: HashMap<String, Duration>,
    /// (listing, page number from 1): that page and every later one of the listing answer 500.
    pub broken_from_page: Option<(&'static str, usize)>,
    /// Edge reads of customers whose id sorts at or after this one answer 500.
    pub broken_edge_from: Option<String>,
    /// Request keys answered 200 with a GraphQL `errors` list.
    pub errors_on: HashSet<String>,
    /// Customers that vanish right after a listing page showed them, with the reason the Edge
    /// then gives (`CustomerNotFound` or `CustomerIsArchived`).
    pub vanish_when_listed: HashMap<String, &'static str>,

    /// Customers gone, with the reason the Edge gives.
    pub gone: HashMap<String, &'static str>,
    /// Every request received.
    pub total: u64,
    /// 429 answers given.
    pub throttled: u64,
    /// Requests by key.
    pub per_key: HashMap<String, u64>,
    /// Requests the fake found malformed, with why (a test expects none).
    pub refused: Vec<String>,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            customers: Vec::new(),
            subscriptions: Vec::new(),
            states: BTreeMap::new(),
            key: KEY.into(),
            unauthorized_status: 401,
            page_size: 100,
            throttle_every: 0,
            fail_once: HashSet::new(),
            slow: HashMap::new(),
            broken_from_page: None,
            broken_edge_from: None,
            errors_on: HashSet::new(),
            vanish_when_listed: HashMap::new(),
            gone: HashMap::new(),
            total: 0,
            throttled: 0,
            per_key: HashMap::new(),
            refused: Vec::new(),
        }
    }
}

/// An answer, and how long to wait before giving it.
struct Answer {
    status: u16,
    body: Value,
    delay: Option<Duration>,
}

impl Answer {
    fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            delay: None,
        }
    }
}

impl Model {
    /// Counts the request and gives the answer of a fault, if one applies to it.
    fn admit(&mut self, key: &str, headers: &HeaderMap, edge: bool) -> Option<Answer> {
        self.total += 1;
        *self.per_key.entry(key.to_string()).or_default() += 1;
        if header(headers, "x-api-key") != Some(self.key.as_str()) {
            return Some(Answer::new(
                self.unauthorized_status,
                json!({"error": "Unauthorized", "message": "invalid API key"}),
            ));
        }
        if edge && header(headers, "x-api-version") != Some("1") {
            self.refused
                .push(format!("{key}: no X-API-VERSION: 1 header"));
            return Some(Answer::new(400, json!({"error": "missing X-API-VERSION"})));
        }
        if self.throttle_every > 0 && self.total.is_multiple_of(self.throttle_every) {
            self.throttled += 1;
            return Some(Answer::new(
                429,
                json!({"error": "rate_limit_exceeded", "message": "Too many requests"}),
            ));
        }
        if self.fail_once.remove(key) {
            return Some(Answer::new(500, json!({"error": "internal error (once)"})));
        }
        None
    }

    fn graphql(&mut self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let query = request["query"].as_str().unwrap_or("");
        let variables = &request["variables"];
        let root = if query.contains("customers(") {
            "customers"
        } else if query.contains("subscriptions(") {
            "subscriptions"
        } else {
            self.refused.push(format!("unknown GraphQL query: {query}"));
            return Answer::new(200, errors("fake: unknown query"));
        };
        let after = variables["paging"]["after"].as_str().map(str::to_string);
        let key = format!("{root}:{}", after.as_deref().unwrap_or("-"));
        if let Some(answer) = self.admit(&key, headers, false) {
            return answer;
        }
        if let Err(why) = check_variables(root, variables) {
            self.refused.push(format!("{key}: {why}"));
            return Answer::new(200, errors(&format!("fake: {why}")));
        }
        if self.errors_on.contains(&key) {
            return Answer::new(200, errors("fake: this listing is unavailable"));
        }
        let first = variables["paging"]["first"].as_u64().unwrap_or(100) as usize;
        let first = first.min(self.page_size);
        let id_field = if root == "customers" {
            "customerId"
        } else {
            "subscriptionId"
        };
        let nodes = if root == "customers" {
            &mut self.customers
        } else {
            &mut self.subscriptions
        };
        nodes.sort_by(|a, b| a[id_field].as_str().cmp(&b[id_field].as_str()));
        let start = after.as_deref().map_or(0, |a| {
            nodes
                .iter()
                .filter(|n| n[id_field].as_str().unwrap_or("") <= a)
                .count()
        });
        let page_number = start / self.page_size.max(1) + 1;
        if self
            .broken_from_page
            .is_some_and(|(r, k)| r == root && page_number >= k)
        {
            return Answer::new(500, json!({"error": "internal error"}));
        }
        let page: Vec<Value> = nodes.iter().skip(start).take(first).cloned().collect();
        let has_next = start + page.len() < nodes.len();
        let total = nodes.len();
        let edges: Vec<Value> = page
            .iter()
            .map(|n| json!({"cursor": n[id_field], "node": n}))
            .collect();
        let end_cursor = page.last().map_or(Value::Null, |n| n[id_field].clone());
        if root == "customers" {
            for node in &page {
                let id = node["customerId"].as_str().unwrap_or("").to_string();
                if let Some(reason) = self.vanish_when_listed.remove(&id) {
                    self.delete_customer(&id, reason);
                }
            }
        }
        Answer {
            status: 200,
            body: json!({"data": {root: {
                "edges": edges,
                "pageInfo": {"hasNextPage": has_next, "endCursor": end_cursor},
                "totalCount": total,
            }}}),
            delay: self.slow.get(&key).copied(),
        }
    }

    fn edge(&mut self, headers: &HeaderMap, customer: &str, resource: Option<&str>) -> Answer {
        let key = match resource {
            Some(r) => format!("edge:{customer}:{r}"),
            None => format!("edge:{customer}"),
        };
        if let Some(answer) = self.admit(&key, headers, true) {
            return answer;
        }
        if self
            .broken_edge_from
            .as_deref()
            .is_some_and(|from| customer >= from)
        {
            return Answer::new(500, json!({"error": "internal error"}));
        }
        let known = self
            .customers
            .iter()
            .any(|c| c["customerId"].as_str() == Some(customer));
        let state = if let Some(reason) = self.gone.get(customer) {
            json!({"accessDeniedReason": reason, "entitlements": []})
        } else if !known {
            json!({"accessDeniedReason": "CustomerNotFound", "entitlements": []})
        } else {
            self.states
                .get(&(customer.to_string(), resource.map(str::to_string)))
                .cloned()
                .unwrap_or_else(
                    || json!({"accessDeniedReason": "NoActiveSubscription", "entitlements": []}),
                )
        };
        Answer {
            status: 200,
            body: json!({"data": {"entitlementsState": state}}),
            delay: self.slow.get(&key).copied(),
        }
    }

    /// Deletes (archives) a customer: it leaves the listings and the Edge says `reason`.
    pub fn delete_customer(&mut self, id: &str, reason: &'static str) {
        self.customers
            .retain(|c| c["customerId"].as_str() != Some(id));
        self.subscriptions
            .retain(|s| s["customer"]["customerId"].as_str() != Some(id));
        self.states.retain(|(c, _), _| c != id);
        self.gone.insert(id.to_string(), reason);
    }

    pub fn reset_counters(&mut self) {
        self.total = 0;
        self.throttled = 0;
        self.per_key.clear();
    }

    /// Requests received under `key`.
    pub fn hits(&self, key: &str) -> u64 {
        self.per_key.get(key).copied().unwrap_or(0)
    }

    /// The key of page `n` (from 1) of a listing, for the model as it is now.
    pub fn page_key(&self, root: &str, n: usize) -> String {
        if n <= 1 {
            return format!("{root}:-");
        }
        let (nodes, id_field) = if root == "customers" {
            (&self.customers, "customerId")
        } else {
            (&self.subscriptions, "subscriptionId")
        };
        let mut ids: Vec<&str> = nodes
            .iter()
            .map(|n| n[id_field].as_str().unwrap_or(""))
            .collect();
        ids.sort_unstable();
        format!("{root}:{}", ids[(n - 1) * self.page_size - 1])
    }
}

/// The listing variables the contract asks for: `paging.first`, `paging.after`, a `createdAt`
/// ascending sort of customers, and every status of subscriptions.
fn check_variables(root: &str, v: &Value) -> Result<(), String> {
    if v["paging"]["first"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("paging.first missing: {v}"));
    }
    if !(v["paging"]["after"].is_null() || v["paging"]["after"].is_string()) {
        return Err(format!("paging.after is not a cursor: {v}"));
    }
    if root == "customers" && v["sorting"] != json!([{"field": "createdAt", "direction": "ASC"}]) {
        return Err(format!("customers not sorted by createdAt ASC: {v}"));
    }
    if root == "subscriptions" {
        let asked: HashSet<&str> = v["filter"]["status"]["in"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if STATUSES.iter().any(|s| !asked.contains(s)) {
            return Err(format!("subscriptions not filtered on every status: {v}"));
        }
    }
    Ok(())
}

fn errors(message: &str) -> Value {
    json!({"errors": [{"message": message, "extensions": {"code": "FAKE"}}], "data": null})
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

type Shared = Arc<Mutex<Model>>;

async fn respond(answer: Answer) -> Response {
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap();
    (status, Json(answer.body)).into_response()
}

async fn graphql(
    State(model): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let answer = model.lock().unwrap().graphql(&headers, &body);
    respond(answer).await
}

async fn edge(
    State(model): State<Shared>,
    headers: HeaderMap,
    Path(customer): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let resource = query.get("resourceId").map(String::as_str);
    let answer = model.lock().unwrap().edge(&headers, &customer, resource);
    respond(answer).await
}

/// The running fake; both `STIGG_API_URL` and `STIGG_EDGE_URL` point at `url`.
#[derive(Clone)]
pub struct Fake {
    pub url: String,
    model: Shared,
}

impl Fake {
    pub async fn start(model: Model) -> Fake {
        let model = Arc::new(Mutex::new(model));
        let app = Router::new()
            .route("/graphql", post(graphql))
            .route("/v1/c/{customer}/entitlements-state.json", get(edge))
            .with_state(model.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { url, model }
    }

    /// The model, to read counters or change Stigg's state and the knobs.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }

    pub fn hits(&self, key: &str) -> u64 {
        self.model().hits(key)
    }
}
