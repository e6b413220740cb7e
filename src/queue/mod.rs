//! Every SQS call the service makes goes through [`Queue`]: receive, delete, change
//! visibility, send dead letters, publish, read the depth. Messages come out as [`Received`],
//! our own type, so the consumer's decisions are made on plain values and tested without an
//! emulator. This module knows queues, not events: what to send and where is the caller's.

mod client;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use client::{EdgeCredentials, CREDENTIALS_SECONDS};

use crate::config::Settings;
use crate::telemetry;

/// An SQS failure, as the SDK describes it.
pub type Error = aws_sdk_sqs::Error;

/// One queue, by URL, and the client that reaches it.
#[derive(Clone, Debug)]
pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

/// A received message: what the consumer needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// SQS's id for the message (not the event's `messageId`).
    pub message_id: String,
    /// What deletes it or changes its visibility, valid for this receive only.
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed it out, this time included.
    pub receive_count: u32,
    /// Its FIFO message group, if any.
    pub group_id: Option<String>,
    /// When SQS took it (`SentTimestamp`).
    pub sent_at: Option<SystemTime>,
}

/// A message to send: its body and, on a FIFO queue, its group and deduplication key.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: String,
    pub group_id: Option<String>,
    /// Made into a `MessageDeduplicationId` by [`dedup_id`].
    pub dedup_key: Option<String>,
    /// String attributes.
    pub attributes: Vec<(&'static str, String)>,
}

/// The queue's approximate numbers of messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depth {
    pub visible: Option<f64>,
    pub in_flight: Option<f64>,
    pub delayed: Option<f64>,
}

/// How often [`Queue::watch_depth`] reads the depth.
pub const DEPTH_EVERY: Duration = Duration::from_secs(15);

/// Largest batch SQS takes in one call.
const BATCH: usize = 10;

impl Queue {
    /// The queue at `url`, with a client built from the settings (AWS configuration, or
    /// credentials from Stigg's Edge API).
    pub async fn connect(settings: &Settings, url: &str) -> Self {
        Self::new(client::client(settings).await, url)
    }

    pub fn new(sqs: aws_sdk_sqs::Client, url: &str) -> Self {
        Self {
            sqs,
            url: url.to_owned(),
        }
    }

    /// Another queue reached by the same client (the dead-letter queue).
    pub fn other(&self, url: &str) -> Self {
        Self::new(self.sqs.clone(), url)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A queue URL ending in `.fifo` is a FIFO queue (§1).
    pub fn is_fifo(&self) -> bool {
        is_fifo(&self.url)
    }

    /// Long-polls for up to `max` (at most 10) messages, hiding them for `visibility`.
    pub async fn receive(
        &self,
        max: u32,
        wait_seconds: i32,
        visibility: Duration,
    ) -> Result<Vec<Received>, Error> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, BATCH as u32) as i32)
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(Received::from)
            .collect())
    }

    /// Deletes the messages, ten to a call, retrying entries that failed up to three times.
    /// A delete that never succeeds is counted and logged: the message comes back and is then
    /// a duplicate, which the inbox absorbs.
    pub async fn delete(&self, receipts: &[&str]) {
        for chunk in receipts.chunks(BATCH) {
            let mut pending: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*receipt)
                        .build()
                        .expect("id and receipt handle set")
                })
                .collect();
            for attempt in 0..3 {
                let sent = self
                    .sqs
                    .delete_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await;
                match sent {
                    Ok(out) => {
                        let failed: HashMap<String, String> = out
                            .failed
                            .iter()
                            .map(|f| (f.id.clone(), f.message.clone().unwrap_or_default()))
                            .collect();
                        if failed.is_empty() {
                            break;
                        }
                        warn!(
                            failed = failed.len(),
                            ?failed,
                            attempt,
                            "some deletes failed"
                        );
                        telemetry::delete_error(failed.len() as u64);
                        pending.retain(|e| failed.contains_key(&e.id));
                    }
                    Err(e) => {
                        telemetry::delete_error(pending.len() as u64);
                        warn!(error = %Error::from(e), attempt,
                              "delete failed; already-applied messages will come back as duplicates");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }

    /// Sets the messages' visibility timeout to `seconds` from now (0: offered again at
    /// once). A failure is logged: the old timeout then stands.
    pub async fn change_visibility(&self, receipts: &[&str], seconds: i32) {
        for chunk in receipts.chunks(BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*receipt)
                        .visibility_timeout(seconds)
                        .build()
                        .expect("id and receipt handle set")
                })
                .collect();
            if let Err(e) = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                warn!(error = %Error::from(e), "changing visibility failed");
            }
        }
    }

    /// Sends one message.
    pub async fn send(&self, message: &Outgoing) -> Result<(), Error> {
        let fifo = self.is_fifo();
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(&message.body)
            .set_message_attributes(attributes(&message.attributes));
        if fifo {
            send = send
                .message_group_id(message.group_id.as_deref().unwrap_or("default"))
                .message_deduplication_id(dedup_id(&dedup_key(message)));
        }
        send.send().await?;
        Ok(())
    }

    /// Sends up to ten messages in one call. `Err` names the first message SQS refused, by
    /// its index in `messages`.
    pub async fn send_batch(&self, messages: &[Outgoing]) -> Result<(), SendError> {
        let fifo = self.is_fifo();
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes(attributes(&m.attributes));
                if fifo {
                    entry = entry
                        .message_group_id(m.group_id.as_deref().unwrap_or("default"))
                        .message_deduplication_id(dedup_id(&dedup_key(m)));
                }
                entry.build().expect("id and body set")
            })
            .collect();
        let out = self
            .sqs
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| SendError::Call(e.into()))?;
        match out.failed.first() {
            None => Ok(()),
            Some(f) => Err(SendError::Refused {
                index: f.id.parse().unwrap_or(0),
                reason: f.message.clone().unwrap_or_default(),
            }),
        }
    }

    /// The approximate numbers of visible, in-flight and delayed messages.
    pub async fn depth(&self) -> Result<Depth, Error> {
        use QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |k: A| attrs.get(&k).and_then(|v| v.parse::<f64>().ok());
        Ok(Depth {
            visible: get(A::ApproximateNumberOfMessages),
            in_flight: get(A::ApproximateNumberOfMessagesNotVisible),
            delayed: get(A::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// Reads the depth every [`DEPTH_EVERY`] until `shutdown`, for `/metrics`. A failed read
    /// is logged and skipped.
    pub async fn watch_depth(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(DEPTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match self.depth().await {
                Ok(d) => telemetry::queue_depth(d.visible, d.in_flight, d.delayed),
                Err(e) => debug!(error = %e, "reading the queue depth failed"),
            }
        }
    }
}

/// A batch send that failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Call(Error),
    #[error("message {index} of the batch was refused: {reason}")]
    Refused { index: usize, reason: String },
}

impl From<Message> for Received {
    fn from(m: Message) -> Self {
        let attr = |name: MessageSystemAttributeName| {
            m.attributes.as_ref().and_then(|a| a.get(&name)).cloned()
        };
        Self {
            receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            group_id: attr(MessageSystemAttributeName::MessageGroupId),
            sent_at: attr(MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            message_id: m.message_id.unwrap_or_default(),
            receipt: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
        }
    }
}

/// A message sent without a key is deduplicated by its body.
fn dedup_key(m: &Outgoing) -> Cow<'_, str> {
    match &m.dedup_key {
        Some(k) => Cow::Borrowed(k.as_str()),
        None => Cow::Owned(hex::encode(Sha256::digest(m.body.as_bytes()))),
    }
}

fn attributes(attrs: &[(&'static str, String)]) -> Option<HashMap<String, MessageAttributeValue>> {
    if attrs.is_empty() {
        return None;
    }
    Some(
        attrs
            .iter()
            .map(|(name, value)| {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    // SQS refuses an empty string attribute
                    .string_value(if value.is_empty() { "-" } else { value })
                    .build()
                    .expect("data type set");
                ((*name).to_owned(), value)
            })
            .collect(),
    )
}

/// A queue URL ending in `.fifo` is a FIFO queue (§1).
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.trim_end_matches('/').ends_with(".fifo")
}

/// The `MessageDeduplicationId` of a message sent to a FIFO queue: its deduplication key when
/// SQS takes it as one (1 to 128 printable ASCII characters), else the key's SHA-256 in hex.
/// Cutting the key at 128 bytes could fall inside a character (a panic) and would give keys
/// sharing their first 128 bytes one id (SQS would drop all but the first).
pub fn dedup_id(key: &str) -> Cow<'_, str> {
    if (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(hex::encode(Sha256::digest(key.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_what_sqs_accepts_for_any_key() {
        let accepted =
            |id: &str| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
        assert_eq!(dedup_id("msg-1:a/b"), "msg-1:a/b");
        let long_multi_byte = format!("k{}", "é".repeat(100)); // byte 128 inside a 'é'
        let long_ascii = "k".repeat(200);
        for key in [long_multi_byte.as_str(), &long_ascii, "é", "a b", ""] {
            let id = dedup_id(key);
            assert!(accepted(&id), "{key:?} gave {id:?}");
        }
        // distinct keys keep distinct ids, even when they share their first 128 bytes
        assert_ne!(dedup_id(&long_ascii), dedup_id(&"k".repeat(201)));
    }

    #[test]
    fn a_received_message_reads_its_count_and_group() {
        let m = Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::MessageGroupId, "cust-1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1764460800123")
            .build();
        let r = Received::from(m);
        assert_eq!(r.receive_count, 3);
        assert_eq!(r.group_id.as_deref(), Some("cust-1"));
        assert_eq!((r.message_id.as_str(), r.receipt.as_str()), ("m-1", "r-1"));
        let sent = r
            .sent_at
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(sent.as_millis(), 1_764_460_800_123);
        let bare = Received::from(Message::builder().build());
        assert_eq!(bare.receive_count, 1, "a missing count is a first receive");
    }
}
