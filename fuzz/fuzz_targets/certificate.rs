//! Certificates as a peer presents them and as `node.crt` / `ca.crt` hold them: PEM files,
//! DER leaves, DER chains verified against a CA the way the CA-TLS verifier does, trust anchors,
//! and the secp256k1 signature check webpki calls for FISCO's default curve.
//!
//! Input: a mode byte, then the bytes for that mode.
#![no_main]

use std::sync::OnceLock;

use bcos_p2p_ca_tls::{
    certified_key,
    crypto::{SECP256K1_SHA256, SUPPORTED},
    parse_pem_certs,
    pki::{CertificateAuthority, Period},
};
use bcos_p2p_core::KeyType;
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

/// A real chain CA, so chains whose issuer names match reach the signature checks.
fn anchors() -> &'static [TrustAnchor<'static>] {
    static ANCHORS: OnceLock<Vec<TrustAnchor<'static>>> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let ca = CertificateAuthority::new_root(
            KeyType::Secp256k1,
            "CN=chain,O=fisco-bcos",
            Period::days(3650),
        )
        .expect("CA");
        let der = ca.cert_der().expect("CA certificate");
        vec![
            webpki::anchor_from_trusted_cert(&der)
                .expect("anchor")
                .to_owned(),
        ]
    })
}

/// What the CA-TLS verifier does with a presented chain: the leaf must certify a node key, and
/// the chain must verify for both TLS roles.
fn check_chain(chain: &[CertificateDer<'_>]) {
    let Some(leaf) = chain.first() else {
        return;
    };
    if let Ok(node_id) = certified_key(leaf) {
        // The libp2p key (where the type has one) and the NodeId name the same node, both ways.
        if let Some(key) = node_id.to_public_key() {
            assert_eq!(node_id.to_peer_id(), key.to_peer_id());
            assert_eq!(
                bcos_p2p_core::NodeId::from_public_key(&key).as_ref(),
                Ok(&node_id)
            );
        }
    }
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return;
    };
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000));
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        let _ = cert.verify_for_usage(
            SUPPORTED.all,
            anchors(),
            &chain[1..],
            now,
            usage,
            None,
            None,
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        // A PEM file (node.crt, ca.crt): every certificate in it, as a chain.
        0 => {
            if let Ok(certs) = parse_pem_certs(rest) {
                check_chain(&certs);
            }
        }
        // One DER certificate, as the peer's leaf.
        1 => check_chain(&[CertificateDer::from(rest)]),
        // A DER chain: certificates as u16-length-prefixed pieces (at most 8).
        2 => {
            let mut chain = Vec::new();
            let mut rest = rest;
            while let [hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                let (cert, tail) = tail.split_at(len);
                chain.push(CertificateDer::from(cert));
                rest = tail;
                if chain.len() == 8 {
                    break;
                }
            }
            check_chain(&chain);
        }
        // A trust anchor from ca.crt.
        3 => {
            let _ = webpki::anchor_from_trusted_cert(&CertificateDer::from(rest));
        }
        // The secp256k1 verifier: an uncompressed point, then a DER signature.
        _ => {
            if rest.len() >= 65 {
                let (key, sig) = rest.split_at(65);
                let _ = SECP256K1_SHA256.verify_signature(key, b"fuzz", sig);
            }
        }
    }
});
