//! RSA node keys (2048 to 8192 bits): ring signs RSA-PSS in TLS 1.3 and verifies PKCS#1 v1.5 and
//! PSS certificate signatures; certificates this crate issues are PKCS#1 v1.5 with SHA-256.

use bcos_p2p_core::{KeyType, MAX_RSA_BITS, MIN_RSA_BITS, NodeKey};
use der::Encode;
use libp2p_identity::PublicKey;
use rsa::{
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey},
    traits::PublicKeyParts,
};
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
    key_type: KeyType::Rsa,
    verify: &[
        algs::RSA_PKCS1_2048_8192_SHA256,
        algs::RSA_PKCS1_2048_8192_SHA384,
        algs::RSA_PKCS1_2048_8192_SHA512,
        algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    ],
    tls13: &[
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
    ],
    signing_key: provider_signing_key,
    certified_key: |spki, bits| node_id_of(certified_key(spki, bits)),
    public_key_info,
    sign,
};

fn certified_key(spki: &SubjectPublicKeyInfoOwned, _: &[u8]) -> Result<PublicKey, Refusal> {
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
        .map_err(|e| Refusal::BadCertificate(format!("RSA key: {e}")))
}

fn public_key_info(key: &NodeKey) -> Result<Vec<u8>, GenError> {
    let public = rsa::PrivateKey::from_pkcs8_der(key.pkcs8_der())
        .map_err(gen_err)?
        .to_public_key();
    Ok(public.to_public_key_der().map_err(gen_err)?.into_vec())
}

fn sign(builder: CertificateBuilder<Profile>, issuer: &NodeKey) -> Result<Certificate, GenError> {
    let key = rsa::PrivateKey::from_pkcs8_der(issuer.pkcs8_der()).map_err(gen_err)?;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
    builder
        .build::<_, rsa::pkcs1v15::Signature>(&signer)
        .map_err(gen_err)
}
