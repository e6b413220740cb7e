//! `stigg-byos sync`: a complete snapshot of Stigg's state merged into the replica, for a new
//! replica's first day and to repair one that missed events (STIGG-API.md).
//!
//! A pass lists every customer, then every subscription of every status, then reads the
//! entitlement state of each listed customer and of each (customer, resource) a subscription
//! names. Each copy is written through the store functions events use, with their version
//! guards, so a copy older than the replica changes nothing and a newer event still wins
//! later. After a complete pass, customers Stigg did not list become tombstones (the prune),
//! bounded by `--max-prune-percent`; never after a partial one.
//!
//! A pass holds a PostgreSQL advisory lock (one pass per database at a time) and records its
//! progress with each page it writes (`sync_runs`), so `sync --resume` continues an interrupted
//! pass from its last completed page. It never stops the worker or the server.

pub mod api;
mod merge;
pub mod snapshot;

use std::time::Duration;

use backon::Retryable;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::store::is_transient;
use crate::store::{self, sync as sync_store};
use api::{ApiError, StiggApi};
use merge::{Merge, StateMerge};

/// The advisory lock every pass holds: "stigg-byos sync" in spirit, any constant will do.
const LOCK_KEY: i64 = 0x5359_4e43_5354_4947;

/// Customers pruned in one transaction.
const PRUNE_BATCH: usize = 100;

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Continue the newest pass if it was interrupted.
    pub resume: bool,
    /// Tombstone the customers Stigg no longer lists after a complete pass.
    pub prune: bool,
    /// Prune even beyond `max_prune_percent`.
    pub force: bool,
    pub max_prune_percent: f64,
    /// Entitlement states read at once.
    pub concurrency: usize,
    pub progress: ProgressStyle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A progress bar on stderr (a terminal).
    Bar,
    /// Log lines, at most one every few seconds.
    Log,
}

/// Counts of one kind of state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kind {
    /// Listed (customers, subscriptions) or read (entitlement sets).
    pub seen: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub older: u64,
}

impl Kind {
    fn add(&mut self, m: Merge) {
        self.seen += 1;
        match m {
            Merge::Changed => self.changed += 1,
            Merge::Unchanged => self.unchanged += 1,
            Merge::Older => self.older += 1,
        }
    }

    fn plus(&mut self, other: Kind) {
        self.seen += other.seen;
        self.changed += other.changed;
        self.unchanged += other.unchanged;
        self.older += other.older;
    }
}

/// The counts of a pass, kept with its progress so a resumed pass reports the whole of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub customers: Kind,
    /// Customers made tombstones: not listed by a complete pass, or gone when their
    /// entitlement state was read.
    pub pruned: u64,
    pub subscriptions: Kind,
    pub sets: Kind,
}

/// What a pass did, for its one summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
    pub requests: u64,
    pub throttled: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let kind = |k: &Kind| {
            format!(
                "{} changed, {} unchanged, {} older than the replica",
                k.changed, k.unchanged, k.older
            )
        };
        write!(
            f,
            "sync: customers {} listed, {}, {} pruned; subscriptions {} listed, {}; \
             entitlement sets {} read, {}; requests {} (429: {}); {:.1} s",
            c.customers.seen,
            kind(&c.customers),
            c.pruned,
            c.subscriptions.seen,
            kind(&c.subscriptions),
            c.sets.seen,
            kind(&c.sets),
            self.requests,
            self.throttled,
            self.elapsed.as_secs_f64()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "another sync is running against this database (it holds the sync lock); \
         nothing was done: try again when it has ended"
    )]
    Busy,
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("interrupted")]
    Interrupted,
    #[error(
        "Stigg did not list {candidates} of the replica's {live} customers ({percent:.1}%), more \
         than --max-prune-percent {max}: nothing was pruned. Check that STIGG_SERVER_API_KEY \
         belongs to this replica's environment; then `sync --resume --force` prunes them"
    )]
    TooManyToPrune {
        candidates: usize,
        live: u64,
        percent: f64,
        max: f64,
    },
    #[error("Stigg's {0} listing gave the same cursor twice; stopping rather than looping")]
    CursorLoop(&'static str),
}

/// How a pass ended: its summary (what was written stays written), and whether it completed.
pub struct Outcome {
    pub summary: Summary,
    pub result: Result<(), SyncError>,
}

/// Runs one pass, unless another holds the lock. Stops early, with what it wrote kept and
/// nothing pruned, when a request keeps failing, on a bad key, or on `shutdown`.
pub async fn run_pass(
    pool: &PgPool,
    api: &StiggApi,
    opts: &Options,
    shutdown: &CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let (requests_before, throttled_before) = api.requests();
    let mut pass = None;
    let result = async {
        let lock = lock(pool).await?.ok_or(SyncError::Busy)?;
        let run = match sync_store::latest_run(pool).await? {
            Some(run) if opts.resume && !run.complete => {
                tracing::info!(run = run.run_id, phase = %run.phase, "resuming the interrupted sync");
                run
            }
            previous => {
                if opts.resume {
                    tracing::info!(
                        "no interrupted sync to resume{}; starting a new one",
                        if previous.is_some() { " (the last one completed)" } else { "" }
                    );
                }
                sync_store::start_run(pool).await?
            }
        };
        let counts = serde_json::from_value(run.counts.clone()).unwrap_or_default();
        let pass = pass.insert(Pass {
            pool,
            api,
            opts,
            run,
            counts,
            progress: Progress::new(opts.progress),
        });
        let result = tokio::select! {
            r = pass.drive() => r,
            () = shutdown.cancelled() => Err(SyncError::Interrupted),
        };
        pass.progress.finish();
        let error = result.as_ref().err().map(ToString::to_string);
        let counts = serde_json::to_value(pass.counts).expect("counts serialise");
        if let Err(e) = sync_store::finish_run(pool, pass.run.run_id, &counts, error.as_deref()).await {
            tracing::warn!(error = %e, "could not record the end of the sync");
        }
        release(lock).await;
        result
    }
    .await;
    let (requests, throttled) = api.requests();
    Outcome {
        summary: Summary {
            counts: pass.map(|p| p.counts).unwrap_or_default(),
            requests: requests - requests_before,
            throttled: throttled - throttled_before,
            elapsed: started.elapsed(),
        },
        result,
    }
}

/// Runs a pass every `every` until `shutdown` (`SYNC_INTERVAL` in `run` and `worker`). With
/// several replicas on one database, whichever takes the lock does it; the others skip.
pub async fn every(
    pool: PgPool,
    api: StiggApi,
    opts: Options,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let outcome = run_pass(&pool, &api, &opts, &shutdown).await;
        let result = match &outcome.result {
            Ok(()) => {
                tracing::info!("{}", outcome.summary);
                "complete"
            }
            Err(SyncError::Busy) => {
                tracing::info!("periodic sync skipped: another process is syncing");
                "busy"
            }
            Err(SyncError::Interrupted) => return,
            Err(e) => {
                tracing::error!(error = %e, "periodic sync stopped early; {}", outcome.summary);
                "stopped"
            }
        };
        crate::telemetry::sync_pass(&outcome.summary, result);
    }
}

/// The pass's lock, on a connection of its own (closing it releases the lock, so a crashed
/// pass never leaves it held); `None` when another pass holds it.
async fn lock(pool: &PgPool) -> sqlx::Result<Option<PgConnection>> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if got {
        Ok(Some(conn))
    } else {
        conn.close().await?;
        Ok(None)
    }
}

/// Gives the lock back before its connection closes. A closed connection's backend releases
/// it only once it has exited, and a pass started right after (the next command, under load)
/// could find it still held.
async fn release(mut lock: PgConnection) {
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut lock)
        .await;
    if let Err(e) = unlocked {
        tracing::debug!(error = %e, "could not release the sync lock; closing its connection releases it");
    }
    let _ = lock.close().await;
}

struct Pass<'a> {
    pool: &'a PgPool,
    api: &'a StiggApi,
    opts: &'a Options,
    run: sync_store::Run,
    counts: Counts,
    progress: Progress,
}

impl Pass<'_> {
    async fn drive(&mut self) -> Result<(), SyncError> {
        loop {
            match self.run.phase.as_str() {
                "customers" => self.list_customers().await?,
                "subscriptions" => self.list_subscriptions().await?,
                "entitlements" => self.read_states().await?,
                "prune" => {
                    if self.opts.prune {
                        self.prune().await?;
                    }
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    }

    fn counts_json(&self, counts: &Counts) -> serde_json::Value {
        serde_json::to_value(counts).expect("counts serialise")
    }

    async fn list_customers(&mut self) -> Result<(), SyncError> {
        let mut cursor = self.run.cursor.clone();
        loop {
            let page = self.api.customers(cursor.as_deref()).await?;
            let next = next_cursor(&page.page_info, cursor.as_deref(), "customers")?;
            // written in customer order (the page's customer locks, taken first, are what
            // keeps it from deadlocking with a concurrent batch of events)
            let mut copies: Vec<_> = page
                .edges
                .iter()
                .filter_map(|e| match snapshot::customer(&e.node) {
                    Ok(copy) => Some(copy),
                    Err(reason) => {
                        tracing::warn!(customer = %e.node.customer_id, %reason,
                            "a customer Stigg listed cannot be stored; left out");
                        None
                    }
                })
                .collect();
            copies.sort_by(|a, b| a.customer.id.cmp(&b.customer.id));
            let ids: Vec<String> = page
                .edges
                .iter()
                .map(|e| e.node.customer_id.clone())
                .collect();
            let versions: Vec<_> = page.edges.iter().map(|e| e.node.updated_at).collect();
            let phase = if next.is_some() {
                "customers"
            } else {
                "subscriptions"
            };
            let lists = PageLists::Customers {
                ids: &ids,
                versions: &versions,
            };
            self.write_page(&copies, lists, phase, next.as_deref(), page.total_count)
                .await?;
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(()),
            }
        }
    }

    async fn list_subscriptions(&mut self) -> Result<(), SyncError> {
        let mut cursor = self.run.cursor.clone();
        loop {
            let (page, read_at) = self.api.subscriptions(cursor.as_deref()).await?;
            let next = next_cursor(&page.page_info, cursor.as_deref(), "subscriptions")?;
            let mut copies: Vec<_> = page
                .edges
                .iter()
                .filter_map(|e| match snapshot::subscription(&e.node, read_at) {
                    Ok(copy) => Some(copy),
                    Err(reason) => {
                        tracing::warn!(subscription = %e.node.subscription_id, %reason,
                            "a subscription Stigg listed cannot be stored; left out");
                        None
                    }
                })
                .collect();
            copies.sort_by(|a, b| a.subscription.customer.id.cmp(&b.subscription.customer.id));
            let (customers, resources): (Vec<String>, Vec<String>) = copies
                .iter()
                .filter_map(|c| {
                    let s = &c.subscription;
                    s.resource
                        .as_ref()
                        .map(|r| (s.customer.id.clone(), r.id.clone()))
                })
                .unzip();
            let phase = if next.is_some() {
                "subscriptions"
            } else {
                "entitlements"
            };
            let lists = PageLists::Resources {
                customers: &customers,
                resources: &resources,
            };
            self.write_page(&copies, lists, phase, next.as_deref(), page.total_count)
                .await?;
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// Writes one listing page in one transaction: each copy, what the page adds to the
    /// pass's lists, and the progress after it (so a resumed pass starts at the next page);
    /// then counts the page and reports progress. After the last page (`next` `None`), the
    /// pass moves on to `phase`.
    async fn write_page<C: merge::Listed>(
        &mut self,
        copies: &[C],
        lists: PageLists<'_>,
        phase: &str,
        next: Option<&str>,
        total: Option<u64>,
    ) -> Result<(), SyncError> {
        let run = self.run.run_id;
        let page = (|| async {
            let mut tx = self.pool.begin().await?;
            store::lock_customers(&mut tx, copies.iter().map(|c| c.customer_id())).await?;
            let mut page = Kind::default();
            for copy in copies {
                page.add(copy.merge(&mut tx).await?);
            }
            match lists {
                PageLists::Customers { ids, versions } => {
                    sync_store::add_listed(&mut tx, run, ids, versions).await?
                }
                PageLists::Resources {
                    customers,
                    resources,
                } => sync_store::add_resources(&mut tx, run, customers, resources).await?,
            }
            let mut counts = self.counts;
            C::kind(&mut counts).plus(page);
            let counts = self.counts_json(&counts);
            sync_store::save_progress(&mut tx, run, phase, next, None, &counts).await?;
            store::notify_changed(&mut tx, copies.iter().map(|c| c.customer_id())).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(page)
        })
        .retry(backoff::sync_database())
        .when(is_transient)
        .await?;
        let kind = C::kind(&mut self.counts);
        kind.plus(page);
        let seen = kind.seen;
        self.progress.listed(C::LIST, seen, total);
        if next.is_none() {
            self.run.phase = phase.into();
            self.run.cursor = None;
        }
        Ok(())
    }

    /// Reads the entitlement states in key order, a chunk at a time, `concurrency` at once;
    /// the progress recorded after each chunk is its last key.
    async fn read_states(&mut self) -> Result<(), SyncError> {
        let chunk = (self.opts.concurrency * 16).max(64) as i64;
        let mut after = self.run.after.clone();
        let (total, done) = sync_store::customer_progress(
            self.pool,
            self.run.run_id,
            after.as_ref().map(|a| a.0.as_str()),
        )
        .await?;
        self.progress.start_states(total, done);
        loop {
            let items = sync_store::work_items(
                self.pool,
                self.run.run_id,
                after.as_ref().map(|(c, r)| (c.as_str(), r.as_str())),
                chunk,
            )
            .await?;
            let Some(last) = items.last() else {
                break;
            };
            let last = (last.customer_id.clone(), last.resource_key.clone());
            let reads: Vec<_> = items
                .iter()
                .map(|item| self.read_state(item).boxed())
                .collect();
            let results: Vec<Option<StateMerge>> = futures::stream::iter(reads)
                .buffer_unordered(self.opts.concurrency.max(1))
                .try_collect()
                .await?;
            for r in results.into_iter().flatten() {
                match r {
                    StateMerge::Set(m) => self.counts.sets.add(m),
                    StateMerge::Gone(deleted) => self.counts.pruned += u64::from(deleted),
                }
            }
            let counts = self.counts_json(&self.counts);
            let mut conn = self.pool.acquire().await?;
            sync_store::save_progress(
                &mut conn,
                self.run.run_id,
                "entitlements",
                None,
                Some((&last.0, &last.1)),
                &counts,
            )
            .await?;
            let customers = items.iter().filter(|i| i.resource_key.is_empty()).count();
            self.progress.states_done(customers as u64);
            after = Some(last);
        }
        let counts = self.counts_json(&self.counts);
        let mut conn = self.pool.acquire().await?;
        sync_store::save_progress(&mut conn, self.run.run_id, "prune", None, None, &counts).await?;
        self.run.phase = "prune".into();
        Ok(())
    }

    /// One entitlement state, read and merged in its own transaction; `None` when Stigg's
    /// answer cannot be stored (logged).
    async fn read_state(
        &self,
        item: &sync_store::WorkItem,
    ) -> Result<Option<StateMerge>, SyncError> {
        let resource = (!item.resource_key.is_empty()).then_some(item.resource_key.as_str());
        let (state, read_at) = self
            .api
            .entitlements_state(&item.customer_id, resource)
            .await?;
        let copy = match snapshot::state(&item.customer_id, resource, &state) {
            Ok(copy) => copy,
            Err(reason) => {
                tracing::warn!(customer = %item.customer_id, resource, %reason,
                    "an entitlement state Stigg gave cannot be stored; left out");
                return Ok(None);
            }
        };
        if let snapshot::StateCopy::Gone(reason) = &copy {
            tracing::info!(customer = %item.customer_id, %reason,
                "Stigg no longer has this customer; deleting it");
        }
        let merged = (|| async {
            let mut tx = self.pool.begin().await?;
            store::lock_customers(&mut tx, [item.customer_id.as_str()]).await?;
            let m =
                merge::state(&mut tx, &item.customer_id, item.listed_at, &copy, read_at).await?;
            store::notify_changed(&mut tx, [item.customer_id.as_str()]).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(m)
        })
        .retry(backoff::sync_database())
        .when(is_transient)
        .await?;
        Ok(Some(merged))
    }

    /// Tombstones the customers a complete pass did not list (as `customer.deleted` at the
    /// pass's start), unless that is more than the allowed share of the replica.
    async fn prune(&mut self) -> Result<(), SyncError> {
        let (candidates, live) =
            sync_store::prune_candidates(self.pool, self.run.run_id, self.run.started_at).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let percent = candidates.len() as f64 * 100.0 / live.max(1) as f64;
        if percent > self.opts.max_prune_percent && !self.opts.force {
            return Err(SyncError::TooManyToPrune {
                candidates: candidates.len(),
                live,
                percent,
                max: self.opts.max_prune_percent,
            });
        }
        tracing::info!(
            customers = candidates.len(),
            "pruning customers Stigg no longer lists"
        );
        let at = self.run.started_at;
        for batch in candidates.chunks(PRUNE_BATCH) {
            let pruned = (|| async {
                let mut tx = self.pool.begin().await?;
                store::lock_customers(&mut tx, batch.iter().map(String::as_str)).await?;
                let mut pruned = 0;
                for id in batch {
                    pruned += u64::from(store::delete_customer(&mut tx, id, Some(at)).await?);
                }
                store::notify_changed(&mut tx, batch.iter().map(String::as_str)).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(pruned)
            })
            .retry(backoff::sync_database())
            .when(is_transient)
            .await?;
            self.counts.pruned += pruned;
        }
        Ok(())
    }
}

/// What a listing page adds to the pass's lists: the customers listed (with their versions),
/// or the (customer, resource) pairs its subscriptions name.
#[derive(Clone, Copy)]
enum PageLists<'p> {
    Customers {
        ids: &'p [String],
        versions: &'p [Option<chrono::DateTime<chrono::Utc>>],
    },
    Resources {
        customers: &'p [String],
        resources: &'p [String],
    },
}

/// The cursor of the next page, `None` after the last.
fn next_cursor(
    info: &snapshot::PageInfo,
    current: Option<&str>,
    list: &'static str,
) -> Result<Option<String>, SyncError> {
    if !info.has_next_page {
        return Ok(None);
    }
    match info.end_cursor.as_deref() {
        Some(c) if Some(c) != current => Ok(Some(c.to_owned())),
        _ => Err(SyncError::CursorLoop(list)),
    }
}

/// Progress on a terminal (a bar: customers done / total, rate, ETA) or as log lines.
struct Progress {
    style: ProgressStyle,
    bar: Option<indicatif::ProgressBar>,
    last_log: Option<Instant>,
    /// Customers whose entitlement state was read, and how many there are.
    states: (u64, u64),
}

impl Progress {
    const LOG_EVERY: Duration = Duration::from_secs(5);

    fn new(style: ProgressStyle) -> Self {
        Self {
            style,
            bar: None,
            last_log: None,
            states: (0, 0),
        }
    }

    fn due(&mut self) -> bool {
        let due = self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY);
        if due {
            self.last_log = Some(Instant::now());
        }
        due
    }

    fn listed(&mut self, what: &str, n: u64, total: Option<u64>) {
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        match self.style {
            ProgressStyle::Bar => {
                let bar = self.bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new_spinner();
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                bar.set_message(format!("listing {what}: {n}{of}"));
            }
            ProgressStyle::Log => {
                if self.due() {
                    tracing::info!("sync: listed {n}{of} {what}");
                }
            }
        }
    }

    fn start_states(&mut self, total: u64, done: u64) {
        self.states = (done, total);
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        match self.style {
            ProgressStyle::Bar => {
                let bar = indicatif::ProgressBar::new(total).with_style(
                    indicatif::ProgressStyle::with_template(
                        "entitlements {wide_bar} {pos}/{len} customers  {per_sec}  ETA {eta}",
                    )
                    .expect("valid template"),
                );
                bar.set_position(done);
                bar.reset_eta();
                self.bar = Some(bar);
            }
            ProgressStyle::Log => {
                tracing::info!(
                    "sync: reading entitlement states of {total} customers ({done} done)"
                );
                self.last_log = Some(Instant::now());
            }
        }
    }

    fn states_done(&mut self, customers: u64) {
        self.states.0 += customers;
        if let Some(bar) = &self.bar {
            bar.inc(customers);
        } else if self.due() {
            let (done, total) = self.states;
            tracing::info!("sync: read the entitlement states of {done} of {total} customers");
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
