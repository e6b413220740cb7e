//! Apply path: the same events through `stigg-byos ingest FILE` on a fresh database.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::digest::{fingerprint, inbox_summary};
use super::events::Generated;
use super::harness::Env;
use super::sampling::{cost_line, cpu_line_over, cpu_per_event, cpu_snapshot, pg_writes, Sampler};
use super::{note, section, Table};

pub(super) async fn apply_path(
    env: &Arc<Env>,
    g: &Generated,
    table: &mut Table,
    fingerprints: &mut Vec<(String, String)>,
) -> Result<()> {
    section(&format!(
        "Apply path: {} events through `ingest`",
        g.bodies.len()
    ));
    let (db_url, pool) = env.fresh_database().await?;
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
    let mut cmd = env.command(&["ingest", &path], "ingest.log")?;
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
    fingerprints.push(("ingest".into(), fingerprint(&pool).await?));
    pool.close().await;
    table.row(
        "apply path (ingest)",
        format!("{rate:.0} ev/s"),
        ">= 10000 ev/s",
        Some(rate >= 10_000.0),
    );
    table.row(
        "CPU per event, ingest / PostgreSQL",
        format!("{:.0} / {:.0} µs", cost.0, cost.1),
        "",
        None,
    );
    Ok(())
}
