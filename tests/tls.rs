//! CA-TLS between real swarms on loopback: who connects, who is refused, and why.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bcos_p2p::{
    KeyType, NodeId,
    behaviour::build_swarm,
    ca_tls::{
        self, Refusal,
        crypto::Secp256k1SigningKey,
        pki::{CertificateAuthority, Period},
    },
    config::Config,
};
use common::{Side, dial, load, node, root_of, sh};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::{PeerId, SwarmBuilder, identity::Keypair, multiaddr::Protocol, ping};

/// What `gen-certs` wrote for node `i` of `out`: its directory, the NodeId in `node.nodeid`, and
/// the PeerId the other node's `config.toml` dials it by.
fn generated(out: &Path, i: usize) -> (PathBuf, NodeId, PeerId) {
    let dir = out.join(format!("node{i}"));
    let node_id: NodeId = std::fs::read_to_string(dir.join("node.nodeid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (config, _) = Config::load(out.join(format!("node{}", 1 - i)).join("config.toml")).unwrap();
    let peer_id = config.network.peers[0]
        .0
        .iter()
        .find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .expect("gen-certs names each peer's PeerId");
    (dir, node_id, peer_id)
}

/// Two nodes from `gen-certs` output of each key type connect and know each other's NodeId.
#[tokio::test]
async fn gen_certs_nodes_connect_and_see_each_others_node_id() {
    for key_type in [KeyType::Secp256k1, KeyType::P256, KeyType::Rsa] {
        let tmp = tempfile::tempdir().unwrap();
        common::run_json::gen_certs_of(tmp.path(), 2, 30300, &key_type.to_string());
        let made = [generated(tmp.path(), 0), generated(tmp.path(), 1)];
        let (ka, ta) = load(&made[0].0);
        let (kb, tb) = load(&made[1].0);
        assert_eq!(ka.node_id(), &made[0].1);
        let mut a = build_swarm(&ka, &ta, &Default::default()).unwrap();
        let mut b = build_swarm(&kb, &tb, &Default::default()).unwrap();
        let (sa, sb) = dial(&mut a, &mut b).await;
        assert_eq!(sa.peer(), made[1].2, "{key_type}");
        assert_eq!(sb.peer(), made[0].2, "{key_type}");
        // Each side can name the other by NodeId, also for P-256/RSA whose PeerIds are hashes.
        assert_eq!(
            ta.node_ids().resolve(&sa.peer()).as_ref(),
            Some(kb.node_id()),
            "{key_type}"
        );
        assert_eq!(
            tb.node_ids().resolve(&sb.peer()).as_ref(),
            Some(ka.node_id()),
            "{key_type}"
        );
    }
}

/// The three FISCO BCOS certificate layouts, made with the `openssl` CLI as its chain builders do.
mod fisco {
    use super::*;

    /// NodeId as FISCO BCOS derives it: the public point without `04`, or the RSA modulus.
    fn openssl_node_id(dir: &std::path::Path, key: &str, rsa: bool) -> String {
        if rsa {
            let out = sh(dir, &format!("openssl rsa -noout -modulus -in {key}"));
            out.trim().trim_start_matches("Modulus=").to_lowercase()
        } else {
            common::openssl_ec_node_id(dir, key)
        }
    }

    /// Loads node0 and node1 of a set, checks NodeIds against openssl, and connects them.
    async fn connect_set(dir: &std::path::Path, rsa_nodes: bool) {
        let (k0, t0) = load(&dir.join("node0"));
        let (k1, t1) = load(&dir.join("node1"));
        for (k, n) in [(&k0, "node0"), (&k1, "node1")] {
            let expected = openssl_node_id(&dir.join(n), "node.key", rsa_nodes);
            assert_eq!(
                k.node_id().to_string(),
                expected,
                "{n}: NodeId differs from openssl's"
            );
        }
        let mut a = build_swarm(&k0, &t0, &Default::default()).unwrap();
        let mut b = build_swarm(&k1, &t1, &Default::default()).unwrap();
        let (sa, sb) = dial(&mut a, &mut b).await;
        assert_eq!(
            t0.node_ids().resolve(&sa.peer()).as_ref(),
            Some(k1.node_id())
        );
        assert_eq!(
            t1.node_ids().resolve(&sb.peer()).as_ref(),
            Some(k0.node_id())
        );
    }

    /// A FISCO BCOS certificate set: `setup` makes `ca.crt` (and an agency, when there is one);
    /// then two nodes get a key from `keygen`, a certificate from `issuer` (`agency` or `ca`),
    /// and `append` is concatenated to their `node.crt`. `check` asserts the key's PEM form.
    struct Set {
        setup: &'static str,
        keygen: &'static str,
        issuer: &'static str,
        append: &'static str,
        check: &'static str,
        /// Certificates in each `node.crt`.
        certs: usize,
        rsa_nodes: bool,
    }

    /// Makes the set with the openssl CLI, as FISCO's chain builders do, then checks NodeIds
    /// against openssl's and connects node0 to node1.
    async fn build_and_connect(set: Set) {
        common::require_openssl();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cert.cnf"), common::FISCO_CERT_CNF).unwrap();
        sh(tmp.path(), set.setup);
        for n in ["node0", "node1"] {
            sh(
                tmp.path(),
                &format!(
                    r#"
                    n={n}; mkdir $n
                    {keygen}
                    openssl req -new -sha256 -subj "/CN=$n/O=fisco-bcos/OU=node" -key $n/node.key -config cert.cnf -out $n/node.csr
                    openssl x509 -req -days 3650 -sha256 -CA {issuer}.crt -CAkey {issuer}.key -CAcreateserial -in $n/node.csr -out $n/node.crt -extensions v3_req -extfile cert.cnf 2>/dev/null
                    cat {append} /dev/null >> $n/node.crt
                    cp ca.crt $n/ca.crt
                    grep -q '{check}' $n/node.key
                    test "$(grep -c 'BEGIN CERTIFICATE' $n/node.crt)" = {certs}
                    "#,
                    keygen = set.keygen,
                    issuer = set.issuer,
                    append = set.append,
                    check = set.check,
                    certs = set.certs,
                ),
            );
        }
        connect_set(tmp.path(), set.rsa_nodes).await;
    }

    const SECP256K1_CA_AND_AGENCY: &str = r#"
        openssl ecparam -out secp256k1.param -name secp256k1
        openssl genpkey -paramfile secp256k1.param -out ca.key
        openssl req -new -x509 -days 3650 -subj "/CN=chain/O=fisco-bcos/OU=chain" -key ca.key -out ca.crt
        openssl genpkey -paramfile secp256k1.param -out agency.key
        openssl req -new -sha256 -subj "/CN=agency/O=fisco-bcos/OU=agency" -key agency.key -config cert.cnf -out agency.csr
        openssl x509 -req -days 3650 -sha256 -CA ca.crt -CAkey ca.key -CAcreateserial -in agency.csr -out agency.crt -extensions v4_req -extfile cert.cnf 2>/dev/null
    "#;

    const RSA_CA_AND_AGENCY: &str = r#"
        openssl genrsa -out ca.key 2048 2>/dev/null
        openssl req -new -x509 -days 3650 -subj "/CN=chain/O=fisco-bcos/OU=chain" -key ca.key -out ca.crt
        openssl genrsa -out agency.key 2048 2>/dev/null
        openssl req -new -sha256 -subj "/CN=agency/O=fisco-bcos/OU=agency" -key agency.key -config cert.cnf -out agency.csr
        openssl x509 -req -days 3650 -sha256 -CA ca.crt -CAkey ca.key -CAcreateserial -in agency.csr -out agency.crt -extensions v4_req -extfile cert.cnf 2>/dev/null
    "#;

    /// FISCO BCOS 2.6+: secp256k1 CA → secp256k1 agency (CA:TRUE) → secp256k1 nodes with PKCS#8
    /// keys from `openssl genpkey`; node.crt = node + agency + ca.
    #[tokio::test]
    async fn fisco_2_6_secp256k1_chain_with_agency() {
        build_and_connect(Set {
            setup: SECP256K1_CA_AND_AGENCY,
            keygen: "openssl genpkey -paramfile secp256k1.param -out $n/node.key",
            issuer: "agency",
            append: "agency.crt ca.crt",
            check: "BEGIN PRIVATE KEY",
            certs: 3,
            rsa_nodes: false,
        })
        .await;
    }

    /// FISCO BCOS 2.0–2.4: RSA-2048 CA and agency, secp256k1 nodes (SEC1 keys from
    /// `openssl ecparam -genkey`, which also writes an EC PARAMETERS block); node.crt = node + agency.
    #[tokio::test]
    async fn fisco_2_0_rsa_ca_and_agency_secp256k1_nodes() {
        build_and_connect(Set {
            setup: RSA_CA_AND_AGENCY,
            keygen: "openssl ecparam -genkey -name secp256k1 -out $n/node.key",
            issuer: "agency",
            append: "agency.crt",
            check: "BEGIN EC PRIVATE KEY",
            certs: 2,
            rsa_nodes: false,
        })
        .await;
    }

    /// FISCO BCOS 3.x: RSA-2048 CA, RSA-2048 node keys in PKCS#8, single-certificate node.crt.
    #[tokio::test]
    async fn fisco_3_rsa_ca_and_rsa_nodes() {
        build_and_connect(Set {
            setup: r#"
                openssl genrsa -out ca.key 2048 2>/dev/null
                openssl req -new -x509 -days 3650 -subj "/CN=chain/O=fisco-bcos/OU=chain" -key ca.key -out ca.crt
            "#,
            keygen: "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $n/node.key 2>/dev/null",
            issuer: "ca",
            append: "",
            check: "BEGIN PRIVATE KEY",
            certs: 1,
            rsa_nodes: true,
        })
        .await;
    }
}

fn ca(key_type: KeyType) -> CertificateAuthority {
    CertificateAuthority::new_root(key_type, "CN=chain-ca,O=test", Period::days(30)).unwrap()
}

/// A dialler whose certificate comes from another CA is refused by the listener, and a listener
/// whose certificate comes from another CA is refused by the dialler.
#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let (good_ca, other_ca) = (ca(KeyType::Secp256k1), ca(KeyType::Secp256k1));
    let (k_in, t_in) = node(&good_ca, KeyType::Secp256k1, Period::days(30));
    // The stranger trusts both CAs, so only the listener's check can refuse it.
    let k_out = bcos_p2p::NodeKey::generate(KeyType::Secp256k1).unwrap();
    let cert = other_ca
        .issue_node(&k_out, "CN=stranger", Period::days(30))
        .unwrap();
    let t_out = ca_tls::Config::new(
        &k_out,
        vec![cert],
        vec![root_of(&other_ca), root_of(&good_ca)],
    )
    .unwrap();
    let (sa, sb) = dial(
        &mut build_swarm(&k_out, &t_out, &Default::default()).unwrap(),
        &mut build_swarm(&k_in, &t_in, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(sb.refusal(), &Refusal::UnknownIssuer);
    assert!(
        matches!(sa.refusal(), Refusal::RejectedByPeer(a) if a == "UnknownCA"),
        "{sa:?}"
    );
    if let Side::Refused(e) = &sb {
        // Anyone can replay a certificate: one whose chain does not verify names no node.
        assert_eq!(e.node_id(), None);
        assert!(e.to_string().contains("not issued by a trusted CA"), "{e}");
    }

    // Other way round: the dialler trusts only its own CA and refuses the listener.
    let (k_a, t_a) = node(&good_ca, KeyType::Secp256k1, Period::days(30));
    let (k_b, t_b) = node(&other_ca, KeyType::Secp256k1, Period::days(30));
    let (sa, sb) = dial(
        &mut build_swarm(&k_a, &t_a, &Default::default()).unwrap(),
        &mut build_swarm(&k_b, &t_b, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(sa.refusal(), &Refusal::UnknownIssuer);
    assert!(matches!(sb.refusal(), Refusal::RejectedByPeer(_)), "{sb:?}");
}

/// An expired certificate (and one not yet valid) is refused with the reason and the dates.
#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = ca(KeyType::P256);
    let (k_in, t_in) = node(&ca, KeyType::Secp256k1, Period::days(30));
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired = Period {
        not_before: now - 10 * day,
        not_after: now - day,
    };
    let (k_out, t_out) = node(&ca, KeyType::Secp256k1, expired);
    let (sa, sb) = dial(
        &mut build_swarm(&k_out, &t_out, &Default::default()).unwrap(),
        &mut build_swarm(&k_in, &t_in, &Default::default()).unwrap(),
    )
    .await;
    assert!(
        matches!(sb.refusal(), Refusal::Expired { not_after, now } if not_after < now),
        "{sb:?}"
    );
    assert!(
        matches!(sa.refusal(), Refusal::RejectedByPeer(a) if a == "CertificateExpired"),
        "{sa:?}"
    );
    assert!(sb.refusal().to_string().contains("expired"));

    let future = Period {
        not_before: now + day,
        not_after: now + 10 * day,
    };
    let (k_out, t_out) = node(&ca, KeyType::P256, future);
    let (_, sb) = dial(
        &mut build_swarm(&k_out, &t_out, &Default::default()).unwrap(),
        &mut build_swarm(&k_in, &t_in, &Default::default()).unwrap(),
    )
    .await;
    assert!(
        matches!(sb.refusal(), Refusal::NotYetValid { .. }),
        "{sb:?}"
    );
}

/// Deny wins; a non-empty allow list admits only its members; the refused side learns why.
#[tokio::test]
async fn denied_and_not_allowed_peers_are_refused() {
    let ca = ca(KeyType::Secp256k1);
    let (k_b, t_b) = node(&ca, KeyType::Secp256k1, Period::days(30));
    let (k_a, t_a) = node(&ca, KeyType::Secp256k1, Period::days(30));
    let (k_c, t_c) = node(&ca, KeyType::P256, Period::days(30));

    t_b.access_list().deny(k_a.node_id().clone());
    t_b.access_list().allow(k_a.node_id().clone()); // deny wins over allow
    let (sa, sb) = dial(
        &mut build_swarm(&k_a, &t_a, &Default::default()).unwrap(),
        &mut build_swarm(&k_b, &t_b, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(sb.refusal(), &Refusal::Denied);
    assert!(
        matches!(sa.refusal(), Refusal::RejectedByPeer(a) if a == "AccessDenied"),
        "{sa:?}"
    );

    // c is not on b's (non-empty) allow list.
    let (sc, sb) = dial(
        &mut build_swarm(&k_c, &t_c, &Default::default()).unwrap(),
        &mut build_swarm(&k_b, &t_b, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(sb.refusal(), &Refusal::NotAllowed);
    assert!(matches!(sc.refusal(), Refusal::RejectedByPeer(_)), "{sc:?}");
    if let Side::Refused(e) = &sb {
        assert_eq!(e.node_id(), Some(k_c.node_id()));
    }

    // A dialler refuses a denied listener too.
    t_c.access_list().deny(k_b.node_id().clone());
    t_b.access_list().allow(k_c.node_id().clone());
    let (sc, _) = dial(
        &mut build_swarm(&k_c, &t_c, &Default::default()).unwrap(),
        &mut build_swarm(&k_b, &t_b, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(sc.refusal(), &Refusal::Denied);

    // Lifting the lists admits again.
    t_c.access_list().undeny(k_b.node_id());
    let (sc, sb) = dial(
        &mut build_swarm(&k_c, &t_c, &Default::default()).unwrap(),
        &mut build_swarm(&k_b, &t_b, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(sc.peer(), k_b.node_id().to_peer_id());
    assert_eq!(sb.peer(), k_c.node_id().to_peer_id());
}

/// A configuration whose certificate is not for its key fails at start-up with both NodeIds.
#[test]
fn mismatched_key_and_certificate_fail_at_start_up() {
    let ca = ca(KeyType::Secp256k1);
    let key = bcos_p2p::NodeKey::generate(KeyType::Secp256k1).unwrap();
    let other = bcos_p2p::NodeKey::generate(KeyType::Secp256k1).unwrap();
    let cert = ca.issue_node(&other, "CN=other", Period::days(30)).unwrap();
    let err = ca_tls::Config::new(&key, vec![cert], vec![root_of(&ca)]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("does not belong") && msg.contains(&key.node_id().to_string()),
        "{msg}"
    );
    // And a swarm keypair that is not the certificate's is refused too.
    let (_, tls) = node(&ca, KeyType::Secp256k1, Period::days(30));
    assert!(tls.for_keypair(&Keypair::generate_secp256k1()).is_err());
}

/// A peer presenting someone else's certificate cannot sign the handshake with that
/// certificate's key: the listener refuses it as a key mismatch. The attacker is a raw TLS
/// client, since our own configuration refuses such a pair at start-up.
#[tokio::test]
async fn certificate_not_belonging_to_the_peer_key_is_refused() {
    let ca = ca(KeyType::Secp256k1);
    let (k_b, t_b) = node(&ca, KeyType::Secp256k1, Period::days(30));
    let victim = bcos_p2p::NodeKey::generate(KeyType::Secp256k1).unwrap();
    let victim_cert = ca
        .issue_node(&victim, "CN=victim", Period::days(30))
        .unwrap();
    let attacker = bcos_p2p::NodeKey::generate(KeyType::Secp256k1).unwrap();

    // The victim is even denied: the lists must not be consulted before the peer proves its
    // key, or replayed certificates would reveal who is on them.
    t_b.access_list().deny(victim.node_id().clone());
    let mut b = build_swarm(&k_b, &t_b, &Default::default()).unwrap();
    let port = common::listen_port(&mut b).await;
    let signing = Secp256k1SigningKey::from_pkcs8_der(attacker.pkcs8_der()).unwrap();
    let attack = async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tcp = tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp);
        // multistream-select: header, then our protocol; the listener echoes both.
        tcp.write_all(&common::select_ca_tls()).await.unwrap();
        let mut echo = [0u8; 1 + 19 + 1 + 16];
        tcp.read_exact(&mut echo).await.unwrap();
        let certified = rustls::sign::CertifiedKey::new(vec![victim_cert], Arc::new(signing));
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::accept_any::AcceptAnyServer))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::new(
            certified,
        ))));
        let name = rustls::pki_types::ServerName::try_from("node").unwrap();
        let mut tls = futures_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let mut verdict = [0u8; 1];
        tls.read_exact(&mut verdict)
            .await
            .expect_err("the listener must not accept us")
    };
    let attack = tokio::spawn(attack);
    let refusal = common::next_incoming_refusal(&mut b).await;
    assert_eq!(refusal.refusal(), &Refusal::KeyMismatch);
    assert_eq!(refusal.node_id(), Some(victim.node_id()));
    let err = attack.await.unwrap();
    assert!(
        err.to_string().contains("DecryptError"),
        "attacker saw: {err}"
    );
}

/// A stock libp2p node (libp2p-tls + yamux) and ours never connect, and ours says why, whichever
/// side dials.
#[tokio::test]
async fn stock_libp2p_tls_node_is_refused_both_ways() {
    let ca = ca(KeyType::Secp256k1);
    let (k, t) = node(&ca, KeyType::Secp256k1, Period::days(30));
    let stock = || {
        SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::tls::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| ping::Behaviour::default())
            .unwrap()
            .build()
    };
    // Stock dials us.
    let (s_stock, s_ours) = dial(
        &mut stock(),
        &mut build_swarm(&k, &t, &Default::default()).unwrap(),
    )
    .await;
    assert_eq!(s_ours.refusal(), &Refusal::StockLibp2pTls);
    assert!(!matches!(s_stock, Side::Connected(_)), "{s_stock:?}");
    assert!(s_ours.refusal().to_string().contains("/tls/1.0.0"));
    // We dial stock.
    let (s_ours, s_stock) = dial(
        &mut build_swarm(&k, &t, &Default::default()).unwrap(),
        &mut stock(),
    )
    .await;
    assert_eq!(s_ours.refusal(), &Refusal::StockLibp2pTls);
    assert!(!matches!(s_stock, Side::Connected(_)), "{s_stock:?}");
}

/// NodeIds from handshakes agree with NodeIds from keys.
#[test]
fn node_id_of_generated_material_round_trips() {
    let ca = ca(KeyType::Rsa);
    let (k, _) = node(&ca, KeyType::P256, Period::days(1));
    let id: NodeId = k.node_id().to_string().parse().unwrap();
    assert_eq!(&id, k.node_id());
    assert_eq!(id.to_peer_id(), k.peer_id());
}

/// Certificates with keys nodes do not use are refused with the key named.
#[test]
fn unsupported_certificate_keys_are_refused() {
    common::require_openssl();
    let tmp = tempfile::tempdir().unwrap();
    for (name, newkey, expect) in [
        (
            "p384",
            "-newkey ec -pkeyopt ec_paramgen_curve:P-384",
            "EC curve 1.3.132.0.34",
        ),
        ("rsa1024", "-newkey rsa:1024", "RSA key of 1024 bits"),
        ("ed25519", "-newkey ed25519", "key algorithm 1.3.101.112"),
    ] {
        sh(
            tmp.path(),
            &format!(
                "openssl req -x509 {newkey} -nodes -keyout {name}.key -out {name}.crt -subj /CN={name} -days 1 2>/dev/null"
            ),
        );
        let der = ca_tls::read_pem_certs(tmp.path().join(format!("{name}.crt"))).unwrap();
        match ca_tls::certified_key(&der[0]) {
            Err(Refusal::UnsupportedKey(why)) => assert!(why.contains(expect), "{name}: {why}"),
            other => panic!("{name}: expected an unsupported key, got {other:?}"),
        }
        // And such a key file cannot start a node.
        let err = bcos_p2p::NodeKey::from_file(tmp.path().join(format!("{name}.key"))).unwrap_err();
        assert!(err.to_string().contains("unsupported"), "{name}: {err}");
    }
}

/// A dialler that negotiates CA-TLS and then says nothing is dropped after the handshake timeout.
#[tokio::test]
async fn stalled_handshake_times_out() {
    let ca = ca(KeyType::Secp256k1);
    let (k, t) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let t = t.with_handshake_timeout(Duration::from_millis(300));
    let mut b = build_swarm(&k, &t, &Default::default()).unwrap();
    let port = common::listen_port(&mut b).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &common::select_ca_tls())
        .await
        .unwrap();
    let refusal = common::next_incoming_refusal(&mut b).await;
    assert!(
        matches!(refusal.refusal(), Refusal::Handshake(why) if why.contains("timed out")),
        "{refusal}"
    );
    drop(tcp);
}
