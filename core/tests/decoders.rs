//! Property tests for every decoder of untrusted input in the core crate: the length-prefix
//! framing (`take_frame`, [`FrameCodec`]), NodeId text and bytes, and node key files. Arbitrary
//! input never panics; what we encode decodes back to itself; truncated frames wait for more;
//! length prefixes beyond the limit are refused before anything is buffered.

use asynchronous_codec::{Decoder as _, Encoder as _};
use bcos_p2p_core::{
    KeyType, NodeId, NodeKey,
    framed::{FrameCodec, take_frame},
};
use bytes::{BufMut as _, Bytes, BytesMut};
use proptest::prelude::*;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivateSec1KeyDer};

fn encode_all(max: usize, bodies: &[Vec<u8>]) -> BytesMut {
    let mut codec = FrameCodec::new(max);
    let mut wire = BytesMut::new();
    for b in bodies {
        codec.encode(Bytes::from(b.clone()), &mut wire).unwrap();
    }
    wire
}

/// A secp256k1, P-256 or SM2 scalar that is a valid private key (non-zero, below the order).
fn ec_scalar() -> impl Strategy<Value = (KeyType, [u8; 32])> {
    (0..3u8, any::<[u8; 32]>()).prop_filter_map("not a valid scalar", |(curve, s)| {
        let (key_type, ok) = match curve {
            0 => (KeyType::Secp256k1, k256::SecretKey::from_slice(&s).is_ok()),
            1 => (KeyType::P256, p256::SecretKey::from_slice(&s).is_ok()),
            _ => (KeyType::Sm2, sm2::SecretKey::from_slice(&s).is_ok()),
        };
        ok.then_some((key_type, s))
    })
}

fn pkcs8_of(key_type: KeyType, scalar: &[u8; 32]) -> Vec<u8> {
    use pkcs8::EncodePrivateKey;
    let doc = match key_type {
        KeyType::Secp256k1 => k256::SecretKey::from_slice(scalar).unwrap().to_pkcs8_der(),
        KeyType::Sm2 => sm2::SecretKey::from_slice(scalar).unwrap().to_pkcs8_der(),
        _ => p256::SecretKey::from_slice(scalar).unwrap().to_pkcs8_der(),
    };
    doc.unwrap().as_bytes().to_vec()
}

proptest! {
    /// encode → decode is the identity for any frames, however the bytes are split.
    #[test]
    fn link_frames_round_trip_in_any_chunks(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..8),
        chunk in 1usize..50,
    ) {
        let wire = encode_all(400, &bodies);
        let mut codec = FrameCodec::new(400);
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            src.extend_from_slice(piece);
            while let Some(body) = codec.decode(&mut src).unwrap() {
                out.push(body.to_vec());
            }
        }
        prop_assert_eq!(out, bodies);
        prop_assert!(src.is_empty());
    }

    /// Every strict prefix of a frame waits for more: no frame, no error, nothing consumed.
    #[test]
    fn truncated_link_frames_wait(body in proptest::collection::vec(any::<u8>(), 0..300), cut: usize) {
        let wire = encode_all(300, &[body]);
        let cut = cut % wire.len();
        let mut src = BytesMut::from(&wire[..cut]);
        prop_assert!(FrameCodec::new(300).decode(&mut src).unwrap().is_none());
        prop_assert_eq!(&src[..], &wire[..cut]);
    }

    /// A length prefix beyond the limit is refused as soon as it is complete, with no body
    /// bytes present and nothing reserved for them.
    #[test]
    fn oversize_prefixes_are_refused_before_buffering(max in 0usize..1 << 20, excess in 1u64..1 << 50) {
        let mut p = unsigned_varint::encode::u64_buffer();
        let mut src = BytesMut::from(unsigned_varint::encode::u64(max as u64 + excess, &mut p));
        let cap = src.capacity();
        prop_assert!(FrameCodec::new(max).decode(&mut src).is_err());
        prop_assert!(take_frame(&mut src, 0, max).is_err());
        prop_assert_eq!(src.capacity(), cap);
    }

    /// Arbitrary bytes decode, wait, or fail; frames are within `min..=max` and come with
    /// their minimal length prefix (an overlong one is refused, never read as another length).
    #[test]
    fn arbitrary_bytes_never_panic_the_link_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..1000),
        min in 0usize..20,
        max in 0usize..300,
    ) {
        let mut src = BytesMut::from(&bytes[..]);
        for _ in 0..=bytes.len() {
            let before = src.len();
            match take_frame(&mut src, min, max) {
                Ok(Some(body)) => {
                    prop_assert!(body.len() >= min && body.len() <= max);
                    // Exactly a minimal varint prefix and the body were taken.
                    let mut p = unsigned_varint::encode::usize_buffer();
                    let prefix = unsigned_varint::encode::usize(body.len(), &mut p).len();
                    prop_assert_eq!(before - src.len(), prefix + body.len());
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut codec = FrameCodec::write_only(max);
        let mut src = BytesMut::from(&bytes[..]);
        if let Ok(Some(body)) = codec.decode(&mut src) {
            prop_assert!(body.is_empty(), "a write-only stream takes only empty frames");
        }
    }

    /// NodeId text: arbitrary strings (including hex of every length and `0x`) never panic.
    #[test]
    fn arbitrary_node_id_text_never_panics(s in "(0[xX])?[0-9a-fA-F]{0,140}|\\PC{0,200}") {
        if let Ok(id) = s.parse::<NodeId>() {
            prop_assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }
    }

    /// NodeId bytes: arbitrary bytes of the EC length and of RSA lengths never panic.
    #[test]
    fn arbitrary_node_id_bytes_never_panic(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 64),
            proptest::collection::vec(any::<u8>(), 0..1100),
        ],
    ) {
        if let Ok(id) = NodeId::from_untyped_bytes(&bytes) {
            prop_assert_eq!(id.as_bytes(), &bytes[..]);
            match id.to_public_key() {
                Some(public) => prop_assert_eq!(NodeId::from_public_key(&public), Ok(id)),
                None => prop_assert_eq!(id.key_type(), KeyType::Sm2),
            }
        }
    }

    /// A real EC key's NodeId: text (any case, with or without `0x`) and bytes round-trip.
    #[test]
    fn ec_node_ids_round_trip((key_type, scalar) in ec_scalar(), upper: bool, prefix: bool) {
        let key = NodeKey::from_pkcs8_der(&pkcs8_of(key_type, &scalar)).unwrap();
        let id = key.node_id();
        prop_assert_eq!(id.key_type(), key_type);
        let mut text = id.to_string();
        if upper {
            text = text.to_uppercase();
        }
        if prefix {
            text.insert_str(0, "0x");
        }
        prop_assert_eq!(&text.parse::<NodeId>().unwrap(), id);
        prop_assert_eq!(&NodeId::from_untyped_bytes(id.as_bytes()).unwrap(), id);
        // Only secp256k1 PeerIds hold the key; P-256 and SM2 ones are hashes and say so.
        match NodeId::from_peer_id(&id.to_peer_id()) {
            Ok(back) => prop_assert_eq!(&back, id),
            Err(e) => prop_assert!(key_type != KeyType::Secp256k1, "{e}"),
        }
    }

    /// An EC key loads the same from PKCS#8 DER, SEC1 DER, and our own PKCS#8 PEM.
    #[test]
    fn ec_keys_load_the_same_in_every_form((key_type, scalar) in ec_scalar()) {
        let from_pkcs8 = NodeKey::from_pkcs8_der(&pkcs8_of(key_type, &scalar)).unwrap();
        let curve = key_type.curve_oid().unwrap();
        let sec1 = der::Encode::to_der(&sec1::EcPrivateKey {
            private_key: &scalar,
            parameters: Some(sec1::EcParameters::NamedCurve(curve)),
            public_key: None,
        })
        .unwrap();
        let from_sec1 = NodeKey::from_der(&PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(sec1))).unwrap();
        prop_assert_eq!(from_sec1.node_id(), from_pkcs8.node_id());
        let pem = from_pkcs8.to_pkcs8_pem();
        let from_pem = NodeKey::from_pem(pem.as_bytes()).unwrap();
        prop_assert_eq!(from_pem.node_id(), from_pkcs8.node_id());
    }

    /// Arbitrary key bytes, as PEM or as any DER form, never panic.
    #[test]
    fn arbitrary_key_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = NodeKey::from_pem(&bytes);
        let _ = NodeKey::from_pkcs8_der(&bytes);
        let _ = NodeKey::from_der(&PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(&bytes[..])));
        let _ = NodeKey::from_der(&PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(&bytes[..])));
    }

    /// Real keys with bytes flipped or cut, in DER and in PEM, never panic.
    #[test]
    fn corrupted_keys_never_panic(
        (key_type, scalar) in ec_scalar(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut: usize,
    ) {
        let mut der = pkcs8_of(key_type, &scalar);
        for (at, x) in flips {
            let i = at % der.len();
            der[i] ^= x;
        }
        der.truncate(cut % (der.len() + 1));
        let _ = NodeKey::from_pkcs8_der(&der);
        let pem = bcos_p2p_core::pem_encode("PRIVATE KEY", &der);
        let _ = NodeKey::from_pem(pem.as_bytes());
        let mut text = BytesMut::from(pem.as_bytes());
        text.truncate(cut % (text.len() + 1));
        text.put_u8(b'\n');
        let _ = NodeKey::from_pem(&text);
    }
}
