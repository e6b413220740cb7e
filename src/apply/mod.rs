//! Event → state change. Each event claims its deduplication key and writes its state on the
//! caller's transaction, so both commit together or not at all. Version guards live in the
//! store's SQL (rules in [`crate::version`]). [`batch`] applies a whole batch set-based with
//! the same rules held in memory ([`fold`]). The caller holds the customers' locks
//! ([`crate::store::lock_customers`]).

pub mod batch;
pub mod fold;

use serde::Serialize;
use sqlx::PgConnection;

use crate::events::{Event, ParsedEvent};
use crate::store::{self, CustomerGate, UsageReport};

/// What processing did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Changed state.
    Applied,
    /// Its deduplication key was processed before: nothing changed.
    Duplicate,
    /// Older than the stored version: nothing changed, recorded.
    Stale,
    /// Unknown or record-only type: acknowledged and recorded.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Skipped => "skipped",
        }
    }
}

/// Claims the event and applies it, on the caller's transaction.
pub async fn apply(conn: &mut PgConnection, ev: &ParsedEvent) -> sqlx::Result<Outcome> {
    let customer = ev.customer_id();
    if matches!(ev.event, Event::Unknown | Event::RecordOnly(_)) {
        let fresh = store::claim(
            conn,
            &ev.dedup_key,
            &ev.event_type,
            customer,
            "skipped",
            Some(&ev.raw),
        )
        .await?;
        return Ok(if fresh {
            Outcome::Skipped
        } else {
            Outcome::Duplicate
        });
    }
    if !store::claim(
        conn,
        &ev.dedup_key,
        &ev.event_type,
        customer,
        "applied",
        None,
    )
    .await?
    {
        return Ok(Outcome::Duplicate);
    }
    let changed = apply_state(conn, ev).await?;
    if changed {
        Ok(Outcome::Applied)
    } else {
        store::set_outcome(conn, &ev.dedup_key, "stale").await?;
        Ok(Outcome::Stale)
    }
}

/// The state change itself; `false` when the event was stale.
async fn apply_state(conn: &mut PgConnection, ev: &ParsedEvent) -> sqlx::Result<bool> {
    let at = ev.timestamp;
    match &ev.event {
        Event::CustomerUpsert(c) => store::upsert_customer(conn, c, at, &ev.raw).await,
        Event::CustomerDeleted(c) => store::delete_customer(conn, &c.id, at).await,
        Event::Subscription(s) => {
            if store::ensure_customer(conn, &s.customer, at).await? == CustomerGate::Stale {
                return Ok(false);
            }
            store::upsert_subscription(conn, s, at, &ev.raw).await
        }
        Event::Entitlements(set) => {
            if store::ensure_customer(conn, &set.customer, set.version).await?
                == CustomerGate::Stale
            {
                return Ok(false);
            }
            let replaced = store::replace_entitlements(conn, set).await?;
            // usage carried in the set is a usage report at the set's version (§4, §7.9)
            let reports: Vec<UsageReport> = set
                .entitlements
                .iter()
                .filter_map(|e| {
                    Some(UsageReport {
                        feature_id: &e.feature.id,
                        current_usage: e.current_usage?,
                        period_start: e.usage_period_start,
                        period_end: e.period_end(),
                    })
                })
                .collect();
            let usage = store::report_usage(
                conn,
                &set.customer.id,
                set.resource_id.as_deref(),
                set.version,
                &reports,
            )
            .await?;
            Ok(replaced || usage > 0)
        }
        Event::Measurement(m) => {
            if store::ensure_customer(conn, &m.customer, at).await? == CustomerGate::Stale {
                return Ok(false);
            }
            let report = UsageReport {
                feature_id: &m.feature.id,
                current_usage: m.current_usage,
                period_start: m.usage_period_start,
                period_end: m.usage_period_end,
            };
            let changed = store::report_usage(
                conn,
                &m.customer.id,
                m.resource.as_ref().map(|r| r.id.as_str()),
                at,
                std::slice::from_ref(&report),
            )
            .await?;
            Ok(changed > 0)
        }
        Event::Unknown | Event::RecordOnly(_) => Ok(false),
    }
}
