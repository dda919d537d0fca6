//! The frames of a route stream (SPEC.md §2): the opener's header, the receiver's reply.

use bcos_p2p_core::{KeyType, NodeId};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p_swarm::StreamProtocol;

/// The protocol of route streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/bcos/route/1.0.0");

/// The header's version byte.
pub const VERSION: u8 = 1;

/// Most nodes a header may list: a hard cap above any configured `max_hops`.
pub const MAX_PATH: usize = 16;

/// Longest NodeId bytes taken (an RSA key of 8192 bits is about 1 050 bytes).
pub const MAX_NODE_ID: usize = 2048;

/// What the receiver of a route stream answers (SPEC.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The circuit is up: what follows is the relayed byte stream.
    Ok,
    /// The receiver does not relay.
    RelayOff,
    /// The receiver has no direct connection to the next node.
    NoLink,
    /// The receiver's relay budget (circuits per peer or in all) is spent.
    Busy,
    /// The path is longer than the receiver allows.
    TooManyHops,
    /// The destination does not take routed connections.
    NotAccepting,
    /// The path names the receiver again, or the node it came from.
    Loop,
    /// The header could not be read.
    Malformed,
    /// Route streams are not taken on a routed connection (no circuits inside circuits).
    Nested,
    /// A code this version does not know.
    Other(u8),
}

impl Code {
    /// The code's byte.
    pub fn byte(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::RelayOff => 1,
            Code::NoLink => 2,
            Code::Busy => 3,
            Code::TooManyHops => 4,
            Code::NotAccepting => 5,
            Code::Loop => 6,
            Code::Malformed => 7,
            Code::Nested => 8,
            Code::Other(b) => b,
        }
    }

    /// The code of a byte.
    pub fn from_byte(b: u8) -> Code {
        match b {
            0 => Code::Ok,
            1 => Code::RelayOff,
            2 => Code::NoLink,
            3 => Code::Busy,
            4 => Code::TooManyHops,
            5 => Code::NotAccepting,
            6 => Code::Loop,
            7 => Code::Malformed,
            8 => Code::Nested,
            b => Code::Other(b),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Code::Ok => f.write_str("ok"),
            Code::RelayOff => f.write_str("relaying is off"),
            Code::NoLink => f.write_str("no link to the next node"),
            Code::Busy => f.write_str("relay budget spent"),
            Code::TooManyHops => f.write_str("too many hops"),
            Code::NotAccepting => f.write_str("destination takes no routed connections"),
            Code::Loop => f.write_str("the path loops"),
            Code::Malformed => f.write_str("malformed header"),
            Code::Nested => f.write_str("no circuits inside circuits"),
            Code::Other(b) => write!(f, "code {b}"),
        }
    }
}

/// The receiver's reply: its code, and how many relays passed it back (0 from the receiver
/// itself; each relay adds one), so the opener knows which node of the path answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The answer.
    pub code: Code,
    /// Relays between the opener and the node that answered.
    pub hop: u8,
}

/// Why a header or reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended.
    #[error("route stream: {0}")]
    Io(#[from] std::io::Error),
    /// A header of a version this node does not speak (not an offence: a newer node's).
    #[error("route header of version {0}")]
    Version(u8),
    /// The bytes are not a header of this version.
    #[error("malformed route header: {0}")]
    Malformed(String),
}

/// Encodes a header: the nodes after the receiver, the destination last (empty: the
/// receiver is the destination).
pub fn encode_header(path: &[NodeId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + path.len() * 67);
    out.push(VERSION);
    // Callers keep paths within MAX_PATH (checked where a path is made).
    out.push(u8::try_from(path.len()).unwrap_or(u8::MAX));
    for node in path {
        let bytes = node.as_bytes();
        out.push(node.key_type().code());
        out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Reads a header (bounded: at most [`MAX_PATH`] NodeIds of at most [`MAX_NODE_ID`] bytes).
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<NodeId>, WireError> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(WireError::Version(head[0]));
    }
    let count = usize::from(head[1]);
    if count > MAX_PATH {
        return Err(WireError::Malformed(format!("{count} nodes in the path")));
    }
    let mut path = Vec::with_capacity(count);
    for _ in 0..count {
        let mut entry = [0u8; 3];
        io.read_exact(&mut entry).await?;
        let key_type = KeyType::from_code(entry[0])
            .ok_or_else(|| WireError::Malformed(format!("key type {}", entry[0])))?;
        let len = usize::from(u16::from_be_bytes([entry[1], entry[2]]));
        if len == 0 || len > MAX_NODE_ID {
            return Err(WireError::Malformed(format!("NodeId of {len} bytes")));
        }
        let mut bytes = vec![0u8; len];
        io.read_exact(&mut bytes).await?;
        let node = NodeId::from_bytes(key_type, &bytes)
            .map_err(|e| WireError::Malformed(format!("NodeId: {e}")))?;
        path.push(node);
    }
    Ok(path)
}

/// Writes a reply and flushes it.
pub async fn write_reply<S: AsyncWrite + Unpin>(io: &mut S, reply: Reply) -> std::io::Result<()> {
    io.write_all(&[reply.code.byte(), reply.hop]).await?;
    io.flush().await
}

/// Reads a reply.
pub async fn read_reply<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Reply> {
    let mut b = [0u8; 2];
    io.read_exact(&mut b).await?;
    Ok(Reply {
        code: Code::from_byte(b[0]),
        hop: b[1],
    })
}

#[cfg(test)]
mod tests {
    use bcos_p2p_core::NodeKey;
    use futures::executor::block_on;

    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let nodes: Vec<NodeId> = [KeyType::Secp256k1, KeyType::P256, KeyType::Secp256k1]
            .iter()
            .map(|t| NodeKey::generate(*t).unwrap().node_id().clone())
            .collect();
        let bytes = encode_header(&nodes);
        let back = block_on(read_header(&mut &bytes[..])).unwrap();
        assert_eq!(back, nodes);
        assert!(
            block_on(read_header(&mut &encode_header(&[])[..]))
                .unwrap()
                .is_empty()
        );
        // Each cut short, a wrong version, too many nodes, an unknown key type, a bad length.
        for cut in 0..bytes.len() {
            assert!(
                block_on(read_header(&mut &bytes[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[0] = 2;
        assert!(block_on(read_header(&mut &bad[..])).is_err());
        let mut bad = bytes.clone();
        bad[1] = 17;
        assert!(block_on(read_header(&mut &bad[..])).is_err());
        let mut bad = bytes.clone();
        bad[2] = 99;
        assert!(block_on(read_header(&mut &bad[..])).is_err());
        let mut bad = bytes.clone();
        bad[3] = 0xff;
        assert!(block_on(read_header(&mut &bad[..])).is_err());
        let mut bad = bytes;
        bad[5] ^= 0xff; // a point that is not on the curve
        assert!(block_on(read_header(&mut &bad[..])).is_err());
    }

    #[test]
    fn replies_round_trip() {
        for code in [Code::Ok, Code::RelayOff, Code::Busy, Code::Other(200)] {
            let mut out = Vec::new();
            block_on(write_reply(&mut out, Reply { code, hop: 3 })).unwrap();
            let back = block_on(read_reply(&mut &out[..])).unwrap();
            assert_eq!(back, Reply { code, hop: 3 });
        }
    }
}
