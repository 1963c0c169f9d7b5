//! The marks the NIC publishes per connection, by stream offset, for the host to read
//! (`nvme_tcp_host::marks`).
//!
//! Two sets of byte ranges per connection: bytes the engine placed, and bytes that came in
//! a segment whose verdict had the `crc` bit. Several copies of the same bytes (a
//! retransmission, a duplicate) only ever add marks: a placed byte stays placed (the bytes
//! are the same), and a byte that was fed into a matching digest once stays verified.
//! The host forgets what it has consumed; the table is also bounded (the oldest ranges go
//! first), which is safe because a missing mark only makes the host do the work itself.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};

use nvme_tcp_host::PlacedRange;
use nvme_tcp_host::marks::{CrcRun, FlowMarks, MarkSource, StreamMarks};
use ulp_ddp::SockId;

/// Most disjoint ranges kept per set and connection.
const MAX_RANGES: usize = 1 << 14;
/// Most connections tracked at once (the oldest goes first).
const MAX_FLOWS: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Disjoint, non-adjacent byte ranges `start -> end`.
#[derive(Debug, Default)]
pub(crate) struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `start..end`, merging with overlapping and adjacent ranges.
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.map.remove(&s);
        }
        // Ranges starting inside `start..=end`.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
        while self.map.len() > MAX_RANGES {
            self.map.pop_first();
        }
    }

    /// Forgets everything before `upto`.
    pub(crate) fn remove_below(&mut self, upto: u64) {
        while let Some((&s, &e)) = self.map.first_key_value() {
            if e <= upto {
                self.map.remove(&s);
            } else {
                if s < upto {
                    self.map.remove(&s);
                    self.map.insert(upto, e);
                }
                break;
            }
        }
    }

    /// The first range that ends after `at`.
    pub(crate) fn first_ending_after(&self, at: u64) -> Option<(u64, u64)> {
        if let Some((&s, &e)) = self.map.range(..=at).next_back()
            && e > at
        {
            return Some((s, e));
        }
        self.map.range(at..).next().map(|(&s, &e)| (s, e))
    }

    /// Calls `f` with each piece of the set inside `start..end`, ascending.
    pub(crate) fn each_within(&self, start: u64, end: u64, mut f: impl FnMut(u64, u64)) {
        let mut at = start;
        while at < end {
            let Some((s, e)) = self.first_ending_after(at) else {
                return;
            };
            if s >= end {
                return;
            }
            f(s.max(at), e.min(end));
            at = e;
        }
    }
}

/// The marks of one connection.
#[derive(Debug, Default)]
struct Table {
    placed: RangeSet,
    crc: RangeSet,
}

/// One TCP connection the NIC saw being established (target to host direction).
#[derive(Debug)]
pub struct Flow {
    sk: SockId,
    isn: u32,
    table: Mutex<Table>,
}

impl Flow {
    /// A connection whose stream offset 0 has sequence number `isn`.
    pub(crate) fn new(sk: SockId, isn: u32) -> Self {
        Self {
            sk,
            isn,
            table: Mutex::new(Table::default()),
        }
    }

    /// The socket name the host offloads this connection under.
    pub(crate) fn sock_id_of(&self) -> SockId {
        self.sk
    }

    /// Sequence number of stream offset 0.
    pub(crate) fn isn_of(&self) -> u32 {
        self.isn
    }

    /// Records the marks of one segment: bytes `start..start+len` (stream offsets) carried
    /// the `crc` bit if `crc`; `placed` are the placed pieces (stream offsets, lengths).
    pub(crate) fn publish(
        &self,
        start: u64,
        len: u64,
        crc: bool,
        placed: impl Iterator<Item = (u64, u64)>,
    ) {
        let mut t = lock(&self.table);
        if crc {
            t.crc.insert(start, start + len);
        }
        for (s, l) in placed {
            t.placed.insert(s, s + l);
        }
    }
}

impl FlowMarks for Flow {
    fn sock_id(&self) -> SockId {
        self.sk
    }

    fn isn(&self) -> u32 {
        self.isn
    }

    fn placed_from(&self, at: u64) -> Option<(u64, u64)> {
        lock(&self.table).placed.first_ending_after(at)
    }

    fn marks(&self, start: u64, end: u64, out: &mut StreamMarks) {
        out.clear();
        let t = lock(&self.table);
        let mut at = start;
        t.crc.each_within(start, end, |s, e| {
            if s > at {
                out.crc_runs.push(CrcRun { end: s, crc: false });
            }
            out.crc_runs.push(CrcRun { end: e, crc: true });
            at = e;
        });
        if at < end {
            out.crc_runs.push(CrcRun { end, crc: false });
        }
        t.placed.each_within(start, end, |s, e| {
            out.placed.push(PlacedRange {
                start: s,
                len: (e - s) as u32,
            });
        });
    }

    fn consumed(&self, upto: u64) {
        let mut t = lock(&self.table);
        t.placed.remove_below(upto);
        t.crc.remove_below(upto);
    }
}

/// A connection's identity as the host's socket sees it: (host, target).
pub(crate) type FlowKey = (SocketAddrV4, SocketAddrV4);

/// The connections the NIC knows, by 4-tuple: the host's [`MarkSource`].
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: Mutex<HashMap<FlowKey, (u64, Arc<Flow>)>>,
    next: Mutex<u64>,
}

impl FlowTable {
    /// Records a new connection (its SYN-ACK passed), replacing an older one of the same
    /// 4-tuple; evicts the oldest beyond the limit.
    pub(crate) fn insert(&self, key: FlowKey, flow: Arc<Flow>) {
        let mut n = lock(&self.next);
        *n += 1;
        let age = *n;
        drop(n);
        let mut m = lock(&self.flows);
        m.insert(key, (age, flow));
        if m.len() > MAX_FLOWS
            && let Some(oldest) = m.iter().min_by_key(|(_, (a, _))| *a).map(|(k, _)| *k)
        {
            m.remove(&oldest);
        }
    }

    /// Forgets a connection (reset or closed).
    pub(crate) fn remove(&self, key: &FlowKey) {
        lock(&self.flows).remove(key);
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        lock(&self.flows).len()
    }

    /// True if no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MarkSource for FlowTable {
    fn flow(&self, local: SocketAddr, peer: SocketAddr) -> Option<Arc<dyn FlowMarks>> {
        let (SocketAddr::V4(l), SocketAddr::V4(p)) = (local, peer) else {
            return None;
        };
        let f = lock(&self.flows).get(&(l, p)).map(|(_, f)| Arc::clone(f))?;
        Some(f)
    }
}

/// The key of a target-to-host segment.
pub(crate) fn key_of(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> FlowKey {
    (
        SocketAddrV4::new(dst.0, dst.1),
        SocketAddrV4::new(src.0, src.1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The set equals the union of what was inserted, minus what was removed.
        #[test]
        fn range_set_is_the_union_of_insertions(
            ops in proptest::collection::vec((0u64..200, 0u64..40), 0..60),
            cut in 0u64..240,
        ) {
            let mut set = RangeSet::default();
            let mut model = [false; 256];
            for &(s, l) in &ops {
                set.insert(s, s + l);
                for b in s..s + l { model[b as usize] = true; }
            }
            set.remove_below(cut);
            for b in 0..cut.min(256) { model[b as usize] = false; }
            let mut got = [false; 256];
            set.each_within(0, 256, |s, e| for b in s..e { got[b as usize] = true; });
            prop_assert_eq!(got, model);
            // Disjoint and non-adjacent.
            let v: Vec<_> = set.map.iter().map(|(&s, &e)| (s, e)).collect();
            for w in v.windows(2) { prop_assert!(w[0].1 < w[1].0); }
        }
    }

    #[test]
    fn marks_split_into_crc_runs_and_placed_pieces() {
        let f = Flow::new(SockId(1), 0);
        f.publish(100, 50, true, [(110u64, 30u64)].into_iter());
        f.publish(150, 50, false, [(150u64, 20u64)].into_iter());
        let mut m = StreamMarks::default();
        f.marks(90, 210, &mut m);
        assert_eq!(
            m.crc_runs,
            vec![
                CrcRun {
                    end: 100,
                    crc: false
                },
                CrcRun {
                    end: 150,
                    crc: true
                },
                CrcRun {
                    end: 210,
                    crc: false
                },
            ]
        );
        // 110..140 and 150..170 stay separate; nothing merges across the gap.
        assert_eq!(
            m.placed,
            vec![
                PlacedRange {
                    start: 110,
                    len: 30
                },
                PlacedRange {
                    start: 150,
                    len: 20
                },
            ]
        );
        assert_eq!(f.placed_from(0), Some((110, 140)));
        assert_eq!(f.placed_from(140), Some((150, 170)));
        f.consumed(160);
        assert_eq!(f.placed_from(0), Some((160, 170)));
    }
}
