//! The rules of the per-event store functions (`store::ensure_customer`,
//! `store::upsert_customer`, the version guards of `store::subscriptions`), as pure functions
//! over rows held in memory. A batch loads the rows it touches, folds its events into them in
//! order with these functions, and writes each changed row once ([`super::batch`]). The
//! property test in `tests/it/set_based.rs` holds the two paths to the same final state.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;

use crate::events::{Customer, EmbeddedCustomer};
use crate::store::{copy_is_newer, embedded_copy, CustomerGate};
use crate::version::{self, Stored};

/// A time as PostgreSQL stores it when sqlx binds it: whole microseconds since 2000-01-01,
/// truncated toward zero. Comparisons in memory must see what the SQL guards see.
pub fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    let epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time");
    match (t - epoch).num_microseconds() {
        Some(us) => epoch + TimeDelta::microseconds(us),
        None => t,
    }
}

/// A `customers` row, as the fold needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerRow {
    pub name: Option<String>,
    pub email: Option<String>,
    pub billing_id: Option<String>,
    pub metadata: Option<Value>,
    pub raw: Option<Value>,
    pub version: Option<DateTime<Utc>>,
    pub is_deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub embedded: Option<Value>,
    pub embedded_at: Option<DateTime<Utc>>,
}

/// `store::ensure_customer` in memory. `at` is the event's own time: like the store function,
/// this compares it as sent and records it [`as_stored`]. Returns the gate and whether the row
/// changed.
pub fn ensure(
    row: &mut Option<CustomerRow>,
    c: &EmbeddedCustomer,
    at: Option<DateTime<Utc>>,
) -> (CustomerGate, bool) {
    let copy = embedded_copy(c);
    let recorded = at.map(as_stored);
    let Some(r) = row else {
        *row = Some(CustomerRow {
            name: c.name.clone(),
            email: c.email.clone(),
            billing_id: c.billing_id.clone(),
            embedded: Some(copy),
            embedded_at: recorded,
            ..CustomerRow::default()
        });
        return (CustomerGate::Live, true);
    };
    if let Some(deleted_at) = r.deleted_at {
        if at.is_none_or(|t| t <= deleted_at) {
            return (CustomerGate::Stale, false);
        }
    }
    if r.is_deleted {
        // newer than the deletion: revived as a placeholder (§7.6)
        *r = CustomerRow {
            name: c.name.clone(),
            email: c.email.clone(),
            billing_id: c.billing_id.clone(),
            embedded: Some(copy),
            embedded_at: recorded,
            deleted_at: r.deleted_at,
            ..CustomerRow::default()
        };
        return (CustomerGate::Live, true);
    }
    if !copy_is_newer(r.embedded.as_ref(), r.embedded_at, &copy, at) {
        return (CustomerGate::Live, false);
    }
    if r.raw.is_none() {
        // a placeholder shows the newest copy; a customer.* row keeps its own
        r.name = c.name.clone();
        r.email = c.email.clone();
        r.billing_id = c.billing_id.clone();
    }
    r.embedded = Some(copy);
    r.embedded_at = recorded;
    (CustomerGate::Live, true)
}

/// `store::upsert_customer` in memory: `true` when it changed the row. `at` is already
/// [`as_stored`].
pub fn upsert_customer(
    row: &mut Option<CustomerRow>,
    c: &Customer,
    at: Option<DateTime<Utc>>,
    raw: &Value,
) -> bool {
    let applies = match (&*row, at) {
        (None, _) => true,
        (Some(r), None) => r.raw.is_none() && r.deleted_at.is_none(),
        (Some(r), Some(t)) => r.version.is_none_or(|v| t > v) && r.deleted_at.is_none_or(|d| t > d),
    };
    if !applies {
        return false;
    }
    let kept = row.take().unwrap_or_default();
    *row = Some(CustomerRow {
        name: c.name.clone(),
        email: c.email.clone(),
        billing_id: c.billing_id.clone(),
        metadata: c.metadata.clone(),
        raw: Some(raw.clone()),
        version: at,
        is_deleted: false,
        ..kept
    });
    true
}

/// A `usage` row: version, value and period.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub version: Option<DateTime<Utc>>,
    pub current_usage: f64,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

/// `store::report_usage` for one report, in memory: `true` when it changed the row. A new
/// report's period replaces the stored one only where it has one.
pub fn report_usage(
    row: &mut Option<UsageRow>,
    at: Option<DateTime<Utc>>,
    value: f64,
    period_start: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
) -> bool {
    let stored = row.as_ref().map(|r| (r.version, r.current_usage));
    if !version::usage_supersedes(stored, at, value) {
        return false;
    }
    let (old_start, old_end) = row
        .as_ref()
        .map_or((None, None), |r| (r.period_start, r.period_end));
    *row = Some(UsageRow {
        version: at,
        current_usage: value,
        period_start: period_start.or(old_start),
        period_end: period_end.or(old_end),
    });
    true
}

/// The guard of subscriptions and entitlement sets: `true` when an event at `at` replaces
/// what is stored, and then records it.
pub fn replace(stored: &mut Stored, at: Option<DateTime<Utc>>) -> bool {
    if version::supersedes(*stored, at) {
        *stored = Some(at);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_opt(s, 0).unwrap())
    }

    fn embedded(name: &str) -> EmbeddedCustomer {
        EmbeddedCustomer {
            id: "c".into(),
            name: Some(name.into()),
            email: None,
            billing_id: None,
        }
    }

    fn customer(name: &str) -> Customer {
        serde_json::from_value(serde_json::json!({ "id": "c", "name": name })).unwrap()
    }

    #[test]
    fn stored_times_are_truncated_to_microseconds() {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(as_stored(t).timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn a_placeholder_follows_newer_copies_until_the_customer_itself_arrives() {
        let mut row = None;
        assert_eq!(
            ensure(&mut row, &embedded("a"), t(5)),
            (CustomerGate::Live, true)
        );
        assert_eq!(
            ensure(&mut row, &embedded("b"), t(4)),
            (CustomerGate::Live, false)
        );
        assert_eq!(
            ensure(&mut row, &embedded("b"), t(6)),
            (CustomerGate::Live, true)
        );
        assert_eq!(row.as_ref().unwrap().name.as_deref(), Some("b"));
        assert!(upsert_customer(
            &mut row,
            &customer("real"),
            t(1),
            &Value::Null
        ));
        assert_eq!(
            ensure(&mut row, &embedded("c"), t(9)),
            (CustomerGate::Live, true)
        );
        let r = row.unwrap();
        assert_eq!(r.name.as_deref(), Some("real"));
        assert_eq!(r.embedded_at, t(9));
    }

    #[test]
    fn a_tombstone_stops_older_state_and_revives_for_newer() {
        let mut row = Some(CustomerRow {
            is_deleted: true,
            deleted_at: t(10),
            version: t(10),
            ..CustomerRow::default()
        });
        assert_eq!(
            ensure(&mut row, &embedded("a"), t(10)),
            (CustomerGate::Stale, false)
        );
        assert_eq!(
            ensure(&mut row, &embedded("a"), None),
            (CustomerGate::Stale, false)
        );
        assert!(!upsert_customer(
            &mut row,
            &customer("x"),
            t(9),
            &Value::Null
        ));
        assert_eq!(
            ensure(&mut row, &embedded("a"), t(11)),
            (CustomerGate::Live, true)
        );
        let r = row.unwrap();
        assert!(!r.is_deleted);
        assert_eq!((r.version, r.deleted_at), (None, t(10)));
    }

    #[test]
    fn usage_keeps_the_stored_period_where_a_report_has_none() {
        let mut row = None;
        assert!(report_usage(&mut row, t(1), 5.0, t(100), None));
        assert!(!report_usage(&mut row, t(1), 4.0, None, None));
        assert!(report_usage(&mut row, t(1), 6.0, None, t(200)));
        let r = row.unwrap();
        assert_eq!(
            (r.current_usage, r.period_start, r.period_end),
            (6.0, t(100), t(200))
        );
    }
}
