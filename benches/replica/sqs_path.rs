//! SQS path: `stigg-byos worker` draining a pre-loaded queue, timed until the inbox holds every
//! distinct message and the queue is empty; then raw drains of the same number of messages
//! (receive + DeleteMessageBatch, no processing): one with the worker's receive loops and
//! messages per receive, which the target compares with, and one of 10 a receive per unit of
//! concurrency.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use super::digest::{fingerprint, inbox_summary};
use super::events::Generated;
use super::harness::{stop, Env};
use super::sampling::{
    cost_line, cpu_line, cpu_per_event, cpu_snapshot, peak_rss_mib, pg_writes, Sampler,
};
use super::{note, section, sqs, Table};

pub(super) async fn sqs_path(
    env: &Arc<Env>,
    g: &Generated,
    concurrency: u32,
    table: &mut Table,
    fingerprints: &mut Vec<(String, String)>,
) -> Result<()> {
    section(&format!(
        "SQS path: {} messages, WORKER_CONCURRENCY={concurrency}",
        g.bodies.len()
    ));
    let n = g.bodies.len();
    let (db_url, pool) = env.fresh_database().await?;
    let queue = env.fresh_queue().await?;
    let t = Instant::now();
    sqs::preload(&env.sqs, &queue, &g.bodies).await?;
    note(format!(
        "pre-loaded the queue in {:.1} s (not timed)",
        t.elapsed().as_secs_f64()
    ));

    let log_name = format!("worker-c{concurrency}.log");
    let mut cmd = env.consumer_command(&["worker"], &log_name, &db_url, &queue)?;
    cmd.env("SQS_WAIT_SECONDS", "1")
        .env("WORKER_CONCURRENCY", concurrency.to_string());
    let sampler = Sampler::start(pool.clone());
    let writes0 = pg_writes(&pool).await?;
    let cpu0 = cpu_snapshot(None);
    let started = Instant::now();
    let mut child = cmd.spawn().context("spawning the worker")?;
    let pid = child.id().context("worker pid")?;
    let mut last_report = Instant::now();
    let elapsed = loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the worker exited ({status}) before draining; see {}",
                env.logs.join(&log_name).display()
            );
        }
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&pool)
            .await?;
        if applied as usize >= g.distinct && sqs::queue_depth(&env.sqs, &queue).await? == (0, 0) {
            break started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            note(format!(
                "{:.0} s: {applied} of {} in the inbox",
                started.elapsed().as_secs_f64(),
                g.distinct
            ));
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the worker did not drain the queue within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let cpu1 = cpu_snapshot(Some(pid));
    let rss = peak_rss_mib(pid).unwrap_or(f64::NAN);
    let cost = cpu_per_event(&cpu0, &cpu1, n);
    let activity = sampler.finish().await;
    stop(child).await;
    let worker_rate = n as f64 / elapsed.as_secs_f64();
    note(format!(
        "worker: {n} messages in {:.2} s = {worker_rate:.0} events/s, peak RSS {rss:.1} MiB",
        elapsed.as_secs_f64()
    ));
    note(cpu_line(&cpu0, &cpu1, "worker"));
    tokio::time::sleep(Duration::from_millis(700)).await; // statistics are flushed lazily
    note(cost_line(
        "worker",
        cost,
        writes0,
        pg_writes(&pool).await?,
        n,
    ));
    note(format!("worker: {activity}"));
    note(format!("inbox: {}", inbox_summary(&pool).await?));
    let log = env.logs.join(&log_name);
    let retries = count_in_log(&log, "transient failure");
    let warns = count_in_log(&log, "WARN");
    note(format!(
        "worker log: {warns} warnings, {retries} transient-failure retries ({})",
        log.display()
    ));
    fingerprints.push((format!("SQS c={concurrency}"), fingerprint(&pool).await?));
    pool.close().await;
    env.delete_queue(&queue).await;

    // raw drain: the same number of messages, receive + DeleteMessageBatch, no processing,
    // with the worker's receive loops and messages per receive (the comparison)
    let (loops, share) = stigg_byos::consumer::receive_shape(concurrency as usize);
    let raw_rate = raw_drain_run(env, g, n, loops, share).await?;
    // and with one loop per message of WORKER_CONCURRENCY, 10 a receive: the queue's pace
    // with far more in flight than the worker may hold (the comparison before 2026-11-30)
    let wide_rate = raw_drain_run(env, g, n, concurrency as usize, 10).await?;
    let ratio = worker_rate / raw_rate;

    table.row(
        &format!("SQS path, worker c={concurrency}"),
        format!("{worker_rate:.0} ev/s"),
        "",
        None,
    );
    table.row(
        &format!("SQS raw drain, {loops} loops x {share}"),
        format!("{raw_rate:.0} msg/s"),
        "",
        None,
    );
    table.row(
        &format!("SQS raw drain, {concurrency} loops x 10"),
        format!("{wide_rate:.0} msg/s"),
        "",
        None,
    );
    table.row(
        &format!("SQS worker / wide raw drain, c={concurrency}"),
        format!("{:.2}", worker_rate / wide_rate),
        "",
        None,
    );
    table.row(
        &format!("SQS worker / raw drain, c={concurrency}"),
        format!("{ratio:.2}"),
        ">= 0.90",
        Some(ratio >= 0.9),
    );
    table.row(
        &format!("CPU per event, worker / PostgreSQL, c={concurrency}"),
        format!("{:.0} / {:.0} µs", cost.0, cost.1),
        "",
        None,
    );
    table.row(
        &format!("worker peak RSS, c={concurrency}"),
        format!("{rss:.1} MiB"),
        "<= 64 MiB",
        Some(rss <= 64.0),
    );
    Ok(())
}

/// Drains `n` of the events' messages from a fresh queue with [`raw_drain`]; messages/s.
async fn raw_drain_run(
    env: &Env,
    g: &Generated,
    n: usize,
    loops: usize,
    per_receive: u32,
) -> Result<f64> {
    let queue = env.fresh_queue().await?;
    sqs::preload(&env.sqs, &queue, &g.bodies).await?;
    let cpu0 = cpu_snapshot(None);
    let raw = raw_drain(&env.sqs, &queue, n, loops, per_receive).await?;
    let cpu1 = cpu_snapshot(None);
    env.delete_queue(&queue).await;
    let rate = n as f64 / raw.as_secs_f64();
    note(format!(
        "raw drain, {loops} receive loops of {per_receive}: {n} messages in {:.2} s = {rate:.0} messages/s",
        raw.as_secs_f64()
    ));
    note(cpu_line(&cpu0, &cpu1, "(none)"));
    Ok(rate)
}

/// `loops` concurrent loops of receive (`per_receive`, 1 s long poll) + DeleteMessageBatch
/// until `total` messages are deleted. Returns the time until the last one was deleted.
async fn raw_drain(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    total: usize,
    loops: usize,
    per_receive: u32,
) -> Result<Duration> {
    let deleted = Arc::new(AtomicUsize::new(0));
    let finished: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..loops {
        let (sqs, queue) = (sqs.clone(), queue.to_owned());
        let (deleted, finished) = (deleted.clone(), finished.clone());
        tasks.spawn(async move {
            while deleted.load(Ordering::SeqCst) < total {
                if started.elapsed() > Duration::from_secs(900) {
                    bail!("raw drain did not finish within 15 minutes");
                }
                let out = sqs
                    .receive_message()
                    .queue_url(&queue)
                    .max_number_of_messages(per_receive as i32)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .map_err(aws_sdk_sqs::Error::from)?;
                let messages = out.messages.unwrap_or_default();
                if messages.is_empty() {
                    continue;
                }
                let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                            .build()
                            .expect("id and handle")
                    })
                    .collect();
                let out = sqs
                    .delete_message_batch()
                    .queue_url(&queue)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(aws_sdk_sqs::Error::from)?;
                let ok = out.successful.len();
                let now = deleted.fetch_add(ok, Ordering::SeqCst) + ok;
                if now >= total {
                    finished.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let end = finished.lock().unwrap().unwrap_or_else(Instant::now);
    Ok(end.duration_since(started))
}

/// Lines of a child's log that mention retries or failures.
fn count_in_log(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}
