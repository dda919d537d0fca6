//! Making a chain CA and node certificates in pure Rust (no `openssl` at run time).
//!
//! The result has the shape FISCO BCOS's chain builders produce: a self-signed CA
//! (`CA:TRUE`), optional intermediates (FISCO's "agency"), and node certificates (`CA:FALSE`,
//! digitalSignature) for secp256k1, P-256, RSA-2048 or SM2 keys. A 国密 node also has an
//! encryption certificate (FISCO's `sm_enssl.crt`, `gmennode.crt`) for a second SM2 key, which
//! [`CertificateAuthority::issue_encryption`] makes and [`check_encryption_pair`] checks. Certificates are built with
//! RustCrypto's `x509-cert`, which, unlike rcgen, can put a secp256k1 key in a certificate; the
//! key handling of each key type (its SubjectPublicKeyInfo, signing) is in its scheme.

use std::{
    str::FromStr,
    time::{Duration, SystemTime},
};

use bcos_p2p_core::{KeyType, NodeId, NodeKey, pem_encode};

use crate::schemes;
use der::{Decode, Encode, oid::ObjectIdentifier};
use rustls_pki_types::CertificateDer;
use spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::{
    Certificate, TbsCertificate,
    builder::{CertificateBuilder, profile::BuilderProfile},
    ext::{
        Extension, ToExtension,
        pkix::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
            SubjectKeyIdentifier,
        },
    },
    name::Name,
    serial_number::SerialNumber,
    time::{Time, Validity},
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("certificate generation: {0}")]
pub struct GenError(String);

pub(crate) fn gen_err(e: impl std::fmt::Display) -> GenError {
    GenError(e.to_string())
}

const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// A validity period.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl Period {
    /// From an hour ago (tolerating clock skew) for `days` days.
    pub fn days(days: u32) -> Period {
        let now = SystemTime::now();
        Period {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }

    fn validity(&self) -> Result<Validity, GenError> {
        Ok(Validity::new(
            Time::try_from(self.not_before).map_err(gen_err)?,
            Time::try_from(self.not_after).map_err(gen_err)?,
        ))
    }
}

/// A certificate authority: the chain CA, or an intermediate ("agency") under it.
pub struct CertificateAuthority {
    key: NodeKey,
    cert: Certificate,
    /// Certificates above this one, nearest first (empty for a root).
    parents: Vec<CertificateDer<'static>>,
}

impl CertificateAuthority {
    /// A self-signed root CA with a new key.
    pub fn new_root(key_type: KeyType, subject: &str, period: Period) -> Result<Self, GenError> {
        let key = NodeKey::generate(key_type).map_err(gen_err)?;
        let name = Name::from_str(subject).map_err(gen_err)?;
        let spki = spki_of(&key)?;
        let profile = Profile {
            issuer: name.clone(),
            subject: name,
            kind: Kind::Ca,
        };
        let cert = sign(profile, spki, period, &key)?;
        Ok(CertificateAuthority {
            key,
            cert,
            parents: Vec::new(),
        })
    }

    /// An intermediate CA with a new key, issued by this CA.
    pub fn new_intermediate(
        &self,
        key_type: KeyType,
        subject: &str,
        period: Period,
    ) -> Result<Self, GenError> {
        let key = NodeKey::generate(key_type).map_err(gen_err)?;
        let cert = self.issue(&key, subject, period, Kind::Ca)?;
        let mut parents = vec![self.cert_der()?];
        parents.extend(self.parents.iter().cloned());
        Ok(CertificateAuthority {
            key,
            cert: Certificate::from_der(&cert).map_err(gen_err)?,
            parents,
        })
    }

    /// Issues a node certificate for `node_key`; returns its DER.
    pub fn issue_node(
        &self,
        node_key: &NodeKey,
        subject: &str,
        period: Period,
    ) -> Result<CertificateDer<'static>, GenError> {
        self.issue(node_key, subject, period, Kind::Node)
    }

    /// Issues the encryption certificate of a 国密 node for `enc_key`, an SM2 key of its own
    /// (not the node key): keyUsage keyAgreement, keyEncipherment and dataEncipherment and no
    /// extended key usage, as FISCO BCOS's `v3enc_req` profile makes `sm_enssl.crt` and
    /// `gmennode.crt`. Returns its DER.
    pub fn issue_encryption(
        &self,
        enc_key: &NodeKey,
        subject: &str,
        period: Period,
    ) -> Result<CertificateDer<'static>, GenError> {
        if enc_key.key_type() != KeyType::Sm2 {
            return Err(GenError(format!(
                "an encryption certificate is for an SM2 key, not {}",
                enc_key.key_type().label()
            )));
        }
        self.issue(enc_key, subject, period, Kind::Encryption)
    }

    fn issue(
        &self,
        key: &NodeKey,
        subject: &str,
        period: Period,
        kind: Kind,
    ) -> Result<CertificateDer<'static>, GenError> {
        let profile = Profile {
            issuer: self.cert.tbs_certificate().subject().clone(),
            subject: Name::from_str(subject).map_err(gen_err)?,
            kind,
        };
        let cert = sign(profile, spki_of(key)?, period, &self.key)?;
        Ok(CertificateDer::from(cert.to_der().map_err(gen_err)?))
    }

    /// The node chain to write as `node.crt`: the node certificate, then this CA's certificate
    /// and its parents when this is an intermediate (as FISCO's `node.crt` carries its agency).
    pub fn node_chain(
        &self,
        node_cert: CertificateDer<'static>,
    ) -> Result<Vec<CertificateDer<'static>>, GenError> {
        let mut chain = vec![node_cert];
        if !self.parents.is_empty() {
            chain.push(self.cert_der()?);
            chain.extend(self.parents.iter().take(self.parents.len() - 1).cloned());
        }
        Ok(chain)
    }

    /// This CA's certificate.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, GenError> {
        Ok(CertificateDer::from(self.cert.to_der().map_err(gen_err)?))
    }

    /// The self-signed certificate at the top of this CA's chain (what `ca.crt` holds).
    pub fn root_der(&self) -> Result<CertificateDer<'static>, GenError> {
        match self.parents.last() {
            Some(root) => Ok(root.clone()),
            None => self.cert_der(),
        }
    }

    /// This CA's certificate as PEM.
    pub fn cert_pem(&self) -> Result<String, GenError> {
        Ok(pem_encode("CERTIFICATE", &self.cert_der()?))
    }

    /// This CA's key.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }
}

/// Certificates as PEM text, concatenated in order.
pub fn chain_pem(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem_encode("CERTIFICATE", c)).collect()
}

fn spki_of(key: &NodeKey) -> Result<SubjectPublicKeyInfoOwned, GenError> {
    let info = (schemes::of(key.key_type()).public_key_info)(key)?;
    SubjectPublicKeyInfoOwned::from_der(&info).map_err(gen_err)
}

fn sign(
    profile: Profile,
    spki: SubjectPublicKeyInfoOwned,
    period: Period,
    issuer: &NodeKey,
) -> Result<Certificate, GenError> {
    let mut rng = rand::rng();
    let serial = SerialNumber::generate(&mut rng);
    let builder =
        CertificateBuilder::new(profile, serial, period.validity()?, spki).map_err(gen_err)?;
    (schemes::of(issuer.key_type()).sign)(builder, issuer)
}

#[derive(Clone, Copy)]
enum Kind {
    Ca,
    Node,
    /// A 国密 node's encryption certificate.
    Encryption,
}

/// The extensions FISCO BCOS's certificates carry, plus key identifiers.
pub(crate) struct Profile {
    issuer: Name,
    subject: Name,
    kind: Kind,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut ext: Vec<Extension> = Vec::new();
        let ca = matches!(self.kind, Kind::Ca);
        ext.push(
            BasicConstraints {
                ca,
                path_len_constraint: None,
            }
            .to_extension(tbs.subject(), &ext)?,
        );
        let usage = match self.kind {
            Kind::Ca => KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature,
            Kind::Node => {
                KeyUsages::DigitalSignature | KeyUsages::NonRepudiation | KeyUsages::KeyEncipherment
            }
            Kind::Encryption => {
                KeyUsages::KeyAgreement | KeyUsages::KeyEncipherment | KeyUsages::DataEncipherment
            }
        };
        ext.push(KeyUsage(usage).to_extension(tbs.subject(), &ext)?);
        if matches!(self.kind, Kind::Node) {
            ext.push(
                ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH, ID_KP_CLIENT_AUTH])
                    .to_extension(tbs.subject(), &ext)?,
            );
        }
        ext.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(tbs.subject(), &ext)?);
        let issuer_ski = SubjectKeyIdentifier::try_from(issuer_spk)?;
        ext.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(issuer_ski.0),
                ..Default::default()
            }
            .to_extension(tbs.subject(), &ext)?,
        );
        Ok(ext)
    }
}

/// Why a 国密 node's encryption pair (FISCO's `sm_enssl.key` + `sm_enssl.crt`, `gmennode.key` +
/// `gmennode.crt`) is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionPairError {
    /// The encryption key is not an SM2 key.
    #[error("the encryption key is {0}, not SM2 (an encryption pair belongs to 国密 nodes)")]
    NotSm2(&'static str),
    /// The encryption certificate is missing, unreadable, or certifies no SM2 key.
    #[error("the encryption certificate is not usable: {0}")]
    BadCertificate(String),
    /// The encryption certificate certifies another key than the encryption key.
    #[error(
        "the encryption certificate does not belong to the encryption key (the certificate's key is {cert}…, the key file's {key}…)"
    )]
    KeyMismatch {
        /// The start of the NodeId (public key) in the certificate.
        cert: String,
        /// The start of the NodeId (public key) of the key file.
        key: String,
    },
    /// The encryption certificate does not chain to the trust anchors (`ca`) with the SM
    /// algorithms, or is expired or not valid yet.
    #[error("the encryption certificate is not issued by the chain CA: {0}")]
    NotIssued(String),
    /// The encryption certificate's keyUsage allows neither key agreement nor key encipherment.
    #[error(
        "the encryption certificate's keyUsage ({0}) allows neither keyAgreement nor keyEncipherment: it is a signing certificate, not an encryption one"
    )]
    Usage(String),
}

/// Checks a 国密 node's encryption pair: `key` is SM2, `chain` (the encryption certificate,
/// then any intermediates) certifies it, chains to a certificate of `ca` with the SM algorithms
/// ([`crate::crypto::SM_SUPPORTED`]) through `chain` and `intermediates` (e.g. the agency of
/// the node's signing chain, which FISCO 2.x's `gmnode.crt` carries and `gmennode.crt` does
/// not), is valid now, and its keyUsage (when present) allows keyAgreement or keyEncipherment.
/// Returns the encryption key's NodeId-shaped public key.
///
/// CA-TLS does not use the pair: RFC 8998 TLS 1.3 signs with the node key and agrees keys with
/// ephemeral curveSM2 shares. It is checked so that a FISCO node's files are known good.
pub fn check_encryption_pair(
    key: &NodeKey,
    chain: &[CertificateDer<'_>],
    ca: &[CertificateDer<'_>],
    intermediates: &[CertificateDer<'_>],
) -> Result<NodeId, EncryptionPairError> {
    use EncryptionPairError as E;
    if key.key_type() != KeyType::Sm2 {
        return Err(E::NotSm2(key.key_type().label()));
    }
    let leaf = chain
        .first()
        .ok_or_else(|| E::BadCertificate("no certificate".into()))?;
    let certified = crate::certified_key(leaf).map_err(|r| E::BadCertificate(r.to_string()))?;
    if certified.key_type() != KeyType::Sm2 {
        return Err(E::BadCertificate(format!(
            "it certifies {} key, not an SM2 one",
            certified.key_type().label()
        )));
    }
    if &certified != key.node_id() {
        return Err(E::KeyMismatch {
            cert: certified.short().to_string(),
            key: key.node_id().short().to_string(),
        });
    }
    let anchors = ca
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map_err(|e| E::NotIssued(format!("ca: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let end_entity =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| E::BadCertificate(e.to_string()))?;
    let others: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .chain(intermediates)
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    let now =
        rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(crate::error::unix_now()));
    let algorithms = crate::crypto::SM_SUPPORTED.all;
    // No extended key usage (FISCO's) passes either; one that names neither TLS role fails.
    let verified = [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ]
    .into_iter()
    .map(|usage| {
        end_entity
            .verify_for_usage(algorithms, &anchors, &others, now, usage, None, None)
            .map(drop)
    })
    .reduce(|first, second| first.or(second))
    .expect("two roles");
    verified.map_err(|e| E::NotIssued(chain_problem(e)))?;
    let cert = Certificate::from_der(leaf).map_err(|e| E::BadCertificate(e.to_string()))?;
    let usage = cert
        .tbs_certificate()
        .get_extension::<KeyUsage>()
        .map_err(|e| E::BadCertificate(format!("keyUsage: {e}")))?;
    if let Some((_, usage)) = usage
        && !usage.key_agreement()
        && !usage.key_encipherment()
    {
        return Err(E::Usage(usage_names(&usage)));
    }
    Ok(certified)
}

/// What is wrong with a chain webpki refused, in an operator's words.
fn chain_problem(e: webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            "no certificate of ca issued it (unknown issuer)".into()
        }
        webpki::Error::CertExpired { .. } => "it has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "it is not valid yet".into(),
        webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmContext(_) => {
            "it is not signed with SM2-with-SM3 (the 国密 profile's only certificate signature)"
                .into()
        }
        other => format!("chain does not verify: {other}"),
    }
}

/// The keyUsage bits of `usage`, named as OpenSSL names them.
fn usage_names(usage: &KeyUsage) -> String {
    let names: Vec<&str> = usage
        .0
        .into_iter()
        .map(|bit| match bit {
            KeyUsages::DigitalSignature => "digitalSignature",
            KeyUsages::NonRepudiation => "nonRepudiation",
            KeyUsages::KeyEncipherment => "keyEncipherment",
            KeyUsages::DataEncipherment => "dataEncipherment",
            KeyUsages::KeyAgreement => "keyAgreement",
            KeyUsages::KeyCertSign => "keyCertSign",
            KeyUsages::CRLSign => "cRLSign",
            KeyUsages::EncipherOnly => "encipherOnly",
            KeyUsages::DecipherOnly => "decipherOnly",
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm_chain() -> (CertificateAuthority, NodeKey, CertificateDer<'static>) {
        let ca = CertificateAuthority::new_root(KeyType::Sm2, "CN=ca", Period::days(1)).unwrap();
        let enc = NodeKey::generate(KeyType::Sm2).unwrap();
        let cert = ca
            .issue_encryption(&enc, "CN=node0", Period::days(1))
            .unwrap();
        (ca, enc, cert)
    }

    #[test]
    fn an_issued_encryption_pair_passes_and_names_its_key() {
        let (ca, enc, cert) = sm_chain();
        let root = ca.cert_der().unwrap();
        let parsed = Certificate::from_der(&cert).unwrap();
        let (_, usage) = parsed
            .tbs_certificate()
            .get_extension::<KeyUsage>()
            .unwrap()
            .unwrap();
        assert_eq!(
            usage_names(&usage),
            "keyEncipherment, dataEncipherment, keyAgreement"
        );
        assert!(
            parsed
                .tbs_certificate()
                .get_extension::<ExtendedKeyUsage>()
                .unwrap()
                .is_none()
        );
        let id = check_encryption_pair(&enc, &[cert], &[root], &[]).unwrap();
        assert_eq!(&id, enc.node_id());
    }

    #[test]
    fn each_problem_is_named() {
        let (ca, enc, cert) = sm_chain();
        let root = ca.cert_der().unwrap();
        let other = NodeKey::generate(KeyType::Sm2).unwrap();
        let err = check_encryption_pair(
            &other,
            std::slice::from_ref(&cert),
            std::slice::from_ref(&root),
            &[],
        );
        assert!(
            matches!(err, Err(EncryptionPairError::KeyMismatch { .. })),
            "{err:?}"
        );
        let (stranger, ..) = sm_chain();
        let err = check_encryption_pair(
            &enc,
            std::slice::from_ref(&cert),
            &[stranger.cert_der().unwrap()],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown issuer"), "{err}");
        let k1 = NodeKey::generate(KeyType::Secp256k1).unwrap();
        let err = check_encryption_pair(&k1, &[cert], &[root], &[]).unwrap_err();
        assert_eq!(err, EncryptionPairError::NotSm2("secp256k1"));
        assert!(ca.issue_encryption(&k1, "CN=x", Period::days(1)).is_err());
    }

    #[test]
    fn an_agency_in_between_is_found_in_the_intermediates() {
        let root = CertificateAuthority::new_root(KeyType::Sm2, "CN=ca", Period::days(1)).unwrap();
        let agency = root
            .new_intermediate(KeyType::Sm2, "CN=agency", Period::days(1))
            .unwrap();
        let enc = NodeKey::generate(KeyType::Sm2).unwrap();
        let cert = agency
            .issue_encryption(&enc, "CN=node0", Period::days(1))
            .unwrap();
        let anchors = [root.cert_der().unwrap()];
        let err =
            check_encryption_pair(&enc, std::slice::from_ref(&cert), &anchors, &[]).unwrap_err();
        assert!(matches!(err, EncryptionPairError::NotIssued(_)), "{err}");
        let agency_der = agency.cert_der().unwrap();
        check_encryption_pair(
            &enc,
            std::slice::from_ref(&cert),
            &anchors,
            std::slice::from_ref(&agency_der),
        )
        .unwrap();
        check_encryption_pair(&enc, &[cert, agency_der], &anchors, &[]).unwrap();
    }
}
