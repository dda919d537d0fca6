//! The wire formats of `/bcos/unicast/1.0.0` and `1.1.0` (see SPEC.md): varint-length-prefixed
//! frames with a fixed binary header and the payload; in 1.1 a message may come in parts
//! (a first frame with its total length, then continuations), so messages of different modules
//! interleave.
//!
//! A binary header instead of CBOR: the header is three integers, and encoding it is a few
//! stores while a CBOR map costs a serializer pass and field-name parsing per message. The
//! payload is opaque bytes either way and is never copied on decode (a `Bytes` slice of the
//! frame). The decoder checks the length prefix against the limit *before* buffering anything
//! and never reserves memory from the prefix: a peer that announces 2^40 bytes gets its stream
//! closed, and one that announces 32 MiB and sends nothing makes the decoder reserve nothing (the
//! stream reader, `bcos_p2p_core::framed::FramedIo`, then holds at most 2 MiB for it).

use std::io;

use asynchronous_codec::{Decoder, Encoder};
use bcos_p2p_core::framed::{EncodeFrame, ZERO_COPY_MIN, take_frame};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the payload: kind (1), id (8), module (2).
pub const HEADER_LEN: usize = 11;

/// Kind of a request.
pub const KIND_REQUEST: u8 = 0;
/// Kind of a one-way message.
pub const KIND_ONEWAY: u8 = 1;
/// Kind of a response.
pub const KIND_RESPONSE: u8 = 2;
/// Kind of an error answer.
pub const KIND_ERROR: u8 = 3;

/// Longest error reason sent on the wire (longer ones are cut at a character boundary).
pub const MAX_REASON_LEN: usize = 1024;

/// One message on a unicast stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request to be answered with a `Response` or `Error` with the same id.
    Request {
        /// Chosen by the sender, unique among its requests in flight on this stream.
        id: u64,
        /// Which module (consensus, sync, AMOP, …) it is for.
        module: u16,
        /// The application bytes.
        payload: Bytes,
    },
    /// A message that gets no answer.
    Oneway {
        /// Which module it is for.
        module: u16,
        /// The application bytes.
        payload: Bytes,
    },
    /// The answer to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The application bytes.
        payload: Bytes,
    },
    /// Request `id` failed at the receiver (unknown module, busy, handler error).
    Error {
        /// The request's id.
        id: u64,
        /// Why, UTF-8.
        reason: String,
    },
}

impl Frame {
    /// The encoded size of this frame without its length prefix.
    pub fn body_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Request { payload, .. }
                | Frame::Oneway { payload, .. }
                | Frame::Response { payload, .. } => payload.len(),
                Frame::Error { reason, .. } => truncate(reason).len(),
            }
    }
}

/// The two versions of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `/bcos/unicast/1.0.0`: one frame per message.
    V1_0,
    /// `/bcos/unicast/1.1.0`: messages in parts, interleaved, optionally compressed.
    V1_1,
}

/// Bytes before the payload of a 1.1 message's first frame: kind (1), id (8), module (2),
/// flags (1), total (4).
pub const START_LEN: usize = 16;
/// Bytes before the payload of a 1.1 continuation frame: kind (1), id (8).
pub const MORE_LEN: usize = 9;
const KIND_MORE: u8 = 4;
/// Flag of a 1.1 message whose payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;

/// What a unicast stream carries: in 1.0 only whole messages ([`Wire::Start`] with
/// `total == data.len()` and no flags); in 1.1 a message's first part and its continuations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A message's first (in 1.0: only) frame.
    Start {
        /// `KIND_REQUEST`..`KIND_ERROR` (0..=3).
        kind: u8,
        /// The request id (a 1.1 one-way message: an id of the sender's choosing).
        id: u64,
        /// The module (0 in answers).
        module: u16,
        /// [`FLAG_ZSTD`] or 0.
        flags: u8,
        /// The payload's length as sent (compressed, if it is).
        total: u32,
        /// The payload's first part (in 1.0: all of it).
        data: Bytes,
    },
    /// More of message `id`'s payload (1.1 only).
    More {
        /// The message's id.
        id: u64,
        /// The next part.
        data: Bytes,
    },
}

impl Wire {
    /// A message in one frame, uncompressed.
    pub fn whole(frame: Frame) -> Wire {
        let (kind, id, module, data) = match frame {
            Frame::Request {
                id,
                module,
                payload,
            } => (KIND_REQUEST, id, module, payload),
            Frame::Oneway { module, payload } => (KIND_ONEWAY, 0, module, payload),
            Frame::Response { id, payload } => (KIND_RESPONSE, id, 0, payload),
            Frame::Error { id, reason } => (
                KIND_ERROR,
                id,
                0,
                Bytes::copy_from_slice(truncate(&reason).as_bytes()),
            ),
        };
        Wire::Start {
            kind,
            id,
            module,
            flags: 0,
            total: u32::try_from(data.len()).unwrap_or(u32::MAX),
            data,
        }
    }

    /// The payload bytes this frame carries.
    pub fn data_len(&self) -> usize {
        match self {
            Wire::Start { data, .. } | Wire::More { data, .. } => data.len(),
        }
    }
}

/// Makes a message of a complete `kind`, `id`, `module` and payload (already decompressed).
pub fn message(kind: u8, id: u64, module: u16, payload: Bytes) -> io::Result<Frame> {
    Ok(match kind {
        KIND_REQUEST => Frame::Request {
            id,
            module,
            payload,
        },
        KIND_ONEWAY => Frame::Oneway { module, payload },
        KIND_RESPONSE => Frame::Response { id, payload },
        KIND_ERROR if payload.len() > MAX_REASON_LEN => {
            return Err(invalid(format!(
                "error reason of {} bytes exceeds {MAX_REASON_LEN}",
                payload.len()
            )));
        }
        KIND_ERROR => Frame::Error {
            id,
            reason: String::from_utf8(payload.to_vec())
                .map_err(|_| invalid("error reason is not UTF-8".into()))?,
        },
        other => return Err(invalid(format!("unknown frame kind {other}"))),
    })
}

/// Encoder and decoder of [`Wire`] frames of one version with a maximum frame size.
#[derive(Debug, Clone)]
pub struct Codec {
    max_frame: usize,
    version: Version,
}

impl Codec {
    /// A 1.0 codec that refuses frames (header plus payload) larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Codec::versioned(max_frame, Version::V1_0)
    }

    /// A codec of `version`: frames over `max_frame` bytes (1.0) or whose payload part is over
    /// `max_frame` bytes (1.1) are refused.
    pub fn versioned(max_frame: usize, version: Version) -> Self {
        Codec {
            max_frame: match version {
                Version::V1_0 => max_frame.max(HEADER_LEN),
                Version::V1_1 => max_frame.saturating_add(START_LEN),
            },
            version,
        }
    }

    /// The version it speaks.
    pub fn version(&self) -> Version {
        self.version
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl EncodeFrame for Codec {
    type Item = Wire;

    /// Writes the length prefix and header; a payload of [`ZERO_COPY_MIN`] bytes or more is
    /// returned to be written from its own buffer, a smaller one is copied after the header.
    fn encode_frame(&mut self, wire: Wire, dst: &mut BytesMut) -> io::Result<Option<Bytes>> {
        let header = match (&wire, self.version) {
            (Wire::Start { .. }, Version::V1_0) => HEADER_LEN,
            (Wire::Start { .. }, Version::V1_1) => START_LEN,
            (Wire::More { .. }, Version::V1_1) => MORE_LEN,
            (Wire::More { .. }, Version::V1_0) => {
                return Err(invalid("a continuation frame on a 1.0 stream".into()));
            }
        };
        let len = header + wire.data_len();
        if len > self.max_frame {
            return Err(invalid(format!(
                "frame of {len} bytes exceeds the limit of {}",
                self.max_frame
            )));
        }
        let mut prefix = unsigned_varint::encode::usize_buffer();
        let prefix = unsigned_varint::encode::usize(len, &mut prefix);
        let inline = wire.data_len() < ZERO_COPY_MIN;
        dst.reserve(prefix.len() + header + if inline { wire.data_len() } else { 0 });
        dst.put_slice(prefix);
        let data = match wire {
            Wire::Start {
                kind,
                id,
                module,
                flags,
                total,
                data,
            } => {
                dst.put_u8(kind);
                dst.put_u64(id);
                dst.put_u16(module);
                if self.version == Version::V1_1 {
                    dst.put_u8(flags);
                    dst.put_u32(total);
                }
                data
            }
            Wire::More { id, data } => {
                dst.put_u8(KIND_MORE);
                dst.put_u64(id);
                data
            }
        };
        if inline {
            dst.put_slice(&data);
            return Ok(None);
        }
        Ok(Some(data))
    }
}

impl Encoder for Codec {
    type Item<'a> = Wire;
    type Error = io::Error;

    /// The whole frame into `dst` (the payload copied), for callers of `asynchronous_codec`.
    fn encode(&mut self, wire: Wire, dst: &mut BytesMut) -> Result<(), io::Error> {
        if let Some(payload) = self.encode_frame(wire, dst)? {
            dst.put_slice(&payload);
        }
        Ok(())
    }
}

/// `reason` cut to at most [`MAX_REASON_LEN`] bytes at a character boundary.
pub(crate) fn truncate(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl Decoder for Codec {
    type Item = Wire;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Wire>, io::Error> {
        let min = match self.version {
            Version::V1_0 => HEADER_LEN,
            Version::V1_1 => MORE_LEN,
        };
        let Some(mut body) = take_frame(src, min, self.max_frame)? else {
            return Ok(None);
        };
        let kind = body.get_u8();
        let id = body.get_u64();
        if self.version == Version::V1_0 {
            let module = body.get_u16();
            // Checks the kind and an error's reason now, as 1.0 always did.
            let frame = message(kind, id, module, body)?;
            return Ok(Some(Wire::whole(frame)));
        }
        if kind == KIND_MORE {
            if body.is_empty() {
                return Err(invalid("empty continuation frame".into()));
            }
            return Ok(Some(Wire::More { id, data: body }));
        }
        if kind > KIND_ERROR {
            return Err(invalid(format!("unknown frame kind {kind}")));
        }
        if body.len() < START_LEN - MORE_LEN {
            return Err(invalid("first frame shorter than its header".into()));
        }
        let module = body.get_u16();
        let flags = body.get_u8();
        let total = body.get_u32();
        if flags & !FLAG_ZSTD != 0 || (kind == KIND_ERROR && flags != 0) {
            return Err(invalid(format!("bad flags {flags:#x} for kind {kind}")));
        }
        if body.len() > total as usize {
            return Err(invalid(format!(
                "first part of {} bytes exceeds the message's {total}",
                body.len()
            )));
        }
        Ok(Some(Wire::Start {
            kind,
            id,
            module,
            flags,
            total,
            data: body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame() -> impl Strategy<Value = Frame> {
        let payload = proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        prop_oneof![
            (any::<u64>(), any::<u16>(), payload.clone()).prop_map(|(id, module, payload)| {
                Frame::Request {
                    id,
                    module,
                    payload,
                }
            }),
            (any::<u16>(), payload.clone())
                .prop_map(|(module, payload)| Frame::Oneway { module, payload }),
            (any::<u64>(), payload).prop_map(|(id, payload)| Frame::Response { id, payload }),
            (any::<u64>(), "\\PC{0,40}").prop_map(|(id, reason)| Frame::Error { id, reason }),
            // Long multi-byte reasons, cut at a character boundary within the limit.
            (any::<u64>(), 300usize..700).prop_map(|(id, n)| Frame::Error {
                id,
                reason: "é".repeat(n)
            }),
        ]
    }

    proptest! {
        /// encode → decode is the identity, also when the bytes arrive one at a time.
        #[test]
        fn round_trip(frames in proptest::collection::vec(frame(), 1..8), split in 1usize..7) {
            let mut codec = Codec::new(1 << 20);
            let mut wire = BytesMut::new();
            for f in &frames {
                codec.encode(Wire::whole(f.clone()), &mut wire).unwrap();
            }
            let mut src = BytesMut::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                src.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut src).unwrap() {
                    out.push(f);
                }
            }
            let expected: Vec<Wire> = frames
                .into_iter()
                .map(|f| Wire::whole(match f {
                    Frame::Error { id, reason } => Frame::Error { id, reason: truncate(&reason).to_string() },
                    Frame::Oneway { module, payload } => Frame::Oneway { module, payload },
                    other => other,
                }))
                .collect();
            prop_assert_eq!(out, expected);
            prop_assert!(src.is_empty());
        }

        /// Arbitrary bytes never panic: they decode, wait for more, or fail. What decodes is
        /// within the limit and survives encode → decode.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut codec = Codec::new(512);
            let mut src = BytesMut::from(&bytes[..]);
            for _ in 0..bytes.len() + 1 {
                match codec.decode(&mut src) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.data_len() + HEADER_LEN <= 512);
                        let mut wire = BytesMut::new();
                        codec.encode(frame.clone(), &mut wire).unwrap();
                        prop_assert_eq!(codec.decode(&mut wire).unwrap(), Some(frame));
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// A length prefix beyond the limit fails as soon as it is complete, before any of the
        /// body arrives and without reserving memory; one at the limit waits for its body.
        #[test]
        fn oversize_prefixes_are_refused_before_buffering(
            max in HEADER_LEN..1 << 20,
            excess in 1u64..1 << 40,
        ) {
            let mut codec = Codec::new(max);
            let mut prefix = unsigned_varint::encode::u64_buffer();
            let mut src = BytesMut::from(unsigned_varint::encode::u64(max as u64 + excess, &mut prefix));
            let cap = src.capacity();
            prop_assert!(codec.decode(&mut src).is_err());
            prop_assert_eq!(src.capacity(), cap);
            let mut src = BytesMut::from(unsigned_varint::encode::u64(max as u64, &mut prefix));
            prop_assert!(codec.decode(&mut src).unwrap().is_none());
        }
    }

    #[test]
    fn huge_length_prefix_fails_without_allocating() {
        let mut codec = Codec::new(32 << 20);
        let mut prefix = unsigned_varint::encode::u64_buffer();
        let mut src = BytesMut::from(unsigned_varint::encode::u64(1 << 40, &mut prefix));
        let cap = src.capacity();
        let err = codec.decode(&mut src).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        assert_eq!(src.capacity(), cap);
        // A frame within the limit whose bytes have not arrived reserves nothing either.
        let mut src = BytesMut::from(unsigned_varint::encode::u64(30 << 20, &mut prefix));
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(src.capacity() < 1024);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut codec = Codec::new(1024);
        for bad in [
            &[3u8, 0, 0, 0][..],
            &[11, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xff; 11],
        ] {
            assert!(codec.decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
        let mut src = BytesMut::new();
        src.put_u8(13);
        src.put_u8(KIND_ERROR);
        src.put_u64(1);
        src.put_u16(0);
        src.put_slice(&[0xff, 0xfe]);
        assert!(codec.decode(&mut src).is_err(), "non-UTF-8 reason");
        let big = Wire::whole(Frame::Oneway {
            module: 1,
            payload: Bytes::from(vec![0; 2000]),
        });
        assert!(codec.encode(big, &mut BytesMut::new()).is_err());
    }
}
