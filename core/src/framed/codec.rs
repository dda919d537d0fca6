//! The varint length prefix every protocol's frames start with: [`take_frame`] cuts one frame
//! off a buffer for any decoder, [`FrameCodec`] is the codec of plain byte frames (flood,
//! status).
//!
//! It sits beside [`FramedIo`](super::FramedIo), which reads and writes these frames, so that a
//! protocol with a codec of its own (unicast's binary header) finds the prefix here and needs
//! nothing from the flood/status link.

use std::io;

use asynchronous_codec::{Decoder, Encoder};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

use super::{EncodeFrame, ZERO_COPY_MIN};

/// Varint length-prefixed frame bodies (unsigned-varint, as libp2p uses everywhere).
///
/// The length is checked against the limit before any of the body is buffered, and nothing is
/// reserved from the prefix: memory follows the bytes that actually arrive.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
    /// Largest frame accepted when reading (our own outbound stream reads nothing).
    max_read: usize,
}

impl FrameCodec {
    /// A codec for bodies of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec {
            max_frame,
            max_read: max_frame,
        }
    }

    /// A codec for a write-only stream: any frame longer than 0 bytes read from it is an error
    /// as soon as its length prefix arrives (nothing is buffered for it).
    pub fn write_only(max_frame: usize) -> Self {
        FrameCodec {
            max_frame,
            max_read: 0,
        }
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Frame bodies shorter than this are copied out of the read buffer by [`take_frame`]; longer
/// ones are split off it, uncopied (they hold at most about their own size of it). Half of the
/// read buffer's smallest size ([`super::FramedIo`] reads into at least 8 KiB).
pub const COPY_BELOW: usize = 4 * 1024;

/// The longest varint length prefix (the multiformats unsigned-varint limit).
const MAX_PREFIX: usize = 9;

/// Takes one varint length-prefixed frame body of `min..=max` bytes off the front of `src`:
/// `None` until all of it has arrived. The length is checked as soon as the prefix is complete,
/// before any of the body is buffered, and nothing is reserved from it. Bodies shorter than
/// [`COPY_BELOW`] are copied into their own allocation, longer ones share `src`'s. Shared by
/// every protocol's decoder.
pub fn take_frame(src: &mut BytesMut, min: usize, max: usize) -> io::Result<Option<Bytes>> {
    let (len, rest) = match unsigned_varint::decode::usize(src) {
        Ok(v) => v,
        Err(unsigned_varint::decode::Error::Insufficient) => return Ok(None),
        Err(e) => return Err(invalid(format!("bad length prefix: {e}"))),
    };
    // unsigned-varint's 64-bit decoder takes a 10th byte and drops the bits that do not fit,
    // so an overlong prefix could pass as a small length; the varint spec allows 9 bytes.
    if src.len() - rest.len() > MAX_PREFIX {
        return Err(invalid(format!(
            "length prefix longer than {MAX_PREFIX} bytes"
        )));
    }
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    if len < min {
        return Err(invalid(format!(
            "frame of {len} bytes is shorter than the {min}-byte header"
        )));
    }
    if rest.len() < len {
        return Ok(None);
    }
    let prefix = src.len() - rest.len();
    src.advance(prefix);
    if len < COPY_BELOW {
        // A small frame in an allocation of its own: split off, it would keep the whole read
        // buffer alive for as long as the frame is kept (records, statuses, certificates are
        // kept for good), and the buffer could not be reused.
        let body = Bytes::copy_from_slice(&src[..len]);
        src.advance(len);
        return Ok(Some(body));
    }
    Ok(Some(src.split_to(len).freeze()))
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, io::Error> {
        take_frame(src, 0, self.max_read)
    }
}

impl EncodeFrame for FrameCodec {
    type Item = Bytes;

    /// The length prefix, then the body: copied after it when small, returned to be written
    /// uncopied from its own buffer when [`ZERO_COPY_MIN`] bytes or more.
    fn encode_frame(&mut self, body: Bytes, dst: &mut BytesMut) -> io::Result<Option<Bytes>> {
        if body.len() > self.max_frame {
            return Err(invalid(format!(
                "frame of {} bytes exceeds the limit of {}",
                body.len(),
                self.max_frame
            )));
        }
        let mut prefix = unsigned_varint::encode::usize_buffer();
        dst.put_slice(unsigned_varint::encode::usize(body.len(), &mut prefix));
        if body.len() >= ZERO_COPY_MIN {
            return Ok(Some(body));
        }
        dst.put_slice(&body);
        Ok(None)
    }
}

impl Encoder for FrameCodec {
    type Item<'a> = Bytes;
    type Error = io::Error;

    /// The whole frame into `dst`, for callers of `asynchronous_codec`.
    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        if let Some(body) = self.encode_frame(body, dst)? {
            dst.put_slice(&body);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_length_prefix_is_refused() {
        // Nine continuation bytes and a tenth: 5 in the low bits, the rest shifted out of 64.
        let mut src = BytesMut::from(
            &[
                0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0, 0, 0, 0, 0,
            ][..],
        );
        assert!(take_frame(&mut src, 0, 1 << 20).is_err());
        // The same length written in nine bytes or fewer is fine.
        let mut src = BytesMut::from(&[0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..]);
        assert!(take_frame(&mut src, 0, 1 << 20).is_err(), "not minimal");
        let mut src = BytesMut::from(&[0x05, 1, 2, 3, 4, 5][..]);
        assert_eq!(take_frame(&mut src, 0, 1 << 20).unwrap().unwrap().len(), 5);
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"hello"), &mut buf)
            .unwrap();
        codec.encode(Bytes::new(), &mut buf).unwrap();
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "hello");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.encode(Bytes::from(vec![0; 17]), &mut buf).is_err());
        // A huge prefix fails before any body arrives, and reserves nothing.
        let mut huge = BytesMut::new();
        let mut p = unsigned_varint::encode::u64_buffer();
        huge.put_slice(unsigned_varint::encode::u64(1 << 40, &mut p));
        let cap = huge.capacity();
        assert!(codec.decode(&mut huge).is_err());
        assert_eq!(huge.capacity(), cap);
        // Partial frames wait.
        let mut part = BytesMut::from(&[5u8, b'a', b'b'][..]);
        assert!(codec.decode(&mut part).unwrap().is_none());
        // Overlong varints are errors.
        let mut bad = BytesMut::from(&[0xffu8; 11][..]);
        assert!(codec.decode(&mut bad).is_err());
    }
}
