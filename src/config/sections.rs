//! The tables of the TOML file (`[network]`, `[connection]`, ...), one type each, with their
//! defaults. A setting that belongs to another part of bcos-p2p (the connection manager, a
//! protocol crate, the CA-TLS upgrade) takes its default from there, converted to the file's
//! units, so each default is written once.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::Config;
use super::{DEFAULT_MODULE, DEFAULT_PORT, PeerAddr};
use crate::{NodeId, ca_tls, connection, flood, route, status, unicast};

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
    /// Most incoming connections still handshaking from strangers (addresses of `[network]
    /// peers` have slots of their own: 4 per peer, at least 16). Default 256.
    pub max_pending_incoming: u32,
    /// Most incoming connections still handshaking from one IP address (IPv6: one /48), so a
    /// few addresses holding silent connections cannot take all of `max_pending_incoming`;
    /// addresses of `[network] peers` are exempt. Default 16.
    pub max_pending_incoming_per_ip: u32,
    /// Most outgoing dials in progress. Default 256.
    pub max_pending_outgoing: u32,
    /// Most established connections; one slot per configured peer not connected is kept from
    /// strangers. Default 1024.
    pub max_established: u32,
    /// New incoming connections per second from one IP address (IPv6: one /64), on average,
    /// before their handshake; addresses of `[network] peers` are exempt. Default 10.
    pub new_inbound_per_ip_per_s: u32,
    /// New incoming connections one IP address may open at once. Default 20.
    pub new_inbound_per_ip_burst: u32,
    /// How far a peer's score may fall before it is banned (bad signatures and malformed
    /// frames cost 40, frames over the flood budget 20 a second, unsolicited answers 10,
    /// too-old copies 1, at most 2 a second); 0 bans nobody. Default 100.
    pub ban_threshold: u32,
    /// A score halves back toward neutral in this time, in ms. Default 60000.
    pub score_half_life_ms: u64,
    /// How long a first ban lasts, in ms; each further ban of the node doubles it. Default
    /// 60000.
    pub ban_min_ms: u64,
    /// The longest ban, in ms. Default 86400000 (24 h).
    pub ban_max_ms: u64,
    /// The longest ban of a `[network] peers` node, in ms: configured peers always come back
    /// (they are dialled again when the ban ends). Default 300000 (5 min).
    pub ban_max_configured_ms: u64,
}

impl Default for Connection {
    /// The connection manager's defaults ([`connection::Config`]) and the CA-TLS handshake's.
    fn default() -> Self {
        let c = connection::Config::default();
        let rate = c.new_inbound_per_ip;
        Connection {
            redial_min_ms: ms(c.redial_min),
            redial_max_ms: ms(c.redial_max),
            ping_interval_ms: ms(c.ping_interval),
            ping_timeout_ms: ms(c.ping_timeout),
            ping_max_failures: c.ping_max_failures,
            handshake_timeout_ms: ms(ca_tls::DEFAULT_HANDSHAKE_TIMEOUT),
            max_pending_incoming: limit(c.max_pending_incoming),
            max_pending_incoming_per_ip: limit(c.max_pending_incoming_per_ip),
            max_pending_outgoing: limit(c.max_pending_outgoing),
            max_established: limit(c.max_established),
            new_inbound_per_ip_per_s: limit(rate.map(|r| r.per_second)),
            new_inbound_per_ip_burst: limit(rate.map(|r| r.burst)),
            ban_threshold: c.ban_threshold,
            score_half_life_ms: ms(c.score_half_life),
            ban_min_ms: ms(c.ban_min),
            ban_max_ms: ms(c.ban_max),
            ban_max_configured_ms: ms(c.ban_max_configured),
        }
    }
}

impl Connection {
    /// Lifts the per-address admission limits (`max_pending_incoming_per_ip`, the
    /// `new_inbound_per_ip_*` rate) for nodes that all share one address, as the nodes of a
    /// test, benchmark or example cluster on 127.0.0.1 do: there the limits would throttle the
    /// mesh like a flood from one host. No deployment shares an address; the global limits
    /// still apply.
    pub fn share_one_host(&mut self) {
        self.max_pending_incoming_per_ip = self.max_pending_incoming;
        self.new_inbound_per_ip_per_s = 100_000;
        self.new_inbound_per_ip_burst = 100_000;
    }
}

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
    /// Most bytes of a peer's requests being handled plus answers to it not written yet, per
    /// connection (raised to `max_message_size` when below it). Default 67108864 (64 MiB).
    pub max_pending_bytes: usize,
    /// Module ids this node serves. Default `[1]`.
    pub modules: Vec<u16>,
}

impl Default for Unicast {
    /// The unicast crate's defaults ([`unicast::Config`]), serving [`DEFAULT_MODULE`].
    fn default() -> Self {
        let u = unicast::Config::default();
        Unicast {
            request_timeout_ms: ms(u.request_timeout),
            max_message_size: u.max_frame_size,
            max_in_flight: u.max_in_flight,
            max_pending_bytes: u.max_pending_bytes,
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
    /// Most multicast/broadcast frames per second taken from one peer (bursts of two seconds'
    /// worth); more are dropped and the peer's score lowered. 0: no limit. Default 20000.
    pub budget_frames_per_s: u32,
    /// Most multicast/broadcast bytes per second taken from one peer, likewise. 0: no limit.
    /// Default 268435456 (256 MiB).
    pub budget_bytes_per_s: u64,
    /// Most control frames per second (announcements, pulls, record headers and requests,
    /// digests, certificate requests and chains) taken from one peer, likewise. 0: no limit.
    /// Default 1000.
    pub control_budget_frames_per_s: u32,
    /// Most control bytes per second taken from one peer, likewise (an announced or pulled id
    /// counts 18 bytes). 0: no limit. Default 8388608 (8 MiB).
    pub control_budget_bytes_per_s: u64,
}

impl Default for Flood {
    /// The flood crate's defaults ([`flood::Config`]), no topics.
    fn default() -> Self {
        let f = flood::Config::default();
        Flood {
            ttl: f.ttl,
            topics: Vec::new(),
            max_queue_bytes: f.max_queue_bytes,
            budget_frames_per_s: f.budget_frames_per_s,
            budget_bytes_per_s: f.budget_bytes_per_s,
            control_budget_frames_per_s: f.control_budget_frames_per_s,
            control_budget_bytes_per_s: f.control_budget_bytes_per_s,
        }
    }
}

/// `[route]`: routed connections to nodes with no direct connection, and relaying.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Route {
    /// Relay circuits for other nodes. Default true.
    pub relay: bool,
    /// Take routed connections to this node. Default true.
    pub accept: bool,
    /// Open routed connections for requests to nodes with no direct connection. Default true.
    pub dial: bool,
    /// Hops of the longest path opened or relayed (relays + 1), 2–16. Default 8.
    pub max_hops: usize,
    /// Most circuits relayed at once. Default 256.
    pub max_circuits: usize,
    /// Most circuits relayed at once for one previous hop. Default 32.
    pub max_circuits_per_peer: usize,
    /// Relayed bytes per second for one previous hop's circuits. 0: no limit. Default
    /// 67108864 (64 MiB).
    pub relay_bytes_per_s: u64,
    /// A routed connection with no unicast traffic for this long is closed, in ms. Default
    /// 60000.
    pub idle_timeout_ms: u64,
}

impl Default for Route {
    /// The route crate's defaults ([`route::Config`]).
    fn default() -> Self {
        let r = route::Config::default();
        Route {
            relay: r.relay,
            accept: r.accept,
            dial: true,
            max_hops: r.max_hops,
            max_circuits: r.max_circuits,
            max_circuits_per_peer: r.max_circuits_per_peer,
            relay_bytes_per_s: r.relay_bytes_per_s,
            idle_timeout_ms: ms(unicast::Config::default().routed_idle_timeout),
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
    /// The status crate's defaults ([`status::Config`]).
    fn default() -> Self {
        let s = status::Config::default();
        Status {
            announce_interval_ms: ms(s.announce_interval),
            max_payload: s.max_payload,
        }
    }
}

/// `[metrics]`: where `bcos-p2p run` serves Prometheus metrics (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metrics {
    /// `ip:port` to serve `GET /metrics` (and the network view: `/network`, `/network.json`,
    /// `/peers`) on (port 0: any free port); empty: not served.
    /// `run --metrics` overrides it. Default empty.
    pub listen: String,
}

impl Metrics {
    /// The address to serve on; `None` when empty (or invalid: [`Config::validate`] says so).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
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
    /// How connections are secured. Default [`Security::CaTls`].
    pub security: Security,
}

/// `[network] security`: the security handshake of every connection. The two never mix: a
/// CA-mode node and an open-mode node refuse each other, each saying why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// `"ca-tls"`: CA-authenticated TLS (`/bcos-tls/1.0.0`), with `[certificate]`.
    #[default]
    #[serde(rename = "ca-tls")]
    CaTls,
    /// `"libp2p-tls"`: open mode, stock libp2p TLS (`/tls/1.0.0`) with the node key as the
    /// libp2p identity; no certificates. Any node with a secp256k1, P-256 or RSA key may connect
    /// (restrict it with `[access]`).
    #[serde(rename = "libp2p-tls")]
    Libp2pTls,
}

impl std::fmt::Display for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Security::CaTls => "ca-tls",
            Security::Libp2pTls => "libp2p-tls",
        })
    }
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
            security: Security::default(),
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
    /// Certificate revocation lists (PEM or DER, as `openssl ca -gencrl` writes them), each
    /// signed by a certificate of `ca` or of `cert`'s chain. Default none.
    pub crl: Vec<PathBuf>,
    /// The encryption key of a 国密 (SM2) node, FISCO's `sm_enssl.key` (2.x `gmennode.key`);
    /// given with `enc_cert`, or not at all. Checked at start, not used by TLS 1.3. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<PathBuf>,
    /// The encryption certificate of a 国密 node, FISCO's `sm_enssl.crt` (2.x `gmennode.crt`):
    /// it must certify `enc_key`, chain to `ca`, and allow keyAgreement or keyEncipherment.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_cert: Option<PathBuf>,
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates {
            key: "node.key".into(),
            cert: "node.crt".into(),
            ca: "ca.crt".into(),
            crl: Vec::new(),
            enc_key: None,
            enc_cert: None,
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

impl Certificates {
    /// The encryption pair (`enc_key`, `enc_cert`), when both are given.
    pub fn enc_pair(&self) -> Option<(&Path, &Path)> {
        Some((self.enc_key.as_deref()?, self.enc_cert.as_deref()?))
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let files = [&mut self.key, &mut self.cert, &mut self.ca];
        let enc = self.enc_key.iter_mut().chain(self.enc_cert.iter_mut());
        for p in files.into_iter().chain(self.crl.iter_mut()).chain(enc) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// A duration in the file's unit, ms (saturating).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A limit of the connection manager as the file writes it; the file has no "no limit", so
/// none becomes the largest value (the manager's defaults all have one).
fn limit(n: Option<u32>) -> u32 {
    n.unwrap_or(u32::MAX)
}
