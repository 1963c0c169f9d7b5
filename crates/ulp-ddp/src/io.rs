//! Per-I/O destination buffers: a command ID and a scatter-gather list.
//!
//! # Ownership
//!
//! In the kernel the device DMAs into block-layer pages the CPU also maps; nothing stops
//! both from writing. In safe Rust the buffers have one owner at a time, and the hand-over
//! follows the DMA-mapping discipline of the kernel series:
//!
//! 1. the ULP builds a [`DdpIo`] whose [`SgList`] owns its segments (`Box<[u8]>`);
//! 2. `setup` moves the `DdpIo` into the device; the device writes received payload
//!    straight into the segments — one copy, segment payload → destination, as the NIC's
//!    DMA does; a failed setup hands the `DdpIo` back;
//! 3. bytes the device did not place (the segment's verdict does not list them) are copied
//!    by the ULP itself through `copy_to_io`, the model of the CPU writing to a DMA-mapped
//!    page — so the ULP never needs a second buffer;
//! 4. `teardown` ends placement at once; `teardown_done` gives the `DdpIo` back, complete.
//!
//! No `unsafe`, no lock on the data path, no copy beyond the one the hardware would make.

use serde::{Deserialize, Serialize};

/// A scatter-gather list of owned destination segments, in data-offset order: byte `o` of
/// the I/O's data lives in the segment that covers `o` when the segments are laid end to end.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SgList {
    segments: Vec<Box<[u8]>>,
}

impl SgList {
    /// A list over `segments`.
    pub fn new(segments: Vec<Box<[u8]>>) -> Self {
        Self { segments }
    }

    /// A list of one zeroed segment of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self::new(vec![vec![0u8; len].into_boxed_slice()])
    }

    /// A list of zeroed segments of `seg_len` bytes (the last one shorter) covering `len`.
    pub fn zeroed_chunks(len: usize, seg_len: usize) -> Self {
        let seg_len = seg_len.max(1);
        let mut segments = Vec::with_capacity(len.div_ceil(seg_len));
        let mut left = len;
        while left > 0 {
            let n = left.min(seg_len);
            segments.push(vec![0u8; n].into_boxed_slice());
            left -= n;
        }
        Self::new(segments)
    }

    /// Number of entries (`nents`).
    pub fn nents(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len() as u64).sum()
    }

    /// True if the list holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments.
    pub fn segments(&self) -> &[Box<[u8]>] {
        &self.segments
    }

    /// The segments, mutably.
    pub fn segments_mut(&mut self) -> &mut [Box<[u8]>] {
        &mut self.segments
    }

    /// The segments, by value.
    pub fn into_segments(self) -> Vec<Box<[u8]>> {
        self.segments
    }

    /// Copies `data` to data offset `offset`. Returns false (and writes nothing) if the
    /// range does not fit in the list.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return false;
        };
        if end > self.len() {
            return false;
        }
        let mut off = offset;
        let mut rest = data;
        for seg in self.segments.iter_mut() {
            if rest.is_empty() {
                break;
            }
            let seg_len = seg.len() as u64;
            if off >= seg_len {
                off -= seg_len;
                continue;
            }
            let start = off as usize; // < seg_len, so fits usize
            let n = rest.len().min(seg.len() - start);
            seg[start..start + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            off = 0;
        }
        true
    }

    /// Copies the bytes at data offset `offset` into `out`. Returns false (and reads
    /// nothing) if the range does not fit in the list.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(out.len() as u64) else {
            return false;
        };
        if end > self.len() {
            return false;
        }
        let mut off = offset;
        let mut rest = &mut out[..];
        for seg in self.segments.iter() {
            if rest.is_empty() {
                break;
            }
            let seg_len = seg.len() as u64;
            if off >= seg_len {
                off -= seg_len;
                continue;
            }
            let start = off as usize;
            let n = rest.len().min(seg.len() - start);
            rest[..n].copy_from_slice(&seg[start..start + n]);
            rest = &mut rest[n..];
            off = 0;
        }
        true
    }

    /// All bytes, laid end to end (for tests and diagnostics; allocates).
    pub fn to_vec(&self) -> Vec<u8> {
        self.segments
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }
}

impl From<Vec<Box<[u8]>>> for SgList {
    fn from(segments: Vec<Box<[u8]>>) -> Self {
        Self::new(segments)
    }
}

impl From<Vec<u8>> for SgList {
    fn from(buf: Vec<u8>) -> Self {
        Self::new(vec![buf.into_boxed_slice()])
    }
}

/// The destination buffers of one I/O (`struct ulp_ddp_io`): the command ID whose data
/// the device places, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdpIo {
    /// Command ID (NVMe CID) the I/O's data PDUs carry.
    pub command_id: u16,
    /// Destination buffers.
    pub sgl: SgList,
}

impl DdpIo {
    /// An I/O for `command_id` over `sgl`.
    pub fn new(command_id: u16, sgl: impl Into<SgList>) -> Self {
        Self {
            command_id,
            sgl: sgl.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_at_spans_segments() {
        let mut sgl = SgList::new(vec![
            vec![0u8; 3].into_boxed_slice(),
            vec![0u8; 2].into_boxed_slice(),
            vec![0u8; 4].into_boxed_slice(),
        ]);
        assert!(sgl.write_at(2, &[1, 2, 3, 4]));
        assert_eq!(sgl.to_vec(), [0, 0, 1, 2, 3, 4, 0, 0, 0]);
        let mut out = [0u8; 3];
        assert!(sgl.read_at(3, &mut out));
        assert_eq!(out, [2, 3, 4]);
    }

    #[test]
    fn write_beyond_the_end_writes_nothing() {
        let mut sgl = SgList::zeroed_chunks(10, 4);
        assert_eq!(sgl.nents(), 3);
        assert!(!sgl.write_at(8, &[1, 2, 3]));
        assert!(!sgl.write_at(u64::MAX, &[1]));
        assert_eq!(sgl.to_vec(), vec![0u8; 10]);
        assert!(sgl.write_at(10, &[]));
    }
}
