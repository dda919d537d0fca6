//! SM2 signatures with SM3 (GB/T 32918.2, GM/T 0009): verification algorithms for webpki and
//! rustls, the DER form `SEQUENCE { r INTEGER, s INTEGER }` OpenSSL reads and writes, and a
//! rustls signing key for the `sm2sig_sm3` CertificateVerify.
//!
//! The message hashed is `Z ‖ M`, with `Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA)`: the
//! distinguishing identifier `ID` is part of every signature, so each algorithm value here is
//! tied to one identifier.

use std::sync::Arc;

use rustls::{
    SignatureAlgorithm, SignatureScheme,
    pki_types::{
        AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm,
        SubjectPublicKeyInfoDer,
    },
    sign::{Signer, SigningKey},
};
use sm2::{
    SecretKey,
    dsa::{
        Signature, SigningKey as DsaSigningKey, VerifyingKey,
        signature::{Signer as _, Verifier as _},
    },
    elliptic_curve::sec1::ToSec1Point as _,
    pkcs8::{DecodePrivateKey as _, EncodePublicKey as _},
};

use super::{
    CERT_DISTID, SM2_PUBLIC_KEY_ALG_ID, SM2_SM3_ALG_ID, SM2_SM3_NULL_ALG_ID, SM2SIG_SM3,
    TLS13_DISTID,
};

/// Length of an SM2 scalar.
const SCALAR_LEN: usize = 32;

/// SM2-with-SM3 signature verification under one distinguishing identifier, for one encoding
/// of the signature `AlgorithmIdentifier`. Public keys must be uncompressed SM2 points with
/// the SubjectPublicKeyInfo algorithm [`SM2_PUBLIC_KEY_ALG_ID`]; signatures are strict DER.
#[derive(Debug, Clone, Copy)]
pub struct Sm2Sm3Verifier {
    distid: &'static str,
    signature_alg_id: AlgorithmIdentifier,
}

impl Sm2Sm3Verifier {
    /// An algorithm verifying signatures made under `distid`, matched in certificates by
    /// `signature_alg_id` (the DER contents of the signature `AlgorithmIdentifier`).
    pub const fn new(distid: &'static str, signature_alg_id: AlgorithmIdentifier) -> Self {
        Self {
            distid,
            signature_alg_id,
        }
    }

    /// The distinguishing identifier signatures are checked under.
    pub fn distid(&self) -> &'static str {
        self.distid
    }
}

/// Certificate (and CRL) signatures: SM2-with-SM3 under [`CERT_DISTID`], with the
/// `AlgorithmIdentifier` parameters absent, as OpenSSL 3 writes them.
pub static SM2_SM3: &dyn SignatureVerificationAlgorithm =
    &Sm2Sm3Verifier::new(CERT_DISTID, SM2_SM3_ALG_ID);

/// Certificate signatures as [`SM2_SM3`], for issuers that write NULL parameters.
pub static SM2_SM3_NULL_PARAMS: &dyn SignatureVerificationAlgorithm =
    &Sm2Sm3Verifier::new(CERT_DISTID, SM2_SM3_NULL_ALG_ID);

/// TLS 1.3 `sm2sig_sm3` CertificateVerify signatures, under [`TLS13_DISTID`]. Its signature
/// `AlgorithmIdentifier` is never compared (rustls picks it by scheme), so it is not in
/// certificate verification lists.
pub static SM2_SM3_TLS13: &dyn SignatureVerificationAlgorithm =
    &Sm2Sm3Verifier::new(TLS13_DISTID, SM2_SM3_ALG_ID);

impl SignatureVerificationAlgorithm for Sm2Sm3Verifier {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        // Uncompressed points on SM2 only, as key shares are.
        let key = super::parse_key_share(public_key)
            .ok()
            .and_then(|key| VerifyingKey::new(self.distid, key).ok())
            .ok_or(InvalidSignature)?;
        let signature = signature_from_der(signature)?;
        key.verify(message, &signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        SM2_PUBLIC_KEY_ALG_ID
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg_id
    }
}

/// Decodes a DER `SEQUENCE { r INTEGER, s INTEGER }`. Only the one valid encoding is accepted:
/// definite short lengths, minimal positive integers, nothing trailing, and `r`, `s` in
/// `[1, n-1]`.
pub fn signature_from_der(der: &[u8]) -> Result<Signature, InvalidSignature> {
    let body = match der {
        [0x30, len, body @ ..] if *len < 0x80 && usize::from(*len) == body.len() => body,
        _ => return Err(InvalidSignature),
    };
    let (r, rest) = der_scalar(body)?;
    let (s, rest) = der_scalar(rest)?;
    if !rest.is_empty() {
        return Err(InvalidSignature);
    }
    Signature::from_scalars(r, s).map_err(|_| InvalidSignature)
}

/// One minimal, non-negative DER INTEGER of at most 32 value bytes, left-padded to 32 bytes,
/// and the input after it.
fn der_scalar(input: &[u8]) -> Result<([u8; SCALAR_LEN], &[u8]), InvalidSignature> {
    let [0x02, len, rest @ ..] = input else {
        return Err(InvalidSignature);
    };
    let len = usize::from(*len);
    if len == 0 || len > SCALAR_LEN + 1 || rest.len() < len {
        return Err(InvalidSignature);
    }
    let (int, rest) = rest.split_at(len);
    let value = match int {
        [first, ..] if first & 0x80 != 0 => return Err(InvalidSignature), // negative
        [0, second, ..] if second & 0x80 == 0 => return Err(InvalidSignature), // not minimal
        [0, value @ ..] => value,
        value => value,
    };
    if value.len() > SCALAR_LEN {
        return Err(InvalidSignature);
    }
    let mut out = [0u8; SCALAR_LEN];
    out[SCALAR_LEN - value.len()..].copy_from_slice(value);
    Ok((out, rest))
}

/// Encodes a signature as DER `SEQUENCE { r INTEGER, s INTEGER }`, as OpenSSL writes it.
pub fn signature_to_der(signature: &Signature) -> Vec<u8> {
    signature.to_der().as_bytes().to_vec()
}

/// Why an SM2 private key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Sm2KeyError {
    /// The bytes are not a PKCS#8 SM2 private key.
    #[error("not an SM2 private key in PKCS#8 DER: {0}")]
    Pkcs8(String),
    /// The distinguishing identifier is longer than SM2 allows (8191 bytes).
    #[error("SM2 distinguishing identifier of {0} bytes is too long")]
    DistId(usize),
    /// Signing failed.
    #[error("SM2 signing failed")]
    Sign,
}

/// An SM2 private key as a rustls signing key: it offers `sm2sig_sm3` (when the peer does)
/// and signs CertificateVerify messages under [`TLS13_DISTID`]. Signatures are deterministic
/// (RFC 6979 nonces over SM3, as the `sm2` crate makes them) and DER-encoded.
#[derive(Debug, Clone)]
pub struct Sm2SigningKey {
    tls: Arc<DsaSigningKey>,
    spki: Vec<u8>,
}

impl Sm2SigningKey {
    /// Loads a PKCS#8 DER SM2 private key (`id-ecPublicKey` on the SM2 curve), as
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2` writes.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Sm2KeyError> {
        let secret =
            SecretKey::from_pkcs8_der(der).map_err(|e| Sm2KeyError::Pkcs8(e.to_string()))?;
        Self::from_secret_key(&secret)
    }

    /// Wraps an SM2 secret key.
    pub fn from_secret_key(secret: &SecretKey) -> Result<Self, Sm2KeyError> {
        let tls = DsaSigningKey::new(TLS13_DISTID, secret)
            .map_err(|_| Sm2KeyError::DistId(TLS13_DISTID.len()))?;
        let spki = secret
            .public_key()
            .to_public_key_der()
            .map_err(|e| Sm2KeyError::Pkcs8(e.to_string()))?
            .into_vec();
        Ok(Self {
            tls: Arc::new(tls),
            spki,
        })
    }

    /// The public key as an uncompressed point (`0x04 ‖ X ‖ Y`).
    pub fn public_point(&self) -> Vec<u8> {
        self.tls
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Signs `message` under the distinguishing identifier `distid` (e.g. [`CERT_DISTID`] for
    /// certificates), DER-encoded.
    pub fn sign_der(&self, distid: &str, message: &[u8]) -> Result<Vec<u8>, Sm2KeyError> {
        let key = DsaSigningKey::from_nonzero_scalar(distid, *self.tls.as_nonzero_scalar())
            .map_err(|_| Sm2KeyError::DistId(distid.len()))?;
        let signature: Signature = key.try_sign(message).map_err(|_| Sm2KeyError::Sign)?;
        Ok(signature_to_der(&signature))
    }
}

impl SigningKey for Sm2SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SM2SIG_SM3)
            .then(|| Box::new(Sm2Signer(self.tls.clone())) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    /// SM2 has no TLS 1.2 signature algorithm code; rustls reads this only to pick TLS 1.2
    /// suites, which SM mode does not have. The low byte of `sm2sig_sm3` stands in, as an
    /// `Unknown` value that equals no algorithm rustls knows.
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Unknown(0x08)
    }
}

#[derive(Debug)]
struct Sm2Signer(Arc<DsaSigningKey>);

impl Signer for Sm2Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let signature: Signature = self
            .0
            .try_sign(message)
            .map_err(|e| rustls::Error::General(format!("SM2 signing failed: {e}")))?;
        Ok(signature_to_der(&signature))
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3
    }
}
