//! The SQS client: standard AWS configuration (region, endpoint, credentials chain), or
//! short-lived queue credentials from Stigg's Edge API when a server API key is set (§1).

use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{self, error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;
use backon::Retryable;
use serde::Deserialize;

use crate::config::Settings;

/// Builds the client once. The region falls back to the one in the queue URL, then us-east-1.
pub async fn client(settings: &Settings) -> aws_sdk_sqs::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        let region = settings
            .sqs_queue_url
            .as_deref()
            .and_then(region_from_queue_url)
            .unwrap_or_else(|| "us-east-1".to_owned());
        loader = loader.region(Region::new(region));
    }
    if let (Some(key), Some(queue)) = (&settings.stigg_server_api_key, &settings.sqs_queue_url) {
        loader =
            loader.credentials_provider(EdgeCredentials::new(&settings.stigg_edge_url, key, queue));
    }
    aws_sdk_sqs::Client::new(&loader.load().await)
}

/// `https://sqs.eu-west-1.amazonaws.com/123/q` → `eu-west-1`.
fn region_from_queue_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    (parts.next()? == "sqs").then_some(())?;
    let region = parts.next()?;
    (parts.next()? == "amazonaws").then(|| region.to_owned())
}

/// Fetches queue credentials from `GET {edge}/v1/credentials/event-queue.json`. The SDK's
/// identity cache calls it again shortly before `expiration`, so credentials are refreshed
/// before they expire. 429 and 5xx answers are retried with jittered backoff.
#[derive(Clone)]
pub struct EdgeCredentials {
    http: reqwest::Client,
    url: String,
    api_key: String,
    queue_url: String,
}

impl std::fmt::Debug for EdgeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCredentials")
            .field("url", &self.url)
            .field("queue_url", &self.queue_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EdgeAnswer {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// How long each set of credentials is asked to live (Stigg allows 900–3600 s).
pub const CREDENTIALS_SECONDS: u32 = 3600;

impl EdgeCredentials {
    pub fn new(edge_url: &str, api_key: &str, queue_url: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            url: format!(
                "{}/v1/credentials/event-queue.json",
                edge_url.trim_end_matches('/')
            ),
            api_key: api_key.to_owned(),
            queue_url: queue_url.to_owned(),
        }
    }

    async fn fetch_once(&self) -> Result<Credentials, EdgeError> {
        let duration = CREDENTIALS_SECONDS.to_string();
        let response = self
            .http
            .get(&self.url)
            .query(&[
                ("queueUrl", self.queue_url.as_str()),
                ("durationSeconds", &duration),
            ])
            .header("X-API-KEY", &self.api_key)
            .send()
            .await
            .map_err(|e| EdgeError::Retry(format!("Edge API unreachable: {e}")))?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(EdgeError::Retry(format!("Edge API answered {status}")));
        }
        if !status.is_success() {
            return Err(EdgeError::Fatal(format!("Edge API answered {status}")));
        }
        let answer: EdgeAnswer = response
            .json()
            .await
            .map_err(|e| EdgeError::Fatal(format!("Edge API answer unreadable: {e}")))?;
        let expiry = chrono::DateTime::parse_from_rfc3339(&answer.expiration)
            .map_err(|e| {
                EdgeError::Fatal(format!("Edge API expiration {:?}: {e}", answer.expiration))
            })?
            .with_timezone(&chrono::Utc);
        tracing::info!(expires = %expiry, "fetched queue credentials from Stigg's Edge API");
        Ok(Credentials::new(
            answer.access_key_id,
            answer.secret_access_key,
            Some(answer.session_token),
            Some(SystemTime::from(expiry)),
            "stigg-edge",
        ))
    }

    pub async fn fetch(&self) -> provider::Result {
        (|| self.fetch_once())
            .retry(crate::backoff::edge_credentials())
            .when(|e| matches!(e, EdgeError::Retry(_)))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "retrying Edge API"))
            .await
            .map_err(CredentialsError::provider_error)
    }
}

#[derive(Debug, thiserror::Error)]
enum EdgeError {
    #[error("{0}")]
    Retry(String),
    #[error("{0}")]
    Fatal(String),
}

impl ProvideCredentials for EdgeCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_aws_queue_urls_only() {
        assert_eq!(
            region_from_queue_url("https://sqs.eu-west-1.amazonaws.com/1234/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_queue_url("http://127.0.0.1:4566/000000000000/q"),
            None
        );
    }
}
