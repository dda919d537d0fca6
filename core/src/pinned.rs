//! A bounded map whose entries can be pinned: when it is full, an entry no one pins makes
//! room for a new one. What the NodeId book and the CA-TLS chain table keep per peer: entries
//! come from handshakes (an attacker can make many), and the connection manager pins those
//! of connected peers, which must never be forgotten. Pins are bounded by the connections a
//! node holds, so if every entry is pinned the map grows past its capacity by those alone.

use std::{collections::HashMap, hash::Hash};

/// See the module docs.
#[derive(Debug)]
pub struct PinnedMap<K, V> {
    entries: HashMap<K, (V, u32)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> PinnedMap<K, V> {
    /// An empty map of `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        PinnedMap {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Whether `key` has an entry.
    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `key`'s value (its pins stay); when full, an unpinned entry makes room.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.0 = value;
            return;
        }
        if self.entries.len() >= self.capacity {
            let victim = self
                .entries
                .iter()
                .find(|(_, (_, pins))| *pins == 0)
                .map(|(k, _)| k.clone());
            if let Some(v) = victim {
                self.entries.remove(&v);
            }
        }
        self.entries.insert(key, (value, 0));
    }

    /// Pins `key`'s entry (if any) until as many [`PinnedMap::unpin`]s.
    pub fn pin(&mut self, key: &K) {
        if let Some((_, pins)) = self.entries.get_mut(key) {
            *pins = pins.saturating_add(1);
        }
    }

    /// Takes back one pin of `key`'s entry.
    pub fn unpin(&mut self, key: &K) {
        if let Some((_, pins)) = self.entries.get_mut(key) {
            *pins = pins.saturating_sub(1);
        }
    }

    /// Keeps the pinned entries and those `keep` names; forgets the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, (_, pins)| *pins > 0 || keep(k));
    }
}
