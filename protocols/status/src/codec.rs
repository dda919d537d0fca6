//! The frames of `/bcos/status/1.0.0` (byte-exact description in `SPEC.md`).
//!
//! The two frames sent all the time — the announcement every second, the query on change — are
//! 17 fixed bytes, so the idle cost is a few dozen bytes per peer per second with framing and
//! TLS. The status record is CBOR (a map with text keys), the one place where the format must
//! grow: a later version can add keys and this one ignores them. Decoding never trusts a length
//! it has not seen the bytes for, and enforces the protocol's limits on the built-in fields
//! while it reads, so a frame cannot make us hold much more than its own size.

use std::fmt;

use bytes::{Buf as _, Bytes};
use cbor4ii::core::{
    dec::{Read as _, Reference},
    utils::SliceReader,
};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, SeqAccess, Visitor},
};

use crate::status::{MAX_MODULES, MAX_TOPIC_LEN, MAX_TOPICS, MAX_VERSION_LEN, Status};

/// Kind byte of an announcement.
pub const ANNOUNCE: u8 = 0x01;
/// Kind byte of a query.
pub const QUERY: u8 = 0x02;
/// Kind byte of a status response.
pub const STATUS: u8 = 0x03;

/// Kind byte plus incarnation and seq: the size of announcements and queries, and the fixed
/// head of a status frame.
pub const HEAD_LEN: usize = 17;

/// Room for unknown map entries added by later versions of the protocol.
const EXTENSION_ROOM: usize = 4096;

/// Most bytes a status frame takes beyond its payload: the head, and a record whose built-in
/// fields are all at their limits (CBOR headers included), plus 4 KiB for unknown keys.
pub const FRAME_OVERHEAD: usize = HEAD_LEN
    + 1 // map header
    + (1 + 7) + 9 // "payload", byte string header
    + (1 + 6) + 3 + MAX_TOPICS * (3 + MAX_TOPIC_LEN) // "topics", array, text strings
    + (1 + 7) + 3 + MAX_MODULES * 3 // "modules", array, unsigned ints
    + (1 + 7) + 3 + MAX_VERSION_LEN // "version", text string
    + EXTENSION_ROOM;

/// One frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "My status is now `(incarnation, seq)`": sent on change, on connect and periodically.
    Announce {
        /// The sender's incarnation.
        incarnation: u64,
        /// The sender's current seq.
        seq: u64,
    },
    /// "Send me your status; I want `(incarnation, seq)` (or newer)".
    Query {
        /// The incarnation the asker saw announced.
        incarnation: u64,
        /// The seq the asker saw announced.
        seq: u64,
    },
    /// The answer to a query: the sender's current status.
    Status(Status),
}

impl Message {
    /// The frame body.
    pub fn encode(&self) -> Bytes {
        let (kind, incarnation, seq) = match self {
            Message::Announce { incarnation, seq } => (ANNOUNCE, *incarnation, *seq),
            Message::Query { incarnation, seq } => (QUERY, *incarnation, *seq),
            Message::Status(s) => (STATUS, s.incarnation, s.seq),
        };
        let extra = match self {
            Message::Status(s) => s.payload.len() + 64,
            _ => 0,
        };
        let mut head = Vec::with_capacity(HEAD_LEN + extra);
        head.push(kind);
        head.extend_from_slice(&incarnation.to_be_bytes());
        head.extend_from_slice(&seq.to_be_bytes());
        let Message::Status(s) = self else {
            return Bytes::from(head);
        };
        let record = RecordOut {
            payload: RawBytes(&s.payload),
            topics: &s.topics,
            modules: &s.modules,
            version: &s.version,
        };
        // The record is appended after the head.
        let frame = cbor4ii::serde::to_vec(head, &record)
            // Writing into a Vec fails only when memory cannot be reserved.
            .expect("CBOR encoding into memory");
        Bytes::from(frame)
    }

    /// Decodes a frame body; `Err` says why it is malformed. The built-in fields of a status
    /// are checked against the protocol limits; its payload size is the caller's to check.
    pub fn decode(mut frame: Bytes) -> Result<Message, String> {
        if frame.len() < HEAD_LEN {
            return Err(format!(
                "frame of {} bytes is shorter than the {HEAD_LEN}-byte head",
                frame.len()
            ));
        }
        let kind = frame.get_u8();
        let incarnation = frame.get_u64();
        let seq = frame.get_u64();
        match kind {
            ANNOUNCE | QUERY if !frame.is_empty() => Err(format!(
                "{} trailing bytes after a {} frame",
                frame.len(),
                if kind == ANNOUNCE {
                    "announce"
                } else {
                    "query"
                }
            )),
            ANNOUNCE => Ok(Message::Announce { incarnation, seq }),
            QUERY => Ok(Message::Query { incarnation, seq }),
            STATUS => decode_record(&frame).map(|mut s| {
                s.incarnation = incarnation;
                s.seq = seq;
                Message::Status(s)
            }),
            other => Err(format!("unknown frame kind {other:#04x}")),
        }
    }
}

/// The link's decode function.
pub(crate) fn decode(frame: Bytes) -> Result<Message, String> {
    Message::decode(frame)
}

fn decode_record(body: &Bytes) -> Result<Status, String> {
    let mut de = cbor4ii::serde::Deserializer::new(SliceReader::new(body));
    let record = RecordIn::deserialize(&mut de).map_err(|e| format!("bad status record: {e}"))?;
    let mut rest = de.into_inner();
    let trailing = match rest.fill(1) {
        Ok(Reference::Long(b)) => !b.is_empty(),
        Ok(Reference::Short(b)) => !b.is_empty(),
        Err(never) => match never {},
    };
    if trailing {
        return Err("trailing bytes after the status record".into());
    }
    if record.version.len() > MAX_VERSION_LEN {
        return Err(format!(
            "version of {} bytes exceeds the limit of {MAX_VERSION_LEN}",
            record.version.len()
        ));
    }
    let payload = match record.payload {
        // Zero copy: the payload stays a view of the received frame.
        Payload::Borrowed(b) => body.slice_ref(b),
        Payload::Owned(v) => Bytes::from(v),
    };
    Ok(Status::new(0, 0)
        .with_payload(payload)
        .with_topics(record.topics)
        .with_modules(record.modules)
        .with_version(record.version))
}

#[derive(Serialize)]
struct RecordOut<'a> {
    payload: RawBytes<'a>,
    topics: &'a [String],
    modules: &'a [u16],
    version: &'a str,
}

/// Serializes as a CBOR byte string (a plain `&[u8]` would be an array of integers).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    #[serde(default, borrow)]
    payload: Payload<'a>,
    #[serde(default, deserialize_with = "topics")]
    topics: Vec<String>,
    #[serde(default, deserialize_with = "modules")]
    modules: Vec<u16>,
    #[serde(default)]
    version: String,
}

/// A received payload: borrowed from the frame when the byte string is in one piece.
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Default for Payload<'_> {
    fn default() -> Self {
        Payload::Borrowed(&[])
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Payload<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Payload<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Payload::Borrowed(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Payload::Owned(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(Payload::Owned(v))
            }
        }
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
}

/// A sequence of at most `limit` items, each accepted by `check`; fails as soon as either is
/// exceeded (never allocates from a declared length).
struct Bounded<T> {
    what: &'static str,
    limit: usize,
    check: fn(&T) -> Result<(), String>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {} {}", self.limit, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if out.len() == self.limit {
                return Err(de::Error::custom(format!(
                    "more than {} {}",
                    self.limit, self.what
                )));
            }
            (self.check)(&item).map_err(de::Error::custom)?;
            out.push(item);
        }
        Ok(out)
    }
}

fn topics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(Bounded {
        what: "topics",
        limit: MAX_TOPICS,
        check: |t: &String| {
            if t.len() > MAX_TOPIC_LEN {
                Err(format!(
                    "topic of {} bytes exceeds the limit of {MAX_TOPIC_LEN}",
                    t.len()
                ))
            } else {
                Ok(())
            }
        },
    })
}

fn modules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    d.deserialize_seq(Bounded {
        what: "modules",
        limit: MAX_MODULES,
        check: |_| Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn status_frame(record: &[u8]) -> Bytes {
        let mut f = vec![STATUS];
        f.extend_from_slice(&5u64.to_be_bytes());
        f.extend_from_slice(&9u64.to_be_bytes());
        f.extend_from_slice(record);
        Bytes::from(f)
    }

    #[test]
    fn small_frames_are_exact() {
        let a = Message::Announce {
            incarnation: 0x0102_0304_0506_0708,
            seq: 2,
        };
        let bytes = a.encode();
        assert_eq!(
            &bytes[..],
            &[1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(Message::decode(bytes).unwrap(), a);
        let mut long = a.encode().to_vec();
        long.push(0);
        assert!(Message::decode(Bytes::from(long)).is_err());
        assert!(Message::decode(Bytes::from_static(&[2; 16])).is_err());
        assert!(Message::decode(Bytes::from_static(&[9; 17])).is_err());
    }

    #[test]
    fn record_is_a_cbor_map_and_unknown_keys_are_ignored() {
        // {"payload": h'6869', "future": [1, {"x": 2}], "topics": ["t"]}
        let record = [
            0xa3, 0x67, b'p', b'a', b'y', b'l', b'o', b'a', b'd', 0x42, b'h', b'i', 0x66, b'f',
            b'u', b't', b'u', b'r', b'e', 0x82, 0x01, 0xa1, 0x61, b'x', 0x02, 0x66, b't', b'o',
            b'p', b'i', b'c', b's', 0x81, 0x61, b't',
        ];
        let frame = status_frame(&record);
        let Message::Status(s) = Message::decode(frame).unwrap() else {
            panic!("not a status")
        };
        assert_eq!((s.incarnation(), s.seq()), (5, 9));
        assert_eq!(s.payload(), &Bytes::from_static(b"hi"));
        assert_eq!(s.topics(), ["t"]);
        assert!(s.modules().is_empty() && s.version().is_empty());
        // Our encoding is exactly the four keys, in this order.
        let ours = Message::Status(
            Status::new(5, 9)
                .with_payload(Bytes::from_static(b"hi"))
                .with_modules([7]),
        )
        .encode();
        let mut want = vec![0xa4, 0x67];
        want.extend_from_slice(b"payload");
        want.extend_from_slice(&[0x42, b'h', b'i', 0x66]);
        want.extend_from_slice(b"topics");
        want.extend_from_slice(&[0x80, 0x67]);
        want.extend_from_slice(b"modules");
        want.extend_from_slice(&[0x81, 0x07, 0x67]);
        want.extend_from_slice(b"version");
        want.push(0x60);
        assert_eq!(&ours[HEAD_LEN..], &want[..]);
    }

    #[test]
    fn limits_and_truncation_are_malformed() {
        let full = Message::Status(
            Status::new(1, 1)
                .with_payload(Bytes::from_static(b"payload"))
                .with_topics(["a"]),
        )
        .encode();
        for cut in HEAD_LEN..full.len() {
            assert!(Message::decode(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut trailing = full.to_vec();
        trailing.push(0);
        assert!(Message::decode(Bytes::from(trailing)).is_err());
        // Too many topics: caught while reading, before the array is complete.
        let many = Status::new(1, 1).with_topics((0..=MAX_TOPICS).map(|i| i.to_string()));
        let err = Message::decode(Message::Status(many).encode()).unwrap_err();
        assert!(err.contains("more than 1024 topics"), "{err}");
        let long = Status::new(1, 1).with_topics(["x".repeat(MAX_TOPIC_LEN + 1)]);
        assert!(Message::decode(Message::Status(long).encode()).is_err());
        let version = Status::new(1, 1).with_version("v".repeat(MAX_VERSION_LEN + 1));
        assert!(Message::decode(Message::Status(version).encode()).is_err());
        // A declared length far beyond the frame fails without allocating it.
        let huge = [
            0xa1, 0x66, b't', b'o', b'p', b'i', b'c', b's', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff,
        ];
        assert!(Message::decode(status_frame(&huge)).is_err());
        // Not a map; integer keys; a module out of u16 range.
        assert!(Message::decode(status_frame(&[0x80])).is_err());
        assert!(Message::decode(status_frame(&[0xa1, 0x01, 0x02])).is_err());
        let mut wide = vec![0xa1, 0x67];
        wide.extend_from_slice(b"modules");
        wide.extend_from_slice(&[0x81, 0x1a, 0x00, 0x01, 0x00, 0x00]);
        assert!(Message::decode(status_frame(&wide)).is_err());
    }

    #[test]
    fn overhead_covers_a_maximal_record() {
        let max = Status::new(u64::MAX, u64::MAX)
            .with_payload(Bytes::from(vec![0; 70_000]))
            .with_topics((0..MAX_TOPICS).map(|i| format!("{i:0>256}")))
            .with_modules((0..MAX_MODULES as u16).map(|m| m + 1000))
            .with_version("v".repeat(MAX_VERSION_LEN));
        assert_eq!(max.check(70_000), Ok(()));
        let len = Message::Status(max).encode().len();
        assert!(len <= 70_000 + FRAME_OVERHEAD - EXTENSION_ROOM, "{len}");
        assert_eq!(FRAME_OVERHEAD, 272_707, "the figure in SPEC.md");
    }

    fn any_status() -> impl Strategy<Value = Status> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec("[a-z/]{0,12}", 0..6),
            proptest::collection::vec(any::<u16>(), 0..6),
            "\\PC{0,20}",
        )
            .prop_map(|(i, s, p, t, m, v)| {
                Status::new(i, s)
                    .with_payload(Bytes::from(p))
                    .with_topics(t)
                    .with_modules(m)
                    .with_version(v)
            })
    }

    fn any_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(incarnation, seq)| Message::Announce { incarnation, seq }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(incarnation, seq)| Message::Query { incarnation, seq }),
            any_status().prop_map(Message::Status),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(m in any_message()) {
            prop_assert_eq!(Message::decode(m.encode()).unwrap(), m);
        }

        /// Arbitrary bytes never panic; what decodes is within the protocol's limits and
        /// survives encode → decode.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = Message::decode(Bytes::from(bytes)) {
                if let Message::Status(s) = &m {
                    prop_assert_eq!(s.check(usize::MAX), Ok(()));
                }
                prop_assert_eq!(Message::decode(m.encode()).unwrap(), m);
            }
        }

        /// A status cut anywhere is an error, never a panic or a shorter status.
        #[test]
        fn truncated_statuses_are_errors(m in any_status(), cut: usize) {
            let wire = Message::Status(m).encode();
            let cut = cut % wire.len();
            prop_assert!(Message::decode(wire.slice(..cut)).is_err(), "cut at {}", cut);
        }

        #[test]
        fn arbitrary_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Past the head, to exercise the CBOR reader rather than the kind check.
            let _ = Message::decode(status_frame(&bytes));
        }

        #[test]
        fn corrupted_statuses_never_panic(
            m in any_status(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = Message::Status(m).encode().to_vec();
            for (at, x) in flips {
                let i = HEAD_LEN + at % (bytes.len() - HEAD_LEN);
                bytes[i] ^= x;
            }
            let _ = Message::decode(Bytes::from(bytes));
        }
    }
}
