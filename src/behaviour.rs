//! The composed `NetworkBehaviour` and the swarm built around CA-TLS.
//!
//! [`Behaviour`] is everything a bcos-p2p node runs on each connection: identify (peers learn
//! each other's listen addresses and protocols), ping (liveness), connection limits, unicast
//! (requests with replies by NodeId), flood (multicast and broadcast) and status sync. Drop it
//! into your own swarm with [`build_swarm_with`], or let [`crate::node::Node`] run it for you.

use std::{convert::Infallible, time::Duration};

use bcos_p2p_ca_tls as ca_tls;
use libp2p::{
    Swarm, SwarmBuilder, connection_limits, identify, identity::Keypair, ping,
    swarm::NetworkBehaviour, tcp, yamux,
};

use crate::{NodeKey, config::Config, flood, status, unicast};

/// The identify protocol version string of bcos-p2p nodes.
pub const PROTOCOL_VERSION: &str = "/bcos-p2p/1.0.0";

/// Everything a bcos-p2p node runs on each connection.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event")]
pub struct Behaviour {
    /// Refuses connections beyond the configured limits (checked first).
    pub limits: connection_limits::Behaviour,
    /// Listen addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip time.
    pub ping: ping::Behaviour,
    /// Requests with replies, and one-way messages, by NodeId.
    pub unicast: unicast::Behaviour,
    /// Topic subscriptions, multicast and broadcast.
    pub flood: flood::Behaviour,
    /// Status sync.
    pub status: status::Behaviour,
}

/// What [`Behaviour`] reports to the swarm.
#[derive(Debug)]
pub enum Event {
    /// From identify.
    Identify(Box<identify::Event>),
    /// From ping.
    Ping(ping::Event),
    /// From unicast.
    Unicast(unicast::Event),
    /// From flood.
    Flood(flood::Event),
    /// From status sync.
    Status(status::Event),
}

impl From<Infallible> for Event {
    fn from(e: Infallible) -> Self {
        match e {}
    }
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

impl From<unicast::Event> for Event {
    fn from(e: unicast::Event) -> Self {
        Event::Unicast(e)
    }
}

impl From<flood::Event> for Event {
    fn from(e: flood::Event) -> Self {
        Event::Flood(e)
    }
}

impl From<status::Event> for Event {
    fn from(e: status::Event) -> Self {
        Event::Status(e)
    }
}

impl Behaviour {
    /// The behaviour of the node with `key`, whose CA-TLS setup is `tls`, configured by `config`
    /// (`Config::default()` for the defaults).
    pub fn new(key: &NodeKey, tls: &ca_tls::Config, config: &Config) -> Self {
        let c = &config.connection;
        let ms = Duration::from_millis;
        let book = tls.node_ids().clone();
        let mut status = status::Behaviour::new(status_config(config), book.clone());
        let modules = &config.unicast.modules;
        if let Err(e) = status.set_modules(modules.iter().copied()) {
            tracing::warn!(error = %e, "module list not published in the status");
        }
        let _ = status.set_version(format!("bcos-p2p/{}", env!("CARGO_PKG_VERSION")));
        Behaviour {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(c.max_pending_incoming))
                    .with_max_pending_outgoing(Some(c.max_pending_outgoing))
                    .with_max_established(Some(c.max_established)),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new(PROTOCOL_VERSION.into(), key.keypair().public())
                    .with_agent_version(format!("bcos-p2p/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(ms(c.ping_interval_ms))
                    .with_timeout(ms(c.ping_timeout_ms)),
            ),
            unicast: unicast::Behaviour::new(unicast_config(config), book.clone()),
            flood: flood::Behaviour::new(key.node_id().clone(), flood_config(config), book),
            status,
        }
    }
}

/// The unicast settings of a node config.
pub fn unicast_config(config: &Config) -> unicast::Config {
    let u = &config.unicast;
    unicast::Config {
        request_timeout: Duration::from_millis(u.request_timeout_ms),
        max_frame_size: u.max_message_size,
        max_in_flight: u.max_in_flight,
        modules: u.modules.iter().copied().collect(),
        ..unicast::Config::default()
    }
}

/// The flood settings of a node config.
pub fn flood_config(config: &Config) -> flood::Config {
    flood::Config {
        ttl: config.flood.ttl,
        max_frame: config.unicast.max_message_size,
        max_queue_bytes: config.flood.max_queue_bytes,
        ..flood::Config::default()
    }
}

/// The status settings of a node config.
pub fn status_config(config: &Config) -> status::Config {
    status::Config {
        announce_interval: Duration::from_millis(config.status.announce_interval_ms),
        max_payload: config.status.max_payload,
        ..status::Config::default()
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

/// Builds a tokio swarm: TCP, CA-TLS with `tls`, yamux, and [`Behaviour`] with `config`.
/// Connections stay open while idle: nodes keep long-lived connections, as FISCO BCOS does.
pub fn build_swarm(
    key: &NodeKey,
    tls: &ca_tls::Config,
    config: &Config,
) -> Result<Swarm<Behaviour>, BuildError> {
    build_swarm_with(key, tls, |_| Behaviour::new(key, tls, config))
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
