//! WHIP/WHEP signalling over HTTP: POST the offer, read the answer and the session's
//! `Location`, DELETE it at the end. Redirects are followed only to loopback URLs.

use super::config::ensure_loopback;
use super::error::LoadError;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use std::time::Duration;

const POST_TIMEOUT: Duration = Duration::from_secs(10);
const DELETE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_REDIRECTS: usize = 5;

/// An HTTP client with bounded timeouts that follows a few redirects (an orchestrator's
/// `307`), but never off loopback.
pub fn client() -> Result<reqwest::Client, LoadError> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if ensure_loopback(attempt.url()).is_err() {
            attempt.error("redirect off loopback refused")
        } else {
            attempt.follow()
        }
    });
    Ok(reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .redirect(policy)
        .build()?)
}

/// A created WHIP/WHEP session.
#[derive(Debug, Clone)]
pub struct Session {
    pub answer: String,
    /// The session resource, for DELETE; `None` if the server sent no usable `Location`.
    pub location: Option<Url>,
}

/// POSTs an SDP offer; expects `201` with the answer.
pub async fn post_offer(
    client: &reqwest::Client,
    url: &Url,
    token: Option<&str>,
    offer: String,
) -> Result<Session, LoadError> {
    let mut request = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    // Relative Locations resolve against the URL that answered (after redirects).
    let base = response.url().clone();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base.join(v).ok())
        .filter(|u| ensure_loopback(u).is_ok());
    let body = response.text().await?;
    if status != 201 {
        return Err(LoadError::Status {
            url: url.to_string(),
            status,
            body: body.chars().take(200).collect(),
        });
    }
    Ok(Session {
        answer: body,
        location,
    })
}

/// DELETEs a session; the status, or `None` if the request failed.
pub async fn delete(client: &reqwest::Client, location: &Url, token: Option<&str>) -> Option<u16> {
    let mut request = client.delete(location.clone()).timeout(DELETE_TIMEOUT);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}
