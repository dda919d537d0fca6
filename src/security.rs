//! The security handshake of a node's connections, as one trait: [`SecurityMode`].
//!
//! Two modes implement it: CA-TLS ([`ca_tls::Config`], `security = "ca-tls"`, the default) and
//! open mode ([`crate::open::Config`], `security = "libp2p-tls"`). The swarm builders
//! ([`crate::behaviour::build_swarm_with`]) and [`crate::node::Node`] are generic over it, so a
//! node is built the same way in either mode, and a third mode (国密 TLS, say) is one more
//! implementation. The two modes never connect to each other; each side reports why (a
//! [`ca_tls::Refusal`]).

use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    PeerId,
    core::{
        Negotiated, UpgradeInfo,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    },
};

use crate::{
    NodeIdBook, NodeKey,
    ca_tls::{self, AccessList, UpgradeError},
    config, flood, open,
};

/// Why a swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA-TLS configuration does not fit the key.
    #[error(transparent)]
    Tls(#[from] ca_tls::ConfigError),
    /// The open-mode configuration does not fit the key.
    #[error(transparent)]
    Open(#[from] open::ConfigError),
    /// libp2p refused the setup.
    #[error("swarm setup: {0}")]
    Swarm(String),
}

/// The socket a security handshake runs on in a bcos-p2p swarm: TCP (tokio) after
/// multistream-select, paced ([`crate::paced`]).
pub type Socket = Negotiated<crate::paced::Paced<libp2p::tcp::tokio::TcpStream>>;

/// The socket of a routed connection's handshake: a circuit through relays (its first hop's
/// route stream) after multistream-select.
pub type RoutedSocket = Negotiated<libp2p::Stream>;

/// A security handshake a bcos-p2p swarm can run: a libp2p security upgrade on [`Socket`] that
/// authenticates the peer, enforces the access lists, names the peer's NodeId in a shared book
/// and fails with an [`UpgradeError`] (so every refusal becomes the same `refused` event).
///
/// The upgrade bounds are what libp2p's `SwarmBuilder::with_tcp` asks of a security upgrade;
/// they are spelt out here because libp2p does not export its own name for them.
pub trait SecurityMode:
    Clone
    + Send
    + Sync
    + 'static
    + UpgradeInfo<Info: Send, InfoIter: IntoIterator<IntoIter: Send>>
    + InboundConnectionUpgrade<
        Socket,
        Output = (PeerId, <Self as SecurityMode>::Stream),
        Error = UpgradeError,
        Future: Send,
    >
    + OutboundConnectionUpgrade<
        Socket,
        Output = (PeerId, <Self as SecurityMode>::Stream),
        Error = UpgradeError,
        Future: Send,
    >
    + InboundConnectionUpgrade<
        RoutedSocket,
        Output = (PeerId, <Self as SecurityMode>::RoutedStream),
        Error = UpgradeError,
        Future: Send,
    >
    + OutboundConnectionUpgrade<
        RoutedSocket,
        Output = (PeerId, <Self as SecurityMode>::RoutedStream),
        Error = UpgradeError,
        Future: Send,
    >
{
    /// The encrypted stream the handshake yields.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The encrypted stream the handshake yields over a circuit.
    type RoutedStream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Where the routed transport and the route behaviour built with this config meet (shared
    /// with all clones).
    fn route_link(&self) -> &crate::RouteLink;

    /// This upgrade, checked against the node key the swarm is built with (the PeerIds must
    /// agree).
    fn for_node_key(&self, key: &NodeKey) -> Result<Self, BuildError>;

    /// The deny/allow lists enforced in every handshake (shared with all clones).
    fn access_list(&self) -> &AccessList;

    /// PeerId → NodeId of every authenticated peer (shared with all clones).
    fn node_ids(&self) -> &NodeIdBook;

    /// The limit on one handshake.
    fn handshake_timeout(&self) -> Duration;

    /// Sets the limit on one handshake.
    fn with_handshake_timeout(self, timeout: Duration) -> Self;

    /// Which mode this is, as the config file names it (`[network] security`).
    fn mode(&self) -> config::Security;

    /// How flood tells member origins from strangers: in CA mode, by their certificate
    /// chains; `None` in open mode, where any key that signs is an origin.
    fn membership(&self) -> Option<flood::Membership>;

    /// The CRLs enforced in every handshake (CA mode; open mode has none).
    fn revocation(&self) -> Option<&ca_tls::Revocation> {
        None
    }
}

impl SecurityMode for ca_tls::Config {
    type Stream = ca_tls::Coalesced<libp2p::tls::TlsStream<ca_tls::ReadBuffer<Socket>>>;
    type RoutedStream = ca_tls::Coalesced<libp2p::tls::TlsStream<ca_tls::ReadBuffer<RoutedSocket>>>;

    fn route_link(&self) -> &crate::RouteLink {
        ca_tls::Config::route_link(self)
    }

    fn for_node_key(&self, key: &NodeKey) -> Result<Self, BuildError> {
        Ok(ca_tls::Config::for_node_key(self, key)?)
    }

    fn access_list(&self) -> &AccessList {
        ca_tls::Config::access_list(self)
    }

    fn node_ids(&self) -> &NodeIdBook {
        ca_tls::Config::node_ids(self)
    }

    fn handshake_timeout(&self) -> Duration {
        ca_tls::Config::handshake_timeout(self)
    }

    fn with_handshake_timeout(self, timeout: Duration) -> Self {
        ca_tls::Config::with_handshake_timeout(self, timeout)
    }

    fn mode(&self) -> config::Security {
        config::Security::CaTls
    }

    fn membership(&self) -> Option<flood::Membership> {
        Some(ca_membership(self))
    }

    fn revocation(&self) -> Option<&ca_tls::Revocation> {
        Some(ca_tls::Config::revocation(self))
    }
}

/// Flood's membership check in CA mode: this node's chain, and other chains checked against
/// `tls`'s trust anchors as its handshakes check them.
pub fn ca_membership(tls: &ca_tls::Config) -> flood::Membership {
    let chain = tls
        .local_chain()
        .iter()
        .map(|c| bytes::Bytes::copy_from_slice(c))
        .collect();
    let tls = tls.clone();
    flood::Membership::new(chain, move |chain: &[bytes::Bytes]| {
        let ders: Vec<ca_tls::CertificateDer<'_>> = chain
            .iter()
            .map(|c| ca_tls::CertificateDer::from(&c[..]))
            .collect();
        tls.check_chain(&ders).map_err(|r| r.to_string())
    })
}

impl SecurityMode for open::Config {
    type Stream = libp2p::tls::TlsStream<Socket>;
    type RoutedStream = libp2p::tls::TlsStream<RoutedSocket>;

    fn route_link(&self) -> &crate::RouteLink {
        open::Config::route_link(self)
    }

    fn for_node_key(&self, key: &NodeKey) -> Result<Self, BuildError> {
        let keypair = key.keypair().ok_or_else(|| open::sm_refused(key))?;
        Ok(open::Config::for_keypair(self, keypair)?)
    }

    fn access_list(&self) -> &AccessList {
        open::Config::access_list(self)
    }

    fn node_ids(&self) -> &NodeIdBook {
        open::Config::node_ids(self)
    }

    fn handshake_timeout(&self) -> Duration {
        open::Config::handshake_timeout(self)
    }

    fn with_handshake_timeout(self, timeout: Duration) -> Self {
        open::Config::with_handshake_timeout(self, timeout)
    }

    fn mode(&self) -> config::Security {
        config::Security::Libp2pTls
    }

    fn membership(&self) -> Option<flood::Membership> {
        None
    }
}
