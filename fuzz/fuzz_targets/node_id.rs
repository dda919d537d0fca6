//! NodeId parsing: FISCO hex text (as in `node.nodeid`, config files and CLI arguments) and raw
//! bytes (as wire formats carry them). A NodeId that parses must print, re-parse, and convert to
//! a libp2p key and back without loss.
//!
//! Input: a mode byte, then the bytes for that mode.
#![no_main]

use bcos_p2p_core::NodeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let parsed = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.parse::<NodeId>(),
            Err(_) => return,
        }
    } else {
        NodeId::from_untyped_bytes(rest)
    };
    let Ok(id) = parsed else {
        return;
    };
    assert_eq!(id.to_string().parse::<NodeId>().as_ref(), Ok(&id));
    assert_eq!(NodeId::from_untyped_bytes(id.as_bytes()).as_ref(), Ok(&id));
    if let Some(key) = id.to_public_key() {
        assert_eq!(NodeId::from_public_key(&key).as_ref(), Ok(&id));
        assert_eq!(id.to_peer_id(), key.to_peer_id());
    }
});
