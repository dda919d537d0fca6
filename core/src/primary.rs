//! Which connection to use for a peer that briefly has several.
//!
//! When two nodes dial each other at once, both connections come up and the connection manager
//! closes one (deterministically, the same on both sides). Until it does, protocols that pick
//! one connection per peer must pick the one that stays, or what they send on the other is lost
//! with it. The manager writes its choice here; protocols read it.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;

/// The connection kept per peer. Clones share entries.
#[derive(Debug, Clone, Default)]
pub struct PrimaryConnections {
    inner: Arc<RwLock<HashMap<PeerId, ConnectionId>>>,
}

impl PrimaryConnections {
    /// The connection kept for `peer`, if the manager has chosen one.
    pub fn get(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .copied()
    }

    /// Records the connection kept for `peer`.
    pub fn set(&self, peer: PeerId, connection: ConnectionId) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, connection);
    }

    /// Forgets `peer` (its last connection closed).
    pub fn remove(&self, peer: &PeerId) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    /// Of `candidates` (a peer's connections, oldest first), the kept one if it is among them,
    /// else the oldest.
    pub fn pick(&self, peer: &PeerId, candidates: &[ConnectionId]) -> Option<ConnectionId> {
        self.get(peer)
            .filter(|c| candidates.contains(c))
            .or_else(|| candidates.first().copied())
    }
}
