//! PostgreSQL: one function per state change, each carrying the version guard of
//! STIGG-EVENTS §4 in its SQL (the same rules as [`crate::version`], which the tests hold
//! against each other). Every function runs on the caller's connection, inside the caller's
//! transaction; none commits.
//!
//! By subdomain: [`inbox`] (claimed deduplication keys), [`customers`] (and tombstones),
//! [`subscriptions`] (with entitlement sets and usage), [`access`] (the decision's reads),
//! [`dead_letters`], [`sync`] (the bookkeeping of `stigg-byos sync`), and [`pool`]
//! (connecting and migrating).

use sqlx::PgPool;

pub mod sync;

/// Transient versus permanent, decided here and nowhere else (the
/// worker, sync, dead letters and start-up all ask it): connection trouble,
/// serialization failures, deadlocks, lock time-outs and server shutdown are worth retrying.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code = code.as_ref();
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // operator intervention (shutdown)
                || matches!(code, "40001" | "40P01" | "55P03")
        }),
        _ => false,
    }
}
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// "Contention, retry": a write found its row changing under it too often. It travels as a
/// database error with SQLSTATE 40001 (serialization failure), so the one transient/permanent
/// classifier ([`is_transient`]) retries it as it retries PostgreSQL's own.
#[derive(Debug, thiserror::Error)]
#[error("contention: {0}")]
pub struct Contention(pub &'static str);

impl sqlx::error::DatabaseError for Contention {
    fn message(&self) -> &str {
        self.0
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some("40001".into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// `''` stands for "no resource" (the customer-level set) in the keys.
pub fn resource_key(resource_id: Option<&str>) -> &str {
    resource_id.unwrap_or("")
}

/// Applies the migrations. Safe when several processes start at once: sqlx takes an
/// advisory lock around them.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Serialises every writer of a customer's state (events, batches, sync) on an advisory
/// transaction lock per customer, taken in one order (by the lock key) and in one mode, so two
/// transactions never wait on each other in a cycle and no lock is ever upgraded. Held until
/// the caller's transaction ends. Two customers whose keys collide share a lock, which only
/// serialises them.
pub async fn lock_customers<'a>(
    conn: &mut sqlx::PgConnection,
    ids: impl IntoIterator<Item = &'a str>,
) -> sqlx::Result<()> {
    let ids = distinct_ids(ids);
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k)
         FROM (SELECT DISTINCT hashtextextended(id, 7391) AS k FROM unnest($1::text[]) AS id
               ORDER BY k) AS keys",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// The customer ids a transaction writes, each once, sorted.
fn distinct_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub mod access;
pub mod batch;
pub mod customers;
pub mod dead_letters;
pub mod inbox;
pub mod pool;
pub mod status;
pub mod subscriptions;

pub use access::*;
pub use customers::*;
pub use dead_letters::*;
pub use inbox::*;
pub use pool::{connect_and_migrate, connect_options, pool};
pub use subscriptions::*;

#[cfg(test)]
mod tests {
    use super::{is_transient, Contention};

    #[test]
    fn contention_is_transient_and_a_refusal_is_not() {
        assert!(is_transient(&Contention("row kept changing").into()));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
