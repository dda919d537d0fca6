//! Frames as a member would write them: flood DATA frames signed by any key, for any origin,
//! CERT frames with a member's chain, and unicast requests.

use bcos_p2p::{NodeKey, flood};
use bytes::Bytes;

/// A DATA frame (with its length prefix) from origin `key`, signed by `signer`, as it leaves
/// the origin (hops 1): a broadcast when `topic` is `None`.
pub fn signed_by(
    signer: &NodeKey,
    key: &NodeKey,
    (seqno, ttl, view): (u64, u8, u64),
    topic: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    let mut data = flood::wire::Data {
        key_type: key.key_type().code(),
        origin: Bytes::copy_from_slice(key.node_id().as_bytes()),
        seqno,
        ttl,
        hops: 1,
        view,
        topic: topic.map(str::to_string),
        signature: Bytes::new(),
        payload: Bytes::copy_from_slice(payload),
    };
    data.signature = signer.sign(&data.signed_message()).unwrap().into();
    let body = flood::wire::Frame::Data(data).encode();
    let mut frame = super::varint(body.len() as u64);
    frame.extend_from_slice(&body);
    frame
}

/// A DATA frame from `key`, signed by it, with view 0.
pub fn data_frame(key: &NodeKey, seqno: u64, ttl: u8, payload: &[u8]) -> Vec<u8> {
    signed_by(key, key, (seqno, ttl, 0), None, payload)
}

/// A CERT frame (with its length prefix): the chain of `tls`'s node, as it sends it first.
pub fn cert_frame(tls: &bcos_p2p::ca_tls::Config) -> Vec<u8> {
    let me = tls.local_node_id();
    let body = flood::wire::Frame::Cert(flood::wire::Cert {
        key_type: me.key_type().code(),
        origin: Bytes::copy_from_slice(me.as_bytes()),
        chain: tls
            .local_chain()
            .iter()
            .map(|c| Bytes::copy_from_slice(c))
            .collect(),
    })
    .encode();
    let mut frame = super::varint(body.len() as u64);
    frame.extend_from_slice(&body);
    frame
}

/// A unicast request frame: the length prefix, kind 0, `id`, `module` and `payload`.
pub fn unicast_request(id: u64, module: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend(id.to_be_bytes());
    body.extend(module.to_be_bytes());
    body.extend_from_slice(payload);
    let mut frame = super::varint(body.len() as u64);
    frame.extend(body);
    frame
}
