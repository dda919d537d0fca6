//! 国密 (SM) mode between real nodes on loopback: SM2 keys and certificates made by the
//! `openssl` CLI in FISCO BCOS's layouts, TLS 1.3 with TLS_SM4_GCM_SM3 (RFC 8998), unicast,
//! flood and status over it, and the refusals: SM against standard nodes both ways, a rogue SM
//! CA, an expired SM certificate, a key that is not the certificate's, open mode.

mod common;

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    behaviour::build_swarm,
    ca_tls::{
        self, Refusal,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr},
    flood,
    node::{Node, NodeEvent},
    open, status,
};
use bytes::Bytes;
use common::{Events, Side, dial, echo, next, node, require_openssl, root_of, sh};

fn sm_ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Sm2, "CN=sm-chain,O=test", Period::days(30)).unwrap()
}

/// Two SM nodes connect (each learns the other's SM2 NodeId), and an SM node and a standard
/// (secp256k1) node refuse each other whoever dials, each saying why.
#[tokio::test]
async fn sm_nodes_connect_and_refuse_standard_nodes_both_ways() {
    let ca = sm_ca();
    let (k_a, t_a) = node(&ca, KeyType::Sm2, Period::days(30));
    let (k_b, t_b) = node(&ca, KeyType::Sm2, Period::days(30));
    assert!(t_a.is_sm() && t_b.is_sm());
    let (sa, sb) = dial(
        &mut build_swarm(&k_a, &t_a, &Config::default()).unwrap(),
        &mut build_swarm(&k_b, &t_b, &Config::default()).unwrap(),
    )
    .await;
    assert_eq!(sa.peer(), k_b.peer_id());
    assert_eq!(sb.peer(), k_a.peer_id());
    assert_eq!(
        t_a.node_ids().resolve(&sa.peer()).as_ref(),
        Some(k_b.node_id())
    );
    assert_eq!(
        t_b.node_ids().resolve(&sb.peer()).as_ref(),
        Some(k_a.node_id())
    );

    let standard_ca =
        CertificateAuthority::new_root(KeyType::Secp256k1, "CN=chain", Period::days(30)).unwrap();
    let (k_s, t_s) = node(&standard_ca, KeyType::Secp256k1, Period::days(30));
    assert!(!t_s.is_sm());
    // The standard node dials the SM node.
    let (s_std, s_sm) = dial(
        &mut build_swarm(&k_s, &t_s, &Config::default()).unwrap(),
        &mut build_swarm(&k_a, &t_a, &Config::default()).unwrap(),
    )
    .await;
    assert_eq!(s_std.refusal(), &Refusal::SmUnsupported, "{s_std:?}");
    assert_eq!(s_sm.refusal(), &Refusal::SmRequired, "{s_sm:?}");
    // The SM node dials the standard node.
    let (s_sm, s_std) = dial(
        &mut build_swarm(&k_a, &t_a, &Config::default()).unwrap(),
        &mut build_swarm(&k_s, &t_s, &Config::default()).unwrap(),
    )
    .await;
    assert_eq!(s_sm.refusal(), &Refusal::SmRequired, "{s_sm:?}");
    assert_eq!(s_std.refusal(), &Refusal::SmUnsupported, "{s_std:?}");
    assert_eq!(Refusal::SmRequired.code(), "sm_required");
    assert_eq!(Refusal::SmUnsupported.code(), "sm_unsupported");
    assert!(Refusal::SmRequired.to_string().contains("国密"));
}

/// A certificate from another SM CA, an expired SM certificate, and a key that is not the
/// certificate's are refused as for the other key types.
#[tokio::test]
async fn rogue_ca_expired_and_mismatched_sm_material_is_refused() {
    let ca = sm_ca();
    let rogue = sm_ca();
    let (k_in, t_in) = node(&ca, KeyType::Sm2, Period::days(30));
    let (k_rogue, t_rogue) = node(&rogue, KeyType::Sm2, Period::days(30));
    let (s_out, s_in) = dial(
        &mut build_swarm(&k_rogue, &t_rogue, &Config::default()).unwrap(),
        &mut build_swarm(&k_in, &t_in, &Config::default()).unwrap(),
    )
    .await;
    // Each trusts only its own CA: whoever checks first refuses with unknown_issuer.
    let refusals = [&s_out, &s_in].map(|s| match s {
        Side::Refused(e) => e.refusal().clone(),
        other => panic!("expected a refusal, got {other:?}"),
    });
    assert!(refusals.contains(&Refusal::UnknownIssuer), "{refusals:?}");

    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired = Period {
        not_before: now - 10 * day,
        not_after: now - day,
    };
    let (k_old, t_old) = node(&ca, KeyType::Sm2, expired);
    let (_, s_in) = dial(
        &mut build_swarm(&k_old, &t_old, &Config::default()).unwrap(),
        &mut build_swarm(&k_in, &t_in, &Config::default()).unwrap(),
    )
    .await;
    assert!(
        matches!(s_in.refusal(), Refusal::Expired { .. }),
        "{s_in:?}"
    );

    // The certificate of another SM2 key: refused when the node starts.
    let other = NodeKey::generate(KeyType::Sm2).unwrap();
    let cert = ca.issue_node(&other, "CN=other", Period::days(30)).unwrap();
    let err = ca_tls::Config::new(&k_in, vec![cert], vec![root_of(&ca)]).unwrap_err();
    assert!(
        matches!(err, ca_tls::ConfigError::KeyMismatch { .. }),
        "{err}"
    );
}

/// Open mode is libp2p's TLS, which has no SM2 key type: an SM2 key is refused with a message
/// that says so and points to CA mode.
#[test]
fn open_mode_refuses_sm2_keys() {
    let key = NodeKey::generate(KeyType::Sm2).unwrap();
    let err = open::Config::new(&key).unwrap_err();
    assert!(matches!(err, open::ConfigError::NoLibp2pKey(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("SM2") && text.contains("ca-tls"), "{text}");
}

/// The node key's SM2 signatures (flood and status records) are OpenSSL's: one made by
/// `openssl pkeyutl` verifies in ours, and one made by ours verifies in OpenSSL, with the
/// distinguishing id 1234567812345678; the key file is OpenSSL's and so is the NodeId.
#[test]
fn sm2_node_signatures_agree_with_openssl() {
    require_openssl();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sh(
        dir,
        r#"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out sm_ssl.key
        openssl pkey -in sm_ssl.key -pubout -out sm_ssl.pub
        printf 'a flood record' > message
        openssl pkeyutl -sign -rawin -digest sm3 -inkey sm_ssl.key -pkeyopt distid:1234567812345678 -in message -out openssl.sig
        "#,
    );
    let key = NodeKey::from_file(dir.join("sm_ssl.key")).unwrap();
    assert_eq!(key.key_type(), KeyType::Sm2);
    assert_eq!(
        key.node_id().to_string(),
        common::openssl_ec_node_id(dir, "sm_ssl.key")
    );
    let verifier = key.node_id().verifier();
    let theirs = std::fs::read(dir.join("openssl.sig")).unwrap();
    assert!(verifier.verify(b"a flood record", &theirs));
    assert!(!verifier.verify(b"another record", &theirs));

    let ours = key.sign(b"a flood record").unwrap();
    std::fs::write(dir.join("ours.sig"), &ours).unwrap();
    let out = sh(
        dir,
        "openssl pkeyutl -verify -rawin -digest sm3 -pubin -inkey sm_ssl.pub -pkeyopt distid:1234567812345678 -in message -sigfile ours.sig",
    );
    assert!(out.contains("Signature Verified Successfully"), "{out}");
    // Under another distinguishing id it is not the same signature.
    let refused = std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin"])
        .args([
            "-inkey",
            "sm_ssl.pub",
            "-pkeyopt",
            "distid:TLSv1.3+GM+Cipher+Suite",
        ])
        .args(["-in", "message", "-sigfile", "ours.sig"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// An SM chain made with the openssl CLI as FISCO BCOS's chain builders make it: an SM2 CA
/// (`sm_ca.crt` / 2.x `gmca.crt`), optionally an agency, and `nodes` nodes with signing and
/// encryption pairs, in the 3.x (`sm_ssl.*`, `sm_enssl.*`) or 2.x (`gmnode.*`, `gmennode.*`)
/// names. Certificates are SM2-with-SM3 with the distinguishing id 1234567812345678.
fn openssl_sm_set(dir: &Path, v2: bool, nodes: usize) {
    require_openssl();
    std::fs::write(dir.join("cert.cnf"), common::FISCO_CERT_CNF).unwrap();
    let sm3 = "-sm3 -sigopt distid:1234567812345678";
    let vfy = "-vfyopt distid:1234567812345678";
    sh(
        dir,
        &format!(
            r#"
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out ca.key
            openssl req -new -x509 -days 3650 {sm3} -subj "/CN=chain/O=fisco-bcos/OU=chain" -key ca.key -out ca.crt
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out agency.key
            openssl req -new {sm3} -subj "/CN=agency/O=fisco-bcos/OU=agency" -key agency.key -config cert.cnf -out agency.csr
            openssl x509 -req -days 3650 {sm3} {vfy} -CA ca.crt -CAkey ca.key -CAcreateserial -in agency.csr -out agency.crt -extensions v4_req -extfile cert.cnf 2>/dev/null
            "#
        ),
    );
    let (issuer, key, cert, ca, enkey, encert) = if v2 {
        (
            "agency",
            "gmnode.key",
            "gmnode.crt",
            "gmca.crt",
            "gmennode.key",
            "gmennode.crt",
        )
    } else {
        (
            "ca",
            "sm_ssl.key",
            "sm_ssl.crt",
            "sm_ca.crt",
            "sm_enssl.key",
            "sm_enssl.crt",
        )
    };
    // 2.x: gmnode.crt holds node, agency and CA; 3.x: the node alone, signed by the CA.
    let append = if v2 { "agency.crt ca.crt" } else { "" };
    for i in 0..nodes {
        sh(
            dir,
            &format!(
                r#"
                n=node{i}; mkdir $n
                openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out $n/{key}
                openssl req -new {sm3} -subj "/CN=$n/O=fisco-bcos/OU=node" -key $n/{key} -config cert.cnf -out $n/node.csr
                openssl x509 -req -days 3650 {sm3} {vfy} -CA {issuer}.crt -CAkey {issuer}.key -CAcreateserial -in $n/node.csr -out $n/{cert} -extensions v3_req -extfile cert.cnf 2>/dev/null
                cat {append} /dev/null >> $n/{cert}
                openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out $n/{enkey}
                openssl req -new {sm3} -subj "/CN=$n/O=fisco-bcos/OU=node" -key $n/{enkey} -config cert.cnf -out $n/en.csr
                openssl x509 -req -days 3650 {sm3} {vfy} -CA {issuer}.crt -CAkey {issuer}.key -CAcreateserial -in $n/en.csr -out $n/{encert} -extensions v3_req -extfile cert.cnf 2>/dev/null
                cp ca.crt $n/{ca}
                "#
            ),
        );
    }
}

/// Loads node `i` of an SM set in the 3.x or 2.x names, checking its NodeId against openssl's.
fn load_sm(dir: &Path, v2: bool, i: usize) -> (NodeKey, ca_tls::Config) {
    let (key, cert, ca) = if v2 {
        ("gmnode.key", "gmnode.crt", "gmca.crt")
    } else {
        ("sm_ssl.key", "sm_ssl.crt", "sm_ca.crt")
    };
    let n = dir.join(format!("node{i}"));
    let (k, t) = ca_tls::Config::load(n.join(key), n.join(cert), n.join(ca))
        .unwrap_or_else(|e| panic!("loading node{i}: {e}"));
    assert_eq!(k.key_type(), KeyType::Sm2);
    assert!(t.is_sm());
    // The chain verifies as peers will check it (SM2-with-SM3 at every level).
    assert_eq!(t.check_chain(t.local_chain()).as_ref(), Ok(k.node_id()));
    assert_eq!(
        k.node_id().to_string(),
        common::openssl_ec_node_id(&n, key),
        "node{i}: NodeId differs from openssl's"
    );
    (k, t)
}

/// A node of `set` started on loopback, dialling `peers`.
async fn start((key, tls): (NodeKey, ca_tls::Config), peers: &[&Node]) -> (Node, Events) {
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = peers
        .iter()
        .map(|p| PeerAddr(p.listen_addrs()[0].clone()))
        .collect();
    let mut n = Node::start(key, tls, config).await.unwrap();
    let events: Events = Box::pin(n.events().unwrap());
    (n, events)
}

/// Waits until `events` report a connection to `node`.
async fn connected(events: &mut Events, node: &NodeId) {
    next(events, |e| match e {
        NodeEvent::Connected { node: n, .. } if n == node => Some(()),
        _ => None,
    })
    .await;
}

/// A FISCO 3.x SM set (sm_ca.crt, sm_ssl.key, sm_ssl.crt from the CA directly), unchanged:
/// three nodes in a line (a–b–c) connect over 国密 TLS and run unicast, broadcast across two
/// hops (signed with the origin's SM2 key), and status.
#[tokio::test]
async fn fisco_3_sm_set_runs_unicast_flood_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    openssl_sm_set(tmp.path(), false, 3);
    let (a, mut ea) = start(load_sm(tmp.path(), false, 0), &[]).await;
    let (b, eb) = start(load_sm(tmp.path(), false, 1), &[&a]).await;
    let (c, mut ec) = start(load_sm(tmp.path(), false, 2), &[&b]).await;
    connected(&mut ea, b.node_id()).await;
    connected(&mut ec, b.node_id()).await;

    // Unicast: a asks b, which answers by echo.
    let _echo_b = echo(eb);
    let reply = a
        .request(b.node_id(), 1, Bytes::from_static(b"sm request"))
        .await
        .unwrap();
    assert_eq!(reply, "sm request");

    // Flood: c's broadcast reaches a through b, signed with c's SM2 key.
    let id = c
        .broadcast(Bytes::from_static(b"sm broadcast"))
        .await
        .unwrap();
    let c_id = c.node_id().clone();
    let (got, origin) = next(&mut ea, |e| match e {
        NodeEvent::Flood(flood::Event::Message {
            id: got, origin, ..
        }) => Some((got.clone(), origin.clone())),
        _ => None,
    })
    .await;
    assert_eq!(got, id);
    assert_eq!(origin, c_id);

    // Status (between neighbours): b's change reaches a and c.
    let seq = b.set_status(Bytes::from_static(b"height 9")).await.unwrap();
    let b_id = b.node_id().clone();
    for events in [&mut ea, &mut ec] {
        next(events, |e| match e {
            NodeEvent::Status(status::Event::StatusUpdated {
                node,
                seq: s,
                payload,
                ..
            }) if *node == b_id && *s == seq => {
                assert_eq!(payload, "height 9");
                Some(())
            }
            _ => None,
        })
        .await;
    }
    for n in [&a, &b, &c] {
        n.shutdown().await.unwrap();
    }
}

/// A FISCO 2.x 国密 set (gmca.crt; gmnode.crt = node + agency + CA; gmnode.key), unchanged: two
/// nodes connect through the agency chain and answer each other.
#[tokio::test]
async fn fisco_2_gm_set_with_agency_connects() {
    let tmp = tempfile::tempdir().unwrap();
    openssl_sm_set(tmp.path(), true, 2);
    let (a, mut ea) = start(load_sm(tmp.path(), true, 0), &[]).await;
    let (b, eb) = start(load_sm(tmp.path(), true, 1), &[&a]).await;
    connected(&mut ea, b.node_id()).await;
    let _echo_b = echo(eb);
    let reply = a
        .request(b.node_id(), 1, Bytes::from_static(b"gm"))
        .await
        .unwrap();
    assert_eq!(reply, "gm");
    for n in [&a, &b] {
        n.shutdown().await.unwrap();
    }
}
