//! Tracing and metrics, set up in one place. Every counted failure is also logged where it
//! happens; payloads are never logged (they hold emails).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

/// Installs the tracing subscriber (text or JSON lines on stderr; `RUST_LOG` filters, default
/// `info`). Safe to call more than once.
pub fn setup_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

const APPLY_LAG: &str = "stigg_byos_apply_lag_seconds";
const QUEUE_LAG: &str = "stigg_byos_queue_lag_seconds";

/// The newest event time applied by this process, in milliseconds since the epoch (0: none).
static NEWEST_EVENT_MS: AtomicI64 = AtomicI64::new(0);

/// The lag (event time to commit) of the last event applied, in milliseconds (-1: none).
static LAST_APPLY_LAG_MS: AtomicI64 = AtomicI64::new(-1);

/// The queue's depth by state as last read (-1: never read, e.g. in `serve`).
static QUEUE_DEPTH: [AtomicI64; 3] = [AtomicI64::new(-1), AtomicI64::new(-1), AtomicI64::new(-1)];

/// The outcomes messages are counted by, in the order of [`MESSAGES`].
pub const OUTCOMES: [&str; 7] = [
    "applied",
    "duplicate",
    "stale",
    "skipped",
    "dead_lettered",
    "retried",
    "failed",
];

/// Messages by outcome since the process started (the same counts as
/// `stigg_byos_messages_total`), for `/api/status`.
static MESSAGES: [AtomicU64; 7] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the process's start (the first call wins); [`uptime`] counts from it.
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Time since [`mark_start`].
pub fn uptime() -> std::time::Duration {
    STARTED.get_or_init(Instant::now).elapsed()
}

/// The newest event time applied by this process, in milliseconds since the epoch.
pub fn newest_event_ms() -> Option<i64> {
    Some(NEWEST_EVENT_MS.load(Ordering::Relaxed)).filter(|&ms| ms != 0)
}

/// The lag of the last event applied, in milliseconds.
pub fn last_apply_lag_ms() -> Option<i64> {
    Some(LAST_APPLY_LAG_MS.load(Ordering::Relaxed)).filter(|&ms| ms >= 0)
}

/// The queue's depth (visible, in flight, delayed) as last read by this process's worker.
pub fn last_queue_depth() -> [Option<i64>; 3] {
    QUEUE_DEPTH
        .each_ref()
        .map(|n| Some(n.load(Ordering::Relaxed)).filter(|&n| n >= 0))
}

/// Messages by outcome since the process started, in the order of [`OUTCOMES`].
pub fn messages_by_outcome() -> [(&'static str, u64); 7] {
    std::array::from_fn(|i| (OUTCOMES[i], MESSAGES[i].load(Ordering::Relaxed)))
}

fn count_message(outcome: &'static str) {
    metrics::counter!("stigg_byos_messages_total", "outcome" => outcome).increment(1);
    if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
        MESSAGES[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics as Prometheus text, with the newest event's age brought up to now.
pub fn render() -> String {
    let handle = prometheus();
    let newest = NEWEST_EVENT_MS.load(Ordering::Relaxed);
    if newest != 0 {
        let age = (chrono::Utc::now().timestamp_millis() - newest) as f64 / 1000.0;
        metrics::gauge!("stigg_byos_newest_event_age_seconds").set(age.max(0.0));
    }
    handle.render()
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        // event time to commit: from under a second (live) to days (a drained backlog)
        let lag = [
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
            86400.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .expect("valid buckets")
            .set_buckets_for_metric(Matcher::Full(APPLY_LAG.into()), &lag)
            .expect("valid buckets")
            .set_buckets_for_metric(Matcher::Full(QUEUE_LAG.into()), &QUEUE_LAG_BUCKETS)
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests): then ours only renders zeros.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        "stigg_byos_messages_total",
        "Messages by outcome: applied, duplicate, stale, skipped, dead_lettered, retried, failed"
    );
    metrics::describe_histogram!(
        "stigg_byos_processing_seconds",
        "Time to apply one event (batch time divided by its size)"
    );
    metrics::describe_counter!("stigg_byos_receive_errors_total", "Failed SQS receives");
    metrics::describe_counter!("stigg_byos_delete_errors_total", "Failed SQS deletes");
    metrics::describe_gauge!(
        "stigg_byos_in_flight",
        "Messages received and not yet finished"
    );
    metrics::describe_counter!(
        "stigg_byos_check_access_total",
        "Access decisions by result"
    );
    metrics::describe_histogram!("stigg_byos_check_access_seconds", "Access decision latency");
    metrics::describe_counter!(
        "stigg_byos_access_cache_total",
        "Access cache events: hit, miss, evicted (for size), invalidated (by a change notification), not_installed (a load overtaken by a change)"
    );
    metrics::describe_counter!(
        "stigg_byos_access_cache_listener_reconnects_total",
        "Times the change listener connected again after losing its connection"
    );
    metrics::describe_histogram!(
        "stigg_byos_access_cache_invalidation_seconds",
        "Time from a writer's change notification (sent just before its commit) to the access cache dropping the customer"
    );
    metrics::describe_gauge!(
        "stigg_byos_access_cache_listening",
        "1 while the change listener listens (the access cache is in use), else 0"
    );
    metrics::describe_gauge!(
        "stigg_byos_access_cache_bytes",
        "Weighed size of the access cache"
    );
    metrics::describe_histogram!(
        APPLY_LAG,
        "Time from an applied event's own time to the commit of its change"
    );
    metrics::describe_histogram!(
        QUEUE_LAG,
        "Time from a message's arrival in SQS (SentTimestamp) to the commit of its event"
    );
    metrics::describe_gauge!(
        "stigg_byos_newest_event_timestamp_seconds",
        "Event time of the newest event this process applied (Unix seconds)"
    );
    metrics::describe_gauge!(
        "stigg_byos_newest_event_age_seconds",
        "Age of the newest event this process applied, at the time of the scrape"
    );
    metrics::describe_gauge!(
        "stigg_byos_queue_messages",
        "The queue's approximate depth by state (visible, in_flight, delayed), read every 15 s"
    );
    metrics::describe_gauge!(
        "stigg_byos_sync_last_success_timestamp_seconds",
        "When the last complete sync pass ended (Unix seconds)"
    );
    metrics::describe_gauge!(
        "stigg_byos_sync_last_duration_seconds",
        "How long the last sync pass took, complete or not"
    );
    metrics::describe_counter!(
        "stigg_byos_sync_passes_total",
        "Sync passes by result: complete, stopped, busy (another replica held the lock)"
    );
    metrics::describe_counter!(
        "stigg_byos_sync_changed_total",
        "State a sync pass changed, by kind: customers, subscriptions, entitlement_sets"
    );
    metrics::describe_counter!(
        "stigg_byos_sync_older_total",
        "Copies a sync pass found older than the replica, by kind"
    );
    metrics::describe_counter!(
        "stigg_byos_sync_pruned_total",
        "Customers a sync pass made tombstones (kind=customers)"
    );
}

/// The buckets of `stigg_byos_queue_lag_seconds`: fine where a live worker is (tens to
/// hundreds of milliseconds), coarse up to a day for a drained backlog.
pub const QUEUE_LAG_BUCKETS: [f64; 22] = [
    0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 60.0, 600.0, 3600.0, 86400.0,
];

/// A message's event committed (applied, or found a duplicate or stale): the time since SQS
/// took the message.
pub fn queue_lag(sent: std::time::SystemTime) {
    let lag = sent.elapsed().unwrap_or_default();
    metrics::histogram!(QUEUE_LAG).record(lag.as_secs_f64());
}

/// An event's change committed: its lag, and the newest event time seen.
pub fn applied_event(at: chrono::DateTime<chrono::Utc>) {
    let now = chrono::Utc::now();
    let lag = (now - at).to_std().unwrap_or_default();
    metrics::histogram!(APPLY_LAG).record(lag.as_secs_f64());
    LAST_APPLY_LAG_MS.store(
        i64::try_from(lag.as_millis()).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    let ms = at.timestamp_millis();
    if NEWEST_EVENT_MS.fetch_max(ms, Ordering::Relaxed) < ms {
        metrics::gauge!("stigg_byos_newest_event_timestamp_seconds").set(ms as f64 / 1000.0);
    }
}

pub fn queue_depth(visible: Option<f64>, in_flight: Option<f64>, delayed: Option<f64>) {
    for ((state, n), last) in [
        ("visible", visible),
        ("in_flight", in_flight),
        ("delayed", delayed),
    ]
    .into_iter()
    .zip(&QUEUE_DEPTH)
    {
        if let Some(n) = n {
            metrics::gauge!("stigg_byos_queue_messages", "state" => state).set(n);
            last.store(n as i64, Ordering::Relaxed);
        }
    }
}

/// A sync pass ended.
pub fn sync_pass(summary: &crate::sync::Summary, result: &'static str) {
    metrics::counter!("stigg_byos_sync_passes_total", "result" => result).increment(1);
    if result == "busy" {
        return;
    }
    metrics::gauge!("stigg_byos_sync_last_duration_seconds").set(summary.elapsed.as_secs_f64());
    if result == "complete" {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        metrics::gauge!("stigg_byos_sync_last_success_timestamp_seconds").set(now);
    }
    let c = &summary.counts;
    for (kind, k) in [
        ("customers", c.customers),
        ("subscriptions", c.subscriptions),
        ("entitlement_sets", c.sets),
    ] {
        metrics::counter!("stigg_byos_sync_changed_total", "kind" => kind).increment(k.changed);
        metrics::counter!("stigg_byos_sync_older_total", "kind" => kind).increment(k.older);
    }
    metrics::counter!("stigg_byos_sync_pruned_total", "kind" => "customers").increment(c.pruned);
}

pub fn processed(outcome: &'static str, seconds: f64) {
    count_message(outcome);
    metrics::histogram!("stigg_byos_processing_seconds").record(seconds);
}

pub fn message(outcome: &'static str) {
    count_message(outcome);
}

pub fn receive_error() {
    metrics::counter!("stigg_byos_receive_errors_total").increment(1);
}

pub fn delete_error(n: u64) {
    metrics::counter!("stigg_byos_delete_errors_total").increment(n);
}

pub fn in_flight(delta: f64) {
    metrics::gauge!("stigg_byos_in_flight").increment(delta);
}

/// The hot path's metric handles, looked up once (a lookup hashes the name and labels and
/// takes the registry's lock; the decisions made it show in profiles). Made on first use,
/// which is after [`prometheus`] installed the recorder: `run` installs it before it starts
/// any task.
struct Hot {
    cache_hit: metrics::Counter,
    allowed: metrics::Counter,
    denied: metrics::Counter,
    check_access_seconds: metrics::Histogram,
}

static HOT: std::sync::LazyLock<Hot> = std::sync::LazyLock::new(|| Hot {
    cache_hit: metrics::counter!("stigg_byos_access_cache_total", "event" => "hit"),
    allowed: metrics::counter!("stigg_byos_check_access_total", "result" => "allowed"),
    denied: metrics::counter!("stigg_byos_check_access_total", "result" => "denied"),
    check_access_seconds: metrics::histogram!("stigg_byos_check_access_seconds"),
});

/// An access cache event: `hit`, `miss`, `evicted`, `invalidated`, `not_installed`.
pub fn access_cache(event: &'static str) {
    if event == "hit" {
        return HOT.cache_hit.increment(1);
    }
    metrics::counter!("stigg_byos_access_cache_total", "event" => event).increment(1);
}

pub fn access_cache_reconnect() {
    metrics::counter!("stigg_byos_access_cache_listener_reconnects_total").increment(1);
}

pub fn access_cache_notified(seconds: f64) {
    metrics::histogram!("stigg_byos_access_cache_invalidation_seconds").record(seconds);
}

pub fn access_cache_listening(listening: bool) {
    metrics::gauge!("stigg_byos_access_cache_listening").set(if listening { 1.0 } else { 0.0 });
}

pub fn access_cache_bytes(bytes: u64) {
    metrics::gauge!("stigg_byos_access_cache_bytes").set(bytes as f64);
}

pub fn check_access(result: &'static str, seconds: f64) {
    match result {
        "allowed" => HOT.allowed.increment(1),
        "denied" => HOT.denied.increment(1),
        other => metrics::counter!("stigg_byos_check_access_total", "result" => other).increment(1),
    }
    HOT.check_access_seconds.record(seconds);
}
