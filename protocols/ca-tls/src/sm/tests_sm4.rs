//! Tests of [`FastSm4`]: the S-box of each SIMD back end against the SM4 S-box for every
//! input, the derivation of their affine maps, the GB/T 32907 and RFC 8998 vectors on every
//! back end, differential tests against the `sm4` crate (blocks and SM4-GCM), and the cap of
//! `BCOS_P2P_SM4_BACKEND`.

use aes_gcm::{AeadInOut as _, AesGcm, aead::consts::U12};
use proptest::prelude::*;
use sm4::cipher::{Block, BlockCipherDecrypt as _, BlockCipherEncrypt as _, KeyInit as _};

use super::{
    FastSm4, Sm4Backend, Sm4GcmKey,
    sm4_fast::{Engine, allowed_under, parse_cap},
    tests_kat::{A1_AAD, A1_CIPHER, A1_IV, A1_KEY, A1_PLAIN, A1_TAG, hex},
};

/// Every back end this CPU runs, the portable one last.
fn backends() -> Vec<Sm4Backend> {
    Sm4Backend::ALL
        .into_iter()
        .filter(|b| b.is_supported())
        .collect()
}

fn sm4_soft(key: &[u8; 16]) -> sm4::Sm4 {
    sm4::Sm4::new(&(*key).into())
}

fn blocks_of(bytes: &[u8]) -> Vec<Block<FastSm4>> {
    bytes
        .chunks_exact(16)
        .map(|c| Block::<FastSm4>::try_from(c).unwrap())
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{sm4_avx512::Avx512Token, sm4_fast::SBOX, sm4_x86::*};

    /// On x86_64 CI and development machines the SIMD back ends must not be skipped
    /// silently: a CPU with AVX2 must also report AES-NI (every such CPU has it).
    fn require<T>(token: Option<T>, what: &str) -> Option<T> {
        if token.is_none() {
            assert!(
                !std::is_x86_feature_detected!("avx2"),
                "{what} missing on an AVX2 CPU"
            );
            eprintln!("{what} not available: skipped");
        }
        token
    }

    #[test]
    fn aesni_sbox_equals_sm4_sbox_for_all_256_inputs() {
        let Some(token) = require(AesNiToken::detect(), "AES-NI") else {
            return;
        };
        for hi in 0..16u8 {
            let input: [u8; 16] = core::array::from_fn(|i| hi * 16 + i as u8);
            let out = token.sbox16(input);
            assert_sbox(&input, &out, "AESENCLAST");
        }
    }

    #[test]
    fn gfni_sbox_equals_sm4_sbox_for_all_256_inputs() {
        let Some(token) = GfniToken::detect() else {
            eprintln!("GFNI not available: skipped");
            return;
        };
        for half in 0..8u8 {
            let input: [u8; 32] = core::array::from_fn(|i| half * 32 + i as u8);
            let out = token.sbox32(input);
            assert_sbox(&input, &out, "GFNI");
        }
    }

    /// `out[i]` is `S(input[i])` for every byte, computed `via` a kernel.
    fn assert_sbox(input: &[u8], out: &[u8], via: &str) {
        for (x, y) in input.iter().zip(out) {
            assert_eq!(*y, SBOX[usize::from(*x)], "S({x:#04x}) through {via}");
        }
    }

    /// Both 128-bit lanes of the AVX2 kernels see every input (the lanes go through
    /// AESENCLAST separately without VAES).
    fn both_lanes(hi: u8) -> [u8; 32] {
        core::array::from_fn(|i| hi * 16 + (i % 16) as u8)
    }

    #[test]
    fn avx2_aesni_sbox_equals_sm4_sbox_for_all_256_inputs() {
        let Some(token) = require(Avx2AesNiToken::detect(), "AVX2 + AES-NI") else {
            return;
        };
        for hi in 0..16u8 {
            let input = both_lanes(hi);
            let out = token.sbox32(input);
            assert_sbox(&input, &out, "2×AESENCLAST");
        }
    }

    #[test]
    fn vaes_sbox_equals_sm4_sbox_for_all_256_inputs() {
        let Some(token) = VaesToken::detect() else {
            eprintln!("AVX2 + VAES not available: skipped");
            return;
        };
        for hi in 0..16u8 {
            let input = both_lanes(hi);
            let out = token.sbox32(input);
            assert_sbox(&input, &out, "VAESENCLAST");
        }
    }

    /// The AVX2 + VAES back end is not skipped on a CPU that has its instructions (with a
    /// compiler that has the intrinsic), nor the AVX2 + AES-NI one on any AVX2 CPU.
    #[rustversion::since(1.89)]
    #[test]
    fn aes_avx2_backends_run_where_the_cpu_has_them() {
        use super::Sm4Backend;

        let avx2 = std::is_x86_feature_detected!("avx2");
        let vaes = avx2 && std::is_x86_feature_detected!("vaes");
        assert_eq!(Sm4Backend::VaesAvx2.is_supported(), vaes);
        assert_eq!(Sm4Backend::Avx2AesNi.is_supported(), avx2);
    }

    /// The AVX-512 back end is neither skipped on a CPU that has its instructions (with a
    /// compiler that has the intrinsics) nor passed over by detection.
    #[rustversion::since(1.89)]
    #[test]
    fn avx512_backend_is_chosen_where_the_cpu_has_it() {
        use super::Sm4Backend;

        let has_avx512_gfni = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("gfni");
        assert_eq!(Avx512Token::detect().is_some(), has_avx512_gfni);
        assert_eq!(Sm4Backend::Avx512Gfni.is_supported(), has_avx512_gfni);
        if has_avx512_gfni && Sm4Backend::Avx512Gfni.is_allowed() {
            assert_eq!(Sm4Backend::detect(), Sm4Backend::Avx512Gfni);
        }
    }

    #[test]
    fn avx512_sbox_equals_sm4_sbox_for_all_256_inputs() {
        let Some(token) = Avx512Token::detect() else {
            eprintln!("AVX-512 + GFNI not available: skipped");
            return;
        };
        for quarter in 0..4u8 {
            let input: [u8; 64] = core::array::from_fn(|i| quarter * 64 + i as u8);
            let out = token.sbox64(input);
            assert_sbox(&input, &out, "AVX-512 GFNI");
        }
    }

    /// Multiplication in GF(2)[x] modulo `poly`.
    fn gmul(mut a: u8, mut b: u8, poly: u16) -> u8 {
        let mut r = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                r ^= a;
            }
            b >>= 1;
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= (poly & 0xff) as u8;
            }
        }
        r
    }

    /// Inversion modulo `poly` (`0 ↦ 0`), as `x^254`.
    fn ginv(x: u8, poly: u16) -> u8 {
        let mut r = 1;
        for _ in 0..254 {
            r = gmul(r, x, poly);
        }
        if x == 0 { 0 } else { r }
    }

    /// A linear map of GF(2)^8 given by its images of the basis vectors.
    fn apply(cols: &[u8; 8], x: u8) -> u8 {
        (0..8)
            .filter(|i| x >> i & 1 != 0)
            .fold(0, |acc, i| acc ^ cols[i])
    }

    fn cols_of(f: impl Fn(u8) -> u8) -> [u8; 8] {
        core::array::from_fn(|i| f(1 << i))
    }

    fn inverse(cols: &[u8; 8]) -> [u8; 8] {
        let table: Vec<u8> = (0..=255).map(|x| apply(cols, x)).collect();
        cols_of(|y| table.iter().position(|&v| v == y).unwrap() as u8)
    }

    /// The GF2P8AFFINEQB encoding of a linear map: byte `7 - i` is row `i`.
    fn gfni_matrix(cols: &[u8; 8]) -> u64 {
        (0..8).fold(0, |acc, i| {
            let row = (0..8).fold(0u64, |r, j| r | u64::from(cols[j] >> i & 1) << j);
            acc | row << (8 * (7 - i))
        })
    }

    /// The tables and matrices of the SIMD back ends follow from the algebraic form of the
    /// SM4 S-box and an isomorphism between its field and the AES field.
    #[test]
    fn affine_tables_derive_from_the_field_isomorphism() {
        const SM4_POLY: u16 = 0x1f5;
        const AES_POLY: u16 = 0x11b;
        let a = cols_of(|x| {
            (0..8).fold(0, |acc, i| {
                acc | (((0xa7u8.rotate_left(i) & x).count_ones() & 1) as u8) << i
            })
        });
        let c = 0xd3;
        // S(x) = A·inv(A·x + c) + c modulo x⁸+x⁷+x⁶+x⁵+x⁴+x²+1.
        for x in 0..=255u8 {
            let s = apply(&a, ginv(apply(&a, x) ^ c, SM4_POLY)) ^ c;
            assert_eq!(s, SBOX[usize::from(x)]);
        }
        // T: x ↦ β, the smallest root of the SM4 field polynomial in the AES field.
        let eval = |b: u8| {
            let mut acc = 0;
            let mut p = 1;
            for i in 0..9 {
                if SM4_POLY >> i & 1 != 0 {
                    acc ^= p;
                }
                p = gmul(p, b, AES_POLY);
            }
            acc
        };
        let beta = (2..=255u8).find(|&b| eval(b) == 0).unwrap();
        assert_eq!(beta, 0x23);
        let t: [u8; 8] = core::array::from_fn(|i| (0..i).fold(1, |p, _| gmul(p, beta, AES_POLY)));
        for x in 0..=255u8 {
            assert_eq!(apply(&t, ginv(x, SM4_POLY)), ginv(apply(&t, x), AES_POLY));
        }
        let t_inv = inverse(&t);
        let aes_affine = cols_of(|x| {
            x ^ x.rotate_left(1) ^ x.rotate_left(2) ^ x.rotate_left(3) ^ x.rotate_left(4)
        });
        let pre = cols_of(|x| apply(&t, apply(&a, x)));
        let pre_c = apply(&t, c);
        let post = cols_of(|y| apply(&a, apply(&t_inv, apply(&inverse(&aes_affine), y))));
        let post_c = apply(&post, 0x63) ^ c;
        let lo = |m: &[u8; 8]| -> [u8; 16] { core::array::from_fn(|n| apply(m, n as u8)) };
        let hi = |m: &[u8; 8], k: u8| -> [u8; 16] {
            core::array::from_fn(|n| apply(m, (n as u8) << 4) ^ k)
        };
        assert_eq!(PRE_LO, lo(&pre));
        assert_eq!(PRE_HI, hi(&pre, pre_c));
        assert_eq!(POST_LO, lo(&post));
        assert_eq!(POST_HI, hi(&post, post_c));
        assert_eq!(GFNI_PRE_MATRIX, gfni_matrix(&pre));
        assert_eq!(GFNI_PRE_CONST, i32::from(pre_c));
        assert_eq!(
            GFNI_POST_MATRIX,
            gfni_matrix(&cols_of(|y| apply(&a, apply(&t_inv, y))))
        );
        assert_eq!(GFNI_POST_CONST, i32::from(c));
    }
}

/// GB/T 32907-2016 Appendix A, example 1, on every back end and at every position of a
/// batch: runs of 1..=130 blocks cover every tail width and up to two full 64-block batches.
#[test]
fn gbt32907_vector_on_every_backend() {
    let key: [u8; 16] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10";
    let want: [u8; 16] = *b"\x68\x1e\xdf\x34\xd2\x06\x96\x5e\x86\xb3\xe9\x4f\x53\x6e\x42\x46";
    #[cfg(target_arch = "x86_64")]
    assert!(backends().len() > 1 || !std::is_x86_feature_detected!("aes"));
    for backend in backends() {
        let cipher = FastSm4::with_backend(&key, backend).unwrap();
        let mut block = Block::<FastSm4>::from(key);
        cipher.encrypt_block(&mut block);
        assert_eq!(<[u8; 16]>::from(block), want, "{backend:?}");
        cipher.decrypt_block(&mut block);
        assert_eq!(<[u8; 16]>::from(block), key, "{backend:?}");
        for n in 1..=130 {
            let mut blocks = vec![Block::<FastSm4>::from(key); n];
            cipher.encrypt_blocks(&mut blocks);
            assert!(
                blocks.iter().all(|b| <[u8; 16]>::from(*b) == want),
                "{backend:?} ×{n}"
            );
        }
    }
}

/// Every run length a call of the AVX2 kernels sees, 0..=32 blocks of distinct data (and one
/// more than a call), on every back end, equals the `sm4` crate.
#[test]
fn every_run_length_up_to_a_batch_equals_the_sm4_crate() {
    let key = *b"SM4 run lengths!";
    let data: Vec<u8> = (0..33 * 16).map(|i| (i * 131 + 7) as u8).collect();
    for n in 0..=33 {
        let mut want = blocks_of(&data[..16 * n]);
        sm4_soft(&key).encrypt_blocks(&mut want);
        for backend in backends() {
            let cipher = FastSm4::with_backend(&key, backend).unwrap();
            let mut got = blocks_of(&data[..16 * n]);
            cipher.encrypt_blocks(&mut got);
            assert_eq!(got, want, "{backend:?} ×{n}");
        }
    }
}

/// RFC 8998 Appendix A.1 (SM4-GCM) through `aes-gcm` over every back end.
#[test]
fn sm4_gcm_rfc8998_a1_on_every_backend() {
    let key: [u8; 16] = hex(A1_KEY).try_into().unwrap();
    let nonce: [u8; 12] = hex(A1_IV).try_into().unwrap();
    let (aad, plain) = (hex(A1_AAD), hex(A1_PLAIN));
    for backend in backends() {
        let gcm = AesGcm::<FastSm4, U12>::from(FastSm4::with_backend(&key, backend).unwrap());
        let mut buf = plain.clone();
        let tag = gcm
            .encrypt_inout_detached(&nonce.into(), &aad, buf.as_mut_slice().into())
            .unwrap();
        assert_eq!(buf, hex(A1_CIPHER), "{backend:?}");
        assert_eq!(tag.as_slice(), hex(A1_TAG), "{backend:?}");
        gcm.decrypt_inout_detached(&nonce.into(), &aad, buf.as_mut_slice().into(), &tag)
            .unwrap();
        assert_eq!(buf, plain, "{backend:?} open");
    }
}

/// `BCOS_P2P_SM4_BACKEND`: names round-trip, blanks mean no cap, unknown names are
/// reported, and a cap leaves detection the fastest back end of this CPU not above it.
#[test]
fn backend_cap_parses_and_caps_detection() {
    use Sm4Backend as B;

    for b in B::ALL {
        assert_eq!(B::from_name(b.name()), Some(b));
        assert_eq!(parse_cap(Some(b.name())), Ok(Some(b)));
    }
    assert_eq!(parse_cap(Some(" AVX2-AESNI\n")), Ok(Some(B::Avx2AesNi)));
    assert_eq!(parse_cap(None), Ok(None));
    assert_eq!(parse_cap(Some("")), Ok(None));
    assert_eq!(parse_cap(Some("  ")), Ok(None));
    assert_eq!(parse_cap(Some("avx2")), Err("avx2"));
    assert_eq!(parse_cap(Some("aes-ni")), Err("aes-ni"));

    assert!(allowed_under(None, B::Avx512Gfni));
    assert!(allowed_under(Some(B::Avx2AesNi), B::Avx2AesNi));
    assert!(allowed_under(Some(B::Avx2AesNi), B::AesNi));
    assert!(allowed_under(Some(B::Avx2AesNi), B::Soft));
    assert!(!allowed_under(Some(B::Avx2AesNi), B::VaesAvx2));
    assert!(!allowed_under(Some(B::Avx2AesNi), B::Avx512Gfni));
    assert!(!allowed_under(Some(B::Soft), B::AesNi));

    assert_eq!(Engine::best_under(None).backend(), backends()[0]);
    for cap in B::ALL {
        let want = B::ALL
            .into_iter()
            .skip_while(|&b| b != cap)
            .find(|b| b.is_supported());
        assert_eq!(
            Some(Engine::best_under(Some(cap)).backend()),
            want,
            "{cap:?}"
        );
    }
    assert_eq!(Engine::best_under(Some(B::Soft)).backend(), B::Soft);
}

/// `KeyInit` picks the fastest back end of the CPU.
#[test]
fn key_init_detects_the_backend() {
    let cipher = FastSm4::new(&[7u8; 16].into());
    assert_eq!(cipher.backend(), Sm4Backend::detect());
    assert!(Sm4Backend::Soft.is_supported());
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(cipher.backend(), Sm4Backend::Soft);
}

/// The one-pass AVX-512 SM4-GCM runs wherever the CPU has its instructions (and
/// `BCOS_P2P_SM4_BACKEND` does not cap it away), so the differential tests below exercise it
/// on such machines.
#[rustversion::since(1.89)]
#[test]
fn sm4_gcm_key_is_wide_where_the_cpu_has_the_instructions() {
    #[cfg(target_arch = "x86_64")]
    let expected = Sm4Backend::Avx512Gfni.is_supported()
        && Sm4Backend::Avx512Gfni.is_allowed()
        && std::is_x86_feature_detected!("vpclmulqdq")
        && std::is_x86_feature_detected!("pclmulqdq");
    #[cfg(not(target_arch = "x86_64"))]
    let expected = false;
    assert_eq!(Sm4GcmKey::new(&[3; 16]).is_wide(), expected);
    assert!(!Sm4GcmKey::generic(&[3; 16]).is_wide());
}

proptest! {
    /// Random keys and runs of 1..=140 blocks (full and partial parallel batches): every back
    /// end agrees with the `sm4` crate, in place and buffer to buffer.
    #[test]
    fn backends_agree_with_the_sm4_crate(
        key in any::<[u8; 16]>(),
        data in (1usize..=140).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 16)),
    ) {
        let mut want = blocks_of(&data);
        sm4_soft(&key).encrypt_blocks(&mut want);
        for backend in backends() {
            let cipher = FastSm4::with_backend(&key, backend).unwrap();
            let mut got = blocks_of(&data);
            cipher.encrypt_blocks(&mut got);
            prop_assert_eq!(&got, &want, "{:?}", backend);
            let mut b2b = blocks_of(&data);
            cipher.encrypt_blocks_b2b(&blocks_of(&data), &mut b2b).unwrap();
            prop_assert_eq!(&b2b, &want, "{:?} b2b", backend);
            cipher.decrypt_blocks(&mut got);
            prop_assert_eq!(got, blocks_of(&data), "{:?} decrypt", backend);
        }
    }

    /// SM4-GCM over the fast cipher seals exactly as over the `sm4` crate, for message
    /// lengths that end mid-block and mid-batch.
    #[test]
    fn sm4_gcm_agrees_with_the_sm4_crate(
        key in any::<[u8; 16]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..40),
        plain in proptest::collection::vec(any::<u8>(), 0..=140 * 16 + 15),
    ) {
        let soft = AesGcm::<sm4::Sm4, U12>::new(&key.into());
        let mut want = plain.clone();
        let want_tag = soft
            .encrypt_inout_detached(&nonce.into(), &aad, want.as_mut_slice().into())
            .unwrap();
        for backend in backends() {
            let gcm = AesGcm::<FastSm4, U12>::from(FastSm4::with_backend(&key, backend).unwrap());
            let mut got = plain.clone();
            let tag = gcm
                .encrypt_inout_detached(&nonce.into(), &aad, got.as_mut_slice().into())
                .unwrap();
            prop_assert_eq!(&got, &want, "{:?}", backend);
            prop_assert_eq!(tag, want_tag, "{:?}", backend);
            gcm.decrypt_inout_detached(&nonce.into(), &aad, got.as_mut_slice().into(), &tag)
                .unwrap();
            prop_assert_eq!(&got, &plain, "{:?} open", backend);
        }
    }

    /// [`Sm4GcmKey`] (the one-pass kernel where the CPU has it) seals exactly as `aes-gcm`
    /// over the `sm4` crate, for additional data and messages that end inside a block, a
    /// GHASH group of sixteen blocks and a 1 KiB chunk, up to a full TLS record and more; it
    /// opens what it sealed, and refuses any flipped bit of data, additional data or tag
    /// without touching the buffer.
    #[test]
    fn sm4_gcm_key_agrees_with_the_sm4_crate(
        key in any::<[u8; 16]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..600),
        plain in proptest::collection::vec(any::<u8>(), 0..=17 * 1024 + 40),
        flip in any::<(usize, u8)>(),
    ) {
        let soft = AesGcm::<sm4::Sm4, U12>::new(&key.into());
        let mut want = plain.clone();
        let want_tag: [u8; 16] = soft
            .encrypt_inout_detached(&nonce.into(), &aad, want.as_mut_slice().into())
            .unwrap()
            .into();
        for gcm in [Sm4GcmKey::new(&key), Sm4GcmKey::generic(&key)] {
            let mut got = plain.clone();
            let tag = gcm.seal(&nonce, &aad, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "{:?}", gcm);
            prop_assert_eq!(tag, want_tag, "{:?}", gcm);

            let bit = 1u8 << (flip.1 % 8);
            let total = got.len() + aad.len() + 16;
            let at = flip.0 % total;
            let (mut bad, mut bad_aad, mut bad_tag) = (got.clone(), aad.clone(), tag);
            if at < got.len() {
                bad[at] ^= bit;
            } else if at < got.len() + aad.len() {
                bad_aad[at - got.len()] ^= bit;
            } else {
                bad_tag[at - got.len() - aad.len()] ^= bit;
            }
            let before = bad.clone();
            prop_assert!(gcm.open(&nonce, &bad_aad, &mut bad, &bad_tag).is_err(), "{:?}", gcm);
            prop_assert_eq!(&bad, &before, "{:?} changed the buffer", gcm);

            gcm.open(&nonce, &aad, &mut got, &tag).unwrap();
            prop_assert_eq!(&got, &plain, "{:?} open", gcm);
        }
    }
}
