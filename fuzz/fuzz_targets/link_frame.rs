//! The length-prefixed framing shared by flood and status (`bcos_p2p_core::framed`): the
//! [`FrameCodec`] and `take_frame` on arbitrary bytes in arbitrary chunks. A frame is never
//! longer than the limit, the buffer never grows beyond what arrived, and every frame re-encodes
//! to exactly the bytes it was read from (the varint prefix is minimal).
#![no_main]

use asynchronous_codec::{Decoder as _, Encoder as _};
use bcos_p2p_core::framed::{FrameCodec, take_frame};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, min, chunk, rest @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_le_bytes([*a, *b]));
    let chunk = usize::from(*chunk % 16) + 1;
    let mut codec = FrameCodec::new(max);
    let mut src = BytesMut::new();
    'feed: for piece in rest.chunks(chunk) {
        src.extend_from_slice(piece);
        loop {
            let before = src.clone();
            match codec.decode(&mut src) {
                Ok(Some(body)) => {
                    assert!(body.len() <= max);
                    let used = before.len() - src.len();
                    let mut wire = BytesMut::new();
                    codec
                        .encode(body, &mut wire)
                        .expect("a decoded frame re-encodes");
                    assert_eq!(&wire[..], &before[..used], "one encoding per frame");
                }
                Ok(None) => {
                    assert_eq!(src, before, "waiting must not consume");
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    // take_frame with a header minimum: never a body outside min..=max.
    let min = usize::from(*min);
    let mut src = BytesMut::from(rest);
    while let Ok(Some(body)) = take_frame(&mut src, min, max) {
        assert!((min..=max).contains(&body.len()));
    }
});
