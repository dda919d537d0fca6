//! Loading node configurations: FISCO BCOS `config.ini` files (2.x and 3.x) as operators have
//! them, TOML as `gen-certs` writes it, and the errors and warnings bad files get.

use std::path::{Path, PathBuf};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    config::{Config, ConfigError, PeerAddr},
};

fn node_id() -> NodeId {
    NodeKey::generate(KeyType::Secp256k1)
        .unwrap()
        .node_id()
        .clone()
}

fn addrs(list: &[&str]) -> Vec<PeerAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// Writes `files` (name, text) into a fresh directory.
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Loads `text` as `dir/name`; on failure, checks the error names the file and returns its
/// message.
fn load_err(name: &str, text: &str) -> String {
    let dir = dir_with(&[(name, text)]);
    let path = dir.path().join(name);
    match Config::load(&path) {
        Err(ConfigError::Invalid { path: p, message }) => {
            assert_eq!(p, path.display().to_string());
            let shown = ConfigError::Invalid {
                path: p,
                message: message.clone(),
            }
            .to_string();
            assert!(shown.contains(&format!("{}: ", path.display())), "{shown}");
            message
        }
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

/// Loads each text of `cases` as `dir/name` and checks its error holds the expected text.
fn expect_errors(name: &str, cases: &[(&str, &str)]) {
    for (text, expected) in cases {
        let message = load_err(name, text);
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }
}

/// Loads `text` as `dir/config.ini` and returns the warnings.
fn ini_warnings(text: &str) -> Vec<String> {
    let dir = dir_with(&[("config.ini", text)]);
    Config::load(dir.path().join("config.ini")).unwrap().1
}

/// A FISCO BCOS 2.x node's config.ini as `build_chain.sh` writes it, with unrelated sections.
fn fisco_2x(deny: &NodeId, allow: &NodeId) -> String {
    format!(
        r#"[rpc]
    channel_listen_ip=0.0.0.0
    channel_listen_port=20200
    jsonrpc_listen_ip=127.0.0.1
    jsonrpc_listen_port=8545
[p2p]
    listen_ip=0.0.0.0
    listen_port=30301
    ; nodes to connect to
    node.3=127.0.0.1:30303
    node.0=127.0.0.1:30300
    node.1=127.0.0.1:30301
    node.2=peer2.example:30302
    # the same node twice
    node.4=127.0.0.1:30300
[certificate_blacklist]
    ; crl.0 should be nodeid, nodeid's length is 128
    crl.0={deny}
[certificate_whitelist]
    ; cal.0 should be nodeid, nodeid's length is 128
    cal.0={allow}
    cal.1=0x{allow_upper}
[group]
    group_data_path=data/
    group_config_path=conf/
[network_security]
    ; directory the certificates located in
    data_path=conf/
    ; the node private key file
    key=${{data_path}}/node.key
    ; the node certificate file
    cert=${{data_path}}/node.crt
    ; the ca certificate file
    ca_cert=${{data_path}}/ca.crt
[storage_security]
    enable=false
    key_manager_ip=
[chain]
    id=1
    sm_crypto=false
[compatibility]
    supported_version=2.9.0
[log]
    enable=true
    log_path=./log
    level=info
    max_log_file_size=200
"#,
        allow_upper = allow.to_string().to_uppercase()
    )
}

#[test]
fn fisco_2x_config_ini_maps_to_the_p2p_config() {
    let (deny, allow) = (node_id(), node_id());
    let dir = dir_with(&[("node1/config.ini", &fisco_2x(&deny, &allow))]);
    let node = dir.path().join("node1");
    let (config, warnings) = Config::load(node.join("config.ini")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.network.listen, addrs(&["/ip4/0.0.0.0/tcp/30301"]));
    assert_eq!(
        config.network.peers,
        addrs(&[
            "127.0.0.1:30303",
            "127.0.0.1:30300",
            "127.0.0.1:30301",
            "peer2.example:30302",
        ])
    );
    assert_eq!(config.access.deny, vec![deny]);
    assert_eq!(config.access.allow, vec![allow]);
    assert_eq!(config.certificate.key, node.join("conf/node.key"));
    assert_eq!(config.certificate.cert, node.join("conf/node.crt"));
    assert_eq!(config.certificate.ca, node.join("conf/ca.crt"));
    // What FISCO has no counterpart for keeps its default.
    let defaults = Config::default();
    assert_eq!(config.connection, defaults.connection);
    assert_eq!(config.unicast, defaults.unicast);
    assert_eq!(config.flood, defaults.flood);
    assert_eq!(config.status, defaults.status);
}

#[test]
fn fisco_3x_cert_section_and_nodes_json() {
    let dir = dir_with(&[
        (
            "config.ini",
            "[p2p]\n    listen_ip=::\n    listen_port=30300\n    sm_ssl=false\n    \
             nodes_path=./peers/\n    nodes_file=nodes.json\n    node.0=[::1]:30309\n\
             [cert]\n    ; directory the certificates located in\n    ca_path=./conf\n    \
             ca_cert=ca.crt\n    node_key=ssl.key\n    node_cert=ssl.crt\n\
             [consensus]\n    min_seal_time=500\n[storage]\n    data_path=data\n",
        ),
        (
            "peers/nodes.json",
            r#"{"nodes":["127.0.0.1:30300","127.0.0.1:30301","[::1]:30309","127.0.0.1:30301"]}"#,
        ),
    ]);
    let (config, warnings) = Config::load(dir.path().join("config.ini")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.network.listen, addrs(&["/ip6/::/tcp/30300"]));
    assert_eq!(
        config.network.peers,
        addrs(&["[::1]:30309", "127.0.0.1:30300", "127.0.0.1:30301"])
    );
    let conf = dir.path().join("conf");
    assert_eq!(config.certificate.key, conf.join("ssl.key"));
    assert_eq!(config.certificate.cert, conf.join("ssl.crt"));
    assert_eq!(config.certificate.ca, conf.join("ca.crt"));

    // nodes_file alone is read from the file's directory; [cert] defaults are FISCO 3.x's.
    let dir = dir_with(&[
        (
            "config.ini",
            "[p2p]\nnodes_file=n.json\nlisten_ip=[::1]\n[cert]\n",
        ),
        ("n.json", r#"{"nodes":[]}"#),
    ]);
    let (config, _) = Config::load(dir.path().join("config.ini")).unwrap();
    assert_eq!(config.network.listen, addrs(&["/ip6/::1/tcp/30300"]));
    assert!(config.network.peers.is_empty());
    assert_eq!(config.certificate.key, dir.path().join("conf/ssl.key"));
}

#[test]
fn missing_sections_take_the_defaults() {
    let base = Path::new("/srv/node0");
    let (config, warnings) =
        Config::from_fisco_ini("; nothing\n[rpc]\nlisten_port=1\n", base).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut expected = Config::default();
    expected.certificate.resolve_relative_to(base);
    assert_eq!(config, expected);
    // A config.ini next to the working directory.
    let (config, _) = Config::from_fisco_ini("", "").unwrap();
    assert_eq!(config.certificate.key, PathBuf::from("node.key"));
}

#[test]
fn bad_fisco_values_name_file_key_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "[p2p]\n    listen_port=99999\n",
            "[p2p] listen_port: `99999` is not a port 0-65535 (line 2)",
        ),
        (
            "[p2p]\nlisten_port=-1\n",
            "[p2p] listen_port: `-1` is not a port",
        ),
        (
            "[p2p]\nlisten_ip=localhost\n",
            "[p2p] listen_ip: `localhost` is not an IPv4 or IPv6 address (line 2)",
        ),
        (
            "[p2p]\nnode.0=127.0.0.1:30300\nnode.1=127.0.0.1\n",
            "[p2p] node.1: bad address `127.0.0.1`",
        ),
        ("[p2p]\nnode.0=\n", "[p2p] node.0: empty; give host:port"),
        (
            "[p2p]\nnode.0=127.0.0.1:0\n",
            "[p2p] node.0: `/ip4/127.0.0.1/tcp/0` has port 0",
        ),
        (
            "[certificate_blacklist]\n    crl.0=not-a-node-id\n",
            "[certificate_blacklist] crl.0: NodeId is not hex",
        ),
        (
            "[certificate_whitelist]\ncal.0=abcd\n",
            "[certificate_whitelist] cal.0: NodeId has 4 hex characters",
        ),
        ("[p2p]\nnodes_file=nodes.json\n", "[p2p] nodes_file: "),
        ("[p2p]\nnodes_path=peers\n", "[p2p] nodes_path: "),
        (
            "[p2p]\nlisten_port=1\n[rpc]\nlisten_port=2\n[p2p]\nlisten_port=3\n",
            "[p2p] listen_port: given twice (lines 2 and 6)",
        ),
        (
            "[network_security]\nkey=a\n[cert]\nnode_key=b\n",
            "[network_security] (FISCO 2.x) and [cert] (FISCO 3.x) both give",
        ),
        ("[p2p]\nlisten_port\n", "line 2: `listen_port` is neither"),
    ];
    expect_errors("config.ini", cases);
    // A missing nodes.json names the file and the cause.
    let message = load_err("config.ini", "[p2p]\nnodes_file=nodes.json\n");
    assert!(
        message.contains("nodes.json: cannot read") && message.contains("(line 2)"),
        "{message}"
    );
}

#[test]
fn bad_nodes_json_names_the_key() {
    for (json, expected) in [
        (
            "[\"127.0.0.1:30300\"]",
            "nodes.json: not {\"nodes\":[\"host:port\",...]}: ",
        ),
        (
            "{\"nodes\":\"127.0.0.1:30300\"}",
            "nodes.json: not {\"nodes\"",
        ),
        (
            "{\"nodes\":[\"127.0.0.1:30300\",\"nowhere\"]}",
            "entry 1: bad address `nowhere`",
        ),
        ("", "nodes.json: not {\"nodes\""),
    ] {
        let dir = dir_with(&[
            ("config.ini", "[p2p]\nnodes_file=nodes.json\n"),
            ("nodes.json", json),
        ]);
        let path = dir.path().join("config.ini");
        let err = Config::load(&path).unwrap_err().to_string();
        let file = dir.path().join("nodes.json");
        assert!(
            err.contains(&format!("[p2p] nodes_file: {}", file.display()))
                && err.contains(expected),
            "{expected:?} not in {err:?}"
        );
    }
}

#[test]
fn unknown_keys_in_fisco_p2p_sections_warn() {
    let warnings = ini_warnings(
        "[p2p]\nlisten_ip=0.0.0.0\nlisten_prot=30300\nenable_compress=true\nsm_ssl=true\n\
         [network_security]\ndata_path=conf/\nkye=${data_path}/node.key\n\
         [certificate_blacklist]\ncrl0=x\n\
         [rpc]\nanything=goes\n",
    );
    assert_eq!(
        warnings,
        [
            "[p2p] listen_prot (line 3): unknown key; ignored",
            "[p2p] enable_compress (line 4): a FISCO BCOS setting bcos-p2p does not use; ignored",
            "[certificate_blacklist] crl0 (line 10): unknown key; ignored",
            "[p2p] sm_ssl (line 5): FISCO 3.x's switch, and this file's certificates are FISCO \
             2.x's [network_security], where [chain] sm_crypto selects 国密; ignored",
            "[network_security] kye (line 8): unknown key; ignored",
        ]
    );
    let warnings = ini_warnings("[cert]\nsm_node_key=sm.key\nca_pth=x\n");
    assert_eq!(
        warnings,
        [
            "[cert] sm_node_key (line 2): read only with [p2p] sm_ssl=true (国密); ignored",
            "[cert] ca_pth (line 3): unknown key; ignored",
        ]
    );
    // A typo in the keys of an unrelated section is not ours to report.
    assert!(ini_warnings("[storage]\nbogus=1\n[log]\nlevle=info\n").is_empty());
}

#[test]
fn extension_picks_the_format() {
    // `.INI` is FISCO too; anything else is TOML.
    let dir = dir_with(&[
        ("CONFIG.INI", "[p2p]\nlisten_port=30310\n"),
        ("node.conf", "[network]\nlisten = [\"127.0.0.1:30311\"]\n"),
    ]);
    let (c, _) = Config::load(dir.path().join("CONFIG.INI")).unwrap();
    assert_eq!(c.network.listen, addrs(&["0.0.0.0:30310"]));
    let (c, _) = Config::load(dir.path().join("node.conf")).unwrap();
    assert_eq!(c.network.listen, addrs(&["127.0.0.1:30311"]));
    // FISCO syntax in a TOML file fails as TOML, naming the file.
    let message = load_err("config.toml", "[p2p]\nnode.0=127.0.0.1:30300\n");
    assert!(message.contains("TOML parse error"), "{message}");
    // A missing file is an I/O error naming it.
    let missing = dir.path().join("absent.ini");
    match Config::load(&missing) {
        Err(ConfigError::Io { path, .. }) => assert_eq!(path, missing.display().to_string()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn toml_round_trip_through_a_file() {
    let mut config = Config::default();
    config.network.listen = addrs(&["/ip6/::1/tcp/30300"]);
    config.network.peers = addrs(&[
        "127.0.0.1:30301",
        "/dns4/peer.example/tcp/30302/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
    ]);
    config.access.deny = vec![node_id()];
    config.access.allow = vec![node_id(), node_id()];
    config.connection.redial_max_ms = 60_000;
    config.unicast.modules = vec![1, 7, 1000];
    config.flood.topics = vec!["blocks".into(), "交易".into()];
    config.status.max_payload = 4096;
    config.certificate.key = "/etc/bcos/node.key".into();
    config.certificate.cert = "certs/node.crt".into();
    let dir = dir_with(&[("config.toml", &config.to_toml())]);
    let (back, unknown) = Config::load(dir.path().join("config.toml")).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    // Relative certificate paths become relative to the file; absolute ones stay.
    config.certificate.resolve_relative_to(dir.path());
    assert_eq!(back.certificate.key, PathBuf::from("/etc/bcos/node.key"));
    assert_eq!(back, config);
}

#[test]
fn bad_toml_values_fail_validation_with_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[connection]\nredial_min_ms = 5000\nredial_max_ms = 1000\n",
            "[connection] redial_max_ms: 1000 is below redial_min_ms (5000)",
        ),
        (
            "[connection]\nredial_min_ms = 0\n",
            "[connection] redial_min_ms: 0 is not within",
        ),
        (
            "[connection]\nping_max_failures = 0\n",
            "[connection] ping_max_failures: 0 must be at least 1",
        ),
        (
            "[connection]\nping_interval_ms = 0\n",
            "[connection] ping_interval_ms: 0",
        ),
        (
            "[connection]\nping_timeout_ms = 0\n",
            "[connection] ping_timeout_ms: 0",
        ),
        (
            "[connection]\nmax_established = 0\n",
            "[connection] max_established: 0",
        ),
        ("[flood]\nttl = 0\n", "[flood] ttl: 0 must be 1 to 255"),
        (
            "[flood]\ntopics = [\"\"]\n",
            "[flood] topics: ``: invalid topic",
        ),
        ("[unicast]\nmodules = []\n", "[unicast] modules: is empty"),
        (
            "[unicast]\nmax_message_size = 512\n",
            "[unicast] max_message_size: 512 is not within",
        ),
        (
            "[unicast]\nmax_message_size = 2147483648\n",
            "[unicast] max_message_size: 2147483648 is not within",
        ),
        (
            "[status]\nmax_payload = 67108864\n",
            "[status] max_payload: 67108864 is above unicast.max_message_size (33554432)",
        ),
        (
            "[status]\nannounce_interval_ms = 0\n",
            "[status] announce_interval_ms: 0",
        ),
        (
            "[network]\nlisten = [\"node.example:30300\"]\n",
            "[network] listen: `/dns/node.example/tcp/30300` cannot be listened on",
        ),
        (
            "[network]\npeers = [\"/ip4/1.2.3.4/udp/1\"]\n",
            "[network] peers: `/ip4/1.2.3.4/udp/1` cannot be dialled",
        ),
        ("[certificate]\nkey = \"\"\n", "[certificate] key: is empty"),
        ("[flood]\nttl = 256\n", "ttl"),
    ];
    expect_errors("config.toml", cases);
    // Every bad key is reported at once.
    let message = load_err(
        "config.toml",
        "[flood]\nttl = 0\n[unicast]\nmodules = []\n[connection]\nping_max_failures = 0\n",
    );
    assert_eq!(message.matches("; [").count(), 2, "{message}");
}

#[test]
fn unknown_toml_keys_warn() {
    let dir = dir_with(&[(
        "config.toml",
        "[network]\nlisen = 1\n[flod]\nttl = 3\n[status]\nmax_paylod = 1\n",
    )]);
    let (_, mut unknown) = Config::load(dir.path().join("config.toml")).unwrap();
    unknown.sort();
    assert_eq!(unknown, ["flod", "network.lisen", "status.max_paylod"]);
}
