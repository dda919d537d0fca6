//! The events `bcos-p2p run --json` prints, one JSON object per line (see the CLI contract in
//! docs/ARCHITECTURE.md), and their human-readable form.

use serde::Serialize;

use bcos_p2p::NodeId;

/// One line of `run --json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The node listens.
    Ready {
        /// This node.
        node_id: NodeId,
        /// Listen addresses.
        listen: Vec<String>,
        /// Where Prometheus metrics are served (`ip:port`), with `run --metrics`.
        #[serde(skip_serializing_if = "Option::is_none")]
        metrics: Option<String>,
    },
    /// The first connection to a peer is up.
    Connected {
        /// The peer.
        node_id: Option<NodeId>,
        /// Its address.
        addr: String,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// The peer.
        node_id: Option<NodeId>,
        /// Why.
        reason: String,
    },
    /// A connection was refused during the handshake (either side refused).
    Refused {
        /// The remote address.
        addr: String,
        /// Why, for people.
        reason: String,
        /// Why, as a stable code (`unknown_issuer`, `expired`, `denied`, ...).
        code: String,
        /// The peer, when its certificate was read.
        node_id: Option<NodeId>,
    },
    /// A node was banned for misbehaving (its connections closed, new ones refused with the
    /// code `banned` until the ban ends).
    Banned {
        /// The node.
        node_id: NodeId,
        /// How long the ban lasts, in ms.
        for_ms: u64,
        /// The kind of offence that brought its score down (`bad_signature`, `malformed`,
        /// `too_old`, `over_budget`, `unsolicited`).
        reason: String,
    },
    /// A peer's request (the node answers `echo:<data>` unless told otherwise).
    Request {
        /// The peer.
        from: NodeId,
        /// The module.
        module: u16,
        /// The payload (UTF-8; invalid bytes replaced).
        data: String,
    },
    /// The outcome of a `request` or `topic-request` command; ids count those commands from 1.
    Response {
        /// The command's id.
        id: u64,
        /// Whether a reply came.
        ok: bool,
        /// The reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// Why it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Round trip, in ms.
        #[serde(skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<f64>,
        /// Who answered (for topic requests).
        #[serde(skip_serializing_if = "Option::is_none")]
        node_id: Option<NodeId>,
    },
    /// A peer's one-way message.
    Oneway {
        /// The peer.
        from: NodeId,
        /// The module.
        module: u16,
        /// The payload.
        data: String,
    },
    /// A multicast (for a topic this node subscribes to) or a broadcast.
    Message {
        /// `multicast` or `broadcast`.
        kind: MessageKind,
        /// The topic of a multicast.
        topic: Option<String>,
        /// The origin.
        from: NodeId,
        /// The payload.
        data: String,
        /// Hops it travelled.
        hops: u8,
    },
    /// A peer's status changed.
    Status {
        /// The peer.
        node_id: NodeId,
        /// Its seq.
        seq: u64,
        /// Its payload.
        data: String,
    },
    /// Answer to `peers`.
    Peers {
        /// Connected peers.
        peers: Vec<PeerInfo>,
    },
    /// The settings were read again (SIGHUP or SIGUSR1) and are in force.
    Reloaded {
        /// Peer addresses now configured that were not (dialled now).
        added: Vec<String>,
        /// Peer addresses no longer configured (no longer redialled).
        removed: Vec<String>,
        /// Peers whose sessions were closed: now denied, not allowed or revoked.
        closed: Vec<NodeId>,
        /// The CRLs in force.
        crls: usize,
    },
    /// A command could not be done.
    Error {
        /// Why.
        message: String,
    },
}

/// Which kind of flood message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// To a topic's subscribers.
    Multicast,
    /// To every node.
    Broadcast,
}

/// One connected peer in a [`Event::Peers`] answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerInfo {
    /// The peer.
    pub node_id: Option<NodeId>,
    /// The address of a connection to it.
    pub addr: String,
    /// Its status seq, once status sync knows it.
    pub status_seq: Option<u64>,
    /// Whether the connection is routed (through relays) rather than direct. Human output
    /// only: the JSON contract keeps its three fields (a routed peer's `addr` has
    /// `/p2p-circuit`).
    #[serde(skip)]
    pub routed: bool,
    /// The relays of a routed connection this node dialled, in path order (empty otherwise);
    /// human output only.
    #[serde(skip)]
    pub relays: Vec<NodeId>,
}

impl Event {
    /// The event as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }

    /// The event for people, safe for a terminal: what peers chose (payloads, topics, reasons)
    /// cannot move the cursor, recolour, retitle the terminal or start a line of its own,
    /// since every control character is shown escaped ([`printable`]). Only `peers` spans
    /// lines, one per peer.
    pub fn to_human(&self) -> String {
        match self {
            // Lines of NodeIds and escaped addresses.
            Event::Peers { .. } => self.human_raw(),
            _ => printable(&self.human_raw()),
        }
    }

    fn human_raw(&self) -> String {
        let id = |n: &Option<NodeId>| {
            n.as_ref()
                .map_or_else(|| "<unknown>".to_string(), |n| n.to_string())
        };
        match self {
            Event::Ready {
                node_id,
                listen,
                metrics,
            } => {
                let mut line = format!("ready: node {node_id} listening on {}", listen.join(", "));
                if let Some(addr) = metrics {
                    line.push_str(&format!("; metrics on http://{addr}/metrics"));
                }
                line
            }
            Event::Connected { node_id, addr } => format!("connected: {} at {addr}", id(node_id)),
            Event::Disconnected { node_id, reason } => {
                format!("disconnected: {} ({reason})", id(node_id))
            }
            Event::Refused {
                addr,
                reason,
                node_id,
                ..
            } => format!("refused: {addr} node {}: {reason}", id(node_id)),
            Event::Banned {
                node_id,
                for_ms,
                reason,
            } => format!(
                "banned: {} for {:.1} s ({reason})",
                node_id.short(),
                *for_ms as f64 / 1000.0
            ),
            Event::Peers { peers } => {
                let mut s = format!("peers: {}", peers.len());
                for p in peers {
                    let addr = printable(&p.addr);
                    s.push_str(&format!("\n  {} at {addr}", id(&p.node_id)));
                    if p.routed && p.relays.is_empty() {
                        s.push_str(" (routed)");
                    } else if p.routed {
                        let via: Vec<String> = p.relays.iter().map(NodeId::short).collect();
                        s.push_str(&format!(" (routed via {})", via.join(" → ")));
                    }
                }
                s
            }
            Event::Request { from, module, data } => {
                format!("request from {} (module {module}): {data}", from.short())
            }
            Event::Response {
                id,
                ok: true,
                data,
                rtt_ms,
                node_id,
                ..
            } => format!(
                "response {id}{}: {} ({:.2} ms)",
                node_id
                    .as_ref()
                    .map_or_else(String::new, |n| format!(" from {}", n.short())),
                data.as_deref().unwrap_or(""),
                rtt_ms.unwrap_or(0.0)
            ),
            Event::Response { id, error, .. } => {
                format!("response {id} failed: {}", error.as_deref().unwrap_or(""))
            }
            Event::Oneway { from, module, data } => {
                format!("oneway from {} (module {module}): {data}", from.short())
            }
            Event::Message {
                kind,
                topic,
                from,
                data,
                hops,
            } => match kind {
                MessageKind::Multicast => format!(
                    "multicast on {} from {} ({hops} hops): {data}",
                    topic.as_deref().unwrap_or(""),
                    from.short()
                ),
                MessageKind::Broadcast => {
                    format!("broadcast from {} ({hops} hops): {data}", from.short())
                }
            },
            Event::Status { node_id, seq, data } => {
                format!("status of {}: seq {seq}: {data}", node_id.short())
            }
            Event::Reloaded {
                added,
                removed,
                closed,
                crls,
            } => format!(
                "reloaded: {} peers added, {} removed, {} sessions closed, {crls} CRLs",
                added.len(),
                removed.len(),
                closed.len()
            ),
            Event::Error { message } => format!("error: {message}"),
        }
    }
}

/// `text` with control characters (C0, DEL, C1, and the bidirectional overrides that reorder
/// what a terminal shows) written as Rust-style escapes: `\n`, `\u{1b}`, ...; a backslash is
/// doubled, so an escape in the output always came from this function.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_output_escapes_what_peers_chose() {
        let key = bcos_p2p::NodeKey::generate(bcos_p2p::KeyType::Secp256k1).unwrap();
        let event = Event::Request {
            from: key.node_id().clone(),
            module: 1,
            data: "\u{1b}]0;owned\u{7}\u{1b}[2J\nconnected: fake\r\u{202e}gnp.exe\\x".into(),
        };
        let line = event.to_human();
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(
            line.ends_with(
                "\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\nconnected: fake\\r\\u{202e}gnp.exe\\\\x"
            ),
            "{line}"
        );
        assert_eq!(printable("plain 文字 text"), "plain 文字 text");
    }

    #[test]
    fn a_ban_is_one_json_line_with_the_contract_fields() {
        let key = bcos_p2p::NodeKey::generate(bcos_p2p::KeyType::Secp256k1).unwrap();
        let event = Event::Banned {
            node_id: key.node_id().clone(),
            for_ms: 60_000,
            reason: bcos_p2p::Offence::BadSignature.as_str().into(),
        };
        let v: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(v["event"], "banned");
        assert_eq!(v["node_id"], key.node_id().to_string());
        assert_eq!(v["for_ms"], 60_000);
        assert_eq!(v["reason"], "bad_signature");
        assert!(event.to_human().contains("for 60.0 s (bad_signature)"));
    }
}
