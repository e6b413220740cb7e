//! The SQS loop: receive (long poll, up to 10 at a time, at most WORKER_CONCURRENCY in
//! flight), apply what the receives hold in one transaction ([`gather`]: the receives that
//! wait while one applies are applied together), keep visibility extended while work runs,
//! delete only after the commit, dead-letter what can never apply, and drain on shutdown. It never deletes a message whose effect is not committed. The decisions are in
//! [`settle`] (pure), the SQS calls behind [`Queue`].

mod gather;
mod heartbeat;
pub mod settle;

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use self::gather::{Batches, Gather};
use self::heartbeat::Heartbeat;
use self::settle::Settlement;
use crate::dead_letters::{self, NewDeadLetter};
use crate::health::Health;
use crate::processor::{EventResult, Processor};
use crate::queue::{Outgoing, Queue, Received};
use crate::store;
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub concurrency: usize,
    pub wait_seconds: i32,
    pub visibility: Duration,
    pub max_receive_count: u32,
}

pub struct Consumer {
    queue: Queue,
    /// Where dead letters are copied (SQS_DLQ_URL), if anywhere.
    dead_letter_queue: Option<Queue>,
    processor: Processor,
    cfg: ConsumerConfig,
    health: Arc<Health>,
}

impl Consumer {
    pub fn new(
        queue: Queue,
        dead_letter_queue: Option<Queue>,
        processor: Processor,
        cfg: ConsumerConfig,
        health: Arc<Health>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            dead_letter_queue,
            processor,
            cfg,
            health,
        })
    }

    /// Runs until `shutdown`; then stops receiving, lets in-flight work finish within the
    /// visibility timeout, and makes whatever is left visible again. One receive loop per ten
    /// permits, so that receiving keeps up with WORKER_CONCURRENCY, each receiving a full share
    /// (at most 10) at a time. A receive loop that panics stops the consumer the same way, and
    /// the consumer then fails: it must not look alive while it receives nothing.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), PollerDied> {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency));
        let tasks = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        // shutdown, or a receive loop that died
        let stop = shutdown.child_token();
        let (pollers, share) = receive_shape(self.cfg.concurrency);
        self.health.set_consumer_running(true);
        info!(queue = %self.queue.url(), concurrency = self.cfg.concurrency, pollers,
              "consumer started");
        let (gather, batches) = gather::channel();
        let mut appliers = tokio::task::JoinSet::new();
        for _ in 0..APPLIERS {
            let (this, batches, stop) = (self.clone(), batches.clone(), stop.clone());
            appliers.spawn(async move { this.apply_batches(batches, stop).await });
        }
        drop(batches);
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..pollers {
            let this = self.clone();
            let ctx = (
                gather.clone(),
                permits.clone(),
                tasks.clone(),
                stop.clone(),
                hard_stop.clone(),
            );
            loops.spawn(async move { this.poll(share, ctx.0, ctx.1, ctx.2, ctx.3, ctx.4).await });
        }
        drop(gather);
        let ended = supervise(loops, &stop).await;
        info!(
            in_flight = tasks.len(),
            "shutting down: receiving stopped, draining"
        );
        tasks.close();
        if tokio::time::timeout(self.cfg.visibility, tasks.wait())
            .await
            .is_err()
        {
            warn!("in-flight work outlived the visibility timeout; releasing it");
            hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(3), tasks.wait()).await;
        }
        // every Gather is gone with the receive loops and their tasks: the appliers end
        let appliers_ended = match tokio::time::timeout(
            Duration::from_secs(3),
            supervise(std::mem::take(&mut appliers), &stop),
        )
        .await
        {
            Ok(ended) => ended,
            Err(_) => {
                appliers.abort_all();
                Ok(())
            }
        };
        self.health.set_consumer_running(false);
        info!("consumer stopped");
        ended.and(appliers_ended)
    }

    /// One applier: takes what the receives hand over (see [`gather`]) and applies it as one
    /// batch, until every receive is gone. One that panics stops the consumer, as a receive
    /// loop does; what it held goes back to the queue.
    async fn apply_batches(self: Arc<Self>, batches: Batches, stop: CancellationToken) {
        let _stop_on_panic = StopOnPanic(stop.clone());
        while let Some(batch) = batches.next().await {
            let results = {
                let events = batch.events();
                debug!(
                    receives = batch.receives(),
                    events = events.len(),
                    "applying"
                );
                self.process_with_retry(&events, &stop).await
            };
            batch.answer(results);
        }
    }

    /// One receive loop: take permits, receive, hand the batch to a task, until shutdown.
    async fn poll(
        self: Arc<Self>,
        share: u32,
        gather: Gather,
        permits: Arc<Semaphore>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let mut backoff = crate::backoff::sqs_receive().build();
        loop {
            if !self.health.database_ok() && !self.wait_for_database(&shutdown).await {
                break;
            }
            // wait for a full share: receives that carry few messages cost the queue as much
            let mut held = tokio::select! {
                p = permits.clone().acquire_many_owned(share) => p.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            let received = tokio::select! {
                r = self.queue.receive(share, self.cfg.wait_seconds, self.cfg.visibility) => r,
                _ = shutdown.cancelled() => break,
            };
            let messages = match received {
                Ok(m) => {
                    backoff = crate::backoff::sqs_receive().build();
                    m
                }
                Err(e) => {
                    telemetry::receive_error();
                    let wait = backoff.next().unwrap_or(Duration::from_secs(20));
                    warn!(error = %e, ?wait, "receive failed; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            if messages.is_empty() {
                continue;
            }
            if let Some(unused) = held.split(held.num_permits() - messages.len()) {
                drop(unused);
            }
            telemetry::in_flight(messages.len() as f64);
            let this = self.clone();
            let (shutdown, hard_stop) = (shutdown.clone(), hard_stop.clone());
            let gather = gather.clone();
            tasks.spawn(async move {
                this.handle_batch(messages, held, &gather, &shutdown, &hard_stop)
                    .await;
            });
        }
    }

    /// While the database is down: poll it, receive nothing. `false` on shutdown.
    async fn wait_for_database(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = crate::backoff::worker_database().build();
        loop {
            let ping = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("SELECT 1").execute(self.processor.pool()),
            )
            .await;
            if matches!(ping, Ok(Ok(_))) {
                info!("database reachable again; resuming receives");
                self.health.set_database_ok(true);
                return true;
            }
            let wait = backoff.next().unwrap_or(Duration::from_secs(3));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// Applies and settles a received batch. Its permits are given back once its messages are
    /// deleted or handed back. (Giving them back at the commit, before the delete, let the next
    /// receive overlap the delete but made the send-to-commit p99 at 500 ev/s 180–934 ms
    /// against 20 ms: BENCHMARKS.md, issue 11.)
    async fn handle_batch(
        &self,
        messages: Vec<Received>,
        held: tokio::sync::OwnedSemaphorePermit,
        gather: &Gather,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
    ) {
        let receipts: Vec<String> = messages.iter().map(|m| m.receipt.clone()).collect();
        let heartbeat = self.heartbeat(receipts.clone());
        let settled = tokio::select! {
            s = self.apply_and_settle(messages, gather) => s,
            _ = hard_stop.cancelled() => None,
        };
        // before the release (an extension after it would undo its delay) and the delete
        heartbeat.stop().await;
        match settled {
            Some(Settlement {
                delete,
                mut release,
                dead_letter,
            }) => {
                let mut delete: Vec<Received> = delete;
                for (m, letter) in dead_letter {
                    if self.dead_letter(&m, &letter, shutdown).await {
                        dead_letters::counted();
                        delete.push(m);
                    } else {
                        release.push((m, 0));
                    }
                }
                for (m, delay) in &release {
                    self.queue.change_visibility(&[&m.receipt], *delay).await;
                }
                let deleted: Vec<&str> = delete.iter().map(|m| m.receipt.as_str()).collect();
                self.queue.delete(&deleted).await;
                telemetry::in_flight(-(receipts.len() as f64));
                drop(held);
            }
            None => {
                let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
                self.queue.change_visibility(&receipts, 0).await;
                telemetry::in_flight(-(receipts.len() as f64));
                drop(held);
            }
        }
    }

    /// Triages, applies (with whatever other receives are waiting) and settles a received
    /// batch. `None` when the work was cut short by shutdown: every message goes back.
    async fn apply_and_settle(
        &self,
        messages: Vec<Received>,
        gather: &Gather,
    ) -> Option<Settlement> {
        let max = self.cfg.max_receive_count;
        let mut triaged = settle::triage(messages, max);
        let results = if triaged.apply.is_empty() {
            Vec::new()
        } else {
            // None: shutting down with the database unreachable, hand everything back now
            let (items, results) = gather.apply(std::mem::take(&mut triaged.apply)).await?;
            triaged.apply = items;
            let results = results?;
            for ((m, ev), result) in triaged.apply.iter().zip(&results) {
                if let Ok(outcome) = result {
                    if let Some(sent) = m.sent_at {
                        telemetry::queue_lag(sent);
                    }
                    debug!(message_id = %ev.dedup_key, event_type = %ev.event_type,
                           customer_id = ev.customer_id().unwrap_or("-"),
                           outcome = outcome.as_str(), "processed");
                }
            }
            results
        };
        Some(settle::settle(triaged.apply, results, triaged.dead, max))
    }

    /// Applies the batch, retrying transient failures for as long as it takes (holding the
    /// messages, with visibility extended by the heartbeat). `None` when shutdown came first.
    async fn process_with_retry(
        &self,
        events: &[&crate::events::ParsedEvent],
        shutdown: &CancellationToken,
    ) -> Option<Vec<EventResult>> {
        let mut backoff = crate::backoff::worker_database().build();
        loop {
            match self.processor.process(events).await {
                Ok(results) => {
                    self.health.set_database_ok(true);
                    return Some(results);
                }
                Err(e) => {
                    self.health.set_database_ok(false);
                    for _ in events {
                        telemetry::message("retried");
                    }
                    let wait = backoff.next().unwrap_or(Duration::from_secs(3));
                    warn!(error = %e, ?wait, batch = events.len(), "transient failure; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Records the dead letter, copies it to SQS_DLQ_URL when set. `true` when the message
    /// may be deleted (and counts as dead-lettered).
    async fn dead_letter(
        &self,
        m: &Received,
        letter: &NewDeadLetter,
        shutdown: &CancellationToken,
    ) -> bool {
        let source_id = letter.source_id.as_str();
        let mut backoff = crate::backoff::worker_database().build();
        loop {
            match store::record_dead_letter(self.processor.pool(), letter).await {
                Ok(()) => break,
                Err(e) if store::is_transient(&e) && !shutdown.is_cancelled() => {
                    self.health.set_database_ok(false);
                    let wait = backoff.next().unwrap_or(Duration::from_secs(3));
                    warn!(error = %e, "cannot record dead letter yet; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    error!(error = %e, sqs_message_id = source_id, "cannot record dead letter");
                    return false;
                }
            }
        }
        if let Some(dlq) = &self.dead_letter_queue {
            let copy = Outgoing {
                body: m.body.clone(),
                group_id: Some(m.group_id.clone().unwrap_or_else(|| "dead-letters".into())),
                dedup_key: Some(source_id.to_owned()),
                attributes: vec![
                    ("stigg-byos-reason", truncate(&letter.reason, 1024)),
                    ("stigg-byos-source-message-id", source_id.to_owned()),
                ],
            };
            if let Err(e) = dlq.send(&copy).await {
                error!(error = %e, sqs_message_id = source_id,
                       "cannot copy dead letter to SQS_DLQ_URL; will retry on redelivery");
                return false;
            }
        }
        true
    }

    fn heartbeat(&self, receipts: Vec<String>) -> Heartbeat {
        let queue = self.queue.clone();
        let visibility = self.cfg.visibility;
        let every = (visibility / 3).max(Duration::from_secs(1));
        let receipts = Arc::new(receipts);
        Heartbeat::start(every, move || {
            let (queue, receipts) = (queue.clone(), receipts.clone());
            async move {
                debug!(messages = receipts.len(), "extending visibility");
                let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
                queue
                    .change_visibility(&receipts, visibility.as_secs() as i32)
                    .await;
            }
        })
    }
}

/// How `concurrency` messages in flight are received: by how many receive loops, each
/// receiving how many messages at a time (SQS gives at most 10).
pub fn receive_shape(concurrency: usize) -> (usize, u32) {
    let loops = concurrency.div_ceil(10).max(1);
    let share = concurrency.div_ceil(loops).clamp(1, 10) as u32;
    (loops, share)
}

/// A receive loop or an applier panicked: the consumer stopped, since it would otherwise run
/// on receiving or applying less, or nothing at all, while the process looks alive.
#[derive(Debug, thiserror::Error)]
#[error("a consumer task panicked: {0}")]
pub struct PollerDied(String);

/// How many transactions apply gathered receives at once. Two: one commits while the next
/// batch gathers and applies, and each grows to what arrived meanwhile (BENCHMARKS.md,
/// issue 11).
const APPLIERS: usize = 2;

/// Cancels the token when dropped by a panic, so that the receive loops stop too.
struct StopOnPanic(CancellationToken);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel();
        }
    }
}

/// Waits for the receive loops to end. One that panics is logged with why, and stops the
/// others (through `stop`) and the consumer with an error.
async fn supervise(
    mut loops: tokio::task::JoinSet<()>,
    stop: &CancellationToken,
) -> Result<(), PollerDied> {
    let mut died = None;
    while let Some(ended) = loops.join_next().await {
        let Err(e) = ended else { continue };
        let why = panic_message(e);
        error!(reason = %why, "a consumer task panicked; stopping the consumer");
        stop.cancel();
        died.get_or_insert(PollerDied(why));
    }
    died.map_or(Ok(()), Err)
}

/// What a task that ended abnormally said.
fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receive_loop_that_panics_stops_the_others_and_fails_the_consumer() {
        let stop = CancellationToken::new();
        let mut loops = tokio::task::JoinSet::new();
        let stopped = stop.clone();
        loops.spawn(async move { stopped.cancelled().await });
        loops.spawn(async { panic!("receive loop bug") });
        let ended = tokio::time::timeout(Duration::from_secs(5), supervise(loops, &stop))
            .await
            .expect("the other loop was stopped");
        let died = ended.expect_err("the consumer failed");
        assert!(died.to_string().contains("receive loop bug"), "{died}");
    }

    #[tokio::test]
    async fn receive_loops_that_end_on_shutdown_are_a_clean_stop() {
        let stop = CancellationToken::new();
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let stopped = stop.clone();
            loops.spawn(async move { stopped.cancelled().await });
        }
        stop.cancel();
        assert!(supervise(loops, &stop).await.is_ok());
    }
}
