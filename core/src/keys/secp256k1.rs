//! secp256k1, FISCO BCOS's default curve: its row in the key-type table.
//!
//! libp2p calls these keys `Secp256k1`; their protobuf encoding is short enough for PeerIds to
//! inline it, so a secp256k1 PeerId gives its NodeId back.

use std::sync::{Arc, LazyLock};

use libp2p_identity::{KeyType as Libp2pKeyType, Keypair, PublicKey, secp256k1};
use pkcs8::ObjectIdentifier;

use sha2::{Digest as _, Sha256};

use super::{EcCurve, KeySpec, Loaded, PrivateKeyForm, Secret, VerifyKey, ec};

use crate::{KeyError, NodeIdError};

/// The secp256k1 named curve.
pub const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

pub(super) static SPEC: KeySpec = KeySpec {
    names: &["secp256k1", "k256"],
    label: "secp256k1",
    code: 1,
    private_key: PrivateKeyForm::Ec(EcCurve {
        oid: OID_SECP256K1,
        openssl_name: "secp256k1",
        from_scalar,
    }),
    libp2p: Some(Libp2pKeyType::Secp256k1),
    peer_id_holds_key: true,
    node_id_len: ec::POINT_LEN..=ec::POINT_LEN,
    node_id_form: "point",
    check_node_id: ec::check_point::<k256::Secp256k1>,
    node_id_of,
    public_key: |key| Some(public_key(key)),
    peer_id: |key| public_key(key).to_peer_id(),
    verify_key,
    generate: ec::generate::<k256::Secp256k1>,
};

fn node_id_of(key: &PublicKey) -> Result<Arc<[u8]>, NodeIdError> {
    let key = key
        .clone()
        .try_into_secp256k1()
        .map_err(|e| NodeIdError::UnsupportedKeyType(e.to_string()))?;
    Ok(ec::node_id_of_uncompressed(&key.to_bytes_uncompressed()))
}

fn public_key(x_y: &[u8]) -> PublicKey {
    secp256k1::PublicKey::try_from_bytes(&ec::uncompressed(x_y))
        .expect("validated when the NodeId was made")
        .into()
}

/// What verifies signatures checks them with: libsecp256k1 (Bitcoin Core's C library, through
/// the `secp256k1` crate), not k256 as libp2p does. A node verifies every message and record
/// that reaches it, once per origin signature, and that was the largest single cost of taking
/// a message in (k256: 66 µs a signature on the machine that runs the benches, libsecp256k1:
/// 38 µs). Both accept exactly the DER-encoded low-S signatures of the key over the message's
/// SHA-256 (k256 0.14 rejects high S as libsecp256k1 does); the tests check they agree.
fn verify_key(x_y: &[u8]) -> VerifyKey {
    match libsecp256k1::PublicKey::from_slice(&ec::uncompressed(x_y)) {
        Ok(key) => VerifyKey::Secp256k1(key),
        // Not reached for a checked NodeId; libp2p's own check then says no.
        Err(_) => VerifyKey::Libp2p(public_key(x_y)),
    }
}

/// A verification context, made once (it precomputes tables).
static CONTEXT: LazyLock<libsecp256k1::Secp256k1<libsecp256k1::VerifyOnly>> =
    LazyLock::new(libsecp256k1::Secp256k1::verification_only);

/// Whether `signature` (DER) is `key`'s signature of SHA-256(`message`), as libp2p's secp256k1
/// keys sign.
pub(crate) fn verify(key: &libsecp256k1::PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = libsecp256k1::ecdsa::Signature::from_der(signature) else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(message).into();
    CONTEXT
        .verify_ecdsa(libsecp256k1::Message::from_digest(digest), &signature, key)
        .is_ok()
}

fn from_scalar(scalar: &[u8]) -> Result<Loaded, KeyError> {
    let pkcs8 = ec::pkcs8_of_scalar::<k256::Secp256k1>(scalar)?;
    let sk = secp256k1::SecretKey::try_from_bytes(scalar.to_vec()).map_err(ec::scalar_error)?;
    Ok(Loaded {
        pkcs8,
        secret: Secret::Libp2p(Box::new(Keypair::from(secp256k1::Keypair::from(sk)))),
    })
}

#[cfg(test)]
mod tests {
    use k256::ecdsa::Signature;

    use super::*;
    use crate::{KeyType, NodeKey};

    /// Whether libp2p's (k256) check takes `signature`: what libsecp256k1's must agree with.
    fn k256_takes(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        key.verify(message, signature)
    }

    #[test]
    fn libsecp256k1_takes_exactly_what_k256_takes() {
        for _ in 0..8 {
            let key = NodeKey::generate(KeyType::Secp256k1).expect("key");
            let id = key.node_id();
            let verifier = id.verifier();
            assert!(matches!(verifier.0, VerifyKey::Secp256k1(_)));
            let libp2p = id.to_public_key().expect("a libp2p key");
            for i in 0..8u8 {
                let message = [b'm', i];
                let signature = key.sign(&message).expect("sign");
                assert!(verifier.verify(&message, &signature));
                assert!(k256_takes(&libp2p, &message, &signature));
                // Another message, another key: both refuse.
                assert!(!verifier.verify(&[b'x', i], &signature));
                let other = NodeKey::generate(KeyType::Secp256k1).expect("key");
                assert!(!other.node_id().verifier().verify(&message, &signature));
                // The same signature with S negated (high S, valid in plain ECDSA): both refuse.
                let parsed = Signature::from_der(&signature).expect("DER");
                let high = Signature::from_scalars(parsed.r(), -*parsed.s()).expect("scalars");
                let high = high.to_der();
                assert!(!verifier.verify(&message, high.as_bytes()));
                assert!(!k256_takes(&libp2p, &message, high.as_bytes()));
                // Every byte changed, the DER cut short or extended: they agree on each.
                for at in 0..signature.len() {
                    for flip in [0x01u8, 0x80, 0xff] {
                        let mut bad = signature.clone();
                        bad[at] ^= flip;
                        assert_eq!(
                            verifier.verify(&message, &bad),
                            k256_takes(&libp2p, &message, &bad),
                            "byte {at} ^ {flip:#x}"
                        );
                    }
                    assert_eq!(
                        verifier.verify(&message, &signature[..at]),
                        k256_takes(&libp2p, &message, &signature[..at])
                    );
                }
                let mut long = signature.clone();
                long.push(0);
                assert!(!verifier.verify(&message, &long));
                assert!(!k256_takes(&libp2p, &message, &long));
            }
        }
    }
}
