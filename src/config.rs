//! Node configuration: a TOML file (what `gen-certs` writes) overridden by command-line flags.
//!
//! ```toml
//! [network]
//! listen = ["/ip4/127.0.0.1/tcp/30300"]   # multiaddrs or FISCO-style host:port
//! peers = ["127.0.0.1:30301", "/ip4/127.0.0.1/tcp/30302/p2p/16Uiu2..."]
//!
//! [certificate]                           # paths relative to this file
//! key = "node.key"
//! cert = "node.crt"
//! ca = "ca.crt"
//!
//! [access]                                # NodeIds; deny wins, a non-empty allow list restricts
//! deny = []
//! allow = []
//! ```
//! Unknown keys are reported as warnings (a typo should not stop a node, but must be visible);
//! bad values fail with the file, the key and the reason.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Default TCP port of the first node (FISCO BCOS's P2P port).
pub const DEFAULT_PORT: u16 = 30300;

/// A whole node configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Addresses.
    pub network: Network,
    /// Key and certificates.
    pub certificate: Certificates,
    /// Deny/allow lists.
    pub access: Access,
    /// Dialling, redialling, liveness and limits.
    pub connection: Connection,
    /// Request/response.
    pub unicast: Unicast,
    /// Multicast and broadcast.
    pub flood: Flood,
    /// Status sync.
    pub status: Status,
}

/// `[connection]`: how connections are made, kept and bounded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Connection {
    /// First redial delay after a disconnect or failed dial, in ms; doubles per failure (with
    /// jitter) up to `redial_max_ms`. Default 1000.
    pub redial_min_ms: u64,
    /// Longest redial delay, in ms. Default 30000.
    pub redial_max_ms: u64,
    /// Ping period per connection, in ms. Default 5000.
    pub ping_interval_ms: u64,
    /// How long a ping may take, in ms. Default 5000.
    pub ping_timeout_ms: u64,
    /// Consecutive failed pings after which a connection is closed as dead. Default 3.
    pub ping_max_failures: u32,
    /// Longest TLS handshake, in ms. Default 10000.
    pub handshake_timeout_ms: u64,
    /// Most incoming connections still handshaking. Default 256.
    pub max_pending_incoming: u32,
    /// Most outgoing dials in progress. Default 256.
    pub max_pending_outgoing: u32,
    /// Most established connections. Default 1024.
    pub max_established: u32,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            redial_min_ms: 1000,
            redial_max_ms: 30_000,
            ping_interval_ms: 5000,
            ping_timeout_ms: 5000,
            ping_max_failures: 3,
            handshake_timeout_ms: 10_000,
            max_pending_incoming: 256,
            max_pending_outgoing: 256,
            max_established: 1024,
        }
    }
}

/// The unicast module id the CLI's `request` and `oneway` use, and `run` serves by default.
pub const DEFAULT_MODULE: u16 = 1;

/// `[unicast]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Unicast {
    /// How long a request waits for its reply, in ms. Default 10000.
    pub request_timeout_ms: u64,
    /// Largest message (unicast and flood frames), in bytes, like FISCO's
    /// `allow_max_msg_size`. Default 33554432 (32 MiB).
    pub max_message_size: usize,
    /// Most requests in flight per peer, each way. Default 16384.
    pub max_in_flight: usize,
    /// Module ids this node serves. Default `[1]`.
    pub modules: Vec<u16>,
}

impl Default for Unicast {
    fn default() -> Self {
        Unicast {
            request_timeout_ms: 10_000,
            max_message_size: 32 * 1024 * 1024,
            max_in_flight: 16_384,
            modules: vec![DEFAULT_MODULE],
        }
    }
}

/// `[flood]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Flood {
    /// Most hops a multicast or broadcast travels. Default 10.
    pub ttl: u8,
    /// Topics subscribed at start. Default none.
    pub topics: Vec<String>,
    /// Most bytes queued for one peer. Default 67108864 (64 MiB).
    pub max_queue_bytes: usize,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            ttl: 10,
            topics: Vec::new(),
            max_queue_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[status]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Status {
    /// How often the status seq is announced, in ms (and at once on change). Default 1000.
    pub announce_interval_ms: u64,
    /// Largest status payload, in bytes. Default 1048576 (1 MiB).
    pub max_payload: usize,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            announce_interval_ms: 1000,
            max_payload: 1024 * 1024,
        }
    }
}

/// `[network]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Network {
    /// Where to listen (multiaddr or host:port). Default `/ip4/0.0.0.0/tcp/30300`.
    pub listen: Vec<PeerAddr>,
    /// Nodes to connect to and keep connected (multiaddr, optionally with `/p2p/<PeerId>`, or host:port).
    pub peers: Vec<PeerAddr>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            listen: vec![PeerAddr(
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Tcp(DEFAULT_PORT)),
            )],
            peers: Vec::new(),
        }
    }
}

/// `[certificate]`: paths, relative to the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Certificates {
    /// The node's private key. Default `node.key`.
    pub key: PathBuf,
    /// The node's certificate chain. Default `node.crt`.
    pub cert: PathBuf,
    /// The chain CA's certificate(s). Default `ca.crt`.
    pub ca: PathBuf,
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates {
            key: "node.key".into(),
            cert: "node.crt".into(),
            ca: "ca.crt".into(),
        }
    }
}

/// `[access]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Access {
    /// Nodes refused at the handshake.
    pub deny: Vec<NodeId>,
    /// When not empty, only these nodes are accepted.
    pub allow: Vec<NodeId>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Which key and why.
        message: String,
    },
}

impl Config {
    /// Loads a TOML file; relative certificate paths become relative to the file's directory.
    /// Returns the config and the unknown keys found (to be reported as warnings).
    pub fn load(path: impl AsRef<Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let (mut config, unknown) =
            Config::parse(&text).map_err(|message| ConfigError::Invalid {
                path: path.display().to_string(),
                message,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.certificate.resolve_relative_to(base);
        Ok((config, unknown))
    }

    /// Parses TOML text; returns the config and the unknown keys.
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), String> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        let config = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
            .map_err(|e| e.to_string())?;
        Ok((config, unknown))
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

impl Certificates {
    /// Makes relative paths relative to `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        for p in [&mut self.key, &mut self.cert, &mut self.ca] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// A peer or listen address: a multiaddr, or FISCO BCOS's `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub Multiaddr);

impl PeerAddr {
    /// The PeerId at the end of the address, if any (`/p2p/...`).
    pub fn peer_id(&self) -> Option<libp2p::PeerId> {
        match self.0.iter().last() {
            Some(Protocol::P2p(id)) => Some(id),
            _ => None,
        }
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with('/') {
            return Multiaddr::from_str(s)
                .map(PeerAddr)
                .map_err(|e| format!("bad multiaddr `{s}`: {e}"));
        }
        if let Ok(sa) = SocketAddr::from_str(s) {
            let ip = match sa.ip() {
                IpAddr::V4(v4) => Protocol::Ip4(v4),
                IpAddr::V6(v6) => Protocol::Ip6(v6),
            };
            return Ok(PeerAddr(
                Multiaddr::empty().with(ip).with(Protocol::Tcp(sa.port())),
            ));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("bad address `{s}`: expected a multiaddr or host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad address `{s}`: port `{port}` is not a number 0-65535"))?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!("bad address `{s}`: `{host}` is not a host name"));
        }
        Ok(PeerAddr(
            Multiaddr::empty()
                .with(Protocol::Dns(host.to_string().into()))
                .with(Protocol::Tcp(port)),
        ))
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fisco_host_port_becomes_multiaddr() {
        let a: PeerAddr = "127.0.0.1:30301".parse().unwrap();
        assert_eq!(a.0.to_string(), "/ip4/127.0.0.1/tcp/30301");
        let a: PeerAddr = "[::1]:30301".parse().unwrap();
        assert_eq!(a.0.to_string(), "/ip6/::1/tcp/30301");
        let a: PeerAddr = "node1.example:30300".parse().unwrap();
        assert_eq!(a.0.to_string(), "/dns/node1.example/tcp/30300");
        assert!("127.0.0.1".parse::<PeerAddr>().is_err());
        assert!("127.0.0.1:99999".parse::<PeerAddr>().is_err());
        assert!("bad host:1".parse::<PeerAddr>().is_err());
        assert!("/ip4/1.2.3.4/tcpx/1".parse::<PeerAddr>().is_err());
    }

    #[test]
    fn unknown_keys_are_reported_and_bad_values_name_the_key() {
        let (c, unknown) = Config::parse(
            "[network]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n[certificate]\nkey = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(unknown, vec!["network.lisen".to_string()]);
        assert_eq!(c.certificate.key, PathBuf::from("k.pem"));
        assert_eq!(c.certificate.cert, PathBuf::from("node.crt"));
        let err = Config::parse("[access]\ndeny = [\"zz\"]\n").unwrap_err();
        assert!(err.contains("deny") && err.contains("not hex"), "{err}");
    }

    #[test]
    fn round_trip_through_toml() {
        let mut c = Config::default();
        c.network.peers.push("127.0.0.1:30301".parse().unwrap());
        let (back, unknown) = Config::parse(&c.to_toml()).unwrap();
        assert!(unknown.is_empty());
        assert_eq!(back, c);
    }
}
