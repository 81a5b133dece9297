//! The HLS routes: the multivariant and media playlists (with blocking reloads), the init
//! segment, parts and segments; their CORS and cache headers; the HLS metrics.

use super::rendition::{self, NoRendition, Rendition};
use super::segmenter::{PART_TARGET, Progress, Segmenter};
use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waveguide_control::Engine;

/// How long a first request waits for the stream's first keyframe (the init segment).
const FIRST_KEYFRAME_WAIT: Duration = Duration::from_secs(12);
/// How long a blocking playlist reload or a preload-hinted part is held at most (three part
/// targets, as the spec suggests, plus slack for a late keyframe).
const BLOCK_WAIT: Duration = Duration::from_secs(4);
/// Objects named by a rendition never change.
const IMMUTABLE: &str = "public, max-age=3600, immutable";
/// Playlists change with every part.
const PLAYLIST: &str = "public, max-age=1";
const M3U8: &str = "application/vnd.apple.mpegurl";

#[derive(Clone)]
struct Hls {
    engine: Arc<Engine>,
    renditions: Arc<Mutex<HashMap<String, Arc<Rendition>>>>,
}

/// The HLS routes. They carry their own state and merge into a router of any state.
pub fn router<S>(engine: Arc<Engine>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let hls = Hls {
        engine,
        renditions: Arc::default(),
    };
    let routes = Router::new()
        .route("/hls/{stream}/index.m3u8", get(multivariant))
        .route("/hls/{stream}/{rendition}/{object}", get(object))
        .with_state(hls.clone());
    // Outside a runtime (a unit test building routes) there are no gauges to keep.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let (renditions, clients) = hls.counts();
                metrics::gauge!("waveguide_hls_renditions").set(renditions as f64);
                metrics::gauge!("waveguide_hls_clients").set(clients as f64);
            }
        });
    }
    routes
}

type Client = Option<Extension<ConnectInfo<SocketAddr>>>;

impl Hls {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Rendition>>> {
        self.renditions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running rendition of `name`, started if there is none.
    fn rendition(&self, name: &str) -> Result<Arc<Rendition>, NoRendition> {
        let mut map = self.map();
        if let Some(r) = map.get(name)
            && !r.is_stopped()
        {
            return Ok(Arc::clone(r));
        }
        let renditions = Arc::clone(&self.renditions);
        let key = name.to_owned();
        let started = rendition::start(&self.engine, name, move || {
            let mut map = renditions.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&key).is_some_and(|r| r.is_stopped()) {
                map.remove(&key);
            }
        })?;
        tracing::info!(stream = %name, rendition = %started.id, "HLS muxing started");
        map.insert(name.to_owned(), Arc::clone(&started));
        Ok(started)
    }

    /// The rendition `id` of `name` if it still runs.
    fn existing(&self, name: &str, id: &str) -> Option<Arc<Rendition>> {
        self.map()
            .get(name)
            .filter(|r| r.id == id && !r.is_stopped())
            .cloned()
    }

    fn counts(&self) -> (usize, usize) {
        let map = self.map();
        (map.len(), map.values().map(|r| r.recent_clients()).sum())
    }
}

fn headers(content_type: &'static str, cache: &'static str) -> [(HeaderName, &'static str); 3] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, cache),
        // Any page may play the stream (hls.js fetches cross-origin from a customer's site).
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
    ]
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut r = (
        status,
        headers("text/plain; charset=utf-8", "no-store"),
        format!("{message}\n"),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    r
}

fn no_rendition(e: &NoRendition) -> Response {
    let status = match e {
        NoRendition::NotFound => StatusCode::NOT_FOUND,
        // The stream is live; what it carries cannot be served as HLS.
        _ => StatusCode::CONFLICT,
    };
    error(status, &e.to_string())
}

fn bytes_out(content_type: &'static str, cache: &'static str, body: Bytes) -> Response {
    metrics::counter!("waveguide_hls_bytes_total").increment(body.len() as u64);
    (StatusCode::OK, headers(content_type, cache), body).into_response()
}

/// Waits until `ready(progress)` holds or `limit` passes; returns whether it held.
async fn wait_for(
    rendition: &Rendition,
    limit: Duration,
    ready: impl Fn(&Option<Progress>) -> bool,
) -> bool {
    let mut rx = rendition.progress();
    let waited = Instant::now();
    let held = tokio::time::timeout(limit, rx.wait_for(|p| ready(p)))
        .await
        .is_ok_and(|r| r.is_ok());
    metrics::histogram!("waveguide_hls_playlist_wait_seconds")
        .record(waited.elapsed().as_secs_f64());
    if !held {
        metrics::counter!("waveguide_hls_wait_timeouts_total").increment(1);
    }
    held
}

async fn multivariant(
    State(hls): State<Hls>,
    Path(stream): Path<String>,
    client: Client,
) -> Response {
    // A stream another edge holds is pulled over the relay first, as for a WHEP viewer.
    if let Err(e) = hls.engine.pull_if_remote(&stream).await {
        return e.into_response();
    }
    let rendition = match hls.rendition(&stream) {
        Ok(r) => r,
        Err(e) => return no_rendition(&e),
    };
    rendition.touch(client.map(|c| c.0.0.ip()));
    if !wait_for(&rendition, FIRST_KEYFRAME_WAIT, Option::is_some).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no keyframe from the publisher yet",
        );
    }
    let body = match rendition.segmenter().as_ref() {
        Some(s) => multivariant_playlist(s, &rendition.id),
        None => return error(StatusCode::SERVICE_UNAVAILABLE, "rendition not ready"),
    };
    metrics::counter!("waveguide_hls_requests_total", "object" => "multivariant").increment(1);
    bytes_out(M3U8, PLAYLIST, body.into())
}

/// The multivariant playlist: one muxed rendition.
fn multivariant_playlist(s: &Segmenter, rendition: &str) -> String {
    let codecs: Vec<String> = s.tracks().iter().map(|t| t.codec_string()).collect();
    let resolution = s
        .tracks()
        .iter()
        .find_map(|t| match t {
            super::fmp4::TrackConfig::H264 { width, height, .. } => {
                Some(format!(",RESOLUTION={width}x{height}"))
            }
            _ => None,
        })
        .unwrap_or_default();
    format!(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS=\"{}\"{resolution}\n{rendition}/media.m3u8\n",
        codecs.join(",")
    )
}

/// `_HLS_msn` / `_HLS_part` of a blocking playlist reload.
#[derive(Debug, serde::Deserialize)]
struct Reload {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<u64>,
}

/// What an object name asks for.
#[derive(Debug, PartialEq, Eq)]
enum Object {
    Playlist,
    Init,
    Segment(u64),
    Part(u64, usize),
}

fn parse_object(name: &str) -> Option<Object> {
    match name {
        "media.m3u8" => return Some(Object::Playlist),
        "init.mp4" => return Some(Object::Init),
        _ => {}
    }
    let stem = name.strip_suffix(".m4s")?;
    if let Some(msn) = stem.strip_prefix("seg") {
        return Some(Object::Segment(msn.parse().ok()?));
    }
    let (msn, part) = stem.strip_prefix("part")?.split_once('.')?;
    Some(Object::Part(msn.parse().ok()?, part.parse().ok()?))
}

async fn object(
    State(hls): State<Hls>,
    Path((stream, id, name)): Path<(String, String, String)>,
    Query(reload): Query<Reload>,
    client: Client,
) -> Response {
    let Some(object) = parse_object(&name) else {
        return error(StatusCode::NOT_FOUND, "no such HLS object");
    };
    let Some(rendition) = hls.existing(&stream, &id) else {
        return error(
            StatusCode::NOT_FOUND,
            "rendition not running: reload /hls/{stream}/index.m3u8",
        );
    };
    rendition.touch(client.map(|c| c.0.0.ip()));
    let kind = match object {
        Object::Playlist => "playlist",
        Object::Init => "init",
        Object::Segment(_) => "segment",
        Object::Part(..) => "part",
    };
    metrics::counter!("waveguide_hls_requests_total", "object" => kind).increment(1);
    match object {
        Object::Playlist => media_playlist(&rendition, reload).await,
        Object::Init => match rendition.segmenter().as_ref() {
            Some(s) => bytes_out("video/mp4", IMMUTABLE, s.init().clone()),
            None => error(StatusCode::SERVICE_UNAVAILABLE, "rendition not ready"),
        },
        Object::Segment(msn) => {
            let data = rendition
                .segmenter()
                .as_ref()
                .and_then(|s| s.segment(msn).map(|x| x.bytes()));
            match data {
                Some(d) => bytes_out("video/mp4", IMMUTABLE, d),
                None => error(StatusCode::NOT_FOUND, "no such segment"),
            }
        }
        Object::Part(msn, index) => {
            // The preload-hinted part is held until it exists.
            let wanted = Progress {
                msn,
                parts: index as u64 + 1,
            };
            let _ = wait_for(&rendition, BLOCK_WAIT, |p| {
                p.is_some_and(|p| (p.msn, p.parts) >= (wanted.msn, wanted.parts) || p.msn > msn)
            })
            .await;
            let data = rendition
                .segmenter()
                .as_ref()
                .and_then(|s| s.part(msn, index).map(|p| p.data.clone()));
            match data {
                Some(d) => bytes_out("video/mp4", IMMUTABLE, d),
                None => error(StatusCode::NOT_FOUND, "no such part"),
            }
        }
    }
}

/// Whether the playlist at `p` satisfies a reload asking for segment `msn` (complete) or, with
/// `part`, that part of it.
fn reload_satisfied(p: Progress, msn: u64, part: Option<u64>) -> bool {
    match part {
        Some(part) => p.msn > msn || (p.msn == msn && p.parts > part),
        None => p.msn > msn,
    }
}

async fn media_playlist(rendition: &Rendition, reload: Reload) -> Response {
    let first_part = |p: &Option<Progress>| p.is_some_and(|p| p.msn > 0 || p.parts > 0);
    let ready = match reload.msn {
        Some(msn) => {
            let now = *rendition.progress().borrow();
            let current = now.map_or(0, |p| p.msn);
            // RFC 8216bis 6.2.5.2: a request more than two segments ahead is refused.
            if msn > current + 2 {
                return error(StatusCode::BAD_REQUEST, "_HLS_msn too far ahead");
            }
            let part = reload.part;
            wait_for(rendition, BLOCK_WAIT + PART_TARGET, |p| {
                p.is_some_and(|p| reload_satisfied(p, msn, part))
            })
            .await
        }
        None if reload.part.is_some() => {
            return error(StatusCode::BAD_REQUEST, "_HLS_part without _HLS_msn");
        }
        None => wait_for(rendition, FIRST_KEYFRAME_WAIT, first_part).await,
    };
    // A reload that timed out gets the current playlist, as the spec asks.
    let _ = ready;
    let body = match rendition.segmenter().as_ref() {
        Some(s) if first_part(&Some(s.progress())) => s.media_playlist(),
        _ => return error(StatusCode::SERVICE_UNAVAILABLE, "no part yet"),
    };
    bytes_out(M3U8, PLAYLIST, body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert_eq!(parse_object("media.m3u8"), Some(Object::Playlist));
        assert_eq!(parse_object("init.mp4"), Some(Object::Init));
        assert_eq!(parse_object("seg12.m4s"), Some(Object::Segment(12)));
        assert_eq!(parse_object("part12.3.m4s"), Some(Object::Part(12, 3)));
        for bad in [
            "seg.m4s",
            "part1.m4s",
            "part1.x.m4s",
            "seg-1.m4s",
            "../init.mp4",
            "x",
        ] {
            assert_eq!(parse_object(bad), None, "{bad}");
        }
    }

    #[test]
    fn blocking_reload_conditions() {
        let p = Progress { msn: 5, parts: 2 };
        assert!(reload_satisfied(p, 4, None));
        assert!(!reload_satisfied(p, 5, None));
        assert!(reload_satisfied(p, 5, Some(1)));
        assert!(!reload_satisfied(p, 5, Some(2)));
        assert!(reload_satisfied(p, 4, Some(9)));
        assert!(!reload_satisfied(p, 6, Some(0)));
    }
}
