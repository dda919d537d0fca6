//! Open mode: stock libp2p TLS (`/tls/1.0.0`) with the node key as the libp2p identity.
//!
//! CA mode admits only nodes whose certificate the chain CA issued. Open mode is for networks
//! without a CA and for talking to stock libp2p peers (any implementation that speaks
//! libp2p-tls and yamux): each side presents the self-signed certificate of the libp2p TLS
//! spec, which carries its libp2p public key. [`Config`] wraps `libp2p-tls` to keep what the
//! rest of bcos-p2p relies on:
//!
//! - the peer's NodeId is read from its certificate and recorded in the [`NodeIdBook`] before
//!   the connection is established (P-256 and RSA PeerIds are hashes of the key);
//! - the deny/allow lists are checked once the peer has proven its key;
//! - failures are [`ca_tls::UpgradeError`]s, so they become the same `refused` events, and a
//!   CA-mode peer (which answers `/tls/1.0.0` with a fatal `insufficient_security` alert) is
//!   reported as [`Refusal::CaTlsRequired`]: the two modes never fail to connect silently.

use std::{sync::Arc, time::Duration};

use bcos_p2p_ca_tls::{self as ca_tls, AccessList, Refusal, UpgradeError};
use der::{Decode as _, asn1::OctetString};
use futures::{AsyncRead, AsyncWrite, FutureExt as _, future::BoxFuture};
use libp2p::{
    PeerId,
    core::{
        UpgradeInfo,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    },
    identity::{Keypair, PublicKey},
    tls::{self, TlsStream},
};

use crate::{KeyType, NodeId, NodeIdBook, NodeKey, RouteLink};

/// The protocol id of stock libp2p TLS.
pub const PROTOCOL_NAME: &str = "/tls/1.0.0";

/// OID of the libp2p public key extension of libp2p TLS certificates (1.3.6.1.4.1.53594.1.1).
const LIBP2P_EXTENSION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.53594.1.1");

/// Why open mode cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// libp2p-tls could not make the node's self-signed certificate.
    #[error("libp2p TLS certificate: {0}")]
    Certificate(String),
    /// The swarm's keypair is not the node key.
    #[error("the swarm's identity {swarm} is not the node key's {key}")]
    KeyMismatch {
        /// PeerId of the swarm's keypair.
        swarm: String,
        /// PeerId of the node key.
        key: String,
    },
    /// The node key is of a type libp2p has no key type for (SM2).
    #[error(
        "open mode (libp2p TLS) has no {0} key type: run 国密 nodes in CA mode (security = \"ca-tls\", with sm_ca.crt, sm_ssl.key and sm_ssl.crt), which speaks TLS 1.3 with SM2, SM3 and SM4"
    )]
    NoLibp2pKey(String),
}

/// The open-mode security upgrade: stock libp2p TLS with the node key.
///
/// Cheap to clone; clones share the access lists and the [`NodeIdBook`].
#[derive(Clone)]
pub struct Config {
    inner: Arc<tls::Config>,
    local: PeerId,
    access: AccessList,
    book: NodeIdBook,
    route_link: RouteLink,
    handshake_timeout: Duration,
    require_node_id: bool,
}

/// Why a node key without a libp2p key type (SM2) cannot run in open mode.
pub fn sm_refused(key: &NodeKey) -> ConfigError {
    ConfigError::NoLibp2pKey(key.key_type().label().to_owned())
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("open::Config")
            .field("local", &self.local)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("require_node_id", &self.require_node_id)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Open mode for the node with `key` (secp256k1, P-256 or RSA): peers must have a NodeId,
    /// i.e. one of those key types too. SM2 keys are refused ([`sm_refused`]): open mode is
    /// libp2p's own TLS, which has no SM2 key type.
    pub fn new(key: &NodeKey) -> Result<Config, ConfigError> {
        Self::for_identity(key.keypair().ok_or_else(|| sm_refused(key))?)
    }

    /// Open mode for any libp2p keypair, accepting peers of any key type (those without a
    /// NodeId, such as Ed25519 peers, are simply not in the [`NodeIdBook`]). For interop with
    /// stock libp2p peers; nodes use [`Config::new`].
    pub fn for_identity(keypair: &Keypair) -> Result<Config, ConfigError> {
        let inner =
            tls::Config::new(keypair).map_err(|e| ConfigError::Certificate(e.to_string()))?;
        warm_up_key_exchange();
        Ok(Config {
            inner: Arc::new(inner),
            local: keypair.public().to_peer_id(),
            access: AccessList::default(),
            book: NodeIdBook::default(),
            route_link: RouteLink::default(),
            handshake_timeout: ca_tls::DEFAULT_HANDSHAKE_TIMEOUT,
            require_node_id: NodeId::from_public_key(&keypair.public()).is_ok(),
        })
    }

    /// Whether a peer without a NodeId (a key type FISCO BCOS does not use, such as Ed25519) is
    /// refused in the handshake. On by default for node keys; the connection manager needs
    /// NodeIds.
    pub fn require_node_id(mut self, require: bool) -> Config {
        self.require_node_id = require;
        self
    }

    /// Sets the limit on the TLS handshake; a slower peer is refused.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Config {
        self.handshake_timeout = timeout;
        self
    }

    /// The limit on the TLS handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// This upgrade, checked against the swarm's identity keypair: the security closure for
    /// `SwarmBuilder::with_tcp`.
    pub fn for_keypair(&self, keypair: &Keypair) -> Result<Config, ConfigError> {
        let swarm = keypair.public().to_peer_id();
        if swarm != self.local {
            return Err(ConfigError::KeyMismatch {
                swarm: swarm.to_string(),
                key: self.local.to_string(),
            });
        }
        Ok(self.clone())
    }

    /// The deny/allow lists checked in every handshake (shared with all clones).
    pub fn access_list(&self) -> &AccessList {
        &self.access
    }

    /// PeerId → NodeId of every peer that completed a handshake.
    pub fn node_ids(&self) -> &NodeIdBook {
        &self.book
    }

    /// Where the routed transport of a swarm built with this config meets the route behaviour
    /// of a behaviour built with it (shared with all clones).
    pub fn route_link(&self) -> &RouteLink {
        &self.route_link
    }

    /// Bounds `handshake` by the timeout, maps its failure to a refusal, then names the peer
    /// (NodeId from its certificate), checks the access lists and records it.
    async fn finish<C>(
        self,
        handshake: impl Future<Output = Result<(PeerId, TlsStream<C>), tls::UpgradeError>>,
    ) -> Result<(PeerId, TlsStream<C>), UpgradeError> {
        let (peer, stream) = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Err(_) => {
                return Err(UpgradeError::new(
                    Refusal::Handshake(format!("timed out after {:?}", self.handshake_timeout)),
                    None,
                ));
            }
            Ok(Err(e)) => return Err(UpgradeError::new(refusal_of(&e), None)),
            Ok(Ok(done)) => done,
        };
        let node = match peer_public_key(&stream, &peer) {
            Ok(key) => NodeId::from_public_key(&key).ok(),
            Err(why) => return Err(UpgradeError::new(Refusal::BadCertificate(why), None)),
        };
        let Some(node) = node else {
            if self.require_node_id {
                return Err(UpgradeError::new(
                    Refusal::UnsupportedKey(format!(
                        "peer {peer} has a libp2p key without a NodeId (nodes use {} keys)",
                        KeyType::labels(KeyType::ALL)
                    )),
                    None,
                ));
            }
            return Ok((peer, stream));
        };
        if let Err(refusal) = self.access.check(&node) {
            return Err(UpgradeError::new(refusal, Some(node)));
        }
        tracing::debug!(peer = %node.short(), "libp2p TLS handshake complete");
        self.book.insert(peer, node);
        Ok((peer, stream))
    }
}

/// libp2p-tls runs on aws-lc, whose first key agreement in a process costs about 100 ms here
/// (on each side of the first handshake); measured with `bcos-p2p-interop`, a process's first
/// open-mode connection took ~200 ms against ~100 ms for the next ones. Paying it once at set-up
/// keeps it out of the first handshake. Failures only mean there was nothing to warm.
fn warm_up_key_exchange() {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    for group in &provider.kx_groups {
        let Ok(client) = group.start() else { continue };
        if let Ok(server) = group.start_and_complete(client.pub_key()) {
            let _ = client.complete(&server.pub_key);
        }
    }
}

/// The refusal for a failed libp2p TLS handshake; a CA-mode peer's alert is recognised.
fn refusal_of(e: &tls::UpgradeError) -> Refusal {
    let io = match e {
        tls::UpgradeError::ServerUpgrade(io) | tls::UpgradeError::ClientUpgrade(io) => io,
        tls::UpgradeError::BadCertificate(e) => return Refusal::BadCertificate(e.to_string()),
        other => return Refusal::Handshake(other.to_string()),
    };
    match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::InsufficientSecurity)) => {
            Refusal::CaTlsRequired
        }
        Some(rustls::Error::AlertReceived(alert)) => Refusal::RejectedByPeer(format!("{alert:?}")),
        Some(other) => Refusal::Handshake(other.to_string()),
        None => Refusal::Handshake(io.to_string()),
    }
}

/// The libp2p public key in the peer's certificate (libp2p-tls has verified it and derived
/// `peer` from it; checked again here).
fn peer_public_key<C>(stream: &TlsStream<C>, peer: &PeerId) -> Result<PublicKey, String> {
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    let cert = x509_cert::Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let extension = cert
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == LIBP2P_EXTENSION)
        .ok_or("no libp2p public key extension")?;
    // SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }
    let signed = Vec::<OctetString>::from_der(extension.extn_value.as_bytes())
        .map_err(|e| format!("libp2p public key extension: {e}"))?;
    let encoded = signed.first().ok_or("empty libp2p public key extension")?;
    let key = PublicKey::try_decode_protobuf(encoded.as_bytes()).map_err(|e| e.to_string())?;
    if key.to_peer_id() != *peer {
        return Err("libp2p public key extension does not match the peer".into());
    }
    Ok(key)
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL_NAME)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, info: Self::Info) -> Self::Future {
        let handshake = (*self.inner).clone().upgrade_inbound(socket, info);
        self.finish(handshake).boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, info: Self::Info) -> Self::Future {
        let handshake = (*self.inner).clone().upgrade_outbound(socket, info);
        self.finish(handshake).boxed()
    }
}
