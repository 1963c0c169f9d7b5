//! The host's TCP receive side for one direction of a connection: segments in capture order
//! in, the in-order byte stream out — each byte with the marks the device left on the copy of
//! it the receiver kept.
//!
//! As Linux does, the first copy of a byte to arrive wins: a retransmission or duplicate of
//! bytes already received (in order or in the out-of-order queue) is dropped, even if its
//! content differs. The stream is addressed by *offsets* (bytes since the sequence number
//! given at creation), so it never wraps.

use std::collections::BTreeMap;

/// Payload bytes the device placed, as stream offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedOff {
    /// Offset of the first placed byte.
    pub off: u64,
    /// Bytes placed.
    pub len: u64,
}

/// A run of in-order stream bytes, all from one received segment.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Stream offset of the first byte.
    pub off: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// The segment's `crc` mark.
    pub crc: bool,
    /// Placed parts of this chunk.
    pub placed: Vec<PlacedOff>,
    /// Capture frame of the segment.
    pub frame: u64,
}

impl Chunk {
    /// Offset just past the last byte.
    pub fn end(&self) -> u64 {
        self.off + self.data.len() as u64
    }
}

/// Most bytes held out of order before the receiver gives up waiting for a hole to be filled
/// (more than any TCP window).
pub const MAX_OOO_BYTES: u64 = 64 << 20;

/// The receive side of one direction.
#[derive(Debug)]
pub struct Reassembler {
    /// Sequence number of offset 0.
    base: u32,
    /// Next offset to deliver.
    next: u64,
    ooo: BTreeMap<u64, Chunk>,
    ooo_bytes: u64,
    /// Bytes that arrived again (already received): dropped.
    pub duplicate_bytes: u64,
}

impl Reassembler {
    /// A receiver whose stream offset 0 is sequence number `base`.
    pub fn new(base: u32) -> Self {
        Self {
            base,
            next: 0,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            duplicate_bytes: 0,
        }
    }

    /// Next offset to deliver.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Sequence number of stream offset `off`.
    pub fn seq_of(&self, off: u64) -> u32 {
        self.base.wrapping_add(off as u32)
    }

    /// Stream offset of sequence number `seq`, taken as the nearest one to the delivery point
    /// (`None` if that is before offset 0).
    pub fn off_of(&self, seq: u32) -> Option<u64> {
        let d = seq.wrapping_sub(self.seq_of(self.next)) as i32;
        self.next.checked_add_signed(i64::from(d))
    }

    /// True if bytes wait out of order behind a hole.
    pub fn has_hole(&self) -> bool {
        !self.ooo.is_empty()
    }

    /// Bytes held out of order.
    pub fn ooo_bytes(&self) -> u64 {
        self.ooo_bytes
    }

    /// Takes a received segment with its marks (`placed` as sequence-number ranges) and
    /// returns what became deliverable in order.
    pub fn push(
        &mut self,
        seq: u32,
        payload: &[u8],
        crc: bool,
        placed: &[(u32, u32)],
        frame: u64,
    ) -> Vec<Chunk> {
        let mut out = Vec::new();
        if payload.is_empty() {
            return out;
        }
        let Some(start) = self.off_of(seq) else {
            self.duplicate_bytes += payload.len() as u64;
            return out;
        };
        let end = start + payload.len() as u64;
        // New pieces: [start, end) minus what was delivered or is queued.
        let mut pieces = Vec::new();
        let mut cur = start.max(self.next);
        self.duplicate_bytes += cur.saturating_sub(start).min(payload.len() as u64);
        if cur < end {
            let first = self
                .ooo
                .range(..=cur)
                .next_back()
                .map(|(_, c)| c.end())
                .filter(|&e| e > cur);
            if let Some(e) = first {
                self.duplicate_bytes += e.min(end) - cur;
                cur = e.min(end);
            }
            for (_, c) in self.ooo.range(cur..end) {
                if c.off > cur {
                    pieces.push((cur, c.off));
                }
                self.duplicate_bytes += c.end().min(end) - c.off;
                cur = cur.max(c.end());
            }
            if cur < end {
                pieces.push((cur, end));
            }
        }
        for (s, e) in pieces {
            let data = payload[(s - start) as usize..(e - start) as usize].to_vec();
            let mut marks = Vec::new();
            for &(pseq, plen) in placed {
                let Some(ps) = self.off_of(pseq) else {
                    continue;
                };
                let pe = ps + u64::from(plen);
                let (a, b) = (ps.max(s), pe.min(e));
                if a < b {
                    marks.push(PlacedOff { off: a, len: b - a });
                }
            }
            self.ooo_bytes += e - s;
            self.ooo.insert(
                s,
                Chunk {
                    off: s,
                    data,
                    crc,
                    placed: marks,
                    frame,
                },
            );
        }
        self.deliver(&mut out);
        out
    }

    fn deliver(&mut self, out: &mut Vec<Chunk>) {
        while let Some(entry) = self.ooo.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let c = entry.remove();
            self.ooo_bytes -= c.data.len() as u64;
            self.next = c.end();
            out.push(c);
        }
    }

    /// Gives up on the hole in front of the queued bytes (the capture lacks those bytes):
    /// returns the number of bytes skipped and what became deliverable behind it. `None`
    /// if nothing is queued.
    pub fn skip_hole(&mut self) -> Option<(u64, Vec<Chunk>)> {
        let (&first, _) = self.ooo.first_key_value()?;
        let skipped = first.saturating_sub(self.next);
        self.next = first;
        let mut out = Vec::new();
        self.deliver(&mut out);
        Some((skipped, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(r: &mut Reassembler, seq: u32, data: &[u8]) -> Vec<u8> {
        r.push(seq, data, false, &[], 0)
            .into_iter()
            .flat_map(|c| c.data)
            .collect()
    }

    #[test]
    fn first_copy_wins_and_holes_hold_delivery() {
        let mut r = Reassembler::new(u32::MAX - 2); // wraps inside the stream
        assert_eq!(collect(&mut r, u32::MAX - 2, b"abc"), b"abc");
        assert_eq!(collect(&mut r, 3, b"xyz"), b"");
        assert!(r.has_hole());
        // Overlapping retransmission with different bytes: only the new part counts.
        // A copy of queued bytes with different content: dropped.
        assert_eq!(collect(&mut r, 4, b"QQ"), b"");
        // Overlapping retransmission: only the new part counts.
        assert_eq!(collect(&mut r, u32::MAX - 2, b"ABCdef"), b"defxyz");
        assert_eq!(r.duplicate_bytes, 2 + 3);
        assert!(!r.has_hole());
    }

    #[test]
    fn placed_marks_follow_the_kept_copy() {
        let mut r = Reassembler::new(100);
        let out = r.push(100, &[0; 10], true, &[(104, 4)], 7);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].placed, vec![PlacedOff { off: 4, len: 4 }]);
        assert!(out[0].crc);
        assert_eq!(out[0].frame, 7);
    }

    #[test]
    fn skip_hole_moves_on() {
        let mut r = Reassembler::new(0);
        assert!(collect(&mut r, 5, b"hello").is_empty());
        let (skipped, out) = r.skip_hole().expect("queued bytes");
        assert_eq!(skipped, 5);
        assert_eq!(out[0].data, b"hello");
        assert_eq!(r.next(), 10);
    }

    proptest! {
        /// Whatever the order, duplication and overlap of the copies, the delivered stream is
        /// the stream, each byte once, and it is the first copy of each byte that counts.
        #[test]
        fn delivers_each_byte_once(
            base in any::<u32>(),
            len in 1usize..400,
            cuts in proptest::collection::vec((0usize..400, 1usize..60), 1..40),
        ) {
            let stream: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut r = Reassembler::new(base);
            let mut got = Vec::new();
            let mut segs: Vec<(usize, usize)> = cuts
                .into_iter()
                .map(|(s, l)| (s % len, ((s % len) + l).min(len)))
                .collect();
            // Always deliver everything in the end.
            segs.push((0, len));
            for (s, e) in segs {
                for c in r.push(base.wrapping_add(s as u32), &stream[s..e], false, &[], 0) {
                    prop_assert_eq!(c.off as usize, got.len());
                    got.extend_from_slice(&c.data);
                }
            }
            prop_assert_eq!(got, stream);
            prop_assert!(!r.has_hole());
        }
    }
}
