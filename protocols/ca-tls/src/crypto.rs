//! The signature algorithms CA-TLS accepts, assembled from the key types' schemes: webpki
//! verifies certificate chains with them, and rustls offers and checks their TLS 1.3 signature
//! schemes.
//!
//! secp256k1, FISCO BCOS's default, is not in rustls or webpki: its verification algorithm
//! ([`SECP256K1_SHA256`]), its private-use TLS 1.3 code point ([`SECP256K1_SCHEME`], 0xFE03) and
//! its signing key ([`Secp256k1SigningKey`]) are this crate's own, re-exported here.

use std::sync::LazyLock;

use rustls::{
    SignatureScheme, crypto::WebPkiSupportedAlgorithms, pki_types::SignatureVerificationAlgorithm,
};

pub use crate::schemes::secp256k1::{
    SECP256K1_SCHEME, SECP256K1_SHA256, Secp256k1Sha256, Secp256k1SigningKey,
};
use crate::schemes::{self, Algorithms};

/// Every algorithm accepted in certificate chains and TLS 1.3 handshakes of the standard
/// profile, the schemes' in table order (which webpki's errors list them in). SM nodes use
/// [`SM_SUPPORTED`] instead: the two profiles share nothing.
pub static SUPPORTED: LazyLock<WebPkiSupportedAlgorithms> =
    LazyLock::new(|| WebPkiSupportedAlgorithms {
        all: ALGORITHMS.as_slice(),
        mapping: MAPPING.as_slice(),
    });

static ALGORITHMS: LazyLock<Vec<&'static dyn SignatureVerificationAlgorithm>> =
    LazyLock::new(|| {
        schemes::standard()
            .flat_map(|s| s.verify)
            .copied()
            .collect()
    });

/// The TLS 1.3 signature schemes, offered in this order (the table's).
static MAPPING: LazyLock<Vec<(SignatureScheme, Algorithms)>> =
    LazyLock::new(|| schemes::standard().flat_map(|s| s.tls13).copied().collect());

/// The algorithms of the 国密 profile: SM2 with SM3 in chains (either parameter encoding) and
/// `sm2sig_sm3` in handshakes.
pub static SM_SUPPORTED: &WebPkiSupportedAlgorithms = &crate::sm::SUPPORTED_ALGORITHMS;

/// The algorithms of the profile of nodes with `key_type` keys.
pub(crate) fn algorithms(key_type: bcos_p2p_core::KeyType) -> &'static WebPkiSupportedAlgorithms {
    if schemes::is_sm(key_type) {
        SM_SUPPORTED
    } else {
        &SUPPORTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemes and algorithms are the ones written out by hand before the table, and TLS
    /// offers the schemes in the same order.
    #[test]
    fn supported_is_what_it_was() {
        assert_eq!(
            SUPPORTED.supported_schemes(),
            [
                SECP256K1_SCHEME,
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA512,
            ]
        );
        let ids = |algs: &[&dyn SignatureVerificationAlgorithm]| -> Vec<(Vec<u8>, Vec<u8>)> {
            algs.iter()
                .map(|a| {
                    let key = a.public_key_alg_id();
                    let signature = a.signature_alg_id();
                    (key.as_ref().to_vec(), signature.as_ref().to_vec())
                })
                .collect()
        };
        use webpki::ring as algs;
        assert_eq!(
            ids(SUPPORTED.all),
            ids(&[
                SECP256K1_SHA256,
                algs::ECDSA_P256_SHA256,
                algs::ECDSA_P256_SHA384,
                algs::ECDSA_P384_SHA256,
                algs::ECDSA_P384_SHA384,
                algs::RSA_PKCS1_2048_8192_SHA256,
                algs::RSA_PKCS1_2048_8192_SHA384,
                algs::RSA_PKCS1_2048_8192_SHA512,
                algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
                algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
                algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
                algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
                algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
                algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            ])
        );
    }
}
