//! The `bcos-p2p` command: certificates, NodeIds, running a node, and a local demo network.
//! It only parses arguments, calls the library and prints (see `cli/`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
