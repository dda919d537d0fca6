//! Deny and allow lists by NodeId (FISCO BCOS's `certificate_blacklist` / `certificate_whitelist`),
//! checked inside the TLS handshake so a refused node never reaches any protocol.
//!
//! Deny wins; the allow list applies only when it is not empty. The lists are shared handles:
//! changing them affects every later handshake at once (dropping existing sessions is the
//! connection manager's job).

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use bcos_p2p_core::NodeId;

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

    /// Replaces both lists at once (a config reload).
    pub fn replace(
        &self,
        deny: impl IntoIterator<Item = NodeId>,
        allow: impl IntoIterator<Item = NodeId>,
    ) {
        let mut lists = self.write();
        lists.deny = deny.into_iter().collect();
        lists.allow = allow.into_iter().collect();
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
