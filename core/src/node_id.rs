//! `NodeId`: a node's public key in FISCO BCOS's text form, and its lossless mapping to libp2p keys.
//!
//! FISCO BCOS names a node by its public key: for secp256k1 and P-256 the uncompressed point `X‖Y`
//! without the leading `04` (128 hex characters), for RSA the modulus. The same key is the node's
//! libp2p identity, so a `NodeId` converts to a [`PublicKey`] and a [`PeerId`] without loss.
//!
//! The reverse direction, [`PeerId`] to `NodeId`, is only possible when the PeerId *contains* the
//! key. libp2p inlines keys of at most 42 protobuf bytes (secp256k1: 37) and hashes larger ones
//! with SHA-256 (P-256: 91+ bytes, RSA: 270+ bytes), so a P-256 or RSA PeerId cannot be turned
//! back into a key; the TLS handshake, which sees the key, records it instead.
//!
//! A `NodeId` knows its key type, and the constructors take it from where it is known: the
//! libp2p key ([`NodeId::from_public_key`]) or the caller ([`NodeId::from_bytes`]). Bytes and hex
//! text that arrive without a type go through [`NodeId::from_untyped_bytes`] and `FromStr`, which
//! apply the one rule of [`KeyType::for_untyped_bytes`]. What differs per key type is in the
//! key-type table (`keys/`).

use std::{fmt, str::FromStr, sync::Arc};

use libp2p_identity::{PeerId, PublicKey};

use crate::{KeyType, keys};

/// Why a string, key or PeerId is not a valid NodeId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// The text has characters other than hex digits (after an optional `0x`).
    #[error("NodeId is not hex: {0}")]
    NotHex(String),
    /// The text has a length no key type has.
    #[error("NodeId has {0} hex characters; expected {lengths}", lengths = keys::node_id_lengths())]
    BadLength(usize),
    /// 128 hex characters that are a point on neither secp256k1 nor P-256 (or, from
    /// [`NodeId::from_bytes`], not on the curve of the key type given).
    #[error("NodeId is not a point on {curves}", curves = KeyType::labels(KeyType::ec_types()))]
    NotOnCurve,
    /// The RSA modulus is not a usable key.
    #[error("NodeId is not a usable RSA modulus: {0}")]
    BadRsaModulus(String),
    /// A key type NodeIds do not cover (e.g. Ed25519).
    #[error("unsupported key type {0} (NodeIds are {types} keys)", types = KeyType::labels(KeyType::ALL))]
    UnsupportedKeyType(String),
    /// The PeerId is a hash of the key, which cannot be reversed.
    #[error(
        "PeerId {0} is a SHA-256 hash of a {hashed} key; the NodeId needs the key itself (learnt in the handshake)",
        hashed = keys::hashed_peer_id_types()
    )]
    HashedPeerId(PeerId),
}

/// A node's identity: its public key, shown as FISCO BCOS shows it.
///
/// ```
/// use bcos_p2p_core::{KeyType, NodeId, NodeKey};
///
/// let key = NodeKey::generate(KeyType::Secp256k1).unwrap();
/// let text = key.node_id().to_string(); // 128 hex characters, as in FISCO's node.nodeid
/// assert_eq!(text.len(), 128);
///
/// // Parsing accepts upper case and a 0x prefix, and checks the point is on a curve.
/// let id: NodeId = format!("0x{}", text.to_uppercase()).parse().unwrap();
/// assert_eq!(&id, key.node_id());
/// assert!("00".repeat(64).parse::<NodeId>().is_err());
///
/// // The NodeId is the node's libp2p identity.
/// assert_eq!(id.to_peer_id(), key.keypair().unwrap().public().to_peer_id());
/// assert_eq!(NodeId::from_peer_id(&id.to_peer_id()).unwrap(), id);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// `X‖Y` (64 bytes) for EC keys, the big-endian modulus for RSA.
    bytes: Arc<[u8]>,
    key_type: KeyType,
}

impl NodeId {
    /// The NodeId of a libp2p public key (its key type is the libp2p key's).
    pub fn from_public_key(key: &PublicKey) -> Result<Self, NodeIdError> {
        let libp2p_type = key.key_type();
        let key_type = KeyType::for_libp2p(&libp2p_type)
            .ok_or_else(|| NodeIdError::UnsupportedKeyType(format!("{libp2p_type:?}")))?;
        Ok(NodeId {
            bytes: (key_type.spec().node_id_of)(key)?,
            key_type,
        })
    }

    /// The NodeId of a PeerId that inlines its key (secp256k1). P-256 and RSA PeerIds are hashes:
    /// see the module docs.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, NodeIdError> {
        let mh = peer.as_ref();
        if mh.code() != 0x00 {
            return Err(NodeIdError::HashedPeerId(*peer));
        }
        let key = PublicKey::try_decode_protobuf(mh.digest())
            .map_err(|e| NodeIdError::UnsupportedKeyType(e.to_string()))?;
        Self::from_public_key(&key)
    }

    /// A NodeId of a known key type from its raw bytes (what [`NodeId::as_bytes`] returns): `X‖Y`
    /// of a point, checked to be on the type's curve, or an RSA modulus.
    pub fn from_bytes(key_type: KeyType, bytes: &[u8]) -> Result<Self, NodeIdError> {
        let spec = key_type.spec();
        if !spec.node_id_len.contains(&bytes.len()) {
            // Reported in hex characters, the form people see.
            return Err(NodeIdError::BadLength(bytes.len() * 2));
        }
        (spec.check_node_id)(bytes)?;
        Ok(NodeId {
            bytes: bytes.into(),
            key_type,
        })
    }

    /// A NodeId from raw bytes that arrive without their key type, as wire formats carry them:
    /// the type is the one [`KeyType::for_untyped_bytes`] reads them as.
    pub fn from_untyped_bytes(bytes: &[u8]) -> Result<Self, NodeIdError> {
        Ok(NodeId {
            key_type: KeyType::for_untyped_bytes(bytes)?,
            bytes: bytes.into(),
        })
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The raw bytes: `X‖Y` for EC keys, the modulus for RSA.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The libp2p public key; `None` for a type libp2p does not have (SM2).
    pub fn to_public_key(&self) -> Option<PublicKey> {
        (self.key_type.spec().public_key)(&self.bytes)
    }

    /// What checks this node's signatures ([`crate::NodeKey::sign`]); make it once per node
    /// and keep it, as it parses the key.
    pub fn verifier(&self) -> Verifier {
        Verifier((self.key_type.spec().verify_key)(&self.bytes))
    }

    /// The libp2p PeerId of this node.
    pub fn to_peer_id(&self) -> PeerId {
        (self.key_type.spec().peer_id)(&self.bytes)
    }

    /// The first 8 hex characters: enough to tell nodes apart in logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.bytes[..4])
    }
}

/// Hex text (FISCO's `node.nodeid`, config lists, CLI arguments) carries no key type: it is read
/// by the rule of [`KeyType::for_untyped_bytes`]. Upper case and a `0x` prefix are accepted.
impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            let shown: String = s.chars().take(16).collect();
            return Err(NodeIdError::NotHex(shown));
        }
        if !s.len().is_multiple_of(2) {
            return Err(NodeIdError::BadLength(s.len()));
        }
        let bytes = hex::decode(s).map_err(|e| NodeIdError::NotHex(e.to_string()))?;
        NodeId::from_untyped_bytes(&bytes)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.bytes))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({}:{})", self.key_type, self)
    }
}

impl TryFrom<&PublicKey> for NodeId {
    type Error = NodeIdError;
    fn try_from(key: &PublicKey) -> Result<Self, Self::Error> {
        NodeId::from_public_key(key)
    }
}

impl TryFrom<&PeerId> for NodeId {
    type Error = NodeIdError;
    fn try_from(peer: &PeerId) -> Result<Self, Self::Error> {
        NodeId::from_peer_id(peer)
    }
}

impl From<&NodeId> for PeerId {
    fn from(id: &NodeId) -> Self {
        id.to_peer_id()
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks the signatures of one node: see [`NodeId::verifier`].
#[derive(Debug, Clone)]
pub struct Verifier(pub(crate) VerifyKey);

/// The key a [`Verifier`] checks with, as its key type's row decides.
#[derive(Debug, Clone)]
pub(crate) enum VerifyKey {
    /// Checked by libp2p (its `PublicKey::verify`).
    Libp2p(PublicKey),
    /// A secp256k1 key, checked by libsecp256k1 (`keys::secp256k1`).
    Secp256k1(libsecp256k1::PublicKey),
    /// An SM2 key (`keys::sm2`); `None` verifies nothing.
    Sm2(Option<Arc<sm2::dsa::VerifyingKey>>),
}

impl Verifier {
    /// Whether `signature` is the node's signature of `message` ([`crate::NodeKey::sign`]).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.0 {
            VerifyKey::Libp2p(key) => key.verify(message, signature),
            VerifyKey::Secp256k1(key) => keys::secp256k1_verify(key, message, signature),
            VerifyKey::Sm2(key) => key
                .as_ref()
                .is_some_and(|key| keys::sm2_verify(key, message, signature)),
        }
    }
}
