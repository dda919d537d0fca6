//! The unicast stream decoder (`/bcos/unicast/1.0.0`): arbitrary bytes, arriving in arbitrary
//! chunks, against an arbitrary frame limit. Every frame it yields must re-encode to as many bytes
//! as it was read from and decode to itself, and waiting for more must consume nothing.
#![no_main]

use asynchronous_codec::{Decoder as _, Encoder as _};
use bcos_p2p_unicast::codec::Codec;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, chunk, rest @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_le_bytes([*a, *b]));
    let chunk = usize::from(*chunk % 16) + 1;
    let mut codec = Codec::new(max);
    let mut src = BytesMut::new();
    for piece in rest.chunks(chunk) {
        src.extend_from_slice(piece);
        // Each round either yields a frame (and consumes at least a header) or stops.
        loop {
            let before = src.len();
            match codec.decode(&mut src) {
                Ok(Some(frame)) => {
                    assert!(src.len() < before, "a frame was decoded from nothing");
                    assert!(frame.data_len() <= max, "a frame beyond the limit");
                    let mut wire = BytesMut::new();
                    codec
                        .encode(frame.clone(), &mut wire)
                        .expect("a decoded frame re-encodes");
                    // Same size: the length prefix it came with was the minimal one.
                    assert_eq!(wire.len(), before - src.len(), "{frame:?}");
                    assert_eq!(codec.decode(&mut wire).unwrap(), Some(frame));
                    assert!(wire.is_empty());
                }
                Ok(None) => {
                    assert_eq!(src.len(), before, "waiting must not consume");
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
