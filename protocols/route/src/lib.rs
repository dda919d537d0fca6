//! Routed connections (`/bcos/route/1.0.0`, [SPEC.md](../SPEC.md)): a node reaches a node it
//! has no connection to through a path of relays computed from the flood protocol's signed
//! link-state records. The path is a byte stream relayed hop by hop (each relay copies bytes
//! between two route streams on its direct connections); over it the two ends run the same
//! security handshake (CA-TLS) and muxer as over TCP, so the routed connection is a connection
//! like any other to every protocol above it, authenticated and encrypted end to end: a relay
//! sees TLS records, their sizes and timing, and can drop or delay them, but not read, alter,
//! forge or replay them without the ends noticing.
//!
//! Three parts: [`Transport`] (beside TCP in the swarm: dials `/p2p-circuit/p2p/<peer>`, yields
//! incoming circuits), [`Behaviour`] (asks for paths, opens circuits, relays for others under
//! per-peer budgets, routes around relays that failed), and the handler per connection. The
//! transport and the behaviour meet in a [`RouteLink`]; paths come from flood through
//! [`Paths`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod handler;
mod pump;
mod relay;
mod transport;
pub mod wire;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bcos_p2p_core::{
    NodeId, NodeIdBook, Offence, Offences, Paths, RouteLink,
    paths::{PathAnswer, Target},
    route_link::RoutedDial,
};
use futures::{FutureExt, channel::oneshot};
use futures_timer::Delay;
use libp2p_core::{Endpoint, Multiaddr, multiaddr::Protocol, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionError, ConnectionId, DialError, DialFailure,
    FromSwarm, ListenOpts, NetworkBehaviour, NotifyHandler, Stream, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, behaviour::ConnectionEstablished,
};

pub use handler::{Handler, In, Out};
use relay::Relayed;
pub use transport::{RouteError, Transport, circuit_address, is_routed};
pub use wire::{Code, PROTOCOL, Reply};

/// Route settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relay circuits for other nodes. Off: route streams that pass through this node are
    /// refused with [`Code::RelayOff`] (the opener routes around it, or finds no path).
    pub relay: bool,
    /// Take routed connections to this node.
    pub accept: bool,
    /// Most relays plus one (the hops of the longest path opened or relayed); at most
    /// [`wire::MAX_PATH`].
    pub max_hops: usize,
    /// Most circuits relayed at once.
    pub max_circuits: usize,
    /// Most circuits relayed at once whose previous hop is one peer.
    pub max_circuits_per_peer: usize,
    /// Relayed bytes per second (both ways) for the circuits whose previous hop is one peer;
    /// 0: no limit.
    pub relay_bytes_per_s: u64,
    /// How long opening a circuit (the path, every relay's answer) may take.
    pub open_timeout: Duration,
    /// How long relays of a path that failed are kept out of new paths (when another exists).
    pub avoid_for: Duration,
    /// Circuits tried per dial (each avoiding the relays that refused or failed before).
    pub attempts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relay: true,
            accept: true,
            max_hops: 8,
            max_circuits: 256,
            max_circuits_per_peer: 32,
            relay_bytes_per_s: 64 * 1024 * 1024,
            open_timeout: Duration::from_secs(10),
            avoid_for: Duration::from_secs(60),
            attempts: 3,
        }
    }
}

/// Live counters (keep the `Arc` and read them at any time).
#[derive(Debug, Default)]
pub struct Stats {
    /// Circuits opened from this node (routed connections dialled).
    pub opened: AtomicU64,
    /// Routed dials that found no circuit.
    pub failed: AtomicU64,
    /// Circuits relayed for others.
    pub relayed_circuits: AtomicU64,
    /// Circuits refused (relay off, budget spent, no link, malformed, ...).
    pub refused: AtomicU64,
    /// Bytes relayed for others (both ways).
    pub relayed_bytes: Arc<AtomicU64>,
    /// Circuits relayed now.
    pub active: AtomicU64,
}

/// What the route behaviour reports.
#[derive(Debug)]
pub enum Event {
    /// A routed connection came up.
    Routed {
        /// The node at the other end.
        node: NodeId,
        /// The relays in between, the first hop first (empty at the destination, which does
        /// not know the path).
        relays: Vec<NodeId>,
    },
    /// A routed dial found no circuit.
    Unreachable {
        /// The node.
        node: Option<NodeId>,
        /// Why.
        reason: String,
    },
}

/// A routed dial in progress.
struct Dialing {
    peer: PeerId,
    node: Option<NodeId>,
    reply: oneshot::Sender<Result<Stream, String>>,
    /// The path of the current attempt (first hop first, destination last).
    path: Vec<NodeId>,
    /// The connection to the first hop the current attempt's stream is opened on.
    via: Option<ConnectionId>,
    avoid: Vec<NodeId>,
    attempts: usize,
    /// Why the last attempt failed.
    last_failure: Option<String>,
    deadline: Instant,
}

/// The route `NetworkBehaviour` (see the crate documentation).
pub struct Behaviour {
    config: Config,
    me: NodeId,
    link: RouteLink,
    paths: Paths,
    node_ids: NodeIdBook,
    shared: handler::Shared,
    stats: Arc<Stats>,
    /// Direct connections per peer (circuits are opened and relayed only on these).
    direct: HashMap<PeerId, Vec<ConnectionId>>,
    /// Routed connections: the peer and, where this node dialled, the relays.
    routed: HashMap<ConnectionId, (PeerId, Vec<NodeId>)>,
    /// The relays of the last circuit opened to each peer (until its connection is up).
    /// Routed dials of the swarm (by connection id): the peer, and the relays once a circuit
    /// for it came up (until the connection is established or fails).
    routed_dials: HashMap<ConnectionId, (PeerId, Option<Vec<NodeId>>)>,
    next_circuit: u64,
    dialing: HashMap<u64, Dialing>,
    /// Path questions → the dial they are for.
    asked: HashMap<u64, u64>,
    relaying: HashMap<u64, Relayed>,
    relayed_per_peer: HashMap<PeerId, usize>,
    /// Relays kept out of paths until the instant.
    avoid: HashMap<NodeId, Instant>,
    listen_asked: bool,
    /// Routed connections handshaking at this node, by the last relay they came through.
    pending_inbound: HashMap<ConnectionId, PeerId>,
    /// Where malformed route streams are reported ([`Behaviour::set_offences`]).
    offences: Offences,
    timer: Delay,
    events: VecDeque<ToSwarm<Event, In>>,
}

/// Most routed connections still handshaking at this node that came through one last relay:
/// a member next to this node cannot hold every handshake slot with circuits it makes up.
pub const MAX_PENDING_PER_RELAY: usize = 4;

/// Most routed connections still handshaking at this node in all: well below the connection
/// manager's pending limit, so circuits never take the slots of direct connections.
pub const MAX_PENDING_ROUTED: usize = 32;

/// Whether a connection closed by `cause` may have been spoiled by a relay: its TLS records
/// failed (altered, replayed: `InvalidData`) or its stream was cut (`UnexpectedEof`,
/// `ConnectionReset`, `BrokenPipe`), not closed normally by the other end.
fn spoiled(cause: &ConnectionError) -> bool {
    let ConnectionError::IO(e) = cause else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    // Bounded: error chains are a few links long.
    for _ in 0..32 {
        let Some(err) = next else {
            return false;
        };
        next = err.source();
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
            // An `io::Error`'s source skips the error it wraps: look at that one first.
            if let Some(inner) = io.get_ref() {
                next = Some(inner as &(dyn std::error::Error + 'static));
            }
        }
    }
    false
}

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(500);

impl Behaviour {
    /// The route behaviour of node `me`, linked to the transport through `link` and to the
    /// link-state view through `paths`; `node_ids` names peers.
    pub fn new(
        me: NodeId,
        config: Config,
        link: RouteLink,
        paths: Paths,
        node_ids: NodeIdBook,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let shared = handler::Shared {
            link: link.clone(),
            relayed: stats.relayed_bytes.clone(),
            bytes_per_s: config.relay_bytes_per_s,
        };
        Behaviour {
            config,
            me,
            link,
            paths,
            node_ids,
            shared,
            stats,
            direct: HashMap::new(),
            routed: HashMap::new(),
            routed_dials: HashMap::new(),
            next_circuit: 0,
            dialing: HashMap::new(),
            asked: HashMap::new(),
            relaying: HashMap::new(),
            relayed_per_peer: HashMap::new(),
            avoid: HashMap::new(),
            listen_asked: false,
            pending_inbound: HashMap::new(),
            offences: Offences::default(),
            timer: Delay::new(TICK),
            events: VecDeque::new(),
        }
    }

    /// Reports peers that send malformed route streams to `offences` (the connection
    /// manager's handle, which scores and bans). Default: a handle nobody reads.
    pub fn set_offences(&mut self, offences: Offences) {
        self.offences = offences;
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Routed connections up now: the node, and the relays when this node dialled.
    pub fn routed(&self) -> Vec<(NodeId, Vec<NodeId>)> {
        self.routed
            .values()
            .filter_map(|(peer, relays)| Some((self.node_ids.resolve(peer)?, relays.clone())))
            .collect()
    }

    fn notify(&mut self, peer: PeerId, connection: ConnectionId, event: In) {
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event,
        });
    }

    /// A direct connection to `node`, if any.
    fn direct_to(&self, node: &NodeId) -> Option<(PeerId, ConnectionId)> {
        let peer = node.to_peer_id();
        // The newest: an older one may be a duplicate about to close.
        self.direct
            .get(&peer)
            .and_then(|c| c.last())
            .map(|c| (peer, *c))
    }

    fn avoided(&mut self, now: Instant) -> Vec<NodeId> {
        self.avoid.retain(|_, until| *until > now);
        self.avoid.keys().cloned().collect()
    }

    fn on_dial(&mut self, dial: RoutedDial) {
        let circuit = self.next_circuit;
        self.next_circuit += 1;
        if !self.paths.answered() {
            let _ = dial
                .reply
                .send(Err("no link-state view (flood is not running)".into()));
            return;
        }
        let now = Instant::now();
        let avoid = self.avoided(now);
        let node = self
            .node_ids
            .resolve(&dial.peer)
            .or_else(|| NodeId::from_peer_id(&dial.peer).ok());
        let to = match &node {
            Some(n) => Target::Node(n.clone()),
            None => Target::Peer(dial.peer),
        };
        let ask = self.paths.ask(to, avoid.clone());
        self.asked.insert(ask, circuit);
        self.dialing.insert(
            circuit,
            Dialing {
                peer: dial.peer,
                node,
                reply: dial.reply,
                path: Vec::new(),
                via: None,
                avoid,
                attempts: 0,
                last_failure: None,
                deadline: now + self.config.open_timeout,
            },
        );
    }

    fn fail_dial(&mut self, circuit: u64, reason: String) {
        if let Some(d) = self.dialing.remove(&circuit) {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %d.peer, %reason, "route: no circuit");
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::Unreachable {
                    node: d.node.clone(),
                    reason: reason.clone(),
                }));
            let _ = d.reply.send(Err(reason));
        }
    }

    fn on_path(&mut self, answer: PathAnswer) {
        let Some(circuit) = self.asked.remove(&answer.id) else {
            return;
        };
        let Some(d) = self.dialing.get_mut(&circuit) else {
            return;
        };
        let path = match answer.path {
            Some(p) if !p.is_empty() => p,
            _ => {
                let reason = if d.avoid.is_empty() {
                    "no path in the link-state view".to_string()
                } else {
                    format!(
                        "no path in the link-state view avoiding {} relay(s) that refused or failed",
                        d.avoid.len()
                    )
                };
                return self.fail_dial(circuit, reason);
            }
        };
        if d.node.is_none() {
            d.node = path.last().cloned();
        }
        // The only path left goes through a relay that refused or failed in this dial: it
        // would again.
        if let Some(why) = &d.last_failure
            && path[..path.len().saturating_sub(1)]
                .iter()
                .any(|n| d.avoid.contains(n))
        {
            let reason = format!("{why}; no other path");
            return self.fail_dial(circuit, reason);
        }
        if path.len() < 2 {
            return self.fail_dial(
                circuit,
                "the view links this node with the destination directly, but no connection is up"
                    .into(),
            );
        }
        if path.len() > self.config.max_hops.min(wire::MAX_PATH) {
            let hops = path.len();
            return self.fail_dial(
                circuit,
                format!(
                    "the shortest path has {hops} hops (max_hops {})",
                    self.config.max_hops
                ),
            );
        }
        let Some((peer, connection)) = self.direct_to(&path[0]) else {
            return self.fail_dial(circuit, "the first hop is not connected".into());
        };
        if let Some(d) = self.dialing.get_mut(&circuit) {
            d.attempts += 1;
            d.path = path.clone();
            d.via = Some(connection);
        }
        self.notify(
            peer,
            connection,
            In::Open {
                circuit,
                path: path[1..].to_vec(),
            },
        );
    }

    /// A circuit this node opened got its answer.
    fn on_opened_own(&mut self, circuit: u64, result: Result<(Stream, Reply), String>) {
        let Some(d) = self.dialing.get_mut(&circuit) else {
            return; // timed out
        };
        // This attempt is answered: its connection closing later is no news.
        d.via = None;
        let relays = d.path[..d.path.len().saturating_sub(1)].to_vec();
        let (code, hop) = match result {
            Ok((stream, reply)) if reply.code == Code::Ok => {
                let Some(d) = self.dialing.remove(&circuit) else {
                    return;
                };
                self.stats.opened.fetch_add(1, Ordering::Relaxed);
                // The swarm's dial this circuit serves (a peer has one routed dial at a time:
                // unicast and the status fetch dial only while it is disconnected).
                if let Some((_, r)) = self
                    .routed_dials
                    .values_mut()
                    .find(|(p, r)| *p == d.peer && r.is_none())
                {
                    *r = Some(relays);
                }
                if d.reply.send(Ok(stream)).is_err() {
                    tracing::debug!("route: the dial was dropped before its circuit came up");
                }
                return;
            }
            Ok((_, reply)) => (Some(reply.code), usize::from(reply.hop)),
            Err(e) => {
                tracing::debug!(circuit, error = %e, "route: first hop failed");
                (None, 0)
            }
        };
        // Who refused, as far as this node can tell. An honest reply names the node that
        // answered (`hop`), but a relay can forge it, so a reply that cannot be honest blames
        // every relay, and one naming relay `hop` keeps every relay up to it out of this dial's
        // next path (the liar is among them) and that relay out of paths for `avoid_for`.
        let last = d.path.len().saturating_sub(1); // the destination's index
        let relays = &d.path[..last];
        let (for_dial, for_all, reason): (Vec<NodeId>, Vec<NodeId>, String) = match code {
            None => (
                relays.iter().take(1).cloned().collect(),
                relays.iter().take(1).cloned().collect(),
                "the first hop failed".into(),
            ),
            Some(Code::NotAccepting) if hop == last => (
                // Honest if the destination takes no routed connections; a relay may say so
                // falsely: one more try round every relay of this path.
                relays.to_vec(),
                Vec::new(),
                format!(
                    "{} (answered for {})",
                    Code::NotAccepting,
                    d.path[last].short()
                ),
            ),
            Some(c) if hop >= last => (
                relays.to_vec(),
                relays.to_vec(),
                format!("{c} (a reply no honest node sends: hop {})", hop + 1),
            ),
            Some(c) => (
                d.path[..=hop].to_vec(),
                vec![d.path[hop].clone()],
                format!(
                    "{} (answered by {}, hop {})",
                    c,
                    d.path[hop].short(),
                    hop + 1
                ),
            ),
        };
        let retry = d.attempts < self.config.attempts && !for_dial.is_empty();
        let until = Instant::now() + self.config.avoid_for;
        for node in for_all {
            self.avoid.insert(node, until);
        }
        for node in for_dial {
            if !d.avoid.contains(&node) {
                d.avoid.push(node);
            }
        }
        d.last_failure = Some(reason.clone());
        if !retry {
            return self.fail_dial(circuit, reason);
        }
        let Some(to) = d.node.clone() else {
            return self.fail_dial(circuit, reason);
        };
        let ask = self.paths.ask(Target::Node(to), d.avoid.clone());
        self.asked.insert(ask, circuit);
    }

    fn new_handler(&mut self, peer: PeerId, addr: &Multiaddr) -> Handler {
        Handler::new(self.shared.clone(), peer, is_routed(addr))
    }

    /// A routed connection this node dialled failed or broke: keep its relays out of new
    /// paths for a while (one of them may have altered or dropped its bytes).
    fn blame_relays(&mut self, relays: &[NodeId]) {
        let until = Instant::now() + self.config.avoid_for;
        for r in relays {
            self.avoid.insert(r.clone(), until);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .dialing
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for circuit in late {
            if let Some(d) = self.dialing.get(&circuit) {
                let relays = d.path[..d.path.len().saturating_sub(1)].to_vec();
                self.blame_relays(&relays);
            }
            self.fail_dial(circuit, "no circuit within the open timeout".into());
        }
        self.asked.retain(|_, c| self.dialing.contains_key(c));
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if !is_routed(remote) {
            return Ok(());
        }
        let Some(Protocol::P2p(via)) = remote.iter().next() else {
            return Ok(());
        };
        let pending = self.pending_inbound.values().filter(|v| **v == via).count();
        if pending >= MAX_PENDING_PER_RELAY || self.pending_inbound.len() >= MAX_PENDING_ROUTED {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionDenied::new(format!(
                "{pending} routed connections through {via} are handshaking already"
            )));
        }
        self.pending_inbound.insert(connection, via);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, remote))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = peer
            && addresses.iter().any(is_routed)
        {
            self.routed_dials.insert(connection, (peer, None));
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, addr))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(e) => {
                self.pending_inbound.remove(&e.connection_id);
            }
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                self.pending_inbound.remove(&connection_id);
                if is_routed(endpoint.get_remote_address()) {
                    let relays = self
                        .routed_dials
                        .remove(&connection_id)
                        .and_then(|(_, r)| r)
                        .unwrap_or_default();
                    if let Some(node) = self.node_ids.resolve(&peer_id) {
                        self.events.push_back(ToSwarm::GenerateEvent(Event::Routed {
                            node,
                            relays: relays.clone(),
                        }));
                    }
                    self.routed.insert(connection_id, (peer_id, relays));
                } else {
                    self.direct.entry(peer_id).or_default().push(connection_id);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            }) => {
                if let Some((_, relays)) = self.routed.remove(&connection_id) {
                    // A connection whose TLS records failed, or that was cut, may have been
                    // spoiled by a relay; one the other end closed normally (idle, replaced by
                    // a direct one) was not.
                    if cause.is_some_and(spoiled) {
                        self.blame_relays(&relays);
                    }
                }
                if let Some(list) = self.direct.get_mut(&peer_id) {
                    list.retain(|c| *c != connection_id);
                    if list.is_empty() {
                        self.direct.remove(&peer_id);
                    }
                }
                let ended: Vec<u64> = self
                    .relaying
                    .iter()
                    .filter(|(_, r)| r.from_conn == connection_id)
                    .map(|(c, _)| *c)
                    .collect();
                for c in ended {
                    self.end_relayed(c);
                }
                // Streams still being opened on the closed connection never answer: the
                // circuits relayed through it are refused, ours try again.
                let orphaned: Vec<u64> = self
                    .relaying
                    .iter()
                    .filter(|(_, r)| r.to_conn == connection_id && !r.piped)
                    .map(|(c, _)| *c)
                    .collect();
                for c in orphaned {
                    self.on_opened_relayed(c, Err("the next hop's connection closed".into()));
                }
                let own: Vec<u64> = self
                    .dialing
                    .iter()
                    .filter(|(_, d)| d.via == Some(connection_id))
                    .map(|(c, _)| *c)
                    .collect();
                for c in own {
                    self.on_opened_own(c, Err("the first hop's connection closed".into()));
                }
            }
            FromSwarm::DialFailure(DialFailure {
                connection_id,
                error,
                ..
            }) => {
                // The circuit came up but the handshake over it failed: a relay may have
                // altered it. (Not when a behaviour denied the connection once it was up.)
                if let Some((peer, Some(relays))) = self.routed_dials.remove(&connection_id)
                    && !matches!(error, DialError::Denied { .. })
                {
                    tracing::debug!(%peer, %error, "route: routed connection failed");
                    self.blame_relays(&relays);
                }
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
        match event {
            Out::Inbound { stream, path } => self.on_inbound(peer, connection, stream, path),
            Out::Dropped(reason) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %reason, "route: route stream dropped");
            }
            Out::Malformed(reason) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.offences.report(peer, Offence::Malformed);
                tracing::debug!(%peer, %reason, "route: malformed route stream");
            }
            Out::Opened { circuit, result } => {
                if self.dialing.contains_key(&circuit) {
                    self.on_opened_own(circuit, result);
                } else {
                    self.on_opened_relayed(circuit, result);
                }
            }
            Out::CircuitEnded { circuit } => self.end_relayed(circuit),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if !self.listen_asked && self.config.accept {
            self.listen_asked = true;
            return Poll::Ready(ToSwarm::ListenOn {
                opts: ListenOpts::new(circuit_address()),
            });
        }
        for dial in self.link.take_dials(cx) {
            self.on_dial(dial);
        }
        for answer in self.paths.take_answers(cx) {
            self.on_path(answer);
        }
        while self.timer.poll_unpin(cx).is_ready() {
            self.timer = Delay::new(TICK);
            self.expire();
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}
