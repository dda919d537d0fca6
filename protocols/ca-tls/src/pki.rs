//! Making a chain CA and node certificates in pure Rust (no `openssl` at run time).
//!
//! The result has the shape FISCO BCOS's chain builders produce: a self-signed CA
//! (`CA:TRUE`), optional intermediates (FISCO's "agency"), and node certificates (`CA:FALSE`,
//! digitalSignature) for secp256k1, P-256 or RSA-2048 keys. Certificates are built with
//! RustCrypto's `x509-cert`, which, unlike rcgen, can put a secp256k1 key in a certificate; the
//! key handling of each key type (its SubjectPublicKeyInfo, signing) is in its scheme.

use std::{
    str::FromStr,
    time::{Duration, SystemTime},
};

use bcos_p2p_core::{KeyType, NodeKey, pem_encode};

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
        let usage = if ca {
            KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature
        } else {
            KeyUsages::DigitalSignature | KeyUsages::NonRepudiation | KeyUsages::KeyEncipherment
        };
        ext.push(KeyUsage(usage).to_extension(tbs.subject(), &ext)?);
        if !ca {
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
