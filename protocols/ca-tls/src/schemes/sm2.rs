//! SM2 node keys (国密): SM2 with SM3 in certificates (distinguishing id `1234567812345678`)
//! and `sm2sig_sm3` (0x0708) in TLS 1.3 CertificateVerify (id `TLSv1.3+GM+Cipher+Suite`, RFC
//! 8998). The algorithms and the signing key are the [`crate::sm`] module's; an SM2 node runs
//! its handshakes with the SM provider only ([`crate::sm::provider`]), so this row's algorithms
//! are never offered to, nor accepted from, a node of another key type.

use std::sync::Arc;

use bcos_p2p_core::{KeyType, NodeId, NodeKey};
use signature::Keypair;
use sm2::{
    dsa::{DerSignature, SigningKey, VerifyingKey},
    pkcs8::{DecodePrivateKey as _, EncodePublicKey as _},
};
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::{
    Certificate,
    builder::{Builder, CertificateBuilder},
};

use super::Scheme;
use crate::{
    ConfigError, Refusal,
    pki::{GenError, Profile, gen_err},
    sm::{self, SM2_SM3, SM2_SM3_NULL_PARAMS, SM2_SM3_TLS13, SM2SIG_SM3, Sm2SigningKey},
};

pub(crate) static SCHEME: Scheme = Scheme {
    key_type: KeyType::Sm2,
    verify: &[SM2_SM3, SM2_SM3_NULL_PARAMS],
    tls13: &[(SM2SIG_SM3, &[SM2_SM3_TLS13])],
    signing_key: |key, _| {
        let key = Sm2SigningKey::from_pkcs8_der(key.pkcs8_der()).map_err(|e| {
            ConfigError::BadCertificate {
                what: "node key".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Arc::new(key))
    },
    certified_key,
    public_key_info,
    sign,
};

fn certified_key(_: &SubjectPublicKeyInfoOwned, key_bits: &[u8]) -> Result<NodeId, Refusal> {
    // `04‖X‖Y` on the curve once this passes, so the NodeId is the bytes after `04`.
    sm::parse_key_share(key_bits)
        .map_err(|_| Refusal::BadCertificate("SM2 key: not an uncompressed point on SM2".into()))?;
    NodeId::from_bytes(KeyType::Sm2, &key_bits[1..])
        .map_err(|e| Refusal::BadCertificate(format!("SM2 key: {e}")))
}

fn public_key_info(key: &NodeKey) -> Result<Vec<u8>, GenError> {
    let public = sm2::SecretKey::from_pkcs8_der(key.pkcs8_der())
        .map_err(gen_err)?
        .public_key();
    Ok(public.to_public_key_der().map_err(gen_err)?.into_vec())
}

/// An SM2 issuer key as the certificate builder takes it: SM2 with SM3 under the default
/// distinguishing id, the signature DER-encoded (`SEQUENCE {r, s}`) in the certificate, and the
/// algorithm identifier without parameters, as OpenSSL writes it.
struct CertSigner(SigningKey);

impl Keypair for CertSigner {
    type VerifyingKey = VerifyingKey;

    fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key().clone()
    }
}

impl DynSignatureAlgorithmIdentifier for CertSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: sm::OID_SM2_WITH_SM3,
            parameters: None,
        })
    }
}

impl signature::Signer<DerSignature> for CertSigner {
    fn try_sign(&self, message: &[u8]) -> signature::Result<DerSignature> {
        let signature: sm2::dsa::Signature = signature::Signer::try_sign(&self.0, message)?;
        Ok(signature.to_der())
    }
}

fn sign(builder: CertificateBuilder<Profile>, issuer: &NodeKey) -> Result<Certificate, GenError> {
    let secret = sm2::SecretKey::from_pkcs8_der(issuer.pkcs8_der()).map_err(gen_err)?;
    let key = SigningKey::new(sm::CERT_DISTID, &secret).map_err(gen_err)?;
    builder
        .build::<_, DerSignature>(&CertSigner(key))
        .map_err(gen_err)
}
