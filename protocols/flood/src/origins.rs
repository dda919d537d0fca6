//! NodeIds of origins not (yet) in the topology, parsed and checked once.
//!
//! Every data frame and record names its origin by its public key bytes. Checking them means
//! parsing a public key (up to an 8192-bit RSA key, about 250 µs in a debug build), so an
//! authenticated peer that sends frames from an origin the topology does not know (yet), or
//! resends records, could make each frame cost that. Checked origins are kept here, bounded.

use std::collections::HashMap;

use bcos_p2p_core::{NodeId, NodeIdError};
use bytes::Bytes;

/// How many checked origins are kept (consortium chains have tens to hundreds of nodes).
pub(crate) const CAPACITY: usize = 1024;

/// A bounded map from origin bytes to checked [`NodeId`]s.
#[derive(Debug)]
pub(crate) struct Origins {
    checked: HashMap<Bytes, NodeId>,
    capacity: usize,
    /// How many origins were parsed and checked (cache misses).
    pub parsed: u64,
}

impl Origins {
    pub(crate) fn new(capacity: usize) -> Self {
        Origins {
            checked: HashMap::new(),
            capacity: capacity.max(1),
            parsed: 0,
        }
    }

    /// The NodeId `bytes` name, checked the first time they are seen (while remembered).
    pub(crate) fn get(&mut self, bytes: &[u8]) -> Result<NodeId, NodeIdError> {
        if let Some(node) = self.checked.get(bytes) {
            return Ok(node.clone());
        }
        self.parsed += 1;
        // The wire carries the NodeId bytes without a key type (SPEC.md): the untyped rule reads them.
        let node = NodeId::from_untyped_bytes(bytes)?;
        if self.checked.len() >= self.capacity
            && let Some(evicted) = self.checked.keys().next().cloned()
        {
            self.checked.remove(&evicted);
        }
        // A copy: `bytes` is usually a slice of a whole received frame.
        self.checked
            .insert(Bytes::copy_from_slice(bytes), node.clone());
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use bcos_p2p_core::{KeyType, NodeKey};

    use super::*;

    #[test]
    fn each_origin_is_checked_once_while_remembered_and_the_map_stays_bounded() {
        let keys: Vec<NodeId> = (0..5)
            .map(|_| {
                NodeKey::generate(KeyType::Secp256k1)
                    .unwrap()
                    .node_id()
                    .clone()
            })
            .collect();
        let mut origins = Origins::new(3);
        for _ in 0..10 {
            assert_eq!(origins.get(keys[0].as_bytes()).unwrap(), keys[0]);
        }
        assert_eq!(origins.parsed, 1);
        for k in &keys {
            assert_eq!(&origins.get(k.as_bytes()).unwrap(), k);
        }
        assert_eq!(origins.parsed, 5);
        assert_eq!(origins.checked.len(), 3);
        // Bad bytes are an error every time and are not remembered.
        for _ in 0..3 {
            assert!(origins.get(&[4u8; 64]).is_err());
        }
        assert_eq!(origins.parsed, 8);
        assert_eq!(origins.checked.len(), 3);
    }
}
