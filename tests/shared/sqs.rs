//! SQS helpers shared by the integration tests (`tests/it/support.rs`) and the benchmark
//! (`benches/replica/main.rs`), which both include this one file with `#[path = "…"] mod sqs;`:
//! a client for the emulator (LocalStack), a fresh queue, sending one message or pre-loading
//! many (`preload`, or one batch with `send_batch`), and a queue's depth. The bench uses all
//! but `send`.

use anyhow::{bail, Context, Result};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use futures::{StreamExt, TryStreamExt};

/// A client for the SQS emulator at `endpoint`: region us-east-1, credentials test/test.
pub fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// Creates the queue `name` and returns its URL. A FIFO queue (content-based deduplication)
/// gets `.fifo` appended to its name.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, fifo: bool) -> Result<String> {
    let mut req = sqs.create_queue();
    let name = if fifo {
        req = req
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        format!("{name}.fifo")
    } else {
        name.to_owned()
    };
    req.queue_name(name)
        .send()
        .await
        .context("create queue")?
        .queue_url
        .context("queue url")
}

/// Sends one message (in message group `g` on a FIFO queue); returns its message id.
pub async fn send(sqs: &aws_sdk_sqs::Client, queue: &str, body: &str) -> Result<String> {
    let mut req = sqs.send_message().queue_url(queue).message_body(body);
    if queue.ends_with(".fifo") {
        req = req.message_group_id("g");
    }
    req.send()
        .await
        .context("send")?
        .message_id
        .context("message id")
}

/// Sends every body (10 a batch, 32 batches at once).
pub async fn preload(sqs: &aws_sdk_sqs::Client, queue: &str, bodies: &[String]) -> Result<()> {
    futures::stream::iter(bodies.chunks(10))
        .map(|chunk| send_batch(sqs, queue, chunk))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// One SendMessageBatch of up to ten bodies; a refused entry is an error.
pub async fn send_batch(sqs: &aws_sdk_sqs::Client, queue: &str, bodies: &[String]) -> Result<()> {
    let entries = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(b)
                .build()
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<Vec<_>>>()?;
    let out = sqs
        .send_message_batch()
        .queue_url(queue)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?;
    if let Some(f) = out.failed.first() {
        bail!("send refused: {:?}", f.message);
    }
    Ok(())
}

/// Messages visible and messages in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<(u64, u64)> {
    use QueueAttributeName as A;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?
        .attributes
        .unwrap_or_default();
    let get = |k: A| {
        attrs
            .get(&k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    ))
}
