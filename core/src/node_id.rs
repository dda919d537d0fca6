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

use std::{fmt, str::FromStr, sync::Arc};

use libp2p_identity::{KeyType as Libp2pKeyType, PeerId, PublicKey};
use rsa::{
    pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey},
    pkcs8::EncodePublicKey,
    traits::PublicKeyParts,
};

/// The kind of key behind a [`NodeId`] or a node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// ECDSA over secp256k1: FISCO BCOS's default.
    Secp256k1,
    /// ECDSA over NIST P-256 (prime256v1).
    P256,
    /// RSA, 2048 bits or more.
    Rsa,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Secp256k1 => "secp256k1",
            KeyType::P256 => "p256",
            KeyType::Rsa => "rsa",
        })
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "secp256k1" | "k256" => Ok(KeyType::Secp256k1),
            "p256" | "p-256" | "prime256v1" | "secp256r1" => Ok(KeyType::P256),
            "rsa" => Ok(KeyType::Rsa),
            other => Err(format!(
                "unknown key type `{other}` (expected secp256k1, p256 or rsa)"
            )),
        }
    }
}

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds the work a hostile key can cause).
pub const MAX_RSA_BITS: usize = 8192;
/// The public exponent assumed when an RSA NodeId (the modulus alone) is turned back into a key.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// Why a string, key or PeerId is not a valid NodeId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// The text has characters other than hex digits (after an optional `0x`).
    #[error("NodeId is not hex: {0}")]
    NotHex(String),
    /// The text has a length no key type has.
    #[error(
        "NodeId has {0} hex characters; expected 128 (secp256k1 or P-256 point) or at least 512 (RSA modulus)"
    )]
    BadLength(usize),
    /// 128 hex characters that are a point on neither secp256k1 nor P-256.
    #[error("NodeId is not a point on secp256k1 or P-256")]
    NotOnCurve,
    /// The RSA modulus is not a usable key.
    #[error("NodeId is not a usable RSA modulus: {0}")]
    BadRsaModulus(String),
    /// A key type NodeIds do not cover (e.g. Ed25519).
    #[error("unsupported key type {0} (NodeIds are secp256k1, P-256 or RSA keys)")]
    UnsupportedKeyType(String),
    /// The PeerId is a hash of the key, which cannot be reversed.
    #[error(
        "PeerId {0} is a SHA-256 hash of a P-256 or RSA key; the NodeId needs the key itself (learnt in the handshake)"
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
/// assert_eq!(id.to_peer_id(), key.keypair().public().to_peer_id());
/// assert_eq!(NodeId::from_peer_id(&id.to_peer_id()).unwrap(), id);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// `X‖Y` (64 bytes) for EC keys, the big-endian modulus for RSA.
    bytes: Arc<[u8]>,
    key_type: KeyType,
}

impl NodeId {
    /// The NodeId of a libp2p public key.
    pub fn from_public_key(key: &PublicKey) -> Result<Self, NodeIdError> {
        match key.key_type() {
            Libp2pKeyType::Secp256k1 => {
                let k = key.clone().try_into_secp256k1().expect("key type checked");
                Ok(Self::ec(KeyType::Secp256k1, &k.to_bytes_uncompressed()))
            }
            Libp2pKeyType::Ecdsa => {
                let k = key.clone().try_into_ecdsa().expect("key type checked");
                Ok(Self::ec(KeyType::P256, &k.to_bytes()))
            }
            Libp2pKeyType::RSA => {
                let k = key.clone().try_into_rsa().expect("key type checked");
                let rsa = rsa::PublicKey::from_pkcs1_der(&k.encode_pkcs1())
                    .map_err(|e| NodeIdError::BadRsaModulus(e.to_string()))?;
                // The NodeId is the modulus alone; it names the key only if the exponent is the
                // one everybody uses (and the one assumed when turning a NodeId back into a key).
                if *rsa.e_bytes() != RSA_EXPONENT {
                    return Err(NodeIdError::UnsupportedKeyType(
                        "RSA key with a public exponent other than 65537".into(),
                    ));
                }
                Ok(NodeId {
                    bytes: rsa.n_bytes().into(),
                    key_type: KeyType::Rsa,
                })
            }
            other => Err(NodeIdError::UnsupportedKeyType(format!("{other:?}"))),
        }
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

    fn ec(key_type: KeyType, uncompressed: &[u8]) -> Self {
        debug_assert_eq!(uncompressed.len(), 65);
        NodeId {
            bytes: uncompressed[1..].into(),
            key_type,
        }
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The raw bytes: `X‖Y` for EC keys, the modulus for RSA.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The libp2p public key.
    pub fn to_public_key(&self) -> PublicKey {
        match self.key_type {
            KeyType::Secp256k1 => {
                let k = libp2p_identity::secp256k1::PublicKey::try_from_bytes(&self.uncompressed())
                    .expect("validated when the NodeId was made");
                PublicKey::from(k)
            }
            KeyType::P256 => {
                let k = libp2p_identity::ecdsa::PublicKey::try_from_bytes(&self.uncompressed())
                    .expect("validated when the NodeId was made");
                PublicKey::from(k)
            }
            KeyType::Rsa => {
                let spki = rsa_spki(&self.bytes).expect("validated when the NodeId was made");
                let k = libp2p_identity::rsa::PublicKey::try_decode_x509(&spki)
                    .expect("validated when the NodeId was made");
                PublicKey::from(k)
            }
        }
    }

    /// The libp2p PeerId of this node.
    pub fn to_peer_id(&self) -> PeerId {
        self.to_public_key().to_peer_id()
    }

    /// The first 8 hex characters: enough to tell nodes apart in logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.bytes[..4])
    }

    fn uncompressed(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(65);
        v.push(0x04);
        v.extend_from_slice(&self.bytes);
        v
    }
}

/// A SubjectPublicKeyInfo DER for the modulus with exponent 65537, validated by the `rsa` crate.
fn rsa_spki(modulus: &[u8]) -> Result<Vec<u8>, NodeIdError> {
    let bad = |e: &dyn fmt::Display| NodeIdError::BadRsaModulus(e.to_string());
    let pkcs1 = rsa::pkcs1::RsaPublicKey {
        modulus: rsa::pkcs1::UintRef::new(modulus).map_err(|e| bad(&e))?,
        public_exponent: rsa::pkcs1::UintRef::new(&RSA_EXPONENT).map_err(|e| bad(&e))?,
    };
    let der = rsa::pkcs1::der::Encode::to_der(&pkcs1).map_err(|e| bad(&e))?;
    let key = rsa::PublicKey::from_pkcs1_der(&der).map_err(|e| bad(&e))?;
    let spki = key.to_public_key_der().map_err(|e| bad(&e))?;
    let _ = key.to_pkcs1_der().map_err(|e| bad(&e))?;
    Ok(spki.as_bytes().to_vec())
}

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
        NodeId::from_bytes(&bytes)
    }
}

impl NodeId {
    /// A NodeId from its raw bytes (what [`NodeId::as_bytes`] returns): `X‖Y` of an EC point,
    /// checked to be on secp256k1 or P-256, or an RSA modulus. Wire formats carry this.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NodeIdError> {
        match bytes.len() {
            64 => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(bytes);
                let key_type = if k256::PublicKey::from_sec1_bytes(&point).is_ok() {
                    KeyType::Secp256k1
                } else if p256::PublicKey::from_sec1_bytes(&point).is_ok() {
                    KeyType::P256
                } else {
                    return Err(NodeIdError::NotOnCurve);
                };
                Ok(NodeId {
                    bytes: bytes.into(),
                    key_type,
                })
            }
            n if n * 8 >= MIN_RSA_BITS && n * 8 < MAX_RSA_BITS + 8 => {
                // Big-endian without leading zero bytes, as keys print their modulus.
                let bits = (n - 1) * 8 + (8 - bytes[0].leading_zeros() as usize);
                if bytes[0] == 0 || !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(NodeIdError::BadRsaModulus(format!(
                        "a modulus of {bits} bits (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS}, no leading zero byte)"
                    )));
                }
                rsa_spki(bytes)?;
                Ok(NodeId {
                    bytes: bytes.into(),
                    key_type: KeyType::Rsa,
                })
            }
            // Reported in hex characters, the form people see.
            n => Err(NodeIdError::BadLength(n * 2)),
        }
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

impl From<&NodeId> for PublicKey {
    fn from(id: &NodeId) -> Self {
        id.to_public_key()
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
