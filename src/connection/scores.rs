//! Peer scores and bans: what the protocols report as offences ([`Offence`]) lowers a node's
//! score, the score decays back toward neutral over time, and a score that falls to the
//! threshold bans the node for a while, longer at each repeat.
//!
//! A score starts at 0 (neutral) and only goes down: each offence takes its [`weight`] (too-old
//! copies at most two a second), and the score halves every [`Config::score_half_life`]. So what matters is the rate of offences:
//! a peer whose offences add up to [`Config::ban_threshold`] within about a half-life is banned,
//! while the rare late copy an honest relay sends (weight 1) fades long before it adds up.
//! The n-th ban lasts `ban_min × 2^(n-1)`, at most [`Config::ban_max`] (for configured peers at
//! most [`Config::ban_max_configured`], so they always come back soon). A ban resets the score;
//! the count of bans is forgotten once a node has been neutral for `ban_max` after its last.
//! The table keeps at most [`Config::max_scored`] nodes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{Config, config::MAX_DELAY};
use crate::{NodeId, Offence};

/// What an offence costs, in score points (the ban threshold is 100 by default).
pub fn weight(offence: Offence) -> f64 {
    match offence {
        // An honest node never sends these: a few in a short time ban.
        Offence::BadSignature | Offence::Malformed => 40.0,
        // Reported at most once a second while the peer stays over its budget.
        Offence::OverBudget => 20.0,
        Offence::Unsolicited => 10.0,
        // Honest relays may forward a copy late now and then.
        Offence::TooOld => 1.0,
    }
}

/// A score this close to neutral counts as neutral (the entry may be forgotten).
const NEUTRAL: f64 = 1.0;
/// Most too-old copies charged per node per second. An honest relay that fell behind a busy
/// origin can send many late copies in one burst (they cost this node only a window lookup);
/// a peer that keeps replaying still adds up to a ban in about a minute.
const TOO_OLD_PER_SECOND: u32 = 2;

/// A ban just decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ban {
    /// How long it lasts.
    pub(super) duration: Duration,
    /// When it ends.
    pub(super) until: Instant,
    /// Which ban of the node this is (1 for the first since it was last forgotten).
    pub(super) repeat: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The score at `at`: 0 or below.
    score: f64,
    at: Instant,
    /// Bans so far (since the entry was last forgotten).
    bans: u32,
    /// When the current or last ban ends.
    banned_until: Option<Instant>,
    /// Too-old copies charged in the second that started at `.0`.
    too_old: (Instant, u32),
}

impl Entry {
    fn decayed(&self, now: Instant, half_life: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let half_life = half_life.as_secs_f64().max(f64::MIN_POSITIVE);
        self.score * 0.5f64.powf(elapsed / half_life)
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|u| u > now)
    }

    /// Neutral, not banned, and its last ban (if any) ended `forget_after` ago.
    fn forgettable(&self, now: Instant, half_life: Duration, forget_after: Duration) -> bool {
        self.decayed(now, half_life) > -NEUTRAL
            && self
                .banned_until
                .is_none_or(|u| now.saturating_duration_since(u) >= forget_after)
    }
}

/// The scores of the nodes that offended (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Scores {
    entries: HashMap<NodeId, Entry>,
}

impl Scores {
    /// Takes `count` offences of kind `offence` off `node`'s score at `now`; returns the ban
    /// when the score reaches the threshold. `configured`: the node is a configured peer, whose
    /// bans are capped at [`Config::ban_max_configured`]. Offences of a banned node are ignored
    /// (its connections are closing).
    pub(super) fn penalise(
        &mut self,
        config: &Config,
        node: &NodeId,
        (offence, count): (Offence, u32),
        configured: bool,
        now: Instant,
    ) -> Option<Ban> {
        if config.ban_threshold == 0 || count == 0 {
            return None;
        }
        if !self.entries.contains_key(node) {
            self.make_room(config, now);
        }
        let entry = self.entries.entry(node.clone()).or_insert(Entry {
            score: 0.0,
            at: now,
            bans: 0,
            banned_until: None,
            too_old: (now, 0),
        });
        if entry.banned(now) {
            return None;
        }
        if entry
            .banned_until
            .is_some_and(|u| now.saturating_duration_since(u) >= config.ban_max)
        {
            // Good for ban_max since its last ban: its bans are forgotten.
            entry.bans = 0;
        }
        let count = if offence == Offence::TooOld {
            if now.saturating_duration_since(entry.too_old.0) >= Duration::from_secs(1) {
                entry.too_old = (now, 0);
            }
            let charged = count.min(TOO_OLD_PER_SECOND.saturating_sub(entry.too_old.1));
            entry.too_old.1 += charged;
            charged
        } else {
            count
        };
        entry.score = entry.decayed(now, config.score_half_life) - weight(offence) * count as f64;
        entry.at = now;
        if entry.score > -f64::from(config.ban_threshold) {
            return None;
        }
        entry.bans = entry.bans.saturating_add(1);
        let cap = if configured {
            config.ban_max.min(config.ban_max_configured)
        } else {
            config.ban_max
        };
        let doubling = 1u32.checked_shl(entry.bans - 1).unwrap_or(u32::MAX);
        let duration = config
            .ban_min
            .saturating_mul(doubling)
            .min(cap)
            .min(MAX_DELAY);
        let until = now + duration;
        entry.score = 0.0;
        entry.banned_until = Some(until);
        Some(Ban {
            duration,
            until,
            repeat: entry.bans,
        })
    }

    /// When `node`'s ban ends, if it is banned at `now`.
    pub(super) fn banned_until(&self, node: &NodeId, now: Instant) -> Option<Instant> {
        self.entries
            .get(node)
            .and_then(|e| e.banned_until)
            .filter(|u| *u > now)
    }

    /// `node`'s score at `now` (0: neutral or unknown).
    #[cfg(test)]
    pub(super) fn score(&self, node: &NodeId, now: Instant, half_life: Duration) -> f64 {
        self.entries
            .get(node)
            .map_or(0.0, |e| e.decayed(now, half_life))
    }

    /// Frees a place for a new entry when the table is full: forgets the entries that are
    /// neutral again, then (still full) the unbanned one closest to neutral, else the ban that
    /// ends first.
    fn make_room(&mut self, config: &Config, now: Instant) {
        let cap = config.max_scored.max(1);
        if self.entries.len() < cap {
            return;
        }
        self.forget_neutral(config, now);
        if self.entries.len() < cap {
            return;
        }
        let half_life = config.score_half_life;
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !e.banned(now))
            .max_by(|(_, a), (_, b)| {
                a.decayed(now, half_life)
                    .total_cmp(&b.decayed(now, half_life))
            })
            .or_else(|| self.entries.iter().min_by_key(|(_, e)| e.banned_until))
            .map(|(n, _)| n.clone());
        if let Some(v) = victim {
            self.entries.remove(&v);
        }
    }

    /// Forgets the entries that are neutral again.
    fn forget_neutral(&mut self, config: &Config, now: Instant) {
        let (half_life, forget_after) = (config.score_half_life, config.ban_max);
        self.entries
            .retain(|_, e| !e.forgettable(now, half_life, forget_after));
    }

    /// How many nodes are scored.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, NodeKey};

    fn node() -> NodeId {
        NodeKey::generate(KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .clone()
    }

    fn config() -> Config {
        Config {
            ban_min: Duration::from_secs(60),
            ban_max: Duration::from_secs(3600),
            ban_max_configured: Duration::from_secs(300),
            ..Config::default()
        }
    }

    #[test]
    fn a_few_bad_signatures_ban_and_the_ban_doubles_up_to_the_cap() {
        let c = config();
        let mut s = Scores::default();
        let n = node();
        let mut now = Instant::now();
        let mut durations = Vec::new();
        for _ in 0..8 {
            assert_eq!(
                s.penalise(&c, &n, (Offence::BadSignature, 2), false, now),
                None
            );
            let ban = s
                .penalise(&c, &n, (Offence::BadSignature, 1), false, now)
                .expect("120 points in a moment ban");
            assert_eq!(s.banned_until(&n, now), Some(ban.until));
            // Offences during the ban change nothing.
            assert_eq!(
                s.penalise(&c, &n, (Offence::Malformed, 9), false, now),
                None
            );
            durations.push(ban.duration.as_secs());
            now = ban.until;
            assert_eq!(s.banned_until(&n, now), None, "it ends");
        }
        assert_eq!(durations, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn configured_peers_bans_are_capped_lower_and_always_end() {
        let c = config();
        let mut s = Scores::default();
        let n = node();
        let mut now = Instant::now();
        for _ in 0..40 {
            let ban = s
                .penalise(&c, &n, (Offence::Malformed, 3), true, now)
                .unwrap();
            assert!(ban.duration <= Duration::from_secs(300), "{ban:?}");
            now = ban.until;
        }
        let ban = s
            .penalise(&c, &n, (Offence::Malformed, 3), true, now)
            .unwrap();
        assert_eq!(ban.repeat, 41);
        assert_eq!(ban.duration, Duration::from_secs(300));
    }

    /// An honest relay's late copies: one every few seconds for hours, or a burst of many at
    /// once, never ban; a peer that keeps replaying for a minute is banned.
    #[test]
    fn occasional_too_old_copies_decay_and_never_ban() {
        let c = config();
        let mut s = Scores::default();
        let n = node();
        let start = Instant::now();
        for i in 0..7200u64 {
            let now = start + Duration::from_secs(2 * i);
            let tick = s.penalise(&c, &n, (Offence::TooOld, 1), false, now);
            assert_eq!(tick, None, "banned after {i} copies");
        }
        let later = start + Duration::from_secs(2 * 7200 + 3600);
        let score = s.score(&n, later, c.score_half_life);
        assert!(score > -NEUTRAL, "decays back to neutral: {score}");
        s.forget_neutral(&c, later);
        assert_eq!(s.len(), 0, "and is forgotten");
        for burst in 0..10 {
            let at = later + Duration::from_millis(10 * burst);
            assert_eq!(s.penalise(&c, &n, (Offence::TooOld, 500), false, at), None);
        }
        let score = s.score(&n, later, c.score_half_life);
        assert!((-2.5..=-1.5).contains(&score), "a burst costs 2: {score}");
        let replayer = node();
        let bans = (0..120u64).find_map(|sec| {
            let at = later + Duration::from_secs(sec);
            s.penalise(&c, &replayer, (Offence::TooOld, 10), false, at)
        });
        assert!(bans.is_some(), "replaying for two minutes bans");
    }

    #[test]
    fn the_repeat_count_is_forgotten_after_a_long_good_time() {
        let c = config();
        let mut s = Scores::default();
        let n = node();
        let now = Instant::now();
        let first = s
            .penalise(&c, &n, (Offence::BadSignature, 3), false, now)
            .unwrap();
        let second = s
            .penalise(&c, &n, (Offence::BadSignature, 3), false, first.until)
            .unwrap();
        assert_eq!(second.repeat, 2);
        let much_later = second.until + c.ban_max;
        let third = s
            .penalise(&c, &n, (Offence::BadSignature, 3), false, much_later)
            .unwrap();
        assert_eq!((third.repeat, third.duration), (1, c.ban_min));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_bans_over_small_scores() {
        let c = Config {
            max_scored: 8,
            ..config()
        };
        let mut s = Scores::default();
        let now = Instant::now();
        let banned = node();
        assert!(
            s.penalise(&c, &banned, (Offence::BadSignature, 3), false, now)
                .is_some()
        );
        for _ in 0..100 {
            s.penalise(&c, &node(), (Offence::TooOld, 5), false, now);
            assert!(s.len() <= 8);
        }
        assert!(s.banned_until(&banned, now).is_some());
        let off = Config {
            ban_threshold: 0,
            ..config()
        };
        assert_eq!(
            s.penalise(&off, &node(), (Offence::BadSignature, 100), false, now),
            None,
            "a threshold of 0 turns banning off"
        );
    }
}
