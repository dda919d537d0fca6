//! Certificate revocation lists: a CA (or an agency) withdraws certificates it issued before
//! they expire, as `openssl ca -revoke` / `openssl ca -gencrl` record them.
//!
//! A [`Revocation`] handle holds the node's current CRLs and is shared by every clone of the
//! [`crate::Config`]: each handshake and each [`crate::Config::check_chain`] consults the CRLs
//! at every level of the peer's chain (webpki's `RevocationCheckDepth::Chain`); a certificate
//! whose issuer has no CRL is accepted (unknown status allowed). CRLs are checked when they are
//! set, so a handshake never meets a CRL that does not verify: each must be signed by a
//! certificate of `ca.crt` or of this node's own chain (its agency), and that certificate, when
//! it has a key usage extension, must allow CRL signing. The set can be replaced at run time
//! ([`Revocation::replace`]); the handle also remembers each authenticated peer's chain, so that
//! the connection manager can tell which open sessions a new CRL revokes
//! ([`Revocation::is_revoked`]).

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use der::{
    Decode as _, Encode as _, Reader as _, SliceReader,
    asn1::{AnyRef, BitString},
    oid::AssociatedOid as _,
};
use libp2p_identity::PeerId;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, pem::PemObject};
use spki::AlgorithmIdentifierOwned;
use webpki::{
    CertRevocationList, OwnedCertRevocationList, RevocationCheckDepth, RevocationOptions,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

use bcos_p2p_core::pinned::PinnedMap;

use crate::{
    ConfigError, Refusal,
    crypto::{SM_SUPPORTED, SUPPORTED},
    verify,
};

/// Most peer chains remembered; beyond it the chains of peers with no connection up are forgotten. Entries come only
/// from completed handshakes of members (chains from the CA, one entry per identity, replaced
/// at each handshake) and those of peers no longer connected are dropped at each check of the
/// open sessions ([`Revocation::retain`]).
const CHAINS_CAPACITY: usize = 4096;

/// One parsed certificate revocation list.
#[derive(Debug, Clone)]
pub struct Crl {
    der: Arc<[u8]>,
    list: Arc<CertRevocationList<'static>>,
}

impl Crl {
    /// Parses one DER-encoded CRL (v2, with a nextUpdate, as `openssl ca -gencrl` writes when
    /// its configuration has a `crlnumber` file; webpki takes no v1 or delta CRLs).
    pub fn from_der(der: &[u8]) -> Result<Crl, String> {
        let list = OwnedCertRevocationList::from_der(der).map_err(|e| format!("{e}"))?;
        Ok(Crl {
            der: der.into(),
            list: Arc::new(list.into()),
        })
    }

    /// Parses CRL file contents: PEM (`-----BEGIN X509 CRL-----`, one or more; other PEM
    /// sections are skipped) or one DER CRL.
    pub fn parse(data: &[u8]) -> Result<Vec<Crl>, String> {
        if data.windows(11).any(|w| w == b"-----BEGIN ") {
            let ders = CertificateRevocationListDer::pem_slice_iter(data)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("PEM: {e}"))?;
            if ders.is_empty() {
                return Err("no X509 CRL in the PEM text".into());
            }
            ders.iter().map(|d| Crl::from_der(d)).collect()
        } else {
            Ok(vec![Crl::from_der(data)?])
        }
    }

    /// Reads a CRL file (PEM or DER); see [`Crl::parse`].
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<Crl>, ConfigError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Crl::parse(&data).map_err(|reason| ConfigError::BadCertificate {
            what: format!("CRL {}", path.display()),
            reason,
        })
    }

    /// The issuer's name, DER (the contents of the Name SEQUENCE).
    fn issuer(&self) -> &[u8] {
        self.list.issuer()
    }
}

/// The shared CRL set of a [`crate::Config`], and the chains of authenticated peers.
#[derive(Debug, Clone)]
pub struct Revocation {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    /// What may sign a CRL: `ca.crt` and the intermediates of this node's own chain.
    issuers: Vec<CertificateDer<'static>>,
    crls: RwLock<Arc<Vec<Crl>>>,
    /// The chain each peer authenticated with; connected peers' are pinned
    /// ([`Revocation::pin`]) and never forgotten to make room.
    chains: Mutex<PinnedMap<PeerId, Arc<Vec<CertificateDer<'static>>>>>,
}

impl Revocation {
    pub(crate) fn new(
        anchors: Arc<Vec<TrustAnchor<'static>>>,
        issuers: Vec<CertificateDer<'static>>,
    ) -> Self {
        Revocation {
            inner: Arc::new(Inner {
                anchors,
                issuers,
                crls: RwLock::new(Arc::new(Vec::new())),
                chains: Mutex::new(PinnedMap::new(CHAINS_CAPACITY)),
            }),
        }
    }

    /// Checks CRLs without applying them: each must be signed by a certificate of `ca.crt` or
    /// of this node's chain that may sign CRLs, and no two may come from the same issuer.
    pub fn check(&self, crls: &[Crl]) -> Result<(), ConfigError> {
        let mut seen: Vec<&[u8]> = Vec::new();
        for (i, crl) in crls.iter().enumerate() {
            let bad = |reason: String| ConfigError::BadCertificate {
                what: format!("CRL #{}", i + 1),
                reason,
            };
            if seen.contains(&crl.issuer()) {
                return Err(bad("a second CRL from the same issuer".into()));
            }
            seen.push(crl.issuer());
            verify_crl(crl, &self.inner.issuers).map_err(bad)?;
        }
        Ok(())
    }

    /// Replaces the CRL set after [`Revocation::check`]ing it (all or nothing). Later handshakes
    /// use the new set; closing the sessions it revokes is the connection manager's job.
    pub fn replace(&self, crls: Vec<Crl>) -> Result<(), ConfigError> {
        self.check(&crls)?;
        *self.inner.crls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(crls);
        Ok(())
    }

    /// The CRLs in force.
    pub fn crls(&self) -> Vec<Crl> {
        self.snapshot().as_ref().clone()
    }

    pub(crate) fn snapshot(&self) -> Arc<Vec<Crl>> {
        self.inner
            .crls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Remembers the chain an authenticated peer presented. When the table is full, the chain
    /// of a peer with no connection up makes room (never a pinned one: a flood of handshakes
    /// with fresh certificates cannot make a connected peer's chain unknown, and so immune to
    /// a later CRL; pins are bounded by the connections a node holds).
    pub(crate) fn record(&self, peer: PeerId, chain: Vec<CertificateDer<'static>>) {
        self.chains().insert(peer, Arc::new(chain));
    }

    /// A connection to `peer` is up: its chain is kept until [`Revocation::unpin`].
    pub fn pin(&self, peer: &PeerId) {
        self.chains().pin(peer);
    }

    /// A connection to `peer` closed.
    pub fn unpin(&self, peer: &PeerId) {
        self.chains().unpin(peer);
    }

    /// Keeps the chains of the peers `keep` names (the connected ones) and of pinned peers,
    /// and forgets the others.
    pub fn retain(&self, keep: impl FnMut(&PeerId) -> bool) {
        self.chains().retain(keep);
    }

    fn chains(
        &self,
    ) -> std::sync::MutexGuard<'_, PinnedMap<PeerId, Arc<Vec<CertificateDer<'static>>>>> {
        self.inner.chains.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the chain `peer` last authenticated with is revoked by the CRLs in force
    /// (`false` for a peer whose chain is not known).
    pub fn is_revoked(&self, peer: &PeerId) -> bool {
        if self.snapshot().is_empty() {
            return false;
        }
        let chain = self.chains().get(peer).cloned();
        chain.is_some_and(|c| {
            matches!(
                verify::check_member(&c, &self.inner.anchors, self, verify::profile_of(&c)),
                Err(Refusal::Revoked)
            )
        })
    }

    /// Runs `f` with the webpki revocation options of the CRLs in force (`None` without CRLs).
    pub(crate) fn with_options<T>(&self, f: impl FnOnce(Option<RevocationOptions<'_>>) -> T) -> T {
        let crls = self.snapshot();
        let refs: Vec<&CertRevocationList<'static>> = crls.iter().map(|c| &*c.list).collect();
        match RevocationOptionsBuilder::new(&refs) {
            Ok(builder) => f(Some(
                builder
                    .with_depth(RevocationCheckDepth::Chain)
                    .with_status_policy(UnknownStatusPolicy::Allow)
                    .build(),
            )),
            Err(_) => f(None),
        }
    }
}

/// The contents (without tag and length) of one DER TLV.
fn contents(tlv: &[u8]) -> Result<&[u8], der::Error> {
    let mut r = SliceReader::new(tlv)?;
    let any: AnyRef<'_> = r.decode()?;
    Ok(any.value())
}

/// Checks a CRL's signature against the issuers whose subject is its issuer.
fn verify_crl(crl: &Crl, issuers: &[CertificateDer<'static>]) -> Result<(), String> {
    let malformed = |e: der::Error| format!("malformed CRL: {e}");
    let outer = contents(&crl.der).map_err(malformed)?;
    let mut r = SliceReader::new(outer).map_err(malformed)?;
    let tbs: AnyRef<'_> = r.decode().map_err(malformed)?;
    let tbs = tbs.to_der().map_err(malformed)?;
    let alg: AlgorithmIdentifierOwned = r.decode().map_err(malformed)?;
    let signature: BitString = r.decode().map_err(malformed)?;
    let signature = signature
        .as_bytes()
        .ok_or("malformed CRL: signature is not whole bytes")?;
    let alg = alg.to_der().map_err(malformed)?;
    let alg = contents(&alg).map_err(malformed)?;
    let mut named = false;
    for issuer in issuers {
        let Ok(cert) = x509_cert::Certificate::from_der(issuer) else {
            continue;
        };
        let tbs_cert = cert.tbs_certificate();
        let Ok(subject) = tbs_cert.subject().to_der() else {
            continue;
        };
        if contents(&subject).ok() != Some(crl.issuer()) {
            continue;
        }
        named = true;
        let spki = tbs_cert.subject_public_key_info();
        let (Ok(key_alg), Some(key)) =
            (spki.algorithm.to_der(), spki.subject_public_key.as_bytes())
        else {
            continue;
        };
        let Ok(key_alg) = contents(&key_alg) else {
            continue;
        };
        // Either profile's algorithms: the CRL's issuer (a CA of ours) says which applies.
        let verified = SUPPORTED.all.iter().chain(SM_SUPPORTED.all).any(|a| {
            a.public_key_alg_id().as_ref() == key_alg
                && a.signature_alg_id().as_ref() == alg
                && a.verify_signature(key, &tbs, signature).is_ok()
        });
        if !verified {
            continue;
        }
        let may_sign = tbs_cert.extensions().is_none_or(|exts| {
            exts.iter()
                .filter(|e| e.extn_id == x509_cert::ext::pkix::KeyUsage::OID)
                .all(|e| {
                    x509_cert::ext::pkix::KeyUsage::from_der(e.extn_value.as_bytes())
                        .is_ok_and(|ku| ku.crl_sign())
                })
        });
        if !may_sign {
            return Err("its issuer's key usage does not allow CRL signing (cRLSign)".into());
        }
        return Ok(());
    }
    Err(if named {
        "its signature does not verify with the key of the certificate named as its issuer".into()
    } else {
        "its issuer is not a certificate of ca.crt nor of this node's chain".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_peers_chains_survive_a_full_table() {
        let revocation = Revocation::new(Arc::new(Vec::new()), Vec::new());
        let chain = || vec![CertificateDer::from(vec![0x30, 0x00])];
        let pinned: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
        for p in &pinned {
            revocation.record(*p, chain());
            revocation.pin(p);
        }
        for _ in 0..CHAINS_CAPACITY + 500 {
            revocation.record(PeerId::random(), chain());
        }
        let map = revocation.inner.chains.lock().unwrap();
        assert_eq!(map.len(), CHAINS_CAPACITY);
        assert!(pinned.iter().all(|p| map.contains_key(p)));
        drop(map);
        // Pinned chains outlive a retain that does not name them; unpinned ones do not.
        revocation.unpin(&pinned[0]);
        revocation.retain(|_| false);
        let map = revocation.inner.chains.lock().unwrap();
        assert_eq!(map.len(), pinned.len() - 1);
        assert!(!map.contains_key(&pinned[0]));
    }
}
