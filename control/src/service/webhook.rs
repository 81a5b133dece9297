//! The webhook Service: the platform's own HTTP endpoint decides who may publish.
//!
//! The control POSTs `{protocol, stream, key | ftl_channel, remote_addr}` as JSON and expects
//! `{allow, stream, key?, reason?}` (`key` only for FTL, which must check an HMAC of it).
//! Answers are cached for `cache_ttl_secs`, allow and deny alike; a webhook that is down, slow
//! or answers garbage is a refusal within `timeout_ms` and is not cached.

use crate::error::{Error, Result};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::warn;

/// What the webhook is asked. No `Debug`: it holds the key.
#[derive(Clone, Serialize)]
pub struct WebhookRequest {
    /// `whip`, `rtmp`, `ftl`.
    pub protocol: &'static str,
    /// The stream named in the URL, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The stream key, if the protocol sends one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The FTL channel, for FTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ftl_channel: Option<u32>,
    /// The publisher's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
}

/// What the webhook answers.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookAnswer {
    /// Whether the publisher may go live.
    pub allow: bool,
    /// The public stream name (required when `allow`).
    #[serde(default)]
    pub stream: Option<String>,
    /// The stream key (FTL only: the edge checks the client's HMAC of it).
    #[serde(default)]
    pub key: Option<String>,
    /// Why not, shown to the publisher where the protocol can.
    #[serde(default)]
    pub reason: Option<String>,
}

// Keys are secrets: the cached request (with its key) must never be printed.
impl std::fmt::Display for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} publish of {:?}", self.protocol, self.stream)
    }
}

/// A configured webhook.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    client: reqwest::Client,
    cache: Cache<CacheKey, WebhookAnswerCached>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    protocol: &'static str,
    stream: Option<String>,
    key_digest: Option<[u8; 32]>,
    ftl_channel: Option<u32>,
}

#[derive(Debug, Clone)]
struct WebhookAnswerCached {
    allow: bool,
    stream: Option<String>,
    key: Option<String>,
    reason: Option<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook at `url`, answering within `timeout`, cached for `ttl`.
    pub fn new(url: &str, timeout: Duration, ttl: Duration) -> std::result::Result<Self, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("service.url must be an http(s) URL, got {url:?}"));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("service webhook client: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        })
    }

    /// Asks the webhook (or its cached answer) whether `request` may publish.
    pub async fn ask(&self, request: WebhookRequest) -> Result<(String, Option<String>)> {
        use sha2::Digest;
        let cache_key = CacheKey {
            protocol: request.protocol,
            stream: request.stream.clone(),
            key_digest: request
                .key
                .as_ref()
                .map(|k| sha2::Sha256::digest(k.as_bytes()).into()),
            ftl_channel: request.ftl_channel,
        };
        let answer = match self.cache.get(&cache_key).await {
            Some(a) => a,
            None => {
                let fresh = self.call(&request).await?;
                self.cache.insert(cache_key, fresh.clone()).await;
                fresh
            }
        };
        if !answer.allow {
            return Err(Error::Refused(
                answer
                    .reason
                    .unwrap_or_else(|| "refused by the stream service".into()),
            ));
        }
        let stream = answer
            .stream
            .or(request.stream)
            .ok_or(Error::ServiceFailed(
                "the webhook allowed but named no stream",
            ))?;
        Ok((stream, answer.key))
    }

    async fn call(&self, request: &WebhookRequest) -> Result<WebhookAnswerCached> {
        let response = self
            .client
            .post(&self.url)
            .json(request)
            .send()
            .await
            .map_err(|e| {
                warn!(url = %self.url, "stream service webhook unreachable: {}", e.without_url());
                Error::ServiceFailed("the stream service did not answer")
            })?;
        if response.status() == reqwest::StatusCode::FORBIDDEN
            || response.status() == reqwest::StatusCode::UNAUTHORIZED
        {
            return Ok(WebhookAnswerCached {
                allow: false,
                stream: None,
                key: None,
                reason: None,
            });
        }
        if !response.status().is_success() {
            warn!(url = %self.url, status = %response.status(), "stream service webhook failed");
            return Err(Error::ServiceFailed("the stream service failed"));
        }
        let answer: WebhookAnswer = response.json().await.map_err(|e| {
            warn!(url = %self.url, "stream service webhook answered garbage: {}", e.without_url());
            Error::ServiceFailed("the stream service answered garbage")
        })?;
        Ok(WebhookAnswerCached {
            allow: answer.allow,
            stream: answer.stream,
            key: answer.key,
            reason: answer.reason,
        })
    }
}

/// The remote address as the webhook sees it.
pub(crate) fn addr_text(addr: Option<SocketAddr>) -> Option<String> {
    addr.map(|a| a.ip().to_string())
}
