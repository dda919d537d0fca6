//! secp256k1, FISCO BCOS's default curve: its row in the key-type table.
//!
//! libp2p calls these keys `Secp256k1`; their protobuf encoding is short enough for PeerIds to
//! inline it, so a secp256k1 PeerId gives its NodeId back.

use std::sync::Arc;

use libp2p_identity::{KeyType as Libp2pKeyType, Keypair, PublicKey, secp256k1};
use pkcs8::ObjectIdentifier;

use super::{EcCurve, KeySpec, Loaded, PrivateKeyForm, ec};
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
    libp2p: Libp2pKeyType::Secp256k1,
    peer_id_holds_key: true,
    node_id_len: ec::POINT_LEN..=ec::POINT_LEN,
    node_id_form: "point",
    check_node_id: ec::check_point::<k256::Secp256k1>,
    node_id_of,
    public_key,
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

fn from_scalar(scalar: &[u8]) -> Result<Loaded, KeyError> {
    let pkcs8 = ec::pkcs8_of_scalar::<k256::Secp256k1>(scalar)?;
    let sk = secp256k1::SecretKey::try_from_bytes(scalar.to_vec()).map_err(ec::scalar_error)?;
    Ok(Loaded {
        pkcs8,
        keypair: Keypair::from(secp256k1::Keypair::from(sk)),
    })
}
