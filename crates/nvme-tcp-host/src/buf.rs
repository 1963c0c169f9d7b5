//! Caller-provided data buffers, passed by ownership: a command takes its buffer and the
//! completion hands it back, so the queue can place received data into it directly without
//! borrowing across an asynchronous boundary.

/// A data buffer for one command: one contiguous vector or a scatter-gather list of them.
///
/// The command's data occupies the first [`IoBuf::len`] bytes, segment after segment; byte
/// offset `o` of the transfer (the DATAO of a data PDU) maps to one segment through
/// [`IoBuf::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoBuf {
    /// One contiguous buffer.
    Contig(Vec<u8>),
    /// A scatter-gather list; empty segments are allowed and skipped.
    Sgl(Vec<Vec<u8>>),
}

impl IoBuf {
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

    /// Number of segments.
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

    /// Copies `len` bytes starting at transfer offset `offset` into `out` (for the transmit
    /// path). Returns false, copying nothing, if the range is not inside the buffer.
    pub fn copy_out(&self, offset: usize, len: usize, out: &mut Vec<u8>) -> bool {
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return false;
        }
        if len == 0 {
            return true;
        }
        let Some((mut seg, mut off)) = self.locate(offset) else {
            return false;
        };
        let mut left = len;
        while left > 0 {
            let s = self.segment(seg);
            let n = (s.len() - off).min(left);
            out.extend_from_slice(&s[off..off + n]);
            left -= n;
            seg += 1;
            off = 0;
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_skips_empty_segments() {
        let b = IoBuf::Sgl(vec![vec![0; 3], vec![], vec![0; 2]]);
        assert_eq!(b.len(), 5);
        assert_eq!(b.locate(0), Some((0, 0)));
        assert_eq!(b.locate(2), Some((0, 2)));
        assert_eq!(b.locate(3), Some((2, 0)));
        assert_eq!(b.locate(4), Some((2, 1)));
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
