//! One module per node key type's signature scheme: everything CA-TLS does differently per key
//! type, so that the rustls and webpki plumbing (the verifier, the configs, certificate reading
//! and building) stays generic and reads the type's row ([`Scheme`]).
//!
//! A row holds the TLS 1.3 CertificateVerify signer for the node key, the algorithms that verify
//! signatures by such keys (in certificate chains and handshakes), the libp2p key in a
//! certificate's SubjectPublicKeyInfo, and the key handling of certificate generation. Adding a
//! key type is a new module here and its row in [`ALL`] (after its row in the core key table).

pub(crate) mod p256;
pub(crate) mod rsa;
pub(crate) mod secp256k1;
pub(crate) mod sm2;

use std::sync::Arc;

use bcos_p2p_core::{KeyType, NodeId, NodeKey};
use libp2p_identity::PublicKey;
use rustls::{
    SignatureScheme,
    crypto::CryptoProvider,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, SignatureVerificationAlgorithm},
    sign::SigningKey,
};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::{Certificate, builder::CertificateBuilder};

use crate::{
    ConfigError, Refusal,
    pki::{GenError, Profile},
};

/// Verification algorithms, as webpki and rustls take them.
pub(crate) type Algorithms = &'static [&'static dyn SignatureVerificationAlgorithm];

/// A node key as a rustls signing key.
pub(crate) type LoadSigningKey =
    fn(&NodeKey, &CryptoProvider) -> Result<Arc<dyn SigningKey>, ConfigError>;

/// What CA-TLS needs to know and do for one key type.
pub(crate) struct Scheme {
    /// The key type.
    pub key_type: KeyType,
    /// The algorithms that verify signatures by keys of this type (and of CA keys of the same
    /// family) in certificate chains.
    pub verify: Algorithms,
    /// The TLS 1.3 signature schemes of this type's CertificateVerify, each with the algorithms
    /// that check it, in the order they are offered.
    pub tls13: &'static [(SignatureScheme, Algorithms)],
    /// The node key as the rustls signing key of its certificate.
    pub signing_key: LoadSigningKey,
    /// The NodeId of a certificate's SubjectPublicKeyInfo of this type (with its
    /// `subjectPublicKey` bits), or why it is not a node key.
    pub certified_key: fn(&SubjectPublicKeyInfoOwned, &[u8]) -> Result<NodeId, Refusal>,
    /// The SubjectPublicKeyInfo DER of a node key, for the certificates `pki` issues.
    pub public_key_info: fn(&NodeKey) -> Result<Vec<u8>, GenError>,
    /// Signs a certificate with an issuer key of this type.
    pub sign: fn(CertificateBuilder<Profile>, &NodeKey) -> Result<Certificate, GenError>,
}

/// The table, in the order TLS offers the signature schemes (FISCO's default first). SM2 is
/// last and apart: SM nodes speak only the SM profile, so it never joins the others' lists
/// ([`standard`], [`is_sm`]).
pub(crate) static ALL: [&Scheme; 4] = [
    &secp256k1::SCHEME,
    &p256::SCHEME,
    &rsa::SCHEME,
    &sm2::SCHEME,
];

/// Whether nodes with keys of `key_type` run the 国密 profile (TLS_SM4_GCM_SM3, curveSM2,
/// sm2sig_sm3) instead of the standard suites.
pub fn is_sm(key_type: KeyType) -> bool {
    key_type == KeyType::Sm2
}

/// The rows of the standard profile, in table order.
pub(crate) fn standard() -> impl Iterator<Item = &'static Scheme> {
    ALL.iter().copied().filter(|s| !is_sm(s.key_type))
}

/// The row of `key_type`.
pub(crate) fn of(key_type: KeyType) -> &'static Scheme {
    ALL.iter()
        .copied()
        .find(|s| s.key_type == key_type)
        .expect("every key type has a scheme (see the test below)")
}

/// The NodeId of a certified libp2p key.
fn node_id_of(key: Result<PublicKey, Refusal>) -> Result<NodeId, Refusal> {
    NodeId::from_public_key(&key?).map_err(|e| Refusal::UnsupportedKey(e.to_string()))
}

/// The signing key for node keys the crypto provider (ring) signs with itself.
fn provider_signing_key(
    key: &NodeKey,
    provider: &CryptoProvider,
) -> Result<Arc<dyn SigningKey>, ConfigError> {
    Ok(provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.pkcs8_der().to_vec(),
        )))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_has_one_scheme() {
        for key_type in KeyType::ALL {
            assert_eq!(
                ALL.iter().filter(|s| s.key_type == key_type).count(),
                1,
                "{key_type}"
            );
        }
        assert_eq!(ALL.len(), KeyType::ALL.len());
    }
}
