//! Event times: RFC 3339 with any fraction and offset, or epoch milliseconds (§7.17).

use chrono::{DateTime, TimeZone, Utc};
use serde::{de, Deserialize, Deserializer};

/// How every answer writes a time: RFC 3339 in UTC, to the millisecond, as Stigg's events
/// do (`2026-12-01T09:05:00.000Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses one event time. Accepts an RFC 3339 string, an epoch-milliseconds number, or a
/// string of digits holding epoch milliseconds.
pub fn parse_time(value: &serde_json::Value) -> Result<Option<DateTime<Utc>>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => parse_time_str(s).map(Some),
        serde_json::Value::Number(n) => {
            let ms = n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .ok_or_else(|| format!("time {n} is out of range"))?;
            from_millis(ms).map(Some)
        }
        other => Err(format!("expected a time, got {}", kind(other))),
    }
}

/// Times outside years 1–9999 are refused: PostgreSQL and chrono disagree beyond them.
fn in_range(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    use chrono::Datelike;
    if (1..=9999).contains(&t.year()) {
        Ok(t)
    } else {
        Err(format!("time {t} is outside years 1-9999"))
    }
}

fn parse_time_str(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = t
            .parse()
            .map_err(|_| format!("time {t:?} is out of range"))?;
        return from_millis(ms);
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("invalid time {t:?}: {e}"))
        .and_then(in_range)
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| format!("time {ms} is out of range"))
        .and_then(in_range)
}

pub(crate) fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// serde adapter for `Option<DateTime<Utc>>` fields holding event times.
pub fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    parse_time(&v).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_rfc3339_with_any_fraction_and_offset() {
        let a = parse_time(&json!("2026-11-02T10:00:00Z")).unwrap().unwrap();
        let b = parse_time(&json!("2026-11-02T10:00:00.000000Z"))
            .unwrap()
            .unwrap();
        let c = parse_time(&json!("2026-11-02T12:00:00+02:00"))
            .unwrap()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = parse_time(&json!("2026-11-02T10:00:00.123456789Z"))
            .unwrap()
            .unwrap();
        assert!(d > a);
    }

    #[test]
    fn accepts_epoch_millis_as_number_or_digits() {
        let a = parse_time(&json!(1_793_613_600_000_i64)).unwrap().unwrap();
        let b = parse_time(&json!("1793613600000")).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.timestamp_millis(), 1_793_613_600_000);
    }

    #[test]
    fn null_is_no_time_and_garbage_is_an_error() {
        assert_eq!(parse_time(&json!(null)).unwrap(), None);
        assert!(parse_time(&json!("yesterday")).is_err());
        assert!(parse_time(&json!(true)).is_err());
        assert!(parse_time(&json!({})).is_err());
        assert!(parse_time(&json!("10000-01-01T00:00:00Z")).is_err());
        assert!(parse_time(&json!(-100_000_000_000_000_i64)).is_err());
        assert!(parse_time(&json!(i64::MAX)).is_err());
    }
}
