//! Reading certificates: PEM files (possibly several certificates each) and the node key inside
//! a certificate (its key type from the SubjectPublicKeyInfo's OIDs, its key from the type's
//! scheme).

use std::path::Path;

use bcos_p2p_core::{KeyType, NodeId, OID_EC_PUBLIC_KEY};
use der::Decode;
use rustls_pki_types::{CertificateDer, pem::PemObject};
use spki::AlgorithmIdentifierOwned;

use crate::{ConfigError, Refusal, schemes};

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

/// The NodeId certified by an X.509 certificate (its PeerId is [`NodeId::to_peer_id`]).
pub fn certified_key(cert: &[u8]) -> Result<NodeId, Refusal> {
    let cert = x509_cert::Certificate::from_der(cert)
        .map_err(|e| Refusal::BadCertificate(format!("not X.509 DER: {e}")))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key_bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Refusal::BadCertificate("public key is not whole bytes".into()))?;
    let key_type = key_type_of(&spki.algorithm)?;
    let node_id = (schemes::of(key_type).certified_key)(spki, key_bits)?;
    debug_assert_eq!(node_id.key_type(), key_type);
    Ok(node_id)
}

/// The node key type a SubjectPublicKeyInfo's algorithm (and, for EC keys, curve) names.
fn key_type_of(algorithm: &AlgorithmIdentifierOwned) -> Result<KeyType, Refusal> {
    let oid = algorithm.oid;
    if oid == OID_EC_PUBLIC_KEY {
        let curve = algorithm
            .parameters
            .as_ref()
            .ok_or(())
            .and_then(|p| p.decode_as::<der::oid::ObjectIdentifier>().map_err(|_| ()))
            .map_err(|_| Refusal::UnsupportedKey("EC key without a named curve".into()))?;
        KeyType::for_curve(curve).ok_or_else(|| {
            Refusal::UnsupportedKey(format!(
                "EC curve {curve} (nodes use {})",
                KeyType::labels(KeyType::ec_types())
            ))
        })
    } else {
        KeyType::for_algorithm(oid).ok_or_else(|| {
            Refusal::UnsupportedKey(format!(
                "key algorithm {oid} (nodes use {})",
                KeyType::labels(KeyType::ALL)
            ))
        })
    }
}
