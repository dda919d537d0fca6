//! The composed `NetworkBehaviour` and the swarm built around CA-TLS.
//!
//! So far it composes identify (peers learn each other's listen addresses and protocols) and
//! ping (round-trip times; `bcos-p2p run` closes connections whose pings keep failing). The
//! protocol crates and the connection manager join it as they land.

use std::time::Duration;

use bcos_p2p_ca_tls as ca_tls;
use libp2p::{
    Swarm, SwarmBuilder, identify, identity::Keypair, ping, swarm::NetworkBehaviour, tcp, yamux,
};

use crate::NodeKey;

/// How often each connection is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may take before it counts as failed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The identify protocol version string of bcos-p2p nodes.
pub const PROTOCOL_VERSION: &str = "/bcos-p2p/1.0.0";

/// Everything a bcos-p2p node runs on each connection.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event")]
pub struct Behaviour {
    /// Listen addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip time.
    pub ping: ping::Behaviour,
}

/// What [`Behaviour`] reports to the swarm.
#[derive(Debug)]
pub enum Event {
    /// From identify.
    Identify(Box<identify::Event>),
    /// From ping.
    Ping(ping::Event),
}

impl From<identify::Event> for Event {
    fn from(e: identify::Event) -> Self {
        Event::Identify(Box::new(e))
    }
}

impl From<ping::Event> for Event {
    fn from(e: ping::Event) -> Self {
        Event::Ping(e)
    }
}

impl Behaviour {
    /// The behaviour for a node with this identity.
    pub fn new(keypair: &Keypair) -> Self {
        Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new(PROTOCOL_VERSION.into(), keypair.public())
                    .with_agent_version(format!("bcos-p2p/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
        }
    }
}

/// What libp2p's connection timeout adds to the CA-TLS handshake timeout (TCP connect,
/// protocol negotiation and the muxer).
const CONNECT_MARGIN: Duration = Duration::from_secs(5);

/// Why a swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA-TLS configuration does not fit the key.
    #[error(transparent)]
    Tls(#[from] ca_tls::ConfigError),
    /// libp2p refused the setup.
    #[error("swarm setup: {0}")]
    Swarm(String),
}

/// Builds a tokio swarm: TCP, CA-TLS with `tls`, yamux, and [`Behaviour`]. Connections stay open
/// while idle: nodes keep long-lived connections, as FISCO BCOS does.
pub fn build_swarm(key: &NodeKey, tls: &ca_tls::Config) -> Result<Swarm<Behaviour>, BuildError> {
    build_swarm_with(key, tls, Behaviour::new)
}

/// Like [`build_swarm`], with your own behaviour (embedding bcos-p2p in a larger node).
pub fn build_swarm_with<B: NetworkBehaviour>(
    key: &NodeKey,
    tls: &ca_tls::Config,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, BuildError> {
    let swarm = SwarmBuilder::with_existing_identity(key.keypair().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            |kp: &Keypair| tls.for_keypair(kp),
            yamux::Config::default,
        )?
        .with_dns()
        .map_err(|e| BuildError::Swarm(format!("DNS resolver: {e}")))?
        .with_behaviour(|kp| behaviour(kp))
        .map_err(|e| BuildError::Swarm(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(u64::MAX)))
        // TCP connect, negotiation, TLS and the muxer together: longer than the TLS part alone.
        .with_connection_timeout(tls.handshake_timeout() + CONNECT_MARGIN)
        .build();
    Ok(swarm)
}
