//! The console (issue 13): its JSON endpoints on a seeded replica, its embedded files (which
//! must name no other host), and its pages rendered by a headless Chromium that can reach no
//! host but this one. A screenshot of each page goes to `target/console-screenshots/` (kept
//! by CI).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use stigg_byos::dead_letters::NewDeadLetter;
use stigg_byos::http::console::{CONTENT_SECURITY_POLICY, FILES};

use crate::support::*;

/// Three customers (one with a subscription and two entitlement sets) and one dead letter.
async fn seed(pool: &PgPool) {
    let mut bodies = fixtures(&[
        "customer.created",
        "subscription.created",
        "entitlements.updated",
        "entitlements.updated.resource",
    ]);
    for (id, message_id) in [
        ("cust-console-a", "console-101"),
        ("cust-console-b", "console-102"),
    ] {
        bodies.push(event(
            "customer.created",
            &[("id", json!(id)), ("messageId", json!(message_id))],
        ));
    }
    apply_events(pool, &bodies).await;
    letter(pool, "sqs-console-older", "an older letter").await;
}

async fn letter(pool: &PgPool, source_id: &str, reason: &str) {
    let body = format!("{{\"type\":\"customer.created\",\"note\":\"{source_id}\"}}");
    stigg_byos::dead_letters::record(
        pool,
        &NewDeadLetter {
            source_id: source_id.into(),
            event_message_id: Some(format!("msg-{source_id}")),
            event_type: Some("customer.created".into()),
            reason: reason.into(),
            body: body.into_bytes(),
        },
    )
    .await
    .unwrap();
}

async fn seeded_app(extra: &[&str]) -> (App, PgPool) {
    let (pool, url) = migrated_pool().await;
    seed(&pool).await;
    (serve_http(&pool, &url, extra).await, pool)
}

async fn get(app: &App, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}{path}", app.base));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap()
}

#[test]
fn no_embedded_file_names_another_host() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), text)
        })
        .collect();
    assert!(files.len() >= FILES.len(), "{files:?}");
    // what the binary serves, in case a file were embedded from elsewhere
    files.extend(
        FILES
            .iter()
            .map(|(path, _, body)| (format!("served {path}"), body.to_string())),
    );
    for (name, text) in &files {
        for scheme in ["http://", "https://"] {
            if let Some(at) = text.to_ascii_lowercase().find(scheme) {
                let line = text[..at].lines().count();
                panic!("{name} names another host ({scheme}) at line {line}");
            }
        }
        // protocol-relative URLs (`//host/…`) in attributes would name another host too
        for attribute in ["src=\"//", "href=\"//", "url(//", "action=\"//"] {
            assert!(!text.contains(attribute), "{name} contains {attribute}");
        }
    }
}

#[tokio::test]
async fn api_status_counts_the_seeded_replica() {
    let (app, pool) = seeded_app(&[]).await;
    let r = get(&app, "/api/status", None).await;
    assert_eq!(r.status().as_u16(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["customers"], json!(3), "{s}");
    assert_eq!(
        s["subscriptions"],
        json!(count(&pool, "SELECT count(*) FROM subscriptions").await),
        "{s}"
    );
    assert_eq!(s["subscriptions"], json!(1), "{s}");
    assert_eq!(s["entitlement_sets"], json!(2), "{s}");
    assert_eq!(s["dead_letters"], json!(1), "{s}");
    assert_eq!(s["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(s["uptime_seconds"].is_u64(), "{s}");
    // the events were applied in this process (the test's): the newest is known
    assert!(s["newest_event"].is_string(), "{s}");
    assert!(
        s["newest_event_age_seconds"].as_f64().unwrap() >= 0.0,
        "{s}"
    );
    for outcome in [
        "applied",
        "duplicate",
        "stale",
        "skipped",
        "dead_lettered",
        "retried",
        "failed",
    ] {
        assert!(s["messages"][outcome].is_u64(), "{outcome} in {s}");
    }
    assert!(s["messages"]["applied"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["messages"]["dead_lettered"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["last_sync"], Value::Null, "{s}");

    // a recorded sync pass shows with its counts
    sqlx::query(
        "INSERT INTO sync_runs (phase, counts, finished_at, complete)
         VALUES ('done', '{\"customers\": {\"listed\": 3, \"changed\": 2}}', now(), true)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let s: Value = get(&app, "/api/status", None).await.json().await.unwrap();
    assert_eq!(s["last_sync"]["complete"], json!(true), "{s}");
    assert_eq!(s["last_sync"]["counts"]["customers"]["listed"], json!(3));
    assert!(s["last_sync"]["finished_at"].is_string(), "{s}");

    // a deleted customer is not counted
    let deleted = event(
        "customer.deleted",
        &[
            ("id", json!("cust-console-a")),
            ("messageId", json!("console-201")),
        ],
    );
    apply_events(&pool, &[deleted]).await;
    let s: Value = get(&app, "/api/status", None).await.json().await.unwrap();
    assert_eq!(s["customers"], json!(2), "{s}");
    app.stop().await;
}

#[tokio::test]
async fn api_dead_letters_lists_the_newest_first_with_their_bodies() {
    let (app, pool) = seeded_app(&[]).await;
    letter(&pool, "sqs-console-newer", "the newer letter").await;
    let r = get(&app, "/api/dead-letters", None).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["total"], json!(2), "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    let ids: Vec<&str> = letters
        .iter()
        .map(|d| d["source_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sqs-console-newer", "sqs-console-older"]);
    let d = &letters[0];
    assert_eq!(d["event_message_id"], json!("msg-sqs-console-newer"));
    assert_eq!(d["event_type"], json!("customer.created"));
    assert_eq!(d["reason"], json!("the newer letter"));
    assert_eq!(d["attempts"], json!(1));
    assert!(d["first_seen"].as_str().unwrap().ends_with('Z'), "{d}");
    assert_eq!(
        d["body"],
        json!("{\"type\":\"customer.created\",\"note\":\"sqs-console-newer\"}")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_api_needs_the_token_and_the_pages_do_not() {
    let (app, _pool) = seeded_app(&["--api-tokens", "alpha,beta"]).await;
    for path in ["/api/status", "/api/dead-letters"] {
        let r = get(&app, path, None).await;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = get(&app, path, Some("wrong")).await;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = get(&app, path, Some("beta")).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    for (path, content_type, body) in FILES {
        let r = get(&app, path, None).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        assert_eq!(
            r.headers()["content-security-policy"],
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.text().await.unwrap(), body, "{path}");
    }
    for needle in [
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(needle), "{needle}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    app.stop().await;
}

// ---- headless Chromium ---------------------------------------------------------------------

/// Chromium renders one page at a time: the machine's cores are few.
static CHROMIUM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chromium() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("chromium"))
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "no chromium binary (looked for `chromium` on PATH and /usr/bin/chromium): the \
             console's browser tests need Debian's chromium (`apt-get install -y chromium`; \
             .ci/run installs it)"
        )
    })
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with every host but loopback unreachable (every request
/// goes to a proxy at 127.0.0.1:9, where nothing listens, except those to loopback) and `extra` arguments; returns stdout and
/// stderr.
async fn run_chromium(url: &str, extra: &[String]) -> (String, String) {
    let binary = chromium();
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(&binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",
            // loopback is never proxied (Chrome's implicit rule; `<-loopback>` would remove
            // it and send this app's own address to the dead proxy too)
            "--proxy-bypass-list=127.0.0.1",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("chromium took over 120 s on {url}"))
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The rendered DOM of `url`, and a screenshot of it into `target/console-screenshots/`.
async fn render(url: &str, screenshot: &str) -> String {
    let _one_at_a_time = CHROMIUM.lock().await;
    let (dom, _) = run_chromium(url, &["--dump-dom".to_string()]).await;
    let path = screenshots_dir().join(screenshot);
    let _ = std::fs::remove_file(&path);
    let (out, err) = run_chromium(
        url,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1200,900".to_string(),
        ],
    )
    .await;
    assert!(
        path.is_file(),
        "no screenshot at {}: {out}\n{err}",
        path.display()
    );
    dom
}

fn url(app: &App, path: &str, query: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params(&format!("{}{path}", app.base), query)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn browser_the_status_page_shows_the_seeded_counts() {
    let (app, _pool) = seeded_app(&[]).await;
    let dom = render(&url(&app, "/", &[]), "status.png").await;
    for shown in [
        r#"id="customers">3<"#,
        r#"id="subscriptions">1<"#,
        r#"id="entitlement-sets">2<"#,
        r#"class="big warn" id="dead-letters">1<"#,
        r#"href="/console/dead-letters""#,
    ] {
        assert!(
            dom.contains(shown),
            "{shown} not in the rendered status page:\n{dom}"
        );
    }
    assert!(dom.contains("refreshes every"), "{dom}");
    app.stop().await;
}

#[tokio::test]
async fn browser_the_explorer_runs_the_query_of_its_url() {
    let (app, _pool) = seeded_app(&[]).await;
    let query =
        "{ customer(customerId: \"cust-orbit\") { customerId name } customers { totalCount } }";
    let dom = render(
        &url(&app, "/graphiql", &[("query", query), ("run", "1")]),
        "explorer.png",
    )
    .await;
    // the answer, pretty-printed
    for shown in [
        r#""customerId": "cust-orbit""#,
        r#""totalCount": 3"#,
        "HTTP 200",
    ] {
        assert!(
            dom.contains(shown),
            "{shown} not in the rendered explorer:\n{dom}"
        );
    }
    // the schema browser, from introspection: types, fields, arguments, descriptions
    for shown in [
        r#"id="type-Query""#,
        r#"id="type-Customer""#,
        r#"<span class="arg">customerId</span>"#,
        r#"class="description""#,
    ] {
        assert!(
            dom.contains(shown),
            "{shown} not in the schema browser:\n{dom}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn browser_the_decision_tester_shows_a_denial_and_its_reason() {
    let (app, _pool) = seeded_app(&[]).await;
    let dom = render(
        &url(
            &app,
            "/console/access",
            &[
                ("customerId", "cust-orbit"),
                ("featureId", "feature-nope"),
                ("run", "1"),
            ],
        ),
        "access.png",
    )
    .await;
    for shown in [
        "Denied (HTTP 403)",
        "Reason: NoFeatureEntitlementInSubscription",
        r#"<tr id="field-hasAccess"><th>hasAccess</th><td>false</td></tr>"#,
        r#"<tr id="field-usageLimit"><th>usageLimit</th><td>null</td></tr>"#,
    ] {
        assert!(
            dom.contains(shown),
            "{shown} not in the rendered decision tester:\n{dom}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn browser_the_dead_letters_page_lists_them() {
    let (app, _pool) = seeded_app(&[]).await;
    let dom = render(&url(&app, "/console/dead-letters", &[]), "dead-letters.png").await;
    for shown in [
        "sqs-console-older",
        "msg-sqs-console-older",
        "an older letter",
        "1 dead letter(s)",
        r#""note": "sqs-console-older""#,
    ] {
        assert!(
            dom.contains(shown),
            "{shown} not in the rendered dead letters page:\n{dom}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn browser_a_page_asks_for_the_token_when_the_api_answers_401() {
    let (app, _pool) = seeded_app(&["--api-tokens", "alpha"]).await;
    let _one_at_a_time = CHROMIUM.lock().await;
    let (dom, _) = run_chromium(&url(&app, "/", &[]), &["--dump-dom".to_string()]).await;
    for shown in [
        "This service needs a bearer token",
        r#"type="password""#,
        "Waiting for a token.",
        r#"id="customers">–<"#,
    ] {
        assert!(
            dom.contains(shown),
            "{shown} not in the status page without a token:\n{dom}"
        );
    }
    app.stop().await;
}
