//! Access path: a fresh database of N customers × 8 features filled by SQL, then `serve` under
//! load from the HTTP load generator, first `/check-access`, then the GraphQL customer query
//! (and, before them, the start-up on the same database).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;

use super::harness::{stop, Env};
use super::http_load::{get, load, post, BodyFn, Http};
use super::plan::Plan;
use super::sampling::{cpu_line, cpu_snapshot, peak_rss_mib, rss_mib, Sampler};
use super::startup::{free_port, spawn_server, startup, wait_ready};
use super::{note, section, Table};

async fn fill_access_database(pool: &PgPool, customers: usize) -> Result<()> {
    let c = customers as i64;
    let statements = [
        "INSERT INTO customers (customer_id, name, email, billing_id, version)
         SELECT 'cust-' || g, 'Customer ' || g, 'billing+' || g || '@customer.example',
                'cus_' || g, now() - interval '1 day'
         FROM generate_series(1, $1) g",
        // 80% ACTIVE, 10% IN_TRIAL, 10% CANCELED
        "INSERT INTO subscriptions (subscription_id, customer_id, status, plan_id, plan_name,
             billing_id, billing_period, start_date, raw, version)
         SELECT 'sub-' || g, 'cust-' || g,
                CASE g % 10 WHEN 0 THEN 'CANCELED' WHEN 1 THEN 'IN_TRIAL' ELSE 'ACTIVE' END,
                CASE WHEN g % 3 = 0 THEN 'plan-pro' ELSE 'plan-growth' END,
                CASE WHEN g % 3 = 0 THEN 'Pro' ELSE 'Growth' END,
                'sub_' || g, 'MONTHLY', now() - interval '40 days',
                jsonb_build_object('id', 'sub-' || g, 'customer', jsonb_build_object('id', 'cust-' || g)),
                now() - interval '1 day'
         FROM generate_series(1, $1) g",
        "INSERT INTO entitlement_sets (customer_id, resource_key, version, entitlements)
         SELECT 'cust-' || g, '', now() - interval '1 day', '[]'::jsonb
         FROM generate_series(1, $1) g",
        "INSERT INTO entitlements (customer_id, resource_key, feature_id, feature_type,
             meter_type, usage_limit, has_unlimited, has_soft_limit, period_anchor,
             period_start, period_end, reset_period, enum_values)
         SELECT 'cust-' || g, '', f.feature_id, f.feature_type, f.meter_type, f.usage_limit,
                f.has_unlimited, f.has_soft_limit,
                CASE WHEN f.reset_period IS NOT NULL THEN now() - interval '40 days' END,
                CASE WHEN f.reset_period IS NOT NULL THEN now() - interval '10 days' END,
                CASE WHEN f.reset_period IS NOT NULL THEN now() + interval '20 days' END,
                f.reset_period, f.enum_values
         FROM generate_series(1, $1) g CROSS JOIN (VALUES
           ('feature-sso', 'BOOLEAN', NULL, NULL::float8, false, false, NULL, NULL::text[]),
           ('feature-max-projects', 'NUMBER', NULL, 25, false, false, NULL, NULL),
           ('feature-api-calls', 'NUMBER', 'INCREMENTAL', 10000, false, false, 'MONTH', NULL),
           ('feature-seats', 'NUMBER', 'FLUCTUATING', 15, false, false, NULL, NULL),
           ('feature-storage-gb', 'NUMBER', 'FLUCTUATING', NULL, true, false, NULL, NULL),
           ('feature-emails', 'NUMBER', 'INCREMENTAL', 500, false, true, 'MONTH', NULL),
           ('feature-region', 'ENUM', NULL, NULL, false, false, NULL, ARRAY['us', 'eu']),
           ('feature-page-views', 'NUMBER', 'INCREMENTAL', 100000, false, false, 'MONTH', NULL)
         ) AS f(feature_id, feature_type, meter_type, usage_limit, has_unlimited,
                has_soft_limit, reset_period, enum_values)",
        "INSERT INTO usage (customer_id, resource_key, feature_id, current_usage, version,
             period_start, period_end)
         SELECT 'cust-' || g, '', f.feature_id, floor(random() * f.cap), now() - interval '1 hour',
                CASE WHEN f.monthly THEN now() - interval '10 days' END,
                CASE WHEN f.monthly THEN now() + interval '20 days' END
         FROM generate_series(1, $1) g CROSS JOIN (VALUES
           ('feature-api-calls', 12000, true), ('feature-seats', 17, false),
           ('feature-storage-gb', 2000, false), ('feature-emails', 600, true),
           ('feature-page-views', 110000, true)
         ) AS f(feature_id, cap, monthly)",
    ];
    for sql in statements {
        sqlx::query(sql).bind(c).execute(pool).await?;
    }
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}

const CHECK_FEATURES: [(&str, Option<&str>); 8] = [
    ("feature-sso", None),
    ("feature-max-projects", Some("usage")),
    ("feature-api-calls", Some("usage")),
    ("feature-seats", Some("usage")),
    ("feature-storage-gb", Some("usage")),
    ("feature-emails", Some("usage")),
    ("feature-region", Some("values")),
    ("feature-page-views", Some("usage")),
];

fn check_access_body(rng: &mut SmallRng, customers: usize) -> String {
    // 1% unknown customers
    let customer = if rng.random_bool(0.01) {
        format!("cust-missing-{}", rng.random_range(0..1_000_000))
    } else {
        format!("cust-{}", rng.random_range(1..=customers))
    };
    let (feature, extra) = CHECK_FEATURES[rng.random_range(0..CHECK_FEATURES.len())];
    match extra {
        Some("usage") if rng.random_bool(0.5) => format!(
            r#"{{"customerId":"{customer}","featureId":"{feature}","requestedUsage":{}}}"#,
            rng.random_range(1..5)
        ),
        Some("values") => format!(
            r#"{{"customerId":"{customer}","featureId":"{feature}","requestedValues":["{}"]}}"#,
            ["us", "eu", "ap"][rng.random_range(0..3)]
        ),
        _ => format!(r#"{{"customerId":"{customer}","featureId":"{feature}"}}"#),
    }
}

const GRAPHQL_QUERY: &str = "query($id:String!){ customer(customerId:$id){ customerId name email subscriptions { nodes { subscriptionId status planId } } } }";

fn graphql_body(rng: &mut SmallRng, customers: usize) -> String {
    json!({
        "query": GRAPHQL_QUERY,
        "variables": {"id": format!("cust-{}", rng.random_range(1..=customers))}
    })
    .to_string()
}

pub(super) async fn access_path(env: &Arc<Env>, plan: &Plan, table: &mut Table) -> Result<()> {
    section(&format!(
        "Access path: {} customers × 8 features",
        plan.customers
    ));
    let (db_url, pool) = env.fresh_database().await?;
    let t = Instant::now();
    fill_access_database(&pool, plan.customers).await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&pool)
            .await?;
    note(format!(
        "filled by SQL in {:.1} s ({size})",
        t.elapsed().as_secs_f64()
    ));

    if plan.runs("startup") {
        startup(env, &db_url, table).await?;
    }

    if !(plan.runs("access") || plan.runs("graphql")) {
        return Ok(());
    }
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut child = spawn_server(env, &db_url, port, "serve.log", plan.cache_mb)?;
    wait_ready(addr, &mut child, Duration::from_secs(30)).await?;
    let pid = child.id().context("server pid")?;
    note(format!(
        "server ready, idle RSS {:.1} MiB",
        rss_mib(pid).unwrap_or(f64::NAN)
    ));
    let customers = plan.customers;

    let mut healthz_rate = None;
    if plan.runs("access") {
        // what the same server answers without a decision, under the same load
        section(&format!(
            "/healthz: {} connections, {:.0} s",
            plan.connections,
            plan.load.as_secs_f64()
        ));
        let health = load(
            addr,
            "/healthz",
            plan.connections,
            plan.warmup,
            plan.load,
            Arc::new(|_: &mut SmallRng| String::new()),
        )
        .await?;
        health.describe();
        healthz_rate = Some(health.rate());
        let body: BodyFn = Arc::new(move |rng: &mut SmallRng| check_access_body(rng, customers));

        section(&format!(
            "/check-access, cold cache (ACCESS_CACHE_MB={}): {} connections, {:.0} s from the start",
            plan.cache_mb,
            plan.connections,
            plan.load.as_secs_f64()
        ));
        let m0 = scrape(addr).await?;
        let cold = load(
            addr,
            "/check-access",
            plan.connections,
            Duration::ZERO,
            plan.load,
            body.clone(),
        )
        .await?;
        let m1 = scrape(addr).await?;
        cold.describe();
        let cold_hits = hit_ratio(&m0, &m1);
        note(format!("hit ratio {:.1}%", cold_hits * 100.0));

        // every customer asked once, so that the cache holds them all
        let t = Instant::now();
        let asked = Arc::new(AtomicUsize::new(0));
        while asked.load(Ordering::Relaxed) < customers && t.elapsed() < Duration::from_secs(120) {
            let asked = asked.clone();
            load(
                addr,
                "/check-access",
                plan.connections,
                Duration::ZERO,
                Duration::from_secs(2),
                Arc::new(move |_: &mut SmallRng| {
                    let i = asked.fetch_add(1, Ordering::Relaxed) % customers + 1;
                    format!(r#"{{"customerId":"cust-{i}","featureId":"feature-sso"}}"#)
                }),
            )
            .await?;
        }
        let m2 = scrape(addr).await?;
        note(format!(
            "every customer asked once in {:.1} s; the cache holds {:.1} MiB (weighed)",
            t.elapsed().as_secs_f64(),
            metric(&m2, "stigg_byos_access_cache_bytes") / 1048576.0
        ));

        section(&format!(
            "/check-access, warm cache: {} connections, {:.0} s (after {:.1} s warm-up)",
            plan.connections,
            plan.load.as_secs_f64(),
            plan.warmup.as_secs_f64()
        ));
        let sampler = Sampler::start(pool.clone());
        let cpu0 = cpu_snapshot(Some(pid));
        let m3 = scrape(addr).await?;
        let report = load(
            addr,
            "/check-access",
            plan.connections,
            plan.warmup,
            plan.load,
            body.clone(),
        )
        .await?;
        let m4 = scrape(addr).await?;
        let cpu1 = cpu_snapshot(Some(pid));
        let activity = sampler.finish().await;
        let rss = peak_rss_mib(pid).unwrap_or(f64::NAN);
        report.describe();
        let warm_hits = hit_ratio(&m3, &m4);
        note(format!("hit ratio {:.2}%", warm_hits * 100.0));
        note(format!("server peak RSS {rss:.1} MiB"));
        note(cpu_line(&cpu0, &cpu1, "server"));
        note(format!("server: {activity}"));
        let ok_statuses = report.count(200) + report.count(403);
        if ok_statuses < report.requests {
            note(format!(
                "WARNING: {} answers were neither 200 nor 403",
                report.requests - ok_statuses
            ));
        }

        section(&format!(
            "commit to invalidation: this process applies usage reports for random customers \
             ({INVALIDATION_RATE}/s) while /check-access is loaded, {:.0} s",
            plan.load.as_secs_f64()
        ));
        let m5 = scrape(addr).await?;
        let writer = tokio::spawn(write_usage(pool.clone(), customers, plan.load));
        let mixed = load(
            addr,
            "/check-access",
            plan.connections,
            Duration::ZERO,
            plan.load,
            body,
        )
        .await?;
        let written = writer.await??;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m6 = scrape(addr).await?;
        mixed.describe();
        let name = "stigg_byos_access_cache_invalidation_seconds";
        let (p50, p99, heard) = (
            quantile(&m5, &m6, name, 0.5),
            quantile(&m5, &m6, name, 0.99),
            metric(&m6, &format!("{name}_count")) - metric(&m5, &format!("{name}_count")),
        );
        note(format!(
            "{written} commits, {heard:.0} invalidations heard; notification to invalidation \
             p50 <= {:.1} ms, p99 <= {:.1} ms (histogram bucket bounds); hit ratio {:.1}%",
            p50 * 1000.0,
            p99 * 1000.0,
            hit_ratio(&m5, &m6) * 100.0
        ));

        let ratio = report.rate() / health.rate();
        table.row(
            "/healthz throughput",
            format!("{:.0} req/s", health.rate()),
            "",
            None,
        );
        table.row(
            "/check-access throughput, warm cache",
            format!("{:.0} req/s", report.rate()),
            "",
            None,
        );
        table.row(
            "/check-access / /healthz, warm cache",
            format!("{ratio:.2}"),
            ">= 0.70",
            Some(ratio >= 0.7),
        );
        table.row(
            "/check-access hit ratio, warm cache",
            format!("{:.2}%", warm_hits * 100.0),
            "",
            None,
        );
        table.row(
            "/check-access throughput, cold cache",
            format!("{:.0} req/s ({:.0}% hits)", cold.rate(), cold_hits * 100.0),
            "",
            None,
        );
        table.row(
            "/check-access p50, warm cache",
            format!("{:.2} ms", report.percentile(0.50)),
            "",
            None,
        );
        table.row(
            "/check-access p99, warm cache",
            format!("{:.2} ms", report.percentile(0.99)),
            "<= 2 ms",
            Some(report.percentile(0.99) <= 2.0),
        );
        table.row(
            "/check-access p99.9, warm cache",
            format!("{:.2} ms", report.percentile(0.999)),
            "",
            None,
        );
        table.row(
            "commit-to-invalidation p99 (two processes)",
            format!("{:.1} ms", p99 * 1000.0),
            "<= 50 ms",
            Some(p99 <= 0.05),
        );
        let bound = 64.0 + f64::from(plan.cache_mb);
        table.row(
            "server peak RSS, /check-access load",
            format!(
                "{rss:.1} MiB (cache {:.1} MiB weighed, ACCESS_CACHE_MB {})",
                metric(&m4, "stigg_byos_access_cache_bytes") / 1048576.0,
                plan.cache_mb
            ),
            &format!("<= {bound:.0} MiB"),
            Some(rss <= bound),
        );
    }

    if plan.runs("graphql") {
        section(&format!(
            "GraphQL customer query: {} connections, {:.0} s",
            plan.connections,
            plan.load.as_secs_f64()
        ));
        // is /graphql there, and does the query answer data?
        let body = graphql_body(&mut SmallRng::seed_from_u64(1), customers);
        let mut probe = Http::connect(addr).await?;
        let status = probe.roundtrip(&post("/graphql", &body)).await?;
        let answer: Value = serde_json::from_slice(probe.body()).unwrap_or(Value::Null);
        if status == 404 {
            note("/graphql answers 404: not available in this build");
            for m in ["GraphQL customer throughput", "GraphQL p99"] {
                table.row(m, "n/a".into(), "", None);
            }
        } else {
            if status != 200
                || answer.get("errors").is_some()
                || answer["data"]["customer"].is_null()
            {
                note(format!(
                    "WARNING: probe answered {status}: {}",
                    String::from_utf8_lossy(probe.body())
                ));
            }
            drop(probe);
            // every customer asked once, as for /check-access: the warm figure
            let t = Instant::now();
            let asked = Arc::new(AtomicUsize::new(0));
            while asked.load(Ordering::Relaxed) < customers
                && t.elapsed() < Duration::from_secs(120)
            {
                let asked = asked.clone();
                load(
                    addr,
                    "/graphql",
                    plan.connections,
                    Duration::ZERO,
                    Duration::from_secs(2),
                    Arc::new(move |_: &mut SmallRng| {
                        let i = asked.fetch_add(1, Ordering::Relaxed) % customers + 1;
                        json!({"query": GRAPHQL_QUERY, "variables": {"id": format!("cust-{i}")}})
                            .to_string()
                    }),
                )
                .await?;
            }
            note(format!(
                "every customer asked once in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
            let m0 = scrape(addr).await?;
            let sampler = Sampler::start(pool.clone());
            let cpu0 = cpu_snapshot(Some(pid));
            let report = load(
                addr,
                "/graphql",
                plan.connections,
                plan.warmup,
                plan.load,
                Arc::new(move |rng: &mut SmallRng| graphql_body(rng, customers)),
            )
            .await?;
            let cpu1 = cpu_snapshot(Some(pid));
            let activity = sampler.finish().await;
            let rss = peak_rss_mib(pid).unwrap_or(f64::NAN);
            report.describe();
            let m1 = scrape(addr).await?;
            note(format!(
                "cache hit ratio {:.2}%",
                hit_ratio(&m0, &m1) * 100.0
            ));
            note(format!("server peak RSS so far {rss:.1} MiB"));
            note(cpu_line(&cpu0, &cpu1, "server"));
            note(format!("server: {activity}"));
            if report.count(200) < report.requests {
                note(format!(
                    "WARNING: {} answers were not 200",
                    report.requests - report.count(200)
                ));
            }
            table.row(
                "GraphQL customer throughput",
                format!("{:.0} req/s", report.rate()),
                ">= 8000 req/s",
                Some(report.rate() >= 8_000.0),
            );
            if let Some(h) = healthz_rate {
                let ratio = report.rate() / h;
                table.row(
                    "GraphQL customer / /healthz",
                    format!("{ratio:.2}"),
                    ">= 0.50",
                    Some(ratio >= 0.5),
                );
            }
            table.row(
                "GraphQL p50",
                format!("{:.2} ms", report.percentile(0.50)),
                "",
                None,
            );
            table.row(
                "GraphQL p99",
                format!("{:.2} ms", report.percentile(0.99)),
                "<= 10 ms",
                Some(report.percentile(0.99) <= 10.0),
            );
            table.row(
                "GraphQL p99.9",
                format!("{:.2} ms", report.percentile(0.999)),
                "",
                None,
            );
            let bound = 64.0 + f64::from(plan.cache_mb);
            table.row(
                "server peak RSS, after GraphQL load",
                format!("{rss:.1} MiB"),
                &format!("<= {bound:.0} MiB"),
                Some(rss <= bound),
            );
        }
    }
    stop(child).await;
    pool.close().await;
    Ok(())
}

/// Usage reports the invalidation measurement applies a second.
const INVALIDATION_RATE: u32 = 200;

/// Applies usage reports for random customers, one transaction each, at
/// [`INVALIDATION_RATE`] for `duration`, through the library's processor (a process apart
/// from the server, as a worker is). Returns how many were applied.
async fn write_usage(pool: PgPool, customers: usize, duration: Duration) -> Result<u64> {
    let processor = stigg_byos::processor::Processor::new(pool);
    let mut rng = SmallRng::seed_from_u64(77);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / INVALIDATION_RATE);
    let started = Instant::now();
    let mut applied = 0;
    while started.elapsed() < duration {
        tick.tick().await;
        let body = json!({
            "type": "measurement.reported",
            "messageId": format!("bench-usage-{applied}"),
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "customer": {"id": format!("cust-{}", rng.random_range(1..=customers))},
            "feature": {"id": "feature-api-calls"},
            "currentUsage": rng.random_range(0..12_000),
        })
        .to_string();
        let event = stigg_byos::events::parse(body.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}", e.reason))?;
        for r in processor.process(&[&event]).await? {
            r.map_err(|e| anyhow::anyhow!(e))?;
        }
        applied += 1;
    }
    Ok(applied)
}

/// The server's `/metrics` text.
async fn scrape(addr: SocketAddr) -> Result<String> {
    let mut c = Http::connect(addr).await?;
    c.roundtrip(&get("/metrics")).await?;
    Ok(String::from_utf8_lossy(c.body()).into_owned())
}

/// The value of a metric line that starts with `name` (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Hits / (hits + misses) of the access cache between two scrapes.
fn hit_ratio(before: &str, after: &str) -> f64 {
    let delta = |event: &str| {
        let name = format!("stigg_byos_access_cache_total{{event=\"{event}\"}}");
        metric(after, &name) - metric(before, &name)
    };
    let (hits, misses) = (delta("hit"), delta("miss"));
    if hits + misses == 0.0 {
        return 0.0;
    }
    hits / (hits + misses)
}

/// The upper bound of the histogram bucket that holds quantile `q` of what was recorded
/// between two scrapes.
fn quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let count =
        |b: &[(f64, f64)], le: f64| b.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
    let total = b1.last().map_or(0.0, |(le, c)| c - count(&b0, *le));
    if total == 0.0 {
        return f64::NAN;
    }
    for (le, c) in &b1 {
        if c - count(&b0, *le) >= q * total {
            return *le;
        }
    }
    f64::INFINITY
}
