//! The frames of `/bcos/flood/2.1.0` (byte layout in SPEC.md): data messages, link-state
//! records, database digests, and the announcements (IHAVE) and pulls (IWANT) of message ids
//! that repair what a failed or dropping relay did not pass on. Each is one varint-prefixed
//! frame body on the link.
//!
//! Binary with fixed headers: data frames are the hot path and are re-encoded at each hop (the
//! hop count changes), and a fixed header costs a few copies of bytes where CBOR would cost a
//! serializer pass; records are small and rare but share the same primitives.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use sha2::{Digest as _, Sha256};

/// Frame kinds (the first byte of every frame body).
const KIND_DATA: u8 = 0x01;
const KIND_RECORD: u8 = 0x02;
const KIND_DIGEST: u8 = 0x03;
const KIND_CERT_REQUEST: u8 = 0x06;
const KIND_CERT: u8 = 0x07;
const KIND_SUMMARY: u8 = 0x08;
const KIND_RECORD_REQUEST: u8 = 0x09;
const KIND_LINKS: u8 = 0x0a;
const KIND_IHAVE: u8 = 0x04;
const KIND_IWANT: u8 = 0x05;

/// Longest NodeId on the wire: the largest RSA modulus a node may have (8192 bits); EC ids
/// are 64.
pub const MAX_NODE_ID_LEN: usize = bcos_p2p_core::MAX_RSA_BITS / 8;
/// Longest topic name in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// Most neighbours one record may list.
pub const MAX_NEIGHBOURS: usize = 4096;
/// Most topics one record may list.
pub const MAX_TOPICS: usize = 1024;

/// Longest signature: an RSA signature of the largest modulus a node may have.
pub const MAX_SIGNATURE_LEN: usize = bcos_p2p_core::MAX_RSA_BITS / 8;

/// Bytes a data frame adds to its payload at most (kind, key type, origin, seqno, ttl, hops,
/// view, topic, signature).
pub const DATA_OVERHEAD: usize =
    1 + 1 + 2 + MAX_NODE_ID_LEN + 8 + 1 + 1 + 8 + 1 + MAX_TOPIC_LEN + 2 + MAX_SIGNATURE_LEN;

/// What an origin's signature of a data frame starts with (SPEC.md §2), so that it can never
/// be taken for a signature of anything else.
pub const DATA_SIGNATURE_CONTEXT: &[u8] = b"bcos-p2p/flood/2 data\0";

/// What a node's signature of its record starts with (SPEC.md §2).
pub const RECORD_SIGNATURE_CONTEXT: &[u8] = b"bcos-p2p/flood/2 record\0";

/// Longest RECORD body: a 1024-byte id, every neighbour and every topic at their limits.
pub const MAX_RECORD_LEN: usize = 1
    + 1
    + 2
    + MAX_NODE_ID_LEN
    + 8
    + 8
    + 2
    + 8 * MAX_NEIGHBOURS
    + 2
    + MAX_TOPICS * (1 + MAX_TOPIC_LEN)
    + 2
    + MAX_SIGNATURE_LEN;

/// Most headers in one SUMMARY, and ids in one RECORD_REQUEST (a database of more nodes is
/// summarised in several frames).
pub const MAX_HEADERS: usize = 4096;

/// Most certificates in a CERT frame's chain (leaf, intermediates; FISCO BCOS chains have 2).
pub const MAX_CHAIN_CERTS: usize = 8;
/// Longest certificate in a CERT frame (DER).
pub const MAX_CERT_LEN: usize = 16 * 1024;

/// Longest CERT body: a 1024-byte id and a full chain of the longest certificates.
pub const MAX_CERT_FRAME_LEN: usize =
    1 + 1 + 2 + MAX_NODE_ID_LEN + 1 + MAX_CHAIN_CERTS * (2 + MAX_CERT_LEN);
/// Most message ids one IHAVE or IWANT frame may carry.
pub const MAX_IDS: usize = 4096;
/// Longest bitmap of one run of ids: 32 bytes, 256 seqnos.
pub const MAX_RUN_BYTES: usize = 32;

/// A decoded frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A multicast (topic set) or broadcast message.
    Data(Data),
    /// A node's link-state record: its neighbours and its topics.
    Record(Record),
    /// A digest of the sender's record database, for anti-entropy.
    Digest(u64),
    /// A request for a node's certificate chain (CA mode: SPEC.md §8).
    CertRequest {
        /// The node's key type.
        key_type: u8,
        /// The node's NodeId bytes.
        origin: Bytes,
    },
    /// A node's certificate chain, or none when the sender does not hold it.
    Cert(Cert),
    /// Headers of records the sender holds (SPEC.md §3): the receiver asks for those it lacks.
    Summary(Vec<Header>),
    /// Short ids of nodes whose records the sender asks for.
    RecordRequest(Vec<u64>),
    /// Short ids, strictly ascending, of the neighbours the sender sends its own broadcasts
    /// to now (SPEC.md §3): whom its records may not list yet.
    Links(Vec<u64>),
    /// Ids of messages the sender accepted and can send on request (lazy repair).
    Ihave(Ids),
    /// Ids of messages the sender lacks and asks the receiver (which announced them) to send.
    Iwant(Ids),
}

/// What identifies one version of a node's record: its short id and `(incarnation, version)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The node's short id ([`crate::topology::short_id`]).
    pub node: u64,
    /// The record's incarnation.
    pub incarnation: u64,
    /// The record's version.
    pub version: u64,
}

/// A node's certificate chain (leaf first, DER), as it presents it in its TLS handshake.
/// Not signed: the chain is checked against the receiver's trust anchors, and its leaf key
/// must be the node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// The node's key type.
    pub key_type: u8,
    /// The node's NodeId bytes.
    pub origin: Bytes,
    /// The chain, leaf first; empty when the sender does not hold it.
    pub chain: Vec<Bytes>,
}

/// Message ids, compactly: runs of seqnos of one origin (named by its short id), each a first
/// seqno and a bitmap of the 8 × `len` seqnos from it. Built by [`Ids::new`]; the decoder
/// takes only the form it builds (the first bit and the last byte of a bitmap set), at most
/// [`MAX_IDS`] ids in all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ids {
    runs: Vec<Run>,
}

/// One origin's seqnos `first + i` for each bit `i` set in `bitmap` (byte `i / 8`, bit
/// `0x80 >> (i % 8)`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    origin: u64,
    first: u64,
    bitmap: Vec<u8>,
}

impl Ids {
    /// The ids `(origin short id, seqno)` given, without duplicates, as runs; the frames of at
    /// most [`MAX_IDS`] ids each they make.
    pub fn new(mut ids: Vec<(u64, u64)>) -> Vec<Ids> {
        ids.sort_unstable();
        ids.dedup();
        let mut frames = Vec::new();
        for chunk in ids.chunks(MAX_IDS) {
            let mut runs: Vec<Run> = Vec::new();
            for &(origin, seqno) in chunk {
                let bit = runs.last().and_then(|r| {
                    let bit = seqno.checked_sub(r.first)?;
                    (r.origin == origin && bit < (MAX_RUN_BYTES * 8) as u64).then_some(bit)
                });
                match (bit, runs.last_mut()) {
                    (Some(bit), Some(run)) => {
                        let byte = (bit / 8) as usize;
                        if run.bitmap.len() <= byte {
                            run.bitmap.resize(byte + 1, 0);
                        }
                        run.bitmap[byte] |= 0x80 >> (bit % 8);
                    }
                    _ => runs.push(Run {
                        origin,
                        first: seqno,
                        bitmap: vec![0x80],
                    }),
                }
            }
            frames.push(Ids { runs });
        }
        frames
    }

    /// Every id, as `(origin short id, seqno)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().flat_map(|r| {
            r.bitmap.iter().enumerate().flat_map(move |(byte, bits)| {
                (0..8u64)
                    .filter(move |bit| bits & (0x80 >> bit) != 0)
                    .map(move |bit| (r.origin, r.first + byte as u64 * 8 + bit))
            })
        })
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.runs
            .iter()
            .map(|r| {
                r.bitmap
                    .iter()
                    .map(|b| b.count_ones() as usize)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    fn encoded_len(&self) -> usize {
        2 + self.runs.iter().map(|r| 17 + r.bitmap.len()).sum::<usize>()
    }

    fn put(&self, dst: &mut BytesMut) {
        dst.put_u16(self.runs.len() as u16);
        for r in &self.runs {
            dst.put_u64(r.origin);
            dst.put_u64(r.first);
            dst.put_u8(r.bitmap.len() as u8);
            dst.put_slice(&r.bitmap);
        }
    }

    fn take(src: &mut Bytes) -> Result<Ids, String> {
        let count = take_u16(src, "run count")? as usize;
        if count == 0 || count > MAX_IDS || src.remaining() < count * 18 {
            return Err(format!("{count} runs of ids"));
        }
        let mut runs = Vec::with_capacity(count);
        let mut ids = 0usize;
        for _ in 0..count {
            let origin = take_u64(src, "run origin")?;
            let first = take_u64(src, "run seqno")?;
            let len = take_u8(src, "bitmap length")? as usize;
            if len == 0 || len > MAX_RUN_BYTES || src.remaining() < len {
                return Err(format!("bitmap of {len} bytes"));
            }
            let bitmap = src.split_to(len).to_vec();
            if bitmap[0] & 0x80 == 0 || bitmap[len - 1] == 0 {
                return Err("bitmap not in its shortest form".into());
            }
            let last = (len as u64 - 1) * 8 + u64::from(7 - bitmap[len - 1].trailing_zeros());
            if first.checked_add(last).is_none() {
                return Err("run of seqnos past 2^64".into());
            }
            ids = ids.saturating_add(bitmap.iter().map(|b| b.count_ones() as usize).sum());
            if ids > MAX_IDS {
                return Err(format!("more than {MAX_IDS} ids"));
            }
            runs.push(Run {
                origin,
                first,
                bitmap,
            });
        }
        if src.has_remaining() {
            return Err(format!("{} bytes after the ids", src.remaining()));
        }
        Ok(Ids { runs })
    }
}

/// A multicast or broadcast message, signed by its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The origin's key type, as [`bcos_p2p_core::KeyType::code`] numbers it.
    pub key_type: u8,
    /// The origin's NodeId bytes.
    pub origin: Bytes,
    /// The origin's sequence number for this message.
    pub seqno: u64,
    /// Most hops the message may travel.
    pub ttl: u8,
    /// Hops travelled when it reaches the receiver (1 for the origin's neighbours).
    pub hops: u8,
    /// The digest of the origin's view of the network when it sent the message (0: unsettled).
    /// Relays with the same view forward along the origin's tree; others flood.
    pub view: u64,
    /// The topic (UTF-8, 1–255 bytes), or `None` for a broadcast.
    pub topic: Option<String>,
    /// The origin's signature of [`Data::signed_message`].
    pub signature: Bytes,
    /// The application's bytes.
    pub payload: Bytes,
}

impl Data {
    /// What the origin signs: [`DATA_SIGNATURE_CONTEXT`], then every field the origin sets
    /// (key type, origin, seqno, ttl, view, topic) as the frame encodes them, then SHA-256 of
    /// the payload (so a large payload is hashed, not copied). Not `hops`, which relays change.
    pub fn signed_message(&self) -> Vec<u8> {
        let topic = self.topic.as_deref().unwrap_or("");
        let mut m = Vec::with_capacity(
            DATA_SIGNATURE_CONTEXT.len() + 1 + 2 + self.origin.len() + 8 + 1 + 8 + 1 + 255 + 32,
        );
        m.extend_from_slice(DATA_SIGNATURE_CONTEXT);
        m.push(self.key_type);
        m.extend_from_slice(&(self.origin.len() as u16).to_be_bytes());
        m.extend_from_slice(&self.origin);
        m.extend_from_slice(&self.seqno.to_be_bytes());
        m.push(self.ttl);
        m.extend_from_slice(&self.view.to_be_bytes());
        m.push(topic.len() as u8);
        m.extend_from_slice(topic.as_bytes());
        m.extend_from_slice(&Sha256::digest(&self.payload));
        m
    }
}

/// A node's link-state record, signed by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The node's key type, as [`bcos_p2p_core::KeyType::code`] numbers it.
    pub key_type: u8,
    /// The node's NodeId bytes.
    pub origin: Bytes,
    /// Differs per run of the node (its start time in nanoseconds); newer runs compare greater.
    pub incarnation: u64,
    /// Increases with every change within one incarnation.
    pub version: u64,
    /// Short ids ([`crate::topology::short_id`]) of the nodes it has a flood link with.
    pub neighbours: Vec<u64>,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// The node's signature of [`Record::signed_message`].
    pub signature: Bytes,
}

impl Record {
    /// What the node signs: [`RECORD_SIGNATURE_CONTEXT`], then every field before the
    /// signature as the frame encodes them.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = BytesMut::with_capacity(RECORD_SIGNATURE_CONTEXT.len() + self.unsigned_len());
        m.put_slice(RECORD_SIGNATURE_CONTEXT);
        self.put_unsigned(&mut m);
        m.to_vec()
    }

    fn unsigned_len(&self) -> usize {
        let topics: usize = self.topics.iter().map(|t| 1 + t.len()).sum();
        1 + 2 + self.origin.len() + 8 + 8 + 2 + 8 * self.neighbours.len() + 2 + topics
    }

    /// The fields from the key type to the topics.
    fn put_unsigned(&self, dst: &mut BytesMut) {
        dst.put_u8(self.key_type);
        put_origin(dst, &self.origin);
        dst.put_u64(self.incarnation);
        dst.put_u64(self.version);
        dst.put_u16(self.neighbours.len() as u16);
        for n in &self.neighbours {
            dst.put_u64(*n);
        }
        dst.put_u16(self.topics.len() as u16);
        for t in &self.topics {
            put_topic(dst, t);
        }
    }
}

fn put_origin(dst: &mut BytesMut, origin: &[u8]) {
    dst.put_u16(origin.len() as u16);
    dst.put_slice(origin);
}

fn put_topic(dst: &mut BytesMut, topic: &str) {
    dst.put_u8(topic.len() as u8);
    dst.put_slice(topic.as_bytes());
}

impl Frame {
    /// Encodes the frame body. Lengths must be within the limits above (the behaviour checks
    /// them before building frames).
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::Data(d) => {
                let topic_len = d.topic.as_ref().map_or(0, String::len);
                let mut dst = BytesMut::with_capacity(
                    25 + d.origin.len() + topic_len + d.signature.len() + d.payload.len(),
                );
                dst.put_u8(KIND_DATA);
                dst.put_u8(d.key_type);
                put_origin(&mut dst, &d.origin);
                dst.put_u64(d.seqno);
                dst.put_u8(d.ttl);
                dst.put_u8(d.hops);
                dst.put_u64(d.view);
                match &d.topic {
                    Some(t) => put_topic(&mut dst, t),
                    None => dst.put_u8(0),
                }
                dst.put_u16(d.signature.len() as u16);
                dst.put_slice(&d.signature);
                dst.put_slice(&d.payload);
                dst.freeze()
            }
            Frame::Record(r) => {
                let mut dst = BytesMut::with_capacity(1 + r.unsigned_len() + 2 + r.signature.len());
                dst.put_u8(KIND_RECORD);
                r.put_unsigned(&mut dst);
                dst.put_u16(r.signature.len() as u16);
                dst.put_slice(&r.signature);
                dst.freeze()
            }
            Frame::Digest(d) => {
                let mut dst = BytesMut::with_capacity(9);
                dst.put_u8(KIND_DIGEST);
                dst.put_u64(*d);
                dst.freeze()
            }
            Frame::Summary(headers) => {
                let mut dst = BytesMut::with_capacity(3 + 24 * headers.len());
                dst.put_u8(KIND_SUMMARY);
                dst.put_u16(headers.len() as u16);
                for h in headers {
                    dst.put_u64(h.node);
                    dst.put_u64(h.incarnation);
                    dst.put_u64(h.version);
                }
                dst.freeze()
            }
            Frame::RecordRequest(nodes) | Frame::Links(nodes) => {
                let mut dst = BytesMut::with_capacity(3 + 8 * nodes.len());
                dst.put_u8(match self {
                    Frame::RecordRequest(_) => KIND_RECORD_REQUEST,
                    _ => KIND_LINKS,
                });
                dst.put_u16(nodes.len() as u16);
                for n in nodes {
                    dst.put_u64(*n);
                }
                dst.freeze()
            }
            Frame::CertRequest { key_type, origin } => {
                let mut dst = BytesMut::with_capacity(4 + origin.len());
                dst.put_u8(KIND_CERT_REQUEST);
                dst.put_u8(*key_type);
                put_origin(&mut dst, origin);
                dst.freeze()
            }
            Frame::Cert(c) => {
                let certs: usize = c.chain.iter().map(|d| 2 + d.len()).sum();
                let mut dst = BytesMut::with_capacity(5 + c.origin.len() + certs);
                dst.put_u8(KIND_CERT);
                dst.put_u8(c.key_type);
                put_origin(&mut dst, &c.origin);
                dst.put_u8(c.chain.len() as u8);
                for der in &c.chain {
                    dst.put_u16(der.len() as u16);
                    dst.put_slice(der);
                }
                dst.freeze()
            }
            Frame::Ihave(ids) | Frame::Iwant(ids) => {
                let mut dst = BytesMut::with_capacity(1 + ids.encoded_len());
                dst.put_u8(match self {
                    Frame::Ihave(_) => KIND_IHAVE,
                    _ => KIND_IWANT,
                });
                ids.put(&mut dst);
                dst.freeze()
            }
        }
    }

    /// Decodes a frame body, checking every length against what is left and the limits above.
    pub fn decode(mut src: Bytes) -> Result<Frame, String> {
        let kind = take_u8(&mut src, "kind")?;
        let frame = match kind {
            KIND_DATA => {
                let key_type = take_u8(&mut src, "key type")?;
                let origin = take_origin(&mut src)?;
                let seqno = take_u64(&mut src, "seqno")?;
                let ttl = take_u8(&mut src, "ttl")?;
                let hops = take_u8(&mut src, "hops")?;
                let view = take_u64(&mut src, "view")?;
                let topic_len = take_u8(&mut src, "topic length")? as usize;
                let topic = match topic_len {
                    0 => None,
                    n => Some(take_topic_body(&mut src, n)?),
                };
                if hops == 0 || hops > ttl {
                    return Err(format!("data frame with hops {hops} and ttl {ttl}"));
                }
                let signature = take_signature(&mut src)?;
                Frame::Data(Data {
                    key_type,
                    origin,
                    seqno,
                    ttl,
                    hops,
                    view,
                    topic,
                    signature,
                    payload: src,
                })
            }
            KIND_RECORD => {
                let key_type = take_u8(&mut src, "key type")?;
                let origin = take_origin(&mut src)?;
                let incarnation = take_u64(&mut src, "incarnation")?;
                let version = take_u64(&mut src, "version")?;
                let count = take_u16(&mut src, "neighbour count")? as usize;
                if count > MAX_NEIGHBOURS || src.remaining() < count * 8 {
                    return Err(format!("record lists {count} neighbours"));
                }
                let neighbours = (0..count).map(|_| src.get_u64()).collect();
                let count = take_u16(&mut src, "topic count")? as usize;
                if count > MAX_TOPICS || src.remaining() < count * 2 {
                    return Err(format!("record lists {count} topics"));
                }
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = take_u8(&mut src, "topic length")? as usize;
                    if len == 0 {
                        return Err("empty topic in a record".into());
                    }
                    topics.push(take_topic_body(&mut src, len)?);
                }
                let signature = take_signature(&mut src)?;
                if src.has_remaining() {
                    return Err(format!("{} bytes after a record", src.remaining()));
                }
                Frame::Record(Record {
                    key_type,
                    origin,
                    incarnation,
                    version,
                    neighbours,
                    topics,
                    signature,
                })
            }
            KIND_DIGEST => {
                let digest = take_u64(&mut src, "digest")?;
                if src.has_remaining() {
                    return Err(format!("{} bytes after a digest", src.remaining()));
                }
                Frame::Digest(digest)
            }
            KIND_SUMMARY => {
                let count = take_u16(&mut src, "header count")? as usize;
                if count > MAX_HEADERS || src.remaining() != count * 24 {
                    return Err(format!(
                        "summary of {count} headers in {} bytes",
                        src.remaining()
                    ));
                }
                let headers = (0..count)
                    .map(|_| Header {
                        node: src.get_u64(),
                        incarnation: src.get_u64(),
                        version: src.get_u64(),
                    })
                    .collect();
                Frame::Summary(headers)
            }
            KIND_RECORD_REQUEST => {
                let count = take_u16(&mut src, "id count")? as usize;
                if count > MAX_HEADERS || src.remaining() != count * 8 {
                    return Err(format!(
                        "record request of {count} ids in {} bytes",
                        src.remaining()
                    ));
                }
                Frame::RecordRequest((0..count).map(|_| src.get_u64()).collect())
            }
            KIND_LINKS => {
                let count = take_u16(&mut src, "link count")? as usize;
                if count > MAX_NEIGHBOURS || src.remaining() != count * 8 {
                    return Err(format!("links of {count} ids in {} bytes", src.remaining()));
                }
                let links: Vec<u64> = (0..count).map(|_| src.get_u64()).collect();
                if links.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("links not in strictly ascending order".into());
                }
                Frame::Links(links)
            }
            KIND_CERT_REQUEST => {
                let key_type = take_u8(&mut src, "key type")?;
                let origin = take_origin(&mut src)?;
                if src.has_remaining() {
                    return Err(format!(
                        "{} bytes after a certificate request",
                        src.remaining()
                    ));
                }
                Frame::CertRequest { key_type, origin }
            }
            KIND_CERT => {
                let key_type = take_u8(&mut src, "key type")?;
                let origin = take_origin(&mut src)?;
                let count = take_u8(&mut src, "certificate count")? as usize;
                if count > MAX_CHAIN_CERTS {
                    return Err(format!("chain of {count} certificates"));
                }
                let mut chain = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = take_u16(&mut src, "certificate length")? as usize;
                    if len == 0 || len > MAX_CERT_LEN {
                        return Err(format!("certificate of {len} bytes"));
                    }
                    if src.remaining() < len {
                        return Err(short("certificate"));
                    }
                    chain.push(src.split_to(len));
                }
                if src.has_remaining() {
                    return Err(format!(
                        "{} bytes after a certificate chain",
                        src.remaining()
                    ));
                }
                Frame::Cert(Cert {
                    key_type,
                    origin,
                    chain,
                })
            }
            KIND_IHAVE => Frame::Ihave(Ids::take(&mut src)?),
            KIND_IWANT => Frame::Iwant(Ids::take(&mut src)?),
            other => return Err(format!("unknown frame kind {other:#04x}")),
        };
        Ok(frame)
    }
}

fn short(what: &str) -> String {
    format!("frame too short for its {what}")
}

fn take_u8(src: &mut Bytes, what: &str) -> Result<u8, String> {
    src.try_get_u8().map_err(|_| short(what))
}

fn take_u16(src: &mut Bytes, what: &str) -> Result<u16, String> {
    src.try_get_u16().map_err(|_| short(what))
}

fn take_u64(src: &mut Bytes, what: &str) -> Result<u64, String> {
    src.try_get_u64().map_err(|_| short(what))
}

fn take_origin(src: &mut Bytes) -> Result<Bytes, String> {
    let len = take_u16(src, "origin length")? as usize;
    if len == 0 || len > MAX_NODE_ID_LEN {
        return Err(format!("origin of {len} bytes"));
    }
    if src.remaining() < len {
        return Err(short("origin"));
    }
    Ok(src.split_to(len))
}

fn take_signature(src: &mut Bytes) -> Result<Bytes, String> {
    let len = take_u16(src, "signature length")? as usize;
    if len == 0 || len > MAX_SIGNATURE_LEN {
        return Err(format!("signature of {len} bytes"));
    }
    if src.remaining() < len {
        return Err(short("signature"));
    }
    Ok(src.split_to(len))
}

fn take_topic_body(src: &mut Bytes, len: usize) -> Result<String, String> {
    if src.remaining() < len {
        return Err(short("topic"));
    }
    String::from_utf8(src.split_to(len).to_vec()).map_err(|_| "topic is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(topic: Option<&str>) -> Frame {
        Frame::Data(Data {
            key_type: 1,
            origin: Bytes::from(vec![7; 64]),
            seqno: 42,
            ttl: 10,
            hops: 3,
            view: 99,
            topic: topic.map(str::to_string),
            signature: Bytes::from(vec![5; 71]),
            payload: Bytes::from_static(b"payload"),
        })
    }

    #[test]
    fn every_kind_round_trips() {
        for frame in [
            data(Some("blocks")),
            data(None),
            Frame::Record(Record {
                key_type: 3,
                origin: Bytes::from(vec![1; 64]),
                incarnation: 5,
                version: 9,
                neighbours: vec![1, 2, u64::MAX],
                topics: vec!["a".into(), "ü".repeat(100)],
                signature: Bytes::from(vec![9; 256]),
            }),
            Frame::Digest(77),
            Frame::Summary(vec![
                Header {
                    node: 1,
                    incarnation: 2,
                    version: 3,
                },
                Header {
                    node: u64::MAX,
                    incarnation: 0,
                    version: u64::MAX,
                },
            ]),
            Frame::Summary(vec![]),
            Frame::RecordRequest(vec![5, 6, u64::MAX]),
            Frame::Links(vec![0, 6, u64::MAX]),
            Frame::Links(vec![]),
            Frame::CertRequest {
                key_type: 2,
                origin: Bytes::from(vec![3; 64]),
            },
            Frame::Cert(Cert {
                key_type: 1,
                origin: Bytes::from(vec![4; 64]),
                chain: vec![Bytes::from(vec![0x30; 700]), Bytes::from(vec![0x31; 900])],
            }),
            Frame::Cert(Cert {
                key_type: 1,
                origin: Bytes::from(vec![4; 64]),
                chain: vec![],
            }),
            Frame::Ihave(Ids::new(vec![(1, 5), (1, 7), (2, u64::MAX)]).remove(0)),
            Frame::Iwant(Ids::new(vec![(u64::MAX, 0)]).remove(0)),
        ] {
            assert_eq!(Frame::decode(frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn ids_are_runs_of_seqnos_per_origin() {
        let ids = vec![(9, 100), (9, 101), (9, 355), (9, 356), (3, 7), (9, 100)];
        let frames = Ids::new(ids);
        assert_eq!(frames.len(), 1);
        let got: Vec<_> = frames[0].iter().collect();
        assert_eq!(got, vec![(3, 7), (9, 100), (9, 101), (9, 355), (9, 356)]);
        assert_eq!(frames[0].len(), 5);
        // 100 and 101 share a run; 355 is 255 past 100, its last bit; 356 starts another.
        let wire = Frame::Ihave(frames[0].clone()).encode();
        assert_eq!(wire.len(), 1 + 2 + 3 * 17 + 1 + 32 + 1);
        // One origin, one message: 18 bytes.
        let one = Frame::Ihave(Ids::new(vec![(1, 1)]).remove(0)).encode();
        assert_eq!(
            &one[..],
            &[
                4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x80
            ]
        );
        // More than a frame's worth makes several frames.
        let many = Ids::new((0..MAX_IDS as u64 + 1).map(|s| (1, s * 1000)).collect());
        assert_eq!(
            many.iter().map(Ids::len).collect::<Vec<_>>(),
            vec![MAX_IDS, 1]
        );
    }

    #[test]
    fn bad_id_frames_are_errors() {
        let run = |first: u64, bitmap: &[u8]| {
            let mut f = vec![KIND_IHAVE, 0, 1];
            f.extend_from_slice(&7u64.to_be_bytes());
            f.extend_from_slice(&first.to_be_bytes());
            f.push(bitmap.len() as u8);
            f.extend_from_slice(bitmap);
            Bytes::from(f)
        };
        assert!(Frame::decode(run(5, &[0x80])).is_ok());
        assert!(Frame::decode(run(u64::MAX, &[0x80])).is_ok());
        assert!(Frame::decode(run(u64::MAX, &[0xc0])).is_err(), "past 2^64");
        assert!(Frame::decode(run(5, &[])).is_err(), "empty bitmap");
        assert!(Frame::decode(run(5, &[0x40])).is_err(), "first bit clear");
        assert!(
            Frame::decode(run(5, &[0x80, 0])).is_err(),
            "trailing zero byte"
        );
        assert!(
            Frame::decode(run(5, &[0xff; 33])).is_err(),
            "bitmap too long"
        );
        let mut trailing = run(5, &[0x80]).to_vec();
        trailing.push(0);
        assert!(Frame::decode(trailing.into()).is_err());
        assert!(
            Frame::decode(Bytes::from_static(&[KIND_IWANT, 0, 0])).is_err(),
            "no runs"
        );
        // A run count the bytes cannot hold.
        assert!(Frame::decode(Bytes::from_static(&[KIND_IWANT, 0xff, 0xff, 1])).is_err());
        // More ids than a frame may carry: 129 full bitmaps of 256 ids... 4097 and up.
        let mut over = vec![KIND_IHAVE];
        over.extend_from_slice(&17u16.to_be_bytes());
        for i in 0..17u64 {
            over.extend_from_slice(&1u64.to_be_bytes());
            over.extend_from_slice(&(i * 256).to_be_bytes());
            over.push(32);
            over.extend_from_slice(&[0xff; 32]);
        }
        assert!(Frame::decode(over.into()).is_err(), "{} ids", 17 * 256);
    }

    #[test]
    fn bad_frames_are_errors() {
        let good = data(Some("t")).encode();
        for cut in 0..good.len() - b"payload".len() {
            assert!(Frame::decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut zero_hops = good.to_vec();
        zero_hops[1 + 1 + 2 + 64 + 8 + 1] = 0;
        assert!(Frame::decode(zero_hops.into()).is_err());
        let mut bad_utf8 = good.to_vec();
        *bad_utf8.last_mut().unwrap() = 0xff;
        let topic_at = 1 + 1 + 2 + 64 + 8 + 2 + 8 + 1;
        bad_utf8[topic_at] = 0xff;
        assert!(Frame::decode(bad_utf8.into()).is_err());
        assert!(Frame::decode(Bytes::from_static(&[9])).is_err());
        assert!(Frame::decode(Bytes::from_static(&[KIND_DIGEST, 0, 0])).is_err());
        // A record claiming more neighbours than it carries.
        let mut rec = vec![KIND_RECORD, 1, 0, 1, 5];
        rec.extend_from_slice(&[0; 16]);
        rec.extend_from_slice(&[0xff, 0xff]);
        assert!(Frame::decode(rec.into()).is_err());
        // Chains too long, certificates empty or longer than they are, bytes after a request.
        for bad in [
            &[KIND_CERT, 1, 0, 1, 5, 9][..],
            &[KIND_CERT, 1, 0, 1, 5, 1, 0, 0],
            &[KIND_CERT, 1, 0, 1, 5, 1, 0, 3, 1, 2],
            &[KIND_CERT, 1, 0, 1, 5, 0, 0],
            &[KIND_CERT_REQUEST, 1, 0, 1, 5, 0],
            &[KIND_CERT_REQUEST, 1, 0, 0],
            &[KIND_SUMMARY, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
            &[KIND_SUMMARY, 0xff, 0xff],
            &[KIND_RECORD_REQUEST, 0, 1, 1, 2, 3, 4, 5, 6, 7],
            &[KIND_RECORD_REQUEST, 0, 0, 1],
            &[KIND_LINKS, 0, 1, 1, 2, 3, 4, 5, 6, 7],
            // Not ascending: 2 then 1; twice the same id.
            &[
                KIND_LINKS, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
            &[
                KIND_LINKS, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2,
            ],
        ] {
            assert!(
                Frame::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and whatever decodes re-encodes to exactly the same
        /// bytes (one encoding per frame).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let bytes = Bytes::from(bytes);
            if let Ok(frame) = Frame::decode(bytes.clone()) {
                prop_assert_eq!(frame.encode(), bytes);
            }
        }

        /// Records and digests cut anywhere are errors (data frames end in an open-ended
        /// payload, so they are cut inside their header).
        #[test]
        fn truncated_frames_are_errors(
            origin in proptest::collection::vec(any::<u8>(), 1..100),
            neighbours in proptest::collection::vec(any::<u64>(), 0..8),
            topics in proptest::collection::vec("[a-z]{1,8}", 0..4),
            digest: u64,
            topic in proptest::option::of("[a-z]{1,8}"),
            cut: usize,
        ) {
            let record = Frame::Record(Record {
                key_type: 1, origin: origin.clone().into(), incarnation: 1, version: 2, neighbours,
                topics, signature: Bytes::from_static(b"signature"),
            });
            let data = Frame::Data(Data {
                key_type: 2, origin: origin.into(), seqno: 3, ttl: 4, hops: 1, view: 5, topic,
                signature: Bytes::from_static(b"sig"), payload: Bytes::from_static(b"payload"),
            });
            for (frame, open_tail) in [(record, 0), (Frame::Digest(digest), 0), (data, 7)] {
                let wire = frame.encode();
                let cut = cut % (wire.len() - open_tail);
                prop_assert!(Frame::decode(wire.slice(..cut)).is_err(), "{:?} cut at {}", frame, cut);
            }
        }

        /// Any set of ids comes back from its frames, each once.
        #[test]
        fn ids_round_trip(ids in proptest::collection::vec((0u64..4, any::<u64>()), 0..300)) {
            let mut want = ids.clone();
            want.sort_unstable();
            want.dedup();
            let frames = Ids::new(ids);
            let mut got = Vec::new();
            for f in frames {
                let frame = Frame::Iwant(f);
                prop_assert_eq!(Frame::decode(frame.encode()).unwrap(), frame.clone());
                if let Frame::Iwant(f) = frame {
                    got.extend(f.iter());
                }
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn data_round_trips(
            origin in proptest::collection::vec(any::<u8>(), 1..=MAX_NODE_ID_LEN),
            key_type: u8, seqno: u64, ttl in 1u8.., hops_seed: u8, view: u64,
            topic in proptest::option::of("[a-z0-9/_.-]{1,64}"),
            signature in proptest::collection::vec(any::<u8>(), 1..=MAX_SIGNATURE_LEN),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let hops = hops_seed % ttl + 1;
            let frame = Frame::Data(Data {
                key_type, origin: origin.into(), seqno, ttl, hops, view, topic,
                signature: signature.into(), payload: payload.into(),
            });
            prop_assert_eq!(Frame::decode(frame.encode()).unwrap(), frame);
        }

        #[test]
        fn records_round_trip(
            origin in proptest::collection::vec(any::<u8>(), 1..=MAX_NODE_ID_LEN),
            key_type: u8, incarnation: u64, version: u64,
            neighbours in proptest::collection::vec(any::<u64>(), 0..64),
            topics in proptest::collection::vec("\\PC{1,20}", 0..16),
            signature in proptest::collection::vec(any::<u8>(), 1..=MAX_SIGNATURE_LEN),
        ) {
            let frame = Frame::Record(Record {
                key_type, origin: origin.into(), incarnation, version, neighbours, topics,
                signature: signature.into(),
            });
            prop_assert_eq!(Frame::decode(frame.encode()).unwrap(), frame);
        }
    }
}
