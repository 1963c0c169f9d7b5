//! Command identifiers: per-queue tags (slot indices) with a generation counter.
//!
//! In [`CidMode::Tagged`] a CID is `generation << index_bits | index`, where `index_bits` is
//! the number of bits needed for `queue_size` slots; the generation is bumped every time a
//! slot is reused, so a completion that names a slot's previous command is recognised as
//! stale. In [`CidMode::Linear`] the CID is the slot index (`0..queue_size-1`), as offload
//! devices without a full CCID range need; staleness is then only detected for free slots.

use crate::options::CidMode;

/// What a CID received from the controller names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidState {
    /// The command in flight in this slot.
    InFlight(u16),
    /// The last command of a slot that is free again: that command already completed.
    Completed,
    /// A command from an earlier use of a slot that has been reused since (tagged mode).
    Stale,
    /// No command this queue issued.
    Unknown,
}

/// Allocates slot indices and maps them to and from CIDs.
#[derive(Debug, Clone)]
pub struct TagAllocator {
    mode: CidMode,
    index_bits: u32,
    generations: Vec<u16>,
    in_use: Vec<bool>,
    free: Vec<u16>,
}

impl TagAllocator {
    /// An allocator for `slots` slots (1..=32768).
    pub fn new(slots: u16, mode: CidMode) -> Self {
        let slots = slots.clamp(1, 1 << 15);
        let index_bits = u16::BITS - (slots - 1).leading_zeros();
        Self {
            mode,
            index_bits,
            generations: vec![0; slots as usize],
            in_use: vec![false; slots as usize],
            // Pop from the end: lowest index first.
            free: (0..slots).rev().collect(),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    /// Number of slots in use.
    pub fn in_use_count(&self) -> usize {
        self.in_use.len() - self.free.len()
    }

    /// Takes a free slot; returns its index and the CID to put in the SQE.
    pub fn alloc(&mut self) -> Option<(u16, u16)> {
        let idx = self.free.pop()?;
        let i = idx as usize;
        self.in_use[i] = true;
        self.generations[i] = self.generations[i].wrapping_add(1);
        Some((idx, self.cid_of(idx)))
    }

    /// Returns slot `idx` to the free list. Ignored if it is not in use.
    pub fn release(&mut self, idx: u16) {
        if let Some(u) = self.in_use.get_mut(idx as usize)
            && *u
        {
            *u = false;
            self.free.push(idx);
        }
    }

    /// The CID of slot `idx` in its current generation.
    pub fn cid_of(&self, idx: u16) -> u16 {
        match self.mode {
            CidMode::Linear => idx,
            CidMode::Tagged => {
                let gen_bits = 16 - self.index_bits;
                let mask = if gen_bits >= 16 {
                    u16::MAX
                } else {
                    (1u16 << gen_bits) - 1
                };
                let g = self.generations[idx as usize] & mask;
                // index_bits < 16 because slots <= 32768.
                (g << self.index_bits) | idx
            }
        }
    }

    /// The slot a CID received from the controller names, if that slot is in use and (in
    /// tagged mode) in the generation the CID carries.
    pub fn lookup(&self, cid: u16) -> Option<u16> {
        let idx = match self.mode {
            CidMode::Linear => cid,
            CidMode::Tagged => cid & ((1u16 << self.index_bits) - 1),
        };
        let i = idx as usize;
        if !*self.in_use.get(i)? {
            return None;
        }
        (self.cid_of(idx) == cid).then_some(idx)
    }

    /// What `cid` names: a command in flight, one that already completed, one from an
    /// earlier use of its slot, or nothing this queue issued. (In linear mode a CID of a slot
    /// in use always names the command in flight, and one of a free slot that was used names
    /// its last command.)
    pub fn classify(&self, cid: u16) -> CidState {
        if let Some(idx) = self.lookup(cid) {
            return CidState::InFlight(idx);
        }
        let idx = match self.mode {
            CidMode::Linear => cid,
            CidMode::Tagged => cid & ((1u16 << self.index_bits) - 1),
        };
        let i = idx as usize;
        let (Some(&in_use), Some(&generation)) = (self.in_use.get(i), self.generations.get(i))
        else {
            return CidState::Unknown;
        };
        if generation == 0 {
            // Never used.
            return CidState::Unknown;
        }
        if !in_use && self.cid_of(idx) == cid {
            return CidState::Completed;
        }
        if self.mode == CidMode::Linear {
            return CidState::Unknown;
        }
        // Tagged: an earlier generation of this slot, unless the slot never got that far.
        let gen_bits = 16 - self.index_bits;
        let mask = if gen_bits >= 16 {
            u16::MAX
        } else {
            (1u16 << gen_bits) - 1
        };
        let g = cid >> self.index_bits;
        let wrapped = generation > mask;
        if wrapped || (g >= 1 && g < generation) {
            CidState::Stale
        } else {
            CidState::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_is_not_found() {
        let mut t = TagAllocator::new(4, CidMode::Tagged);
        let (idx, cid) = t.alloc().unwrap();
        assert_eq!(t.lookup(cid), Some(idx));
        t.release(idx);
        assert_eq!(t.lookup(cid), None, "free slot");
        // Reuse every slot until `idx` comes back with a new generation.
        let mut again = None;
        for _ in 0..4 {
            let (i, c) = t.alloc().unwrap();
            if i == idx {
                again = Some(c);
            }
        }
        let cid2 = again.unwrap();
        assert_ne!(cid, cid2);
        assert_eq!(t.lookup(cid), None, "old generation");
        assert_eq!(t.lookup(cid2), Some(idx));
    }

    #[test]
    fn a_cid_not_in_flight_is_classified_completed_stale_or_unknown() {
        let mut t = TagAllocator::new(3, CidMode::Tagged);
        assert_eq!(t.classify(0), CidState::Unknown, "never used");
        let (idx, cid) = t.alloc().unwrap();
        assert_eq!(t.classify(cid), CidState::InFlight(idx));
        t.release(idx);
        assert_eq!(t.classify(cid), CidState::Completed, "duplicate");
        let mut held = Vec::new();
        while let Some((i, c)) = t.alloc() {
            held.push((i, c));
        }
        assert_eq!(t.classify(cid), CidState::Stale, "slot reused");
        let (i, c) = held.iter().copied().find(|&(i, _)| i == idx).unwrap();
        t.release(i);
        assert_eq!(t.classify(c), CidState::Completed);
        assert_eq!(t.classify(cid), CidState::Stale);
        // An index beyond the queue's 3 slots.
        assert_eq!(t.classify(3), CidState::Unknown);
        let mut l = TagAllocator::new(4, CidMode::Linear);
        let (i, c) = l.alloc().unwrap();
        l.release(i);
        assert_eq!(l.classify(c), CidState::Completed);
        assert_eq!(l.classify(3), CidState::Unknown);
    }

    #[test]
    fn linear_cids_stay_below_queue_size() {
        let mut t = TagAllocator::new(128, CidMode::Linear);
        for _ in 0..3 {
            let mut got = Vec::new();
            while let Some((i, cid)) = t.alloc() {
                assert_eq!(i, cid);
                assert!(cid < 128);
                got.push(i);
            }
            assert_eq!(got.len(), 128);
            for i in got {
                t.release(i);
            }
        }
    }

    #[test]
    fn exhaustion_and_double_release_are_harmless() {
        let mut t = TagAllocator::new(2, CidMode::Tagged);
        let a = t.alloc().unwrap();
        let _b = t.alloc().unwrap();
        assert!(t.alloc().is_none());
        t.release(a.0);
        t.release(a.0);
        assert_eq!(t.in_use_count(), 1);
        assert!(t.alloc().is_some());
        assert!(t.alloc().is_none());
    }

    proptest::proptest! {
        #[test]
        fn a_cid_names_exactly_its_slot(slots in 1u16..2048, ops in proptest::collection::vec(0u16..2048, 0..200)) {
            let mut t = TagAllocator::new(slots, CidMode::Tagged);
            let mut live: Vec<(u16, u16)> = Vec::new();
            for op in ops {
                if op % 3 == 0 && !live.is_empty() {
                    let (i, c) = live.swap_remove(op as usize % live.len());
                    t.release(i);
                    proptest::prop_assert_eq!(t.lookup(c), None);
                } else if let Some((i, c)) = t.alloc() {
                    live.push((i, c));
                }
                for &(i, c) in &live {
                    proptest::prop_assert_eq!(t.lookup(c), Some(i));
                }
            }
        }
    }
}
