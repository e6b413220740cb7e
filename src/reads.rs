//! Connections for the hot read paths (`/check-access`, GraphQL's `customer` and
//! `subscription`), without the two extra round trips per query that sqlx's pool makes: it
//! pings a connection when it hands it out and again when it takes it back, so two of every
//! three round trips of a one-row query were pings. Under load the server's socket sends were
//! a quarter of its CPU (BENCHMARKS.md).
//!
//! Instead a connection is checked by using it: a query that fails because the connection
//! is gone (closed while idle, the database restarted) is run once more on a new one. Reads
//! are idempotent, so that retry is safe. A connection is kept only after a call that
//! completed, with an answer or a database error; one whose call was cancelled midway is
//! dropped, never reused.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// How long a caller waits for a free connection, and for a new one to open.
const WAIT: Duration = Duration::from_secs(2);
/// A connection is closed after this long, as sqlx's pool does, so that reads move to a new
/// server behind the same address (a failover) within this time.
const MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// A read: its query (or queries) on the connection, with what it needs from the caller.
/// A plain function, so that it can be run twice and its future is `Send`.
pub type Read<A, T> = for<'c> fn(&'c mut PgConnection, &'c A) -> BoxFuture<'c, sqlx::Result<T>>;

pub struct ReadPool {
    options: PgConnectOptions,
    /// Idle connections with the time each was opened.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// At most this many connections; further callers wait for one.
    max: usize,
    permits: Semaphore,
}

impl ReadPool {
    pub fn new(options: PgConnectOptions, max: usize) -> Self {
        let max = max.max(1);
        ReadPool {
            options,
            idle: Mutex::new(Vec::with_capacity(max)),
            max,
            permits: Semaphore::new(max),
        }
    }

    /// Runs `read(connection, arg)`. When a connection taken from the idle list turns out to
    /// be gone, `read` runs once more on a new connection.
    pub async fn run<A: ?Sized + Sync, T>(&self, arg: &A, read: Read<A, T>) -> sqlx::Result<T> {
        let _permit = tokio::time::timeout(WAIT, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        if let Some((mut conn, opened)) = self.take_idle() {
            match read(&mut conn, arg).await {
                Err(e) if connection_lost(&e) => drop(conn),
                result => return self.settle(conn, opened, result),
            }
        }
        let mut conn = tokio::time::timeout(WAIT, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        let result = read(&mut conn, arg).await;
        self.settle(conn, Instant::now(), result)
    }

    fn take_idle(&self) -> Option<(PgConnection, Instant)> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps `conn` for the next call unless `result` says it is gone or it is too old.
    fn settle<T>(
        &self,
        conn: PgConnection,
        opened: Instant,
        result: sqlx::Result<T>,
    ) -> sqlx::Result<T> {
        let lost = matches!(&result, Err(e) if connection_lost(e));
        if !lost && opened.elapsed() < MAX_AGE {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < self.max {
                idle.push((conn, opened));
            }
        }
        result
    }
}

/// Opens every connection of `reads` and prepares the hot reads' statements on each, then
/// marks the process warm (`/readyz`), so that the first requests do not pay for opening
/// connections and parsing statements. Retried until it succeeds or shutdown.
pub async fn warm_up(reads: Arc<ReadPool>, health: Arc<Health>, shutdown: CancellationToken) {
    let mut backoff = crate::backoff::serving_connections().build();
    loop {
        // all at once, so that each read takes a connection of its own
        let opened = futures::future::join_all((0..reads.max).map(|_| {
            let read: Read<str, _> = |conn, id| {
                Box::pin(async move {
                    crate::store::load_access(&mut *conn, id, None, "").await?;
                    crate::store::load_customer_access(&mut *conn, id).await?;
                    Ok(())
                })
            };
            let reads = reads.clone();
            async move { reads.run("\u{1}warm-up", read).await }
        }))
        .await;
        match opened.into_iter().find_map(Result::err) {
            None => {
                health.set_warm();
                tracing::debug!(connections = reads.max, "hot reads warmed up");
                return;
            }
            Some(e) => tracing::debug!(error = %e, "cannot warm up the hot reads yet"),
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(3));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Whether `e` means the connection can no longer be used (as opposed to a query that
/// failed on a healthy connection).
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // connection_exception (08…) and operator intervention that ends the session (57P…:
        // shutdown, crash, cannot connect now, idle_session_timeout)
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::connection_lost;

    #[test]
    fn io_errors_mean_the_connection_is_gone_and_decode_errors_do_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_lost(&io));
        assert!(connection_lost(&sqlx::Error::Protocol("eof".into())));
        assert!(!connection_lost(&sqlx::Error::RowNotFound));
        assert!(!connection_lost(&sqlx::Error::PoolTimedOut));
    }
}
