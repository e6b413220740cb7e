//! The command line: its arguments, and the dispatch of each subcommand to what runs it. The
//! long-running roles are started through [`crate::run`], the one-shot commands through
//! [`crate::commands`].

use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::{commands, store, Roles};

#[derive(Parser)]
#[command(
    name = "stigg-byos",
    version,
    about = "A live replica of your Stigg entitlement data: \
    consumes Stigg's SQS queue into PostgreSQL and answers /check-access and GraphQL from it.",
    after_help = "AWS settings are read by the AWS SDK from the standard variables: AWS_REGION \
    (default: the region in SQS_QUEUE_URL, else us-east-1), AWS_ENDPOINT_URL or \
    AWS_ENDPOINT_URL_SQS (e.g. LocalStack), and the credentials chain (AWS_ACCESS_KEY_ID, \
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, instance/task role), used when \
    STIGG_SERVER_API_KEY is unset. RUST_LOG filters logs (default info)."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Apply migrations, then run the worker and the HTTP server in one process (default).
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Run the SQS consumer only.
    Worker,
    /// Run the HTTP server only.
    Serve,
    /// Apply a JSON Lines file of event bodies (`-` for stdin) through the same processor.
    Ingest {
        /// File of one event JSON per line, or `-`.
        file: String,
        /// Events applied per transaction (1: one event at a time, the reference order).
        #[arg(long, default_value_t = commands::ingest::BATCH, value_parser = clap::value_parser!(u16).range(1..=5000))]
        batch_size: u16,
        /// Lanes applying batches at once; a customer's events always go to the same lane.
        #[arg(long, default_value_t = commands::ingest::LANES, value_parser = clap::value_parser!(u16).range(1..=64))]
        lanes: u16,
    },
    /// Inspect or replay dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Send a JSON Lines file of events (`-` for stdin) to SQS_QUEUE_URL, one message a line.
    Publish {
        /// File of one event JSON per line, or `-`.
        file: String,
    },
    /// Merge a complete snapshot from Stigg's API into the replica (seed or repair it). Exits
    /// 0 when the pass completed, 1 when it stopped early (what it wrote stays; nothing was
    /// pruned), 2 for bad settings.
    Sync(SyncArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// Continue the last pass from its last completed page if it was interrupted.
    #[arg(long)]
    pub resume: bool,
    /// Do not tombstone the customers Stigg no longer lists.
    #[arg(long)]
    pub no_prune: bool,
    /// Prune even when that is more than --max-prune-percent of the replica's customers.
    #[arg(long)]
    pub force: bool,
    /// Stop before pruning more than this share of the replica's customers (unless --force).
    #[arg(long, default_value_t = 10.0, value_parser = percent)]
    pub max_prune_percent: f64,
}

impl SyncArgs {
    /// The pass these flags ask for, with SYNC_CONCURRENCY, and a progress bar when a person
    /// watches stderr.
    fn options(&self, settings: &Settings) -> crate::sync::Options {
        use std::io::IsTerminal;

        crate::sync::Options {
            resume: self.resume,
            prune: !self.no_prune,
            force: self.force,
            max_prune_percent: self.max_prune_percent,
            concurrency: settings.sync_concurrency as usize,
            progress: if std::io::stderr().is_terminal() {
                crate::sync::ProgressStyle::Bar
            } else {
                crate::sync::ProgressStyle::Log
            },
        }
    }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("a percentage from 0 to 100".into()),
    }
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One dead letter a line, tab-separated: SQS message id, event messageId, event type,
    /// reason, first seen.
    List,
    /// Run dead letters through the processor again; those that now apply are removed.
    Replay {
        /// The SQS message id (first column of `dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// Runs the parsed command line; the process exit code follows the result.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            serve_roles(
                settings,
                Roles {
                    worker: true,
                    http: true,
                },
                true,
            )
            .await
        }
        Command::Worker => {
            serve_roles(
                settings,
                Roles {
                    worker: true,
                    http: false,
                },
                true,
            )
            .await
        }
        Command::Serve => {
            serve_roles(
                settings,
                Roles {
                    worker: false,
                    http: true,
                },
                false,
            )
            .await
        }
        Command::Migrate => {
            store::connect_and_migrate(&settings, 2, Duration::from_secs(30)).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Ingest {
            file,
            batch_size,
            lanes,
        } => {
            let shape = commands::ingest::Shape {
                batch: batch_size.into(),
                lanes: lanes.into(),
            };
            commands::ingest::run(&settings, &file, shape).await
        }
        Command::Dlq {
            command: DlqCommand::List,
        } => commands::dlq::list(&settings).await,
        Command::Dlq {
            command: DlqCommand::Replay { id, all },
        } => commands::dlq::replay(&settings, id.as_deref(), all).await,
        Command::Publish { file } => commands::publish::run(&settings, &file).await,
        Command::Sync(args) => commands::sync::run(&settings, &args.options(&settings)).await,
    }
}

async fn serve_roles(settings: Settings, roles: Roles, migrate: bool) -> anyhow::Result<()> {
    if roles.worker {
        settings.queue_url()?;
    }
    let connections = if roles.http { 16 } else { 8 };
    let pool = if migrate {
        store::connect_and_migrate(&settings, connections, Duration::from_secs(60)).await?
    } else {
        store::pool(&settings, connections)?
    };
    // the signal only starts the shutdown: `run` bounds the drain (§7.16)
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("shutdown signal received");
        signal.cancel();
    });
    crate::run(settings, pool, roles, None, shutdown).await
}
