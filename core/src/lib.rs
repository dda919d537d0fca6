//! Identity types shared by every bcos-p2p crate: [`NodeId`] (FISCO BCOS's name for a node, its
//! public key) and [`NodeKey`] (a node's private key loaded from `node.key`), both dispatching
//! per [`KeyType`] through one key-type table; and what every protocol's connections run on:
//! [`stream_pair`], the two-stream connection handler, [`framed`], its length-prefixed frames,
//! [`link`], the frame link that the flood and status protocols run on, and [`mux`], yamux with
//! the send frame size set; [`boxed`] moves a behaviour's connection handler to the heap;
//! [`heard`] and [`offences`] are what the protocols tell the connection manager about peers.
//!
//! The protocol crates address peers by `NodeId`, so it lives here, below all of them; the root
//! crate `bcos-p2p` re-exports everything.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bandwidth;
mod book;
pub mod boxed;
pub mod framed;
pub mod heard;
mod key;
mod keys;
pub mod link;
pub mod mux;
mod node_id;
pub mod offences;
pub mod paths;
pub mod pinned;
mod primary;
pub mod route_link;
pub mod stream_pair;

pub use book::NodeIdBook;
pub use heard::{Heard, HeardAt};
pub use key::{KeyError, NodeKey, pem_encode};
pub use keys::{
    KeyType, MAX_RSA_BITS, MIN_RSA_BITS, OID_EC_PUBLIC_KEY, OID_P256, OID_RSA, OID_SECP256K1,
    OID_SM2, SM2_DEFAULT_DISTID, SM2_PEER_ID_KEY_TYPE,
};
pub use node_id::{NodeId, NodeIdError, Verifier};
pub use offences::{Offence, Offences};
pub use paths::Paths;
pub use primary::PrimaryConnections;
pub use route_link::RouteLink;
