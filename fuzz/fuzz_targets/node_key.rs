//! `node.key` parsing: PEM, and DER as PKCS#8, SEC1 and PKCS#1. A key that loads must write
//! itself out as PKCS#8 PEM and load back as the same node.
//!
//! Input: a mode byte, then the bytes for that mode.
#![no_main]

use bcos_p2p_core::{NodeId, NodeKey};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivateSec1KeyDer};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let key = match mode % 4 {
        0 => NodeKey::from_pem(rest),
        1 => NodeKey::from_pkcs8_der(rest),
        2 => NodeKey::from_der(&PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(rest))),
        _ => NodeKey::from_der(&PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(rest))),
    };
    let Ok(key) = key else {
        return;
    };
    assert_eq!(key.node_id().key_type(), key.key_type());
    let again = NodeKey::from_pem(key.to_pkcs8_pem().as_bytes()).expect("our PKCS#8 PEM loads");
    assert_eq!(again.node_id(), key.node_id());
    if let Some(keypair) = key.keypair() {
        assert_eq!(
            NodeId::from_public_key(&keypair.public()).as_ref(),
            Ok(key.node_id())
        );
    }
    assert_eq!(key.peer_id(), key.node_id().to_peer_id());
});
