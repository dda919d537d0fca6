//! SM4-GCM (RFC 8998 §3.1: SM4 in GCM mode, 128-bit key, 12-byte nonce, 16-byte tag) as the
//! TLS 1.3 record protection of `TLS_SM4_GCM_SM3`, and the suite itself.

use super::{TLS_SM4_GCM_SM3, gcm::Sm4GcmKey, hash};
use rustls::{
    ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite,
    Tls13CipherSuite,
    crypto::{
        CipherSuiteCommon,
        cipher::{
            AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
            MessageEncrypter, Nonce as TlsNonce, OutboundOpaqueMessage, OutboundPlainMessage,
            PrefixedPayload, Tls13AeadAlgorithm, UnsupportedOperationError, make_tls13_aad,
        },
    },
};

/// SM4 key length in bytes.
const KEY_LEN: usize = 16;
/// GCM tag length in bytes.
const TAG_LEN: usize = 16;

/// The TLS 1.3 cipher suite `TLS_SM4_GCM_SM3` (0x00C6): SM4-GCM records, SM3 transcript hash
/// and HKDF-SM3 key schedule. Not usable for QUIC.
pub static TLS13_SM4_GCM_SM3: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: TLS_SM4_GCM_SM3,
            hash_provider: &hash::Sm3Hash,
            // RFC 8998 sets no limit of its own. The AES-GCM limit of RFC 8446 §5.5 (2^24.5
            // full-size records) follows from GCM over a 128-bit block cipher, which SM4 is too;
            // rustls rounds it down to 2^24 for AES-128-GCM, and so does this suite.
            confidentiality_limit: 1 << 24,
        },
        hkdf_provider: &rustls::crypto::tls13::HkdfUsingHmac(&hash::HmacSm3),
        aead_alg: &Sm4Gcm,
        quic: None,
    });

/// SM4-GCM as a rustls TLS 1.3 AEAD.
#[derive(Debug, Clone, Copy)]
pub struct Sm4Gcm;

/// SM4-GCM as a rustls TLS 1.3 AEAD.
pub static SM4_GCM: &dyn Tls13AeadAlgorithm = &Sm4Gcm;

impl Sm4Gcm {
    /// The keyed cipher, or `None` when `key` is not 16 bytes (rustls always passes
    /// [`Tls13AeadAlgorithm::key_len`] bytes).
    fn cipher(key: &AeadKey) -> Option<Sm4GcmKey> {
        <&[u8; KEY_LEN]>::try_from(key.as_ref())
            .ok()
            .map(Sm4GcmKey::new)
    }
}

impl Tls13AeadAlgorithm for Sm4Gcm {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        match Self::cipher(&key) {
            Some(cipher) => Box::new(Sm4GcmEncrypter { cipher, iv }),
            None => Box::new(Unkeyed),
        }
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        match Self::cipher(&key) {
            Some(cipher) => Box::new(Sm4GcmDecrypter { cipher, iv }),
            None => Box::new(Unkeyed),
        }
    }

    fn key_len(&self) -> usize {
        KEY_LEN
    }

    /// rustls has no [`ConnectionTrafficSecrets`] variant for SM4-GCM, and kernel TLS is not
    /// used, so the keys stay inside.
    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

/// The per-record nonce of TLS 1.3 (RFC 8446 §5.3): the IV XOR the padded sequence number.
fn nonce(iv: &Iv, seq: u64) -> [u8; 12] {
    TlsNonce::new(iv, seq).0
}

struct Sm4GcmEncrypter {
    cipher: Sm4GcmKey,
    iv: Iv,
}

struct Sm4GcmDecrypter {
    cipher: Sm4GcmKey,
    iv: Iv,
}

impl MessageEncrypter for Sm4GcmEncrypter {
    /// TLSInnerPlaintext (content ‖ content type, no padding) sealed under the record header
    /// as additional data, sent as `application_data` with legacy version TLS 1.2 — the way
    /// rustls's own TLS 1.3 AEADs build records.
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());

        let aad = make_tls13_aad(total_len);
        let tag = self
            .cipher
            .seal(&nonce(&self.iv, seq), &aad, payload.as_mut())
            .map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(&tag);

        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Sm4GcmDecrypter {
    /// Opens the record (its header is the additional data), then strips the padding and
    /// recovers the inner content type as rustls's TLS 1.3 AEADs do.
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        let Some(plain_len) = payload.len().checked_sub(TAG_LEN) else {
            return Err(Error::DecryptError);
        };
        let aad = make_tls13_aad(payload.len());
        let (ciphertext, tag) = payload.split_at_mut(plain_len);
        let tag = <[u8; TAG_LEN]>::try_from(&*tag).map_err(|_| Error::DecryptError)?;
        self.cipher
            .open(&nonce(&self.iv, seq), &aad, ciphertext, &tag)
            .map_err(|_| Error::DecryptError)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

/// Stands in for a cipher that could not be keyed: every record fails.
struct Unkeyed;

impl MessageEncrypter for Unkeyed {
    fn encrypt(
        &mut self,
        _: OutboundPlainMessage<'_>,
        _: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        Err(Error::EncryptError)
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Unkeyed {
    fn decrypt<'a>(
        &mut self,
        _: InboundOpaqueMessage<'a>,
        _: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        Err(Error::DecryptError)
    }
}

/// SM4-GCM with an explicit key and nonce, for known-answer tests.
#[cfg(test)]
pub(super) fn seal(key: &[u8; 16], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    let tag = Sm4GcmKey::new(key).seal(nonce, aad, &mut buf).unwrap();
    buf.extend_from_slice(&tag);
    buf
}

/// A TLS 1.3 record encrypter and decrypter under `key` and `iv`, for tests (rustls builds
/// [`AeadKey`]s of the suite's length itself, which code outside rustls cannot).
#[cfg(test)]
pub(super) fn record_pair(
    key: [u8; 16],
    iv: [u8; 12],
) -> (Box<dyn MessageEncrypter>, Box<dyn MessageDecrypter>) {
    let cipher = Sm4GcmKey::new(&key);
    (
        Box::new(Sm4GcmEncrypter {
            cipher: cipher.clone(),
            iv: Iv::new(iv),
        }),
        Box::new(Sm4GcmDecrypter {
            cipher,
            iv: Iv::new(iv),
        }),
    )
}
