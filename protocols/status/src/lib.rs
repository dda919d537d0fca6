//! Status sync (`/bcos/status/1.0.0`): every node keeps a [`Status`], announces its
//! `(incarnation, seq)` to its peers, and asks a peer for its full status only when the pair it
//! announces differs from the one held.
//!
//! This is FISCO BCOS's state sync — how nodes learn each other's block height, topics and
//! roles — made push-driven: a change is announced at once, so it is seen everywhere within a
//! round trip or two instead of a polling period, while the periodic announcement (17-byte
//! frames, default every 5 s) only repairs what was lost. Queries are never repeated for a
//! pair already asked for or held, so repeated announcements cost no requests.
//!
//! The table holds connected peers only: an entry appears when a peer's status first arrives
//! and is **removed** when the last connection to the peer closes ([`Event::PeerGone`]). A
//! restarted peer gets a new incarnation and counts from seq 1 again; any change of incarnation
//! counts as new, so it is re-learned even while an old connection lingers.
//!
//! ```no_run
//! use bcos_p2p_status::{Behaviour, Event};
//!
//! fn on_event(status: &mut Behaviour, event: Event) {
//!     match event {
//!         Event::StatusUpdated { node, seq, payload, .. } => {
//!             println!("{node} is at seq {seq}: {} bytes", payload.len())
//!         }
//!         Event::PeerGone { node } => println!("{node} left"),
//!     }
//!     // Tell everyone our new block height.
//!     let _ = status.set_status(bytes::Bytes::from_static(b"height=42"));
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
mod status;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bcos_p2p_core::{
    Heard, NodeId, NodeIdBook, Offence, Offences,
    link::{Handler, Link, LinkCommand, LinkConfig, LinkEvent, Queue},
    stream_pair::{CloseReason, Traffic},
};
use bytes::Bytes;
use codec::{FRAME_OVERHEAD, Message};
use futures::FutureExt as _;
use libp2p_core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm, ListenFailure,
    NetworkBehaviour, NotifyHandler, StreamProtocol, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
pub use status::{MAX_MODULES, MAX_TOPIC_LEN, MAX_TOPICS, MAX_VERSION_LEN, Status, StatusError};

/// The protocol id.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/bcos/status/1.0.0");

/// Frames queued per connection at most; announcements are tiny and a peer has at most one
/// query and one response in flight, so this is only reached by a stalled peer.
const QUEUE_FRAMES: usize = 64;

/// Settings of the status behaviour.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often our `(incarnation, seq)` is announced to every peer even without a change.
    /// Changes are announced at once, so this only repairs what was lost. Default 5 s (at
    /// least 1 ms is used): a 17-byte frame per peer each way, about 20 bytes per link per
    /// second on the wire.
    pub announce_interval: Duration,
    /// Largest application payload, ours and the peers' (larger statuses from peers close their
    /// stream). Default 1 MiB.
    pub max_payload: usize,
    /// How long an unanswered query blocks the next one to the same peer. Default 5 s.
    pub query_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            announce_interval: Duration::from_secs(5),
            max_payload: 1 << 20,
            query_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// The largest frame either way for this config: a status with a full payload and
    /// built-in fields at their limits.
    pub fn max_frame(&self) -> usize {
        self.max_payload.saturating_add(FRAME_OVERHEAD)
    }
}

/// What the status behaviour reports to the swarm.
#[derive(Debug, Clone)]
pub enum Event {
    /// A peer's status arrived: the first one, a newer seq, or a new incarnation.
    StatusUpdated {
        /// The peer.
        node: NodeId,
        /// Its seq (within `status.incarnation()`).
        seq: u64,
        /// Its application payload.
        payload: Bytes,
        /// The whole record (topics, modules, version, incarnation).
        status: Arc<Status>,
    },
    /// The last connection to a peer closed; its table entry was removed.
    PeerGone {
        /// The peer.
        node: NodeId,
    },
}

/// Counters since the behaviour was created, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Announcements queued for sending.
    pub announces_sent: u64,
    /// Announcements received.
    pub announces_received: u64,
    /// Queries queued for sending.
    pub queries_sent: u64,
    /// Queries received.
    pub queries_received: u64,
    /// Status responses queued for sending.
    pub responses_sent: u64,
    /// Status responses accepted into the table.
    pub responses_accepted: u64,
    /// Status responses ignored because the table already held the same or a newer status, or
    /// because their incarnation was not the one last announced.
    pub responses_stale: u64,
    /// Status responses ignored because no query to that peer was in flight.
    pub responses_unsolicited: u64,
    /// Queries that got no answer within [`Config::query_timeout`].
    pub query_timeouts: u64,
    /// Peer streams closed over malformed or oversize frames.
    pub malformed: u64,
    /// Frames not sent because the connection's queue was full.
    pub queue_full: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbound {
    /// Requested on connect, not yet open (frames sent now wait for it).
    Opening,
    Open,
    /// Failed; sending reopens it.
    Lost,
    /// The peer does not speak the protocol.
    Unsupported,
}

#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    queue: Arc<Queue>,
    outbound: Outbound,
}

#[derive(Debug)]
struct InFlight {
    connection: ConnectionId,
    deadline: Instant,
}

/// `(incarnation, seq)`.
type Version = (u64, u64);

/// What we hold about one connected peer. Bounded: its connections, two pairs, one query and
/// one status (itself bounded by the frame limit).
#[derive(Debug)]
struct Peer {
    peer_id: PeerId,
    connections: Vec<Connection>,
    /// The newest pair the peer announced (or answered with), and where it came from.
    announced: Option<(Version, ConnectionId)>,
    known: Option<Arc<Status>>,
    in_flight: Option<InFlight>,
    /// A pair whose status we refused (oversize, malformed): not asked for again.
    rejected: Option<Version>,
}

impl Peer {
    fn known_version(&self) -> Option<Version> {
        self.known.as_ref().map(|s| (s.incarnation, s.seq))
    }

    fn announced_version(&self) -> Option<Version> {
        self.announced.map(|(v, _)| v)
    }

    /// Records `v` if it is news: another incarnation, or a higher seq in the same one.
    fn saw(&mut self, v: Version, on: ConnectionId) {
        if self
            .announced_version()
            .is_none_or(|(i, s)| i != v.0 || s < v.1)
        {
            self.announced = Some((v, on));
        }
    }

    /// The connection to send on: `hint` if usable, else the first with an open stream, else
    /// any that may still open one.
    fn connection(&self, hint: Option<ConnectionId>) -> Option<&Connection> {
        let usable = |c: &&Connection| c.outbound != Outbound::Unsupported;
        hint.and_then(|h| self.connections.iter().find(|c| c.id == h))
            .filter(usable)
            .or_else(|| {
                self.connections
                    .iter()
                    .find(|c| c.outbound == Outbound::Open)
            })
            .or_else(|| self.connections.iter().find(usable))
    }
}

/// The status `NetworkBehaviour`.
pub struct Behaviour {
    config: Config,
    link: Arc<LinkConfig<Message>>,
    node_ids: NodeIdBook,
    local: Status,
    announce_frame: Bytes,
    /// Our status as a response frame, encoded on the first query after a change.
    status_frame: Option<Bytes>,
    peers: HashMap<NodeId, Peer>,
    nodes: HashMap<PeerId, NodeId>,
    /// Queues of handlers created for connections not yet established.
    new_queues: HashMap<ConnectionId, Arc<Queue>>,
    next_announce: Instant,
    /// One timer for both the periodic announcement and query deadlines, set for `timer_at`.
    timer: futures_timer::Delay,
    timer_at: Instant,
    stats: Stats,
    events: VecDeque<ToSwarm<Event, LinkCommand>>,
    /// Where the peers' offences are reported ([`Behaviour::set_offences`]).
    offences: Offences,
    /// Where each connection's last frame is marked ([`Behaviour::set_heard`]).
    heard: Option<Heard>,
}

impl Behaviour {
    /// A status behaviour whose status is seq 1 with an empty payload, under a new incarnation
    /// (the creation time in Unix nanoseconds). `node_ids` names peers whose PeerId is a key
    /// hash (P-256, RSA): pass the CA-TLS config's book (`ca_tls::Config::node_ids`).
    pub fn new(mut config: Config, node_ids: NodeIdBook) -> Self {
        config.announce_interval = config.announce_interval.max(Duration::from_millis(1));
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .max(1);
        let local = Status::new(incarnation, 1);
        let link = Arc::new(LinkConfig {
            protocol: PROTOCOL_NAME,
            max_frame: config.max_frame(),
            max_queue_frames: QUEUE_FRAMES,
            max_queue_bytes: config.max_frame().saturating_mul(2),
            decode: codec::decode,
            traffic: Arc::default(),
        });
        let next_announce = Instant::now() + config.announce_interval;
        Behaviour {
            timer: futures_timer::Delay::new(config.announce_interval),
            announce_frame: announce(&local),
            config,
            link,
            node_ids,
            local,
            status_frame: None,
            peers: HashMap::new(),
            nodes: HashMap::new(),
            new_queues: HashMap::new(),
            next_announce,
            timer_at: next_announce,
            stats: Stats::default(),
            events: VecDeque::new(),
            offences: Offences::default(),
            heard: None,
        }
    }

    /// Marks in `heard` (the connection manager's handle) when each connection last brought a
    /// frame of this protocol: the manager counts that as a sign of life besides ping.
    /// Default: nothing is marked.
    pub fn set_heard(&mut self, heard: Heard) {
        self.heard = Some(heard);
    }

    /// Reports peers that send malformed frames to `offences` (the connection manager's
    /// handle, which may ban them). Default: a handle nobody reads.
    pub fn set_offences(&mut self, offences: Offences) {
        self.offences = offences;
    }

    /// Our own status.
    pub fn local(&self) -> &Status {
        &self.local
    }

    /// Replaces the application payload; returns the new seq. Always a change (seq + 1,
    /// announced at once), even with the same bytes.
    pub fn set_status(&mut self, payload: Bytes) -> Result<u64, StatusError> {
        let next = self.local.clone().with_payload(payload);
        self.change(next)
    }

    /// Sets the topics this node subscribes to (flood, AMOP); returns the seq, which moves only
    /// if the set changed.
    pub fn set_topics<S: Into<String>>(
        &mut self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<u64, StatusError> {
        let next = self.local.clone().with_topics(topics);
        self.change_if_different(next)
    }

    /// Sets the unicast modules this node serves; returns the seq, which moves only if the set
    /// changed.
    pub fn set_modules(
        &mut self,
        modules: impl IntoIterator<Item = u16>,
    ) -> Result<u64, StatusError> {
        let next = self.local.clone().with_modules(modules);
        self.change_if_different(next)
    }

    /// Sets the version string; returns the seq, which moves only if it changed.
    pub fn set_version(&mut self, version: impl Into<String>) -> Result<u64, StatusError> {
        let next = self.local.clone().with_version(version);
        self.change_if_different(next)
    }

    /// A connected peer's status, once learned.
    pub fn status_of(&self, node: &NodeId) -> Option<&Status> {
        self.peers.get(node)?.known.as_deref()
    }

    /// The statuses of all connected peers learned so far.
    pub fn statuses(&self) -> impl Iterator<Item = (&NodeId, &Status)> {
        self.peers
            .iter()
            .filter_map(|(n, p)| Some((n, p.known.as_deref()?)))
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Frames and bytes moved over all connections, both ways: a live, shared counter (keep
    /// the `Arc` and read it at any time, e.g. from a metrics scrape).
    pub fn traffic(&self) -> Arc<Traffic> {
        self.link.traffic.clone()
    }

    fn change_if_different(&mut self, next: Status) -> Result<u64, StatusError> {
        if next.same_content(&self.local) {
            return Ok(self.local.seq);
        }
        self.change(next)
    }

    fn change(&mut self, mut next: Status) -> Result<u64, StatusError> {
        next.check(self.config.max_payload)?;
        next.seq = self.local.seq + 1;
        self.local = next;
        self.announce_frame = announce(&self.local);
        self.status_frame = None;
        tracing::debug!(seq = self.local.seq, "status changed");
        self.announce_to_all();
        Ok(self.local.seq)
    }

    fn announce_to_all(&mut self) {
        for peer in self.peers.values() {
            if let Some(c) = peer.connection(None)
                && push_frame(
                    &mut self.events,
                    &mut self.stats,
                    peer.peer_id,
                    c,
                    self.announce_frame.clone(),
                )
            {
                self.stats.announces_sent += 1;
            }
        }
    }

    /// Queries `node` if it announced a pair we neither hold, nor asked for, nor refused.
    fn maybe_query(&mut self, node: &NodeId) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        let Some((want, on)) = peer.announced else {
            return;
        };
        if peer.in_flight.is_some()
            || peer.known_version() == Some(want)
            || peer.rejected == Some(want)
        {
            return;
        }
        // Ask where it was announced: that connection belongs to the incarnation announced.
        let Some(c) = peer.connection(Some(on)) else {
            return;
        };
        let frame = Message::Query {
            incarnation: want.0,
            seq: want.1,
        }
        .encode();
        if push_frame(&mut self.events, &mut self.stats, peer.peer_id, c, frame) {
            let deadline = Instant::now() + self.config.query_timeout;
            peer.in_flight = Some(InFlight {
                connection: c.id,
                deadline,
            });
            self.stats.queries_sent += 1;
            tracing::trace!(%node, incarnation = want.0, seq = want.1, "status query");
            if deadline < self.timer_at {
                self.timer.reset(self.config.query_timeout);
                self.timer_at = deadline;
            }
        }
    }

    fn on_message(&mut self, node: NodeId, connection: ConnectionId, message: Message) {
        match message {
            Message::Announce { incarnation, seq } => {
                self.stats.announces_received += 1;
                if let Some(peer) = self.peers.get_mut(&node) {
                    peer.saw((incarnation, seq), connection);
                }
                self.maybe_query(&node);
            }
            Message::Query { .. } => {
                self.stats.queries_received += 1;
                let Some(peer) = self.peers.get(&node) else {
                    return;
                };
                let Some(c) = peer.connection(Some(connection)) else {
                    return;
                };
                let frame = self
                    .status_frame
                    .get_or_insert_with(|| Message::Status(self.local.clone()).encode())
                    .clone();
                if push_frame(&mut self.events, &mut self.stats, peer.peer_id, c, frame) {
                    self.stats.responses_sent += 1;
                }
            }
            Message::Status(status) => self.on_status(node, connection, status),
        }
    }

    fn on_status(&mut self, node: NodeId, connection: ConnectionId, status: Status) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        if peer.in_flight.take().is_none() {
            self.stats.responses_unsolicited += 1;
            tracing::debug!(%node, seq = status.seq, "ignoring a status nobody asked for");
            return;
        }
        let v = (status.incarnation, status.seq);
        // A peer answers with its current status, announced before the answer on the same
        // stream: an answer older than the announcement, or of another incarnation, is stale.
        let stale = peer
            .announced_version()
            .is_some_and(|(i, s)| i != v.0 || s > v.1)
            || peer
                .known_version()
                .is_some_and(|(i, s)| i == v.0 && s >= v.1);
        if stale {
            // Not re-queried here: the next announcement does it, so two incarnations answering
            // on lingering connections cannot make a query loop.
            self.stats.responses_stale += 1;
            tracing::debug!(%node, incarnation = v.0, seq = v.1, "ignoring a stale status");
            return;
        }
        // The answer is the peer's current status, possibly newer than announced.
        peer.saw(v, connection);
        if let Err(e) = status.check(self.config.max_payload) {
            self.stats.malformed += 1;
            peer.rejected = Some(v);
            tracing::info!(%node, reason = %e, "closing a peer's status stream: status refused");
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer.peer_id,
                handler: NotifyHandler::One(connection),
                event: LinkCommand::CloseInbound(CloseReason::Refused(format!(
                    "status refused: {e}"
                ))),
            });
            return;
        }
        tracing::debug!(%node, incarnation = v.0, seq = v.1, "status updated");
        let status = Arc::new(status);
        peer.known = Some(status.clone());
        self.stats.responses_accepted += 1;
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::StatusUpdated {
                node: node.clone(),
                seq: status.seq,
                payload: status.payload.clone(),
                status,
            }));
        self.maybe_query(&node);
    }

    fn on_link_event(&mut self, node: NodeId, connection: ConnectionId, event: LinkEvent<Message>) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        let in_flight_here = peer
            .in_flight
            .as_ref()
            .is_some_and(|f| f.connection == connection);
        let Some(c) = peer.connections.iter_mut().find(|c| c.id == connection) else {
            return;
        };
        match event {
            LinkEvent::Received(message) => self.on_message(node, connection, message),
            LinkEvent::OutboundOpened => {
                c.outbound = Outbound::Open;
                // On connect (and after a reopen), announce at once.
                if push_frame(
                    &mut self.events,
                    &mut self.stats,
                    peer.peer_id,
                    c,
                    self.announce_frame.clone(),
                ) {
                    self.stats.announces_sent += 1;
                }
                self.maybe_query(&node);
            }
            LinkEvent::InboundOpened => tracing::trace!(%node, "peer's status stream opened"),
            LinkEvent::Unsupported => {
                tracing::debug!(%node, "peer does not speak the status protocol");
                c.outbound = Outbound::Unsupported;
                if in_flight_here {
                    peer.in_flight = None;
                }
            }
            LinkEvent::OutboundFailed(reason) => {
                tracing::debug!(%node, %reason, "our status stream failed");
                c.outbound = Outbound::Lost;
                if in_flight_here {
                    // The query may be lost with the stream: ask again (this reopens it).
                    peer.in_flight = None;
                    self.maybe_query(&node);
                }
            }
            LinkEvent::InboundClosed(reason) => {
                // Malformed and bad frames are the link's own closes; ours (refused statuses)
                // were counted when we asked for them.
                if matches!(reason, CloseReason::Malformed(_) | CloseReason::BadFrame(_)) {
                    self.stats.malformed += 1;
                    self.offences.report(peer.peer_id, Offence::Malformed);
                    tracing::info!(%node, %reason, "closed a peer's status stream");
                    if peer.in_flight.is_some() {
                        // Probably the answer: do not ask for the same status again.
                        peer.rejected = peer.announced_version();
                    }
                } else {
                    tracing::debug!(%node, %reason, "peer's status stream closed");
                }
                if peer.in_flight.take().is_some() {
                    self.maybe_query(&node);
                }
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if now >= self.next_announce {
            self.announce_to_all();
            self.next_announce = now + self.config.announce_interval;
        }
        let mut expired = Vec::new();
        let mut next = self.next_announce;
        for (node, peer) in &mut self.peers {
            if let Some(f) = &peer.in_flight {
                if f.deadline <= now {
                    peer.in_flight = None;
                    expired.push(node.clone());
                } else {
                    next = next.min(f.deadline);
                }
            }
        }
        self.timer.reset(next.saturating_duration_since(now));
        self.timer_at = next;
        for node in expired {
            self.stats.query_timeouts += 1;
            tracing::debug!(%node, "status query timed out");
            self.maybe_query(&node);
        }
    }

    fn new_handler(&mut self, connection: ConnectionId) -> Handler<Message> {
        let queue = Arc::new(Queue::new(
            self.link.max_queue_frames,
            self.link.max_queue_bytes,
        ));
        self.new_queues.insert(connection, queue.clone());
        Handler::new(Link::new(self.link.clone(), queue))
            .hearing(self.heard.as_ref().map(|h| h.cell(connection)))
    }
}

/// The announcement of `status`.
fn announce(status: &Status) -> Bytes {
    Message::Announce {
        incarnation: status.incarnation,
        seq: status.seq,
    }
    .encode()
}

/// Queues `frame` on `c` if its queue has room; counts and logs when it has not.
fn push_frame(
    events: &mut VecDeque<ToSwarm<Event, LinkCommand>>,
    stats: &mut Stats,
    peer_id: PeerId,
    c: &Connection,
    frame: Bytes,
) -> bool {
    let Some(command) = c.queue.send(peer_id, c.id, frame) else {
        stats.queue_full += 1;
        tracing::debug!(%peer_id, "status frame dropped: the connection's queue is full");
        return false;
    };
    events.push_back(command);
    true
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler<Message>;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(connection))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(connection))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let queue = self.new_queues.remove(&e.connection_id);
                let Some(node) = self.node_ids.resolve(&e.peer_id) else {
                    tracing::warn!(peer = %e.peer_id, "no NodeId for a peer; its status is ignored");
                    return;
                };
                let queue = queue.unwrap_or_else(|| {
                    Arc::new(Queue::new(
                        self.link.max_queue_frames,
                        self.link.max_queue_bytes,
                    ))
                });
                self.nodes.insert(e.peer_id, node.clone());
                self.peers
                    .entry(node)
                    .or_insert_with(|| Peer {
                        peer_id: e.peer_id,
                        connections: Vec::new(),
                        announced: None,
                        known: None,
                        in_flight: None,
                        rejected: None,
                    })
                    .connections
                    .push(Connection {
                        id: e.connection_id,
                        queue,
                        outbound: Outbound::Opening,
                    });
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                let Some(node) = self.nodes.get(&peer_id).cloned() else {
                    return;
                };
                let Some(peer) = self.peers.get_mut(&node) else {
                    return;
                };
                peer.connections.retain(|c| c.id != connection_id);
                if peer.connections.is_empty() {
                    self.peers.remove(&node);
                    self.nodes.remove(&peer_id);
                    tracing::debug!(%node, "peer gone");
                    self.events
                        .push_back(ToSwarm::GenerateEvent(Event::PeerGone { node }));
                    return;
                }
                if peer.announced.is_some_and(|(_, on)| on == connection_id) {
                    peer.announced = peer.announced.map(|(v, _)| (v, peer.connections[0].id));
                }
                if peer
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.connection == connection_id)
                {
                    peer.in_flight = None;
                    self.maybe_query(&node);
                }
            }
            FromSwarm::DialFailure(DialFailure { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.new_queues.remove(&connection_id);
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
        if let Some(node) = self.nodes.get(&peer).cloned() {
            self.on_link_event(node, connection, event);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(e);
            }
            if self.timer.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            self.on_timer();
        }
    }
}
