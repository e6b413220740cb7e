//! The SQS consumer against LocalStack: apply and delete, dead letters and their reasons, the
//! receive limit, FIFO, transient database outages, SIGTERM drain, Edge API credentials, and
//! the dlq/ingest commands of the real binary.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use stigg_byos::Roles;

use crate::support::*;

const BOTH: Roles = Roles {
    worker: true,
    http: true,
};

async fn start_worker(pool: &PgPool, url: &str, queue: &str, extra: &[&str]) -> App {
    let mut args = vec![
        "--database-url",
        url,
        "--sqs-queue-url",
        queue,
        "--sqs-wait-seconds",
        "1",
    ];
    if !extra.contains(&"--sqs-visibility-timeout") {
        args.extend(["--sqs-visibility-timeout", "10"]);
    }
    args.extend_from_slice(extra);
    spawn_app(settings(&args), pool.clone(), BOTH).await
}

pub async fn drained(sqs: &aws_sdk_sqs::Client, queue: &str) -> bool {
    queue_depth(sqs, queue).await == (0, 0)
}

#[tokio::test]
async fn applies_the_story_from_the_queue_and_deletes_it() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    for name in [
        "customer.created",
        "subscription.created",
        "entitlements.updated",
        "measurement.reported",
        "sns-wrapped.customer.updated",
        "promotionalEntitlement.granted",
    ] {
        send(&sqs, &queue, &fixture(name)).await;
    }
    send(&sqs, &queue, &fixture("customer.created")).await; // a duplicate
    let app = start_worker(&pool, &url, &queue, &[]).await;
    eventually(Duration::from_secs(30), "7 messages processed", || async {
        count(&pool, "SELECT count(*) FROM inbox").await == 6 && drained(&sqs, &queue).await
    })
    .await;
    let usage: f64 = sqlx::query_scalar(
        "SELECT current_usage FROM usage WHERE feature_id = 'feature-api-calls'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(usage, 9650.0);
    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("stigg_byos_messages_total"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_with_their_reason_and_copied_to_the_dlq() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    let dlq = fresh_queue(&sqs, false).await;
    let not_json = send(&sqs, &queue, "this is not json").await;
    let no_type = send(&sqs, &queue, r#"{"messageId":"m-no-type","id":"x"}"#).await;
    let wrong = send(&sqs, &queue, r#"{"type":"measurement.reported","messageId":"m-wrong","customer":{"id":"c"},"feature":{"id":"f"},"currentUsage":"lots"}"#).await;
    let unknown = send(&sqs, &queue, r#"{"type":"brand.new","messageId":"m-new"}"#).await;
    let app = start_worker(&pool, &url, &queue, &["--sqs-dlq-url", &dlq]).await;
    eventually(
        Duration::from_secs(30),
        "3 dead letters and the queue drained",
        || async {
            count(&pool, "SELECT count(*) FROM dead_letters").await == 3
                && drained(&sqs, &queue).await
        },
    )
    .await;
    let rows: Vec<(String, Option<String>, Option<String>, String)> =
        sqlx::query_as("SELECT source_id, event_message_id, event_type, reason FROM dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
    let find = |id: &str| {
        rows.iter()
            .find(|r| r.0 == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {rows:?}"))
    };
    assert!(find(&not_json).3.contains("not JSON"));
    assert!(find(&no_type).3.contains("no \"type\""));
    assert_eq!(find(&no_type).1.as_deref(), Some("m-no-type"));
    let w = find(&wrong);
    assert_eq!(w.2.as_deref(), Some("measurement.reported"));
    assert!(
        w.3.contains("currentUsage") || w.3.contains("invalid type"),
        "{}",
        w.3
    );
    assert!(
        rows.iter().all(|r| r.0 != unknown),
        "unknown types are skipped, not dead-lettered"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inbox WHERE outcome = 'skipped'"
        )
        .await,
        1
    );

    // the copies on the DLQ: original body, reason and source id attributes
    let mut copies = Vec::new();
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        copies.extend(out.messages.unwrap_or_default());
        if copies.len() >= 3 {
            break;
        }
    }
    assert_eq!(copies.len(), 3);
    let copy = copies
        .iter()
        .find(|m| m.body.as_deref() == Some("this is not json"))
        .expect("body unchanged");
    let attrs = copy.message_attributes.as_ref().unwrap();
    assert_eq!(
        attrs["stigg-byos-source-message-id"]
            .string_value
            .as_deref(),
        Some(not_json.as_str())
    );
    assert!(attrs["stigg-byos-reason"]
        .string_value
        .as_deref()
        .unwrap()
        .contains("not JSON"));
    // the process kept running
    assert_eq!(
        reqwest::get(format!("{}/readyz", app.base))
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_max_receive_count() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    let id = send(&sqs, &queue, &unindexable_subscription("m-poison")).await;
    send(&sqs, &queue, &fixture("customer.created")).await;
    let app = start_worker(&pool, &url, &queue, &["--max-receive-count", "2"]).await;
    eventually(
        Duration::from_secs(40),
        "the poison message dead-lettered",
        || async {
            count(&pool, "SELECT count(*) FROM dead_letters").await == 1
                && drained(&sqs, &queue).await
        },
    )
    .await;
    let (reason, attempts): (String, i32) =
        sqlx::query_as("SELECT reason, attempts FROM dead_letters WHERE source_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(reason.contains("receive 2 of 2"), "{reason}");
    assert_eq!(attempts, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM customers WHERE customer_id = 'cust-orbit'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn fifo_queue_keeps_order_within_a_group() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, true).await;
    // no timestamps: only arrival order can decide, and only the first may apply
    for i in 0..5 {
        let mut v = fixture_json("customer.updated");
        v.as_object_mut().unwrap().remove("timestamp");
        v["messageId"] = json!(format!("f{i}"));
        v["name"] = json!(format!("name {i}"));
        send(&sqs, &queue, &v.to_string()).await;
    }
    let app = start_worker(&pool, &url, &queue, &[]).await;
    eventually(Duration::from_secs(30), "5 processed", || async {
        count(&pool, "SELECT count(*) FROM inbox").await == 5
    })
    .await;
    let name: String = sqlx::query_scalar("SELECT name FROM customers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "name 0");
    app.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_retried_and_nothing_is_lost_or_dead_lettered() {
    let (pool, url) = migrated_pool().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied_url = proxy.url_for(&url);
    let proxied = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&proxied_url)
        .unwrap();
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    let app = start_worker(
        &proxied,
        &proxied_url,
        &queue,
        &["--sqs-visibility-timeout", "4"],
    )
    .await;
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(10), "ready", || async {
        client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    proxy.cut();
    let n = 40;
    for i in 0..n {
        let body = json!({"type": "measurement.reported", "messageId": format!("o{i}"),
            "timestamp": format!("2026-11-03T10:00:{:02}Z", i), "customer": {"id": format!("c{}", i % 4)},
            "feature": {"id": "f"}, "currentUsage": i});
        send(&sqs, &queue, &body.to_string()).await;
    }
    eventually(
        Duration::from_secs(10),
        "readyz 503 during the cut",
        || async {
            client
                .get(format!("{}/readyz", app.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 503)
        },
    )
    .await;
    assert_eq!(
        client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // 15 s, far longer than the visibility timeout: held messages must be kept invisible by
    // the worker, and none may be dead-lettered however often it retries
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.restore();
    eventually(Duration::from_secs(60), "every event applied", || async {
        count(&pool, "SELECT count(*) FROM inbox").await == n && drained(&sqs, &queue).await
    })
    .await;
    eventually(Duration::from_secs(10), "ready again", || async {
        client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
    let top: f64 = sqlx::query_scalar("SELECT current_usage FROM usage WHERE customer_id = 'c3'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(top, 39.0);
    app.stop().await;
}

#[tokio::test]
async fn queue_credentials_come_from_the_edge_api_when_a_key_is_set() {
    use axum::extract::{Query, State};
    use axum::http::HeaderMap;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(Option<String>, HashMap<String, String>)>>>;
    async fn creds(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::Json<Value> {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.lock().unwrap().push((key, q));
        // short-lived, so that the refresh before expiry shows within the test
        let expiration = (chrono::Utc::now() + chrono::Duration::seconds(13)).to_rfc3339();
        axum::Json(
            json!({"accessKeyId": "AKIDEDGE", "secretAccessKey": "secret", "sessionToken": "token", "expiration": expiration}),
        )
    }
    let seen: Seen = Arc::default();
    let edge = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_url = format!("http://{}", edge.local_addr().unwrap());
    let router = axum::Router::new()
        .route(
            "/v1/credentials/event-queue.json",
            axum::routing::get(creds),
        )
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(edge, router).await.unwrap() });

    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    send(&sqs, &queue, &fixture("customer.created")).await;
    let app = start_worker(
        &pool,
        &url,
        &queue,
        &[
            "--stigg-server-api-key",
            "server-key-1",
            "--stigg-edge-url",
            &edge_url,
        ],
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "applied with Edge credentials",
        || async { count(&pool, "SELECT count(*) FROM inbox").await == 1 },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "credentials refreshed before they expire",
        || async { seen.lock().unwrap().len() >= 2 },
    )
    .await;
    let calls = seen.lock().unwrap().clone();
    let (key, query) = &calls[0];
    assert_eq!(key.as_deref(), Some("server-key-1"));
    assert_eq!(query.get("queueUrl"), Some(&queue));
    let secs: u32 = query["durationSeconds"].parse().unwrap();
    assert!((900..=3600).contains(&secs));
    app.stop().await;
}

pub fn command(url: &str, queue: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.env("DATABASE_URL", url)
        .env("SQS_QUEUE_URL", queue)
        .env("SQS_WAIT_SECONDS", "1")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(aws_env())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_and_a_restart_loses_nothing() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    let n = 300;
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            json!({"type": "measurement.reported", "messageId": format!("s{i}"),
            "timestamp": format!("2026-11-03T10:{:02}:{:02}Z", i / 60, i % 60),
            "customer": {"id": format!("c{i}")}, "feature": {"id": "f"}, "currentUsage": i})
            .to_string()
        })
        .collect();
    preload(&sqs, &queue, &bodies).await;
    let mut child = command(&url, &queue)
        .arg("worker")
        .env("SQS_VISIBILITY_TIMEOUT", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "some applied", || async {
        count(&pool, "SELECT count(*) FROM inbox").await > 20
    })
    .await;
    let pid = child.id().unwrap() as i32;
    // SAFETY-free: kill(2) through the shell's tool, no libc dependency
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .expect("exits within the visibility timeout + 5 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut child = command(&url, &queue)
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "all applied after restart",
        || async {
            count(&pool, "SELECT count(*) FROM inbox").await == n && drained(&sqs, &queue).await
        },
    )
    .await;
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inbox WHERE outcome <> 'applied'"
        )
        .await,
        0,
        "each applied exactly once"
    );
    let top: f64 = sqlx::query_scalar("SELECT max(current_usage) FROM usage")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(top, (n - 1) as f64);
}

#[tokio::test]
async fn ingest_dlq_list_and_replay_through_the_binary() {
    let (pool, url) = migrated_pool().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let lines = [
        fixture_json("customer.created").to_string(),
        "not json at all".to_string(),
        r#"{"type":"customer.updated","messageId":"m-bad","id":42}"#.to_string(),
        fixture_json("subscription.created").to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = command(&url, "unused")
        .arg("ingest")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("applied=2") && stdout.contains("dead_lettered=2"),
        "{stdout}"
    );

    let out = command(&url, "unused")
        .args(["dlq", "list"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(rows.iter().all(|r| r.len() == 5), "{listing}");
    let bad = rows.iter().find(|r| r[1] == "m-bad").expect("m-bad listed");
    assert_eq!(bad[2], "customer.updated");
    assert!(chrono::DateTime::parse_from_rfc3339(bad[4]).is_ok());
    let garbage = rows
        .iter()
        .find(|r| r[1] == "-")
        .expect("the non-JSON line");
    assert_eq!(garbage[2], "-");

    // still malformed: replay fails, the letter stays
    let out = command(&url, "unused")
        .args(["dlq", "replay", bad[0]])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 2);
    let out = command(&url, "unused")
        .args(["dlq", "replay", "no-such-id"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());

    // a letter whose cause is gone replays and disappears
    sqlx::query("UPDATE dead_letters SET body = $1 WHERE source_id = $2")
        .bind(fixture_json("customer.updated").to_string().into_bytes())
        .bind(bad[0])
        .execute(&pool)
        .await
        .unwrap();
    let out = command(&url, "unused")
        .args(["dlq", "replay", bad[0]])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied"));
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 1);
    let name: String = sqlx::query_scalar("SELECT name FROM customers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "Orbit Labs Inc.");
}

/// Claims older than INBOX_RETENTION (15 days unless set) are deleted in the background, a
/// batch at a time, by the worker; younger ones stay, as deduplication needs them.
#[tokio::test]
async fn inbox_claims_older_than_the_retention_are_deleted_in_the_background() {
    let (pool, url) = migrated_pool().await;
    let sqs = sqs().await;
    let queue = fresh_queue(&sqs, false).await;
    for (prefix, age, n) in [("old", "16 days", 2500), ("kept", "14 days", 3)] {
        sqlx::query(
            "INSERT INTO inbox (message_id, event_type, outcome, processed_at)
             SELECT $1 || '-' || n, 'customer.updated', 'applied', now() - $2::interval
             FROM generate_series(1, $3) AS n",
        )
        .bind(prefix)
        .bind(age)
        .bind(n)
        .execute(&pool)
        .await
        .unwrap();
    }
    let (old, kept) = (
        "SELECT count(*) FROM inbox WHERE message_id LIKE 'old-%'",
        "SELECT count(*) FROM inbox WHERE message_id LIKE 'kept-%'",
    );
    let app = start_worker(&pool, &url, &queue, &[]).await;
    send(&sqs, &queue, &fixture("customer.created")).await;
    eventually(
        Duration::from_secs(30),
        "claims older than 15 days deleted",
        || async { count(&pool, old).await == 0 },
    )
    .await;
    eventually(Duration::from_secs(30), "the new event applied", || async {
        count(&pool, "SELECT count(*) FROM inbox").await == 4
    })
    .await;
    assert_eq!(count(&pool, kept).await, 3);
    app.stop().await;
}
