//! stigg-byos: a live replica of Stigg entitlement data. The composition root: [`run`] starts
//! the roles (SQS consumer, HTTP server) on a listener and a shutdown signal it is given, so
//! tests bind port 0 and stop it at will.

pub mod access;
pub mod apply;
pub mod backoff;
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
pub mod reads;
pub mod retention;
pub mod sqs;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod version;

use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::health::Health;
use crate::processor::Processor;

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
    let health = Arc::new(Health::new(roles.worker));
    let mut tasks = tokio::task::JoinSet::new();

    if roles.worker {
        let cfg = ConsumerConfig {
            queue_url: settings.queue_url()?.to_owned(),
            dlq_url: settings.sqs_dlq_url.clone().filter(|s| !s.is_empty()),
            concurrency: settings.worker_concurrency as usize,
            wait_seconds: settings.sqs_wait_seconds as i32,
            visibility: settings.visibility_timeout(),
            max_receive_count: settings.max_receive_count,
        };
        let sqs = sqs::client(&settings).await;
        tasks.spawn(sqs::watch_depth(sqs.clone(), cfg.queue_url.clone(), shutdown.clone()).map(Ok));
        let processor = Processor::new(pool.clone()).keep_order(sqs::is_fifo(&cfg.queue_url));
        let consumer = Consumer::new(sqs, processor, cfg, health.clone());
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
        let state = http::AppState {
            pool: pool.clone(),
            reads: Arc::new(reads::ReadPool::new(
                (*pool.connect_options()).clone(),
                settings.read_connections(),
            )),
            health: health.clone(),
            tokens: Arc::new(tokens),
        };
        telemetry::prometheus();
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

    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let outcome = done.context("role panicked").and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = %e, "a role failed; shutting down");
            shutdown.cancel();
            result = Err(e);
        }
    }
    pool.close().await;
    result
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
