//! `stigg-byos publish FILE|-`: sends JSON Lines of events to SQS_QUEUE_URL, one message a
//! line (the demo and the tests).

use std::io::BufRead;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::read_lines;
use crate::config::Settings;
use crate::events;

/// Sends the non-blank lines of `file` (`-`: stdin), ten to a batch; on a FIFO queue, grouped
/// by customer and deduplicated by the event's deduplication key.
pub async fn run(settings: &Settings, file: &str) -> anyhow::Result<()> {
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
