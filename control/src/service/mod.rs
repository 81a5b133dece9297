//! The Service: who may publish which stream. Every input asks it before any media is accepted.
//!
//! Owns the key check and the stream name a key resolves to; owns no sockets and no sessions.
//! Keys are secrets: they are never logged and never leave this module.

mod static_keys;
mod webhook;

use crate::cluster::{Ticket, TicketError, TicketKey, TicketScope};
use crate::error::{Error, Result};
use crate::stream::IngestProtocol;
use serde::Deserialize;
pub use static_keys::StreamKeyEntry;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use webhook::{Webhook, WebhookRequest, addr_text};

/// `[service]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Which Service answers.
    #[serde(default)]
    pub kind: ServiceKind,
    /// Streams and their keys, for `static`.
    #[serde(default)]
    pub streams: Vec<StreamKeyEntry>,
    /// The webhook URL, for `webhook`.
    #[serde(default)]
    pub url: Option<String>,
    /// How long the webhook may take before the publisher is refused.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a webhook answer is reused for the same publisher.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            kind: ServiceKind::Open,
            streams: Vec::new(),
            url: None,
            timeout_ms: default_timeout_ms(),
            cache_ttl_secs: default_cache_ttl_secs(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_cache_ttl_secs() -> u64 {
    30
}

/// The kinds of Service.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Anyone may publish anything: for local use only, and announced loudly at start.
    #[default]
    Open,
    /// Keys listed in the config file.
    Static,
    /// An HTTP endpoint of the platform decides.
    Webhook,
}

/// What a publisher presents.
#[derive(Clone, Copy)]
pub struct PublishRequest<'a> {
    /// The stream named in the URL, when the URL names one.
    pub stream: Option<&'a str>,
    /// The stream key (bearer token), when one was sent.
    pub key: Option<&'a str>,
    /// Where the publisher connects from (told to the webhook).
    pub remote_addr: Option<SocketAddr>,
    /// A redirect ticket from the orchestrator (`?ticket=`), which checked the key already.
    pub ticket: Option<&'a str>,
}

/// Decides who may publish.
#[derive(Debug, Clone)]
pub struct Service {
    config: ServiceConfig,
    webhook: Option<Webhook>,
    tickets: Option<TicketKey>,
    cluster_token: Option<String>,
}

impl Service {
    /// A Service from its config; checks the static entries are usable.
    pub fn new(config: ServiceConfig) -> std::result::Result<Self, String> {
        for entry in &config.streams {
            entry.validate()?;
        }
        if config.kind == ServiceKind::Static && config.streams.is_empty() {
            return Err("service.kind = \"static\" needs at least one [[service.streams]]".into());
        }
        let webhook = match (config.kind, &config.url) {
            (ServiceKind::Webhook, Some(url)) => Some(Webhook::new(
                url,
                Duration::from_millis(config.timeout_ms.max(1)),
                Duration::from_secs(config.cache_ttl_secs),
            )?),
            (ServiceKind::Webhook, None) => {
                return Err("service.kind = \"webhook\" needs service.url".into());
            }
            _ => None,
        };
        Ok(Self {
            config,
            webhook,
            tickets: None,
            cluster_token: None,
        })
    }

    /// Joins the cluster whose secret is `token`: redirect tickets signed with it are
    /// accepted in place of keys, and a viewer presenting it as its bearer token is another
    /// edge pulling a stream.
    pub fn with_cluster_token(mut self, token: &str) -> Self {
        self.tickets = Some(TicketKey::new(token));
        self.cluster_token = Some(token.to_owned());
        self
    }

    /// Whether `authorization` (a header value) carries the cluster token.
    pub fn is_cluster_bearer(&self, authorization: Option<&str>) -> bool {
        self.cluster_token
            .as_deref()
            .is_some_and(|token| crate::cluster::bearer_matches(authorization, token))
    }

    /// Checks a redirect ticket grants `scope` on `stream`. Without a cluster token no ticket
    /// is valid.
    pub fn verify_ticket(&self, ticket: &str, scope: TicketScope, stream: &str) -> Result<Ticket> {
        let key = self.tickets.as_ref().ok_or(TicketError::Invalid)?;
        Ok(key.verify_for(ticket, scope, stream, SystemTime::now())?)
    }

    /// Which kind of Service answers.
    pub fn kind(&self) -> ServiceKind {
        self.config.kind
    }

    /// Whether anyone may publish.
    pub fn is_open(&self) -> bool {
        self.config.kind == ServiceKind::Open
    }

    /// The configured stream entries (names and FTL channels; keys stay inside).
    pub fn streams(&self) -> &[StreamKeyEntry] {
        &self.config.streams
    }

    /// The stream and key of an FTL channel: FTL proves the key with an HMAC over a challenge,
    /// so the key itself is needed (a `key_sha256` entry cannot publish over FTL). `Ok(None)`
    /// in open mode: any client may publish, named by its channel.
    pub async fn ftl_channel(
        &self,
        channel: u32,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Option<(String, String)>> {
        match self.config.kind {
            ServiceKind::Open => Ok(None),
            ServiceKind::Static => self
                .config
                .streams
                .iter()
                .find(|e| e.ftl_channel == Some(channel))
                .and_then(|e| e.clear_key().map(|k| Some((e.name.clone(), k.to_owned()))))
                .ok_or(Error::InvalidKey),
            ServiceKind::Webhook => {
                let webhook = self
                    .webhook
                    .as_ref()
                    .ok_or(Error::ServiceFailed("no webhook"))?;
                let request = WebhookRequest {
                    protocol: IngestProtocol::Ftl.as_str(),
                    stream: None,
                    key: None,
                    ftl_channel: Some(channel),
                    remote_addr: addr_text(remote_addr),
                };
                let (stream, key) = webhook.ask(request).await?;
                let key = key.ok_or(Error::ServiceFailed(
                    "the webhook allowed an FTL channel but returned no key",
                ))?;
                Ok(Some((stream, key)))
            }
        }
    }

    /// Whether the webhook's answer for `stream`'s publisher asked to record it (`"record":
    /// true`); the request is taken, so it starts one recording.
    pub fn take_record_request(&self, stream: &str) -> bool {
        self.webhook
            .as_ref()
            .is_some_and(|w| w.take_record_request(stream))
    }

    /// The public name of the stream this publisher may publish, or why not. The name is
    /// checked here, whoever chose it (URL, key, webhook), because it ends up in URLs and logs.
    pub async fn authorize_publish(
        &self,
        protocol: IngestProtocol,
        request: PublishRequest<'_>,
    ) -> Result<String> {
        let name = self.resolve_publisher(protocol, request).await?;
        if !crate::stream::is_valid_name(&name) {
            return Err(Error::InvalidStreamName(name));
        }
        Ok(name)
    }

    async fn resolve_publisher(
        &self,
        protocol: IngestProtocol,
        request: PublishRequest<'_>,
    ) -> Result<String> {
        if let Some(ticket) = request.ticket {
            let key = self.tickets.as_ref().ok_or(TicketError::Invalid)?;
            let granted = key.verify(ticket, SystemTime::now())?;
            if granted.scope != TicketScope::Publish
                || request.stream.is_some_and(|s| s != granted.stream)
            {
                return Err(TicketError::WrongScope.into());
            }
            return Ok(granted.stream);
        }
        let key = request.key.filter(|k| !k.is_empty());
        match self.config.kind {
            ServiceKind::Open => match (request.stream, key) {
                (Some(stream), _) => Ok(stream.to_owned()),
                (None, Some(key)) => Ok(key.to_owned()),
                (None, None) => Err(Error::MissingKey),
            },
            ServiceKind::Static => {
                let key = key.ok_or(Error::MissingKey)?;
                let entry = self
                    .config
                    .streams
                    .iter()
                    .find(|entry| entry.matches(key))
                    .ok_or(Error::InvalidKey)?;
                match request.stream {
                    Some(stream) if stream != entry.name => Err(Error::InvalidKey),
                    _ => Ok(entry.name.clone()),
                }
            }
            ServiceKind::Webhook => {
                let key = key.ok_or(Error::MissingKey)?;
                let webhook = self
                    .webhook
                    .as_ref()
                    .ok_or(Error::ServiceFailed("no webhook"))?;
                let request = WebhookRequest {
                    protocol: protocol.as_str(),
                    stream: request.stream.map(str::to_owned),
                    key: Some(key.to_owned()),
                    ftl_channel: None,
                    remote_addr: addr_text(request.remote_addr),
                };
                webhook.ask(request).await.map(|(stream, _)| stream)
            }
        }
    }
}

#[cfg(test)]
mod tests;
