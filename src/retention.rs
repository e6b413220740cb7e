//! Inbox retention: the claimed deduplication keys are needed only while their message may
//! come again. SQS keeps a message at most 14 days, so claims older than INBOX_RETENTION
//! (15 days by default) are deleted in the background by the worker, a small batch at a
//! time so that no long transaction or lock competes with the event writes.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store;

/// Claims deleted by one statement.
const BATCH: i64 = 1000;

/// The pause between two batches of one round, leaving the database to the event writes.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// The time between rounds.
const EVERY: Duration = Duration::from_secs(600);

/// Deletes the claims older than `retention` now and every ten minutes, until `shutdown`.
pub async fn run(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    loop {
        let deleted = tokio::select! {
            d = prune(&pool, retention, &shutdown) => d,
            _ = shutdown.cancelled() => return,
        };
        match deleted {
            Ok(0) => debug!("no inbox claims past the retention"),
            Ok(n) => info!(
                deleted = n,
                ?retention,
                "inbox claims past the retention deleted"
            ),
            Err(e) => warn!(error = %e, "deleting old inbox claims failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One round: batches until none is full. How many claims went.
async fn prune(
    pool: &PgPool,
    retention: Duration,
    shutdown: &CancellationToken,
) -> sqlx::Result<u64> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let before = chrono::Utc::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut deleted = 0;
    loop {
        let n = store::delete_inbox_claims_before(pool, before, BATCH).await?;
        deleted += n;
        if n < BATCH as u64 || shutdown.is_cancelled() {
            return Ok(deleted);
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
}
