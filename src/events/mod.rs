//! The Stigg event model: every message body is parsed here, once, into a typed [`Event`].
//!
//! Parsing decides what is permanent: a body that is not JSON, not an object, has no `type`,
//! or is a known type with wrongly typed fields fails with a [`ParseError`] and is
//! dead-lettered (§7.1). A well-formed event of an unknown type parses to [`Event::Unknown`].
//! Nothing here touches the database.

mod time;

pub use time::{format_time, opt_time, parse_time};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A parsed message: the envelope fields every event has, and the typed payload.
#[derive(Debug, Clone)]
pub struct ParsedEvent {
    /// The event `type` as sent.
    pub event_type: String,
    /// `messageId`, else `eventId`, else `sha256:<hex of the body>`: the deduplication key.
    pub dedup_key: String,
    /// `messageId` as sent, if any.
    pub message_id: Option<String>,
    pub trace_id: Option<String>,
    /// The event's own time (`timestamp`), if any.
    pub timestamp: Option<DateTime<Utc>>,
    pub event: Event,
    /// The event JSON (unwrapped from any SNS envelope), kept for audit and replay.
    pub raw: Value,
}

impl ParsedEvent {
    /// The event's own time: `timestamp`, else (a set) `entitlementsUpdatedAt`.
    pub fn event_time(&self) -> Option<DateTime<Utc>> {
        match &self.event {
            Event::Entitlements(set) => self.timestamp.or(set.version),
            _ => self.timestamp,
        }
    }

    /// The customer this event is about, for logs and the inbox.
    pub fn customer_id(&self) -> Option<&str> {
        match &self.event {
            Event::CustomerUpsert(c) | Event::CustomerDeleted(c) => Some(&c.id),
            Event::Subscription(s) => Some(&s.customer.id),
            Event::Entitlements(e) => Some(&e.customer.id),
            Event::Measurement(m) => Some(&m.customer.id),
            Event::RecordOnly(r) => r.customer.as_ref().map(|c| c.id.as_str()),
            Event::Unknown => None,
        }
    }
}

/// What an event does to the replica.
#[derive(Debug, Clone)]
pub enum Event {
    /// `customer.created`, `customer.updated`
    CustomerUpsert(Customer),
    /// `customer.deleted`
    CustomerDeleted(Customer),
    /// `subscription.created/.updated/.canceled/.expired/.trial_*`
    Subscription(Subscription),
    /// `entitlements.updated`
    Entitlements(EntitlementSet),
    /// `measurement.reported`
    Measurement(Measurement),
    /// Known types that are recorded but change no state (§3, §7.9).
    RecordOnly(RecordOnly),
    /// A well-formed event of a type we do not know: recorded as skipped.
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub billing_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// The `customer{}` copy embedded in other events (§7.4, §7.5).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedCustomer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub billing_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceRef {
    pub id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlanRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub customer: EmbeddedCustomer,
    #[serde(default)]
    pub plan: Option<PlanRef>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub billing_id: Option<String>,
    #[serde(default)]
    pub billing_period: Option<String>,
    #[serde(default, deserialize_with = "opt_time")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub trial_end_date: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub cancellation_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resource: Option<ResourceRef>,
    #[serde(default)]
    pub addons: Option<Vec<Value>>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureRef {
    pub id: String,
    #[serde(default)]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub meter_type: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditBalance {
    #[serde(default)]
    pub remaining_balance: Option<f64>,
}

/// One element of `entitlements[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    pub feature: FeatureRef,
    #[serde(default)]
    pub usage_limit: Option<f64>,
    #[serde(default)]
    pub has_unlimited_usage: Option<bool>,
    #[serde(default)]
    pub has_soft_limit: Option<bool>,
    #[serde(default)]
    pub current_usage: Option<f64>,
    #[serde(default, deserialize_with = "opt_time")]
    pub usage_period_anchor: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub usage_period_start: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub usage_period_end: Option<DateTime<Utc>>,
    /// Older payloads: the period end.
    #[serde(default, deserialize_with = "opt_time")]
    pub next_reset_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reset_period: Option<String>,
    #[serde(default)]
    pub enum_values: Option<Vec<String>>,
    #[serde(default)]
    pub credit_balance: Option<CreditBalance>,
    /// The element as sent.
    #[serde(skip)]
    pub raw: Value,
}

impl Entitlement {
    /// `usagePeriodEnd`, else the older `nextResetDate`.
    pub fn period_end(&self) -> Option<DateTime<Utc>> {
        self.usage_period_end.or(self.next_reset_date)
    }
}

#[derive(Debug, Clone)]
pub struct EntitlementSet {
    pub customer: EmbeddedCustomer,
    /// The resource id; `None` is the customer-level set.
    pub resource_id: Option<String>,
    /// `entitlementsUpdatedAt`, else `timestamp` (§4).
    pub version: Option<DateTime<Utc>>,
    pub entitlements: Vec<Entitlement>,
    /// `entitlements[]` as sent.
    pub raw_entitlements: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub customer: EmbeddedCustomer,
    pub feature: FeatureRef,
    #[serde(default)]
    pub resource: Option<ResourceRef>,
    pub current_usage: f64,
    #[serde(default)]
    pub current_change: Option<f64>,
    #[serde(default, deserialize_with = "opt_time")]
    pub usage_period_start: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub usage_period_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecordOnly {
    #[serde(default)]
    pub customer: Option<EmbeddedCustomer>,
    #[serde(default)]
    pub feature: Option<FeatureRef>,
}

/// Why a message cannot be applied, ever. Carries what could be read, for `dlq list`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub reason: String,
    pub message_id: Option<String>,
    pub event_type: Option<String>,
}

impl ParseError {
    fn bare(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message_id: None,
            event_type: None,
        }
    }
}

/// Parses one message body (the event JSON, or an SNS notification holding it).
pub fn parse(body: &[u8]) -> Result<ParsedEvent, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError::bare(format!("body is not UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ParseError::bare(format!("body is not JSON: {e}")))?;
    let (value, hash_source) = match unwrap_sns(value)? {
        (v, Some(inner)) => (v, inner),
        (v, None) => (v, text.to_owned()),
    };
    let Value::Object(obj) = value else {
        return Err(ParseError::bare(format!(
            "event is {}, not a JSON object",
            time::kind(&value)
        )));
    };
    parse_object(obj, &hash_source)
}

/// Parses an event already read as JSON (`sync` builds its copies this way). The
/// deduplication key falls back to a hash of the compact JSON.
pub fn parse_value(value: Value) -> Result<ParsedEvent, ParseError> {
    let Value::Object(obj) = value else {
        return Err(ParseError::bare(format!(
            "event is {}, not a JSON object",
            time::kind(&value)
        )));
    };
    let has_id = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let hash_source = if has_id("messageId") || has_id("eventId") {
        String::new()
    } else {
        Value::Object(obj.clone()).to_string()
    };
    parse_object(obj, &hash_source)
}

/// An SNS notification (`"Type": "Notification"` with a string `Message`) is unwrapped; the
/// inner text is returned for hashing.
fn unwrap_sns(value: Value) -> Result<(Value, Option<String>), ParseError> {
    let is_sns = value.get("Type").and_then(Value::as_str) == Some("Notification")
        && value.get("type").is_none();
    if !is_sns {
        return Ok((value, None));
    }
    let Some(Value::String(inner)) = value.get("Message") else {
        return Err(ParseError::bare(
            "SNS notification without a string Message",
        ));
    };
    let parsed = serde_json::from_str(inner)
        .map_err(|e| ParseError::bare(format!("SNS Message is not JSON: {e}")))?;
    Ok((parsed, Some(inner.clone())))
}

fn parse_object(obj: Map<String, Value>, hash_source: &str) -> Result<ParsedEvent, ParseError> {
    let message_id = opt_string_field(&obj, "messageId").map_err(ParseError::bare)?;
    let type_seen = obj.get("type").and_then(Value::as_str).map(str::to_owned);
    let err = |reason: String| ParseError {
        reason,
        message_id: message_id.clone(),
        event_type: type_seen.clone(),
    };
    let event_type = match obj.get("type") {
        None | Some(Value::Null) => return Err(err("event has no \"type\"".into())),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(err("event \"type\" is empty".into()))
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(err(format!(
                "event \"type\" is {}, not a string",
                time::kind(other)
            )))
        }
    };
    if contains_nul(&obj) {
        return Err(err(
            "event contains a NUL character, which PostgreSQL cannot store".into(),
        ));
    }
    let event_id = opt_string_field(&obj, "eventId").map_err(err)?;
    let trace_id = opt_string_field(&obj, "traceId").map_err(err)?;
    let timestamp = match obj.get("timestamp") {
        None => None,
        Some(v) => parse_time(v).map_err(|e| err(format!("\"timestamp\": {e}")))?,
    };
    let dedup_key = message_id
        .clone()
        .filter(|s| !s.is_empty())
        .or(event_id.filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(hash_source))));

    let raw = Value::Object(obj);
    let event =
        typed_event(&event_type, &raw, timestamp).map_err(|e| err(format!("{event_type}: {e}")))?;
    Ok(ParsedEvent {
        event_type,
        dedup_key,
        message_id,
        trace_id,
        timestamp,
        event,
        raw,
    })
}

fn typed_event(
    event_type: &str,
    raw: &Value,
    timestamp: Option<DateTime<Utc>>,
) -> Result<Event, String> {
    Ok(match event_type {
        "customer.created" | "customer.updated" => Event::CustomerUpsert(validated(raw)?),
        "customer.deleted" => Event::CustomerDeleted(validated(raw)?),
        "subscription.created"
        | "subscription.updated"
        | "subscription.canceled"
        | "subscription.expired"
        | "subscription.trial_started"
        | "subscription.trial_expired"
        | "subscription.trial_converted" => Event::Subscription(validated(raw)?),
        "entitlements.updated" => Event::Entitlements(entitlement_set(raw, timestamp)?),
        "measurement.reported" => Event::Measurement(validated(raw)?),
        t if is_record_only(t) => Event::RecordOnly(typed(raw)?),
        _ => Event::Unknown,
    })
}

/// Known types that are recorded and acknowledged but change no state.
fn is_record_only(t: &str) -> bool {
    t.starts_with("promotionalEntitlement.")
        || t.starts_with("subscription.")
        || t.starts_with("plan.")
        || t.starts_with("addon.")
        || t.starts_with("feature.")
        || t.starts_with("coupon.")
        || t.starts_with("credit")
        || matches!(t, "entitlement.usage_exceeded" | "customer.payment_failed")
}

fn typed<T: DeserializeOwned>(raw: &Value) -> Result<T, String> {
    T::deserialize(raw).map_err(|e| e.to_string())
}

/// Typed, and every id it holds is a non-empty string.
fn validated<T: DeserializeOwned + HasIds>(raw: &Value) -> Result<T, String> {
    let t: T = typed(raw)?;
    for (name, id) in t.ids() {
        if id.trim().is_empty() {
            return Err(format!("{name} is empty"));
        }
    }
    Ok(t)
}

trait HasIds {
    fn ids(&self) -> Vec<(&'static str, &str)>;
}

impl HasIds for Customer {
    fn ids(&self) -> Vec<(&'static str, &str)> {
        vec![("id", &self.id)]
    }
}

impl HasIds for Subscription {
    fn ids(&self) -> Vec<(&'static str, &str)> {
        let mut ids = vec![("id", self.id.as_str()), ("customer.id", &self.customer.id)];
        if let Some(r) = &self.resource {
            ids.push(("resource.id", &r.id));
        }
        ids
    }
}

impl HasIds for Measurement {
    fn ids(&self) -> Vec<(&'static str, &str)> {
        let mut ids = vec![
            ("customer.id", self.customer.id.as_str()),
            ("feature.id", &self.feature.id),
        ];
        if let Some(r) = &self.resource {
            ids.push(("resource.id", &r.id));
        }
        ids
    }
}

fn entitlement_set(
    raw: &Value,
    timestamp: Option<DateTime<Utc>>,
) -> Result<EntitlementSet, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        customer: EmbeddedCustomer,
        #[serde(default)]
        resource: Option<ResourceRef>,
        #[serde(default, deserialize_with = "opt_time")]
        entitlements_updated_at: Option<DateTime<Utc>>,
        entitlements: Vec<Value>,
    }
    let wire: Wire = typed(raw)?;
    if wire.customer.id.trim().is_empty() {
        return Err("customer.id is empty".into());
    }
    if wire
        .resource
        .as_ref()
        .is_some_and(|r| r.id.trim().is_empty())
    {
        return Err("resource.id is empty".into());
    }
    // A feature listed twice keeps its last entry, as a JSON object keeps its last key.
    let mut entitlements: Vec<Entitlement> = Vec::with_capacity(wire.entitlements.len());
    for (i, element) in wire.entitlements.iter().enumerate() {
        let mut e: Entitlement =
            typed(element).map_err(|err| format!("entitlements[{i}]: {err}"))?;
        if e.feature.id.trim().is_empty() {
            return Err(format!("entitlements[{i}].feature.id is empty"));
        }
        e.raw = element.clone();
        entitlements.retain(|prev| prev.feature.id != e.feature.id);
        entitlements.push(e);
    }
    Ok(EntitlementSet {
        customer: wire.customer,
        resource_id: wire.resource.map(|r| r.id),
        version: wire.entitlements_updated_at.or(timestamp),
        entitlements,
        raw_entitlements: Value::Array(wire.entitlements),
    })
}

fn opt_string_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("\"{name}\" is {}, not a string", time::kind(other))),
    }
}

fn contains_nul(obj: &Map<String, Value>) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(walk),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    obj.iter().any(|(k, v)| k.contains('\0') || walk(v))
}

#[cfg(test)]
mod tests;
