//! stigg-byos: a live replica of Stigg entitlement data. The composition root: [`run`] starts
//! the roles (SQS consumer, HTTP server) on a listener and a shutdown signal it is given, so
//! tests bind port 0 and stop it at will.

pub mod access;
pub mod apply;
pub mod cli;
pub mod config;
pub mod consumer;
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
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
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

/// Opens the pool. Connections are made on demand, so a process starts (and `/readyz` says
/// 503) while the database is down.
pub fn pool(settings: &Settings, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = connect_options(settings.database_url()?, std::env::var_os("PGSSLMODE"))?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options))
}

/// Parses `DATABASE_URL`. When neither the URL nor `PGSSLMODE` says an `sslmode` and the host
/// is a loopback address, TLS is not negotiated: on the same host it protects nothing and
/// costs CPU on both ends of every query. Anything else keeps libpq's rules (`prefer`).
pub fn connect_options(
    url: &str,
    pgsslmode: Option<std::ffi::OsString>,
) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let host = options
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let lower = url.to_ascii_lowercase();
    let sslmode_said =
        pgsslmode.is_some() || lower.contains("sslmode=") || lower.contains("ssl-mode=");
    Ok(if loopback && !sslmode_said {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

/// Connects and applies the migrations, retrying while the database is unreachable
/// (at most `patience`).
pub async fn connect_and_migrate(
    settings: &Settings,
    max_connections: u32,
    patience: Duration,
) -> anyhow::Result<PgPool> {
    let pool = pool(settings, max_connections)?;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match store::migrate(&pool).await {
            Ok(()) => return Ok(pool),
            Err(sqlx::migrate::MigrateError::Execute(e))
                if processor::is_transient(&e) && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "database not reachable yet; retrying migrations");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
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

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgSslMode;

    use super::connect_options;

    fn mode(url: &str, env: Option<&str>) -> PgSslMode {
        connect_options(url, env.map(Into::into))
            .unwrap()
            .get_ssl_mode()
    }

    #[test]
    fn loopback_hosts_skip_tls_unless_an_sslmode_is_said() {
        for url in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
        ] {
            assert!(matches!(mode(url, None), PgSslMode::Disable), "{url}");
        }
        let said = "postgres://u@127.0.0.1/db?sslmode=require";
        assert!(matches!(mode(said, None), PgSslMode::Require));
        let said = "postgres://u@127.0.0.1/db?ssl-mode=require";
        assert!(matches!(mode(said, None), PgSslMode::Require));
        assert!(!matches!(
            mode("postgres://u@127.0.0.1/db", Some("require")),
            PgSslMode::Disable
        ));
        assert!(!matches!(
            mode("postgres://u@db.example.com/db", None),
            PgSslMode::Disable
        ));
    }
}
