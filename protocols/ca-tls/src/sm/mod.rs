//! 国密 (ShangMi) cryptography for TLS 1.3, as RFC 8998 defines it: the cipher suite
//! `TLS_SM4_GCM_SM3` (0x00C6), the key exchange group `curveSM2` (41) and the signature scheme
//! `sm2sig_sm3` (0x0708), plus the SM2-with-SM3 algorithms that verify certificates issued by an
//! SM2 CA (as OpenSSL 3 writes them).
//!
//! [`provider()`] is a rustls [`CryptoProvider`] that speaks nothing else: a peer without the SM
//! suite fails the handshake instead of falling back. Node certificates carry SM2 keys
//! (`id-ecPublicKey` on the SM2 curve); their CertificateVerify is signed by an
//! [`Sm2SigningKey`].
//!
//! SM2 signatures hash `Z ‖ M`, where `Z` binds a *distinguishing identifier* and the signer's
//! public key. Certificates use the GM/T 0009 default [`CERT_DISTID`] (`1234567812345678`, what
//! OpenSSL's `-sigopt distid:1234567812345678` writes); the TLS 1.3 CertificateVerify uses
//! [`TLS13_DISTID`] (`TLSv1.3+GM+Cipher+Suite`, RFC 8998 §3.2.1). One algorithm value per
//! identifier keeps the two apart: [`SM2_SM3`] and [`SM2_SM3_NULL_PARAMS`] verify certificates,
//! [`SM2_SM3_TLS13`] verifies handshakes.
//!
//! ```no_run
//! use std::sync::Arc;
//! let provider = Arc::new(bcos_p2p_ca_tls::sm::provider());
//! let client = rustls::ClientConfig::builder_with_provider(provider)
//!     .with_protocol_versions(&[&rustls::version::TLS13]);
//! # let _ = client;
//! ```

mod aead;
mod gcm;
mod hash;
mod kx;
mod sign;
mod sm4_fast;
// The only places of the crate with `unsafe`: the SIMD intrinsics of SM4 and SM4-GCM, each
// call behind a run-time CPU feature check.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod gcm_avx512;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sm4_avx512;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sm4_x86;

#[cfg(test)]
mod tests_kat;
#[cfg(test)]
mod tests_openssl;
#[cfg(test)]
mod tests_sm4;
#[cfg(test)]
mod tests_tls;

use der::asn1::ObjectIdentifier;
use rustls::{
    CipherSuite, NamedGroup, SignatureScheme,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::AlgorithmIdentifier,
};

pub use aead::{SM4_GCM, Sm4Gcm, TLS13_SM4_GCM_SM3};
pub use gcm::{GcmError, Sm4GcmKey};
pub use hash::{HKDF_SM3, HMAC_SM3, HmacSm3, SM3, Sm3Hash};
pub use kx::{CURVE_SM2_KX, CurveSm2, parse_key_share};
pub use sign::{
    SM2_SM3, SM2_SM3_NULL_PARAMS, SM2_SM3_TLS13, Sm2KeyError, Sm2SigningKey, Sm2Sm3Verifier,
    signature_from_der, signature_to_der,
};
pub use sm4_fast::{FastSm4, SM4_BACKEND_ENV, Sm4Backend};

/// `TLS_SM4_GCM_SM3` (RFC 8998 §2), the only cipher suite of [`provider()`].
pub const TLS_SM4_GCM_SM3: CipherSuite = CipherSuite::Unknown(0x00C6);

/// The `curveSM2` key exchange group (RFC 8998 §2), value 41.
pub const CURVE_SM2: NamedGroup = NamedGroup::Unknown(0x0029);

/// The `sm2sig_sm3` TLS 1.3 signature scheme (RFC 8998 §2).
pub const SM2SIG_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);

/// The distinguishing identifier of SM2 signatures in certificates and CRLs (core's: node keys
/// sign with it too); `id-ecPublicKey`; the SM2 recommended curve.
pub use bcos_p2p_core::{
    OID_EC_PUBLIC_KEY, OID_SM2 as OID_SM2_CURVE, SM2_DEFAULT_DISTID as CERT_DISTID,
};

/// The distinguishing identifier of TLS 1.3 CertificateVerify signatures (RFC 8998 §3.2.1).
pub const TLS13_DISTID: &str = "TLSv1.3+GM+Cipher+Suite";

/// SM3 (1.2.156.10197.1.401).
pub const OID_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.401");

/// SM2 signature with SM3 (1.2.156.10197.1.501), the certificate signature algorithm.
pub const OID_SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");

/// The DER contents of the SubjectPublicKeyInfo `AlgorithmIdentifier` of an SM2 key:
/// `id-ecPublicKey` with the `namedCurve` SM2.
pub const SM2_PUBLIC_KEY_ALG_ID: AlgorithmIdentifier = AlgorithmIdentifier::from_slice(&[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
    0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d, // SM2 curve
]);

/// The DER contents of the SM2-with-SM3 signature `AlgorithmIdentifier` with its parameters
/// absent, as OpenSSL 3 writes it.
pub const SM2_SM3_ALG_ID: AlgorithmIdentifier =
    AlgorithmIdentifier::from_slice(&[0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75]);

/// The DER contents of the SM2-with-SM3 signature `AlgorithmIdentifier` with NULL parameters,
/// as some other CAs write it (GmSSL, Bouncy Castle, older OpenSSL forks).
pub const SM2_SM3_NULL_ALG_ID: AlgorithmIdentifier = AlgorithmIdentifier::from_slice(&[
    0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75, 0x05, 0x00,
]);

/// The SM signature algorithms alone: certificates verify with SM2-with-SM3 under
/// [`CERT_DISTID`] (either parameter encoding), and `sm2sig_sm3` CertificateVerify signatures
/// with [`SM2_SM3_TLS13`] (rustls's `verify_tls13_signature` uses what `mapping` names).
pub static SUPPORTED_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[SM2_SM3, SM2_SM3_NULL_PARAMS],
    mapping: &[(SM2SIG_SM3, &[SM2_SM3_TLS13])],
};

/// The rustls crypto provider of SM mode: only [`TLS13_SM4_GCM_SM3`], only [`CURVE_SM2_KX`]
/// and only the [`SUPPORTED_ALGORITHMS`]. Randomness comes from ring, like the rest of
/// CA-TLS; so does the `key_provider`, which SM mode does not use (node keys become an
/// [`Sm2SigningKey`] directly) but the struct requires.
pub fn provider() -> CryptoProvider {
    let ring = rustls::crypto::ring::default_provider();
    CryptoProvider {
        cipher_suites: vec![TLS13_SM4_GCM_SM3],
        kx_groups: vec![CURVE_SM2_KX],
        signature_verification_algorithms: SUPPORTED_ALGORITHMS,
        secure_random: ring.secure_random,
        key_provider: ring.key_provider,
    }
}
