//! The benchmark of issue 5: SQS path, apply path, access path (/check-access and GraphQL),
//! memory and start-up, against the real PostgreSQL and LocalStack, with the release binary
//! run as a child process exactly as deployed. Prints one table at the end.
//!
//! Run it with `scripts/bench` (which starts LocalStack and builds the release binary), or
//! `cargo bench --bench replica -- [--events N] [--customers N] [--quick] ...`.
//!
//! Every measurement uses a fresh database (`bench_<random>`, dropped at the end) and fresh
//! queues (deleted at the end). A benchmark is never a pass/fail test: the exit code is 0
//! whether or not the targets are met; it is non-zero only when the benchmark itself broke.
//!
//! This file runs the parts and prints the table. The parts, a module each: `plan` (the
//! command line), `events` (the event generator), `harness` (fresh databases and queues, the
//! stigg-byos child processes), `sampling` (CPU and memory from /proc, pg_stat_activity),
//! `http_load` (the HTTP load generator), and the measurements `sqs_path` (with the raw
//! drain), `apply_path`, `access_path` (/check-access and GraphQL), `startup`, `sync`, and
//! `digest` (the final state compared between runs). The SQS helpers are
//! `tests/shared/sqs.rs`, shared with the integration tests.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use sqlx::Connection;

use access_path::access_path;
use apply_path::apply_path;
use events::generate;
use harness::{cleanup, Env};
use lag::lag;
use plan::{Args, Plan};
use sampling::print_machine;
use sqs_path::sqs_path;

mod access_path;
mod apply_path;
mod digest;
mod events;
mod harness;
mod http_load;
mod lag;
mod plan;
mod sampling;
mod sqs_path;
mod startup;
mod sync;

// The SQS helpers, shared with tests/it (the bench uses all but `send`).
#[allow(dead_code)]
#[path = "../../tests/shared/sqs.rs"]
mod sqs;

// ---------------------------------------------------------------------------------------------
// Results table
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, measure: &str, figure: String, target: &str, met: Option<bool>) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        self.rows
            .push([measure.into(), figure, target.into(), met.into()]);
    }

    fn print(&self) {
        let header = ["measure", "figure", "target", "met?"];
        let mut width = header.map(str::len);
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 4]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                let pad = w - c.chars().count();
                if i == 1 {
                    // figures right-aligned
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i < 3 {
                        s.push_str(&" ".repeat(pad));
                    }
                }
                if i < 3 {
                    s.push_str("  ");
                }
            }
            s
        };
        println!();
        println!("{}", line(header));
        println!("{}", "-".repeat(width.iter().sum::<usize>() + 6));
        for r in &self.rows {
            println!("{}", line([&r[0], &r[1], &r[2], &r[3]]));
        }
    }
}

fn note(msg: impl AsRef<str>) {
    println!("  · {}", msg.as_ref());
}

fn section(msg: &str) {
    println!("\n== {msg}");
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args)?;
    let env = Arc::new(Env::new(&args)?);

    print_machine();
    println!(
        "events {} (5% duplicates), access customers {} × 8 features, load {:.0} s × {} connections, \
         worker concurrency {:?}",
        plan.events,
        plan.customers,
        plan.load.as_secs_f64(),
        plan.connections,
        plan.concurrency
    );
    println!(
        "binary {}; logs in {}",
        env.bin.display(),
        env.logs.display()
    );

    let mut table = Table::default();
    let outcome = run_all(&env, &plan, &mut table).await;
    cleanup(&env, plan.keep).await;
    table.print();
    outcome
}

async fn run_all(env: &Arc<Env>, plan: &Plan, table: &mut Table) -> Result<()> {
    // preflight: both backing services answer
    let mut admin = sqlx::PgConnection::connect(&env.admin_url)
        .await
        .with_context(|| format!("PostgreSQL is not answering at {}", env.admin_url))?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;
    admin.close().await?;
    env.sqs
        .list_queues()
        .send()
        .await
        .with_context(|| format!("SQS is not answering at {}", env.sqs_endpoint))?;
    note(format!(
        "PostgreSQL {pg_version}, SQS at {}",
        env.sqs_endpoint
    ));

    let needs_events = plan.runs("sqs") || plan.runs("apply");
    let events = if needs_events {
        let started = Instant::now();
        let g = generate(plan.events, plan.seed);
        note(format!(
            "generated {} messages ({} distinct, {} customers, {:.1} MB) in {:.2} s: {}",
            g.bodies.len(),
            g.distinct,
            g.customers,
            g.bodies.iter().map(String::len).sum::<usize>() as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            g.by_type
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Some(g)
    } else {
        None
    };

    let mut fingerprints: Vec<(String, String)> = Vec::new();
    if plan.runs("sqs") {
        let g = events.as_ref().expect("events generated");
        for &c in &plan.concurrency {
            sqs_path(env, g, c, table, &mut fingerprints).await?;
        }
    }
    if plan.runs("apply") {
        let g = events.as_ref().expect("events generated");
        apply_path(env, g, &plan.ingest_shapes, table, &mut fingerprints).await?;
    }
    if plan.runs("lag") {
        lag(env, &plan.lag, table).await?;
    }
    if fingerprints.len() > 1 {
        let first = &fingerprints[0].1;
        let same = fingerprints.iter().all(|(_, f)| f == first);
        if same {
            note(format!(
                "final state identical across {} (order-independent)",
                fingerprints
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else {
            note("WARNING: final state differs between runs of the same events:");
            for (n, f) in &fingerprints {
                note(format!("  {n}: {f}"));
            }
        }
        table.row(
            "same final state, SQS, ingest, one at a time",
            if same { "yes".into() } else { "no".into() },
            "yes",
            Some(same),
        );
    }
    if plan.runs("access") || plan.runs("graphql") || plan.runs("startup") {
        access_path(env, plan, table).await?;
    }
    if plan.runs("sync") {
        sync::sync_path(env, plan, table).await?;
    }
    Ok(())
}
