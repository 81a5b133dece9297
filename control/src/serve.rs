//! Serving an HTTP app over plain HTTP or HTTPS. TLS is rustls with the pure-Rust `ring`
//! provider (no cmake, no system OpenSSL), configured by a PEM certificate chain and key, so
//! OBS and browsers can use `https://` WHIP/WHEP without a proxy in front. Both binaries serve
//! through here, so TLS and the connection limits behave the same everywhere.
//!
//! Owns what a connection may hold ([`ConnectionLimits`]): how many are open at once (in all
//! and per client) and how long a client may take to send a request's headers. Connections
//! share the process's file descriptors with RTMP and WebRTC, so a client that opens many and
//! sends one byte every few seconds (slowloris) must not keep them.

use axum::Router;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

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

/// What the HTTP server lets clients hold (`[http]` of both binaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, all clients together; past it new ones are closed at once.
    /// 0: no cap.
    pub max_connections: usize,
    /// Connections open at once from one client (an IPv4 address, an IPv6 /64). 0: no cap.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers: from the connection's start
    /// (TLS handshake included) to the end of the first request's headers, and from the end
    /// of each answer to the end of the next request's headers (an idle keep-alive connection
    /// is closed after it too).
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` (HTTPS when `tls` is set) until `shutdown` resolves, then lets
/// in-flight requests finish for a few seconds. Handlers see the peer address (`ConnectInfo`).
/// Connections past `limits` are closed as soon as they are accepted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Tls>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let gate = Arc::new(Gate::new(limits));
    let server = axum_server::from_tcp(listener.into_std()?).handle(handle);
    match tls {
        None => {
            let mut server = server.acceptor(Guarded::new(DefaultAcceptor::new(), gate));
            time_headers(server.http_builder(), limits);
            server.serve(app).await
        }
        Some(Tls(config)) => {
            let tls = RustlsAcceptor::new(config).handshake_timeout(limits.header_read_timeout);
            let mut server = server.acceptor(Guarded::new(tls, gate));
            time_headers(server.http_builder(), limits);
            server.serve(app).await
        }
    }
}

/// HTTP/1's header-read timer (hyper's default is 30 s, and only with a timer set).
fn time_headers(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: ConnectionLimits,
) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
}

/// The count of open connections, in all and per client.
#[derive(Debug)]
struct Gate {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Gate {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            open: Mutex::default(),
        }
    }

    /// A place for one more connection from `ip`, or `None` past a cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let client = crate::rate::client_key(ip);
        let mut open = self.lock();
        let of_client = open.per_client.get(&client).copied().unwrap_or(0);
        let capped = |cap: usize, n: usize| cap > 0 && n >= cap;
        if capped(self.limits.max_connections, open.total)
            || capped(self.limits.max_connections_per_ip, of_client)
        {
            return None;
        }
        open.total += 1;
        open.per_client.insert(client, of_client + 1);
        Some(Admission {
            gate: Arc::clone(self),
            client,
        })
    }

    fn release(&self, client: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&client);
            }
        }
    }

    /// Held for a count's update only; a poisoned count is still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's place; given back when the connection is dropped.
#[derive(Debug)]
struct Admission {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.release(self.client);
    }
}

/// An accepted TCP connection that holds its place.
#[derive(Debug)]
pub struct Admitted {
    tcp: TcpStream,
    _admission: Admission,
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The acceptor in front of plain TCP or TLS: admits a connection under the caps, bounds its
/// TLS handshake, and gives it [`FirstRequest`]'s deadline.
#[derive(Debug, Clone)]
struct Guarded<A> {
    inner: A,
    gate: Arc<Gate>,
}

impl<A> Guarded<A> {
    fn new(inner: A, gate: Arc<Gate>) -> Self {
        Self { inner, gate }
    }
}

type Accepting<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl<A, S> Accept<TcpStream, S> for Guarded<A>
where
    A: Accept<Admitted, S>,
    A::Future: Send + 'static,
    A::Stream: Unpin + Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = FirstRequest<A::Stream>;
    type Service = A::Service;
    type Future = Accepting<(Self::Stream, Self::Service)>;

    fn accept(&self, tcp: TcpStream, service: S) -> Self::Future {
        let peer = tcp.peer_addr();
        let Some(admission) = peer.as_ref().ok().and_then(|p| self.gate.admit(p.ip())) else {
            tracing::debug!(peer = ?peer.ok(), "HTTP connection refused: too many open");
            return Box::pin(std::future::ready(Err(io::Error::other(
                "too many open HTTP connections",
            ))));
        };
        let deadline = Instant::now() + self.gate.limits.header_read_timeout;
        let accepting = self.inner.accept(
            Admitted {
                tcp,
                _admission: admission,
            },
            service,
        );
        Box::pin(async move {
            let (stream, service) = accepting.await?;
            Ok((FirstRequest::new(stream, deadline), service))
        })
    }
}

/// The first bytes of an HTTP/2 connection (RFC 9113 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A new connection's deadline until hyper knows its protocol: a read still waiting past it
/// fails, which closes the connection. hyper reads up to the 24 bytes of the HTTP/2 preface to
/// choose, with no timer of its own; once the bytes differ from it (HTTP/1, whose header timer
/// takes over) or complete it (HTTP/2), the deadline is gone.
#[derive(Debug)]
pub struct FirstRequest<S> {
    inner: S,
    deadline: Option<Pin<Box<Sleep>>>,
    matched: usize,
}

impl<S> FirstRequest<S> {
    fn new(inner: S, deadline: Instant) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            matched: 0,
        }
    }

    /// Follows the bytes read so far against the HTTP/2 preface.
    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.matched == H2_PREFACE.len() || H2_PREFACE[self.matched] != b {
                self.deadline = None;
                return;
            }
            self.matched += 1;
        }
        if self.matched == H2_PREFACE.len() {
            self.deadline = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRequest<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if self.deadline.is_some() {
                    let fresh = buf.filled()[before..].to_vec();
                    self.saw(&fresh);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header-read timeout",
                ))),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRequest<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_client_and_in_all_and_free_on_drop() {
        let gate = Arc::new(Gate::new(ConnectionLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            header_read_timeout: Duration::from_secs(1),
        }));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let a_too: IpAddr = "2001:db8::2:3".parse().unwrap();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a_too).unwrap();
        assert!(gate.admit(a).is_none(), "a third from the same /64");
        let _third = gate.admit(b).unwrap();
        assert!(gate.admit([127, 0, 0, 3].into()).is_none(), "3 open in all");
        drop(first);
        assert!(
            gate.admit(a).is_some(),
            "a closed connection frees its place"
        );
        assert!(gate.lock().total <= 3);
    }

    #[test]
    fn the_first_bytes_decide_when_the_deadline_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut http1 = FirstRequest::new((), Instant::now());
            http1.saw(b"G");
            assert!(http1.deadline.is_none(), "not the HTTP/2 preface: HTTP/1");
            let mut h2 = FirstRequest::new((), Instant::now());
            h2.saw(b"PRI * HTTP/2.0\r\n");
            assert!(
                h2.deadline.is_some(),
                "a partial preface keeps the deadline"
            );
            h2.saw(b"\r\nSM\r\n\r\n");
            assert!(h2.deadline.is_none(), "the whole preface: HTTP/2");
        });
    }
}
