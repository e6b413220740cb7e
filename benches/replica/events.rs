//! The event generator: messages shaped like `tests/fixtures/*.json`, from a fixed seed, about
//! the 8 features that the access and sync databases also use.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// A feature of the bench's entitlements; sync.rs serves the same 8.
pub(super) struct Feature {
    pub(super) id: &'static str,
    pub(super) name: &'static str,
    pub(super) feature_type: &'static str,
    pub(super) meter: Option<&'static str>,
    pub(super) unit: &'static str,
    pub(super) limit: Option<f64>,
    pub(super) unlimited: bool,
    pub(super) soft: bool,
    pub(super) monthly: bool,
    pub(super) enum_values: Option<&'static [&'static str]>,
}

pub(super) const FEATURES: [Feature; 8] = [
    Feature {
        id: "feature-sso",
        name: "Single sign-on",
        feature_type: "BOOLEAN",
        meter: None,
        unit: "",
        limit: None,
        unlimited: false,
        soft: false,
        monthly: false,
        enum_values: None,
    },
    Feature {
        id: "feature-max-projects",
        name: "Projects",
        feature_type: "NUMBER",
        meter: None,
        unit: "project",
        limit: Some(25.0),
        unlimited: false,
        soft: false,
        monthly: false,
        enum_values: None,
    },
    Feature {
        id: "feature-api-calls",
        name: "API calls",
        feature_type: "NUMBER",
        meter: Some("INCREMENTAL"),
        unit: "call",
        limit: Some(10_000.0),
        unlimited: false,
        soft: false,
        monthly: true,
        enum_values: None,
    },
    Feature {
        id: "feature-seats",
        name: "Seats",
        feature_type: "NUMBER",
        meter: Some("FLUCTUATING"),
        unit: "seat",
        limit: Some(15.0),
        unlimited: false,
        soft: false,
        monthly: false,
        enum_values: None,
    },
    Feature {
        id: "feature-storage-gb",
        name: "Storage",
        feature_type: "NUMBER",
        meter: Some("FLUCTUATING"),
        unit: "gigabyte",
        limit: None,
        unlimited: true,
        soft: false,
        monthly: false,
        enum_values: None,
    },
    Feature {
        id: "feature-emails",
        name: "Emails sent",
        feature_type: "NUMBER",
        meter: Some("INCREMENTAL"),
        unit: "email",
        limit: Some(500.0),
        unlimited: false,
        soft: true,
        monthly: true,
        enum_values: None,
    },
    Feature {
        id: "feature-region",
        name: "Data region",
        feature_type: "ENUM",
        meter: None,
        unit: "",
        limit: None,
        unlimited: false,
        soft: false,
        monthly: false,
        enum_values: Some(&["us", "eu"]),
    },
    Feature {
        id: "feature-page-views",
        name: "Page views",
        feature_type: "NUMBER",
        meter: Some("INCREMENTAL"),
        unit: "view",
        limit: Some(100_000.0),
        unlimited: false,
        soft: false,
        monthly: true,
        enum_values: None,
    },
];

/// Features measurements are reported for.
const METERED: [usize; 5] = [2, 3, 4, 5, 7];

pub(super) struct Generated {
    /// Message bodies in delivery order (duplicates included).
    pub(super) bodies: Vec<String>,
    pub(super) distinct: usize,
    pub(super) customers: usize,
    pub(super) by_type: BTreeMap<&'static str, usize>,
}

/// 2026-11-02T10:00:00Z
pub(super) const T0_MS: i64 = 1_793_613_600_000;
/// Spacing of event times; distinct times make the final state independent of order.
const STEP_MS: i64 = 20;
/// Delivery order: each event is delivered as if sent up to this much later, so events
/// close in time overtake one another (stale versions arrive after newer ones).
const JITTER_MS: i64 = 3_000;
pub(super) const PERIOD_ANCHOR: &str = "2026-10-01T09:05:00.000Z";
pub(super) const PERIOD_START: &str = "2026-11-01T09:05:00.000Z";
pub(super) const PERIOD_END: &str = "2026-12-01T09:05:00.000Z";

pub(super) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn uuid(rng: &mut StdRng) -> String {
    let n: u128 = rng.random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[derive(Default)]
struct CustomerState {
    created: bool,
    customer_version: u32,
    subscriptions: u32,
    usage: HashMap<usize, f64>,
}

pub(super) fn customer_id(c: usize) -> String {
    format!("bench-cust-{c:05}")
}

fn embedded_customer(c: usize, with_entity: bool) -> Value {
    let mut v = json!({
        "id": customer_id(c),
        "name": format!("Customer {c}"),
        "email": format!("billing+{c}@customer{c}.example"),
        "billingId": format!("cus_{c:06}"),
    });
    if with_entity {
        v["entityId"] = json!(format!("3f1c9a52-7d0e-4b8a-9c11-{c:012}"));
    }
    v
}

fn feature_json(f: &Feature) -> Value {
    json!({
        "entityId": format!("f-{}", f.id),
        "id": f.id,
        "name": f.name,
        "description": "",
        "featureType": f.feature_type,
        "meterType": f.meter,
        "unit": f.unit,
        "units": if f.unit.is_empty() { String::new() } else { format!("{}s", f.unit) },
        "status": "ACTIVE",
        "enumConfiguration": f.enum_values.map(|vs| vs.iter().chain(["ap"].iter())
            .map(|v| json!({"value": v, "displayName": v.to_uppercase()})).collect::<Vec<_>>()),
    })
}

/// `n` messages, 5% of them duplicates, the same for the same `seed`.
pub(super) fn generate(n: usize, seed: u64) -> Generated {
    let mut rng = StdRng::seed_from_u64(seed);
    let duplicates = n / 20;
    let distinct = n - duplicates;
    let customers = (distinct / 8).clamp(50, 5_000);
    let hot = (customers / 20).max(1);
    let mut state: Vec<CustomerState> = (0..customers).map(|_| CustomerState::default()).collect();
    let mut by_type: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut keyed: Vec<(i64, String)> = Vec::with_capacity(n);

    for i in 0..distinct {
        let t = T0_MS + i as i64 * STEP_MS;
        // a few hot customers get 30% of the traffic
        let c = if rng.random_bool(0.3) {
            rng.random_range(0..hot)
        } else {
            rng.random_range(0..customers)
        };
        let message_id = uuid(&mut rng);
        let envelope = |kind: &str, rng: &mut StdRng| -> Value {
            json!({
                "type": kind,
                "messageId": message_id,
                "traceId": format!("tr-{:x}", rng.random::<u64>()),
                "accountId": "acc-7f3e21",
                "environmentId": "env-5b9c40",
                "timestamp": iso(t),
            })
        };
        let r = rng.random_range(0..1000);
        let (kind, body): (&'static str, Value) = match r {
            0..600 => {
                let f = *METERED.choose(&mut rng).expect("metered features");
                let feature = &FEATURES[f];
                let st = &mut state[c];
                let prev = st.usage.get(&f).copied().unwrap_or(0.0);
                let (usage, change) = if feature.meter == Some("INCREMENTAL") {
                    let d = rng.random_range(1..200) as f64;
                    (prev + d, d)
                } else {
                    let next = (prev + rng.random_range(-3..=4) as f64).max(0.0);
                    (next, next - prev)
                };
                st.usage.insert(f, usage);
                let mut v = envelope("measurement.reported", &mut rng);
                let o = v.as_object_mut().expect("object");
                o.insert("currentChange".into(), json!(change));
                o.insert("currentUsage".into(), json!(usage));
                o.insert(
                    "usageUsedPercentage".into(),
                    json!(feature.limit.map(|l| (usage / l * 1000.0).round() / 10.0)),
                );
                o.insert("hasUnlimitedUsage".into(), json!(feature.unlimited));
                o.insert("hasSoftLimit".into(), json!(feature.soft));
                o.insert("usageLimit".into(), json!(feature.limit));
                let (anchor, start, end, reset) = if feature.monthly {
                    (
                        json!(PERIOD_ANCHOR),
                        json!(PERIOD_START),
                        json!(PERIOD_END),
                        json!("MONTH"),
                    )
                } else {
                    (Value::Null, Value::Null, Value::Null, Value::Null)
                };
                o.insert("usagePeriodAnchor".into(), anchor);
                o.insert("usagePeriodStart".into(), start);
                o.insert("usagePeriodEnd".into(), end);
                o.insert("resetPeriod".into(), reset.clone());
                o.insert(
                    "resetPeriodConfiguration".into(),
                    if reset.is_null() {
                        Value::Null
                    } else {
                        json!({"accordingTo": "SubscriptionStart"})
                    },
                );
                o.insert("feature".into(), feature_json(feature));
                o.insert("customer".into(), embedded_customer(c, true));
                o.insert("resource".into(), Value::Null);
                o.insert(
                    "activeSubscriptions".into(),
                    json!([{
                        "id": format!("sub-{}-1", customer_id(c)),
                        "startDate": PERIOD_ANCHOR,
                        "plan": {"id": "plan-pro", "name": "Pro"},
                        "addons": [],
                        "metadata": {}
                    }]),
                );
                ("measurement.reported", v)
            }
            600..850 => {
                let k = rng.random_range(5..=8);
                let mut idx: Vec<usize> = (0..FEATURES.len()).collect();
                idx.shuffle(&mut rng);
                idx.truncate(k);
                idx.sort_unstable();
                let st = &state[c];
                let ents: Vec<Value> = idx
                    .iter()
                    .map(|&f| {
                        let feature = &FEATURES[f];
                        let monthly = feature.monthly;
                        json!({
                            "feature": feature_json(feature),
                            "usageLimit": feature.limit,
                            "hasUnlimitedUsage": feature.unlimited,
                            "hasSoftLimit": feature.soft,
                            "currentUsage": st.usage.get(&f).copied().unwrap_or(0.0),
                            "usagePeriodAnchor": if monthly { json!(PERIOD_ANCHOR) } else { Value::Null },
                            "usagePeriodStart": if monthly { json!(PERIOD_START) } else { Value::Null },
                            "usagePeriodEnd": if monthly { json!(PERIOD_END) } else { Value::Null },
                            "resetPeriod": if monthly { json!("MONTH") } else { Value::Null },
                            "resetPeriodConfiguration": if monthly { json!({"accordingTo": "SubscriptionStart"}) } else { Value::Null },
                            "enumValues": feature.enum_values,
                            "creditBalance": Value::Null,
                        })
                    })
                    .collect();
                let mut v = envelope("entitlements.updated", &mut rng);
                let o = v.as_object_mut().expect("object");
                o.insert("eventId".into(), json!(format!("ev-{i}")));
                o.insert("actor".into(), json!({"type": "SYSTEM"}));
                o.insert("entitlementsUpdatedAt".into(), json!(iso(t - 10)));
                o.insert("trigger".into(), json!("subscription_updated"));
                o.insert("customer".into(), embedded_customer(c, false));
                o.insert("resource".into(), Value::Null);
                o.insert("entitlements".into(), Value::Array(ents));
                ("entitlements.updated", v)
            }
            850..930 => {
                let st = &mut state[c];
                let canceled = r >= 920 && st.subscriptions > 0;
                let kind = if canceled {
                    "subscription.canceled"
                } else if st.subscriptions == 0 {
                    "subscription.created"
                } else {
                    "subscription.updated"
                };
                st.subscriptions += 1;
                let plan = if rng.random_bool(0.5) {
                    ("plan-pro", "Pro")
                } else {
                    ("plan-growth", "Growth")
                };
                let mut v = envelope(kind, &mut rng);
                let o = v.as_object_mut().expect("object");
                o.insert("id".into(), json!(format!("sub-{}-1", customer_id(c))));
                o.insert(
                    "entityId".into(),
                    json!(format!("9a0b7c6d-0000-4e1f-a2b3-{c:012}")),
                );
                o.insert("customer".into(), embedded_customer(c, false));
                o.insert(
                    "plan".into(),
                    json!({"id": plan.0, "name": plan.1, "description": null,
                           "pricingType": "PAID", "status": "PUBLISHED"}),
                );
                o.insert(
                    "addons".into(),
                    json!([{"id": "addon-extra-seats", "name": "Extra seats", "quantity": 5}]),
                );
                o.insert(
                    "status".into(),
                    json!(if canceled { "CANCELED" } else { "ACTIVE" }),
                );
                o.insert("billingId".into(), json!(format!("sub_{c:06}")));
                o.insert("billingPeriod".into(), json!("MONTHLY"));
                o.insert("resource".into(), Value::Null);
                o.insert("startDate".into(), json!(PERIOD_ANCHOR));
                o.insert(
                    "endDate".into(),
                    if canceled { json!(iso(t)) } else { Value::Null },
                );
                o.insert("trialEndDate".into(), Value::Null);
                o.insert(
                    "cancellationDate".into(),
                    if canceled { json!(iso(t)) } else { Value::Null },
                );
                o.insert("currentBillingPeriodStart".into(), json!(PERIOD_START));
                o.insert("currentBillingPeriodEnd".into(), json!(PERIOD_END));
                o.insert("isTrialSubscription".into(), json!(false));
                o.insert("metadata".into(), json!({}));
                (kind, v)
            }
            _ => {
                let st = &mut state[c];
                let kind = if r >= 998 {
                    "customer.deleted"
                } else if st.created {
                    "customer.updated"
                } else {
                    "customer.created"
                };
                st.created = kind != "customer.deleted";
                st.customer_version += 1;
                let mut v = envelope(kind, &mut rng);
                let o = v.as_object_mut().expect("object");
                o.insert("id".into(), json!(customer_id(c)));
                o.insert(
                    "entityId".into(),
                    json!(format!("3f1c9a52-7d0e-4b8a-9c11-{c:012}")),
                );
                o.insert(
                    "name".into(),
                    json!(format!("Customer {c} v{}", st.customer_version)),
                );
                o.insert(
                    "email".into(),
                    json!(format!("billing+{c}@customer{c}.example")),
                );
                o.insert("billingId".into(), json!(format!("cus_{c:06}")));
                o.insert("crmId".into(), Value::Null);
                o.insert(
                    "metadata".into(),
                    json!({ "segment": (["startup", "growth", "enterprise"][c % 3]) }),
                );
                (kind, v)
            }
        };
        *by_type.entry(kind).or_default() += 1;
        keyed.push((t + rng.random_range(0..JITTER_MS), body.to_string()));
    }
    // duplicates: the same message (same messageId) re-sent a little later
    for _ in 0..duplicates {
        let k = rng.random_range(0..distinct);
        let (key, body) = keyed[k].clone();
        keyed.push((key + rng.random_range(100..10_000), body));
    }
    *by_type.entry("(duplicates)").or_default() += duplicates;
    keyed.sort_by_key(|(k, _)| *k);
    Generated {
        bodies: keyed.into_iter().map(|(_, b)| b).collect(),
        distinct,
        customers,
        by_type,
    }
}
