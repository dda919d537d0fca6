//! What the EC key types share, whatever the curve: the `id-ecPublicKey` OID, NodeIds as the
//! uncompressed point `X‖Y` without its `04` prefix, and private keys as a scalar on a named
//! curve (SEC1 inside PKCS#8, or a bare SEC1 file). What differs per curve is in its own file.

use std::{fmt, sync::Arc};

use k256::elliptic_curve::{
    AffinePoint, CurveArithmetic, FieldBytesSize, Generate as _, PublicKey, SecretKey,
    sec1::{FromSec1Point, ModulusSize, ToSec1Point},
};
use pkcs8::{
    AssociatedOid, EncodePrivateKey as _, ObjectIdentifier, PrivateKeyInfoRef, SecretDocument,
};
use zeroize::Zeroizing;

use super::{Loaded, ec_curve, generation_error, openssl_curve_names};
use crate::{KeyError, NodeIdError};

/// `id-ecPublicKey`.
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The length of an EC NodeId: `X‖Y` of a 256-bit curve.
pub(super) const POINT_LEN: usize = 64;

/// The SEC1 uncompressed point `04‖X‖Y` of NodeId bytes `X‖Y`.
pub(super) fn uncompressed(x_y: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(x_y.len() + 1);
    v.push(0x04);
    v.extend_from_slice(x_y);
    v
}

/// The NodeId bytes of an uncompressed point `04‖X‖Y`.
pub(super) fn node_id_of_uncompressed(point: &[u8]) -> Arc<[u8]> {
    debug_assert_eq!(point.len(), POINT_LEN + 1);
    point[1..].into()
}

/// The error for a private scalar the curve refuses.
pub(super) fn scalar_error(e: impl fmt::Display) -> KeyError {
    KeyError::Malformed(format!("EC scalar: {e}"))
}

/// Checks NodeId bytes `X‖Y` are a point on curve `C`.
pub(super) fn check_point<C>(x_y: &[u8]) -> Result<(), NodeIdError>
where
    C: CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromSec1Point<C> + ToSec1Point<C>,
{
    PublicKey::<C>::from_sec1_bytes(&uncompressed(x_y))
        .map(drop)
        .map_err(|_| NodeIdError::NotOnCurve)
}

/// The PKCS#8 DER of a private scalar on curve `C`.
pub(super) fn pkcs8_of_scalar<C>(scalar: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError>
where
    C: CurveArithmetic + AssociatedOid,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromSec1Point<C> + ToSec1Point<C>,
{
    let sk = SecretKey::<C>::from_slice(scalar).map_err(scalar_error)?;
    let pkcs8 = sk.to_pkcs8_der().map_err(scalar_error)?;
    Ok(Zeroizing::new(pkcs8.as_bytes().to_vec()))
}

/// A new private key on curve `C`, as PKCS#8 DER.
pub(super) fn generate<C>() -> Result<SecretDocument, KeyError>
where
    C: CurveArithmetic + AssociatedOid,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromSec1Point<C> + ToSec1Point<C>,
{
    SecretKey::<C>::generate_from_rng(&mut rand::rng())
        .to_pkcs8_der()
        .map_err(generation_error)
}

/// Loads a PKCS#8 `id-ecPublicKey` key.
pub(crate) fn load_pkcs8(info: &PrivateKeyInfoRef<'_>) -> Result<Loaded, KeyError> {
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|_| KeyError::Unsupported("EC key without a named curve".into()))?;
    let ec = sec1::EcPrivateKey::try_from(info.private_key.as_bytes())
        .map_err(|e| KeyError::Malformed(format!("PKCS#8 EC key: {e}")))?;
    from_scalar(curve, ec.private_key)
}

/// Loads a SEC1 key (`BEGIN EC PRIVATE KEY`, as `openssl ecparam -genkey` writes).
pub(crate) fn load_sec1(der: &[u8]) -> Result<Loaded, KeyError> {
    let ec =
        sec1::EcPrivateKey::try_from(der).map_err(|e| KeyError::Malformed(format!("SEC1: {e}")))?;
    let curve = ec
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| KeyError::Unsupported("SEC1 key without a named curve".into()))?;
    from_scalar(curve, ec.private_key)
}

fn from_scalar(curve: ObjectIdentifier, scalar: &[u8]) -> Result<Loaded, KeyError> {
    let row = ec_curve(curve).ok_or_else(|| {
        KeyError::Unsupported(format!(
            "EC curve {curve} (expected {})",
            openssl_curve_names()
        ))
    })?;
    (row.from_scalar)(scalar)
}
