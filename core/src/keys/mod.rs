//! The key-type table: everything that differs between node key types lives in one file per type
//! in this folder, and [`NodeId`](crate::NodeId) and [`NodeKey`](crate::NodeKey) dispatch through
//! the type's row ([`KeySpec`]) instead of matching on the type.
//!
//! A row says how the type is named (parsing, display, messages), its OIDs, its NodeId encoding
//! (length, checks, the libp2p public key), and how its private keys load and are generated.
//! Adding a key type is a new file here, a [`KeyType`] variant, its row in [`KeyType::spec`] and
//! its place in [`KeyType::ALL`]; the messages that list the supported types are generated from
//! the table. Whether NodeIds without a type may be read as the new type is a separate decision
//! ([`KeyType::UNTYPED_ORDER`]).

mod ec;
mod p256;
mod rsa;
mod secp256k1;
mod sm2;

use std::{fmt, ops::RangeInclusive, str::FromStr, sync::Arc};

use libp2p_identity::{KeyType as Libp2pKeyType, Keypair, PeerId, PublicKey};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef, SecretDocument};
use zeroize::Zeroizing;

pub use self::{
    ec::OID_EC_PUBLIC_KEY,
    p256::OID_P256,
    rsa::{MAX_RSA_BITS, MIN_RSA_BITS, OID_RSA},
    secp256k1::OID_SECP256K1,
    sm2::{OID_SM2, SM2_DEFAULT_DISTID, SM2_PEER_ID_KEY_TYPE},
};
pub(crate) use self::{
    ec::load_sec1,
    rsa::pkcs8_of_pkcs1,
    secp256k1::verify as secp256k1_verify,
    sm2::{node_id_bytes as sm2_node_id_bytes, sign as sm2_sign, verify as sm2_verify},
};
use crate::{KeyError, NodeIdError, node_id::VerifyKey};

/// The kind of key behind a [`NodeId`](crate::NodeId) or a node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// ECDSA over secp256k1: FISCO BCOS's default.
    Secp256k1,
    /// ECDSA over NIST P-256 (prime256v1).
    P256,
    /// RSA, 2048 bits or more.
    Rsa,
    /// SM2 (GB/T 32918) with SM3: the curve of 国密 chains. libp2p has no such key type, so
    /// these keys have no libp2p keypair (see `keys/sm2.rs` for their PeerIds).
    Sm2,
}

/// One row of the table: what a key type is, and the functions that handle its keys.
pub(crate) struct KeySpec {
    /// The names [`KeyType::from_str`] accepts, lower case; the first is what `Display` prints.
    pub names: &'static [&'static str],
    /// How messages name the type (`P-256`).
    pub label: &'static str,
    /// The byte wire formats name the type by (flood's DATA frames): never reused.
    pub code: u8,
    /// How its private keys are stored (and so which OIDs name it).
    pub private_key: PrivateKeyForm,
    /// The libp2p key type of its public keys (`None`: libp2p has none, as for SM2).
    pub libp2p: Option<Libp2pKeyType>,
    /// Whether libp2p inlines its public keys in PeerIds (protobuf keys of at most 42 bytes)
    /// rather than hashing them, so that a PeerId gives the NodeId back.
    pub peer_id_holds_key: bool,
    /// How many bytes its NodeIds have.
    pub node_id_len: RangeInclusive<usize>,
    /// What its NodeId bytes are, for messages (`point`, `modulus`).
    pub node_id_form: &'static str,
    /// Checks NodeId bytes (of a length in `node_id_len`) are a key of this type.
    pub check_node_id: fn(&[u8]) -> Result<(), NodeIdError>,
    /// The NodeId bytes of a libp2p public key of type `libp2p`.
    pub node_id_of: fn(&PublicKey) -> Result<Arc<[u8]>, NodeIdError>,
    /// The libp2p public key of NodeId bytes that passed `check_node_id` (`None` for a type
    /// libp2p does not have).
    pub public_key: fn(&[u8]) -> Option<PublicKey>,
    /// The PeerId of NodeId bytes that passed `check_node_id`.
    pub peer_id: fn(&[u8]) -> PeerId,
    /// What checks signatures by the key of NodeId bytes that passed `check_node_id`
    /// ([`crate::NodeId::verifier`]).
    pub verify_key: fn(&[u8]) -> VerifyKey,
    /// A new private key as PKCS#8 DER.
    pub generate: fn() -> Result<SecretDocument, KeyError>,
}

/// How a key type's private keys are stored, which is also how PKCS#8 and SPKI name the type.
pub(crate) enum PrivateKeyForm {
    /// `id-ecPublicKey` on a named curve: the key is a scalar, in SEC1 inside PKCS#8 or alone.
    Ec(EcCurve),
    /// An algorithm of its own, whose PKCS#8 documents the row loads whole.
    Pkcs8 {
        /// The PKCS#8 / SPKI algorithm OID.
        algorithm: ObjectIdentifier,
        /// Loads a PKCS#8 DER document of this algorithm.
        load: fn(&[u8]) -> Result<Loaded, KeyError>,
    },
}

/// A named curve of `id-ecPublicKey` keys.
pub(crate) struct EcCurve {
    /// The named curve OID.
    pub oid: ObjectIdentifier,
    /// OpenSSL's name of the curve (`prime256v1`), for messages about key files.
    pub openssl_name: &'static str,
    /// Loads the private scalar.
    pub from_scalar: fn(&[u8]) -> Result<Loaded, KeyError>,
}

/// A private key as a row loads it: the canonical PKCS#8 copy and what signs with it.
pub(crate) struct Loaded {
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub secret: Secret,
}

/// What signs with a node key: libp2p's keypair, or for a type libp2p does not have, the
/// type's own signing key.
#[derive(Clone)]
pub(crate) enum Secret {
    /// A libp2p key type (boxed: a keypair is ten times the size of the SM2 variant).
    Libp2p(Box<Keypair>),
    /// SM2, signing with [`SM2_DEFAULT_DISTID`].
    Sm2(Arc<::sm2::dsa::SigningKey>),
}

/// The error of a failed key generation.
fn generation_error(e: impl fmt::Display) -> KeyError {
    KeyError::Malformed(format!("key generation: {e}"))
}

impl KeyType {
    /// Every key type, in table order: the order messages list them in.
    pub const ALL: [KeyType; 4] = [
        KeyType::Secp256k1,
        KeyType::P256,
        KeyType::Rsa,
        KeyType::Sm2,
    ];

    /// The types [`KeyType::for_untyped_bytes`] tries, in this order. Kept apart from
    /// [`KeyType::ALL`] on purpose: a new key type does not join the untyped rule by being added
    /// to the table, only by a decision made here.
    ///
    /// SM2 was put after P-256 deliberately: FISCO's `sm_ssl.nodeid` and the NodeId lists of 国密
    /// chains are untyped hex like every other, and a point on SM2 is on neither earlier curve
    /// but with negligible chance.
    pub const UNTYPED_ORDER: [KeyType; 4] = [
        KeyType::Secp256k1,
        KeyType::P256,
        KeyType::Sm2,
        KeyType::Rsa,
    ];

    /// The type's row.
    pub(crate) fn spec(self) -> &'static KeySpec {
        match self {
            KeyType::Secp256k1 => &secp256k1::SPEC,
            KeyType::P256 => &p256::SPEC,
            KeyType::Rsa => &rsa::SPEC,
            KeyType::Sm2 => &sm2::SPEC,
        }
    }

    /// The canonical name (`secp256k1`, `p256`, `rsa`), as `Display` prints it.
    pub fn name(self) -> &'static str {
        self.spec().names[0]
    }

    /// The name messages use (`secp256k1`, `P-256`, `RSA`).
    pub fn label(self) -> &'static str {
        self.spec().label
    }

    /// The byte wire formats name the type by: secp256k1 1, P-256 2, RSA 3, SM2 4.
    pub fn code(self) -> u8 {
        self.spec().code
    }

    /// The type a wire format's key-type byte names.
    pub fn from_code(code: u8) -> Option<KeyType> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The named curve of an EC type (`None` for RSA).
    pub fn curve_oid(self) -> Option<ObjectIdentifier> {
        match &self.spec().private_key {
            PrivateKeyForm::Ec(curve) => Some(curve.oid),
            PrivateKeyForm::Pkcs8 { .. } => None,
        }
    }

    /// The PKCS#8 / SPKI algorithm OID (`id-ecPublicKey` for every EC type).
    pub fn algorithm_oid(self) -> ObjectIdentifier {
        match &self.spec().private_key {
            PrivateKeyForm::Ec(_) => OID_EC_PUBLIC_KEY,
            PrivateKeyForm::Pkcs8 { algorithm, .. } => *algorithm,
        }
    }

    /// Whether keys of this type are `id-ecPublicKey` keys on a named curve.
    pub fn is_ec(self) -> bool {
        self.curve_oid().is_some()
    }

    /// The EC type on the named curve `oid`.
    pub fn for_curve(oid: ObjectIdentifier) -> Option<KeyType> {
        Self::ALL.into_iter().find(|t| t.curve_oid() == Some(oid))
    }

    /// The non-EC type whose algorithm OID is `oid` (EC types go by [`KeyType::for_curve`]).
    pub fn for_algorithm(oid: ObjectIdentifier) -> Option<KeyType> {
        Self::ALL
            .into_iter()
            .find(|t| !t.is_ec() && t.algorithm_oid() == oid)
    }

    /// The type of libp2p public keys of type `key`, if NodeIds cover it.
    pub fn for_libp2p(key: &Libp2pKeyType) -> Option<KeyType> {
        Self::ALL
            .into_iter()
            .find(|t| t.spec().libp2p.as_ref() == Some(key))
    }

    /// **The rule for NodeId bytes (or hex text) that arrive without their key type**: a FISCO
    /// `node.nodeid`, a deny or allow list entry, a CLI argument, a flood origin on the wire. The
    /// bytes are read as the first type in [`KeyType::UNTYPED_ORDER`] whose NodeId length they
    /// have and whose checks they pass: 64 bytes are a secp256k1 point if on secp256k1 (FISCO's
    /// default curve), else a P-256 point if on P-256, else an SM2 point if on SM2; 256 to 1024
    /// bytes are an RSA modulus.
    ///
    /// This is the only place a key type is inferred from bytes. It is sound only because the
    /// types it tells apart share no encoding that passes both checks in practice (a 64-byte
    /// point on two curves is a negligible chance).
    ///
    /// The error is the first candidate type's, or [`NodeIdError::BadLength`] (in hex
    /// characters) when no type tried has NodeIds of this length.
    pub fn for_untyped_bytes(bytes: &[u8]) -> Result<KeyType, NodeIdError> {
        let mut first_error = None;
        for key_type in Self::UNTYPED_ORDER {
            let spec = key_type.spec();
            if !spec.node_id_len.contains(&bytes.len()) {
                continue;
            }
            match (spec.check_node_id)(bytes) {
                Ok(()) => return Ok(key_type),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(NodeIdError::BadLength(bytes.len() * 2)))
    }

    /// `types` as messages list them: `secp256k1, P-256 or RSA`.
    pub fn labels(types: impl IntoIterator<Item = KeyType>) -> String {
        join_or(types.into_iter().map(KeyType::label))
    }

    /// `types` by the names to type in: `secp256k1, p256 or rsa`.
    pub fn names(types: impl IntoIterator<Item = KeyType>) -> String {
        join_or(types.into_iter().map(KeyType::name))
    }

    /// The EC types, in table order.
    pub fn ec_types() -> impl Iterator<Item = KeyType> {
        Self::ALL.into_iter().filter(|t| t.is_ec())
    }
}

/// `a, b or c`.
fn join_or<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<S> = items.into_iter().collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.as_ref().to_owned(),
        Some((last, rest)) => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} or {}", rest.join(", "), last.as_ref())
        }
    }
}

/// The NodeId lengths of the table, in hex characters and grouped by form:
/// `128 (secp256k1 or P-256 point) or at least 512 (RSA modulus)`.
pub(crate) fn node_id_lengths() -> String {
    let mut groups: Vec<(&RangeInclusive<usize>, &str, Vec<KeyType>)> = Vec::new();
    for t in KeyType::ALL {
        let spec = t.spec();
        match groups
            .iter_mut()
            .find(|(len, form, _)| **len == spec.node_id_len && *form == spec.node_id_form)
        {
            Some((_, _, types)) => types.push(t),
            None => groups.push((&spec.node_id_len, spec.node_id_form, vec![t])),
        }
    }
    join_or(groups.into_iter().map(|(len, form, types)| {
        let hex = len.start() * 2;
        let at_least = if len.start() == len.end() {
            ""
        } else {
            "at least "
        };
        format!("{at_least}{hex} ({} {form})", KeyType::labels(types))
    }))
}

/// The types that PeerIds only hash: `P-256 or RSA`.
pub(crate) fn hashed_peer_id_types() -> String {
    KeyType::labels(
        KeyType::ALL
            .into_iter()
            .filter(|t| !t.spec().peer_id_holds_key),
    )
}

/// The private key algorithms key files may hold: `EC secp256k1/P-256 or RSA`.
fn private_key_algorithms() -> String {
    let ec: Vec<&str> = KeyType::ec_types().map(KeyType::label).collect();
    let others = KeyType::ALL
        .into_iter()
        .filter(|t| !t.is_ec())
        .map(|t| t.label().to_owned());
    join_or(
        (!ec.is_empty())
            .then(|| format!("EC {}", ec.join("/")))
            .into_iter()
            .chain(others),
    )
}

/// The curves EC key files may name, as OpenSSL names them: `secp256k1 or prime256v1`.
pub(crate) fn openssl_curve_names() -> String {
    join_or(
        KeyType::ALL
            .into_iter()
            .filter_map(|t| match &t.spec().private_key {
                PrivateKeyForm::Ec(curve) => Some(curve.openssl_name),
                PrivateKeyForm::Pkcs8 { .. } => None,
            }),
    )
}

/// Loads a PKCS#8 DER key with the row its algorithm (and, for EC keys, its curve) names.
pub(crate) fn load_pkcs8(der: &[u8]) -> Result<Loaded, KeyError> {
    let info = PrivateKeyInfoRef::try_from(der)
        .map_err(|e| KeyError::Malformed(format!("PKCS#8: {e}")))?;
    let oid = info.algorithm.oid;
    if oid == OID_EC_PUBLIC_KEY {
        return ec::load_pkcs8(&info);
    }
    match KeyType::for_algorithm(oid).map(|t| &t.spec().private_key) {
        Some(PrivateKeyForm::Pkcs8 { load, .. }) => load(der),
        _ => Err(KeyError::Unsupported(format!(
            "key algorithm {oid} (expected {})",
            private_key_algorithms()
        ))),
    }
}

/// The row of the named curve `oid`.
fn ec_curve(oid: ObjectIdentifier) -> Option<&'static EcCurve> {
    KeyType::for_curve(oid).and_then(|t| match &t.spec().private_key {
        PrivateKeyForm::Ec(curve) => Some(curve),
        PrivateKeyForm::Pkcs8 { .. } => None,
    })
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|t| t.spec().names.contains(&lower.as_str()))
            .ok_or_else(|| {
                format!(
                    "unknown key type `{lower}` (expected {})",
                    KeyType::names(Self::ALL)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages generated from the table say what they said when they were written by hand.
    #[test]
    fn generated_lists_read_as_before() {
        assert_eq!(
            KeyType::labels(KeyType::ALL),
            "secp256k1, P-256, RSA or SM2"
        );
        assert_eq!(
            KeyType::labels(KeyType::ec_types()),
            "secp256k1, P-256 or SM2"
        );
        assert_eq!(
            node_id_lengths(),
            "128 (secp256k1, P-256 or SM2 point) or at least 512 (RSA modulus)"
        );
        assert_eq!(hashed_peer_id_types(), "P-256, RSA or SM2");
        assert_eq!(private_key_algorithms(), "EC secp256k1/P-256/SM2 or RSA");
        assert_eq!(openssl_curve_names(), "secp256k1, prime256v1 or SM2");
        assert_eq!(
            "ed25519".parse::<KeyType>().unwrap_err(),
            "unknown key type `ed25519` (expected secp256k1, p256, rsa or sm2)"
        );
        assert_eq!(
            NodeIdError::BadLength(3).to_string(),
            "NodeId has 3 hex characters; expected 128 (secp256k1, P-256 or SM2 point) or at least 512 (RSA modulus)"
        );
        assert_eq!(
            NodeIdError::NotOnCurve.to_string(),
            "NodeId is not a point on secp256k1, P-256 or SM2"
        );
        assert_eq!(
            NodeIdError::UnsupportedKeyType("Ed25519".into()).to_string(),
            "unsupported key type Ed25519 (NodeIds are secp256k1, P-256, RSA or SM2 keys)"
        );
        let peer = libp2p_identity::PeerId::random();
        assert_eq!(
            NodeIdError::HashedPeerId(peer).to_string(),
            format!(
                "PeerId {peer} is a SHA-256 hash of a P-256, RSA or SM2 key; the NodeId needs the key itself (learnt in the handshake)"
            )
        );
    }

    #[test]
    fn names_and_oids_find_their_rows() {
        for t in KeyType::ALL {
            for name in t.spec().names {
                assert_eq!(name.parse::<KeyType>(), Ok(t));
                assert_eq!(name.to_uppercase().parse::<KeyType>(), Ok(t));
            }
            assert_eq!(t.to_string().parse::<KeyType>(), Ok(t));
            match t.curve_oid() {
                Some(curve) => assert_eq!(KeyType::for_curve(curve), Some(t)),
                None => assert_eq!(KeyType::for_algorithm(t.algorithm_oid()), Some(t)),
            }
            if let Some(libp2p) = &t.spec().libp2p {
                assert_eq!(KeyType::for_libp2p(libp2p), Some(t));
            }
        }
        assert_eq!(KeyType::for_algorithm(OID_EC_PUBLIC_KEY), None);
        assert_eq!(KeyType::for_libp2p(&Libp2pKeyType::Ed25519), None);
    }
}
