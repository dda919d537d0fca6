//! The flood frame decoder (`/bcos/flood/2.0.0`): arbitrary frame bodies. A body that decodes
//! must re-encode to exactly the same bytes (the format has one encoding per frame).
#![no_main]

use bcos_p2p_flood::wire::Frame;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(body.clone()) {
        assert_eq!(frame.encode(), body, "{frame:?}");
    }
});
