//! Deny and allow lists by NodeId (FISCO BCOS's `certificate_blacklist` / `certificate_whitelist`),
//! checked inside the TLS handshake so a refused node never reaches any protocol.
//!
//! Deny wins; the allow list applies only when it is not empty. The lists are shared handles:
//! changing them affects every later handshake at once (dropping existing sessions is the
//! connection manager's job).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use bcos_p2p_core::NodeId;
use libp2p_identity::PeerId;

use crate::Refusal;

#[derive(Debug, Default)]
struct Lists {
    deny: HashSet<NodeId>,
    allow: HashSet<NodeId>,
}

/// Shared deny/allow lists.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    inner: Arc<RwLock<Lists>>,
}

impl AccessList {
    /// Lists with the given entries.
    pub fn new(
        deny: impl IntoIterator<Item = NodeId>,
        allow: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        AccessList {
            inner: Arc::new(RwLock::new(Lists {
                deny: deny.into_iter().collect(),
                allow: allow.into_iter().collect(),
            })),
        }
    }

    /// Puts a node on the deny list. Returns whether it was new there.
    pub fn deny(&self, node: NodeId) -> bool {
        self.write().deny.insert(node)
    }

    /// Takes a node off the deny list. Returns whether it was there.
    pub fn undeny(&self, node: &NodeId) -> bool {
        self.write().deny.remove(node)
    }

    /// Puts a node on the allow list (making the list active if it was empty).
    pub fn allow(&self, node: NodeId) -> bool {
        self.write().allow.insert(node)
    }

    /// Takes a node off the allow list. Returns whether it was there.
    pub fn disallow(&self, node: &NodeId) -> bool {
        self.write().allow.remove(node)
    }

    /// The deny list.
    pub fn denied(&self) -> Vec<NodeId> {
        self.read().deny.iter().cloned().collect()
    }

    /// The allow list (empty: everyone the CA certifies is allowed).
    pub fn allowed(&self) -> Vec<NodeId> {
        self.read().allow.iter().cloned().collect()
    }

    /// Whether `node` may connect; the error says why not.
    pub fn check(&self, node: &NodeId) -> Result<(), Refusal> {
        let lists = self.read();
        if lists.deny.contains(node) {
            Err(Refusal::Denied)
        } else if !lists.allow.is_empty() && !lists.allow.contains(node) {
            Err(Refusal::NotAllowed)
        } else {
            Ok(())
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Most PeerId → NodeId entries kept; beyond it the book forgets arbitrary entries. Entries come
/// only from completed CA-authenticated handshakes, so this bounds memory even under churn.
const BOOK_CAPACITY: usize = 65_536;

/// PeerId → NodeId for every peer that completed a handshake.
///
/// secp256k1 PeerIds contain their key, but P-256 and RSA PeerIds are hashes (see
/// [`NodeId`]'s docs); the handshake sees the certificate and records the key here, so code that
/// only has a PeerId (swarm events) can name the node.
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
