//! The scalars PostGraphile names: `Datetime` (ISO 8601, written as PostGraphile writes a
//! `timestamptz`) and `Cursor` (an opaque string). `JSON` is async-graphql's own.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{DateTime, NaiveDateTime, Utc};

/// A point in time as described by the [ISO 8601](https://en.wikipedia.org/wiki/ISO_8601)
/// standard. May or may not include a timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datetime(pub DateTime<Utc>);

#[Scalar(name = "Datetime")]
impl ScalarType for Datetime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => parse_datetime(s)
                .map(Datetime)
                .ok_or_else(|| InputValueError::custom(format!("invalid Datetime: {s:?}"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(format_datetime(self.0))
    }
}

/// `2026-10-01T09:05:00.000000+00:00`, as PostgreSQL (and so PostGraphile) writes it.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// RFC 3339 with any offset and fraction, or a date-time without offset (taken as UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// A location in a connection that can be used for resuming pagination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub String);

#[Scalar(name = "Cursor")]
impl ScalarType for Cursor {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(Cursor(s)),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what PostGraphile's cursors are made of).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "[\"primary_key_asc\",[\"c-1\"]]",
        ] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{e}");
        }
        assert_eq!(base64_encode(b"[\"natural\",1]"), "WyJuYXR1cmFsIiwxXQ==");
        assert!(base64_decode("not*base64").is_none());
    }

    #[test]
    fn datetimes_read_and_write_like_postgraphile() {
        let t = parse_datetime("2026-10-01T11:05:00.5+02:00").unwrap();
        assert_eq!(format_datetime(t), "2026-10-01T09:05:00.500000+00:00");
        assert_eq!(
            parse_datetime("2026-10-01T09:05:00"),
            parse_datetime("2026-10-01T09:05:00Z")
        );
        assert!(parse_datetime("yesterday").is_none());
    }
}
