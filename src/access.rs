//! The access decision of STIGG-EVENTS §5: a pure function of the stored state and the
//! request. It never reads the database or the clock itself; callers pass both in.

use chrono::{DateTime, Duration, Months, Utc};
use serde::Serialize;

/// A validated `/check-access` request.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRequest {
    pub customer_id: String,
    pub feature_id: String,
    pub resource_id: Option<String>,
    /// ≥ 0; 0 when omitted.
    pub requested_usage: f64,
    pub requested_values: Option<Vec<String>>,
}

impl AccessRequest {
    /// Checks the rules every request must meet (§7.11) on fields already of the right
    /// types; the error says what is wrong. `/check-access` and GraphQL's `access` build
    /// their requests here.
    pub fn new(
        customer_id: String,
        feature_id: String,
        resource_id: Option<String>,
        requested_usage: Option<f64>,
        requested_values: Option<Vec<String>>,
    ) -> Result<Self, String> {
        for (name, id) in [
            ("customerId", Some(&customer_id)),
            ("featureId", Some(&feature_id)),
            ("resourceId", resource_id.as_ref()),
        ] {
            if id.is_some_and(|id| id.is_empty()) {
                return Err(format!("{name} must not be empty"));
            }
        }
        let requested_usage = match requested_usage {
            None => 0.0,
            Some(f) if !f.is_finite() => return Err("requestedUsage is out of range".into()),
            Some(f) if f < 0.0 => return Err("requestedUsage must not be negative".into()),
            Some(f) => f,
        };
        Ok(Self {
            customer_id,
            feature_id,
            resource_id,
            requested_usage,
            requested_values,
        })
    }
}

/// The decision's one entry point, for `/check-access` and GraphQL alike: loads what the
/// request's keys hold with `load` (never called for a customer id that cannot be stored,
/// which is no customer; see [`Lookup`]) and decides at `now`.
pub async fn check<'r, E, Fut>(
    request: &'r AccessRequest,
    now: DateTime<Utc>,
    load: impl FnOnce(Lookup<'r>) -> Fut,
) -> Result<Decision, E>
where
    Fut: std::future::Future<Output = Result<StoredAccess, E>>,
{
    let stored = match Lookup::of(request) {
        None => StoredAccess::default(),
        Some(lookup) => lookup.seen(load(lookup).await?),
    };
    Ok(decide(request, &stored, now))
}

/// Whether an id can be stored at all: PostgreSQL refuses text holding a NUL character, so
/// nothing has such an id, and it is not sent to the database (which would fail the query).
pub fn storable(id: &str) -> bool {
    !id.contains('\0')
}

/// The keys a request is looked up by: a customer whose id cannot be stored is no customer
/// ([`Lookup::of`] is `None`), a feature no entitlement, a resource no entitlement set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup<'a> {
    pub customer: &'a str,
    pub resource: Option<&'a str>,
    /// `""` (no feature) when the asked one cannot be stored.
    pub feature: &'a str,
    resource_unstorable: bool,
}

impl<'a> Lookup<'a> {
    pub fn of(request: &'a AccessRequest) -> Option<Self> {
        if !storable(&request.customer_id) {
            return None;
        }
        let resource = request.resource_id.as_deref();
        let resource_unstorable = resource.is_some_and(|r| !storable(r));
        Some(Self {
            customer: &request.customer_id,
            resource: resource.filter(|_| !resource_unstorable),
            feature: Some(request.feature_id.as_str())
                .filter(|f| storable(f))
                .unwrap_or(""),
            resource_unstorable,
        })
    }

    /// What was loaded for these keys, as the request sees it.
    pub fn seen(&self, mut stored: StoredAccess) -> StoredAccess {
        if self.resource_unstorable {
            stored.resource_set_exists = false;
        }
        stored
    }
}

/// Everything the decision needs, loaded in one query. `None` customer means unknown or
/// deleted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredAccess {
    pub customer_live: bool,
    /// An entitlement set exists for the requested resource (only asked when one is given).
    pub resource_set_exists: bool,
    /// The customer has a subscription with status ACTIVE or IN_TRIAL (only asked when the
    /// entitlement is missing: rule 3 alone reads it).
    pub has_active_subscription: bool,
    /// The customer has at least one entitlement in any set (§7.7).
    pub has_any_entitlement: bool,
    pub entitlement: Option<StoredEntitlement>,
    pub usage: Option<StoredUsage>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredEntitlement {
    pub feature_type: String,
    pub meter_type: Option<String>,
    pub usage_limit: Option<f64>,
    pub has_unlimited: bool,
    pub has_soft_limit: bool,
    pub period_anchor: Option<DateTime<Utc>>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub reset_period: Option<String>,
    pub enum_values: Option<Vec<String>>,
    /// `creditBalance.remainingBalance`, when the entitlement has a credit balance.
    pub credit_remaining: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredUsage {
    pub current_usage: f64,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

/// Why access was denied; the names are Stigg's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DenialReason {
    CustomerNotFound,
    CustomerResourceNotFound,
    NoActiveSubscription,
    NoFeatureEntitlementInSubscription,
    RequestedValuesMismatch,
    InsufficientCredits,
    RequestedUsageExceedingLimit,
    FeatureTypeMismatch,
}

impl DenialReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CustomerNotFound => "CustomerNotFound",
            Self::CustomerResourceNotFound => "CustomerResourceNotFound",
            Self::NoActiveSubscription => "NoActiveSubscription",
            Self::NoFeatureEntitlementInSubscription => "NoFeatureEntitlementInSubscription",
            Self::RequestedValuesMismatch => "RequestedValuesMismatch",
            Self::InsufficientCredits => "InsufficientCredits",
            Self::RequestedUsageExceedingLimit => "RequestedUsageExceedingLimit",
            Self::FeatureTypeMismatch => "FeatureTypeMismatch",
        }
    }
}

/// The answer, with Stigg's SDK field names. Every field is always present (§7.12).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub has_access: bool,
    pub access_denied_reason: Option<DenialReason>,
    pub is_unlimited: bool,
    pub has_soft_limit: bool,
    #[serde(serialize_with = "number")]
    pub usage_limit: Option<f64>,
    #[serde(serialize_with = "number")]
    pub current_usage: Option<f64>,
    #[serde(serialize_with = "number_always")]
    pub requested_usage: f64,
    pub reset_period: Option<String>,
    #[serde(serialize_with = "time")]
    pub usage_period_start: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time")]
    pub usage_period_end: Option<DateTime<Utc>>,
    #[serde(serialize_with = "number")]
    pub value: Option<f64>,
    pub enum_values: Option<Vec<String>>,
    pub requested_values: Option<Vec<String>>,
}

impl Decision {
    fn base(req: &AccessRequest) -> Self {
        Self {
            has_access: false,
            access_denied_reason: None,
            is_unlimited: false,
            has_soft_limit: false,
            usage_limit: None,
            current_usage: None,
            requested_usage: req.requested_usage,
            reset_period: None,
            usage_period_start: None,
            usage_period_end: None,
            value: None,
            enum_values: None,
            requested_values: req.requested_values.clone(),
        }
    }

    fn deny(mut self, reason: DenialReason) -> Self {
        self.has_access = false;
        self.access_denied_reason = Some(reason);
        self
    }

    fn allow(mut self) -> Self {
        self.has_access = true;
        self.access_denied_reason = None;
        self
    }
}

/// Decides by §5, first match wins. `now` decides whether a usage period has ended.
pub fn decide(req: &AccessRequest, state: &StoredAccess, now: DateTime<Utc>) -> Decision {
    let answer = Decision::base(req);
    // 1. customer unknown or deleted
    if !state.customer_live {
        return answer.deny(DenialReason::CustomerNotFound);
    }
    // 2. a resource with no entitlement set (§7.7: no fallback to the customer level)
    if req.resource_id.is_some() && !state.resource_set_exists {
        return answer.deny(DenialReason::CustomerResourceNotFound);
    }
    // 3. no entitlement for the feature
    let Some(ent) = &state.entitlement else {
        let reason = if !state.has_active_subscription && !state.has_any_entitlement {
            DenialReason::NoActiveSubscription
        } else {
            DenialReason::NoFeatureEntitlementInSubscription
        };
        return answer.deny(reason);
    };
    let mut answer = Decision {
        is_unlimited: ent.has_unlimited,
        has_soft_limit: ent.has_soft_limit,
        ..answer
    };
    match ent.feature_type.to_ascii_uppercase().as_str() {
        // 4. BOOLEAN
        "BOOLEAN" => answer.allow(),
        // 5. ENUM
        "ENUM" => {
            let allowed = ent.enum_values.clone().unwrap_or_default();
            answer.enum_values = Some(allowed.clone());
            let requested = req.requested_values.as_deref().unwrap_or_default();
            if requested.iter().all(|v| allowed.contains(v)) {
                answer.allow()
            } else {
                answer.deny(DenialReason::RequestedValuesMismatch)
            }
        }
        "NUMBER" if !is_metered(ent.meter_type.as_deref()) => {
            // 6. unmetered (configuration) number: allowed, reports its configured value
            answer.usage_limit = ent.usage_limit;
            answer.value = ent.usage_limit;
            answer.allow()
        }
        "NUMBER" => metered(answer, req, ent, state.usage.as_ref(), now),
        _ => answer.deny(DenialReason::FeatureTypeMismatch),
    }
}

/// Rules 7–9 for a metered number.
fn metered(
    mut answer: Decision,
    req: &AccessRequest,
    ent: &StoredEntitlement,
    usage: Option<&StoredUsage>,
    now: DateTime<Utc>,
) -> Decision {
    let period = current_period(ent, usage, now);
    answer.reset_period = ent.reset_period.clone();
    answer.usage_period_start = period.start;
    answer.usage_period_end = period.end;
    let current = if period.usage_expired {
        0.0
    } else {
        usage.map_or(0.0, |u| u.current_usage)
    };
    answer.current_usage = Some(current);
    answer.usage_limit = if ent.has_unlimited {
        None
    } else {
        ent.usage_limit
    };
    // 7. unlimited or soft limit: never denies
    if ent.has_unlimited || ent.has_soft_limit {
        return answer.allow();
    }
    // 8. credits exhausted
    if ent.credit_remaining.is_some_and(|r| r <= 0.0) {
        return answer.deny(DenialReason::InsufficientCredits);
    }
    // 9. within the limit (a missing limit is 0)
    if current + req.requested_usage <= ent.usage_limit.unwrap_or(0.0) {
        answer.allow()
    } else {
        answer.deny(DenialReason::RequestedUsageExceedingLimit)
    }
}

/// `meterType` null, `None` or `NONE` (any case) is an unmetered number.
pub fn is_metered(meter_type: Option<&str>) -> bool {
    meter_type.is_some_and(|m| !m.trim().is_empty() && !m.trim().eq_ignore_ascii_case("none"))
}

#[derive(Debug, PartialEq)]
struct Period {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    usage_expired: bool,
}

/// The usage period to report and whether the stored usage belongs to a period that ended.
/// The later of the entitlement's and the usage report's periods is the current one.
fn current_period(
    ent: &StoredEntitlement,
    usage: Option<&StoredUsage>,
    now: DateTime<Utc>,
) -> Period {
    let (mut start, mut end) = (ent.period_start, ent.period_end);
    if let Some(u) = usage {
        if u.period_end.is_some() && u.period_end > end {
            (start, end) = (u.period_start, u.period_end);
        }
    }
    let usage_period_over = usage.and_then(|u| u.period_end).is_some_and(|e| e <= now);
    let Some(e) = end.filter(|e| *e <= now) else {
        return Period {
            start,
            end,
            usage_expired: usage_period_over,
        };
    };
    // The period ended: a new one began (§7.8).
    if let (Some(anchor), Some(step)) = (ent.period_anchor, ent.reset_period.as_deref()) {
        if let Some((s, e)) = roll_forward(anchor, step, now) {
            (start, end) = (Some(s), Some(e));
        }
    } else if let Some(step) = ent.reset_period.as_deref() {
        if let Some((s, e)) = roll_forward(e, step, now) {
            (start, end) = (Some(s), Some(e));
        }
    }
    Period {
        start,
        end,
        usage_expired: true,
    }
}

/// The period `[start, end)` that contains `now`, counted from `anchor` in steps of
/// `reset_period`. `None` for an unknown reset period.
pub fn roll_forward(
    anchor: DateTime<Utc>,
    reset_period: &str,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let months = match reset_period.to_ascii_uppercase().as_str() {
        "YEAR" => Some(12u32),
        "MONTH" => Some(1),
        _ => None,
    };
    if let Some(step) = months {
        let at = |n: i64| -> Option<DateTime<Utc>> {
            let m = u32::try_from(n.checked_mul(i64::from(step))?).ok()?;
            anchor.checked_add_months(Months::new(m))
        };
        if now < anchor {
            return Some((anchor.checked_sub_months(Months::new(step))?, anchor));
        }
        // start from an underestimate (no month is longer than 31 days), then step up
        let elapsed_months = now.signed_duration_since(anchor).num_days() / 31;
        let mut n = (elapsed_months / i64::from(step) - 1).max(0);
        while at(n + 1)? <= now {
            n += 1;
        }
        return Some((at(n)?, at(n + 1)?));
    }
    let step = match reset_period.to_ascii_uppercase().as_str() {
        "WEEK" => Duration::weeks(1),
        "DAY" => Duration::days(1),
        "HOUR" => Duration::hours(1),
        _ => return None,
    };
    if now < anchor {
        return Some((anchor.checked_sub_signed(step)?, anchor));
    }
    let n = i32::try_from((now - anchor).num_seconds() / step.num_seconds()).ok()?;
    let start = anchor.checked_add_signed(step.checked_mul(n)?)?;
    Some((start, start.checked_add_signed(step)?))
}

fn number<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(f) => number_always(f, s),
        None => s.serialize_none(),
    }
}

/// Integral values are written as integers (`5`, not `5.0`).
fn number_always<S: serde::Serializer>(f: &f64, s: S) -> Result<S::Ok, S::Error> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        s.serialize_i64(*f as i64)
    } else {
        s.serialize_f64(*f)
    }
}

fn time<S: serde::Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(t) => s.serialize_str(&crate::events::format_time(*t)),
        None => s.serialize_none(),
    }
}

pub mod snapshot;

pub use snapshot::CustomerAccess;

#[cfg(test)]
mod tests;
