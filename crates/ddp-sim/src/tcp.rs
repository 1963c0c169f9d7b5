//! The host's TCP receive side, reduced to what matters here: segments arrive in wire order
//! (lost, late, duplicated), the first copy of every byte is kept, and the in-order stream
//! is handed to the application together with the offload metadata of the segment each
//! byte came from — as an skb carries the NIC's `ddp`/`ulp_crc` marks up the stack.

use std::collections::BTreeMap;

use crate::wire::Corruption;

/// Offload metadata of one run of delivered bytes: the part of one received segment that
/// TCP kept (the model of one skb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Stream offset of the first byte.
    pub start: u64,
    /// Bytes.
    pub len: u32,
    /// The segment's `ulp_crc` bit.
    pub crc: bool,
    /// Index range of this mark's placed ranges in [`Delivery::placed`].
    pub placed_lo: u32,
    /// End (exclusive) of that index range.
    pub placed_hi: u32,
}

/// In-order bytes handed to the application in one go, with their marks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Stream offset of `data[0]`.
    pub base: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Marks covering `data` exactly, in order.
    pub marks: Vec<Mark>,
    /// Placed byte ranges `(stream offset, len)`, referenced by the marks.
    pub placed: Vec<(u64, u32)>,
}

impl Delivery {
    /// The placed ranges of `mark`.
    pub fn placed_of(&self, mark: &Mark) -> &[(u64, u32)] {
        self.placed
            .get(mark.placed_lo as usize..mark.placed_hi as usize)
            .unwrap_or(&[])
    }
}

#[derive(Debug)]
struct Piece {
    data: Vec<u8>,
    crc: bool,
    placed: Vec<(u64, u32)>,
    corruption: Option<Corruption>,
}

/// Receive-side reassembly of one connection.
#[derive(Debug, Default)]
pub struct Reassembly {
    rcv_nxt: u64,
    ooo: BTreeMap<u64, Piece>,
    out: Delivery,
    corruptions: Vec<Corruption>,
    duplicate_bytes: u64,
}

impl Reassembly {
    /// A receiver expecting stream offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Next in-order stream offset expected.
    pub fn rcv_nxt(&self) -> u64 {
        self.rcv_nxt
    }

    /// Bytes received more than once (discarded).
    pub fn duplicate_bytes(&self) -> u64 {
        self.duplicate_bytes
    }

    /// Corrupted bytes that were accepted and delivered, in delivery order.
    pub fn delivered_corruptions(&self) -> &[Corruption] {
        &self.corruptions
    }

    /// A segment arrived: `data` at stream offset `offset`, with the device's `crc` bit,
    /// the ranges it `placed` (stream offsets) and the corruption it carries, if any.
    pub fn on_segment(
        &mut self,
        offset: u64,
        data: &[u8],
        crc: bool,
        placed: &[(u64, u32)],
        corruption: Option<Corruption>,
    ) {
        let end = offset + data.len() as u64;
        let mut cur = offset.max(self.rcv_nxt);
        self.duplicate_bytes += cur.saturating_sub(offset).min(data.len() as u64);
        if cur >= end {
            return;
        }
        // The parts of offset..end not yet received, in order.
        let mut gaps: [(u64, u64); 8] = [(0, 0); 8];
        let mut n = 0;
        let mut overflow = false;
        // Pieces that may overlap: the one starting before `cur`, and those inside.
        let first = self
            .ooo
            .range(..=cur)
            .next_back()
            .map(|(&s, p)| (s, s + p.data.len() as u64));
        if let Some((_, e)) = first
            && e > cur
        {
            self.duplicate_bytes += e.min(end) - cur;
            cur = e;
        }
        if cur >= end {
            return;
        }
        for (&s, p) in self.ooo.range(cur..end) {
            let e = s + p.data.len() as u64;
            if s > cur {
                if n == gaps.len() {
                    overflow = true;
                    break;
                }
                gaps[n] = (cur, s);
                n += 1;
            }
            self.duplicate_bytes += e.min(end) - s;
            cur = cur.max(e);
        }
        if !overflow && cur < end && n < gaps.len() {
            gaps[n] = (cur, end);
            n += 1;
        }
        // With more gaps than that the rest is simply not taken now; a later copy fills it.
        for &(a, b) in &gaps[..n] {
            let lo = (a - offset) as usize;
            let hi = (b - offset) as usize;
            let placed = placed
                .iter()
                .filter_map(|&(s, l)| {
                    let (ps, pe) = (s.max(a), (s + u64::from(l)).min(b));
                    (ps < pe).then_some((ps, (pe - ps) as u32))
                })
                .collect();
            let corruption = corruption.filter(|c| (a..b).contains(&c.offset));
            self.ooo.insert(
                a,
                Piece {
                    data: data[lo..hi].to_vec(),
                    crc,
                    placed,
                    corruption,
                },
            );
        }
        while let Some(entry) = self.ooo.first_entry() {
            if *entry.key() != self.rcv_nxt {
                break;
            }
            let p = entry.remove();
            self.deliver(p);
        }
    }

    fn deliver(&mut self, p: Piece) {
        if self.out.data.is_empty() {
            self.out.base = self.rcv_nxt;
        }
        let lo = self.out.placed.len() as u32;
        self.out.placed.extend_from_slice(&p.placed);
        self.out.marks.push(Mark {
            start: self.rcv_nxt,
            len: p.data.len() as u32,
            crc: p.crc,
            placed_lo: lo,
            placed_hi: self.out.placed.len() as u32,
        });
        self.out.data.extend_from_slice(&p.data);
        self.rcv_nxt += p.data.len() as u64;
        if let Some(c) = p.corruption {
            self.corruptions.push(c);
        }
    }

    /// The in-order bytes received since the last call, if any.
    pub fn take_delivery(&mut self) -> Option<Delivery> {
        if self.out.data.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn in_order_segments_are_delivered_with_their_marks() {
        let s = bytes(300);
        let mut r = Reassembly::new();
        r.on_segment(0, &s[..100], true, &[(10, 90)], None);
        r.on_segment(100, &s[100..300], false, &[], None);
        let d = r.take_delivery().unwrap();
        assert_eq!(d.base, 0);
        assert_eq!(d.data, s);
        assert_eq!(d.marks.len(), 2);
        assert!(d.marks[0].crc && !d.marks[1].crc);
        assert_eq!(d.placed_of(&d.marks[0]), &[(10, 90)]);
        assert!(d.placed_of(&d.marks[1]).is_empty());
        assert!(r.take_delivery().is_none());
    }

    #[test]
    fn out_of_order_waits_for_the_gap_and_first_copy_wins() {
        let s = bytes(300);
        let mut r = Reassembly::new();
        r.on_segment(200, &s[200..300], true, &[], None);
        assert!(r.take_delivery().is_none());
        // A different (corrupted) copy of 250..300 arrives later: discarded.
        let mut bad = s[150..300].to_vec();
        bad[120] ^= 0xFF;
        r.on_segment(150, &bad, false, &[(150, 150)], None);
        r.on_segment(0, &s[..150], true, &[], None);
        let d = r.take_delivery().unwrap();
        assert_eq!(d.data, s);
        // Marks: 0..150, 150..200 (from the second copy, clipped), 200..300.
        let spans: Vec<_> = d.marks.iter().map(|m| (m.start, m.len, m.crc)).collect();
        assert_eq!(spans, [(0, 150, true), (150, 50, false), (200, 100, true)]);
        assert_eq!(d.placed_of(&d.marks[1]), &[(150, 50)]);
        assert_eq!(r.duplicate_bytes(), 100);
    }

    #[test]
    fn old_duplicates_are_ignored() {
        let s = bytes(100);
        let mut r = Reassembly::new();
        r.on_segment(0, &s, true, &[], None);
        r.take_delivery();
        r.on_segment(20, &s[20..60], false, &[], None);
        assert!(r.take_delivery().is_none());
        assert_eq!(r.rcv_nxt(), 100);
        assert_eq!(r.duplicate_bytes(), 40);
    }

    proptest::proptest! {
        /// Whatever the order and duplication, the delivered stream is the sent stream and
        /// the marks tile it.
        #[test]
        fn delivers_the_stream_exactly_once(
            cuts in proptest::collection::vec(1usize..50, 1..30),
            order in proptest::collection::vec(0usize..1000, 0..60),
        ) {
            let total: usize = cuts.iter().sum();
            let s = bytes(total);
            let mut segs = Vec::new();
            let mut off = 0;
            for c in &cuts {
                segs.push((off, *c));
                off += c;
            }
            let mut r = Reassembly::new();
            // Random arrivals (with repeats), then everything once in order.
            for &k in &order {
                let (o, l) = segs[k % segs.len()];
                r.on_segment(o as u64, &s[o..o + l], true, &[], None);
            }
            for &(o, l) in &segs {
                r.on_segment(o as u64, &s[o..o + l], true, &[], None);
            }
            let mut got = Vec::new();
            let mut marks = 0u64;
            while let Some(d) = r.take_delivery() {
                proptest::prop_assert_eq!(d.base as usize, got.len());
                let mut at = d.base;
                for m in &d.marks {
                    proptest::prop_assert_eq!(m.start, at);
                    at += u64::from(m.len);
                    marks += u64::from(m.len);
                }
                got.extend_from_slice(&d.data);
            }
            proptest::prop_assert_eq!(got, s);
            proptest::prop_assert_eq!(marks, total as u64);
        }
    }
}
