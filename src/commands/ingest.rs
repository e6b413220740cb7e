//! `stigg-byos ingest FILE|-`: applies JSON Lines of event bodies through the same processor
//! as the worker (backfills, replays), in lanes by customer and batches of one transaction;
//! dead-letters what will not apply and prints counts by outcome.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use backon::Retryable;

use super::read_lines;
use crate::backoff;
use crate::config::Settings;
use crate::dead_letters::{self, ingest_source_id, NewDeadLetter};
use crate::events::{self, ParsedEvent};
use crate::processor::Processor;
use crate::store;

/// Lines are applied in batches of this many by default, one transaction each (chosen by
/// measurement: BENCHMARKS.md, issue 11).
pub const BATCH: u16 = 1000;

/// Lines are applied in this many lanes at once by default, each customer always in the same
/// lane (so its events keep their order and lanes never wait on each other's rows).
pub const LANES: u16 = 2;

/// How `ingest` applies: events per transaction, lanes at once.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub lanes: usize,
}

type Counts = std::collections::BTreeMap<&'static str, u64>;

fn lane_of(customer: Option<&str>, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    customer.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Applies the lines of `file` (`-`: stdin) and prints how many had each outcome.
pub async fn run(settings: &Settings, file: &str, shape: Shape) -> anyhow::Result<()> {
    let Shape {
        batch: size,
        lanes: lane_count,
    } = shape;
    let pool = store::connect_and_migrate(settings, lane_count as u32 + 1, Duration::from_secs(30))
        .await?;
    let processor = Processor::new(pool.clone());
    let mut lanes = tokio::task::JoinSet::new();
    let mut senders = Vec::with_capacity(lane_count);
    for _ in 0..lane_count {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ParsedEvent>(size * 2);
        senders.push(tx);
        let processor = processor.clone();
        lanes.spawn(async move {
            let mut counts = Counts::new();
            let mut batch: Vec<ParsedEvent> = Vec::with_capacity(size);
            while let Some(ev) = rx.recv().await {
                batch.push(ev);
                if batch.len() == size {
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
                let lane = lane_of(ev.customer_id(), lane_count);
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
        .retry(backoff::command_database())
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
