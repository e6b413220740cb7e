//! The ordering rules of STIGG-EVENTS §4 as pure functions. The store's SQL guards implement
//! the same rules in the database (one statement, no read-then-write race); the integration
//! tests replay shuffled streams and compare the database against these functions.

use chrono::{DateTime, Utc};

/// What is stored for a key: `None` when the key has never been seen, else its version
/// (which may itself be unknown when the first event had no time).
pub type Stored = Option<Option<DateTime<Utc>>>;

/// Last writer wins by the event's own time; an event without a time applies only to a key
/// never seen; an equal time is not newer.
pub fn supersedes(stored: Stored, incoming: Option<DateTime<Utc>>) -> bool {
    match (stored, incoming) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(None), Some(_)) => true,
        (Some(Some(v)), Some(t)) => t > v,
    }
}

/// Usage: as [`supersedes`], and on equal times the higher value wins (§7.10).
pub fn usage_supersedes(
    stored: Option<(Option<DateTime<Utc>>, f64)>,
    incoming_at: Option<DateTime<Utc>>,
    incoming_value: f64,
) -> bool {
    match (stored, incoming_at) {
        (Some((Some(v), value)), Some(t)) if t == v => incoming_value > value,
        (stored, t) => supersedes(stored.map(|(v, _)| v), t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    #[test]
    fn rules() {
        assert!(supersedes(None, None));
        assert!(supersedes(None, Some(t(1))));
        assert!(!supersedes(Some(None), None));
        assert!(supersedes(Some(None), Some(t(1))));
        assert!(supersedes(Some(Some(t(1))), Some(t(2))));
        assert!(!supersedes(Some(Some(t(2))), Some(t(2))));
        assert!(!supersedes(Some(Some(t(2))), Some(t(1))));
        assert!(!supersedes(Some(Some(t(2))), None));
    }

    #[test]
    fn usage_rules() {
        assert!(usage_supersedes(Some((Some(t(5)), 10.0)), Some(t(5)), 11.0));
        assert!(!usage_supersedes(
            Some((Some(t(5)), 10.0)),
            Some(t(5)),
            10.0
        ));
        assert!(!usage_supersedes(Some((Some(t(5)), 10.0)), Some(t(5)), 9.0));
        // a newer, lower value wins (a FLUCTUATING meter goes down)
        assert!(usage_supersedes(Some((Some(t(5)), 10.0)), Some(t(6)), 1.0));
        assert!(!usage_supersedes(
            Some((Some(t(5)), 10.0)),
            Some(t(4)),
            99.0
        ));
        assert!(!usage_supersedes(Some((None, 10.0)), None, 99.0));
    }

    /// Folding events in any order ends at the same state: the newest time, ties to the
    /// highest value. (No-time events are excluded: they depend on arrival by design.)
    fn fold(events: &[(i64, u32)]) -> Option<(Option<DateTime<Utc>>, f64)> {
        let mut state = None;
        for &(at, value) in events {
            if usage_supersedes(state, Some(t(at)), f64::from(value)) {
                state = Some((Some(t(at)), f64::from(value)));
            }
        }
        state
    }

    proptest! {
        #[test]
        fn usage_order_does_not_matter(
            mut events in prop::collection::vec((0i64..20, 0u32..50), 1..30),
            seed in any::<u64>(),
        ) {
            let expected = fold(&events);
            // a deterministic shuffle
            let mut s = seed;
            for i in (1..events.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                events.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(fold(&events), expected);
            let (at, value) = expected.unwrap();
            let newest = events.iter().map(|e| e.0).max().unwrap();
            let best = events.iter().filter(|e| e.0 == newest).map(|e| e.1).max().unwrap();
            prop_assert_eq!(at, Some(t(newest)));
            prop_assert_eq!(value, f64::from(best));
        }

        #[test]
        fn keys_end_at_their_newest_version(
            mut times in prop::collection::vec(0i64..1000, 1..30),
        ) {
            let mut state: Stored = None;
            times.reverse();
            for &at in &times {
                if supersedes(state, Some(t(at))) {
                    state = Some(Some(t(at)));
                }
            }
            prop_assert_eq!(state, Some(Some(t(*times.iter().max().unwrap()))));
        }
    }
}
