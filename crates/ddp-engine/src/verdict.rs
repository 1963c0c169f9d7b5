//! What the engine did with one segment.

use serde::{Deserialize, Serialize};

/// Most placed ranges one segment verdict records. A segment carrying more pieces of
/// placed PDU data than this (many small PDUs in one large segment) has the excess not
/// placed: the ULP copies those bytes itself, as it would without offload.
pub const MAX_PLACED_RANGES: usize = 64;

/// A run of segment bytes the device wrote to their destination buffer: TCP sequence
/// numbers `seq .. seq + len` (modulo 2^32). The ULP skips its copy of exactly these bytes
/// (the kernel's `src == dst` check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PlacedRange {
    /// Sequence number of the first placed byte.
    pub seq: u32,
    /// Bytes placed.
    pub len: u32,
}

/// The device's report on one segment: the metadata a NIC attaches to a received packet.
/// The segment itself is never dropped, delayed or modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentVerdict {
    ranges: [PlacedRange; MAX_PLACED_RANGES],
    n_ranges: u8,
    /// The kernel's `skb->ulp_crc` bit: every PDU data and data digest byte of this segment
    /// was fed, in order and from this very segment, into the CRC32C of a PDU the device
    /// tracked from its first byte, and every data digest this segment completed matched.
    /// The ULP may skip its own digest check of a PDU if and only if every segment it
    /// received that PDU's data and digest in has this bit. False whenever offload was off
    /// for any part of the segment.
    pub crc: bool,
    /// Data digests this segment completed and that matched.
    pub digests_verified: u16,
    /// Data digests this segment completed and that did not match.
    pub digests_failed: u16,
    /// The device asked the ULP to confirm a PDU header at this sequence number while
    /// processing the segment (the last request if several; a resync CQE in mlx5).
    pub resync_request: Option<u32>,
}

impl Default for SegmentVerdict {
    fn default() -> Self {
        Self::NONE
    }
}

impl SegmentVerdict {
    /// Nothing placed, nothing verified.
    pub const NONE: Self = Self {
        ranges: [PlacedRange { seq: 0, len: 0 }; MAX_PLACED_RANGES],
        n_ranges: 0,
        crc: false,
        digests_verified: 0,
        digests_failed: 0,
        resync_request: None,
    };

    /// Resets to [`Self::NONE`] without touching the range storage (cheap).
    pub fn clear(&mut self) {
        self.n_ranges = 0;
        self.crc = false;
        self.digests_verified = 0;
        self.digests_failed = 0;
        self.resync_request = None;
    }

    /// The kernel's `ddp` mark: some of this segment's payload was placed.
    pub fn ddp(&self) -> bool {
        self.n_ranges > 0
    }

    /// The placed ranges, in sequence order.
    pub fn placed(&self) -> &[PlacedRange] {
        &self.ranges[..usize::from(self.n_ranges)]
    }

    /// Total bytes placed.
    pub fn placed_bytes(&self) -> u64 {
        self.placed().iter().map(|r| u64::from(r.len)).sum()
    }

    /// True if the `len` bytes from `seq` were all placed (so the ULP skips copying them).
    pub fn is_placed(&self, seq: u32, len: u32) -> bool {
        if len == 0 {
            return true;
        }
        self.placed().iter().any(|r| {
            let start = seq.wrapping_sub(r.seq);
            start < r.len && len <= r.len - start
        })
    }

    /// Appends a range, merging with the previous one if contiguous. False if full.
    pub(crate) fn push(&mut self, seq: u32, len: u32) -> bool {
        let n = usize::from(self.n_ranges);
        if n > 0 {
            let last = &mut self.ranges[n - 1];
            if last.seq.wrapping_add(last.len) == seq {
                last.len += len;
                return true;
            }
        }
        if n == MAX_PLACED_RANGES {
            return false;
        }
        self.ranges[n] = PlacedRange { seq, len };
        self.n_ranges += 1;
        true
    }

    /// True if another (non-contiguous) range fits.
    pub(crate) fn has_room(&self, seq: u32) -> bool {
        let n = usize::from(self.n_ranges);
        n < MAX_PLACED_RANGES
            || (n > 0 && self.ranges[n - 1].seq.wrapping_add(self.ranges[n - 1].len) == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_ranges_merge_and_lookup_wraps() {
        let mut v = SegmentVerdict::NONE;
        assert!(v.push(u32::MAX - 1, 2));
        assert!(v.push(0, 3));
        assert_eq!(v.placed().len(), 1);
        assert!(v.is_placed(u32::MAX, 4));
        assert!(!v.is_placed(u32::MAX, 5));
        assert!(!v.is_placed(3, 1));
        assert_eq!(v.placed_bytes(), 5);
    }

    #[test]
    fn full_verdict_refuses_new_ranges() {
        let mut v = SegmentVerdict::NONE;
        for i in 0..MAX_PLACED_RANGES as u32 {
            assert!(v.push(i * 10, 5));
        }
        assert!(!v.has_room(1000));
        assert!(!v.push(1000, 5));
        assert!(v.has_room(MAX_PLACED_RANGES as u32 * 10 - 5));
    }
}
