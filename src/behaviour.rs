//! The composed `NetworkBehaviour` and the swarm built around it, in either security mode.
//!
//! [`Behaviour`] is everything a bcos-p2p node runs on each connection: the connection manager
//! (configured peers, redial, one connection per peer, no self-connections, liveness by ping,
//! limits, run-time deny/allow), identify (peers learn each other's listen addresses and
//! protocols), unicast (requests with replies by NodeId), flood (multicast and broadcast) and
//! status sync. Drop it
//! into your own swarm with [`build_swarm_with`], or let [`crate::node::Node`] run it for you.

use std::time::Duration;

use bcos_p2p_ca_tls as ca_tls;
use libp2p::{
    Swarm, Transport as _,
    core::{muxing::StreamMuxerBox, transport::timeout::TransportTimeout, upgrade},
    dns, identify,
    swarm::{self, NetworkBehaviour, behaviour::toggle::Toggle},
    tcp,
};

/// The mapping of a node config onto each protocol's settings, kept here too for callers
/// that know it by this path.
pub use crate::config::{flood_config, route_config, status_config, unicast_config};
/// Why a swarm could not be built: see [`crate::security::BuildError`].
pub use crate::security::BuildError;
use crate::{
    NodeKey, boxed::Boxed, config::Config, connection, flood, mux, paced, route,
    security::SecurityMode, status, unicast,
};

/// The identify protocol version string of bcos-p2p nodes.
pub const PROTOCOL_VERSION: &str = "/bcos-p2p/1.0.0";

/// Everything a bcos-p2p node runs on each connection.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event")]
pub struct Behaviour {
    /// Configured peers, redial, duplicates, self-connections, ping liveness, limits,
    /// run-time deny/allow, and peer scores and bans (from the protocols' offence reports).
    /// First, so the connections it refuses never reach the protocols.
    pub connection: connection::Behaviour,
    /// Listen addresses and protocols of peers. Its handler is boxed: 3.5 KiB inline, it would
    /// weigh about three times over in every connection's task ([`crate::boxed`]). Off for SM2
    /// node keys, which have no libp2p public key to announce.
    pub identify: Boxed<Toggle<identify::Behaviour>>,
    /// Requests with replies, and one-way messages, by NodeId.
    pub unicast: unicast::Behaviour,
    /// Topic subscriptions, multicast and broadcast.
    pub flood: flood::Behaviour,
    /// Status sync.
    pub status: status::Behaviour,
    /// Routed connections: circuits through relays to nodes with no direct connection, and
    /// relaying for others. Last: it opens and relays circuits on the connections the others
    /// have taken.
    pub route: route::Behaviour,
}

/// What [`Behaviour`] reports to the swarm.
#[derive(Debug)]
pub enum Event {
    /// From the connection manager.
    Connection(connection::Event),
    /// From identify.
    Identify(Box<identify::Event>),
    /// From unicast.
    Unicast(unicast::Event),
    /// From flood.
    Flood(flood::Event),
    /// From status sync.
    Status(status::Event),
    /// From routing.
    Route(route::Event),
}

impl From<route::Event> for Event {
    fn from(e: route::Event) -> Self {
        Event::Route(e)
    }
}

impl From<identify::Event> for Event {
    fn from(e: identify::Event) -> Self {
        Event::Identify(Box::new(e))
    }
}

impl From<connection::Event> for Event {
    fn from(e: connection::Event) -> Self {
        Event::Connection(e)
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
    /// The behaviour of the node with `key`, whose security setup is `security` (a
    /// [`ca_tls::Config`], or an [`crate::open::Config`] in open mode), configured by `config`
    /// (`Config::default()` for the defaults). The config's peers are dialled and kept
    /// connected; its access lists are added to `security`'s.
    pub fn new(key: &NodeKey, security: &impl SecurityMode, config: &Config) -> Self {
        let mut behaviour = Self::with_parts(
            key,
            (security.access_list(), security.node_ids()),
            (security.membership(), security.route_link()),
            config,
        );
        if let Some(revocation) = security.revocation() {
            behaviour.connection.set_revocation(revocation.clone());
        }
        behaviour
    }

    /// The behaviour over a security upgrade's access lists (to which the config's are added),
    /// NodeId book and flood membership check.
    fn with_parts(
        key: &NodeKey,
        (access, book): (&ca_tls::AccessList, &crate::NodeIdBook),
        (membership, route_link): (Option<flood::Membership>, &crate::RouteLink),
        config: &Config,
    ) -> Self {
        // Flood answers the route behaviour's path questions from its link-state records.
        let paths = crate::Paths::new();
        for node in &config.access.deny {
            access.deny(node.clone());
        }
        for node in &config.access.allow {
            access.allow(node.clone());
        }
        let mut connection = connection::Behaviour::new(
            key.node_id().clone(),
            (&config.connection).into(),
            access.clone(),
            book.clone(),
        );
        for peer in &config.network.peers {
            connection.add_peer(peer.0.clone());
        }
        let book = book.clone();
        let primaries = connection.primaries();
        // Every protocol reports what peers do wrong to the manager, which scores and bans,
        // and marks the frames each connection brings, which the manager counts as signs of life.
        let offences = connection.offences();
        let offences_for_route = offences.clone();
        let heard = connection.heard();
        let mut status = status::Behaviour::new(status_config(config), book.clone());
        status.set_offences(offences.clone());
        status.set_heard(heard.clone());
        let modules = &config.unicast.modules;
        if let Err(e) = status.set_modules(modules.iter().copied()) {
            tracing::warn!(error = %e, "module list not published in the status");
        }
        let _ = status.set_version(format!("bcos-p2p/{}", env!("CARGO_PKG_VERSION")));
        Behaviour {
            connection,
            // Identify sends the libp2p public key, which a node key of a type libp2p does not
            // have (SM2) lacks: those nodes run without it (peers would discard its answers).
            identify: Boxed(Toggle::from(key.keypair().map(|keypair| {
                identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.into(), keypair.public())
                        .with_agent_version(format!("bcos-p2p/{}", env!("CARGO_PKG_VERSION"))),
                )
            }))),
            unicast: {
                let mut u = unicast::Behaviour::new(unicast_config(config), book.clone());
                u.set_primaries(primaries.clone());
                u.set_offences(offences.clone());
                u.set_heard(heard.clone());
                u
            },
            flood: {
                let mut f = flood::Behaviour::new(key, flood_config(config), book.clone());
                f.set_primaries(primaries);
                f.set_offences(offences);
                f.set_heard(heard);
                // The deny/allow lists apply to the origins of messages too, network-wide.
                let access = access.clone();
                f.set_origin_filter(move |node| access.check(node).is_ok());
                // In CA mode only members (chains from the CA) originate.
                if let Some(membership) = membership {
                    f.set_membership(membership);
                }
                f.set_paths(paths.clone());
                f
            },
            status,
            route: {
                let mut r = route::Behaviour::new(
                    key.node_id().clone(),
                    route_config(config),
                    route_link.clone(),
                    paths,
                    book.clone(),
                );
                r.set_offences(offences_for_route);
                r
            },
        }
    }
}

/// Unsent bytes a node connection's socket holds at most (Linux's `TCP_NOTSENT_LOWAT`); the
/// rest waits in yamux, where the streams take turns. Without it the kernel takes up to its
/// send buffer (4 MiB by default) of whatever stream wrote first, and every stream's next frame
/// (a consensus message behind a block transfer) waits for all of it to leave. Bytes in flight
/// are not limited by this, so throughput over long links is not either.
pub const TCP_NOTSENT_LOWAT: u32 = 128 * 1024;

/// Applies [`TCP_NOTSENT_LOWAT`] to a node connection's socket; a failure is logged and the
/// connection kept (the kernel's default then applies).
fn tune_socket(stream: tcp::tokio::TcpStream) -> tcp::tokio::TcpStream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_notsent_lowat(TCP_NOTSENT_LOWAT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
    stream
}

/// What libp2p's connection timeout adds to the CA-TLS handshake timeout (TCP connect,
/// protocol negotiation and the muxer).
const CONNECT_MARGIN: Duration = Duration::from_secs(5);

/// Builds a tokio swarm: TCP, `security` (CA-TLS with a [`ca_tls::Config`], or open mode with
/// an [`crate::open::Config`]), yamux, and [`Behaviour`] with `config`.
/// Connections stay open while idle: nodes keep long-lived connections, as FISCO BCOS does.
pub fn build_swarm(
    key: &NodeKey,
    security: &impl SecurityMode,
    config: &Config,
) -> Result<Swarm<Behaviour>, BuildError> {
    let mut mux = mux::Config::default();
    mux.set_window_growth(Some(config.traffic.stream_window_growth));
    let pacing = paced::Pacing::new(Duration::from_millis(
        config.traffic.queue_delay_target_ms.into(),
    ))
    .with_congestion(&config.traffic.tcp_congestion);
    let paces = pacing.paces();
    build_swarm_muxed(key, security, mux, pacing, |_| {
        let mut behaviour = Behaviour::new(key, security, config);
        behaviour.unicast.set_path_paces(paces);
        behaviour
    })
}

/// Like [`build_swarm`], with your own behaviour (embedding bcos-p2p in a larger node): TCP
/// (nodelay, [`TCP_NOTSENT_LOWAT`]), `security`, yamux ([`mux`]: 64 KiB send frames), routed connections through
/// relays under the same handshake, DNS, and `behaviour`.
///
/// The swarm's PeerId is the node key's ([`NodeKey::peer_id`]). It is built from that PeerId,
/// not from a libp2p keypair, so that key types libp2p does not have (SM2) run the same way.
pub fn build_swarm_with<B: NetworkBehaviour>(
    key: &NodeKey,
    security: &impl SecurityMode,
    behaviour: impl FnOnce(&NodeKey) -> B,
) -> Result<Swarm<B>, BuildError> {
    build_swarm_muxed(
        key,
        security,
        mux::Config::default(),
        paced::Pacing::new(Duration::ZERO),
        behaviour,
    )
}

/// Like [`build_swarm_with`], with the muxer's settings given (frame size, stream windows)
/// and how TCP connections watch their paths' queues ([`paced`]: give
/// [`paced::Pacing::paces`] to [`unicast::Behaviour::set_path_paces`] to pace by them).
pub fn build_swarm_muxed<B: NetworkBehaviour>(
    key: &NodeKey,
    security: &impl SecurityMode,
    mux: mux::Config,
    pacing: paced::Pacing,
    behaviour: impl FnOnce(&NodeKey) -> B,
) -> Result<Swarm<B>, BuildError> {
    let security = security.for_node_key(key)?;
    let paces = pacing.paces();
    let direct_mux = mux.clone();
    let direct = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .map(move |stream, _| pacing.watch(tune_socket(stream)))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(security.clone())
        .multiplex_ext(move |peer, endpoint| {
            // Inside the DNS transport, so the address the socket reached: the socket's pace
            // is bound to the peer now authenticated (unicast finds it by the peer when the
            // swarm names the connection by a DNS name), and the muxer's windows are fitted
            // to the path's round trip.
            let mut mux = direct_mux.clone();
            let rtt = paces
                .bind(*peer, endpoint.get_remote_address())
                .and_then(|pace| pace.base_rtt());
            if let Some(rtt) = rtt {
                mux.fit_to_round_trip(rtt);
            }
            mux
        })
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    // Routed connections: circuits through relays, under the same handshake and muxer.
    let routed = route::Transport::new(security.route_link().clone())
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(security.clone())
        .multiplex(mux)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let transport = direct
        .or_transport(routed)
        .map(|either, _| either.into_inner());
    let transport = dns::tokio::Transport::system(transport)
        .map_err(|e| BuildError::Swarm(format!("DNS resolver: {e}")))?;
    // TCP connect, negotiation, TLS and the muxer together: longer than the TLS part.
    let transport =
        TransportTimeout::new(transport, security.handshake_timeout() + CONNECT_MARGIN).boxed();
    let config = swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(Duration::from_secs(u64::MAX));
    Ok(Swarm::new(transport, behaviour(key), key.peer_id(), config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node connection's socket gets the low-water mark (on Linux, where the option exists).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn node_sockets_get_the_notsent_low_water_mark() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (dialed, (accepted, _)) = (dialed.unwrap(), accepted.unwrap());
        for stream in [dialed, accepted] {
            // Whatever the system's default, the socket starts elsewhere.
            let sock = socket2::SockRef::from(&stream);
            sock.set_tcp_notsent_lowat(TCP_NOTSENT_LOWAT * 8).unwrap();
            assert_eq!(sock.tcp_notsent_lowat().unwrap(), TCP_NOTSENT_LOWAT * 8);
            let tuned = tune_socket(tcp::tokio::TcpStream(stream));
            let after = socket2::SockRef::from(&tuned.0)
                .tcp_notsent_lowat()
                .unwrap();
            assert_eq!(after, TCP_NOTSENT_LOWAT);
        }
    }
}
