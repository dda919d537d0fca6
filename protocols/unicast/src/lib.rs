//! Unicast: requests with replies, and one-way messages, to a node by NodeId
//! (`/bcos/unicast/1.0.0`).
//!
//! This is how consensus, block sync and AMOP talk to one node in FISCO BCOS: send by NodeId
//! with a module id, get the reply matched by sequence number, or a timeout. Every request ends
//! in exactly one [`Event::Response`]: the reply, the peer's error, or a local one
//! ([`UnicastError`]) — never silence.
//!
//! ```no_run
//! use bcos_p2p_unicast::{Behaviour, Event, RequestId};
//!
//! // Send, then handle what the swarm reports.
//! fn ask(unicast: &mut Behaviour, peer: &bcos_p2p_core::NodeId) -> RequestId {
//!     unicast.send_request(peer, 7, bytes::Bytes::from_static(b"ping"))
//! }
//! fn on_event(unicast: &mut Behaviour, event: Event) {
//!     match event {
//!         Event::Request { channel, payload, .. } => {
//!             let _ = unicast.respond(channel, payload); // echo
//!         }
//!         Event::Response { id, result } => println!("{id}: {result:?}"),
//!         Event::Message { from, module, .. } => println!("oneway from {from} for {module}"),
//!     }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
mod compress;
mod counters;
mod handler;
mod incoming;
mod outgoing;
mod pairs;
mod recycle;
mod routed;
pub mod traffic;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bcos_p2p_core::{
    Heard, NodeId, NodeIdBook, Offence, Offences, PrimaryConnections, bandwidth::PathPaces,
};
use bytes::Bytes;
use codec::{Frame, HEADER_LEN};
pub use counters::{Counters, Direction, ModuleStats, Outcome};
use either::Either;
use futures::{FutureExt as _, task::AtomicWaker};
pub use handler::RATE_LIMITED;
use handler::{Command, Handler, HandlerEvent, Settings};
use libp2p_core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandlerSelect, ConnectionId, FromSwarm,
    NetworkBehaviour, StreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
pub use traffic::{Compression, Priority, Traffic};

/// The protocol id: 1.1, messages in parts interleaved by priority, optionally compressed.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/bcos/unicast/1.1.0");
/// The first version, still spoken with peers that do not speak 1.1 (whole messages in order,
/// uncompressed).
pub const PROTOCOL_1_0: StreamProtocol = StreamProtocol::new("/bcos/unicast/1.0.0");
/// The second stream pair of a connection, for high-priority modules: 1.1 frames on streams of
/// their own, so that they never queue behind other modules' parts in the layers below.
pub const PROTOCOL_URGENT: StreamProtocol = StreamProtocol::new("/bcos/unicast-urgent/1.1.0");

/// Settings of the unicast behaviour.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a request may wait for its reply. Default 10 s.
    pub request_timeout: Duration,
    /// Largest frame (11-byte header plus payload), both ways. Default 32 MiB (FISCO's
    /// `allow_max_msg_size`).
    pub max_frame_size: usize,
    /// Most requests in flight: ours per peer (beyond it our sends fail with
    /// [`UnicastError::Busy`]) and the peer's per connection (beyond it they get a `busy`
    /// error). Default 16 384.
    pub max_in_flight: usize,
    /// Most payload bytes of a peer's requests held unanswered per connection (requests beyond
    /// it get a `busy` error), and of those plus the answers not written to it yet (reaching it
    /// stops reading the peer's requests). Bounds what a peer can make this node hold. Default
    /// 64 MiB; never below `max_frame_size`.
    pub max_pending_bytes: usize,
    /// The modules this node serves; requests for others are answered with an error at once.
    pub modules: HashSet<u16>,
    /// Send to a node with no connection by dialling a routed connection to it (through the
    /// route protocol's relays); off: such sends fail with [`UnicastError::NotConnected`].
    /// Default off (the composed node turns it on).
    pub dial_routed: bool,
    /// A routed connection this node dialled that carried no unicast frame for this long (and
    /// has no request of ours waiting) is closed. Default 60 s.
    pub routed_idle_timeout: Duration,
    /// Priorities, chunking, compression and limits.
    pub traffic: Traffic,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(10),
            max_frame_size: 32 << 20,
            max_in_flight: 16_384,
            max_pending_bytes: 64 << 20,
            modules: HashSet::new(),
            dial_routed: false,
            routed_idle_timeout: Duration::from_secs(60),
            traffic: Traffic::default(),
        }
    }
}

impl Config {
    /// The default config serving `modules`.
    pub fn with_modules(modules: impl IntoIterator<Item = u16>) -> Self {
        Config {
            modules: modules.into_iter().collect(),
            ..Config::default()
        }
    }
}

/// Identifies one of our requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a request (or a oneway send) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnicastError {
    /// No connection to the node.
    #[error("not connected to the node")]
    NotConnected,
    /// No reply within the request timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The connection (or its unicast stream) was lost while waiting.
    #[error("connection closed while waiting for the reply")]
    ConnectionClosed,
    /// The peer answered with an error (e.g. no handler for the module, busy).
    #[error("peer error: {0}")]
    Remote(String),
    /// The payload exceeds the frame limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Frame size the payload would need.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many requests in flight to this node; retry later.
    #[error("too many requests in flight to this node")]
    Busy,
    /// No connection to the node, and no routed connection could be opened (no path, relays
    /// refused, or the handshake over the circuit failed).
    #[error("no route to the node: {0}")]
    Unreachable(String),
}

/// What unicast reports to the swarm.
#[derive(Debug)]
pub enum Event {
    /// A node sent a request: answer it with [`Behaviour::respond`] or
    /// [`Behaviour::respond_error`] (dropping the channel answers with an error).
    Request {
        /// The sender.
        from: NodeId,
        /// The module.
        module: u16,
        /// The payload.
        payload: Bytes,
        /// Where the answer goes.
        channel: ResponseChannel,
    },
    /// A node sent a one-way message.
    Message {
        /// The sender.
        from: NodeId,
        /// The module.
        module: u16,
        /// The payload.
        payload: Bytes,
    },
    /// The outcome of one of our requests: exactly one per [`Behaviour::send_request`].
    Response {
        /// The request.
        id: RequestId,
        /// The reply, or why there is none.
        result: Result<Bytes, UnicastError>,
    },
}

/// Channels dropped unanswered, reported back so the peer gets an error, not a timeout.
#[derive(Debug, Default)]
struct Dropped {
    queue: Mutex<Vec<(PeerId, ConnectionId, u64, u64)>>,
    waker: AtomicWaker,
}

/// Where the answer to an inbound request goes. Answer it once; dropping it answers with an
/// error ("no response").
#[derive(Debug)]
pub struct ResponseChannel {
    peer: PeerId,
    connection: ConnectionId,
    id: u64,
    stream: u64,
    dropped: Option<Arc<Dropped>>,
}

impl ResponseChannel {
    fn take(mut self) -> (PeerId, ConnectionId, u64, u64) {
        self.dropped = None;
        (self.peer, self.connection, self.id, self.stream)
    }
}

impl Drop for ResponseChannel {
    fn drop(&mut self) {
        if let Some(d) = self.dropped.take() {
            d.queue.lock().unwrap_or_else(|p| p.into_inner()).push((
                self.peer,
                self.connection,
                self.id,
                self.stream,
            ));
            d.waker.wake();
        }
    }
}

#[derive(Debug)]
struct Pending {
    peer: PeerId,
    connection: ConnectionId,
    deadline: Instant,
}

/// The unicast `NetworkBehaviour`.
pub struct Behaviour {
    config: Config,
    settings: Arc<Settings>,
    node_ids: NodeIdBook,
    /// Which of a peer's connections to send on (see [`Behaviour::set_primaries`]).
    primaries: PrimaryConnections,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// One-way messages handed to each connection's handler and not yet written.
    backlogs: HashMap<ConnectionId, Arc<counters::Backlog>>,
    /// Connections whose peer does not speak the urgent protocol.
    no_urgent: HashSet<ConnectionId>,
    /// NodeId → PeerId of connected peers (deriving a PeerId from a key costs curve arithmetic;
    /// this keeps it off the per-message path).
    peers_by_node: HashMap<NodeId, PeerId>,
    pending: HashMap<u64, Pending>,
    per_peer: HashMap<PeerId, usize>,
    /// Deadlines of pending requests (stale entries are skipped and compacted away).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    timer: Option<futures_timer::Delay>,
    next_id: u64,
    dropped: Arc<Dropped>,
    events: VecDeque<ToSwarm<Event, Either<Command, Command>>>,
    /// Where the peers' offences are reported ([`Behaviour::set_offences`]).
    offences: Offences,
    /// Where each connection's last frame is marked ([`Behaviour::set_heard`]).
    heard: Option<Heard>,
    /// The rates the connections' paths take ([`Behaviour::set_path_paces`]).
    path_paces: Option<Arc<PathPaces>>,
    /// Routed connections, and what waits for them (`routed.rs`).
    routed: routed::Routed,
    idle_timer: futures_timer::Delay,
}

impl Behaviour {
    /// A unicast behaviour. `node_ids` names peers whose PeerId is a key hash (P-256, RSA):
    /// pass the CA-TLS config's book (`ca_tls::Config::node_ids`).
    pub fn new(config: Config, node_ids: NodeIdBook) -> Self {
        let settings = Arc::new(Settings {
            protocol: PROTOCOL_NAME,
            older: vec![PROTOCOL_1_0],
            urgent: PROTOCOL_URGENT,
            max_frame: config.max_frame_size,
            max_inbound_pending: config.max_in_flight,
            max_inbound_pending_bytes: config.max_pending_bytes.max(config.max_frame_size),
            modules: config.modules.clone(),
            counters: Arc::default(),
            traffic: config.traffic.clone(),
            high: Arc::new(
                (config.traffic.priorities.iter())
                    .filter(|(_, p)| **p == traffic::Priority::High)
                    .map(|(m, _)| *m)
                    .collect(),
            ),
        });
        Behaviour {
            config,
            settings,
            node_ids,
            primaries: PrimaryConnections::default(),
            connections: HashMap::new(),
            backlogs: HashMap::new(),
            no_urgent: HashSet::new(),
            peers_by_node: HashMap::new(),
            pending: HashMap::new(),
            per_peer: HashMap::new(),
            deadlines: BinaryHeap::new(),
            timer: None,
            next_id: 1,
            dropped: Arc::default(),
            events: VecDeque::new(),
            offences: Offences::default(),
            heard: None,
            path_paces: None,
            routed: routed::Routed::default(),
            idle_timer: futures_timer::Delay::new(routed::IDLE_CHECK),
        }
    }

    /// Marks in `heard` (the connection manager's handle) when each connection last brought a
    /// frame of this protocol: the manager counts that as a sign of life besides ping.
    /// Default: nothing is marked.
    pub fn set_heard(&mut self, heard: Heard) {
        self.heard = Some(heard);
    }

    /// Paces each connection's modules (exempt ones aside) at the rate `paces` holds for it
    /// (by the peer, or the peer's socket address): the rate the connection's socket finds its
    /// network path takes without a queue building up (bcos-p2p's `paced`). What waits then
    /// waits in unicast's queues, where priority classes take turns, and not in the path's
    /// queue, where a consensus message would wait behind block data. Default: no pacing.
    pub fn set_path_paces(&mut self, paces: Arc<PathPaces>) {
        self.path_paces = Some(paces);
    }

    /// The paces given to [`Behaviour::set_path_paces`], if any (for metrics: how many
    /// connections pace).
    pub fn path_paces(&self) -> Option<Arc<PathPaces>> {
        self.path_paces.clone()
    }

    /// Reports what peers do wrong to `offences` (the connection manager's handle, which may
    /// ban them): malformed frames, and answers to requests never sent on their connection.
    /// Default: a handle nobody reads.
    pub fn set_offences(&mut self, offences: Offences) {
        self.offences = offences;
    }

    /// Sends on the connection `primaries` names when a peer has several (the connection
    /// manager's choice while it closes a duplicate); without it, on the oldest.
    pub fn set_primaries(&mut self, primaries: PrimaryConnections) {
        self.primaries = primaries;
    }

    /// Sends a request to `node` for `module`; the outcome arrives as one [`Event::Response`]
    /// with the returned id.
    pub fn send_request(&mut self, node: &NodeId, module: u16, payload: Bytes) -> RequestId {
        self.send_request_with_timeout(node, module, payload, self.config.request_timeout)
    }

    /// Like [`Behaviour::send_request`] with its own timeout.
    pub fn send_request_with_timeout(
        &mut self,
        node: &NodeId,
        module: u16,
        payload: Bytes,
        timeout: Duration,
    ) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let rid = RequestId(id);
        let peer = self.peer_of(node);
        let result = self
            .check_send(&peer, payload.len())
            .map(Some)
            .or_else(|e| match e {
                UnicastError::NotConnected if self.config.dial_routed => Ok(None),
                e => Err(e),
            })
            .and_then(|connection| {
                if self.per_peer.get(&peer).copied().unwrap_or(0) >= self.config.max_in_flight {
                    return Err(UnicastError::Busy);
                }
                Ok(connection)
            });
        match result {
            Ok(connection) => {
                tracing::trace!(%rid, module, size = payload.len(), "unicast request");
                let frame = Frame::Request {
                    id,
                    module,
                    payload,
                };
                let connection = match connection {
                    Some(c) => {
                        self.route_used(c);
                        self.notify(peer, c, Command::Send(frame));
                        c
                    }
                    None => self.wait_for_route(peer, Some(id), frame),
                };
                let now = Instant::now();
                // A timeout too large to represent means "practically never".
                let deadline = now
                    .checked_add(timeout)
                    .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
                self.pending.insert(
                    id,
                    Pending {
                        peer,
                        connection,
                        deadline,
                    },
                );
                *self.per_peer.entry(peer).or_default() += 1;
                self.push_deadline(deadline, id);
            }
            Err(e) => {
                tracing::debug!(%rid, error = %e, "unicast request failed at once");
                let result = Err(e);
                self.settings
                    .counters
                    .count(Direction::Outbound, Outcome::of(&result));
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::Response { id: rid, result }));
            }
        }
        rid
    }

    /// Sends a one-way message (no reply). Fails at once when the node is not connected, the
    /// payload is too large, or the connection already holds `max_in_flight` one-way messages or
    /// `max_pending_bytes` of them not yet sent ([`UnicastError::Busy`]: the peer does not
    /// read fast enough, or a bandwidth limit holds the module back; try again later).
    pub fn send_oneway(
        &mut self,
        node: &NodeId,
        module: u16,
        payload: Bytes,
    ) -> Result<(), UnicastError> {
        let peer = self.peer_of(node);
        let len = payload.len();
        let frame = Frame::Oneway { module, payload };
        match self.check_send(&peer, len) {
            Ok(connection) => {
                let backlog = self.backlogs.entry(connection).or_default();
                let (queued, bytes) = backlog.get();
                if queued >= self.config.max_in_flight
                    || bytes.saturating_add(len) > self.config.max_pending_bytes
                {
                    return Err(UnicastError::Busy);
                }
                self.route_used(connection);
                self.notify(peer, connection, Command::Send(frame));
            }
            Err(UnicastError::NotConnected) if self.config.dial_routed => {
                // Held until the routed connection is up: bounded by count and by bytes.
                let (queued, bytes) = self
                    .routed
                    .waiting
                    .get(&peer)
                    .map_or((0, 0), |w| (w.frames.len(), w.oneway_bytes));
                if queued >= self.config.max_in_flight
                    || bytes.saturating_add(len) > self.config.max_pending_bytes
                {
                    return Err(UnicastError::Busy);
                }
                self.wait_for_route(peer, None, frame);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Answers a request.
    pub fn respond(
        &mut self,
        channel: ResponseChannel,
        payload: Bytes,
    ) -> Result<(), UnicastError> {
        let size = HEADER_LEN + payload.len();
        if size > self.config.max_frame_size {
            // The requester must not hang: tell it why instead.
            let reason = format!("response of {size} bytes exceeds the limit");
            self.answer(channel, Err(reason))?;
            return Err(UnicastError::TooLarge {
                size,
                limit: self.config.max_frame_size,
            });
        }
        self.answer(channel, Ok(payload))
    }

    /// Answers a request with an error the requester sees as [`UnicastError::Remote`].
    pub fn respond_error(
        &mut self,
        channel: ResponseChannel,
        reason: impl Into<String>,
    ) -> Result<(), UnicastError> {
        self.answer(channel, Err(reason.into()))
    }

    /// Frames, bytes and request outcomes so far: a live, shared counter (keep the `Arc` and
    /// read it at any time, e.g. from a metrics scrape).
    pub fn counters(&self) -> Arc<Counters> {
        self.settings.counters.clone()
    }

    /// Whether a connection to `node` is up, as far as this behaviour has named its peers: one
    /// map lookup, no key parsing (for per-message checks; see [`Behaviour::is_connected`]).
    pub fn has_named_connection(&self, node: &NodeId) -> bool {
        self.peers_by_node.contains_key(node)
    }

    /// Whether a connection to `node` (direct or routed) is up.
    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.connections.contains_key(&self.peer_of(node))
    }

    /// Requests in flight (sent, not yet answered or failed).
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    fn answer(
        &mut self,
        channel: ResponseChannel,
        result: Result<Bytes, String>,
    ) -> Result<(), UnicastError> {
        let (peer, connection, id, stream) = channel.take();
        let counters = &self.settings.counters;
        if !self
            .connections
            .get(&peer)
            .is_some_and(|c| c.contains(&connection))
        {
            counters.count(Direction::Inbound, Outcome::Closed);
            return Err(UnicastError::ConnectionClosed);
        }
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(_) => Outcome::Error,
        };
        counters.count(Direction::Inbound, outcome);
        self.route_used(connection);
        self.notify(peer, connection, Command::Respond { id, stream, result });
        Ok(())
    }

    fn peer_of(&self, node: &NodeId) -> PeerId {
        self.peers_by_node
            .get(node)
            .copied()
            .unwrap_or_else(|| node.to_peer_id())
    }

    /// The connection to send on, or why not.
    fn check_send(&self, peer: &PeerId, payload_len: usize) -> Result<ConnectionId, UnicastError> {
        let size = HEADER_LEN + payload_len;
        if size > self.config.max_frame_size {
            return Err(UnicastError::TooLarge {
                size,
                limit: self.config.max_frame_size,
            });
        }
        self.connections
            .get(peer)
            .and_then(|c| self.primaries.pick(peer, c))
            .ok_or(UnicastError::NotConnected)
    }

    fn push_deadline(&mut self, deadline: Instant, id: u64) {
        // Keep the heap O(pending): drop answered requests' entries once they dominate.
        if self.deadlines.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.deadlines
                .retain(|Reverse((_, id))| pending.contains_key(id));
        }
        let earliest = self.deadlines.peek().map(|Reverse((d, _))| *d);
        self.deadlines.push(Reverse((deadline, id)));
        if earliest.is_none_or(|e| deadline < e) {
            self.timer = Some(futures_timer::Delay::new(
                deadline.saturating_duration_since(Instant::now()),
            ));
        }
    }

    /// Tells the handler to forget request `id` (so it is neither sent late nor waited for).
    fn cancel(&mut self, peer: PeerId, connection: ConnectionId, id: u64) {
        if self
            .connections
            .get(&peer)
            .is_some_and(|c| c.contains(&connection))
        {
            self.notify(peer, connection, Command::Cancel(id));
        }
    }

    /// Ends request `id` with `result`, if it is still pending.
    fn finish(&mut self, id: u64, result: Result<Bytes, UnicastError>) {
        if let Some(p) = self.pending.remove(&id) {
            if let Some(n) = self.per_peer.get_mut(&p.peer) {
                *n -= 1;
                if *n == 0 {
                    self.per_peer.remove(&p.peer);
                }
            }
            if let Err(e) = &result {
                tracing::debug!(id, error = %e, "unicast request failed");
            }
            self.settings
                .counters
                .count(Direction::Outbound, Outcome::of(&result));
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::Response {
                    id: RequestId(id),
                    result,
                }));
        }
    }

    /// Fails every pending request sent on `connection`.
    fn fail_connection(&mut self, connection: ConnectionId) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.connection == connection)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.finish(id, Err(UnicastError::ConnectionClosed));
        }
    }

    fn expire(&mut self, cx: &mut Context<'_>) {
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            let now = Instant::now();
            if deadline > now {
                let mut timer = futures_timer::Delay::new(deadline - now);
                if timer.poll_unpin(cx).is_ready() {
                    continue;
                }
                self.timer = Some(timer);
                return;
            }
            self.deadlines.pop();
            if let Some(p) = self.pending.get(&id).filter(|p| p.deadline == deadline) {
                let (peer, connection) = (p.peer, p.connection);
                tracing::debug!(id, "unicast request timed out");
                self.finish(id, Err(UnicastError::Timeout));
                self.cancel(peer, connection, id);
            }
        }
        self.timer = None;
    }
}

/// A connection's handler: the main stream pair and the urgent one.
pub type PairHandlers = ConnectionHandlerSelect<Handler, Handler>;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = PairHandlers;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(connection, peer, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(connection, peer, addr))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .push(e.connection_id);
                if let Some(node) = self.node_ids.resolve(&e.peer_id) {
                    self.peers_by_node.insert(node, e.peer_id);
                }
                self.route_established(e.peer_id, e.connection_id, e.endpoint);
            }
            FromSwarm::DialFailure(e) => {
                self.route_failed(e.peer_id, e.connection_id, routed::dial_reason(e.error))
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                self.backlogs.remove(&connection_id);
                self.no_urgent.remove(&connection_id);
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|c| *c != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                        self.peers_by_node.retain(|_, p| *p != peer_id);
                    }
                }
                self.routed.used.remove(&connection_id);
                self.fail_connection(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = event.into_inner();
        if matches!(
            event,
            HandlerEvent::Response { .. }
                | HandlerEvent::Request { .. }
                | HandlerEvent::Oneway { .. }
        ) {
            self.route_used(connection);
        }
        match event {
            HandlerEvent::Response { id, result } => {
                // Only the connection the request went out on may answer it: ids are easy to
                // guess, and another peer must not complete our requests.
                if self
                    .pending
                    .get(&id)
                    .is_some_and(|p| p.connection == connection)
                {
                    self.finish(id, result.map_err(UnicastError::Remote));
                } else {
                    // A late answer to a request that timed out is honest; one to an id never
                    // sent, or sent on another connection, is not.
                    if id >= self.next_id || self.pending.contains_key(&id) {
                        self.offences.report(peer, Offence::Unsolicited);
                    }
                    tracing::debug!(%peer, id, "ignoring an answer to a request not pending on this connection");
                }
            }
            HandlerEvent::InboundViolation => self.offences.report(peer, Offence::Malformed),
            HandlerEvent::OutboundFailed(reason, lost) => {
                if reason.is_violation() {
                    self.offences.report(peer, Offence::Malformed);
                }
                tracing::debug!(%peer, %reason, "unicast stream lost");
                for id in lost {
                    if self
                        .pending
                        .get(&id)
                        .is_some_and(|p| p.connection == connection)
                    {
                        self.finish(id, Err(UnicastError::ConnectionClosed));
                    }
                }
            }
            HandlerEvent::NoUrgent(frames) => self.urgent_refused(peer, connection, frames),
            HandlerEvent::Request {
                id,
                stream,
                module,
                payload,
            } => {
                let channel = ResponseChannel {
                    peer,
                    connection,
                    id,
                    stream,
                    dropped: Some(self.dropped.clone()),
                };
                match self.node_ids.resolve(&peer) {
                    Some(from) => self
                        .events
                        .push_back(ToSwarm::GenerateEvent(Event::Request {
                            from,
                            module,
                            payload,
                            channel,
                        })),
                    None => {
                        let _ = self.respond_error(channel, "unknown sender identity");
                    }
                }
            }
            HandlerEvent::Oneway { module, payload } => match self.node_ids.resolve(&peer) {
                Some(from) => self
                    .events
                    .push_back(ToSwarm::GenerateEvent(Event::Message {
                        from,
                        module,
                        payload,
                    })),
                None => tracing::debug!(%peer, "dropping a oneway message from an unnamed peer"),
            },
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.dropped.waker.register(cx.waker());
        let dropped =
            std::mem::take(&mut *self.dropped.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for (peer, connection, id, stream) in dropped {
            let channel = ResponseChannel {
                peer,
                connection,
                id,
                stream,
                dropped: None,
            };
            let _ = self.answer(channel, Err("no response".into()));
        }
        if let Some(timer) = &mut self.timer
            && timer.poll_unpin(cx).is_ready()
        {
            self.expire(cx);
        }
        while self.idle_timer.poll_unpin(cx).is_ready() {
            self.idle_timer = futures_timer::Delay::new(routed::IDLE_CHECK);
            if !self.routed.used.is_empty() {
                self.close_idle_routes();
            }
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use bcos_p2p_core::{KeyType, NodeKey};

    use super::*;

    /// An answer to an id this node never sent is reported as unsolicited; a late answer to a
    /// request that already ended (a timeout, say) is honest and is not.
    #[test]
    fn answers_to_ids_never_sent_are_reported_late_ones_are_not() {
        let mut b = Behaviour::new(Config::default(), NodeIdBook::default());
        let offences = Offences::default();
        b.set_offences(offences.clone());
        let node = NodeKey::generate(KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .clone();
        let peer = node.to_peer_id();
        let connection = ConnectionId::new_unchecked(1);
        // Not connected: the request ends at once, as a timed-out one would.
        let ended = b.send_request(&node, 1, Bytes::from_static(b"q"));
        let answer = |id: u64| HandlerEvent::Response {
            id,
            result: Ok(Bytes::from_static(b"a")),
        };
        b.on_connection_handler_event(peer, connection, Either::Left(answer(ended.0)));
        let unsolicited = || offences.totals()[Offence::Unsolicited.index()];
        assert_eq!(unsolicited(), 0, "a late answer is honest");
        b.on_connection_handler_event(peer, connection, Either::Left(answer(ended.0 + 1000)));
        assert_eq!(unsolicited(), 1);
        b.on_connection_handler_event(
            peer,
            connection,
            Either::Right(HandlerEvent::InboundViolation),
        );
        assert_eq!(offences.totals()[Offence::Malformed.index()], 1);
    }
}
