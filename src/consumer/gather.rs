//! Group commit across receives. Each receive hands its parsed events to [`Gather`]; an
//! applier takes what is waiting (one receive, or every receive that arrived while the last
//! transaction ran) and applies it as one batch, then answers each receive with its own
//! results. Under load the batches reach the size where the set-based path pays (and one
//! commit serves many receives); when idle a receive is applied alone, at once, so nothing
//! waits for company. Messages are still settled (deleted, released, dead-lettered) by the
//! receive that holds them, only after the commit.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::events::ParsedEvent;
use crate::processor::EventResult;
use crate::queue::Received;

/// What a receive hands over: its messages with their events, in order.
pub type Items = Vec<(Received, ParsedEvent)>;

/// The items back, with one result per item; `None` when shutdown cut the apply short.
pub type Done = (Items, Option<Vec<EventResult>>);

/// A gathered batch never grows past this many events (it is bounded by
/// `WORKER_CONCURRENCY` anyway).
pub const MAX_EVENTS: usize = 1000;

struct Job {
    items: Items,
    reply: oneshot::Sender<Done>,
}

/// The receives' side: hand over items, wait for their results.
#[derive(Clone)]
pub struct Gather {
    jobs: mpsc::UnboundedSender<Job>,
}

/// The appliers' side, shared by the lanes: one takes a batch at a time.
#[derive(Clone)]
pub struct Batches {
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
}

pub fn channel() -> (Gather, Batches) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Gather { jobs: tx },
        Batches {
            jobs: Arc::new(Mutex::new(rx)),
        },
    )
}

impl Gather {
    /// Applies `items` with whatever else is waiting. `None` also when the appliers are gone
    /// (shutdown): the caller hands the messages back.
    pub async fn apply(&self, items: Items) -> Option<Done> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { items, reply }).ok()?;
        answer.await.ok()
    }
}

/// One gathered batch: every waiting receive's items, in arrival order.
pub struct Batch {
    jobs: Vec<Job>,
}

impl Batches {
    /// Waits for the first receive, then takes every other one already waiting, up to
    /// [`MAX_EVENTS`]. `None` once every [`Gather`] is dropped and nothing waits.
    pub async fn next(&self) -> Option<Batch> {
        let mut rx = self.jobs.lock().await;
        let first = rx.recv().await?;
        let mut events = first.items.len();
        let mut jobs = vec![first];
        while events < MAX_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.items.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        Some(Batch { jobs })
    }
}

impl Batch {
    pub fn receives(&self) -> usize {
        self.jobs.len()
    }

    pub fn events(&self) -> Vec<&ParsedEvent> {
        self.jobs
            .iter()
            .flat_map(|j| j.items.iter().map(|(_, ev)| ev))
            .collect()
    }

    /// Answers each receive with its share of `results` (one per event, in [`Self::events`]'s
    /// order), or with `None`. A receive that stopped waiting (hard stop) is skipped.
    pub fn answer(self, results: Option<Vec<EventResult>>) {
        let mut results = results.map(Vec::into_iter);
        for job in self.jobs {
            let share = results
                .as_mut()
                .map(|r| r.by_ref().take(job.items.len()).collect::<Vec<_>>());
            let _ = job.reply.send((job.items, share));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::Outcome;
    use crate::consumer::settle::tests::{event, received};

    fn items(ids: &[&str]) -> Items {
        ids.iter()
            .map(|id| {
                let body = event(id);
                let ev = crate::events::parse(body.as_bytes()).expect("parses");
                (received(id, &body, 1), ev)
            })
            .collect()
    }

    #[tokio::test]
    async fn waiting_receives_are_applied_together_and_answered_each_with_their_own() {
        let (gather, batches) = channel();
        let a = tokio::spawn({
            let g = gather.clone();
            async move { g.apply(items(&["a1", "a2"])).await }
        });
        let b = tokio::spawn({
            let g = gather.clone();
            async move { g.apply(items(&["b1"])).await }
        });
        // both receives are waiting before the applier looks
        while batches.jobs.lock().await.len() < 2 {
            tokio::task::yield_now().await;
        }
        let batch = batches.next().await.expect("a batch");
        assert_eq!(batch.receives(), 2);
        let ids: Vec<String> = batch.events().iter().map(|e| e.dedup_key.clone()).collect();
        let results = ids
            .iter()
            .map(|id| {
                if id == "a2" {
                    Err("bad".to_owned())
                } else {
                    Ok(Outcome::Applied)
                }
            })
            .collect();
        batch.answer(Some(results));
        let (a_items, a_res) = a.await.unwrap().expect("answered");
        let (b_items, b_res) = b.await.unwrap().expect("answered");
        let first = ids[0].clone();
        let (a_res, b_res) = (a_res.unwrap(), b_res.unwrap());
        assert_eq!(a_items.len(), 2);
        assert_eq!(b_items.len(), 1);
        assert_eq!(a_res.len(), 2);
        assert_eq!(b_res.len(), 1);
        // each receive gets the results of its own events, whichever arrived first
        if first == "a1" {
            assert_eq!(a_res[1], Err("bad".to_owned()));
            assert_eq!(b_res[0], Ok(Outcome::Applied));
        } else {
            assert_eq!(b_res[0], Ok(Outcome::Applied));
            assert_eq!(a_res, vec![Ok(Outcome::Applied), Err("bad".to_owned())]);
        }
    }

    #[tokio::test]
    async fn a_cut_short_apply_answers_none_and_a_gone_applier_too() {
        let (gather, batches) = channel();
        let waiting = tokio::spawn({
            let g = gather.clone();
            async move { g.apply(items(&["x"])).await }
        });
        let batch = batches.next().await.expect("a batch");
        batch.answer(None);
        let (back, results) = waiting.await.unwrap().expect("answered");
        assert_eq!(back.len(), 1);
        assert!(results.is_none());
        drop(batches);
        assert!(gather.apply(items(&["y"])).await.is_none());
    }
}
