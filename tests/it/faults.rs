//! Fault tests: a crash mid-stream, competing workers on a shuffled stream with duplicates and
//! stale versions, and arbitrary input through the parser and the processor.

use std::process::Stdio;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use stigg_byos::apply::Outcome;
use stigg_byos::events;
use stigg_byos::processor::Processor;
use stigg_byos::Roles;

use crate::consumer::{command, drained};
use crate::support::*;

fn usage_event(i: usize) -> String {
    json!({"type": "measurement.reported", "messageId": format!("k{i}"),
        "timestamp": "2026-11-03T10:00:00Z", "customer": {"id": format!("c{}", i % 50)},
        "feature": {"id": format!("f{i}")}, "currentUsage": i})
    .to_string()
}

#[tokio::test]
async fn kill_9_mid_stream_then_restart_applies_every_event_exactly_once() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    let n = 1000;
    let bodies: Vec<String> = (0..n).map(usage_event).collect();
    preload(&sqs, &queue, &bodies).await;
    let mut child = command(&url, &queue)
        .arg("worker")
        .env("SQS_VISIBILITY_TIMEOUT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(60), "a good part applied", || async {
        count(&pool, "SELECT count(*) FROM inbox").await > 150
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let at_kill = count(&pool, "SELECT count(*) FROM inbox").await;
    assert!(at_kill < n as i64, "killed too late to prove anything");

    let mut child = command(&url, &queue)
        .arg("worker")
        .env("SQS_VISIBILITY_TIMEOUT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(90),
        "every event applied after the restart",
        || async {
            count(&pool, "SELECT count(*) FROM inbox").await == n as i64
                && drained(&sqs, &queue).await
        },
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inbox WHERE outcome = 'applied'"
        )
        .await,
        n as i64
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
    let wrong = count(
        &pool,
        "SELECT count(*) FROM usage WHERE current_usage <> substr(feature_id, 2)::float8",
    )
    .await;
    assert_eq!(wrong, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM usage").await, n as i64);
}

#[tokio::test]
async fn three_workers_on_a_shuffled_stream_converge_to_the_newest_versions() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    let customers = 12;
    let versions = 8;
    let mut bodies = Vec::new();
    for c in 0..customers {
        for v in 0..versions {
            let at = format!("2026-11-0{}T10:00:00Z", v + 1);
            bodies.push(json!({"type": "customer.updated", "messageId": format!("cu-{c}-{v}"), "timestamp": at,
                "id": format!("c{c}"), "name": format!("c{c} v{v}"), "email": null}).to_string());
            bodies.push(json!({"type": "subscription.updated", "messageId": format!("su-{c}-{v}"), "timestamp": at,
                "id": format!("s{c}"), "customer": {"id": format!("c{c}")}, "plan": {"id": format!("plan-{v}")},
                "status": "ACTIVE"}).to_string());
            bodies.push(json!({"type": "entitlements.updated", "messageId": format!("en-{c}-{v}"), "timestamp": at,
                "entitlementsUpdatedAt": at, "customer": {"id": format!("c{c}")}, "resource": null,
                "entitlements": [{"feature": {"id": format!("feature-v{v}"), "featureType": "NUMBER", "meterType": "INCREMENTAL"},
                                  "usageLimit": 100, "currentUsage": v}]}).to_string());
            bodies.push(json!({"type": "measurement.reported", "messageId": format!("me-{c}-{v}"), "timestamp": at,
                "customer": {"id": format!("c{c}")}, "feature": {"id": "feature-x"}, "currentUsage": 10 * v}).to_string());
        }
    }
    let dups: Vec<String> = bodies.iter().step_by(5).cloned().collect();
    bodies.extend(dups);
    bodies.shuffle(&mut rand::rng());
    preload(&sqs, &queue, &bodies).await;

    let mut apps = Vec::new();
    for _ in 0..3 {
        let s = settings(&[
            "--database-url",
            &url,
            "--sqs-queue-url",
            &queue,
            "--sqs-wait-seconds",
            "1",
            "--worker-concurrency",
            "8",
        ]);
        let own = sqlx::PgPool::connect(&url).await.unwrap(); // each process has its own pool
        apps.push(
            spawn_app(
                s,
                own,
                Roles {
                    worker: true,
                    http: false,
                },
            )
            .await,
        );
    }
    let distinct = (customers * versions * 4) as i64;
    eventually(
        Duration::from_secs(90),
        "every message processed",
        || async {
            count(&pool, "SELECT count(*) FROM inbox").await == distinct
                && drained(&sqs, &queue).await
        },
    )
    .await;
    for app in apps {
        app.stop().await;
    }
    let last = versions - 1;
    for c in 0..customers {
        let name: String = sqlx::query_scalar("SELECT name FROM customers WHERE customer_id = $1")
            .bind(format!("c{c}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(name, format!("c{c} v{last}"));
        let plan: String =
            sqlx::query_scalar("SELECT plan_id FROM subscriptions WHERE subscription_id = $1")
                .bind(format!("s{c}"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(plan, format!("plan-{last}"));
        let features: Vec<String> =
            sqlx::query_scalar("SELECT feature_id FROM entitlements WHERE customer_id = $1")
                .bind(format!("c{c}"))
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(features, vec![format!("feature-v{last}")]);
        let usage: f64 = sqlx::query_scalar(
            "SELECT current_usage FROM usage WHERE customer_id = $1 AND feature_id = 'feature-x'",
        )
        .bind(format!("c{c}"))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(usage, (10 * last) as f64);
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
}

fn random_json(rng: &mut impl Rng, depth: u32) -> Value {
    let keys = [
        "type",
        "id",
        "customer",
        "feature",
        "resource",
        "entitlements",
        "currentUsage",
        "timestamp",
        "entitlementsUpdatedAt",
        "messageId",
        "usageLimit",
        "status",
        "plan",
    ];
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random_range(-1e6..1e6)),
        3 => json!(
            [
                "2026-11-03T10:00:00Z",
                "x",
                "",
                "customer.updated",
                "1793613600000",
                "entitlements.updated",
                "measurement.reported",
                "subscription.created",
                "customer.deleted"
            ][rng.random_range(0..9)]
        ),
        4 => json!(rng.random_range(0..2_000_000_000_000i64)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..8))
                .map(|_| {
                    (
                        keys[rng.random_range(0..keys.len())].to_string(),
                        random_json(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

/// Arbitrary bytes and arbitrary JSON never panic; each input ends applied, stale, skipped,
/// duplicate, or is refused with a reason (dead-lettered by the consumer).
#[tokio::test]
async fn arbitrary_input_ends_applied_skipped_or_refused() {
    let (pool, _) = migrated_pool().await;
    let processor = Processor::new(pool.clone());
    let mut rng = rand::rng();
    let kinds = [
        "customer.created",
        "customer.deleted",
        "subscription.updated",
        "entitlements.updated",
        "measurement.reported",
        "promotionalEntitlement.granted",
        "no.such.type",
    ];
    let mut outcomes = std::collections::HashMap::<String, usize>::new();
    for i in 0..400 {
        let body: Vec<u8> = match i % 4 {
            0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            1 => random_json(&mut rng, 4).to_string().into_bytes(),
            _ => {
                let mut v = random_json(&mut rng, 3);
                if !v.is_object() {
                    v = json!({});
                }
                v["type"] = json!(kinds[rng.random_range(0..kinds.len())]);
                v["messageId"] = json!(format!("fz{i}"));
                if rng.random_bool(0.7) {
                    v["id"] = json!(format!("c{}", i % 5));
                }
                if rng.random_bool(0.7) {
                    v["customer"] = json!({"id": format!("c{}", i % 5)});
                }
                if rng.random_bool(0.5) {
                    v["feature"] = json!({"id": "f"});
                    v["currentUsage"] = json!(i);
                }
                if rng.random_bool(0.5) {
                    v["entitlements"] = json!([]);
                }
                v.to_string().into_bytes()
            }
        };
        let key = match events::parse(&body) {
            Err(e) => {
                assert!(!e.reason.is_empty());
                "refused".to_string()
            }
            Ok(ev) => {
                let results = processor
                    .process(&[&ev])
                    .await
                    .expect("no transient failure");
                match &results[0] {
                    Ok(o) => {
                        assert!(matches!(
                            o,
                            Outcome::Applied
                                | Outcome::Stale
                                | Outcome::Skipped
                                | Outcome::Duplicate
                        ));
                        o.as_str().to_string()
                    }
                    Err(reason) => panic!("a parsed event failed in the database: {reason}"),
                }
            }
        };
        *outcomes.entry(key).or_default() += 1;
    }
    // the sanity checks only ask that both paths were exercised at all: the input is random
    assert!(
        outcomes.get("applied").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("refused").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
}
