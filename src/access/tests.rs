//! Unit and property tests of the pure access decision (STIGG-EVENTS §5, §7.7, §7.8,
//! §7.11, §7.12). Every test uses a fixed `now`; none reads the clock.

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// helpers

/// The fixed "now" of every test: 2026-11-27T12:00:00Z.
fn now() -> DateTime<Utc> {
    at(2026, 11, 27, 12, 0)
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn day(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
    at(y, mo, d, 0, 0)
}

fn req(feature: &str) -> AccessRequest {
    AccessRequest {
        customer_id: "cust-1".into(),
        feature_id: feature.into(),
        resource_id: None,
        requested_usage: 0.0,
        requested_values: None,
    }
}

fn req_usage(requested: f64) -> AccessRequest {
    AccessRequest {
        requested_usage: requested,
        ..req("feature-seats")
    }
}

fn req_values(values: Option<&[&str]>) -> AccessRequest {
    AccessRequest {
        requested_values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        ..req("feature-tier")
    }
}

/// A live customer with an active subscription and some entitlements, but no entitlement
/// for the requested feature yet.
fn live() -> StoredAccess {
    StoredAccess {
        customer_live: true,
        resource_set_exists: false,
        has_active_subscription: true,
        has_any_entitlement: true,
        entitlement: None,
        usage: None,
    }
}

fn with_ent(ent: StoredEntitlement) -> StoredAccess {
    StoredAccess {
        entitlement: Some(ent),
        ..live()
    }
}

fn with_ent_usage(ent: StoredEntitlement, usage: StoredUsage) -> StoredAccess {
    StoredAccess {
        entitlement: Some(ent),
        usage: Some(usage),
        ..live()
    }
}

fn boolean_ent() -> StoredEntitlement {
    StoredEntitlement {
        feature_type: "BOOLEAN".into(),
        ..Default::default()
    }
}

fn enum_ent(values: &[&str]) -> StoredEntitlement {
    StoredEntitlement {
        feature_type: "ENUM".into(),
        enum_values: Some(values.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn unmetered_ent(meter_type: Option<&str>, limit: Option<f64>) -> StoredEntitlement {
    StoredEntitlement {
        feature_type: "NUMBER".into(),
        meter_type: meter_type.map(str::to_string),
        usage_limit: limit,
        ..Default::default()
    }
}

/// A metered (INCREMENTAL) number with a monthly period [2026-11-01, 2026-12-01) anchored
/// on 2026-01-01: the period is current at `now()`.
fn metered_ent(limit: Option<f64>) -> StoredEntitlement {
    StoredEntitlement {
        feature_type: "NUMBER".into(),
        meter_type: Some("INCREMENTAL".into()),
        usage_limit: limit,
        has_unlimited: false,
        has_soft_limit: false,
        period_anchor: Some(day(2026, 1, 1)),
        period_start: Some(day(2026, 11, 1)),
        period_end: Some(day(2026, 12, 1)),
        reset_period: Some("MONTH".into()),
        enum_values: None,
        credit_remaining: None,
    }
}

/// Usage reported in the current period [2026-11-01, 2026-12-01).
fn usage(current: f64) -> StoredUsage {
    StoredUsage {
        current_usage: current,
        period_start: Some(day(2026, 11, 1)),
        period_end: Some(day(2026, 12, 1)),
    }
}

/// A metered entitlement and usage whose period [2026-10-01, 2026-11-01) ended before
/// `now()`.
fn expired_ent(
    limit: f64,
    reset: Option<&str>,
    anchor: Option<DateTime<Utc>>,
) -> StoredEntitlement {
    StoredEntitlement {
        period_anchor: anchor,
        period_start: Some(day(2026, 10, 1)),
        period_end: Some(day(2026, 11, 1)),
        reset_period: reset.map(str::to_string),
        ..metered_ent(Some(limit))
    }
}

fn expired_usage(current: f64) -> StoredUsage {
    StoredUsage {
        current_usage: current,
        period_start: Some(day(2026, 10, 1)),
        period_end: Some(day(2026, 11, 1)),
    }
}

fn json(d: &Decision) -> Value {
    serde_json::to_value(d).expect("a Decision always serializes")
}

fn assert_allowed(d: &Decision) {
    assert!(d.has_access, "expected access, got {d:?}");
    assert_eq!(d.access_denied_reason, None, "{d:?}");
}

fn assert_denied(d: &Decision, reason: DenialReason) {
    assert!(!d.has_access, "expected denial {reason:?}, got {d:?}");
    assert_eq!(d.access_denied_reason, Some(reason), "{d:?}");
}

const ALL_KEYS: [&str; 13] = [
    "hasAccess",
    "accessDeniedReason",
    "isUnlimited",
    "hasSoftLimit",
    "usageLimit",
    "currentUsage",
    "requestedUsage",
    "resetPeriod",
    "usagePeriodStart",
    "usagePeriodEnd",
    "value",
    "enumValues",
    "requestedValues",
];

fn assert_exact_keys(v: &Value) {
    let obj = v.as_object().expect("the answer is a JSON object");
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = ALL_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "answer keys");
}

// ---------------------------------------------------------------------------------------
// rule 1: customer unknown or deleted

#[test]
fn rule1_unknown_customer_denied_customer_not_found() {
    let d = decide(&req("f"), &StoredAccess::default(), now());
    assert_denied(&d, DenialReason::CustomerNotFound);
}

#[test]
fn rule1_customer_not_found_wins_over_everything_else() {
    // A dead customer with an (impossible) allowing entitlement and a missing resource set.
    let state = StoredAccess {
        customer_live: false,
        ..with_ent(boolean_ent())
    };
    let request = AccessRequest {
        resource_id: Some("res-1".into()),
        ..req("f")
    };
    let d = decide(&request, &state, now());
    assert_denied(&d, DenialReason::CustomerNotFound);
}

// ---------------------------------------------------------------------------------------
// rule 2: resource without an entitlement set

#[test]
fn rule2_resource_without_set_denied_customer_resource_not_found() {
    // Even though the customer-level set would grant it (§7.7: no fallback).
    let state = StoredAccess {
        resource_set_exists: false,
        ..with_ent(boolean_ent())
    };
    let request = AccessRequest {
        resource_id: Some("res-1".into()),
        ..req("f")
    };
    let d = decide(&request, &state, now());
    assert_denied(&d, DenialReason::CustomerResourceNotFound);
}

#[test]
fn rule2_resource_with_set_is_decided_on_that_set() {
    let state = StoredAccess {
        resource_set_exists: true,
        ..with_ent(boolean_ent())
    };
    let request = AccessRequest {
        resource_id: Some("res-1".into()),
        ..req("f")
    };
    assert_allowed(&decide(&request, &state, now()));
}

#[test]
fn rule2_no_resource_requested_ignores_resource_set_flag() {
    let state = StoredAccess {
        resource_set_exists: false,
        ..with_ent(boolean_ent())
    };
    assert_allowed(&decide(&req("f"), &state, now()));
}

#[test]
fn rule2_resource_set_without_the_feature_is_rule3() {
    let state = StoredAccess {
        resource_set_exists: true,
        ..live()
    };
    let request = AccessRequest {
        resource_id: Some("res-1".into()),
        ..req("f")
    };
    let d = decide(&request, &state, now());
    assert_denied(&d, DenialReason::NoFeatureEntitlementInSubscription);
}

// ---------------------------------------------------------------------------------------
// rule 3: no entitlement for the feature

#[test]
fn rule3_no_subscription_and_no_entitlements_denied_no_active_subscription() {
    let state = StoredAccess {
        has_active_subscription: false,
        has_any_entitlement: false,
        ..live()
    };
    let d = decide(&req("f"), &state, now());
    assert_denied(&d, DenialReason::NoActiveSubscription);
}

#[test]
fn rule3_active_subscription_with_other_entitlements_denied_no_feature_entitlement() {
    let d = decide(&req("f"), &live(), now());
    assert_denied(&d, DenialReason::NoFeatureEntitlementInSubscription);
}

#[test]
fn rule3_active_subscription_but_no_entitlements_denied_no_feature_entitlement() {
    let state = StoredAccess {
        has_active_subscription: true,
        has_any_entitlement: false,
        ..live()
    };
    let d = decide(&req("f"), &state, now());
    assert_denied(&d, DenialReason::NoFeatureEntitlementInSubscription);
}

#[test]
fn rule3_no_subscription_but_entitlements_in_another_set_denied_no_feature_entitlement() {
    let state = StoredAccess {
        has_active_subscription: false,
        has_any_entitlement: true,
        ..live()
    };
    let d = decide(&req("f"), &state, now());
    assert_denied(&d, DenialReason::NoFeatureEntitlementInSubscription);
}

#[test]
fn rule3_denial_reports_no_entitlement_fields() {
    let d = decide(&req("f"), &live(), now());
    assert!(!d.is_unlimited && !d.has_soft_limit);
    assert_eq!(d.usage_limit, None);
    assert_eq!(d.current_usage, None);
    assert_eq!(d.value, None);
    assert_eq!(d.enum_values, None);
    assert_eq!(d.reset_period, None);
    assert_eq!(d.usage_period_start, None);
    assert_eq!(d.usage_period_end, None);
}

// ---------------------------------------------------------------------------------------
// rule 4: BOOLEAN

#[test]
fn rule4_boolean_allowed() {
    let d = decide(&req("f"), &with_ent(boolean_ent()), now());
    assert_allowed(&d);
    assert_eq!(d.usage_limit, None);
    assert_eq!(d.current_usage, None);
    assert_eq!(d.value, None);
    assert_eq!(d.enum_values, None);
}

#[test]
fn rule4_boolean_feature_type_is_case_insensitive() {
    let ent = StoredEntitlement {
        feature_type: "boolean".into(),
        ..Default::default()
    };
    assert_allowed(&decide(&req("f"), &with_ent(ent), now()));
}

#[test]
fn rule4_boolean_allowed_even_with_requested_usage() {
    let d = decide(&req_usage(1000.0), &with_ent(boolean_ent()), now());
    assert_allowed(&d);
    assert_eq!(d.requested_usage, 1000.0);
}

// ---------------------------------------------------------------------------------------
// rule 5: ENUM

#[test]
fn rule5_enum_subset_of_requested_values_allowed() {
    let d = decide(
        &req_values(Some(&["gold", "silver"])),
        &with_ent(enum_ent(&["bronze", "silver", "gold"])),
        now(),
    );
    assert_allowed(&d);
    assert_eq!(
        d.enum_values,
        Some(vec!["bronze".into(), "silver".into(), "gold".into()])
    );
    assert_eq!(
        d.requested_values,
        Some(vec!["gold".into(), "silver".into()])
    );
}

#[test]
fn rule5_enum_empty_requested_values_allowed() {
    let d = decide(
        &req_values(Some(&[])),
        &with_ent(enum_ent(&["gold"])),
        now(),
    );
    assert_allowed(&d);
    assert_eq!(d.requested_values, Some(vec![]));
}

#[test]
fn rule5_enum_no_requested_values_allowed() {
    let d = decide(&req_values(None), &with_ent(enum_ent(&["gold"])), now());
    assert_allowed(&d);
    assert_eq!(d.requested_values, None);
    assert_eq!(d.enum_values, Some(vec!["gold".into()]));
}

#[test]
fn rule5_enum_value_outside_set_denied_requested_values_mismatch() {
    let d = decide(
        &req_values(Some(&["gold", "platinum"])),
        &with_ent(enum_ent(&["bronze", "silver", "gold"])),
        now(),
    );
    assert_denied(&d, DenialReason::RequestedValuesMismatch);
    assert_eq!(d.enum_values.as_ref().map(Vec::len), Some(3));
}

#[test]
fn rule5_enum_values_compare_case_sensitively() {
    let d = decide(
        &req_values(Some(&["Gold"])),
        &with_ent(enum_ent(&["gold"])),
        now(),
    );
    assert_denied(&d, DenialReason::RequestedValuesMismatch);
}

#[test]
fn rule5_enum_without_stored_values_denies_any_requested_value() {
    let ent = StoredEntitlement {
        feature_type: "ENUM".into(),
        enum_values: None,
        ..Default::default()
    };
    let d = decide(&req_values(Some(&["gold"])), &with_ent(ent), now());
    assert_denied(&d, DenialReason::RequestedValuesMismatch);
}

// ---------------------------------------------------------------------------------------
// rule 6: unmetered (configuration) NUMBER

fn check_unmetered(meter_type: Option<&str>) {
    let d = decide(
        &req_usage(1_000_000.0),
        &with_ent(unmetered_ent(meter_type, Some(5.0))),
        now(),
    );
    assert_allowed(&d);
    assert_eq!(d.value, Some(5.0), "meterType {meter_type:?}");
    assert_eq!(d.usage_limit, Some(5.0), "meterType {meter_type:?}");
    assert_eq!(d.current_usage, None, "meterType {meter_type:?}");
    assert_eq!(d.reset_period, None, "meterType {meter_type:?}");
    assert_eq!(d.usage_period_start, None);
    assert_eq!(d.usage_period_end, None);
}

#[test]
fn rule6_unmetered_number_meter_type_null_allowed_with_value() {
    check_unmetered(None);
}

#[test]
fn rule6_unmetered_number_meter_type_none_capitalized_allowed_with_value() {
    check_unmetered(Some("None"));
}

#[test]
fn rule6_unmetered_number_meter_type_none_upper_allowed_with_value() {
    check_unmetered(Some("NONE"));
}

#[test]
fn rule6_unmetered_number_meter_type_none_lower_allowed_with_value() {
    check_unmetered(Some("none"));
}

#[test]
fn rule6_unmetered_number_with_null_limit_allowed_value_null() {
    let d = decide(&req("f"), &with_ent(unmetered_ent(None, None)), now());
    assert_allowed(&d);
    assert_eq!(d.value, None);
    assert_eq!(d.usage_limit, None);
}

#[test]
fn rule6_unmetered_number_ignores_stored_usage() {
    let state = with_ent_usage(unmetered_ent(Some("NONE"), Some(3.0)), usage(100.0));
    let d = decide(&req_usage(10.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.value, Some(3.0));
}

#[test]
fn is_metered_classifies_meter_types() {
    for unmetered in [
        None,
        Some("None"),
        Some("NONE"),
        Some("none"),
        Some(""),
        Some(" none "),
    ] {
        assert!(!is_metered(unmetered), "{unmetered:?} must be unmetered");
    }
    for metered in [
        Some("INCREMENTAL"),
        Some("FLUCTUATING"),
        Some("incremental"),
    ] {
        assert!(is_metered(metered), "{metered:?} must be metered");
    }
}

// ---------------------------------------------------------------------------------------
// rule 7: unlimited or soft limit

#[test]
fn rule7_unlimited_allowed_with_null_usage_limit() {
    // The Node reference denied this (`usageLimit: null` on an unlimited feature).
    let ent = StoredEntitlement {
        has_unlimited: true,
        ..metered_ent(None)
    };
    let d = decide(&req_usage(1e9), &with_ent_usage(ent, usage(50.0)), now());
    assert_allowed(&d);
    assert!(d.is_unlimited);
    assert_eq!(d.usage_limit, None);
    assert_eq!(d.current_usage, Some(50.0));
}

#[test]
fn rule7_unlimited_reports_null_usage_limit_even_if_one_is_stored() {
    let ent = StoredEntitlement {
        has_unlimited: true,
        ..metered_ent(Some(10.0))
    };
    let d = decide(&req_usage(100.0), &with_ent_usage(ent, usage(100.0)), now());
    assert_allowed(&d);
    assert_eq!(d.usage_limit, None);
}

#[test]
fn rule7_soft_limit_never_denies_even_far_over() {
    let ent = StoredEntitlement {
        has_soft_limit: true,
        ..metered_ent(Some(10.0))
    };
    let d = decide(&req_usage(1e12), &with_ent_usage(ent, usage(1e9)), now());
    assert_allowed(&d);
    assert!(d.has_soft_limit);
    assert!(!d.is_unlimited);
    assert_eq!(d.usage_limit, Some(10.0));
    assert_eq!(d.current_usage, Some(1e9));
}

#[test]
fn rule7_soft_limit_wins_over_exhausted_credits() {
    let ent = StoredEntitlement {
        has_soft_limit: true,
        credit_remaining: Some(0.0),
        ..metered_ent(Some(10.0))
    };
    assert_allowed(&decide(&req_usage(1.0), &with_ent(ent), now()));
}

#[test]
fn rule7_unlimited_wins_over_exhausted_credits() {
    let ent = StoredEntitlement {
        has_unlimited: true,
        credit_remaining: Some(-5.0),
        ..metered_ent(None)
    };
    assert_allowed(&decide(&req_usage(1.0), &with_ent(ent), now()));
}

// ---------------------------------------------------------------------------------------
// rule 8: credits

#[test]
fn rule8_zero_remaining_credits_denied_insufficient_credits() {
    let ent = StoredEntitlement {
        credit_remaining: Some(0.0),
        ..metered_ent(Some(100.0))
    };
    let d = decide(&req_usage(1.0), &with_ent_usage(ent, usage(0.0)), now());
    assert_denied(&d, DenialReason::InsufficientCredits);
}

#[test]
fn rule8_negative_remaining_credits_denied_insufficient_credits() {
    let ent = StoredEntitlement {
        credit_remaining: Some(-0.5),
        ..metered_ent(Some(100.0))
    };
    let d = decide(&req_usage(0.0), &with_ent(ent), now());
    assert_denied(&d, DenialReason::InsufficientCredits);
}

#[test]
fn rule8_positive_remaining_credits_allowed_within_limit() {
    let ent = StoredEntitlement {
        credit_remaining: Some(0.25),
        ..metered_ent(Some(100.0))
    };
    assert_allowed(&decide(&req_usage(1.0), &with_ent(ent), now()));
}

#[test]
fn rule8_positive_credits_still_subject_to_rule9_limit() {
    let ent = StoredEntitlement {
        credit_remaining: Some(1000.0),
        ..metered_ent(Some(10.0))
    };
    let d = decide(&req_usage(11.0), &with_ent(ent), now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
}

// ---------------------------------------------------------------------------------------
// rule 9: the limit

#[test]
fn rule9_within_limit_allowed() {
    let d = decide(
        &req_usage(3.0),
        &with_ent_usage(metered_ent(Some(10.0)), usage(4.0)),
        now(),
    );
    assert_allowed(&d);
    assert_eq!(d.usage_limit, Some(10.0));
    assert_eq!(d.current_usage, Some(4.0));
    assert_eq!(d.requested_usage, 3.0);
    assert_eq!(d.reset_period.as_deref(), Some("MONTH"));
    assert_eq!(d.usage_period_start, Some(day(2026, 11, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 12, 1)));
    assert_eq!(d.value, None);
}

#[test]
fn rule9_exactly_at_limit_with_zero_requested_allowed() {
    let d = decide(
        &req_usage(0.0),
        &with_ent_usage(metered_ent(Some(10.0)), usage(10.0)),
        now(),
    );
    assert_allowed(&d);
}

#[test]
fn rule9_at_limit_requesting_one_denied_exceeding_limit() {
    let d = decide(
        &req_usage(1.0),
        &with_ent_usage(metered_ent(Some(10.0)), usage(10.0)),
        now(),
    );
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
    assert_eq!(d.current_usage, Some(10.0));
    assert_eq!(d.usage_limit, Some(10.0));
}

#[test]
fn rule9_request_reaching_exactly_the_limit_allowed() {
    let d = decide(
        &req_usage(6.0),
        &with_ent_usage(metered_ent(Some(10.0)), usage(4.0)),
        now(),
    );
    assert_allowed(&d);
}

#[test]
fn rule9_over_limit_denied_exceeding_limit() {
    let d = decide(
        &req_usage(7.0),
        &with_ent_usage(metered_ent(Some(10.0)), usage(4.0)),
        now(),
    );
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
}

#[test]
fn rule9_fractional_usage_up_to_limit_allowed() {
    let d = decide(
        &req_usage(0.5),
        &with_ent_usage(metered_ent(Some(3.0)), usage(2.5)),
        now(),
    );
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(2.5));
}

#[test]
fn rule9_fractional_usage_past_limit_denied() {
    let d = decide(
        &req_usage(0.75),
        &with_ent_usage(metered_ent(Some(3.0)), usage(2.5)),
        now(),
    );
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
}

#[test]
fn rule9_fractional_limit() {
    let state = with_ent_usage(metered_ent(Some(1.5)), usage(1.25));
    assert_allowed(&decide(&req_usage(0.25), &state, now()));
    let d = decide(&req_usage(0.5), &state, now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
}

#[test]
fn rule9_null_limit_counts_as_zero_allows_zero_request() {
    let d = decide(&req_usage(0.0), &with_ent(metered_ent(None)), now());
    assert_allowed(&d);
    assert_eq!(d.usage_limit, None);
    assert_eq!(d.current_usage, Some(0.0));
}

#[test]
fn rule9_null_limit_counts_as_zero_denies_positive_request() {
    let d = decide(&req_usage(1.0), &with_ent(metered_ent(None)), now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
    assert_eq!(d.usage_limit, None);
}

#[test]
fn rule9_null_limit_with_usage_denied_even_with_zero_request() {
    let d = decide(
        &req_usage(0.0),
        &with_ent_usage(metered_ent(None), usage(1.0)),
        now(),
    );
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
}

#[test]
fn rule9_no_usage_row_counts_as_zero() {
    let d = decide(&req_usage(10.0), &with_ent(metered_ent(Some(10.0))), now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
}

#[test]
fn rule9_fluctuating_meter_is_metered() {
    let ent = StoredEntitlement {
        meter_type: Some("FLUCTUATING".into()),
        ..metered_ent(Some(2.0))
    };
    let d = decide(&req_usage(1.0), &with_ent_usage(ent, usage(2.0)), now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
}

#[test]
fn rule9_metered_without_any_period_uses_stored_usage() {
    let ent = StoredEntitlement {
        period_anchor: None,
        period_start: None,
        period_end: None,
        reset_period: None,
        ..metered_ent(Some(5.0))
    };
    let u = StoredUsage {
        current_usage: 5.0,
        period_start: None,
        period_end: None,
    };
    let d = decide(&req_usage(1.0), &with_ent_usage(ent, u), now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
    assert_eq!(d.current_usage, Some(5.0));
    assert_eq!(d.usage_period_start, None);
    assert_eq!(d.usage_period_end, None);
}

// ---------------------------------------------------------------------------------------
// unknown feature type

#[test]
fn unknown_feature_type_denied_feature_type_mismatch() {
    let ent = StoredEntitlement {
        feature_type: "STRING".into(),
        ..Default::default()
    };
    let d = decide(&req("f"), &with_ent(ent), now());
    assert_denied(&d, DenialReason::FeatureTypeMismatch);
}

#[test]
fn empty_feature_type_denied_feature_type_mismatch() {
    let d = decide(&req("f"), &with_ent(StoredEntitlement::default()), now());
    assert_denied(&d, DenialReason::FeatureTypeMismatch);
}

// ---------------------------------------------------------------------------------------
// expired usage period (§7.8)

#[test]
fn expired_period_reports_zero_usage_and_decides_on_zero() {
    // 10 of 10 used in October; now is in November: a new period began.
    let state = with_ent_usage(
        expired_ent(10.0, Some("MONTH"), Some(day(2026, 1, 1))),
        expired_usage(10.0),
    );
    let d = decide(&req_usage(5.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
    assert_eq!(d.usage_period_start, Some(day(2026, 11, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 12, 1)));
}

#[test]
fn expired_period_still_denies_request_above_limit() {
    let state = with_ent_usage(
        expired_ent(10.0, Some("MONTH"), Some(day(2026, 1, 1))),
        expired_usage(10.0),
    );
    let d = decide(&req_usage(11.0), &state, now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
    assert_eq!(d.current_usage, Some(0.0));
}

#[test]
fn expired_period_with_end_exactly_now_counts_as_expired() {
    let ent = StoredEntitlement {
        period_start: Some(at(2026, 10, 27, 12, 0)),
        period_end: Some(now()),
        period_anchor: Some(at(2026, 1, 27, 12, 0)),
        ..metered_ent(Some(1.0))
    };
    let u = StoredUsage {
        current_usage: 1.0,
        period_start: Some(at(2026, 10, 27, 12, 0)),
        period_end: Some(now()),
    };
    let d = decide(&req_usage(1.0), &with_ent_usage(ent, u), now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
    assert_eq!(d.usage_period_start, Some(now()));
    assert_eq!(d.usage_period_end, Some(at(2026, 12, 27, 12, 0)));
}

fn check_expired_rolls_forward(
    reset: &str,
    anchor: DateTime<Utc>,
    want_start: DateTime<Utc>,
    want_end: DateTime<Utc>,
) {
    let state = with_ent_usage(
        expired_ent(10.0, Some(reset), Some(anchor)),
        expired_usage(10.0),
    );
    let d = decide(&req_usage(1.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0), "{reset}");
    assert_eq!(d.reset_period.as_deref(), Some(reset));
    let (s, e) = (d.usage_period_start.unwrap(), d.usage_period_end.unwrap());
    assert!(
        s <= now() && now() < e,
        "{reset}: [{s}, {e}) must contain {}",
        now()
    );
    assert_eq!((s, e), (want_start, want_end), "{reset}");
}

#[test]
fn expired_period_rolls_forward_by_month_from_anchor() {
    check_expired_rolls_forward(
        "MONTH",
        at(2026, 2, 15, 8, 30),
        at(2026, 11, 15, 8, 30),
        at(2026, 12, 15, 8, 30),
    );
}

#[test]
fn expired_period_rolls_forward_by_month_from_jan_31_anchor() {
    check_expired_rolls_forward(
        "MONTH",
        day(2026, 1, 31),
        day(2026, 10, 31),
        day(2026, 11, 30),
    );
}

#[test]
fn expired_period_rolls_forward_by_week_from_anchor() {
    // 2026-11-02 is a Monday; now is 3 weeks, 4 days and 3 hours later.
    check_expired_rolls_forward(
        "WEEK",
        at(2026, 11, 2, 9, 0),
        at(2026, 11, 23, 9, 0),
        at(2026, 11, 30, 9, 0),
    );
}

#[test]
fn expired_period_rolls_forward_by_day_from_anchor() {
    check_expired_rolls_forward(
        "DAY",
        at(2026, 1, 1, 18, 0),
        at(2026, 11, 26, 18, 0),
        at(2026, 11, 27, 18, 0),
    );
}

#[test]
fn expired_period_rolls_forward_by_hour_from_anchor() {
    check_expired_rolls_forward(
        "HOUR",
        at(2026, 10, 1, 0, 15),
        at(2026, 11, 27, 11, 15),
        at(2026, 11, 27, 12, 15),
    );
}

#[test]
fn expired_period_rolls_forward_by_year_from_anchor() {
    check_expired_rolls_forward("YEAR", day(2025, 3, 1), day(2026, 3, 1), day(2027, 3, 1));
}

#[test]
fn expired_period_rolls_forward_by_year_from_leap_day_anchor() {
    check_expired_rolls_forward("YEAR", day(2024, 2, 29), day(2026, 2, 28), day(2027, 2, 28));
}

#[test]
fn expired_period_without_anchor_rolls_forward_from_period_end() {
    let state = with_ent_usage(expired_ent(10.0, Some("MONTH"), None), expired_usage(10.0));
    let d = decide(&req_usage(10.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
    assert_eq!(d.usage_period_start, Some(day(2026, 11, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 12, 1)));
}

#[test]
fn expired_period_without_reset_period_keeps_stored_period_and_zero_usage() {
    let state = with_ent_usage(
        expired_ent(10.0, None, Some(day(2026, 1, 1))),
        expired_usage(10.0),
    );
    let d = decide(&req_usage(10.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
    assert_eq!(d.reset_period, None);
    assert_eq!(d.usage_period_start, Some(day(2026, 10, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 11, 1)));
}

#[test]
fn expired_period_with_unknown_reset_period_keeps_stored_period_and_zero_usage() {
    let state = with_ent_usage(
        expired_ent(10.0, Some("FORTNIGHT"), Some(day(2026, 1, 1))),
        expired_usage(10.0),
    );
    let d = decide(&req_usage(10.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
    assert_eq!(d.usage_period_end, Some(day(2026, 11, 1)));
}

#[test]
fn usage_row_from_an_ended_period_counts_zero_in_current_entitlement_period() {
    // The entitlement already moved to November; the only usage row is October's.
    let state = with_ent_usage(metered_ent(Some(10.0)), expired_usage(10.0));
    let d = decide(&req_usage(10.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(0.0));
    assert_eq!(d.usage_period_start, Some(day(2026, 11, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 12, 1)));
}

#[test]
fn usage_row_with_later_period_than_entitlement_wins() {
    // The entitlement still carries October; the usage report already is in November.
    let ent = expired_ent(10.0, Some("MONTH"), Some(day(2026, 1, 1)));
    let state = with_ent_usage(ent, usage(7.0));
    let d = decide(&req_usage(3.0), &state, now());
    assert_allowed(&d);
    assert_eq!(d.current_usage, Some(7.0));
    assert_eq!(d.usage_period_start, Some(day(2026, 11, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 12, 1)));
    let d = decide(&req_usage(4.0), &state, now());
    assert_denied(&d, DenialReason::RequestedUsageExceedingLimit);
    assert_eq!(d.current_usage, Some(7.0));
}

#[test]
fn usage_row_with_earlier_period_does_not_replace_entitlement_period() {
    let state = with_ent_usage(metered_ent(Some(10.0)), expired_usage(3.0));
    let d = decide(&req("f"), &state, now());
    assert_eq!(d.usage_period_start, Some(day(2026, 11, 1)));
    assert_eq!(d.usage_period_end, Some(day(2026, 12, 1)));
}

// ---------------------------------------------------------------------------------------
// roll_forward

#[test]
fn roll_forward_month() {
    let got = roll_forward(at(2026, 1, 15, 8, 30), "MONTH", now());
    assert_eq!(
        got,
        Some((at(2026, 11, 15, 8, 30), at(2026, 12, 15, 8, 30)))
    );
}

#[test]
fn roll_forward_month_is_case_insensitive() {
    let got = roll_forward(at(2026, 1, 15, 8, 30), "month", now());
    assert_eq!(
        got,
        Some((at(2026, 11, 15, 8, 30), at(2026, 12, 15, 8, 30)))
    );
}

#[test]
fn roll_forward_month_jan_31_anchor_clamps_to_month_end() {
    // Each boundary is counted from the anchor, so it returns to the 31st when it can.
    assert_eq!(
        roll_forward(day(2026, 1, 31), "MONTH", at(2026, 2, 28, 12, 0)),
        Some((day(2026, 2, 28), day(2026, 3, 31)))
    );
    assert_eq!(
        roll_forward(day(2026, 1, 31), "MONTH", at(2026, 2, 27, 12, 0)),
        Some((day(2026, 1, 31), day(2026, 2, 28)))
    );
    assert_eq!(
        roll_forward(day(2026, 1, 31), "MONTH", at(2026, 4, 15, 0, 0)),
        Some((day(2026, 3, 31), day(2026, 4, 30)))
    );
    assert_eq!(
        roll_forward(day(2026, 1, 31), "MONTH", now()),
        Some((day(2026, 10, 31), day(2026, 11, 30)))
    );
}

#[test]
fn roll_forward_month_jan_31_anchor_in_leap_year() {
    assert_eq!(
        roll_forward(day(2024, 1, 31), "MONTH", at(2024, 3, 1, 0, 0)),
        Some((day(2024, 2, 29), day(2024, 3, 31)))
    );
}

// Regression: roll_forward once estimated the period index as `days / 28 / step - 2` and
// only corrected upwards, so anchors more than ~2 years (MONTH) / ~23 years (YEAR) before
// `now` got a period starting after `now` (here (2026-12-31, 2027-01-31)). Fixed in
// src/access.rs by estimating with 31-day months.
#[test]
fn roll_forward_month_anchor_years_before_now() {
    assert_eq!(
        roll_forward(day(2023, 3, 31), "MONTH", now()),
        Some((day(2026, 10, 31), day(2026, 11, 30)))
    );
}

// Regression (same fix, YEAR step): used to return (2027-01-01, 2028-01-01).
#[test]
fn roll_forward_year_anchor_decades_before_now() {
    assert_eq!(
        roll_forward(day(2000, 1, 1), "YEAR", now()),
        Some((day(2026, 1, 1), day(2027, 1, 1)))
    );
}

// Regression (same fix, seen through decide): a monthly subscription that started on
// 2023-03-31 used to report a usage period that had not begun yet.
#[test]
fn expired_period_rolls_forward_by_month_from_anchor_years_ago() {
    check_expired_rolls_forward(
        "MONTH",
        day(2023, 3, 31),
        day(2026, 10, 31),
        day(2026, 11, 30),
    );
}

#[test]
fn roll_forward_year() {
    assert_eq!(
        roll_forward(at(2020, 6, 15, 10, 0), "YEAR", now()),
        Some((at(2026, 6, 15, 10, 0), at(2027, 6, 15, 10, 0)))
    );
}

#[test]
fn roll_forward_week() {
    assert_eq!(
        roll_forward(at(2026, 11, 2, 9, 0), "WEEK", now()),
        Some((at(2026, 11, 23, 9, 0), at(2026, 11, 30, 9, 0)))
    );
}

#[test]
fn roll_forward_day() {
    assert_eq!(
        roll_forward(at(2020, 1, 1, 18, 0), "DAY", now()),
        Some((at(2026, 11, 26, 18, 0), at(2026, 11, 27, 18, 0)))
    );
}

#[test]
fn roll_forward_hour() {
    assert_eq!(
        roll_forward(at(2026, 11, 27, 0, 15), "HOUR", now()),
        Some((at(2026, 11, 27, 11, 15), at(2026, 11, 27, 12, 15)))
    );
}

#[test]
fn roll_forward_now_on_a_boundary_starts_the_new_period() {
    assert_eq!(
        roll_forward(at(2026, 11, 20, 12, 0), "DAY", now()),
        Some((now(), at(2026, 11, 28, 12, 0)))
    );
    assert_eq!(
        roll_forward(at(2026, 1, 27, 12, 0), "MONTH", now()),
        Some((now(), at(2026, 12, 27, 12, 0)))
    );
    assert_eq!(
        roll_forward(now(), "HOUR", now()),
        Some((now(), at(2026, 11, 27, 13, 0)))
    );
}

#[test]
fn roll_forward_unknown_reset_period_is_none() {
    assert_eq!(roll_forward(day(2026, 1, 1), "FORTNIGHT", now()), None);
    assert_eq!(roll_forward(day(2026, 1, 1), "", now()), None);
}

// Regression: the fixed-step branch once used unchecked `start + step` and panicked within
// one step of DateTime::MAX_UTC / MIN_UTC instead of returning None.
#[test]
fn roll_forward_near_max_time_returns_none_instead_of_panicking() {
    let max = DateTime::<Utc>::MAX_UTC;
    let got = std::panic::catch_unwind(|| roll_forward(max - Duration::minutes(30), "HOUR", max));
    assert!(got.is_ok(), "roll_forward panicked near DateTime::MAX_UTC");
}

// ---------------------------------------------------------------------------------------
// serialization (§7.12)

#[test]
fn serialization_denial_has_every_key_with_nulls() {
    let v = json(&decide(&req("f"), &StoredAccess::default(), now()));
    assert_exact_keys(&v);
    assert_eq!(v["hasAccess"], Value::Bool(false));
    assert_eq!(v["accessDeniedReason"], Value::from("CustomerNotFound"));
    assert_eq!(v["isUnlimited"], Value::Bool(false));
    assert_eq!(v["hasSoftLimit"], Value::Bool(false));
    for k in [
        "usageLimit",
        "currentUsage",
        "resetPeriod",
        "usagePeriodStart",
        "usagePeriodEnd",
        "value",
        "enumValues",
        "requestedValues",
    ] {
        assert_eq!(v[k], Value::Null, "{k} must be null");
    }
    assert_eq!(v["requestedUsage"].to_string(), "0");
}

#[test]
fn serialization_boolean_allow_has_every_key() {
    let v = json(&decide(&req("f"), &with_ent(boolean_ent()), now()));
    assert_exact_keys(&v);
    assert_eq!(v["hasAccess"], Value::Bool(true));
    assert_eq!(v["accessDeniedReason"], Value::Null);
    assert_eq!(v["usageLimit"], Value::Null);
    assert_eq!(v["value"], Value::Null);
}

#[test]
fn serialization_every_denial_reason_is_its_stigg_name() {
    for reason in [
        DenialReason::CustomerNotFound,
        DenialReason::CustomerResourceNotFound,
        DenialReason::NoActiveSubscription,
        DenialReason::NoFeatureEntitlementInSubscription,
        DenialReason::RequestedValuesMismatch,
        DenialReason::InsufficientCredits,
        DenialReason::RequestedUsageExceedingLimit,
        DenialReason::FeatureTypeMismatch,
    ] {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            Value::from(reason.as_str())
        );
        assert_eq!(format!("{reason:?}"), reason.as_str());
    }
}

#[test]
fn serialization_metered_has_every_key_integers_and_millis_times() {
    let d = decide(
        &req_usage(3.0),
        &with_ent_usage(metered_ent(Some(5.0)), usage(2.0)),
        now(),
    );
    let v = json(&d);
    assert_exact_keys(&v);
    assert_eq!(v["hasAccess"], Value::Bool(true));
    assert_eq!(v["usageLimit"].to_string(), "5");
    assert_eq!(v["currentUsage"].to_string(), "2");
    assert_eq!(v["requestedUsage"].to_string(), "3");
    assert!(v["usageLimit"].is_i64() || v["usageLimit"].is_u64());
    assert_eq!(v["resetPeriod"], Value::from("MONTH"));
    assert_eq!(
        v["usagePeriodStart"],
        Value::from("2026-11-01T00:00:00.000Z")
    );
    assert_eq!(v["usagePeriodEnd"], Value::from("2026-12-01T00:00:00.000Z"));
    assert_eq!(v["value"], Value::Null);
    assert_eq!(v["enumValues"], Value::Null);
    assert_eq!(v["requestedValues"], Value::Null);
}

#[test]
fn serialization_whole_json_text_has_no_trailing_point_zero() {
    let d = decide(
        &req_usage(0.0),
        &with_ent_usage(metered_ent(Some(5.0)), usage(5.0)),
        now(),
    );
    let text = serde_json::to_string(&d).unwrap();
    assert!(!text.contains(".0,") && !text.contains(".0}"), "{text}");
    assert!(text.contains("\"usageLimit\":5,"), "{text}");
    assert!(text.contains("\"currentUsage\":5,"), "{text}");
    assert!(text.contains("\"requestedUsage\":0,"), "{text}");
}

#[test]
fn serialization_fractions_stay_fractions() {
    let d = decide(
        &req_usage(0.5),
        &with_ent_usage(metered_ent(Some(2.25)), usage(1.5)),
        now(),
    );
    let v = json(&d);
    assert_eq!(v["usageLimit"].to_string(), "2.25");
    assert_eq!(v["currentUsage"].to_string(), "1.5");
    assert_eq!(v["requestedUsage"].to_string(), "0.5");
}

#[test]
fn serialization_times_are_rfc3339_millis_z() {
    let ent = StoredEntitlement {
        period_start: Some(Utc.with_ymd_and_hms(2026, 11, 1, 3, 4, 5).unwrap()),
        period_end: Some(
            Utc.with_ymd_and_hms(2026, 12, 1, 3, 4, 5).unwrap() + Duration::microseconds(123_456),
        ),
        ..metered_ent(Some(5.0))
    };
    let v = json(&decide(&req("f"), &with_ent(ent), now()));
    assert_eq!(
        v["usagePeriodStart"],
        Value::from("2026-11-01T03:04:05.000Z")
    );
    assert_eq!(v["usagePeriodEnd"], Value::from("2026-12-01T03:04:05.123Z"));
}

#[test]
fn serialization_unmetered_value_is_the_limit_and_usage_null() {
    let v = json(&decide(
        &req("f"),
        &with_ent(unmetered_ent(Some("NONE"), Some(5.0))),
        now(),
    ));
    assert_exact_keys(&v);
    assert_eq!(v["value"].to_string(), "5");
    assert_eq!(v["usageLimit"].to_string(), "5");
    assert_eq!(v["currentUsage"], Value::Null);
    assert_eq!(v["resetPeriod"], Value::Null);
    assert_eq!(v["usagePeriodStart"], Value::Null);
}

#[test]
fn serialization_unlimited_is_boolean_true_and_limit_null() {
    let ent = StoredEntitlement {
        has_unlimited: true,
        ..metered_ent(None)
    };
    let v = json(&decide(&req("f"), &with_ent(ent), now()));
    assert_exact_keys(&v);
    assert_eq!(v["isUnlimited"], Value::Bool(true));
    assert_eq!(v["hasSoftLimit"], Value::Bool(false));
    assert_eq!(v["usageLimit"], Value::Null);
    assert_eq!(v["currentUsage"].to_string(), "0");
}

#[test]
fn serialization_enum_lists() {
    let d = decide(
        &req_values(Some(&["gold"])),
        &with_ent(enum_ent(&["gold", "silver"])),
        now(),
    );
    let v = json(&d);
    assert_exact_keys(&v);
    assert_eq!(v["enumValues"], serde_json::json!(["gold", "silver"]));
    assert_eq!(v["requestedValues"], serde_json::json!(["gold"]));
}

#[test]
fn serialization_requested_usage_echoed_on_denial() {
    let v = json(&decide(&req_usage(2.5), &live(), now()));
    assert_eq!(v["requestedUsage"].to_string(), "2.5");
    let v = json(&decide(&req_usage(7.0), &StoredAccess::default(), now()));
    assert_eq!(v["requestedUsage"].to_string(), "7");
}

#[test]
fn serialization_requested_usage_zero_when_omitted() {
    let v = json(&decide(&req("f"), &with_ent(metered_ent(Some(1.0))), now()));
    assert_eq!(v["requestedUsage"], Value::from(0));
    assert_eq!(v["requestedUsage"].to_string(), "0");
}

#[test]
fn serialization_large_integral_number_stays_integer() {
    let d = decide(&req("f"), &with_ent(unmetered_ent(None, Some(1e15))), now());
    let v = json(&d);
    assert_eq!(v["value"].to_string(), "1000000000000000");
}

// ---------------------------------------------------------------------------------------
// property tests

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // Never write proptest-regressions/ files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A usage/limit amount: integral or fractional, 0 to 1e6.
fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u32..1_000).prop_map(f64::from),
        (0u32..4_000_000).prop_map(|q| f64::from(q) / 4.0),
        0.0..1e6f64,
    ]
}

/// Any instant chrono can represent, with the extremes and common values over-weighted.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        Just(now()),
        (min..=max, 0u32..1_000_000_000)
            .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap()),
        // around now
        (-400_000_000i64..400_000_000).prop_map(|s| now() + Duration::seconds(s)),
    ]
}

/// A `now` the clock can produce (years 1970–9999).
fn clock_time() -> impl Strategy<Value = DateTime<Utc>> {
    let max = day(9999, 12, 31).timestamp();
    prop_oneof![
        Just(now()),
        (0..=max).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        amount(),
    ]
}

fn label(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(known).prop_map(str::to_string),
        any::<String>(),
    ]
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        proptest::collection::vec(label(&["gold", "silver", "bronze"]), 0..4),
        proptest::collection::vec(any::<String>(), 0..4),
    ]
}

fn any_entitlement() -> impl Strategy<Value = StoredEntitlement> {
    (
        (
            label(&["BOOLEAN", "NUMBER", "ENUM", "number", "boolean"]),
            proptest::option::of(label(&[
                "INCREMENTAL",
                "FLUCTUATING",
                "None",
                "NONE",
                "none",
            ])),
            proptest::option::of(any_f64()),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            proptest::option::of(any_time()),
            proptest::option::of(any_time()),
            proptest::option::of(any_time()),
            proptest::option::of(label(&["YEAR", "MONTH", "WEEK", "DAY", "HOUR"])),
            proptest::option::of(strings()),
            proptest::option::of(any_f64()),
        ),
    )
        .prop_map(
            |(
                (feature_type, meter_type, usage_limit, has_unlimited, has_soft_limit),
                (period_anchor, period_start, period_end, reset_period, enum_values, credit),
            )| StoredEntitlement {
                feature_type,
                meter_type,
                usage_limit,
                has_unlimited,
                has_soft_limit,
                period_anchor,
                period_start,
                period_end,
                reset_period,
                enum_values,
                credit_remaining: credit,
            },
        )
}

fn any_usage() -> impl Strategy<Value = StoredUsage> {
    (
        any_f64(),
        proptest::option::of(any_time()),
        proptest::option::of(any_time()),
    )
        .prop_map(|(current_usage, period_start, period_end)| StoredUsage {
            current_usage,
            period_start,
            period_end,
        })
}

fn any_state() -> impl Strategy<Value = StoredAccess> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any_entitlement()),
        proptest::option::of(any_usage()),
    )
        .prop_map(
            |(live, res, sub, any_ent, entitlement, usage)| StoredAccess {
                customer_live: live,
                resource_set_exists: res,
                has_active_subscription: sub,
                has_any_entitlement: any_ent,
                entitlement,
                usage,
            },
        )
}

fn any_request() -> impl Strategy<Value = AccessRequest> {
    (
        any::<String>(),
        any::<String>(),
        proptest::option::of(any::<String>()),
        any_f64(),
        proptest::option::of(strings()),
    )
        .prop_map(
            |(customer_id, feature_id, resource_id, requested_usage, requested_values)| {
                AccessRequest {
                    customer_id,
                    feature_id,
                    resource_id,
                    requested_usage,
                    requested_values,
                }
            },
        )
}

/// A time in [2000-01-01, 2031-01-01).
fn anchor_2000_2030() -> impl Strategy<Value = DateTime<Utc>> {
    let lo = day(2000, 1, 1).timestamp();
    let hi = day(2031, 1, 1).timestamp();
    prop_oneof![
        (lo..hi).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        // month ends, the hardest anchors for calendar steps
        (2000i32..=2030, 1u32..=12, 28u32..=31, 0u32..24)
            .prop_filter_map("valid date", |(y, m, d, h)| Utc
                .with_ymd_and_hms(y, m, d, h, 0, 0)
                .single()),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// (a) A metered limited feature in a current period: allowed iff current + requested
    /// fits the limit.
    #[test]
    fn prop_metered_limited_allows_iff_within_limit(
        current in amount(),
        requested in amount(),
        limit in amount(),
        credit in proptest::option::of(0.001..1e6f64),
    ) {
        let ent = StoredEntitlement { credit_remaining: credit, ..metered_ent(Some(limit)) };
        let d = decide(&req_usage(requested), &with_ent_usage(ent, usage(current)), now());
        prop_assert_eq!(d.has_access, current + requested <= limit);
        prop_assert_eq!(d.current_usage, Some(current));
        prop_assert_eq!(d.usage_limit, Some(limit));
        prop_assert_eq!(d.requested_usage, requested);
        if d.has_access {
            prop_assert_eq!(d.access_denied_reason, None);
        } else {
            prop_assert_eq!(
                d.access_denied_reason,
                Some(DenialReason::RequestedUsageExceedingLimit)
            );
        }
    }

    /// (b) A soft-limit or unlimited metered feature is always allowed, whatever the usage,
    /// limit, credits or period.
    #[test]
    fn prop_soft_limit_or_unlimited_always_allowed(
        current in any_f64(),
        requested in any_f64(),
        limit in proptest::option::of(any_f64()),
        credit in proptest::option::of(any_f64()),
        flags in prop_oneof![Just((true, false)), Just((false, true)), Just((true, true))],
        expired in any::<bool>(),
        meter in label(&["INCREMENTAL", "FLUCTUATING"]).prop_filter(
            "metered", |m| is_metered(Some(m))
        ),
    ) {
        let (has_unlimited, has_soft_limit) = flags;
        let base = if expired {
            expired_ent(0.0, Some("MONTH"), Some(day(2026, 1, 1)))
        } else {
            metered_ent(None)
        };
        let ent = StoredEntitlement {
            meter_type: Some(meter),
            usage_limit: limit,
            credit_remaining: credit,
            has_unlimited,
            has_soft_limit,
            ..base
        };
        let d = decide(&req_usage(requested), &with_ent_usage(ent, usage(current)), now());
        prop_assert!(d.has_access, "{:?}", d);
        prop_assert_eq!(d.access_denied_reason, None);
        prop_assert_eq!(d.is_unlimited, has_unlimited);
        prop_assert_eq!(d.has_soft_limit, has_soft_limit);
    }

    /// (c) decide never panics, on any stored state and request, and its answer always
    /// serializes to an object with exactly the 13 keys. `now` is one the clock can produce;
    /// stored times span chrono's whole range.
    #[test]
    fn prop_decide_never_panics(
        request in any_request(),
        state in any_state(),
        at_time in clock_time(),
    ) {
        let d = decide(&request, &state, at_time);
        prop_assert_eq!(d.has_access, d.access_denied_reason.is_none());
        let v = serde_json::to_value(&d).unwrap();
        let obj = v.as_object().unwrap();
        prop_assert_eq!(obj.len(), 13);
        for k in ALL_KEYS {
            prop_assert!(obj.contains_key(k), "missing {}", k);
        }
    }

    /// (d) For WEEK/DAY/HOUR: start <= now < end, end - start is the step, and start is a
    /// whole number of steps after the anchor.
    #[test]
    fn prop_roll_forward_fixed_steps_contain_now(
        anchor in anchor_2000_2030(),
        after in 0i64..(40 * 366 * 86_400),
        step in proptest::sample::select(vec!["WEEK", "DAY", "HOUR"]),
    ) {
        let at_time = anchor + Duration::seconds(after);
        let (s, e) = roll_forward(anchor, step, at_time).expect("a known step");
        let len = match step {
            "WEEK" => Duration::weeks(1),
            "DAY" => Duration::days(1),
            _ => Duration::hours(1),
        };
        prop_assert!(s <= at_time && at_time < e, "[{}, {}) must contain {}", s, e, at_time);
        prop_assert_eq!(e - s, len);
        prop_assert_eq!((s - anchor).num_seconds() % len.num_seconds(), 0);
    }

    /// (d) For MONTH/YEAR: start <= now < end, the period is one calendar step long, and
    /// both bounds keep the anchor's time of day.
    // Found the 28-day-estimate regression above (minimal case: anchor 2000-01-01,
    // now 2002-06-15, MONTH -> [2002-07-01, 2002-08-01)).
    #[test]
    fn prop_roll_forward_calendar_steps_contain_now(
        anchor in anchor_2000_2030(),
        after in 0i64..(40 * 366 * 86_400),
        step in proptest::sample::select(vec!["MONTH", "YEAR"]),
    ) {
        let at_time = anchor + Duration::seconds(after);
        let (s, e) = roll_forward(anchor, step, at_time).expect("a known step");
        prop_assert!(s <= at_time && at_time < e, "[{}, {}) must contain {} (anchor {})",
            s, e, at_time, anchor);
        let days = (e - s).num_days();
        if step == "MONTH" {
            prop_assert!((28..=31).contains(&days), "month of {} days", days);
        } else {
            prop_assert!((365..=366).contains(&days), "year of {} days", days);
        }
        prop_assert_eq!(s.time(), anchor.time());
        prop_assert_eq!(e.time(), anchor.time());
    }
}
