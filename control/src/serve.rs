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

impl Tls {
    /// Reads the PEM files; errors name the file and the reason, so a bad path fails at start.
    pub async fn load(cert: &Path, key: &Path) -> std::io::Result<Tls> {
        // The process-wide default may already be set (by us, or a library); either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        RustlsConfig::from_pem_file(cert, key)
            .await
            .map(Tls)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "TLS certificate {} / key {}: {e}",
                        cert.display(),
                        key.display()
                    ),
                )
            })
    }
}

/// Both halves of a `tls_cert`/`tls_key` pair of config section `section`, or neither.
pub fn tls_pair<'a>(
    section: &str,
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> Result<Option<(&'a Path, &'a Path)>, String> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => Err(format!(
            "[{section}] tls_cert and tls_key go together: set both or neither"
        )),
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
