//! SM4 with AVX-512 and GFNI: the GFNI S-box of [`super::sm4_x86`] on 512-bit registers.
//!
//! Each register holds one 32-bit word of four blocks per 128-bit lane, sixteen blocks in all;
//! four groups of four registers make 64 blocks per call. Besides the width, AVX-512 shortens
//! the round: `VPTERNLOGD` XORs three registers in one instruction and `VPROLD` rotates the
//! 32-bit words without the byte shuffles and shifts of the AVX2 path, so a round of sixteen
//! blocks is eleven instructions (AVX2: sixteen for eight blocks).

pub(super) use imp::Avx512Token;

/// The back end on compilers with the AVX-512 intrinsics (stable since Rust 1.89).
#[rustversion::since(1.89)]
// The items used here are stable since 1.89, which `rustversion` checks.
#[allow(clippy::incompatible_msrv)]
mod imp {
    use core::arch::x86_64::*;

    use super::super::sm4_x86::{
        BSWAP32, GFNI_POST_CONST, GFNI_POST_MATRIX, GFNI_PRE_CONST, GFNI_PRE_MATRIX, GfniToken, xmm,
    };

    /// Proof that this CPU has AVX-512 (F and BW), GFNI and AVX2: only [`Self::detect`] makes
    /// one. Runs of at most eight blocks go to the AVX2 kernel, which covers them with one
    /// 256-bit group.
    #[derive(Clone, Copy, Debug)]
    pub(in super::super) struct Avx512Token {
        /// The AVX2 + GFNI kernel for short runs.
        narrow: GfniToken,
    }

    impl Avx512Token {
        /// A token if the CPU has the instructions.
        pub(in super::super) fn detect() -> Option<Self> {
            let wide = std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("gfni");
            let narrow = GfniToken::detect()?;
            wide.then_some(Self { narrow })
        }

        /// Encrypts the first `n` of 64 blocks in place (the others are scratch), with as
        /// few groups of sixteen as cover them (the AVX2 kernel for eight or fewer).
        pub(in super::super) fn encrypt64(
            self,
            rk: &[u32; 32],
            blocks: &mut [[u8; 16]; 64],
            n: usize,
        ) {
            if n <= 8
                && let Some((head, _)) = blocks.split_first_chunk_mut::<32>()
            {
                return self.narrow.encrypt32(rk, head, n);
            }
            // SAFETY: `self` exists only when the CPU reported AVX-512 F and BW and GFNI
            // (`detect`), the target features of `encrypt_avx512`.
            unsafe {
                match n {
                    0..=16 => encrypt_avx512::<1>(rk, &mut blocks[..16]),
                    17..=32 => encrypt_avx512::<2>(rk, &mut blocks[..32]),
                    33..=48 => encrypt_avx512::<3>(rk, &mut blocks[..48]),
                    _ => encrypt_avx512::<4>(rk, blocks),
                }
            }
        }

        /// The SM4 S-box on 64 bytes through 512-bit GF2P8AFFINE(INV)QB (for tests).
        #[cfg(test)]
        pub(in super::super) fn sbox64(self, input: [u8; 64]) -> [u8; 64] {
            // SAFETY: as in `encrypt64`.
            unsafe { sbox64_avx512(input) }
        }
    }

    /// The SM4 S-box on 64 bytes: PRE as an affine map, then inversion in the AES field and
    /// POST in one instruction (the matrices of the AVX2 path).
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    #[inline]
    fn sbox(a: __m512i) -> __m512i {
        let z = _mm512_gf2p8affine_epi64_epi8::<GFNI_PRE_CONST>(
            a,
            _mm512_set1_epi64(GFNI_PRE_MATRIX as i64),
        );
        _mm512_gf2p8affineinv_epi64_epi8::<GFNI_POST_CONST>(
            z,
            _mm512_set1_epi64(GFNI_POST_MATRIX as i64),
        )
    }

    /// XOR of three registers (`VPTERNLOGD` with the truth table of `a ^ b ^ c`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
        _mm512_ternarylogic_epi32::<0x96>(a, b, c)
    }

    /// One round on sixteen blocks: `x0 ^ T(x1 ^ x2 ^ x3 ^ k)` with
    /// `L(b) = b ^ (b <<< 24) ^ ((b ^ (b <<< 8) ^ (b <<< 16)) <<< 2)`.
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    #[inline]
    fn round(x0: __m512i, x1: __m512i, x2: __m512i, x3: __m512i, k: __m512i) -> __m512i {
        let b = sbox(_mm512_xor_si512(xor3(x1, x2, x3), k));
        let u = xor3(b, _mm512_rol_epi32::<8>(b), _mm512_rol_epi32::<16>(b));
        _mm512_xor_si512(
            xor3(x0, b, _mm512_rol_epi32::<24>(b)),
            _mm512_rol_epi32::<2>(u),
        )
    }

    /// The 4×4 transpose of 32-bit words in each 128-bit lane (its own inverse).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose([a, b, c, d]: [__m512i; 4]) -> [__m512i; 4] {
        let t0 = _mm512_unpacklo_epi32(a, b);
        let t1 = _mm512_unpackhi_epi32(a, b);
        let t2 = _mm512_unpacklo_epi32(c, d);
        let t3 = _mm512_unpackhi_epi32(c, d);
        [
            _mm512_unpacklo_epi64(t0, t2),
            _mm512_unpackhi_epi64(t0, t2),
            _mm512_unpacklo_epi64(t1, t3),
            _mm512_unpackhi_epi64(t1, t3),
        ]
    }

    /// Loads four consecutive blocks into a register (block `j` in lane `j`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load512(blocks: &[[u8; 16]; 4]) -> __m512i {
        // SAFETY: `blocks` is 64 valid, contiguous bytes and `_mm512_loadu_si512` has no
        // alignment requirement; AVX-512 F is enabled on this function.
        unsafe { _mm512_loadu_si512(blocks.as_ptr().cast()) }
    }

    /// Stores a register into four consecutive blocks (lane `j` into block `j`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store512(blocks: &mut [[u8; 16]; 4], v: __m512i) {
        // SAFETY: `blocks` is 64 valid, contiguous, writable bytes and `_mm512_storeu_si512`
        // has no alignment requirement; AVX-512 F is enabled on this function.
        unsafe { _mm512_storeu_si512(blocks.as_mut_ptr().cast(), v) }
    }

    /// The SM4 S-box on 64 bytes through AVX-512 GFNI (for the exhaustive test).
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    fn sbox64_avx512(input: [u8; 64]) -> [u8; 64] {
        let mut blocks: [[u8; 16]; 4] =
            core::array::from_fn(|j| core::array::from_fn(|i| input[16 * j + i]));
        let s = sbox(load512(&blocks));
        store512(&mut blocks, s);
        core::array::from_fn(|i| blocks[i / 16][i % 16])
    }

    /// Encrypts `16·G` blocks in place with AVX-512 and GFNI: `G` groups of sixteen blocks,
    /// each register holding one 32-bit word of four blocks per 128-bit lane; the groups'
    /// rounds interleave to hide latency.
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    fn encrypt_avx512<const G: usize>(rk: &[u32; 32], blocks: &mut [[u8; 16]]) {
        debug_assert_eq!(blocks.len(), 16 * G);
        let bswap = _mm512_broadcast_i32x4(xmm(BSWAP32));
        let mut x = [[_mm512_setzero_si512(); 4]; G];
        // Register `i` of group `g` holds blocks 16g + 4i + j in lane `j`; after the
        // transpose register `w` holds word `w` of those blocks.
        for (g, chunk) in x.iter_mut().zip(blocks.chunks_exact(16)) {
            let mut loaded = [_mm512_setzero_si512(); 4];
            for (l, quad) in loaded.iter_mut().zip(chunk.as_chunks::<4>().0) {
                *l = _mm512_shuffle_epi8(load512(quad), bswap);
            }
            *g = transpose(loaded);
        }
        for r in rk.chunks_exact(4) {
            let k = [0, 1, 2, 3].map(|i| _mm512_set1_epi32(r[i] as i32));
            for g in x.iter_mut() {
                g[0] = round(g[0], g[1], g[2], g[3], k[0]);
            }
            for g in x.iter_mut() {
                g[1] = round(g[1], g[2], g[3], g[0], k[1]);
            }
            for g in x.iter_mut() {
                g[2] = round(g[2], g[3], g[0], g[1], k[2]);
            }
            for g in x.iter_mut() {
                g[3] = round(g[3], g[0], g[1], g[2], k[3]);
            }
        }
        for (g, chunk) in x.into_iter().zip(blocks.chunks_exact_mut(16)) {
            // The output is `X35, X34, X33, X32`: the words in reverse order.
            let [a, b, c, d] = g;
            let out = transpose([d, c, b, a]);
            for (v, quad) in out.into_iter().zip(chunk.as_chunks_mut::<4>().0) {
                store512(quad, _mm512_shuffle_epi8(v, bswap));
            }
        }
    }
}

/// The AVX-512 back end on a compiler without its intrinsics: never available.
#[rustversion::before(1.89)]
mod imp {
    /// Uninhabited: no CPU runs the back end with this compiler.
    #[derive(Clone, Copy, Debug)]
    pub(in super::super) enum Avx512Token {}

    impl Avx512Token {
        /// Never a token.
        pub(in super::super) fn detect() -> Option<Self> {
            None
        }

        /// Unreachable: there is no token.
        pub(in super::super) fn encrypt64(self, _: &[u32; 32], _: &mut [[u8; 16]; 64], _: usize) {
            match self {}
        }

        /// Unreachable: there is no token.
        #[cfg(test)]
        pub(in super::super) fn sbox64(self, _: [u8; 64]) -> [u8; 64] {
            match self {}
        }
    }
}
