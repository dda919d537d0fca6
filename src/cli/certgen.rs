//! `gen-certs`: a chain CA and N nodes on disk, wired as a localhost full mesh.
//!
//! Layout (the CLI contract): `DIR/ca.crt`, `DIR/ca.key`, and for each node `DIR/node{i}/` with
//! `node.key` (PKCS#8), `node.crt`, `ca.crt`, `node.nodeid` (the NodeId hex, as FISCO BCOS
//! writes it) and `config.toml` (listen on `127.0.0.1:(base_port+i)`, every other node a peer).
//!
//! SM2 nodes (国密) also get FISCO BCOS 3.x's names (`build_chain.sh -s`): `sm_ca.crt`,
//! `sm_ssl.key`, `sm_ssl.crt` (issued by the CA directly), the encryption pair `sm_enssl.key`,
//! `sm_enssl.crt` (a second SM2 key; keyAgreement, keyEncipherment, dataEncipherment) and
//! `sm_ssl.nodeid`; their `config.toml` names the FISCO files. The contract's names are written
//! beside them with the same contents, so tools that read `node.nodeid` or `node.key` work for
//! every key type.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    ca_tls::pki::{CertificateAuthority, Period, chain_pem},
    config::{Certificates, Config, Network, PeerAddr},
};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Number of nodes.
    pub nodes: usize,
    /// Key type of the CA and the nodes.
    pub key_type: KeyType,
    /// Validity in days.
    pub days: u32,
    /// Port of node 0; node i listens on `base_port + i`.
    pub base_port: u16,
}

/// One generated node.
#[derive(Debug, Clone)]
pub struct GeneratedNode {
    /// Its directory.
    pub dir: PathBuf,
    /// Its NodeId.
    pub node_id: NodeId,
    /// Its PeerId.
    pub peer_id: PeerId,
    /// Where its config listens.
    pub listen: Multiaddr,
    /// Its key, certificate and CA files.
    pub files: NodeFiles,
}

/// The files of one node: FISCO BCOS 3.x's names for SM2 nodes, bcos-p2p's otherwise.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The node key (`node.key`, `sm_ssl.key`).
    pub key: PathBuf,
    /// The node certificate (`node.crt`, `sm_ssl.crt`).
    pub cert: PathBuf,
    /// The CA certificate (`ca.crt`, `sm_ca.crt`).
    pub ca: PathBuf,
    /// The NodeId file (`node.nodeid`, `sm_ssl.nodeid`).
    pub node_id: PathBuf,
    /// The encryption key and certificate of an SM2 node (`sm_enssl.key`, `sm_enssl.crt`).
    pub enc: Option<(PathBuf, PathBuf)>,
}

impl NodeFiles {
    /// The file names in `dir` for nodes of `key_type`.
    pub fn in_dir(dir: &Path, key_type: KeyType) -> NodeFiles {
        if key_type == KeyType::Sm2 {
            NodeFiles {
                key: dir.join("sm_ssl.key"),
                cert: dir.join("sm_ssl.crt"),
                ca: dir.join("sm_ca.crt"),
                node_id: dir.join("sm_ssl.nodeid"),
                enc: Some((dir.join("sm_enssl.key"), dir.join("sm_enssl.crt"))),
            }
        } else {
            NodeFiles {
                key: dir.join("node.key"),
                cert: dir.join("node.crt"),
                ca: dir.join("ca.crt"),
                node_id: dir.join("node.nodeid"),
                enc: None,
            }
        }
    }

    /// The `[certificate]` of the node's `config.toml`: the file names, relative to it.
    fn certificates(&self) -> Certificates {
        let name = |p: &Path| PathBuf::from(p.file_name().expect("a file name"));
        Certificates {
            key: name(&self.key),
            cert: name(&self.cert),
            ca: name(&self.ca),
            enc_key: self.enc.as_ref().map(|(k, _)| name(k)),
            enc_cert: self.enc.as_ref().map(|(_, c)| name(c)),
            ..Certificates::default()
        }
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenCertsError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// Key or certificate generation failed.
    #[error(transparent)]
    Gen(#[from] bcos_p2p::ca_tls::pki::GenError),
    /// Key generation failed.
    #[error(transparent)]
    Key(#[from] bcos_p2p::KeyError),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Generates the CA and nodes, writing the layout above.
pub fn gen_certs(opts: &GenOptions) -> Result<Vec<GeneratedNode>, GenCertsError> {
    if opts.nodes == 0 || opts.nodes > 1000 {
        return Err(GenCertsError::Options(format!(
            "--nodes must be 1 to 1000, got {}",
            opts.nodes
        )));
    }
    if usize::from(opts.base_port) + opts.nodes - 1 > usize::from(u16::MAX) {
        return Err(GenCertsError::Options(format!(
            "ports {}..{} do not fit in 1-65535",
            opts.base_port,
            usize::from(opts.base_port) + opts.nodes - 1
        )));
    }
    if opts.days == 0 {
        return Err(GenCertsError::Options("--days must be at least 1".into()));
    }
    if opts.out.join("ca.crt").exists() {
        return Err(GenCertsError::Options(format!(
            "{} already holds a chain (ca.crt); choose another --out",
            opts.out.display()
        )));
    }
    let period = Period::days(opts.days);
    let ca = CertificateAuthority::new_root(opts.key_type, "CN=chain-ca,O=bcos-p2p", period)?;
    mkdir(&opts.out)?;
    let ca_pem = ca.cert_pem()?;
    write(&opts.out.join("ca.crt"), ca_pem.as_bytes(), false)?;
    write(
        &opts.out.join("ca.key"),
        ca.key().to_pkcs8_pem().as_bytes(),
        true,
    )?;

    let mut nodes = Vec::with_capacity(opts.nodes);
    let mut keys = Vec::with_capacity(opts.nodes);
    for i in 0..opts.nodes {
        let key = NodeKey::generate(opts.key_type)?;
        let subject = format!("CN=node{i},O=bcos-p2p");
        let cert = ca.issue_node(&key, &subject, period)?;
        let dir = opts.out.join(format!("node{i}"));
        mkdir(&dir)?;
        let files = NodeFiles::in_dir(&dir, opts.key_type);
        write(&files.key, key.to_pkcs8_pem().as_bytes(), true)?;
        write(
            &files.cert,
            chain_pem(&ca.node_chain(cert)?).as_bytes(),
            false,
        )?;
        write(&files.ca, ca_pem.as_bytes(), false)?;
        write(
            &files.node_id,
            format!("{}\n", key.node_id()).as_bytes(),
            false,
        )?;
        if files.enc.is_some() {
            // The contract's names too (CLI contract: every node directory has them).
            let contract = NodeFiles::in_dir(&dir, KeyType::Secp256k1);
            for (from, to) in [
                (&files.cert, &contract.cert),
                (&files.ca, &contract.ca),
                (&files.node_id, &contract.node_id),
            ] {
                copy(from, to, false)?;
            }
            copy(&files.key, &contract.key, true)?;
        }
        if let Some((enc_key_file, enc_cert_file)) = &files.enc {
            // The encryption pair: a key of its own, certified by the same CA.
            let enc_key = NodeKey::generate(KeyType::Sm2)?;
            let enc_cert = ca.issue_encryption(&enc_key, &subject, period)?;
            write(enc_key_file, enc_key.to_pkcs8_pem().as_bytes(), true)?;
            write(enc_cert_file, chain_pem(&[enc_cert]).as_bytes(), false)?;
        }
        let port = opts.base_port + u16::try_from(i).expect("checked above");
        let listen = Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::LOCALHOST))
            .with(Protocol::Tcp(port));
        nodes.push(GeneratedNode {
            dir,
            node_id: key.node_id().clone(),
            peer_id: key.peer_id(),
            listen,
            files,
        });
        keys.push(key);
    }
    for (i, node) in nodes.iter().enumerate() {
        let peers = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| PeerAddr(n.listen.clone().with(Protocol::P2p(n.peer_id))))
            .collect();
        let config = Config {
            network: Network {
                listen: vec![PeerAddr(node.listen.clone())],
                peers,
                ..Network::default()
            },
            certificate: node.files.certificates(),
            ..Config::default()
        };
        let text = format!(
            "# bcos-p2p node {i}: NodeId {}\n# made by `bcos-p2p gen-certs`; paths are relative to this file\n{}",
            node.node_id,
            config.to_toml()
        );
        write(&node.dir.join("config.toml"), text.as_bytes(), false)?;
    }
    Ok(nodes)
}

fn mkdir(dir: &Path) -> Result<(), GenCertsError> {
    fs::create_dir_all(dir).map_err(|source| GenCertsError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Writes a new file; secrets are created readable by the owner only (never world-readable,
/// not even briefly).
/// Writes `to` with the contents of `from`, written just before (`secret`: owner-only).
fn copy(from: &Path, to: &Path, secret: bool) -> Result<(), GenCertsError> {
    let data = fs::read(from).map_err(|source| GenCertsError::Io {
        path: from.display().to_string(),
        source,
    })?;
    write(to, &data, secret)
}

fn write(path: &Path, data: &[u8], secret: bool) -> Result<(), GenCertsError> {
    use std::io::Write as _;
    let io = |source| GenCertsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(io)
}
