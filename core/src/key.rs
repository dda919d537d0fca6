//! Loading a node's private key (`node.key`) in any form FISCO BCOS's tooling writes.
//!
//! `openssl genpkey` writes PKCS#8 (`BEGIN PRIVATE KEY`), `openssl ecparam -genkey` writes SEC1
//! (`BEGIN EC PRIVATE KEY`, often after an `EC PARAMETERS` block), `openssl genrsa` writes PKCS#1
//! (`BEGIN RSA PRIVATE KEY`). All of them load into one [`NodeKey`], which keeps a canonical
//! PKCS#8 copy for TLS and the matching libp2p [`Keypair`], so the swarm's PeerId is the NodeId.

use std::{fmt, path::Path};

use libp2p_identity::{Keypair, PeerId};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use zeroize::Zeroizing;

use crate::{
    KeyType, NodeId,
    keys::{self, Loaded, Secret},
};

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
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A node's private key with its libp2p identity.
#[derive(Clone)]
pub struct NodeKey {
    key_type: KeyType,
    pkcs8: Zeroizing<Vec<u8>>,
    secret: Secret,
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
            PrivateKeyDer::Sec1(k) => Self::finish(keys::load_sec1(k.secret_sec1_der())?),
            PrivateKeyDer::Pkcs1(k) => {
                Self::from_pkcs8_der(keys::pkcs8_of_pkcs1(k.secret_pkcs1_der())?.as_bytes())
            }
            _ => Err(KeyError::Unsupported("unknown private key format".into())),
        }
    }

    /// Parses a PKCS#8 DER key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::finish(keys::load_pkcs8(der)?)
    }

    fn finish(Loaded { pkcs8, secret }: Loaded) -> Result<Self, KeyError> {
        let node_id = match &secret {
            Secret::Libp2p(keypair) => NodeId::from_public_key(&keypair.public()),
            Secret::Sm2(key) => NodeId::from_bytes(KeyType::Sm2, &keys::sm2_node_id_bytes(key)),
        }
        .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        Ok(NodeKey {
            key_type: node_id.key_type(),
            pkcs8,
            secret,
            node_id,
        })
    }

    /// Generates a new key of the given type (RSA: 2048 bits).
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let pkcs8 = (key_type.spec().generate)()?;
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

    /// The libp2p identity made from this key; `None` for a type libp2p does not have (SM2),
    /// whose swarm is built from the PeerId alone ([`NodeId::to_peer_id`]).
    pub fn keypair(&self) -> Option<&Keypair> {
        match &self.secret {
            Secret::Libp2p(keypair) => Some(keypair),
            Secret::Sm2(_) => None,
        }
    }

    /// The PeerId of this key: the swarm's identity.
    pub fn peer_id(&self) -> PeerId {
        self.node_id.to_peer_id()
    }

    /// Signs `message` as [`crate::Verifier::verify`] checks it: the key type's scheme over
    /// SHA-256 of `message` (ECDSA with a DER signature for the EC types, RSASSA-PKCS1-v1_5
    /// for RSA), which is libp2p's signature of the key; for SM2, SM2 with SM3 over `Z‖M` with
    /// the distinguishing id `1234567812345678`, DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.secret {
            Secret::Libp2p(keypair) => keypair
                .sign(message)
                .map_err(|e| KeyError::Sign(e.to_string())),
            Secret::Sm2(key) => keys::sm2_sign(key, message),
        }
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
