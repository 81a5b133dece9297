//! The Redis store against a real `redis-server` (from PATH): two orchestrators' stores on one
//! Redis see the same nodes, Redis expires a silent node, and the store survives a Redis
//! restart (the connection manager reconnects; the data is gone, so edges resync).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use waveguide_orchestrator::node::{Node, NodeInfo, Protocol, StreamLocation, now_ms};
use waveguide_orchestrator::store::{Heartbeat, Store, StoreConfig, StoreKind};
use waveguide_proto::v1;

/// A `redis-server` child, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH for this test");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn store(url: &str, prefix: &str, expiry: Duration) -> Store {
    let config = StoreConfig {
        kind: StoreKind::Redis,
        url: url.to_owned(),
        prefix: prefix.to_owned(),
    };
    Store::open(&config, expiry).expect("store opens")
}

fn announced(id: &str, stream: &str) -> Node {
    Node::announced(
        NodeInfo {
            id: id.into(),
            region: "eu".into(),
            public_url: format!("http://{id}:8080"),
            ..NodeInfo::default()
        },
        [StreamLocation {
            name: stream.into(),
            protocol: Protocol::Whip,
            tracks: Vec::new(),
            viewers: 0,
            started_at_ms: 0,
            origin_node_id: id.into(),
        }],
        1,
        now_ms(),
    )
}

async fn ids(store: &Store) -> Vec<String> {
    store
        .nodes()
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| n.info.id)
        .collect()
}

#[tokio::test]
async fn two_stores_on_one_redis_agree_and_silent_nodes_expire() {
    let redis = RedisServer::start(free_port());
    let expiry = Duration::from_millis(900);
    let a = store(&redis.url(), "t1:", expiry);
    let b = store(&redis.url(), "t1:", expiry);
    let other_cluster = store(&redis.url(), "t2:", expiry);
    a.ping().await.expect("redis answers");

    a.put_node(announced("edge-a", "demo")).await.unwrap();
    b.put_node(announced("edge-b", "other")).await.unwrap();
    assert_eq!(ids(&a).await, ["edge-a", "edge-b"]);
    assert_eq!(ids(&b).await, ["edge-a", "edge-b"]);
    assert!(ids(&other_cluster).await.is_empty());

    // A change through one store is what the other reads.
    let load = v1::NodeLoad {
        viewers: 7,
        per_stream: vec![v1::StreamLoad {
            name: "demo".into(),
            viewers: 7,
            egress_bps: 0,
        }],
        ..v1::NodeLoad::default()
    };
    assert_eq!(
        b.heartbeat("edge-a", &load, 1).await.unwrap(),
        Heartbeat::Applied {
            resync_required: false
        }
    );
    b.set_draining("edge-a", true).await.unwrap();
    let seen = a.node("edge-a").await.unwrap().expect("edge-a");
    assert_eq!(seen.load.viewers, 7);
    assert_eq!(seen.streams["demo"].viewers, 7);
    assert!(seen.draining);
    assert_eq!(a.stream_ended("edge-b", "other").await.unwrap(), Some(true));
    assert!(b.node("edge-b").await.unwrap().unwrap().streams.is_empty());

    // Concurrent writers on one record lose nothing.
    let mut writers = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            let stream = StreamLocation {
                name: format!("s{i}"),
                protocol: Protocol::Rtmp,
                tracks: Vec::new(),
                viewers: 0,
                started_at_ms: 0,
                origin_node_id: "edge-b".into(),
            };
            store.stream_held("edge-b", stream).await.unwrap()
        }));
    }
    for writer in writers {
        assert_eq!(writer.await.unwrap(), Some(()));
    }
    assert_eq!(a.node("edge-b").await.unwrap().unwrap().streams.len(), 20);

    // edge-a keeps beating, edge-b goes silent: Redis expires edge-b, with its streams.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        a.heartbeat("edge-a", &load, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ids(&a).await, ["edge-a"]);
    assert_eq!(ids(&b).await, ["edge-a"]);
    assert_eq!(
        b.heartbeat("edge-b", &load, 1).await.unwrap(),
        Heartbeat::UnknownNode
    );
    // One sweeper prunes the dead id; the other finds nothing left to prune.
    let mut swept = a.sweep().await.unwrap();
    swept.extend(b.sweep().await.unwrap());
    assert_eq!(swept, ["edge-b"]);

    assert!(b.remove_node("edge-a").await.unwrap());
    assert!(ids(&a).await.is_empty());
}

#[tokio::test]
async fn the_store_reconnects_after_a_redis_restart() {
    let port = free_port();
    let redis = RedisServer::start(port);
    let store = store(&redis.url(), "restart:", Duration::from_secs(30));
    store.put_node(announced("edge-a", "demo")).await.unwrap();
    assert_eq!(ids(&store).await, ["edge-a"]);

    drop(redis);
    assert!(store.ping().await.is_err(), "Redis is down");
    let _redis = RedisServer::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing survived (no persistence): the node must resync, and can.
    assert_eq!(
        store
            .heartbeat("edge-a", &v1::NodeLoad::default(), 1)
            .await
            .unwrap(),
        Heartbeat::UnknownNode
    );
    store.put_node(announced("edge-a", "demo")).await.unwrap();
    assert_eq!(ids(&store).await, ["edge-a"]);
}
