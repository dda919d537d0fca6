//! SM4-GCM on AVX-512: the SM4 counter blocks on the GFNI kernel of [`super::sm4_avx512`],
//! GHASH on VPCLMULQDQ, sixteen blocks per reduction. Sealing encrypts and hashes in one pass
//! over the data; opening hashes the ciphertext and checks the tag first, then decrypts.
//!
//! GHASH is computed as POLYVAL (RFC 8452 Appendix A): with `H' = mulX(ByteReverse(H))`,
//! `GHASH(H, X…) = ByteReverse(POLYVAL(H', ByteReverse(X)…))`. POLYVAL's field keeps the
//! bits in the order the carry-less multiply produces them, so each block is one byte
//! shuffle away from the multiplier and the reduction is two multiplies by the constant
//! `0xc2…01`. Sixteen blocks share one reduction: block `i` of a group is multiplied by
//! `H'^(16−i)` and the unreduced products are added, since reduction is linear.
//!
//! The `polyval` crate behind `aes-gcm` multiplies one 128-bit block at a time, about a third
//! of SM4-GCM's time before this module; here GHASH is a small part of it.

pub(super) use imp::WideGcm;

/// The kernel on compilers with the AVX-512 intrinsics (stable since Rust 1.89).
#[rustversion::since(1.89)]
// The items used here are stable since 1.89, which `rustversion` checks.
#[allow(clippy::incompatible_msrv)]
mod imp {
    use core::arch::x86_64::*;

    use super::super::sm4_avx512::Avx512Token;

    /// Blocks per SM4 call and per pass over the data.
    const CHUNK_BLOCKS: usize = 64;
    /// Bytes per SM4 call.
    const CHUNK: usize = CHUNK_BLOCKS * 16;
    /// Bytes per GHASH reduction: sixteen blocks.
    const GROUP: usize = 256;

    /// Byte reversal of each 128-bit lane (GHASH's bit order to POLYVAL's).
    const BSWAP128: [u8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
    /// The reduction constant of POLYVAL's field, `x^127 + x^126 + x^121 + 1` shifted as
    /// Gueron's Montgomery reduction takes it: `0xc2` in the top byte of the high half.
    const POLY_HIGH: u64 = 0xc200_0000_0000_0000;

    /// SM4-GCM keyed for AVX-512 (F, BW), GFNI and VPCLMULQDQ: only [`Self::new`] makes one,
    /// and only on a CPU that has them.
    #[derive(Clone)]
    pub(in super::super) struct WideGcm {
        /// The SM4 kernel, with the proof that the CPU runs it.
        sm4: Avx512Token,
        /// SM4 encryption round keys.
        rk: [u32; 32],
        /// `H'^(16−j)` at index `j`, as little-endian 128-bit values: four registers of
        /// multipliers, lane `l` of register `r` for block `4r + l` of a group of sixteen.
        powers: [[u8; 16]; 16],
    }

    impl WideGcm {
        /// The cipher with SM4 round keys `rk`, or `None` if this CPU lacks an
        /// instruction set the kernel needs.
        pub(in super::super) fn new(rk: [u32; 32]) -> Option<Self> {
            let sm4 = Avx512Token::detect()?;
            let clmul = std::is_x86_feature_detected!("vpclmulqdq")
                && std::is_x86_feature_detected!("pclmulqdq")
                && std::is_x86_feature_detected!("avx512f");
            if !clmul {
                return None;
            }
            let mut h = [[0u8; 16]; 64];
            sm4.encrypt64(&rk, &mut h, 1);
            // POLYVAL's key: mulX(ByteReverse(H)).
            let hr = u128::from_be_bytes(h[0]);
            let hp = (hr << 1)
                ^ if hr >> 127 == 1 {
                    (1 << 127) | (1 << 126) | (1 << 121) | 1
                } else {
                    0
                };
            // SAFETY: PCLMULQDQ was detected above, and AVX-512 F, which implies SSSE3.
            let powers = unsafe { powers(hp) };
            Some(Self { sm4, rk, powers })
        }

        /// Encrypts `buf` in place under the 96-bit `nonce` and returns the tag over `aad`
        /// and the ciphertext. `None` past GCM's length limit (2^32 − 2 blocks).
        pub(in super::super) fn seal(
            &self,
            nonce: &[u8; 12],
            aad: &[u8],
            buf: &mut [u8],
        ) -> Option<[u8; 16]> {
            check_len(buf.len())?;
            // SAFETY: `self` exists only on a CPU with the features of `seal_wide` (`new`).
            Some(unsafe { self.seal_wide(nonce, aad, buf) })
        }

        /// Checks `tag` over `aad` and the ciphertext in `buf`, then decrypts `buf` in place;
        /// on a wrong tag `buf` is left as it was and the answer is `false`.
        pub(in super::super) fn open(
            &self,
            nonce: &[u8; 12],
            aad: &[u8],
            buf: &mut [u8],
            tag: &[u8; 16],
        ) -> bool {
            if check_len(buf.len()).is_none() {
                return false;
            }
            // SAFETY: as in `seal`.
            unsafe { self.open_wide(nonce, aad, buf, tag) }
        }

        #[target_feature(enable = "avx512f,avx512bw,gfni,vpclmulqdq,pclmulqdq")]
        fn seal_wide(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
            let mut acc = self.ghash(_mm_setzero_si128(), aad);
            let mut counter = 2u32;
            for chunk in buf.chunks_mut(CHUNK) {
                self.ctr(nonce, counter, chunk);
                acc = self.ghash(acc, chunk);
                counter = counter.wrapping_add(CHUNK_BLOCKS as u32);
            }
            self.finish(nonce, acc, aad.len(), buf.len())
        }

        #[target_feature(enable = "avx512f,avx512bw,gfni,vpclmulqdq,pclmulqdq")]
        fn open_wide(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
            let acc = self.ghash(_mm_setzero_si128(), aad);
            let acc = self.ghash(acc, buf);
            let expected = self.finish(nonce, acc, aad.len(), buf.len());
            // Constant time: the differences are ORed together before the one branch.
            let diff = expected.iter().zip(tag).fold(0u8, |d, (a, b)| d | (a ^ b));
            if core::hint::black_box(diff) != 0 {
                return false;
            }
            let mut counter = 2u32;
            for chunk in buf.chunks_mut(CHUNK) {
                self.ctr(nonce, counter, chunk);
                counter = counter.wrapping_add(CHUNK_BLOCKS as u32);
            }
            true
        }

        /// XORs `data` (at most [`CHUNK`] bytes) with the key stream from counter `counter`.
        #[target_feature(enable = "avx512f,avx512bw,gfni")]
        fn ctr(&self, nonce: &[u8; 12], counter: u32, data: &mut [u8]) {
            let blocks = data.len().div_ceil(16);
            let mut stream = [[0u8; 16]; CHUNK_BLOCKS];
            for (i, block) in stream.iter_mut().take(blocks).enumerate() {
                block[..12].copy_from_slice(nonce);
                block[12..].copy_from_slice(&counter.wrapping_add(i as u32).to_be_bytes());
            }
            self.sm4.encrypt64(&self.rk, &mut stream, blocks);
            for (d, k) in data.iter_mut().zip(stream.as_flattened()) {
                *d ^= k;
            }
        }

        /// The tag: GHASH closed with the lengths block, XOR SM4(J0).
        #[target_feature(enable = "avx512f,avx512bw,gfni,vpclmulqdq,pclmulqdq")]
        fn finish(&self, nonce: &[u8; 12], acc: __m128i, aad_len: usize, len: usize) -> [u8; 16] {
            let mut lengths = [0u8; 16];
            lengths[..8].copy_from_slice(&((aad_len as u64).wrapping_mul(8)).to_be_bytes());
            lengths[8..].copy_from_slice(&((len as u64).wrapping_mul(8)).to_be_bytes());
            let acc = self.ghash(acc, &lengths);
            let mut s = [0u8; 16];
            // SAFETY: `s` is 16 writable bytes; SSE2 is enabled with AVX-512 F.
            unsafe {
                _mm_storeu_si128(s.as_mut_ptr().cast(), _mm_shuffle_epi8(acc, xmm(BSWAP128)))
            };
            let mut j0 = [[0u8; 16]; CHUNK_BLOCKS];
            j0[0][..12].copy_from_slice(nonce);
            j0[0][15] = 1;
            self.sm4.encrypt64(&self.rk, &mut j0, 1);
            core::array::from_fn(|i| s[i] ^ j0[0][i])
        }

        /// Absorbs `data` into the POLYVAL accumulator `acc`, the last block zero-padded:
        /// groups of sixteen blocks with one reduction each, then single blocks.
        #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq,pclmulqdq")]
        fn ghash(&self, mut acc: __m128i, data: &[u8]) -> __m128i {
            let (groups, rest) = data.as_chunks::<GROUP>();
            if !groups.is_empty() {
                // SAFETY: `powers` is 256 valid bytes; loads have no alignment requirement.
                let h: [__m512i; 4] = core::array::from_fn(|r| unsafe {
                    _mm512_loadu_si512(self.powers[4 * r..].as_ptr().cast())
                });
                for group in groups {
                    acc = ghash16(acc, group, &h);
                }
            }
            let h1 = xmm(self.powers[15]);
            let (blocks, tail) = rest.as_chunks::<16>();
            for block in blocks {
                acc = dot(_mm_xor_si128(acc, reversed(*block)), h1);
            }
            if !tail.is_empty() {
                let mut last = [0u8; 16];
                last[..tail.len()].copy_from_slice(tail);
                acc = dot(_mm_xor_si128(acc, reversed(last)), h1);
            }
            acc
        }
    }

    /// Whether `len` bytes are within GCM's limit of 2^32 − 2 blocks per nonce.
    fn check_len(len: usize) -> Option<()> {
        ((len as u64) <= ((1u64 << 32) - 2) * 16).then_some(())
    }

    /// `H'^(16−j)` at index `j`, from `H'` (as a little-endian 128-bit value).
    #[target_feature(enable = "pclmulqdq,ssse3")]
    fn powers(hp: u128) -> [[u8; 16]; 16] {
        let h = xmm(hp.to_le_bytes());
        let mut out = [[0u8; 16]; 16];
        let mut p = h;
        for j in (0..16).rev() {
            // SAFETY: `out[j]` is 16 writable bytes.
            unsafe { _mm_storeu_si128(out[j].as_mut_ptr().cast(), p) };
            p = dot(p, h);
        }
        out
    }

    /// POLYVAL's product `a·b·x^−128` in its field.
    #[target_feature(enable = "pclmulqdq,ssse3")]
    #[inline]
    fn dot(a: __m128i, b: __m128i) -> __m128i {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x01>(a, b),
            _mm_clmulepi64_si128::<0x10>(a, b),
        );
        reduce(
            _mm_xor_si128(lo, _mm_slli_si128::<8>(mid)),
            _mm_xor_si128(hi, _mm_srli_si128::<8>(mid)),
        )
    }

    /// The 256-bit product `hi:lo` times `x^−128`, reduced (two folds by the constant).
    #[target_feature(enable = "pclmulqdq,ssse3")]
    #[inline]
    fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
        let poly = _mm_set_epi64x(POLY_HIGH as i64, 1);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
        _mm_xor_si128(hi, lo)
    }

    /// Sixteen blocks into the accumulator with one reduction: block `i` times `H'^(16−i)`
    /// (the accumulator added to block 0), products summed unreduced.
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq,pclmulqdq")]
    #[inline]
    fn ghash16(acc: __m128i, group: &[u8; GROUP], h: &[__m512i; 4]) -> __m128i {
        let swap = _mm512_broadcast_i32x4(xmm(BSWAP128));
        let mut lo = _mm512_setzero_si512();
        let mut hi = _mm512_setzero_si512();
        let mut mid = _mm512_setzero_si512();
        for (r, hr) in h.iter().enumerate() {
            // SAFETY: `group` holds 256 bytes, this load 64 of them at 64·r; no alignment.
            let raw = unsafe { _mm512_loadu_si512(group[64 * r..].as_ptr().cast()) };
            let mut v = _mm512_shuffle_epi8(raw, swap);
            if r == 0 {
                v = _mm512_xor_si512(v, _mm512_zextsi128_si512(acc));
            }
            lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128::<0x00>(v, *hr));
            hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128::<0x11>(v, *hr));
            mid = _mm512_ternarylogic_epi64::<0x96>(
                mid,
                _mm512_clmulepi64_epi128::<0x01>(v, *hr),
                _mm512_clmulepi64_epi128::<0x10>(v, *hr),
            );
        }
        let mid = lanes_xor(mid);
        reduce(
            _mm_xor_si128(lanes_xor(lo), _mm_slli_si128::<8>(mid)),
            _mm_xor_si128(lanes_xor(hi), _mm_srli_si128::<8>(mid)),
        )
    }

    /// The XOR of a register's four 128-bit lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn lanes_xor(v: __m512i) -> __m128i {
        let halves = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
        _mm_xor_si128(
            _mm256_castsi256_si128(halves),
            _mm256_extracti128_si256::<1>(halves),
        )
    }

    /// A block in POLYVAL's order (bytes reversed).
    #[target_feature(enable = "ssse3")]
    #[inline]
    fn reversed(block: [u8; 16]) -> __m128i {
        _mm_shuffle_epi8(xmm(block), xmm(BSWAP128))
    }

    /// Sixteen bytes as a register.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn xmm(bytes: [u8; 16]) -> __m128i {
        // SAFETY: `bytes` is 16 readable bytes; no alignment requirement.
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    }
}

/// The kernel on a compiler without the AVX-512 intrinsics: never available.
#[rustversion::before(1.89)]
mod imp {
    /// Uninhabited: no CPU runs the kernel with this compiler.
    #[derive(Clone)]
    pub(in super::super) enum WideGcm {}

    impl WideGcm {
        /// Never a cipher.
        pub(in super::super) fn new(_: [u32; 32]) -> Option<Self> {
            None
        }

        /// Unreachable: there is no cipher.
        pub(in super::super) fn seal(
            &self,
            _: &[u8; 12],
            _: &[u8],
            _: &mut [u8],
        ) -> Option<[u8; 16]> {
            match *self {}
        }

        /// Unreachable: there is no cipher.
        pub(in super::super) fn open(
            &self,
            _: &[u8; 12],
            _: &[u8],
            _: &mut [u8],
            _: &[u8; 16],
        ) -> bool {
            match *self {}
        }
    }
}
