//! Runs parsed events through [`crate::apply`] in batches: one transaction per batch, applied
//! set-based ([`crate::apply::batch`]), falling back to one transaction per event when the
//! batch fails for a reason that is not transient, so one bad event never rolls back the
//! others. Every transaction first takes the locks of its customers
//! ([`crate::store::lock_customers`]). Transient database failures are
//! reported to the caller, which retries (see [`crate::store::is_transient`]).

use std::time::Instant;

use sqlx::PgPool;

use crate::apply::{self, Outcome};
use crate::events::ParsedEvent;
use crate::store::{self, is_transient};
use crate::telemetry;

/// The per-event result of a batch: the outcome, or why it failed (not transiently).
pub type EventResult = Result<Outcome, String>;

#[derive(Debug, thiserror::Error)]
#[error("transient database failure: {0}")]
pub struct Transient(#[source] pub sqlx::Error);

/// Batches of at least this many events are applied set-based; smaller ones event by event.
/// Measured with `ingest` on the bench's events (BENCHMARKS.md, issue 11): at 10 events a
/// batch the set-based path was no faster (its dozen statements cost about what ten events'
/// do), at 200 it was twice as fast, at 1 it was slower.
pub const SET_BASED_FROM: usize = 20;

#[derive(Clone)]
pub struct Processor {
    pool: PgPool,
    keep_order: bool,
    /// The smallest batch applied set-based; `usize::MAX`: every batch event by event.
    set_based_from: usize,
}

impl Processor {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            keep_order: false,
            set_based_from: SET_BASED_FROM,
        }
    }

    /// Apply a batch's events one after another on its transaction instead of set-based:
    /// the reference the set-based path is held to (tests, the bench's digest).
    pub fn event_by_event(self) -> Self {
        self.set_based_from(usize::MAX)
    }

    /// Apply each batch exactly in the given order (FIFO queues). Otherwise a batch is applied
    /// grouped by customer, each customer's events still in their order. (Deadlocks between
    /// concurrent batches are ruled out by [`store::lock_customers`], not by this order.)
    pub fn keep_order(mut self, keep: bool) -> Self {
        self.keep_order = keep;
        self
    }

    /// The smallest batch applied set-based ([`SET_BASED_FROM`] by default; tests use 1).
    pub fn set_based_from(mut self, events: usize) -> Self {
        self.set_based_from = events.max(1);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies a batch in order. `Err` only for a transient failure: nothing was committed.
    pub async fn process(&self, events: &[&ParsedEvent]) -> Result<Vec<EventResult>, Transient> {
        let started = Instant::now();
        let mut order: Vec<usize> = (0..events.len()).collect();
        if !self.keep_order {
            order.sort_by_key(|&i| events[i].customer_id().unwrap_or(""));
        }
        let ordered: Vec<&ParsedEvent> = order.iter().map(|&i| events[i]).collect();
        let in_order: Vec<EventResult> = match self.process_together(&ordered).await? {
            Some(outcomes) => outcomes.into_iter().map(Ok).collect(),
            None => self.process_one_by_one(&ordered).await?,
        };
        let mut results: Vec<Option<EventResult>> = vec![None; events.len()];
        for (slot, result) in order.into_iter().zip(in_order) {
            results[slot] = Some(result);
        }
        let results: Vec<EventResult> = results
            .into_iter()
            .map(|r| r.expect("one result per event"))
            .collect();
        for (ev, r) in events.iter().zip(&results) {
            if let (Ok(Outcome::Applied), Some(at)) = (r, ev.event_time()) {
                telemetry::applied_event(at);
            }
        }
        let per_event = started.elapsed().as_secs_f64() / events.len().max(1) as f64;
        for r in &results {
            telemetry::processed(
                r.as_ref().map(|o| o.as_str()).unwrap_or("failed"),
                per_event,
            );
        }
        Ok(results)
    }

    /// One transaction for the whole batch; `None` when some event failed non-transiently.
    async fn process_together(
        &self,
        events: &[&ParsedEvent],
    ) -> Result<Option<Vec<Outcome>>, Transient> {
        let mut tx = self.pool.begin().await.map_err(Transient)?;
        let applied = async {
            store::lock_customers(&mut tx, events.iter().filter_map(|ev| ev.customer_id())).await?;
            if events.len() >= self.set_based_from {
                return apply::batch::apply_batch(&mut tx, events).await;
            }
            let mut outcomes = Vec::with_capacity(events.len());
            for ev in events {
                outcomes.push(apply::apply(&mut tx, ev).await?);
            }
            Ok(outcomes)
        }
        .await;
        let outcomes = match applied {
            Ok(outcomes) => outcomes,
            Err(e) if is_transient(&e) => return Err(Transient(e)),
            Err(e) => {
                tracing::debug!(error = %e, "batch failed; retrying its events one by one");
                return Ok(None);
            }
        };
        // a failed commit wrote nothing, transient or not, so retrying is always safe
        store::notify_changed(&mut tx, events.iter().filter_map(|ev| ev.customer_id()))
            .await
            .map_err(Transient)?;
        tx.commit().await.map_err(Transient)?;
        Ok(Some(outcomes))
    }

    async fn process_one_by_one(
        &self,
        events: &[&ParsedEvent],
    ) -> Result<Vec<EventResult>, Transient> {
        let mut results = Vec::with_capacity(events.len());
        for ev in events {
            let mut tx = self.pool.begin().await.map_err(Transient)?;
            let applied = async {
                store::lock_customers(&mut tx, ev.customer_id()).await?;
                apply::apply(&mut tx, ev).await
            }
            .await;
            match applied {
                Ok(o) => {
                    // a failed commit wrote nothing, transient or not, so retrying is always safe
                    store::notify_changed(&mut tx, ev.customer_id())
                        .await
                        .map_err(Transient)?;
                    tx.commit().await.map_err(Transient)?;
                    results.push(Ok(o));
                }
                Err(e) if is_transient(&e) => return Err(Transient(e)),
                Err(e) => {
                    drop(tx);
                    results.push(Err(format!("database rejected the event: {e}")));
                }
            }
        }
        Ok(results)
    }
}
