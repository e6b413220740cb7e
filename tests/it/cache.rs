//! The access cache across processes (issue 12): a `serve` process (the binary, as deployed)
//! answers /check-access while this test process writes the same customers as a worker
//! would, through the library's processor on connections of its own. Its answers must never
//! go back in time for a client, must match the database soon after the last commit, must
//! survive the loss of the listening connection, and must equal the answers without a cache.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::process::Child;

use crate::support::*;

const CUSTOMER: &str = "cust-orbit";
const FEATURE: &str = "feature-api-calls";

/// A `serve` process on `url` with `ACCESS_CACHE_MB` = `cache_mb`, ready (/readyz 200).
struct Server {
    base: String,
    _child: Child,
}

async fn serve(url: &str, cache_mb: u32) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(bin())
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ACCESS_CACHE_MB", cache_mb.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let base = format!("http://127.0.0.1:{port}");
    let ready = format!("{base}/readyz");
    eventually(Duration::from_secs(20), "serve is ready", || async {
        matches!(reqwest::get(&ready).await, Ok(r) if r.status() == 200)
    })
    .await;
    Server {
        base,
        _child: child,
    }
}

async fn decide(client: &reqwest::Client, base: &str, body: &Value) -> Option<Value> {
    let r = client
        .post(format!("{base}/check-access"))
        .json(body)
        .send()
        .await
        .ok()?;
    if !matches!(r.status().as_u16(), 200 | 403) {
        return None; // the database unreachable: no answer is not a wrong answer
    }
    r.json().await.ok()
}

async fn usage_now(client: &reqwest::Client, base: &str) -> Option<f64> {
    let body = json!({"customerId": CUSTOMER, "featureId": FEATURE});
    decide(client, base, &body).await?["currentUsage"].as_f64()
}

/// The customer, its subscription and entitlements: usage of `FEATURE` is what the
/// measurements then change.
async fn seed(pool: &PgPool) {
    let bodies = fixtures(&[
        "customer.created",
        "subscription.created",
        "entitlements.updated",
    ]);
    apply_events(pool, &bodies).await;
}

/// The `i`th usage report: usage `i`, each newer than the last.
fn measurement(i: u32) -> String {
    event(
        "measurement.reported",
        &[
            ("messageId", json!(format!("usage-{i}"))),
            (
                "timestamp",
                json!(format!(
                    "2026-11-04T{:02}:{:02}:{:02}.000Z",
                    i / 3600,
                    i / 60 % 60,
                    i % 60
                )),
            ),
            ("currentUsage", json!(i)),
        ],
    )
}

async fn stored_usage(pool: &PgPool) -> f64 {
    sqlx::query_scalar("SELECT current_usage FROM usage WHERE customer_id = $1 AND feature_id = $2")
        .bind(CUSTOMER)
        .bind(FEATURE)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Readers that each check their answers never go back in time, until `stop`.
fn readers(base: &str, n: usize, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..n)
        .map(|_| {
            let (base, stop) = (base.to_owned(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut seen, mut answers) = (f64::MIN, 0);
                while !stop.load(Ordering::SeqCst) {
                    if let Some(usage) = usage_now(&client, &base).await {
                        assert!(
                            usage >= seen,
                            "a client saw usage {seen}, then the older {usage}"
                        );
                        seen = usage;
                        answers += 1;
                    }
                }
                answers
            })
        })
        .collect()
}

/// After the last commit, every answer matches the database within 100 ms.
async fn converges(base: &str, pool: &PgPool) {
    let want = stored_usage(pool).await;
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        assert_eq!(
            usage_now(&client, base).await,
            Some(want),
            "answer after the last commit"
        );
    }
}

#[tokio::test]
async fn concurrent_reads_never_go_back_and_match_the_database_after_the_last_commit() {
    let (pool, url) = migrated_pool().await;
    seed(&pool).await;
    apply_events(&pool, &[measurement(1)]).await;
    let server = serve(&url, 64).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers = readers(&server.base, 6, &stop);
    for i in 2..=120 {
        apply_events(&pool, &[measurement(i)]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0, "every reader was answered");
    }
    converges(&server.base, &pool).await;
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits = metric(&metrics, "stigg_byos_access_cache_total{event=\"hit\"}");
    assert!(hits > 0.0, "the cache answered some reads:\n{metrics}");
    assert!(
        metric(
            &metrics,
            "stigg_byos_access_cache_total{event=\"invalidated\"}"
        ) > 0.0
    );
    assert!(
        metric(
            &metrics,
            "stigg_byos_access_cache_invalidation_seconds_count"
        ) > 0.0
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The serving process's listening connection, killed by the database (as a failover or an
/// idle-session killer would): changes committed right after must not be answered from
/// before them.
#[tokio::test]
async fn a_killed_listener_connection_never_leaves_a_stale_answer() {
    let (pool, url) = migrated_pool().await;
    seed(&pool).await;
    apply_events(&pool, &[measurement(1)]).await;
    let server = serve(&url, 64).await;
    let client = reqwest::Client::new();
    for round in 0..3u32 {
        let before = 2 + round * 10;
        // listening (again, after the last round's kill)
        eventually(Duration::from_secs(15), "the listener is back", || async {
            let url = format!("{}/metrics", server.base);
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            metric(&text, "stigg_byos_access_cache_listening") == 1.0
        })
        .await;
        // warm: the current usage is cached
        apply_events(&pool, &[measurement(before)]).await;
        eventually(
            Duration::from_secs(5),
            "the new usage is answered",
            || async { usage_now(&client, &server.base).await == Some(f64::from(before)) },
        )
        .await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(stigg_byos::cache::LISTENER_NAME)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            killed >= 1,
            "a listening connection to kill, found {killed}"
        );
        // committed while nobody listens: its notification is lost
        apply_events(&pool, &[measurement(before + 1)]).await;
        converges(&server.base, &pool).await;
    }
    // the process listens again after each kill (meanwhile it read the database)
    let url = format!("{}/metrics", server.base);
    eventually(Duration::from_secs(15), "three reconnects", || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        metric(&text, "stigg_byos_access_cache_listener_reconnects_total") >= 3.0
    })
    .await;
}

/// Every connection to the database cut at the TCP proxy mid-test, the listener's among
/// them, while the writer (not behind the proxy) goes on: answers never go back, and after
/// the proxy is restored they match the database.
#[tokio::test]
async fn a_cut_proxy_never_leaves_a_stale_answer() {
    let (pool, url) = migrated_pool().await;
    seed(&pool).await;
    apply_events(&pool, &[measurement(1)]).await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let server = serve(&proxy.url_for(&url), 64).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers = readers(&server.base, 4, &stop);
    for i in 2..=20 {
        apply_events(&pool, &[measurement(i)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    for i in 21..=40 {
        apply_events(&pool, &[measurement(i)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.restore();
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(10), "answers again", || async {
        usage_now(&client, &server.base).await.is_some()
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    converges(&server.base, &pool).await;
}

/// The same requests against a server with the cache and one without, over customers in
/// every state the fixtures give (resources, no subscription, deleted, unknown): the same
/// answers.
#[tokio::test]
async fn answers_are_the_same_with_the_cache_off() {
    let (pool, url) = migrated_pool().await;
    let bodies: Vec<String> = [
        "customer.created",
        "subscription.created",
        "entitlements.updated",
        "entitlements.updated.resource",
        "measurement.reported",
        "promotionalEntitlement.granted",
    ]
    .iter()
    .map(|n| fixture(n))
    .chain([
        event(
            "customer.created",
            &[("messageId", json!("other")), ("id", json!("cust-bare"))],
        ),
        event(
            "customer.created",
            &[("messageId", json!("gone")), ("id", json!("cust-gone"))],
        ),
        event(
            "customer.deleted",
            &[
                ("messageId", json!("gone-del")),
                ("id", json!("cust-gone")),
                ("timestamp", json!("2026-11-30T00:00:00.000Z")),
            ],
        ),
    ])
    .collect();
    apply_events(&pool, &bodies).await;
    let cached = serve(&url, 64).await;
    let direct = serve(&url, 0).await;
    let features: Vec<String> = sqlx::query_scalar("SELECT DISTINCT feature_id FROM entitlements")
        .fetch_all(&pool)
        .await
        .unwrap();
    let resources: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT resource_key FROM entitlement_sets WHERE resource_key <> ''",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!features.is_empty() && !resources.is_empty());
    let client = reqwest::Client::new();
    let mut compared = 0;
    for customer in [CUSTOMER, "cust-bare", "cust-gone", "nobody"] {
        for feature in features
            .iter()
            .map(String::as_str)
            .chain(["no-such-feature"])
        {
            let resources = resources.iter().map(|r| Some(r.as_str()));
            for resource in [None, Some("no-such-resource")]
                .into_iter()
                .chain(resources)
            {
                for usage in [None, Some(1.0), Some(1e9)] {
                    let mut body = json!({"customerId": customer, "featureId": feature});
                    if let Some(r) = resource {
                        body["resourceId"] = json!(r);
                    }
                    if let Some(u) = usage {
                        body["requestedUsage"] = json!(u);
                    }
                    // twice: the second answer comes from the cache
                    for _ in 0..2 {
                        let a = decide(&client, &cached.base, &body).await;
                        let b = decide(&client, &direct.base, &body).await;
                        assert!(a.is_some());
                        assert_eq!(a, b, "{body}");
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 50);
}
