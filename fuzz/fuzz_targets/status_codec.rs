//! The status frame decoder (`/bcos/status/1.0.0`, a fixed head and a CBOR record): arbitrary
//! frame bodies. A decoded message must pass the protocol's limits and survive encode → decode.
#![no_main]

use bcos_p2p_status::codec::Message;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(Bytes::copy_from_slice(data)) {
        if let Message::Status(s) = &message {
            // The decoder enforces every built-in limit; only the payload size is the caller's.
            assert_eq!(s.check(usize::MAX), Ok(()), "{s:?}");
        }
        let again = Message::decode(message.encode()).expect("our own encoding decodes");
        assert_eq!(again, message);
    }
});
