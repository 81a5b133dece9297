//! The webhook Service: the platform's own HTTP endpoint decides who may publish.
//!
//! The control POSTs `{protocol, stream, key | ftl_channel, remote_addr}` as JSON and expects
//! `{allow, stream, key?, reason?}` (`key` only for FTL, which must check an HMAC of it).
//! Answers are cached for `cache_ttl_secs`, allow and deny alike; a webhook that is down, slow
//! or answers garbage is a refusal within `timeout_ms` and is not cached.

use crate::error::{Error, Result};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Record the stream while this publisher is live (the edge's `[record]` directory).
    #[serde(default)]
    pub record: bool,
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
    /// Streams the webhook asked to record, by name, with when it answered.
    record_requests: Arc<Mutex<HashMap<String, Instant>>>,
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
    record: bool,
}

/// A `record: true` answer is taken by the recorder when the stream goes live, or forgotten
/// after this long (the publisher never got that far).
const RECORD_REQUEST_TTL: Duration = Duration::from_secs(60);
/// Record requests remembered at most (a webhook answering `record` for streams that never go
/// live cannot grow this without bound).
const MAX_RECORD_REQUESTS: usize = 10_000;

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
            record_requests: Arc::default(),
        })
    }

    /// Whether the webhook asked (within the last minute) to record `stream`; forgets it.
    pub fn take_record_request(&self, stream: &str) -> bool {
        let mut requests = self
            .record_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        requests
            .remove(stream)
            .is_some_and(|at| at.elapsed() < RECORD_REQUEST_TTL)
    }

    fn remember_record_request(&self, stream: &str) {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        let mut requests = self
            .record_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        requests.retain(|_, at| at.elapsed() < RECORD_REQUEST_TTL);
        if requests.len() < MAX_RECORD_REQUESTS || requests.contains_key(stream) {
            requests.insert(stream.to_owned(), Instant::now());
        }
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
        if answer.record {
            self.remember_record_request(&stream);
        }
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
                record: false,
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
            record: answer.record,
        })
    }
}

/// The remote address as the webhook sees it.
pub(crate) fn addr_text(addr: Option<SocketAddr>) -> Option<String> {
    addr.map(|a| a.ip().to_string())
}
