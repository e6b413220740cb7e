//! The access cache: each customer's access data ([`CustomerAccess`]) in memory, filled on
//! read, bounded in bytes (`ACCESS_CACHE_MB`), and kept exact by PostgreSQL's
//! `LISTEN/NOTIFY`: every writer of a customer notifies at its commit
//! ([`store::notify_changed`]), and [`listen`] drops the customers it hears.
//!
//! The guarantees, and how each is kept:
//! - **A load never installs a copy older than a notification that arrived during it.** Each
//!   key belongs to a stripe with a generation; a notification bumps it (and drops the key)
//!   under the stripe's lock, and a load installs its copy under the same lock only if the
//!   generation is the one it read before it queried.
//! - **Answers never go back in time for a process.** Loads of a key are serialized (per
//!   stripe), and a load that finds the key already filled uses that copy, so two copies of
//!   one customer are never raced into the cache. A miss kept waiting for its stripe longer
//!   than [`LOAD_WAIT`] reads on its own and installs nothing; once it has its answer it
//!   drops the customer's installed copy and, if the stripe's load is reading the same
//!   customer, stops it from installing (either may be older than that answer).
//! - **Nothing is served from the cache while it may have missed a notification.** When the
//!   listening connection is lost the cache is emptied and bypassed (every read goes to the
//!   database) until listening again; loads begun before that are not installed (an epoch).
//!
//! The decision itself is still computed per request, from the cached data and the clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use moka::notification::RemovalCause;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::{CustomerAccess, StoredAccess};
use crate::graphql::rows::Customer;
use crate::reads::{Read, ReadPool};
use crate::store::{self, resource_key};
use crate::telemetry;

/// The `application_name` of the listening connection.
pub const LISTENER_NAME: &str = "stigg-byos change listener";

/// How many stripes the keys are spread over (a power of two).
const STRIPES: usize = 1024;

/// How often the listening connection is checked with a query, so that a connection that
/// died without closing is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one attempt to connect and `LISTEN` may take (a dead network path would
/// otherwise hold it until TCP gives up).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a miss waits for its stripe's load lock before it reads the database itself,
/// without installing. A customer changed many times a second makes most loads of its stripe
/// uninstallable, and then the stripe's misses would otherwise queue behind each other's
/// reads (so would every miss of a stripe while the database is slow).
const LOAD_WAIT: Duration = Duration::from_millis(20);

/// A cache of customers by id: `None` when unknown or deleted (a miss answered by the
/// database is cached too; the customer's creation notifies like any change).
type Layer<V> = moka::sync::Cache<String, Arc<Option<V>>>;

pub struct AccessCache {
    /// `None` when `ACCESS_CACHE_MB` is 0: every read goes to the database.
    entries: Option<Layer<CustomerAccess>>,
    /// GraphQL's customers by id, with their first page of subscriptions, under the same
    /// invalidation; a quarter of the memory.
    customers: Option<Layer<Customer>>,
    stripes: Box<[Stripe]>,
    /// A notification connection is listening: the cache may be used.
    listening: AtomicBool,
    /// Bumped whenever listening stops or starts: a load begun in another epoch does not
    /// install.
    epoch: AtomicU64,
}

#[derive(Default)]
struct Stripe {
    /// Held while a key of the stripe is loaded: one load per stripe at a time.
    load: tokio::sync::Mutex<()>,
    state: Mutex<StripeState>,
}

#[derive(Default)]
struct StripeState {
    /// Bumped by every notification for a key of the stripe.
    generation: u64,
    /// The key the stripe's load (the holder of `load`) is reading, if any.
    loading: Option<String>,
}

impl AccessCache {
    /// A cache of at most `bytes` (0: off). It is bypassed until [`listen`] listens.
    pub fn new(bytes: u64) -> Arc<Self> {
        let entries = (bytes > 0).then(|| layer(bytes - bytes / 4, CustomerAccess::weight));
        let customers = (bytes > 0).then(|| layer(bytes / 4, customer_weight));
        Arc::new(Self {
            entries,
            customers,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            listening: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// What the decision needs for this customer, resource and feature: from the cache when
    /// it may be used, else (cache off, or not listening) by the one-row query.
    pub async fn access(
        &self,
        reads: &ReadPool,
        customer: &str,
        resource: Option<&str>,
        feature: &str,
    ) -> sqlx::Result<StoredAccess> {
        let Some(entries) = self.in_use(&self.entries) else {
            let key = (customer, resource, feature);
            let read: Read<(&str, Option<&str>, &str), _> =
                |conn, &(c, r, f)| Box::pin(store::load_access(conn, c, r, f));
            return reads.run(&key, read).await;
        };
        let read: Read<str, _> =
            |conn, customer| Box::pin(store::load_customer_access(conn, customer));
        let entry = self
            .get_or_fill(entries, customer, || reads.run(customer, read))
            .await?;
        Ok(match entry.as_ref() {
            Some(c) => c.stored(resource_key(resource), feature),
            None => StoredAccess::default(),
        })
    }

    /// GraphQL's `customer(customerId)` with its first page of subscriptions: from the cache
    /// when it may be used, else by `load` (which reads the database).
    pub async fn customer<E, Load, Loading>(
        &self,
        customer: &str,
        load: Load,
    ) -> Result<Option<Customer>, E>
    where
        Load: FnOnce() -> Loading,
        Loading: std::future::Future<Output = Result<Option<Customer>, E>>,
    {
        let Some(entries) = self.in_use(&self.customers) else {
            return load().await;
        };
        let entry = self.get_or_fill(entries, customer, load).await?;
        Ok(entry.as_ref().clone())
    }

    /// `layer`, when it may be used now (it is on, and changes are being heard).
    fn in_use<'a, V>(&self, layer: &'a Option<Layer<V>>) -> Option<&'a Layer<V>> {
        layer
            .as_ref()
            .filter(|_| self.listening.load(Ordering::SeqCst))
    }

    /// `customer` from `layer`, or loaded by [`Self::fill`].
    async fn get_or_fill<V, E, Load, Loading>(
        &self,
        layer: &Layer<V>,
        customer: &str,
        load: Load,
    ) -> Result<Arc<Option<V>>, E>
    where
        V: Send + Sync + 'static,
        Load: FnOnce() -> Loading,
        Loading: std::future::Future<Output = Result<Option<V>, E>>,
    {
        match layer.get(customer) {
            Some(entry) => {
                telemetry::access_cache("hit");
                Ok(entry)
            }
            None => self.fill(layer, customer, load).await,
        }
    }

    /// Loads `customer` (one load per stripe at a time) and installs it unless a notification
    /// for its stripe, or a change of listening, came in meanwhile. A miss that cannot have
    /// the stripe within [`LOAD_WAIT`] loads on its own, installs nothing, and then drops any
    /// copy of the customer, installed or being loaded, that could be older than its answer.
    async fn fill<V, E, Load, Loading>(
        &self,
        entries: &Layer<V>,
        customer: &str,
        load: Load,
    ) -> Result<Arc<Option<V>>, E>
    where
        V: Send + Sync + 'static,
        Load: FnOnce() -> Loading,
        Loading: std::future::Future<Output = Result<Option<V>, E>>,
    {
        let stripe = self.stripe(customer);
        let Ok(_loading) = tokio::time::timeout(LOAD_WAIT, stripe.load.lock()).await else {
            telemetry::access_cache("miss");
            telemetry::access_cache("not_installed");
            let entry = Arc::new(load().await?);
            // A copy of this customer installed, or being loaded, since this read began may
            // be older than this answer: drop it, or a client could go back in time.
            let mut state = lock(&stripe.state);
            if state.loading.as_deref() == Some(customer) {
                state.generation += 1;
            }
            self.drop_copies(customer);
            return Ok(entry);
        };
        if let Some(entry) = entries.get(customer) {
            telemetry::access_cache("hit");
            return Ok(entry);
        }
        telemetry::access_cache("miss");
        let generation = {
            let mut state = lock(&stripe.state);
            state.loading = Some(customer.to_owned());
            state.generation
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let loaded = load().await;
        let mut current = lock(&stripe.state);
        current.loading = None;
        let entry = Arc::new(loaded?);
        if current.generation == generation
            && self.epoch.load(Ordering::SeqCst) == epoch
            && self.listening.load(Ordering::SeqCst)
        {
            entries.insert(customer.to_owned(), entry.clone());
            // Listening stopped (and perhaps started again, emptying) between the check and
            // the insert: the copy may predate what went unheard.
            if self.epoch.load(Ordering::SeqCst) != epoch {
                entries.invalidate(customer);
            }
        } else {
            telemetry::access_cache("not_installed");
        }
        drop(current);
        Ok(entry)
    }

    /// A notification for `customer`: its copy (if any) is dropped, and a load under way
    /// will not install what it read.
    pub fn invalidate(&self, customer: &str) {
        if self.entries.is_none() {
            return;
        }
        let mut state = lock(&self.stripe(customer).state);
        state.generation += 1;
        self.drop_copies(customer);
        drop(state);
        telemetry::access_cache("invalidated");
    }

    /// Drops `customer` from both layers (the caller holds its stripe's state).
    fn drop_copies(&self, customer: &str) {
        if let Some(entries) = &self.entries {
            entries.invalidate(customer);
        }
        if let Some(customers) = &self.customers {
            customers.invalidate(customer);
        }
    }

    /// Listening stopped: notifications may be missed from now on. Bypass and empty.
    pub fn stopped_listening(&self) {
        self.listening.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.empty();
    }

    fn empty(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
        if let Some(customers) = &self.customers {
            customers.invalidate_all();
        }
    }

    /// Listening (again): every later commit will be heard. Whatever was cached before is
    /// dropped, since commits in between were not heard.
    pub fn started_listening(&self) {
        self.empty();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.listening.store(true, Ordering::SeqCst);
    }

    /// The cache's weighed size in bytes, for `/metrics`.
    pub fn weighed_bytes(&self) -> u64 {
        let access = self.entries.as_ref().map_or(0, |e| {
            e.run_pending_tasks();
            e.weighted_size()
        });
        access
            + self.customers.as_ref().map_or(0, |c| {
                c.run_pending_tasks();
                c.weighted_size()
            })
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    fn stripe(&self, customer: &str) -> &Stripe {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(customer);
        &self.stripes[hash as usize & (STRIPES - 1)]
    }
}

/// A cache of at most `bytes`, each entry weighed by `weight` (plus its key), counting
/// evictions for size.
fn layer<V: Send + Sync + 'static>(bytes: u64, weight: fn(&V) -> u32) -> Layer<V> {
    moka::sync::Cache::builder()
        .max_capacity(bytes)
        .weigher(move |k: &String, v: &Arc<Option<V>>| -> u32 {
            let value = v.as_ref().as_ref().map_or(0, weight);
            value.saturating_add(k.len() as u32 + 64)
        })
        .eviction_listener(|_, _, cause| {
            if matches!(cause, RemovalCause::Size) {
                telemetry::access_cache("evicted");
            }
        })
        .build()
}

/// About how many bytes a cached GraphQL customer takes.
fn customer_weight(c: &Customer) -> u32 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 16);
    let mut bytes = size_of::<Customer>() + c.customer_id.len() + 16;
    bytes += text(&c.name) + text(&c.email) + text(&c.billing_id);
    if let Some(page) = &c.subscriptions {
        for s in &page.rows {
            bytes += size_of_val(s) + 2 * 16 + s.subscription_id.len();
            bytes += s.customer_id.len();
            for t in [
                &s.status,
                &s.plan_id,
                &s.plan_name,
                &s.billing_id,
                &s.resource_id,
            ]
            .into_iter()
            .chain([&s.billing_period])
            {
                bytes += text(t);
            }
        }
    }
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps `cache` exact while it runs: listens on [`store::CHANGES_CHANNEL`], drops each
/// customer it hears, and when the connection is lost (or stops answering its ping)
/// bypasses the cache until listening again. Returns on `shutdown`.
pub async fn listen(
    cache: Arc<AccessCache>,
    options: PgConnectOptions,
    shutdown: CancellationToken,
) {
    if !cache.enabled() {
        return;
    }
    let options = options.application_name(LISTENER_NAME);
    let mut backoff = crate::backoff::serving_connections().build();
    let mut first = true;
    loop {
        let subscribed = tokio::select! {
            s = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&options)) => s,
            () = shutdown.cancelled() => return,
        };
        match subscribed {
            Ok(Ok(mut listener)) => {
                cache.started_listening();
                if !first {
                    telemetry::access_cache_reconnect();
                    info!("listening for changes again; access cache back in use");
                }
                first = false;
                backoff = crate::backoff::serving_connections().build();
                let why = hear(&cache, &mut listener, &shutdown).await;
                cache.stopped_listening();
                match why {
                    None => return, // shutdown
                    Some(e) => warn!(error = %e,
                        "lost the connection listening for changes; access cache bypassed"),
                }
            }
            Ok(Err(e)) => debug!(error = %e, "cannot listen for changes yet"),
            Err(_) => debug!(
                "cannot listen for changes yet: no connection within {}s",
                SUBSCRIBE_TIMEOUT.as_secs()
            ),
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(3));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A new connection (named in pg_stat_activity) listening on the channel. Each attempt has a
/// one-connection pool of its own, so that a lost connection is never waited for or reused.
async fn subscribe(options: &PgConnectOptions) -> sqlx::Result<PgListener> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection must end `hear`, never be replaced behind its back: with an eager
    // reconnect, a ping that cancels `try_recv` mid-reconnect would finish the reconnect
    // itself and the commits in between would go unheard.
    listener.eager_reconnect(false);
    listener.listen(store::CHANGES_CHANNEL).await?;
    Ok(listener)
}

/// Drops what the notifications name until the connection fails (`Some(why)`) or shutdown
/// (`None`).
async fn hear(
    cache: &AccessCache,
    listener: &mut PgListener,
    shutdown: &CancellationToken,
) -> Option<String> {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            heard = listener.try_recv() => match heard {
                Ok(Some(n)) => {
                    let Some((sent_us, customer)) = store::parse_change(n.payload()) else {
                        warn!(payload = n.payload(), "unreadable change notification; emptying the access cache");
                        cache.stopped_listening();
                        cache.started_listening();
                        continue;
                    };
                    cache.invalidate(customer);
                    telemetry::access_cache_notified(seconds_since(sent_us));
                }
                Ok(None) => return Some("connection closed".into()),
                Err(e) => return Some(e.to_string()),
            },
            _ = ping.tick() => {
                let alive = tokio::time::timeout(
                    PING_TIMEOUT,
                    sqlx::query("SELECT 1").execute(&mut *listener),
                )
                .await;
                match alive {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(e.to_string()),
                    Err(_) => return Some("no answer to a ping".into()),
                }
            }
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Seconds from `unix_us` to now (0 when the clocks disagree the other way).
fn seconds_since(unix_us: i64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    ((now - unix_us) as f64 / 1e6).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(has_active: bool) -> CustomerAccess {
        CustomerAccess::new(has_active, Default::default(), Default::default())
    }

    /// Fills `customer` with a copy read at once; it must not wait behind another load.
    async fn fill_now(
        cache: &AccessCache,
        customer: &str,
        has_active: bool,
    ) -> Arc<Option<CustomerAccess>> {
        let entries = cache.entries.as_ref().unwrap();
        let fill = cache.fill(entries, customer, || async move {
            Ok::<_, sqlx::Error>(Some(copy(has_active)))
        });
        tokio::time::timeout(Duration::from_secs(2), fill)
            .await
            .expect("not kept waiting behind the stripe's load")
            .unwrap()
    }

    /// A fill of `customer` whose read returns only when the sender is used: a read taken
    /// before whatever the test does meanwhile.
    fn held_fill<'a>(
        cache: &'a AccessCache,
        customer: &'a str,
        has_active: bool,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        impl std::future::Future<Output = Result<Arc<Option<CustomerAccess>>, sqlx::Error>> + 'a,
    ) {
        let (release, loaded) = tokio::sync::oneshot::channel::<()>();
        let entries = cache.entries.as_ref().unwrap();
        let fill = cache.fill(entries, customer, move || async move {
            loaded.await.unwrap();
            Ok(Some(copy(has_active)))
        });
        (release, fill)
    }

    async fn get(cache: &AccessCache, customer: &str) -> Option<bool> {
        let entries = cache.in_use(&cache.entries).expect("in use");
        entries
            .get(customer)
            .map(|e| e.as_ref().as_ref().expect("live").has_active_subscription)
    }

    #[tokio::test]
    async fn a_load_overtaken_by_a_notification_answers_but_does_not_install() {
        let cache = AccessCache::new(1 << 20);
        cache.started_listening();
        let (release, filling) = held_fill(&cache, "c", false); // read before the change
        let notify = async {
            tokio::task::yield_now().await;
            cache.invalidate("c"); // the change's commit is heard meanwhile
            release.send(()).unwrap();
        };
        let (filled, ()) = tokio::join!(filling, notify);
        assert!(filled.unwrap().is_some(), "the request is still answered");
        assert_eq!(
            get(&cache, "c").await,
            None,
            "the older copy was not installed"
        );
        // a load with nothing overtaking it is installed
        fill_now(&cache, "c", true).await;
        assert_eq!(get(&cache, "c").await, Some(true));
        cache.invalidate("c");
        assert_eq!(get(&cache, "c").await, None);
    }

    #[tokio::test]
    async fn losing_the_listener_bypasses_and_empties_and_loads_begun_before_do_not_install() {
        let cache = AccessCache::new(1 << 20);
        assert!(
            cache.in_use(&cache.entries).is_none(),
            "bypassed until listening"
        );
        cache.started_listening();
        fill_now(&cache, "a", true).await;
        let (release, filling) = held_fill(&cache, "b", true);
        let reconnect = async {
            tokio::task::yield_now().await;
            cache.stopped_listening();
            assert!(
                cache.in_use(&cache.entries).is_none(),
                "bypassed while not listening"
            );
            cache.started_listening();
            release.send(()).unwrap();
        };
        let (filled, ()) = tokio::join!(filling, reconnect);
        filled.unwrap();
        assert_eq!(get(&cache, "a").await, None, "emptied");
        assert_eq!(
            get(&cache, "b").await,
            None,
            "a load from before is not installed"
        );
    }

    #[tokio::test]
    async fn a_miss_kept_waiting_by_its_stripe_reads_alone_and_older_loads_do_not_install() {
        let cache = AccessCache::new(1 << 20);
        cache.started_listening();
        let (release, slow) = held_fill(&cache, "c", false);
        let other = async {
            tokio::task::yield_now().await; // the slow load holds the stripe
            let own = fill_now(&cache, "c", true).await;
            assert_eq!(
                own.as_ref().as_ref().map(|c| c.has_active_subscription),
                Some(true),
                "answered from its own read"
            );
            assert_eq!(get(&cache, "c").await, None, "which is not installed");
            release.send(()).unwrap();
        };
        let (slow, ()) = tokio::join!(slow, other);
        slow.unwrap();
        assert_eq!(
            get(&cache, "c").await,
            None,
            "the load that held the stripe began before that answer: it does not install"
        );
        // with the stripe free, a miss loads and installs as usual
        fill_now(&cache, "c", true).await;
        assert_eq!(get(&cache, "c").await, Some(true));
    }

    #[tokio::test]
    async fn a_miss_for_another_key_of_the_stripe_does_not_stop_its_load_installing() {
        let cache = AccessCache::new(1 << 20);
        cache.started_listening();
        let other_key = (0..100_000)
            .map(|i| format!("k{i}"))
            .find(|k| std::ptr::eq(cache.stripe(k), cache.stripe("c")))
            .expect("a key of the same stripe");
        let (release, slow) = held_fill(&cache, "c", false);
        let other = async {
            tokio::task::yield_now().await; // the slow load holds the stripe
            fill_now(&cache, &other_key, true).await;
            release.send(()).unwrap();
        };
        let (slow, ()) = tokio::join!(slow, other);
        slow.unwrap();
        assert_eq!(get(&cache, "c").await, Some(false), "c's load installs");
        assert_eq!(
            get(&cache, &other_key).await,
            None,
            "the other read did not"
        );
    }

    #[tokio::test]
    async fn a_cache_of_zero_bytes_is_off() {
        let cache = AccessCache::new(0);
        cache.started_listening();
        assert!(!cache.enabled());
        assert!(cache.in_use(&cache.entries).is_none());
    }
}
