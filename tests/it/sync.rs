//! `stigg-byos sync` against a fake of Stigg's API (`stigg_fake`): a whole account through
//! throttling, failures and a slow page; the same answers as the same state delivered as
//! events; deletions, versions in both arrival orders, a bad key, a cut-off listing, a second
//! run, `--resume`, pruning and its limit, and the lock between two passes.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use stigg_byos::apply::Outcome;
use stigg_byos::processor::Processor;

use crate::stigg_fake::{Fake, Model, KEY, STATUSES};
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// The account the fake serves: customer i has formulas for everything, so tests can say what
// each answer must be.

const PERIOD_START: &str = "2026-11-01T00:00:00.000Z";
const PERIOD_END: &str = "2099-12-01T00:00:00.000Z";
const ANCHOR: &str = "2026-01-01T00:00:00.000Z";
const API_LIMIT: u64 = 1000;
/// The customer-level features of a non-empty set, in order.
const ALL_FEATURES: [&str; 6] = [
    "feature-api-calls",
    "feature-emails",
    "feature-max-projects",
    "feature-region",
    "feature-sso",
    "feature-storage-gb",
];

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `base` (RFC 3339) plus `secs` seconds.
fn at(base: &str, secs: i64) -> String {
    let base = DateTime::parse_from_rfc3339(base)
        .unwrap()
        .with_timezone(&Utc);
    time(base + chrono::Duration::seconds(secs))
}

fn cid(i: usize) -> String {
    format!("c{i:03}")
}

fn site(i: usize) -> String {
    format!("site-{i}")
}

fn name(i: usize) -> Value {
    if i.is_multiple_of(7) {
        Value::Null
    } else {
        json!(format!("Customer {i}"))
    }
}

/// Customer `updatedAt`: its version.
fn customer_version(i: usize) -> String {
    at("2026-10-01T00:00:00Z", i as i64)
}

/// `entitlementUpdatedAt` of both of customer i's sets.
fn set_version(i: usize) -> String {
    at("2026-11-01T00:00:00Z", i as i64)
}

/// `usageUpdatedAt` of customer i's metered features.
fn usage_version(i: usize) -> String {
    at("2026-11-02T00:00:00Z", i as i64)
}

/// Current usage of `feature-api-calls` (limit 1000; some customers are over it).
fn api_usage(i: usize) -> u64 {
    (i as u64 * 37) % 1300
}

/// Customers with a resource-scoped subscription (and a resource entitlement set).
fn has_resource(i: usize) -> bool {
    i % 10 == 1
}

/// Customers whose only plain subscription has ended: an empty customer-level set.
fn empty_set(i: usize) -> bool {
    matches!(i % 6, 2 | 3)
}

fn customer_node(i: usize) -> Value {
    json!({
        "customerId": cid(i),
        "name": name(i),
        "email": format!("c{i}@example.com"),
        "billingId": if i.is_multiple_of(2) { json!(format!("cus_{i}")) } else { Value::Null },
        "createdAt": at("2026-01-01T00:00:00Z", 60 * i as i64),
        "updatedAt": customer_version(i),
    })
}

fn plan(i: usize) -> (&'static str, &'static str) {
    if i.is_multiple_of(2) {
        ("plan-pro", "Pro")
    } else {
        ("plan-basic", "Basic")
    }
}

fn subscription_nodes(i: usize) -> Vec<Value> {
    let status = STATUSES[i % 6];
    let ended = matches!(status, "CANCELED" | "EXPIRED");
    let (plan_id, plan_name) = plan(i);
    let mut nodes = vec![json!({
        "subscriptionId": format!("s{i:03}"),
        "status": status,
        "startDate": "2026-09-01T00:00:00.000Z",
        "endDate": if ended { json!("2026-11-01T00:00:00.000Z") } else { Value::Null },
        "cancellationDate": if status == "CANCELED" { json!("2026-10-15T00:00:00.000Z") } else { Value::Null },
        "trialEndDate": if status == "IN_TRIAL" { json!("2026-12-15T00:00:00.000Z") } else { Value::Null },
        "billingId": format!("sub_{i}"),
        "customer": {"customerId": cid(i)},
        "resource": null,
        "plan": {"refId": plan_id, "displayName": plan_name},
    })];
    if has_resource(i) {
        nodes.push(json!({
            "subscriptionId": format!("s{i:03}-site"),
            "status": "ACTIVE",
            "startDate": "2026-09-15T00:00:00.000Z",
            "endDate": null,
            "cancellationDate": null,
            "trialEndDate": null,
            "billingId": null,
            "customer": {"customerId": cid(i)},
            "resource": {"resourceId": site(i)},
            "plan": {"refId": "plan-site", "displayName": "Site"},
        }));
    }
    nodes
}

/// One Edge entitlement of customer i: the defaults of an unmetered grant, then `fields`.
fn entitlement(
    i: usize,
    resource: Option<&str>,
    feature: (&str, &str, &str),
    fields: Value,
) -> Value {
    let (ref_id, feature_type, meter_type) = feature;
    let mut e = json!({
        "feature": {"refId": ref_id, "featureType": feature_type, "meterType": meter_type,
                    "featureUnits": null, "displayName": ref_id},
        "isGranted": true, "accessDeniedReason": null,
        "usageLimit": null, "hasUnlimitedUsage": false, "hasSoftLimit": false,
        "currentUsage": null, "enumValues": null, "resetPeriod": null,
        "usagePeriodAnchor": null, "usagePeriodStart": null, "usagePeriodEnd": null,
        "nextResetDate": null, "validUntil": null,
        "entitlementUpdatedAt": set_version(i), "usageUpdatedAt": null,
        "customerId": cid(i), "resourceId": resource,
    });
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn metered(i: usize, usage: u64, limit: Value) -> Value {
    json!({"currentUsage": usage, "usageLimit": limit, "resetPeriod": "MONTH",
           "usagePeriodAnchor": ANCHOR, "usagePeriodStart": PERIOD_START,
           "usagePeriodEnd": PERIOD_END, "nextResetDate": PERIOD_END,
           "usageUpdatedAt": usage_version(i)})
}

/// Every feature kind: BOOLEAN, ENUM, unmetered NUMBER, metered with a limit, soft limit,
/// unlimited.
fn customer_state(i: usize) -> Value {
    if empty_set(i) {
        return json!({"accessDeniedReason": "NoActiveSubscription", "entitlements": []});
    }
    let mut emails = metered(i, 640, json!(500));
    emails["hasSoftLimit"] = json!(true);
    json!({"accessDeniedReason": null, "entitlements": [
        entitlement(i, None, ("feature-sso", "BOOLEAN", "None"), json!({})),
        entitlement(i, None, ("feature-region", "ENUM", "None"), json!({"enumValues": ["us", "eu"]})),
        entitlement(i, None, ("feature-max-projects", "NUMBER", "None"), json!({"usageLimit": 25})),
        entitlement(i, None, ("feature-api-calls", "NUMBER", "Incremental"),
                    metered(i, api_usage(i), json!(API_LIMIT))),
        entitlement(i, None, ("feature-emails", "NUMBER", "Incremental"), emails),
        entitlement(i, None, ("feature-storage-gb", "NUMBER", "Fluctuating"),
                    json!({"hasUnlimitedUsage": true, "currentUsage": 812,
                           "usageUpdatedAt": usage_version(i)})),
    ]})
}

/// A resource's set: a BOOLEAN and a metered feature used exactly up to its limit.
fn resource_state(i: usize) -> Value {
    let s = site(i);
    json!({"accessDeniedReason": null, "entitlements": [
        entitlement(i, Some(&s), ("feature-custom-domain", "BOOLEAN", "None"), json!({})),
        entitlement(i, Some(&s), ("feature-page-views", "NUMBER", "Incremental"),
                    metered(i, 100, json!(100))),
    ]})
}

/// Customers c000..c{n-1} with their subscriptions and entitlement states.
fn world(n: usize, page_size: usize) -> Model {
    let mut m = Model {
        page_size,
        ..Model::default()
    };
    for i in 0..n {
        m.customers.push(customer_node(i));
        m.subscriptions.extend(subscription_nodes(i));
        m.states.insert((cid(i), None), customer_state(i));
        if has_resource(i) {
            m.states.insert((cid(i), Some(site(i))), resource_state(i));
        }
    }
    m
}

fn resource_customers(n: usize) -> usize {
    (0..n).filter(|&i| has_resource(i)).count()
}

// ---------------------------------------------------------------------------------------------
// The same state as events.

fn event_meter(edge: &Value) -> Value {
    match edge.as_str().map(str::to_ascii_uppercase).as_deref() {
        Some("INCREMENTAL") => json!("INCREMENTAL"),
        Some("FLUCTUATING") => json!("FLUCTUATING"),
        _ => Value::Null,
    }
}

fn event_feature(e: &Value) -> Value {
    json!({"id": e["feature"]["refId"], "featureType": e["feature"]["featureType"],
           "meterType": event_meter(&e["feature"]["meterType"])})
}

fn event_entitlement(e: &Value) -> Value {
    json!({
        "feature": event_feature(e),
        "usageLimit": e["usageLimit"], "hasUnlimitedUsage": e["hasUnlimitedUsage"],
        "hasSoftLimit": e["hasSoftLimit"], "currentUsage": e["currentUsage"],
        "usagePeriodAnchor": e["usagePeriodAnchor"], "usagePeriodStart": e["usagePeriodStart"],
        "usagePeriodEnd": e["usagePeriodEnd"], "resetPeriod": e["resetPeriod"],
        "enumValues": e["enumValues"], "creditBalance": null,
    })
}

fn resource_ref(resource: Option<&str>) -> Value {
    resource.map_or(Value::Null, |r| json!({"id": r}))
}

/// What Stigg would have published to bring an empty replica to the model's state:
/// customers, subscriptions, every non-empty entitlement set at its version, and each usage at
/// its own version.
fn events_of(m: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for c in &m.customers {
        out.push(json!({
            "type": "customer.created", "messageId": format!("cu-{}", c["customerId"].as_str().unwrap()),
            "timestamp": c["updatedAt"], "id": c["customerId"], "name": c["name"],
            "email": c["email"], "billingId": c["billingId"],
        }));
    }
    for s in &m.subscriptions {
        out.push(json!({
            "type": "subscription.created", "messageId": format!("su-{}", s["subscriptionId"].as_str().unwrap()),
            "timestamp": "2026-11-01T00:00:00.000Z", "id": s["subscriptionId"],
            "customer": {"id": s["customer"]["customerId"]},
            "plan": {"id": s["plan"]["refId"], "name": s["plan"]["displayName"]},
            "status": s["status"], "billingId": s["billingId"],
            "startDate": s["startDate"], "endDate": s["endDate"],
            "trialEndDate": s["trialEndDate"], "cancellationDate": s["cancellationDate"],
            "resource": resource_ref(s["resource"]["resourceId"].as_str()),
        }));
    }
    for ((customer, resource), state) in &m.states {
        let list = state["entitlements"].as_array().unwrap();
        if list.is_empty() {
            continue;
        }
        let version = list
            .iter()
            .find_map(|e| e["entitlementUpdatedAt"].as_str())
            .unwrap();
        let tag = format!("{customer}-{}", resource.as_deref().unwrap_or(""));
        out.push(json!({
            "type": "entitlements.updated", "messageId": format!("en-{tag}"),
            "timestamp": version, "entitlementsUpdatedAt": version,
            "customer": {"id": customer}, "resource": resource_ref(resource.as_deref()),
            "entitlements": list.iter().map(event_entitlement).collect::<Vec<_>>(),
        }));
        for e in list {
            let (Some(when), Some(_)) = (e["usageUpdatedAt"].as_str(), e["currentUsage"].as_f64())
            else {
                continue;
            };
            out.push(json!({
                "type": "measurement.reported",
                "messageId": format!("me-{tag}-{}", e["feature"]["refId"].as_str().unwrap()),
                "timestamp": when, "customer": {"id": customer},
                "resource": resource_ref(resource.as_deref()), "feature": event_feature(e),
                "currentUsage": e["currentUsage"], "usageLimit": e["usageLimit"],
                "hasUnlimitedUsage": e["hasUnlimitedUsage"], "hasSoftLimit": e["hasSoftLimit"],
                "usagePeriodAnchor": e["usagePeriodAnchor"],
                "usagePeriodStart": e["usagePeriodStart"], "usagePeriodEnd": e["usagePeriodEnd"],
                "resetPeriod": e["resetPeriod"],
            }));
        }
    }
    out.iter().map(Value::to_string).collect()
}

/// Applies event bodies in order through the processor; their outcomes (none may fail).
async fn apply(pool: &PgPool, bodies: &[String]) -> Vec<Outcome> {
    let processor = Processor::new(pool.clone()).keep_order(true);
    let mut outcomes = Vec::new();
    for chunk in bodies.chunks(50) {
        outcomes.extend(apply_with(&processor, chunk).await);
    }
    outcomes
}

fn customer_event(id: &str, name: &str, timestamp: &str) -> String {
    json!({"type": "customer.updated", "messageId": format!("seed-{id}-{timestamp}"),
           "timestamp": timestamp, "id": id, "name": name, "email": format!("{id}@seed.example"),
           "billingId": null})
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Running the binary and reading its summary.

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Counts {
    listed: u64,
    changed: u64,
    unchanged: u64,
    older: u64,
}

#[derive(Debug)]
struct Summary {
    customers: Counts,
    pruned: u64,
    subscriptions: Counts,
    sets: Counts,
    requests: u64,
    throttled: u64,
}

impl Run {
    /// The last line of stdout, which must be exactly the summary line.
    fn summary(&self) -> Summary {
        let line = self.stdout.lines().last().unwrap_or("");
        let words = line.replace("(429:", "(throttled:");
        let numbers: Vec<&str> = words
            .split_whitespace()
            .map(|w| w.trim_end_matches([',', ';', ')']))
            .filter(|w| w.parse::<f64>().is_ok())
            .collect();
        assert_eq!(numbers.len(), 16, "not a summary line: {line:?}\n{self}");
        let n: Vec<u64> = numbers[..15]
            .iter()
            .map(|w| {
                w.parse()
                    .unwrap_or_else(|_| panic!("{w} is no count in {line:?}"))
            })
            .collect();
        let expected = format!(
            "sync: customers {} listed, {} changed, {} unchanged, {} older than the replica, {} pruned; \
             subscriptions {} listed, {} changed, {} unchanged, {} older than the replica; \
             entitlement sets {} read, {} changed, {} unchanged, {} older than the replica; \
             requests {} (429: {}); {} s",
            n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], n[9], n[10], n[11], n[12], n[13],
            n[14], numbers[15]
        );
        assert_eq!(line, expected, "the summary line's form\n{self}");
        let counts = |k: usize| Counts {
            listed: n[k],
            changed: n[k + 1],
            unchanged: n[k + 2],
            older: n[k + 3],
        };
        Summary {
            customers: counts(0),
            pruned: n[4],
            subscriptions: counts(5),
            sets: counts(9),
            requests: n[13],
            throttled: n[14],
        }
    }
}

/// `stigg-byos sync ARGS` against the fake, with test rates; `env` overrides.
fn sync_command(
    db: &str,
    fake: &Fake,
    args: &[&str],
    env: &[(&str, &str)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("sync")
        .args(args)
        .env("DATABASE_URL", db)
        .env("STIGG_SERVER_API_KEY", KEY)
        .env("STIGG_API_URL", &fake.url)
        .env("STIGG_EDGE_URL", &fake.url)
        .env("SYNC_RATE", "2000")
        .env("SYNC_CONCURRENCY", "8")
        .env("SYNC_RETRY_SECONDS", "30")
        .env("RUST_LOG", "warn")
        .env_remove("SQS_QUEUE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn finish(cmd: &mut tokio::process::Command) -> Run {
    let started = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("sync ended within 180 s")
        .expect("sync ran");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

async fn sync(db: &str, fake: &Fake, args: &[&str], env: &[(&str, &str)]) -> Run {
    finish(&mut sync_command(db, fake, args, env)).await
}

/// A sync that must complete.
async fn sync_ok(db: &str, fake: &Fake, args: &[&str]) -> Summary {
    let run = sync(db, fake, args, &[]).await;
    assert_eq!(run.code, 0, "{run}");
    let refused = fake.model().refused.clone();
    assert!(refused.is_empty(), "the fake refused requests: {refused:?}");
    run.summary()
}

// ---------------------------------------------------------------------------------------------
// Reading the replica.

/// The `data` of a GraphQL answer that must have no errors.
async fn gql(app: &App, query: &str, variables: Value) -> Value {
    let body: Value = reqwest::Client::new()
        .post(format!("{}/graphql", app.base))
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// `Some(true)` live, `Some(false)` a tombstone, `None` never seen.
async fn live(pool: &PgPool, id: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT NOT is_deleted FROM customers WHERE customer_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn live_count(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM customers WHERE NOT is_deleted").await
}

/// The replica says the customer is deleted: a tombstone, CustomerNotFound, no GraphQL node.
async fn assert_deleted(pool: &PgPool, app: &App, id: &str) {
    assert_eq!(live(pool, id).await, Some(false), "{id} is a tombstone");
    let (s, b) = check(app, json!({"customerId": id, "featureId": "feature-sso"})).await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("CustomerNotFound")),
        "{id}: {b}"
    );
    let d = gql(
        app,
        "query($id: String!) { customer(customerId: $id) { customerId } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(d["customer"], Value::Null, "{id}");
}

fn same_time(a: &Value, b: &Value) -> bool {
    let parse = |v: &Value| v.as_str().map(|s| DateTime::parse_from_rfc3339(s).unwrap());
    parse(a) == parse(b)
}

const ENTITLEMENT_FIELDS: &str = "featureId featureType meterType usageLimit hasUnlimitedUsage \
    hasSoftLimit currentUsage usagePeriodStart usagePeriodEnd resetPeriod enumValues resourceId";

const SUBSCRIPTION_FIELDS: &str = "subscriptionId customerId status planId planName billingId \
    resourceId startDate endDate cancellationDate trialEndDate";

/// Everything GraphQL shows of the replica, database timestamps left out; entitlement lists
/// in feature order.
async fn graphql_dump(app: &App, resource_sets: &[(String, String)]) -> Value {
    let q = format!(
        "{{ customers(first: 1000, orderBy: [CUSTOMER_ID_ASC]) {{ totalCount nodes {{
             customerId name email billingId entitlementList {{ {ENTITLEMENT_FIELDS} }}
             subscriptions(orderBy: [SUBSCRIPTION_ID_ASC]) {{ totalCount nodes {{ {SUBSCRIPTION_FIELDS} }} }}
           }} }}
           subscriptions(first: 1000, orderBy: [SUBSCRIPTION_ID_ASC]) {{ totalCount nodes {{ {SUBSCRIPTION_FIELDS} }} }} }}"
    );
    let mut d = gql(app, &q, json!({})).await;
    for c in d["customers"]["nodes"].as_array_mut().unwrap() {
        sort_by_feature(&mut c["entitlementList"]);
    }
    let rq = format!(
        "query($id: String!, $r: String) {{ customer(customerId: $id) {{ entitlementList(resourceId: $r) {{ {ENTITLEMENT_FIELDS} }} }} }}"
    );
    let mut resources = Vec::new();
    for (customer, r) in resource_sets {
        let mut list = gql(app, &rq, json!({"id": customer, "r": r})).await["customer"]
            ["entitlementList"]
            .clone();
        sort_by_feature(&mut list);
        resources.push(json!({"customerId": customer, "resourceId": r, "list": list}));
    }
    d["resources"] = Value::Array(resources);
    d
}

/// The paths where two JSON values differ, with both sides.
fn json_differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                json_differences(va, vb, &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_differences(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("  {path}: {a} / {b}")),
        _ => {}
    }
}

fn sort_by_feature(list: &mut Value) {
    if let Some(a) = list.as_array_mut() {
        a.sort_by(|x, y| x["featureId"].as_str().cmp(&y["featureId"].as_str()));
    }
}

fn features_of(list: &Value) -> Vec<String> {
    let mut f: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["featureId"].as_str().unwrap().to_string())
        .collect();
    f.sort();
    f
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_copies_a_whole_account_through_throttling_a_failure_and_a_slow_page() {
    let n = 250;
    let mut m = world(n, 40);
    let customer_page_3 = m.page_key("customers", 3);
    let subscription_page_2 = m.page_key("subscriptions", 2);
    m.throttle_every = 29;
    m.fail_once.insert(customer_page_3.clone());
    m.fail_once.insert(format!("edge:{}", cid(17)));
    m.slow
        .insert(subscription_page_2.clone(), Duration::from_millis(1500));
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;

    let s = sync_ok(&url, &fake, &[]).await;
    let subscriptions = (n + resource_customers(n)) as u64;
    let sets = (n + resource_customers(n)) as u64;
    let non_empty = sets - (0..n).filter(|&i| empty_set(i)).count() as u64;
    assert_eq!(
        s.customers,
        Counts {
            listed: n as u64,
            changed: n as u64,
            unchanged: 0,
            older: 0
        }
    );
    assert_eq!(s.pruned, 0);
    assert_eq!(
        s.subscriptions,
        Counts {
            listed: subscriptions,
            changed: subscriptions,
            unchanged: 0,
            older: 0
        }
    );
    assert_eq!(s.sets.listed, sets, "{s:?}");
    assert_eq!(s.sets.older, 0, "{s:?}");
    assert_eq!(
        s.sets.changed + s.sets.unchanged + s.sets.older,
        sets,
        "{s:?}"
    );
    assert!(s.sets.changed >= non_empty, "{s:?}");
    {
        let f = fake.model();
        assert!(f.throttled > 0);
        assert_eq!(s.throttled, f.throttled, "429s counted");
        assert_eq!(s.requests, f.total, "requests counted");
        assert!(
            f.hits(&customer_page_3) >= 2,
            "the page that failed once was asked again"
        );
        assert!(f.hits(&format!("edge:{}", cid(17))) >= 2);
        for i in 0..n {
            assert!(f.hits(&format!("edge:{}", cid(i))) >= 1, "{} read", cid(i));
            if has_resource(i) {
                assert!(f.hits(&format!("edge:{}:{}", cid(i), site(i))) >= 1);
            }
        }
    }
    assert_eq!(live_count(&pool).await, n as i64);

    let app = serve_http(&pool, &url, &[]).await;
    // every customer's metered limit, as the model says
    for i in 0..n {
        let (status, b) = check(
            &app,
            json!({"customerId": cid(i), "featureId": "feature-api-calls"}),
        )
        .await;
        if empty_set(i) {
            let reason = if has_resource(i) {
                "NoFeatureEntitlementInSubscription"
            } else {
                "NoActiveSubscription"
            };
            assert_eq!(
                (status, &b["accessDeniedReason"]),
                (403, &json!(reason)),
                "{}: {b}",
                cid(i)
            );
        } else {
            let usage = api_usage(i);
            let expected = if usage <= API_LIMIT { 200 } else { 403 };
            assert_eq!(status, expected, "{}: {b}", cid(i));
            assert_eq!(b["currentUsage"], json!(usage), "{}: {b}", cid(i));
            assert_eq!(b["usageLimit"], json!(API_LIMIT), "{}: {b}", cid(i));
        }
    }

    // every kind of feature, on c000 (usage 0)
    let c = cid(0);
    let cases = [
        (json!({"featureId": "feature-sso"}), 200, Value::Null),
        (
            json!({"featureId": "feature-region", "requestedValues": ["eu"]}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-region", "requestedValues": ["ap"]}),
            403,
            json!("RequestedValuesMismatch"),
        ),
        (
            json!({"featureId": "feature-max-projects"}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-api-calls", "requestedUsage": 1000}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-api-calls", "requestedUsage": 1001}),
            403,
            json!("RequestedUsageExceedingLimit"),
        ),
        (
            json!({"featureId": "feature-emails", "requestedUsage": 10}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-storage-gb", "requestedUsage": 1e9}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-nope"}),
            403,
            json!("NoFeatureEntitlementInSubscription"),
        ),
    ];
    for (mut body, status, reason) in cases {
        body["customerId"] = json!(c);
        let (s, b) = check(&app, body.clone()).await;
        assert_eq!(
            (s, &b["accessDeniedReason"]),
            (status, &reason),
            "{body}: {b}"
        );
    }
    let (_, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-max-projects"}),
    )
    .await;
    assert_eq!(b["value"], json!(25));
    let (_, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-emails"}),
    )
    .await;
    assert_eq!(
        (&b["hasSoftLimit"], &b["currentUsage"]),
        (&json!(true), &json!(640)),
        "{b}"
    );
    let (_, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-storage-gb"}),
    )
    .await;
    assert_eq!(b["isUnlimited"], json!(true), "{b}");
    let (_, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-region"}),
    )
    .await;
    assert_eq!(b["enumValues"], json!(["us", "eu"]), "{b}");

    // a resource's own set (c001 has site-1)
    let (c, r) = (cid(1), site(1));
    for (body, status, reason) in [
        (
            json!({"featureId": "feature-custom-domain", "resourceId": r}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-page-views", "resourceId": r}),
            200,
            Value::Null,
        ),
        (
            json!({"featureId": "feature-page-views", "resourceId": r, "requestedUsage": 1}),
            403,
            json!("RequestedUsageExceedingLimit"),
        ),
        (
            json!({"featureId": "feature-sso", "resourceId": r}),
            403,
            json!("NoFeatureEntitlementInSubscription"),
        ),
        (
            json!({"featureId": "feature-sso", "resourceId": "site-nope"}),
            403,
            json!("CustomerResourceNotFound"),
        ),
    ] {
        let mut body = body;
        body["customerId"] = json!(c);
        let (s, b) = check(&app, body.clone()).await;
        assert_eq!(
            (s, &b["accessDeniedReason"]),
            (status, &reason),
            "{body}: {b}"
        );
    }

    // GraphQL: every customer and subscription as listed
    let d = gql(
        &app,
        "{ customers(first: 1000, orderBy: [CUSTOMER_ID_ASC]) { totalCount nodes { customerId name email billingId } } }",
        json!({}),
    )
    .await;
    assert_eq!(d["customers"]["totalCount"], json!(n));
    let expected: Vec<Value> = (0..n)
        .map(|i| {
            let c = customer_node(i);
            json!({"customerId": c["customerId"], "name": c["name"], "email": c["email"], "billingId": c["billingId"]})
        })
        .collect();
    assert_eq!(d["customers"]["nodes"], json!(expected));
    let d = gql(
        &app,
        &format!("{{ subscriptions(first: 1000, orderBy: [SUBSCRIPTION_ID_ASC]) {{ totalCount nodes {{ {SUBSCRIPTION_FIELDS} }} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(d["subscriptions"]["totalCount"], json!(subscriptions));
    let got = d["subscriptions"]["nodes"].as_array().unwrap();
    let mut want: Vec<Value> = (0..n).flat_map(subscription_nodes).collect();
    want.sort_by(|a, b| {
        a["subscriptionId"]
            .as_str()
            .cmp(&b["subscriptionId"].as_str())
    });
    assert_eq!(got.len(), want.len());
    let mut statuses = BTreeSet::new();
    for (g, w) in got.iter().zip(&want) {
        let what = format!("{g} from {w}");
        assert_eq!(g["subscriptionId"], w["subscriptionId"], "{what}");
        assert_eq!(g["customerId"], w["customer"]["customerId"], "{what}");
        assert_eq!(g["status"], w["status"], "{what}");
        assert_eq!(g["planId"], w["plan"]["refId"], "{what}");
        assert_eq!(g["planName"], w["plan"]["displayName"], "{what}");
        assert_eq!(g["billingId"], w["billingId"], "{what}");
        assert_eq!(g["resourceId"], w["resource"]["resourceId"], "{what}");
        for (gf, wf) in [
            ("startDate", "startDate"),
            ("endDate", "endDate"),
            ("cancellationDate", "cancellationDate"),
            ("trialEndDate", "trialEndDate"),
        ] {
            assert!(same_time(&g[gf], &w[wf]), "{gf}: {what}");
        }
        statuses.insert(g["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses.len(), STATUSES.len(), "every status: {statuses:?}");

    // typed entitlements: every kind, as sent
    let d = gql(
        &app,
        &format!(
            "{{ customer(customerId: \"c004\") {{ entitlementList {{ {ENTITLEMENT_FIELDS} }} }} }}"
        ),
        json!({}),
    )
    .await;
    let mut list = d["customer"]["entitlementList"].clone();
    sort_by_feature(&mut list);
    let by = |f: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["featureId"] == json!(f))
            .cloned()
            .unwrap_or_else(|| panic!("{f} missing from {list}"))
    };
    assert_eq!(features_of(&list), ALL_FEATURES);
    let api = by("feature-api-calls");
    assert_eq!(
        (
            &api["featureType"],
            &api["usageLimit"],
            &api["currentUsage"],
            &api["resetPeriod"]
        ),
        (
            &json!("NUMBER"),
            &json!(1000.0),
            &json!(api_usage(4) as f64),
            &json!("MONTH")
        ),
        "{api}"
    );
    assert!(
        same_time(&api["usagePeriodEnd"], &json!(PERIOD_END)),
        "{api}"
    );
    assert_eq!(by("feature-region")["enumValues"], json!(["us", "eu"]));
    assert_eq!(by("feature-emails")["hasSoftLimit"], json!(true));
    assert_eq!(by("feature-storage-gb")["hasUnlimitedUsage"], json!(true));
    assert_eq!(by("feature-sso")["featureType"], json!("BOOLEAN"));
    app.stop().await;
}

/// The issue's "done when": the snapshot gives the same answers as the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_gives_the_same_answers_as_the_same_state_delivered_as_events() {
    let n = 60;
    let m = world(n, 25);
    let bodies = events_of(&m);
    let (pool_a, url_a) = migrated_pool().await;
    apply(&pool_a, &bodies).await;
    let fake = Fake::start(m).await;
    let (pool_b, url_b) = migrated_pool().await;
    sync_ok(&url_b, &fake, &[]).await;

    let a = serve_http(&pool_a, &url_a, &[]).await;
    let b = serve_http(&pool_b, &url_b, &[]).await;
    let features = [
        "feature-sso",
        "feature-region",
        "feature-max-projects",
        "feature-api-calls",
        "feature-emails",
        "feature-storage-gb",
        "feature-custom-domain",
        "feature-page-views",
        "feature-nope",
    ];
    let mut requests = Vec::new();
    for i in 0..n + 1 {
        // c{n} was never seen by either
        let mut resources = vec![Value::Null, json!("site-nope")];
        if has_resource(i) {
            resources.push(json!(site(i)));
        }
        for r in &resources {
            for f in features {
                for usage in [0, 1, 400, 2000] {
                    requests.push(json!({"customerId": cid(i), "featureId": f,
                                         "resourceId": r, "requestedUsage": usage}));
                }
                if f == "feature-region" {
                    for v in [json!(["eu"]), json!(["ap"]), json!(["us", "eu"])] {
                        requests.push(json!({"customerId": cid(i), "featureId": f,
                                             "resourceId": r, "requestedValues": v}));
                    }
                }
            }
        }
    }
    let mut differences = Vec::new();
    let mut reasons = BTreeSet::new();
    let mut allowed = 0;
    for req in &requests {
        let from_events = check(&a, req.clone()).await;
        let from_sync = check(&b, req.clone()).await;
        if from_events.0 == 200 {
            allowed += 1;
        }
        if let Some(r) = from_events.1["accessDeniedReason"].as_str() {
            reasons.insert(r.to_string());
        }
        if from_events != from_sync {
            differences.push(format!(
                "{req}\n  events: {} {}\n  sync:   {} {}",
                from_events.0, from_events.1, from_sync.0, from_sync.1
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} /check-access answers differ, e.g.\n{}",
        differences.len(),
        requests.len(),
        differences
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // the grid means something: both answers of every kind occur
    assert!(allowed > 500, "{allowed} allowed");
    for r in [
        "CustomerNotFound",
        "CustomerResourceNotFound",
        "NoActiveSubscription",
        "NoFeatureEntitlementInSubscription",
        "RequestedUsageExceedingLimit",
        "RequestedValuesMismatch",
    ] {
        assert!(reasons.contains(r), "{r} never answered: {reasons:?}");
    }

    let resource_sets: Vec<(String, String)> = (0..n)
        .filter(|&i| has_resource(i))
        .map(|i| (cid(i), site(i)))
        .collect();
    let ga = graphql_dump(&a, &resource_sets).await;
    let gb = graphql_dump(&b, &resource_sets).await;
    assert_eq!(ga["customers"]["totalCount"], json!(n));
    assert_eq!(
        ga["customers"]["nodes"][4]["entitlementList"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let mut differences = Vec::new();
    json_differences(&ga, &gb, "", &mut differences);
    assert!(
        differences.is_empty(),
        "{} GraphQL values differ (events / sync), e.g.\n{}",
        differences.len(),
        differences
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_deleted_between_its_listing_and_its_entitlement_read_becomes_a_tombstone() {
    let n = 30;
    let mut m = world(n, 10);
    m.vanish_when_listed.insert(cid(7), "CustomerNotFound");
    m.vanish_when_listed.insert(cid(13), "CustomerIsArchived");
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    let s = sync_ok(&url, &fake, &[]).await;
    assert_eq!(s.customers.listed, n as u64, "{s:?}");
    assert!(fake.hits(&format!("edge:{}", cid(7))) >= 1);
    assert!(fake.hits(&format!("edge:{}", cid(13))) >= 1);

    let app = serve_http(&pool, &url, &[]).await;
    assert_deleted(&pool, &app, &cid(7)).await;
    assert_deleted(&pool, &app, &cid(13)).await;
    assert_eq!(live_count(&pool).await, n as i64 - 2);
    // the others are whole
    let (s, b) = check(
        &app,
        json!({"customerId": cid(4), "featureId": "feature-sso"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    app.stop().await;
}

/// The events of the version tests: for each kind of state, one event older than the
/// snapshot copy and one newer.
struct VersionCase {
    events_old: Vec<String>,
    events_new: Vec<String>,
}

const C_OLD: usize = 1; // customer version
const C_NEW: usize = 2;
const E_OLD: usize = 4; // entitlement set version
const E_NEW: usize = 5;
const U_OLD: usize = 10; // usage version
const U_NEW: usize = 11;
const S_OLD: usize = 6; // subscription (the snapshot's version is its request time - 2 s)
const S_NEW: usize = 8;

fn version_events(new_subscription_at: &str) -> VersionCase {
    let hour = 3600;
    let day = 24 * hour;
    let set = |i: usize, version: String, feature: &str| {
        json!({"type": "entitlements.updated", "messageId": format!("v-set-{i}-{version}"),
               "timestamp": version, "entitlementsUpdatedAt": version,
               "customer": {"id": cid(i)}, "resource": null,
               "entitlements": [{"feature": {"id": feature, "featureType": "BOOLEAN", "meterType": null}}]})
        .to_string()
    };
    let usage = |i: usize, when: String, value: u64| {
        json!({"type": "measurement.reported", "messageId": format!("v-use-{i}-{when}"),
               "timestamp": when, "customer": {"id": cid(i)}, "resource": null,
               "feature": {"id": "feature-api-calls", "featureType": "NUMBER", "meterType": "INCREMENTAL"},
               "currentUsage": value, "usageLimit": API_LIMIT, "usagePeriodAnchor": ANCHOR,
               "usagePeriodStart": PERIOD_START, "usagePeriodEnd": PERIOD_END, "resetPeriod": "MONTH"})
        .to_string()
    };
    let subscription = |i: usize, when: &str, plan: &str| {
        json!({"type": "subscription.updated", "messageId": format!("v-sub-{i}-{when}"),
               "timestamp": when, "id": format!("s{i:03}"), "customer": {"id": cid(i)},
               "plan": {"id": plan, "name": plan}, "status": STATUSES[i % 6],
               "startDate": "2026-09-01T00:00:00.000Z"})
        .to_string()
    };
    let an_hour_ago = time(Utc::now() - chrono::Duration::hours(1));
    VersionCase {
        events_old: vec![
            customer_event(
                &cid(C_OLD),
                "stale name",
                &at(&customer_version(C_OLD), -day),
            ),
            set(E_OLD, at(&set_version(E_OLD), -day), "feature-stale"),
            usage(U_OLD, at(&usage_version(U_OLD), -hour), 999),
            subscription(S_OLD, &an_hour_ago, "plan-stale"),
        ],
        events_new: vec![
            customer_event(
                &cid(C_NEW),
                "fresh name",
                &at(&customer_version(C_NEW), day),
            ),
            set(E_NEW, at(&set_version(E_NEW), day), "feature-fresh"),
            usage(U_NEW, at(&usage_version(U_NEW), hour), 3),
            subscription(S_NEW, new_subscription_at, "plan-fresh"),
        ],
    }
}

/// The replica holds the snapshot where the old events were and the new events elsewhere.
async fn assert_versions_merged(pool: &PgPool, url: &str) {
    let app = serve_http(pool, url, &[]).await;
    let stored_name = |i: usize| {
        let app = &app;
        async move {
            gql(
                app,
                "query($id: String!) { customer(customerId: $id) { name } }",
                json!({"id": cid(i)}),
            )
            .await["customer"]["name"]
                .clone()
        }
    };
    assert_eq!(
        stored_name(C_OLD).await,
        name(C_OLD),
        "an older customer event lost"
    );
    assert_eq!(
        stored_name(C_NEW).await,
        json!("fresh name"),
        "a newer customer event won"
    );

    let features = |i: usize| {
        let app = &app;
        async move {
            let d = gql(
                app,
                "query($id: String!) { customer(customerId: $id) { entitlementList { featureId } } }",
                json!({"id": cid(i)}),
            )
            .await;
            features_of(&d["customer"]["entitlementList"])
        }
    };
    assert_eq!(
        features(E_OLD).await,
        ALL_FEATURES,
        "an older entitlement set lost"
    );
    assert_eq!(
        features(E_NEW).await,
        ["feature-fresh"],
        "a newer entitlement set won"
    );

    let used = |i: usize| {
        let app = &app;
        async move {
            check(
                app,
                json!({"customerId": cid(i), "featureId": "feature-api-calls"}),
            )
            .await
            .1["currentUsage"]
                .clone()
        }
    };
    assert_eq!(
        used(U_OLD).await,
        json!(api_usage(U_OLD)),
        "an older usage lost"
    );
    assert_eq!(
        used(U_NEW).await,
        json!(3),
        "a newer usage won (though lower)"
    );

    let plan_of = |i: usize| {
        let app = &app;
        async move {
            gql(
                app,
                "query($id: String!) { subscription(subscriptionId: $id) { planId } }",
                json!({"id": format!("s{i:03}")}),
            )
            .await["subscription"]["planId"]
                .clone()
        }
    };
    assert_eq!(
        plan_of(S_OLD).await,
        json!(plan(S_OLD).0),
        "an older subscription event lost"
    );
    assert_eq!(
        plan_of(S_NEW).await,
        json!("plan-fresh"),
        "a newer subscription event won"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_the_sync_older_lose_and_newer_win() {
    let fake = Fake::start(world(12, 100)).await;
    let (pool, url) = migrated_pool().await;
    // the newer subscription event is dated after the pass will have read it
    let later = time(Utc::now() + chrono::Duration::minutes(30));
    let case = version_events(&later);
    apply(&pool, &case.events_old).await;
    apply(&pool, &case.events_new).await;
    let s = sync_ok(&url, &fake, &[]).await;
    assert_versions_merged(&pool, &url).await;
    // (a set whose newer event won may still count as changed: its usage, versioned apart,
    // is the snapshot's)
    assert!(
        s.customers.older >= 1,
        "the customer with a newer event: {s:?}"
    );
    assert!(
        s.subscriptions.older >= 1,
        "the subscription with a newer event: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_the_sync_older_lose_and_newer_win() {
    let fake = Fake::start(world(12, 100)).await;
    let (pool, url) = migrated_pool().await;
    sync_ok(&url, &fake, &[]).await;
    let now = time(Utc::now());
    let case = version_events(&now);
    let outcomes = apply(&pool, &case.events_old).await;
    assert_eq!(outcomes, vec![Outcome::Stale; 4], "older than the snapshot");
    let outcomes = apply(&pool, &case.events_new).await;
    assert_eq!(
        outcomes,
        vec![Outcome::Applied; 4],
        "newer than the snapshot"
    );
    assert_versions_merged(&pool, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_stops_at_once_names_the_key_and_writes_nothing() {
    for status in [401, 403] {
        let mut m = world(30, 10);
        m.unauthorized_status = status;
        let fake = Fake::start(m).await;
        let (pool, url) = migrated_pool().await;
        apply(
            &pool,
            &[customer_event("seeded", "Seeded", "2026-10-01T00:00:00Z")],
        )
        .await;
        let run = sync(&url, &fake, &[], &[("STIGG_SERVER_API_KEY", "not-the-key")]).await;
        assert_eq!(run.code, 1, "{status}: {run}");
        assert!(
            run.stderr.contains("STIGG_SERVER_API_KEY"),
            "{status}: {run}"
        );
        assert!(
            run.elapsed < Duration::from_secs(15),
            "{status}: stopped at once, not after retrying (SYNC_RETRY_SECONDS=30): {run}"
        );
        assert_eq!(live(&pool, "seeded").await, Some(true), "nothing pruned");
        for (table, rows) in [
            ("customers", 1),
            ("subscriptions", 0),
            ("entitlement_sets", 0),
            ("entitlements", 0),
            ("usage", 0),
        ] {
            assert_eq!(
                count(&pool, &format!("SELECT count(*) FROM {table}")).await,
                rows,
                "{status}: {table}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_at_all_is_a_bad_setting() {
    let fake = Fake::start(world(3, 10)).await;
    let (_pool, url) = migrated_pool().await;
    let run = finish(sync_command(&url, &fake, &[], &[]).env_remove("STIGG_SERVER_API_KEY")).await;
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(fake.model().total, 0, "no request without a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cut_off_half_way_stops_early_and_prunes_nothing() {
    let n = 120;
    let mut m = world(n, 30);
    m.broken_from_page = Some(("customers", 2));
    let page_2 = m.page_key("customers", 2);
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    apply(
        &pool,
        &[customer_event("seeded", "Seeded", "2026-10-01T00:00:00Z")],
    )
    .await;
    let run = sync(&url, &fake, &[], &[("SYNC_RETRY_SECONDS", "2")]).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.elapsed < Duration::from_secs(60), "{run}");
    assert!(fake.hits(&page_2) >= 2, "the failing page was retried");
    assert_eq!(
        live(&pool, "seeded").await,
        Some(true),
        "nothing pruned after a partial pass"
    );
    // the first page stays written
    for i in 0..30 {
        let stored: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT name, email FROM customers WHERE customer_id = $1 AND NOT is_deleted",
        )
        .bind(cid(i))
        .fetch_optional(&pool)
        .await
        .unwrap();
        assert_eq!(
            stored,
            Some((
                name(i).as_str().map(String::from),
                Some(format!("c{i}@example.com"))
            )),
            "{} from page 1",
            cid(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graphql_errors_answer_stops_the_pass() {
    let mut m = world(60, 25);
    m.errors_on.insert("subscriptions:-".into());
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    apply(
        &pool,
        &[customer_event("seeded", "Seeded", "2026-10-01T00:00:00Z")],
    )
    .await;
    let run = sync(&url, &fake, &[], &[("SYNC_RETRY_SECONDS", "3")]).await;
    assert_eq!(run.code, 1, "a 200 with errors is an error: {run}");
    assert_eq!(live(&pool, "seeded").await, Some(true), "nothing pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_over_unchanged_data_changes_nothing() {
    let n = 120;
    let mut m = world(n, 50);
    m.throttle_every = 31;
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    let first = sync_ok(&url, &fake, &[]).await;
    assert_eq!(first.customers.changed, n as u64, "{first:?}");
    assert!(
        first.subscriptions.changed > 0 && first.sets.changed > 0,
        "{first:?}"
    );
    let second = sync_ok(&url, &fake, &[]).await;
    let subscriptions = (n + resource_customers(n)) as u64;
    let sets = subscriptions;
    for (kind, counts, listed) in [
        ("customers", &second.customers, n as u64),
        ("subscriptions", &second.subscriptions, subscriptions),
        ("entitlement sets", &second.sets, sets),
    ] {
        assert_eq!(counts.listed, listed, "{kind}: {second:?}");
        assert_eq!(counts.changed, 0, "{kind}: {second:?}");
        assert_eq!(
            counts.unchanged + counts.older,
            listed,
            "{kind}: {second:?}"
        );
    }
    assert_eq!(second.pruned, 0);
    assert_eq!(live_count(&pool).await, n as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_pass_stopped_early_skips_the_pages_already_read() {
    let n = 200;
    let mut m = world(n, 40);
    m.broken_from_page = Some(("customers", 3));
    let pages: Vec<String> = (1..=5).map(|k| m.page_key("customers", k)).collect();
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    apply(
        &pool,
        &[customer_event("seeded", "Seeded", "2026-10-01T00:00:00Z")],
    )
    .await;
    let run = sync(&url, &fake, &[], &[("SYNC_RETRY_SECONDS", "2")]).await;
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(fake.hits(&pages[0]), 1);
    assert_eq!(fake.hits(&pages[1]), 1);

    {
        let mut f = fake.model();
        f.broken_from_page = None;
        f.reset_counters();
    }
    let s = sync_ok(&url, &fake, &["--resume"]).await;
    assert_eq!(fake.hits(&pages[0]), 0, "page 1 not read again: {s:?}");
    assert_eq!(fake.hits(&pages[1]), 0, "page 2 not read again: {s:?}");
    for p in &pages[2..] {
        assert!(fake.hits(p) >= 1, "{p} read");
    }
    for i in 0..n {
        assert_eq!(live(&pool, &cid(i)).await, Some(true), "{} live", cid(i));
    }
    assert_eq!(
        live(&pool, "seeded").await,
        Some(false),
        "the resumed pass completed, so the unlisted customer is pruned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_kill_9_skips_the_pages_already_read() {
    let n = 200;
    let mut m = world(n, 40);
    let pages: Vec<String> = (1..=5).map(|k| m.page_key("customers", k)).collect();
    m.slow.insert(pages[2].clone(), Duration::from_secs(120));
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    let mut child = sync_command(&url, &fake, &[], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "pages 1 and 2 written and page 3 asked",
        || async {
            fake.hits(&pages[2]) >= 1
                && count(
                    &pool,
                    "SELECT count(*) FROM customers WHERE customer_id <= 'c079' AND version IS NOT NULL",
                )
                .await
                    == 80
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    {
        let mut f = fake.model();
        f.slow.clear();
        f.reset_counters();
    }
    sync_ok(&url, &fake, &["--resume"]).await;
    assert_eq!(fake.hits(&pages[0]), 0, "page 1 not read again");
    assert_eq!(fake.hits(&pages[1]), 0, "page 2 not read again");
    assert!(fake.hits(&pages[2]) >= 1, "page 3 read");
    assert_eq!(live_count(&pool).await, n as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_failing_entitlement_reads_skips_the_chunks_already_read() {
    // assumes an entitlement chunk smaller than the 220 keys before c200 (the default
    // concurrency's chunk is 128)
    let n = 250;
    let mut m = world(n, 50);
    m.broken_edge_from = Some(cid(200));
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    let run = sync(&url, &fake, &[], &[("SYNC_RETRY_SECONDS", "2")]).await;
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(fake.hits(&format!("edge:{}", cid(0))), 1);

    {
        let mut f = fake.model();
        f.broken_edge_from = None;
        f.reset_counters();
    }
    sync_ok(&url, &fake, &["--resume"]).await;
    assert_eq!(fake.hits("customers:-"), 0, "the listing is not read again");
    assert_eq!(
        fake.hits(&format!("edge:{}", cid(0))),
        0,
        "the first chunk of entitlement states is not read again"
    );
    for i in 200..n {
        assert!(
            fake.hits(&format!("edge:{}", cid(i))) >= 1,
            "{} read",
            cid(i)
        );
    }
    // the states read after the resume are in the replica (c246: usage 2 of 1000)
    let app = serve_http(&pool, &url, &[]).await;
    let (s, b) = check(
        &app,
        json!({"customerId": cid(246), "featureId": "feature-api-calls"}),
    )
    .await;
    assert_eq!(
        (s, &b["currentUsage"]),
        (200, &json!(api_usage(246))),
        "{b}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rate_bounds_the_requests_a_second() {
    // 1 + 1 listing pages and 20 + 2 entitlement reads
    let fake = Fake::start(world(20, 100)).await;
    let (_pool, url) = migrated_pool().await;
    let run = sync(&url, &fake, &[], &[("SYNC_RATE", "10")]).await;
    assert_eq!(run.code, 0, "{run}");
    let requests = fake.model().total;
    assert_eq!(requests, 24);
    // even with a full second's burst first, 14 more requests at 10 a second take 1.4 s
    assert!(
        run.elapsed >= Duration::from_millis(1300),
        "{requests} requests at SYNC_RATE=10: {run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_edge_stops_the_pass_after_its_retries() {
    let fake = Fake::start(world(20, 100)).await;
    // an Edge that hangs up on every connection (it keeps its port, so no other test's
    // server can take it)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            if let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        }
    });
    let (pool, url) = migrated_pool().await;
    apply(
        &pool,
        &[customer_event("seeded", "Seeded", "2026-10-01T00:00:00Z")],
    )
    .await;
    let run = sync(
        &url,
        &fake,
        &[],
        &[("SYNC_RETRY_SECONDS", "2"), ("STIGG_EDGE_URL", &closed)],
    )
    .await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.elapsed >= Duration::from_secs(2),
        "network errors are retried for SYNC_RETRY_SECONDS: {run}"
    );
    assert!(run.elapsed < Duration::from_secs(60), "{run}");
    assert_eq!(live(&pool, "seeded").await, Some(true), "nothing pruned");
}

/// A replica holding the listed customers (older versions) and `unlisted` others, all from
/// events dated before the pass, plus one unlisted customer dated after the pass started.
async fn replica_for_prune(unlisted: usize) -> (PgPool, String) {
    let (pool, url) = migrated_pool().await;
    let mut bodies: Vec<String> = (0..100)
        .map(|i| customer_event(&cid(i), "Old name", "2026-09-01T00:00:00Z"))
        .collect();
    bodies.extend(
        (0..unlisted)
            .map(|k| customer_event(&format!("gone-{k:02}"), "Gone", "2026-09-01T00:00:00Z")),
    );
    let later = time(Utc::now() + chrono::Duration::hours(1));
    bodies.push(customer_event("fresh-unlisted", "Fresh", &later));
    apply(&pool, &bodies).await;
    (pool, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_tombstones_unlisted_customers_older_than_the_pass() {
    let fake = Fake::start(world(100, 50)).await;
    let (pool, url) = replica_for_prune(5).await;
    let s = sync_ok(&url, &fake, &[]).await;
    assert_eq!(s.pruned, 5, "{s:?}");
    let app = serve_http(&pool, &url, &[]).await;
    for k in 0..5 {
        assert_deleted(&pool, &app, &format!("gone-{k:02}")).await;
    }
    assert_eq!(
        live(&pool, "fresh-unlisted").await,
        Some(true),
        "newer than the pass"
    );
    assert_eq!(live_count(&pool).await, 101);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_over_the_limit_refuses_unless_forced_or_allowed() {
    let fake = Fake::start(world(100, 50)).await;
    // 15 of 116 live customers: 13 %
    let (pool, url) = replica_for_prune(15).await;
    let run = sync(&url, &fake, &[], &[]).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.to_lowercase().contains("prune"),
        "says why: {run}"
    );
    assert_eq!(live_count(&pool).await, 116, "nothing pruned");
    assert_eq!(live(&pool, "gone-00").await, Some(true));

    let s = sync_ok(&url, &fake, &["--force"]).await;
    assert_eq!(s.pruned, 15, "{s:?}");
    assert_eq!(live(&pool, "gone-14").await, Some(false));
    assert_eq!(live(&pool, "fresh-unlisted").await, Some(true));
    assert_eq!(live_count(&pool).await, 101);

    let (pool, url) = replica_for_prune(15).await;
    let s = sync_ok(&url, &fake, &["--max-prune-percent", "20"]).await;
    assert_eq!(s.pruned, 15, "{s:?}");
    assert_eq!(live_count(&pool).await, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prune_keeps_unlisted_customers() {
    let fake = Fake::start(world(100, 50)).await;
    let (pool, url) = replica_for_prune(5).await;
    let s = sync_ok(&url, &fake, &["--no-prune"]).await;
    assert_eq!(s.pruned, 0, "{s:?}");
    assert_eq!(live_count(&pool).await, 106);
    assert_eq!(live(&pool, "gone-00").await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_at_once_refuses() {
    let mut m = world(60, 25);
    m.slow.insert("customers:-".into(), Duration::from_secs(6));
    let fake = Fake::start(m).await;
    let (pool, url) = migrated_pool().await;
    let first = tokio::spawn(finish_owned(sync_command(&url, &fake, &[], &[])));
    eventually(
        Duration::from_secs(30),
        "the first pass started listing",
        || async { fake.hits("customers:-") >= 1 },
    )
    .await;
    let second = sync(&url, &fake, &[], &[]).await;
    assert_eq!(second.code, 1, "{second}");
    assert!(second.stderr.contains("another sync"), "{second}");
    assert!(
        second.elapsed < Duration::from_secs(5),
        "refused at once: {second}"
    );
    let first = first.await.unwrap();
    assert_eq!(first.code, 0, "{first}");
    assert_eq!(live_count(&pool).await, 60);
    // the lock is released with the pass
    let third = sync(&url, &fake, &[], &[]).await;
    assert_eq!(third.code, 0, "{third}");
}

async fn finish_owned(mut cmd: tokio::process::Command) -> Run {
    finish(&mut cmd).await
}
