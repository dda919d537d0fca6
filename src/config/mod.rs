//! Node configuration: a TOML file, or a FISCO BCOS `config.ini`, checked before use.
//!
//! [`Config::load`] picks the format by the file's extension, maps it, checks every value
//! ([`Config::validate`]) and returns the unknown keys as warnings. The reference below is also
//! `docs/config.md` (the same text, included), and a test holds its TOML example equal to
//! [`Config::default`].
//!
#![doc = include_str!("../../docs/config.md")]

use std::{
    collections::HashSet,
    hash::Hash,
    net::{IpAddr, SocketAddr},
    path::{Component, Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::{NodeId, connection, flood, status};

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
    /// The Prometheus endpoint of `bcos-p2p run`.
    pub metrics: Metrics,
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
    /// Most incoming connections still handshaking from one IP address (IPv6: one /64), so a
    /// few addresses holding silent connections cannot take all of `max_pending_incoming`;
    /// addresses of `[network] peers` are exempt. Default 16.
    pub max_pending_incoming_per_ip: u32,
    /// Most outgoing dials in progress. Default 256.
    pub max_pending_outgoing: u32,
    /// Most established connections. Default 1024.
    pub max_established: u32,
    /// New incoming connections per second from one IP address (IPv6: one /64), on average,
    /// before their handshake; addresses of `[network] peers` are exempt. Default 10.
    pub new_inbound_per_ip_per_s: u32,
    /// New incoming connections one IP address may open at once. Default 20.
    pub new_inbound_per_ip_burst: u32,
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
            max_pending_incoming_per_ip: 16,
            max_pending_outgoing: 256,
            max_established: 1024,
            new_inbound_per_ip_per_s: 10,
            new_inbound_per_ip_burst: 20,
        }
    }
}

impl From<&Connection> for connection::Config {
    fn from(c: &Connection) -> Self {
        connection::Config {
            redial_min: Duration::from_millis(c.redial_min_ms),
            redial_max: Duration::from_millis(c.redial_max_ms),
            ping_interval: Duration::from_millis(c.ping_interval_ms),
            ping_timeout: Duration::from_millis(c.ping_timeout_ms),
            ping_max_failures: c.ping_max_failures,
            max_pending_incoming: Some(c.max_pending_incoming),
            max_pending_incoming_per_ip: Some(c.max_pending_incoming_per_ip),
            max_pending_outgoing: Some(c.max_pending_outgoing),
            max_established: Some(c.max_established),
            new_inbound_per_ip: Some(connection::RateLimit {
                per_second: c.new_inbound_per_ip_per_s,
                burst: c.new_inbound_per_ip_burst,
            }),
            // Not in the file: the manager's own default.
            ..connection::Config::default()
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

/// `[metrics]`: where `bcos-p2p run` serves Prometheus metrics (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metrics {
    /// `ip:port` to serve `GET /metrics` on (port 0: any free port); empty: not served.
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
    /// Loads a configuration file: a FISCO BCOS `config.ini` when the name ends in `.ini` (any
    /// case), TOML otherwise. Relative paths become relative to the file's directory, and the
    /// result is validated. Returns the config and the warnings (unknown keys, FISCO settings
    /// bcos-p2p does not use), to be shown to the operator.
    pub fn load(path: impl AsRef<Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let is_ini = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ini"));
        let parsed = if is_ini {
            Config::from_fisco_ini(&text, base)
        } else {
            Config::parse(&text).map(|(mut config, warnings)| {
                config.certificate.resolve_relative_to(base);
                (config, warnings)
            })
        };
        parsed.map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates TOML text; returns the config and the unknown keys (as dotted
    /// paths, e.g. `network.lisen`). Certificate paths are left as written.
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), String> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        let config: Config = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
            .map_err(|e| e.to_string())?;
        config.validate()?;
        Ok((config, unknown))
    }

    /// Maps and validates the text of a FISCO BCOS 2.x or 3.x `config.ini` whose directory is
    /// `base_dir`: paths in it are relative to `base_dir`, and `nodes_file` is read from there.
    /// Returns the config and the warnings. The mapping is described in the module docs.
    pub fn from_fisco_ini(
        text: &str,
        base_dir: impl AsRef<Path>,
    ) -> Result<(Config, Vec<String>), String> {
        fisco::import(text, base_dir.as_ref())
    }

    /// Checks every value against the rules of the reference in the module docs. The error
    /// names each bad key (`[section] key: reason`), all of them, separated by `; `.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, reason: String| {
            if !ok {
                problems.push(format!("{key}: {reason}"));
            }
        };

        for a in &self.network.listen {
            if let Err(e) = check_listen_addr(a) {
                check(false, "[network] listen", e);
            }
        }
        for a in &self.network.peers {
            if let Err(e) = check_peer_addr(a) {
                check(false, "[network] peers", e);
            }
        }

        let cert = &self.certificate;
        for (key, p) in [("key", &cert.key), ("cert", &cert.cert), ("ca", &cert.ca)] {
            check(
                !p.as_os_str().is_empty(),
                &format!("[certificate] {key}"),
                "is empty: give a file".into(),
            );
        }

        let c = &self.connection;
        for (key, ms) in [
            ("redial_min_ms", c.redial_min_ms),
            ("redial_max_ms", c.redial_max_ms),
            ("ping_interval_ms", c.ping_interval_ms),
            ("ping_timeout_ms", c.ping_timeout_ms),
            ("handshake_timeout_ms", c.handshake_timeout_ms),
        ] {
            check_ms(&mut check, &format!("[connection] {key}"), ms);
        }
        check(
            c.redial_max_ms >= c.redial_min_ms,
            "[connection] redial_max_ms",
            format!(
                "{} is below redial_min_ms ({})",
                c.redial_max_ms, c.redial_min_ms
            ),
        );
        for (key, n) in [
            ("ping_max_failures", c.ping_max_failures),
            ("max_pending_incoming", c.max_pending_incoming),
            ("max_pending_incoming_per_ip", c.max_pending_incoming_per_ip),
            ("max_pending_outgoing", c.max_pending_outgoing),
            ("max_established", c.max_established),
            ("new_inbound_per_ip_per_s", c.new_inbound_per_ip_per_s),
            ("new_inbound_per_ip_burst", c.new_inbound_per_ip_burst),
        ] {
            check(
                n >= 1,
                &format!("[connection] {key}"),
                "0 must be at least 1".into(),
            );
        }

        let u = &self.unicast;
        check_ms(
            &mut check,
            "[unicast] request_timeout_ms",
            u.request_timeout_ms,
        );
        check(
            (MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&u.max_message_size),
            "[unicast] max_message_size",
            format!(
                "{} is not within {MIN_MESSAGE_SIZE} (1 KiB) to {MAX_MESSAGE_SIZE} (1 GiB)",
                u.max_message_size
            ),
        );
        check(
            u.max_in_flight >= 1,
            "[unicast] max_in_flight",
            "0 must be at least 1".into(),
        );
        check(
            !u.modules.is_empty(),
            "[unicast] modules",
            "is empty: serve at least one module id".into(),
        );
        check(
            u.modules.len() <= status::MAX_MODULES,
            "[unicast] modules",
            format!(
                "{} ids, more than the {} allowed",
                u.modules.len(),
                status::MAX_MODULES
            ),
        );
        if let Some(m) = first_duplicate(&u.modules) {
            check(false, "[unicast] modules", format!("{m} is listed twice"));
        }

        let f = &self.flood;
        check(f.ttl >= 1, "[flood] ttl", "0 must be 1 to 255".into());
        for t in &f.topics {
            if let Err(e) = flood::Topic::new(t.as_str()) {
                let shown: String = t.chars().take(32).collect();
                check(false, "[flood] topics", format!("`{shown}`: {e}"));
            }
        }
        check(
            f.topics.len() <= flood::wire::MAX_TOPICS,
            "[flood] topics",
            format!(
                "{} topics, more than the {} allowed",
                f.topics.len(),
                flood::wire::MAX_TOPICS
            ),
        );
        if let Some(t) = first_duplicate(&f.topics) {
            check(false, "[flood] topics", format!("`{t}` is listed twice"));
        }
        check(
            f.max_queue_bytes >= u.max_message_size,
            "[flood] max_queue_bytes",
            format!(
                "{} is below unicast.max_message_size ({}): the largest message could never \
                 be queued",
                f.max_queue_bytes, u.max_message_size
            ),
        );

        let s = &self.status;
        check_ms(
            &mut check,
            "[status] announce_interval_ms",
            s.announce_interval_ms,
        );
        check(
            s.max_payload <= u.max_message_size,
            "[status] max_payload",
            format!(
                "{} is above unicast.max_message_size ({})",
                s.max_payload, u.max_message_size
            ),
        );

        let m = &self.metrics.listen;
        check(
            m.is_empty() || m.parse::<SocketAddr>().is_ok(),
            "[metrics] listen",
            format!("`{m}` is not `<ip>:<port>` (or empty)"),
        );

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// Smallest `unicast.max_message_size`: 1 KiB.
pub const MIN_MESSAGE_SIZE: usize = 1024;
/// Largest `unicast.max_message_size`: 1 GiB.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024 * 1024;
/// Longest duration any `*_ms` key may give: one day. Bounds timer arithmetic.
pub const MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// Checks a millisecond value is 1 to [`MAX_MS`].
fn check_ms(check: &mut impl FnMut(bool, &str, String), key: &str, ms: u64) {
    check(
        (1..=MAX_MS).contains(&ms),
        key,
        format!("{ms} is not within 1 to {MAX_MS} ms (one day)"),
    );
}

/// The first item that occurs twice.
fn first_duplicate<T: Eq + Hash>(items: &[T]) -> Option<&T> {
    let mut seen = HashSet::new();
    items.iter().find(|&i| !seen.insert(i))
}

/// Drops duplicates, keeping the first of each.
fn dedup<T: Eq + Hash + Clone>(items: &mut Vec<T>) {
    let mut seen = HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// A listen address must be `/ip4|ip6/<ip>/tcp/<port>`: what the TCP transport can bind.
fn check_listen_addr(a: &PeerAddr) -> Result<(), String> {
    let mut parts = a.0.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(_)), None) => Ok(()),
        _ => Err(format!(
            "`{a}` cannot be listened on: expected /ip4/<ip>/tcp/<port>, /ip6/<ip>/tcp/<port> \
             or <ip>:<port>"
        )),
    }
}

/// A peer address must be an IP or DNS name, a non-zero TCP port, and optionally `/p2p/<id>`.
fn check_peer_addr(a: &PeerAddr) -> Result<(), String> {
    let mut parts = a.0.iter();
    let host = parts.next();
    let port = parts.next();
    let rest = (parts.next(), parts.next());
    let host_ok = matches!(
        host,
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    let rest_ok = matches!(rest, (None, None) | (Some(Protocol::P2p(_)), None));
    match port {
        Some(Protocol::Tcp(0)) if host_ok && rest_ok => {
            Err(format!("`{a}` has port 0, which cannot be dialled"))
        }
        Some(Protocol::Tcp(_)) if host_ok && rest_ok => Ok(()),
        _ => Err(format!(
            "`{a}` cannot be dialled: expected an /ip4, /ip6, /dns, /dns4 or /dns6 host, \
             /tcp/<port> and optionally /p2p/<PeerId>, or host:port"
        )),
    }
}

/// Makes `p` tidy for display and comparison: no `.` components, no doubled separators.
fn tidy(p: PathBuf) -> PathBuf {
    let tidy: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if tidy.as_os_str().is_empty() && !p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        tidy
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

/// Import of a FISCO BCOS `config.ini` (2.x and 3.x): the P2P sections only.
mod fisco {
    use super::*;

    /// One `key=value` line.
    pub(super) struct Entry {
        pub key: String,
        pub value: String,
        pub line: usize,
    }

    /// A section: every `[name]` block of that name, merged.
    pub(super) struct Section {
        pub name: String,
        pub entries: Vec<Entry>,
    }

    impl Section {
        fn get(&self, key: &str) -> Option<&Entry> {
            self.entries.iter().find(|e| e.key == key)
        }

        /// `[section] key: reason (line N)`.
        fn bad(&self, e: &Entry, reason: impl std::fmt::Display) -> String {
            format!("[{}] {}: {reason} (line {})", self.name, e.key, e.line)
        }

        /// The warning for a key this section does not have: a FISCO setting bcos-p2p does
        /// not use (`known`), or a typo.
        fn unused(&self, e: &Entry, known: &[&str]) -> String {
            let what = if known.contains(&e.key.as_str()) {
                "a FISCO BCOS setting bcos-p2p does not use; ignored"
            } else {
                "unknown key; ignored"
            };
            format!("[{}] {} (line {}): {what}", self.name, e.key, e.line)
        }

        /// The value of `e` with every `${name}` replaced by the value of key `name` of this
        /// section.
        fn substituted(&self, e: &Entry) -> Result<String, String> {
            let mut out = String::new();
            let mut rest = e.value.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find('}')
                    .ok_or_else(|| self.bad(e, format!("`{}`: `${{` without `}}`", e.value)))?;
                let name = &after[..end];
                if name == e.key {
                    return Err(self.bad(e, format!("`${{{name}}}` refers to itself")));
                }
                let value = self.get(name).ok_or_else(|| {
                    self.bad(
                        e,
                        format!("`${{{name}}}`: [{}] has no key `{name}`", self.name),
                    )
                })?;
                if value.value.contains("${") {
                    return Err(self.bad(
                        e,
                        format!(
                            "`${{{name}}}` is itself `{}`; nesting is not supported",
                            value.value
                        ),
                    ));
                }
                out.push_str(&value.value);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            Ok(out)
        }
    }

    /// Cuts a comment (`;` or `#` at the start, or after whitespace) off a line.
    fn strip_comment(line: &str) -> &str {
        let mut prev_space = true;
        for (i, c) in line.char_indices() {
            if (c == ';' || c == '#') && prev_space {
                return &line[..i];
            }
            prev_space = c.is_whitespace();
        }
        line
    }

    /// Splits ini text into sections (repeated headers merged, in order of first appearance).
    /// Keys before any section are warned about and dropped.
    pub(super) fn parse(text: &str) -> Result<(Vec<Section>, Vec<String>), String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut sections: Vec<Section> = Vec::new();
        let mut current: Option<usize> = None;
        let mut warnings = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = strip_comment(raw).trim();
            if l.is_empty() {
                continue;
            }
            if let Some(header) = l.strip_prefix('[') {
                let name = header
                    .strip_suffix(']')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| format!("line {line}: `{l}` is not a `[section]` header"))?;
                current = Some(match sections.iter().position(|s| s.name == name) {
                    Some(at) => at,
                    None => {
                        sections.push(Section {
                            name: name.to_string(),
                            entries: Vec::new(),
                        });
                        sections.len() - 1
                    }
                });
                continue;
            }
            let (key, value) = l
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    format!("line {line}: `{l}` is neither a `[section]` nor `key=value`")
                })?;
            let Some(at) = current else {
                warnings.push(format!("{key} (line {line}): outside any section; ignored"));
                continue;
            };
            let section = &mut sections[at];
            if let Some(first) = section.get(key) {
                return Err(format!(
                    "[{}] {key}: given twice (lines {} and {line})",
                    section.name, first.line
                ));
            }
            section.entries.push(Entry {
                key: key.to_string(),
                value: value.to_string(),
                line,
            });
        }
        Ok((sections, warnings))
    }

    /// FISCO `[p2p]` keys bcos-p2p does not use (3.x: `sm_ssl`, `enable_ssl_verify`, ...).
    const P2P_UNUSED: &[&str] = &[
        "sm_ssl",
        "enable_compress",
        "enable_ssl_verify",
        "enable_rip_protocol",
        "uuid",
    ];
    /// FISCO 2.x `[network_security]` keys bcos-p2p does not use.
    const SECURITY_UNUSED: &[&str] = &["ca_path", "en_key", "en_cert"];
    /// FISCO 3.x `[cert]` keys bcos-p2p does not use (SM certificates, extra CAs).
    const CERT_UNUSED: &[&str] = &[
        "multi_ca_path",
        "sm_ca_cert",
        "sm_node_key",
        "sm_node_cert",
        "sm_ennode_key",
        "sm_ennode_cert",
    ];

    /// The mapping described in the module docs.
    pub(super) fn import(text: &str, base_dir: &Path) -> Result<(Config, Vec<String>), String> {
        let (sections, mut warnings) = parse(text)?;
        let mut config = Config::default();
        let mut security = None;
        let mut cert = None;
        let mut skipped = Vec::new();
        for s in &sections {
            match s.name.as_str() {
                "p2p" => config.network = p2p(s, base_dir, &mut warnings)?,
                "certificate_blacklist" => config.access.deny = node_ids(s, "crl.", &mut warnings)?,
                "certificate_whitelist" => {
                    config.access.allow = node_ids(s, "cal.", &mut warnings)?
                }
                "network_security" => security = Some(s),
                "cert" => cert = Some(s),
                other => skipped.push(other),
            }
        }
        if !skipped.is_empty() {
            tracing::debug!(sections = ?skipped, "config.ini sections not about P2P skipped");
        }
        config.certificate = match (security, cert) {
            (Some(_), Some(_)) => {
                return Err(
                    "[network_security] (FISCO 2.x) and [cert] (FISCO 3.x) both give the \
                     certificates; keep one"
                        .into(),
                );
            }
            (Some(s), None) => certificates(
                s,
                base_dir,
                ("data_path", "conf/"),
                [
                    ("key", "node.key"),
                    ("cert", "node.crt"),
                    ("ca_cert", "ca.crt"),
                ],
                SECURITY_UNUSED,
                &mut warnings,
            )?,
            (None, Some(s)) => certificates(
                s,
                base_dir,
                ("ca_path", "./conf"),
                [
                    ("node_key", "ssl.key"),
                    ("node_cert", "ssl.crt"),
                    ("ca_cert", "ca.crt"),
                ],
                CERT_UNUSED,
                &mut warnings,
            )?,
            (None, None) => {
                let mut c = Certificates::default();
                c.resolve_relative_to(base_dir);
                c
            }
        };
        config.validate()?;
        Ok((config, warnings))
    }

    /// `[p2p]`: the listen address and the peers (`node.N`, `nodes_path`/`nodes_file`).
    fn p2p(s: &Section, base_dir: &Path, warnings: &mut Vec<String>) -> Result<Network, String> {
        let mut ip = IpAddr::from([0, 0, 0, 0]);
        let mut port = DEFAULT_PORT;
        let mut peers = Vec::new();
        let (mut nodes_path, mut nodes_file) = (None, None);
        for e in &s.entries {
            match e.key.as_str() {
                "listen_ip" => {
                    let v = e.value.trim_start_matches('[').trim_end_matches(']');
                    let reason = || format!("`{}` is not an IPv4 or IPv6 address", e.value);
                    ip = v.parse().map_err(|_| s.bad(e, reason()))?;
                }
                "listen_port" => {
                    let reason = || format!("`{}` is not a port 0-65535", e.value);
                    port = e.value.parse().map_err(|_| s.bad(e, reason()))?;
                }
                "nodes_path" => nodes_path = Some(e),
                "nodes_file" => nodes_file = Some(e),
                "sm_ssl" if e.value == "false" => {}
                "sm_ssl" => warnings.push(format!(
                    "[p2p] sm_ssl (line {}): `{}`: SM (guomi) TLS is not supported; \
                     standard TLS is used",
                    e.line, e.value
                )),
                k if k.len() > "node.".len() && k.starts_with("node.") => {
                    peers.push(peer(&e.value).map_err(|reason| s.bad(e, reason))?);
                }
                _ => warnings.push(s.unused(e, P2P_UNUSED)),
            }
        }
        if let Some(e) = nodes_file.or(nodes_path) {
            let dir = match nodes_path {
                Some(p) => base_dir.join(&p.value),
                None => base_dir.to_path_buf(),
            };
            let file = tidy(dir.join(nodes_file.map_or("nodes.json", |f| f.value.as_str())));
            for (i, text) in nodes_json(&file)
                .map_err(|reason| s.bad(e, format!("{}: {reason}", file.display())))?
                .into_iter()
                .enumerate()
            {
                let addr = peer(&text).map_err(|reason| {
                    s.bad(e, format!("{} entry {i}: {reason}", file.display()))
                })?;
                peers.push(addr);
            }
        }
        dedup(&mut peers);
        Ok(Network {
            listen: vec![PeerAddr(
                Multiaddr::empty()
                    .with(match ip {
                        IpAddr::V4(v4) => Protocol::Ip4(v4),
                        IpAddr::V6(v6) => Protocol::Ip6(v6),
                    })
                    .with(Protocol::Tcp(port)),
            )],
            peers,
            security: Security::CaTls,
        })
    }

    /// A peer address from FISCO's `host:port` (or a multiaddr), checked to be dialable.
    fn peer(text: &str) -> Result<PeerAddr, String> {
        if text.is_empty() {
            return Err("empty; give host:port or remove the line".into());
        }
        let addr: PeerAddr = text.parse()?;
        check_peer_addr(&addr)?;
        Ok(addr)
    }

    /// The `nodes` of a FISCO 3.x `nodes.json`: `{"nodes":["host:port",...]}`.
    fn nodes_json(file: &Path) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: Vec<String>,
        }
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
        serde_json::from_str::<Nodes>(&text)
            .map(|n| n.nodes)
            .map_err(|e| format!("not {{\"nodes\":[\"host:port\",...]}}: {e}"))
    }

    /// `[certificate_blacklist]` / `[certificate_whitelist]`: the NodeIds under `prefix.N`.
    fn node_ids(
        s: &Section,
        prefix: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<NodeId>, String> {
        let mut ids = Vec::new();
        for e in &s.entries {
            if e.key.len() > prefix.len() && e.key.starts_with(prefix) {
                ids.push(NodeId::from_str(&e.value).map_err(|err| s.bad(e, err))?);
            } else {
                warnings.push(s.unused(e, &[]));
            }
        }
        dedup(&mut ids);
        Ok(ids)
    }

    /// The key, certificate and CA paths of `[network_security]` (2.x) or `[cert]` (3.x): `dir`
    /// names the directory key and its default, `files` the key and default file name of the
    /// node key, node certificate and CA certificate, in that order.
    fn certificates(
        s: &Section,
        base_dir: &Path,
        dir: (&str, &str),
        files: [(&str, &str); 3],
        unused: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Certificates, String> {
        for e in &s.entries {
            if e.key != dir.0 && !files.iter().any(|(k, _)| *k == e.key) {
                warnings.push(s.unused(e, unused));
            }
        }
        let value = |e: &Entry| -> Result<String, String> {
            let v = s.substituted(e)?;
            if v.is_empty() {
                return Err(s.bad(e, "is empty; give a path"));
            }
            Ok(v)
        };
        let dir = match s.get(dir.0) {
            Some(e) => base_dir.join(value(e)?),
            None => base_dir.join(dir.1),
        };
        let [key, cert, ca] = files.map(|(key, default)| -> Result<PathBuf, String> {
            Ok(tidy(match s.get(key) {
                None => dir.join(default),
                // `${data_path}/node.key` says where it is; a bare name is in the directory.
                Some(e) if e.value.contains("${") => base_dir.join(value(e)?),
                Some(e) => dir.join(value(e)?),
            }))
        });
        Ok(Certificates {
            key: key?,
            cert: cert?,
            ca: ca?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference text (module docs and `docs/config.md` alike).
    const REFERENCE: &str = include_str!("../../docs/config.md");

    /// The fenced blocks of `lang` in the reference, in order.
    fn blocks(lang: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        for line in REFERENCE.lines() {
            match &mut current {
                None if line.trim() == format!("```{lang}") => current = Some(String::new()),
                Some(text) if line.trim() == "```" => {
                    out.push(std::mem::take(text));
                    current = None;
                }
                Some(text) => {
                    text.push_str(line);
                    text.push('\n');
                }
                None => {}
            }
        }
        out
    }

    #[test]
    fn documented_example_lists_every_key_with_its_default() {
        let example = &blocks("toml")[0];
        let (config, unknown) = Config::parse(example).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(config, Config::default());
        // Every key is written out: the example's table is the default's, key for key.
        let documented: toml::Table = example.parse().unwrap();
        let default: toml::Table = Config::default().to_toml().parse().unwrap();
        assert_eq!(documented, default);
    }

    #[test]
    fn documented_fisco_examples_map_as_documented() {
        let ini = blocks("ini");
        let (config, warnings) = Config::from_fisco_ini(&ini[0], "node0").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (expected, _) = Config::parse(&blocks("toml")[1]).unwrap();
        assert_eq!(config, expected);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nodes.json"),
            r#"{"nodes":["127.0.0.1:30300","127.0.0.1:30301"]}"#,
        )
        .unwrap();
        let (config, warnings) = Config::from_fisco_ini(&ini[1], dir.path()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.network.peers, expected.network.peers);
        assert_eq!(config.certificate.key, dir.path().join("conf/ssl.key"));
    }

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

    #[test]
    fn addresses_are_checked_for_their_use() {
        let ok = |s: &str| s.parse::<PeerAddr>().unwrap();
        assert!(check_listen_addr(&ok("/ip6/::/tcp/0")).is_ok());
        assert!(check_listen_addr(&ok("[::]:30300")).is_ok());
        assert!(check_listen_addr(&ok("node.example:30300")).is_err());
        assert!(check_listen_addr(&ok("/ip4/0.0.0.0/udp/1")).is_err());
        let id = "/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        assert!(check_peer_addr(&ok(&format!("/ip4/1.2.3.4/tcp/1{id}"))).is_ok());
        assert!(check_peer_addr(&ok("/dns4/a.example/tcp/1")).is_ok());
        assert!(
            check_peer_addr(&ok("1.2.3.4:0"))
                .unwrap_err()
                .contains("port 0")
        );
        assert!(check_peer_addr(&ok("/ip4/1.2.3.4/tcp/1/ws")).is_err());
        assert!(check_peer_addr(&ok("/ip4/1.2.3.4")).is_err());
    }

    fn assert_all_in(err: &str, needles: &[&str]) {
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn validation_names_every_bad_key() {
        let mut c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        c.connection.redial_min_ms = 0;
        c.connection.ping_max_failures = 0;
        c.unicast.modules = vec![];
        c.flood.ttl = 0;
        c.flood.topics = vec![String::new(), "t".repeat(256)];
        assert_all_in(
            &c.validate().unwrap_err(),
            &[
                "[connection] redial_min_ms: 0 is not within 1 to 86400000",
                "[connection] ping_max_failures: 0 must be at least 1",
                "[unicast] modules: is empty",
                "[flood] ttl: 0 must be 1 to 255",
                "[flood] topics: ``: invalid topic: topic of 0 bytes",
                "topic of 256 bytes",
            ],
        );

        let mut c = Config::default();
        c.connection.redial_max_ms = 999;
        c.unicast.max_message_size = 100;
        c.unicast.modules = vec![1, 2, 1];
        c.flood.topics = vec!["a".into(), "a".into()];
        c.certificate.ca = PathBuf::new();
        c.connection.ping_interval_ms = MAX_MS + 1;
        assert_all_in(
            &c.validate().unwrap_err(),
            &[
                "[connection] redial_max_ms: 999 is below redial_min_ms (1000)",
                "[connection] ping_interval_ms: 86400001 is not within",
                "[unicast] max_message_size: 100 is not within 1024 (1 KiB)",
                "[unicast] modules: 1 is listed twice",
                "[flood] topics: `a` is listed twice",
                "[status] max_payload: 1048576 is above unicast.max_message_size (100)",
                "[certificate] ca: is empty",
            ],
        );

        let mut c = Config::default();
        c.flood.max_queue_bytes = c.unicast.max_message_size - 1;
        let err = c.validate().unwrap_err();
        assert!(err.starts_with("[flood] max_queue_bytes: "), "{err}");
    }

    #[test]
    fn ini_syntax() {
        let (sections, warnings) = fisco::parse(
            "\u{feff}stray=1\n; comment\n# comment\n[p2p] ; trailing\n  a = 1 ; note\n\tb=x#y\n\
             [other]\nc=\n[p2p]\nd==2\n",
        )
        .unwrap();
        assert_eq!(
            warnings,
            vec!["stray (line 1): outside any section; ignored"]
        );
        let p2p = &sections[0];
        let kv: Vec<_> = p2p
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(kv, [("a", "1", 5), ("b", "x#y", 6), ("d", "=2", 10)]);
        assert_eq!(sections[1].entries[0].value, "");

        let err = fisco::parse("[p2p]\nlisten_port=1\nlisten_port=2\n")
            .err()
            .unwrap();
        assert_eq!(err, "[p2p] listen_port: given twice (lines 2 and 3)");
        let err = fisco::parse("[p2p\n").err().unwrap();
        assert!(err.starts_with("line 1: `[p2p` is not"), "{err}");
        let err = fisco::parse("[]\n").err().unwrap();
        assert!(err.starts_with("line 1:"), "{err}");
        let err = fisco::parse("[p2p]\nnode.0\n").err().unwrap();
        assert_eq!(
            err,
            "line 2: `node.0` is neither a `[section]` nor `key=value`"
        );
    }

    #[test]
    fn ini_substitution() {
        let base = Path::new("/n");
        let cert = |body: &str| {
            Config::from_fisco_ini(&format!("[network_security]\n{body}"), base)
                .map(|(c, w)| (c.certificate, w))
        };
        let (c, w) =
            cert("data_path=d\nkey=${data_path}/k\ncert=/abs/c\nca_cert=ca.pem\n").unwrap();
        assert!(w.is_empty());
        assert_eq!(c.key, Path::new("/n/d/k"));
        assert_eq!(c.cert, Path::new("/abs/c"));
        assert_eq!(c.ca, Path::new("/n/d/ca.pem"));
        let (c, _) = cert("").unwrap();
        assert_eq!(c.key, Path::new("/n/conf/node.key"));
        let err = cert("key=${nope}/k\n").unwrap_err();
        assert_eq!(
            err,
            "[network_security] key: `${nope}`: [network_security] has no key `nope` (line 2)"
        );
        assert!(cert("key=${data_path/k\n").unwrap_err().contains("without"));
        assert!(
            cert("key=${key}\n")
                .unwrap_err()
                .contains("refers to itself")
        );
        let err = cert("a=${b}\nb=x\nkey=${a}\n").unwrap_err();
        assert!(err.contains("nesting"), "{err}");
        assert!(
            cert("key=\n")
                .unwrap_err()
                .contains("[network_security] key: is empty")
        );
    }

    #[test]
    fn metrics_listen_is_an_ip_port_or_empty() {
        let mut c = Config::default();
        assert_eq!(c.metrics.listen_addr(), None);
        c.metrics.listen = "127.0.0.1:0".into();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.metrics.listen_addr(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        c.metrics.listen = "localhost:9100".into();
        assert_all_in(
            &c.validate().unwrap_err(),
            &["[metrics] listen: `localhost:9100` is not `<ip>:<port>` (or empty)"],
        );
    }
}
