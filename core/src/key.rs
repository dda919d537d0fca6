//! Loading a node's private key (`node.key`) in any form FISCO BCOS's tooling writes.
//!
//! `openssl genpkey` writes PKCS#8 (`BEGIN PRIVATE KEY`), `openssl ecparam -genkey` writes SEC1
//! (`BEGIN EC PRIVATE KEY`, often after an `EC PARAMETERS` block), `openssl genrsa` writes PKCS#1
//! (`BEGIN RSA PRIVATE KEY`). All of them load into one [`NodeKey`], which keeps a canonical
//! PKCS#8 copy for TLS and the matching libp2p [`Keypair`], so the swarm's PeerId is the NodeId.

use std::{fmt, path::Path};

use libp2p_identity::Keypair;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier, PrivateKeyInfoRef};
use rsa::{pkcs1::DecodeRsaPrivateKey, traits::PublicKeyParts};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use zeroize::Zeroizing;

use crate::{KeyType, NodeId, node_id::MAX_RSA_BITS, node_id::MIN_RSA_BITS};

/// `id-ecPublicKey`.
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The secp256k1 named curve.
pub const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
/// The P-256 (prime256v1) named curve.
pub const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `rsaEncryption`.
pub const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No PEM private key block was found.
    #[error(
        "no private key found (expected PEM `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`): {0}"
    )]
    NoKey(String),
    /// The key is of a kind nodes cannot use.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The key is malformed.
    #[error("malformed key: {0}")]
    Malformed(String),
}

/// A node's private key with its libp2p identity.
#[derive(Clone)]
pub struct NodeKey {
    key_type: KeyType,
    pkcs8: Zeroizing<Vec<u8>>,
    keypair: Keypair,
    node_id: NodeId,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_type", &self.key_type)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Reads a key file (PEM: PKCS#8, SEC1 or PKCS#1).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let pem = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?);
        Self::from_pem(&pem)
    }

    /// Parses a PEM key (PKCS#8, SEC1 or PKCS#1); the first private key block counts.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| KeyError::NoKey(e.to_string()))?;
        Self::from_der(&der)
    }

    /// Parses a DER key as rustls classifies it.
    pub fn from_der(der: &PrivateKeyDer<'_>) -> Result<Self, KeyError> {
        match der {
            PrivateKeyDer::Pkcs8(k) => Self::from_pkcs8_der(k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => {
                let ec = sec1::EcPrivateKey::try_from(k.secret_sec1_der())
                    .map_err(|e| KeyError::Malformed(format!("SEC1: {e}")))?;
                let curve = ec.parameters.and_then(|p| p.named_curve()).ok_or_else(|| {
                    KeyError::Unsupported("SEC1 key without a named curve".into())
                })?;
                Self::from_ec_scalar(curve, ec.private_key)
            }
            PrivateKeyDer::Pkcs1(k) => {
                let key = rsa::PrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|e| KeyError::Malformed(format!("PKCS#1 RSA: {e}")))?;
                let pkcs8 = key
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Malformed(format!("RSA: {e}")))?;
                Self::from_pkcs8_der(pkcs8.as_bytes())
            }
            _ => Err(KeyError::Unsupported("unknown private key format".into())),
        }
    }

    /// Parses a PKCS#8 DER key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = PrivateKeyInfoRef::try_from(der)
            .map_err(|e| KeyError::Malformed(format!("PKCS#8: {e}")))?;
        let alg = info.algorithm;
        if alg.oid == OID_EC_PUBLIC_KEY {
            let curve = alg
                .parameters_oid()
                .map_err(|_| KeyError::Unsupported("EC key without a named curve".into()))?;
            let ec = sec1::EcPrivateKey::try_from(info.private_key.as_bytes())
                .map_err(|e| KeyError::Malformed(format!("PKCS#8 EC key: {e}")))?;
            Self::from_ec_scalar(curve, ec.private_key)
        } else if alg.oid == OID_RSA {
            let key = rsa::PrivateKey::from_pkcs8_der(der)
                .map_err(|e| KeyError::Malformed(format!("PKCS#8 RSA: {e}")))?;
            if *key.e_bytes() != [0x01, 0x00, 0x01] {
                return Err(KeyError::Unsupported(
                    "RSA key with a public exponent other than 65537 (a NodeId is the modulus alone)".into(),
                ));
            }
            let bits = key.n().bit_width_vartime() as usize;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(KeyError::Unsupported(format!(
                    "RSA key of {bits} bits (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
                )));
            }
            let mut der_copy = Zeroizing::new(der.to_vec());
            let kp = Keypair::rsa_from_pkcs8(&mut der_copy)
                .map_err(|e| KeyError::Malformed(format!("RSA: {e}")))?;
            Self::finish(KeyType::Rsa, Zeroizing::new(der.to_vec()), kp)
        } else {
            Err(KeyError::Unsupported(format!(
                "key algorithm {} (expected EC secp256k1/P-256 or RSA)",
                alg.oid
            )))
        }
    }

    fn from_ec_scalar(curve: ObjectIdentifier, scalar: &[u8]) -> Result<Self, KeyError> {
        let bad = |e: &dyn fmt::Display| KeyError::Malformed(format!("EC scalar: {e}"));
        if curve == OID_SECP256K1 {
            let sk = k256::SecretKey::from_slice(scalar).map_err(|e| bad(&e))?;
            let pkcs8 = sk.to_pkcs8_der().map_err(|e| bad(&e))?;
            let lsk = libp2p_identity::secp256k1::SecretKey::try_from_bytes(scalar.to_vec())
                .map_err(|e| bad(&e))?;
            let kp = Keypair::from(libp2p_identity::secp256k1::Keypair::from(lsk));
            Self::finish(
                KeyType::Secp256k1,
                Zeroizing::new(pkcs8.as_bytes().to_vec()),
                kp,
            )
        } else if curve == OID_P256 {
            let sk = p256::SecretKey::from_slice(scalar).map_err(|e| bad(&e))?;
            let pkcs8 = sk.to_pkcs8_der().map_err(|e| bad(&e))?;
            let lsk =
                libp2p_identity::ecdsa::SecretKey::try_from_bytes(scalar).map_err(|e| bad(&e))?;
            let kp = Keypair::from(libp2p_identity::ecdsa::Keypair::from(lsk));
            Self::finish(KeyType::P256, Zeroizing::new(pkcs8.as_bytes().to_vec()), kp)
        } else {
            Err(KeyError::Unsupported(format!(
                "EC curve {curve} (expected secp256k1 or prime256v1)"
            )))
        }
    }

    fn finish(
        key_type: KeyType,
        pkcs8: Zeroizing<Vec<u8>>,
        keypair: Keypair,
    ) -> Result<Self, KeyError> {
        let node_id = NodeId::from_public_key(&keypair.public())
            .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        Ok(NodeKey {
            key_type,
            pkcs8,
            keypair,
            node_id,
        })
    }

    /// Generates a new key of the given type (RSA: 2048 bits).
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let bad = |e: &dyn fmt::Display| KeyError::Malformed(format!("key generation: {e}"));
        let mut rng = rand::rng();
        let pkcs8 = match key_type {
            KeyType::Secp256k1 => {
                let sk = <k256::SecretKey as k256::elliptic_curve::Generate>::generate_from_rng(
                    &mut rng,
                );
                sk.to_pkcs8_der().map_err(|e| bad(&e))?
            }
            KeyType::P256 => {
                let sk = <p256::SecretKey as p256::elliptic_curve::Generate>::generate_from_rng(
                    &mut rng,
                );
                sk.to_pkcs8_der().map_err(|e| bad(&e))?
            }
            KeyType::Rsa => {
                let sk = rsa::PrivateKey::new(&mut rng, MIN_RSA_BITS).map_err(|e| bad(&e))?;
                sk.to_pkcs8_der().map_err(|e| bad(&e))?
            }
        };
        Self::from_pkcs8_der(pkcs8.as_bytes())
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The NodeId of this key.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The libp2p identity made from this key.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The key as PKCS#8 DER (for TLS signing).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key as a PKCS#8 PEM document (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes).
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode("PRIVATE KEY", &self.pkcs8))
    }
}

/// Encodes DER as a PEM block with 64-character lines and LF line endings.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der)
        .expect("PEM encoding of in-memory DER cannot fail")
}
