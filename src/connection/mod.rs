//! The connection manager: keeps configured peers connected, one connection per peer.
//!
//! libp2p leaves connection policy to the application; a consortium chain needs the one FISCO
//! BCOS has. This [`Behaviour`]:
//!
//! - dials configured peers at start and redials after a failed dial or a disconnect, with
//!   exponential backoff and jitter ([`Config::redial_min`] doubling up to
//!   [`Config::redial_max`]; a connection that stayed up [`Config::stable_after`] resets it);
//! - keeps exactly one connection per peer pair: when both ends dial at once, both keep the
//!   connection dialled by the smaller [`NodeId`] and drop the other (see [`Behaviour`]);
//! - refuses connections to itself, and never dials such an address again;
//! - detects dead connections by wrapping [`libp2p::ping`] (its handler is this behaviour's
//!   handler) and by the frames the protocols mark ([`Behaviour::heard`]): a connection whose
//!   pings fail [`Config::ping_max_failures`] times in a row with no frame coming meanwhile, or
//!   that neither answers a ping nor sends a frame for [`Config::dead_after`], closes;
//! - bounds pending and established connections by wrapping [`libp2p::connection_limits`],
//!   new incoming connections per second per IP address ([`Config::new_inbound_per_ip`]) and
//!   incoming connections still handshaking per IP address
//!   ([`Config::max_pending_incoming_per_ip`]);
//! - applies run-time [`Behaviour::deny`] / [`Behaviour::allow`] to the shared CA-TLS
//!   [`AccessList`] and drops refused sessions at once (FISCO's hot reload);
//! - scores peers by the offences the protocols report ([`Behaviour::offences`]) and bans a
//!   node whose score falls to [`Config::ban_threshold`] for a while, longer at each repeat
//!   (configured peers at most [`Config::ban_max_configured`]).
//!
//! Every decision is reported as an [`Event`]. The manager needs a tokio runtime (its redial
//! timer is a tokio timer), as the swarms of [`crate::behaviour::build_swarm`] have.
//!
//! The parts: [`Config`] (settings and the delays they give), `redial` (configured addresses,
//! backoff), `admission` (the duplicate rule, connection and per-address limits), `peers`
//! (connections up, the primary per peer), `liveness` (ping, the silent deadline), `access`
//! (run-time deny/allow), `revocation` (sessions a new CRL revokes), `reload` (new peers,
//! lists and CRLs at once), `scores` and `bans` (peer scores, bans) and [`Event`] (what is
//! reported). This file holds the behaviour and
//! its `NetworkBehaviour` plumbing.

mod access;
mod admission;
mod bans;
mod config;
mod events;
mod ip_pending;
mod ip_rate;
mod liveness;
mod peers;
mod redial;
mod reload;
mod revocation;
mod scores;
mod slots;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    net::IpAddr,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Instant,
};

use futures::FutureExt as _;
use libp2p::{
    Multiaddr, PeerId, connection_limits,
    core::{ConnectedPoint, Endpoint, transport::PortUse},
    multiaddr::Protocol,
    ping,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
};

#[cfg(doc)]
use crate::ca_tls;
use crate::{Heard, NodeId, NodeIdBook, Offences, PrimaryConnections, ca_tls::AccessList};

use admission::Admission;
pub use admission::{DUPLICATE_GRACE, REPLACE_GRACE};
pub use config::Config;
pub use events::{Event, Refusal, dial_refusal};
use ip_pending::PendingPerIp;
use ip_rate::IpRate;
pub use ip_rate::RateLimit;
use peers::{Conn, Peer};
pub use redial::JITTER;
use redial::{Rng, Target};
pub use reload::{Reload, Reloaded};
use scores::Scores;
pub use scores::weight;
use slots::Slots;
pub use slots::{LimitExceeded, LimitKind};

/// The connection manager (see the module docs).
///
/// Duplicate rule: of two connections between nodes `S < L` (by [`NodeId`] order), the one
/// `S` dialled is kept, and `L` decides. `L` denies a new connection in `handle_established_*`
/// when it already has one, unless the new one is dialled by `S` and the existing ones are
/// not: then it closes those. `S` accepts duplicates (the one it dialled becomes the one it
/// uses) and leaves the closing to `L`, closing them itself only if `L` has not after
/// [`DUPLICATE_GRACE`]. So both ends of a simultaneous dial keep the same connection, whatever
/// order each sees the two in, and neither end ever loses its only connection to the other's
/// decision (no disconnect/reconnect churn).
pub struct Behaviour {
    config: Config,
    local: NodeId,
    local_peer: PeerId,
    access: AccessList,
    node_ids: NodeIdBook,
    /// The kept connection per peer, for the protocols (see [`Behaviour::primaries`]).
    primaries: PrimaryConnections,
    ping: ping::Behaviour,
    /// `max_pending_outgoing` (libp2p's limits); the incoming and established limits, with
    /// the slots kept for configured peers, are `slots`.
    limits: connection_limits::Behaviour,
    slots: Slots,
    ip_rate: Option<IpRate>,
    ip_pending: Option<PendingPerIp>,
    targets: Vec<Target>,
    conns: HashMap<ConnectionId, Conn>,
    peers: HashMap<PeerId, Peer>,
    admitted: HashMap<ConnectionId, Admission>,
    listen_addrs: HashSet<Multiaddr>,
    queue: VecDeque<ToSwarm<Event, Infallible>>,
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    /// Something happened to this manager since its last scan of targets and connections
    /// (deadlines, redials): the swarm polls every behaviour after every event of any
    /// protocol, and scanning then would cost O(peers) per message.
    rescan: bool,
    waker: Option<Waker>,
    rng: Rng,
    /// Where the protocols report offences.
    offences: Offences,
    /// Where the protocols mark each connection's last frame ([`Behaviour::heard`]).
    heard: Heard,
    scores: Scores,
    /// The CA-TLS CRLs and peer chains (CA mode), see [`Behaviour::set_revocation`].
    revocation: Option<crate::ca_tls::Revocation>,
}

impl Behaviour {
    /// A manager for the node `local`, checking and updating `access` (the CA-TLS config's
    /// [`ca_tls::Config::access_list`]) and naming peers with `node_ids` (its
    /// [`ca_tls::Config::node_ids`]).
    pub fn new(local: NodeId, config: Config, access: AccessList, node_ids: NodeIdBook) -> Self {
        Behaviour {
            ping: ping::Behaviour::new(config.ping()),
            limits: connection_limits::Behaviour::new(config.limits()),
            slots: Slots::new(config.max_pending_incoming, config.max_established),
            ip_rate: config.new_inbound_per_ip.map(IpRate::new),
            ip_pending: config.max_pending_incoming_per_ip.map(PendingPerIp::new),
            config,
            local_peer: local.to_peer_id(),
            local,
            access,
            node_ids,
            primaries: PrimaryConnections::default(),
            targets: Vec::new(),
            conns: HashMap::new(),
            peers: HashMap::new(),
            admitted: HashMap::new(),
            listen_addrs: HashSet::new(),
            queue: VecDeque::new(),
            timer: None,
            rescan: true,
            waker: None,
            rng: Rng::new(),
            offences: Offences::default(),
            heard: Heard::default(),
            scores: Scores::default(),
            revocation: None,
        }
    }

    /// The connection kept per peer, kept up to date by this manager. Give it to the protocols
    /// that pick one connection per peer (unicast, flood): while a duplicate connection is
    /// being closed, what they send then goes on the connection that stays.
    pub fn primaries(&self) -> PrimaryConnections {
        self.primaries.clone()
    }

    fn emit(&mut self, event: Event) {
        tracing::debug!(?event, "connection manager");
        self.queue.push_back(ToSwarm::GenerateEvent(event));
    }

    fn wake(&mut self) {
        self.rescan = true;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Arms the timer for the earliest redial, duplicate grace or ping deadline; returns true if
    /// one is due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let next = [self.next_dial(), self.next_overdue(), self.next_silent()]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            self.timer = None;
            return false;
        };
        if at <= Instant::now() {
            return true;
        }
        if self.timer.as_ref().is_none_or(|(t, _)| *t != at) {
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(at));
            self.timer = Some((at, Box::pin(sleep)));
        }
        match &mut self.timer {
            Some((_, sleep)) => sleep.poll_unpin(cx).is_ready(),
            None => false,
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<ping::Behaviour>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.rescan = true;
        self.per_ip_check(id, remote_addr)?;
        let configured = self.configured_addr(remote_addr);
        let targets = self.targets.len();
        self.slots
            .admit_pending(id, configured, targets)
            .map_err(|e| {
                // The swarm's ListenFailure would release it too.
                self.release_pending(id);
                self.limit_refused(ConnectionDenied::new(e), Some(remote_addr), None)
            })?;
        self.limits
            .handle_pending_inbound_connection(id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.rescan = true;
        let limit = self.established_slot(peer, remote_addr);
        self.admit_within(limit, id, peer, remote_addr, false)?;
        self.ping
            .handle_established_inbound_connection(id, peer, local_addr, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.rescan = true;
        self.limits
            .handle_pending_outbound_connection(id, peer, addresses, role)
            .map_err(|d| self.limit_refused(d, addresses.first(), peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.rescan = true;
        let limit = self.established_slot(peer, addr);
        self.admit_within(limit, id, peer, addr, true)?;
        self.ping
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.rescan = true;
        self.limits.on_swarm_event(event);
        self.ping.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.release_pending(e.connection_id);
                self.slots.established(e.connection_id);
                self.node_ids.pin(&e.peer_id);
                if let Some(r) = &self.revocation {
                    r.pin(&e.peer_id);
                }
                self.on_established(e);
            }
            FromSwarm::ConnectionClosed(e) => {
                self.heard.forget(e.connection_id);
                self.slots.closed(e.connection_id);
                self.node_ids.unpin(&e.peer_id);
                if let Some(r) = &self.revocation {
                    r.unpin(&e.peer_id);
                }
                self.on_closed(e);
            }
            FromSwarm::DialFailure(e) => {
                // A behaviour after the protocols may refuse a connection they took a cell for.
                self.heard.forget(e.connection_id);
                self.on_dial_failure(e);
            }
            FromSwarm::ListenFailure(e) => {
                self.heard.forget(e.connection_id);
                self.on_listen_failure(e);
            }
            FromSwarm::AddressChange(e) => {
                if let Some(c) = self.conns.get_mut(&e.connection_id) {
                    c.addr = remote_addr(e.new);
                }
            }
            FromSwarm::NewListenAddr(e) => {
                self.listen_addrs.insert(e.addr.clone());
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen_addrs.remove(e.addr);
            }
            _ => {}
        }
        // Events outside `poll` (a dial refused in `Swarm::dial`) need a poll to be delivered.
        if !self.queue.is_empty() {
            self.wake();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        result: THandlerOutEvent<Self>,
    ) {
        // No rescan: a ping result only moves this connection's deadline later, or closes it
        // right away (`on_ping`). Scanning every connection on each of them (every peer pings
        // every `ping_interval`) cost a 128-node mesh in one process more than a core.
        // ping::Behaviour would only wrap the result in a ping::Event for its poll; intercepting
        // it here counts it while the connection is surely still known.
        self.on_ping(ping::Event {
            peer,
            connection,
            result,
        });
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.waker = Some(cx.waker().clone());
        loop {
            if let Some(action) = self.queue.pop_front() {
                return Poll::Ready(action);
            }
            if let Poll::Ready(action) = self.limits.poll(cx) {
                return Poll::Ready(action.map_out(|e| match e {}).map_in(|e| match e {}));
            }
            self.take_offences(cx);
            let fired =
                (self.timer.as_mut()).is_some_and(|(_, sleep)| sleep.poll_unpin(cx).is_ready());
            if !std::mem::take(&mut self.rescan) && !fired {
                return Poll::Pending;
            }
            let now = Instant::now();
            self.close_overdue(now);
            self.close_silent(now);
            self.dial_due(now);
            // Scan again once the queue is drained (what it did may move deadlines), or now if
            // a deadline is already due.
            if !self.queue.is_empty() || self.poll_timer(cx) {
                self.rescan = true;
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// An address without its `/p2p/` suffix, and the PeerId of the suffix.
fn split_peer(mut addr: Multiaddr) -> (Multiaddr, Option<PeerId>) {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}

/// The IP address `addr` starts with, if any.
fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => Some(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// The remote address of a connection, without `/p2p/`.
fn remote_addr(endpoint: &ConnectedPoint) -> Multiaddr {
    split_peer(endpoint.get_remote_address().clone()).0
}
