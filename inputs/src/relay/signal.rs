//! The relay's HTTP side: ask the orchestrator where a stream is (it answers `307` with the
//! upstream edge's WHEP URL and a relay ticket), POST the offer there, DELETE the session at
//! the end. Redirects are never followed automatically: the relay checks each hop.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url, redirect};
use std::time::Duration;
use waveguide_control::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

/// An upstream WHEP session: its answer and its resource (for DELETE).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub answer: String,
    pub resource: Option<Url>,
}

/// The relay's HTTP client and the orchestrator it asks.
#[derive(Clone)]
pub(crate) struct Signal {
    client: reqwest::Client,
    orchestrator: Url,
    token: String,
    node_id: String,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("orchestrator", &self.orchestrator.as_str())
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// `url` without its query (which carries the ticket) for logs.
pub(crate) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

impl Signal {
    /// A client for `orchestrator` (an `http`/`https` base URL).
    pub fn new(
        orchestrator: &str,
        token: &str,
        node_id: &str,
        ca_cert_pem: Option<&[u8]>,
    ) -> std::result::Result<Self, String> {
        let orchestrator = Url::parse(orchestrator)
            .map_err(|e| format!("orchestrator URL `{orchestrator}`: {e}"))?;
        if !matches!(orchestrator.scheme(), "http" | "https") {
            return Err(format!(
                "orchestrator URL `{orchestrator}`: not http or https"
            ));
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_cert_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("CA certificate: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .redirect(redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client,
            orchestrator,
            token: token.to_owned(),
            node_id: node_id.to_owned(),
        })
    }

    /// `{orchestrator}/whep/{stream}?node={node_id}`.
    pub fn locate_url(&self, stream: &str) -> Url {
        let mut url = self.orchestrator.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/whep/{stream}"));
        url.set_query(None);
        url.query_pairs_mut().append_pair("node", &self.node_id);
        url
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Asks the orchestrator where `stream` is: the upstream edge's WHEP URL (with its ticket).
    pub async fn locate(&self, stream: &str, offer: &str) -> Result<Url> {
        let url = self.locate_url(stream);
        let response = self
            .client
            .post(url.clone())
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer.to_owned())
            .send()
            .await
            .map_err(|_| Error::ServiceFailed("the orchestrator could not be reached"))?;
        redirect_target(response.status(), &url, location(&response), stream)
    }

    /// POSTs the offer to the upstream edge; expects `201` and the answer.
    pub async fn open(&self, upstream: &Url, stream: &str, offer: &str) -> Result<Session> {
        let response = self
            .client
            .post(upstream.clone())
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer.to_owned())
            .send()
            .await
            .map_err(|_| Error::ServiceFailed("the upstream edge could not be reached"))?;
        let status = response.status();
        let resource = location(&response).and_then(|l| upstream.join(&l).ok());
        match status {
            StatusCode::CREATED => {}
            StatusCode::NOT_FOUND => return Err(Error::StreamNotFound(stream.to_owned())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Error::ServiceFailed(
                    "the upstream edge refused the relay ticket",
                ));
            }
            s if s.is_server_error() => {
                return Err(Error::ServiceFailed(
                    "the upstream edge is unavailable or at capacity",
                ));
            }
            _ => {
                return Err(Error::ServiceFailed(
                    "the upstream edge answered the pull with an unexpected status",
                ));
            }
        }
        let answer = response
            .text()
            .await
            .map_err(|_| Error::ServiceFailed("the upstream edge's answer was cut off"))?;
        if !answer.trim_start().starts_with("v=") {
            return Err(Error::ServiceFailed(
                "the upstream edge answered without an SDP body",
            ));
        }
        Ok(Session { answer, resource })
    }

    /// Ends an upstream session; the status, or `None` if the request failed.
    pub async fn delete(&self, resource: &Url) -> Option<u16> {
        self.client
            .delete(resource.clone())
            .header(AUTHORIZATION, self.bearer())
            .timeout(DELETE_TIMEOUT)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }
}

fn location(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What the orchestrator's answer means: `307`/`308` with a `Location` (resolved against the
/// request URL if relative) is the upstream; `404` is a stream no edge has.
pub(crate) fn redirect_target(
    status: StatusCode,
    request: &Url,
    location: Option<String>,
    stream: &str,
) -> Result<Url> {
    match status {
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {
            let target = location
                .and_then(|l| request.join(&l).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or(Error::ServiceFailed(
                    "the orchestrator redirected without a usable Location",
                ))?;
            Ok(target)
        }
        StatusCode::NOT_FOUND => Err(Error::StreamNotFound(stream.to_owned())),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Error::ServiceFailed(
            "the orchestrator refused the cluster token",
        )),
        s if s.is_server_error() => Err(Error::ServiceFailed(
            "the orchestrator has no edge to pull from",
        )),
        _ => Err(Error::ServiceFailed(
            "the orchestrator answered the pull with an unexpected status",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_url_keeps_the_base_path_and_names_the_node() {
        let s = Signal::new("http://127.0.0.1:18090", "t", "edge-b", None).expect("valid");
        assert_eq!(
            s.locate_url("demo").as_str(),
            "http://127.0.0.1:18090/whep/demo?node=edge-b"
        );
        let s = Signal::new("https://orch.example/api/", "t", "edge b", None).expect("valid");
        assert_eq!(
            s.locate_url("x.y_z-1").as_str(),
            "https://orch.example/api/whep/x.y_z-1?node=edge+b"
        );
        assert!(Signal::new("ftp://x", "t", "n", None).is_err());
        assert!(Signal::new("not a url", "t", "n", None).is_err());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let s = Signal::new("http://127.0.0.1:1", "cluster-secret", "n", None).expect("valid");
        assert!(!format!("{s:?}").contains("cluster-secret"));
    }

    #[test]
    fn orchestrator_answers_map_to_targets_and_errors() {
        let req = Url::parse("http://127.0.0.1:18090/whep/demo?node=b").expect("url");
        let abs = "http://127.0.0.1:18081/whep/demo?ticket=w1~r~1~demo~00".to_owned();
        let t = redirect_target(
            StatusCode::TEMPORARY_REDIRECT,
            &req,
            Some(abs.clone()),
            "demo",
        )
        .expect("a target");
        assert_eq!(t.as_str(), abs);
        assert_eq!(display_url(&t), "http://127.0.0.1:18081/whep/demo");
        let rel = redirect_target(
            StatusCode::TEMPORARY_REDIRECT,
            &req,
            Some("/whep/demo?ticket=x".into()),
            "demo",
        )
        .expect("a relative target");
        assert_eq!(rel.as_str(), "http://127.0.0.1:18090/whep/demo?ticket=x");
        assert!(matches!(
            redirect_target(StatusCode::TEMPORARY_REDIRECT, &req, None, "demo"),
            Err(Error::ServiceFailed(_))
        ));
        assert!(matches!(
            redirect_target(StatusCode::NOT_FOUND, &req, None, "demo"),
            Err(Error::StreamNotFound(s)) if s == "demo"
        ));
        for status in [
            StatusCode::OK,
            StatusCode::CREATED,
            StatusCode::UNAUTHORIZED,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::FOUND,
        ] {
            assert!(matches!(
                redirect_target(status, &req, Some(abs.clone()), "demo"),
                Err(Error::ServiceFailed(_))
            ));
        }
    }
}
