//! The command line and the plan it gives: how many events and customers, how long the load
//! runs, which parts run, with what seed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use super::apply_path::Shape;
use super::lag::LagPlan;

#[derive(Parser, Debug)]
#[command(name = "bench", about = "stigg-byos benchmarks (issue 5)")]
pub(super) struct Args {
    /// Events sent through the SQS and apply paths (5% of them are duplicates).
    /// Default 20000 (2000 with --quick).
    #[arg(long)]
    events: Option<usize>,
    /// Customers (× 8 features) in the access-path database. Default 100000 (5000 with --quick).
    #[arg(long)]
    customers: Option<usize>,
    /// Small sizes for a CI smoke run: 2000 events, 5000 customers, 3 s of load.
    #[arg(long)]
    quick: bool,
    /// WORKER_CONCURRENCY values to run the SQS path with (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![16u32, 64])]
    concurrency: Vec<u32>,
    /// Connections of the HTTP load generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load per HTTP measurement. Default 15 (3 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// ACCESS_CACHE_MB of the server under the access and GraphQL load. Default 512 (enough
    /// for 100000 customers × 8 features).
    #[arg(long, default_value_t = 512)]
    cache_mb: u32,
    /// Customers served by the fake Stigg API to `sync`. Default 20000 (2000 with --quick).
    #[arg(long)]
    sync_customers: Option<usize>,
    /// Events a second of the steady lag run. Default 500.
    #[arg(long, default_value_t = 500)]
    lag_rate: u32,
    /// Seconds of the steady lag run. Default 30 (5 with --quick).
    #[arg(long)]
    lag_seconds: Option<f64>,
    /// Events queued for the backlog drain. Default 100000 (5000 with --quick).
    #[arg(long)]
    backlog: Option<usize>,
    /// Shapes of the `ingest` runs, SIZExLANES (`--batch-size`, `--lanes`), comma-separated;
    /// the first is the table's apply-path figure. A one-event-at-a-time run always follows.
    #[arg(long, value_delimiter = ',', default_values_t = vec![Shape { batch: 1000, lanes: 2 }])]
    ingest_shapes: Vec<Shape>,
    /// Run only these parts (comma-separated): sqs, apply, lag, access, graphql, startup, sync.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seed of the event generator (the same seed gives the same events).
    #[arg(long, default_value_t = 5)]
    seed: u64,
    /// Keep the databases instead of dropping them (their names are printed).
    #[arg(long)]
    keep: bool,
    /// Administrative PostgreSQL URL, used to create and drop the bench databases.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(super) admin_url: String,
    /// LocalStack (or SQS) endpoint.
    #[arg(
        long,
        env = "BENCH_SQS_ENDPOINT",
        default_value = "http://127.0.0.1:4566"
    )]
    pub(super) sqs_endpoint: String,
    /// The stigg-byos binary (default: the one cargo built for this bench).
    #[arg(long, env = "STIGG_BYOS_BIN")]
    pub(super) bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

pub(super) struct Plan {
    pub(super) events: usize,
    pub(super) customers: usize,
    pub(super) sync_customers: usize,
    pub(super) load: Duration,
    pub(super) warmup: Duration,
    pub(super) connections: usize,
    pub(super) cache_mb: u32,
    pub(super) concurrency: Vec<u32>,
    pub(super) only: Vec<String>,
    pub(super) ingest_shapes: Vec<Shape>,
    pub(super) lag: LagPlan,
    pub(super) seed: u64,
    pub(super) keep: bool,
}

impl Plan {
    /// The sizes `--quick` and the flags ask for.
    pub(super) fn new(args: &Args) -> Result<Self> {
        let seconds = args.duration.unwrap_or(if args.quick { 3.0 } else { 15.0 });
        let plan = Self {
            events: args
                .events
                .unwrap_or(if args.quick { 2_000 } else { 20_000 }),
            customers: args
                .customers
                .unwrap_or(if args.quick { 5_000 } else { 100_000 }),
            sync_customers: args
                .sync_customers
                .unwrap_or(if args.quick { 2_000 } else { 20_000 }),
            load: Duration::from_secs_f64(seconds),
            warmup: Duration::from_millis(if args.quick { 300 } else { 1_000 }),
            connections: args.connections.max(1),
            cache_mb: args.cache_mb,
            concurrency: args.concurrency.clone(),
            only: args.only.clone(),
            ingest_shapes: args.ingest_shapes.clone(),
            lag: LagPlan {
                rate: args.lag_rate.max(10),
                steady: Duration::from_secs_f64(args.lag_seconds.unwrap_or(if args.quick {
                    5.0
                } else {
                    30.0
                })),
                backlog: args
                    .backlog
                    .unwrap_or(if args.quick { 5_000 } else { 100_000 })
                    .max(20),
                seed: args.seed,
            },
            seed: args.seed,
            keep: args.keep,
        };
        if plan.events < 20 {
            bail!("--events must be at least 20");
        }
        Ok(plan)
    }

    pub(super) fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}
