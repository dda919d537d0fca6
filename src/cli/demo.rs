//! `bcos-p2p demo`: a local network in one process that shows every capability, with timings.
//!
//! Certificates are made in a temporary folder (removed at the end), nodes listen on 127.0.0.1
//! with ports the OS picks, and every step prints what happened and how long it took: the
//! authenticated mesh, unicast with a reply and a refused module, subscriptions and multicast,
//! broadcast, a topic request, a status change, refused intruders, and a node restarting.
//! `--sm` runs the same network with SM2 keys and an SM2 CA: 国密 TLS 1.3 (RFC 8998).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bcos_p2p::{
    KeyType, NodeId, ca_tls,
    config::{Config, DEFAULT_MODULE, PeerAddr},
    connection, flood,
    node::{Node, NodeEvent},
    status,
};
use bytes::Bytes;
use futures::StreamExt as _;
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use super::certgen::{GenOptions, NodeFiles, gen_certs};

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const TOPIC: &str = "blocks";

/// What a node's event task tells the demo.
#[derive(Debug)]
enum Seen {
    Connected(NodeId),
    Disconnected(NodeId),
    Refused(connection::Refusal),
    Message {
        origin: NodeId,
        topic: Option<String>,
        hops: u8,
    },
    Subscribed(NodeId),
    Status {
        node: NodeId,
        seq: u64,
    },
}

struct Running {
    name: String,
    files: NodeFiles,
    node: Node,
    addr: Multiaddr,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the node of `files` on `listen`, dialling `peers`; its events go to `reports` tagged
/// with `index`, and it answers every request for the default module with `echo:<data>`.
async fn start(
    index: usize,
    name: &str,
    files: &NodeFiles,
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
    deny: Option<NodeId>,
    reports: mpsc::UnboundedSender<(usize, Seen)>,
) -> anyhow::Result<Running> {
    let (key, tls) = ca_tls::Config::load(&files.key, &files.cert, &files.ca)
        .with_context(|| format!("loading {}", files.key.display()))?;
    let mut config = Config::default();
    config.network.listen = vec![PeerAddr(listen)];
    config.network.peers = peers.into_iter().map(PeerAddr).collect();
    config.access.deny.extend(deny);
    config.connection.redial_min_ms = 200;
    let mut node = Node::start(key, tls, config).await?;
    let mut events = node.events().expect("first call");
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let seen = match event {
                NodeEvent::Connected { node, .. } => Seen::Connected(node),
                NodeEvent::Disconnected { node, .. } => Seen::Disconnected(node),
                NodeEvent::Refused { reason, .. } => Seen::Refused(reason),
                NodeEvent::Request {
                    module,
                    payload,
                    responder,
                    ..
                } => {
                    let answer = if module == DEFAULT_MODULE {
                        let mut echo = b"echo:".to_vec();
                        echo.extend_from_slice(&payload);
                        responder.respond(echo.into()).await
                    } else {
                        responder
                            .respond_error(format!("module {module} is not served here"))
                            .await
                    };
                    if answer.is_err() {
                        return;
                    }
                    continue;
                }
                NodeEvent::Flood(flood::Event::Message {
                    origin,
                    topic,
                    hops,
                    ..
                }) => Seen::Message {
                    origin,
                    topic: topic.map(|t| t.to_string()),
                    hops,
                },
                NodeEvent::Flood(flood::Event::Subscribed { node, .. }) => Seen::Subscribed(node),
                NodeEvent::Status(status::Event::StatusUpdated { node, seq, .. }) => {
                    Seen::Status { node, seq }
                }
                _ => continue,
            };
            if reports.send((index, seen)).is_err() {
                return;
            }
        }
    });
    let addr = node.listen_addrs()[0].clone();
    Ok(Running {
        name: name.to_string(),
        files: files.clone(),
        node,
        addr,
        task,
    })
}

/// The demo's view of the network, fed by the nodes' reports.
struct Demo {
    nodes: Vec<Running>,
    reports: mpsc::UnboundedReceiver<(usize, Seen)>,
    sender: mpsc::UnboundedSender<(usize, Seen)>,
    /// Per node: messages received, statuses learnt.
    received: Vec<usize>,
    status_seq: Vec<BTreeMap<String, u64>>,
}

impl Demo {
    fn name_of(&self, id: &NodeId) -> String {
        self.nodes
            .iter()
            .find(|r| r.node.node_id() == id)
            .map_or_else(|| format!("{}…", id.short()), |r| r.name.clone())
    }

    /// Takes reports until `done` has seen enough; fails after [`STEP_TIMEOUT`].
    async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Demo, usize, &Seen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let Ok(Some((i, seen))) = tokio::time::timeout_at(deadline, self.reports.recv()).await
            else {
                bail!("gave up waiting for {what}");
            };
            match &seen {
                Seen::Message { .. } => self.received[i] += 1,
                Seen::Status { node, seq } => {
                    let name = self.name_of(node);
                    self.status_seq[i].insert(name, *seq);
                }
                _ => {}
            }
            if done(self, i, &seen) {
                return Ok(());
            }
        }
    }
}

fn ms(t: Instant) -> String {
    format!("{:>7.1} ms", t.elapsed().as_secs_f64() * 1e3)
}

/// Checks the encryption pair of an SM2 node (`sm_enssl.key`, `sm_enssl.crt`) as `run` does.
fn check_encryption_pair(files: &NodeFiles) -> anyhow::Result<()> {
    let Some((key, cert)) = &files.enc else {
        return Ok(());
    };
    let enc = bcos_p2p::NodeKey::from_file(key)?;
    let chain = ca_tls::read_pem_certs(cert)?;
    let anchors = ca_tls::read_pem_certs(&files.ca)?;
    ca_tls::pki::check_encryption_pair(&enc, &chain, &anchors, &[])
        .with_context(|| format!("{}", cert.display()))?;
    Ok(())
}

/// Runs the demo with `n` nodes; `sm`: SM2 keys and CA (国密 TLS 1.3).
pub async fn demo(n: usize, sm: bool) -> anyhow::Result<()> {
    super::init_logging("error");
    if !(3..=64).contains(&n) {
        bail!("--nodes must be 3 to 64");
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
    println!(
        "bcos-p2p demo: {n} nodes on 127.0.0.1, certificates in {}\n",
        tmp.path().display()
    );

    // 1. Certificates: a chain CA and N nodes, plus an intruder from another CA and a node that
    //    will be denied.
    let t = Instant::now();
    let key_type = if sm { KeyType::Sm2 } else { KeyType::Secp256k1 };
    let certs = gen_certs(&GenOptions {
        out: tmp.path().join("chain"),
        nodes: n + 1,
        key_type,
        days: 1,
        base_port: 30300,
    })?;
    let intruder = gen_certs(&GenOptions {
        out: tmp.path().join("other-chain"),
        nodes: 1,
        key_type,
        days: 1,
        base_port: 30300,
    })?;
    if sm {
        for c in &certs {
            check_encryption_pair(&c.files)?;
        }
        println!(
            "1. Certificates (国密): an SM2 chain CA and {n} nodes, SM2-with-SM3 signatures ({})",
            ms(t)
        );
        println!(
            "   each node: sm_ssl.key/.crt (signing) and sm_enssl.key/.crt (encryption pair, checked)"
        );
    } else {
        println!(
            "1. Certificates: a secp256k1 chain CA and {n} nodes ({})",
            ms(t)
        );
    }
    for (i, c) in certs.iter().take(n).enumerate() {
        println!("   node{i}  NodeId {}", c.node_id);
    }
    println!();

    // 2. Start the nodes: node i dials nodes 0..i. Wait for the full mesh.
    let (sender, reports) = mpsc::unbounded_channel();
    let mut demo = Demo {
        nodes: Vec::new(),
        reports,
        sender: sender.clone(),
        received: vec![0; n + 2],
        status_seq: vec![BTreeMap::new(); n + 2],
    };
    let t = Instant::now();
    let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let denied_id = certs[n].node_id.clone();
    for (i, c) in certs.iter().take(n).enumerate() {
        let peers = demo.nodes.iter().map(|r| r.addr.clone()).collect();
        let deny = (i == 0).then(|| denied_id.clone());
        let name = format!("node{i}");
        let r = start(
            i,
            &name,
            &c.files,
            any_port.clone(),
            peers,
            deny,
            sender.clone(),
        )
        .await?;
        demo.nodes.push(r);
    }
    if sm {
        println!(
            "2. Mutually authenticated 国密 TLS 1.3 (RFC 8998): TLS_SM4_GCM_SM3, curveSM2 key \
             exchange, sm2sig_sm3 signatures (SM2, SM3, SM4); certificates checked against sm_ca.crt"
        );
    } else {
        println!(
            "2. Mutually authenticated TLS 1.3 connections (certificates checked against ca.crt)"
        );
    }
    let mut ends = 0;
    let expected = n * (n - 1);
    demo.until("the full mesh", |d, i, seen| {
        if let Seen::Connected(peer) = seen {
            ends += 1;
            if i == 0 || ends <= 2 * (n - 1) {
                println!(
                    "   {}  {} authenticated {} (NodeId {}…)",
                    ms(t),
                    d.nodes[i].name,
                    d.name_of(peer),
                    peer.short()
                );
            }
        }
        ends == expected
    })
    .await?;
    println!(
        "   full mesh: {} connections in {}\n",
        expected / 2,
        ms(t).trim()
    );

    // 3. Unicast: a request with a reply, and one for a module node1 does not serve.
    println!("3. Unicast by NodeId, replies matched by id");
    let (a, b) = (&demo.nodes[0].node, demo.nodes[1].node.node_id().clone());
    let t = Instant::now();
    let reply = a
        .request(&b, DEFAULT_MODULE, Bytes::from_static(b"hello"))
        .await?;
    println!(
        "   {}  node0 → node1 request \"hello\", reply \"{}\"",
        ms(t),
        String::from_utf8_lossy(&reply)
    );
    let t = Instant::now();
    match a.request(&b, 99, Bytes::from_static(b"?")).await {
        Err(e) => println!("   {}  node0 → node1 module 99: refused: {e}", ms(t)),
        Ok(_) => bail!("module 99 should have been refused"),
    }
    println!();

    // 4. Subscriptions and multicast: the odd nodes subscribe; node0 multicasts.
    println!(
        "4. Topic \"{TOPIC}\": subscriptions spread to every node, multicast reaches only subscribers"
    );
    let t = Instant::now();
    let subscribers: Vec<usize> = (1..n).step_by(2).collect();
    for &i in &subscribers {
        demo.nodes[i].node.subscribe(TOPIC).await?;
    }
    let subscriber_ids: Vec<NodeId> = subscribers
        .iter()
        .map(|i| demo.nodes[*i].node.node_id().clone())
        .collect();
    let mut learnt = 0;
    demo.until("node0 to learn the subscriptions", |_, i, seen| {
        if i == 0 && matches!(seen, Seen::Subscribed(who) if subscriber_ids.contains(who)) {
            learnt += 1;
        }
        learnt == subscribers.len()
    })
    .await?;
    println!(
        "   {}  node0 knows {} subscriber(s): {}",
        ms(t),
        subscribers.len(),
        subscribers
            .iter()
            .map(|i| format!("node{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let t = Instant::now();
    demo.nodes[0]
        .node
        .multicast(TOPIC, Bytes::from_static(b"block 1"))
        .await?;
    let mut got = 0;
    demo.until("the multicast", |d, i, seen| {
        if let Seen::Message {
            topic: Some(_),
            hops,
            origin,
        } = seen
        {
            got += 1;
            println!(
                "   {}  {} got {}'s multicast ({hops} hop)",
                ms(t),
                d.nodes[i].name,
                d.name_of(origin)
            );
        }
        got == subscribers.len()
    })
    .await?;
    println!();

    // 5. Broadcast from the last node.
    println!("5. Broadcast: every node exactly once");
    let t = Instant::now();
    let last = n - 1;
    demo.nodes[last]
        .node
        .broadcast(Bytes::from_static(b"hello, all"))
        .await?;
    let mut got = 0;
    demo.until("the broadcast", |_, _, seen| {
        if matches!(seen, Seen::Message { topic: None, .. }) {
            got += 1;
        }
        got == n - 1
    })
    .await?;
    println!("   {}  {} nodes got node{last}'s broadcast\n", ms(t), n - 1);

    // 6. Topic request (AMOP unicast): one subscriber, chosen at random, answers.
    println!("6. Topic request: one random subscriber of \"{TOPIC}\" answers");
    let t = Instant::now();
    let (who, reply) = demo.nodes[0]
        .node
        .topic_request(
            TOPIC,
            DEFAULT_MODULE,
            Bytes::from_static(b"who has block 1?"),
        )
        .await?;
    println!(
        "   {}  {} answered \"{}\"\n",
        ms(t),
        demo.name_of(&who),
        String::from_utf8_lossy(&reply)
    );

    // 7. Status: node2 changes its status; everyone sees the new seq.
    println!("7. Status sync: a change is announced and queried at once");
    let t = Instant::now();
    let changer = demo.nodes[2].node.node_id().clone();
    let seq = demo.nodes[2]
        .node
        .set_status(Bytes::from_static(b"height=42"))
        .await?;
    let mut seen_by = 0;
    demo.until("the status change", |_, _, s| {
        if matches!(s, Seen::Status { node, seq: got } if *node == changer && *got == seq) {
            seen_by += 1;
        }
        seen_by == n - 1
    })
    .await?;
    println!(
        "   {}  all {} peers hold node2's status seq {seq}\n",
        ms(t),
        n - 1
    );

    // 8. Refusals: an intruder from another CA, and a node on node0's deny list.
    println!("8. Refused at the handshake, before any protocol runs");
    let t = Instant::now();
    let target = vec![demo.nodes[0].addr.clone()];
    let (ii, di) = (n, n + 1);
    let stranger = start(
        ii,
        "intruder",
        &intruder[0].files,
        any_port.clone(),
        target.clone(),
        None,
        sender.clone(),
    )
    .await?;
    let denied = start(
        di,
        "denied",
        &certs[n].files,
        any_port.clone(),
        target,
        None,
        sender.clone(),
    )
    .await?;
    let mut refusals = HashMap::new();
    demo.until("the refusals", |d, i, seen| {
        if let Seen::Refused(e) = seen
            && refusals.insert((i, e.code()), ()).is_none()
        {
            let who = match i {
                x if x == ii => "intruder".to_string(),
                x if x == di => "denied node".to_string(),
                x => d.nodes[x].name.clone(),
            };
            println!("   {}  {who:<11} {e}", ms(t));
        }
        // The intruder refuses node0's certificate; node0 refuses the denied node, which is
        // told so.
        let has = |who: usize| refusals.keys().any(|(i, _)| *i == who);
        has(ii) && has(di) && refusals.contains_key(&(0, "denied"))
    })
    .await?;
    stranger.node.shutdown().await.ok();
    denied.node.shutdown().await.ok();
    println!();

    // 9. A node stops and comes back on the same port: the others reconnect.
    println!("9. node{last} stops and restarts on the same address");
    let t = Instant::now();
    let old = demo.nodes.remove(last);
    old.node.shutdown().await?;
    old.task.abort();
    let gone = old.node.node_id().clone();
    let mut lost = 0;
    demo.until("the others to notice", |_, _, seen| {
        if matches!(seen, Seen::Disconnected(p) if *p == gone) {
            lost += 1;
        }
        lost == n - 1
    })
    .await?;
    println!("   {}  the {} others saw it go", ms(t), n - 1);
    let t = Instant::now();
    let peers = demo.nodes.iter().map(|r| r.addr.clone()).collect();
    let back = start(
        last,
        &old.name,
        &old.files,
        old.addr.clone(),
        peers,
        None,
        sender.clone(),
    )
    .await?;
    demo.nodes.push(back);
    let mut again = 0;
    demo.until("the reconnections", |_, i, seen| {
        if i != last && matches!(seen, Seen::Connected(p) if *p == gone) {
            again += 1;
        }
        again == n - 1
    })
    .await?;
    println!("   {}  all {} others reconnected to it\n", ms(t), n - 1);

    // 10. Summary.
    println!("10. Summary");
    println!(
        "   {:<8} {:<12} {:>5} {:>9}  statuses known (seq)",
        "node", "NodeId", "peers", "messages"
    );
    for (i, r) in demo.nodes.iter().enumerate() {
        let peers = r.node.peers().await?;
        let statuses: Vec<String> = demo.status_seq[i]
            .iter()
            .map(|(name, seq)| format!("{name}:{seq}"))
            .collect();
        println!(
            "   {:<8} {:<12} {:>5} {:>9}  {}",
            r.name,
            format!("{}…", r.node.node_id().short()),
            peers.len(),
            demo.received[i],
            statuses.join(" ")
        );
    }
    println!(
        "\n   {n} {}nodes: mesh, unicast, multicast, broadcast, topic request, status sync, 2 refusals, 1 restart; total {} ms",
        if sm { "国密 " } else { "" },
        started.elapsed().as_millis()
    );
    drop(demo.sender);
    for r in demo.nodes {
        r.node.shutdown().await.ok();
        r.task.abort();
    }
    drop(tmp);
    Ok(())
}
