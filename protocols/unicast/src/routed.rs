//! Requests to nodes with no connection: a routed connection is dialled (through the route
//! protocol's relays) and the messages wait for it; routed connections idle too long close.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bcos_p2p_core::route_link::{circuit_address, is_routed};
use libp2p_core::ConnectedPoint;
use libp2p_identity::PeerId;
use libp2p_swarm::{
    CloseConnection, ConnectionId, DialError, ToSwarm,
    dial_opts::{DialOpts, PeerCondition},
};

use crate::{Behaviour, UnicastError, codec::Frame, handler::Command};

/// Why a routed dial failed, in words: the innermost cause of each transport error (the route
/// behaviour's reason: no path, a relay's refusal, ...), without the layers of wrapping.
pub(crate) fn dial_reason(error: &DialError) -> String {
    fn innermost(mut e: &dyn std::error::Error) -> String {
        while let Some(source) = e.source() {
            e = source;
        }
        let text = e.to_string();
        text.strip_prefix("unreachable: ")
            .map_or(text.clone(), str::to_string)
    }
    match error {
        DialError::Transport(errors) if !errors.is_empty() => {
            let mut reasons: Vec<String> = errors.iter().map(|(_, e)| innermost(e)).collect();
            reasons.dedup();
            reasons.join("; ")
        }
        other => innermost(other),
    }
}

/// How often idle routed connections are looked for.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Messages waiting for a routed connection to a peer.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// The routed dial's connection id (the connection's, once it is up).
    pub dial: ConnectionId,
    /// Frames to send once it is up: requests (by id) and one-way messages.
    pub frames: Vec<(Option<u64>, Frame)>,
    /// Payload bytes of the one-way messages among them.
    pub oneway_bytes: usize,
}

/// Routed connections and what waits for them.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    pub waiting: HashMap<PeerId, Waiting>,
    /// Routed connections up: their peer and when unicast last carried anything on them.
    pub used: HashMap<ConnectionId, (PeerId, Instant)>,
}

impl Behaviour {
    /// Queues `frame` (request `id`, or a one-way message) for `peer`, dialling a routed
    /// connection if none is being dialled; returns the connection it will go on.
    pub(crate) fn wait_for_route(
        &mut self,
        peer: PeerId,
        id: Option<u64>,
        frame: Frame,
    ) -> ConnectionId {
        let waiting = self.routed.waiting.entry(peer).or_insert_with(|| {
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![circuit_address()])
                // A direct dial in progress (the connection manager's) does not stop this one:
                // whichever comes up first carries the messages.
                .condition(PeerCondition::Disconnected)
                .build();
            let dial = opts.connection_id();
            self.events.push_back(ToSwarm::Dial { opts });
            Waiting {
                dial,
                frames: Vec::new(),
                oneway_bytes: 0,
            }
        });
        if let (None, Frame::Oneway { payload, .. }) = (id, &frame) {
            waiting.oneway_bytes = waiting.oneway_bytes.saturating_add(payload.len());
        }
        waiting.frames.push((id, frame));
        waiting.dial
    }

    /// A connection to `peer` came up: what waits for the peer goes on it.
    pub(crate) fn route_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        // Only the end that dialled closes an idle routed connection: both closing on the same
        // timer would end a request sent just before it.
        if endpoint.is_dialer() && is_routed(endpoint.get_remote_address()) {
            self.routed.used.insert(connection, (peer, Instant::now()));
        }
        let Some(waiting) = self.routed.waiting.remove(&peer) else {
            return;
        };
        for (id, frame) in waiting.frames {
            if let Some(id) = id {
                // Ended meanwhile (timed out): not sent.
                let Some(p) = self.pending.get_mut(&id) else {
                    continue;
                };
                p.connection = connection;
            }
            self.notify(peer, connection, Command::Send(frame));
        }
    }

    /// A dial failed: if it was a routed dial messages wait for, they fail.
    pub(crate) fn route_failed(
        &mut self,
        peer: Option<PeerId>,
        connection: ConnectionId,
        why: String,
    ) {
        let Some(peer) = peer else {
            return;
        };
        if self
            .routed
            .waiting
            .get(&peer)
            .is_none_or(|w| w.dial != connection)
        {
            return;
        }
        let Some(waiting) = self.routed.waiting.remove(&peer) else {
            return;
        };
        let mut lost = 0usize;
        for (id, _) in waiting.frames {
            match id {
                Some(id) => self.finish(id, Err(UnicastError::Unreachable(why.clone()))),
                None => lost += 1,
            }
        }
        if lost > 0 {
            tracing::warn!(%peer, lost, reason = %why, "one-way messages dropped: no route to the node");
        }
    }

    /// Marks a routed connection as used now (a no-op for direct ones).
    pub(crate) fn route_used(&mut self, connection: ConnectionId) {
        // Called for every frame: most nodes have no routed connection, so skip the lookup.
        if self.routed.used.is_empty() {
            return;
        }
        if let Some((_, at)) = self.routed.used.get_mut(&connection) {
            *at = Instant::now();
        }
    }

    /// Closes routed connections that carried nothing for `routed_idle_timeout` and have no
    /// request of ours waiting on them.
    pub(crate) fn close_idle_routes(&mut self) {
        let now = Instant::now();
        let limit = self.config.routed_idle_timeout;
        let idle: Vec<(ConnectionId, PeerId)> = self
            .routed
            .used
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= limit)
            .map(|(c, (p, _))| (*c, *p))
            .collect();
        for (connection, peer) in idle {
            if self.pending.values().any(|p| p.connection == connection) {
                continue;
            }
            self.routed.used.remove(&connection);
            tracing::debug!(%peer, "closing an idle routed connection");
            self.events.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::One(connection),
            });
        }
    }
}
