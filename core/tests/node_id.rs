//! NodeId: text form, round trips through libp2p keys and PeerIds, key files, bad input.

use bcos_p2p_core::{KeyType, NodeId, NodeIdError, NodeKey};
use libp2p_identity::PeerId;

fn keys() -> Vec<NodeKey> {
    KeyType::ALL
        .into_iter()
        .map(|t| NodeKey::generate(t).unwrap())
        .collect()
}

#[test]
fn hex_public_key_and_peer_id_round_trip_for_every_key_type() {
    for key in keys() {
        let id = key.node_id();
        let hex = id.to_string();
        let expected_len = match key.key_type() {
            KeyType::Secp256k1 | KeyType::P256 | KeyType::Sm2 => 128,
            KeyType::Rsa => 512,
        };
        assert_eq!(hex.len(), expected_len, "{:?}", key.key_type());
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );

        let parsed: NodeId = hex.parse().unwrap();
        assert_eq!(&parsed, id);
        assert_eq!(parsed.key_type(), key.key_type());
        // Upper case and a 0x prefix are accepted.
        assert_eq!(
            &format!("0x{}", hex.to_uppercase())
                .parse::<NodeId>()
                .unwrap(),
            id
        );

        // NodeId -> PublicKey -> NodeId, and the PeerId is the swarm's. SM2 has no libp2p key:
        // its PeerId is made from the NodeId alone.
        match key.keypair() {
            Some(keypair) => {
                let public = id.to_public_key().unwrap();
                assert_eq!(public, keypair.public());
                assert_eq!(&NodeId::from_public_key(&public).unwrap(), id);
                assert_eq!(id.to_peer_id(), keypair.public().to_peer_id());
            }
            None => {
                assert_eq!(key.key_type(), KeyType::Sm2);
                assert!(id.to_public_key().is_none());
            }
        }
        assert_eq!(id.to_peer_id(), key.peer_id());

        // serde as the hex string.
        let json = serde_json::to_string(id).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(&serde_json::from_str::<NodeId>(&json).unwrap(), id);
    }
}

#[test]
fn peer_id_to_node_id_is_lossless_where_the_peer_id_holds_the_key() {
    let k = NodeKey::generate(KeyType::Secp256k1).unwrap();
    let peer = k.node_id().to_peer_id();
    assert_eq!(&NodeId::try_from(&peer).unwrap(), k.node_id());

    // P-256, RSA and SM2 PeerIds are SHA-256 hashes of the key: the error says so.
    for t in [KeyType::P256, KeyType::Rsa, KeyType::Sm2] {
        let k = NodeKey::generate(t).unwrap();
        let peer = k.node_id().to_peer_id();
        assert!(matches!(NodeId::try_from(&peer), Err(NodeIdError::HashedPeerId(p)) if p == peer));
    }
    // Ed25519 identities are no NodeIds.
    let ed = libp2p_identity::Keypair::generate_ed25519();
    assert!(matches!(
        NodeId::from_public_key(&ed.public()),
        Err(NodeIdError::UnsupportedKeyType(_))
    ));
    assert!(NodeId::try_from(&PeerId::from(ed.public())).is_err());
}

#[test]
fn bad_text_is_an_error_not_a_panic() {
    let point = NodeKey::generate(KeyType::Secp256k1)
        .unwrap()
        .node_id()
        .to_string();
    type Check = fn(&NodeIdError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        (String::new(), |e| matches!(e, NodeIdError::BadLength(0))),
        ("abc".into(), |e| matches!(e, NodeIdError::BadLength(3))),
        (point[..126].to_string(), |e| {
            matches!(e, NodeIdError::BadLength(126))
        }),
        (format!("{point}00"), |e| {
            matches!(e, NodeIdError::BadLength(130))
        }),
        (format!("{}zz", &point[..126]), |e| {
            matches!(e, NodeIdError::NotHex(_))
        }),
        ("é".repeat(64), |e| matches!(e, NodeIdError::NotHex(_))),
        // X = 0, Y = 0 is on no curve; so is a point with Y changed.
        ("0".repeat(128), |e| matches!(e, NodeIdError::NotOnCurve)),
        (
            format!(
                "{}{}",
                &point[..127],
                if point.ends_with('0') { '1' } else { '0' }
            ),
            |e| matches!(e, NodeIdError::NotOnCurve),
        ),
        // An RSA-sized value without its top bit, and an even modulus.
        ("0".repeat(512), |e| {
            matches!(e, NodeIdError::BadRsaModulus(_))
        }),
        (format!("f{}", "0".repeat(511)), |e| {
            matches!(e, NodeIdError::BadRsaModulus(_))
        }),
    ];
    for (text, check) in cases {
        let err = text.parse::<NodeId>().unwrap_err();
        assert!(check(&err), "{text:?}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
    // Arbitrary strings never panic.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..600 {
        let s: String = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b"0123456789abcdefABCDEFxg \n"[(seed % 26) as usize] as char
            })
            .collect();
        let _ = s.parse::<NodeId>();
    }
}

#[test]
fn key_files_in_every_pem_form_load() {
    for key in keys() {
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = NodeKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(back.node_id(), key.node_id());
    }
    // SEC1 after an EC PARAMETERS block, as `openssl ecparam -genkey` writes it.
    let k = k256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let sec1 = k256::pkcs8::der::Encode::to_der(&sec1::EcPrivateKey {
        private_key: &[7u8; 32],
        parameters: Some(sec1::EcParameters::NamedCurve(bcos_p2p_core::OID_SECP256K1)),
        public_key: None,
    })
    .unwrap();
    let pem = format!(
        "-----BEGIN EC PARAMETERS-----\nBgUrgQQACg==\n-----END EC PARAMETERS-----\n{}",
        bcos_p2p_core::pem_encode("EC PRIVATE KEY", &sec1)
    );
    let loaded = NodeKey::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(loaded.key_type(), KeyType::Secp256k1);
    let pkcs8 = k256::pkcs8::EncodePrivateKey::to_pkcs8_der(&k).unwrap();
    let same = NodeKey::from_pkcs8_der(pkcs8.as_bytes()).unwrap();
    assert_eq!(loaded.node_id(), same.node_id());
    // PKCS#1 RSA, as `openssl genrsa -traditional` writes it.
    let rsa_key = NodeKey::generate(KeyType::Rsa).unwrap();
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        rsa::PrivateKey::from_pkcs8_der(rsa_key.pkcs8_der())
            .unwrap()
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .unwrap()
    };
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(
        NodeKey::from_pem(pkcs1.as_bytes()).unwrap().node_id(),
        rsa_key.node_id()
    );
    // Garbage and non-keys are errors.
    assert!(NodeKey::from_pem(b"not a key").is_err());
    assert!(
        NodeKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
    // An Ed25519 PKCS#8 key is refused as unsupported.
    let mut ed = hex::decode("302e020100300506032b657004220420").unwrap();
    ed.extend_from_slice(&[0x11; 32]);
    let ed = bcos_p2p_core::pem_encode("PRIVATE KEY", &ed);
    let err = NodeKey::from_pem(ed.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
}

/// A NodeId is the RSA modulus alone, so only the standard exponent 65537 is a NodeId.
#[test]
fn rsa_keys_with_another_exponent_are_refused() {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::PrivateKey::new_with_exp(&mut rand::rng(), 2048, 3u64.into()).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let err = NodeKey::from_pkcs8_der(der.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("65537"), "{err}");
}

#[test]
fn raw_bytes_round_trip_and_bad_bytes_are_errors() {
    for key in keys() {
        let id = key.node_id();
        assert_eq!(&NodeId::from_untyped_bytes(id.as_bytes()).unwrap(), id);
    }
    assert!(matches!(
        NodeId::from_untyped_bytes(&[1; 10]),
        Err(NodeIdError::BadLength(20))
    ));
    assert!(matches!(
        NodeId::from_untyped_bytes(&[0; 64]),
        Err(NodeIdError::NotOnCurve)
    ));
    assert!(NodeId::from_untyped_bytes(&[]).is_err());
}

/// Typed bytes keep the type given, and bytes of another type are refused, not re-typed.
#[test]
fn typed_bytes_keep_their_type_and_refuse_other_types() {
    for key in keys() {
        let id = key.node_id();
        assert_eq!(
            &NodeId::from_bytes(id.key_type(), id.as_bytes()).unwrap(),
            id
        );
    }
    let k1 = NodeKey::generate(KeyType::Secp256k1).unwrap();
    let point = k1.node_id().as_bytes();
    assert!(matches!(
        NodeId::from_bytes(KeyType::P256, point),
        Err(NodeIdError::NotOnCurve)
    ));
    assert!(matches!(
        NodeId::from_bytes(KeyType::Rsa, point),
        Err(NodeIdError::BadLength(128))
    ));
}
