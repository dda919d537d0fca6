//! Shortest paths through the network, asked by one behaviour and answered by the one that
//! holds the link-state view: [`Paths`].
//!
//! The route behaviour needs a path of relays to a node it is not connected to; the flood
//! behaviour holds the signed link-state records the path is computed from. Behaviours cannot
//! call each other, so the route behaviour leaves questions here and flood answers them in its
//! next poll (each side is woken when the other leaves something).

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Waker},
};

use libp2p_identity::PeerId;

use crate::NodeId;

/// Whom a path is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A node by NodeId.
    Node(NodeId),
    /// A node by PeerId (when its NodeId is not known to the asker: P-256 and RSA PeerIds
    /// are key hashes).
    Peer(PeerId),
}

/// A question: a shortest path to `to`, through none of `avoid` if there is one.
#[derive(Debug, Clone)]
pub struct PathAsk {
    /// Names the answer.
    pub id: u64,
    /// The destination.
    pub to: Target,
    /// Relays to keep out of the path if another path exists.
    pub avoid: Vec<NodeId>,
}

/// An answer: the nodes after this one, the destination last; `None` when it is unreachable.
#[derive(Debug, Clone)]
pub struct PathAnswer {
    /// The question's id.
    pub id: u64,
    /// The path, or `None`.
    pub path: Option<Vec<NodeId>>,
}

/// Most questions waiting: more are answered `None` at once (the asker bounds its own too).
const MAX_ASKS: usize = 4096;

#[derive(Default)]
struct Inner {
    next: u64,
    asks: VecDeque<PathAsk>,
    answers: VecDeque<PathAnswer>,
    asker: Option<Waker>,
    answerer: Option<Waker>,
    /// Whether a behaviour answers (flood took its questions at least once).
    answered: bool,
}

/// The shared questions and answers (see the module documentation). Clones share them.
#[derive(Clone, Default)]
pub struct Paths(Arc<Mutex<Inner>>);

impl fmt::Debug for Paths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paths").finish_non_exhaustive()
    }
}

impl Paths {
    /// No questions yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a path to `to` avoiding `avoid`; the answer carries the returned id.
    pub fn ask(&self, to: Target, avoid: Vec<NodeId>) -> u64 {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next = inner.next.wrapping_add(1);
        if inner.asks.len() >= MAX_ASKS {
            inner.answers.push_back(PathAnswer { id, path: None });
            if let Some(w) = inner.asker.take() {
                w.wake();
            }
        } else {
            inner.asks.push_back(PathAsk { id, to, avoid });
            if let Some(w) = inner.answerer.take() {
                w.wake();
            }
        }
        id
    }

    /// Whether a behaviour answers questions (a swarm without flood never does).
    pub fn answered(&self) -> bool {
        self.lock().answered
    }

    /// The answering behaviour takes the questions (and is woken when more come).
    pub fn take_asks(&self, cx: &mut Context<'_>) -> Vec<PathAsk> {
        let mut inner = self.lock();
        inner.answered = true;
        inner.answerer = Some(cx.waker().clone());
        inner.asks.drain(..).collect()
    }

    /// The answering behaviour answers.
    pub fn answer(&self, answer: PathAnswer) {
        let mut inner = self.lock();
        inner.answers.push_back(answer);
        if let Some(w) = inner.asker.take() {
            w.wake();
        }
    }

    /// The asker takes the answers (and is woken when more come).
    pub fn take_answers(&self, cx: &mut Context<'_>) -> Vec<PathAnswer> {
        let mut inner = self.lock();
        inner.asker = Some(cx.waker().clone());
        inner.answers.drain(..).collect()
    }
}
