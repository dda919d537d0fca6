//! 国密 (SM2) nodes as operators run them: `gen-certs --key-type sm2` (FISCO BCOS 3.x's
//! `sm_*` set), `run` on those files, on FISCO 2.x `gm*` files made by the `openssl` CLI and
//! on both `config.ini` layouts, the encryption pair's start-up checks, and open mode refusing
//! an SM2 key.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;

use common::{
    require_openssl,
    run_json::{Node, free_ports, gen_certs, gen_certs_of},
    sh,
};

const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");

/// Every `run --json` line is an object with a string `event`, and NodeIds are 128 hex digits.
fn check(v: &Value) {
    assert!(v["event"].is_string(), "no event: {v}");
    for field in ["node_id", "from"] {
        if let Some(id) = v[field].as_str() {
            assert!(
                id.len() == 128 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "bad {field}: {v}"
            );
        }
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Node {
    Node::spawn(args, check)
}

fn read_id(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

/// The public key `openssl ec -text` prints for `key`, without the `04` prefix: how FISCO's
/// scripts make `sm_ssl.nodeid` / `gmnode.nodeid`.
fn openssl_node_id(key: &Path) -> String {
    let text = sh(
        key.parent().unwrap(),
        &format!(
            "openssl ec -in '{}' -text -noout 2>/dev/null",
            key.display()
        ),
    );
    let hex: String = text
        .lines()
        .skip_while(|l| !l.starts_with("pub:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .flat_map(|l| l.trim().split(':'))
        .collect();
    assert!(text.contains("SM2"), "not an SM2 key: {text}");
    hex.strip_prefix("04")
        .unwrap_or_else(|| panic!("no uncompressed point in {text}"))
        .to_string()
}

/// Longest a `run` that must refuse to start may take to exit.
const START_LIMIT: Duration = Duration::from_secs(30);

/// `run` with `args` must fail at start; returns its stderr. A node that starts instead is
/// killed after [`START_LIMIT`] and the test fails.
fn run_fails(args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .arg("run")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + START_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    match status {
        None => panic!("run {args:?} started (still running after {START_LIMIT:?}): {stderr}"),
        Some(status) => assert!(!status.success(), "run should fail for {args:?}: {stderr}"),
    }
    stderr
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

/// gen-certs writes FISCO 3.x's 国密 set per node; its NodeIds are what openssl reads from the
/// keys, and openssl accepts the certificates (SM2 with SM3) and their key usages.
#[test]
fn gen_certs_sm2_writes_the_fisco_3x_set() {
    require_openssl();
    let tmp = tempfile::tempdir().unwrap();
    gen_certs_of(tmp.path(), 2, 30300, "sm2");
    for top in ["ca.crt", "ca.key"] {
        assert!(tmp.path().join(top).is_file(), "{top}");
    }
    let mut ids = Vec::new();
    for i in 0..2 {
        let d = tmp.path().join(format!("node{i}"));
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ca.crt",
                "config.toml",
                "node.crt",
                "node.key",
                "node.nodeid",
                "sm_ca.crt",
                "sm_enssl.crt",
                "sm_enssl.key",
                "sm_ssl.crt",
                "sm_ssl.key",
                "sm_ssl.nodeid"
            ]
        );
        // The CLI contract's names hold the same as FISCO's.
        for (contract, fisco) in [
            ("ca.crt", "sm_ca.crt"),
            ("node.crt", "sm_ssl.crt"),
            ("node.key", "sm_ssl.key"),
            ("node.nodeid", "sm_ssl.nodeid"),
        ] {
            assert_eq!(
                std::fs::read(d.join(contract)).unwrap(),
                std::fs::read(d.join(fisco)).unwrap(),
                "{contract}"
            );
        }
        let id = read_id(&d.join("sm_ssl.nodeid"));
        assert_eq!(id.len(), 128, "{id}");
        assert_eq!(id, openssl_node_id(&d.join("sm_ssl.key")), "node{i}");
        // The encryption key is a key of its own.
        assert_ne!(id, openssl_node_id(&d.join("sm_enssl.key")));
        let out = Command::new(BIN)
            .arg("node-id")
            .arg(d.join("sm_ssl.key"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);
        // Signed by the CA directly, with SM2-with-SM3 under FISCO's distinguishing id.
        let verify = sh(
            &d,
            "openssl verify -vfyopt distid:1234567812345678 -CAfile sm_ca.crt sm_ssl.crt \
               sm_enssl.crt \
             && openssl x509 -in sm_enssl.crt -noout -ext keyUsage,extendedKeyUsage \
             && openssl x509 -in sm_ssl.crt -noout -text",
        );
        assert!(verify.contains("sm_ssl.crt: OK"), "{verify}");
        assert!(verify.contains("sm_enssl.crt: OK"), "{verify}");
        assert!(
            verify.contains("Key Encipherment, Data Encipherment, Key Agreement"),
            "{verify}"
        );
        assert!(!verify.contains("Extended Key Usage\n"), "{verify}");
        assert!(verify.contains("SM2-with-SM3"), "{verify}");
        let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
        for line in [
            "key = \"sm_ssl.key\"",
            "cert = \"sm_ssl.crt\"",
            "ca = \"sm_ca.crt\"",
            "enc_key = \"sm_enssl.key\"",
            "enc_cert = \"sm_enssl.crt\"",
        ] {
            assert!(config.contains(line), "{line} not in {config}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for secret in ["sm_ssl.key", "sm_enssl.key"] {
                let mode = std::fs::metadata(d.join(secret))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{secret}: {mode:o}");
            }
        }
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

/// Two nodes from an SM set connect, one by its config.toml (which names the encryption pair),
/// one by flags with the FISCO file names, and exchange a request.
#[test]
fn two_sm_nodes_connect_from_the_sm_set() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    gen_certs_of(tmp.path(), 2, port, "sm2");
    let (d0, d1) = (tmp.path().join("node0"), tmp.path().join("node1"));
    let (id0, id1) = (
        read_id(&d0.join("sm_ssl.nodeid")),
        read_id(&d1.join("sm_ssl.nodeid")),
    );
    let mut n0 = run(["--config".into(), d0.join("config.toml").into_os_string()]);
    let ready = n0.expect("ready", |v| v["event"] == "ready");
    assert_eq!(ready["node_id"], id0.as_str());
    let f = |name: &str| path(d1.join(name));
    let mut n1 = run([
        "--key",
        &f("sm_ssl.key"),
        "--cert",
        &f("sm_ssl.crt"),
        "--ca",
        &f("sm_ca.crt"),
        "--enc-key",
        &f("sm_enssl.key"),
        "--enc-cert",
        &f("sm_enssl.crt"),
        "--listen",
        &format!("127.0.0.1:{}", port + 1),
        "--peer",
        &format!("127.0.0.1:{port}"),
    ]);
    n1.expect("ready", |v| {
        v["event"] == "ready" && v["node_id"] == id1.as_str()
    });
    n1.expect_each("connected", &[&id0]);
    n0.expect_each("connected", &[&id1]);
    n1.send(&format!("request {id0} 国密"));
    let response = n1.expect("response", |v| v["event"] == "response");
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(response["data"], "echo:国密");
    n1.quit();
    n0.quit();
}

/// An SM node and a standard node refuse each other, each naming why.
#[test]
fn sm_and_standard_nodes_refuse_each_other() {
    let (sm, standard) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_ports(2);
    gen_certs_of(sm.path(), 1, port, "sm2");
    gen_certs(standard.path(), 1, port + 1);
    let mut s = run([
        "--config".into(),
        sm.path().join("node0/config.toml").into_os_string(),
    ]);
    s.expect("ready", |v| v["event"] == "ready");
    let mut t = run([
        "--config".into(),
        standard.path().join("node0/config.toml").into_os_string(),
        "--peer".into(),
        format!("127.0.0.1:{port}").into(),
    ]);
    let theirs = t.expect("refused", |v| v["event"] == "refused");
    assert_eq!(theirs["code"], "sm_unsupported", "{theirs}");
    let ours = s.expect("refused", |v| v["event"] == "refused");
    assert_eq!(ours["code"], "sm_required", "{ours}");
    t.quit();
    s.quit();
}

/// Each problem of an encryption pair stops the node at start with a message naming it.
#[test]
fn encryption_pair_problems_stop_the_node() {
    let (chain, other, standard) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    gen_certs_of(chain.path(), 2, 30300, "sm2");
    gen_certs_of(other.path(), 1, 30300, "sm2");
    gen_certs(standard.path(), 1, 30300);
    let p = |dir: &tempfile::TempDir, f: &str| path(dir.path().join(f));
    let signing = |dir: &tempfile::TempDir| {
        [
            "--key".to_string(),
            p(dir, "node0/sm_ssl.key"),
            "--cert".into(),
            p(dir, "node0/sm_ssl.crt"),
            "--ca".into(),
            p(dir, "node0/sm_ca.crt"),
        ]
    };
    let with = |base: [String; 6], key: String, cert: String| {
        let mut args = base.to_vec();
        args.extend(["--enc-key".into(), key, "--enc-cert".into(), cert]);
        args
    };
    let fails = |args: Vec<String>| run_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // Another chain's encryption pair: not issued by this chain's CA.
    let err = fails(with(
        signing(&chain),
        p(&other, "node0/sm_enssl.key"),
        p(&other, "node0/sm_enssl.crt"),
    ));
    assert!(
        err.contains("not issued by the chain CA") && err.contains("unknown issuer"),
        "{err}"
    );
    assert!(err.contains("enc_cert"), "{err}");
    // Node 0's encryption key with node 1's encryption certificate.
    let err = fails(with(
        signing(&chain),
        p(&chain, "node0/sm_enssl.key"),
        p(&chain, "node1/sm_enssl.crt"),
    ));
    assert!(
        err.contains("does not belong to the encryption key"),
        "{err}"
    );
    // A certificate for signing only (OpenSSL, from the same CA): not an encryption one.
    require_openssl();
    let d = chain.path().join("node0");
    sh(
        &d,
        "openssl req -new -key sm_enssl.key -sm3 -sigopt distid:1234567812345678 -subj /CN=s \
           -out s.csr \
         && printf 'basicConstraints=CA:FALSE\\nkeyUsage=nonRepudiation,digitalSignature\\n' > s.ext \
         && openssl x509 -req -in s.csr -CA ../ca.crt -CAkey ../ca.key -CAcreateserial -sm3 \
           -sigopt distid:1234567812345678 -vfyopt distid:1234567812345678 -days 1 \
           -extfile s.ext -out signing.crt 2>/dev/null",
    );
    let err = fails(with(
        signing(&chain),
        p(&chain, "node0/sm_enssl.key"),
        p(&chain, "node0/signing.crt"),
    ));
    assert!(
        err.contains("keyUsage (digitalSignature, nonRepudiation)")
            && err.contains("allows neither keyAgreement nor keyEncipherment"),
        "{err}"
    );
    // A standard node with an encryption pair.
    let standard_args = [
        "--key".to_string(),
        p(&standard, "node0/node.key"),
        "--cert".into(),
        p(&standard, "node0/node.crt"),
        "--ca".into(),
        p(&standard, "ca.crt"),
    ];
    let err = fails(with(
        standard_args,
        p(&chain, "node0/sm_enssl.key"),
        p(&chain, "node0/sm_enssl.crt"),
    ));
    assert!(
        err.contains("an encryption pair belongs to 国密 nodes") && err.contains("secp256k1"),
        "{err}"
    );
    // A missing file is named; half a pair is refused by flag and by file.
    let err = fails(with(
        signing(&chain),
        p(&chain, "node0/missing.key"),
        p(&chain, "node0/sm_enssl.crt"),
    ));
    assert!(err.contains("missing.key"), "{err}");
    let mut half = signing(&chain).to_vec();
    half.extend(["--enc-key".into(), p(&chain, "node0/sm_enssl.key")]);
    let err = fails(half);
    assert!(err.contains("--enc-cert"), "{err}");
    let toml = chain.path().join("node0/half.toml");
    std::fs::write(
        &toml,
        "[certificate]\nkey = \"sm_ssl.key\"\ncert = \"sm_ssl.crt\"\nca = \"sm_ca.crt\"\n\
         enc_key = \"sm_enssl.key\"\n",
    )
    .unwrap();
    let err = fails(vec!["--config".into(), path(toml)]);
    assert!(
        err.contains("[certificate] enc_key: is given without enc_cert"),
        "{err}"
    );
}

/// Open mode has no SM2 key type: an SM2 key is refused with the library's message.
#[test]
fn open_mode_refuses_an_sm2_key() {
    let tmp = tempfile::tempdir().unwrap();
    gen_certs_of(tmp.path(), 1, 30300, "sm2");
    let key_file = tmp.path().join("node0/sm_ssl.key");
    let err = run_fails(&["--open", "--key", &path(key_file.clone())]);
    let key = bcos_p2p::NodeKey::from_file(&key_file).unwrap();
    let expected = bcos_p2p::open::sm_refused(&key).to_string();
    assert!(
        matches!(
            bcos_p2p::open::sm_refused(&key),
            bcos_p2p::open::ConfigError::NoLibp2pKey(_)
        ),
        "{expected}"
    );
    assert!(err.contains(&expected), "{expected:?} not in {err:?}");
}

/// A FISCO 3.x node directory (`config.ini` with `sm_ssl=true`, `conf/sm_*`) runs unchanged and
/// connects to a node started from gen-certs' TOML.
#[test]
fn fisco_3x_sm_config_ini_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    gen_certs_of(tmp.path(), 2, port, "sm2");
    let (d0, d1) = (tmp.path().join("node0"), tmp.path().join("node1"));
    let fisco = tmp.path().join("fisco-node1");
    std::fs::create_dir_all(fisco.join("conf")).unwrap();
    for f in [
        "sm_ca.crt",
        "sm_ssl.key",
        "sm_ssl.crt",
        "sm_enssl.key",
        "sm_enssl.crt",
    ] {
        std::fs::copy(d1.join(f), fisco.join("conf").join(f)).unwrap();
    }
    std::fs::write(
        fisco.join("nodes.json"),
        format!(r#"{{"nodes":["127.0.0.1:{port}"]}}"#),
    )
    .unwrap();
    std::fs::write(
        fisco.join("config.ini"),
        format!(
            "[p2p]\n    listen_ip=127.0.0.1\n    listen_port={}\n    ; ssl or sm ssl\n    \
             sm_ssl=true\n    nodes_path=./\n    nodes_file=nodes.json\n\
             [cert]\n    ca_path=./conf\n    sm_ca_cert=sm_ca.crt\n    sm_node_key=sm_ssl.key\n    \
             sm_node_cert=sm_ssl.crt\n    sm_ennode_key=sm_enssl.key\n    \
             sm_ennode_cert=sm_enssl.crt\n[chain]\n    sm_crypto=true\n",
            port + 1
        ),
    )
    .unwrap();
    let (id0, id1) = (
        read_id(&d0.join("sm_ssl.nodeid")),
        read_id(&d1.join("sm_ssl.nodeid")),
    );
    let mut n0 = run(["--config".into(), d0.join("config.toml").into_os_string()]);
    n0.expect("ready", |v| v["event"] == "ready");
    let mut n1 = run(["--config".into(), fisco.join("config.ini").into_os_string()]);
    n1.expect("ready", |v| {
        v["event"] == "ready" && v["node_id"] == id1.as_str()
    });
    n1.expect_each("connected", &[&id0]);
    n0.expect_each("connected", &[&id1]);
    n1.quit();
    n0.quit();
}

/// FISCO 2.x's 国密 files as its chain builders make them with OpenSSL: a CA, an agency, and
/// per node `gmnode.key`, `gmnode.crt` (node + agency + CA), `gmca.crt` and the encryption pair
/// `gmennode.key`, `gmennode.crt` (`v3enc_req`), in `conf/` beside a `config.ini` with
/// `[chain] sm_crypto=true`. Two such nodes connect; NodeIds are openssl's; a signing
/// certificate given as `en_cert` stops the node.
#[test]
fn fisco_2x_gm_files_made_by_openssl_run_from_config_ini() {
    require_openssl();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = free_ports(2);
    sh(
        d,
        r#"
        ID=distid:1234567812345678
        key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out "$1"; }
        csr() { openssl req -new -key "$1" -sm3 -sigopt $ID -subj "$2" -out "$3"; }
        sign() { openssl x509 -req -in "$1" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -sm3 \
                   -sigopt $ID -vfyopt $ID -days 365 -extfile "$3" -out "$4" 2>/dev/null; }
        key gmca.key
        openssl req -new -x509 -key gmca.key -sm3 -sigopt $ID -subj /CN=chain/O=fisco-bcos \
          -days 365 -addext basicConstraints=critical,CA:TRUE \
          -addext keyUsage=critical,keyCertSign,cRLSign -out gmca.crt
        printf 'basicConstraints=CA:TRUE\n' > v4_req.ext
        printf 'basicConstraints=CA:FALSE\nkeyUsage=nonRepudiation,digitalSignature\n' > v3_req.ext
        printf 'basicConstraints=CA:FALSE\nkeyUsage=keyAgreement,keyEncipherment,dataEncipherment\n' \
          > v3enc_req.ext
        key gmagency.key
        csr gmagency.key /CN=agency/O=fisco-bcos gmagency.csr
        sign gmagency.csr gmca v4_req.ext gmagency.crt
        for n in node0 node1; do
          mkdir -p $n/conf
          key $n/conf/gmnode.key
          csr $n/conf/gmnode.key /CN=$n/O=fisco-bcos $n/gmnode.csr
          sign $n/gmnode.csr gmagency v3_req.ext $n/gmnode.leaf
          cat $n/gmnode.leaf gmagency.crt gmca.crt > $n/conf/gmnode.crt
          key $n/conf/gmennode.key
          csr $n/conf/gmennode.key /CN=$n/O=fisco-bcos $n/gmennode.csr
          sign $n/gmennode.csr gmagency v3enc_req.ext $n/conf/gmennode.crt
          cp gmca.crt $n/conf/gmca.crt
        done
        "#,
    );
    let ini = |i: u16, extra: &str| {
        format!(
            "[p2p]\n    listen_ip=127.0.0.1\n    listen_port={}\n    node.0=127.0.0.1:{port}\n    \
             node.1=127.0.0.1:{}\n\
             [network_security]\n    data_path=conf/\n    key=gmnode.key\n    cert=gmnode.crt\n    \
             ca_cert=gmca.crt\n{extra}\
             [chain]\n    id=1\n    sm_crypto=true\n    sm_crypto_channel=false\n",
            port + i,
            port + 1
        )
    };
    let ids: Vec<String> = (0..2)
        .map(|i| openssl_node_id(&d.join(format!("node{i}/conf/gmnode.key"))))
        .collect();
    for i in 0..2u16 {
        std::fs::write(d.join(format!("node{i}/config.ini")), ini(i, "")).unwrap();
    }
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| {
            run([
                "--config".into(),
                d.join(format!("node{i}/config.ini")).into_os_string(),
            ])
        })
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.expect("ready", |v| {
            v["event"] == "ready" && v["node_id"] == ids[i].as_str()
        });
    }
    nodes[0].expect_each("connected", &[&ids[1]]);
    nodes[1].expect_each("connected", &[&ids[0]]);
    for n in nodes {
        n.quit();
    }

    // The signing pair named as the encryption pair: its keyUsage is FISCO's v3_req.
    let bad = d.join("node0/bad.ini");
    std::fs::write(
        &bad,
        ini(0, "    en_key=gmnode.key\n    en_cert=gmnode.crt\n"),
    )
    .unwrap();
    let err = run_fails(&["--config", &path(bad)]);
    assert!(
        err.contains("gmnode.crt")
            && err.contains("allows neither keyAgreement nor keyEncipherment"),
        "{err}"
    );
}
