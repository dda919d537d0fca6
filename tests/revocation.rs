//! Certificate revocation: CRLs made with the real `openssl ca` (as a chain's operators make
//! them) refuse revoked nodes in both directions of the handshake, at the node and at the
//! agency level, in flood's membership check too, and close a revoked peer's live session when
//! loaded at run time.

mod common;

use std::path::{Path, PathBuf};

use bcos_p2p::{
    NodeKey,
    behaviour::build_swarm,
    ca_tls::{self, Crl, Refusal},
    config::Config,
    connection,
    node::{Node, NodeEvent},
};
use common::{Events, FISCO_CERT_CNF, dial, load, next, require_openssl, sh};

/// A minimal `openssl ca` setup for each issuer (a section per name): its database and CRL
/// number (which makes the CRL v2, as webpki requires).
fn ca_cnf() -> String {
    let mut cnf = String::from("[ca]\ndefault_ca = chain\n");
    for (name, cert) in [
        ("chain", "ca"),
        ("agencyA", "agencyA"),
        ("agencyB", "agencyB"),
    ] {
        cnf.push_str(&format!(
            "[{name}]\ndatabase = {name}.index\ncrlnumber = {name}.crlnumber\n\
             certificate = {cert}.crt\nprivate_key = {cert}.key\n\
             default_md = sha256\ndefault_crl_days = 30\n"
        ));
    }
    cnf
}

/// A FISCO BCOS 2.6 chain made with openssl: a secp256k1 CA, agencies A and B under it, nodes
/// a0, a1, a2 under A and b0 under B (`node.crt` = node + agency + ca).
struct Chain {
    dir: tempfile::TempDir,
}

impl Chain {
    fn new() -> Chain {
        require_openssl();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.cnf"), FISCO_CERT_CNF).unwrap();
        std::fs::write(dir.path().join("ca.cnf"), ca_cnf()).unwrap();
        sh(
            dir.path(),
            r#"
            for i in chain agencyA agencyB; do touch $i.index; echo 01 > $i.crlnumber; done
            openssl ecparam -out secp256k1.param -name secp256k1
            openssl genpkey -paramfile secp256k1.param -out ca.key
            openssl req -new -x509 -days 3650 -subj "/CN=chain/O=fisco-bcos/OU=chain" -key ca.key -out ca.crt
            for a in agencyA agencyB; do
                openssl genpkey -paramfile secp256k1.param -out $a.key
                openssl req -new -sha256 -subj "/CN=$a/O=fisco-bcos/OU=agency" -key $a.key -config cert.cnf -out $a.csr
                openssl x509 -req -days 3650 -sha256 -CA ca.crt -CAkey ca.key -CAcreateserial -in $a.csr -out $a.crt -extensions v4_req -extfile cert.cnf 2>/dev/null
            done
            for n in a0:agencyA a1:agencyA a2:agencyA b0:agencyB; do
                a=${n#*:}; n=${n%:*}; mkdir $n
                openssl genpkey -paramfile secp256k1.param -out $n/node.key
                openssl req -new -sha256 -subj "/CN=$n/O=fisco-bcos/OU=node" -key $n/node.key -config cert.cnf -out $n/node.csr
                openssl x509 -req -days 3650 -sha256 -CA $a.crt -CAkey $a.key -CAcreateserial -in $n/node.csr -out $n/node.crt -extensions v3_req -extfile cert.cnf 2>/dev/null
                cat $a.crt ca.crt >> $n/node.crt
                cp ca.crt $n/ca.crt
            done
            "#,
        );
        Chain { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn load(&self, node: &str) -> (NodeKey, ca_tls::Config) {
        load(&self.path(node))
    }

    /// `openssl ca -revoke` of `cert` by `issuer` (a section of ca.cnf), then
    /// `openssl ca -gencrl`; returns the CRL file (PEM, or DER when `der`).
    fn revoke(&self, issuer: &str, cert: &str, der: bool) -> PathBuf {
        let out = if der { "crl.der" } else { "crl.pem" };
        let out = format!("{issuer}-{out}");
        sh(
            self.dir.path(),
            &format!(
                r#"
                openssl ca -config ca.cnf -name {issuer} -revoke {cert} 2>/dev/null
                openssl ca -config ca.cnf -name {issuer} -gencrl -out {issuer}-crl.pem 2>/dev/null
                if {der}; then openssl crl -in {issuer}-crl.pem -outform DER -out {out}; fi
                "#
            ),
        );
        self.path(&out)
    }
}

fn crls(path: &Path) -> Vec<Crl> {
    Crl::read(path).unwrap()
}

/// Connects `from` to `to` (swarms of their configs) and returns what each end saw.
async fn try_dial(
    from: &(NodeKey, ca_tls::Config),
    to: &(NodeKey, ca_tls::Config),
) -> (common::Side, common::Side) {
    let mut a = build_swarm(&from.0, &from.1, &Default::default()).unwrap();
    let mut b = build_swarm(&to.0, &to.1, &Default::default()).unwrap();
    dial(&mut a, &mut b).await
}

/// An agency's CRL (PEM, from `openssl ca -gencrl`) that lists a1: a node with it refuses a1
/// with `revoked` whether a1 dials it or it dials a1, and still accepts a2.
#[tokio::test]
async fn a_revoked_node_is_refused_in_both_directions() {
    let chain = Chain::new();
    let crl = chain.revoke("agencyA", "a1/node.crt", false);
    let a0 = chain.load("a0");
    a0.1.set_crls(crls(&crl)).unwrap();
    let (a1, a2) = (chain.load("a1"), chain.load("a2"));

    let (dialler, listener) = try_dial(&a1, &a0).await;
    assert_eq!(listener.refusal(), &Refusal::Revoked);
    assert_eq!(listener.refusal().code(), "revoked");
    assert!(matches!(dialler.refusal(), Refusal::RejectedByPeer(_)));

    let (dialler, _) = try_dial(&a0, &a1).await;
    assert_eq!(dialler.refusal(), &Refusal::Revoked);

    let (dialler, listener) = try_dial(&a2, &a0).await;
    dialler.peer();
    listener.peer();
    let (dialler, listener) = try_dial(&a0, &a2).await;
    dialler.peer();
    listener.peer();
}

/// The CA's CRL, in DER, revoking agency B: every node under B is refused (the check covers
/// each level of the chain), nodes under A are not.
#[tokio::test]
async fn a_der_crl_of_the_ca_revokes_an_agency_and_its_nodes() {
    let chain = Chain::new();
    let crl = chain.revoke("chain", "agencyB.crt", true);
    assert_ne!(std::fs::read(&crl).unwrap()[0], b'-', "DER, not PEM");
    let a0 = chain.load("a0");
    a0.1.set_crls(crls(&crl)).unwrap();

    let (_, listener) = try_dial(&chain.load("b0"), &a0).await;
    assert_eq!(listener.refusal(), &Refusal::Revoked);
    let (dialler, _) = try_dial(&a0, &chain.load("b0")).await;
    assert_eq!(dialler.refusal(), &Refusal::Revoked);
    let (_, listener) = try_dial(&chain.load("a1"), &a0).await;
    listener.peer();
}

/// Flood's membership check in CA mode (`security::ca_membership`, which is
/// `Config::check_chain`) applies the same CRLs.
#[tokio::test]
async fn the_membership_check_applies_the_crls() {
    let chain = Chain::new();
    let crl = chain.revoke("agencyA", "a1/node.crt", false);
    let (_, a0) = chain.load("a0");
    let (_, a1) = chain.load("a1");
    let (_, a2) = chain.load("a2");
    assert!(a0.check_chain(a1.local_chain()).is_ok());
    a0.set_crls(crls(&crl)).unwrap();
    assert_eq!(a0.check_chain(a1.local_chain()), Err(Refusal::Revoked));
    assert!(a0.check_chain(a2.local_chain()).is_ok());
}

/// A CRL that does not parse, one signed by a CA of the same name that is not in `ca.crt`, and
/// two CRLs of one issuer are refused, and leave the CRLs in force as they were.
#[tokio::test]
async fn unusable_crls_are_config_errors() {
    let chain = Chain::new();
    let good = chain.revoke("agencyA", "a1/node.crt", false);
    let (_, a0) = chain.load("a0");

    std::fs::write(chain.path("garbage.pem"), b"not a CRL at all").unwrap();
    assert!(Crl::read(chain.path("garbage.pem")).is_err());
    let mut pem = std::fs::read(&good).unwrap();
    let cut = pem.len() / 2;
    pem.truncate(cut);
    std::fs::write(chain.path("cut.pem"), &pem).unwrap();
    assert!(Crl::read(chain.path("cut.pem")).is_err());

    // Another chain whose CA and agency have the same names (FISCO names them all alike).
    let other = Chain::new();
    let forged = other.revoke("agencyA", "a1/node.crt", false);
    let err = a0.set_crls(crls(&forged)).unwrap_err().to_string();
    assert!(err.contains("signature does not verify"), "{err}");

    let twice = [crls(&good), crls(&good)].concat();
    let err = a0.set_crls(twice).unwrap_err().to_string();
    assert!(err.contains("same issuer"), "{err}");
    assert!(a0.revocation().crls().is_empty());

    // From a config file: `[certificate] crl`, relative to the file.
    std::fs::write(
        chain.path("a0/config.toml"),
        "[certificate]\ncrl = [\"../garbage.pem\"]\n",
    )
    .unwrap();
    let (config, _) = Config::load(chain.path("a0/config.toml")).unwrap();
    assert_eq!(config.certificate.crl, [chain.path("a0/../garbage.pem")]);
    let err = config.read_crls().unwrap_err().to_string();
    assert!(err.contains("garbage.pem"), "{err}");
}

async fn start(chain: &Chain, node: &str, peers: &[&Node]) -> (Node, Events) {
    let (key, tls) = chain.load(node);
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = peers
        .iter()
        .map(|p| bcos_p2p::config::PeerAddr(p.listen_addrs()[0].clone()))
        .collect();
    config.connection.redial_min_ms = 100;
    config.connection.redial_max_ms = 300;
    let mut n = Node::start(key, tls, config).await.unwrap();
    let events = Box::pin(n.events().unwrap());
    (n, events)
}

/// Revokes a1 (agency A's CRL) and loads the CRL into `node` with `Node::reload`.
async fn revoke_a1_in(chain: &Chain, node: &Node) -> connection::Reloaded {
    let crl = chain.revoke("agencyA", "a1/node.crt", false);
    let settings = connection::Reload {
        crls: crls(&crl),
        ..Default::default()
    };
    node.reload(settings).await.unwrap()
}

/// A CRL loaded with `Node::reload` closes the live session of the peer it revokes at once
/// (and only that one); the peer's redials are then refused with `revoked`.
#[tokio::test]
async fn a_crl_loaded_at_run_time_closes_the_revoked_peers_session() {
    let chain = Chain::new();
    let (a0, mut e0) = start(&chain, "a0", &[]).await;
    let (a1, _e1) = start(&chain, "a1", &[&a0]).await;
    let (a2, _e2) = start(&chain, "a2", &[&a0]).await;
    for n in [&a1, &a2] {
        let id = n.node_id().clone();
        next(&mut e0, |e| match e {
            NodeEvent::Connected { node, .. } if *node == id => Some(()),
            _ => None,
        })
        .await;
    }
    let done = revoke_a1_in(&chain, &a0).await;
    assert_eq!(done.closed, [a1.node_id().clone()]);
    assert_eq!(done.crls, 1);
    let id1 = a1.node_id().clone();
    next(&mut e0, |e| match e {
        NodeEvent::Connection(connection::Event::Revoked { node }) if *node == id1 => Some(()),
        _ => None,
    })
    .await;
    next(&mut e0, |e| match e {
        NodeEvent::Disconnected { node, .. } if *node == id1 => Some(()),
        _ => None,
    })
    .await;
    // a1 dials again (a0 is its configured peer): refused, revoked.
    next(&mut e0, |e| match e {
        NodeEvent::Refused { reason, .. } if reason.code() == "revoked" => Some(()),
        _ => None,
    })
    .await;
    let peers = a0.peers().await.unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(&peers[0].node, a2.node_id());
}

/// Waits for a broadcast whose payload starts with `prefix`; the payloads of other broadcasts
/// seen meanwhile are returned with it.
async fn broadcast_seen(events: &mut Events, prefix: &str) -> (String, Vec<String>) {
    let mut others = Vec::new();
    let found = next(events, |e| match e {
        NodeEvent::Flood(bcos_p2p::flood::Event::Message { payload, .. }) => {
            let text = String::from_utf8_lossy(payload).into_owned();
            if text.starts_with(prefix) {
                Some(text)
            } else {
                others.push(text);
                None
            }
        }
        _ => None,
    })
    .await;
    (found, others)
}

/// Flood takes a member's messages once its chain passed, and keeps the chain: a CRL loaded by
/// reload makes it check them again, so a revoked node's broadcasts relayed by an honest peer
/// are no longer delivered.
#[tokio::test]
async fn a_crl_loaded_at_run_time_stops_a_revoked_origins_messages() {
    let chain = Chain::new();
    // A line: a1 - a2 - a0, so a1's broadcasts reach a0 only through a2.
    let (a0, mut e0) = start(&chain, "a0", &[]).await;
    let (a2, _e2) = start(&chain, "a2", &[&a0]).await;
    let (a1, _e1) = start(&chain, "a1", &[&a2]).await;
    let mut delivered = false;
    for i in 0..40 {
        a1.broadcast(format!("before-{i}").into()).await.ok();
        let wait = std::time::Duration::from_millis(250);
        if tokio::time::timeout(wait, broadcast_seen(&mut e0, "before-"))
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "a1's broadcasts never reached a0");

    let done = revoke_a1_in(&chain, &a0).await;
    assert!(done.closed.is_empty(), "a0 has no session with a1");
    a1.broadcast("after".into()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    a2.broadcast("control".into()).await.unwrap();
    let (_, others) = broadcast_seen(&mut e0, "control").await;
    assert!(
        !others.iter().any(|m| m == "after"),
        "a revoked origin's broadcast was delivered: {others:?}"
    );
}
