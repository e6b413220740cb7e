//! `stigg-byos publish FILE|-`: sends JSON Lines of events to SQS_QUEUE_URL, one message a
//! line (the demo and the tests).

use std::io::BufRead;

use anyhow::{anyhow, Context};

use super::read_lines;
use crate::config::Settings;
use crate::events;
use crate::queue::{Outgoing, Queue, SendError};

/// Sends the non-blank lines of `file` (`-`: stdin), ten to a batch; on a FIFO queue, grouped
/// by customer and deduplicated by the event's deduplication key.
pub async fn run(settings: &Settings, file: &str) -> anyhow::Result<()> {
    let queue = Queue::connect(settings, settings.queue_url()?).await;
    let fifo = queue.is_fifo();
    let mut messages = Vec::new();
    for line in read_lines(file)?.lines() {
        let line = line.with_context(|| format!("reading {file}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut message = Outgoing::default();
        if fifo {
            // an unreadable line is sent as it is, deduplicated by its body
            let parsed = events::parse(line.as_bytes()).ok();
            message.group_id = parsed
                .as_ref()
                .and_then(|e| e.customer_id().map(str::to_owned));
            message.dedup_key = parsed.map(|e| e.dedup_key);
        }
        message.body = line;
        messages.push(message);
    }
    for (chunk_no, chunk) in messages.chunks(10).enumerate() {
        queue.send_batch(chunk).await.map_err(|e| match e {
            SendError::Refused { index, reason } => {
                anyhow!(
                    "message {} was refused: {reason}",
                    chunk_no * 10 + index + 1
                )
            }
            SendError::Call(e) => anyhow::Error::from(e).context("sending to SQS_QUEUE_URL"),
        })?;
    }
    eprintln!("published {} events to {}", messages.len(), queue.url());
    Ok(())
}
