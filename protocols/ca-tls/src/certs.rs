//! Reading certificates: PEM files (possibly several certificates each) and the node key inside
//! a certificate.

use std::path::Path;

use bcos_p2p_core::{
    MAX_RSA_BITS, MIN_RSA_BITS, NodeId, OID_EC_PUBLIC_KEY, OID_P256, OID_RSA, OID_SECP256K1,
};
use der::{Decode, Encode};
use libp2p_identity::PublicKey;
use rsa::{pkcs8::DecodePublicKey, traits::PublicKeyParts};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::{ConfigError, Refusal};

/// Reads every certificate in a PEM file, in order.
pub fn read_pem_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let certs = parse_pem_certs(&data).map_err(|reason| ConfigError::BadCertificate {
        what: path.display().to_string(),
        reason,
    })?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// Parses every certificate in PEM text, in order.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The libp2p public key and NodeId certified by an X.509 certificate.
pub fn certified_key(cert: &[u8]) -> Result<(PublicKey, NodeId), Refusal> {
    let cert = x509_cert::Certificate::from_der(cert)
        .map_err(|e| Refusal::BadCertificate(format!("not X.509 DER: {e}")))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key_bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Refusal::BadCertificate("public key is not whole bytes".into()))?;
    let oid = spki.algorithm.oid;
    let key = if oid == OID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or(())
            .and_then(|p| p.decode_as::<der::oid::ObjectIdentifier>().map_err(|_| ()))
            .map_err(|_| Refusal::UnsupportedKey("EC key without a named curve".into()))?;
        if curve == OID_SECP256K1 {
            libp2p_identity::secp256k1::PublicKey::try_from_bytes(key_bits)
                .map(PublicKey::from)
                .map_err(|e| Refusal::BadCertificate(format!("secp256k1 key: {e}")))?
        } else if curve == OID_P256 {
            libp2p_identity::ecdsa::PublicKey::try_from_bytes(key_bits)
                .map(PublicKey::from)
                .map_err(|e| Refusal::BadCertificate(format!("P-256 key: {e}")))?
        } else {
            return Err(Refusal::UnsupportedKey(format!(
                "EC curve {curve} (nodes use secp256k1 or P-256)"
            )));
        }
    } else if oid == OID_RSA {
        let der = spki
            .to_der()
            .map_err(|e| Refusal::BadCertificate(format!("RSA key: {e}")))?;
        let rsa = rsa::PublicKey::from_public_key_der(&der)
            .map_err(|e| Refusal::BadCertificate(format!("RSA key: {e}")))?;
        let bits = rsa.n().bit_width_vartime() as usize;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(Refusal::UnsupportedKey(format!(
                "RSA key of {bits} bits (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
            )));
        }
        libp2p_identity::rsa::PublicKey::try_decode_x509(&der)
            .map(PublicKey::from)
            .map_err(|e| Refusal::BadCertificate(format!("RSA key: {e}")))?
    } else {
        return Err(Refusal::UnsupportedKey(format!(
            "key algorithm {oid} (nodes use secp256k1, P-256 or RSA)"
        )));
    };
    let node_id =
        NodeId::from_public_key(&key).map_err(|e| Refusal::UnsupportedKey(e.to_string()))?;
    Ok((key, node_id))
}
