//! PeerId → NodeId for peers whose PeerId does not contain their key.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use libp2p_identity::PeerId;

use crate::NodeId;

/// Most PeerId → NodeId entries kept; beyond it the book forgets arbitrary entries. Entries come
/// only from completed CA-authenticated handshakes, so this bounds memory even under churn.
const BOOK_CAPACITY: usize = 65_536;

/// PeerId → NodeId for every peer that completed a handshake.
///
/// secp256k1 PeerIds contain their key, but P-256 and RSA PeerIds are hashes (see
/// [`NodeId`]'s docs); the security handshake sees the key and records it here, so code that
/// only has a PeerId (swarm events, protocol handlers) can name the node. Clones share entries.
#[derive(Debug, Clone, Default)]
pub struct NodeIdBook {
    inner: Arc<RwLock<HashMap<PeerId, NodeId>>>,
}

impl NodeIdBook {
    /// The NodeId of a peer: from the PeerId itself when it inlines the key, else as recorded.
    pub fn resolve(&self, peer: &PeerId) -> Option<NodeId> {
        NodeId::from_peer_id(peer).ok().or_else(|| {
            self.inner
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(peer)
                .cloned()
        })
    }

    /// Records a peer's NodeId.
    pub fn insert(&self, peer: PeerId, node: NodeId) {
        if NodeId::from_peer_id(&peer).is_ok() {
            return; // recoverable from the PeerId itself
        }
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= BOOK_CAPACITY && !map.contains_key(&peer) {
            let victim = map.keys().next().copied();
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        map.insert(peer, node);
    }
}
