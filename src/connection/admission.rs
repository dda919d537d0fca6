//! Which connections may stay: the peer must be a known node the access lists accept, the
//! connection limits and the per-address limits must have room, and of two connections
//! between the same two nodes only one is kept (the duplicate rule, see [`Behaviour`]).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::route::is_routed;
use libp2p::{
    Multiaddr, PeerId,
    connection_limits::Exceeded,
    swarm::ConnectionDenied as Denied,
    swarm::{CloseConnection, ConnectionDenied, ConnectionId, ListenFailure, ToSwarm},
};

#[cfg(doc)]
use super::Config;
use super::{
    Behaviour, Event, LimitExceeded, LimitKind, Refusal, first_ip,
    ip_rate::{self, Verdict},
    peers::{Closing, Conn},
};
use crate::{
    NodeId,
    ca_tls::{self, UpgradeError},
};

/// How long the smaller side of a duplicate waits for the larger side to close it.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(5);
/// How long the larger side keeps a replaced duplicate open: protocols already send on the
/// kept connection ([`Behaviour::primaries`]), and what was in flight on the duplicate (a
/// request sent just before the keeper came up, its answer) gets time to finish.
pub const REPLACE_GRACE: Duration = Duration::from_millis(1000);
/// The most connections kept to one peer while duplicates close.
const MAX_PER_PEER: usize = 3;

/// Why this behaviour denied a connection (the swarm reports it as the denial's cause).
#[derive(Debug, thiserror::Error)]
pub(super) enum Denial {
    #[error("{0} is already connected")]
    Duplicate(NodeId),
    #[error("{1}: {0}")]
    Access(NodeId, ca_tls::Refusal),
    #[error("NodeId of {0} unknown")]
    UnknownNode(PeerId),
    #[error("too many new connections from {0}")]
    RateLimited(IpAddr),
    #[error("too many connections from {0} still handshaking")]
    PendingLimited(IpAddr),
    #[error("{0} is banned")]
    Banned(NodeId),
}

/// What to do with an accepted connection once the swarm reports it established.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Admission {
    /// The peer's first connection.
    Fresh,
    /// The keeper, on the deciding (larger NodeId) side: close the peer's other connections.
    Replace,
    /// The keeper, on the smaller side: the others wait for the peer to close them.
    Takeover,
    /// A duplicate, on the smaller side: kept open until the peer closes it.
    Extra,
}

impl Admission {
    /// Whether the connection replaces a connection of the peer.
    fn replaces(self) -> bool {
        matches!(self, Admission::Replace | Admission::Takeover)
    }
}

impl Behaviour {
    /// Decides whether a new connection to `peer` may stay (see [`Behaviour`]).
    fn admit(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        outbound: bool,
    ) -> Result<Admission, ConnectionDenied> {
        let Some(node) = self.node_ids.resolve(&peer) else {
            self.emit(Event::Refused {
                addr: addr.clone(),
                reason: Refusal::UnknownNode,
                node: None,
            });
            return Err(ConnectionDenied::new(Denial::UnknownNode(peer)));
        };
        // The lists and the CRLs may have changed while the handshake ran (after its chain
        // check, before this connection counts for `enforce_revocation`).
        let revoked = self
            .revocation
            .as_ref()
            .is_some_and(|r| r.is_revoked(&peer));
        let access = match revoked {
            true => Err(ca_tls::Refusal::Revoked),
            false => self.access.check(&node),
        };
        if let Err(refusal) = access {
            self.emit(Event::Refused {
                addr: addr.clone(),
                reason: Refusal::Tls(refusal.clone()),
                node: Some(node.clone()),
            });
            return Err(ConnectionDenied::new(Denial::Access(node, refusal)));
        }
        let now = Instant::now();
        if let Some(until) = self.scores.banned_until(&node, now) {
            self.emit(Event::Refused {
                addr: addr.clone(),
                reason: Refusal::Banned {
                    remaining: until - now,
                },
                node: Some(node.clone()),
            });
            return Err(ConnectionDenied::new(Denial::Banned(node)));
        }
        let admission = match self.peers.get(&peer) {
            None => Some(Admission::Fresh),
            Some(p) => {
                let all_live = p
                    .conns
                    .iter()
                    .filter_map(|c| self.conns.get(c))
                    .filter(|c| c.closing.is_none());
                // A direct connection beats a routed one (through relays): a routed connection
                // is refused while a direct one is up, and a direct one replaces routed ones.
                // Among connections of one kind, the keeper is the one the smaller NodeId dialled.
                let routed = is_routed(addr);
                let direct_up = all_live.clone().any(|c| !c.routed);
                let live: Vec<&Conn> = all_live.filter(|c| c.routed == routed).collect();
                let keeper = |outbound: bool| outbound == (self.local < node);
                if routed && direct_up {
                    None
                } else if live.is_empty() {
                    Some(Admission::Replace)
                } else if self.local > node {
                    (keeper(outbound) && live.iter().all(|c| !keeper(c.outbound)))
                        .then_some(Admission::Replace)
                } else if live.len() >= MAX_PER_PEER {
                    None
                } else {
                    let primary = self.conns.get(&p.primary).filter(|c| c.closing.is_none());
                    Some(
                        if keeper(outbound) && primary.is_none_or(|c| !keeper(c.outbound)) {
                            Admission::Takeover
                        } else {
                            Admission::Extra
                        },
                    )
                }
            }
        };
        let Some(admission) = admission else {
            self.emit(Event::DuplicateClosed { node: node.clone() });
            return Err(ConnectionDenied::new(Denial::Duplicate(node)));
        };
        self.admitted.insert(id, admission);
        Ok(admission)
    }

    /// [`Self::admit`], then the verdict of the connection limits (`limit`), which a connection
    /// replacing a duplicate ignores: the count is back once the duplicate closes.
    pub(super) fn admit_within<H>(
        &mut self,
        limit: Result<H, ConnectionDenied>,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        outbound: bool,
    ) -> Result<(), ConnectionDenied> {
        let admission = self.admit(id, peer, addr, outbound)?;
        match limit {
            Err(d) if !admission.replaces() => {
                self.admitted.remove(&id);
                Err(self.limit_refused(d, Some(addr), Some(peer)))
            }
            _ => Ok(()),
        }
    }

    /// Closes a duplicate connection of `peer`.
    pub(super) fn close_duplicate(&mut self, peer: PeerId, id: ConnectionId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(Closing::Duplicate);
        let node = c.node.clone();
        self.queue.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::One(id),
        });
        self.emit(Event::DuplicateClosed { node });
    }

    /// Closes duplicates the peer has left open past their grace.
    pub(super) fn close_overdue(&mut self, now: Instant) {
        let overdue: Vec<(PeerId, ConnectionId)> = self
            .peer_conns()
            .filter(|(_, _, c)| c.superseded.is_some_and(|at| at <= now))
            .map(|(peer, id, _)| (peer, id))
            .collect();
        for (peer, id) in overdue {
            self.close_duplicate(peer, id);
        }
    }

    /// The earliest time a replaced duplicate is closed by this node anyway.
    pub(super) fn next_overdue(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.closing.is_none())
            .filter_map(|c| c.superseded)
            .min()
    }

    /// The IP address of `remote`, unless it is one of a configured peer's (exempt from the
    /// per-address limits) or has none.
    fn limited_ip(&self, remote: &Multiaddr) -> Option<IpAddr> {
        let ip = first_ip(remote)?;
        (!self.configured_addr(remote)).then_some(ip)
    }

    /// Whether `remote`'s IP address is in the group of a configured peer's address.
    pub(super) fn configured_addr(&self, remote: &Multiaddr) -> bool {
        let Some(group) = first_ip(remote).map(ip_rate::group) else {
            return false;
        };
        self.targets
            .iter()
            .any(|t| first_ip(&t.addr).is_some_and(|a| ip_rate::group(a) == group))
    }

    /// The established-connection limit's verdict on a new connection of `peer` at `addr`: a
    /// configured peer (by its NodeId or PeerId, or its address) may use the slots kept for
    /// configured peers not connected now, a stranger may not.
    pub(super) fn established_slot(&self, peer: PeerId, addr: &Multiaddr) -> Result<(), Denied> {
        let by_id = self
            .node_ids
            .resolve(&peer)
            .is_some_and(|node| self.configured(&node, peer));
        let configured = by_id || self.configured_addr(addr);
        let unconnected = self
            .targets
            .iter()
            .filter(|t| t.peer.is_none_or(|p| !self.peers.contains_key(&p)))
            .count();
        self.slots
            .admit_established(configured, unconnected)
            .map_err(Denied::new)
    }

    /// Applies the per-address limits to the pending incoming connection `id` from `remote`:
    /// [`Config::new_inbound_per_ip`], then [`Config::max_pending_incoming_per_ip`] (which
    /// counts the connection until [`Self::release_pending`]).
    pub(super) fn per_ip_check(
        &mut self,
        id: ConnectionId,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = self.limited_ip(remote) else {
            return Ok(());
        };
        let now = Instant::now();
        let group = ip_rate::group(ip);
        if let Some(Verdict::Refuse { report }) = self.ip_rate.as_mut().map(|r| r.admit(ip, now)) {
            let reason = |ip, unreported| Refusal::RateLimited { ip, unreported };
            return Err(self.refuse_ip(remote, group, report, reason, Denial::RateLimited));
        }
        let pending = self.ip_pending.as_mut().map(|p| p.admit(id, ip, now));
        if let Some(Verdict::Refuse { report }) = pending {
            let group = ip_rate::pending_group(ip);
            let reason = |ip, unreported| Refusal::PendingLimited { ip, unreported };
            return Err(self.refuse_ip(remote, group, report, reason, Denial::PendingLimited));
        }
        Ok(())
    }

    /// Refuses a pending connection from `remote` (address `group`) by a per-address limit;
    /// emits the refusal when `report` says so (see [`ip_rate::Verdict`]).
    fn refuse_ip(
        &mut self,
        remote: &Multiaddr,
        group: IpAddr,
        report: Option<u32>,
        reason: fn(IpAddr, u32) -> Refusal,
        denial: fn(IpAddr) -> Denial,
    ) -> ConnectionDenied {
        if let Some(unreported) = report {
            let reason = reason(group, unreported);
            tracing::warn!(%remote, "refusing: {reason}");
            self.emit(Event::Refused {
                addr: remote.clone(),
                reason,
                node: None,
            });
        }
        ConnectionDenied::new(denial(group))
    }

    /// Connection `id` is no longer pending (established, failed or denied): its address may
    /// start another.
    pub(super) fn release_pending(&mut self, id: ConnectionId) {
        self.slots.release_pending(id);
        if let Some(pending) = &mut self.ip_pending {
            pending.release(id);
        }
    }

    /// Emits a refusal for a connection limit.
    pub(super) fn limit_refused(
        &mut self,
        denied: ConnectionDenied,
        addr: Option<&Multiaddr>,
        peer: Option<PeerId>,
    ) -> ConnectionDenied {
        let exceeded = match denied.downcast_ref::<LimitExceeded>() {
            Some(e) => Some(*e),
            // libp2p's limits hold only `max_pending_outgoing` (see `Config::limits`).
            None => denied.downcast_ref::<Exceeded>().map(|e| LimitExceeded {
                limit: e.limit(),
                kind: LimitKind::PendingOutgoing,
            }),
        };
        if let Some(e) = exceeded {
            let event = Event::Refused {
                addr: addr.cloned().unwrap_or_else(Multiaddr::empty),
                reason: Refusal::Limit(e),
                node: peer.and_then(|p| self.node_ids.resolve(&p)),
            };
            self.emit(event);
        }
        denied
    }

    /// An incoming connection ended before it was established: frees its per-address slot
    /// and reports a CA-TLS refusal in the error.
    pub(super) fn on_listen_failure(&mut self, e: ListenFailure<'_>) {
        self.admitted.remove(&e.connection_id);
        self.release_pending(e.connection_id);
        if let Some(u) = UpgradeError::find(e.error) {
            self.refused_tls(e.send_back_addr.clone(), u);
        }
    }

    /// Reports a CA-TLS refusal (by either side) of a connection with `addr`.
    pub(super) fn refused_tls(&mut self, addr: Multiaddr, u: &UpgradeError) {
        self.emit(Event::Refused {
            addr,
            reason: Refusal::Tls(u.refusal().clone()),
            node: u.node_id().cloned(),
        });
    }
}
