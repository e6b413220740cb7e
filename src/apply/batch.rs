//! Set-based apply of a batch: one statement per kind of state for the whole batch instead of
//! several per event. The batch claims its deduplication keys at once, loads the rows it
//! touches, folds its events into them in order with the per-event rules ([`super::fold`]),
//! and writes each changed row once. The result is the state applying the events one by one
//! in the same order gives ([`super::apply`]), which `tests/it/set_based.rs` checks on random
//! batches.
//!
//! A customer with a `customer.deleted` in the batch has its events applied one by one (a
//! deletion reaches into every table of the customer, and deletions are rare). The caller holds
//! the lock of every customer in the batch ([`crate::store::lock_customers`]) for the whole
//! transaction, so the rows read here cannot change before they are written.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::fold::{self, as_stored, CustomerRow, UsageRow};
use super::{apply, Outcome};
use crate::events::{Event, ParsedEvent};
use crate::store::batch::{self as sql, Claim, SetRow, SubscriptionRow, UsageKey};
use crate::store::{entitlement_row, resource_key, CustomerGate};
use crate::version::Stored;

/// Applies `events` in order on the caller's transaction; one outcome per event.
pub async fn apply_batch(
    conn: &mut PgConnection,
    events: &[&ParsedEvent],
) -> sqlx::Result<Vec<Outcome>> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];

    // customers being deleted: one by one
    let deleting: HashSet<&str> = events
        .iter()
        .filter_map(|ev| match &ev.event {
            Event::CustomerDeleted(c) => Some(c.id.as_str()),
            _ => None,
        })
        .collect();
    let by_event = |ev: &ParsedEvent| ev.customer_id().is_some_and(|c| deleting.contains(c));
    for (i, ev) in events.iter().enumerate() {
        if by_event(ev) {
            outcomes[i] = Some(apply(conn, ev).await?);
        }
    }

    // the first copy of each key claims it; later copies are duplicates whatever happens
    let mut seen = HashSet::new();
    let mut claims = Vec::new();
    let mut claimed = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        if !seen.insert(ev.dedup_key.as_str()) {
            outcomes[i] = Some(Outcome::Duplicate);
            continue;
        }
        let skipped = matches!(ev.event, Event::Unknown | Event::RecordOnly(_));
        claims.push(Claim {
            key: &ev.dedup_key,
            event_type: &ev.event_type,
            customer_id: ev.customer_id(),
            outcome: if skipped { "skipped" } else { "applied" },
            payload: skipped.then_some(&ev.raw),
        });
        claimed.push(i);
    }
    let fresh: HashSet<String> = sql::claim_all(conn, &claims).await?.into_iter().collect();
    let mut to_fold = Vec::new();
    for i in claimed {
        let ev = events[i];
        outcomes[i] = if !fresh.contains(&ev.dedup_key) {
            Some(Outcome::Duplicate)
        } else if matches!(ev.event, Event::Unknown | Event::RecordOnly(_)) {
            Some(Outcome::Skipped)
        } else {
            to_fold.push(i);
            None
        };
    }

    let mut state = State::load(conn, events, &to_fold).await?;
    let mut stale = Vec::new();
    for &i in &to_fold {
        let changed = state.fold(i, events[i]);
        outcomes[i] = Some(if changed {
            Outcome::Applied
        } else {
            stale.push(events[i].dedup_key.as_str());
            Outcome::Stale
        });
    }
    state.write(conn, events).await?;
    sql::mark_stale(conn, &stale).await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
}

/// The rows a batch touches, as loaded and then as folded, with what changed.
#[derive(Default)]
struct State {
    customers: HashMap<String, Option<CustomerRow>>,
    changed_customers: HashSet<String>,
    subscriptions: HashMap<String, Stored>,
    /// subscription id → index of the event whose copy is final
    final_subscriptions: HashMap<String, usize>,
    sets: HashMap<(String, String), Stored>,
    final_sets: HashMap<(String, String), usize>,
    usage: HashMap<UsageKey, Option<UsageRow>>,
    changed_usage: HashSet<UsageKey>,
}

/// A usage report of an event: key, value, period.
struct Report<'a> {
    resource_key: &'a str,
    feature_id: &'a str,
    value: f64,
    period_start: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
}

fn reports(ev: &ParsedEvent) -> Vec<Report<'_>> {
    match &ev.event {
        Event::Entitlements(set) => set
            .entitlements
            .iter()
            .filter_map(|e| {
                Some(Report {
                    resource_key: resource_key(set.resource_id.as_deref()),
                    feature_id: &e.feature.id,
                    value: e.current_usage?,
                    period_start: e.usage_period_start,
                    period_end: e.period_end(),
                })
            })
            .collect(),
        Event::Measurement(m) => vec![Report {
            resource_key: resource_key(m.resource.as_ref().map(|r| r.id.as_str())),
            feature_id: &m.feature.id,
            value: m.current_usage,
            period_start: m.usage_period_start,
            period_end: m.usage_period_end,
        }],
        _ => Vec::new(),
    }
}

fn set_key(ev: &ParsedEvent) -> Option<(&str, &str)> {
    match &ev.event {
        Event::Entitlements(set) => Some((
            set.customer.id.as_str(),
            resource_key(set.resource_id.as_deref()),
        )),
        _ => None,
    }
}

impl State {
    async fn load(
        conn: &mut PgConnection,
        events: &[&ParsedEvent],
        to_fold: &[usize],
    ) -> sqlx::Result<State> {
        let evs = || to_fold.iter().map(|&i| events[i]);
        let mut customers: Vec<&str> = evs().filter_map(|ev| ev.customer_id()).collect();
        let mut subscriptions: Vec<&str> = evs()
            .filter_map(|ev| match &ev.event {
                Event::Subscription(s) => Some(s.id.as_str()),
                _ => None,
            })
            .collect();
        let mut sets: Vec<(&str, &str)> = evs().filter_map(set_key).collect();
        let mut usage: Vec<(&str, &str, &str)> = evs()
            .flat_map(|ev| {
                let customer = ev.customer_id().unwrap_or("");
                reports(ev)
                    .into_iter()
                    .map(move |r| (customer, r.resource_key, r.feature_id))
            })
            .collect();
        for list in [&mut customers, &mut subscriptions] {
            list.sort_unstable();
            list.dedup();
        }
        sets.sort_unstable();
        sets.dedup();
        usage.sort_unstable();
        usage.dedup();

        let mut stored = sql::customers(conn, &customers).await?;
        let mut state = State {
            customers: customers
                .iter()
                .map(|&id| (id.to_owned(), stored.remove(id)))
                .collect(),
            subscriptions: sql::subscription_versions(conn, &subscriptions).await?,
            sets: sql::set_versions(conn, &sets).await?,
            ..State::default()
        };
        let mut stored_usage = sql::usage(conn, &usage).await?;
        state.usage = usage
            .iter()
            .map(|&(c, r, f)| {
                let key = (c.to_owned(), r.to_owned(), f.to_owned());
                let row = stored_usage.remove(&key);
                (key, row)
            })
            .collect();
        Ok(state)
    }

    /// Folds one fresh event in; `false` when it was stale.
    fn fold(&mut self, i: usize, ev: &ParsedEvent) -> bool {
        // the customer gate compares the time as sent; the guards in SQL see it as stored
        let (customer, sent) = match &ev.event {
            Event::CustomerUpsert(c) => {
                let row = self.customers.get_mut(&c.id).expect("loaded");
                let at = ev.timestamp.map(as_stored);
                let changed = fold::upsert_customer(row, c, at, &ev.raw);
                if changed {
                    self.changed_customers.insert(c.id.clone());
                }
                return changed;
            }
            Event::Subscription(s) => (&s.customer, ev.timestamp),
            Event::Entitlements(set) => (&set.customer, set.version),
            Event::Measurement(m) => (&m.customer, ev.timestamp),
            Event::CustomerDeleted(_) | Event::Unknown | Event::RecordOnly(_) => {
                unreachable!("not folded")
            }
        };
        let row = self.customers.get_mut(&customer.id).expect("loaded");
        let (gate, changed) = fold::ensure(row, customer, sent);
        let at = sent.map(as_stored);
        if changed {
            self.changed_customers.insert(customer.id.clone());
        }
        if gate == CustomerGate::Stale {
            return false;
        }
        let mut applied = false;
        match &ev.event {
            Event::Subscription(s) => {
                let stored = self.subscriptions.entry(s.id.clone()).or_insert(None);
                if fold::replace(stored, at) {
                    self.final_subscriptions.insert(s.id.clone(), i);
                    applied = true;
                }
            }
            Event::Entitlements(_) => {
                let (c, r) = set_key(ev).expect("a set");
                let key = (c.to_owned(), r.to_owned());
                let stored = self.sets.entry(key.clone()).or_insert(None);
                if fold::replace(stored, at) {
                    self.final_sets.insert(key, i);
                    applied = true;
                }
            }
            _ => {}
        }
        for r in reports(ev) {
            let key = (
                customer.id.clone(),
                r.resource_key.to_owned(),
                r.feature_id.to_owned(),
            );
            let row = self.usage.get_mut(&key).expect("loaded");
            if fold::report_usage(row, at, r.value, r.period_start, r.period_end) {
                self.changed_usage.insert(key);
                applied = true;
            }
        }
        applied
    }

    /// Writes every changed row once, customers first (the other tables refer to them).
    async fn write(&self, conn: &mut PgConnection, events: &[&ParsedEvent]) -> sqlx::Result<()> {
        let mut customers: Vec<(&str, &CustomerRow)> = self
            .changed_customers
            .iter()
            .filter_map(|id| Some((id.as_str(), self.customers[id].as_ref()?)))
            .collect();
        customers.sort_unstable_by_key(|(id, _)| *id);
        sql::write_customers(conn, &customers).await?;

        let mut subscriptions: Vec<SubscriptionRow> = self
            .final_subscriptions
            .values()
            .map(|&i| {
                let Event::Subscription(s) = &events[i].event else {
                    unreachable!("a subscription")
                };
                SubscriptionRow {
                    s,
                    version: events[i].timestamp.map(as_stored),
                    raw: &events[i].raw,
                }
            })
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.s.id.cmp(&b.s.id));
        sql::write_subscriptions(conn, &subscriptions).await?;

        let mut sets: Vec<SetRow> = self
            .final_sets
            .iter()
            .map(|((customer_id, resource_key), &i)| {
                let Event::Entitlements(set) = &events[i].event else {
                    unreachable!("a set")
                };
                SetRow {
                    customer_id,
                    resource_key,
                    version: set.version.map(as_stored),
                    entitlements: &set.raw_entitlements,
                    rows: set.entitlements.iter().map(entitlement_row).collect(),
                }
            })
            .collect();
        sets.sort_unstable_by_key(|s| (s.customer_id, s.resource_key));
        sql::write_sets(conn, &sets).await?;

        let mut usage: Vec<(&UsageKey, &UsageRow)> = self
            .changed_usage
            .iter()
            .filter_map(|k| Some((k, self.usage[k].as_ref()?)))
            .collect();
        usage.sort_unstable_by_key(|(k, _)| *k);
        sql::write_usage(conn, &usage).await
    }
}
