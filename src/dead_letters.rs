//! Dead letters: messages (and `ingest` lines) that can never apply, kept with why for
//! `stigg-byos dlq list` and `dlq replay`. What one holds ([`NewDeadLetter`] to record,
//! [`DeadLetter`] as recorded), how its id is made, and the metric that counts it are here;
//! the SQL is in [`crate::store::dead_letters`].

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::events::{ParseError, ParsedEvent};
use crate::{store, telemetry};

/// A dead letter to record (or record again: a letter with the same `source_id` gets the new
/// reason and one more attempt).
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// The SQS message id, or for a line of `ingest` one made from its body
    /// ([`ingest_source_id`]).
    pub source_id: String,
    /// The event's `messageId`, if it could be read.
    pub event_message_id: Option<String>,
    /// The event's `type`, if it could be read.
    pub event_type: Option<String>,
    pub reason: String,
    /// The message body as received, what `dlq replay` parses again.
    pub body: Vec<u8>,
}

impl NewDeadLetter {
    /// A body that does not parse, with what could be read of it.
    pub fn unparsable(source_id: String, body: Vec<u8>, error: ParseError) -> Self {
        Self {
            source_id,
            event_message_id: error.message_id,
            event_type: error.event_type,
            reason: error.reason,
            body,
        }
    }

    /// An event that parsed but will not apply, for `reason`.
    pub fn unappliable(
        source_id: String,
        body: Vec<u8>,
        event: &ParsedEvent,
        reason: String,
    ) -> Self {
        Self {
            source_id,
            event_message_id: event.message_id.clone(),
            event_type: Some(event.event_type.clone()),
            reason,
            body,
        }
    }
}

/// A recorded dead letter, as `dlq list` shows it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub source_id: String,
    pub event_message_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    pub body: Vec<u8>,
    pub attempts: i32,
    pub first_seen: DateTime<Utc>,
}

impl DeadLetter {
    /// The same letter, replayed and failing again for `reason`.
    pub fn failed_again(self, reason: String) -> NewDeadLetter {
        NewDeadLetter {
            source_id: self.source_id,
            event_message_id: self.event_message_id,
            event_type: self.event_type,
            reason,
            body: self.body,
        }
    }
}

/// The id of a dead letter from `ingest`, whose lines have no SQS message id: `ingest-` and
/// the start of its body's SHA-256, so that the same line is the same letter on every run.
pub fn ingest_source_id(body: &[u8]) -> String {
    format!("ingest-{}", &hex::encode(Sha256::digest(body))[..24])
}

/// Records (or records again) a dead letter, and counts it.
pub async fn record(pool: &PgPool, letter: &NewDeadLetter) -> sqlx::Result<()> {
    store::record_dead_letter(pool, letter).await?;
    counted();
    Ok(())
}

/// A dead letter is recorded for good: `stigg_byos_messages_total{outcome="dead_lettered"}`.
/// [`record`] counts its letter; the worker, whose letters are also copied to SQS_DLQ_URL,
/// records with [`store::record_dead_letter`] and counts once the copy is made too (a
/// message whose copy fails is released, not dead-lettered).
pub fn counted() {
    telemetry::message("dead_lettered");
}
