//! SM4 on x86_64 SIMD, many blocks at a time (the CTR keystream of SM4-GCM).
//!
//! The state is transposed so that each register holds one 32-bit word of several blocks
//! (word `i` of blocks 0..4 in a 128-bit lane), and the 32 rounds run on whole registers.
//! The only non-linear step, the byte S-box, uses that the SM4 S-box is affine-equivalent
//! to inversion in GF(2^8): `S(x) = A·inv₁(A·x + c) + c` with `A` the circulant matrix of
//! `0xa7`, `c = 0xd3` and `inv₁` the inversion modulo `x⁸+x⁷+x⁶+x⁵+x⁴+x²+1`. A field
//! isomorphism `T` (`x ↦ 0x23`, a root of that polynomial in the AES field) moves the
//! inversion into the AES field, where the CPU computes it:
//!
//! * AES-NI: `AESENCLAST` with a zero round key is `ShiftRows(SubBytes(z))`, and
//!   `SubBytes(z) = Aᴀᴇꜱ·inv(z) + 0x63`, so `S(x) = POST(AESENCLAST(PRE(x)))` up to the byte
//!   permutation of ShiftRows, which is undone in the shuffles of the linear layer. `PRE`
//!   (`x ↦ T·A·x + T·c`) and `POST` (`y ↦ A·T⁻¹·Aᴀᴇꜱ⁻¹·(y + 0x63) + c`) are applied per nibble
//!   with `PSHUFB` table look-ups: 16 S-boxes in eleven instructions.
//! * GFNI: `GF2P8AFFINEQB` applies `PRE`, `GF2P8AFFINEINVQB` inverts in the AES field and
//!   applies `A·T⁻¹` and `c`: 32 S-boxes (AVX2 width) in two instructions.
//! * AVX2 without GFNI: the AES-NI S-box on 256-bit registers, the nibble tables in both
//!   lanes. `VAESENCLAST` (VAES) runs the AES round on both 128-bit lanes at once; with plain
//!   AES-NI the high lane is extracted, goes through `AESENCLAST` beside the low one, and is
//!   inserted back: 32 S-boxes in thirteen instructions with VAES, sixteen without.
//!
//! The tables and matrices below are checked against the field arithmetic they come from
//! and against the SM4 S-box for all 256 inputs by the tests of this module.

use core::arch::x86_64::*;

/// Proof that this CPU has AES-NI and SSSE3 (and SSE2, part of x86_64): only [`Self::detect`]
/// makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct AesNiToken(());

impl AesNiToken {
    /// A token if the CPU has the instructions.
    pub(super) fn detect() -> Option<Self> {
        (std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("ssse3"))
            .then_some(Self(()))
    }

    /// Encrypts the first `n` of 16 blocks in place (the others are scratch), with as few
    /// groups of four as cover them.
    pub(super) fn encrypt16(self, rk: &[u32; 32], blocks: &mut [[u8; 16]; 16], n: usize) {
        // SAFETY: `self` exists only when the CPU reported AES-NI and SSSE3 (`detect`), the
        // target features of `encrypt_aesni` besides SSE2, which every x86_64 CPU has.
        unsafe {
            match n {
                0..=4 => encrypt_aesni::<1>(rk, &mut blocks[..4]),
                5..=8 => encrypt_aesni::<2>(rk, &mut blocks[..8]),
                _ => encrypt_aesni::<4>(rk, blocks),
            }
        }
    }

    /// The SM4 S-box on 16 bytes through AESENCLAST (for tests).
    #[cfg(test)]
    pub(super) fn sbox16(self, input: [u8; 16]) -> [u8; 16] {
        // SAFETY: as in `encrypt16`.
        unsafe { sbox16_aesni(input) }
    }
}

/// Low-nibble table of `PRE(x) = T·A·x + T·c` (AES-NI path): `PRE_LO[n] = T·A·n`.
pub(super) const PRE_LO: [u8; 16] = [
    0x00, 0x8c, 0x30, 0xbc, 0x85, 0x09, 0xb5, 0x39, 0x9f, 0x13, 0xaf, 0x23, 0x1a, 0x96, 0x2a, 0xa6,
];
/// High-nibble table of `PRE`, constant included: `PRE_HI[n] = T·A·(n << 4) + T·c`.
pub(super) const PRE_HI: [u8; 16] = [
    0x3e, 0xe2, 0x10, 0xcc, 0xfb, 0x27, 0xd5, 0x09, 0x36, 0xea, 0x18, 0xc4, 0xf3, 0x2f, 0xdd, 0x01,
];
/// Low-nibble table of `POST(y) = A·T⁻¹·Aᴀᴇꜱ⁻¹·(y + 0x63) + c`: `POST_LO[n] = A·T⁻¹·Aᴀᴇꜱ⁻¹·n`.
pub(super) const POST_LO: [u8; 16] = [
    0x00, 0xb8, 0xca, 0x72, 0x3e, 0x86, 0xf4, 0x4c, 0x67, 0xdf, 0xad, 0x15, 0x59, 0xe1, 0x93, 0x2b,
];
/// High-nibble table of `POST`, constant included.
pub(super) const POST_HI: [u8; 16] = [
    0x6c, 0x8c, 0x3c, 0xdc, 0xf1, 0x11, 0xa1, 0x41, 0xac, 0x4c, 0xfc, 0x1c, 0x31, 0xd1, 0x61, 0x81,
];

/// `T·A` as a GF2P8AFFINEQB matrix (byte `7 - i` of the quadword is row `i`).
pub(super) const GFNI_PRE_MATRIX: u64 = 0x4c28_7db9_1a22_505d;
/// `T·c`, the constant of the GFNI `PRE`.
pub(super) const GFNI_PRE_CONST: i32 = 0x3e;
/// `A·T⁻¹` as a GF2P8AFFINEINVQB matrix.
pub(super) const GFNI_POST_MATRIX: u64 = 0xf3ab_34a9_74a6_b589;
/// `c`, the constant of the GFNI `POST`.
pub(super) const GFNI_POST_CONST: i32 = 0xd3;

/// Index of the byte ShiftRows moves to position `k` of the AES state (byte `4·col + row`).
const fn shift_rows_src(k: usize) -> usize {
    let (col, row) = (k / 4, k % 4);
    4 * ((col + row) % 4) + row
}

/// `PSHUFB` mask that undoes ShiftRows and then rotates every 32-bit lane left by `8·rot`
/// bits (lanes hold little-endian words).
const fn unshift_rotate_mask(rot: usize) -> [u8; 16] {
    let mut unshift = [0u8; 16];
    let mut q = 0;
    while q < 16 {
        unshift[shift_rows_src(q)] = q as u8;
        q += 1;
    }
    let mut mask = [0u8; 16];
    let mut p = 0;
    while p < 16 {
        let src = (p & !3) | ((p + 4 - rot) % 4);
        mask[p] = unshift[src];
        p += 1;
    }
    mask
}

/// `PSHUFB` mask that rotates every 32-bit lane left by `8·rot` bits.
const fn rotate_mask(rot: usize) -> [u8; 16] {
    let mut mask = [0u8; 16];
    let mut p = 0;
    while p < 16 {
        mask[p] = ((p & !3) | ((p + 4 - rot) % 4)) as u8;
        p += 1;
    }
    mask
}

/// The masks of [`unshift_rotate_mask`] for rotations by 0, 8, 16 and 24 bits.
const UNSHIFT_ROT: [[u8; 16]; 4] = [
    unshift_rotate_mask(0),
    unshift_rotate_mask(1),
    unshift_rotate_mask(2),
    unshift_rotate_mask(3),
];

/// The masks of [`rotate_mask`] for rotations by 8, 16 and 24 bits.
const ROT: [[u8; 16]; 3] = [rotate_mask(1), rotate_mask(2), rotate_mask(3)];

/// `PSHUFB` mask that byte-swaps every 32-bit lane (SM4 words are big-endian).
pub(super) const BSWAP32: [u8; 16] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];

/// A 16-byte table as a register.
#[target_feature(enable = "sse2")]
#[inline]
pub(super) fn xmm(t: [u8; 16]) -> __m128i {
    let b = t.map(|v| v as i8);
    _mm_setr_epi8(
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    )
}

/// The 4×4 transpose of 32-bit words in each 128-bit lane (its own inverse).
macro_rules! transpose4 {
    ($x:expr, $lo32:ident, $hi32:ident, $lo64:ident, $hi64:ident) => {{
        let [a, b, c, d] = $x;
        let t0 = $lo32(a, b);
        let t1 = $hi32(a, b);
        let t2 = $lo32(c, d);
        let t3 = $hi32(c, d);
        [$lo64(t0, t2), $hi64(t0, t2), $lo64(t1, t3), $hi64(t1, t3)]
    }};
}

/// The 32 rounds over groups of transposed state, with `$t` the round function `T` (S-box
/// layer then `L`) and `$set1`/`$xor` the register broadcast and XOR; each step runs on every
/// group before the next, so the groups' independent chains overlap. Evaluates to the output
/// words in block order (`X35, X34, X33, X32`).
macro_rules! rounds {
    ($rk:expr, $x:expr, $t:path, $set1:ident, $xor:ident) => {{
        let mut x = $x;
        for r in $rk.chunks_exact(4) {
            let k = [
                $set1(r[0] as i32),
                $set1(r[1] as i32),
                $set1(r[2] as i32),
                $set1(r[3] as i32),
            ];
            for g in x.iter_mut() {
                g[0] = $xor(g[0], $t($xor($xor(g[1], g[2]), $xor(g[3], k[0]))));
            }
            for g in x.iter_mut() {
                g[1] = $xor(g[1], $t($xor($xor(g[2], g[3]), $xor(g[0], k[1]))));
            }
            for g in x.iter_mut() {
                g[2] = $xor(g[2], $t($xor($xor(g[3], g[0]), $xor(g[1], k[2]))));
            }
            for g in x.iter_mut() {
                g[3] = $xor(g[3], $t($xor($xor(g[0], g[1]), $xor(g[2], k[3]))));
            }
        }
        x.map(|[a, b, c, d]| [d, c, b, a])
    }};
}

/// Encrypts `4·G` blocks in place with AES-NI and SSSE3: `G` groups of four blocks, one
/// 32-bit word of each block per register; the groups' rounds interleave to hide latency.
#[target_feature(enable = "sse2,ssse3,aes")]
fn encrypt_aesni<const G: usize>(rk: &[u32; 32], blocks: &mut [[u8; 16]]) {
    debug_assert_eq!(blocks.len(), 4 * G);
    let bswap = xmm(BSWAP32);
    let mut x = [[_mm_setzero_si128(); 4]; G];
    for (g, chunk) in x.iter_mut().zip(blocks.chunks_exact(4)) {
        let mut loaded = [_mm_setzero_si128(); 4];
        for (l, b) in loaded.iter_mut().zip(chunk) {
            *l = _mm_shuffle_epi8(load128(b), bswap);
        }
        *g = transpose4!(
            loaded,
            _mm_unpacklo_epi32,
            _mm_unpackhi_epi32,
            _mm_unpacklo_epi64,
            _mm_unpackhi_epi64
        );
    }
    let y = rounds!(rk, x, t_aesni, _mm_set1_epi32, _mm_xor_si128);
    for (g, chunk) in y.into_iter().zip(blocks.chunks_exact_mut(4)) {
        let out = transpose4!(
            g,
            _mm_unpacklo_epi32,
            _mm_unpackhi_epi32,
            _mm_unpacklo_epi64,
            _mm_unpackhi_epi64
        );
        for (o, v) in chunk.iter_mut().zip(out) {
            store128(o, _mm_shuffle_epi8(v, bswap));
        }
    }
}

/// Stores a register into 16 bytes.
#[target_feature(enable = "sse2")]
#[inline]
fn store128(out: &mut [u8; 16], v: __m128i) {
    // SAFETY: `out` is a valid, writable 16-byte buffer and `_mm_storeu_si128` has no
    // alignment requirement; SSE2 is enabled on this function.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) }
}

/// Loads 16 bytes into a register.
#[target_feature(enable = "sse2")]
#[inline]
fn load128(bytes: &[u8; 16]) -> __m128i {
    // SAFETY: `bytes` is a valid 16-byte buffer and `_mm_loadu_si128` has no alignment
    // requirement; SSE2 is enabled on this function.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// `T(a) = L(τ(a))` on four words with AES-NI: PRE, AESENCLAST, POST per nibble, then `L`
/// with shuffles that also undo ShiftRows.
#[target_feature(enable = "sse2,ssse3,aes")]
#[inline]
fn t_aesni(a: __m128i) -> __m128i {
    let t = sbox_aesni_shifted(a);
    let b = _mm_shuffle_epi8(t, xmm(UNSHIFT_ROT[0]));
    let b8 = _mm_shuffle_epi8(t, xmm(UNSHIFT_ROT[1]));
    let b16 = _mm_shuffle_epi8(t, xmm(UNSHIFT_ROT[2]));
    let b24 = _mm_shuffle_epi8(t, xmm(UNSHIFT_ROT[3]));
    let u = _mm_xor_si128(_mm_xor_si128(b, b8), b16);
    let rol2 = _mm_or_si128(_mm_slli_epi32::<2>(u), _mm_srli_epi32::<30>(u));
    _mm_xor_si128(_mm_xor_si128(b, b24), rol2)
}

/// The SM4 S-box on 16 bytes, left in ShiftRows order (byte `k` of the result is
/// `S(a[shift_rows_src(k)])`).
#[target_feature(enable = "sse2,ssse3,aes")]
#[inline]
fn sbox_aesni_shifted(a: __m128i) -> __m128i {
    let nib = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(a, nib);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(a), nib);
    let z = _mm_xor_si128(
        _mm_shuffle_epi8(xmm(PRE_LO), lo),
        _mm_shuffle_epi8(xmm(PRE_HI), hi),
    );
    let y = _mm_aesenclast_si128(z, _mm_setzero_si128());
    let lo = _mm_and_si128(y, nib);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(y), nib);
    _mm_xor_si128(
        _mm_shuffle_epi8(xmm(POST_LO), lo),
        _mm_shuffle_epi8(xmm(POST_HI), hi),
    )
}

/// The SM4 S-box on 16 bytes through AES-NI, in byte order (for the exhaustive test).
#[cfg(test)]
#[target_feature(enable = "sse2,ssse3,aes")]
fn sbox16_aesni(input: [u8; 16]) -> [u8; 16] {
    let t = sbox_aesni_shifted(load128(&input));
    let mut out = [0u8; 16];
    store128(&mut out, _mm_shuffle_epi8(t, xmm(UNSHIFT_ROT[0])));
    out
}

/// A 16-byte table in both 128-bit lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn ymm(t: [u8; 16]) -> __m256i {
    _mm256_broadcastsi128_si256(xmm(t))
}

/// Eight blocks as the transposed state of the AVX2 kernels. Blocks `2j` and `2j + 1` are
/// loaded into the low and high lane of one register, and the 4×4 transpose within each lane
/// leaves register `i` with word `i` of blocks 0, 2, 4, 6 (low lane) and 1, 3, 5, 7 (high).
#[target_feature(enable = "avx2")]
#[inline]
fn load_group8(chunk: &[[u8; 16]]) -> [__m256i; 4] {
    let bswap = ymm(BSWAP32);
    let mut loaded = [_mm256_setzero_si256(); 4];
    for (l, pair) in loaded.iter_mut().zip(chunk.chunks_exact(2)) {
        let v = _mm256_set_m128i(load128(&pair[1]), load128(&pair[0]));
        *l = _mm256_shuffle_epi8(v, bswap);
    }
    transpose4!(
        loaded,
        _mm256_unpacklo_epi32,
        _mm256_unpackhi_epi32,
        _mm256_unpacklo_epi64,
        _mm256_unpackhi_epi64
    )
}

/// Writes the output words of eight blocks (as [`rounds!`] returns them) back in block
/// order: the inverse of [`load_group8`].
#[target_feature(enable = "avx2")]
#[inline]
fn store_group8(words: [__m256i; 4], chunk: &mut [[u8; 16]]) {
    let bswap = ymm(BSWAP32);
    let out = transpose4!(
        words,
        _mm256_unpacklo_epi32,
        _mm256_unpackhi_epi32,
        _mm256_unpacklo_epi64,
        _mm256_unpackhi_epi64
    );
    for (v, pair) in out.into_iter().zip(chunk.chunks_exact_mut(2)) {
        let v = _mm256_shuffle_epi8(v, bswap);
        if let [lo, hi] = pair {
            store128(lo, _mm256_castsi256_si128(v));
            store128(hi, _mm256_extracti128_si256::<1>(v));
        }
    }
}

/// Defines `$token`, the proof that the CPU has `$features` (made only by its `detect`, from
/// the run-time checks `$detect`), whose `encrypt32` runs `$encrypt::<G>` (`8·G` blocks, as
/// few groups of eight as cover the blocks asked for) and, for tests, `sbox32` runs `$sbox32`:
/// the token of each AVX2 back end.
macro_rules! avx2_token {
    ($features:literal, $token:ident, $detect:expr, $encrypt:ident, $sbox32:ident) => {
        /// Proof that this CPU has the instructions of this back end: only
        /// [`Self::detect`] makes one.
        #[derive(Clone, Copy, Debug)]
        pub(in super::super) struct $token(());

        impl $token {
            /// A token if the CPU has the instructions.
            pub(in super::super) fn detect() -> Option<Self> {
                ($detect).then_some(Self(()))
            }

            /// Encrypts the first `n` of 32 blocks in place (the others are scratch), with as
            /// few groups of eight as cover them.
            pub(in super::super) fn encrypt32(
                self,
                rk: &[u32; 32],
                blocks: &mut [[u8; 16]; 32],
                n: usize,
            ) {
                // SAFETY: `self` exists only when the CPU reported `$features` (`detect`),
                // the target features of `$encrypt`.
                unsafe {
                    match n {
                        0..=8 => $encrypt::<1>(rk, &mut blocks[..8]),
                        9..=16 => $encrypt::<2>(rk, &mut blocks[..16]),
                        17..=24 => $encrypt::<3>(rk, &mut blocks[..24]),
                        _ => $encrypt::<4>(rk, blocks),
                    }
                }
            }

            /// The SM4 S-box on 32 bytes through this back end (for tests).
            #[cfg(test)]
            pub(in super::super) fn sbox32(self, input: [u8; 32]) -> [u8; 32] {
                // SAFETY: as in `encrypt32`.
                unsafe { $sbox32(input) }
            }
        }
    };
}

/// The AVX2 kernel around the AESENCLAST S-box: the AES-NI path of this module on 256-bit
/// registers, eight blocks per group. `$aes` is `AESENCLAST` with a zero round key on both
/// 128-bit lanes and `$features` the target features it needs, AVX2 among them. Defines
/// `encrypt::<G>` (`8·G` blocks in place) and, for the tests, `sbox32`.
///
/// A round of one group is a chain of about 25 cycles (the S-box and `L` one step after
/// another, the lane moves and AESENCLAST at three cycles each) but only 28–31 instructions
/// of work, which three vector ports could finish in about ten, so four groups in flight
/// still leave the ports partly idle. Six groups ran about 5% faster on raw blocks on the
/// Intel Xeon where this was measured, but a batch of 48 does not divide the power-of-two
/// runs of a TLS record, and `ctr` (under `aes-gcm`) encrypts what is left after the last
/// full batch one block at a time, which cost more than the wider batch gained.
///
/// Also defines `$token` ([`avx2_token!`]) over the kernel.
macro_rules! avx2_aes_kernel {
    ($features:literal, $aes:ident, $token:ident, $detect:expr) => {
        avx2_token!($features, $token, $detect, encrypt, sbox32);

        /// The SM4 S-box on 32 bytes, each lane left in ShiftRows order: `PRE` per nibble,
        /// the AES S-box, `POST` per nibble (as the AES-NI path, on both lanes at once).
        #[target_feature(enable = $features)]
        #[inline]
        fn sbox_shifted(a: __m256i) -> __m256i {
            let nib = _mm256_set1_epi8(0x0f);
            let lo = _mm256_and_si256(a, nib);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(a), nib);
            let z = _mm256_xor_si256(
                _mm256_shuffle_epi8(ymm(PRE_LO), lo),
                _mm256_shuffle_epi8(ymm(PRE_HI), hi),
            );
            let y = $aes(z);
            let lo = _mm256_and_si256(y, nib);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(y), nib);
            _mm256_xor_si256(
                _mm256_shuffle_epi8(ymm(POST_LO), lo),
                _mm256_shuffle_epi8(ymm(POST_HI), hi),
            )
        }

        /// `T(a) = L(τ(a))` on eight words: the S-box, then `L` with shuffles that also undo
        /// ShiftRows.
        #[target_feature(enable = $features)]
        #[inline]
        fn t(a: __m256i) -> __m256i {
            let t = sbox_shifted(a);
            let b = _mm256_shuffle_epi8(t, ymm(UNSHIFT_ROT[0]));
            let b8 = _mm256_shuffle_epi8(t, ymm(UNSHIFT_ROT[1]));
            let b16 = _mm256_shuffle_epi8(t, ymm(UNSHIFT_ROT[2]));
            let b24 = _mm256_shuffle_epi8(t, ymm(UNSHIFT_ROT[3]));
            let u = _mm256_xor_si256(_mm256_xor_si256(b, b8), b16);
            let rol2 = _mm256_or_si256(_mm256_slli_epi32::<2>(u), _mm256_srli_epi32::<30>(u));
            _mm256_xor_si256(_mm256_xor_si256(b, b24), rol2)
        }

        /// Encrypts `8·G` blocks in place: `G` groups of eight blocks, each register holding
        /// one 32-bit word of four blocks per 128-bit lane.
        #[target_feature(enable = $features)]
        fn encrypt<const G: usize>(rk: &[u32; 32], blocks: &mut [[u8; 16]]) {
            debug_assert_eq!(blocks.len(), 8 * G);
            let mut x = [[_mm256_setzero_si256(); 4]; G];
            for (g, chunk) in x.iter_mut().zip(blocks.chunks_exact(8)) {
                *g = load_group8(chunk);
            }
            let y = rounds!(rk, x, t, _mm256_set1_epi32, _mm256_xor_si256);
            for (g, chunk) in y.into_iter().zip(blocks.chunks_exact_mut(8)) {
                store_group8(g, chunk);
            }
        }

        /// The SM4 S-box on 32 bytes, in byte order (for the exhaustive test).
        #[cfg(test)]
        #[target_feature(enable = $features)]
        fn sbox32(input: [u8; 32]) -> [u8; 32] {
            let lo: [u8; 16] = core::array::from_fn(|i| input[i]);
            let hi: [u8; 16] = core::array::from_fn(|i| input[16 + i]);
            let s = sbox_shifted(_mm256_set_m128i(load128(&hi), load128(&lo)));
            let s = _mm256_shuffle_epi8(s, ymm(UNSHIFT_ROT[0]));
            let mut out = [[0u8; 16]; 2];
            store128(&mut out[0], _mm256_castsi256_si128(s));
            store128(&mut out[1], _mm256_extracti128_si256::<1>(s));
            core::array::from_fn(|i| out[i / 16][i % 16])
        }
    };
}

pub(super) use avx2_aesni::Avx2AesNiToken;

/// The AVX2 + AES-NI back end, for CPUs without GFNI or VAES (AMD Zen 2, Intel Skylake and
/// Cascade Lake): the S-box of the AES-NI path on eight blocks per register, with
/// `AESENCLAST` run on each 128-bit half (AES-NI without VAES has no 256-bit form). A round
/// of eight blocks is 30 or 31 instructions, against 28 for four blocks on 128-bit
/// registers.
mod avx2_aesni {
    use super::*;

    /// `AESENCLAST` with a zero round key on each 128-bit lane, one lane at a time.
    #[target_feature(enable = "avx2,aes")]
    #[inline]
    fn aesenclast(z: __m256i) -> __m256i {
        let zero = _mm_setzero_si128();
        let lo = _mm_aesenclast_si128(_mm256_castsi256_si128(z), zero);
        let hi = _mm_aesenclast_si128(_mm256_extracti128_si256::<1>(z), zero);
        _mm256_set_m128i(hi, lo)
    }

    avx2_aes_kernel!(
        "avx2,aes",
        aesenclast,
        Avx2AesNiToken,
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("aes")
    );
}

pub(super) use vaes::VaesToken;

/// The AVX2 + VAES back end: as [`avx2_aesni`], with `VAESENCLAST` on the whole 256-bit
/// register (CPUs with VAES but no GFNI, such as AMD Zen 3). The intrinsic is stable from
/// Rust 1.89 on; with an older compiler [`VaesToken`] is uninhabited.
#[rustversion::since(1.89)]
// The items used here are stable since 1.89, which `rustversion` checks.
#[allow(clippy::incompatible_msrv)]
mod vaes {
    use super::*;

    /// `AESENCLAST` with a zero round key on both 128-bit lanes in one instruction.
    #[target_feature(enable = "avx2,aes,vaes")]
    #[inline]
    fn aesenclast(z: __m256i) -> __m256i {
        _mm256_aesenclast_epi128(z, _mm256_setzero_si256())
    }

    avx2_aes_kernel!(
        "avx2,aes,vaes",
        aesenclast,
        VaesToken,
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("aes")
            && std::is_x86_feature_detected!("vaes")
    );
}

/// The AVX2 + VAES back end on a compiler without its intrinsics: never available.
#[rustversion::before(1.89)]
mod vaes {
    /// Uninhabited: no CPU runs the back end with this compiler.
    #[derive(Clone, Copy, Debug)]
    pub(in super::super) enum VaesToken {}

    impl VaesToken {
        /// Never a token.
        pub(in super::super) fn detect() -> Option<Self> {
            None
        }

        /// Unreachable: there is no token.
        pub(in super::super) fn encrypt32(self, _: &[u32; 32], _: &mut [[u8; 16]; 32], _: usize) {
            match self {}
        }

        /// Unreachable: there is no token.
        #[cfg(test)]
        pub(in super::super) fn sbox32(self, _: [u8; 32]) -> [u8; 32] {
            match self {}
        }
    }
}

pub(super) use gfni::GfniToken;

/// The AVX2 + GFNI back end. Its intrinsics are stable from Rust 1.89 on; with an older
/// compiler (the workspace supports 1.88) [`GfniToken`] is uninhabited and the back end is
/// never chosen.
#[rustversion::since(1.89)]
// The items used here are stable since 1.89, which `rustversion` checks.
#[allow(clippy::incompatible_msrv)]
mod gfni {
    use super::*;

    avx2_token!(
        "avx2,gfni",
        GfniToken,
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("gfni"),
        encrypt_gfni,
        sbox32_gfni
    );

    /// The SM4 S-box on 32 bytes with GFNI: PRE as an affine map, then inversion in the AES
    /// field and POST in one instruction.
    #[target_feature(enable = "avx2,gfni")]
    #[inline]
    fn sbox_gfni(a: __m256i) -> __m256i {
        let z = _mm256_gf2p8affine_epi64_epi8::<GFNI_PRE_CONST>(
            a,
            _mm256_set1_epi64x(GFNI_PRE_MATRIX as i64),
        );
        _mm256_gf2p8affineinv_epi64_epi8::<GFNI_POST_CONST>(
            z,
            _mm256_set1_epi64x(GFNI_POST_MATRIX as i64),
        )
    }

    /// `T(a) = L(τ(a))` on eight words with GFNI.
    #[target_feature(enable = "avx2,gfni")]
    #[inline]
    fn t_gfni(a: __m256i) -> __m256i {
        let b = sbox_gfni(a);
        let b8 = _mm256_shuffle_epi8(b, ymm(ROT[0]));
        let b16 = _mm256_shuffle_epi8(b, ymm(ROT[1]));
        let b24 = _mm256_shuffle_epi8(b, ymm(ROT[2]));
        let u = _mm256_xor_si256(_mm256_xor_si256(b, b8), b16);
        let rol2 = _mm256_or_si256(_mm256_slli_epi32::<2>(u), _mm256_srli_epi32::<30>(u));
        _mm256_xor_si256(_mm256_xor_si256(b, b24), rol2)
    }

    /// The SM4 S-box on 32 bytes through GFNI (for the exhaustive test).
    #[cfg(test)]
    #[target_feature(enable = "avx2,gfni")]
    fn sbox32_gfni(input: [u8; 32]) -> [u8; 32] {
        let v = _mm256_set_m128i(
            load128(input[16..].try_into().unwrap_or(&[0; 16])),
            load128(input[..16].try_into().unwrap_or(&[0; 16])),
        );
        let s = sbox_gfni(v);
        let mut out = [0u8; 32];
        let (lo, hi) = out.split_at_mut(16);
        if let (Ok(lo), Ok(hi)) = (<&mut [u8; 16]>::try_from(lo), <&mut [u8; 16]>::try_from(hi)) {
            store128(lo, _mm256_castsi256_si128(s));
            store128(hi, _mm256_extracti128_si256::<1>(s));
        }
        out
    }

    /// Encrypts `8·G` blocks in place with AVX2 and GFNI: `G` groups of eight blocks, each
    /// register holding one 32-bit word of four blocks per 128-bit lane.
    #[target_feature(enable = "avx2,gfni")]
    fn encrypt_gfni<const G: usize>(rk: &[u32; 32], blocks: &mut [[u8; 16]]) {
        debug_assert_eq!(blocks.len(), 8 * G);
        let mut x = [[_mm256_setzero_si256(); 4]; G];
        for (g, chunk) in x.iter_mut().zip(blocks.chunks_exact(8)) {
            *g = load_group8(chunk);
        }
        let y = rounds!(rk, x, t_gfni, _mm256_set1_epi32, _mm256_xor_si256);
        for (g, chunk) in y.into_iter().zip(blocks.chunks_exact_mut(8)) {
            store_group8(g, chunk);
        }
    }
}

/// The AVX2 + GFNI back end on a compiler without its intrinsics: never available.
#[rustversion::before(1.89)]
mod gfni {
    /// Uninhabited: no CPU runs the back end with this compiler.
    #[derive(Clone, Copy, Debug)]
    pub(in super::super) enum GfniToken {}

    impl GfniToken {
        /// Never a token.
        pub(in super::super) fn detect() -> Option<Self> {
            None
        }

        /// Unreachable: there is no token.
        pub(in super::super) fn encrypt32(self, _: &[u32; 32], _: &mut [[u8; 16]; 32], _: usize) {
            match self {}
        }

        /// Unreachable: there is no token.
        #[cfg(test)]
        pub(in super::super) fn sbox32(self, _: [u8; 32]) -> [u8; 32] {
            match self {}
        }
    }
}
