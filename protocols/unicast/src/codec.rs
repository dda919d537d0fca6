//! The wire format of `/bcos/unicast/1.0.0` (see SPEC.md): varint-length-prefixed frames with a
//! fixed 11-byte binary header and the payload.
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

const KIND_REQUEST: u8 = 0;
const KIND_ONEWAY: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_ERROR: u8 = 3;

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

/// Encoder and decoder of [`Frame`]s with a maximum frame size.
#[derive(Debug, Clone)]
pub struct Codec {
    max_frame: usize,
}

impl Codec {
    /// A codec that refuses frames (header plus payload) larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Codec {
            max_frame: max_frame.max(HEADER_LEN),
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl EncodeFrame for Codec {
    type Item = Frame;

    /// Writes the length prefix and header; a payload of [`ZERO_COPY_MIN`] bytes or more is
    /// returned to be written from its own buffer, a smaller one is copied after the header.
    fn encode_frame(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<Option<Bytes>> {
        let len = frame.body_len();
        if len > self.max_frame {
            return Err(invalid(format!(
                "frame of {len} bytes exceeds the limit of {}",
                self.max_frame
            )));
        }
        let mut prefix = unsigned_varint::encode::usize_buffer();
        let prefix = unsigned_varint::encode::usize(len, &mut prefix);
        let (kind, id, module, body) = match frame {
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
        let inline = body.len() < ZERO_COPY_MIN;
        dst.reserve(prefix.len() + HEADER_LEN + if inline { body.len() } else { 0 });
        dst.put_slice(prefix);
        dst.put_u8(kind);
        dst.put_u64(id);
        dst.put_u16(module);
        if inline {
            dst.put_slice(&body);
            return Ok(None);
        }
        Ok(Some(body))
    }
}

impl Encoder for Codec {
    type Item<'a> = Frame;
    type Error = io::Error;

    /// The whole frame into `dst` (the payload copied), for callers of `asynchronous_codec`.
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), io::Error> {
        if let Some(payload) = self.encode_frame(frame, dst)? {
            dst.put_slice(&payload);
        }
        Ok(())
    }
}

/// `reason` cut to at most [`MAX_REASON_LEN`] bytes at a character boundary.
fn truncate(reason: &str) -> &str {
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
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        let Some(mut body) = take_frame(src, HEADER_LEN, self.max_frame)? else {
            return Ok(None);
        };
        let kind = body.get_u8();
        let id = body.get_u64();
        let module = body.get_u16();
        let frame = match kind {
            KIND_REQUEST => Frame::Request {
                id,
                module,
                payload: body,
            },
            KIND_ONEWAY => Frame::Oneway {
                module,
                payload: body,
            },
            KIND_RESPONSE => Frame::Response { id, payload: body },
            KIND_ERROR if body.len() > MAX_REASON_LEN => {
                return Err(invalid(format!(
                    "error reason of {} bytes exceeds {MAX_REASON_LEN}",
                    body.len()
                )));
            }
            KIND_ERROR => Frame::Error {
                id,
                reason: String::from_utf8(body.to_vec())
                    .map_err(|_| invalid("error reason is not UTF-8".into()))?,
            },
            other => return Err(invalid(format!("unknown frame kind {other}"))),
        };
        Ok(Some(frame))
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
                codec.encode(f.clone(), &mut wire).unwrap();
            }
            let mut src = BytesMut::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                src.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut src).unwrap() {
                    out.push(f);
                }
            }
            let expected: Vec<Frame> = frames
                .into_iter()
                .map(|f| match f {
                    Frame::Error { id, reason } => Frame::Error { id, reason: truncate(&reason).to_string() },
                    other => other,
                })
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
                        prop_assert!(frame.body_len() <= 512);
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
        let big = Frame::Oneway {
            module: 1,
            payload: Bytes::from(vec![0; 2000]),
        };
        assert!(codec.encode(big, &mut BytesMut::new()).is_err());
    }
}
