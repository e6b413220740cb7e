//! Connecting to the replica's database: the pool every role shares, its TLS rule for
//! loopback hosts, and the migrations applied at start-up (retried while the database is not
//! up yet).

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

use crate::config::Settings;

/// Opens the pool. Connections are made on demand, so a process starts (and `/readyz` says
/// 503) while the database is down.
pub fn pool(settings: &Settings, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = connect_options(settings.database_url()?, std::env::var_os("PGSSLMODE"))?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options))
}

/// Parses `DATABASE_URL`. When neither the URL nor `PGSSLMODE` says an `sslmode` and the host
/// is a loopback address, TLS is not negotiated: on the same host it protects nothing and
/// costs CPU on both ends of every query. Anything else keeps libpq's rules (`prefer`).
pub fn connect_options(
    url: &str,
    pgsslmode: Option<std::ffi::OsString>,
) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let host = options
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let lower = url.to_ascii_lowercase();
    let sslmode_said =
        pgsslmode.is_some() || lower.contains("sslmode=") || lower.contains("ssl-mode=");
    Ok(if loopback && !sslmode_said {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

/// Connects and applies the migrations, retrying while the database is unreachable
/// (at most `patience`).
pub async fn connect_and_migrate(
    settings: &Settings,
    max_connections: u32,
    patience: Duration,
) -> anyhow::Result<PgPool> {
    let pool = pool(settings, max_connections)?;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match super::migrate(&pool).await {
            Ok(()) => return Ok(pool),
            Err(sqlx::migrate::MigrateError::Execute(e))
                if super::is_transient(&e) && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "database not reachable yet; retrying migrations");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgSslMode;

    use super::connect_options;

    fn mode(url: &str, env: Option<&str>) -> PgSslMode {
        connect_options(url, env.map(Into::into))
            .unwrap()
            .get_ssl_mode()
    }

    #[test]
    fn loopback_hosts_skip_tls_unless_an_sslmode_is_said() {
        for url in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
        ] {
            assert!(matches!(mode(url, None), PgSslMode::Disable), "{url}");
        }
        let said = "postgres://u@127.0.0.1/db?sslmode=require";
        assert!(matches!(mode(said, None), PgSslMode::Require));
        let said = "postgres://u@127.0.0.1/db?ssl-mode=require";
        assert!(matches!(mode(said, None), PgSslMode::Require));
        assert!(!matches!(
            mode("postgres://u@127.0.0.1/db", Some("require")),
            PgSslMode::Disable
        ));
        assert!(!matches!(
            mode("postgres://u@db.example.com/db", None),
            PgSslMode::Disable
        ));
    }
}
