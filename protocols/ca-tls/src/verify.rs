//! The certificate verifier both roles use: the peer's chain must lead to a certificate in
//! `ca.crt`, its leaf key must be a node key, and its NodeId must pass the access lists.
//!
//! One verifier is made per connection, so the precise [`Refusal`] can be handed back to the
//! upgrade while rustls sends the peer the closest standard TLS alert.

use std::sync::{Arc, Mutex};

use bcos_p2p_core::NodeId;
use libp2p_identity::PeerId;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use webpki::KeyUsage;

use crate::{AccessList, Refusal, Revocation, certs::certified_key, error::unix_now};

/// What the verifier learnt about one handshake.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub refusal: Option<(Refusal, Option<NodeId>)>,
    /// The identity in a certificate whose chain is valid, before the peer proved it holds the key.
    pub claimed: Option<(PeerId, NodeId)>,
    /// The identity once proven (handshake signature verified) and admitted by the access lists.
    pub peer: Option<(PeerId, NodeId)>,
    /// The chain the peer presented (leaf first), once it verified: kept per peer so that a
    /// CRL loaded later can be checked against open sessions.
    pub chain: Vec<CertificateDer<'static>>,
}

pub(crate) type SharedOutcome = Arc<Mutex<Outcome>>;

#[derive(Debug)]
pub(crate) struct PeerVerifier {
    pub anchors: Arc<Vec<TrustAnchor<'static>>>,
    pub access: AccessList,
    pub revocation: Revocation,
    /// The signature algorithms of this node's profile (standard or 国密).
    pub algorithms: &'static WebPkiSupportedAlgorithms,
    pub outcome: SharedOutcome,
}

impl PeerVerifier {
    fn record(&self, f: impl FnOnce(&mut Outcome)) {
        let mut o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut o);
    }

    fn refuse(&self, refusal: Refusal, node: Option<NodeId>) -> rustls::Error {
        let alert = match &refusal {
            Refusal::UnknownIssuer => CertificateError::UnknownIssuer,
            Refusal::Expired { .. } => CertificateError::Expired,
            Refusal::NotYetValid { .. } => CertificateError::NotValidYet,
            Refusal::KeyMismatch => CertificateError::BadSignature,
            Refusal::Revoked => CertificateError::Revoked,
            Refusal::Denied | Refusal::NotAllowed => {
                CertificateError::ApplicationVerificationFailure
            }
            _ => CertificateError::BadEncoding,
        };
        tracing::debug!(%refusal, node = node.as_ref().map(|n| n.short()), "refusing peer certificate");
        self.record(|o| o.refusal = Some((refusal, node)));
        rustls::Error::InvalidCertificate(alert)
    }

    /// Checks the peer's chain. The NodeId is not trusted yet (certificates are public: anyone can
    /// replay one), so refusals here name no node and the access lists wait for the signature.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<(), rustls::Error> {
        let node_id = match certified_key(end_entity) {
            Ok(k) => k,
            Err(refusal) => return Err(self.refuse(refusal, None)),
        };
        let cert = match webpki::EndEntityCert::try_from(end_entity) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(Refusal::BadCertificate(e.to_string()), None)),
        };
        let checked = self.revocation.with_options(|revocation| {
            cert.verify_for_usage(
                self.algorithms.all,
                &self.anchors,
                intermediates,
                now,
                usage,
                revocation,
                None,
            )
            .map(|path| {
                // The path as verified (bounded by webpki's depth limit), not whatever else the
                // peer sent: what a later CRL is checked against.
                let mut chain = vec![end_entity.clone().into_owned()];
                chain.extend(
                    path.intermediate_certificates()
                        .map(|c| c.der().into_owned()),
                );
                chain
            })
        });
        let chain = match checked {
            Ok(chain) => chain,
            Err(e) => return Err(self.refuse(chain_refusal(e), None)),
        };
        self.record(|o| {
            o.claimed = Some((node_id.to_peer_id(), node_id));
            o.chain = chain;
        });
        Ok(())
    }

    /// Checks that the peer signed the handshake with its certificate's key; only then is its
    /// NodeId proven, and only then are the access lists consulted (so they cannot be probed
    /// with replayed certificates).
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let claimed = {
            let o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            o.claimed.clone()
        };
        let Some((peer_id, node_id)) = claimed else {
            let refusal =
                Refusal::Handshake("handshake signature before a verified certificate".into());
            return Err(self.refuse(refusal, None));
        };
        if let Err(e) = rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms)
        {
            let refusal = match e {
                rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
                    Refusal::KeyMismatch
                }
                other => Refusal::Handshake(format!("handshake signature: {other}")),
            };
            return Err(self.refuse(refusal, Some(node_id)));
        }
        if let Err(refusal) = self.access.check(&node_id) {
            return Err(self.refuse(refusal, Some(node_id)));
        }
        self.record(|o| o.peer = Some((peer_id, node_id)));
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, KeyUsage::server_auth())
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, KeyUsage::client_auth())
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks a local chain the way a peer will, to warn at start-up about certificates that every
/// peer would refuse (expired, or issued by another CA).
pub(crate) fn self_check(
    chain: &[CertificateDer<'static>],
    anchors: &[TrustAnchor<'static>],
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), Refusal> {
    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| Refusal::BadCertificate(e.to_string()))?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_now()));
    // A node is a TLS server when dialled and a client when dialling: check both roles.
    for usage in [KeyUsage::server_auth(), KeyUsage::client_auth()] {
        leaf.verify_for_usage(algorithms.all, anchors, &chain[1..], now, usage, None, None)
            .map_err(chain_refusal)?;
    }
    Ok(())
}

/// Checks another node's chain (leaf first) as a handshake would, in either role and against
/// the CRLs in force, and returns its NodeId: how flood tells the origins of messages that are
/// members (their chains lead to a trust anchor) from any holder of a key.
pub(crate) fn check_member(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'static>],
    revocation: &Revocation,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<NodeId, Refusal> {
    let leaf = chain
        .first()
        .ok_or_else(|| Refusal::BadCertificate("empty certificate chain".into()))?;
    let node_id = certified_key(leaf)?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| Refusal::BadCertificate(e.to_string()))?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_now()));
    let mut last = None;
    for usage in [KeyUsage::server_auth(), KeyUsage::client_auth()] {
        let checked = revocation.with_options(|revocation| {
            cert.verify_for_usage(
                algorithms.all,
                anchors,
                &chain[1..],
                now,
                usage,
                revocation,
                None,
            )
            .map(|_| ())
        });
        match checked {
            Ok(()) => return Ok(node_id),
            // Revoked in either role is revoked: the other role's error (a certificate for
            // one usage only fails the other's EKU check, which webpki makes first) must not
            // hide it.
            Err(e @ webpki::Error::CertRevoked) => return Err(chain_refusal(e)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Refusal::UnknownIssuer, chain_refusal))
}

/// The algorithms of the profile of a chain's leaf key (standard when the leaf is unreadable:
/// then the check fails anyway).
pub(crate) fn profile_of(chain: &[CertificateDer<'_>]) -> &'static WebPkiSupportedAlgorithms {
    chain
        .first()
        .and_then(|leaf| certified_key(leaf).ok())
        .map_or(&crate::crypto::SUPPORTED, |node| {
            crate::crypto::algorithms(node.key_type())
        })
}

/// The refusal for a chain that webpki rejects.
fn chain_refusal(e: webpki::Error) -> Refusal {
    match e {
        // A chain whose issuer *name* matches a trusted CA but whose signature does not verify
        // was issued by another CA of the same name (FISCO BCOS chains all name theirs alike).
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            Refusal::UnknownIssuer
        }
        webpki::Error::CertRevoked => Refusal::Revoked,
        webpki::Error::CertExpired { time, not_after } => Refusal::Expired {
            not_after: not_after.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::CertNotValidYet { time, not_before } => Refusal::NotYetValid {
            not_before: not_before.as_secs(),
            now: time.as_secs(),
        },
        other => Refusal::BadCertificate(format!("chain does not verify: {other}")),
    }
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not offered: nodes speak TLS 1.3 only".into())
}
