//! # bcos-p2p
//!
//! The P2P network layer of a consortium blockchain, after the design of FISCO BCOS's P2P
//! module, on rust-libp2p. Nodes are named by their public key ([`NodeId`]), hold a certificate
//! issued by the chain CA, and authenticate each other with mutual TLS against that CA
//! ([`ca_tls`]) before any protocol runs.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bcos_p2p::{behaviour::build_swarm, ca_tls};
//!
//! let (key, tls) = ca_tls::Config::load("node.key", "node.crt", "ca.crt")?;
//! let mut swarm = build_swarm(&key, &tls, &Default::default())?;
//! swarm.listen_on("/ip4/0.0.0.0/tcp/30300".parse()?)?;
//! println!("I am {}", key.node_id());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod behaviour;
pub mod certgen;
pub mod config;
pub mod connection;
pub mod events;
pub mod node;

pub use bcos_p2p_ca_tls as ca_tls;
/// `NodeId`: see [`bcos_p2p_core::NodeId`]. It lives in the core crate so every protocol crate
/// can address peers by it.
pub use bcos_p2p_core::{KeyError, KeyType, NodeId, NodeIdBook, NodeIdError, NodeKey};
pub use bcos_p2p_flood as flood;
pub use bcos_p2p_status as status;
pub use bcos_p2p_unicast as unicast;
