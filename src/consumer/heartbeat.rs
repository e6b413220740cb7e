//! Keeps a batch's messages invisible while its work runs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Keeps a batch's messages invisible while its work runs, extending their visibility every
/// `every`. It ends with its batch: [`Heartbeat::stop`] waits for an extension under way, so
/// that none lands after what follows, and dropping it (a batch that panicked) aborts it.
pub struct Heartbeat {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start<F, Fut>(every: Duration, mut extend: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(
            async move {
                let mut ticker = tokio::time::interval(every);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        biased;
                        _ = stopped.cancelled() => break,
                        _ = ticker.tick() => extend().await,
                    }
                }
            }
            .in_current_span(),
        );
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Ends it once the extension under way, if any, is done.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A heartbeat counting its extensions, each taking `takes`: (started, finished).
    fn counting(every: Duration, takes: Duration) -> (Heartbeat, Arc<[AtomicUsize; 2]>) {
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let c = counts.clone();
        let heartbeat = Heartbeat::start(every, move || {
            let c = c.clone();
            async move {
                c[0].fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                c[1].fetch_add(1, Ordering::SeqCst);
            }
        });
        (heartbeat, counts)
    }

    fn counts_started(counts: &[AtomicUsize; 2]) -> usize {
        counts[0].load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_heartbeat_ends_with_a_batch_that_panics() {
        let (heartbeat, counts) = counting(Duration::from_millis(10), Duration::ZERO);
        let seen = counts.clone();
        let batch = tokio::spawn(async move {
            let _heartbeat = heartbeat;
            while counts_started(&seen) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("batch handling bug");
        });
        assert!(batch.await.unwrap_err().is_panic());
        let after = counts_started(&counts);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            counts_started(&counts),
            after,
            "the heartbeat outlived its batch"
        );
    }

    #[tokio::test]
    async fn stopping_a_heartbeat_waits_for_the_extension_under_way() {
        let (heartbeat, counts) = counting(Duration::from_millis(10), Duration::from_millis(100));
        while counts_started(&counts) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        heartbeat.stop().await;
        let started = counts_started(&counts);
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            started,
            "an extension was cut short"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(counts_started(&counts), started, "extended after the stop");
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            started,
            "extended after the stop"
        );
    }
}
