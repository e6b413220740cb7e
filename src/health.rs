//! Shared liveness facts: whether the consumer loop runs, whether the database answered
//! last time the worker tried, and whether the HTTP reads are warmed up. Read by `/readyz` and by the consumer's receive gate.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct Health {
    /// `None` when this process runs no consumer (`serve`).
    consumer_running: Option<AtomicBool>,
    database_ok: AtomicBool,
    /// The hot reads' connections are open and their statements prepared ([`crate::reads`]):
    /// a request is served at full speed.
    warm: AtomicBool,
}

impl Health {
    pub fn new(with_consumer: bool) -> Self {
        Self {
            consumer_running: with_consumer.then(|| AtomicBool::new(false)),
            database_ok: AtomicBool::new(true),
            warm: AtomicBool::new(false),
        }
    }

    pub fn set_warm(&self) {
        self.warm.store(true, Ordering::SeqCst);
    }

    pub fn warm(&self) -> bool {
        self.warm.load(Ordering::SeqCst)
    }

    pub fn set_consumer_running(&self, running: bool) {
        if let Some(flag) = &self.consumer_running {
            flag.store(running, Ordering::SeqCst);
        }
    }

    /// True when no consumer is expected or it runs.
    pub fn consumer_ok(&self) -> bool {
        self.consumer_running
            .as_ref()
            .is_none_or(|f| f.load(Ordering::SeqCst))
    }

    pub fn set_database_ok(&self, ok: bool) {
        self.database_ok.store(ok, Ordering::SeqCst);
    }

    pub fn database_ok(&self) -> bool {
        self.database_ok.load(Ordering::SeqCst)
    }
}
