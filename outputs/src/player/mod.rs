//! The built-in player: three static pages and the script and stylesheet they share.
//!
//! - `GET /` lists the live streams (the page polls `GET /api/v1/streams`).
//! - `GET /watch/{stream}` plays one stream over WHEP (`POST /whep/{stream}`), or over LL-HLS
//!   (`/hls/{stream}/index.m3u8`, with the vendored hls.js at `/assets/hls.min.js`) with
//!   `?hls=1`; the page shows which one plays.
//! - `GET /publish` sends the browser's camera and microphone over WHIP (`POST /whip[/{stream}]`).
//!
//! This module owns the pages and the routes that serve them, nothing else: the stream list, WHEP
//! and WHIP are served by other routers on the same origin. The pages are compiled into the binary
//! and never templated: the browser reads the stream name from its own address bar, so no request
//! data reaches the HTML on the server and there is nothing here to escape.
//!
//! `window.waveguide` on the watch and publish pages exposes `{ pc, stats() }` (the current
//! `RTCPeerConnection` and a promise of `{ width, height, fps, bitrateBps, … }`) for browser tests;
//! on the watch page also `mode` (`"webrtc"` or `"hls"`) and `hls` (the hls.js instance).

use axum::Router;
use axum::http::{HeaderName, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// The stream list.
pub const INDEX_PATH: &str = "/";
/// The watch page; `{stream}` is the percent-encoded stream name.
pub const WATCH_PATH: &str = "/watch/{stream}";
/// The browser publisher.
pub const PUBLISH_PATH: &str = "/publish";
/// The script shared by every page.
pub const SCRIPT_PATH: &str = "/assets/waveguide.js";
/// The stylesheet shared by every page.
pub const STYLE_PATH: &str = "/assets/waveguide.css";
/// hls.js (vendored, see `vendor/README.md`), for the watch page's LL-HLS playback.
pub const HLS_JS_PATH: &str = "/assets/hls.min.js";

const INDEX_HTML: &str = include_str!("index.html");
const WATCH_HTML: &str = include_str!("watch.html");
const PUBLISH_HTML: &str = include_str!("publish.html");
const SCRIPT: &str = include_str!("waveguide.js");
const STYLE: &str = include_str!("waveguide.css");
const HLS_JS: &str = include_str!("vendor/hls.min.js");

/// No inline script and no third-party origin may run in a page that shows publisher-chosen
/// stream names. `connect-src` and `media-src` stay open because a WHEP/WHIP POST may be
/// redirected (307) by the orchestrator to another edge.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src *; media-src * blob: mediastream:; object-src 'none'; \
     base-uri 'none'; form-action 'none'";

/// What the pages need to know about the node that serves them, as `GET /player.json`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PlayerConfig {
    /// Base URL every WHEP POST goes to, e.g. the cluster's orchestrator, so a viewer whose
    /// edge goes away reconnects to another one. `None`: this node.
    pub whep_base: Option<String>,
}

/// The routes of the player pages. Stateless, so it merges into a router of any state.
pub fn router<S>(config: PlayerConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let config = axum::Json(config);
    Router::new()
        .route(
            "/player.json",
            get(move || std::future::ready(config.clone())),
        )
        .route(INDEX_PATH, get(|| async { html(INDEX_HTML) }))
        .route(WATCH_PATH, get(|| async { html(WATCH_HTML) }))
        .route(PUBLISH_PATH, get(|| async { html(PUBLISH_HTML) }))
        .route(
            SCRIPT_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            STYLE_PATH,
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            HLS_JS_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", HLS_JS) }),
        )
}

fn html(body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        // The pages are compiled in; `no-cache` makes a browser pick up a new binary's pages.
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 3] = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_build_and_merge_into_any_state() {
        // Route conflicts and bad path syntax panic when the router is built.
        let _: Router<()> = router(PlayerConfig::default());
        let _: Router<std::sync::Arc<String>> =
            Router::new().merge(router(PlayerConfig::default()));
    }

    #[test]
    fn the_watch_page_loads_hls_js_from_this_node() {
        assert!(WATCH_HTML.contains(HLS_JS_PATH));
        assert!(HLS_JS.len() > 100_000 && HLS_JS.contains("lowLatencyMode"));
    }

    #[test]
    fn pages_load_only_local_assets() {
        for page in [INDEX_HTML, WATCH_HTML, PUBLISH_HTML] {
            assert!(
                page.contains(SCRIPT_PATH),
                "every page loads the shared script"
            );
            assert!(
                page.contains(STYLE_PATH),
                "every page loads the shared stylesheet"
            );
            // The player must work without internet access: no CDN, no web fonts.
            assert!(!page.contains("http://") && !page.contains("https://"));
            // The CSP forbids inline script; a page that relied on one would break silently.
            assert!(!page.contains("<script>") && !page.contains(" onclick="));
        }
        assert!(
            !SCRIPT.contains("innerHTML"),
            "untrusted names go in as text only"
        );
    }
}
