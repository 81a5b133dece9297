//! Serving an HTTP app over plain HTTP or HTTPS. TLS is rustls with the pure-Rust `ring`
//! provider (no cmake, no system OpenSSL), configured by a PEM certificate chain and key, so
//! OBS and browsers can use `https://` WHIP/WHEP without a proxy in front. Both binaries serve
//! through here, so TLS behaves the same everywhere.

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How long in-flight requests may take once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A loaded certificate and key.
#[derive(Clone)]
pub struct Tls(RustlsConfig);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// A PEM certificate chain and its private key, as read from their files.
pub type PemPair = (Vec<u8>, Vec<u8>);

/// The `tls_cert`/`tls_key` PEM files of config section `section`, read: both or neither.
/// Errors name the section and file, so a bad path fails at start.
pub fn read_pem_pair(
    section: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<PemPair>, String> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(None),
        _ => {
            return Err(format!(
                "[{section}] tls_cert and tls_key go together: set both or neither"
            ));
        }
    };
    let read = |p: &Path, key: &str| {
        std::fs::read(p).map_err(|e| format!("[{section}] {key} {}: {e}", p.display()))
    };
    Ok(Some((read(cert, "tls_cert")?, read(key, "tls_key")?)))
}

impl Tls {
    /// HTTPS from section `section`'s PEM pair, when it has one.
    pub async fn from_config(
        section: &str,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Tls>, String> {
        let Some((cert, key)) = read_pem_pair(section, cert, key)? else {
            return Ok(None);
        };
        // The process-wide default may already be set (by us, or a library); either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        RustlsConfig::from_pem(cert, key)
            .await
            .map(|c| Some(Tls(c)))
            .map_err(|e| format!("[{section}] TLS certificate and key: {e}"))
    }
}

/// Serves `app` on `listener` (HTTPS when `tls` is set) until `shutdown` resolves, then lets
/// in-flight requests finish for a few seconds. Handlers see the peer address (`ConnectInfo`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let Some(Tls(config)) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)
        .handle(handle)
        .serve(app)
        .await
}
