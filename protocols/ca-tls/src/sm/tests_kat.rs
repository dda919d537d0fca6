//! Known-answer tests from published SM3/SM4/SM2/HMAC-SM3 vectors, the TLS record layer,
//! key-share and signature decoding, and property tests that decoders never panic.

use der::Encode as _;
use proptest::prelude::*;
use rustls::{
    ContentType, NamedGroup, PeerMisbehaved, ProtocolVersion, SignatureScheme,
    crypto::cipher::{InboundOpaqueMessage, OutboundChunks, OutboundPlainMessage},
    pki_types::SignatureVerificationAlgorithm,
    sign::SigningKey as _,
};
use sm2::{SecretKey, dsa::Signature};

use super::*;

pub(super) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---- SM3: GB/T 32905-2016 Appendix A ----

#[test]
fn sm3_gbt32905_examples() {
    let abc = hex("66c7f0f4 62eeedd9 d1f2d46b dc10e4e2 4167c487 5cf2f7a2 297da02b 8f4ba8e0");
    let abcd16 = hex("debe9ff9 2275b8a1 38604889 c18e5a4d 6fdb70e5 387e5765 293dcba3 9c0c5732");
    assert_eq!(SM3.hash(b"abc").as_ref(), abc);
    assert_eq!(SM3.hash(&b"abcd".repeat(16)).as_ref(), abcd16);
    assert_eq!(SM3.output_len(), 32);

    // Incremental, forked and finished contexts agree with the one-shot hash.
    let mut ctx = SM3.start();
    ctx.update(b"ab");
    let fork = ctx.fork();
    ctx.update(b"c");
    assert_eq!(ctx.fork_finish().as_ref(), abc);
    assert_eq!(ctx.finish().as_ref(), abc);
    let mut fork = fork;
    fork.update(b"c");
    assert_eq!(fork.finish().as_ref(), abc);
}

// ---- HMAC-SM3: GM/T 0042-2015 Appendix D.3 (as carried in Linux crypto/testmgr.h) ----

#[test]
fn hmac_sm3_gmt0042_examples() {
    let key32: Vec<u8> = (1..=32).collect();
    let key37: Vec<u8> = (1..=37).collect();
    let cases: [(&[u8], &[u8], &str); 4] = [
        (
            &key32,
            &b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".repeat(2),
            "ca05e144ed05d1857840d1f318a4a8669e559fc8391f414485bfdf7bb408963a",
        ),
        (
            &key37,
            &[0xcd; 50],
            "220bf579ded555393f0159f66c99877822a3ecf610d1552154b41d44b94db3ae",
        ),
        (
            &[0x0b; 32],
            b"Hi There",
            "c0ba18c68b90c88bc07de794bfc7d2c8d19ec31ed8773bc2b390c9604e0be11e",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882",
        ),
    ];
    for (key, msg, want) in cases {
        let key = HMAC_SM3.with_key(key);
        assert_eq!(key.sign(&[msg]).as_ref(), hex(want));
        let (a, b) = msg.split_at(msg.len() / 2);
        assert_eq!(key.sign_concat(a, &[b], &[]).as_ref(), hex(want));
        assert_eq!(key.tag_len(), 32);
    }
    assert_eq!(HMAC_SM3.hash_output_len(), 32);
}

// ---- SM4: GB/T 32907-2016 Appendix A, example 1 ----

#[test]
fn sm4_gbt32907_example() {
    use sm4::cipher::{BlockCipherEncrypt as _, KeyInit as _};
    let key = hex("0123456789abcdeffedcba9876543210");
    let cipher = sm4::Sm4::new_from_slice(&key).unwrap();
    let mut block = sm4::cipher::Block::<sm4::Sm4>::try_from(key.as_slice()).unwrap();
    cipher.encrypt_block(&mut block);
    assert_eq!(block.as_slice(), hex("681edf34d206965e86b3e94f536e4246"));
}

// ---- SM4-GCM: RFC 8998 Appendix A.1 ----

pub(super) const A1_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";
pub(super) const A1_IV: &str = "00001234567800000000ABCD";
pub(super) const A1_AAD: &str = "FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2";
pub(super) const A1_PLAIN: &str = "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
                        EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA";
pub(super) const A1_CIPHER: &str =
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735
                         D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D";
pub(super) const A1_TAG: &str = "83DE3541E4C2B58177E065A9BF7B62EC";

#[test]
fn sm4_gcm_rfc8998_a1() {
    let key: [u8; 16] = hex(A1_KEY).try_into().unwrap();
    let iv: [u8; 12] = hex(A1_IV).try_into().unwrap();
    let sealed = aead::seal(&key, &iv, &hex(A1_AAD), &hex(A1_PLAIN));
    let mut want = hex(A1_CIPHER);
    want.extend(hex(A1_TAG));
    assert_eq!(sealed, want);
}

/// The TLS 1.3 record layer: nonce = IV XOR sequence number, AAD = record header, inner
/// plaintext = content ‖ type ‖ zero padding.
#[test]
fn sm4_gcm_records_follow_tls13() {
    let key: [u8; 16] = hex(A1_KEY).try_into().unwrap();
    let iv: [u8; 12] = hex(A1_IV).try_into().unwrap();
    let (mut enc, mut dec) = aead::record_pair(key, iv);
    let seq = 0x0102_0304_0506_0708_u64;
    let mut nonce = iv;
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }

    let msg = OutboundPlainMessage {
        typ: ContentType::ApplicationData,
        version: ProtocolVersion::TLSv1_2,
        payload: OutboundChunks::Single(b"hello"),
    };
    assert_eq!(enc.encrypted_payload_len(5), 5 + 1 + 16);
    let record = enc.encrypt(msg, seq).unwrap().encode();
    assert_eq!(record[..5], [0x17, 0x03, 0x03, 0x00, 22]);
    let want = aead::seal(&key, &nonce, &record[..5], b"hello\x17");
    assert_eq!(record[5..], want);

    let open = |dec: &mut Box<dyn rustls::crypto::cipher::MessageDecrypter>,
                body: &mut Vec<u8>,
                seq: u64| {
        dec.decrypt(
            InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, body),
            seq,
        )
        .map(|m| (m.typ, m.payload.to_vec()))
    };
    let mut body = record[5..].to_vec();
    assert_eq!(
        open(&mut dec, &mut body, seq).unwrap(),
        (ContentType::ApplicationData, b"hello".to_vec())
    );

    // Padding after the content type is stripped; the type is the last non-zero byte.
    let padded = {
        let header = [0x17, 0x03, 0x03, 0x00, 5 + 1 + 3 + 16];
        aead::seal(&key, &nonce, &header, b"hello\x16\0\0\0")
    };
    let mut body = padded.clone();
    assert_eq!(
        open(&mut dec, &mut body, seq).unwrap(),
        (ContentType::Handshake, b"hello".to_vec())
    );

    // Wrong sequence number, a flipped bit anywhere, a short record, or no content type fail.
    let mut body = record[5..].to_vec();
    assert!(open(&mut dec, &mut body, seq + 1).is_err());
    for i in 0..record.len() - 5 {
        let mut body = record[5..].to_vec();
        body[i] ^= 1;
        assert!(open(&mut dec, &mut body, seq).is_err(), "flipped byte {i}");
    }
    let mut body = vec![0; 15];
    assert!(open(&mut dec, &mut body, seq).is_err());
    let all_padding = aead::seal(&key, &nonce, &[0x17, 0x03, 0x03, 0x00, 20], &[0; 4]);
    let mut body = all_padding;
    assert!(open(&mut dec, &mut body, seq).is_err());
}

#[test]
fn sm4_gcm_is_a_16_byte_key_aead_without_key_export() {
    assert_eq!(SM4_GCM.key_len(), 16);
    let key = rustls::crypto::cipher::AeadKey::from([7; 32]);
    let iv = rustls::crypto::cipher::Iv::new([0; 12]);
    assert!(SM4_GCM.extract_keys(key, iv).is_err());
    // A key of the wrong length yields a cipher that refuses every record, not a panic.
    let mut enc = SM4_GCM.encrypter(
        rustls::crypto::cipher::AeadKey::from([7; 32]),
        rustls::crypto::cipher::Iv::new([0; 12]),
    );
    let msg = OutboundPlainMessage {
        typ: ContentType::ApplicationData,
        version: ProtocolVersion::TLSv1_2,
        payload: OutboundChunks::Single(b"x"),
    };
    assert!(enc.encrypt(msg, 0).is_err());
}

// ---- SM2 signatures ----

/// GM/T 0003.5-2012 Annex C (and GB/T 32918.5): the worked signature on the recommended curve.
const GMT_D: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
const GMT_X: &str = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020";
const GMT_Y: &str = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
const GMT_ZA: &str = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3";
const GMT_E: &str = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640";
const GMT_R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
const GMT_S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";
const GMT_MSG: &[u8] = b"message digest";

fn gmt_key() -> SecretKey {
    SecretKey::from_slice(&hex(GMT_D)).unwrap()
}

fn gmt_point() -> Vec<u8> {
    let mut p = vec![0x04];
    p.extend(hex(GMT_X));
    p.extend(hex(GMT_Y));
    p
}

fn gmt_signature_der() -> Vec<u8> {
    let sig = Signature::from_scalars(
        <[u8; 32]>::try_from(hex(GMT_R)).unwrap(),
        <[u8; 32]>::try_from(hex(GMT_S)).unwrap(),
    )
    .unwrap();
    signature_to_der(&sig)
}

#[test]
fn sm2_gmt0003_example_verifies_under_the_certificate_distid() {
    // Z binds ID = 1234567812345678 (our CERT_DISTID) and the key; e = SM3(Z ‖ M).
    let curve = hex(
        "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
         28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
         32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
         BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
    );
    let mut z_input = vec![0x00, 0x80];
    z_input.extend_from_slice(CERT_DISTID.as_bytes());
    z_input.extend(curve);
    z_input.extend_from_slice(&gmt_point()[1..]);
    let z = SM3.hash(&z_input);
    assert_eq!(z.as_ref(), hex(GMT_ZA));
    let mut e_input = z.as_ref().to_vec();
    e_input.extend_from_slice(GMT_MSG);
    assert_eq!(SM3.hash(&e_input).as_ref(), hex(GMT_E));

    // The published key pair, and the published signature through our decoder and verifier.
    let signing = Sm2SigningKey::from_secret_key(&gmt_key()).unwrap();
    assert_eq!(signing.public_point(), gmt_point());
    let der = gmt_signature_der();
    // The top bits of r and s are set, so DER pads both with a zero byte.
    assert_eq!(der[..5], [0x30, 0x46, 0x02, 0x21, 0x00]);
    assert_eq!(der[37..40], [0x02, 0x21, 0x00]);
    assert!(
        SM2_SM3
            .verify_signature(&gmt_point(), GMT_MSG, &der)
            .is_ok()
    );
    assert!(
        SM2_SM3_NULL_PARAMS
            .verify_signature(&gmt_point(), GMT_MSG, &der)
            .is_ok()
    );
    assert!(
        SM2_SM3_TLS13
            .verify_signature(&gmt_point(), GMT_MSG, &der)
            .is_err()
    );
    assert!(
        SM2_SM3
            .verify_signature(&gmt_point(), b"message digesT", &der)
            .is_err()
    );
}

/// The `sm2` crate's own vector (its tests/sm2dsa.rs), made by OpenSSL with
/// `distid:example@rustcrypto.org`.
#[test]
fn sm2_crate_openssl_vector_verifies_under_its_distid() {
    let point = hex(
        "0408D77AE04C01CC4C1104360DD8AF6B6F7DF334283D7C1A6AFD5652407B87BEE5
         014E2A57C36C150D16324DC664E31E6432359609C4E79847A5B161C8C7364C8A",
    );
    let sig = Signature::from_scalars(
        <[u8; 32]>::try_from(hex(
            "d1dcccedd9fb785e0f67c16b7c52901625c0b69de9bca2144acc7be713cad2fc",
        ))
        .unwrap(),
        <[u8; 32]>::try_from(hex(
            "f7d1eae6e3a157b36c65f672f738ca8b46298bf149a6510072c431b49cd88b1c",
        ))
        .unwrap(),
    )
    .unwrap();
    let der = signature_to_der(&sig);
    let alg = Sm2Sm3Verifier::new("example@rustcrypto.org", SM2_SM3_ALG_ID);
    assert!(alg.verify_signature(&point, b"testing", &der).is_ok());
    assert!(SM2_SM3.verify_signature(&point, b"testing", &der).is_err());
}

#[test]
fn sm2_sign_verify_round_trips_per_distid() {
    let key = Sm2SigningKey::from_secret_key(&gmt_key()).unwrap();
    let point = key.public_point();
    let msg = b"tbsCertificate";

    let cert_sig = key.sign_der(CERT_DISTID, msg).unwrap();
    assert!(SM2_SM3.verify_signature(&point, msg, &cert_sig).is_ok());
    assert!(
        SM2_SM3_NULL_PARAMS
            .verify_signature(&point, msg, &cert_sig)
            .is_ok()
    );
    assert!(
        SM2_SM3_TLS13
            .verify_signature(&point, msg, &cert_sig)
            .is_err(),
        "a certificate-distid signature must not pass as a handshake signature"
    );

    assert!(
        key.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .is_none()
    );
    let signer = key
        .choose_scheme(&[SignatureScheme::ED25519, SM2SIG_SM3])
        .unwrap();
    assert_eq!(signer.scheme(), SM2SIG_SM3);
    let tls_sig = signer.sign(msg).unwrap();
    assert_eq!(tls_sig, key.sign_der(TLS13_DISTID, msg).unwrap());
    assert!(
        SM2_SM3_TLS13
            .verify_signature(&point, msg, &tls_sig)
            .is_ok()
    );
    assert!(
        SM2_SM3.verify_signature(&point, msg, &tls_sig).is_err(),
        "a handshake-distid signature must not pass as a certificate signature"
    );

    // Flipped bytes, truncation, a wrong message, another key or a malformed key all fail.
    for i in 0..cert_sig.len() {
        let mut bad = cert_sig.clone();
        bad[i] ^= 0x01;
        assert!(
            SM2_SM3.verify_signature(&point, msg, &bad).is_err(),
            "byte {i}"
        );
    }
    for len in 0..cert_sig.len() {
        assert!(
            SM2_SM3
                .verify_signature(&point, msg, &cert_sig[..len])
                .is_err()
        );
    }
    assert!(
        SM2_SM3
            .verify_signature(&point, b"other", &cert_sig)
            .is_err()
    );
    let other = Sm2SigningKey::from_secret_key(&SecretKey::from_slice(&[0x42; 32]).unwrap())
        .unwrap()
        .public_point();
    assert!(SM2_SM3.verify_signature(&other, msg, &cert_sig).is_err());
    let mut compressed = vec![0x02 | (point[64] & 1)];
    compressed.extend_from_slice(&point[1..33]);
    assert!(
        SM2_SM3
            .verify_signature(&compressed, msg, &cert_sig)
            .is_err()
    );
    assert!(
        SM2_SM3
            .verify_signature(&point[..64], msg, &cert_sig)
            .is_err()
    );
    assert!(SM2_SM3.verify_signature(&[], msg, &cert_sig).is_err());
}

#[test]
fn sm2_der_decoding_is_strict() {
    let der = gmt_signature_der();
    let sig = signature_from_der(&der).unwrap();
    assert_eq!(signature_to_der(&sig), der);
    assert_eq!(sig.r_bytes().as_slice(), hex(GMT_R));
    assert_eq!(sig.s_bytes().as_slice(), hex(GMT_S));

    // Small values encode minimally and decode back.
    let mut five = [0u8; 32];
    five[31] = 5;
    let small = Signature::from_scalars(five, [0x7f; 32]).unwrap();
    let small_der = signature_to_der(&small);
    assert_eq!(small_der[..5], [0x30, 0x25, 0x02, 0x01, 0x05]);
    assert_eq!(signature_from_der(&small_der).unwrap(), small);

    let bad: [&[u8]; 9] = [
        &[],
        &[0x30, 0x00],
        &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00], // trailing byte in SEQUENCE
        &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01],       // r = 0
        &[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01],       // r negative
        &[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], // r not minimal
        &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],       // SET, not SEQUENCE
        &[0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], // long-form length
        &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01],             // short
    ];
    for b in bad {
        assert!(signature_from_der(b).is_err(), "{b:02x?}");
    }
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(signature_from_der(&trailing).is_err());
    // r = n (the group order) is out of range.
    let n = hex("00FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123");
    let mut r_is_n = vec![0x30, 0x26, 0x02, 0x21];
    r_is_n.extend(n);
    r_is_n.extend([0x02, 0x01, 0x01]);
    assert!(signature_from_der(&r_is_n).is_err());
}

#[test]
fn sm2_signing_key_loads_pkcs8_and_reports_its_spki() {
    use sm2::pkcs8::EncodePrivateKey as _;
    let pkcs8 = gmt_key().to_pkcs8_der().unwrap();
    let key = Sm2SigningKey::from_pkcs8_der(pkcs8.as_bytes()).unwrap();
    assert_eq!(key.public_point(), gmt_point());
    let spki = key.public_key().unwrap();
    let parsed =
        <spki::SubjectPublicKeyInfoRef<'_> as der::Decode>::from_der(spki.as_ref()).unwrap();
    assert_eq!(parsed.algorithm.oid, OID_EC_PUBLIC_KEY);
    assert_eq!(parsed.algorithm.parameters_oid().unwrap(), OID_SM2_CURVE);
    assert_eq!(parsed.subject_public_key.raw_bytes(), gmt_point());
    assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::Unknown(0x08));

    assert!(Sm2SigningKey::from_pkcs8_der(&[]).is_err());
    assert!(Sm2SigningKey::from_pkcs8_der(&pkcs8.as_bytes()[..40]).is_err());
    let p256 = p256::SecretKey::from_slice(&[1; 32])
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    assert!(
        Sm2SigningKey::from_pkcs8_der(p256.as_bytes()).is_err(),
        "a P-256 key is not an SM2 key"
    );
}

#[test]
fn sm_algorithm_identifiers_are_the_oids_der() {
    let oid_der = |oid: &der::asn1::ObjectIdentifier| oid.to_der().unwrap();
    let mut public = oid_der(&OID_EC_PUBLIC_KEY);
    public.extend(oid_der(&OID_SM2_CURVE));
    assert_eq!(SM2_PUBLIC_KEY_ALG_ID.as_ref(), public);
    assert_eq!(SM2_SM3_ALG_ID.as_ref(), oid_der(&OID_SM2_WITH_SM3));
    let mut null = oid_der(&OID_SM2_WITH_SM3);
    null.extend([0x05, 0x00]);
    assert_eq!(SM2_SM3_NULL_ALG_ID.as_ref(), null);
    assert_eq!(OID_SM3.to_string(), "1.2.156.10197.1.401");
    for alg in [SM2_SM3, SM2_SM3_NULL_PARAMS, SM2_SM3_TLS13] {
        assert_eq!(alg.public_key_alg_id(), SM2_PUBLIC_KEY_ALG_ID);
    }
    assert_eq!(SM2_SM3.signature_alg_id(), SM2_SM3_ALG_ID);
    assert_eq!(SM2_SM3_NULL_PARAMS.signature_alg_id(), SM2_SM3_NULL_ALG_ID);
}

// ---- curveSM2 ----

#[test]
fn curve_sm2_agrees_and_uses_the_x_coordinate() {
    assert_eq!(CURVE_SM2_KX.name(), NamedGroup::Unknown(41));
    assert!(CURVE_SM2_KX.usable_for_version(ProtocolVersion::TLSv1_3));
    assert!(!CURVE_SM2_KX.usable_for_version(ProtocolVersion::TLSv1_2));

    let a = CURVE_SM2_KX.start().unwrap();
    let b = CURVE_SM2_KX.start().unwrap();
    assert_eq!(a.pub_key().len(), 65);
    assert_eq!(a.pub_key()[0], 0x04);
    assert_eq!(a.group(), CURVE_SM2);
    assert!(parse_key_share(a.pub_key()).is_ok());
    let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
    let ab = a.complete(&b_pub).unwrap();
    let ba = b.complete(&a_pub).unwrap();
    assert_eq!(ab.secret_bytes(), ba.secret_bytes());
    assert_eq!(ab.secret_bytes().len(), 32);

    // With the GM/T 0003.5 key d and the generator as the peer share, the secret is the X of
    // the published public key d·G.
    let generator = hex(
        "04 32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
            BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
    );
    assert_eq!(kx::agree(&gmt_key(), &generator).unwrap(), hex(GMT_X));
    // With d = 1 the secret is the peer's own X.
    let one = SecretKey::from_slice(&[[0u8; 31].as_slice(), &[1]].concat()).unwrap();
    assert_eq!(kx::agree(&one, &gmt_point()).unwrap(), hex(GMT_X));
}

#[test]
fn curve_sm2_rejects_malformed_shares() {
    let good = gmt_point();
    let mut off_curve = good.clone();
    off_curve[64] ^= 1;
    let mut compressed = vec![0x02 | (good[64] & 1)];
    compressed.extend_from_slice(&good[1..33]);
    let mut x_too_big = vec![0x04];
    x_too_big.extend([0xff; 64]);
    let mut hybrid = good.clone();
    hybrid[0] = 0x06 | (good[64] & 1);
    let bad: [&[u8]; 9] = [
        &[],
        &[0x00],
        &[0x04; 65],
        &[0x00; 65],
        &good[..64],
        &[good.as_slice(), &[0]].concat(),
        &off_curve,
        &compressed,
        &x_too_big,
    ];
    for share in bad.iter().chain([&hybrid.as_slice()]) {
        let err = parse_key_share(share).unwrap_err();
        assert_eq!(err, PeerMisbehaved::InvalidKeyShare.into());
        let kx = CURVE_SM2_KX.start().unwrap();
        assert!(kx.complete(share).is_err());
    }
}

// ---- The provider ----

#[test]
fn sm_provider_offers_only_the_sm_suite_group_and_scheme() {
    let p = provider();
    let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(suites, [TLS_SM4_GCM_SM3]);
    assert_eq!(u16::from(TLS_SM4_GCM_SM3), 0x00C6);
    let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(groups, [CURVE_SM2]);
    assert_eq!(u16::from(CURVE_SM2), 41);
    assert_eq!(
        p.signature_verification_algorithms.supported_schemes(),
        [SM2SIG_SM3]
    );
    assert_eq!(u16::from(SM2SIG_SM3), 0x0708);
    let suite = TLS13_SM4_GCM_SM3.tls13().unwrap();
    assert!(suite.quic.is_none());
    assert_eq!(suite.common.hash_provider.output_len(), 32);
    assert_eq!(suite.common.confidentiality_limit, 1 << 24);
    // The suite's HKDF is HKDF over HMAC-SM3.
    let prk = suite
        .hkdf_provider
        .extract_from_secret(Some(b"salt"), b"ikm");
    let mut okm = [0; 32];
    prk.expand_slice(&[b"info"], &mut okm).unwrap();
    let prk2 = HKDF_SM3.extract_from_secret(Some(b"salt"), b"ikm");
    let mut okm2 = [0; 32];
    prk2.expand_slice(&[b"info"], &mut okm2).unwrap();
    assert_eq!(okm, okm2);
    // RFC 5869: PRK = HMAC(salt, IKM); T(1) = HMAC(PRK, info ‖ 0x01).
    let prk_bytes = HMAC_SM3.with_key(b"salt").sign(&[b"ikm"]);
    let t1 = HMAC_SM3.with_key(prk_bytes.as_ref()).sign(&[b"info", &[1]]);
    assert_eq!(okm.as_slice(), t1.as_ref());
}

// ---- Decoders never panic ----

proptest! {
    #[test]
    fn sm_key_share_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..130)) {
        let _ = parse_key_share(&bytes);
    }

    #[test]
    fn sm_point_shaped_shares_never_panic(body in proptest::array::uniform32(any::<u8>()),
                                          y in proptest::array::uniform32(any::<u8>())) {
        let share = [&[0x04u8][..], &body, &y].concat();
        if let Ok(key) = parse_key_share(&share) {
            prop_assert!(kx::agree(&gmt_key(), &share).is_ok());
            let _ = key;
        }
    }

    #[test]
    fn sm_signature_der_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..90)) {
        let _ = signature_from_der(&bytes);
        let _ = SM2_SM3.verify_signature(&gmt_point(), b"m", &bytes);
        let _ = SM2_SM3.verify_signature(&bytes, b"m", &gmt_signature_der());
    }

    #[test]
    fn sm_der_shaped_signatures_never_panic(r in proptest::collection::vec(any::<u8>(), 0..36),
                                            s in proptest::collection::vec(any::<u8>(), 0..36),
                                            fudge in 0u8..4) {
        let mut body = vec![0x02, r.len() as u8];
        body.extend(&r);
        body.extend([0x02, s.len() as u8]);
        body.extend(&s);
        let mut der = vec![0x30, (body.len() as u8).wrapping_add(fudge)];
        der.extend(body);
        if let Ok(sig) = signature_from_der(&der) {
            prop_assert_eq!(signature_to_der(&sig), der);
        }
    }

    #[test]
    fn sm_record_decryption_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64),
                                         seq in any::<u64>()) {
        let (_, mut dec) = aead::record_pair([1; 16], [2; 12]);
        let mut body = body;
        let msg = InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut body);
        prop_assert!(dec.decrypt(msg, seq).is_err());
    }
}
