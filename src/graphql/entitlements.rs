//! Entitlements over GraphQL: the customer-level list as Stigg sent it (with current usage
//! merged in), the typed `Entitlement` list, and `access`, which is `/check-access`'s
//! decision ([`crate::store::load_access`] + [`crate::access::decide`]), never a copy of it.

use async_graphql::{Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::error::Internal;
use super::rows::Loaders;
use super::scalars::Datetime;
use crate::access::{
    decide, is_metered, AccessRequest, Decision, StoredAccess, StoredEntitlement, StoredUsage,
};
use crate::store;

/// `''` for the customer level; an empty `resourceId` is refused, as `/check-access` does.
pub fn resource_key(resource_id: Option<&str>) -> Result<String> {
    match resource_id {
        Some("") => Err("resourceId must not be empty".into()),
        other => Ok(store::resource_key(other).to_string()),
    }
}

/// Sets `currentUsage` of each element of Stigg's list whose `feature.id` has a usage row.
pub fn merge_usage(mut list: Value, usage: &Map<String, Value>) -> Value {
    if let Value::Array(items) = &mut list {
        for item in items {
            let id = item
                .pointer("/feature/id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let (Some(current), Some(obj)) =
                (id.and_then(|id| usage.get(&id)), item.as_object_mut())
            {
                obj.insert("currentUsage".into(), current.clone());
            }
        }
    }
    list
}

/// One stored entitlement of a set, with the usage reported for its feature.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub feature_id: String,
    pub resource_key: String,
    pub entitlement: StoredEntitlement,
    pub usage: Option<StoredUsage>,
}

/// An entitlement of a customer (or of one of its resources).
#[derive(SimpleObject, Debug, Clone)]
pub struct Entitlement {
    pub feature_id: String,
    /// `BOOLEAN`, `NUMBER` or `ENUM`.
    pub feature_type: String,
    /// `INCREMENTAL`, `FLUCTUATING`, or null for an unmetered feature.
    pub meter_type: Option<String>,
    /// The limit as Stigg sent it (null when none).
    pub usage_limit: Option<f64>,
    pub has_unlimited_usage: bool,
    pub has_soft_limit: bool,
    /// For a metered feature the usage of the current period (0 when a new period began);
    /// otherwise the last usage reported, if any.
    pub current_usage: Option<f64>,
    pub usage_period_start: Option<Datetime>,
    pub usage_period_end: Option<Datetime>,
    pub reset_period: Option<String>,
    pub enum_values: Option<Vec<String>>,
    /// Null for a customer-level entitlement.
    pub resource_id: Option<String>,
}

impl Entitlement {
    /// The entitlement as `/check-access` would report it at `now`.
    pub fn view(row: &StoredRow, now: DateTime<Utc>) -> Entitlement {
        let e = &row.entitlement;
        let metered =
            e.feature_type.eq_ignore_ascii_case("NUMBER") && is_metered(e.meter_type.as_deref());
        let (current_usage, start, end) = if metered {
            let d = decision_for(row, now);
            (d.current_usage, d.usage_period_start, d.usage_period_end)
        } else {
            (
                row.usage.as_ref().map(|u| u.current_usage),
                e.period_start,
                e.period_end,
            )
        };
        Entitlement {
            feature_id: row.feature_id.clone(),
            feature_type: e.feature_type.clone(),
            meter_type: e.meter_type.clone(),
            usage_limit: e.usage_limit,
            has_unlimited_usage: e.has_unlimited,
            has_soft_limit: e.has_soft_limit,
            current_usage,
            usage_period_start: start.map(Datetime),
            usage_period_end: end.map(Datetime),
            reset_period: e.reset_period.clone(),
            enum_values: e.enum_values.clone(),
            resource_id: (!row.resource_key.is_empty()).then(|| row.resource_key.clone()),
        }
    }
}

fn decision_for(row: &StoredRow, now: DateTime<Utc>) -> Decision {
    let state = StoredAccess {
        customer_live: true,
        resource_set_exists: true,
        has_active_subscription: true,
        has_any_entitlement: true,
        entitlement: Some(row.entitlement.clone()),
        usage: row.usage.clone(),
    };
    let request = AccessRequest {
        customer_id: String::new(),
        feature_id: row.feature_id.clone(),
        resource_id: None,
        requested_usage: 0.0,
        requested_values: None,
    };
    decide(&request, &state, now)
}

/// The answer of `/check-access`, field for field.
#[derive(SimpleObject, Debug, Clone)]
pub struct AccessDecision {
    pub has_access: bool,
    /// Stigg's reason name, e.g. `RequestedUsageExceedingLimit`; null when allowed.
    pub access_denied_reason: Option<String>,
    pub is_unlimited: bool,
    pub has_soft_limit: bool,
    pub usage_limit: Option<f64>,
    pub current_usage: Option<f64>,
    pub requested_usage: f64,
    pub reset_period: Option<String>,
    pub usage_period_start: Option<Datetime>,
    pub usage_period_end: Option<Datetime>,
    /// The configured value of an unmetered number.
    pub value: Option<f64>,
    pub enum_values: Option<Vec<String>>,
    pub requested_values: Option<Vec<String>>,
}

impl From<Decision> for AccessDecision {
    fn from(d: Decision) -> Self {
        AccessDecision {
            has_access: d.has_access,
            access_denied_reason: d.access_denied_reason.map(|r| r.as_str().to_string()),
            is_unlimited: d.is_unlimited,
            has_soft_limit: d.has_soft_limit,
            usage_limit: d.usage_limit,
            current_usage: d.current_usage,
            requested_usage: d.requested_usage,
            reset_period: d.reset_period,
            usage_period_start: d.usage_period_start.map(Datetime),
            usage_period_end: d.usage_period_end.map(Datetime),
            value: d.value,
            enum_values: d.enum_values,
            requested_values: d.requested_values,
        }
    }
}

/// `/check-access`'s decision: the same validation (§7.11), one query, the same rules (§5).
pub async fn access(
    loaders: &Loaders,
    customer_id: &str,
    feature_id: String,
    resource_id: Option<String>,
    requested_usage: Option<f64>,
    requested_values: Option<Vec<String>>,
) -> Result<AccessDecision> {
    let request = AccessRequest::new(
        customer_id.to_string(),
        feature_id,
        resource_id,
        requested_usage,
        requested_values,
    )?;
    let decision = crate::access::check(&request, Utc::now(), |lookup| async move {
        (loaders.access)
            .access(
                &loaders.reads,
                lookup.customer,
                lookup.resource,
                lookup.feature,
            )
            .await
            .map_err(Internal::from)
    })
    .await?;
    Ok(decision.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_merged_by_feature_id() {
        let list = json!([
            {"feature": {"id": "a"}, "currentUsage": 1},
            {"feature": {"id": "b"}},
            {"feature": {"id": "c"}, "currentUsage": 3},
            "not an object"
        ]);
        let usage = json!({"a": 10, "b": 2.5}).as_object().unwrap().clone();
        assert_eq!(
            merge_usage(list, &usage),
            json!([
                {"feature": {"id": "a"}, "currentUsage": 10},
                {"feature": {"id": "b"}, "currentUsage": 2.5},
                {"feature": {"id": "c"}, "currentUsage": 3},
                "not an object"
            ])
        );
    }
}
