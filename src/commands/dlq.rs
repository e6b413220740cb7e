//! `stigg-byos dlq list` and `dlq replay ID|--all`: the dead letters, one a line, and running
//! them through the processor again.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use backon::Retryable;

use crate::apply::Outcome;
use crate::backoff;
use crate::config::Settings;
use crate::dead_letters;
use crate::events;
use crate::processor::Processor;
use crate::store;

/// Tabs and newlines would break the one-line-per-letter format.
fn one_field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// One dead letter a line, tab-separated: SQS message id, event `messageId`, event type,
/// reason, first seen.
pub async fn list(settings: &Settings) -> anyhow::Result<()> {
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
            events::format_time(d.first_seen),
        )?;
    }
    Ok(())
}

/// Runs the letter `id` (or, with `all`, every letter) through the processor again: those
/// that now apply are removed, the others recorded again with their new reason. Fails if any
/// still fail.
pub async fn replay(settings: &Settings, id: Option<&str>, all: bool) -> anyhow::Result<()> {
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
                let results = (|| processor.process(&one))
                    .retry(backoff::command_database())
                    .await?;
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
