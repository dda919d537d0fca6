//! Topic chat between terminals, on certificates made by `bcos-p2p gen-certs`.
//!
//! ```text
//! cargo run --release -- gen-certs --out /tmp/chat --nodes 3
//! cargo run --example chat -- /tmp/chat/node0/config.toml      # terminal 1
//! cargo run --example chat -- /tmp/chat/node1/config.toml      # terminal 2
//! ```
//! Lines you type are multicast on topic `chat` (a second argument picks another topic) to
//! every node that runs this example on the same topic, however they are connected.

use bcos_p2p::{
    ca_tls,
    config::Config,
    flood,
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: chat CONFIG.toml [TOPIC] (make configs with `bcos-p2p gen-certs`)")?;
    let topic = args.next().unwrap_or_else(|| "chat".to_string());
    let (config, warnings) = Config::load(&path)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let c = &config.certificate;
    let (key, tls) = ca_tls::Config::load(&c.key, &c.cert, &c.ca)?;
    let mut node = Node::start(key, tls, config).await?;
    let mut events = node.events().expect("first call");
    node.subscribe(&topic).await?;
    println!(
        "I am {}…, on topic `{topic}`; type lines to send, Ctrl-D to leave",
        node.node_id().short()
    );
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(line) if !line.trim().is_empty() => {
                    if let Err(e) = node.multicast(&topic, Bytes::from(line)).await {
                        eprintln!("not sent: {e}");
                    }
                }
                Some(_) => {}
                None => break,
            },
            event = events.next() => match event {
                Some(NodeEvent::Flood(flood::Event::Message { origin, payload, .. })) => {
                    println!("{}…: {}", origin.short(), String::from_utf8_lossy(&payload));
                }
                Some(NodeEvent::Connected { node, .. }) => println!("* {}… joined", node.short()),
                Some(NodeEvent::Disconnected { node, .. }) => println!("* {}… left", node.short()),
                Some(_) => {}
                None => break,
            },
        }
    }
    node.shutdown().await?;
    Ok(())
}
