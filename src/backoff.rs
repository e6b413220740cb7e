//! The backoff policies: how long to wait before trying again, each named by what it retries.
//! All are exponential with jitter; those without a limit are retried until shutdown (or a
//! deadline of their caller's).

use std::time::Duration;

use backon::ExponentialBuilder;

/// An SQS receive that failed: 200 ms doubling to 20 s, forever (the worker has nothing else
/// to do).
pub fn sqs_receive() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter()
        .without_max_times()
}

/// The worker's database while it is unreachable or contended (waiting for it, applying a
/// batch, recording a dead letter): 100 ms doubling to 3 s, forever, holding the messages.
pub fn worker_database() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .without_max_times()
}

/// A serving process's own connections at start-up and after a loss: listening for changes
/// again (the access cache is bypassed meanwhile) and warming up the hot reads (`/readyz`
/// waits): 100 ms doubling to 3 s, forever.
pub fn serving_connections() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .without_max_times()
}

/// A transient failure of a one-shot command's batch (`ingest`, `dlq replay`): 200 ms doubling
/// to 5 s, 12 times, then the command fails.
pub fn command_database() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(12)
        .with_jitter()
}

/// Fetching queue credentials from Stigg's Edge API (429, 5xx): 200 ms doubling to 5 s, 5
/// times.
pub fn edge_credentials() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(5)
        .with_jitter()
}

/// A request to Stigg's API during `sync` (429, 5xx, network): 500 ms doubling to 20 s, with
/// no count of its own: the caller stops at SYNC_RETRY_SECONDS.
pub fn stigg_api() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter()
        .without_max_times()
}

/// A database write of `sync` that failed transiently (a lost connection, a deadlock with the
/// live worker): 100 ms doubling to 5 s, 15 times, about a minute.
pub fn sync_database() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(15)
        .with_jitter()
}
