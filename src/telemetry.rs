//! Tracing and metrics, set up in one place. Every counted failure is also logged where it
//! happens; payloads are never logged (they hold emails).

use std::sync::OnceLock;

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

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
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
}

pub fn processed(outcome: &'static str, seconds: f64) {
    metrics::counter!("stigg_byos_messages_total", "outcome" => outcome).increment(1);
    metrics::histogram!("stigg_byos_processing_seconds").record(seconds);
}

pub fn message(outcome: &'static str) {
    metrics::counter!("stigg_byos_messages_total", "outcome" => outcome).increment(1);
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

pub fn check_access(result: &'static str, seconds: f64) {
    metrics::counter!("stigg_byos_check_access_total", "result" => result).increment(1);
    metrics::histogram!("stigg_byos_check_access_seconds").record(seconds);
}
