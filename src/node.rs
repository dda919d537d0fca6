//! [`Node`]: a bcos-p2p node running on its own task, driven through an async handle.
//!
//! Most applications want "send this, tell me what arrives" rather than a swarm to poll. `Node`
//! owns the swarm ([`crate::behaviour::Behaviour`] over TCP + CA-TLS + yamux) on a spawned
//! tokio task; its methods send commands to that task and resolve with the outcome, always —
//! a typed error at worst, never a hang — and what the network reports comes out of
//! [`Node::events`] as [`NodeEvent`]s.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bcos_p2p::{ca_tls, config::Config, flood, node::{Node, NodeEvent}};
//! use futures::StreamExt as _;
//!
//! let (key, tls) = ca_tls::Config::load("node.key", "node.crt", "ca.crt")?;
//! let mut node = Node::start(key, tls, Config::default()).await?;
//! let mut events = node.events().expect("events are taken once");
//! node.subscribe("blocks").await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         NodeEvent::Request { payload, responder, .. } => responder.respond(payload).await?,
//!         NodeEvent::Flood(flood::Event::Message { origin, payload, .. }) => {
//!             println!("{origin}: {payload:?}")
//!         }
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use bytes::Bytes;
use futures::{FutureExt as _, Stream, StreamExt as _};
use libp2p::{Multiaddr, PeerId, Swarm, swarm::SwarmEvent};
use tokio::sync::{mpsc, oneshot};

use crate::{
    NodeId, NodeKey,
    behaviour::{Behaviour, Event as BehaviourEvent, build_swarm},
    ca_tls,
    config::Config,
    connection,
    event_shares::{self, Holder, Shares},
    flood::{self, FloodError, MessageId},
    metrics::{Metrics, Registry, SAMPLE_INTERVAL},
    netstatus::{self, NetworkStatus, RemoteStatus},
    open,
    security::SecurityMode,
    status::{self, Status, StatusError},
    unicast::{self, RequestId, ResponseChannel, UnicastError},
    view::NetworkView,
};

/// An event in the queue to the application, with the holder of its place there.
type Queued = (Option<Holder>, NodeEvent);

/// Commands waiting for the node task at most; callers wait (asynchronously) beyond it.
const COMMAND_QUEUE: usize = 1024;
/// Events waiting for the application at most; beyond it events are dropped and counted (a
/// dropped request is answered "no response" by unicast), so a slow consumer cannot stall the
/// network.
const EVENT_QUEUE: usize = 16_384;
/// How long `start` waits for every listen address to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// A request or oneway message failed.
    #[error(transparent)]
    Unicast(#[from] UnicastError),
    /// A multicast, broadcast or subscription failed.
    #[error(transparent)]
    Flood(#[from] FloodError),
    /// A status change failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// No connected node subscribes to the topic (or every one of them failed).
    #[error("no reachable subscriber of topic `{0}`")]
    TopicNotFound(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// The node could not start.
    #[error("cannot start the node: {0}")]
    Start(String),
    /// A reload was refused (nothing changed).
    #[error("reload: {0}")]
    Reload(String),
}

/// What the network reports to the application.
#[derive(Debug)]
pub enum NodeEvent {
    /// The first connection to a peer is up.
    Connected {
        /// The peer.
        node: NodeId,
        /// Its address.
        addr: Multiaddr,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// A connection was refused: by either side's CA-TLS handshake or access lists, or by a
    /// connection limit.
    Refused {
        /// The remote address.
        addr: Multiaddr,
        /// Why.
        reason: connection::Refusal,
        /// The peer, when its certificate was read.
        node: Option<NodeId>,
    },
    /// A peer's request: answer it with the responder (dropping it answers "no response").
    Request {
        /// The peer.
        from: NodeId,
        /// The module it is for.
        module: u16,
        /// Its payload.
        payload: Bytes,
        /// Where the answer goes.
        responder: Responder,
    },
    /// A peer's one-way message.
    Oneway {
        /// The peer.
        from: NodeId,
        /// The module it is for.
        module: u16,
        /// Its payload.
        payload: Bytes,
    },
    /// Every other decision of the connection manager: dialling, failed dials, duplicates
    /// closed, self-connections refused, dead connections closed, denied sessions dropped,
    /// nodes banned for misbehaving ([`connection::Event::Banned`]), ping round trips.
    Connection(connection::Event),
    /// From flood: a multicast or broadcast delivered here, or a node's (un)subscription.
    Flood(flood::Event),
    /// From status sync: a peer's status changed, or its last connection closed.
    Status(status::Event),
}

/// The answer to one [`NodeEvent::Request`].
#[derive(Debug)]
pub struct Responder {
    channel: ResponseChannel,
    commands: mpsc::Sender<Command>,
}

impl Responder {
    /// Answers with `payload`.
    pub async fn respond(self, payload: Bytes) -> Result<(), NodeError> {
        self.send(Ok(payload)).await
    }

    /// Answers with an error; the requester gets `UnicastError::Remote(reason)`.
    pub async fn respond_error(self, reason: impl Into<String>) -> Result<(), NodeError> {
        self.send(Err(reason.into())).await
    }

    async fn send(self, result: Result<Bytes, String>) -> Result<(), NodeError> {
        self.commands
            .send(Command::Respond(self.channel, result))
            .await
            .map_err(|_| NodeError::Stopped)
    }
}

/// A connected peer, as [`Node::peers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub node: NodeId,
    /// The address of a connection to it.
    pub addr: Multiaddr,
    /// Its status seq, once status sync has it.
    pub status_seq: Option<u64>,
    /// The last ping round trip.
    pub rtt: Option<Duration>,
    /// None for a direct connection; for a routed one (through relays), the relays in path
    /// order when this node dialled it, empty when the peer did.
    pub relays: Option<Vec<NodeId>>,
    /// Frame-body bytes read from it, over every protocol, on its connections open now.
    pub bytes_in: u64,
    /// Frame-body bytes sent to it, likewise.
    pub bytes_out: u64,
    /// Its events (requests, messages, status) dropped so far because it held its whole share
    /// of the event queue (see [`Node::events`]).
    pub dropped_events: u64,
}

/// A node reachable now ([`Node::network`]).
#[derive(Debug, Clone)]
pub struct NetworkNode {
    /// The node.
    pub node: NodeId,
    /// Hops on the shortest path in the view (1: a flood neighbour).
    pub hops: u32,
    /// `None`: no connection; `Some(false)`: direct; `Some(true)`: routed (through relays).
    pub routed: Option<bool>,
    /// The `(incarnation, seq)` it announced network-wide, and the latest status held.
    pub status: RemoteStatus,
}

/// Frames and body bytes one protocol moved, both ways, over all connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Frames read from peers.
    pub frames_in: u64,
    /// Body bytes read from peers.
    pub bytes_in: u64,
    /// Frames handed to peers' streams.
    pub frames_out: u64,
    /// Body bytes handed to peers' streams.
    pub bytes_out: u64,
}

impl TrafficStats {
    fn of(t: &bcos_p2p_core::stream_pair::Traffic) -> Self {
        TrafficStats {
            frames_in: t.frames_in(),
            bytes_in: t.bytes_in(),
            frames_out: t.frames_out(),
            bytes_out: t.bytes_out(),
        }
    }
}

/// What a node's protocols did since it started, as [`Node::stats`] reports it (the same
/// counters the metrics endpoint serves).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Flood: messages, records, repair.
    pub flood: flood::Stats,
    /// Status sync.
    pub status: crate::status::Stats,
    /// Unicast frames and bytes.
    pub unicast_traffic: TrafficStats,
    /// Flood frames and bytes (data and control).
    pub flood_traffic: TrafficStats,
    /// Status frames and bytes.
    pub status_traffic: TrafficStats,
    /// Events dropped because the application did not take them in time (see
    /// [`Node::events`]).
    pub dropped_events: u64,
}

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

#[derive(Debug)]
enum Command {
    Request(NodeId, u16, Bytes, Reply<Bytes>),
    Oneway(NodeId, u16, Bytes, Reply<()>),
    Publish(Option<String>, Bytes, Reply<MessageId>),
    TopicRequest(String, u16, Bytes, Reply<(NodeId, Bytes)>),
    Subscribe(String, bool, Reply<bool>),
    SetStatus(Bytes, Reply<u64>),
    Peers(Reply<Vec<PeerInfo>>),
    Stats(Reply<NodeStats>),
    Reachable(Reply<Vec<NodeId>>),
    Network(Reply<Vec<NetworkNode>>),
    View(Reply<NetworkView>),
    Deny(NodeId, Reply<bool>),
    Allow(NodeId, Reply<bool>),
    AddPeer(Multiaddr, Reply<()>),
    Reload(Box<connection::Reload>, Reply<connection::Reloaded>),
    Respond(ResponseChannel, Result<Bytes, String>),
    Shutdown(Reply<()>),
}

/// A running node. Clones are handles to the same node (only the first has the event
/// stream). Dropping every handle (and every pending [`Responder`]) stops it, as does
/// [`Node::shutdown`].
#[derive(Debug)]
pub struct Node {
    node_id: NodeId,
    listen: Vec<Multiaddr>,
    commands: mpsc::Sender<Command>,
    events: Option<mpsc::Receiver<Queued>>,
    /// The peers' shares of the event queue, given back as the application takes events.
    shares: Shares,
}

impl Clone for Node {
    fn clone(&self) -> Self {
        Node {
            node_id: self.node_id.clone(),
            listen: self.listen.clone(),
            commands: self.commands.clone(),
            events: None,
            shares: self.shares.clone(),
        }
    }
}

impl Node {
    /// Starts a node with `key` and its CA-TLS setup `tls`: listens on the config's addresses
    /// (returns once each is up), dials its peers and keeps them connected.
    pub async fn start(
        key: NodeKey,
        tls: ca_tls::Config,
        config: Config,
    ) -> Result<Node, NodeError> {
        Self::start_secured(key, tls, config).await
    }

    /// Starts a node in open mode (`security = "libp2p-tls"`): stock libp2p TLS with `key` as
    /// the libp2p identity, no certificates (see [`crate::open`]).
    pub async fn start_open(key: NodeKey, config: Config) -> Result<Node, NodeError> {
        let open = open::Config::new(&key).map_err(|e| NodeError::Start(e.to_string()))?;
        Self::start_secured(key, open, config).await
    }

    /// Starts a node with either security mode; it must be the one the config names
    /// (`[network] security`), so that a node never runs another mode than its file says.
    pub async fn start_secured(
        key: NodeKey,
        security: impl SecurityMode,
        config: Config,
    ) -> Result<Node, NodeError> {
        Self::launch(key, security, config, None).await
    }

    /// Like [`Node::start_secured`], with the node's metrics registered in `registry` (see
    /// [`crate::metrics`]): serve it with [`crate::metrics::MetricsServer`], or encode it
    /// yourself. Several nodes in one registry each need their own sub-registry
    /// (`registry.sub_registry_with_label(..)`), or their series would collide.
    pub async fn start_with_metrics(
        key: NodeKey,
        security: impl SecurityMode,
        config: Config,
        registry: &mut Registry,
    ) -> Result<Node, NodeError> {
        Self::launch(key, security, config, Some(registry)).await
    }

    async fn launch(
        key: NodeKey,
        security: impl SecurityMode,
        config: Config,
        registry: Option<&mut Registry>,
    ) -> Result<Node, NodeError> {
        config.validate().map_err(NodeError::Start)?;
        if security.mode() != config.network.security {
            return Err(NodeError::Start(format!(
                "the config sets [network] security = \"{}\" but the node was started with \"{}\"",
                config.network.security,
                security.mode()
            )));
        }
        let security = security.with_handshake_timeout(Duration::from_millis(
            config.connection.handshake_timeout_ms,
        ));
        let mut swarm =
            build_swarm(&key, &security, &config).map_err(|e| NodeError::Start(e.to_string()))?;
        if config.network.listen.is_empty() {
            return Err(NodeError::Start("no listen address".into()));
        }
        let metrics = registry.map(|r| Metrics::new(r, swarm.behaviour()));
        let mut listeners = HashSet::new();
        for addr in &config.network.listen {
            let id = swarm
                .listen_on(addr.0.clone())
                .map_err(|e| NodeError::Start(format!("cannot listen on {addr}: {e}")))?;
            listeners.insert(id);
        }
        let mut listen = Vec::new();
        // Peers may connect (or be dialled) while the listeners come up: keep those events
        // for the node task instead of losing them.
        let mut early = Vec::new();
        tokio::time::timeout(LISTEN_TIMEOUT, async {
            let mut up = HashSet::new();
            while up.len() < listeners.len() {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr {
                        listener_id,
                        address,
                    } => {
                        up.insert(listener_id);
                        listen.push(address);
                    }
                    SwarmEvent::ListenerClosed {
                        addresses, reason, ..
                    } => {
                        return Err(NodeError::Start(format!(
                            "listener on {addresses:?} closed: {reason:?}"
                        )));
                    }
                    SwarmEvent::ListenerError { error, .. } => {
                        return Err(NodeError::Start(format!("listener failed: {error}")));
                    }
                    other => early.push(other),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| NodeError::Start("listen addresses did not come up".into()))??;
        // A listener on 0.0.0.0 reports an address per interface: take the ones already known.
        while let Some(Some(event)) = swarm.next().now_or_never() {
            match event {
                SwarmEvent::NewListenAddr { address, .. } => listen.push(address),
                other => early.push(other),
            }
        }
        for topic in &config.flood.topics {
            if netstatus::is_reserved(topic) {
                return Err(reserved(topic));
            }
            swarm.behaviour_mut().flood.subscribe(topic)?;
        }
        // Every node takes the network-wide status seqs.
        swarm
            .behaviour_mut()
            .flood
            .subscribe(netstatus::STATUS_TOPIC)?;
        sync_topics(&mut swarm);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let shares = Shares::default();
        let network = NetworkStatus::new(&swarm);
        let mut runner = Runner {
            swarm,
            commands: commands.downgrade(),
            command_rx,
            events: event_tx,
            requests: HashMap::new(),
            shares: shares.clone(),
            metrics,
            sampler: sampler(),
            route_dial: config.route.dial,
            network,
            network_tick: tokio::time::interval_at(
                tokio::time::Instant::now() + NETWORK_TICK,
                NETWORK_TICK,
            ),
        };
        for event in early {
            runner.on_swarm_event(event);
        }
        tokio::spawn(runner.run());
        Ok(Node {
            node_id: key.node_id().clone(),
            listen,
            commands,
            events: Some(events),
            shares: shares.clone(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The addresses the node listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// The stream of events; `None` after the first call (there is one stream per node).
    ///
    /// Read it: at most 16 384 events wait, shared fairly among the connected peers that
    /// caused them, and one share for all other nodes together (origins of messages from
    /// further away): with `n` of these holding events, each may hold `1/(n + 1)` of the
    /// queue. Events past a share or the queue's end are dropped and counted
    /// ([`PeerInfo::dropped_events`], [`NodeStats::dropped_events`]); a dropped request is
    /// answered "no response".
    pub fn events(&mut self) -> Option<impl Stream<Item = NodeEvent> + Send + Unpin + 'static> {
        let shares = self.shares.clone();
        self.events.take().map(|rx| {
            tokio_stream_of(rx).map(move |(holder, event)| {
                shares.give_back(holder.as_ref());
                event
            })
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Sends a request to `node` for `module`; resolves with the reply.
    pub async fn request(
        &self,
        node: &NodeId,
        module: u16,
        payload: Bytes,
    ) -> Result<Bytes, NodeError> {
        self.call(|r| Command::Request(node.clone(), module, payload, r))
            .await
    }

    /// Sends a one-way message to `node` for `module`: over a direct connection, or a routed
    /// one (opened if need be) when the node is reachable only through others. Fails at once
    /// with `unreachable` when there is neither a connection nor a path.
    pub async fn oneway(
        &self,
        node: &NodeId,
        module: u16,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        self.call(|r| Command::Oneway(node.clone(), module, payload, r))
            .await
    }

    /// Sends `payload` to every reachable subscriber of `topic`.
    pub async fn multicast(&self, topic: &str, payload: Bytes) -> Result<MessageId, NodeError> {
        self.call(|r| Command::Publish(Some(topic.to_string()), payload, r))
            .await
    }

    /// Sends `payload` to every reachable node.
    pub async fn broadcast(&self, payload: Bytes) -> Result<MessageId, NodeError> {
        self.call(|r| Command::Publish(None, payload, r)).await
    }

    /// Sends a request to one subscriber of `topic`, chosen at random among the nearest
    /// (direct peers first; with `[route] dial`, any reachable subscriber, over a routed
    /// connection), trying another when one fails (FISCO's AMOP unicast); resolves with the
    /// subscriber and its reply. No subscriber: [`NodeError::TopicNotFound`].
    pub async fn topic_request(
        &self,
        topic: &str,
        module: u16,
        payload: Bytes,
    ) -> Result<(NodeId, Bytes), NodeError> {
        self.call(|r| Command::TopicRequest(topic.to_string(), module, payload, r))
            .await
    }

    /// Subscribes to `topic`; false if already subscribed.
    pub async fn subscribe(&self, topic: &str) -> Result<bool, NodeError> {
        self.call(|r| Command::Subscribe(topic.to_string(), true, r))
            .await
    }

    /// Unsubscribes from `topic`; false if not subscribed.
    pub async fn unsubscribe(&self, topic: &str) -> Result<bool, NodeError> {
        self.call(|r| Command::Subscribe(topic.to_string(), false, r))
            .await
    }

    /// Sets this node's status payload; resolves with the new seq.
    pub async fn set_status(&self, payload: Bytes) -> Result<u64, NodeError> {
        self.call(|r| Command::SetStatus(payload, r)).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        self.call(Command::Peers).await
    }

    /// The other nodes this node reaches through flood links, directly or over several hops,
    /// as its view of the network says (see [`Node::peers`] for direct connections).
    pub async fn reachable(&self) -> Result<Vec<NodeId>, NodeError> {
        self.call(Command::Reachable).await
    }

    /// Every other node reachable now, as the view says: hops on the shortest path, whether
    /// this node has a connection to it (direct or routed), and its status seq and status as
    /// known network-wide (see [`crate::netstatus`]).
    pub async fn network(&self) -> Result<Vec<NetworkNode>, NodeError> {
        self.call(Command::Network).await
    }

    /// The whole network as this node's flood records describe it: every node, its topics,
    /// the links between them, and which are connected to this node (see [`crate::view`]).
    pub async fn view(&self) -> Result<NetworkView, NodeError> {
        self.call(Command::View).await
    }

    /// What the node's protocols did since it started: counters and traffic per protocol.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.call(Command::Stats).await
    }

    /// Refuses `node` from now on and closes its sessions; false if it was already denied.
    pub async fn deny(&self, node: &NodeId) -> Result<bool, NodeError> {
        self.call(|r| Command::Deny(node.clone(), r)).await
    }

    /// Accepts `node` again (takes it off the deny list; adds it to the allow list when one
    /// is in use); false if nothing changed.
    pub async fn allow(&self, node: &NodeId) -> Result<bool, NodeError> {
        self.call(|r| Command::Allow(node.clone(), r)).await
    }

    /// Dials `addr` now and keeps it connected from then on, like an address of the config's
    /// `[network] peers` (it may end in `/p2p/<PeerId>`); adding a known address redials it now
    /// if it is not connected.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.call(|r| Command::AddPeer(addr, r)).await
    }

    /// Replaces the configured peers, the deny/allow lists and the CRLs (see
    /// [`connection::Reload`]): all of them or, when any is invalid, none
    /// ([`NodeError::Reload`]). Sessions now refused close at once, new peers are dialled,
    /// removed ones are no longer redialled (their open connections stay).
    pub async fn reload(
        &self,
        settings: connection::Reload,
    ) -> Result<connection::Reloaded, NodeError> {
        self.call(|r| Command::Reload(Box::new(settings), r)).await
    }

    /// Stops the node: closes its connections (waiting up to 2 s for peers to see a clean
    /// close) and ends its task. Later calls on any handle fail with [`NodeError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.call(Command::Shutdown).await
    }
}

fn tokio_stream_of(mut rx: mpsc::Receiver<Queued>) -> impl Stream<Item = Queued> + Send + Unpin {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Publishes the flood subscriptions in the status record too (peers see a node's topics there).
fn sync_topics(swarm: &mut Swarm<Behaviour>) {
    let b = swarm.behaviour_mut();
    let topics: Vec<String> = b
        .flood
        .subscriptions()
        .filter(|t| !netstatus::is_reserved(t))
        .map(str::to_string)
        .collect();
    if let Err(e) = b.status.set_topics(topics) {
        tracing::warn!(error = %e, "topics not published in the status");
    }
}

/// The error for a reserved topic name.
fn reserved(topic: &str) -> NodeError {
    NodeError::from(flood::FloodError::InvalidTopic(format!(
        "`{topic}` is reserved (names starting with `{}`)",
        netstatus::RESERVED_PREFIX
    )))
}

/// Ticks every [`SAMPLE_INTERVAL`]; a busy node skips ticks rather than catching up.
fn sampler() -> tokio::time::Interval {
    let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

enum Pending {
    Request(Reply<Bytes>),
    Topic {
        topic: String,
        module: u16,
        payload: Bytes,
        node: NodeId,
        tried: HashSet<NodeId>,
        reply: Reply<(NodeId, Bytes)>,
    },
}

struct Runner {
    swarm: Swarm<Behaviour>,
    /// For responders. Weak: the node stops when the application has dropped every handle,
    /// and the task's own sender must not keep it alive.
    commands: mpsc::WeakSender<Command>,
    command_rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<Queued>,
    requests: HashMap<RequestId, Pending>,
    /// The peers' shares of `events` (see [`crate::event_shares`]).
    shares: Shares,
    metrics: Option<Metrics>,
    /// When to copy the protocols' counters into `metrics` (ticks only while it is set).
    sampler: tokio::time::Interval,
    /// Whether requests may go over routed connections (`[route] dial`): topic requests then
    /// choose among every reachable subscriber.
    route_dial: bool,
    /// Status seqs and statuses of every reachable node.
    network: NetworkStatus,
    /// Re-announces this node's seq and prunes the nodes gone.
    network_tick: tokio::time::Interval,
}

/// How often [`Runner::network_tick`] runs.
const NETWORK_TICK: Duration = Duration::from_secs(5);

impl Runner {
    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.command_rx.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.close_all().await;
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => return,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = self.network_tick.tick() => self.network.tick(&mut self.swarm),
                _ = self.sampler.tick(), if self.metrics.is_some() => {
                    if let Some(m) = &self.metrics {
                        m.sample(self.swarm.behaviour());
                    }
                }
            }
        }
    }

    /// Closes every connection cleanly (peers see a close, not a reset), waiting at most 2 s.
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = self.swarm.select_next_some() => {}
                _ = &mut deadline => break,
            }
        }
    }

    /// Queues `event` for the application, within its source's share of the queue (see
    /// [`crate::event_shares`]); drops and counts it beyond.
    fn emit(&mut self, event: NodeEvent) {
        let warn = |event: &NodeEvent, why: &str, dropped: u64| {
            if dropped.is_power_of_two() {
                let from = event_shares::source(event).map(NodeId::short);
                tracing::warn!(dropped, ?from, ?event, "dropping a node event: {why}");
            }
        };
        let unicast = &self.swarm.behaviour().unicast;
        let holder = Holder::of(&event, |node| unicast.has_named_connection(node));
        if !self.shares.take(holder.as_ref(), &event, EVENT_QUEUE) {
            let why = "its holder has its whole share of the queue";
            return warn(&event, why, self.shares.dropped_total());
        }
        match self.events.try_send((holder, event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((holder, event))) => {
                self.shares.give_back(holder.as_ref());
                self.shares.dropped_whole(&event);
                let why = "the application is not reading node events";
                warn(&event, why, self.shares.dropped_total());
            }
            Err(mpsc::error::TrySendError::Closed((holder, _))) => {
                self.shares.give_back(holder.as_ref())
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let b = self.swarm.behaviour_mut();
        match command {
            Command::Request(node, module, payload, reply) => {
                let id = b.unicast.send_request(&node, module, payload);
                self.requests.insert(id, Pending::Request(reply));
            }
            Command::Oneway(node, module, payload, reply) => {
                // A one-way message has no outcome to wait for: one to a node with no
                // connection and no path fails now rather than after a routed dial.
                let result = if self.route_dial
                    && !b.unicast.is_connected(&node)
                    && !b.flood.reachable().contains(&node)
                {
                    Err(UnicastError::Unreachable(
                        "no connection and no path in the link-state view".into(),
                    ))
                } else {
                    b.unicast.send_oneway(&node, module, payload)
                };
                let _ = reply.send(result.map_err(NodeError::from));
            }
            Command::Publish(Some(t), _, reply) if netstatus::is_reserved(&t) => {
                let _ = reply.send(Err(reserved(&t)));
            }
            Command::TopicRequest(t, _, _, reply) if netstatus::is_reserved(&t) => {
                let _ = reply.send(Err(reserved(&t)));
            }
            Command::Subscribe(t, _, reply) if netstatus::is_reserved(&t) => {
                let _ = reply.send(Err(reserved(&t)));
            }
            Command::Publish(topic, payload, reply) => {
                let result = match topic {
                    Some(t) => b.flood.multicast(&t, payload),
                    None => b.flood.broadcast(payload),
                };
                let _ = reply.send(result.map_err(NodeError::from));
            }
            Command::TopicRequest(topic, module, payload, reply) => {
                self.topic_request(topic, module, payload, HashSet::new(), reply, None)
            }
            Command::Subscribe(topic, on, reply) => {
                let result = if on {
                    b.flood.subscribe(&topic)
                } else {
                    b.flood.unsubscribe(&topic)
                };
                if matches!(result, Ok(true)) {
                    sync_topics(&mut self.swarm);
                }
                let _ = reply.send(result.map_err(NodeError::from));
            }
            Command::SetStatus(payload, reply) => {
                let result = b.status.set_status(payload).map_err(NodeError::from);
                if result.is_ok() {
                    self.network.status_set(&mut self.swarm);
                }
                let _ = reply.send(result);
            }
            Command::Reachable(reply) => {
                let _ = reply.send(Ok(b.flood.reachable()));
            }
            Command::Network(reply) => {
                let me = b.flood.local_node().clone();
                let nodes = b
                    .flood
                    .distances()
                    .into_iter()
                    .filter(|(n, _)| *n != me)
                    .map(|(node, hops)| NetworkNode {
                        routed: b.connection.is_routed(&node),
                        status: self.network.of(&node),
                        hops,
                        node,
                    })
                    .collect();
                let _ = reply.send(Ok(nodes));
            }
            Command::View(reply) => {
                let _ = reply.send(Ok(NetworkView::of(b)));
            }
            Command::Stats(reply) => {
                let _ = reply.send(Ok(NodeStats {
                    flood: b.flood.stats(),
                    status: b.status.stats(),
                    unicast_traffic: TrafficStats::of(b.unicast.counters().traffic()),
                    flood_traffic: TrafficStats::of(&b.flood.traffic()),
                    status_traffic: TrafficStats::of(&b.status.traffic()),
                    dropped_events: self.shares.dropped_total(),
                }));
            }
            Command::Peers(reply) => {
                let routes: HashMap<NodeId, Vec<NodeId>> = b.route.routed().into_iter().collect();
                let peers = b
                    .connection
                    .connected()
                    .into_iter()
                    .map(|(node, addr)| {
                        let (bytes_in, bytes_out) = b.connection.bytes(&node).unwrap_or_default();
                        PeerInfo {
                            status_seq: b.status.status_of(&node).map(Status::seq),
                            rtt: b.connection.rtt(&node),
                            relays: b
                                .connection
                                .is_routed(&node)
                                .unwrap_or(false)
                                .then(|| routes.get(&node).cloned().unwrap_or_default()),
                            bytes_in,
                            bytes_out,
                            dropped_events: self.shares.dropped(&node),
                            node,
                            addr,
                        }
                    })
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::Deny(node, reply) => {
                let _ = reply.send(Ok(b.connection.deny(node)));
            }
            Command::Allow(node, reply) => {
                let _ = reply.send(Ok(b.connection.allow(node)));
            }
            Command::AddPeer(addr, reply) => {
                b.connection.add_peer(addr);
                let _ = reply.send(Ok(()));
            }
            Command::Reload(settings, reply) => {
                let result = b.connection.reload(*settings).map_err(NodeError::Reload);
                // New CRLs may revoke members whose chains flood has checked already.
                if result.is_ok() {
                    b.flood.recheck_members();
                }
                let _ = reply.send(result);
            }
            Command::Respond(channel, result) => {
                let sent = match result {
                    Ok(payload) => b.unicast.respond(channel, payload),
                    Err(reason) => b.unicast.respond_error(channel, reason),
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "answer not sent");
                }
            }
            Command::Shutdown(_) => unreachable!("handled by the run loop"),
        }
    }

    /// Sends (or resends) a topic request to a random connected subscriber not yet tried.
    fn topic_request(
        &mut self,
        topic: String,
        module: u16,
        payload: Bytes,
        tried: HashSet<NodeId>,
        reply: Reply<(NodeId, Bytes)>,
        last_error: Option<NodeError>,
    ) {
        let connected: HashSet<NodeId> = self
            .swarm
            .behaviour()
            .connection
            .connected()
            .into_iter()
            .map(|(node, _)| node)
            .collect();
        // A connected subscriber is known from its status (direct, and fresh at once) or from
        // the network-wide flood records.
        let b = self.swarm.behaviour_mut();
        let mut candidates: Vec<NodeId> = b.flood.subscribers(&topic);
        candidates.extend(
            connected
                .iter()
                .filter(|n| b.status.status_of(n).is_some_and(|s| s.has_topic(&topic)))
                .cloned(),
        );
        candidates.sort();
        candidates.dedup();
        // With routed connections any reachable subscriber can be asked; the nearest are
        // preferred (a direct peer is one hop away, others as far as the view's shortest path).
        let routed = self.route_dial;
        candidates.retain(|n| (routed || connected.contains(n)) && !tried.contains(n));
        let distances: HashMap<NodeId, u32> = b.flood.distances().into_iter().collect();
        let hops = |n: &NodeId| match b.connection.is_routed(n) {
            Some(false) => 1,
            _ => distances.get(n).copied().unwrap_or(u32::MAX),
        };
        if let Some(nearest) = candidates.iter().map(hops).min() {
            candidates.retain(|n| hops(n) == nearest);
        }
        if candidates.is_empty() {
            let error = last_error.unwrap_or(NodeError::TopicNotFound(topic));
            let _ = reply.send(Err(error));
            return;
        }
        let node = candidates[rand::random_range(0..candidates.len())].clone();
        let id = self
            .swarm
            .behaviour_mut()
            .unicast
            .send_request(&node, module, payload.clone());
        self.requests.insert(
            id,
            Pending::Topic {
                topic,
                module,
                payload,
                node,
                tried,
                reply,
            },
        );
    }

    fn on_response(&mut self, id: RequestId, result: Result<Bytes, UnicastError>) {
        match self.requests.remove(&id) {
            Some(Pending::Request(reply)) => {
                let _ = reply.send(result.map_err(NodeError::from));
            }
            Some(Pending::Topic {
                topic,
                module,
                payload,
                node,
                mut tried,
                reply,
            }) => match result {
                Ok(answer) => {
                    let _ = reply.send(Ok((node, answer)));
                }
                Err(e) => {
                    tracing::debug!(%node, %topic, error = %e, "topic request failed; trying another subscriber");
                    tried.insert(node);
                    self.topic_request(topic, module, payload, tried, reply, Some(e.into()));
                }
            },
            None => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            m.record(&event);
            if let SwarmEvent::Behaviour(e) = &event {
                m.record_behaviour(e);
            }
        }
        if let SwarmEvent::Behaviour(event) = event {
            self.on_behaviour_event(event);
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Unicast(unicast::Event::Response { id, result }) => {
                self.on_response(id, result)
            }
            BehaviourEvent::Unicast(unicast::Event::Request {
                from,
                module,
                payload,
                channel,
            }) => {
                // No handle left: the node is stopping; dropping the channel answers
                // "no response".
                let Some(commands) = self.commands.upgrade() else {
                    return;
                };
                let responder = Responder { channel, commands };
                self.emit(NodeEvent::Request {
                    from,
                    module,
                    payload,
                    responder,
                });
            }
            BehaviourEvent::Unicast(unicast::Event::Message {
                from,
                module,
                payload,
            }) => self.emit(NodeEvent::Oneway {
                from,
                module,
                payload,
            }),
            BehaviourEvent::Flood(flood::Event::Message {
                origin,
                topic: Some(topic),
                payload,
                ..
            }) if topic.as_str() == netstatus::STATUS_TOPIC => {
                self.network
                    .on_announcement(&mut self.swarm, origin, payload)
            }
            BehaviourEvent::Flood(
                flood::Event::Subscribed { topic, .. } | flood::Event::Unsubscribed { topic, .. },
            ) if netstatus::is_reserved(topic.as_str()) => {}
            BehaviourEvent::Flood(e) => self.emit(NodeEvent::Flood(e)),
            BehaviourEvent::Status(e) => {
                if let status::Event::StatusUpdated { node, status, .. } = &e {
                    self.network.on_status(node.clone(), status.clone());
                }
                self.emit(NodeEvent::Status(e))
            }
            BehaviourEvent::Connection(connection::Event::Connected { node, addr, .. }) => {
                self.emit(NodeEvent::Connected { node, addr })
            }
            BehaviourEvent::Connection(connection::Event::Disconnected {
                node, reason, ..
            }) => self.emit(NodeEvent::Disconnected { node, reason }),
            BehaviourEvent::Connection(connection::Event::Refused { addr, reason, node }) => {
                self.emit(NodeEvent::Refused { addr, reason, node })
            }
            BehaviourEvent::Connection(e) => self.emit(NodeEvent::Connection(e)),
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Route(e) => tracing::debug!(event = ?e, "route"),
        }
    }
}
