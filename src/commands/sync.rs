//! `stigg-byos sync`: one pass of [`crate::sync`] from the command line, stopped by SIGTERM or
//! SIGINT, with its summary printed and its ending turned into the exit code.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::store;

/// Runs one pass with `opts`: `Ok` when it completed, an error saying how to continue when it
/// stopped early.
pub async fn run(settings: &Settings, opts: &crate::sync::Options) -> anyhow::Result<()> {
    let api = crate::sync::api::StiggApi::new(settings.stigg_api()?)?;
    let pool = store::connect_and_migrate(
        settings,
        opts.concurrency as u32 + 2,
        Duration::from_secs(30),
    )
    .await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal.cancel();
    });
    let outcome = crate::sync::run_pass(&pool, &api, opts, &shutdown).await;
    if !matches!(outcome.result, Err(crate::sync::SyncError::Busy)) {
        println!("{}", outcome.summary);
    }
    pool.close().await;
    outcome.result.map_err(|e| match e {
        crate::sync::SyncError::Interrupted => {
            anyhow::anyhow!("sync interrupted; `stigg-byos sync --resume` continues it")
        }
        e @ crate::sync::SyncError::Api(_) => anyhow::Error::new(e)
            .context("sync stopped early (nothing was pruned; `sync --resume` continues it)"),
        e => anyhow::Error::new(e).context("sync stopped early (nothing was pruned)"),
    })
}
