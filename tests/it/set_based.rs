//! The set-based apply of a batch against the event-by-event reference: random batches with
//! duplicates, stale and equal versions, events without a time, deletions and unknown types,
//! applied both ways to two databases, must end in the same rows and give the same outcome
//! for every event.

use serde_json::{json, Value};
use sqlx::PgPool;
use stigg_byos::apply::Outcome;
use stigg_byos::events;
use stigg_byos::processor::Processor;

use crate::support::*;

/// A small deterministic generator (no dependency; the same stream for the same seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const CUSTOMERS: [&str; 3] = ["cust-a", "cust-b", "cust-c"];

/// A time among a few, so that versions tie and overtake one another; sometimes none.
fn time(rng: &mut Rng) -> Value {
    if rng.below(12) == 0 {
        return Value::Null;
    }
    // sub-microsecond digits: the two paths must round them the same way
    json!(format!(
        "2026-11-{:02}T00:00:00.{:09}Z",
        1 + rng.below(6),
        rng.below(3) * 333_333
    ))
}

fn embedded(rng: &mut Rng, id: &str) -> Value {
    json!({"id": id, "name": format!("{id} copy {}", rng.below(3)), "email": null,
           "billingId": null})
}

fn random_event(rng: &mut Rng, n: usize) -> String {
    let customer = *rng.pick(&CUSTOMERS);
    let id = json!(format!("m-{n}"));
    let at = time(rng);
    match rng.below(10) {
        0 => event(
            "customer.created",
            &[
                ("messageId", id),
                ("id", json!(customer)),
                ("name", json!(format!("{customer} v{}", rng.below(4)))),
                ("timestamp", at),
            ],
        ),
        1 => event(
            "customer.deleted",
            &[
                ("messageId", id),
                ("id", json!(customer)),
                ("timestamp", at),
            ],
        ),
        2 | 3 => event(
            "subscription.created",
            &[
                ("messageId", id),
                ("id", json!(format!("sub-{customer}-{}", rng.below(2)))),
                ("customer", embedded(rng, customer)),
                ("status", json!(rng.pick(&["ACTIVE", "CANCELED"]))),
                ("timestamp", at),
            ],
        ),
        4 | 5 => {
            let mut v = fixture_json("entitlements.updated");
            v["messageId"] = id;
            v["eventId"] = json!(format!("ev-{n}"));
            v["customer"] = embedded(rng, customer);
            v["timestamp"] = at.clone();
            v["entitlementsUpdatedAt"] = if rng.below(2) == 0 { at } else { time(rng) };
            if rng.below(3) == 0 {
                v["resource"] = json!({"id": "res-1"});
            }
            let keep = 1 + rng.below(7) as usize;
            let list = v["entitlements"].as_array_mut().unwrap();
            list.truncate(keep);
            for e in list.iter_mut() {
                e["currentUsage"] = json!(rng.below(20));
            }
            v.to_string()
        }
        6..=8 => event(
            "measurement.reported",
            &[
                ("messageId", id),
                ("customer", embedded(rng, customer)),
                ("currentUsage", json!(rng.below(20))),
                (
                    "feature",
                    json!({"id": rng.pick(&["feature-api-calls", "feature-seats"])}),
                ),
                ("timestamp", at),
            ],
        ),
        _ => event(
            "promotionalEntitlement.granted",
            &[("messageId", id), ("timestamp", at)],
        ),
    }
}

/// Every row of every replica table, without the bookkeeping times.
async fn rows(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT t FROM (
           SELECT (to_jsonb(c) - 'created_at' - 'updated_at')::text AS t FROM customers c
           UNION ALL SELECT (to_jsonb(s) - 'created_at' - 'updated_at')::text FROM subscriptions s
           UNION ALL SELECT (to_jsonb(e) - 'updated_at')::text FROM entitlement_sets e
           UNION ALL SELECT to_jsonb(e)::text FROM entitlements e
           UNION ALL SELECT (to_jsonb(u) - 'updated_at')::text FROM usage u
           UNION ALL SELECT (to_jsonb(i) - 'processed_at')::text FROM inbox i) x
         ORDER BY t",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn run(processor: &Processor, batches: &[Vec<String>]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for batch in batches {
        outcomes.extend(apply_with(processor, batch).await);
    }
    outcomes
}

#[tokio::test]
async fn set_based_batches_end_where_event_by_event_ends() {
    let (set_based, _) = migrated_pool().await;
    let (reference, _) = migrated_pool().await;
    for case in 0..48u64 {
        let mut rng = Rng(case.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 17);
        let mut stream: Vec<String> = Vec::new();
        for n in 0..(20 + rng.below(40) as usize) {
            // a duplicate re-sends an earlier message as it was
            if !stream.is_empty() && rng.below(8) == 0 {
                let again = stream[rng.below(stream.len() as u64) as usize].clone();
                stream.push(again);
            } else {
                stream.push(random_event(&mut rng, n));
            }
        }
        let mut batches = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let size = (1 + rng.below(12) as usize).min(rest.len());
            batches.push(rest[..size].to_vec());
            rest = &rest[size..];
        }
        for pool in [&set_based, &reference] {
            sqlx::query(
                "TRUNCATE customers, subscriptions, entitlement_sets, entitlements, usage, inbox",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        let got = run(
            &Processor::new(set_based.clone()).set_based_from(1),
            &batches,
        )
        .await;
        let want = run(
            &Processor::new(reference.clone()).event_by_event(),
            &batches,
        )
        .await;
        if got != want {
            let mut n = 0;
            for (b, batch) in batches.iter().enumerate() {
                for e in batch {
                    if got[n] != want[n] {
                        eprintln!("DIFF batch {b} event {n}: {e}");
                    }
                    n += 1;
                }
            }
            for (b, batch) in batches.iter().enumerate() {
                for e in batch {
                    let v: Value = serde_json::from_str(e).unwrap();
                    eprintln!(
                        "b{b} {} {} {} {} {}",
                        v["type"], v["messageId"], v["id"], v["customer"]["id"], v["timestamp"]
                    );
                }
            }
        }
        assert_eq!(got, want, "outcomes, case {case}");
        assert_eq!(
            rows(&set_based).await,
            rows(&reference).await,
            "rows, case {case}"
        );
    }
}

/// Two workers apply batches about the same customers at once, in opposite orders, one
/// set-based and one event by event, with deletions (which used to take row locks in share
/// mode and then upgrade them). Every customer lock is taken up front in one order, so no batch
/// ever fails with a deadlock or any other transient error.
#[tokio::test]
async fn concurrent_batches_over_the_same_customers_never_deadlock() {
    let (pool, _) = migrated_pool().await;
    let customers: Vec<String> = (0..6).map(|i| format!("cust-lock-{i}")).collect();
    let worker = |name: &'static str, processor: Processor, reverse: bool| {
        let customers = customers.clone();
        tokio::spawn(async move {
            for round in 0..25u32 {
                let at = |k: u32| json!(format!("2026-11-01T00:{:02}:{:02}Z", round, k));
                let mut bodies = Vec::new();
                for (k, c) in customers.iter().enumerate() {
                    let k = k as u32;
                    bodies.push(event(
                        "measurement.reported",
                        &[
                            ("messageId", json!(format!("{name}-{round}-m{k}"))),
                            ("customer", json!({"id": c, "name": c})),
                            ("currentUsage", json!(round)),
                            ("timestamp", at(k)),
                        ],
                    ));
                    if (round + k).is_multiple_of(4) {
                        bodies.push(event(
                            "customer.deleted",
                            &[
                                ("messageId", json!(format!("{name}-{round}-d{k}"))),
                                ("id", json!(c)),
                                ("timestamp", at(k + 30)),
                            ],
                        ));
                    }
                }
                if reverse {
                    bodies.reverse();
                }
                let parsed: Vec<_> = bodies
                    .iter()
                    .map(|b| events::parse(b.as_bytes()).expect("parses"))
                    .collect();
                let refs: Vec<_> = parsed.iter().collect();
                let results = processor
                    .process(&refs)
                    .await
                    .unwrap_or_else(|e| panic!("{name}, round {round}: {e}"));
                assert!(results.iter().all(Result::is_ok), "{name}: {results:?}");
            }
        })
    };
    let a = worker(
        "set",
        Processor::new(pool.clone())
            .keep_order(true)
            .set_based_from(1),
        false,
    );
    let b = worker(
        "one",
        Processor::new(pool.clone())
            .keep_order(true)
            .event_by_event(),
        true,
    );
    a.await.unwrap();
    b.await.unwrap();
}
