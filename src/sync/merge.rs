//! Merging snapshot copies into the replica through the store functions events use, with
//! their version guards (STIGG-API.md §4), and telling apart what the copy changed, what the
//! replica already held, and what lost to newer state in the replica. Every function runs on
//! the caller's transaction.

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use sqlx::PgConnection;

use super::snapshot::{CustomerCopy, StateCopy, SubscriptionCopy};
use super::{Counts, Kind};
use crate::apply::fold::as_stored;
use crate::events::Subscription;
use crate::store::sync::{self as sync_store, StoredSubscription};
use crate::store::{self, CustomerGate, UsageReport};
use crate::version;

/// What merging one copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The replica changed.
    Changed,
    /// The replica already held this.
    Unchanged,
    /// The replica holds something newer and different: the copy changed nothing.
    Older,
}

impl Merge {
    /// Several merges of one copy: any change is a change; else any loss is a loss.
    fn and(self, other: Merge) -> Merge {
        use Merge::*;
        match (self, other) {
            (Changed, _) | (_, Changed) => Changed,
            (Older, _) | (_, Older) => Older,
            _ => Unchanged,
        }
    }
}

/// Stored times have microseconds; a copy's may have more. Compared as stored.
fn micros(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(as_stored)
}

/// A copy from a listing page: how it merges, and which count of the pass it adds to.
pub trait Listed: Sync {
    /// The listing's name, for progress.
    const LIST: &'static str;
    /// The customer whose state the copy writes (its lock is taken for the page).
    fn customer_id(&self) -> &str;
    fn merge<'c>(&'c self, conn: &'c mut PgConnection) -> BoxFuture<'c, sqlx::Result<Merge>>;
    fn kind(counts: &mut Counts) -> &mut Kind;
}

impl Listed for CustomerCopy {
    const LIST: &'static str = "customers";

    fn customer_id(&self) -> &str {
        &self.customer.id
    }

    fn merge<'c>(&'c self, conn: &'c mut PgConnection) -> BoxFuture<'c, sqlx::Result<Merge>> {
        Box::pin(customer(conn, self))
    }

    fn kind(counts: &mut Counts) -> &mut Kind {
        &mut counts.customers
    }
}

impl Listed for SubscriptionCopy {
    const LIST: &'static str = "subscriptions";

    fn customer_id(&self) -> &str {
        &self.subscription.customer.id
    }

    fn merge<'c>(&'c self, conn: &'c mut PgConnection) -> BoxFuture<'c, sqlx::Result<Merge>> {
        Box::pin(subscription(conn, self))
    }

    fn kind(counts: &mut Counts) -> &mut Kind {
        &mut counts.subscriptions
    }
}

/// A customer, at its `updatedAt`, as a `customer.updated` would apply.
pub async fn customer(conn: &mut PgConnection, copy: &CustomerCopy) -> sqlx::Result<Merge> {
    let c = &copy.customer;
    if store::upsert_customer(conn, c, copy.at, &copy.raw).await? {
        return Ok(Merge::Changed);
    }
    let same = sync_store::stored_customer(conn, &c.id)
        .await?
        .is_some_and(|s| {
            !s.is_deleted
                && (s.version == micros(copy.at)
                    || (s.name, s.email, s.billing_id)
                        == (c.name.clone(), c.email.clone(), c.billing_id.clone()))
        });
    Ok(if same { Merge::Unchanged } else { Merge::Older })
}

fn listed_fields(s: &Subscription) -> StoredSubscription {
    let plan = s.plan.clone().unwrap_or_default();
    StoredSubscription {
        customer_id: s.customer.id.clone(),
        status: s.status.clone(),
        plan_id: plan.id,
        plan_name: plan.name,
        billing_id: s.billing_id.clone(),
        resource_id: s.resource.as_ref().map(|r| r.id.clone()),
        start_date: micros(s.start_date),
        end_date: micros(s.end_date),
        cancellation_date: micros(s.cancellation_date),
        trial_end_date: micros(s.trial_end_date),
    }
}

/// A subscription, at the time it was read. One whose listed fields the replica already
/// holds is left alone (a subscription has no version of its own, so a second pass over the
/// same data changes nothing).
pub async fn subscription(conn: &mut PgConnection, copy: &SubscriptionCopy) -> sqlx::Result<Merge> {
    let s = &copy.subscription;
    let stored = sync_store::stored_subscription(conn, &s.id).await?;
    if stored.is_some_and(|stored| stored == listed_fields(s)) {
        return Ok(Merge::Unchanged);
    }
    let (gate, _) = sync_store::customer_gate(conn, &s.customer.id, copy.at).await?;
    if gate == CustomerGate::Stale {
        return Ok(Merge::Older);
    }
    Ok(
        if store::upsert_subscription(conn, s, copy.at, &copy.raw).await? {
            Merge::Changed
        } else {
            Merge::Older
        },
    )
}

/// What an entitlement state did to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMerge {
    /// The set and its usage.
    Set(Merge),
    /// The Edge said the customer is gone: `true` when that deleted it.
    Gone(bool),
}

/// An entitlement state of (customer, resource) read at `read_at`. A gone customer is deleted
/// as by a `customer.deleted` at the read time, or just after the version the listing gave
/// it if our clock is behind (it existed then, and no longer did when read).
pub async fn state(
    conn: &mut PgConnection,
    customer_id: &str,
    listed_at: Option<DateTime<Utc>>,
    copy: &StateCopy,
    read_at: DateTime<Utc>,
) -> sqlx::Result<StateMerge> {
    let (set, usage) = match copy {
        StateCopy::Gone(_) => {
            let after_listing = listed_at.map(|t| t + TimeDelta::milliseconds(1));
            let at = after_listing.map_or(read_at, |t| t.max(read_at));
            let deleted = store::delete_customer(conn, customer_id, Some(at)).await?;
            return Ok(StateMerge::Gone(deleted));
        }
        StateCopy::NoResource => return Ok(StateMerge::Set(Merge::Unchanged)),
        StateCopy::Set { set, usage } => (set, usage),
    };
    // Read first: a copy the version guards would refuse is not written at all, so that a
    // second pass over unchanged data takes no lock and writes nothing.
    let key = store::resource_key(set.resource_id.as_deref());
    let before = sync_store::stored_set(conn, customer_id, key).await?;
    let stored_usage = sync_store::stored_usage(conn, customer_id, key).await?;
    let set_wins = version::supersedes(before.as_ref().map(|b| b.0), set.version);
    let usage_wins: Vec<bool> = usage
        .iter()
        .map(|u| {
            let stored = stored_usage.get(&u.feature_id).copied();
            version::usage_supersedes(stored, u.at, u.current_usage)
        })
        .collect();
    let (gate, deleted_at) = if set_wins || usage_wins.contains(&true) {
        sync_store::customer_gate(conn, customer_id, set.version).await?
    } else {
        (CustomerGate::Live, None)
    };
    let replaced =
        set_wins && gate == CustomerGate::Live && store::replace_entitlements(conn, set).await?;
    let mut merge = if replaced {
        Merge::Changed
    } else if before
        .is_some_and(|(v, list)| v == micros(set.version) || list == set.raw_entitlements)
    {
        Merge::Unchanged
    } else {
        Merge::Older
    };
    for (u, wins) in usage.iter().zip(usage_wins) {
        let live = deleted_at.is_none_or(|d| u.at.is_some_and(|t| t > d));
        let report = UsageReport {
            feature_id: &u.feature_id,
            current_usage: u.current_usage,
            period_start: u.period_start,
            period_end: u.period_end,
        };
        let changed = wins
            && live
            && store::report_usage(
                conn,
                customer_id,
                set.resource_id.as_deref(),
                u.at,
                std::slice::from_ref(&report),
            )
            .await?
                > 0;
        let m = if changed {
            Merge::Changed
        } else if stored_usage.get(&u.feature_id) == Some(&(micros(u.at), u.current_usage)) {
            Merge::Unchanged
        } else {
            Merge::Older
        };
        merge = merge.and(m);
    }
    Ok(StateMerge::Set(merge))
}

#[cfg(test)]
mod tests {
    use super::Merge::*;

    #[test]
    fn a_change_anywhere_is_a_change_and_a_loss_outranks_unchanged() {
        assert_eq!(Unchanged.and(Unchanged), Unchanged);
        assert_eq!(Unchanged.and(Older), Older);
        assert_eq!(Older.and(Changed), Changed);
        assert_eq!(Changed.and(Unchanged), Changed);
    }
}
