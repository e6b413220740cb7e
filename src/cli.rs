//! The command line: subcommands and the one-shot commands (`migrate`, `ingest`, `dlq`,
//! `publish`). The long-running roles are started through [`crate::run`].

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use backon::{ExponentialBuilder, Retryable};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::apply::Outcome;
use crate::config::Settings;
use crate::dead_letters::{self, ingest_source_id, NewDeadLetter};
use crate::events::{self, ParsedEvent};
use crate::processor::Processor;
use crate::{store, Roles};

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
        Command::Ingest { file } => ingest(&settings, &file).await,
        Command::Dlq {
            command: DlqCommand::List,
        } => dlq_list(&settings).await,
        Command::Dlq {
            command: DlqCommand::Replay { id, all },
        } => dlq_replay(&settings, id.as_deref(), all).await,
        Command::Publish { file } => publish(&settings, &file).await,
        Command::Sync(args) => sync(&settings, &args).await,
    }
}

async fn sync(settings: &Settings, args: &SyncArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    let api = crate::sync::api::StiggApi::new(settings.stigg_api()?)?;
    let concurrency = settings.sync_concurrency as usize;
    let pool =
        store::connect_and_migrate(settings, concurrency as u32 + 2, Duration::from_secs(30))
            .await?;
    let opts = crate::sync::Options {
        resume: args.resume,
        prune: !args.no_prune,
        force: args.force,
        max_prune_percent: args.max_prune_percent,
        concurrency,
        progress: if std::io::stderr().is_terminal() {
            crate::sync::ProgressStyle::Bar
        } else {
            crate::sync::ProgressStyle::Log
        },
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal.cancel();
    });
    let outcome = crate::sync::run_pass(&pool, &api, &opts, &shutdown).await;
    if !matches!(outcome.result, Err(crate::sync::SyncError::Busy)) {
        println!("{}", outcome.summary);
    }
    pool.close().await;
    outcome.result.map_err(|e| match e {
        crate::sync::SyncError::Interrupted => {
            anyhow::anyhow!("sync interrupted; `stigg-byos sync --resume` continues it")
        }
        e @ crate::sync::SyncError::Api(_) => anyhow::Error::new(e)
            .context("sync stopped early (nothing was pruned; `sync --resume` continues it)"),
        e => anyhow::Error::new(e).context("sync stopped early (nothing was pruned)"),
    })
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
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    // The drain is bounded by the visibility timeout (§7.16); past it and a few seconds more,
    // whatever still holds the process (a stuck connection) must not keep it alive.
    let deadline = settings.visibility_timeout() + Duration::from_secs(4);
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("shutdown signal received");
        signal.cancel();
        tokio::time::sleep(deadline).await;
        tracing::warn!("shutdown took longer than the visibility timeout; exiting now");
        std::process::exit(0);
    });
    crate::run(settings, pool, roles, None, shutdown).await
}

fn read_lines(file: &str) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(if file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {file}"))?,
        ))
    })
}

/// Lines are applied in batches of this many, one transaction each.
const INGEST_BATCH: usize = 200;

/// Lines are applied in this many lanes at once, each customer always in the same lane (so
/// its events keep their order and lanes never wait on each other's rows).
const INGEST_LANES: usize = 4;

type Counts = std::collections::BTreeMap<&'static str, u64>;

fn lane_of(customer: Option<&str>) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    customer.hash(&mut h);
    (h.finish() % INGEST_LANES as u64) as usize
}

async fn ingest(settings: &Settings, file: &str) -> anyhow::Result<()> {
    let pool =
        store::connect_and_migrate(settings, INGEST_LANES as u32 + 1, Duration::from_secs(30))
            .await?;
    let processor = Processor::new(pool.clone());
    let mut lanes = tokio::task::JoinSet::new();
    let mut senders = Vec::with_capacity(INGEST_LANES);
    for _ in 0..INGEST_LANES {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ParsedEvent>(INGEST_BATCH * 2);
        senders.push(tx);
        let processor = processor.clone();
        lanes.spawn(async move {
            let mut counts = Counts::new();
            let mut batch: Vec<ParsedEvent> = Vec::with_capacity(INGEST_BATCH);
            while let Some(ev) = rx.recv().await {
                batch.push(ev);
                if batch.len() == INGEST_BATCH {
                    apply_batch(&processor, &mut batch, &mut counts).await?;
                }
            }
            apply_batch(&processor, &mut batch, &mut counts).await?;
            Ok::<Counts, anyhow::Error>(counts)
        });
    }
    let mut counts = Counts::new();
    for (n, line) in read_lines(file)?.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {file}"))?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match events::parse(line) {
            Ok(ev) => {
                let lane = lane_of(ev.customer_id());
                if senders[lane].send(ev).await.is_err() {
                    break; // that lane failed: its error is reported below
                }
            }
            Err(e) => {
                let letter = NewDeadLetter::unparsable(ingest_source_id(line), line.to_vec(), e);
                eprintln!(
                    "line {}: dead-lettered as {}: {}",
                    n + 1,
                    letter.source_id,
                    letter.reason
                );
                dead_letters::record(&pool, &letter).await?;
                *counts.entry("dead_lettered").or_default() += 1;
            }
        }
    }
    drop(senders);
    while let Some(lane) = lanes.join_next().await {
        for (k, v) in lane.context("an ingest lane panicked")?? {
            *counts.entry(k).or_default() += v;
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "ingested: {}",
        if summary.is_empty() {
            "nothing".into()
        } else {
            summary.join(" ")
        }
    );
    Ok(())
}

async fn apply_batch(
    processor: &Processor,
    batch: &mut Vec<ParsedEvent>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let events: Vec<&ParsedEvent> = batch.iter().collect();
    let results = (|| processor.process(&events))
        .retry(retry_policy())
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "transient failure; retrying"))
        .await?;
    for (ev, result) in batch.iter().zip(results) {
        match result {
            Ok(o) => *counts.entry(o.as_str()).or_default() += 1,
            Err(reason) => {
                let body = serde_json::to_vec(&ev.raw)?;
                let source = ingest_source_id(&body);
                eprintln!("{}: dead-lettered as {source}: {reason}", ev.dedup_key);
                let letter = NewDeadLetter::unappliable(source, body, ev, reason);
                dead_letters::record(processor.pool(), &letter).await?;
                *counts.entry("dead_lettered").or_default() += 1;
            }
        }
    }
    batch.clear();
    Ok(())
}

fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(12)
        .with_jitter()
}

/// Tabs and newlines would break the one-line-per-letter format.
fn one_field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

async fn dlq_list(settings: &Settings) -> anyhow::Result<()> {
    let pool = store::connect_and_migrate(settings, 2, Duration::from_secs(10)).await?;
    let letters = store::list_dead_letters(&pool).await?;
    let mut out = std::io::stdout().lock();
    for d in letters {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            one_field(&d.source_id),
            one_field(d.event_message_id.as_deref().unwrap_or("-")),
            one_field(d.event_type.as_deref().unwrap_or("-")),
            one_field(&d.reason),
            d.first_seen
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )?;
    }
    Ok(())
}

async fn dlq_replay(settings: &Settings, id: Option<&str>, all: bool) -> anyhow::Result<()> {
    let pool = store::connect_and_migrate(settings, 2, Duration::from_secs(10)).await?;
    let letters = if all {
        store::list_dead_letters(&pool).await?
    } else {
        let id = id.context("give a dead letter id or --all")?;
        match store::get_dead_letter(&pool, id).await? {
            Some(d) => vec![d],
            None => bail!("no dead letter with id {id:?} (see `stigg-byos dlq list`)"),
        }
    };
    let processor = Processor::new(pool.clone());
    let mut still_failing = 0;
    for d in letters {
        let result: Result<Outcome, String> = match events::parse(&d.body) {
            Err(e) => Err(e.reason),
            Ok(ev) => {
                let one = [&ev];
                let results = (|| processor.process(&one)).retry(retry_policy()).await?;
                results.into_iter().next().expect("one result per event")
            }
        };
        match result {
            Ok(outcome) => {
                store::remove_dead_letter(&pool, &d.source_id).await?;
                println!("{}\treplayed\t{}", d.source_id, outcome.as_str());
            }
            Err(reason) => {
                still_failing += 1;
                let letter = d.failed_again(reason);
                dead_letters::record(&pool, &letter).await?;
                println!(
                    "{}\tfailed\t{}",
                    letter.source_id,
                    one_field(&letter.reason)
                );
            }
        }
    }
    if still_failing > 0 {
        bail!("{still_failing} dead letter(s) still fail");
    }
    Ok(())
}

async fn publish(settings: &Settings, file: &str) -> anyhow::Result<()> {
    let queue = settings.queue_url()?.to_owned();
    let fifo = crate::sqs::is_fifo(&queue);
    let sqs = crate::sqs::client(settings).await;
    let mut lines = Vec::new();
    for line in read_lines(file)?.lines() {
        let line = line.with_context(|| format!("reading {file}"))?;
        if !line.trim().is_empty() {
            lines.push(line);
        }
    }
    for (chunk_no, chunk) in lines.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let mut entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body);
                if fifo {
                    let parsed = events::parse(body.as_bytes()).ok();
                    let group = parsed
                        .as_ref()
                        .and_then(|e| e.customer_id().map(str::to_owned))
                        .unwrap_or_else(|| "default".into());
                    let dedup = parsed
                        .map(|e| e.dedup_key)
                        .unwrap_or_else(|| hex::encode(Sha256::digest(body.as_bytes())));
                    entry = entry
                        .message_group_id(group)
                        .message_deduplication_id(crate::sqs::dedup_id(&dedup));
                }
                entry.build().context("building a message")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(&queue)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(aws_sdk_sqs::Error::from)
            .context("sending to SQS_QUEUE_URL")?;
        if let Some(f) = out.failed.first() {
            bail!(
                "message {} was refused: {}",
                chunk_no * 10 + f.id.parse::<usize>().unwrap_or(0) + 1,
                f.message.clone().unwrap_or_default()
            );
        }
    }
    eprintln!("published {} events to {queue}", lines.len());
    Ok(())
}
