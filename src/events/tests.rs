use super::*;
use serde_json::json;

fn fixture(name: &str) -> &'static str {
    match name {
        "customer.created" => include_str!("../../tests/fixtures/customer.created.json"),
        "customer.deleted" => include_str!("../../tests/fixtures/customer.deleted.json"),
        "entitlements.updated" => include_str!("../../tests/fixtures/entitlements.updated.json"),
        "entitlements.updated.resource" => {
            include_str!("../../tests/fixtures/entitlements.updated.resource.json")
        }
        "measurement.reported" => include_str!("../../tests/fixtures/measurement.reported.json"),
        "subscription.created" => include_str!("../../tests/fixtures/subscription.created.json"),
        "sns" => include_str!("../../tests/fixtures/sns-wrapped.customer.updated.json"),
        "promo" => include_str!("../../tests/fixtures/promotionalEntitlement.granted.json"),
        "usage_exceeded" => include_str!("../../tests/fixtures/entitlement.usage_exceeded.json"),
        _ => unreachable!(),
    }
}

#[test]
fn fixtures_parse_into_their_types() {
    let c = parse(fixture("customer.created").as_bytes()).unwrap();
    assert!(matches!(c.event, Event::CustomerUpsert(ref x) if x.id == "cust-orbit"));
    assert_eq!(c.dedup_key, "0d6c0f6e-1a2b-4c3d-8e9f-000000000101");
    assert!(matches!(
        parse(fixture("customer.deleted").as_bytes()).unwrap().event,
        Event::CustomerDeleted(_)
    ));
    let s = parse(fixture("subscription.created").as_bytes()).unwrap();
    let Event::Subscription(sub) = s.event else {
        panic!()
    };
    assert_eq!(sub.customer.id, "cust-orbit");
    assert_eq!(sub.status.as_deref(), Some("ACTIVE"));
    let m = parse(fixture("measurement.reported").as_bytes()).unwrap();
    let Event::Measurement(m) = m.event else {
        panic!()
    };
    assert_eq!(m.current_usage, 9650.0);
    assert!(matches!(
        parse(fixture("promo").as_bytes()).unwrap().event,
        Event::RecordOnly(_)
    ));
    assert!(matches!(
        parse(fixture("usage_exceeded").as_bytes()).unwrap().event,
        Event::RecordOnly(_)
    ));
}

#[test]
fn entitlement_set_version_is_entitlements_updated_at() {
    let e = parse(fixture("entitlements.updated").as_bytes()).unwrap();
    let Event::Entitlements(set) = e.event else {
        panic!()
    };
    assert_eq!(set.entitlements.len(), 7);
    assert_eq!(set.resource_id, None);
    assert_eq!(
        set.version.unwrap().to_rfc3339(),
        "2026-11-02T10:00:00+00:00"
    );
    let r = parse(fixture("entitlements.updated.resource").as_bytes()).unwrap();
    let Event::Entitlements(set) = r.event else {
        panic!()
    };
    assert_eq!(set.resource_id.as_deref(), Some("site-blue"));
}

#[test]
fn entitlement_set_without_updated_at_uses_timestamp_then_nothing() {
    let with_ts = json!({"type":"entitlements.updated","messageId":"m","timestamp":"2026-01-01T00:00:00Z",
        "customer":{"id":"c"},"resource":null,"entitlements":[]});
    let Event::Entitlements(set) = parse(with_ts.to_string().as_bytes()).unwrap().event else {
        panic!()
    };
    assert_eq!(
        set.version.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    let no_time = json!({"type":"entitlements.updated","messageId":"m","customer":{"id":"c"},"entitlements":[]});
    let Event::Entitlements(set) = parse(no_time.to_string().as_bytes()).unwrap().event else {
        panic!()
    };
    assert_eq!(set.version, None);
}

#[test]
fn sns_envelope_is_unwrapped() {
    let e = parse(fixture("sns").as_bytes()).unwrap();
    assert_eq!(e.event_type, "customer.updated");
    assert_eq!(e.dedup_key, "0d6c0f6e-1a2b-4c3d-8e9f-000000000102");
    assert!(
        matches!(e.event, Event::CustomerUpsert(ref c) if c.name.as_deref() == Some("Orbit Labs Inc."))
    );
}

#[test]
fn dedup_key_falls_back_to_event_id_then_body_hash() {
    let a = json!({"type":"x.y","eventId":"ev-1"});
    assert_eq!(parse(a.to_string().as_bytes()).unwrap().dedup_key, "ev-1");
    let b = br#"{"type":"x.y"}"#;
    let k1 = parse(b).unwrap().dedup_key;
    assert!(k1.starts_with("sha256:"));
    assert_eq!(k1, parse(b).unwrap().dedup_key);
    assert_ne!(k1, parse(br#"{"type":"x.z"}"#).unwrap().dedup_key);
}

#[test]
fn unknown_type_is_not_an_error() {
    let e = parse(br#"{"type":"galaxy.exploded","messageId":"m1","whatever":[1,2]}"#).unwrap();
    assert!(matches!(e.event, Event::Unknown));
}

#[test]
fn permanent_failures_say_why() {
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"{\"messageId\":\"m\"}", "no \"type\""),
        (b"{\"type\":7}", "not a string"),
        (b"{\"type\":\"customer.updated\",\"id\":42}", "customer.updated"),
        (b"{\"type\":\"customer.updated\",\"id\":\"\"}", "id is empty"),
        (b"{\"type\":\"measurement.reported\",\"customer\":{\"id\":\"c\"},\"feature\":{\"id\":\"f\"},\"currentUsage\":\"12\"}", "measurement.reported"),
        (b"{\"type\":\"entitlements.updated\",\"customer\":{\"id\":\"c\"},\"entitlements\":{}}", "entitlements.updated"),
        (b"{\"type\":\"customer.updated\",\"id\":\"c\",\"timestamp\":\"soon\"}", "timestamp"),
        (b"{\"type\":\"customer.updated\",\"id\":\"c\\u0000\"}", "NUL"),
        (b"\xff\xfe", "UTF-8"),
    ];
    for (body, needle) in cases {
        let err = parse(body).unwrap_err();
        assert!(
            err.reason.contains(needle),
            "{:?}: {:?} lacks {needle:?}",
            String::from_utf8_lossy(body),
            err.reason
        );
    }
    let err = parse(br#"{"type":"customer.updated","messageId":"m-9","id":42}"#).unwrap_err();
    assert_eq!(err.message_id.as_deref(), Some("m-9"));
    assert_eq!(err.event_type.as_deref(), Some("customer.updated"));
}

#[test]
fn a_feature_listed_twice_keeps_its_last_entry() {
    let e = json!({"type":"entitlements.updated","messageId":"m","customer":{"id":"c"},
        "entitlements":[{"feature":{"id":"f","featureType":"NUMBER"},"usageLimit":1},
                        {"feature":{"id":"f","featureType":"NUMBER"},"usageLimit":2}]});
    let Event::Entitlements(set) = parse(e.to_string().as_bytes()).unwrap().event else {
        panic!()
    };
    assert_eq!(set.entitlements.len(), 1);
    assert_eq!(set.entitlements[0].usage_limit, Some(2.0));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-zA-Z0-9._-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::hash_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("id".to_string()),
                        Just("customer".to_string()),
                        Just("feature".to_string()),
                        Just("entitlements".to_string()),
                        Just("currentUsage".to_string()),
                        Just("timestamp".to_string()),
                        "[a-z]{1,8}"
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_type() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("customer.created".to_string()),
            Just("customer.deleted".to_string()),
            Just("subscription.updated".to_string()),
            Just("entitlements.updated".to_string()),
            Just("measurement.reported".to_string()),
            Just("promotionalEntitlement.granted".to_string()),
            "[a-z.]{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&body);
        }

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let _ = parse(v.to_string().as_bytes());
        }

        #[test]
        fn arbitrary_events_of_known_types_parse_or_explain(t in arb_type(), mut v in arb_json()) {
            if let Value::Object(ref mut o) = v {
                o.insert("type".into(), Value::String(t));
            }
            match parse(v.to_string().as_bytes()) {
                Ok(e) => prop_assert!(!e.dedup_key.is_empty()),
                Err(e) => prop_assert!(!e.reason.is_empty()),
            }
        }
    }
}
