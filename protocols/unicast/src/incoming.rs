//! Reading one unicast stream: 1.1 messages put back together from their parts and
//! decompressed, within bounds a peer cannot stretch (see SPEC.md, "Parts").

use std::collections::HashMap;

use bcos_p2p_core::stream_pair::CloseReason;
use bytes::Bytes;

use crate::{
    codec::{FLAG_ZSTD, Frame, Wire, message},
    compress::Zstd,
    outgoing::{MAX_PARTIAL, PARTIAL_BYTES},
    traffic::Compression,
};

/// A message in parts, copied together as its parts come: the copy and the page faults of a
/// large message are spread over its parts instead of stalling the connection (every stream
/// on it, the urgent pair's too) for the whole message at its last part.
#[derive(Debug)]
struct Partial {
    kind: u8,
    module: u16,
    flags: u8,
    total: usize,
    /// What came so far. Capacity grows with what came (doubling, never past `total`), so a
    /// peer that declares a large message and sends little makes us hold little.
    whole: Vec<u8>,
}

impl Partial {
    fn append(&mut self, data: &[u8]) {
        let spare = self.whole.capacity() - self.whole.len();
        if spare < data.len() {
            let room = self.total - self.whole.len();
            let grow = self.whole.len().max(data.len()).min(room);
            self.whole.reserve_exact(grow);
        }
        self.whole.extend_from_slice(data);
    }
}

/// The receiving side of one unicast stream.
#[derive(Debug)]
pub(crate) struct Incoming {
    max_message: usize,
    partial: HashMap<u64, Partial>,
    declared: usize,
    zstd: Zstd,
}

fn malformed(why: String) -> CloseReason {
    CloseReason::Malformed(why)
}

impl Incoming {
    /// Messages of up to `max_message` bytes (before and after decompression).
    pub(crate) fn new(max_message: usize) -> Self {
        Incoming {
            max_message,
            partial: HashMap::new(),
            declared: 0,
            // Settings only matter for compressing; any decompress.
            zstd: Zstd::new(Compression::default()),
        }
    }

    /// Takes one frame: the message it completes, if any (with its module and the size it
    /// had on the wire), or why the stream must close.
    pub(crate) fn take(&mut self, wire: Wire) -> Result<Option<(Frame, usize)>, CloseReason> {
        match wire {
            Wire::Start {
                kind,
                id,
                module,
                flags,
                total,
                data,
            } => {
                let total = total as usize;
                if total > self.max_message {
                    return Err(malformed(format!(
                        "message of {total} bytes exceeds the limit of {}",
                        self.max_message
                    )));
                }
                if data.len() == total {
                    return self.finish(kind, id, module, flags, data).map(Some);
                }
                if self.partial.contains_key(&id) {
                    return Err(malformed(format!(
                        "message id {id} started again while in parts"
                    )));
                }
                if self.partial.len() >= MAX_PARTIAL
                    || (!self.partial.is_empty()
                        && self.declared.saturating_add(total) > PARTIAL_BYTES)
                {
                    return Err(malformed(format!(
                        "more than {MAX_PARTIAL} messages or {PARTIAL_BYTES} bytes in parts"
                    )));
                }
                self.declared += total;
                let mut partial = Partial {
                    kind,
                    module,
                    flags,
                    total,
                    whole: Vec::new(),
                };
                partial.append(&data);
                self.partial.insert(id, partial);
                Ok(None)
            }
            Wire::More { id, data } => {
                let Some(p) = self.partial.get_mut(&id) else {
                    return Err(malformed(format!(
                        "continuation of message {id}, which is not in parts"
                    )));
                };
                if p.whole.len() + data.len() > p.total {
                    return Err(malformed(format!(
                        "message {id} longer than the {} bytes it declared",
                        p.total
                    )));
                }
                p.append(&data);
                if p.whole.len() < p.total {
                    return Ok(None);
                }
                let p = self.partial.remove(&id).expect("present");
                self.declared -= p.total;
                self.finish(p.kind, id, p.module, p.flags, Bytes::from(p.whole))
                    .map(Some)
            }
        }
    }

    fn finish(
        &mut self,
        kind: u8,
        id: u64,
        module: u16,
        flags: u8,
        data: Bytes,
    ) -> Result<(Frame, usize), CloseReason> {
        let wire_len = data.len();
        let payload = if flags & FLAG_ZSTD != 0 {
            self.zstd
                .decompress(&data, self.max_message)
                .map_err(malformed)?
        } else {
            data
        };
        let frame = message(kind, id, module, payload).map_err(|e| malformed(e.to_string()))?;
        Ok((frame, wire_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{KIND_ONEWAY, KIND_REQUEST};

    fn start(id: u64, total: u32, data: &[u8]) -> Wire {
        Wire::Start {
            kind: KIND_REQUEST,
            id,
            module: 3,
            flags: 0,
            total,
            data: Bytes::copy_from_slice(data),
        }
    }

    fn more(id: u64, data: &[u8]) -> Wire {
        Wire::More {
            id,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn parts_interleave_and_come_back_whole() {
        let mut i = Incoming::new(1000);
        assert!(i.take(start(1, 6, b"abc")).unwrap().is_none());
        assert!(i.take(start(2, 4, b"xy")).unwrap().is_none());
        let (f, _) = i.take(start(3, 1, b"!")).unwrap().unwrap();
        assert!(matches!(f, Frame::Request { id: 3, .. }));
        assert!(i.take(more(2, b"z")).unwrap().is_none());
        let (f, len) = i.take(more(1, b"def")).unwrap().unwrap();
        assert_eq!(len, 6);
        assert_eq!(
            f,
            Frame::Request {
                id: 1,
                module: 3,
                payload: Bytes::from_static(b"abcdef")
            }
        );
        let (f, _) = i.take(more(2, b"w")).unwrap().unwrap();
        assert!(matches!(f, Frame::Request { id: 2, payload, .. } if payload == "xyzw"));
        assert!(i.partial.is_empty() && i.declared == 0);
    }

    /// A message is copied together as its parts come, and what is held grows with what came:
    /// a peer declaring 16 MiB and sending 64 KiB parts makes us hold at most twice what it
    /// sent (never the declared size up front), and the whole comes back byte for byte.
    #[test]
    fn parts_are_joined_as_they_come_and_hold_what_came() {
        const TOTAL: usize = 16 << 20;
        const PART: usize = 64 << 10;
        let mut i = Incoming::new(TOTAL);
        let byte = |k: usize| (k % 251) as u8;
        let part = |n: usize| Bytes::from((n * PART..(n + 1) * PART).map(byte).collect::<Vec<_>>());
        let mut w = start(7, TOTAL as u32, &[]);
        if let Wire::Start { data, .. } = &mut w {
            *data = part(0);
        }
        assert!(i.take(w).unwrap().is_none());
        for n in 1..TOTAL / PART - 1 {
            assert!(
                i.take(Wire::More {
                    id: 7,
                    data: part(n)
                })
                .unwrap()
                .is_none()
            );
            let p = &i.partial[&7];
            assert_eq!(p.whole.len(), (n + 1) * PART, "copied in as it came");
            assert!(
                p.whole.capacity() <= 2 * p.whole.len(),
                "{} held",
                p.whole.capacity()
            );
        }
        let last = Wire::More {
            id: 7,
            data: part(TOTAL / PART - 1),
        };
        let (f, len) = i.take(last).unwrap().unwrap();
        assert_eq!(len, TOTAL);
        let Frame::Request { payload, .. } = f else {
            panic!("a request");
        };
        assert!(payload.iter().enumerate().all(|(k, b)| *b == byte(k)));
        assert!(i.partial.is_empty() && i.declared == 0);
    }

    #[test]
    fn broken_part_sequences_close_the_stream() {
        let cases: Vec<Vec<Wire>> = vec![
            vec![more(9, b"a")],
            vec![start(1, 4, b"ab"), start(1, 4, b"ab")],
            vec![start(1, 4, b"ab"), more(1, b"abc")],
            vec![start(1, 2000, b"ab")],
            (0..=MAX_PARTIAL as u64)
                .map(|id| start(id, 100, b"a"))
                .collect(),
            vec![
                start(1, 900, b"a"),
                Wire::Start {
                    kind: KIND_ONEWAY,
                    id: 5,
                    module: 1,
                    flags: FLAG_ZSTD,
                    total: 4,
                    data: Bytes::from_static(b"junk"),
                },
            ],
        ];
        for (n, case) in cases.into_iter().enumerate() {
            let mut i = Incoming::new(1000);
            let last = case.len() - 1;
            for (k, w) in case.into_iter().enumerate() {
                let r = i.take(w);
                if k < last {
                    assert!(r.is_ok(), "case {n} frame {k}");
                } else {
                    assert!(r.is_err(), "case {n}");
                }
            }
        }
    }

    #[test]
    fn declared_lengths_beyond_the_bound_close_the_stream() {
        let mut i = Incoming::new(usize::MAX);
        let big = u32::try_from(PARTIAL_BYTES / 2 + 1).unwrap();
        assert!(i.take(start(1, big, b"a")).unwrap().is_none());
        assert!(i.take(start(2, big, b"a")).is_err());
        // A single message may be as long as a message may be.
        let mut i = Incoming::new(usize::MAX);
        assert!(i.take(start(1, u32::MAX, b"a")).unwrap().is_none());
    }

    #[test]
    fn a_decompression_bomb_closes_the_stream() {
        let bomb = zstd::bulk::compress(&vec![0u8; 4 << 20], 1).unwrap();
        let mut i = Incoming::new(1 << 20);
        let r = i.take(Wire::Start {
            kind: KIND_ONEWAY,
            id: 1,
            module: 1,
            flags: FLAG_ZSTD,
            total: bomb.len() as u32,
            data: Bytes::from(bomb),
        });
        assert!(r.unwrap_err().to_string().contains("over the limit"));
    }
}
