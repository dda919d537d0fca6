//! The connections that are up and the peers they belong to: which connection is kept per
//! peer (the primary the protocols send on), and what a new or closed connection changes for
//! the peer and its configured addresses.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId,
    swarm::{ConnectionClosed, ConnectionId, behaviour::ConnectionEstablished},
};

use super::{
    Behaviour, Event,
    admission::{Admission, DUPLICATE_GRACE, REPLACE_GRACE},
    redial::State,
    remote_addr,
};
use crate::{HeardAt, NodeId, Offence, route::is_routed};

/// Why this node closes a connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Closing {
    Duplicate,
    /// Consecutive failed pings, and for how long neither a ping was answered nor a frame came.
    Dead(u32, Duration),
    Dropped,
    /// The peer's score fell to the ban threshold, last by this kind of offence.
    Banned(Offence),
}

/// An established connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) node: NodeId,
    pub(super) addr: Multiaddr,
    pub(super) outbound: bool,
    /// Consecutive failed pings.
    pub(super) failures: u32,
    /// When a ping was last answered, or the connection came up.
    pub(super) answered: Instant,
    /// False once the peer turned out not to speak ping (then it cannot be found dead).
    pub(super) pings: bool,
    /// When the peer last sent a frame of the protocols (this connection's cell of
    /// [`crate::Heard`]).
    pub(super) heard: Arc<HeardAt>,
    pub(super) rtt: Option<Duration>,
    /// A routed connection (a circuit through relays), not a direct one.
    pub(super) routed: bool,
    pub(super) closing: Option<Closing>,
    /// Set on a duplicate this node waits for the peer to close: when to close it anyway.
    pub(super) superseded: Option<Instant>,
}

/// A connected peer.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) node: NodeId,
    /// Established connections (more than one only briefly, while duplicates close).
    pub(super) conns: Vec<ConnectionId>,
    /// The connection kept.
    pub(super) primary: ConnectionId,
    /// When the peer got its first connection.
    pub(super) since: Instant,
}

impl Behaviour {
    /// Whether `peer` has a direct (not routed) connection up.
    pub(super) fn has_direct(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| {
            p.conns.iter().any(|c| {
                self.conns
                    .get(c)
                    .is_some_and(|c| !c.routed && c.closing.is_none())
            })
        })
    }

    /// Whether `node`'s connection kept is routed (through relays); None when not connected.
    pub fn is_routed(&self, node: &NodeId) -> Option<bool> {
        self.peers
            .values()
            .find(|p| &p.node == node)
            .and_then(|p| self.conns.get(&p.primary))
            .map(|c| c.routed)
    }

    /// Connected peers, one entry each, with the remote address of the connection kept.
    pub fn connected(&self) -> Vec<(NodeId, Multiaddr)> {
        self.peers
            .values()
            .filter_map(|p| {
                self.conns
                    .get(&p.primary)
                    .map(|c| (p.node.clone(), c.addr.clone()))
            })
            .collect()
    }

    /// The last round-trip time measured to `node`, if it is connected and answered a ping.
    pub fn rtt(&self, node: &NodeId) -> Option<Duration> {
        self.peers
            .values()
            .find(|p| &p.node == node)
            .and_then(|p| self.conns.get(&p.primary))
            .and_then(|c| c.rtt)
    }

    /// The frame-body bytes read from `node` and sent to it, over every protocol, summed over
    /// its connections open now; None when not connected.
    pub fn bytes(&self, node: &NodeId) -> Option<(u64, u64)> {
        let peer = self.peers.values().find(|p| &p.node == node)?;
        Some(
            peer.conns
                .iter()
                .filter_map(|c| self.conns.get(c))
                .map(|c| c.heard.bytes())
                .fold((0u64, 0u64), |(i, o), (ci, co)| {
                    (i.saturating_add(ci), o.saturating_add(co))
                }),
        )
    }

    /// Every connection of every connected peer.
    pub(super) fn peer_conns(&self) -> impl Iterator<Item = (PeerId, ConnectionId, &Conn)> + '_ {
        self.peers.iter().flat_map(move |(peer, p)| {
            p.conns
                .iter()
                .filter_map(move |id| self.conns.get(id).map(|c| (*peer, *id, c)))
        })
    }

    /// Records a connection the swarm reports established, as admission decided it.
    pub(super) fn on_established(&mut self, e: ConnectionEstablished<'_>) {
        let Some(admission) = self.admitted.remove(&e.connection_id) else {
            return;
        };
        let Some(node) = self.node_ids.resolve(&e.peer_id) else {
            return;
        };
        let outbound = e.endpoint.is_dialer();
        let addr = remote_addr(e.endpoint);
        let routed = is_routed(&addr);
        self.conns.insert(
            e.connection_id,
            Conn {
                node: node.clone(),
                addr: addr.clone(),
                outbound,
                failures: 0,
                answered: Instant::now(),
                pings: true,
                heard: self.heard.cell(e.connection_id),
                rtt: None,
                routed,
                closing: None,
                superseded: (admission == Admission::Extra)
                    .then(|| Instant::now() + DUPLICATE_GRACE),
            },
        );
        let mut closed = Vec::new();
        match self.peers.get_mut(&e.peer_id) {
            None => {
                self.peers.insert(
                    e.peer_id,
                    Peer {
                        node: node.clone(),
                        conns: vec![e.connection_id],
                        primary: e.connection_id,
                        since: Instant::now(),
                    },
                );
                self.primaries.set(e.peer_id, e.connection_id);
                self.emit(Event::Connected {
                    node: node.clone(),
                    addr,
                    outbound,
                });
            }
            Some(p) => {
                let others = p.conns.clone();
                p.conns.push(e.connection_id);
                match admission {
                    Admission::Fresh => closed = others,
                    Admission::Replace => {
                        let deadline = Instant::now() + REPLACE_GRACE;
                        for id in &others {
                            if let Some(c) = self.conns.get_mut(id)
                                && c.closing.is_none()
                            {
                                c.superseded.get_or_insert(deadline);
                            }
                        }
                    }
                    Admission::Takeover => {
                        let deadline = Instant::now() + DUPLICATE_GRACE;
                        for id in &others {
                            if let Some(c) = self.conns.get_mut(id) {
                                c.superseded.get_or_insert(deadline);
                            }
                        }
                    }
                    Admission::Extra => {}
                }
                if admission != Admission::Extra {
                    p.primary = e.connection_id;
                    self.primaries.set(e.peer_id, e.connection_id);
                }
            }
        }
        for id in closed {
            self.close_duplicate(e.peer_id, id);
        }
        // A routed connection leaves the configured addresses to be dialled directly.
        for t in self.targets.iter_mut().filter(|_| !routed) {
            if t.state == State::Dialing(e.connection_id) {
                t.peer = Some(e.peer_id);
                t.node = Some(node.clone());
                t.state = State::Connected;
            } else if t.peer == Some(e.peer_id) {
                t.node = Some(node.clone());
                if matches!(t.state, State::Waiting(_) | State::Blocked) {
                    t.state = State::Connected;
                }
            }
        }
    }

    /// Forgets a closed connection; when it was the peer's last, reports the disconnect and
    /// schedules redials of the peer's configured addresses.
    pub(super) fn on_closed(&mut self, e: ConnectionClosed<'_>) {
        let Some(conn) = self.conns.remove(&e.connection_id) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&e.peer_id) else {
            return;
        };
        p.conns.retain(|c| *c != e.connection_id);
        if !p.conns.is_empty() {
            if p.primary == e.connection_id {
                // Another connection takes over: one this node does not close, the keeper first.
                let keeper = |c: &Conn| c.outbound == (self.local < c.node);
                let conns = &self.conns;
                // Direct before routed, then open before closing, then the keeper.
                let rank = |id: &ConnectionId| {
                    conns.get(id).map_or(0, |c| {
                        1 + u8::from(!c.routed) * 4
                            + u8::from(c.closing.is_none()) * 2
                            + u8::from(keeper(c))
                    })
                };
                p.primary = p
                    .conns
                    .iter()
                    .copied()
                    .max_by_key(rank)
                    .unwrap_or(p.conns[0]);
                self.primaries.set(e.peer_id, p.primary);
                if let Some(c) = self.conns.get_mut(&p.primary) {
                    c.superseded = None;
                }
            }
            // The last direct connection went while a routed one stays: the configured
            // addresses are dialled again (a routed connection does not keep a peer connected
            // as far as redial goes).
            if !conn.routed && !self.has_direct(&e.peer_id) {
                for i in 0..self.targets.len() {
                    let t = &self.targets[i];
                    if t.peer == Some(e.peer_id) && t.state == State::Connected {
                        self.reschedule(i, false);
                    }
                }
            }
            if conn.superseded.is_some() && conn.closing.is_none() {
                // The peer closed a duplicate, as the larger side does.
                self.emit(Event::DuplicateClosed { node: conn.node });
            }
            return;
        }
        let since = p.since;
        self.peers.remove(&e.peer_id);
        self.primaries.remove(&e.peer_id);
        let reason = match (conn.closing, e.cause) {
            (Some(Closing::Dead(n, silent)), _) => format!(
                "dead: no ping answered and no frame for {:.1} s ({n} pings failed)",
                silent.as_secs_f64()
            ),
            (Some(Closing::Dropped), _) => "denied".to_string(),
            (Some(Closing::Banned(offence)), _) => format!("banned ({offence})"),
            (Some(Closing::Duplicate), _) => "duplicate closed".to_string(),
            (None, Some(cause)) => cause.to_string(),
            (None, None) => "closed".to_string(),
        };
        let stable = since.elapsed() >= self.config.stable_after;
        let mut retry_in: Option<Duration> = None;
        for i in 0..self.targets.len() {
            let t = &mut self.targets[i];
            if t.peer != Some(e.peer_id) || t.state != State::Connected {
                continue;
            }
            // A connection that stayed up resets the backoff; one that did not counts as a
            // failed attempt, so a peer that keeps dropping connections is redialled ever slower.
            if stable {
                t.failures = 0;
            }
            if let Some(d) = self.reschedule(i, !stable) {
                retry_in = Some(retry_in.map_or(d, |r| r.min(d)));
            }
        }
        self.emit(Event::Disconnected {
            node: conn.node,
            reason,
            retry_in,
        });
    }
}
