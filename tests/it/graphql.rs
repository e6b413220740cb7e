//! The GraphQL API against a database filled by real events through the processor:
//! PostGraphile-shaped queries (pagination both ways, orderBy, condition, nesting,
//! totalCount) answered with exact JSON, tombstones hidden, and every limit enforced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::support::*;

fn customer(
    id: &str,
    name: Option<&str>,
    email: &str,
    billing_id: Option<&str>,
    at: &str,
) -> String {
    event(
        "customer.created",
        &[
            ("messageId", json!(format!("m-{id}"))),
            ("timestamp", json!(at)),
            ("id", json!(id)),
            ("name", json!(name)),
            ("email", json!(email)),
            ("billingId", json!(billing_id)),
        ],
    )
}

fn subscription(id: &str, customer: &str, plan: (&str, &str), status: &str, start: &str) -> String {
    event(
        "subscription.created",
        &[
            ("messageId", json!(format!("m-{id}"))),
            ("timestamp", json!("2026-10-05T00:00:00.000Z")),
            ("id", json!(id)),
            (
                "customer",
                json!({ "id": customer, "name": null, "email": null, "billingId": null }),
            ),
            ("plan", json!({ "id": plan.0, "name": plan.1 })),
            ("status", json!(status)),
            ("billingId", json!(format!("sub_{id}"))),
            ("startDate", json!(start)),
        ],
    )
}

fn deleted(id: &str) -> String {
    event(
        "customer.deleted",
        &[
            ("messageId", json!(format!("m-del-{id}"))),
            ("timestamp", json!("2026-11-20T08:00:00.000Z")),
            ("id", json!(id)),
        ],
    )
}

fn for_customer(name: &str, id: &str, message_id: &str) -> String {
    event(
        name,
        &[
            ("messageId", json!(message_id)),
            (
                "customer",
                json!({ "id": id, "name": null, "email": null, "billingId": null }),
            ),
        ],
    )
}

/// Five live customers (a, b, c, d, f; f has no name), one deleted (e, with a subscription
/// before), one deleted never seen (ghost); four live subscriptions; entitlements and usage
/// for cust-a.
async fn seed(pool: &PgPool) {
    let bodies = vec![
        customer(
            "cust-a",
            Some("Acme"),
            "ops@acme.example",
            Some("cus_a"),
            "2026-10-01T09:00:00.000Z",
        ),
        customer(
            "cust-b",
            Some("Beta"),
            "hello@beta.example",
            None,
            "2026-10-01T09:01:00.000Z",
        ),
        customer(
            "cust-c",
            Some("Acme"),
            "billing@acme.example",
            Some("cus_c"),
            "2026-10-01T09:02:00.000Z",
        ),
        customer(
            "cust-d",
            Some("Delta"),
            "d@delta.example",
            None,
            "2026-10-01T09:03:00.000Z",
        ),
        customer(
            "cust-e",
            Some("Echo"),
            "e@echo.example",
            None,
            "2026-10-01T09:04:00.000Z",
        ),
        customer(
            "cust-f",
            None,
            "f@foxtrot.example",
            None,
            "2026-10-01T09:05:00.000Z",
        ),
        subscription(
            "sub-a1",
            "cust-a",
            ("plan-pro", "Pro"),
            "ACTIVE",
            "2026-10-01T09:05:00.000Z",
        ),
        subscription(
            "sub-a2",
            "cust-a",
            ("plan-basic", "Basic"),
            "CANCELED",
            "2026-09-01T00:00:00.000Z",
        ),
        subscription(
            "sub-b1",
            "cust-b",
            ("plan-pro", "Pro"),
            "ACTIVE",
            "2026-10-02T00:00:00.000Z",
        ),
        subscription(
            "sub-c1",
            "cust-c",
            ("plan-basic", "Basic"),
            "IN_TRIAL",
            "2026-10-03T00:00:00.000Z",
        ),
        subscription(
            "sub-e1",
            "cust-e",
            ("plan-pro", "Pro"),
            "ACTIVE",
            "2026-10-04T00:00:00.000Z",
        ),
        for_customer("entitlements.updated", "cust-a", "m-ent-a"),
        for_customer("entitlements.updated.resource", "cust-a", "m-ent-a-blue"),
        for_customer("measurement.reported", "cust-a", "m-usage-a"),
        deleted("cust-e"),
        deleted("cust-ghost"),
    ];
    apply_events(pool, &bodies).await;
}

async fn app_with_world(extra: &[&str]) -> (App, PgPool) {
    let (pool, url) = migrated_pool().await;
    seed(&pool).await;
    (serve_http(&pool, &url, extra).await, pool)
}

/// POSTs a query; the whole JSON answer.
async fn gql(app: &App, query: &str, variables: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

/// The `data` of an answer that must have no errors.
async fn data(app: &App, query: &str, variables: Value) -> Value {
    let body = gql(app, query, variables).await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// The error messages of an answer that must have some (and no data).
async fn errors(app: &App, query: &str) -> Vec<String> {
    let body = gql(app, query, json!({})).await;
    assert_eq!(body["data"], Value::Null, "{body}");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {body}"));
    errors
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn ids(nodes: &Value, key: &str) -> Vec<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[key].as_str().unwrap().to_string())
        .collect()
}

const PAGE: &str = "query($first: Int, $last: Int, $after: Cursor, $before: Cursor, $offset: Int) {
  customers(first: $first, last: $last, after: $after, before: $before, offset: $offset) {
    totalCount
    edges { cursor node { customerId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}";

async fn page(app: &App, vars: Value) -> (Vec<String>, bool, bool, Value) {
    let d = data(app, PAGE, vars).await;
    let c = &d["customers"];
    assert_eq!(c["totalCount"], json!(5));
    let edges = c["edges"].as_array().unwrap();
    let ids: Vec<String> = edges
        .iter()
        .map(|e| e["node"]["customerId"].as_str().unwrap().to_string())
        .collect();
    let info = &c["pageInfo"];
    if let (Some(first), Some(last)) = (edges.first(), edges.last()) {
        assert_eq!(info["startCursor"], first["cursor"]);
        assert_eq!(info["endCursor"], last["cursor"]);
    } else {
        assert_eq!(
            (&info["startCursor"], &info["endCursor"]),
            (&Value::Null, &Value::Null)
        );
    }
    (
        ids,
        info["hasPreviousPage"].as_bool().unwrap(),
        info["hasNextPage"].as_bool().unwrap(),
        info.clone(),
    )
}

#[tokio::test]
async fn customers_page_forward_with_first_and_after() {
    let (app, _pool) = app_with_world(&[]).await;
    let (ids, prev, next, info) = page(&app, json!({ "first": 2 })).await;
    assert_eq!(
        (ids, prev, next),
        (vec!["cust-a".into(), "cust-b".into()], false, true)
    );
    // PostGraphile's cursor shape: base64 of ["primary_key_asc", [<key>]]
    assert_eq!(
        info["startCursor"],
        json!("WyJwcmltYXJ5X2tleV9hc2MiLFsiY3VzdC1hIl1d")
    );

    let (ids, prev, next, info) =
        page(&app, json!({ "first": 2, "after": info["endCursor"] })).await;
    assert_eq!(
        (ids, prev, next),
        (vec!["cust-c".into(), "cust-d".into()], true, true)
    );
    // the tombstone between cust-d and cust-f is skipped
    let (ids, prev, next, info) =
        page(&app, json!({ "first": 2, "after": info["endCursor"] })).await;
    assert_eq!((ids, prev, next), (vec!["cust-f".into()], true, false));
    let (ids, prev, next, _) = page(&app, json!({ "first": 2, "after": info["endCursor"] })).await;
    assert_eq!((ids, prev, next), (Vec::<String>::new(), true, false));

    // offset, and no arguments at all
    let (ids, prev, next, _) = page(&app, json!({ "first": 2, "offset": 3 })).await;
    assert_eq!(
        (ids, prev, next),
        (vec!["cust-d".into(), "cust-f".into()], true, false)
    );
    let (ids, prev, next, _) = page(&app, json!({})).await;
    assert_eq!(ids, ["cust-a", "cust-b", "cust-c", "cust-d", "cust-f"]);
    assert_eq!((prev, next), (false, false));
    app.stop().await;
}

#[tokio::test]
async fn customers_page_back_with_last_and_before() {
    let (app, _pool) = app_with_world(&[]).await;
    let (ids, prev, next, info) = page(&app, json!({ "last": 2 })).await;
    assert_eq!(
        (ids, prev, next),
        (vec!["cust-d".into(), "cust-f".into()], true, false)
    );
    let (ids, prev, next, info) =
        page(&app, json!({ "last": 2, "before": info["startCursor"] })).await;
    assert_eq!(
        (ids, prev, next),
        (vec!["cust-b".into(), "cust-c".into()], true, true)
    );
    let (ids, prev, next, _) =
        page(&app, json!({ "last": 2, "before": info["startCursor"] })).await;
    assert_eq!((ids, prev, next), (vec!["cust-a".into()], false, true));

    // a window between two cursors
    let (_, _, _, first) = page(&app, json!({ "first": 1 })).await;
    let (_, _, _, last) = page(&app, json!({ "last": 1 })).await;
    let (ids, prev, next, _) = page(
        &app,
        json!({ "after": first["endCursor"], "before": last["startCursor"] }),
    )
    .await;
    assert_eq!(
        (ids, prev, next),
        (
            vec!["cust-b".into(), "cust-c".into(), "cust-d".into()],
            true,
            true
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn order_by_two_columns_pages_through_nulls() {
    let (app, _pool) = app_with_world(&[]).await;
    let q = "query($after: Cursor, $first: Int) {
      customers(orderBy: [NAME_ASC, EMAIL_DESC], first: $first, after: $after) {
        nodes { customerId name email }
        pageInfo { endCursor hasNextPage }
      }
    }";
    let d = data(&app, q, json!({})).await;
    assert_eq!(
        d["customers"]["nodes"],
        json!([
            { "customerId": "cust-a", "name": "Acme", "email": "ops@acme.example" },
            { "customerId": "cust-c", "name": "Acme", "email": "billing@acme.example" },
            { "customerId": "cust-b", "name": "Beta", "email": "hello@beta.example" },
            { "customerId": "cust-d", "name": "Delta", "email": "d@delta.example" },
            { "customerId": "cust-f", "name": null, "email": "f@foxtrot.example" }
        ])
    );
    // the same order, two at a time, across the NULL name
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let d = data(&app, q, json!({ "first": 2, "after": after })).await;
        seen.extend(ids(&d["customers"]["nodes"], "customerId"));
        if !d["customers"]["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = d["customers"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, ["cust-a", "cust-c", "cust-b", "cust-d", "cust-f"]);

    let d = data(
        &app,
        "{ customers(orderBy: [NAME_DESC, CUSTOMER_ID_DESC]) { nodes { customerId } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        ids(&d["customers"]["nodes"], "customerId"),
        ["cust-f", "cust-d", "cust-b", "cust-c", "cust-a"]
    );

    // a cursor made for another ordering is refused
    let d = data(
        &app,
        "{ customers(first: 1) { pageInfo { endCursor } } }",
        json!({}),
    )
    .await;
    let body = gql(
        &app,
        q,
        json!({ "after": d["customers"]["pageInfo"]["endCursor"] }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["message"],
        json!("Invalid cursor."),
        "{body}"
    );

    let d = data(
        &app,
        "{ subscriptions(orderBy: [STATUS_ASC, START_DATE_DESC]) { nodes { subscriptionId status startDate } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        d["subscriptions"]["nodes"],
        json!([
            { "subscriptionId": "sub-b1", "status": "ACTIVE", "startDate": "2026-10-02T00:00:00.000000+00:00" },
            { "subscriptionId": "sub-a1", "status": "ACTIVE", "startDate": "2026-10-01T09:05:00.000000+00:00" },
            { "subscriptionId": "sub-a2", "status": "CANCELED", "startDate": "2026-09-01T00:00:00.000000+00:00" },
            { "subscriptionId": "sub-c1", "status": "IN_TRIAL", "startDate": "2026-10-03T00:00:00.000000+00:00" }
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn conditions_are_equalities_anded() {
    let (app, _pool) = app_with_world(&[]).await;
    let d = data(
        &app,
        r#"{
          acme: customers(condition: { name: "Acme" }) { totalCount nodes { customerId } }
          both: customers(condition: { name: "Acme", billingId: "cus_c" }) { totalCount nodes { customerId } }
          noName: customers(condition: { name: null }) { totalCount nodes { customerId } }
          active: subscriptions(condition: { status: "ACTIVE", planId: "plan-pro" }) {
            totalCount nodes { subscriptionId customerId }
          }
          started: subscriptions(condition: { startDate: "2026-10-03T02:00:00+02:00" }) {
            nodes { subscriptionId }
          }
        }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        d,
        json!({
            "acme": { "totalCount": 2, "nodes": [{ "customerId": "cust-a" }, { "customerId": "cust-c" }] },
            "both": { "totalCount": 1, "nodes": [{ "customerId": "cust-c" }] },
            "noName": { "totalCount": 1, "nodes": [{ "customerId": "cust-f" }] },
            "active": { "totalCount": 2, "nodes": [
                { "subscriptionId": "sub-a1", "customerId": "cust-a" },
                { "subscriptionId": "sub-b1", "customerId": "cust-b" }
            ] },
            "started": { "nodes": [{ "subscriptionId": "sub-c1" }] }
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn nested_subscriptions_with_their_customer() {
    let (app, _pool) = app_with_world(&[]).await;
    let d = data(
        &app,
        "{
          customers {
            totalCount
            nodes {
              customerId name email billingId
              subscriptions {
                totalCount
                nodes { subscriptionId status planId planName billingId customer { customerId name } }
              }
            }
          }
        }",
        json!({}),
    )
    .await;
    let sub = |id: &str, status: &str, plan: &str, plan_name: &str, customer: &str, name: &str| {
        json!({
            "subscriptionId": id, "status": status, "planId": plan, "planName": plan_name,
            "billingId": format!("sub_{id}"), "customer": { "customerId": customer, "name": name }
        })
    };
    assert_eq!(
        d,
        json!({ "customers": { "totalCount": 5, "nodes": [
            { "customerId": "cust-a", "name": "Acme", "email": "ops@acme.example", "billingId": "cus_a",
              "subscriptions": { "totalCount": 2, "nodes": [
                  sub("sub-a1", "ACTIVE", "plan-pro", "Pro", "cust-a", "Acme"),
                  sub("sub-a2", "CANCELED", "plan-basic", "Basic", "cust-a", "Acme")
              ] } },
            { "customerId": "cust-b", "name": "Beta", "email": "hello@beta.example", "billingId": null,
              "subscriptions": { "totalCount": 1, "nodes": [
                  sub("sub-b1", "ACTIVE", "plan-pro", "Pro", "cust-b", "Beta")
              ] } },
            { "customerId": "cust-c", "name": "Acme", "email": "billing@acme.example", "billingId": "cus_c",
              "subscriptions": { "totalCount": 1, "nodes": [
                  sub("sub-c1", "IN_TRIAL", "plan-basic", "Basic", "cust-c", "Acme")
              ] } },
            { "customerId": "cust-d", "name": "Delta", "email": "d@delta.example", "billingId": null,
              "subscriptions": { "totalCount": 0, "nodes": [] } },
            { "customerId": "cust-f", "name": null, "email": "f@foxtrot.example", "billingId": null,
              "subscriptions": { "totalCount": 0, "nodes": [] } }
        ] } })
    );

    // nested connection arguments, batched across the customers that share them
    let d = data(
        &app,
        "{ customers(first: 3) { nodes { customerId
             subscriptions(first: 1, orderBy: START_DATE_ASC) {
               totalCount
               edges { node { subscriptionId } }
               pageInfo { hasNextPage hasPreviousPage }
             } } } }",
        json!({}),
    )
    .await;
    let page = |id: &str, total: i64, next: bool| {
        json!({ "totalCount": total, "edges": [{ "node": { "subscriptionId": id } }],
                "pageInfo": { "hasNextPage": next, "hasPreviousPage": false } })
    };
    assert_eq!(
        d,
        json!({ "customers": { "nodes": [
            { "customerId": "cust-a", "subscriptions": page("sub-a2", 2, true) },
            { "customerId": "cust-b", "subscriptions": page("sub-b1", 1, false) },
            { "customerId": "cust-c", "subscriptions": page("sub-c1", 1, false) }
        ] } })
    );
    app.stop().await;
}

#[tokio::test]
async fn one_customer_with_subscriptions_entitlements_and_access() {
    let (app, _pool) = app_with_world(&[]).await;
    let q = "query($id: String!) { customer(customerId: $id) { customerId name email
               subscriptions { nodes { subscriptionId status planId } } } }";
    let d = data(&app, q, json!({ "id": "cust-a" })).await;
    assert_eq!(
        d,
        json!({ "customer": { "customerId": "cust-a", "name": "Acme", "email": "ops@acme.example",
            "subscriptions": { "nodes": [
                { "subscriptionId": "sub-a1", "status": "ACTIVE", "planId": "plan-pro" },
                { "subscriptionId": "sub-a2", "status": "CANCELED", "planId": "plan-basic" }
            ] } } })
    );
    let d = data(&app, q, json!({ "id": "cust-d" })).await;
    assert_eq!(d["customer"]["subscriptions"], json!({ "nodes": [] }));
    assert_eq!(
        data(&app, q, json!({ "id": "nobody" })).await,
        json!({ "customer": null })
    );

    // the customer-level list as Stigg sent it, with the newer measurement merged in
    let d = data(
        &app,
        "{ customer(customerId: \"cust-a\") { entitlements } }",
        json!({}),
    )
    .await;
    let mut expected = fixture_json("entitlements.updated")["entitlements"].clone();
    for e in expected.as_array_mut().unwrap() {
        if e["feature"]["id"] == "feature-api-calls" {
            e["currentUsage"] = json!(9650);
        }
    }
    assert_eq!(d["customer"]["entitlements"], expected);
    let d = data(
        &app,
        "{ customer(customerId: \"cust-b\") { entitlements } }",
        json!({}),
    )
    .await;
    assert_eq!(d["customer"]["entitlements"], Value::Null);

    let d = data(
        &app,
        r#"{ customer(customerId: "cust-a") {
              all: entitlementList { featureId featureType meterType usageLimit hasUnlimitedUsage
                                     hasSoftLimit currentUsage resetPeriod enumValues resourceId }
              blue: entitlementList(resourceId: "site-blue") { featureId currentUsage resourceId }
              calls: entitlementList { featureId usagePeriodStart usagePeriodEnd }
        } }"#,
        json!({}),
    )
    .await;
    let ent = |id: &str,
               ty: &str,
               meter: Value,
               limit: Value,
               unlimited: bool,
               soft: bool,
               usage: Value,
               reset: Value,
               enums: Value| {
        json!({ "featureId": id, "featureType": ty, "meterType": meter, "usageLimit": limit,
                "hasUnlimitedUsage": unlimited, "hasSoftLimit": soft, "currentUsage": usage,
                "resetPeriod": reset, "enumValues": enums, "resourceId": null })
    };
    let n = Value::Null;
    assert_eq!(
        d["customer"]["all"],
        json!([
            ent(
                "feature-api-calls",
                "NUMBER",
                json!("INCREMENTAL"),
                json!(10000.0),
                false,
                false,
                json!(9650.0),
                json!("MONTH"),
                n.clone()
            ),
            ent(
                "feature-emails",
                "NUMBER",
                json!("INCREMENTAL"),
                json!(500.0),
                false,
                true,
                json!(640.0),
                json!("MONTH"),
                n.clone()
            ),
            ent(
                "feature-max-projects",
                "NUMBER",
                n.clone(),
                json!(25.0),
                false,
                false,
                json!(0.0),
                n.clone(),
                n.clone()
            ),
            ent(
                "feature-region",
                "ENUM",
                n.clone(),
                n.clone(),
                false,
                false,
                json!(0.0),
                n.clone(),
                json!(["us", "eu"])
            ),
            ent(
                "feature-seats",
                "NUMBER",
                json!("FLUCTUATING"),
                json!(15.0),
                false,
                false,
                json!(12.0),
                n.clone(),
                n.clone()
            ),
            ent(
                "feature-sso",
                "BOOLEAN",
                n.clone(),
                n.clone(),
                false,
                false,
                json!(0.0),
                n.clone(),
                n.clone()
            ),
            ent(
                "feature-storage-gb",
                "NUMBER",
                json!("FLUCTUATING"),
                n.clone(),
                true,
                false,
                json!(812.0),
                n.clone(),
                n.clone()
            ),
        ])
    );
    assert_eq!(d["customer"]["blue"][0]["resourceId"], json!("site-blue"));
    assert_eq!(
        d["customer"]["calls"][0]["usagePeriodStart"],
        json!("2026-11-01T09:05:00.000000+00:00")
    );
    assert_eq!(
        d["customer"]["calls"][0]["usagePeriodEnd"],
        json!("2099-12-01T09:05:00.000000+00:00")
    );

    // access: the decision /check-access makes
    let fields = "hasAccess accessDeniedReason isUnlimited hasSoftLimit usageLimit currentUsage
                  requestedUsage resetPeriod usagePeriodStart usagePeriodEnd value enumValues";
    for (feature, usage, resource) in [
        ("feature-api-calls", 350.0, None),
        ("feature-api-calls", 351.0, None),
        ("feature-max-projects", 0.0, None),
        ("feature-region", 0.0, None),
        ("feature-nope", 0.0, None),
        ("feature-page-views", 1.0, Some("site-blue")),
        ("feature-sso", 0.0, Some("site-red")),
    ] {
        let q = format!(
            "query($f: String!, $u: Float, $r: String) {{ customer(customerId: \"cust-a\") {{
               access(featureId: $f, requestedUsage: $u, resourceId: $r) {{ {fields} }} }} }}"
        );
        let d = data(&app, &q, json!({ "f": feature, "u": usage, "r": resource })).await;
        let got = &d["customer"]["access"];
        let r = reqwest::Client::new()
            .post(format!("{}/check-access", app.base))
            .json(&json!({ "customerId": "cust-a", "featureId": feature, "requestedUsage": usage, "resourceId": resource }))
            .send()
            .await
            .unwrap();
        let want: Value = r.json().await.unwrap();
        for (k, v) in want.as_object().unwrap() {
            if k == "requestedValues" {
                continue;
            }
            match (v, &got[k]) {
                (Value::Number(a), Value::Number(b)) => {
                    assert_eq!(a.as_f64(), b.as_f64(), "{feature} {k}")
                }
                (Value::String(a), Value::String(b)) if k.starts_with("usagePeriod") => assert_eq!(
                    chrono::DateTime::parse_from_rfc3339(a).unwrap(),
                    chrono::DateTime::parse_from_rfc3339(b).unwrap()
                ),
                (a, b) => assert_eq!(a, b, "{feature} {k}"),
            }
        }
    }
    let d = data(
        &app,
        "{ customer(customerId: \"cust-a\") { access(featureId: \"feature-api-calls\", requestedUsage: 351) {
             hasAccess accessDeniedReason currentUsage usageLimit } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        d["customer"]["access"],
        json!({ "hasAccess": false, "accessDeniedReason": "RequestedUsageExceedingLimit",
                "currentUsage": 9650.0, "usageLimit": 10000.0 })
    );
    let body = gql(
        &app,
        "{ customer(customerId: \"cust-a\") { access(featureId: \"\") { hasAccess } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["message"],
        json!("featureId must not be empty")
    );
    app.stop().await;
}

#[tokio::test]
async fn subscription_lookup_with_datetimes_and_customer() {
    let (app, _pool) = app_with_world(&[]).await;
    let d = data(
        &app,
        "{ subscription(subscriptionId: \"sub-c1\") { subscriptionId customerId status planId planName
             billingId startDate endDate cancellationDate trialEndDate createdAt updatedAt
             customer { customerId email } } }",
        json!({}),
    )
    .await;
    let s = &d["subscription"];
    for k in ["createdAt", "updatedAt"] {
        let t = s[k].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with("+00:00"),
            "{t}"
        );
    }
    let mut s = s.clone();
    s.as_object_mut()
        .unwrap()
        .retain(|k, _| k != "createdAt" && k != "updatedAt");
    assert_eq!(
        s,
        json!({ "subscriptionId": "sub-c1", "customerId": "cust-c", "status": "IN_TRIAL",
                "planId": "plan-basic", "planName": "Basic", "billingId": "sub_sub-c1",
                "startDate": "2026-10-03T00:00:00.000000+00:00", "endDate": null,
                "cancellationDate": null, "trialEndDate": null,
                "customer": { "customerId": "cust-c", "email": "billing@acme.example" } })
    );
    app.stop().await;
}

#[tokio::test]
async fn tombstones_never_appear() {
    let (app, pool) = app_with_world(&[]).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customers WHERE is_deleted").await,
        2
    );
    let d = data(
        &app,
        r#"{
          e: customer(customerId: "cust-e") { customerId }
          ghost: customer(customerId: "cust-ghost") { customerId }
          sub: subscription(subscriptionId: "sub-e1") { subscriptionId }
          byId: customers(condition: { customerId: "cust-e" }) { totalCount nodes { customerId } }
          all: customers { totalCount nodes { customerId } }
          subs: subscriptions { totalCount nodes { subscriptionId } }
          last: customers(last: 1, orderBy: CUSTOMER_ID_ASC) { nodes { customerId } }
        }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        d,
        json!({
            "e": null, "ghost": null, "sub": null,
            "byId": { "totalCount": 0, "nodes": [] },
            "all": { "totalCount": 5, "nodes": [
                { "customerId": "cust-a" }, { "customerId": "cust-b" }, { "customerId": "cust-c" },
                { "customerId": "cust-d" }, { "customerId": "cust-f" }
            ] },
            "subs": { "totalCount": 4, "nodes": [
                { "subscriptionId": "sub-a1" }, { "subscriptionId": "sub-a2" },
                { "subscriptionId": "sub-b1" }, { "subscriptionId": "sub-c1" }
            ] },
            "last": { "nodes": [{ "customerId": "cust-f" }] }
        })
    );
    app.stop().await;
}

/// A subscription, then `levels` steps of `customer { subscriptions { nodes { … } } }`
/// (`levels` ≡ 1 mod 3 makes a valid query), then `customerId`: depth `levels + 2`.
fn deep(levels: usize) -> String {
    let mut q = String::from("customerId");
    for i in 0..levels {
        q = if i % 3 == 0 {
            format!("customer {{ {q} }}")
        } else if i % 3 == 1 {
            format!("nodes {{ {q} }}")
        } else {
            format!("subscriptions {{ {q} }}")
        };
    }
    format!("{{ subscription(subscriptionId: \"sub-a1\") {{ {q} }} }}")
}

#[tokio::test]
async fn depth_ten_is_answered_deeper_is_refused_and_the_server_stays_healthy() {
    let (app, _pool) = app_with_world(&[]).await;
    let d = data(
        &app,
        "{ customers { nodes { subscriptions { nodes { customer { subscriptions { nodes {
             customer { customerId } } } } } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        d["customers"]["nodes"][0]["subscriptions"]["nodes"][0]["customer"]["subscriptions"]
            ["nodes"][1]["customer"]["customerId"],
        json!("cust-a")
    );
    // exactly ten levels (the leaf counts)
    let d = data(
        &app,
        "{ customers(first: 1) { edges { node { subscriptions { nodes { customer {
             subscriptions { nodes { customer { customerId } } } } } } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        d["customers"]["edges"][0]["node"]["subscriptions"]["nodes"][0]["customer"]
            ["subscriptions"]["nodes"][0]["customer"]["customerId"],
        json!("cust-a")
    );
    // eleven levels
    assert_eq!(
        errors(
            &app,
            "{ customers(first: 1) { edges { node { subscriptions { nodes { customer {
                 subscriptions { nodes { customer { subscriptions { totalCount } } } } } } } } } } }"
        )
        .await,
        ["Query is nested too deep."]
    );
    assert!(gql(&app, &deep(7), json!({})).await.get("errors").is_none());
    assert_eq!(errors(&app, &deep(10)).await, ["Query is nested too deep."]);
    assert_eq!(errors(&app, &deep(49)).await, ["Query is nested too deep."]);
    // far deeper than any parser stack should see
    let huge = format!("{{ {}b{} }}", "a{".repeat(20_000), "}".repeat(20_000));
    assert!(huge.len() < 63 * 1024, "{}", huge.len());
    assert_eq!(errors(&app, &huge).await, ["Query is nested too deep."]);
    // fragments do not hide depth
    let inner = deep(10);
    let body = &inner[1..inner.len() - 1];
    assert_eq!(
        errors(
            &app,
            &format!("{{ ...F }} fragment F on Query {{ {body} }}")
        )
        .await,
        ["Query is nested too deep."]
    );
    let d = data(
        &app,
        "{ customer(customerId: \"cust-b\") { customerId } }",
        json!({}),
    )
    .await;
    assert_eq!(d, json!({ "customer": { "customerId": "cust-b" } }));
    let r = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test]
async fn mutations_big_pages_and_bad_arguments_are_refused() {
    let (app, _pool) = app_with_world(&[]).await;
    let e = errors(
        &app,
        "mutation { deleteCustomer(input: { customerId: \"cust-a\" }) { clientMutationId } }",
    )
    .await;
    assert!(e[0].to_lowercase().contains("mutation"), "{e:?}");
    let e = errors(&app, "subscription { customers { totalCount } }").await;
    assert!(e[0].to_lowercase().contains("subscription"), "{e:?}");

    let body = gql(
        &app,
        "{ customers(first: 5000) { nodes { customerId } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body,
        json!({ "data": { "customers": null }, "errors": [{
        "message": "`first` must be at most 1000.",
        "locations": [{ "line": 1, "column": 3 }],
        "path": ["customers"] }] })
    );
    for (q, message) in [
        (
            "{ customers(last: 1001) { totalCount } }",
            "`last` must be at most 1000.",
        ),
        (
            "{ customers(first: -1) { totalCount } }",
            "`first` must not be negative.",
        ),
        (
            "{ customers(offset: -1) { totalCount } }",
            "`offset` must not be negative.",
        ),
        (
            "{ customers(first: 1, last: 1) { totalCount } }",
            "Combining `first` and `last` is not supported.",
        ),
        (
            "{ customers(after: \"bm90IGEgY3Vyc29y\") { totalCount } }",
            "Invalid cursor.",
        ),
        (
            "{ customer(customerId: \"cust-a\") { subscriptions(first: 1001) { totalCount } } }",
            "`first` must be at most 1000.",
        ),
    ] {
        let body = gql(&app, q, json!({})).await;
        assert_eq!(body["errors"][0]["message"], json!(message), "{q}: {body}");
    }
    assert_eq!(
        errors(&app, "{ customers(first: 1000) { nodes { subscriptions(first: 1000) { nodes { subscriptionId } } } } }").await,
        ["Query is too complex."]
    );
    // the largest page is fine
    let d = data(&app, "{ customers(first: 1000) { totalCount } }", json!({})).await;
    assert_eq!(d, json!({ "customers": { "totalCount": 5 } }));
    app.stop().await;
}

#[tokio::test]
async fn database_errors_are_not_shown() {
    let (pool, url) = migrated_pool().await;
    seed(&pool).await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy(&proxy.url_for(&url))
        .unwrap();
    let app = serve_http(&proxied, &url, &[]).await;
    let q = "{ customer(customerId: \"cust-a\") { customerId } }";
    assert_eq!(
        data(&app, q, json!({})).await,
        json!({ "customer": { "customerId": "cust-a" } })
    );
    proxy.cut();
    let body = gql(&app, q, json!({})).await;
    assert_eq!(
        body["errors"][0]["message"],
        json!("internal error"),
        "{body}"
    );
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert!(body["errors"][0].get("extensions").is_none(), "{body}");
    proxy.restore();
    app.stop().await;
}

#[tokio::test]
async fn get_graphql_graphiql_and_introspection() {
    let (app, _pool) = app_with_world(&["--api-tokens", "alpha"]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/graphql", app.base))
        .query(&[
            (
                "query",
                "query($id: String!) { customer(customerId: $id) { name } }",
            ),
            ("variables", "{\"id\": \"cust-b\"}"),
        ])
        .bearer_auth("alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "data": { "customer": { "name": "Beta" } } })
    );

    // the same bearer token as /check-access; GraphiQL stays open
    let r = client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": "{ customers { totalCount } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .get(format!("{}/graphiql", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(
        html.contains("graphiql") && html.contains("/graphql"),
        "{html}"
    );

    // not JSON: a 400 that says so
    let r = client
        .post(format!("{}/graphql", app.base))
        .bearer_auth("alpha")
        .body("{ customers }")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("not a GraphQL request"));

    // the body limit holds for /graphql too
    let r = client
        .post(format!("{}/graphql", app.base))
        .bearer_auth("alpha")
        .json(&json!({ "query": format!("{{ customers {{ totalCount }} }} #{}", "x".repeat(70_000)) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // the introspection query GraphiQL and codegen tools send (deeper than 10) is answered
    let r = client
        .post(format!("{}/graphql", app.base))
        .bearer_auth("alpha")
        .json(&json!({ "query": INTROSPECTION, "operationName": "IntrospectionQuery" }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    let schema = &body["data"]["__schema"];
    assert_eq!(schema["queryType"]["name"], json!("Query"));
    assert_eq!(schema["mutationType"], Value::Null);
    assert_eq!(schema["subscriptionType"], Value::Null);
    let names: Vec<&str> = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in [
        "Customer",
        "Subscription",
        "CustomersConnection",
        "CustomersEdge",
        "CustomersOrderBy",
        "CustomerCondition",
        "SubscriptionsConnection",
        "SubscriptionsOrderBy",
        "SubscriptionCondition",
        "PageInfo",
        "Cursor",
        "Datetime",
        "JSON",
        "Entitlement",
        "AccessDecision",
    ] {
        assert!(names.contains(&t), "no type {t}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_page_of_customers_with_subscriptions_is_a_few_queries() {
    let (pool, url) = migrated_pool().await;
    let mut bodies = Vec::new();
    for i in 0..120 {
        let id = format!("cust-{i:03}");
        bodies.push(customer(
            &id,
            Some("Bulk"),
            "bulk@example.com",
            None,
            "2026-10-01T09:00:00.000Z",
        ));
        for j in 0..(i % 3) {
            bodies.push(subscription(
                &format!("sub-{i:03}-{j}"),
                &id,
                ("plan-pro", "Pro"),
                "ACTIVE",
                "2026-10-01T09:05:00.000Z",
            ));
        }
    }
    apply_events(&pool, &bodies).await;
    let acquired = Arc::new(AtomicUsize::new(0));
    let counter = acquired.clone();
    let reused = acquired.clone();
    // every acquire either reuses an idle connection or opens one
    let counted = PgPoolOptions::new()
        .before_acquire(move |_conn, _meta| {
            reused.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .after_connect(move |_conn, _meta| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        })
        .connect(&url)
        .await
        .unwrap();
    let app = serve_http(&counted, &url, &[]).await;
    let q = "{ customers(first: 100) { totalCount nodes { customerId
               subscriptions { totalCount nodes { subscriptionId customer { customerId } } } } } }";
    let _warm = data(
        &app,
        "{ customers(first: 1) { nodes { customerId } } }",
        json!({}),
    )
    .await;
    let before = acquired.load(Ordering::SeqCst);
    let d = data(&app, q, json!({})).await;
    let queries = acquired.load(Ordering::SeqCst) - before;
    let nodes = d["customers"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 100);
    assert_eq!(d["customers"]["totalCount"], json!(120));
    assert_eq!(nodes[2]["subscriptions"]["totalCount"], json!(2));
    assert_eq!(
        nodes[2]["subscriptions"]["nodes"][1]["customer"]["customerId"],
        json!("cust-002")
    );
    // customers page + count, subscription pages + counts; each subscription's customer is
    // the one above it: 4 round trips, not 200
    assert_eq!(queries, 4);
    // With arguments the subscription pages go through the dataloader, and top-level
    // subscriptions' customers too: batched by a time window (1 ms), so a busy machine may
    // split a batch; still a handful of queries for 100 nodes.
    let q = "{ customers(first: 100) { nodes { customerId
               subscriptions(first: 1) { nodes { subscriptionId customer { customerId } } } } } }";
    let before = acquired.load(Ordering::SeqCst);
    let d = data(&app, q, json!({})).await;
    let queries = acquired.load(Ordering::SeqCst) - before;
    assert_eq!(
        d["customers"]["nodes"][2]["subscriptions"]["nodes"][0]["customer"]["customerId"],
        json!("cust-002")
    );
    assert!(queries <= 8, "{queries} queries");
    let before = acquired.load(Ordering::SeqCst);
    let d = data(
        &app,
        "{ subscriptions { nodes { customer { customerId } } } }",
        json!({}),
    )
    .await;
    let queries = acquired.load(Ordering::SeqCst) - before;
    assert_eq!(d["subscriptions"]["nodes"].as_array().unwrap().len(), 120);
    assert!(queries <= 8, "{queries} queries");
    app.stop().await;
}

/// The query graphql-js's `getIntrospectionQuery` writes (GraphiQL sends it), with `ofType`
/// nested nine times.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name
      ofType { kind name } } } } } } } } }
}
"#;

/// Ids holding a NUL character cannot be stored, so nothing has them: GraphQL answers as
/// `/check-access` does (no such customer, no such subscription, the same decision), instead
/// of sending them to PostgreSQL, which refuses them (an "internal error").
#[tokio::test]
async fn ids_holding_nul_find_nothing_as_in_check_access() {
    let (app, _pool) = app_with_world(&[]).await;
    let q = "query($id: String!) { customer(customerId: $id) { customerId } }";
    assert_eq!(
        data(&app, q, json!({ "id": "cust-a\u{0}" })).await,
        json!({ "customer": null })
    );
    let q = "query($id: String!) { customer(customerId: $id) { customerId
               subscriptions { nodes { subscriptionId } } } }";
    assert_eq!(
        data(&app, q, json!({ "id": "cust-a\u{0}" })).await,
        json!({ "customer": null })
    );
    let q = "query($id: String!) { subscription(subscriptionId: $id) { subscriptionId } }";
    assert_eq!(
        data(&app, q, json!({ "id": "sub-a1\u{0}" })).await,
        json!({ "subscription": null })
    );
    let q = "query($id: String!) { customers(condition: { customerId: $id }) {
               totalCount nodes { customerId } } }";
    assert_eq!(
        data(&app, q, json!({ "id": "cust-a\u{0}" })).await,
        json!({ "customers": { "totalCount": 0, "nodes": [] } })
    );

    let q = "query($feature: String!, $resource: String) { customer(customerId: \"cust-a\") {
               access(featureId: $feature, resourceId: $resource) {
                 hasAccess accessDeniedReason } } }";
    for (feature, resource) in [
        ("feature-sso\u{0}", None),
        ("feature-sso", Some("\u{0}")),
        ("feature-sso\u{0}", Some("resource-blue\u{0}")),
    ] {
        let vars = json!({ "feature": feature, "resource": resource });
        let answer = data(&app, q, vars).await["customer"]["access"].clone();
        let mut request = json!({ "customerId": "cust-a", "featureId": feature });
        if let Some(r) = resource {
            request["resourceId"] = json!(r);
        }
        let r = reqwest::Client::new()
            .post(format!("{}/check-access", app.base))
            .json(&request)
            .send()
            .await
            .unwrap();
        let decision: Value = r.json().await.unwrap();
        assert_eq!(
            answer,
            json!({ "hasAccess": decision["hasAccess"],
                    "accessDeniedReason": decision["accessDeniedReason"] }),
            "{request}"
        );
    }
    app.stop().await;
}
