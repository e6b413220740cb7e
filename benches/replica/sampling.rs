//! Where the time and memory go: the machine, peak and current RSS and CPU time by process
//! from /proc, and the [`Sampler`] of pg_stat_activity for the backends of the process under
//! test.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;
use sqlx::PgPool;

pub(super) fn print_machine() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "machine: {cores} cores ({model}), {:.1} GiB RAM",
        mem_kib as f64 / 1024.0 / 1024.0
    );
}

// ---------------------------------------------------------------------------------------------
// Processes: memory and CPU
// ---------------------------------------------------------------------------------------------

/// Peak resident set size (VmHWM) of a live process, in MiB.
pub(super) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

pub(super) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// CPU time (clock ticks) by who spent it, read from /proc.
#[derive(Debug, Default, Clone)]
pub(super) struct Cpu {
    pub(super) at: Option<Instant>,
    pub(super) machine_busy: u64,
    pub(super) postgres: u64,
    pub(super) localstack: u64,
    pub(super) bench: u64,
    /// Children of the bench already waited for (the `ingest` process).
    pub(super) reaped: u64,
    pub(super) target: u64,
}

pub(super) const TICKS: f64 = 100.0; // USER_HZ on Linux

fn proc_times(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // after ")": state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    Some((comm, n(11) + n(12), n(13) + n(14)))
}

/// utime + stime of every process, by pid.
fn process_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((_, own, _)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| proc_times(&s))
        {
            out.insert(pid, own);
        }
    }
    out
}

pub(super) fn cpu_snapshot(target: Option<u32>) -> Cpu {
    let mut c = Cpu {
        at: Some(Instant::now()),
        ..Cpu::default()
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = stat.lines().next() {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let g = |i: usize| v.get(i).copied().unwrap_or(0);
            c.machine_busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
        }
    }
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return c;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, own, children)) = proc_times(&stat) else {
            continue;
        };
        if pid == me {
            c.bench += own;
            c.reaped += children;
        } else if Some(pid) == target {
            c.target += own;
        } else if comm == "postgres" {
            c.postgres += own + children;
        } else if comm.starts_with("python") || comm.contains("localstack") {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("localstack") {
                c.localstack += own + children;
            }
        }
    }
    c
}

/// One line: where the CPU went between two snapshots, in % of one core.
pub(super) fn cpu_line(a: &Cpu, b: &Cpu, ours: &str) -> String {
    cpu_line_over(a, b, ours, None)
}

/// As [`cpu_line`], with the rates taken over `over` instead of the time between the
/// snapshots (when the second one was taken a little after the work ended, so that exited
/// PostgreSQL backends are counted).
pub(super) fn cpu_line_over(a: &Cpu, b: &Cpu, ours: &str, over: Option<Duration>) -> String {
    let secs = match (over, a.at, b.at) {
        (Some(d), _, _) => d.as_secs_f64().max(1e-3),
        (None, Some(x), Some(y)) => y.duration_since(x).as_secs_f64().max(1e-3),
        _ => return String::new(),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let pct = |ticks: u64| ticks as f64 / TICKS / secs * 100.0;
    let target = b.target.saturating_sub(a.target) + b.reaped.saturating_sub(a.reaped);
    let postgres = b.postgres.saturating_sub(a.postgres);
    let localstack = b.localstack.saturating_sub(a.localstack);
    let bench = b.bench.saturating_sub(a.bench);
    let busy = b.machine_busy.saturating_sub(a.machine_busy);
    let other = busy.saturating_sub(target + postgres + localstack + bench);
    format!(
        "CPU over {secs:.1} s (100% = one core): {ours} {:.0}%, PostgreSQL {:.0}%, \
         LocalStack {:.0}%, bench process {:.0}%, everything else {:.0}%; machine busy {:.0}% of {:.0}%",
        pct(target),
        pct(postgres),
        pct(localstack),
        pct(bench),
        pct(other),
        pct(busy).min(cores * 100.0),
        cores * 100.0
    )
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL-side sampling: what the backends of the process under test are doing
// ---------------------------------------------------------------------------------------------

/// Samples pg_stat_activity of one database every 20 ms until stopped: on average how many
/// backends (other than the bench's own) were running a statement, waiting for a lock, idle
/// inside a transaction (waiting for their client) or idle.
pub(super) struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<String>,
}

impl Sampler {
    pub(super) fn start(pool: PgPool) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let cpu_at_start = process_ticks();
            let mut totals: BTreeMap<String, i64> = BTreeMap::new();
            let mut samples = 0i64;
            loop {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT CASE
                              WHEN state = 'active' AND wait_event_type = 'Lock' THEN 'waiting on a lock'
                              WHEN state = 'active' AND wait_event_type IN ('IO', 'LWLock')
                                THEN 'active (I/O, WAL)'
                              WHEN state = 'active' AND wait_event_type = 'Client'
                                THEN 'active (client I/O)'
                              WHEN state = 'active' THEN 'active'
                              WHEN state = 'idle in transaction' THEN 'idle in transaction'
                              ELSE coalesce(state, 'unknown') END,
                            count(*)
                     FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name <> 'bench'
                       AND backend_type = 'client backend'
                     GROUP BY 1",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                samples += 1;
                for (k, v) in rows {
                    *totals.entry(k).or_default() += v;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = &mut stopped => break,
                }
            }
            let parts: Vec<String> = totals
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", *v as f64 / samples.max(1) as f64))
                .collect();
            // CPU of this database's backends alone (other databases' are not ours)
            let pids: Vec<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name <> 'bench'
                   AND backend_type = 'client backend'",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            let now = process_ticks();
            let ticks: u64 = pids
                .iter()
                .map(|&p| {
                    let p = p as u32;
                    now.get(&p)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(cpu_at_start.get(&p).copied().unwrap_or(0))
                })
                .sum();
            let backend_cpu = ticks as f64 / TICKS / started.elapsed().as_secs_f64() * 100.0;
            let (tls, all): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.application_name <> 'bench'
                   AND a.backend_type = 'client backend'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or((0, 0));
            let cpu = if all > 0 {
                format!(
                    "its {all} PostgreSQL backends used {backend_cpu:.0}% CPU ({tls} use TLS); "
                )
            } else {
                String::new() // the process has exited: its backends are gone
            };
            format!(
                "{cpu}its backends on average ({samples} samples): {}",
                if parts.is_empty() {
                    "none".into()
                } else {
                    parts.join(", ")
                }
            )
        });
        Self { stop, handle }
    }

    pub(super) async fn finish(self) -> String {
        let _ = self.stop.send(());
        self.handle.await.unwrap_or_default()
    }
}

/// CPU microseconds per event between two snapshots: (the process under test, PostgreSQL).
pub(super) fn cpu_per_event(a: &Cpu, b: &Cpu, events: usize) -> (f64, f64) {
    let us = |ticks: u64| ticks as f64 / TICKS * 1e6 / events.max(1) as f64;
    let target = b.target.saturating_sub(a.target) + b.reaped.saturating_sub(a.reaped);
    (us(target), us(b.postgres.saturating_sub(a.postgres)))
}

/// The database's committed transactions and written rows so far (`pg_stat_database`).
pub(super) async fn pg_writes(pool: &PgPool) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?)
}

/// "worker 310 µs, PostgreSQL 420 µs of CPU per event; 0.12 commits and 3.1 rows written per
/// event".
pub(super) fn cost_line(
    ours: &str,
    cpu: (f64, f64),
    writes0: (i64, i64),
    writes1: (i64, i64),
    events: usize,
) -> String {
    let per = |a: i64, b: i64| (b - a) as f64 / events.max(1) as f64;
    format!(
        "cost per event: {ours} {:.0} µs CPU, PostgreSQL {:.0} µs CPU; {:.2} commits and {:.1} rows \
         written per event (pg_stat_database)",
        cpu.0,
        cpu.1,
        per(writes0.0, writes1.0),
        per(writes0.1, writes1.1)
    )
}
