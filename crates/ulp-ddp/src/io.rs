//! Per-I/O destination buffers: the one scatter-gather type of the project, [`IoBuf`], and
//! [`DdpIo`] = command ID + buffer.
//!
//! # Ownership
//!
//! In the kernel the device DMAs into block-layer pages the CPU also maps; nothing stops
//! both from writing. In safe Rust the buffer has one owner at a time, and the hand-over
//! follows the DMA-mapping discipline of the kernel series:
//!
//! 1. the ULP moves the caller's [`IoBuf`] into a [`DdpIo`] — no copy, no allocation: the
//!    same vector(s) go to the device and come back;
//! 2. `setup` moves the `DdpIo` into the device's socket context; the device writes received
//!    payload straight into the buffer, as the NIC's DMA does; a failed setup hands it back;
//! 3. bytes the device did not place are copied by the ULP itself through
//!    [`UlpDdpSocket::copy_to_io`](crate::UlpDdpSocket::copy_to_io), and a data digest the
//!    device did not verify is recomputed over the buffer through
//!    [`UlpDdpSocket::read_io`](crate::UlpDdpSocket::read_io) — the model of the CPU
//!    touching DMA-mapped pages, so the ULP never needs a second buffer;
//! 4. `teardown` ends placement; the [`DdpEvent::TeardownDone`](crate::DdpEvent) event gives
//!    the `DdpIo` back, complete.
//!
//! Every offset walk over a buffer goes through [`IoBuf::locate`] / [`SgCursor`]: one walker.

use serde::{Deserialize, Serialize};

/// A data buffer for one command: one contiguous vector or a scatter-gather list of them.
///
/// The command's data occupies the first [`IoBuf::len`] bytes, segment after segment; byte
/// offset `o` of the transfer (the DATAO of a data PDU) maps to one segment through
/// [`IoBuf::locate`]. Empty segments are allowed and skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoBuf {
    /// One contiguous buffer.
    Contig(Vec<u8>),
    /// A scatter-gather list.
    Sgl(Vec<Vec<u8>>),
}

impl Default for IoBuf {
    fn default() -> Self {
        IoBuf::Contig(Vec::new())
    }
}

/// A position in an [`IoBuf`]: segment index, offset in the segment, and the transfer
/// offset it stands for. Lets sequential writes continue without walking from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SgCursor {
    seg: usize,
    in_seg: usize,
    at: u64,
    valid: bool,
}

impl SgCursor {
    /// A cursor that points nowhere (the next write walks from the start).
    pub const NONE: SgCursor = SgCursor {
        seg: 0,
        in_seg: 0,
        at: 0,
        valid: false,
    };

    /// The transfer offset the cursor points at, if it points anywhere.
    pub fn offset(&self) -> Option<u64> {
        self.valid.then_some(self.at)
    }
}

impl IoBuf {
    /// One zeroed contiguous buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        IoBuf::Contig(vec![0; len])
    }

    /// Zeroed segments of `seg_len` bytes (the last one shorter) covering `len`.
    pub fn zeroed_chunks(len: usize, seg_len: usize) -> Self {
        let seg_len = seg_len.max(1);
        let mut segs = Vec::with_capacity(len.div_ceil(seg_len));
        let mut left = len;
        while left > 0 {
            let n = left.min(seg_len);
            segs.push(vec![0; n]);
            left -= n;
        }
        IoBuf::Sgl(segs)
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        match self {
            IoBuf::Contig(v) => v.len(),
            IoBuf::Sgl(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// True if the buffer holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of segments (`nents` of a scatter-gather list).
    pub fn segment_count(&self) -> usize {
        match self {
            IoBuf::Contig(_) => 1,
            IoBuf::Sgl(s) => s.len(),
        }
    }

    /// Segment `i` (empty if out of range).
    pub fn segment(&self, i: usize) -> &[u8] {
        match self {
            IoBuf::Contig(v) if i == 0 => v,
            IoBuf::Contig(_) => &[],
            IoBuf::Sgl(s) => s.get(i).map(Vec::as_slice).unwrap_or(&[]),
        }
    }

    /// Segment `i`, mutable (empty if out of range).
    pub fn segment_mut(&mut self, i: usize) -> &mut [u8] {
        match self {
            IoBuf::Contig(v) if i == 0 => v,
            IoBuf::Contig(_) => &mut [],
            IoBuf::Sgl(s) => s.get_mut(i).map(Vec::as_mut_slice).unwrap_or(&mut []),
        }
    }

    /// The segment index and offset within it of transfer offset `offset`; `None` if `offset`
    /// is at or past the end. Skips empty segments.
    #[inline]
    pub fn locate(&self, offset: usize) -> Option<(usize, usize)> {
        match self {
            IoBuf::Contig(v) => (offset < v.len()).then_some((0, offset)),
            IoBuf::Sgl(s) => {
                let mut base = 0usize;
                for (i, seg) in s.iter().enumerate() {
                    if offset < base + seg.len() {
                        return Some((i, offset - base));
                    }
                    base += seg.len();
                }
                None
            }
        }
    }

    /// True if `len` bytes at `offset` lie inside the buffer.
    #[inline]
    fn covers(&self, offset: u64, len: usize) -> bool {
        offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.len() as u64)
    }

    /// The buffer's bytes in `offset..offset + len`, segment piece by segment piece, in
    /// order: the one walker of a transfer range over the segments. `None` if the range is
    /// not inside the buffer.
    #[inline]
    pub fn chunks(&self, offset: u64, len: usize) -> Option<Chunks<'_>> {
        if !self.covers(offset, len) {
            return None;
        }
        let (seg, off) = if len == 0 {
            (0, 0)
        } else {
            self.locate(offset as usize)?
        };
        Some(Chunks {
            buf: self,
            seg,
            off,
            left: len,
        })
    }

    /// Calls `f` with the buffer's bytes in `offset..offset + len`, segment piece by segment
    /// piece, in order ([`IoBuf::chunks`]). Returns false (calling nothing) if the range is not
    /// inside the buffer.
    #[inline]
    pub fn for_each_chunk(&self, offset: u64, len: usize, f: impl FnMut(&[u8])) -> bool {
        match self.chunks(offset, len) {
            Some(c) => {
                c.for_each(f);
                true
            }
            None => false,
        }
    }

    /// Copies `data` to transfer offset `offset`, continuing from `cursor` when it points at
    /// `offset`, and leaves `cursor` after the write. Returns false (writing nothing) if the
    /// range does not fit.
    pub fn write_at_cursor(&mut self, cursor: &mut SgCursor, offset: u64, data: &[u8]) -> bool {
        if !self.covers(offset, data.len()) {
            return false;
        }
        let (mut seg, mut in_seg) = if cursor.valid && cursor.at == offset {
            (cursor.seg, cursor.in_seg)
        } else {
            match self.locate(offset as usize) {
                Some(p) => p,
                None => {
                    // Only an empty write at the very end gets here.
                    *cursor = SgCursor::NONE;
                    return true;
                }
            }
        };
        let nsegs = self.segment_count();
        let mut rest = data;
        while !rest.is_empty() {
            if seg >= nsegs {
                // A cursor from another buffer; the range was checked, so this is a bug of
                // the caller's: refuse rather than loop.
                *cursor = SgCursor::NONE;
                return false;
            }
            let s = self.segment_mut(seg);
            if in_seg >= s.len() {
                seg += 1;
                in_seg = 0;
                continue;
            }
            let n = rest.len().min(s.len() - in_seg);
            s[in_seg..in_seg + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            in_seg += n;
        }
        *cursor = SgCursor {
            seg,
            in_seg,
            at: offset + data.len() as u64,
            valid: true,
        };
        true
    }

    /// Copies `data` to transfer offset `offset`. Returns false (writing nothing) if the range
    /// does not fit.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> bool {
        let mut cursor = SgCursor::NONE;
        self.write_at_cursor(&mut cursor, offset, data)
    }

    /// Copies `len` bytes starting at transfer offset `offset` onto the end of `out`. Returns
    /// false, copying nothing, if the range is not inside the buffer.
    pub fn copy_out(&self, offset: usize, len: usize, out: &mut Vec<u8>) -> bool {
        self.for_each_chunk(offset as u64, len, |c| out.extend_from_slice(c))
    }

    /// Copies the bytes at transfer offset `offset` into `out`. Returns false (and reads
    /// nothing) if the range does not fit.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> bool {
        let mut at = 0;
        self.for_each_chunk(offset, out.len(), |c| {
            out[at..at + c.len()].copy_from_slice(c);
            at += c.len();
        })
    }

    /// The contiguous vector, if this is [`IoBuf::Contig`].
    pub fn into_vec(self) -> Option<Vec<u8>> {
        match self {
            IoBuf::Contig(v) => Some(v),
            IoBuf::Sgl(_) => None,
        }
    }

    /// All bytes concatenated (a copy; for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.copy_out(0, self.len(), &mut v);
        v
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(v: Vec<u8>) -> Self {
        IoBuf::Contig(v)
    }
}

impl From<Vec<Vec<u8>>> for IoBuf {
    fn from(v: Vec<Vec<u8>>) -> Self {
        IoBuf::Sgl(v)
    }
}

/// The destination buffer of one I/O (`struct ulp_ddp_io`): the command ID whose data the
/// device places, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdpIo {
    /// Command ID the I/O's data PDUs carry. 32-bit as in the kernel's interface; NVMe/TCP
    /// uses 16 bits of it (the CCCID).
    pub command_id: u32,
    /// Destination buffer.
    pub buf: IoBuf,
}

impl DdpIo {
    /// An I/O for `command_id` over `buf`.
    pub fn new(command_id: u32, buf: impl Into<IoBuf>) -> Self {
        Self {
            command_id,
            buf: buf.into(),
        }
    }
}

/// The pieces of a transfer range of an [`IoBuf`], one per segment it touches (see
/// [`IoBuf::chunks`]).
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    buf: &'a IoBuf,
    seg: usize,
    off: usize,
    left: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        while self.left > 0 && self.seg < self.buf.segment_count() {
            let s = self.buf.segment(self.seg);
            let off = self.off;
            self.seg += 1;
            self.off = 0;
            if off >= s.len() {
                continue;
            }
            let n = (s.len() - off).min(self.left);
            self.left -= n;
            return Some(&s[off..off + n]);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_at_spans_segments() {
        let mut b = IoBuf::Sgl(vec![vec![0u8; 3], vec![0u8; 2], vec![0u8; 4]]);
        assert!(b.write_at(2, &[1, 2, 3, 4]));
        assert_eq!(b.to_vec(), [0, 0, 1, 2, 3, 4, 0, 0, 0]);
        let mut out = [0u8; 3];
        assert!(b.read_at(3, &mut out));
        assert_eq!(out, [2, 3, 4]);
    }

    #[test]
    fn write_beyond_the_end_writes_nothing() {
        let mut b = IoBuf::zeroed_chunks(10, 4);
        assert_eq!(b.segment_count(), 3);
        assert!(!b.write_at(8, &[1, 2, 3]));
        assert!(!b.write_at(u64::MAX, &[1]));
        assert_eq!(b.to_vec(), vec![0u8; 10]);
        assert!(b.write_at(10, &[]));
    }

    #[test]
    fn cursor_write_resumes_and_skips_empty_segments() {
        let mut b = IoBuf::Sgl(vec![vec![0u8; 3], vec![], vec![0u8; 4]]);
        let mut cur = SgCursor::NONE;
        assert!(b.write_at_cursor(&mut cur, 1, &[1, 2, 3]));
        assert_eq!(cur.offset(), Some(4));
        assert!(b.write_at_cursor(&mut cur, 4, &[4, 5, 6]));
        assert_eq!(b.to_vec(), [0, 1, 2, 3, 4, 5, 6]);
        assert!(!b.write_at_cursor(&mut cur, 7, &[9]));
        assert_eq!(b.to_vec(), [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn locate_skips_empty_segments() {
        let b = IoBuf::Sgl(vec![vec![0; 3], vec![], vec![0; 2]]);
        assert_eq!(b.len(), 5);
        assert_eq!(b.locate(3), Some((2, 0)));
        assert_eq!(b.locate(5), None);
    }

    #[test]
    fn copy_out_spans_segments_and_refuses_overruns() {
        let b = IoBuf::Sgl(vec![vec![1, 2], vec![3], vec![4, 5, 6]]);
        let mut out = Vec::new();
        assert!(b.copy_out(1, 4, &mut out));
        assert_eq!(out, [2, 3, 4, 5]);
        out.clear();
        assert!(!b.copy_out(3, 4, &mut out));
        assert!(!b.copy_out(usize::MAX, 2, &mut out));
        assert!(out.is_empty());
    }
}
