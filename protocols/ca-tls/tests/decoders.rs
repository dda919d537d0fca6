//! Property tests for what CA-TLS reads from peers and from certificate files: PEM certificate
//! files, DER certificates (the node key inside them), chains verified against the chain CA,
//! trust anchors, and secp256k1 signatures. Arbitrary or corrupted input never panics; a chain
//! we issue parses back to itself and certifies its node's key; a corrupted chain never verifies.

use std::sync::OnceLock;

use bcos_p2p_ca_tls::{
    certified_key,
    crypto::{SECP256K1_SHA256, SUPPORTED},
    parse_pem_certs,
    pki::{CertificateAuthority, Period, chain_pem},
};
use bcos_p2p_core::{KeyType, NodeKey};
use proptest::prelude::*;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

/// A chain CA and one node of each EC key type under it (RSA key generation is too slow for
/// property tests; its certificate parsing is covered by the integration tests).
struct Pki {
    anchors: Vec<TrustAnchor<'static>>,
    nodes: Vec<(NodeKey, CertificateDer<'static>)>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = CertificateAuthority::new_root(
            KeyType::Secp256k1,
            "CN=chain,O=fisco-bcos",
            Period::days(30),
        )
        .unwrap();
        let ca_der = ca.cert_der().unwrap();
        let anchors = vec![
            webpki::anchor_from_trusted_cert(&ca_der)
                .unwrap()
                .to_owned(),
        ];
        let nodes = [KeyType::Secp256k1, KeyType::P256]
            .into_iter()
            .map(|t| {
                let key = NodeKey::generate(t).unwrap();
                let cert = ca
                    .issue_node(&key, "CN=node,O=fisco-bcos", Period::days(30))
                    .unwrap();
                (key, cert)
            })
            .collect();
        Pki { anchors, nodes }
    })
}

/// Verifies `leaf` with `intermediates` against the chain CA for both TLS roles, as the CA-TLS
/// verifier does.
fn verifies(leaf: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let now = UnixTime::now();
    [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ]
    .into_iter()
    .all(|usage| {
        cert.verify_for_usage(
            SUPPORTED.all,
            &pki().anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .is_ok()
    })
}

#[test]
fn issued_chains_verify() {
    for (key, cert) in &pki().nodes {
        assert!(verifies(cert, &[]));
        assert_eq!(&certified_key(cert).unwrap(), key.node_id());
    }
}

proptest! {
    /// Arbitrary bytes as a DER certificate, a trust anchor or a PEM file never panic.
    #[test]
    fn arbitrary_certificate_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let der = CertificateDer::from(&bytes[..]);
        prop_assert!(certified_key(&der).is_err());
        prop_assert!(!verifies(&der, &[]));
        let _ = webpki::anchor_from_trusted_cert(&der);
        let _ = parse_pem_certs(&bytes);
    }

    /// PEM text around arbitrary base64 and arbitrary lines never panics.
    #[test]
    fn arbitrary_pem_text_never_panics(
        body in "[A-Za-z0-9+/=\n]{0,400}",
        junk in "\\PC{0,80}",
    ) {
        let pem = format!("{junk}\n-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n{junk}");
        if let Ok(certs) = parse_pem_certs(pem.as_bytes()) {
            for c in &certs {
                let _ = certified_key(c);
            }
        }
    }

    /// A chain written as PEM parses back to the same certificates, and the leaf certifies
    /// its node's key.
    #[test]
    fn pem_chains_round_trip(which in 0usize..2, copies in 1usize..4) {
        let (key, cert) = &pki().nodes[which];
        let chain = vec![cert.clone(); copies];
        let parsed = parse_pem_certs(chain_pem(&chain).as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &chain);
        let node_id = certified_key(&parsed[0]).unwrap();
        prop_assert_eq!(&node_id, key.node_id());
        prop_assert_eq!(node_id.to_peer_id(), key.keypair().unwrap().public().to_peer_id());
    }

    /// Any change to an issued certificate (bytes flipped, or cut short) and it no longer
    /// verifies; nothing panics on the way.
    #[test]
    fn corrupted_certificates_never_verify(
        which in 0usize..2,
        flips in proptest::collection::vec((any::<usize>(), 1u8..), 1..4),
        cut: Option<usize>,
    ) {
        let (_, cert) = &pki().nodes[which];
        let mut bytes = cert.to_vec();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % bytes.len());
        }
        let der = CertificateDer::from(bytes);
        if der.as_ref() != cert.as_ref() {
            let _ = certified_key(&der);
            prop_assert!(!verifies(&der, &[]));
            prop_assert!(!verifies(&der, std::slice::from_ref(cert)));
        }
        let pem = chain_pem(&[der]);
        let _ = parse_pem_certs(&pem.as_bytes()[..pem.len() / 2]);
    }

    /// The secp256k1 verifier: arbitrary keys and signatures are refused without panicking.
    #[test]
    fn arbitrary_secp256k1_signatures_are_refused(
        key in proptest::collection::vec(any::<u8>(), 0..80),
        sig in proptest::collection::vec(any::<u8>(), 0..90),
    ) {
        prop_assert!(SECP256K1_SHA256.verify_signature(&key, b"message", &sig).is_err());
    }
}
