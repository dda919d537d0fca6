//! # bcos-p2p
//!
//! The P2P network layer of a consortium blockchain, after the design of FISCO BCOS's P2P
//! module, on rust-libp2p. Nodes are named by their public key ([`NodeId`]), hold a certificate
//! issued by the chain CA, and authenticate each other with mutual TLS against that CA
//! ([`ca_tls`]) before any protocol runs. On top: the connection manager ([`connection`]),
//! unicast with replies ([`unicast`]), topic multicast and broadcast ([`flood`]) and status sync
//! ([`status`]), composed in [`behaviour::Behaviour`] and run for you by [`node::Node`].
//!
//! Embedding it in your own swarm takes a few lines: put [`behaviour::Behaviour`] next to your
//! own protocols and let [`behaviour::build_swarm_with`] set up TCP + CA-TLS + yamux.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bcos_p2p::{behaviour::{self, build_swarm_with}, ca_tls, config::Config};
//! use futures::StreamExt as _;
//! use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
//!
//! #[derive(NetworkBehaviour)]
//! struct MyBehaviour {
//!     p2p: behaviour::Behaviour,
//!     // ... your own protocols
//! }
//!
//! let (key, tls) = ca_tls::Config::load("node.key", "node.crt", "ca.crt")?;
//! let (config, _warnings) = Config::load("config.toml")?; // peers, limits, timeouts...
//! let mut swarm = build_swarm_with(&key, &tls, |_| MyBehaviour {
//!     p2p: behaviour::Behaviour::new(&key, &tls, &config),
//! })?;
//! swarm.listen_on("/ip4/0.0.0.0/tcp/30300".parse()?)?;
//! swarm.behaviour_mut().p2p.flood.subscribe("blocks")?;
//! loop {
//!     if let SwarmEvent::Behaviour(MyBehaviourEvent::P2p(event)) = swarm.select_next_some().await {
//!         match event {
//!             behaviour::Event::Flood(e) => println!("flood: {e:?}"),
//!             behaviour::Event::Unicast(e) => println!("unicast: {e:?}"),
//!             other => println!("{other:?}"),
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! Without a swarm of your own, [`node::Node`] runs one on a task and gives you async methods
//! (`request`, `multicast`, `topic_request`, `set_status`, ...) and a stream of events.

// One audited exception: `malloc::tune` calls glibc's `mallopt`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod behaviour;
pub mod config;
pub mod connection;
mod event_shares;
pub mod http;
pub mod malloc;
pub mod metrics;
pub mod netstatus;
pub mod node;
pub mod open;
pub mod paced;
pub mod security;
pub mod view;

pub use bcos_p2p_ca_tls as ca_tls;
/// A behaviour with its connection handler on the heap: see [`bcos_p2p_core::boxed`].
pub use bcos_p2p_core::bandwidth;
pub use bcos_p2p_core::boxed;
/// Yamux with 64 KiB send frames, the muxer of every bcos-p2p swarm: see [`bcos_p2p_core::mux`].
pub use bcos_p2p_core::mux;
/// `NodeId`: see [`bcos_p2p_core::NodeId`]. It lives in the core crate so every protocol crate
/// can address peers by it.
pub use bcos_p2p_core::{
    Heard, HeardAt, KeyError, KeyType, NodeId, NodeIdBook, NodeIdError, NodeKey, Offence, Offences,
    Paths, PrimaryConnections, RouteLink,
};
pub use bcos_p2p_flood as flood;
pub use bcos_p2p_route as route;
pub use bcos_p2p_status as status;
pub use bcos_p2p_unicast as unicast;
