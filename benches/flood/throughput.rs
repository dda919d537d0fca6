//! Signed throughput: a 16-node full mesh where every node broadcasts 1 KiB messages in turn as
//! fast as delivery keeps up (at most [`IN_FLIGHT`] messages not yet at every other node), ours
//! against gossipsub with signed messages and strict validation on the same transport. The rate
//! is messages delivered to all 15 receivers per second, over a fixed time after a warm-up.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{Command, NODES, PAYLOAD, Pubsub, mesh, start_nodes};

/// Messages published but not yet delivered everywhere, at most.
const IN_FLIGHT: usize = 64;
/// A message not at every receiver this long after it was sent stops holding a slot.
const GIVE_UP: Duration = Duration::from_secs(2);

/// Messages per second delivered to every other node, over `time` after `warmup`.
pub async fn signed_msgs_per_s<B: Pubsub>(
    warmup: Duration,
    time: Duration,
    make: impl Fn(usize, &bcos_p2p::NodeKey, &bcos_p2p::ca_tls::Config) -> B,
) -> f64 {
    let (nodes, mut rx) = start_nodes(&mesh(), &[true; NODES], warmup, make).await;

    // Receivers per message so far, and when it was sent; a message is done at NODES - 1.
    let mut receivers: HashMap<u64, (usize, Instant)> = HashMap::new();
    let mut next: u64 = 0;
    let mut done = 0u64;
    let start = Instant::now();
    let end = start + time;
    while Instant::now() < end {
        // A message that misses a receiver for good would hold its slot: give up on it.
        receivers.retain(|_, (_, sent)| sent.elapsed() < GIVE_UP);
        while receivers.len() < IN_FLIGHT {
            let mut data = vec![0u8; PAYLOAD];
            data[..8].copy_from_slice(&next.to_be_bytes());
            nodes[next as usize % NODES]
                .commands
                .send(Command::Publish(data.into()))
                .expect("node runs");
            receivers.insert(next, (0, Instant::now()));
            next += 1;
        }
        let wait = end.saturating_duration_since(Instant::now()).min(GIVE_UP);
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some((_, msg, _))) => {
                if let Some((count, _)) = receivers.get_mut(&msg) {
                    *count += 1;
                    if *count >= NODES - 1 {
                        receivers.remove(&msg);
                        done += 1;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for node in nodes {
        node.task.abort();
    }
    done as f64 / elapsed
}
