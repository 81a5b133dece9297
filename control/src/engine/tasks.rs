//! The engine's threads and tasks: one thread per shard (a runtime of its own, with the
//! shard's socket readers on it), and the once-a-second housekeeping on the node's runtime.

use super::shard::{Command, Datagram, Shard, ShardSettings};
use super::{DATAGRAM_QUEUE, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// A shard's thread: a runtime of its own, on which the shard and its socket readers run, so
/// a shard's state stays on one core and no other work (HTTP, RTMP, timers of other tasks)
/// runs between its packets. Says on `ready` whether its sockets could be registered.
pub(super) fn run_shard(
    index: usize,
    shared: Arc<Shared>,
    std_sockets: Vec<(std::net::UdpSocket, SocketAddr)>,
    settings: ShardSettings,
    commands: mpsc::UnboundedReceiver<Command>,
    media: mpsc::Receiver<Arc<crate::media::MediaPacket>>,
    ready: oneshot::Sender<std::io::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let (dgram_tx, dgram_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let mut sockets = Vec::new();
        for (socket_index, (std_socket, addr)) in std_sockets.into_iter().enumerate() {
            let socket = match UdpSocket::from_std(std_socket) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            tokio::spawn(read_socket(
                Arc::clone(&socket),
                socket_index,
                dgram_tx.clone(),
                Arc::clone(&shared),
            ));
            sockets.push((socket, addr));
        }
        let _ = ready.send(Ok(()));
        Shard::new(index, shared, sockets, settings)
            .run(commands, media, dgram_rx)
            .await;
    });
}

async fn read_socket(
    socket: Arc<UdpSocket>,
    index: usize,
    tx: mpsc::Sender<Datagram>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let d = Datagram {
                    socket: index,
                    from,
                    data: bytes::BytesMut::from(&buf[..n]),
                    at: Instant::now(),
                };
                match tx.try_send(d) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        shared.metrics.drops_datagram_queue.increment(1)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // ICMP port-unreachable from a vanished peer surfaces here on Linux; keep reading.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }
    }
}

/// Once a second: bitrates, and ending streams whose publisher did not come back in time.
pub(super) async fn housekeeping(shared: Arc<Shared>, grace: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        shared.streams.sample_bitrates(now);
        for (id, name) in shared.streams.expire(grace, now) {
            warn!(stream = %name, "publisher did not return within the grace period; ending viewers");
            for tx in &shared.commands {
                let _ = tx.send(Command::EndStream { stream: id });
            }
        }
        let (live, viewers) = shared.streams.live_counts();
        ::metrics::gauge!("waveguide_streams").set(live as f64);
        ::metrics::gauge!("waveguide_stream_viewers").set(viewers as f64);
    }
}
