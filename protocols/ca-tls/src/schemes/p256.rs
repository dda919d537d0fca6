//! ECDSA over P-256 node keys: ring signs and verifies them (`ecdsa_secp256r1_sha256` in TLS 1.3).
//! Chains may also hold a P-384 CA key, which ring verifies alike; that is the only other NIST
//! curve accepted, and only in chains.

use bcos_p2p_core::{KeyType, NodeKey};
use libp2p_identity::PublicKey;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rustls::SignatureScheme;
use spki::SubjectPublicKeyInfoOwned;
use webpki::ring as algs;
use x509_cert::{
    Certificate,
    builder::{Builder, CertificateBuilder},
};

use super::{Scheme, node_id_of, provider_signing_key};
use crate::{
    Refusal,
    pki::{GenError, Profile, gen_err},
};

pub(crate) static SCHEME: Scheme = Scheme {
    key_type: KeyType::P256,
    // With the P-384 ones: a chain CA (never a node) may have a NIST P-384 key.
    verify: &[
        algs::ECDSA_P256_SHA256,
        algs::ECDSA_P256_SHA384,
        algs::ECDSA_P384_SHA256,
        algs::ECDSA_P384_SHA384,
    ],
    tls13: &[(
        SignatureScheme::ECDSA_NISTP256_SHA256,
        &[algs::ECDSA_P256_SHA256],
    )],
    signing_key: provider_signing_key,
    certified_key: |spki, bits| node_id_of(certified_key(spki, bits)),
    public_key_info,
    sign,
};

fn certified_key(_: &SubjectPublicKeyInfoOwned, key_bits: &[u8]) -> Result<PublicKey, Refusal> {
    libp2p_identity::ecdsa::PublicKey::try_from_bytes(key_bits)
        .map(PublicKey::from)
        .map_err(|e| Refusal::BadCertificate(format!("P-256 key: {e}")))
}

fn public_key_info(key: &NodeKey) -> Result<Vec<u8>, GenError> {
    let public = p256::SecretKey::from_pkcs8_der(key.pkcs8_der())
        .map_err(gen_err)?
        .public_key();
    Ok(public.to_public_key_der().map_err(gen_err)?.into_vec())
}

fn sign(builder: CertificateBuilder<Profile>, issuer: &NodeKey) -> Result<Certificate, GenError> {
    let signer = p256::ecdsa::SigningKey::from_pkcs8_der(issuer.pkcs8_der()).map_err(gen_err)?;
    builder
        .build::<_, p256::ecdsa::DerSignature>(&signer)
        .map_err(gen_err)
}
