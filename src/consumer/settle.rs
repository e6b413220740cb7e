//! The consumer's decisions, as pure functions of what was received and what applying it
//! gave: which messages to apply, delete, offer again (and after how long) or dead-letter.
//! No I/O here, so every rule is tested without SQS or PostgreSQL.

use tracing::{error, warn};

use crate::dead_letters::NewDeadLetter;
use crate::events::{self, ParsedEvent};
use crate::processor::EventResult;
use crate::queue::Received;

/// A received batch, sorted before anything is applied.
#[derive(Debug, Default)]
pub struct Triaged {
    /// Parsed, and under the receive limit: to be applied.
    pub apply: Vec<(Received, ParsedEvent)>,
    /// Malformed, or received too often: never applied.
    pub dead: Vec<(Received, NewDeadLetter)>,
}

/// Parses each message. One that does not parse, or that has been received more than
/// `max_receive_count` times, is to be dead-lettered with the reason.
pub fn triage(messages: Vec<Received>, max_receive_count: u32) -> Triaged {
    let max = max_receive_count;
    let mut out = Triaged::default();
    for m in messages {
        let count = m.receive_count;
        match events::parse(m.body.as_bytes()) {
            Err(e) => {
                warn!(sqs_message_id = %m.message_id,
                      message_id = e.message_id.as_deref().unwrap_or("-"),
                      event_type = e.event_type.as_deref().unwrap_or("-"),
                      reason = %e.reason, "malformed message: dead-lettering");
                let dl = NewDeadLetter::unparsable(m.message_id.clone(), m.body.clone().into(), e);
                out.dead.push((m, dl));
            }
            Ok(ev) if count > max => {
                warn!(message_id = %ev.dedup_key, event_type = %ev.event_type,
                      customer_id = ev.customer_id().unwrap_or("-"), receive_count = count,
                      "receive limit reached: dead-lettering");
                let reason = format!(
                    "received {count} times (MAX_RECEIVE_COUNT is {max}) without being applied"
                );
                let dl = NewDeadLetter::unappliable(
                    m.message_id.clone(),
                    m.body.clone().into(),
                    &ev,
                    reason,
                );
                out.dead.push((m, dl));
            }
            Ok(ev) => out.apply.push((m, ev)),
        }
    }
    out
}

/// What becomes of a batch's messages once it was applied.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Done with (applied, duplicate, stale or skipped): delete.
    pub delete: Vec<Received>,
    /// Failed, with receives left: offered again after the delay, in seconds.
    pub release: Vec<(Received, i32)>,
    /// Never to apply: record, copy to the dead-letter queue, then delete.
    pub dead_letter: Vec<(Received, NewDeadLetter)>,
}

/// Settles a batch from the results of applying `applied` (in its order) and the messages
/// [`triage`] put aside. A failure on the last allowed receive is dead-lettered; an earlier
/// one is released after [`retry_delay`].
pub fn settle(
    applied: Vec<(Received, ParsedEvent)>,
    results: Vec<EventResult>,
    dead: Vec<(Received, NewDeadLetter)>,
    max_receive_count: u32,
) -> Settlement {
    assert_eq!(applied.len(), results.len(), "one result per applied event");
    let max = max_receive_count;
    let mut out = Settlement {
        dead_letter: dead,
        ..Settlement::default()
    };
    for ((m, ev), result) in applied.into_iter().zip(results) {
        let Err(reason) = result else {
            out.delete.push(m);
            continue;
        };
        let count = m.receive_count;
        if count >= max {
            error!(message_id = %ev.dedup_key, event_type = %ev.event_type,
                   customer_id = ev.customer_id().unwrap_or("-"), %reason, receive_count = count,
                   "failed for the last time: dead-lettering");
            let reason = format!("failed on receive {count} of {max}: {reason}");
            let dl = NewDeadLetter::unappliable(
                m.message_id.clone(),
                m.body.clone().into(),
                &ev,
                reason,
            );
            out.dead_letter.push((m, dl));
        } else {
            warn!(message_id = %ev.dedup_key, event_type = %ev.event_type,
                  customer_id = ev.customer_id().unwrap_or("-"), %reason, receive_count = count,
                  "failed; SQS will redeliver");
            out.release.push((m, retry_delay(count)));
        }
    }
    out
}

/// Seconds before a message that failed (not transiently) is offered again: doubling with
/// each receive, at most a minute.
pub fn retry_delay(receive_count: u32) -> i32 {
    (1i32 << receive_count.min(6)).min(60)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::apply::Outcome;

    pub(in crate::consumer) fn received(id: &str, body: &str, receive_count: u32) -> Received {
        Received {
            message_id: id.into(),
            receipt: format!("receipt-{id}"),
            body: body.into(),
            receive_count,
            group_id: None,
            sent_at: None,
        }
    }

    pub(in crate::consumer) fn event(message_id: &str) -> String {
        serde_json::json!({
            "type": "customer.updated",
            "messageId": message_id,
            "timestamp": "2026-11-01T10:00:00Z",
            "id": "c-1",
            "name": "Acme",
        })
        .to_string()
    }

    fn ids(ms: &[Received]) -> Vec<&str> {
        ms.iter().map(|m| m.message_id.as_str()).collect()
    }

    #[test]
    fn triage_puts_aside_malformed_and_over_limit_messages() {
        let t = triage(
            vec![
                received("ok", &event("e-1"), 1),
                received("bad", "{not json", 1),
                received("tired", &event("e-2"), 6),
                received("last", &event("e-3"), 5),
            ],
            5,
        );
        assert_eq!(
            t.apply
                .iter()
                .map(|(m, e)| (m.message_id.as_str(), e.dedup_key.as_str()))
                .collect::<Vec<_>>(),
            [("ok", "e-1"), ("last", "e-3")]
        );
        let dead: Vec<_> = t
            .dead
            .iter()
            .map(|(m, d)| (m.message_id.as_str(), d.source_id.as_str()))
            .collect();
        assert_eq!(dead, [("bad", "bad"), ("tired", "tired")]);
        let tired = &t.dead[1].1;
        assert!(
            tired.reason.contains("received 6 times"),
            "{}",
            tired.reason
        );
        assert_eq!(tired.event_message_id.as_deref(), Some("e-2"));
        assert_eq!(
            tired.body,
            event("e-2").into_bytes(),
            "the body is kept as received"
        );
    }

    #[test]
    fn every_outcome_deletes_and_failures_release_until_the_last_receive() {
        let t = triage(
            vec![
                received("applied", &event("e-1"), 1),
                received("dup", &event("e-2"), 1),
                received("stale", &event("e-3"), 2),
                received("skipped", &event("e-4"), 1),
                received("failed-early", &event("e-5"), 1),
                received("failed-later", &event("e-6"), 4),
                received("failed-last", &event("e-7"), 5),
            ],
            5,
        );
        let results = vec![
            Ok(Outcome::Applied),
            Ok(Outcome::Duplicate),
            Ok(Outcome::Stale),
            Ok(Outcome::Skipped),
            Err("refused".into()),
            Err("refused".into()),
            Err("refused again".into()),
        ];
        let s = settle(t.apply, results, t.dead, 5);
        assert_eq!(ids(&s.delete), ["applied", "dup", "stale", "skipped"]);
        let released: Vec<_> = s
            .release
            .iter()
            .map(|(m, d)| (m.message_id.as_str(), *d))
            .collect();
        assert_eq!(released, [("failed-early", 2), ("failed-later", 16)]);
        assert_eq!(s.dead_letter.len(), 1);
        let (m, dl) = &s.dead_letter[0];
        assert_eq!(m.message_id, "failed-last");
        assert_eq!(dl.reason, "failed on receive 5 of 5: refused again");
        assert_eq!(dl.event_type.as_deref(), Some("customer.updated"));
    }

    #[test]
    fn what_triage_put_aside_stays_dead_lettered() {
        let t = triage(vec![received("bad", "[]", 1)], 5);
        let s = settle(t.apply, vec![], t.dead, 5);
        assert!(s.delete.is_empty() && s.release.is_empty());
        assert_eq!(s.dead_letter[0].0.message_id, "bad");
    }

    #[test]
    fn a_message_is_settled_exactly_once() {
        let bodies: Vec<Received> = (0..30)
            .map(|i| {
                let body = if i % 7 == 0 {
                    "x".to_owned()
                } else {
                    event(&format!("e-{i}"))
                };
                received(&format!("m-{i}"), &body, 1 + i % 6)
            })
            .collect();
        let t = triage(bodies, 5);
        let results = (0..t.apply.len())
            .map(|i| {
                if i % 3 == 0 {
                    Err("no".into())
                } else {
                    Ok(Outcome::Applied)
                }
            })
            .collect();
        let s = settle(t.apply, results, t.dead, 5);
        let mut all: Vec<&str> = ids(&s.delete);
        all.extend(s.release.iter().map(|(m, _)| m.message_id.as_str()));
        all.extend(s.dead_letter.iter().map(|(m, _)| m.message_id.as_str()));
        all.sort_unstable();
        let mut expected: Vec<String> = (0..30).map(|i| format!("m-{i}")).collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
    }

    #[test]
    fn retry_delays_double_up_to_a_minute() {
        let delays: Vec<i32> = (1..=8).map(retry_delay).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
