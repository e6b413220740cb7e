//! Lag: `stigg-byos run` on a queue fed at a fixed rate, reporting the p50 / p99 of the time
//! from a message's arrival in SQS (`SentTimestamp`) to the commit of its event, read from the
//! worker's own `stigg_byos_queue_lag_seconds` histogram; then the time to drain a backlog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::PgPool;

use super::events::generate;
use super::harness::{stop, Env};
use super::sampling::{cost_line, cpu_line, cpu_per_event, cpu_snapshot, pg_writes};
use super::startup::free_port;
use super::{note, section, sqs, Table};

/// What a lag run is given.
pub(super) struct LagPlan {
    /// Events a second sent during the steady run.
    pub(super) rate: u32,
    pub(super) steady: Duration,
    /// Events queued before the worker starts, for the drain.
    pub(super) backlog: usize,
    pub(super) seed: u64,
}

pub(super) async fn lag(env: &Arc<Env>, plan: &LagPlan, table: &mut Table) -> Result<()> {
    steady(env, plan, table).await?;
    backlog(env, plan, table).await
}

async fn steady(env: &Arc<Env>, plan: &LagPlan, table: &mut Table) -> Result<()> {
    let total = (plan.rate as f64 * plan.steady.as_secs_f64()) as usize;
    section(&format!(
        "Lag: {} ev/s for {:.0} s ({total} events), WORKER_CONCURRENCY=16",
        plan.rate,
        plan.steady.as_secs_f64()
    ));
    let g = generate(total.max(20), plan.seed + 1);
    let (db_url, pool) = env.fresh_database().await?;
    let queue = env.fresh_queue().await?;
    let port = free_port()?;
    let mut child = spawn_worker(env, &db_url, &queue, port, 16, "lag-steady.log")?;
    wait_consuming(&pool).await?;
    let before = queue_lag(port).await?;

    // ten messages every 10 / rate seconds, each batch sent on its own task so that a slow
    // send does not hold back the next
    let every = Duration::from_secs_f64(10.0 / plan.rate.max(1) as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = tokio::task::JoinSet::new();
    let started = Instant::now();
    for chunk in g.bodies.chunks(10) {
        tick.tick().await;
        let (sqs_client, queue, chunk) = (env.sqs.clone(), queue.clone(), chunk.to_vec());
        sends.spawn(async move { sqs::send_batch(&sqs_client, &queue, &chunk).await });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let sending = started.elapsed();
    wait_applied(&pool, g.distinct, &mut child, Duration::from_secs(120)).await?;
    let after = queue_lag(port).await?;
    stop(child).await;
    let lag = after.minus(&before);
    let (p50, p99) = (lag.quantile(0.5), lag.quantile(0.99));
    note(format!(
        "sent {} messages in {:.1} s ({:.0}/s); send-to-commit over {} events: p50 {:.0} ms, \
         p99 {:.0} ms (interpolated within the histogram's buckets)",
        g.bodies.len(),
        sending.as_secs_f64(),
        g.bodies.len() as f64 / sending.as_secs_f64(),
        lag.count,
        p50 * 1e3,
        p99 * 1e3
    ));
    pool.close().await;
    env.delete_queue(&queue).await;
    table.row(
        &format!("send-to-commit p50 at {} ev/s", plan.rate),
        format!("{:.0} ms", p50 * 1e3),
        "",
        None,
    );
    table.row(
        &format!("send-to-commit p99 at {} ev/s", plan.rate),
        format!("{:.0} ms", p99 * 1e3),
        "<= 250 ms",
        Some(p99 <= 0.25),
    );
    Ok(())
}

async fn backlog(env: &Arc<Env>, plan: &LagPlan, table: &mut Table) -> Result<()> {
    let n = plan.backlog;
    section(&format!(
        "Backlog: drain {n} queued events, WORKER_CONCURRENCY=64"
    ));
    let g = generate(n, plan.seed + 2);
    let (db_url, pool) = env.fresh_database().await?;
    let queue = env.fresh_queue().await?;
    let t = Instant::now();
    sqs::preload(&env.sqs, &queue, &g.bodies).await?;
    note(format!(
        "queued {} messages in {:.1} s (not timed)",
        g.bodies.len(),
        t.elapsed().as_secs_f64()
    ));
    let port = free_port()?;
    let writes0 = pg_writes(&pool).await?;
    let cpu0 = cpu_snapshot(None);
    let started = Instant::now();
    let mut child = spawn_worker(env, &db_url, &queue, port, 64, "lag-backlog.log")?;
    let pid = child.id().context("worker pid")?;
    wait_applied(&pool, g.distinct, &mut child, Duration::from_secs(1800)).await?;
    let drained = started.elapsed();
    let cpu1 = cpu_snapshot(Some(pid));
    stop(child).await;
    let rate = g.bodies.len() as f64 / drained.as_secs_f64();
    note(format!(
        "drained {} messages in {:.1} s = {rate:.0} events/s",
        g.bodies.len(),
        drained.as_secs_f64()
    ));
    note(cpu_line(&cpu0, &cpu1, "worker"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let cost = cpu_per_event(&cpu0, &cpu1, g.bodies.len());
    note(cost_line(
        "worker",
        cost,
        writes0,
        pg_writes(&pool).await?,
        g.bodies.len(),
    ));
    pool.close().await;
    env.delete_queue(&queue).await;
    table.row(
        &format!("drain a {n}-event backlog"),
        format!("{:.1} s", drained.as_secs_f64()),
        "",
        None,
    );
    Ok(())
}

fn spawn_worker(
    env: &Env,
    db_url: &str,
    queue: &str,
    port: u16,
    concurrency: u32,
    log: &str,
) -> Result<tokio::process::Child> {
    let mut cmd = env.consumer_command(&["run"], log, db_url, queue)?;
    cmd.env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WORKER_CONCURRENCY", concurrency.to_string());
    cmd.spawn().context("spawning the worker")
}

/// Until the worker's migrations have run (its inbox exists).
async fn wait_consuming(pool: &PgPool) -> Result<()> {
    for _ in 0..300 {
        let ready: Option<String> = sqlx::query_scalar("SELECT to_regclass('inbox')::text")
            .fetch_one(pool)
            .await?;
        if ready.is_some() {
            // the receive loops' first long polls
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the worker did not migrate its database within 6 s")
}

async fn wait_applied(
    pool: &PgPool,
    distinct: usize,
    child: &mut tokio::process::Child,
    within: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the worker exited ({status})");
        }
        let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(pool)
            .await?;
        if claimed as usize >= distinct {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("{claimed} of {distinct} events applied after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A Prometheus histogram's cumulative buckets.
struct Histogram {
    /// (upper bound, cumulative count), ascending, `+Inf` last.
    buckets: Vec<(f64, f64)>,
    count: u64,
}

impl Histogram {
    fn minus(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, c)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, c - before)
            })
            .collect();
        Histogram {
            buckets,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The `q` quantile, interpolated linearly within its bucket (as PromQL's
    /// `histogram_quantile` does).
    fn quantile(&self, q: f64) -> f64 {
        let total = self.buckets.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            return f64::NAN;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return lower.0;
                }
                let within = (rank - lower.1) / (c - lower.1).max(1e-9);
                return lower.0 + (le - lower.0) * within;
            }
            lower = (le, c);
        }
        lower.0
    }
}

/// The worker's `stigg_byos_queue_lag_seconds` histogram, from its `/metrics`.
async fn queue_lag(port: u16) -> Result<Histogram> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let mut h = Histogram {
        buckets: Vec::new(),
        count: 0,
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("stigg_byos_queue_lag_seconds_bucket{le=\"") {
            let (le, count) = rest.split_once("\"} ").context("bucket line")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            h.buckets.push((le, count.trim().parse()?));
        } else if let Some(count) = line.strip_prefix("stigg_byos_queue_lag_seconds_count ") {
            h.count = count.trim().parse()?;
        }
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(h)
}
