//! The SQS loop: receive (long poll, up to 10 at a time, at most WORKER_CONCURRENCY in
//! flight), apply each received batch in one transaction, keep visibility extended while work
//! runs, delete only after the commit, dead-letter what can never apply, and drain on
//! shutdown. It never deletes a message whose effect is not committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName,
};
use backon::BackoffBuilder;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::dead_letters::{self, NewDeadLetter};
use crate::events::{self, ParsedEvent};
use crate::health::Health;
use crate::processor::Processor;
use crate::store;
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub queue_url: String,
    pub dlq_url: Option<String>,
    pub concurrency: usize,
    pub wait_seconds: i32,
    pub visibility: Duration,
    pub max_receive_count: u32,
}

pub struct Consumer {
    sqs: aws_sdk_sqs::Client,
    processor: Processor,
    cfg: ConsumerConfig,
    health: Arc<Health>,
}

impl Consumer {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        processor: Processor,
        cfg: ConsumerConfig,
        health: Arc<Health>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sqs,
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
        let pollers = self.cfg.concurrency.div_ceil(10).max(1);
        let share = self.cfg.concurrency.div_ceil(pollers).min(10) as u32;
        self.health.set_consumer_running(true);
        info!(queue = %self.cfg.queue_url, concurrency = self.cfg.concurrency, pollers,
              "consumer started");
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..pollers {
            let this = self.clone();
            let ctx = (
                permits.clone(),
                tasks.clone(),
                stop.clone(),
                hard_stop.clone(),
            );
            loops.spawn(async move { this.poll(share, ctx.0, ctx.1, ctx.2, ctx.3).await });
        }
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
        self.health.set_consumer_running(false);
        info!("consumer stopped");
        ended
    }

    /// One receive loop: take permits, receive, hand the batch to a task, until shutdown.
    async fn poll(
        self: Arc<Self>,
        share: u32,
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
                r = self.receive(share as i32) => r,
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
            tasks.spawn(async move {
                let n = messages.len();
                this.handle_batch(messages, &shutdown, &hard_stop).await;
                telemetry::in_flight(-(n as f64));
                drop(held);
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

    async fn receive(&self, max: i32) -> Result<Vec<Message>, aws_sdk_sqs::Error> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.cfg.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(self.cfg.wait_seconds)
            .visibility_timeout(self.cfg.visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    async fn handle_batch(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
    ) {
        let handles: Vec<(String, String)> = messages.iter().map(handle_of).collect();
        let heartbeat = self.heartbeat(handles.clone());
        let settled = tokio::select! {
            s = self.handle_batch_inner(messages, shutdown) => s,
            _ = hard_stop.cancelled() => None,
        };
        // before the release (an extension after it would undo its delay) and the delete
        heartbeat.stop().await;
        match settled {
            Some(Settled { release, delete }) => {
                for (m, delay) in &release {
                    self.change_visibility(&[handle_of(m)], *delay).await;
                }
                self.delete(&delete).await;
            }
            None => self.change_visibility(&handles, 0).await,
        }
    }

    /// Parses, applies and dead-letters a batch; says what to release and delete. `None` when
    /// the work was cut short by shutdown: every message goes back.
    async fn handle_batch_inner(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> Option<Settled> {
        let max = self.cfg.max_receive_count;
        let mut parsed: Vec<(Message, ParsedEvent)> = Vec::with_capacity(messages.len());
        let mut dead: Vec<(Message, NewDeadLetter)> = Vec::new();
        for m in messages {
            let count = receive_count(&m);
            let body = m.body.as_deref().unwrap_or("");
            match events::parse(body.as_bytes()) {
                Err(e) => {
                    warn!(sqs_message_id = m.message_id.as_deref().unwrap_or("-"),
                          message_id = e.message_id.as_deref().unwrap_or("-"),
                          event_type = e.event_type.as_deref().unwrap_or("-"),
                          reason = %e.reason, "malformed message: dead-lettering");
                    let dl = NewDeadLetter::unparsable(source_id(&m), body.into(), e);
                    dead.push((m, dl));
                }
                Ok(ev) if count > max => {
                    let reason = format!(
                        "received {count} times (MAX_RECEIVE_COUNT is {max}) without being applied"
                    );
                    let dl = NewDeadLetter::unappliable(source_id(&m), body.into(), &ev, reason);
                    warn!(message_id = %ev.dedup_key, event_type = %ev.event_type,
                          customer_id = ev.customer_id().unwrap_or("-"), receive_count = count,
                          "receive limit reached: dead-lettering");
                    dead.push((m, dl));
                }
                Ok(ev) => parsed.push((m, ev)),
            }
        }

        let mut to_delete: Vec<Message> = Vec::new();
        let mut release: Vec<(Message, i32)> = Vec::new();
        if !parsed.is_empty() {
            let events: Vec<&ParsedEvent> = parsed.iter().map(|(_, e)| e).collect();
            // None: shutting down with the database unreachable, hand everything back now
            let results = self.process_with_retry(&events, shutdown).await?;
            for ((m, ev), result) in parsed.into_iter().zip(results) {
                let span = info_span!("event", message_id = %ev.dedup_key,
                    event_type = %ev.event_type, customer_id = ev.customer_id().unwrap_or("-"));
                let _enter = span.enter();
                match result {
                    Ok(outcome) => {
                        debug!(outcome = outcome.as_str(), "processed");
                        to_delete.push(m);
                    }
                    Err(reason) => {
                        let count = receive_count(&m);
                        if count >= max {
                            error!(%reason, receive_count = count, "failed for the last time: dead-lettering");
                            let reason = format!("failed on receive {count} of {max}: {reason}");
                            let body = m.body.as_deref().unwrap_or("").into();
                            let dl = NewDeadLetter::unappliable(source_id(&m), body, &ev, reason);
                            dead.push((m, dl));
                        } else {
                            warn!(%reason, receive_count = count, "failed; SQS will redeliver");
                            release.push((m, retry_delay(count)));
                        }
                    }
                }
            }
        }
        for (m, dl) in dead {
            if self.dead_letter(&m, &dl, shutdown).await {
                dead_letters::counted();
                to_delete.push(m);
            } else {
                release.push((m, 0));
            }
        }
        Some(Settled {
            release,
            delete: to_delete,
        })
    }

    /// Applies the batch, retrying transient failures for as long as it takes (holding the
    /// messages, with visibility extended by the heartbeat). `None` when shutdown came first.
    async fn process_with_retry(
        &self,
        events: &[&ParsedEvent],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Result<crate::apply::Outcome, String>>> {
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
        m: &Message,
        dl: &NewDeadLetter,
        shutdown: &CancellationToken,
    ) -> bool {
        let source_id = dl.source_id.as_str();
        let body = m.body.as_deref().unwrap_or("");
        let mut backoff = crate::backoff::worker_database().build();
        loop {
            match store::record_dead_letter(self.processor.pool(), dl).await {
                Ok(()) => break,
                Err(e) if crate::processor::is_transient(&e) && !shutdown.is_cancelled() => {
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
        if let Some(dlq) = &self.cfg.dlq_url {
            let mut send = self
                .sqs
                .send_message()
                .queue_url(dlq)
                .message_body(body)
                .message_attributes(
                    "stigg-byos-reason",
                    string_attr(&truncate(&dl.reason, 1024)),
                )
                .message_attributes("stigg-byos-source-message-id", string_attr(source_id));
            if crate::sqs::is_fifo(dlq) {
                let group = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| "dead-letters".into());
                send = send
                    .message_group_id(group)
                    .message_deduplication_id(source_id);
            }
            if let Err(e) = send.send().await {
                error!(error = %aws_sdk_sqs::Error::from(e), sqs_message_id = source_id,
                       "cannot copy dead letter to SQS_DLQ_URL; will retry on redelivery");
                return false;
            }
        }
        true
    }

    fn heartbeat(&self, handles: Vec<(String, String)>) -> Heartbeat {
        let sqs = self.sqs.clone();
        let queue = self.cfg.queue_url.clone();
        let visibility = self.cfg.visibility;
        let every = (visibility / 3).max(Duration::from_secs(1));
        let handles = Arc::new(handles);
        Heartbeat::start(every, move || {
            let (sqs, queue, handles) = (sqs.clone(), queue.clone(), handles.clone());
            async move {
                debug!(messages = handles.len(), "extending visibility");
                change_visibility(&sqs, &queue, &handles, visibility.as_secs() as i32).await;
            }
        })
    }

    async fn change_visibility(&self, handles: &[(String, String)], seconds: i32) {
        change_visibility(&self.sqs, &self.cfg.queue_url, handles, seconds).await;
    }

    async fn delete(&self, messages: &[Message]) {
        for chunk in messages.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .build()
                        .expect("id and receipt handle set")
                })
                .collect();
            let mut pending = entries;
            for attempt in 0..3 {
                match self
                    .sqs
                    .delete_message_batch()
                    .queue_url(&self.cfg.queue_url)
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let failed: HashMap<String, String> = out
                            .failed
                            .iter()
                            .map(|f| (f.id.clone(), f.message.clone().unwrap_or_default()))
                            .collect();
                        if failed.is_empty() {
                            break;
                        }
                        warn!(
                            failed = failed.len(),
                            ?failed,
                            attempt,
                            "some deletes failed"
                        );
                        telemetry::delete_error(failed.len() as u64);
                        pending.retain(|e| failed.contains_key(&e.id));
                    }
                    Err(e) => {
                        telemetry::delete_error(pending.len() as u64);
                        warn!(error = %aws_sdk_sqs::Error::from(e), attempt,
                              "delete failed; already-applied messages will come back as duplicates");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

/// A receive loop panicked: the consumer stopped, since it would otherwise run on receiving
/// less, or nothing at all, while the process looks alive.
#[derive(Debug, thiserror::Error)]
#[error("a receive loop panicked: {0}")]
pub struct PollerDied(String);

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
        error!(reason = %why, "a receive loop panicked; stopping the consumer");
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

/// What becomes of a batch's messages once its work is done.
struct Settled {
    /// Offered again after a delay, in seconds.
    release: Vec<(Message, i32)>,
    delete: Vec<Message>,
}

/// Keeps a batch's messages invisible while its work runs, extending their visibility every
/// `every`. It ends with its batch: [`Heartbeat::stop`] waits for an extension under way, so
/// that none lands after what follows, and dropping it (a batch that panicked) aborts it.
struct Heartbeat {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    fn start<F, Fut>(every: Duration, mut extend: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(
            async move {
                let mut ticker = tokio::time::interval(every);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        biased;
                        _ = stopped.cancelled() => break,
                        _ = ticker.tick() => extend().await,
                    }
                }
            }
            .in_current_span(),
        );
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Ends it once the extension under way, if any, is done.
    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn change_visibility(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    handles: &[(String, String)],
    seconds: i32,
) {
    for chunk in handles.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, receipt))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds)
                    .build()
                    .expect("id and receipt handle set")
            })
            .collect();
        if let Err(e) = sqs
            .change_message_visibility_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
        {
            warn!(error = %aws_sdk_sqs::Error::from(e), "changing visibility failed");
        }
    }
}

fn handle_of(m: &Message) -> (String, String) {
    (
        m.message_id.clone().unwrap_or_default(),
        m.receipt_handle.clone().unwrap_or_default(),
    )
}

/// A dead letter's id: its SQS message id.
fn source_id(m: &Message) -> String {
    m.message_id.as_deref().unwrap_or("-").to_owned()
}

fn receive_count(m: &Message) -> u32 {
    m.attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// Seconds before a message that failed (not transiently) is offered again.
fn retry_delay(receive_count: u32) -> i32 {
    (1i32 << receive_count.min(6)).min(60)
}

fn string_attr(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(if value.is_empty() { "-" } else { value })
        .build()
        .expect("data type set")
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
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// A heartbeat counting its extensions, each taking `takes`: (started, finished).
    fn counting(every: Duration, takes: Duration) -> (Heartbeat, Arc<[AtomicUsize; 2]>) {
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let c = counts.clone();
        let heartbeat = Heartbeat::start(every, move || {
            let c = c.clone();
            async move {
                c[0].fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                c[1].fetch_add(1, Ordering::SeqCst);
            }
        });
        (heartbeat, counts)
    }

    fn counts_started(counts: &[AtomicUsize; 2]) -> usize {
        counts[0].load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_heartbeat_ends_with_a_batch_that_panics() {
        let (heartbeat, counts) = counting(Duration::from_millis(10), Duration::ZERO);
        let seen = counts.clone();
        let batch = tokio::spawn(async move {
            let _heartbeat = heartbeat;
            while counts_started(&seen) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("batch handling bug");
        });
        assert!(batch.await.unwrap_err().is_panic());
        let after = counts_started(&counts);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            counts_started(&counts),
            after,
            "the heartbeat outlived its batch"
        );
    }

    #[tokio::test]
    async fn stopping_a_heartbeat_waits_for_the_extension_under_way() {
        let (heartbeat, counts) = counting(Duration::from_millis(10), Duration::from_millis(100));
        while counts_started(&counts) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        heartbeat.stop().await;
        let started = counts_started(&counts);
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            started,
            "an extension was cut short"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(counts_started(&counts), started, "extended after the stop");
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            started,
            "extended after the stop"
        );
    }
}
