//! RSA keys (2048 to 8192 bits, public exponent 65537): their row in the key-type table.
//!
//! The NodeId is the modulus alone, so only the exponent everybody uses is accepted, and it is
//! the one assumed when a NodeId is turned back into a key. libp2p PeerIds of RSA keys are hashes.

use std::{fmt, sync::Arc};

use libp2p_identity::{KeyType as Libp2pKeyType, Keypair, PublicKey};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier, SecretDocument};
use rsa::{
    pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPublicKey},
    pkcs8::EncodePublicKey,
    traits::PublicKeyParts,
};
use zeroize::Zeroizing;

use super::{KeySpec, Loaded, PrivateKeyForm, Secret, VerifyKey, generation_error};
use crate::{KeyError, NodeIdError};

/// `rsaEncryption`.
pub const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds the work a hostile key can cause).
pub const MAX_RSA_BITS: usize = 8192;
/// The public exponent assumed when an RSA NodeId (the modulus alone) is turned back into a key.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

pub(super) static SPEC: KeySpec = KeySpec {
    names: &["rsa"],
    label: "RSA",
    code: 3,
    private_key: PrivateKeyForm::Pkcs8 {
        algorithm: OID_RSA,
        load: load_pkcs8,
    },
    libp2p: Some(Libp2pKeyType::RSA),
    peer_id_holds_key: false,
    // Whole bytes, so up to 8192 bits plus 7 (the bit count is checked below).
    node_id_len: MIN_RSA_BITS / 8..=MAX_RSA_BITS / 8,
    node_id_form: "modulus",
    check_node_id,
    node_id_of,
    public_key: |key| Some(public_key(key)),
    peer_id: |key| public_key(key).to_peer_id(),
    verify_key: |key| VerifyKey::Libp2p(public_key(key)),
    generate,
};

fn check_node_id(modulus: &[u8]) -> Result<(), NodeIdError> {
    // Big-endian without leading zero bytes, as keys print their modulus.
    let n = modulus.len();
    let bits = (n - 1) * 8 + (8 - modulus[0].leading_zeros() as usize);
    if modulus[0] == 0 || !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(NodeIdError::BadRsaModulus(format!(
            "a modulus of {bits} bits (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS}, no leading zero byte)"
        )));
    }
    rsa_spki(modulus).map(drop)
}

fn node_id_of(key: &PublicKey) -> Result<Arc<[u8]>, NodeIdError> {
    let key = key
        .clone()
        .try_into_rsa()
        .map_err(|e| NodeIdError::UnsupportedKeyType(e.to_string()))?;
    let rsa = rsa::PublicKey::from_pkcs1_der(&key.encode_pkcs1())
        .map_err(|e| NodeIdError::BadRsaModulus(e.to_string()))?;
    // The NodeId is the modulus alone; it names the key only if the exponent is the one everybody
    // uses (and the one assumed when turning a NodeId back into a key).
    if *rsa.e_bytes() != RSA_EXPONENT {
        return Err(NodeIdError::UnsupportedKeyType(
            "RSA key with a public exponent other than 65537".into(),
        ));
    }
    Ok(rsa.n_bytes().into())
}

fn public_key(modulus: &[u8]) -> PublicKey {
    let spki = rsa_spki(modulus).expect("validated when the NodeId was made");
    libp2p_identity::rsa::PublicKey::try_decode_x509(&spki)
        .expect("validated when the NodeId was made")
        .into()
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

fn load_pkcs8(der: &[u8]) -> Result<Loaded, KeyError> {
    let key = rsa::PrivateKey::from_pkcs8_der(der)
        .map_err(|e| KeyError::Malformed(format!("PKCS#8 RSA: {e}")))?;
    if *key.e_bytes() != RSA_EXPONENT {
        return Err(KeyError::Unsupported(
            "RSA key with a public exponent other than 65537 (a NodeId is the modulus alone)"
                .into(),
        ));
    }
    let bits = key.n().bit_width_vartime() as usize;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeyError::Unsupported(format!(
            "RSA key of {bits} bits (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
        )));
    }
    let mut der_copy = Zeroizing::new(der.to_vec());
    let keypair = Keypair::rsa_from_pkcs8(&mut der_copy)
        .map_err(|e| KeyError::Malformed(format!("RSA: {e}")))?;
    Ok(Loaded {
        pkcs8: Zeroizing::new(der.to_vec()),
        secret: Secret::Libp2p(Box::new(keypair)),
    })
}

/// The PKCS#8 form of a PKCS#1 key (`BEGIN RSA PRIVATE KEY`, as `openssl genrsa` writes).
pub(crate) fn pkcs8_of_pkcs1(der: &[u8]) -> Result<SecretDocument, KeyError> {
    let key = rsa::PrivateKey::from_pkcs1_der(der)
        .map_err(|e| KeyError::Malformed(format!("PKCS#1 RSA: {e}")))?;
    key.to_pkcs8_der()
        .map_err(|e| KeyError::Malformed(format!("RSA: {e}")))
}

fn generate() -> Result<SecretDocument, KeyError> {
    let sk = rsa::PrivateKey::new(&mut rand::rng(), MIN_RSA_BITS).map_err(generation_error)?;
    sk.to_pkcs8_der().map_err(generation_error)
}
