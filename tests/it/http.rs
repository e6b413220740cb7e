//! The HTTP side against a real database filled by real events: /check-access decisions and
//! status codes, validation, limits, auth, health and metrics.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

async fn story(pool: &PgPool) {
    let bodies = fixtures(&[
        "customer.created",
        "subscription.created",
        "entitlements.updated",
        "entitlements.updated.resource",
    ]);
    apply_events(pool, &bodies).await;
}

async fn app_with_story(extra: &[&str]) -> (App, PgPool) {
    let (pool, url) = migrated_pool().await;
    story(&pool).await;
    (serve_http(&pool, &url, extra).await, pool)
}

#[tokio::test]
async fn decisions_for_every_kind_of_entitlement() {
    let (app, _pool) = app_with_story(&[]).await;
    let c = "cust-orbit";
    let (s, b) = check(&app, json!({"customerId": c, "featureId": "feature-sso"})).await;
    assert_eq!((s, &b["hasAccess"]), (200, &json!(true)));
    assert_eq!(b["accessDeniedReason"], Value::Null);
    assert_eq!(b["requestedUsage"], json!(0));

    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-max-projects"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["value"], json!(25));

    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-api-calls", "requestedUsage": 800}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["currentUsage"], json!(9200));
    assert_eq!(b["usageLimit"], json!(10000));
    assert_eq!(b["resetPeriod"], json!("MONTH"));
    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-api-calls", "requestedUsage": 801}),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        b["accessDeniedReason"],
        json!("RequestedUsageExceedingLimit")
    );

    let (s, _) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-storage-gb", "requestedUsage": 1e9}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-emails", "requestedUsage": 10}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["hasSoftLimit"], json!(true));

    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-region", "requestedValues": ["eu"]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["enumValues"], json!(["us", "eu"]));
    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-region", "requestedValues": ["ap"]}),
    )
    .await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("RequestedValuesMismatch"))
    );

    let (s, b) = check(&app, json!({"customerId": c, "featureId": "feature-nope"})).await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("NoFeatureEntitlementInSubscription"))
    );
    let (s, b) = check(
        &app,
        json!({"customerId": "nobody", "featureId": "feature-sso"}),
    )
    .await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("CustomerNotFound"))
    );

    // resources look at their own set only
    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-custom-domain", "resourceId": "site-blue"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = check(&app, json!({"customerId": c, "featureId": "feature-page-views", "resourceId": "site-blue", "requestedUsage": 1})).await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("RequestedUsageExceedingLimit"))
    );
    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-sso", "resourceId": "site-blue"}),
    )
    .await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("NoFeatureEntitlementInSubscription"))
    );
    let (s, b) = check(
        &app,
        json!({"customerId": c, "featureId": "feature-sso", "resourceId": "site-red"}),
    )
    .await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("CustomerResourceNotFound"))
    );

    // whatever the ids contain, a denial is a 403
    for (customer, feature, resource) in [
        ("nul\u{0}", "feature-sso", None),
        (c, "feature\u{0}", None),
        (c, "feature-sso", Some("site\u{0}")),
    ] {
        let (s, b2) = check(
            &app,
            json!({"customerId": customer, "featureId": feature, "resourceId": resource}),
        )
        .await;
        assert_eq!(s, 403, "{b2}");
    }

    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "hasAccess",
        "accessDeniedReason",
        "isUnlimited",
        "hasSoftLimit",
        "usageLimit",
        "currentUsage",
        "requestedUsage",
        "resetPeriod",
        "usagePeriodStart",
        "usagePeriodEnd",
        "value",
        "enumValues",
    ] {
        assert!(keys.contains(&k), "{k} missing from {b}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_customer_without_subscription_or_entitlements_has_no_active_subscription() {
    let (pool, url) = migrated_pool().await;
    apply_events(&pool, &fixtures(&["customer.created"])).await;
    let app = serve_http(&pool, &url, &[]).await;
    let (s, b) = check(
        &app,
        json!({"customerId": "cust-orbit", "featureId": "feature-sso"}),
    )
    .await;
    assert_eq!(
        (s, &b["accessDeniedReason"]),
        (403, &json!("NoActiveSubscription"))
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_json_400() {
    let (app, _pool) = app_with_story(&[]).await;
    let client = reqwest::Client::new();
    for body in [
        "{",
        "[]",
        r#"{"featureId":"f"}"#,
        r#"{"customerId":"","featureId":"f"}"#,
        r#"{"customerId":"c"}"#,
        r#"{"customerId":"c","featureId":"f","requestedUsage":"5"}"#,
        r#"{"customerId":"c","featureId":"f","requestedUsage":-1}"#,
        r#"{"customerId":"c","featureId":"f","requestedValues":[1]}"#,
    ] {
        let r = client
            .post(format!("{}/check-access", app.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {v}"
        );
    }
    let big = format!(
        r#"{{"customerId":"c","featureId":"f","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = client
        .post(format!("{}/check-access", app.base))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    // the server is still fine
    let (s, _) = check(
        &app,
        json!({"customerId": "cust-orbit", "featureId": "feature-sso"}),
    )
    .await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn api_tokens_guard_check_access_but_not_health() {
    let (app, _pool) = app_with_story(&["--api-tokens", "alpha, beta"]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/check-access", app.base);
    let body = json!({"customerId": "cust-orbit", "featureId": "feature-sso"});
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    for wrong in [
        "Bearer gamma",
        "Bearer alph",
        "Bearer alpha2",
        "alpha",
        "Basic alpha",
    ] {
        let r = client
            .post(&url)
            .header("authorization", wrong)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{wrong}");
    }
    for right in ["alpha", "beta"] {
        let r = client
            .post(&url)
            .bearer_auth(right)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{right}");
    }
    // /readyz also waits for the hot reads' warm-up, which a loaded machine may not have
    // finished yet: it must answer without a token, and turn 200
    eventually(
        Duration::from_secs(20),
        "/readyz answers 200 without a token",
        || {
            let r = client.get(format!("{}/readyz", app.base)).send();
            async move { r.await.unwrap().status().as_u16() == 200 }
        },
    )
    .await;
    for open in ["/healthz", "/metrics"] {
        let r = client
            .get(format!("{}{open}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{open}");
    }
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (app, _pool) = app_with_story(&[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // ready once the hot reads are warmed up, at once after that
    let ready = format!("{}/readyz", app.base);
    eventually(Duration::from_secs(5), "readyz 200", || async {
        client.get(&ready).send().await.unwrap().status() == 200
    })
    .await;
    let r = client.get(&ready).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["warm"], true, "{body}");
    check(
        &app,
        json!({"customerId": "cust-orbit", "featureId": "feature-sso"}),
    )
    .await;
    let text = client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("stigg_byos_check_access_total"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_unreachable() {
    let (pool, _url) = migrated_pool().await;
    // a port nothing listens on
    let dead = "postgres://postgres@127.0.0.1:1/nothing";
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(dead)
        .unwrap();
    drop(pool);
    let app = serve_http(&unreachable, dead, &[]).await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let r = client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client
        .post(format!("{}/check-access", app.base))
        .json(&json!({"customerId": "c", "featureId": "f"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(
        !v["error"].as_str().unwrap().contains("127.0.0.1"),
        "no internals: {v}"
    );
    app.stop().await;
}

/// The hot reads keep their connections without pinging them (src/reads.rs): one that died
/// while idle must be replaced within the same request, not answered with a 503.
#[tokio::test]
async fn hot_reads_survive_connections_killed_while_idle() {
    let (app, pool) = app_with_story(&[]).await;
    let body = json!({"customerId": "cust-orbit", "featureId": "feature-sso"});
    let query = json!({
        "query": "query($id:String!){ customer(customerId:$id){ customerId subscriptions { nodes { status } } } }",
        "variables": {"id": "cust-orbit"},
    });
    let graphql = || async {
        let r = reqwest::Client::new()
            .post(format!("{}/graphql", app.base))
            .json(&query)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, before) = check(&app, body.clone()).await;
    assert_eq!(s, 200, "{before}");
    let (s, gq_before) = graphql().await;
    assert_eq!(s, 200);
    assert_eq!(gq_before["data"]["customer"]["customerId"], "cust-orbit");

    let killed = count(
        &pool,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
    assert!(killed >= 1, "the server's connections were not found");
    for _ in 0..3 {
        let (s, after) = check(&app, body.clone()).await;
        assert_eq!((s, &after), (200, &before));
        assert_eq!(graphql().await, (200, gq_before.clone()));
    }
    app.stop().await;
}
