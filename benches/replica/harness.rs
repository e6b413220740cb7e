//! What every measurement stands on: fresh databases and queues (dropped and deleted at the
//! end) and the stigg-byos child processes, started with only the environment the bench gives
//! them and stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::Rng;
use sqlx::{Connection, PgPool};
use tokio::process::{Child, Command};

use super::plan::Args;
use super::{note, sqs};

fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// The services and the binary every measurement uses, and what it created, to delete at the
/// end.
pub(super) struct Env {
    pub(super) admin_url: String,
    pub(super) sqs: aws_sdk_sqs::Client,
    pub(super) sqs_endpoint: String,
    pub(super) bin: PathBuf,
    pub(super) logs: PathBuf,
    databases: Mutex<Vec<String>>,
    queues: Mutex<Vec<String>>,
}

impl Env {
    /// The services named on the command line; fails when the binary does not exist.
    pub(super) fn new(args: &Args) -> Result<Self> {
        let bin = args
            .bin
            .clone()
            .or_else(|| option_env!("CARGO_BIN_EXE_stigg-byos").map(PathBuf::from))
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/stigg-byos")
            });
        if !bin.exists() {
            bail!(
                "{} does not exist: run `cargo build --release` first",
                bin.display()
            );
        }
        let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            admin_url: args.admin_url.clone(),
            sqs: sqs::client(&args.sqs_endpoint),
            sqs_endpoint: args.sqs_endpoint.clone(),
            bin,
            logs,
            databases: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
        })
    }

    /// A new database with the migrations applied; returns its URL and a pool on it.
    pub(super) async fn fresh_database(&self) -> Result<(String, PgPool)> {
        let name = format!("bench_{}", random_suffix());
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .context("CREATE DATABASE")?;
        conn.close().await?;
        self.databases.lock().unwrap().push(name.clone());
        // same URL with the database replaced; a query string (`?sslmode=disable`) is kept
        let (path, query) = match self.admin_url.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let base = path
            .rsplit_once('/')
            .context("admin URL has no database")?
            .0;
        let url = format!("{base}/{name}{query}");
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.application_name("bench"))
            .await?;
        stigg_byos::store::migrate(&pool).await?;
        Ok((url, pool))
    }

    pub(super) async fn fresh_queue(&self) -> Result<String> {
        let url =
            sqs::create_queue(&self.sqs, &format!("bench-{}", random_suffix()), false).await?;
        self.queues.lock().unwrap().push(url.clone());
        Ok(url)
    }

    pub(super) async fn delete_queue(&self, url: &str) {
        let _ = self.sqs.delete_queue().queue_url(url).send().await;
        self.queues.lock().unwrap().retain(|q| q != url);
    }

    /// Environment of every stigg-byos child: only what the bench sets, plus PATH / RUST_LOG.
    pub(super) fn command(&self, args: &[&str], log: &str) -> Result<Command> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.logs.join(log))?)
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// [`Env::command`] for a process that consumes `queue` into the database at `db_url`,
    /// through the bench's SQS endpoint.
    pub(super) fn consumer_command(
        &self,
        args: &[&str],
        log: &str,
        db_url: &str,
        queue: &str,
    ) -> Result<Command> {
        let mut cmd = self.command(args, log)?;
        cmd.env("DATABASE_URL", db_url)
            .env("SQS_QUEUE_URL", queue)
            .env("AWS_ENDPOINT_URL_SQS", &self.sqs_endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
        Ok(cmd)
    }
}

pub(super) async fn cleanup(env: &Env, keep: bool) {
    let queues: Vec<String> = env.queues.lock().unwrap().clone();
    for q in queues {
        env.delete_queue(&q).await;
    }
    let dbs: Vec<String> = env.databases.lock().unwrap().drain(..).collect();
    if keep {
        for d in &dbs {
            note(format!("kept database {d}"));
        }
        return;
    }
    if let Ok(mut conn) = sqlx::PgConnection::connect(&env.admin_url).await {
        for d in dbs {
            if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"))
                .execute(&mut conn)
                .await
            {
                eprintln!("dropping {d}: {e}");
            }
        }
    }
}

fn sigterm(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

pub(super) async fn stop(mut child: Child) {
    sigterm(&child);
    if tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
