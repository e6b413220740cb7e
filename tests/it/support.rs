//! Test harness: a fresh database and a fresh SQS queue per test, the app started in-process
//! on port 0 or as the real binary, and polling helpers (no fixed sleeps).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use sqlx::{Connection, PgPool};
use stigg_byos::apply::Outcome;
use stigg_byos::cli::Cli;
use stigg_byos::config::Settings;
use stigg_byos::events;
use stigg_byos::processor::Processor;
use stigg_byos::Roles;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn sqs_endpoint() -> String {
    std::env::var("TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

/// A new, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let name = unique("it_");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to admin db");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("url with a database").0;
    format!("{base}/{name}")
}

/// A new database with the migrations applied.
pub async fn migrated_pool() -> (PgPool, String) {
    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.expect("connect");
    stigg_byos::store::migrate(&pool).await.expect("migrate");
    (pool, url)
}

// The SQS helpers themselves are in `tests/shared/sqs.rs` (`crate::sqs`), shared with the
// benchmark; these give them the tests' queue names and turn their errors into panics.

pub async fn sqs() -> aws_sdk_sqs::Client {
    crate::sqs::client(&sqs_endpoint())
}

pub async fn fresh_queue(sqs: &aws_sdk_sqs::Client, fifo: bool) -> String {
    crate::sqs::create_queue(sqs, &unique("it-"), fifo)
        .await
        .expect("fresh queue")
}

pub async fn send(sqs: &aws_sdk_sqs::Client, queue: &str, body: &str) -> String {
    crate::sqs::send(sqs, queue, body).await.expect("send")
}

/// Sends every body, 10 a batch.
pub async fn preload(sqs: &aws_sdk_sqs::Client, queue: &str, bodies: &[String]) {
    crate::sqs::preload(sqs, queue, bodies)
        .await
        .expect("preload")
}

/// Messages visible and messages in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> (u64, u64) {
    crate::sqs::queue_depth(sqs, queue)
        .await
        .expect("queue attributes")
}

/// Environment for the app and the binary: LocalStack endpoint and test credentials.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_SQS", sqs_endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

/// Settings as the command line would build them.
pub fn settings(args: &[&str]) -> Settings {
    for (k, v) in aws_env() {
        // the in-process app reads AWS settings from the environment, like the binary
        std::env::set_var(k, v);
    }
    let mut argv = vec!["stigg-byos"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("valid flags").settings
}

pub const HTTP_ONLY: Roles = Roles {
    worker: false,
    http: true,
};

/// An app serving HTTP only over `pool` (whose URL is `url`), with `extra` settings.
pub async fn serve_http(pool: &PgPool, url: &str, extra: &[&str]) -> App {
    let mut args = vec!["--database-url", url];
    args.extend_from_slice(extra);
    spawn_app(settings(&args), pool.clone(), HTTP_ONLY).await
}

pub struct App {
    pub base: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl App {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(40), self.handle).await;
    }
}

/// Starts the app in-process on 127.0.0.1:0.
pub async fn spawn_app(settings: Settings, pool: PgPool, roles: Roles) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(stigg_byos::run(
        settings,
        pool,
        roles,
        Some(listener),
        shutdown.clone(),
    ));
    App {
        base,
        shutdown,
        handle,
    }
}

/// `POST /check-access` with `body` (no token): the status and the JSON answer.
pub async fn check(app: &App, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/check-access", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls `check` until it returns true (every 50 ms, at most `within`).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sample event. The samples' usage periods end on 2026-12-01, after which every metered
/// answer would report a new, empty period; so that the tests mean the same on any day, that
/// period end is moved to 2099 (the expired-period rules have their own unit tests).
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("2026-12-01T09:05:00.000Z", FIXTURE_PERIOD_END)
}

pub const FIXTURE_PERIOD_END: &str = "2099-12-01T09:05:00.000Z";

/// The named fixtures' bodies, in order.
pub fn fixtures(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| fixture(n)).collect()
}

/// Applies event bodies through the processor as one batch, and gives their outcomes: every
/// body must parse and apply.
pub async fn apply_events(pool: &PgPool, bodies: &[String]) -> Vec<Outcome> {
    apply_with(&Processor::new(pool.clone()), bodies).await
}

/// [`apply_events`] through a processor set up by the caller.
pub async fn apply_with(processor: &Processor, bodies: &[String]) -> Vec<Outcome> {
    let parsed: Vec<_> = bodies
        .iter()
        .map(|b| events::parse(b.as_bytes()).unwrap_or_else(|e| panic!("{b}: {e}")))
        .collect();
    let refs: Vec<_> = parsed.iter().collect();
    let results = processor
        .process(&refs)
        .await
        .expect("no transient failure");
    bodies
        .iter()
        .zip(results)
        .map(|(body, r)| r.unwrap_or_else(|e| panic!("{body}: {e}")))
        .collect()
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Compact one-line JSON of a fixture, with fields replaced.
pub fn event(name: &str, changes: &[(&str, Value)]) -> String {
    let mut v = fixture_json(name);
    for (k, val) in changes {
        v[*k] = val.clone();
    }
    v.to_string()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stigg-byos")
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// A well-formed subscription event the database refuses every time: its id is too large for
/// a btree index entry (a non-transient failure that parsing cannot see).
pub fn unindexable_subscription(message_id: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let id: String = (0..12_000)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    event(
        "subscription.created",
        &[
            ("messageId", serde_json::json!(message_id)),
            ("id", serde_json::json!(id)),
        ],
    )
}

/// A TCP proxy in front of PostgreSQL that a test can cut (refusing and dropping every
/// connection) and restore, to make the database unreachable for a while.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &'static str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (up2, gen2) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let cut = gen2.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
            task,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut g = self.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').expect("url with user@");
        let path = rest.split_once('/').expect("url with a database").1;
        format!("{scheme_user}@127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
