//! SM3 (GB/T 32905) as the transcript hash of `TLS_SM4_GCM_SM3`, HMAC-SM3, and the HKDF built
//! on it (RFC 8998 §3.1: the TLS 1.3 key schedule with SM3 in place of SHA-256).

use hmac::{KeyInit as _, Mac as _};
use rustls::crypto::{
    hash::{self, HashAlgorithm},
    hmac as rhmac,
    tls13::{Hkdf, HkdfUsingHmac},
};
use sm3::{Digest as _, Sm3};

/// SM3's output length in bytes.
const SM3_LEN: usize = 32;

/// SM3 has no code in TLS's legacy HashAlgorithm registry. rustls only compares this value
/// (a HelloRetryRequest must not change the transcript hash) and looks up precomputed empty
/// hashes for the known codes, so any code other than the SHA family's works; 7 is the hash
/// byte of `sm2sig_sm3` (0x0708), the one place TLS pairs a code with SM3.
const SM3_CODE: HashAlgorithm = HashAlgorithm::Unknown(0x07);

/// SM3 for rustls.
#[derive(Debug, Clone, Copy)]
pub struct Sm3Hash;

/// SM3 as a rustls hash.
pub static SM3: &dyn hash::Hash = &Sm3Hash;

impl hash::Hash for Sm3Hash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sm3Context(Sm3::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&Sm3::digest(data))
    }

    fn output_len(&self) -> usize {
        SM3_LEN
    }

    fn algorithm(&self) -> HashAlgorithm {
        SM3_CODE
    }
}

struct Sm3Context(Sm3);

impl hash::Context for Sm3Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Sm3Context(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// HMAC-SM3 for rustls.
#[derive(Debug, Clone, Copy)]
pub struct HmacSm3;

/// HMAC-SM3 as a rustls HMAC.
pub static HMAC_SM3: &dyn rhmac::Hmac = &HmacSm3;

/// HKDF-SM3 (RFC 5869 over HMAC-SM3), the key schedule of `TLS_SM4_GCM_SM3`.
pub static HKDF_SM3: &dyn Hkdf = &HkdfUsingHmac(&HmacSm3);

impl rhmac::Hmac for HmacSm3 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rhmac::Key> {
        // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
        let mac = <hmac::Hmac<Sm3>>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        Box::new(HmacSm3Key(mac))
    }

    fn hash_output_len(&self) -> usize {
        SM3_LEN
    }
}

struct HmacSm3Key(hmac::Hmac<Sm3>);

impl rhmac::Key for HmacSm3Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> rhmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rhmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        SM3_LEN
    }
}
