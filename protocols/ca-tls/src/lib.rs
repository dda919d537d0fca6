//! CA-validated mutual TLS 1.3 as a libp2p security upgrade (`/bcos-tls/1.0.0`).
//!
//! Stock libp2p TLS (`/tls/1.0.0`) accepts any self-signed certificate and trusts the libp2p key
//! inside it. A consortium chain instead admits only nodes whose certificate a chain CA issued,
//! as FISCO BCOS does: both sides present `node.crt` (with any intermediates), both verify the
//! other's chain against `ca.crt`, and the peer's NodeId is the public key of its certificate.
//! That same key is the node's libp2p identity, so the `PeerId` this upgrade yields is the
//! peer's real identity, and deny/allow lists by NodeId are enforced before any protocol runs.
//! Certificate revocation lists ([`Crl`], replaceable at run time through [`Revocation`]) apply
//! at every level of the chain.
//!
//! Node keys may be secp256k1 (FISCO's default; see [`crypto`] for how it enters TLS 1.3),
//! ECDSA P-256 or RSA (2048 bits or more); what differs per key type is in one module per
//! signature scheme (`schemes/`).
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use bcos_p2p_ca_tls::Config;
//! let (key, tls) = Config::load("node.key", "node.crt", "ca.crt")?;
//! // In a libp2p SwarmBuilder: .with_tcp(tcp_config, |kp: &_| tls.for_keypair(kp), yamux_config)
//! assert_eq!(tls.local_node_id(), key.node_id());
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod certs;
mod coalesce;
mod crl;
pub mod crypto;
mod error;
pub mod pki;
mod readbuf;
mod schemes;
pub mod sm;
mod verify;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use access::AccessList;
use bcos_p2p_core::{NodeId, NodeIdBook, NodeKey, RouteLink};
pub use certs::{certified_key, parse_pem_certs, read_pem_certs};
pub use coalesce::Coalesced;
pub use crl::{Crl, Revocation};
pub use error::{ConfigError, Refusal, UpgradeError};
use futures::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, FutureExt,
    future::{BoxFuture, Either},
};
use futures_rustls::TlsStream;
pub use readbuf::ReadBuffer;

use libp2p_core::{
    UpgradeInfo,
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
};
use libp2p_identity::{Keypair, PeerId};
use rustls::{
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{ServerName, TrustAnchor},
    sign::{CertifiedKey, SingleCertAndKey},
};
pub use rustls_pki_types::CertificateDer;
use verify::{Outcome, PeerVerifier, SharedOutcome};

/// The protocol id of CA-authenticated TLS.
pub const PROTOCOL_NAME: &str = "/bcos-tls/1.0.0";
/// Stock libp2p TLS. Listed only so that a stock (open-mode) peer is refused with a clear reason
/// ([`Refusal::StockLibp2pTls`]) instead of an opaque negotiation failure. When dialling, libp2p
/// selects the last offered protocol without waiting for the listener's confirmation, so any
/// listener that declines `/bcos-tls/1.0.0` ends up here too. Either way the peer is sent a
/// fatal TLS `insufficient_security` alert, so it learns why as well (SPEC.md §1).
pub const STOCK_TLS_PROTOCOL: &str = "/tls/1.0.0";
/// The protocol id of CA-authenticated TLS in the 国密 profile (SM2 node keys; RFC 8998's
/// TLS_SM4_GCM_SM3, curveSM2 and sm2sig_sm3 only). Every CA node lists both ids, its own first:
/// a node negotiated onto the other profile's id refuses with the `insufficient_security` alert,
/// and each side reports [`Refusal::SmRequired`] or [`Refusal::SmUnsupported`] (SPEC.md §9).
pub const SM_PROTOCOL_NAME: &str = "/bcos-tls-sm/1.0.0";

/// The CA-TLS security upgrade: a node's certificate chain, key and trust anchors.
///
/// Cheap to clone; clones share the access lists, the CRLs ([`Revocation`]) and the
/// [`NodeIdBook`].
#[derive(Clone)]
pub struct Config {
    shared: Arc<Shared>,
    handshake_timeout: Duration,
}

/// Default limit on a whole handshake (TLS plus the verdict byte).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent by the accepting side once it has verified the dialler's certificate. In TLS 1.3 the
/// client finishes its handshake before the server has checked the client certificate; without
/// this byte a refused dialler would believe it is connected until its first read.
const VERDICT_ACCEPTED: u8 = 0x01;

struct Shared {
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    local_node_id: NodeId,
    local_peer_id: PeerId,
    access: AccessList,
    revocation: Revocation,
    book: NodeIdBook,
    route_link: RouteLink,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("local_node_id", &self.shared.local_node_id)
            .field("trust_anchors", &self.shared.anchors.len())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `node.key`, `node.crt` (leaf first, then any intermediates) and `ca.crt` (one or more
    /// trust anchors), and checks that the certificate belongs to the key.
    pub fn load(
        key: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<(NodeKey, Config), ConfigError> {
        let node_key = NodeKey::from_file(key)?;
        let chain = read_pem_certs(cert)?;
        let anchors = read_pem_certs(ca)?;
        let config = Config::new(&node_key, chain, anchors)?;
        Ok((node_key, config))
    }

    /// Builds a configuration from parsed material. `chain` is the local certificate chain, leaf
    /// first; `ca` the trust anchors.
    pub fn new(
        key: &NodeKey,
        chain: Vec<CertificateDer<'static>>,
        ca: Vec<CertificateDer<'static>>,
    ) -> Result<Config, ConfigError> {
        let leaf = chain
            .first()
            .ok_or_else(|| ConfigError::NoCertificate("node certificate chain".into()))?;
        let cert_node_id = certified_key(leaf).map_err(|r| ConfigError::BadCertificate {
            what: "node.crt".into(),
            reason: r.to_string(),
        })?;
        if &cert_node_id != key.node_id() {
            return Err(ConfigError::KeyMismatch {
                cert: cert_node_id.to_string(),
                key: key.node_id().to_string(),
            });
        }
        let anchors = ca
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| ConfigError::BadCertificate {
                        what: "ca.crt".into(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(ConfigError::NoCertificate("ca.crt".into()));
        }
        if let Err(refusal) =
            verify::self_check(&chain, &anchors, crypto::algorithms(key.key_type()))
        {
            tracing::warn!(%refusal, "peers will refuse this node's own certificate chain");
        }

        // An SM2 node speaks the 国密 profile only (RFC 8998), every other node the standard
        // suites only: the two never share a handshake (see `protocol_info`).
        let provider = Arc::new(if schemes::is_sm(key.key_type()) {
            sm::provider()
        } else {
            rustls::crypto::ring::default_provider()
        });
        let signing_key = (schemes::of(key.key_type()).signing_key)(key, &provider)?;
        // What may sign a CRL: the trust anchors and this node's own intermediates (its agency).
        let issuers = ca.iter().chain(&chain[1..]).cloned().collect();
        let anchors = Arc::new(anchors);
        let revocation = Revocation::new(anchors.clone(), issuers);
        let certified = Arc::new(CertifiedKey::new(chain, signing_key));
        Ok(Config {
            shared: Arc::new(Shared {
                provider,
                certified,
                anchors,
                local_node_id: key.node_id().clone(),
                local_peer_id: key.peer_id(),
                access: AccessList::default(),
                revocation,
                book: NodeIdBook::default(),
                route_link: RouteLink::default(),
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Sets the limit on the TLS handshake and verdict; a peer slower than this is refused.
    /// (libp2p's own connection timeout, which also covers TCP, negotiation and the muxer, must
    /// be longer: `bcos_p2p::behaviour::build_swarm` sets it from this value.)
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Config {
        self.handshake_timeout = timeout;
        self
    }

    /// The limit on the TLS handshake and verdict.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// This upgrade, checked against the swarm's identity keypair: the security closure for
    /// `SwarmBuilder::with_tcp`.
    pub fn for_keypair(&self, keypair: &Keypair) -> Result<Config, ConfigError> {
        let swarm_id = keypair.public().to_peer_id();
        let key = NodeId::from_public_key(&keypair.public())
            .map(|n| n.to_string())
            .unwrap_or_else(|_| swarm_id.to_string());
        self.for_peer_id(swarm_id, key)
    }

    /// This upgrade, checked against the node key the swarm is built with (its PeerId must be
    /// the certificate's): what a swarm of a key type without a libp2p keypair (SM2) uses.
    pub fn for_node_key(&self, key: &NodeKey) -> Result<Config, ConfigError> {
        self.for_peer_id(key.peer_id(), key.node_id().to_string())
    }

    fn for_peer_id(&self, swarm_id: PeerId, key: String) -> Result<Config, ConfigError> {
        if swarm_id != self.shared.local_peer_id {
            return Err(ConfigError::KeyMismatch {
                cert: self.shared.local_node_id.to_string(),
                key,
            });
        }
        Ok(self.clone())
    }

    /// The NodeId in the local certificate.
    pub fn local_node_id(&self) -> &NodeId {
        &self.shared.local_node_id
    }

    /// The deny/allow lists enforced in every handshake (shared with all clones).
    pub fn access_list(&self) -> &AccessList {
        &self.shared.access
    }

    /// The CRLs enforced in every handshake and chain check (shared with all clones).
    pub fn revocation(&self) -> &Revocation {
        &self.shared.revocation
    }

    /// Checks and puts in force `crls` (replacing any before): see [`Revocation::replace`].
    pub fn set_crls(&self, crls: Vec<Crl>) -> Result<(), ConfigError> {
        self.shared.revocation.replace(crls)
    }

    /// PeerId → NodeId of every authenticated peer.
    pub fn node_ids(&self) -> &NodeIdBook {
        &self.shared.book
    }

    /// Where the routed transport of a swarm built with this config meets the route behaviour
    /// of a behaviour built with it (shared with all clones).
    pub fn route_link(&self) -> &RouteLink {
        &self.shared.route_link
    }

    /// The local certificate chain, leaf first, as handshakes present it.
    pub fn local_chain(&self) -> &[CertificateDer<'static>] {
        &self.shared.certified.cert
    }

    /// Checks another node's certificate chain (leaf first) as a handshake would, in either
    /// role, against the trust anchors and the CRLs in force, at the current time: its NodeId
    /// if the chain passes. The access lists are not consulted (they are the caller's to apply).
    pub fn check_chain(&self, chain: &[CertificateDer<'_>]) -> Result<NodeId, Refusal> {
        verify::check_member(
            chain,
            &self.shared.anchors,
            &self.shared.revocation,
            self.algorithms(),
        )
    }

    fn verifier(&self) -> (Arc<PeerVerifier>, SharedOutcome) {
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let v = Arc::new(PeerVerifier {
            anchors: self.shared.anchors.clone(),
            access: self.shared.access.clone(),
            revocation: self.shared.revocation.clone(),
            algorithms: self.algorithms(),
            outcome: outcome.clone(),
        });
        (v, outcome)
    }

    fn server_config(&self) -> Result<(rustls::ServerConfig, SharedOutcome), rustls::Error> {
        let (verifier, outcome) = self.verifier();
        let config = rustls::ServerConfig::builder_with_provider(self.shared.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(
                self.shared.certified.clone(),
            )));
        Ok((config, outcome))
    }

    fn client_config(&self) -> Result<(rustls::ClientConfig, SharedOutcome), rustls::Error> {
        let (verifier, outcome) = self.verifier();
        let mut config = rustls::ClientConfig::builder_with_provider(self.shared.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                self.shared.certified.clone(),
            )));
        config.resumption = rustls::client::Resumption::disabled();
        Ok((config, outcome))
    }

    /// Turns the handshake result into the upgrade's output or a typed refusal.
    fn finish<C>(
        &self,
        result: std::io::Result<TlsStream<C>>,
        outcome: &SharedOutcome,
    ) -> Result<(PeerId, NodeId, TlsStream<C>), UpgradeError> {
        let mut o = outcome.lock().unwrap_or_else(|p| p.into_inner());
        let chain = std::mem::take(&mut o.chain);
        let stream = match result {
            Ok(s) => s,
            Err(io) => {
                if let Some((refusal, node)) = o.refusal.take() {
                    return Err(UpgradeError::new(refusal, node));
                }
                let refusal = match io_refusal(&io) {
                    // On our own profile's id, only a node that lists it to refuse us sends
                    // this alert: a node of the other profile (see `alert_refusal`).
                    Refusal::RejectedByPeer(alert) if alert == INSUFFICIENT_SECURITY => {
                        self.profile_refusal()
                    }
                    other => other,
                };
                return Err(UpgradeError::new(refusal, o.peer.take().map(|(_, n)| n)));
            }
        };
        let (peer_id, node_id) = o.peer.take().ok_or_else(|| {
            UpgradeError::new(
                Refusal::Handshake("peer presented no certificate".into()),
                None,
            )
        })?;
        self.shared.revocation.record(peer_id, chain);
        Ok((peer_id, node_id, stream))
    }

    /// Runs `handshake` under the handshake timeout and records the peer on success.
    async fn timed<C, F>(
        &self,
        handshake: F,
    ) -> Result<(PeerId, Coalesced<TlsStream<ReadBuffer<C>>>), UpgradeError>
    where
        F: std::future::Future<
                Output = Result<(PeerId, NodeId, TlsStream<ReadBuffer<C>>), UpgradeError>,
            >,
    {
        let timer = futures_timer::Delay::new(self.handshake_timeout);
        futures::pin_mut!(handshake);
        match futures::future::select(handshake, timer).await {
            Either::Left((Ok((peer_id, node_id, mut stream)), _)) => {
                tracing::debug!(peer = %node_id.short(), "CA-TLS handshake complete");
                self.shared.book.insert(peer_id, node_id);
                // Only now: handshake records and alerts went out unbuffered, and a connection
                // that never completes its handshake never gets a read buffer.
                stream.get_mut().0.enable();
                Ok((peer_id, Coalesced::new(stream)))
            }
            Either::Left((Err(e), _)) => Err(e),
            Either::Right(_) => Err(UpgradeError::new(
                Refusal::Handshake(format!("timed out after {:?}", self.handshake_timeout)),
                None,
            )),
        }
    }
}

/// The refusal for a failed handshake I/O: the peer's alert when it sent one.
fn io_refusal(io: &std::io::Error) -> Refusal {
    match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => Refusal::RejectedByPeer(format!("{alert:?}")),
        Some(other) => Refusal::Handshake(other.to_string()),
        None => Refusal::Handshake(io.to_string()),
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::array::IntoIter<&'static str, 3>;

    fn protocol_info(&self) -> Self::InfoIter {
        [
            self.own_protocol(),
            self.other_protocol(),
            STOCK_TLS_PROTOCOL,
        ]
        .into_iter()
    }
}

impl Config {
    /// The protocol id of this node's profile.
    fn own_protocol(&self) -> &'static str {
        if self.is_sm() {
            SM_PROTOCOL_NAME
        } else {
            PROTOCOL_NAME
        }
    }

    /// The other profile's id, listed only to refuse its nodes with a clear reason.
    fn other_protocol(&self) -> &'static str {
        if self.is_sm() {
            PROTOCOL_NAME
        } else {
            SM_PROTOCOL_NAME
        }
    }

    /// Why a node of the other profile is refused, as this node says it.
    fn profile_refusal(&self) -> Refusal {
        if self.is_sm() {
            Refusal::SmRequired
        } else {
            Refusal::SmUnsupported
        }
    }

    /// Whether `info` is a protocol this node only lists to refuse, and with what reason.
    fn refused_protocol(&self, info: &str) -> Option<Refusal> {
        if info == STOCK_TLS_PROTOCOL {
            Some(Refusal::StockLibp2pTls)
        } else if info == self.other_protocol() {
            Some(self.profile_refusal())
        } else {
            None
        }
    }

    /// Whether the shared config's profile is 国密 (an SM2 node key).
    pub fn is_sm(&self) -> bool {
        schemes::is_sm(self.shared.local_node_id.key_type())
    }

    /// The signature algorithms of this node's profile.
    fn algorithms(&self) -> &'static WebPkiSupportedAlgorithms {
        crypto::algorithms(self.shared.local_node_id.key_type())
    }
}

/// How [`io_refusal`] names a received `insufficient_security` alert.
const INSUFFICIENT_SECURITY: &str = "InsufficientSecurity";

/// A TLS record holding a fatal `insufficient_security` alert (content type 21, legacy version
/// 3.3, length 2, level fatal, description 71): our answer to a peer on stock `/tls/1.0.0`.
const INSUFFICIENT_SECURITY_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 71];
/// How long a refused stock peer gets to read the alert and close its side.
const STOCK_GOODBYE: Duration = Duration::from_secs(2);
/// Most bytes read from a refused stock peer while waiting for it to close.
const STOCK_DRAIN_LIMIT: usize = 64 * 1024;

/// Refuses a peer on a protocol listed only to refuse it (stock `/tls/1.0.0`, or the other CA
/// profile's id). It is told why with a fatal `insufficient_security` alert, which a TLS stack
/// reports as "received fatal alert: InsufficientSecurity" (open-mode nodes turn it into
/// [`Refusal::CaTlsRequired`], CA nodes of the other profile into [`Refusal::SmRequired`] or
/// [`Refusal::SmUnsupported`]). Then its bytes are drained until it closes (bounded in time and
/// size), so our close does not reset the connection before it has read the alert.
fn alert_refusal<C, T>(
    mut socket: C,
    limit: Duration,
    refusal: Refusal,
) -> BoxFuture<'static, Result<T, UpgradeError>>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T: Send + 'static,
{
    async move {
        let goodbye = async {
            socket.write_all(&INSUFFICIENT_SECURITY_ALERT).await?;
            socket.flush().await?;
            let mut buf = [0u8; 1024];
            let mut drained = 0;
            while drained < STOCK_DRAIN_LIMIT {
                match socket.read(&mut buf).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            socket.close().await
        };
        futures::pin_mut!(goodbye);
        let timer = futures_timer::Delay::new(limit.min(STOCK_GOODBYE));
        if let Either::Left((Err(e), _)) = futures::future::select(goodbye, timer).await {
            tracing::debug!(error = %e, "refused peer gone before the refusal was sent");
        }
        Err(UpgradeError::new(refusal, None))
    }
    .boxed()
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Coalesced<TlsStream<ReadBuffer<C>>>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, info: Self::Info) -> Self::Future {
        if let Some(refusal) = self.refused_protocol(info) {
            return alert_refusal(socket, self.handshake_timeout, refusal);
        }
        async move {
            let handshake = async {
                let (config, outcome) = self
                    .server_config()
                    .map_err(|e| UpgradeError::new(Refusal::Handshake(e.to_string()), None))?;
                let result = futures_rustls::TlsAcceptor::from(Arc::new(config))
                    .accept(ReadBuffer::new(socket))
                    .await
                    .map(TlsStream::from);
                let (peer_id, node_id, mut stream) = self.finish(result, &outcome)?;
                let sent = async {
                    stream.write_all(&[VERDICT_ACCEPTED]).await?;
                    stream.flush().await
                };
                sent.await
                    .map_err(|e| UpgradeError::new(io_refusal(&e), Some(node_id.clone())))?;
                Ok((peer_id, node_id, stream))
            };
            self.timed(handshake).await
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Coalesced<TlsStream<ReadBuffer<C>>>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, info: Self::Info) -> Self::Future {
        if let Some(refusal) = self.refused_protocol(info) {
            return alert_refusal(socket, self.handshake_timeout, refusal);
        }
        async move {
            let handshake = async {
                let (config, outcome) = self
                    .client_config()
                    .map_err(|e| UpgradeError::new(Refusal::Handshake(e.to_string()), None))?;
                // Nodes are named by their certificate key, not a host name: no SNI is sent and
                // the verifier ignores the name.
                let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
                let result = futures_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, ReadBuffer::new(socket))
                    .await
                    .map(TlsStream::from);
                let (peer_id, node_id, mut stream) = self.finish(result, &outcome)?;
                // Wait for the listener's verdict on our certificate (see VERDICT_ACCEPTED).
                let mut verdict = [0u8; 1];
                match stream.read_exact(&mut verdict).await {
                    Ok(()) if verdict[0] == VERDICT_ACCEPTED => Ok((peer_id, node_id, stream)),
                    Ok(()) => Err(UpgradeError::new(
                        Refusal::Handshake(format!("unexpected verdict byte {:#04x}", verdict[0])),
                        Some(node_id),
                    )),
                    Err(e) => Err(UpgradeError::new(io_refusal(&e), Some(node_id))),
                }
            };
            self.timed(handshake).await
        }
        .boxed()
    }
}
