//! Apply path: the same events through `stigg-byos ingest FILE` on a fresh database, in each
//! batch shape asked for and one event at a time.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::digest::{fingerprint, inbox_summary};
use super::events::Generated;
use super::harness::Env;
use super::sampling::{cost_line, cpu_line_over, cpu_per_event, cpu_snapshot, pg_writes, Sampler};
use super::{note, section, Table};

/// `ingest` with `--batch-size` and `--lanes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub(super) batch: usize,
    pub(super) lanes: usize,
}

impl std::str::FromStr for Shape {
    type Err = String;

    /// `SIZExLANES`, e.g. `200x4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (batch, lanes) = s
            .split_once('x')
            .ok_or_else(|| format!("{s:?}: expected SIZExLANES, e.g. 200x4"))?;
        let number = |n: &str| n.parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
        Ok(Shape {
            batch: number(batch)?,
            lanes: number(lanes)?,
        })
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.batch, self.lanes)
    }
}

/// The same events through `ingest` once per shape (the first is the table's figure), then
/// one event at a time (`--batch-size 1 --lanes 1`), the reference the final states of the
/// other runs are compared with.
pub(super) async fn apply_path(
    env: &Arc<Env>,
    g: &Generated,
    shapes: &[Shape],
    table: &mut Table,
    fingerprints: &mut Vec<(String, String)>,
) -> Result<()> {
    let file = tempfile::Builder::new()
        .prefix("bench-events-")
        .suffix(".jsonl")
        .tempfile()?;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file.as_file());
        for b in &g.bodies {
            w.write_all(b.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let path = file.path().to_string_lossy().into_owned();
    for (i, &shape) in shapes.iter().enumerate() {
        let (rate, cost) = ingest(env, g, &path, shape, fingerprints).await?;
        let which = if i == 0 {
            "apply path (ingest)".to_string()
        } else {
            format!("apply path (ingest {shape})")
        };
        table.row(
            &which,
            format!("{rate:.0} ev/s"),
            ">= 10000 ev/s",
            Some(rate >= 10_000.0),
        );
        table.row(
            &format!("CPU per event, ingest {shape} / PostgreSQL"),
            format!("{:.0} / {:.0} µs", cost.0, cost.1),
            "",
            None,
        );
    }
    let one = Shape { batch: 1, lanes: 1 };
    let (rate, _) = ingest(env, g, &path, one, fingerprints).await?;
    table.row(
        "ingest, one event at a time",
        format!("{rate:.0} ev/s"),
        "",
        None,
    );
    Ok(())
}

/// One `ingest` of the events file on a fresh database: events a second and CPU per event
/// (ingest, PostgreSQL); adds the final state's fingerprint.
async fn ingest(
    env: &Arc<Env>,
    g: &Generated,
    path: &str,
    shape: Shape,
    fingerprints: &mut Vec<(String, String)>,
) -> Result<(f64, (f64, f64))> {
    section(&format!(
        "Apply path: {} events through `ingest --batch-size {} --lanes {}`",
        g.bodies.len(),
        shape.batch,
        shape.lanes
    ));
    let (db_url, pool) = env.fresh_database().await?;
    let (batch, lanes) = (shape.batch.to_string(), shape.lanes.to_string());
    let args = ["ingest", path, "--batch-size", &batch, "--lanes", &lanes];
    let mut cmd = env.command(&args, "ingest.log")?;
    cmd.env("DATABASE_URL", &db_url).stdout(Stdio::piped());
    let sampler = Sampler::start(pool.clone());
    let writes0 = pg_writes(&pool).await?;
    let cpu0 = cpu_snapshot(None);
    let started = Instant::now();
    let child = cmd.spawn().context("spawning ingest")?;
    let out = child.wait_with_output().await?;
    let elapsed = started.elapsed();
    let activity = sampler.finish().await;
    // let PostgreSQL reap the ingest's backend, whose CPU time then shows in the postmaster's
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu1 = cpu_snapshot(None);
    if !out.status.success() {
        bail!(
            "ingest failed ({}); see {}",
            out.status,
            env.logs.join("ingest.log").display()
        );
    }
    let rate = g.bodies.len() as f64 / elapsed.as_secs_f64();
    note(format!(
        "ingest: {} events in {:.2} s = {rate:.0} events/s; {}",
        g.bodies.len(),
        elapsed.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    note(cpu_line_over(&cpu0, &cpu1, "ingest", Some(elapsed)));
    let cost = cpu_per_event(&cpu0, &cpu1, g.bodies.len());
    tokio::time::sleep(Duration::from_millis(700)).await; // statistics are flushed lazily
    note(cost_line(
        "ingest",
        cost,
        writes0,
        pg_writes(&pool).await?,
        g.bodies.len(),
    ));
    note(format!("ingest: {activity}"));
    note(format!("inbox: {}", inbox_summary(&pool).await?));
    let label = if shape.batch == 1 && shape.lanes == 1 {
        "ingest one at a time".to_string()
    } else {
        format!("ingest {shape}")
    };
    fingerprints.push((label, fingerprint(&pool).await?));
    pool.close().await;
    Ok((rate, cost))
}
