//! SM2 (GB/T 32918), the curve of 国密 chains: its row in the key-type table.
//!
//! libp2p has no SM2 key type, so an SM2 node has no libp2p keypair. Its NodeId is the point
//! `X‖Y`, as for the other EC types (what `openssl ec -text` prints of `sm_ssl.key`, and FISCO's
//! `sm_ssl.nodeid`). Its PeerId is made here, the way libp2p makes the PeerIds of keys too long to
//! inline: the SHA-256 multihash of the protobuf `PublicKey { Type = 0x534d32, Data = 04‖X‖Y }`
//! (the type number spells `SM2` in ASCII; libp2p's own types are 0 to 3). A PeerId of an SM2
//! node is therefore a hash, and its NodeId comes from the handshake, as for P-256 and RSA.
//!
//! Signatures are SM2 with SM3 over `Z‖M`, with the distinguishing identifier
//! [`SM2_DEFAULT_DISTID`] (GM/T 0009's default, what OpenSSL uses for certificates), DER-encoded
//! `SEQUENCE { r, s }` as OpenSSL writes them.

use std::sync::Arc;

use libp2p_identity::PeerId;
use pkcs8::ObjectIdentifier;
use sha2::{Digest as _, Sha256};
use sm2::dsa::signature::{Signer as _, Verifier as _};

use super::{EcCurve, KeySpec, Loaded, PrivateKeyForm, Secret, VerifyKey, ec};
use crate::{KeyError, NodeIdError};

/// The SM2 named curve (`1.2.156.10197.1.301`).
pub const OID_SM2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

/// The distinguishing identifier of SM2 signatures made by node keys and certificate issuers:
/// GM/T 0009's default, which OpenSSL's `-sigopt distid:1234567812345678` names.
pub const SM2_DEFAULT_DISTID: &str = "1234567812345678";

/// The protobuf key type number of SM2 public keys in PeerIds (`SM2` in ASCII).
pub const SM2_PEER_ID_KEY_TYPE: u32 = 0x534d32;

pub(super) static SPEC: KeySpec = KeySpec {
    names: &["sm2"],
    label: "SM2",
    code: 4,
    private_key: PrivateKeyForm::Ec(EcCurve {
        oid: OID_SM2,
        openssl_name: "SM2",
        from_scalar,
    }),
    libp2p: None,
    peer_id_holds_key: false,
    node_id_len: ec::POINT_LEN..=ec::POINT_LEN,
    node_id_form: "point",
    check_node_id: ec::check_point::<sm2::Sm2>,
    node_id_of: |_| {
        Err(NodeIdError::UnsupportedKeyType(
            "SM2 (not a libp2p key)".into(),
        ))
    },
    public_key: |_| None,
    peer_id,
    verify_key,
    generate: ec::generate::<sm2::Sm2>,
};

/// The protobuf `PublicKey { Type = SM2_PEER_ID_KEY_TYPE, Data = 04‖X‖Y }` of NodeId bytes.
fn protobuf(x_y: &[u8]) -> Vec<u8> {
    let point = ec::uncompressed(x_y);
    let mut out = vec![0x08];
    let mut n = SM2_PEER_ID_KEY_TYPE;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.push(0x12);
    out.push(point.len() as u8); // 65: one varint byte
    out.extend_from_slice(&point);
    out
}

/// The PeerId of an SM2 NodeId: the SHA-256 multihash of [`protobuf`].
fn peer_id(x_y: &[u8]) -> PeerId {
    let digest = Sha256::digest(protobuf(x_y));
    let mut multihash = vec![0x12, 0x20];
    multihash.extend_from_slice(&digest);
    PeerId::from_bytes(&multihash).expect("a SHA-256 multihash is a PeerId")
}

fn verify_key(x_y: &[u8]) -> VerifyKey {
    // NodeIds are checked to be on the curve when made, so this does not fail for them; a key
    // that cannot be made verifies nothing.
    VerifyKey::Sm2(
        sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DEFAULT_DISTID, &ec::uncompressed(x_y))
            .ok()
            .map(Arc::new),
    )
}

/// Whether `signature` (DER) is `key`'s SM2 signature of `message` under [`SM2_DEFAULT_DISTID`].
pub(crate) fn verify(key: &sm2::dsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    // A DER signature is 8 to 72 bytes; anything longer is not parsed at all.
    if signature.len() > 80 {
        return false;
    }
    sm2::dsa::Signature::from_der(signature)
        .is_ok_and(|signature| key.verify(message, &signature).is_ok())
}

/// `key`'s SM2 signature of `message` under [`SM2_DEFAULT_DISTID`], DER-encoded.
pub(crate) fn sign(key: &sm2::dsa::SigningKey, message: &[u8]) -> Result<Vec<u8>, KeyError> {
    let signature: sm2::dsa::Signature = key
        .try_sign(message)
        .map_err(|e| KeyError::Sign(format!("SM2: {e}")))?;
    Ok(signature.to_der().to_vec())
}

fn from_scalar(scalar: &[u8]) -> Result<Loaded, KeyError> {
    let pkcs8 = ec::pkcs8_of_scalar::<sm2::Sm2>(scalar)?;
    let key =
        sm2::dsa::SigningKey::from_slice(SM2_DEFAULT_DISTID, scalar).map_err(ec::scalar_error)?;
    Ok(Loaded {
        pkcs8,
        secret: Secret::Sm2(Arc::new(key)),
    })
}

/// The NodeId bytes `X‖Y` of an SM2 signing key.
pub(crate) fn node_id_bytes(key: &sm2::dsa::SigningKey) -> Vec<u8> {
    key.verifying_key().to_sec1_bytes()[1..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, NodeId, NodeKey};

    #[test]
    fn sm2_keys_sign_and_their_node_ids_verify() {
        let key = NodeKey::generate(KeyType::Sm2).expect("key");
        let id = key.node_id();
        assert_eq!(id.key_type(), KeyType::Sm2);
        assert_eq!(id.as_bytes().len(), 64);
        assert!(key.keypair().is_none());
        let verifier = id.verifier();
        let signature = key.sign(b"message").expect("sign");
        assert!(verifier.verify(b"message", &signature));
        assert!(!verifier.verify(b"massage", &signature));
        let other = NodeKey::generate(KeyType::Sm2).expect("key");
        assert!(!other.node_id().verifier().verify(b"message", &signature));
        for at in 0..signature.len() {
            let mut bad = signature.clone();
            bad[at] ^= 0x01;
            assert!(!verifier.verify(b"message", &bad), "byte {at}");
            assert!(!verifier.verify(b"message", &signature[..at]));
        }
        // A signature under another distinguishing id is not the node's.
        let sk = sm2::dsa::SigningKey::from_slice("TLSv1.3+GM+Cipher+Suite", &sk_bytes(&key))
            .expect("key");
        let foreign: sm2::dsa::Signature = sk.sign(b"message");
        assert!(!verifier.verify(b"message", &foreign.to_der().to_vec()));
    }

    fn sk_bytes(key: &NodeKey) -> Vec<u8> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(key.pkcs8_der()).expect("PKCS#8");
        let ec = sec1::EcPrivateKey::try_from(info.private_key.as_bytes()).expect("SEC1");
        ec.private_key.to_vec()
    }

    #[test]
    fn sm2_peer_ids_are_hashes_that_keys_and_node_ids_agree_on() {
        let key = NodeKey::generate(KeyType::Sm2).expect("key");
        let id = key.node_id();
        let peer = id.to_peer_id();
        assert_eq!(peer.as_ref().code(), 0x12);
        assert_eq!(
            peer,
            NodeId::from_bytes(KeyType::Sm2, id.as_bytes())
                .unwrap()
                .to_peer_id()
        );
        assert_ne!(
            peer,
            NodeKey::generate(KeyType::Sm2)
                .unwrap()
                .node_id()
                .to_peer_id()
        );
        assert!(NodeId::from_peer_id(&peer).is_err());
        assert!(id.to_public_key().is_none());
        // The protobuf the hash covers: type 0x534d32 as a varint, then the 65-byte point.
        let pb = protobuf(id.as_bytes());
        assert_eq!(&pb[..6], &[0x08, 0xb2, 0x9a, 0xcd, 0x02, 0x12]);
        assert_eq!(pb[6], 65);
        assert_eq!(pb[7], 0x04);
        assert_eq!(&pb[8..], id.as_bytes());
    }

    /// SM2 NodeIds read without a type are SM2 when the point is on SM2 and on neither curve
    /// before it in the untyped order.
    #[test]
    fn untyped_sm2_points_read_as_sm2() {
        let key = NodeKey::generate(KeyType::Sm2).expect("key");
        let text = key.node_id().to_string();
        let parsed: NodeId = text.parse().expect("parse");
        assert_eq!(parsed.key_type(), KeyType::Sm2);
        assert_eq!(&parsed, key.node_id());
    }
}
