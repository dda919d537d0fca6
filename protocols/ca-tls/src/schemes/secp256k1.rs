//! secp256k1 node keys, FISCO BCOS's default, which rustls and webpki do not ship.
//!
//! For certificate chains, webpki takes extra [`SignatureVerificationAlgorithm`]s, so
//! [`SECP256K1_SHA256`] plugs in next to ring's. For the TLS 1.3 CertificateVerify message, the
//! IANA registry has no secp256k1 code point, so both ends use the private-use
//! [`SECP256K1_SCHEME`] (0xFE03: rustls drops code points whose low byte is 0–2, and 3 means
//! ECDSA). Signatures are DER ECDSA over SHA-256; high-S signatures (as OpenSSL makes them) are
//! normalised before verification because k256 accepts only low-S.

use std::sync::Arc;

use bcos_p2p_core::{KeyType, NodeKey};
use k256::{
    ecdsa::signature::{Signer as _, Verifier as _},
    pkcs8::{DecodePrivateKey as _, EncodePublicKey as _},
};
use libp2p_identity::PublicKey;
use rustls::{
    SignatureAlgorithm, SignatureScheme,
    crypto::CryptoProvider,
    pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm, alg_id},
    sign::{Signer, SigningKey},
};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::{
    Certificate,
    builder::{Builder, CertificateBuilder},
};

use super::{Scheme, node_id_of};
use crate::{
    ConfigError, Refusal,
    pki::{GenError, Profile, gen_err},
};

/// The private-use TLS 1.3 signature scheme for ECDSA over secp256k1 with SHA-256.
pub const SECP256K1_SCHEME: SignatureScheme = SignatureScheme::Unknown(0xFE03);

pub(crate) static SCHEME: Scheme = Scheme {
    key_type: KeyType::Secp256k1,
    verify: &[&Secp256k1Sha256],
    tls13: &[(SECP256K1_SCHEME, &[&Secp256k1Sha256])],
    signing_key,
    certified_key: |spki, bits| node_id_of(certified_key(spki, bits)),
    public_key_info,
    sign,
};

fn signing_key(key: &NodeKey, _: &CryptoProvider) -> Result<Arc<dyn SigningKey>, ConfigError> {
    let key = Secp256k1SigningKey::from_pkcs8_der(key.pkcs8_der()).map_err(|reason| {
        ConfigError::BadCertificate {
            what: "node.key".into(),
            reason,
        }
    })?;
    Ok(Arc::new(key))
}

fn certified_key(_: &SubjectPublicKeyInfoOwned, key_bits: &[u8]) -> Result<PublicKey, Refusal> {
    libp2p_identity::secp256k1::PublicKey::try_from_bytes(key_bits)
        .map(PublicKey::from)
        .map_err(|e| Refusal::BadCertificate(format!("secp256k1 key: {e}")))
}

fn public_key_info(key: &NodeKey) -> Result<Vec<u8>, GenError> {
    let public = k256::SecretKey::from_pkcs8_der(key.pkcs8_der())
        .map_err(gen_err)?
        .public_key();
    Ok(public.to_public_key_der().map_err(gen_err)?.into_vec())
}

fn sign(builder: CertificateBuilder<Profile>, issuer: &NodeKey) -> Result<Certificate, GenError> {
    let signer = k256::ecdsa::SigningKey::from_pkcs8_der(issuer.pkcs8_der()).map_err(gen_err)?;
    builder
        .build::<_, k256::ecdsa::DerSignature>(&signer)
        .map_err(gen_err)
}

/// ECDSA over secp256k1 with SHA-256, for webpki and rustls signature verification.
#[derive(Debug)]
pub struct Secp256k1Sha256;

/// The algorithm as a static trait object.
pub static SECP256K1_SHA256: &dyn SignatureVerificationAlgorithm = &Secp256k1Sha256;

impl SignatureVerificationAlgorithm for Secp256k1Sha256 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key =
            k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let sig = k256::ecdsa::Signature::from_der(signature).map_err(|_| InvalidSignature)?;
        let sig = sig.normalize_s();
        key.verify(message, &sig).map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256K1
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA256
    }
}

/// A secp256k1 node key as a rustls signing key.
#[derive(Debug)]
pub struct Secp256k1SigningKey(Arc<k256::ecdsa::SigningKey>);

impl Secp256k1SigningKey {
    /// Loads the key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        k256::ecdsa::SigningKey::from_pkcs8_der(der)
            .map(|k| Secp256k1SigningKey(Arc::new(k)))
            .map_err(|e| e.to_string())
    }
}

impl SigningKey for Secp256k1SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SECP256K1_SCHEME)
            .then(|| Box::new(Secp256k1Signer(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct Secp256k1Signer(Arc<k256::ecdsa::SigningKey>);

impl Signer for Secp256k1Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sig: k256::ecdsa::Signature = self
            .0
            .try_sign(message)
            .map_err(|e| rustls::Error::General(format!("secp256k1 signing failed: {e}")))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SECP256K1_SCHEME
    }
}

#[cfg(test)]
mod tests {
    use k256::ecdsa::{Signature, SigningKey as K256Key};

    use super::*;

    fn key_and_point() -> (K256Key, Vec<u8>) {
        let key = K256Key::from_slice(&[0x42; 32]).unwrap();
        let point = key.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        (key, point)
    }

    /// OpenSSL emits high-S signatures half of the time; they must verify like low-S ones.
    #[test]
    fn high_s_signatures_verify_after_normalisation() {
        let (key, point) = key_and_point();
        let msg = b"tbsCertificate";
        let low: Signature = key.sign(msg);
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        assert_ne!(high, low);
        for sig in [low, high] {
            let der = sig.to_der();
            assert!(
                SECP256K1_SHA256
                    .verify_signature(&point, msg, der.as_bytes())
                    .is_ok()
            );
        }
    }

    #[test]
    fn wrong_message_key_or_encoding_fails() {
        let (key, point) = key_and_point();
        let sig: Signature = key.sign(b"a");
        let der = sig.to_der();
        let alg = SECP256K1_SHA256;
        assert!(alg.verify_signature(&point, b"b", der.as_bytes()).is_err());
        let other = K256Key::from_slice(&[0x43; 32]).unwrap();
        let other_point = other
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec();
        assert!(
            alg.verify_signature(&other_point, b"a", der.as_bytes())
                .is_err()
        );
        assert!(
            alg.verify_signature(&point, b"a", &sig.to_bytes()).is_err(),
            "raw r||s is not DER"
        );
        assert!(
            alg.verify_signature(&point[..10], b"a", der.as_bytes())
                .is_err()
        );
        assert!(alg.verify_signature(&point, b"a", &[]).is_err());
    }

    /// Our signer produces what our verifier accepts, under the private-use scheme only.
    #[test]
    fn signer_round_trips_under_the_private_scheme() {
        use k256::pkcs8::EncodePrivateKey;
        let (key, point) = key_and_point();
        let pkcs8 = key.to_pkcs8_der().unwrap();
        let signing = Secp256k1SigningKey::from_pkcs8_der(pkcs8.as_bytes()).unwrap();
        assert!(
            signing
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_none()
        );
        let signer = signing.choose_scheme(&[SECP256K1_SCHEME]).unwrap();
        assert_eq!(signer.scheme(), SECP256K1_SCHEME);
        let sig = signer.sign(b"transcript").unwrap();
        assert!(
            SECP256K1_SHA256
                .verify_signature(&point, b"transcript", &sig)
                .is_ok()
        );
    }
}
