//! NodeIds and signature verifiers of origins, parsed and checked once.
//!
//! Every data frame names its origin by key type and public key bytes and carries its
//! signature. Checking them means parsing a public key (up to an 8192-bit RSA key, about 250 µs
//! in a debug build), so an authenticated peer that sends frames from many origins could make
//! each frame cost that. Checked origins are kept here, bounded.

use std::collections::HashMap;

use bcos_p2p_core::{KeyType, NodeId, NodeIdError, Verifier};
use bytes::Bytes;

/// How many checked origins are kept (consortium chains have tens to hundreds of nodes; a
/// flood view holds at most 4096).
pub(crate) const CAPACITY: usize = 4096;

/// A bounded map from an origin's key type and bytes to its checked [`NodeId`] and verifier.
#[derive(Debug)]
pub(crate) struct Origins {
    checked: HashMap<(u8, Bytes), (NodeId, Verifier)>,
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

    /// The NodeId and verifier of the key of type `key_type` ([`KeyType::code`]) with NodeId
    /// `bytes`, checked the first time they are seen (while remembered).
    pub(crate) fn get(
        &mut self,
        key_type: u8,
        bytes: &Bytes,
    ) -> Result<(NodeId, Verifier), NodeIdError> {
        if let Some(known) = self.checked.get(&(key_type, bytes.clone())) {
            return Ok(known.clone());
        }
        self.parsed += 1;
        let kind = KeyType::from_code(key_type)
            .ok_or_else(|| NodeIdError::UnsupportedKeyType(format!("key type code {key_type}")))?;
        let node = NodeId::from_bytes(kind, bytes)?;
        let verifier = node.verifier();
        if self.checked.len() >= self.capacity
            && let Some(evicted) = self.checked.keys().next().cloned()
        {
            self.checked.remove(&evicted);
        }
        // A copy: `bytes` is usually a slice of a whole received frame.
        self.checked.insert(
            (key_type, Bytes::copy_from_slice(bytes)),
            (node.clone(), verifier.clone()),
        );
        Ok((node, verifier))
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
        let code = KeyType::Secp256k1.code();
        let bytes = |k: &NodeId| Bytes::copy_from_slice(k.as_bytes());
        let mut origins = Origins::new(3);
        for _ in 0..10 {
            assert_eq!(origins.get(code, &bytes(&keys[0])).unwrap().0, keys[0]);
        }
        assert_eq!(origins.parsed, 1);
        for k in &keys {
            assert_eq!(&origins.get(code, &bytes(k)).unwrap().0, k);
        }
        assert_eq!(origins.parsed, 5);
        assert_eq!(origins.checked.len(), 3);
        // Bad bytes, and a key type the bytes are not, are errors every time and are not
        // remembered.
        for _ in 0..3 {
            assert!(origins.get(code, &Bytes::from_static(&[4u8; 64])).is_err());
            assert!(origins.get(KeyType::Rsa.code(), &bytes(&keys[1])).is_err());
            assert!(origins.get(0, &bytes(&keys[1])).is_err());
        }
        assert_eq!(origins.parsed, 14);
        assert_eq!(origins.checked.len(), 3);
    }
}
