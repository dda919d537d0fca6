//! PeerId → NodeId for peers whose PeerId does not contain their key.

use std::sync::{Arc, RwLock};

use libp2p_identity::PeerId;

use crate::{NodeId, pinned::PinnedMap};

/// Most PeerId → NodeId entries kept; beyond it the book forgets entries of peers with no
/// connection (pinned entries are never forgotten). Entries come only from completed
/// authenticated handshakes, so this bounds memory even under churn.
const BOOK_CAPACITY: usize = 65_536;

/// PeerId → NodeId for every peer that completed a handshake.
///
/// secp256k1 PeerIds contain their key, but P-256, RSA and SM2 PeerIds are hashes (see
/// [`NodeId`]'s docs); the security handshake sees the key and records it here, so code that
/// only has a PeerId (swarm events, protocol handlers) can name the node. Clones share entries.
///
/// The connection manager pins the entry of each connected peer ([`NodeIdBook::pin`]): when
/// the book is full, a flood of handshakes with throwaway keys pushes out only entries of
/// peers that are gone, never a connected peer's (which would make it "unknown").
#[derive(Debug, Clone)]
pub struct NodeIdBook {
    inner: Arc<RwLock<PinnedMap<PeerId, NodeId>>>,
}

impl Default for NodeIdBook {
    fn default() -> Self {
        NodeIdBook {
            inner: Arc::new(RwLock::new(PinnedMap::new(BOOK_CAPACITY))),
        }
    }
}

impl NodeIdBook {
    /// The NodeId of a peer: as recorded, else from the PeerId itself when it inlines the key.
    ///
    /// The book is asked first even for PeerIds that inline their key: reading a secp256k1 key
    /// back out of a PeerId decodes and checks a curve point, a cost every request from a
    /// secp256k1 peer paid (see the unicast bench figures in the README).
    pub fn resolve(&self, peer: &PeerId) -> Option<NodeId> {
        if let Some(node) = self.read().get(peer) {
            return Some(node.clone());
        }
        NodeId::from_peer_id(peer).ok()
    }

    /// Records a peer's NodeId (every peer's, so that [`NodeIdBook::resolve`] is a lookup).
    /// When the book is full, an entry of a peer with no connection makes room (see
    /// [`PinnedMap`]).
    pub fn insert(&self, peer: PeerId, node: NodeId) {
        self.write().insert(peer, node);
    }

    /// A connection to `peer` is up: its entry (if any) is kept until [`NodeIdBook::unpin`].
    pub fn pin(&self, peer: &PeerId) {
        self.write().pin(peer);
    }

    /// A connection to `peer` closed.
    pub fn unpin(&self, peer: &PeerId) {
        self.write().unpin(peer);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PinnedMap<PeerId, NodeId>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PinnedMap<PeerId, NodeId>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, NodeKey};

    #[test]
    fn connected_peers_survive_a_full_book() {
        let book = NodeIdBook::default();
        let node = NodeKey::generate(KeyType::P256).unwrap().node_id().clone();
        let pinned: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        for p in &pinned {
            book.insert(*p, node.clone());
            book.pin(p);
        }
        // Throwaway identities, more than the book holds.
        for _ in 0..BOOK_CAPACITY + 5000 {
            book.insert(PeerId::random(), node.clone());
        }
        assert!(pinned.iter().all(|p| book.resolve(p).is_some()));
        assert_eq!(book.inner.read().unwrap().len(), BOOK_CAPACITY);
    }
}
