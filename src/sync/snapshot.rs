//! Stigg's read API answers (STIGG-API.md §2, §3) and their translation into the typed state
//! events carry, with the versions of §4. Each copy is turned into the event it stands for and
//! parsed by [`crate::events`], so a snapshot is validated exactly as an event would be. Pure:
//! nothing here does I/O.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::events::{self, opt_time, Customer, EntitlementSet, Event, Subscription};

/// A subscription has no version of its own: the time its request was sent, less this, so
/// that an event stamped by a clock slightly ahead of ours still wins (STIGG-API.md §4).
pub const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// The `messageId` of the events a snapshot is turned into (they are never claimed in the
/// inbox: their versions make them idempotent).
const SOURCE: &str = "stigg-byos-sync";

/// A cursor connection (`edges`, `pageInfo`, `totalCount`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection<N> {
    #[serde(default = "Vec::new")]
    pub edges: Vec<Edge<N>>,
    pub page_info: PageInfo,
    #[serde(default)]
    pub total_count: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Edge<N> {
    pub node: N,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    #[serde(default)]
    pub has_next_page: bool,
    #[serde(default)]
    pub end_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerNode {
    pub customer_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub billing_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "opt_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_time")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRef {
    pub customer_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub resource_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRef {
    #[serde(default)]
    pub ref_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionNode {
    pub subscription_id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub start_date: Option<Value>,
    #[serde(default)]
    pub end_date: Option<Value>,
    #[serde(default)]
    pub cancellation_date: Option<Value>,
    #[serde(default)]
    pub trial_end_date: Option<Value>,
    #[serde(default)]
    pub billing_id: Option<String>,
    pub customer: CustomerRef,
    #[serde(default)]
    pub resource: Option<ResourceRef>,
    #[serde(default)]
    pub plan: Option<PlanRef>,
}

/// The Edge's `entitlementsState`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementsState {
    #[serde(default)]
    pub access_denied_reason: Option<String>,
    #[serde(default)]
    pub entitlements: Option<Vec<Value>>,
}

/// A customer as a `customer.updated` at its `updatedAt`.
#[derive(Debug, Clone)]
pub struct CustomerCopy {
    pub customer: Customer,
    pub at: Option<DateTime<Utc>>,
    pub raw: Value,
}

/// A subscription as a `subscription.updated` at the time it was read, less the margin.
#[derive(Debug, Clone)]
pub struct SubscriptionCopy {
    pub subscription: Subscription,
    pub at: Option<DateTime<Utc>>,
    pub raw: Value,
}

/// One feature's usage from an entitlement state, at that entitlement's `usageUpdatedAt`.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageCopy {
    pub feature_id: String,
    pub current_usage: f64,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub at: Option<DateTime<Utc>>,
}

/// What an entitlement state says.
#[derive(Debug, Clone)]
pub enum StateCopy {
    /// `CustomerNotFound` / `CustomerIsArchived`: the customer is gone.
    Gone(String),
    /// `CustomerResourceNotFound` for a resource: Stigg holds no set for it, so none is
    /// written (an empty one would change the access decision's rule 2).
    NoResource,
    /// The set, versioned by its first `entitlementUpdatedAt` (none for an empty set), and
    /// the usage it carries.
    Set {
        set: EntitlementSet,
        usage: Vec<UsageCopy>,
    },
}

fn parse(event: Value) -> Result<events::ParsedEvent, String> {
    events::parse_value(event).map_err(|e| e.reason)
}

pub fn customer(node: &CustomerNode) -> Result<CustomerCopy, String> {
    let raw = json!({
        "type": "customer.updated",
        "messageId": SOURCE,
        "id": node.customer_id,
        "name": node.name,
        "email": node.email,
        "billingId": node.billing_id,
        "metadata": node.metadata,
        "createdAt": node.created_at,
        "timestamp": node.updated_at,
    });
    let parsed = parse(raw)?;
    match parsed.event {
        Event::CustomerUpsert(customer) => Ok(CustomerCopy {
            customer,
            at: parsed.timestamp,
            raw: parsed.raw,
        }),
        _ => unreachable!("a customer.updated parses as a customer"),
    }
}

pub fn subscription(
    node: &SubscriptionNode,
    read_at: DateTime<Utc>,
) -> Result<SubscriptionCopy, String> {
    let plan = node.plan.as_ref();
    let raw = json!({
        "type": "subscription.updated",
        "messageId": SOURCE,
        "id": node.subscription_id,
        "customer": {"id": node.customer.customer_id},
        "plan": plan.map(|p| json!({"id": p.ref_id, "name": p.display_name})),
        "status": node.status,
        "billingId": node.billing_id,
        "startDate": node.start_date,
        "endDate": node.end_date,
        "cancellationDate": node.cancellation_date,
        "trialEndDate": node.trial_end_date,
        "resource": node.resource.as_ref().map(|r| json!({"id": r.resource_id})),
        "timestamp": (read_at - CLOCK_MARGIN).to_rfc3339(),
    });
    let parsed = parse(raw)?;
    match parsed.event {
        Event::Subscription(subscription) => Ok(SubscriptionCopy {
            subscription,
            at: parsed.timestamp,
            raw: parsed.raw,
        }),
        _ => unreachable!("a subscription.updated parses as a subscription"),
    }
}

/// An Edge entitlement in the shape `entitlements.updated` carries: `feature.refId` is the
/// feature id, `featureUnits` its units, `displayName` its name, and `meterType` upper-cased
/// (`Incremental` → `INCREMENTAL`), with `None` (no meter) as null; every other field keeps
/// its name.
fn as_event_entitlement(edge: &Value) -> Value {
    let mut e = edge.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(f)) = e.get("feature") {
        let mut feature = Map::new();
        for (k, v) in f {
            let k = match k.as_str() {
                "refId" => "id",
                "featureUnits" => "units",
                "displayName" => "name",
                other => other,
            };
            let v = match (k, v) {
                ("meterType", Value::String(m)) if m.trim().eq_ignore_ascii_case("none") => {
                    Value::Null
                }
                ("meterType", Value::String(m)) => Value::String(m.to_ascii_uppercase()),
                _ => v.clone(),
            };
            feature.insert(k.to_owned(), v);
        }
        e.insert("feature".into(), Value::Object(feature));
    }
    Value::Object(e)
}

fn time_field(e: &Value, name: &str) -> Result<Option<DateTime<Utc>>, String> {
    e.get(name)
        .map_or(Ok(None), events::parse_time)
        .map_err(|err| format!("{name}: {err}"))
}

pub fn state(
    customer_id: &str,
    resource_id: Option<&str>,
    state: &EntitlementsState,
) -> Result<StateCopy, String> {
    if let Some(reason @ ("CustomerNotFound" | "CustomerIsArchived")) =
        state.access_denied_reason.as_deref()
    {
        return Ok(StateCopy::Gone(reason.to_owned()));
    }
    if resource_id.is_some()
        && state.access_denied_reason.as_deref() == Some("CustomerResourceNotFound")
    {
        return Ok(StateCopy::NoResource);
    }
    let edge = state.entitlements.as_deref().unwrap_or_default();
    let mut version = None;
    for e in edge {
        if let Some(t) = time_field(e, "entitlementUpdatedAt")? {
            version = Some(t);
            break;
        }
    }
    let raw = json!({
        "type": "entitlements.updated",
        "messageId": SOURCE,
        "customer": {"id": customer_id},
        "resource": resource_id.map(|r| json!({"id": r})),
        "entitlementsUpdatedAt": version.map(|t| t.to_rfc3339()),
        "entitlements": edge.iter().map(as_event_entitlement).collect::<Vec<_>>(),
    });
    let Event::Entitlements(set) = parse(raw)?.event else {
        unreachable!("an entitlements.updated parses as a set")
    };
    let mut usage = Vec::new();
    for typed in &set.entitlements {
        if let Some(current_usage) = typed.current_usage {
            usage.push(UsageCopy {
                feature_id: typed.feature.id.clone(),
                current_usage,
                period_start: typed.usage_period_start,
                period_end: typed.period_end(),
                at: time_field(&typed.raw, "usageUpdatedAt")?,
            });
        }
    }
    Ok(StateCopy::Set { set, usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_customer_is_versioned_by_its_updated_at() {
        let node: CustomerNode = serde_json::from_value(json!({
            "customerId": "acme", "name": "Acme", "email": "a@acme.test", "billingId": "cus_1",
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-02-01T00:00:00.5Z"
        }))
        .unwrap();
        let copy = customer(&node).unwrap();
        assert_eq!(copy.customer.id, "acme");
        assert_eq!(copy.customer.name.as_deref(), Some("Acme"));
        assert_eq!(copy.customer.billing_id.as_deref(), Some("cus_1"));
        assert_eq!(copy.at, Some(t("2026-02-01T00:00:00.5Z")));
    }

    #[test]
    fn an_empty_customer_id_is_refused_as_an_event_would_be() {
        let node: CustomerNode =
            serde_json::from_value(json!({"customerId": " ", "updatedAt": null})).unwrap();
        assert!(customer(&node).unwrap_err().contains("id is empty"));
    }

    #[test]
    fn a_subscription_is_versioned_by_its_read_time_less_the_margin() {
        let node: SubscriptionNode = serde_json::from_value(json!({
            "subscriptionId": "sub-1", "status": "CANCELED",
            "startDate": "2026-01-01T00:00:00Z", "endDate": null,
            "cancellationDate": "2026-03-01T00:00:00Z", "trialEndDate": null,
            "billingId": null, "customer": {"customerId": "acme"},
            "resource": {"resourceId": "site-1"}, "plan": {"refId": "plan-pro", "displayName": "Pro"}
        }))
        .unwrap();
        let read = t("2026-05-01T12:00:00Z");
        let copy = subscription(&node, read).unwrap();
        let s = &copy.subscription;
        assert_eq!(copy.at, Some(read - CLOCK_MARGIN));
        assert_eq!(s.customer.id, "acme");
        assert_eq!(s.status.as_deref(), Some("CANCELED"));
        assert_eq!(s.resource.as_ref().unwrap().id, "site-1");
        let plan = s.plan.as_ref().unwrap();
        assert_eq!(plan.id.as_deref(), Some("plan-pro"));
        assert_eq!(plan.name.as_deref(), Some("Pro"));
        assert_eq!(s.cancellation_date, Some(t("2026-03-01T00:00:00Z")));
    }

    fn edge_state(entitlements: Value, reason: Value) -> EntitlementsState {
        serde_json::from_value(json!({"accessDeniedReason": reason, "entitlements": entitlements}))
            .unwrap()
    }

    #[test]
    fn an_entitlement_state_becomes_a_set_and_its_usage() {
        let st = edge_state(
            json!([
                {"feature": {"refId": "feature-sso", "featureType": "BOOLEAN", "meterType": "None"},
                 "isGranted": true, "entitlementUpdatedAt": null},
                {"feature": {"refId": "feature-calls", "featureType": "NUMBER",
                             "meterType": "Incremental", "featureUnits": "call"},
                 "usageLimit": 100, "hasSoftLimit": false, "currentUsage": 42,
                 "usagePeriodStart": "2026-05-01T00:00:00Z", "usagePeriodEnd": "2026-06-01T00:00:00Z",
                 "resetPeriod": "MONTH",
                 "entitlementUpdatedAt": "2026-05-02T00:00:00Z", "usageUpdatedAt": "2026-05-03T00:00:00Z"},
                {"feature": {"refId": "feature-tier", "featureType": "ENUM", "meterType": null},
                 "enumValues": ["a", "b"], "entitlementUpdatedAt": "2026-04-01T00:00:00Z"}
            ]),
            Value::Null,
        );
        let StateCopy::Set { set, usage } = state("acme", Some("site-1"), &st).unwrap() else {
            panic!("a set")
        };
        // the first non-null entitlementUpdatedAt, not the newest
        assert_eq!(set.version, Some(t("2026-05-02T00:00:00Z")));
        assert_eq!(set.resource_id.as_deref(), Some("site-1"));
        assert_eq!(set.entitlements.len(), 3);
        let calls = &set.entitlements[1];
        assert_eq!(calls.feature.id, "feature-calls");
        assert_eq!(calls.feature.meter_type.as_deref(), Some("INCREMENTAL"));
        assert_eq!(set.entitlements[0].feature.meter_type, None);
        assert_eq!(calls.usage_limit, Some(100.0));
        assert_eq!(set.raw_entitlements[1]["feature"]["units"], "call");
        assert_eq!(
            set.entitlements[2].enum_values.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(
            usage,
            vec![UsageCopy {
                feature_id: "feature-calls".into(),
                current_usage: 42.0,
                period_start: Some(t("2026-05-01T00:00:00Z")),
                period_end: Some(t("2026-06-01T00:00:00Z")),
                at: Some(t("2026-05-03T00:00:00Z")),
            }]
        );
    }

    #[test]
    fn an_empty_set_has_no_version_and_gone_customers_are_gone() {
        let st = edge_state(json!([]), json!("NoActiveSubscription"));
        let StateCopy::Set { set, usage } = state("acme", None, &st).unwrap() else {
            panic!("a set")
        };
        assert_eq!(set.version, None);
        assert!(set.entitlements.is_empty() && usage.is_empty());
        for reason in ["CustomerNotFound", "CustomerIsArchived"] {
            let st = edge_state(Value::Null, json!(reason));
            assert!(matches!(state("acme", None, &st).unwrap(), StateCopy::Gone(r) if r == reason));
        }
        let st = edge_state(json!([]), json!("CustomerResourceNotFound"));
        assert!(matches!(
            state("acme", Some("site-9"), &st).unwrap(),
            StateCopy::NoResource
        ));
    }

    #[test]
    fn a_malformed_entitlement_is_an_error_not_a_panic() {
        let st = edge_state(json!([{"feature": {"refId": 5}}]), Value::Null);
        assert!(state("acme", None, &st).is_err());
        let st = edge_state(
            json!([{"feature": {"refId": "f"}, "currentUsage": 1, "usageUpdatedAt": "yesterday"}]),
            Value::Null,
        );
        assert!(state("acme", None, &st)
            .unwrap_err()
            .contains("usageUpdatedAt"));
    }
}
