//! Per-socket command-ID → buffers table.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use ulp_ddp::DdpIo;

/// A multiplicative hasher for small integer keys (command IDs, socket IDs); the keys are
/// chosen by the ULP, not by the network, so flooding is not a concern.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// One registered I/O.
#[derive(Debug)]
pub(crate) struct IoSlot {
    pub io: DdpIo,
    /// Total bytes of the buffers.
    pub len: u64,
    /// Distinguishes successive registrations of the same command ID.
    pub generation: u32,
}

/// Registered I/Os of a socket: a direct-indexed table when command IDs are linear
/// (`0..queue_size`), a hash map otherwise.
#[derive(Debug)]
pub(crate) enum IoTable {
    Linear(Vec<Option<IoSlot>>),
    Sparse(IdMap<u16, IoSlot>),
}

impl IoTable {
    pub(crate) fn new(full_ccid_range: bool, queue_size: u32) -> Self {
        if full_ccid_range {
            IoTable::Sparse(IdMap::default())
        } else {
            let n = queue_size.min(u32::from(u16::MAX) + 1) as usize;
            IoTable::Linear((0..n).map(|_| None).collect())
        }
    }

    pub(crate) fn get(&self, cid: u16) -> Option<&IoSlot> {
        match self {
            IoTable::Linear(v) => v.get(usize::from(cid)).and_then(Option::as_ref),
            IoTable::Sparse(m) => m.get(&cid),
        }
    }

    pub(crate) fn get_mut(&mut self, cid: u16) -> Option<&mut IoSlot> {
        match self {
            IoTable::Linear(v) => v.get_mut(usize::from(cid)).and_then(Option::as_mut),
            IoTable::Sparse(m) => m.get_mut(&cid),
        }
    }

    /// Inserts; hands the slot back if the command ID is taken or out of the table.
    pub(crate) fn insert(&mut self, cid: u16, slot: IoSlot) -> Result<(), IoSlot> {
        match self {
            IoTable::Linear(v) => match v.get_mut(usize::from(cid)) {
                Some(e @ None) => {
                    *e = Some(slot);
                    Ok(())
                }
                _ => Err(slot),
            },
            IoTable::Sparse(m) => {
                if m.contains_key(&cid) {
                    return Err(slot);
                }
                m.insert(cid, slot);
                Ok(())
            }
        }
    }

    pub(crate) fn remove(&mut self, cid: u16) -> Option<IoSlot> {
        match self {
            IoTable::Linear(v) => v.get_mut(usize::from(cid)).and_then(Option::take),
            IoTable::Sparse(m) => m.remove(&cid),
        }
    }

    pub(crate) fn drain(&mut self) -> Vec<DdpIo> {
        match self {
            IoTable::Linear(v) => v
                .iter_mut()
                .filter_map(Option::take)
                .map(|s| s.io)
                .collect(),
            IoTable::Sparse(m) => m.drain().map(|(_, s)| s.io).collect(),
        }
    }
}
