//! The sync part (issue 9): customers a second through `stigg-byos sync` with Stigg's API
//! answering at once, so that the figure is the replica's, not Stigg's.
//!
//! An in-process fake of Stigg's read API (STIGG-API.md) serves the `customers` and
//! `subscriptions` listings (`POST /graphql`, cursor paging) and the Edge entitlement states
//! (`GET /v1/c/{customerId}/entitlements-state.json[?resourceId=]`) on 127.0.0.1:0, every
//! answer prepared before the clock starts. The release binary then runs `sync` twice on a
//! fresh database: a first pass that writes everything, and a second over the same data that
//! must change nothing. Each pass is checked against its summary line and fails the part when
//! it did not do what the data calls for.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;
use stigg_byos::sync::api::PAGE_SIZE;

use super::events::{
    customer_id, iso, Feature, FEATURES, PERIOD_ANCHOR, PERIOD_END, PERIOD_START, T0_MS,
};
use super::harness::Env;
use super::plan::Plan;
use super::sampling::{cpu_line_over, cpu_snapshot, peak_rss_mib, Cpu, Sampler, TICKS};
use super::{note, section, Table};

/// The server API key the fake accepts.
const KEY: &str = "bench-server-key";

/// The features of a resource-scoped set (indices into `FEATURES`): SSO, API calls, seats,
/// data region.
const RESOURCE_FEATURES: [usize; 4] = [0, 2, 3, 6];

// ---------------------------------------------------------------------------------------------
// The fake API
// ---------------------------------------------------------------------------------------------

/// Stigg's state as the fake serves it, and what it was asked.
struct Fake {
    customers: Vec<Value>,
    subscriptions: Vec<Value>,
    /// Serialised `{"data":{"entitlementsState":…}}` answers by (customer, resource).
    states: HashMap<(String, Option<String>), Bytes>,
    /// Resource-scoped sets among `states`.
    resources: usize,
    requests: AtomicU64,
    /// Requests the fake could not answer as Stigg would (a wrong key, an unknown query or
    /// cursor, an unknown customer); a correct pass makes none.
    refused: AtomicU64,
}

impl Fake {
    fn refuse(&self, status: StatusCode, why: &str) -> Response {
        self.refused.fetch_add(1, Ordering::Relaxed);
        (status, Json(json!({"error": why}))).into_response()
    }

    fn key_ok(&self, headers: &HeaderMap) -> bool {
        headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(KEY)
    }
}

async fn graphql(
    State(f): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    f.requests.fetch_add(1, Ordering::Relaxed);
    if !f.key_ok(&headers) {
        return f.refuse(StatusCode::UNAUTHORIZED, "bad key");
    }
    let query = req["query"].as_str().unwrap_or_default();
    let (root, list) = if query.contains("customers(") {
        ("customers", &f.customers)
    } else if query.contains("subscriptions(") {
        ("subscriptions", &f.subscriptions)
    } else {
        f.refused.fetch_add(1, Ordering::Relaxed);
        return Json(json!({"errors": [{"message": "the bench fake answers customers and subscriptions only"}]}))
            .into_response();
    };
    let paging = &req["variables"]["paging"];
    let first = paging["first"].as_u64().unwrap_or(100).clamp(1, 1_000) as usize;
    // a cursor is the index of the last node of its page
    let start = match paging["after"].as_str() {
        None => 0,
        Some(c) => match c.parse::<usize>() {
            Ok(i) => i + 1,
            Err(_) => return f.refuse(StatusCode::BAD_REQUEST, "unknown cursor"),
        },
    };
    let start = start.min(list.len());
    let end = (start + first).min(list.len());
    let edges: Vec<Value> = list[start..end]
        .iter()
        .enumerate()
        .map(|(i, node)| json!({"cursor": (start + i).to_string(), "node": node}))
        .collect();
    let end_cursor = (end > start).then(|| (end - 1).to_string());
    Json(json!({"data": {root: {
        "edges": edges,
        "pageInfo": {"hasNextPage": end < list.len(), "endCursor": end_cursor},
        "totalCount": list.len(),
    }}}))
    .into_response()
}

async fn edge(
    State(f): State<Arc<Fake>>,
    Path(customer): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    f.requests.fetch_add(1, Ordering::Relaxed);
    if !f.key_ok(&headers) || headers.get("x-api-version").is_none() {
        return f.refuse(StatusCode::UNAUTHORIZED, "bad key");
    }
    match f.states.get(&(customer, q.get("resourceId").cloned())) {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        None => {
            // what Stigg says of a customer it does not have; the bench's pass never asks
            f.refused.fetch_add(1, Ordering::Relaxed);
            Json(json!({"data": {"entitlementsState": {
                "accessDeniedReason": "CustomerNotFound", "entitlements": []}}}))
            .into_response()
        }
    }
}

/// An entitlement as the Edge gives it (STIGG-API.md §3).
fn edge_entitlement(
    f: &Feature,
    customer: &str,
    resource: Option<&str>,
    updated_at: &str,
    usage: Option<(f64, &str)>,
) -> Value {
    let meter = match f.meter {
        None => "None",
        Some("INCREMENTAL") => "Incremental",
        Some(_) => "Fluctuating",
    };
    let monthly = |s: &str| f.monthly.then(|| s.to_owned());
    json!({
        "feature": {"refId": f.id, "featureType": f.feature_type, "meterType": meter,
                    "featureUnits": f.unit, "displayName": f.name},
        "isGranted": true,
        "accessDeniedReason": null,
        "usageLimit": f.limit,
        "hasUnlimitedUsage": f.unlimited,
        "hasSoftLimit": f.soft,
        "currentUsage": usage.map(|u| u.0),
        "enumValues": f.enum_values,
        "resetPeriod": f.monthly.then_some("MONTH"),
        "usagePeriodAnchor": monthly(PERIOD_ANCHOR),
        "usagePeriodStart": monthly(PERIOD_START),
        "usagePeriodEnd": monthly(PERIOD_END),
        "nextResetDate": monthly(PERIOD_END),
        "validUntil": null,
        "entitlementUpdatedAt": updated_at,
        "usageUpdatedAt": usage.map(|u| u.1),
        "customerId": customer,
        "resourceId": resource,
    })
}

/// An entitlement state of (customer, resource) over `features`, serialised as answered.
fn state_body(
    rng: &mut StdRng,
    customer: &str,
    resource: Option<&str>,
    features: &[usize],
    updated_ms: i64,
) -> Bytes {
    let updated_at = iso(updated_ms);
    let entitlements: Vec<Value> = features
        .iter()
        .map(|&i| {
            let f = &FEATURES[i];
            let usage_at = iso(updated_ms + rng.random_range(1_000..86_400_000));
            let usage = f.meter.map(|_| {
                let cap = f.limit.unwrap_or(2_000.0) * 1.2;
                (rng.random_range(0.0..cap).floor(), usage_at.as_str())
            });
            edge_entitlement(f, customer, resource, &updated_at, usage)
        })
        .collect();
    let body = json!({"data": {"entitlementsState": {
        "accessDeniedReason": null, "entitlements": entitlements}}});
    Bytes::from(serde_json::to_vec(&body).expect("JSON"))
}

/// `n` customers, each with one subscription (80% ACTIVE, 10% IN_TRIAL, 10% CANCELED; about
/// 10% resource-scoped, with a resource state of 4 entitlements) and a customer-level state of
/// the 8 bench features (BOOLEAN, unmetered NUMBER, 5 metered NUMBER with usage, ENUM).
fn model(n: usize, seed: u64) -> Fake {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5359_4e43);
    let all: Vec<usize> = (0..FEATURES.len()).collect();
    let mut fake = Fake {
        customers: Vec::with_capacity(n),
        subscriptions: Vec::with_capacity(n),
        states: HashMap::with_capacity(n + n / 8),
        resources: 0,
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    };
    let day = 86_400_000;
    for c in 0..n {
        let id = customer_id(c);
        // created over the 40 days before T0, oldest first; changed since
        let created = T0_MS - 40 * day + (c as i64 * 40 * day) / n.max(1) as i64;
        let updated = created + rng.random_range(0..5 * day);
        fake.customers.push(json!({
            "customerId": id,
            "name": format!("Customer {c}"),
            "email": format!("billing+{c}@customer{c}.example"),
            "billingId": format!("cus_{c:06}"),
            "createdAt": iso(created),
            "updatedAt": iso(updated),
        }));
        let roll = rng.random_range(0..10);
        let status = match roll {
            0 => "CANCELED",
            1 => "IN_TRIAL",
            _ => "ACTIVE",
        };
        let resource = rng.random_bool(0.1).then(|| format!("site-{c}"));
        let (plan, plan_name) = if c % 3 == 0 {
            ("plan-pro", "Pro")
        } else {
            ("plan-growth", "Growth")
        };
        fake.subscriptions.push(json!({
            "subscriptionId": format!("bench-sub-{c:05}"),
            "status": status,
            "startDate": iso(created + 60_000),
            "endDate": (status == "CANCELED").then(|| iso(updated + day)),
            "cancellationDate": (status == "CANCELED").then(|| iso(updated)),
            "trialEndDate": (status == "IN_TRIAL").then(|| iso(created + 14 * day)),
            "billingId": format!("sub_{c:06}"),
            "customer": {"customerId": id},
            "resource": resource.as_ref().map(|r| json!({"resourceId": r})),
            "plan": {"refId": plan, "displayName": plan_name},
        }));
        let body = state_body(&mut rng, &id, None, &all, updated + 1_000);
        fake.states.insert((id.clone(), None), body);
        if let Some(r) = resource {
            let body = state_body(&mut rng, &id, Some(&r), &RESOURCE_FEATURES, updated + 2_000);
            fake.states.insert((id, Some(r)), body);
            fake.resources += 1;
        }
    }
    fake
}

// ---------------------------------------------------------------------------------------------
// The summary line
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct KindCounts {
    seen: u64,
    changed: u64,
    unchanged: u64,
    older: u64,
}

#[derive(Debug, Default)]
struct Summary {
    customers: KindCounts,
    pruned: u64,
    subscriptions: KindCounts,
    sets: KindCounts,
    requests: u64,
    throttled: u64,
    seconds: f64,
}

fn numbers(s: &str) -> Vec<f64> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.trim_matches('.').parse().ok())
        .collect()
}

/// `sync: customers N listed, C changed, U unchanged, S older than the replica, P pruned;
/// subscriptions …; entitlement sets N read, …; requests R (429: K); T s`.
fn parse_summary(line: &str) -> Option<Summary> {
    let parts: Vec<&str> = line.strip_prefix("sync: customers ")?.split("; ").collect();
    let [customers, subscriptions, sets, requests, seconds] = parts[..] else {
        return None;
    };
    if !subscriptions.starts_with("subscriptions ")
        || !sets.starts_with("entitlement sets ")
        || !requests.starts_with("requests ")
    {
        return None;
    }
    let kind = |n: &[f64]| {
        Some(KindCounts {
            seen: *n.first()? as u64,
            changed: *n.get(1)? as u64,
            unchanged: *n.get(2)? as u64,
            older: *n.get(3)? as u64,
        })
    };
    let c = numbers(customers);
    let r = numbers(requests); // R, 429, K
    Some(Summary {
        customers: kind(&c)?,
        pruned: *c.get(4)? as u64,
        subscriptions: kind(&numbers(subscriptions))?,
        sets: kind(&numbers(sets))?,
        requests: *r.first()? as u64,
        throttled: *r.get(2)? as u64,
        seconds: *numbers(seconds).first()?,
    })
}

// ---------------------------------------------------------------------------------------------
// The part
// ---------------------------------------------------------------------------------------------

/// What one pass took.
struct Pass {
    wall: Duration,
    summary: Summary,
    line: String,
    /// % of one core: the sync process, PostgreSQL, the bench (the fake).
    cpu: (f64, f64, f64),
    peak_rss: Option<f64>,
}

async fn run_pass(env: &Env, db_url: &str, pool: &PgPool, api: &str, n: u32) -> Result<Pass> {
    let log = format!("sync-{n}.log");
    let mut cmd = env.command(&["sync"], &log)?;
    cmd.env("DATABASE_URL", db_url)
        .env("STIGG_SERVER_API_KEY", KEY)
        .env("STIGG_API_URL", api)
        .env("STIGG_EDGE_URL", api)
        .env("SYNC_RATE", "100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let db0 = db_stats(pool).await?;
    let sampler = Sampler::start(pool.clone());
    let phases = PhaseClock::start(pool.clone());
    let cpu0 = cpu_snapshot(None);
    let started = Instant::now();
    let child = cmd.spawn().context("spawning sync")?;
    // the peak RSS, read while it runs (VmHWM is gone once it exits)
    let peak = child.id().map(|pid| {
        tokio::spawn(async move {
            let mut peak = None;
            while let Some(p) = peak_rss_mib(pid) {
                peak = Some(p);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    });
    let out = child.wait_with_output().await?;
    let wall = started.elapsed();
    let activity = sampler.finish().await;
    let phases = phases.finish(started, wall).await;
    // let PostgreSQL reap the sync's backends, whose CPU then shows in the postmaster's
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu1 = cpu_snapshot(None);
    let db1 = db_stats(pool).await?;
    let peak_rss = match peak {
        Some(h) => h.await.ok().flatten(),
        None => None,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default().trim().to_owned();
    let log_path = env.logs.join(&log);
    if !out.status.success() {
        bail!(
            "sync pass {n} failed ({}); last stdout line {line:?}; see {}",
            out.status,
            log_path.display()
        );
    }
    let Some(summary) = parse_summary(&line) else {
        bail!(
            "sync pass {n}: the last stdout line is not a summary: {line:?}; see {}",
            log_path.display()
        );
    };
    note(format!(
        "pass {n}: {:.2} s wall; {line}",
        wall.as_secs_f64()
    ));
    note(cpu_line_over(&cpu0, &cpu1, "sync", Some(wall)));
    note(format!("pass {n}: time by phase: {phases}"));
    let d: Vec<i64> = db1.iter().zip(&db0).map(|(b, a)| b - a).collect();
    note(format!(
        "pass {n}: PostgreSQL: {} commits (the bench's sampling adds ~100 a second), rows inserted {} / updated {} / deleted {}; WAL of \
         the whole server meanwhile: {} records, {:.1} MB, {} syncs",
        d[0],
        d[1],
        d[2],
        d[3],
        d[4],
        d[5] as f64 / 1e6,
        d[6]
    ));
    note(format!("pass {n}: {activity}"));
    Ok(Pass {
        wall,
        summary,
        line,
        cpu: cpu_split(&cpu0, &cpu1, wall),
        peak_rss,
    })
}

/// Polls the phase the pass records in `sync_runs` (saved with each page it writes) every
/// 20 ms, and tells how long each phase lasted.
struct PhaseClock {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Vec<(String, Instant)>>,
}

impl PhaseClock {
    fn start(pool: PgPool) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let newest: Option<i64> = sqlx::query_scalar("SELECT max(run_id) FROM sync_runs")
                .fetch_one(&pool)
                .await
                .unwrap_or(None);
            let mut seen: Vec<(String, Instant)> = Vec::new();
            loop {
                let phase: Option<String> = sqlx::query_scalar(
                    "SELECT phase FROM sync_runs WHERE run_id > $1 ORDER BY run_id DESC LIMIT 1",
                )
                .bind(newest.unwrap_or(0))
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
                if let Some(p) = phase {
                    if seen.last().is_none_or(|(last, _)| *last != p) {
                        seen.push((p, Instant::now()));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = &mut stopped => break,
                }
            }
            seen
        });
        Self { stop, handle }
    }

    /// `customers 1.2 s, subscriptions …`: from the start to the first phase change, and so
    /// on; the last phase ends when the process exited.
    async fn finish(self, started: Instant, wall: Duration) -> String {
        let _ = self.stop.send(());
        let seen = self.handle.await.unwrap_or_default();
        let end = started + wall;
        let mut parts = Vec::new();
        for (i, (phase, at)) in seen.iter().enumerate() {
            let from = if i == 0 { started } else { *at };
            let to = seen.get(i + 1).map_or(end, |(_, t)| *t);
            let label = match (i, phase.as_str()) {
                (_, "done") => "ending".to_owned(),
                (0, p) => format!("start-up and {p}"),
                (_, p) => p.to_owned(),
            };
            parts.push(format!(
                "{label} {:.2} s",
                to.saturating_duration_since(from).as_secs_f64()
            ));
        }
        parts.join(", ")
    }
}

/// % of one core used by the (reaped) sync process, PostgreSQL and the bench itself.
fn cpu_split(a: &Cpu, b: &Cpu, over: Duration) -> (f64, f64, f64) {
    let pct = |ticks: u64| ticks as f64 / TICKS / over.as_secs_f64().max(1e-3) * 100.0;
    (
        pct(b.reaped.saturating_sub(a.reaped) + b.target.saturating_sub(a.target)),
        pct(b.postgres.saturating_sub(a.postgres)),
        pct(b.bench.saturating_sub(a.bench)),
    )
}

/// Commits and rows written in the bench database, and the WAL of the whole server (other
/// databases' writes included): records, bytes, syncs.
async fn db_stats(pool: &PgPool) -> Result<[i64; 7]> {
    let r: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT d.xact_commit, d.tup_inserted, d.tup_updated, d.tup_deleted,
                w.wal_records, w.wal_bytes::int8, w.wal_sync
         FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    Ok([r.0, r.1, r.2, r.3, r.4, r.5, r.6])
}

/// Rows of what the replica holds after the first pass: live customers, subscriptions,
/// entitlement sets, entitlements, usage rows.
async fn stored(pool: &PgPool) -> Result<[i64; 5]> {
    let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customers WHERE NOT is_deleted),
                (SELECT count(*) FROM subscriptions),
                (SELECT count(*) FROM entitlement_sets),
                (SELECT count(*) FROM entitlements),
                (SELECT count(*) FROM usage)",
    )
    .fetch_one(pool)
    .await?;
    Ok([row.0, row.1, row.2, row.3, row.4])
}

pub(super) async fn sync_path(env: &Arc<Env>, plan: &Plan, table: &mut Table) -> Result<()> {
    let n = plan.sync_customers;
    section(&format!(
        "Sync: {n} customers through `stigg-byos sync`, the API answering at once"
    ));
    let built = Instant::now();
    let fake = Arc::new(model(n, plan.seed));
    let sets = n + fake.resources;
    let metered_resource = RESOURCE_FEATURES
        .iter()
        .filter(|&&i| FEATURES[i].meter.is_some())
        .count();
    let metered = FEATURES.iter().filter(|f| f.meter.is_some()).count();
    let expected: [i64; 5] = [
        n as i64,
        n as i64,
        sets as i64,
        (n * FEATURES.len() + fake.resources * RESOURCE_FEATURES.len()) as i64,
        (n * metered + fake.resources * metered_resource) as i64,
    ];
    let app = Router::new()
        .route("/graphql", post(graphql))
        .route("/v1/c/{customer}/entitlements-state.json", get(edge))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    note(format!(
        "fake Stigg API at {api}: {n} customers, {n} subscriptions ({} resource-scoped), \
         {sets} entitlement states, prepared in {:.2} s",
        fake.resources,
        built.elapsed().as_secs_f64()
    ));

    let result = async {
        let (db_url, pool) = env.fresh_database().await?;
        let first = run_pass(env, &db_url, &pool, &api, 1).await?;
        let held = stored(&pool).await?;
        let requests_first = fake.requests.swap(0, Ordering::Relaxed);
        let second = run_pass(env, &db_url, &pool, &api, 2).await?;
        let requests_second = fake.requests.load(Ordering::Relaxed);
        pool.close().await;
        Ok::<_, anyhow::Error>((first, held, requests_first, second, requests_second))
    }
    .await;
    server.abort();
    let (first, held, requests_first, second, requests_second) = result?;

    let rate = |p: &Pass| n as f64 / p.wall.as_secs_f64();
    let per_customer_ms = |p: &Pass, pct: f64| pct / 100.0 * p.wall.as_secs_f64() * 1e3 / n as f64;
    for (p, name) in [(&first, "first"), (&second, "second")] {
        note(format!(
            "{name} pass: {:.0} customers/s ({:.0} by its own clock); CPU per customer: sync \
             {:.3} ms, PostgreSQL {:.3} ms, fake API (bench process) {:.3} ms; sync peak RSS {}",
            rate(p),
            n as f64 / p.summary.seconds.max(1e-3),
            per_customer_ms(p, p.cpu.0),
            per_customer_ms(p, p.cpu.1),
            per_customer_ms(p, p.cpu.2),
            p.peak_rss
                .map_or_else(|| "?".into(), |m| format!("{m:.1} MiB")),
        ));
    }
    note(format!(
        "stored after the first pass: customers {}, subscriptions {}, entitlement sets {}, \
         entitlements {}, usage rows {}",
        held[0], held[1], held[2], held[3], held[4]
    ));
    table.row(
        &format!("sync, first pass ({n} customers)"),
        format!("{:.0} customers/s", rate(&first)),
        "-",
        None,
    );
    table.row(
        "sync, first pass CPU: sync / PostgreSQL",
        format!("{:.0}% / {:.0}%", first.cpu.0, first.cpu.1),
        "-",
        None,
    );
    table.row(
        "sync, second pass (unchanged)",
        format!("{:.0} customers/s", rate(&second)),
        "-",
        None,
    );
    table.row(
        "sync, second pass CPU: sync / PostgreSQL",
        format!("{:.0}% / {:.0}%", second.cpu.0, second.cpu.1),
        "-",
        None,
    );

    // what the data calls for
    let n64 = n as u64;
    let sets64 = sets as u64;
    let mut wrong = Vec::new();
    let mut expect = |what: String, got: u64, want: u64| {
        if got != want {
            wrong.push(format!("{what}: {got}, expected {want}"));
        }
    };
    for (p, name, changed) in [(&first, "first", true), (&second, "second", false)] {
        let s = &p.summary;
        for (kind, k, seen) in [
            ("customers", s.customers, n64),
            ("subscriptions", s.subscriptions, n64),
            ("entitlement sets", s.sets, sets64),
        ] {
            expect(format!("{name} pass, {kind} listed/read"), k.seen, seen);
            let (c, u) = if changed { (seen, 0) } else { (0, seen) };
            expect(format!("{name} pass, {kind} changed"), k.changed, c);
            expect(format!("{name} pass, {kind} unchanged"), k.unchanged, u);
            expect(format!("{name} pass, {kind} older"), k.older, 0);
        }
        expect(format!("{name} pass, pruned"), s.pruned, 0);
        expect(format!("{name} pass, 429s"), s.throttled, 0);
    }
    let pages = |len: u64| len.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let want_requests = 2 * pages(n64) + sets64;
    expect(
        "first pass, requests (summary)".into(),
        first.summary.requests,
        want_requests,
    );
    expect(
        "first pass, requests (fake)".into(),
        requests_first,
        want_requests,
    );
    expect(
        "second pass, requests (fake)".into(),
        requests_second,
        want_requests,
    );
    expect(
        "requests the fake refused".into(),
        fake.refused.load(Ordering::Relaxed),
        0,
    );
    for (i, what) in [
        "live customers",
        "subscriptions",
        "entitlement sets",
        "entitlements",
        "usage rows",
    ]
    .iter()
    .enumerate()
    {
        expect(format!("stored {what}"), held[i] as u64, expected[i] as u64);
    }
    if !wrong.is_empty() {
        bail!(
            "sync did not do what the data calls for:\n  {}\nfirst pass: {}\nsecond pass: {}",
            wrong.join("\n  "),
            first.line,
            second.line
        );
    }
    note("both passes did what the data calls for; the second changed nothing");
    Ok(())
}
