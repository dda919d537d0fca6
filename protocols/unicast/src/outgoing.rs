//! What one side of a connection has to send on one unicast stream, and in which order: a
//! queue per module (messages of a module keep their order), modules of a priority class taken
//! in turn a chunk at a time, a higher class first, a lower one still getting its minimum share,
//! and the node's bandwidth limits (see SPEC.md, "Traffic").

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bcos_p2p_core::bandwidth::{ConnectionLimits, Limits};
use bytes::Bytes;
use futures::FutureExt as _;
use futures_timer::Delay;

use crate::{
    codec::{FLAG_ZSTD, KIND_ERROR, KIND_ONEWAY, Version, Wire},
    compress::{self, OFFLOAD_BYTES, Zstd},
    counters::{Backlog, Counters, ModuleTraffic},
    traffic::{Priority, Traffic},
};

/// Messages in parts at once per stream direction, at most (a receiver refuses more).
pub const MAX_PARTIAL: usize = 4;
/// Total length of the messages in parts at once beyond the first, at most: a first one may be
/// as long as a message may be; others join it only while all of them stay within this.
pub const PARTIAL_BYTES: usize = 64 << 20;
/// Ids of 1.1 one-way messages: this bit set and a counter (requests' ids stay below it).
pub const ONEWAY_IDS: u64 = 1 << 63;

/// One message waiting, or being sent, on the stream.
#[derive(Debug)]
struct Message {
    kind: u8,
    id: u64,
    module: u16,
    data: Bytes,
    flags: u8,
    /// Payload bytes written so far (a message started is finished before it can be dropped).
    sent: usize,
    started: bool,
    /// Counted among the messages in parts.
    partial: bool,
    /// The payload's length as queued (the behaviour's backlog counts it so).
    queued_len: usize,
    /// Where compressing it stands.
    squeeze: Squeeze,
}

/// Where compressing a message stands.
#[derive(Debug)]
enum Squeeze {
    /// Not decided yet.
    Untried,
    /// Compressing on the compression threads (large payloads).
    Running(compress::Pending),
    /// Decided: `data` and `flags` are what goes.
    Done,
}

#[derive(Debug)]
struct Lane {
    queue: VecDeque<Message>,
    traffic: Arc<ModuleTraffic>,
}

/// The sending side of one unicast stream.
#[derive(Debug)]
pub(crate) struct Outgoing {
    chunk: usize,
    /// A waiting lower class gets this many bytes per byte of a higher class.
    share: f64,
    priorities: HashMap<u16, Priority>,
    limits: Arc<Limits>,
    /// The connection's own limits, shared by its stream pairs.
    connection: ConnectionLimits,
    counters: Arc<Counters>,
    lanes: HashMap<u16, Lane>,
    /// Modules with something to send, per class, in turn order.
    ready: [VecDeque<u16>; 3],
    /// Bytes a waiting lower class may send ahead of higher ones.
    credit: [f64; 3],
    partial: usize,
    partial_bytes: usize,
    queued: usize,
    queued_bytes: usize,
    /// Set while a module waits for a limit: wakes the stream when it may go (and when).
    wait: Option<(Delay, Instant)>,
    next_oneway: u64,
    version: Version,
    zstd: Zstd,
    /// The behaviour's count of one-way messages handed to this connection.
    backlog: Arc<Backlog>,
}

impl Outgoing {
    pub(crate) fn new(
        traffic: &Traffic,
        counters: Arc<Counters>,
        backlog: Arc<Backlog>,
        connection: ConnectionLimits,
    ) -> Self {
        let share = f64::from(traffic.min_share_percent.clamp(1, 50)) / 100.0;
        Outgoing {
            chunk: traffic.chunk_size.clamp(
                crate::traffic::MIN_CHUNK_SIZE,
                crate::traffic::MAX_CHUNK_SIZE,
            ),
            share: share / (1.0 - share),
            priorities: traffic.priorities.clone(),
            connection,
            limits: traffic.limits.clone(),
            counters,
            lanes: HashMap::new(),
            ready: Default::default(),
            credit: [0.0; 3],
            partial: 0,
            partial_bytes: 0,
            queued: 0,
            queued_bytes: 0,
            wait: None,
            next_oneway: 0,
            version: Version::V1_0,
            zstd: Zstd::new(traffic.compression.clone()),
            backlog,
        }
    }

    /// The stream now speaks `version` (a new stream: nothing of it is in parts).
    pub(crate) fn set_version(&mut self, version: Version) {
        self.version = version;
        self.partial = 0;
        self.partial_bytes = 0;
        for lane in self.lanes.values_mut() {
            for m in &mut lane.queue {
                m.sent = 0;
                m.started = false;
                m.partial = false;
            }
        }
    }

    /// Messages waiting or being sent.
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    /// Their payload bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.queued_bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues a message of `kind` (its `module` for requests and one-way messages; answers go
    /// in the lane of the module of the request they answer).
    pub(crate) fn push(&mut self, kind: u8, id: u64, module: u16, lane: u16, data: Bytes) {
        let id = if kind == KIND_ONEWAY {
            self.next_oneway = self.next_oneway.wrapping_add(1);
            ONEWAY_IDS | (self.next_oneway & !ONEWAY_IDS)
        } else {
            id
        };
        let class = self.priorities.get(&lane).copied().unwrap_or_default();
        let entry = self.lanes.entry(lane).or_insert_with(|| Lane {
            queue: VecDeque::new(),
            traffic: self.counters.module(lane),
        });
        if entry.queue.is_empty() {
            self.ready[class as usize].push_back(lane);
        }
        entry.traffic.queue(data.len(), true);
        self.queued += 1;
        self.queued_bytes = self.queued_bytes.saturating_add(data.len());
        entry.queue.push_back(Message {
            kind,
            id,
            module,
            queued_len: data.len(),
            data,
            flags: 0,
            sent: 0,
            started: false,
            partial: false,
            squeeze: Squeeze::Untried,
        });
    }

    /// Drops every message not started whose id is in `cancelled` (removing it from there).
    fn skip_cancelled(&mut self, lane: u16, cancelled: &mut HashSet<u64>) {
        let Some(l) = self.lanes.get_mut(&lane) else {
            return;
        };
        while let Some(m) = l.queue.front() {
            if m.started || m.kind != crate::codec::KIND_REQUEST || !cancelled.remove(&m.id) {
                break;
            }
            let m = l.queue.pop_front().expect("checked");
            l.traffic.queue(m.data.len(), false);
            self.queued -= 1;
            self.queued_bytes -= m.data.len();
        }
    }

    /// The order to try the classes in: a lower class whose credit covers a chunk first, then
    /// highest to lowest.
    fn class_order(&mut self) -> [usize; 3] {
        for c in 0..3 {
            if self.ready[c].is_empty() {
                self.credit[c] = 0.0;
            }
        }
        let mut order = [0, 1, 2];
        if let Some(c) = (1..3).rev().find(|c| self.credit[*c] >= self.chunk as f64) {
            order = match c {
                1 => [1, 0, 2],
                _ => [2, 0, 1],
            };
        }
        order
    }

    /// The next frame to write, if any may go now. `cancelled`: ids of requests ended before
    /// they were sent. Wakes `cx` when a limit that held everything back lets something go.
    pub(crate) fn next(
        &mut self,
        cancelled: &mut HashSet<u64>,
        cx: &mut Context<'_>,
    ) -> Option<Wire> {
        if self.queued == 0 {
            return None;
        }
        if let Some((delay, _)) = &mut self.wait
            && delay.poll_unpin(cx).is_ready()
        {
            self.wait = None;
        }
        let now = Instant::now();
        let mut shortest: Option<(Duration, u16)> = None;
        for class in self.class_order() {
            for _ in 0..self.ready[class].len() {
                let lane = self.ready[class].pop_front().expect("counted");
                self.skip_cancelled(lane, cancelled);
                let wait = self.limits.wait(lane, &self.connection, now);
                if !wait.is_zero() {
                    self.ready[class].push_back(lane);
                    if shortest.is_none_or(|(w, _)| wait < w) {
                        shortest = Some((wait, lane));
                    }
                    continue;
                }
                match self.piece(lane, now, cx) {
                    Piece::Empty => {
                        self.lanes.remove(&lane);
                    }
                    Piece::Blocked | Piece::Compressing => self.ready[class].push_back(lane),
                    Piece::Frame(wire, len, more) => {
                        if more {
                            self.ready[class].push_back(lane);
                        } else if self.lanes.get(&lane).is_some_and(|l| l.queue.is_empty()) {
                            self.lanes.remove(&lane);
                        }
                        self.account(class, len);
                        return Some(wire);
                    }
                }
            }
        }
        if let Some((wait, lane)) = shortest {
            let at = now + wait;
            if self.wait.as_ref().is_none_or(|(_, armed)| at < *armed) {
                self.limits.throttled().add(lane, wait);
                let mut delay = Delay::new(wait);
                if delay.poll_unpin(cx).is_ready() {
                    cx.waker().wake_by_ref();
                } else {
                    self.wait = Some((delay, at));
                }
            }
        }
        // Otherwise what waits is held by the bound on messages in parts (a message in parts
        // is always ready: it goes unless a limit holds it, which arms the delay above) or by a
        // compression, whose end wakes the stream.
        None
    }

    /// Credits lower classes waiting behind `class` for `len` bytes it sent, or spends the
    /// credit of `class` if it went ahead of a higher one.
    fn account(&mut self, class: usize, len: usize) {
        let higher_waiting = (0..class).any(|c| !self.ready[c].is_empty());
        if higher_waiting {
            self.credit[class] = (self.credit[class] - len as f64).max(0.0);
        }
        for c in class + 1..3 {
            if !self.ready[c].is_empty() {
                self.credit[c] =
                    (self.credit[c] + len as f64 * self.share).min(2.0 * self.chunk as f64);
            }
        }
    }

    /// The next part of the first message of `lane`; wakes `cx` when a compression it waits
    /// for ends.
    fn piece(&mut self, lane: u16, now: Instant, cx: &mut Context<'_>) -> Piece {
        let version = self.version;
        let urgent = self.priorities.get(&lane) == Some(&Priority::High);
        let Some(l) = self.lanes.get_mut(&lane) else {
            return Piece::Empty;
        };
        let Some(m) = l.queue.front_mut() else {
            return Piece::Empty;
        };
        let chunk = match version {
            Version::V1_0 => usize::MAX,
            Version::V1_1 => self.chunk,
        };
        if !m.started {
            if version == Version::V1_1 && m.kind != KIND_ERROR && m.flags == 0 {
                let raw = m.data.len();
                let mut compressed = None;
                if let Squeeze::Untried = m.squeeze {
                    m.squeeze = Squeeze::Done;
                    if raw < OFFLOAD_BYTES {
                        compressed = self.zstd.compress(lane, &m.data);
                    } else if let Some(job) = self.zstd.offload(lane, &m.data, urgent) {
                        m.squeeze = Squeeze::Running(job);
                    }
                }
                if let Squeeze::Running(job) = &mut m.squeeze {
                    // Other modules go meanwhile; this one keeps its order behind it.
                    let Poll::Ready(outcome) = job.poll_unpin(cx) else {
                        return Piece::Compressing;
                    };
                    m.squeeze = Squeeze::Done;
                    compressed = self.zstd.judge(lane, raw, outcome.ok().flatten());
                }
                if let Some(compressed) = compressed {
                    l.traffic.compressed(raw, compressed.len());
                    m.data = compressed;
                    m.flags = FLAG_ZSTD;
                    l.traffic.queue(raw - m.data.len(), false);
                    self.queued_bytes -= raw - m.data.len();
                }
            }
            let len = m.data.len();
            if len > chunk {
                if self.partial >= MAX_PARTIAL
                    || (self.partial > 0 && self.partial_bytes.saturating_add(len) > PARTIAL_BYTES)
                {
                    return Piece::Blocked;
                }
                self.partial += 1;
                self.partial_bytes += len;
                m.partial = true;
            }
        }
        let take = (m.data.len() - m.sent).min(chunk);
        let data = m.data.slice(m.sent..m.sent + take);
        let wire = if m.started {
            Wire::More { id: m.id, data }
        } else {
            Wire::Start {
                kind: m.kind,
                id: m.id,
                module: m.module,
                flags: m.flags,
                total: u32::try_from(m.data.len()).unwrap_or(u32::MAX),
                data,
            }
        };
        m.started = true;
        m.sent += take;
        self.limits.take(lane, &self.connection, take, now);
        if m.sent < m.data.len() {
            return Piece::Frame(wire, take, true);
        }
        let m = l.queue.pop_front().expect("front");
        l.traffic.queue(m.data.len(), false);
        l.traffic.sent(m.data.len());
        if m.kind == KIND_ONEWAY {
            self.backlog.done(m.queued_len);
        }
        if m.partial {
            self.partial -= 1;
            self.partial_bytes -= m.data.len();
        }
        self.queued -= 1;
        self.queued_bytes -= m.data.len();
        Piece::Frame(wire, take, !l.queue.is_empty())
    }

    /// Takes the messages not started yet, as they were queued, for the connection's other
    /// pair, and drops the rest ([`Outgoing::clear`]). The one-way messages taken stay in the
    /// backlog: they are still the connection's to send, and the pair that writes them counts
    /// them out.
    pub(crate) fn take_unstarted(&mut self) -> Vec<crate::codec::Frame> {
        use crate::codec::{Frame, KIND_REQUEST};
        let mut out = Vec::new();
        let zstd = &mut self.zstd;
        for lane in self.lanes.values_mut() {
            lane.queue.retain(|m| {
                if m.started {
                    return true;
                }
                // Compressed here but not started: the other pair gets the payload as it was
                // queued (it decides on compression for itself). Our own frame always inflates;
                // were it not to, the message stays and is dropped below as if started.
                let payload = if m.flags & FLAG_ZSTD != 0 {
                    match zstd.decompress(&m.data, m.queued_len) {
                        Ok(payload) => payload,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot hand over a compressed message");
                            return true;
                        }
                    }
                } else {
                    m.data.clone()
                };
                lane.traffic.queue(m.data.len(), false);
                out.push(match m.kind {
                    KIND_REQUEST => Frame::Request {
                        id: m.id,
                        module: m.module,
                        payload,
                    },
                    _ => Frame::Oneway {
                        module: m.module,
                        payload,
                    },
                });
                false
            });
        }
        self.clear();
        out
    }

    /// Drops everything queued (the stream is gone); returns the ids of the requests dropped.
    pub(crate) fn clear(&mut self) -> Vec<u64> {
        let mut ids = Vec::new();
        for (_, lane) in self.lanes.drain() {
            for m in lane.queue {
                lane.traffic.queue(m.data.len(), false);
                match m.kind {
                    crate::codec::KIND_REQUEST => ids.push(m.id),
                    KIND_ONEWAY => self.backlog.done(m.queued_len),
                    _ => {}
                }
            }
        }
        self.ready = Default::default();
        self.credit = [0.0; 3];
        self.partial = 0;
        self.partial_bytes = 0;
        self.queued = 0;
        self.queued_bytes = 0;
        self.wait = None;
        ids
    }
}

enum Piece {
    /// The lane has nothing.
    Empty,
    /// Its next message is in parts and the bound on messages in parts is reached.
    Blocked,
    /// Its next message is being compressed.
    Compressing,
    /// A frame of `len` payload bytes; whether the lane has more.
    Frame(Wire, usize, bool),
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Polls nothing: a helper for tests that need a context.
#[cfg(test)]
pub(crate) fn noop_cx<T>(f: impl FnOnce(&mut Context<'_>) -> T) -> T {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    f(&mut cx)
}

#[cfg(test)]
mod tests {
    use bcos_p2p_core::bandwidth::Rates;

    use super::*;
    use crate::{
        codec::{Frame, KIND_REQUEST, KIND_RESPONSE},
        compress::Pools,
        traffic::Compression,
    };

    fn outgoing(priorities: &[(u16, Priority)], limits: Arc<Limits>) -> Outgoing {
        let traffic = Traffic {
            priorities: priorities.iter().copied().collect(),
            limits,
            ..Traffic::default()
        };
        let bucket = traffic.limits.connection_bucket().map(Arc::new);
        let connection = ConnectionLimits { bucket, path: None };
        let mut o = Outgoing::new(&traffic, Arc::default(), Arc::default(), connection);
        o.set_version(Version::V1_1);
        o
    }

    fn drain(o: &mut Outgoing, max: usize) -> Vec<Wire> {
        let mut cancelled = HashSet::new();
        noop_cx(|cx| {
            let mut out = Vec::new();
            while out.len() < max {
                match o.next(&mut cancelled, cx) {
                    Some(w) => out.push(w),
                    None => break,
                }
            }
            out
        })
    }

    fn id_of(w: &Wire) -> u64 {
        match w {
            Wire::Start { id, .. } | Wire::More { id, .. } => *id,
        }
    }

    /// Random bytes (incompressible) so that compression leaves them alone.
    fn noise(n: usize, seed: u64) -> Bytes {
        let mut x = seed | 1;
        Bytes::from(
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<_>>(),
        )
    }

    /// The next frame, once there is one: waits (boundedly) for a compression running on the
    /// compression threads.
    fn first(o: &mut Outgoing) -> Wire {
        for _ in 0..500 {
            if let Some(w) = drain(o, 1).pop() {
                return w;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no frame within 5 s");
    }

    #[test]
    fn a_small_message_waits_behind_at_most_one_chunk_of_a_big_one() {
        let mut o = outgoing(&[], Limits::none());
        o.push(KIND_REQUEST, 1, 2, 2, noise(1 << 20, 1));
        // (Its compression is tried on the compression threads first, and does not pay.)
        assert!(matches!(first(&mut o), Wire::Start { id: 1, .. }));
        o.push(KIND_REQUEST, 2, 1, 1, noise(1000, 2));
        let next = drain(&mut o, 2);
        // Module 1 takes its turn after at most one more chunk of module 2.
        let ids: Vec<u64> = next.iter().map(id_of).collect();
        assert_eq!(ids, [1, 2]);
        let rest = drain(&mut o, 100);
        assert_eq!(rest.len(), 14);
        let total: usize = [&next[..], &rest[..]]
            .concat()
            .iter()
            .map(Wire::data_len)
            .sum();
        assert_eq!(total, (1 << 20) - 65536 + 1000);
    }

    #[test]
    fn higher_classes_go_first_and_the_lowest_still_gets_its_share() {
        let mut o = outgoing(&[(1, Priority::High), (3, Priority::Low)], Limits::none());
        for i in 0..200 {
            o.push(KIND_REQUEST, i, 3, 3, noise(65536, i));
            o.push(KIND_REQUEST, 1000 + i, 2, 2, noise(65536, 1000 + i));
            o.push(KIND_REQUEST, 2000 + i, 1, 1, noise(65536, 2000 + i));
        }
        let out = drain(&mut o, 100);
        let of = |lo: u64, hi: u64| out.iter().filter(|w| (lo..hi).contains(&id_of(w))).count();
        let (low, normal, high) = (of(0, 1000), of(1000, 2000), of(2000, 3000));
        assert!(high >= 80, "high {high} normal {normal} low {low}");
        assert!(
            normal >= 5 && low >= 5,
            "high {high} normal {normal} low {low}"
        );
        let rest = drain(&mut o, 1000);
        assert_eq!(out.len() + rest.len(), 600);
    }

    #[test]
    fn modules_of_a_class_take_turns_and_keep_their_order() {
        let mut o = outgoing(&[], Limits::none());
        for i in 0..3 {
            o.push(KIND_REQUEST, 10 + i, 5, 5, noise(150_000, i));
            o.push(KIND_REQUEST, 20 + i, 6, 6, noise(100, i));
        }
        let out = drain(&mut o, 100);
        let starts: Vec<u64> = out
            .iter()
            .filter(|w| matches!(w, Wire::Start { .. }))
            .map(id_of)
            .collect();
        let five: Vec<_> = starts.iter().filter(|i| **i < 20).collect();
        let six: Vec<_> = starts.iter().filter(|i| **i >= 20).collect();
        assert_eq!(five, [&10, &11, &12]);
        assert_eq!(six, [&20, &21, &22]);
        // Module 6's small messages go one per turn, between the chunks of module 5's first.
        let pos = |id| out.iter().position(|w| id_of(w) == id).unwrap();
        let last_of_10 = out.iter().rposition(|w| id_of(w) == 10).unwrap();
        assert!(pos(21) < last_of_10, "{starts:?}");
    }

    #[test]
    fn at_most_max_partial_messages_are_in_parts() {
        let mut o = outgoing(&[], Limits::none());
        for m in 0..8u16 {
            o.push(KIND_REQUEST, u64::from(m), m, m, noise(200_000, m.into()));
        }
        let out = drain(&mut o, 8);
        let started: HashSet<u64> = out.iter().map(id_of).collect();
        assert_eq!(started.len(), MAX_PARTIAL);
        let all = drain(&mut o, 1000);
        assert_eq!(out.len() + all.len(), 8 * 4);
    }

    #[test]
    fn limited_modules_wait_and_exempt_ones_do_not() {
        let limits = Limits::new(
            Rates {
                total: 100_000,
                exempt: [1].into(),
                ..Rates::default()
            },
            65536,
        );
        let mut o = outgoing(&[], limits.clone());
        o.push(KIND_REQUEST, 1, 2, 2, noise(200_000, 1));
        let out = drain(&mut o, 10);
        // The bucket (a chunk's worth) lets two chunks go, the second into debt.
        assert_eq!(out.len(), 2, "then the bucket is in debt");
        o.push(KIND_RESPONSE, 7, 0, 1, noise(500, 2));
        let out = drain(&mut o, 10);
        assert_eq!(out.len(), 1);
        assert_eq!(id_of(&out[0]), 7);
        assert!(limits.throttled().total() > Duration::ZERO);
    }

    /// The rate the path takes holds the modules it covers the way a limit does; exempt ones
    /// pass, and with no rate set nothing waits.
    #[test]
    fn the_path_rate_holds_what_it_covers_and_exempt_modules_pass() {
        let limits = Limits::new(
            Rates {
                exempt: [1].into(),
                ..Rates::default()
            },
            65536,
        );
        let mut o = outgoing(&[], limits);
        let path = Arc::new(bcos_p2p_core::bandwidth::PathPace::default());
        o.connection.path = Some(path.clone());
        o.push(KIND_REQUEST, 1, 2, 2, noise(200_000, 1));
        assert_eq!(drain(&mut o, 10).len(), 4, "no rate: every chunk goes");
        path.set_rate(Some(100_000.0));
        o.push(KIND_REQUEST, 2, 2, 2, noise(200_000, 2));
        // Paced from no credit: one chunk into debt, then the rest waits.
        assert_eq!(drain(&mut o, 10).len(), 1);
        o.push(KIND_RESPONSE, 7, 0, 1, noise(500, 3));
        let out = drain(&mut o, 10);
        assert_eq!(out.len(), 1, "the exempt module goes");
        assert_eq!(id_of(&out[0]), 7);
        path.set_rate(None);
        assert_eq!(
            drain(&mut o, 10).len(),
            3,
            "the rest, once the rate is gone"
        );
    }

    /// What the urgent pair hands the main pair stays in the connection's backlog until the
    /// main pair writes it; a message dropped half-sent is counted out.
    #[test]
    fn messages_taken_for_the_other_pair_stay_in_the_backlog() {
        let traffic = Traffic::default();
        let backlog = Arc::new(Backlog::default());
        let pair = || {
            let mut o = Outgoing::new(
                &traffic,
                Arc::default(),
                backlog.clone(),
                ConnectionLimits::default(),
            );
            o.set_version(Version::V1_1);
            o
        };
        let (mut urgent, mut main) = (pair(), pair());
        for (module, size) in [(1, 200_000), (2, 100), (2, 50)] {
            backlog.add(size);
            urgent.push(KIND_ONEWAY, 0, module, module, noise(size, size as u64));
        }
        let half = drain(&mut urgent, 1);
        assert!(matches!(half[0], Wire::Start { module: 1, .. }));
        let taken = urgent.take_unstarted();
        assert_eq!(taken.len(), 2);
        assert_eq!(backlog.get(), (2, 150));
        for frame in taken {
            let Frame::Oneway { module, payload } = frame else {
                panic!("{frame:?}");
            };
            main.push(KIND_ONEWAY, 0, module, module, payload);
        }
        assert_eq!(drain(&mut main, 10).len(), 2);
        assert_eq!(backlog.get(), (0, 0));
    }

    /// A request compressed and then held by the bound on messages in parts is handed to
    /// the other pair whole, as it was queued, instead of being dropped unanswered.
    #[test]
    fn compressed_messages_not_started_are_handed_over_as_queued() {
        let mut urgent = outgoing(&[], Limits::none());
        // Half noise, half text: compresses to about half, still more than one chunk.
        let payload = |seed: u64| {
            let mut data = noise(100 * 1024, seed).to_vec();
            data.extend(b"block ".repeat(100 * 1024 / 6));
            Bytes::from(data)
        };
        for module in 1..=MAX_PARTIAL as u16 + 1 {
            urgent.push(
                KIND_REQUEST,
                u64::from(module),
                module,
                module,
                payload(module.into()),
            );
        }
        let out = drain(&mut urgent, MAX_PARTIAL + 1);
        let started: HashSet<u64> = out.iter().map(id_of).collect();
        assert_eq!(
            started.len(),
            MAX_PARTIAL,
            "the bound holds the last one back"
        );
        let last = MAX_PARTIAL as u64 + 1;
        assert!(!started.contains(&last));
        let taken = urgent.take_unstarted();
        assert_eq!(taken.len(), 1, "{taken:?}");
        let Frame::Request {
            id,
            module,
            payload: p,
        } = &taken[0]
        else {
            panic!("{:?}", taken[0]);
        };
        assert_eq!((*id, u64::from(*module)), (last, last));
        assert_eq!(p, &payload(last));
    }

    #[test]
    fn compressible_messages_go_compressed_on_1_1_and_whole_on_1_0() {
        let mut o = outgoing(&[], Limits::none());
        let text = Bytes::from(b"block block block block ".repeat(10_000));
        o.push(KIND_ONEWAY, 0, 4, 4, text.clone());
        let out = drain(&mut o, 10);
        assert_eq!(out.len(), 1);
        match &out[0] {
            Wire::Start {
                flags, total, id, ..
            } => {
                assert_eq!(*flags, FLAG_ZSTD);
                assert!((*total as usize) < text.len() / 10);
                assert!(id & ONEWAY_IDS != 0);
            }
            other => panic!("{other:?}"),
        }
        let mut old = outgoing(&[], Limits::none());
        old.set_version(Version::V1_0);
        old.push(KIND_ONEWAY, 0, 4, 4, text.clone());
        let out = drain(&mut old, 10);
        assert!(matches!(&out[0], Wire::Start { flags: 0, data, .. } if data.len() == text.len()));
    }

    /// A large message is compressed off the connection's task: another module's message
    /// queued after it goes first instead of waiting for the compression, and the large one
    /// follows compressed once its compression ends.
    #[test]
    fn large_messages_compress_while_other_modules_go() {
        // Compression threads of the test's own, one held busy until the small message went:
        // how fast the block compresses does not decide what the test sees.
        let pools: &'static Pools = Box::leak(Box::new(Pools::new(1, 1)));
        let (hold, _held) = pools.pool(false).hold();
        let mut o = outgoing(&[], Limits::none());
        o.zstd = Zstd::with_pools(Compression::default(), pools);
        let block = Bytes::from(br#"{"tx":"0xabc","from":"0x1","to":"0x2"},"#.repeat(200_000));
        assert!(block.len() >= OFFLOAD_BYTES);
        o.push(KIND_ONEWAY, 0, 4, 4, block.clone());
        o.push(KIND_ONEWAY, 0, 5, 5, noise(100, 1));
        let small = drain(&mut o, 1);
        assert!(
            matches!(&small[..], [Wire::Start { module: 5, .. }]),
            "the small message goes first: {small:?}"
        );
        drop(hold);
        match first(&mut o) {
            Wire::Start {
                module: 4,
                flags,
                total,
                ..
            } => {
                assert_eq!(flags, FLAG_ZSTD);
                assert!((total as usize) < block.len() / 10);
            }
            other => panic!("the block, compressed: {other:?}"),
        }
    }
}
