//! Addresses as the config writes them: a multiaddr or FISCO BCOS's `host:port`
//! ([`PeerAddr`]), and whether an address can be listened on or dialled.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

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

/// A listen address must be `/ip4|ip6/<ip>/tcp/<port>`: what the TCP transport can bind.
pub(super) fn check_listen_addr(a: &PeerAddr) -> Result<(), String> {
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
pub(super) fn check_peer_addr(a: &PeerAddr) -> Result<(), String> {
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
}
