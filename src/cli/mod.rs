//! Argument parsing and dispatch for the `bcos-p2p` binary.

mod certgen;
mod demo;
mod events;
mod reload;
mod run;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use bcos_p2p::{KeyType, NodeKey, config::DEFAULT_PORT};
use certgen::{GenOptions, gen_certs};
use clap::{Parser, Subcommand};

/// P2P network layer of a consortium blockchain (FISCO BCOS design) on rust-libp2p.
#[derive(Debug, Parser)]
#[command(name = "bcos-p2p", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a chain CA and N node directories (keys, certificates, config.toml) for a local mesh.
    GenCerts {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        #[arg(long, default_value = "secp256k1", help = key_type_help())]
        key_type: KeyType,
        /// Certificate validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Port of node 0; node i listens on 127.0.0.1:(base-port + i).
        #[arg(long, default_value_t = DEFAULT_PORT)]
        base_port: u16,
    },
    /// Print the NodeId of a node key (PEM: PKCS#8, SEC1 or PKCS#1).
    NodeId {
        /// The key file, e.g. node.key.
        keyfile: PathBuf,
    },
    /// Run a node.
    Run(Box<run::RunArgs>),
    /// Start a local network in this process and show what it does.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// A 国密 network: SM2 keys and CA, TLS 1.3 with TLS_SM4_GCM_SM3 (RFC 8998).
        #[arg(long)]
        sm: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::GenCerts {
            out,
            nodes,
            key_type,
            days,
            base_port,
        } => gen_certs_cmd(GenOptions {
            out,
            nodes,
            key_type,
            days,
            base_port,
        }),
        Command::NodeId { keyfile } => NodeKey::from_file(&keyfile)
            .with_context(|| format!("cannot use {}", keyfile.display()))
            .map(|k| println!("{}", k.node_id())),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run::run(*args))),
        Command::Demo { nodes, sm } => runtime().and_then(|rt| rt.block_on(demo::demo(nodes, sm))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--key-type`'s help, naming the key types of the table.
fn key_type_help() -> String {
    format!(
        "Key type of the CA and nodes: {}",
        KeyType::names(KeyType::ALL)
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Before the runtime's threads allocate: see bcos_p2p::malloc. Its outcome needs no report
    // (anything but `Applied` leaves glibc's or the operator's settings, which work too).
    bcos_p2p::malloc::tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn gen_certs_cmd(opts: GenOptions) -> anyhow::Result<()> {
    let nodes = gen_certs(&opts)?;
    println!(
        "made a {} CA in {} and {} node(s):",
        opts.key_type,
        opts.out.display(),
        nodes.len()
    );
    for n in &nodes {
        println!("  {}  {}  {}", n.dir.display(), n.listen, n.node_id);
    }
    if opts.key_type == KeyType::Sm2 {
        println!(
            "国密: each node has sm_ca.crt, sm_ssl.key/.crt (TLS 1.3 with TLS_SM4_GCM_SM3, SM2, SM3) \
             and sm_enssl.key/.crt (its encryption pair, checked at start)"
        );
    }
    println!(
        "run one with: bcos-p2p run --config {}",
        nodes[0].dir.join("config.toml").display()
    );
    Ok(())
}

/// Logs go to stderr (stdout is for events); RUST_LOG overrides the default level.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
