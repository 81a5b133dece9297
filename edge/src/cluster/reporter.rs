//! Tells the orchestrator what this node holds and how loaded it is, over `EventService`:
//! `NodeUp` (everything, at start and whenever the orchestrator asks for a resync or a call
//! failed), stream events the moment the registry changes, `NodeDraining`, and a `ReportStatus`
//! heartbeat every interval. It owns no state the orchestrator cannot rebuild: after any
//! failure it simply re-announces the whole node.

use super::load::LoadSampler;
use super::node::{NodeIdentity, stream_infos, timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::{info, warn};
use waveguide_control::Engine;
use waveguide_proto::v1::event_service_client::EventServiceClient;
use waveguide_proto::v1::{self, event};

/// Where and how often to report; the orchestrator may change both (`RegisterModule`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The orchestrator's gRPC URL.
    pub url: String,
    /// Heartbeat interval.
    pub interval: Duration,
}

/// Something about the node itself to tell the orchestrator now.
#[derive(Debug)]
pub enum NodeEvent {
    /// The node takes nothing new.
    Draining {
        /// Why.
        reason: String,
        /// When remaining sessions are closed.
        deadline: Option<SystemTime>,
    },
    /// Re-announce everything (the node stopped draining, its limits changed).
    Reannounce,
}

/// The running reporter's inputs.
#[derive(Debug, Clone)]
pub struct ReporterHandle {
    events: mpsc::UnboundedSender<NodeEvent>,
    target: watch::Sender<Target>,
}

impl ReporterHandle {
    /// Queues a node event.
    pub fn send(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    /// Switches to a new orchestrator endpoint or interval.
    pub fn retarget(&self, url: Option<String>, interval: Option<Duration>) {
        self.target.send_if_modified(|t| {
            let mut changed = false;
            if let Some(url) = url.filter(|u| !u.is_empty() && *u != t.url) {
                t.url = url;
                changed = true;
            }
            if let Some(i) = interval.filter(|i| !i.is_zero() && *i != t.interval) {
                t.interval = i;
                changed = true;
            }
            changed
        });
    }
}

type Client = EventServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds the cluster token to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

fn client(url: &str, token: &str, ca_cert_pem: Option<&[u8]>) -> Result<Client, String> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("orchestrator gRPC URL {url}: {e}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    if url.starts_with("https://") {
        let tls = match ca_cert_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("orchestrator gRPC TLS: {e}"))?;
    }
    let bearer = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "the cluster token is not a valid header value".to_owned())?;
    Ok(EventServiceClient::with_interceptor(
        endpoint.connect_lazy(),
        Bearer(bearer),
    ))
}

/// What the orchestrator was last told about one stream.
#[derive(Debug, Clone, PartialEq)]
struct Told {
    protocol: i32,
    tracks: Vec<(String, String)>,
}

impl Told {
    fn of(s: &v1::StreamInfo) -> Self {
        Self {
            protocol: s.protocol,
            tracks: s
                .tracks
                .iter()
                .map(|t| (t.codec.clone(), t.fmtp.clone()))
                .collect(),
        }
    }
}

struct Reporter {
    engine: Arc<Engine>,
    identity: NodeIdentity,
    token: String,
    ca_cert_pem: Option<Vec<u8>>,
    sampler: LoadSampler,
    sequence: u64,
    /// `None`: the orchestrator must be sent `NodeUp` before anything else.
    told: Option<HashMap<String, Told>>,
    /// Whether the last call failed, so the log says so once per outage.
    failing: bool,
}

/// Starts the reporter task; it sends `NodeDown` and ends when `stop` fires.
pub fn spawn(
    engine: Arc<Engine>,
    identity: NodeIdentity,
    token: String,
    ca_cert_pem: Option<Vec<u8>>,
    target: Target,
    stop: super::Stop,
) -> Result<(ReporterHandle, tokio::task::JoinHandle<()>), String> {
    client(&target.url, &token, ca_cert_pem.as_deref())?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let (target_tx, target_rx) = watch::channel(target);
    let reporter = Reporter {
        engine,
        identity,
        token,
        ca_cert_pem,
        sampler: LoadSampler::default(),
        sequence: 0,
        told: None,
        failing: false,
    };
    let task = tokio::spawn(reporter.run(events, target_rx, stop));
    Ok((
        ReporterHandle {
            events: events_tx,
            target: target_tx,
        },
        task,
    ))
}

fn new_event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Reporter {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<NodeEvent>,
        mut target: watch::Receiver<Target>,
        stop: super::Stop,
    ) {
        let mut changes = self.engine.streams().subscribe();
        let mut current = target.borrow_and_update().clone();
        let mut client = match client(&current.url, &self.token, self.ca_cert_pem.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                warn!("cluster reporting off: {e}");
                return;
            }
        };
        info!(orchestrator = %current.url, node = %self.identity.id(), "reporting to the orchestrator");
        let mut tick = tokio::time::interval(current.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.told.is_none() {
                self.announce(&mut client).await;
            }
            tokio::select! {
                _ = stop.stopped() => break,
                changed = changes.changed() => {
                    if changed.is_err() { break; }
                    self.report_streams(&mut client).await;
                }
                _ = tick.tick() => self.heartbeat(&mut client).await,
                Some(event) = events.recv() => self.report_node(&mut client, event).await,
                changed = target.changed() => {
                    if changed.is_err() { continue; }
                    let next = target.borrow_and_update().clone();
                    if next.url != current.url {
                        match self::client(&next.url, &self.token, self.ca_cert_pem.as_deref()) {
                            Ok(c) => {
                                info!(orchestrator = %next.url, "reporting to a new orchestrator endpoint");
                                client = c;
                                self.told = None;
                            }
                            Err(e) => warn!("keeping {}: {e}", current.url),
                        }
                    }
                    if next.interval != current.interval {
                        tick = tokio::time::interval(next.interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    current = next;
                }
            }
        }
        let down = event::Event::NodeDown(v1::NodeDown {
            reason: "node stopping".into(),
        });
        if self.send(&mut client, down).await.is_ok() {
            info!("told the orchestrator this node is down");
        }
    }

    fn note_result<T>(&mut self, what: &str, result: &Result<T, tonic::Status>) {
        match result {
            Ok(_) if self.failing => {
                self.failing = false;
                info!("orchestrator reachable again");
            }
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(code = ?e.code(), "orchestrator {what} failed: {}; retrying every heartbeat", e.message());
            }
            _ => {}
        }
    }

    async fn send(&mut self, client: &mut Client, event: event::Event) -> Result<(), ()> {
        self.sequence += 1;
        let request = v1::ReportEventRequest {
            event: Some(v1::Event {
                event_id: new_event_id(),
                node_id: self.identity.id().to_owned(),
                sequence: self.sequence,
                at: Some(timestamp(SystemTime::now())),
                event: Some(event),
            }),
        };
        let result = client.report_event(request).await;
        self.note_result("event", &result);
        match result {
            Ok(r) if !r.get_ref().resync_required => Ok(()),
            _ => {
                self.told = None;
                Err(())
            }
        }
    }

    async fn announce(&mut self, client: &mut Client) {
        let streams = stream_infos(&self.engine, self.identity.id());
        let told: HashMap<String, Told> = streams
            .iter()
            .map(|s| (s.name.clone(), Told::of(s)))
            .collect();
        self.sequence = 0;
        let up = event::Event::NodeUp(v1::NodeUp {
            node: Some(self.identity.info(&self.engine)),
            streams,
        });
        if self.send(client, up).await.is_ok() {
            info!(
                streams = told.len(),
                "announced this node to the orchestrator"
            );
            self.told = Some(told);
            if self.engine.limits().is_draining() {
                let draining = event::Event::NodeDraining(v1::NodeDraining {
                    reason: "draining".into(),
                    deadline: None,
                });
                let _ = self.send(client, draining).await;
            }
        }
    }

    async fn report_streams(&mut self, client: &mut Client) {
        let Some(told) = self.told.clone() else {
            return;
        };
        let streams = stream_infos(&self.engine, self.identity.id());
        let mut now_told = HashMap::new();
        let mut events = Vec::new();
        for s in streams {
            let t = Told::of(&s);
            match told.get(&s.name) {
                None => events.push(event::Event::StreamStarted(v1::StreamStarted {
                    stream: Some(s.clone()),
                })),
                Some(old) if *old != t => {
                    events.push(event::Event::StreamUpdated(v1::StreamUpdated {
                        stream: Some(s.clone()),
                    }));
                }
                Some(_) => {}
            }
            now_told.insert(s.name, t);
        }
        for name in told.keys().filter(|n| !now_told.contains_key(*n)) {
            events.push(event::Event::StreamEnded(v1::StreamEnded {
                name: name.clone(),
                reason: v1::StreamEndReason::Unspecified as i32,
                message: "the stream ended on this node".into(),
                duration: None,
            }));
        }
        for e in events {
            if self.send(client, e).await.is_err() {
                return;
            }
        }
        self.told = Some(now_told);
    }

    async fn heartbeat(&mut self, client: &mut Client) {
        let load = self.sampler.sample(&self.engine, &self.identity);
        let request = v1::ReportStatusRequest {
            node_id: self.identity.id().to_owned(),
            at: Some(timestamp(SystemTime::now())),
            load: Some(load),
            last_event_sequence: self.sequence,
        };
        let result = client.report_status(request).await;
        self.note_result("heartbeat", &result);
        match result {
            Ok(r) if r.get_ref().resync_required => {
                info!("the orchestrator asked for a resync");
                self.told = None;
            }
            Ok(_) => {}
            Err(_) => self.told = None,
        }
    }

    async fn report_node(&mut self, client: &mut Client, event: NodeEvent) {
        match event {
            NodeEvent::Reannounce => self.told = None,
            NodeEvent::Draining { reason, deadline } => {
                if self.told.is_none() {
                    // The NodeUp that follows carries the drain.
                    return;
                }
                let e = event::Event::NodeDraining(v1::NodeDraining {
                    reason,
                    deadline: deadline.map(timestamp),
                });
                let _ = self.send(client, e).await;
            }
        }
    }
}
