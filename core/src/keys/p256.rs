//! ECDSA over NIST P-256 (prime256v1): its row in the key-type table.
//!
//! libp2p calls these keys `Ecdsa` (P-256 is its only ECDSA curve); their protobuf encoding is too
//! long to inline, so a P-256 PeerId is a hash and the NodeId comes from the handshake.

use std::sync::Arc;

use libp2p_identity::{KeyType as Libp2pKeyType, Keypair, PublicKey, ecdsa};
use pkcs8::ObjectIdentifier;

use super::{EcCurve, KeySpec, Loaded, PrivateKeyForm, Secret, VerifyKey, ec};
use crate::{KeyError, NodeIdError};

/// The P-256 (prime256v1) named curve.
pub const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

pub(super) static SPEC: KeySpec = KeySpec {
    names: &["p256", "p-256", "prime256v1", "secp256r1"],
    label: "P-256",
    code: 2,
    private_key: PrivateKeyForm::Ec(EcCurve {
        oid: OID_P256,
        openssl_name: "prime256v1",
        from_scalar,
    }),
    libp2p: Some(Libp2pKeyType::Ecdsa),
    peer_id_holds_key: false,
    node_id_len: ec::POINT_LEN..=ec::POINT_LEN,
    node_id_form: "point",
    check_node_id: ec::check_point::<p256::NistP256>,
    node_id_of,
    public_key: |key| Some(public_key(key)),
    peer_id: |key| public_key(key).to_peer_id(),
    verify_key: |key| VerifyKey::Libp2p(public_key(key)),
    generate: ec::generate::<p256::NistP256>,
};

fn node_id_of(key: &PublicKey) -> Result<Arc<[u8]>, NodeIdError> {
    let key = key
        .clone()
        .try_into_ecdsa()
        .map_err(|e| NodeIdError::UnsupportedKeyType(e.to_string()))?;
    Ok(ec::node_id_of_uncompressed(&key.to_bytes()))
}

fn public_key(x_y: &[u8]) -> PublicKey {
    ecdsa::PublicKey::try_from_bytes(&ec::uncompressed(x_y))
        .expect("validated when the NodeId was made")
        .into()
}

fn from_scalar(scalar: &[u8]) -> Result<Loaded, KeyError> {
    let pkcs8 = ec::pkcs8_of_scalar::<p256::NistP256>(scalar)?;
    let sk = ecdsa::SecretKey::try_from_bytes(scalar).map_err(ec::scalar_error)?;
    Ok(Loaded {
        pkcs8,
        secret: Secret::Libp2p(Box::new(Keypair::from(ecdsa::Keypair::from(sk)))),
    })
}
