//! The relay side of the route behaviour: route streams that pass through this node (or end
//! here), checked against the budgets and opened on to the next hop.

use std::sync::atomic::Ordering;

use bcos_p2p_core::NodeId;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionId, Stream};

use crate::{Behaviour, Code, In, Reply, wire};

/// A circuit relayed for the previous hop.
pub(crate) struct Relayed {
    pub(crate) from: PeerId,
    pub(crate) from_conn: ConnectionId,
    /// The connection the next hop's stream is opened on.
    pub(crate) to_conn: ConnectionId,
    pub(crate) stream: u64,
    /// Whether the pump runs (counted in `active`).
    pub(crate) piped: bool,
}

impl Behaviour {
    /// A peer's route stream arrived with `path`.
    pub(crate) fn on_inbound(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        stream: u64,
        path: Vec<NodeId>,
    ) {
        let refuse = |code| In::Refuse { stream, code };
        if path.is_empty() {
            if !self.config.accept || !self.link.is_listening() {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return self.notify(peer, connection, refuse(Code::NotAccepting));
            }
            // Answer `Ok` only for a circuit the transport will take, and within the caps on
            // routed handshakes (per last relay, and in all).
            let through = self
                .pending_inbound
                .values()
                .filter(|v| **v == peer)
                .count();
            if !self.link.can_take()
                || through >= crate::MAX_PENDING_PER_RELAY
                || self.pending_inbound.len() >= crate::MAX_PENDING_ROUTED
            {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return self.notify(peer, connection, refuse(Code::Busy));
            }
            return self.notify(peer, connection, In::Accept { stream });
        }
        let code = if !self.config.relay {
            Some(Code::RelayOff)
        } else if path.len() > self.config.max_hops.min(wire::MAX_PATH) {
            Some(Code::TooManyHops)
        } else if path.contains(&self.me)
            || self
                .node_ids
                .resolve(&peer)
                .is_some_and(|n| path.contains(&n))
        {
            Some(Code::Loop)
        } else if self.relaying.len() >= self.config.max_circuits
            || self.relayed_per_peer.get(&peer).copied().unwrap_or(0)
                >= self.config.max_circuits_per_peer
        {
            Some(Code::Busy)
        } else {
            None
        };
        if let Some(code) = code {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return self.notify(peer, connection, refuse(code));
        }
        let Some((next_peer, next_conn)) = self.direct_to(&path[0]) else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return self.notify(peer, connection, refuse(Code::NoLink));
        };
        let circuit = self.next_circuit;
        self.next_circuit += 1;
        *self.relayed_per_peer.entry(peer).or_default() += 1;
        self.relaying.insert(
            circuit,
            Relayed {
                from: peer,
                from_conn: connection,
                to_conn: next_conn,
                stream,
                piped: false,
            },
        );
        self.notify(
            next_peer,
            next_conn,
            In::Open {
                circuit,
                path: path[1..].to_vec(),
            },
        );
    }

    /// The next hop of a circuit relayed for another node answered.
    pub(crate) fn on_opened_relayed(
        &mut self,
        circuit: u64,
        result: Result<(Stream, Reply), String>,
    ) {
        let Some(r) = self.relaying.get_mut(&circuit) else {
            return;
        };
        let (from, from_conn, stream) = (r.from, r.from_conn, r.stream);
        match result {
            Ok((next, reply)) => {
                if reply.code == Code::Ok {
                    r.piped = true;
                    self.stats.relayed_circuits.fetch_add(1, Ordering::Relaxed);
                    self.stats.active.fetch_add(1, Ordering::Relaxed);
                }
                self.notify(
                    from,
                    from_conn,
                    In::Pipe {
                        stream,
                        circuit,
                        next,
                        reply,
                    },
                );
                if reply.code != Code::Ok {
                    self.end_relayed(circuit);
                }
            }
            Err(e) => {
                tracing::debug!(circuit, error = %e, "route: next hop failed");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.end_relayed(circuit);
                self.notify(
                    from,
                    from_conn,
                    In::Refuse {
                        stream,
                        code: Code::NoLink,
                    },
                );
            }
        }
    }

    pub(crate) fn end_relayed(&mut self, circuit: u64) {
        let Some(r) = self.relaying.remove(&circuit) else {
            return;
        };
        if r.piped {
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(n) = self.relayed_per_peer.get_mut(&r.from) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.relayed_per_peer.remove(&r.from);
            }
        }
    }
}
