//! Typed settings, loaded once from flags and the environment (each flag has its variable).
//! Secrets (the Stigg key, API tokens) are never printed: `--help` hides their values and
//! `Debug` redacts them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL of the replica (required except for `publish`).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// URL of the SQS queue Stigg publishes to (required for `run` and `worker`). A URL ending
    /// in `.fifo` is a FIFO queue: order is kept within each MessageGroupId.
    #[arg(long, env = "SQS_QUEUE_URL", global = true)]
    pub sqs_queue_url: Option<String>,

    /// Optional SQS queue that also receives every dead letter, body unchanged, with the
    /// attributes `stigg-byos-reason` and `stigg-byos-source-message-id`.
    #[arg(long, env = "SQS_DLQ_URL", global = true)]
    pub sqs_dlq_url: Option<String>,

    /// Stigg server API key. When set, queue credentials come from Stigg's Edge API and are
    /// refreshed before they expire; otherwise the standard AWS credentials chain is used.
    #[arg(
        long,
        env = "STIGG_SERVER_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub stigg_server_api_key: Option<String>,

    /// Base URL of Stigg's Edge API.
    #[arg(
        long,
        env = "STIGG_EDGE_URL",
        global = true,
        default_value = "https://edge.api.stigg.io"
    )]
    pub stigg_edge_url: String,

    /// Base URL of Stigg's GraphQL API, read by `sync` (`POST {url}/graphql`).
    #[arg(
        long,
        env = "STIGG_API_URL",
        global = true,
        default_value = "https://api.stigg.io"
    )]
    pub stigg_api_url: String,

    /// Requests a second that `sync` makes to Stigg, across both APIs (the Edge allows 6,000
    /// a minute per key, shared with everything else using the key). A 429 slows it further.
    #[arg(long, env = "SYNC_RATE", global = true, default_value_t = 80,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sync_rate: u32,

    /// Entitlement states `sync` reads at once.
    #[arg(long, env = "SYNC_CONCURRENCY", global = true, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub sync_concurrency: u32,

    /// How long `sync` keeps retrying one request (429, 5xx, network errors) before it stops
    /// the pass early, in seconds.
    #[arg(long, env = "SYNC_RETRY_SECONDS", global = true, default_value_t = 120,
          value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub sync_retry_seconds: u32,

    /// Run the `sync` pass on this timer inside `run` and `worker` (e.g. `24h`, `90m`); `off`
    /// (the default) never does. With several replicas on one database, one at a time does it.
    #[arg(long, env = "SYNC_INTERVAL", global = true, default_value = "off",
          value_parser = parse_interval)]
    pub sync_interval: Interval,

    /// Address the HTTP server listens on.
    #[arg(long, env = "HTTP_ADDR", global = true, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Comma-separated bearer tokens for /check-access and /graphql. Unset means open.
    #[arg(long, env = "API_TOKENS", global = true, hide_env_values = true)]
    pub api_tokens: Option<String>,

    /// Messages in flight at once (1–1000).
    #[arg(long, env = "WORKER_CONCURRENCY", global = true, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub worker_concurrency: u32,

    /// Database connections for the hot reads of /check-access and /graphql (1–256); default
    /// twice the CPUs, from 4 to 32. Raise it when the database is across a network.
    #[arg(long, env = "READ_CONNECTIONS", global = true,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub read_connections: Option<u32>,

    /// Memory for the access cache of the serving process, in MiB (0 turns it off).
    #[arg(long, env = "ACCESS_CACHE_MB", global = true, default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub access_cache_mb: u32,

    /// Long-poll wait of each receive, in seconds (0–20).
    #[arg(long, env = "SQS_WAIT_SECONDS", global = true, default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=20))]
    pub sqs_wait_seconds: u32,

    /// Visibility timeout of received messages, in seconds (extended while work runs long).
    #[arg(long, env = "SQS_VISIBILITY_TIMEOUT", global = true, default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(2..=43200))]
    pub sqs_visibility_timeout: u32,

    /// Receives that ended in a non-transient failure or a crash before a message is
    /// dead-lettered.
    #[arg(long, env = "MAX_RECEIVE_COUNT", global = true, default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,

    /// How long a processed message's id is kept to recognise a redelivery, in days (`15d`)
    /// or hours (`360h`); older ones are deleted in the background by the worker. Keep it
    /// above the 14 days SQS may keep a message.
    #[arg(long, env = "INBOX_RETENTION", global = true, default_value = "15d",
          value_parser = parse_retention)]
    pub inbox_retention: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A period that may be off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval(pub Option<Duration>);

fn parse_interval(s: &str) -> Result<Interval, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(Interval(None));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (give a duration such as 24h or 90m, or off)"))?;
    if d < Duration::from_secs(60) {
        return Err("the sync interval must be at least 1m".into());
    }
    Ok(Interval(Some(d)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("database_url", &redacted(&self.database_url))
            .field("sqs_queue_url", &self.sqs_queue_url)
            .field("sqs_dlq_url", &self.sqs_dlq_url)
            .field(
                "stigg_server_api_key",
                &redacted(&self.stigg_server_api_key),
            )
            .field("stigg_edge_url", &self.stigg_edge_url)
            .field("stigg_api_url", &self.stigg_api_url)
            .field("sync_rate", &self.sync_rate)
            .field("sync_concurrency", &self.sync_concurrency)
            .field("sync_retry_seconds", &self.sync_retry_seconds)
            .field("sync_interval", &self.sync_interval)
            .field("http_addr", &self.http_addr)
            .field("api_tokens", &redacted(&self.api_tokens))
            .field("worker_concurrency", &self.worker_concurrency)
            .field("read_connections", &self.read_connections)
            .field("access_cache_mb", &self.access_cache_mb)
            .field("sqs_wait_seconds", &self.sqs_wait_seconds)
            .field("sqs_visibility_timeout", &self.sqs_visibility_timeout)
            .field("max_receive_count", &self.max_receive_count)
            .field("inbox_retention", &self.inbox_retention)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// A setting that is missing or wrong: the process exits 2, as for a bad flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required (set the variable or pass the flag)")]
    Missing(&'static str),
    #[error("{0} is not a valid URL: {1}")]
    BadUrl(&'static str, String),
}

impl Settings {
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::Missing("DATABASE_URL"))
    }

    pub fn queue_url(&self) -> Result<&str, ConfigError> {
        self.sqs_queue_url
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::Missing("SQS_QUEUE_URL"))
    }

    /// What `sync` needs to reach Stigg: the key (required) and valid base URLs.
    pub fn stigg_api(&self) -> Result<crate::sync::api::ApiConfig, ConfigError> {
        let key = self
            .stigg_server_api_key
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or(ConfigError::Missing("STIGG_SERVER_API_KEY"))?;
        for (name, url) in [
            ("STIGG_API_URL", &self.stigg_api_url),
            ("STIGG_EDGE_URL", &self.stigg_edge_url),
        ] {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => return Err(ConfigError::BadUrl(name, "not http(s)".into())),
                Err(e) => return Err(ConfigError::BadUrl(name, e.to_string())),
            }
        }
        Ok(crate::sync::api::ApiConfig {
            api_url: self.stigg_api_url.clone(),
            edge_url: self.stigg_edge_url.clone(),
            key: key.to_owned(),
            rate: self.sync_rate,
            retry_for: Duration::from_secs(u64::from(self.sync_retry_seconds)),
        })
    }

    /// The bearer tokens; empty means the API is open.
    pub fn tokens(&self) -> Vec<String> {
        self.api_tokens
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `READ_CONNECTIONS`, or twice the CPUs (4 to 32): the database answers a hot read in
    /// well under a millisecond, so a few connections per core keep it busy, and more only
    /// add backends competing for the same cores (BENCHMARKS.md).
    pub fn read_connections(&self) -> usize {
        match self.read_connections {
            Some(n) => n as usize,
            None => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .saturating_mul(2)
                .clamp(4, 32),
        }
    }

    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.sqs_visibility_timeout))
    }

    /// Warnings about risky combinations, logged at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.sqs_visibility_timeout < 10 {
            w.push(format!(
                "SQS_VISIBILITY_TIMEOUT={} s is short: a slow database write may outlive it \
                 between heartbeats and the message be delivered twice (harmless, but wasted)",
                self.sqs_visibility_timeout
            ));
        }
        if self.inbox_retention < Duration::from_secs(14 * 24 * 3600) {
            w.push(format!(
                "INBOX_RETENTION={} h is shorter than the 14 days SQS may keep a message: a \
                 message redelivered later would be applied again",
                self.inbox_retention.as_secs() / 3600
            ));
        }
        if self.sqs_dlq_url.as_deref() == self.sqs_queue_url.as_deref()
            && self.sqs_dlq_url.is_some()
        {
            w.push("SQS_DLQ_URL equals SQS_QUEUE_URL: dead letters would loop".into());
        }
        w
    }
}

/// `INBOX_RETENTION`: a whole number of days (`15d`) or hours (`360h`), 1 hour to 3650 days.
fn parse_retention(s: &str) -> Result<Duration, String> {
    let (number, hours) = match (s.strip_suffix('d'), s.strip_suffix('h')) {
        (Some(days), _) => (days, 24),
        (_, Some(hours)) => (hours, 1),
        _ => return Err("give days or hours, like 15d or 360h".into()),
    };
    let hours = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(hours))
        .filter(|h| (1..=3650 * 24).contains(h))
        .ok_or("give from 1h to 3650d, like 15d or 360h")?;
    Ok(Duration::from_secs(hours * 3600))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    fn settings(args: &[&str]) -> super::Settings {
        let argv = std::iter::once("stigg-byos").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid flags").settings
    }

    #[test]
    fn read_connections_default_to_twice_the_cpus_from_four_to_thirty_two() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(settings(&[]).read_connections(), (2 * cpus).clamp(4, 32));
        assert_eq!(settings(&["--read-connections", "1"]).read_connections(), 1);
        assert!(Cli::try_parse_from(["stigg-byos", "--read-connections", "0"]).is_err());
    }

    #[test]
    fn inbox_retention_is_days_or_hours_fifteen_days_by_default() {
        let days = |args: &[&str]| settings(args).inbox_retention.as_secs() / 86_400;
        assert_eq!(days(&[]), 15);
        assert_eq!(days(&["--inbox-retention", "30d"]), 30);
        assert_eq!(days(&["--inbox-retention", "360h"]), 15);
        for wrong in ["15", "0d", "0h", "-1d", "1.5d", "d", "3651d", "15 d", "2w"] {
            let argv = ["stigg-byos", "--inbox-retention", wrong];
            assert!(Cli::try_parse_from(argv).is_err(), "{wrong}");
        }
    }
}
