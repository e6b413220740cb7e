//! Events through the processor into a real database: every type, duplicates, reordering,
//! placeholders, tombstones.

use serde_json::json;
use sqlx::PgPool;
use stigg_byos::apply::Outcome;
use stigg_byos::events;
use stigg_byos::processor::Processor;

use crate::support::*;

async fn apply_one(pool: &PgPool, body: String) -> Outcome {
    apply_events(pool, &[body]).await[0]
}

async fn usage(pool: &PgPool, customer: &str, feature: &str) -> Option<f64> {
    sqlx::query_scalar("SELECT current_usage FROM usage WHERE customer_id = $1 AND feature_id = $2")
        .bind(customer)
        .bind(feature)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn customer_name(pool: &PgPool, id: &str) -> Option<Option<String>> {
    sqlx::query_scalar("SELECT name FROM customers WHERE customer_id = $1 AND NOT is_deleted")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_fixture_applies() {
    let (pool, _) = migrated_pool().await;
    for (name, expected) in [
        ("customer.created", Outcome::Applied),
        ("customer.updated", Outcome::Applied),
        ("subscription.created", Outcome::Applied),
        ("entitlements.updated", Outcome::Applied),
        ("entitlements.updated.resource", Outcome::Applied),
        ("measurement.reported", Outcome::Applied),
        ("promotionalEntitlement.granted", Outcome::Skipped),
        ("entitlement.usage_exceeded", Outcome::Skipped),
        ("subscription.canceled", Outcome::Applied),
        ("customer.deleted", Outcome::Applied),
    ] {
        assert_eq!(apply_one(&pool, fixture(name)).await, expected, "{name}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM inbox").await, 10);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customers WHERE is_deleted").await,
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM entitlements").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM usage").await, 0);
}

#[tokio::test]
async fn state_after_the_story_is_what_the_events_say() {
    let (pool, _) = migrated_pool().await;
    for name in [
        "customer.created",
        "customer.updated",
        "subscription.created",
        "entitlements.updated",
        "entitlements.updated.resource",
        "measurement.reported",
    ] {
        apply_one(&pool, fixture(name)).await;
    }
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit Labs Inc.".into()))
    );
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(9650.0)
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM entitlements WHERE resource_key = ''"
        )
        .await,
        7
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM entitlements WHERE resource_key = 'site-blue'"
        )
        .await,
        2
    );
    let status: String = sqlx::query_scalar(
        "SELECT status FROM subscriptions WHERE subscription_id = 'sub-orbit-pro-8d21'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "ACTIVE");
}

#[tokio::test]
async fn a_duplicate_message_id_changes_nothing() {
    let (pool, _) = migrated_pool().await;
    apply_one(&pool, fixture("customer.created")).await;
    // same messageId, different content: still a duplicate
    let dup = event(
        "customer.created",
        &[
            ("name", json!("Changed")),
            ("timestamp", json!("2027-01-01T00:00:00Z")),
        ],
    );
    assert_eq!(apply_one(&pool, dup).await, Outcome::Duplicate);
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit Labs".into()))
    );
    // a duplicate of a set inside one batch
    let outcomes = apply_events(
        &pool,
        &[
            fixture("entitlements.updated"),
            fixture("entitlements.updated"),
        ],
    )
    .await;
    assert_eq!(outcomes, vec![Outcome::Applied, Outcome::Duplicate]);
}

#[tokio::test]
async fn stale_customer_update_is_ignored_in_either_order() {
    let (pool, _) = migrated_pool().await;
    let older = event(
        "customer.updated",
        &[
            ("messageId", json!("a")),
            ("name", json!("Old")),
            ("timestamp", json!("2026-10-02T00:00:00Z")),
        ],
    );
    let newer = event(
        "customer.updated",
        &[
            ("messageId", json!("b")),
            ("name", json!("New")),
            ("timestamp", json!("2026-10-03T00:00:00Z")),
        ],
    );
    assert_eq!(apply_one(&pool, newer).await, Outcome::Applied);
    assert_eq!(apply_one(&pool, older).await, Outcome::Stale);
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("New".into()))
    );
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM inbox WHERE message_id = 'a'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outcome, "stale");
}

#[tokio::test]
async fn stale_subscription_is_ignored() {
    let (pool, _) = migrated_pool().await;
    let canceled = fixture("subscription.canceled");
    let created = fixture("subscription.created");
    assert_eq!(apply_one(&pool, canceled).await, Outcome::Applied);
    assert_eq!(apply_one(&pool, created).await, Outcome::Stale);
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "CANCELED");
}

#[tokio::test]
async fn stale_entitlement_set_is_ignored_and_a_newer_one_replaces_the_whole_set() {
    let (pool, _) = migrated_pool().await;
    let newer = event(
        "entitlements.updated",
        &[
            ("messageId", json!("new")),
            ("entitlementsUpdatedAt", json!("2026-11-05T00:00:00Z")),
            (
                "entitlements",
                json!([{"feature": {"id": "feature-sso", "featureType": "BOOLEAN"}}]),
            ),
        ],
    );
    assert_eq!(apply_one(&pool, newer).await, Outcome::Applied);
    // the fixture is older: its 7 features must not come back, nor its usage overwrite
    assert_eq!(
        apply_one(&pool, fixture("entitlements.updated")).await,
        Outcome::Applied
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM entitlements").await, 1);
    // usage it carried is a usage report at its own time: applies where never seen
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(9200.0)
    );
}

#[tokio::test]
async fn usage_newest_time_wins_and_ties_go_to_the_higher_value() {
    let (pool, _) = migrated_pool().await;
    let m = |id: &str, at: &str, value: f64| {
        event(
            "measurement.reported",
            &[
                ("messageId", json!(id)),
                ("timestamp", json!(at)),
                ("currentUsage", json!(value)),
            ],
        )
    };
    assert_eq!(
        apply_one(&pool, m("1", "2026-11-03T10:00:00Z", 500.0)).await,
        Outcome::Applied
    );
    assert_eq!(
        apply_one(&pool, m("2", "2026-11-03T09:00:00Z", 900.0)).await,
        Outcome::Stale
    );
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(500.0)
    );
    // a newer, lower value wins (fluctuating meters go down)
    assert_eq!(
        apply_one(&pool, m("3", "2026-11-03T11:00:00Z", 100.0)).await,
        Outcome::Applied
    );
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(100.0)
    );
    // equal time: the higher value wins, the lower is stale
    assert_eq!(
        apply_one(&pool, m("4", "2026-11-03T11:00:00Z", 150.0)).await,
        Outcome::Applied
    );
    assert_eq!(
        apply_one(&pool, m("5", "2026-11-03T11:00:00Z", 120.0)).await,
        Outcome::Stale
    );
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(150.0)
    );
    // usage inside an older entitlement set does not overwrite a newer report
    apply_one(&pool, fixture("entitlements.updated")).await;
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(150.0)
    );
}

#[tokio::test]
async fn subscription_before_customer_makes_a_placeholder_the_customer_event_fills_in() {
    let (pool, _) = migrated_pool().await;
    assert_eq!(
        apply_one(&pool, fixture("subscription.created")).await,
        Outcome::Applied
    );
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit Labs".into()))
    );
    let version: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT version FROM customers")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, None, "a placeholder has no version");
    // an older customer.created still fills the placeholder in
    let created = event(
        "customer.created",
        &[("name", json!("Orbit (from customer.created)"))],
    );
    assert_eq!(apply_one(&pool, created).await, Outcome::Applied);
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit (from customer.created)".into()))
    );
    // an embedded copy never overwrites it
    apply_one(&pool, fixture("measurement.reported")).await;
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit (from customer.created)".into()))
    );
}

#[tokio::test]
async fn delete_then_late_update_stays_deleted_and_a_newer_create_revives() {
    let (pool, _) = migrated_pool().await;
    for name in [
        "customer.created",
        "subscription.created",
        "entitlements.updated",
        "measurement.reported",
    ] {
        apply_one(&pool, fixture(name)).await;
    }
    assert_eq!(
        apply_one(&pool, fixture("customer.deleted")).await,
        Outcome::Applied
    );
    assert_eq!(customer_name(&pool, "cust-orbit").await, None);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM customers WHERE is_deleted AND name IS NULL AND email IS NULL"
        )
        .await,
        1,
        "the tombstone keeps no personal data"
    );
    // older than the deletion: all stale
    assert_eq!(
        apply_one(&pool, fixture("customer.updated")).await,
        Outcome::Stale
    );
    let late_usage = event(
        "measurement.reported",
        &[
            ("messageId", json!("late-m")),
            ("timestamp", json!("2026-11-19T00:00:00Z")),
        ],
    );
    assert_eq!(apply_one(&pool, late_usage).await, Outcome::Stale);
    assert_eq!(customer_name(&pool, "cust-orbit").await, None);
    assert_eq!(count(&pool, "SELECT count(*) FROM usage").await, 0);
    // newer than the deletion: brings it back
    let revived = event(
        "customer.created",
        &[
            ("messageId", json!("again")),
            ("timestamp", json!("2026-11-21T00:00:00Z")),
        ],
    );
    assert_eq!(apply_one(&pool, revived).await, Outcome::Applied);
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit Labs".into()))
    );
}

#[tokio::test]
async fn deleting_a_never_seen_customer_leaves_a_tombstone() {
    let (pool, _) = migrated_pool().await;
    assert_eq!(
        apply_one(&pool, fixture("customer.deleted")).await,
        Outcome::Applied
    );
    assert_eq!(
        apply_one(&pool, fixture("customer.created")).await,
        Outcome::Stale
    );
    assert_eq!(
        apply_one(&pool, fixture("subscription.created")).await,
        Outcome::Stale
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customers WHERE NOT is_deleted").await,
        0
    );
}

#[tokio::test]
async fn events_without_time_apply_only_to_unseen_keys() {
    let (pool, _) = migrated_pool().await;
    let no_time = |id: &str, name: &str| {
        let mut v = fixture_json("customer.updated");
        v.as_object_mut().unwrap().remove("timestamp");
        v["messageId"] = json!(id);
        v["name"] = json!(name);
        v.to_string()
    };
    assert_eq!(
        apply_one(&pool, no_time("n1", "First")).await,
        Outcome::Applied
    );
    assert_eq!(
        apply_one(&pool, no_time("n2", "Second")).await,
        Outcome::Stale
    );
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("First".into()))
    );
    // an entitlement set with neither entitlementsUpdatedAt nor timestamp (§7.18)
    let mut set = fixture_json("entitlements.updated");
    set.as_object_mut().unwrap().remove("timestamp");
    set.as_object_mut().unwrap().remove("entitlementsUpdatedAt");
    assert_eq!(apply_one(&pool, set.to_string()).await, Outcome::Applied);
    set["messageId"] = json!("again");
    set["entitlements"] = json!([]);
    assert_eq!(apply_one(&pool, set.to_string()).await, Outcome::Stale);
    assert_eq!(count(&pool, "SELECT count(*) FROM entitlements").await, 7);
}

#[tokio::test]
async fn sns_envelope_and_unknown_types() {
    let (pool, _) = migrated_pool().await;
    assert_eq!(
        apply_one(&pool, fixture("sns-wrapped.customer.updated")).await,
        Outcome::Applied
    );
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit Labs Inc.".into()))
    );
    let unknown =
        json!({"type": "galaxy.exploded", "messageId": "u1", "customer": {"id": "x"}}).to_string();
    assert_eq!(apply_one(&pool, unknown.clone()).await, Outcome::Skipped);
    assert_eq!(apply_one(&pool, unknown).await, Outcome::Duplicate);
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM inbox WHERE message_id = 'u1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(payload["type"], "galaxy.exploded");
}

#[tokio::test]
async fn one_bad_event_does_not_roll_back_its_batch() {
    let (pool, _) = migrated_pool().await;
    let parsed: Vec<_> = [
        fixture("customer.created"),
        unindexable_subscription("bad"),
        fixture("customer.updated"),
    ]
    .iter()
    .map(|b| events::parse(b.as_bytes()).unwrap())
    .collect();
    let refs: Vec<_> = parsed.iter().collect();
    let results = Processor::new(pool.clone()).process(&refs).await.unwrap();
    assert_eq!(results[0], Ok(Outcome::Applied));
    assert!(
        results[1]
            .as_ref()
            .unwrap_err()
            .contains("database rejected"),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(Outcome::Applied));
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("Orbit Labs Inc.".into()))
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM inbox").await,
        2,
        "the failed event is not claimed"
    );
}

/// Shuffled streams with duplicates end at the newest version of every key, whatever the
/// order — the SQL guards agree with the pure rules in `stigg_byos::version`.
#[tokio::test]
async fn shuffled_streams_converge_to_the_newest_versions() {
    use rand::seq::SliceRandom;
    let (pool, _) = migrated_pool().await;
    let mut bodies = Vec::new();
    for i in 0..30 {
        let at = format!("2026-11-03T10:{:02}:00Z", i);
        bodies.push(event(
            "measurement.reported",
            &[
                ("messageId", json!(format!("m{i}"))),
                ("timestamp", json!(at)),
                ("currentUsage", json!(i * 10)),
            ],
        ));
        bodies.push(event(
            "customer.updated",
            &[
                ("messageId", json!(format!("c{i}"))),
                ("timestamp", json!(at)),
                ("name", json!(format!("name {i}"))),
            ],
        ));
        bodies.push(event(
            "entitlements.updated",
            &[
                ("messageId", json!(format!("e{i}"))),
                ("entitlementsUpdatedAt", json!(at)),
                (
                    "entitlements",
                    json!([{"feature": {"id": format!("f{i}"), "featureType": "BOOLEAN"}}]),
                ),
            ],
        ));
    }
    let dups: Vec<String> = bodies.iter().step_by(7).cloned().collect();
    bodies.extend(dups);
    bodies.shuffle(&mut rand::rng());
    for chunk in bodies.chunks(10) {
        apply_events(&pool, chunk).await;
    }
    assert_eq!(
        usage(&pool, "cust-orbit", "feature-api-calls").await,
        Some(290.0)
    );
    assert_eq!(
        customer_name(&pool, "cust-orbit").await,
        Some(Some("name 29".into()))
    );
    let features: Vec<String> = sqlx::query_scalar("SELECT feature_id FROM entitlements")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(features, vec!["f29".to_string()]);
    assert_eq!(count(&pool, "SELECT count(*) FROM inbox").await, 90);
}

/// A state digest to compare two databases.
async fn digest(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'c ' || customer_id || ' ' || coalesce(name, '-') || ' ' || is_deleted || ' ' || coalesce(deleted_at::text, '-') FROM customers
         UNION ALL SELECT 's ' || subscription_id || ' ' || coalesce(plan_id, '-') FROM subscriptions
         UNION ALL SELECT 'e ' || customer_id || ' ' || resource_key || ' ' || feature_id FROM entitlements
         UNION ALL SELECT 'u ' || customer_id || ' ' || feature_id || ' ' || current_usage FROM usage
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deletion_ends_in_the_same_state_whatever_the_arrival_order() {
    let at = |d: u32| json!(format!("2026-11-{d:02}T00:00:00Z"));
    let story = vec![
        event("customer.created", &[("timestamp", at(1))]),
        event("subscription.created", &[("timestamp", at(2))]),
        event("measurement.reported", &[("timestamp", at(3))]),
        event("customer.deleted", &[("timestamp", at(10))]),
        event(
            "subscription.created",
            &[
                ("messageId", json!("late-sub")),
                ("type", json!("subscription.updated")),
                ("id", json!("sub-after-delete")),
                ("timestamp", at(11)),
            ],
        ),
        event(
            "customer.updated",
            &[("timestamp", at(12)), ("name", json!("Back again"))],
        ),
    ];
    let (in_order, _) = migrated_pool().await;
    for e in &story {
        apply_one(&in_order, e.clone()).await;
    }
    let expected = digest(&in_order).await;
    assert!(
        expected
            .iter()
            .any(|r| r.starts_with("c cust-orbit Back again false 2026-11-10")),
        "{expected:?}"
    );
    assert!(
        expected.iter().all(|r| !r.starts_with("s sub-orbit-pro")),
        "{expected:?}"
    );
    let orders: Vec<Vec<usize>> = vec![
        vec![5, 4, 3, 2, 1, 0],
        vec![0, 1, 2, 5, 3, 4],
        vec![4, 0, 3, 1, 5, 2],
        vec![0, 4, 1, 2, 3, 5],
    ];
    for order in orders {
        let (pool, _) = migrated_pool().await;
        for i in &order {
            apply_one(&pool, story[*i].clone()).await;
        }
        assert_eq!(digest(&pool).await, expected, "arrival order {order:?}");
    }
    // without the revival, the customer ends a tombstone in any order
    let (a, _) = migrated_pool().await;
    let (b, _) = migrated_pool().await;
    for i in [0, 1, 2, 3] {
        apply_one(&a, story[i].clone()).await;
    }
    for i in [3, 2, 1, 0] {
        apply_one(&b, story[i].clone()).await;
    }
    assert_eq!(digest(&a).await, digest(&b).await);
    assert_eq!(
        count(&b, "SELECT count(*) FROM customers WHERE is_deleted").await,
        1
    );
}

#[tokio::test]
async fn batch_results_line_up_with_their_events_whatever_the_apply_order() {
    let (pool, _) = migrated_pool().await;
    let zeta = event(
        "customer.created",
        &[("messageId", json!("z")), ("id", json!("zeta"))],
    );
    let bad = {
        let mut v: serde_json::Value =
            serde_json::from_str(&unindexable_subscription("bad")).unwrap();
        v["customer"] = json!({"id": "middle"});
        v.to_string()
    };
    let alpha = event(
        "customer.created",
        &[("messageId", json!("a")), ("id", json!("alpha"))],
    );
    let dup_zeta = zeta.clone();
    let parsed: Vec<_> = [zeta, bad, alpha, dup_zeta]
        .iter()
        .map(|b| events::parse(b.as_bytes()).unwrap())
        .collect();
    let refs: Vec<_> = parsed.iter().collect();
    let results = Processor::new(pool.clone()).process(&refs).await.unwrap();
    assert_eq!(results[0], Ok(Outcome::Applied));
    assert!(results[1].is_err(), "{:?}", results[1]);
    assert_eq!(results[2], Ok(Outcome::Applied));
    assert_eq!(
        results[3],
        Ok(Outcome::Duplicate),
        "the later copy of zeta stays the duplicate"
    );
}

/// The bench's divergence (BENCHMARKS.md, Correctness): a `customer.updated` older than the
/// deletion, then state newer than it. In order, the deletion clears the customer and the
/// newer event revives it from its embedded copy; when the deletion arrives last it must end
/// the same, not keep the older `customer.updated`'s name.
#[tokio::test]
async fn a_late_deletion_revives_from_the_newer_events_embedded_copy_in_every_order() {
    let at = |d: u32| json!(format!("2026-11-{d:02}T00:00:00Z"));
    let embedded = |name: &str| json!({"id": "cust-orbit", "name": name, "email": "e@orbit.example", "billingId": "b1"});
    let story = [
        event(
            "customer.updated",
            &[("timestamp", at(1)), ("name", json!("Older name"))],
        ),
        event("customer.deleted", &[("timestamp", at(5))]),
        event(
            "measurement.reported",
            &[("timestamp", at(7)), ("customer", embedded("Embedded 7"))],
        ),
    ];
    let row = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT concat_ws(' ', name, email, billing_id, is_deleted, version IS NULL,
                    raw IS NULL, deleted_at AT TIME ZONE 'UTC') FROM customers",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let mut seen = Vec::new();
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let (pool, _) = migrated_pool().await;
        for i in order {
            apply_one(&pool, story[i].clone()).await;
        }
        seen.push((order, row(pool.clone()).await, digest(&pool).await));
    }
    let expected = vec!["Embedded 7 e@orbit.example b1 f t t 2026-11-05 00:00:00".to_string()];
    for (order, customer, all) in &seen {
        assert_eq!(customer, &expected, "arrival order {order:?}");
        assert_eq!(all, &seen[0].2, "arrival order {order:?}");
    }

    // a placeholder shows the newest embedded copy, whichever arrives first
    let newer = event(
        "measurement.reported",
        &[
            ("messageId", json!("m9")),
            ("timestamp", at(9)),
            ("customer", embedded("Embedded 9")),
        ],
    );
    let older = story[2].clone();
    for pair in [
        [older.clone(), newer.clone()],
        [newer.clone(), older.clone()],
    ] {
        let (pool, _) = migrated_pool().await;
        for e in pair {
            apply_one(&pool, e).await;
        }
        assert_eq!(
            customer_name(&pool, "cust-orbit").await,
            Some(Some("Embedded 9".into()))
        );
    }
}

/// A column of another type than the code expects (a schema drifted from the migrations) must
/// fail the event with a reason, not panic the worker. Shadowing `=` on `xid` in `public`,
/// searched before `pg_catalog`, makes the `xmax = 0` of an entitlement set's upsert a text.
#[tokio::test]
async fn a_column_of_an_unexpected_type_fails_the_event_instead_of_panicking() {
    let (pool, url) = migrated_pool().await;
    let database = url.rsplit_once('/').unwrap().1;
    for sql in [
        "CREATE FUNCTION public.xid_eq_as_text(xid, int4) RETURNS text LANGUAGE sql \
         IMMUTABLE AS 'SELECT ''t'''"
            .to_owned(),
        "CREATE OPERATOR public.= (LEFTARG = xid, RIGHTARG = int4, \
         FUNCTION = public.xid_eq_as_text)"
            .to_owned(),
        format!("ALTER DATABASE {database} SET search_path = public, pg_catalog"),
    ] {
        sqlx::query(&sql).execute(&pool).await.expect(&sql);
    }
    pool.close().await;
    let pool = PgPool::connect(&url).await.unwrap();
    let ev = events::parse(fixture("entitlements.updated").as_bytes()).unwrap();
    // the event-by-event path: the store function that reads `xmax = 0` is the one under test
    let results = Processor::new(pool.clone())
        .event_by_event()
        .process(&[&ev])
        .await
        .expect("no transient failure");
    let reason = results[0].as_ref().expect_err("refused");
    assert!(reason.contains("mismatched types"), "{reason}");
}
