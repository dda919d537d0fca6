//! The `curveSM2` key exchange group (RFC 8998 §2): ephemeral ECDH on the SM2 recommended
//! curve. A key share is the uncompressed point `0x04 ‖ X ‖ Y` (65 bytes) and the shared secret
//! is the X coordinate of the product (32 bytes), as for the NIST curves in RFC 8446 §4.2.8.2.

use rustls::{
    Error, NamedGroup, PeerMisbehaved, ProtocolVersion,
    crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup},
};
use sm2::{
    ProjectivePoint, PublicKey, SecretKey,
    elliptic_curve::{
        Generate as _, group::Group as _, point::AffineCoordinates as _, sec1::ToSec1Point as _,
    },
};

use super::CURVE_SM2;

/// Length of an uncompressed SM2 point.
const SHARE_LEN: usize = 65;

/// `curveSM2` for rustls.
#[derive(Debug, Clone, Copy)]
pub struct CurveSm2;

/// `curveSM2` as a rustls key exchange group.
pub static CURVE_SM2_KX: &dyn SupportedKxGroup = &CurveSm2;

impl SupportedKxGroup for CurveSm2 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret = SecretKey::generate_from_rng(&mut rand::rng());
        let pub_key = secret.public_key().to_sec1_point(false).as_bytes().to_vec();
        Ok(Box::new(Sm2KeyExchange { secret, pub_key }))
    }

    fn name(&self) -> NamedGroup {
        CURVE_SM2
    }

    /// RFC 8998 defines `curveSM2` for TLS 1.3 only.
    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// A peer's `curveSM2` key share: exactly 65 bytes, `0x04 ‖ X ‖ Y`, a point on the curve other
/// than the identity (which has no such encoding). Anything else is
/// [`PeerMisbehaved::InvalidKeyShare`].
pub fn parse_key_share(share: &[u8]) -> Result<PublicKey, Error> {
    if share.len() != SHARE_LEN || share.first() != Some(&0x04) {
        return Err(PeerMisbehaved::InvalidKeyShare.into());
    }
    PublicKey::from_sec1_bytes(share).map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
}

struct Sm2KeyExchange {
    secret: SecretKey,
    pub_key: Vec<u8>,
}

impl ActiveKeyExchange for Sm2KeyExchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer = parse_key_share(peer_pub_key)?;
        let product = ProjectivePoint::from(*peer.as_affine()) * *self.secret.to_nonzero_scalar();
        // The curve has prime order and the scalar is in [1, n-1], so this cannot be the
        // identity for a valid share; refuse it anyway rather than derive from it.
        if bool::from(product.is_identity()) {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(product.to_affine().x().as_slice()))
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        CURVE_SM2
    }
}

/// The shared secret of `secret` with `peer`'s share, for tests against independent ECDH.
#[cfg(test)]
pub(super) fn agree(secret: &SecretKey, peer: &[u8]) -> Result<Vec<u8>, Error> {
    let kx = Box::new(Sm2KeyExchange {
        secret: secret.clone(),
        pub_key: Vec::new(),
    });
    kx.complete(peer).map(|s| s.secret_bytes().to_vec())
}
