//! [`Sm4GcmKey`]: SM4-GCM with a 96-bit nonce, sealing and opening in place, on the fastest
//! implementation this CPU runs.

use aes_gcm::{AeadInOut as _, AesGcm, KeyInit as _, aead::consts::U12};

use super::sm4_fast::FastSm4;
#[cfg(target_arch = "x86_64")]
use super::{
    gcm_avx512::WideGcm,
    sm4_fast::{Sm4Backend, expand_key},
};

/// SM4-GCM under one key (16-byte key, 12-byte nonce, 16-byte tag; NIST SP 800-38D over
/// SM4, as RFC 8998 §3.1 asks).
///
/// On x86_64 CPUs with AVX-512 (F, BW), GFNI and VPCLMULQDQ it is one pass per 1 KiB of
/// data: 64 counter blocks through the SM4 kernel, then GHASH of the same bytes on 512-bit
/// carry-less multiplies (unless `BCOS_P2P_SM4_BACKEND` caps SM4 below `avx512-gfni`: see
/// [`Sm4Backend::cap`](super::Sm4Backend::cap)). Elsewhere it is `aes-gcm`'s GCM over
/// [`FastSm4`].
#[derive(Clone)]
pub struct Sm4GcmKey {
    imp: Imp,
}

#[derive(Clone)]
enum Imp {
    #[cfg(target_arch = "x86_64")]
    Wide(Box<WideGcm>),
    Generic(Box<AesGcm<FastSm4, U12>>),
}

/// GCM refused the input: a wrong tag on opening, or more than 2^32 − 2 blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SM4-GCM: authentication failed or input too long")]
pub struct GcmError;

impl Sm4GcmKey {
    /// The cipher under `key`, on the fastest implementation of this CPU that
    /// [`Sm4Backend::cap`](super::Sm4Backend::cap) allows.
    pub fn new(key: &[u8; 16]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if Sm4Backend::Avx512Gfni.is_allowed()
            && let Some(wide) = WideGcm::new(expand_key(key))
        {
            return Self {
                imp: Imp::Wide(Box::new(wide)),
            };
        }
        Self::generic(key)
    }

    /// The cipher under `key` on `aes-gcm` over [`FastSm4`], whatever the CPU has (for
    /// comparison and tests).
    pub fn generic(key: &[u8; 16]) -> Self {
        Self {
            imp: Imp::Generic(Box::new(AesGcm::new(&(*key).into()))),
        }
    }

    /// Whether this is the one-pass AVX-512 implementation.
    pub fn is_wide(&self) -> bool {
        match self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Wide(_) => true,
            Imp::Generic(_) => false,
        }
    }

    /// Encrypts `buf` in place and returns the tag over `aad` and the ciphertext.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], GcmError> {
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Wide(wide) => wide.seal(nonce, aad, buf).ok_or(GcmError),
            Imp::Generic(gcm) => gcm
                .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
                .map(Into::into)
                .map_err(|_| GcmError),
        }
    }

    /// Checks `tag` over `aad` and the ciphertext in `buf`, and only then decrypts `buf` in
    /// place; on an error `buf` holds no plaintext.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), GcmError> {
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Wide(wide) => wide
                .open(nonce, aad, buf, tag)
                .then_some(())
                .ok_or(GcmError),
            Imp::Generic(gcm) => gcm
                .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
                .map_err(|_| GcmError),
        }
    }
}

impl core::fmt::Debug for Sm4GcmKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Sm4GcmKey {{ wide: {}, .. }}", self.is_wide())
    }
}
