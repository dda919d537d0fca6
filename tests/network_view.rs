//! The operator's network view, served beside the metrics: five nodes in one process (a partial
//! mesh, topics subscribed, one a hostile name), node 0's `/peers` and `/network.json` read as
//! JSON, and its `/network` page rendered by a real headless browser (chromium), whose DOM
//! must draw every node and link of the network, mark node 0 and its direct and routed peers,
//! show the topics, and show the hostile topic as text, not markup.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    config::DEFAULT_MODULE,
    metrics::{MetricsServer, Registry},
    node::Node,
};
use bytes::Bytes;
use common::{TIMEOUT, echo, start_node};
use serde_json::Value;

/// Topics with markup in them: the page must show them as text.
const HOSTILE: &str = "<script>document.title='pwned'</script>";
const HOSTILE_IMG: &str = "<img src=x onerror=\"document.title='pwned'\">";
/// The links of the mesh: a line 0-1-2-3-4 and a chord 0-2.
const EDGES: [(usize, usize); 5] = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 2)];
/// How long the browser may run at most.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

/// A GET over plain TCP: the status line and the body (bounded in time).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).expect("UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "{path}: {status} {body}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The chromium binary, if one runs here.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Runs headless `browser` on `url` with `args`, killed after [`BROWSER_TIMEOUT`]; returns
/// what it wrote on stdout.
fn run_browser(browser: &str, profile: &Path, args: &[String], url: &str) -> String {
    let out_path = profile.join("stdout");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{browser} failed: {status}");
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{browser} did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out_path).unwrap()
}

/// The `<g class="node …" data-node-id="…">` elements of the dumped DOM: (class, NodeId).
fn drawn_nodes(dom: &str) -> Vec<(String, String)> {
    dom.split("<g class=\"node ")
        .skip(1)
        .map(|rest| {
            let (class, rest) = rest.split_once('"').unwrap();
            let id = rest
                .split_once("data-node-id=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(id, _)| id.to_string())
                .unwrap_or_default();
            (class.to_string(), id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_page_draws_every_node_link_and_topic_and_escapes_topics() {
    let Some(browser) = chromium() else {
        common::skip::skip(
            "chromium is not installed",
            "apt-get install -y --no-install-recommends chromium",
        );
        return;
    };
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    let mut echoes = Vec::new();
    for i in 0..5 {
        let peers: Vec<&Node> = EDGES
            .iter()
            .filter(|&&(a, b)| b == i && a < i)
            .map(|&(a, _)| &nodes[a])
            .collect();
        let (node, events) = start_node(&ca, &peers, |_| {}).await;
        echoes.push(echo(events));
        nodes.push(node);
    }
    let id = |i: usize| nodes[i].node_id().clone();
    nodes[1].subscribe("blocks").await.unwrap();
    nodes[3].subscribe("tx").await.unwrap();
    nodes[3].subscribe(HOSTILE).await.unwrap();
    nodes[4].subscribe(HOSTILE_IMG).await.unwrap();

    // Node 0's view settles: every node, every link, the topics.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let view = nodes[0].view().await.unwrap();
        let topics_of = |n: &NodeId| {
            view.index_of(n)
                .map(|i| view.nodes[i].topics.clone())
                .unwrap_or_default()
        };
        if view.nodes.len() == 5
            && view.links.len() == EDGES.len()
            && view.nodes.iter().all(|n| n.hops.is_some())
            && topics_of(&id(3)).len() == 2
            && topics_of(&id(4)).len() == 1
            && topics_of(&id(1)).len() == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view did not settle: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A request to node 4 (no direct connection) opens a routed connection to it.
    let reply = nodes[0]
        .request(&id(4), DEFAULT_MODULE, Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"hi");

    let server = MetricsServer::bind_with_node(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Registry::default()),
        nodes[0].clone(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let me = id(0).to_string();
    let (direct, routed) = ([id(1).to_string(), id(2).to_string()], id(4).to_string());

    let (peers, view, page) = tokio::task::spawn_blocking(move || {
        (
            get_json(addr, "/peers"),
            get_json(addr, "/network.json"),
            get(addr, "/network"),
        )
    })
    .await
    .unwrap();

    // /peers: the direct peers with traffic both ways, node 4 routed.
    assert_eq!(peers["node_id"], me);
    let list = peers["peers"].as_array().unwrap();
    for d in &direct {
        let p = list
            .iter()
            .find(|p| p["node_id"] == *d)
            .unwrap_or_else(|| panic!("{d} in {peers}"));
        assert_eq!(p["routed"], false, "{p}");
        assert!(
            p["addr"]
                .as_str()
                .unwrap()
                .starts_with("/ip4/127.0.0.1/tcp/")
        );
        assert!(p["bytes_in"].as_u64().unwrap() > 0, "{p}");
        assert!(p["bytes_out"].as_u64().unwrap() > 0, "{p}");
        assert!(p["rtt_ms"].is_null() || p["rtt_ms"].as_f64().unwrap() >= 0.0);
    }
    let p4 = list
        .iter()
        .find(|p| p["node_id"] == routed)
        .unwrap_or_else(|| panic!("node 4 in {peers}"));
    assert_eq!(p4["routed"], true, "{p4}");
    assert!(
        p4["bytes_out"].as_u64().unwrap() >= 2,
        "the request went: {p4}"
    );

    // /network.json: five nodes, five links, node 0 marked.
    assert_eq!(view["nodes"].as_array().unwrap().len(), 5, "{view}");
    assert_eq!(
        view["links"].as_array().unwrap().len(),
        EDGES.len(),
        "{view}"
    );
    let mine: Vec<&Value> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["me"] == true)
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["node_id"], me);
    assert!(view.to_string().contains("document.title='pwned'"));

    // /network: the page itself carries no data, only the code that fetches it.
    assert!(page.0.starts_with("HTTP/1.1 200"), "{}", page.0);
    assert!(page.1.contains("<svg id=\"net\""));
    assert!(
        !page.1.contains(&me),
        "the page is static; the data comes as JSON"
    );

    // The page as a browser renders it, after its script fetched the view.
    let url = format!("http://{addr}/network");
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().to_path_buf();
    let dom = tokio::task::spawn_blocking(move || {
        run_browser(
            browser,
            &profile,
            &["--virtual-time-budget=5000".into(), "--dump-dom".into()],
            &url,
        )
    })
    .await
    .unwrap();
    let drawn = drawn_nodes(&dom);
    assert_eq!(drawn.len(), 5, "one node element per node:\n{dom}");
    let mut ids: Vec<String> = drawn.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = (0..5).map(|i| id(i).to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected, "every node once");
    let class_of = |node: &str| {
        drawn
            .iter()
            .find(|(_, id)| id == node)
            .map(|(c, _)| c.clone())
            .unwrap()
    };
    assert_eq!(class_of(&me), "me");
    assert_eq!(drawn.iter().filter(|(c, _)| c == "me").count(), 1);
    for d in &direct {
        assert_eq!(class_of(d), "direct", "{d}");
    }
    assert_eq!(class_of(&routed), "routed");
    assert!(
        ["remote", "routed"].contains(&class_of(&id(3).to_string()).as_str()),
        "node 3 has no direct connection to node 0"
    );
    // A dashed line to each routed peer, apart from the links.
    assert_eq!(
        dom.matches("<line class=\"route\"").count(),
        drawn.iter().filter(|(c, _)| c == "routed").count()
    );
    let links = dom.matches("<line class=\"link").count();
    assert_eq!(links, EDGES.len(), "one line per link:\n{dom}");
    // The links of node 0 (to 1 and 2) are highlighted.
    assert_eq!(dom.matches("<line class=\"link mine\"").count(), 2);
    // Topics, as text; the hostile ones escaped, nothing of them run or parsed as markup.
    assert!(dom.contains(">blocks<"), "{dom}");
    assert!(dom.contains("tx"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;img src=x onerror=\"document.title='pwned'\"&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "the page's own script only"
    );
    assert!(
        dom.contains("<title>bcos-p2p network view</title>"),
        "{dom}"
    );
    assert!(!dom.contains("pwned</title>"));

    drop(server);
    for e in echoes {
        e.abort();
    }
}
