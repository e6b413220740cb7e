//! stigg-byos: a live replica of Stigg entitlement data. The composition root: [`run`] starts
//! the roles (SQS consumer, HTTP server) on a listener and a shutdown signal it is given, so
//! tests bind port 0 and stop it at will.
//!
//! Comments cite the domain rules by section (`§4`, `§7.6`, `STIGG-API.md §4`):
//! `docs/rules.md` restates each of them.

pub mod access;
pub mod apply;
pub mod backoff;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod consumer;
pub mod dead_letters;
pub mod events;
pub mod graphql;
pub mod health;
pub mod http;
pub mod processor;
pub mod queue;
pub mod reads;
pub mod retention;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod version;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::health::Health;
use crate::processor::Processor;
use crate::queue::Queue;

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub worker: bool,
    pub http: bool,
}

/// Runs the roles until `shutdown`. The HTTP server listens on `listener` when given.
pub async fn run(
    settings: Settings,
    pool: PgPool,
    roles: Roles,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    telemetry::mark_start();
    // Before any task records a metric: one recorded earlier goes nowhere, and a gauge set
    // once (listening, queue depth) would read as missing for good.
    telemetry::prometheus();
    let health = Arc::new(Health::new(roles.worker));
    let mut tasks = tokio::task::JoinSet::new();

    if roles.worker {
        let cfg = ConsumerConfig {
            concurrency: settings.worker_concurrency as usize,
            wait_seconds: settings.sqs_wait_seconds as i32,
            visibility: settings.visibility_timeout(),
            max_receive_count: settings.max_receive_count,
        };
        let queue = Queue::connect(&settings, settings.queue_url()?).await;
        let dead_letter_queue = (settings.sqs_dlq_url.as_deref())
            .filter(|url| !url.is_empty())
            .map(|url| queue.other(url));
        tasks.spawn(queue.clone().watch_depth(shutdown.clone()).map(Ok));
        let processor = Processor::new(pool.clone()).keep_order(queue.is_fifo());
        let consumer = Consumer::new(queue, dead_letter_queue, processor, cfg, health.clone());
        let prune = retention::run(pool.clone(), settings.inbox_retention, shutdown.clone());
        tasks.spawn(async move {
            prune.await;
            Ok(())
        });
        let shutdown = shutdown.clone();
        tasks.spawn(async move { consumer.run(shutdown).await.map_err(anyhow::Error::from) });
    }

    if let (true, Some(every)) = (roles.worker, settings.sync_interval.0) {
        let api = sync::api::StiggApi::new(settings.stigg_api()?)?;
        let opts = sync::Options {
            resume: false,
            prune: true,
            force: false,
            max_prune_percent: 10.0,
            concurrency: settings.sync_concurrency as usize,
            progress: sync::ProgressStyle::Log,
        };
        tasks.spawn(sync::every(pool.clone(), api, opts, every, shutdown.clone()).map(Ok));
    }

    if roles.http {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(settings.http_addr)
                .await
                .with_context(|| format!("binding HTTP_ADDR {}", settings.http_addr))?,
        };
        let tokens = settings.tokens();
        if tokens.is_empty() {
            tracing::warn!("API_TOKENS is unset: /check-access and /graphql are open to anyone who can reach them");
        }
        let access = cache::AccessCache::new(u64::from(settings.access_cache_mb) << 20);
        tasks.spawn(
            cache::listen(
                access.clone(),
                (*pool.connect_options()).clone(),
                shutdown.clone(),
            )
            .map(Ok),
        );
        let reads = Arc::new(reads::ReadPool::new(
            (*pool.connect_options()).clone(),
            settings.read_connections(),
        ));
        tasks.spawn(reads::warm_up(reads.clone(), health.clone(), shutdown.clone()).map(Ok));
        let state = http::Served {
            pool: pool.clone(),
            reads,
            access,
            health: health.clone(),
            tokens: Arc::new(tokens),
        };
        let app = http::router(state);
        tracing::info!(addr = %listener.local_addr()?, "HTTP server listening");
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .context("HTTP server")
        });
    }

    // The drain is bounded by the visibility timeout (§7.16); a few seconds past it, whatever
    // still holds a role (a stuck connection) is abandoned so that the process can exit.
    let grace = settings.visibility_timeout() + SHUTDOWN_SLACK;
    let outcome = supervise(tasks, &shutdown, grace).await;
    if outcome.drained {
        pool.close().await;
    }
    outcome.result
}

/// How long past the visibility timeout a shutdown may take before what still runs is
/// abandoned.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(4);

/// How the roles ended.
struct Supervised {
    /// The first role failure, if any.
    result: anyhow::Result<()>,
    /// Every role ended (else some were abandoned at the deadline).
    drained: bool,
}

/// Waits for the roles. The first that fails (or panics) cancels `shutdown`, so the others
/// drain; once `shutdown` is cancelled, roles still running after `grace` are abandoned.
async fn supervise(
    mut tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Supervised {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    let mut result = Ok(());
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                let Some(done) = done else {
                    return Supervised { result, drained: true };
                };
                let outcome = done.context("role panicked").and_then(|r| r);
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "a role failed; shutting down");
                    shutdown.cancel();
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
            () = &mut deadline => {
                tracing::warn!(
                    roles = tasks.len(),
                    "shutdown took longer than the visibility timeout; abandoning what still runs"
                );
                tasks.detach_all();
                return Supervised { result, drained: false };
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::supervise;

    #[tokio::test(start_paused = true)]
    async fn a_role_that_ignores_shutdown_is_abandoned_after_the_grace() {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async { Ok(()) });
        tasks.spawn(async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        let started = tokio::time::Instant::now();
        let out = supervise(tasks, &shutdown, Duration::from_secs(34)).await;
        assert!(out.result.is_ok());
        assert!(!out.drained);
        assert_eq!(started.elapsed(), Duration::from_secs(39));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_role_cancels_the_others_and_its_error_is_the_result() {
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async { Err(anyhow::anyhow!("boom")) });
        let other = shutdown.clone();
        tasks.spawn(async move {
            other.cancelled().await;
            Ok(())
        });
        let out = supervise(tasks, &shutdown, Duration::from_secs(30)).await;
        assert!(out.drained);
        assert_eq!(out.result.unwrap_err().to_string(), "boom");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_role_is_a_failure() {
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async { panic!("bug") });
        let out = supervise(tasks, &shutdown, Duration::from_secs(30)).await;
        assert!(shutdown.is_cancelled());
        assert!(out.result.unwrap_err().to_string().contains("panicked"));
    }
}
