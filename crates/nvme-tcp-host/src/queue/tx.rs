//! The transmit queue of a connection.
//!
//! PDU headers, padding and digests are staged in one buffer. Payload (in-capsule data,
//! H2CData) is either copied there too (copy mode, the default: the bytes to send are one
//! contiguous slice) or, in zero-copy mode, referenced in the command's own buffer and sent
//! from there with a gather write; the data digest is then computed over the caller's buffer.
//! A command whose buffer leaves the queue (it completed) while some of its payload is still
//! unsent has that rest copied into the staging buffer first, so a partly sent PDU is always
//! finished with the right bytes.

use std::collections::VecDeque;
use std::io::IoSlice;

use nvme_tcp_wire::digest::Crc32c;

use super::Slot;
use crate::buf::IoBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `buf[start..end]` of the staging buffer.
    Staged { start: usize, end: usize },
    /// `len` bytes at transfer offset `off` of slot `idx`'s buffer.
    Data { idx: u16, off: usize, len: usize },
}

#[derive(Debug, Default)]
pub(crate) struct TxQueue {
    buf: Vec<u8>,
    /// Copy mode: bytes of `buf` already sent.
    off: usize,
    zero_copy: bool,
    pieces: VecDeque<Piece>,
}

/// CRC32C over `len` bytes at transfer offset `off` of `buf` (which the caller checked).
pub(crate) fn crc_range(buf: &IoBuf, off: usize, len: usize) -> u32 {
    let mut c = Crc32c::new();
    buf.for_each_chunk(off as u64, len, |s| {
        c.update(s);
    });
    c.finalize()
}

impl TxQueue {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    pub(crate) fn set_zero_copy(&mut self, on: bool) {
        if on && !self.zero_copy {
            // What waits in the copy-mode buffer becomes one staged piece.
            if self.off < self.buf.len() {
                self.pieces.push_back(Piece::Staged {
                    start: self.off,
                    end: self.buf.len(),
                });
            } else {
                self.buf.clear();
            }
            self.off = 0;
            self.zero_copy = true;
        } else if !on && self.zero_copy && self.pieces.is_empty() {
            self.buf.clear();
            self.zero_copy = false;
        }
    }

    pub(crate) fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    pub(crate) fn is_empty(&self) -> bool {
        if self.zero_copy {
            self.pieces.is_empty()
        } else {
            self.off == self.buf.len()
        }
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.off = 0;
        self.pieces.clear();
    }

    /// Appends bytes to send (headers, padding, digests).
    pub(crate) fn stage(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            // No empty piece: a gather write of nothing would look like a closed socket.
            return;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        if self.zero_copy {
            let end = self.buf.len();
            if let Some(Piece::Staged { end: e, .. }) = self.pieces.back_mut()
                && *e == start
            {
                *e = end;
            } else {
                self.pieces.push_back(Piece::Staged { start, end });
            }
        }
    }

    /// Appends `len` payload bytes at transfer offset `off` of slot `idx`'s buffer, then their
    /// data digest if `ddgst` is `Some`: the digest given, or else computed here. The range
    /// must be inside `buf`.
    pub(crate) fn data(
        &mut self,
        idx: u16,
        buf: &IoBuf,
        off: usize,
        len: usize,
        ddgst: Option<Option<u32>>,
    ) {
        if len == 0 {
            return;
        }
        if self.zero_copy {
            let d = ddgst.map(|known| known.unwrap_or_else(|| crc_range(buf, off, len)));
            self.pieces.push_back(Piece::Data { idx, off, len });
            if let Some(d) = d {
                self.stage(&d.to_le_bytes());
            }
        } else {
            let start = self.buf.len();
            buf.copy_out(off, len, &mut self.buf);
            if let Some(known) = ddgst {
                // Digest over the bytes just copied, while they are in cache.
                let d = known.unwrap_or_else(|| {
                    let mut c = Crc32c::new();
                    c.update(&self.buf[start..]);
                    c.finalize()
                });
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
        }
    }

    fn piece_slices<'a>(
        &'a self,
        p: &Piece,
        slots: &'a [Slot],
        mut f: impl FnMut(&'a [u8]) -> bool,
    ) {
        match *p {
            Piece::Staged { start, end } => {
                f(&self.buf[start..end]);
            }
            Piece::Data { idx, off, len } => {
                let Some(buf) = slots.get(idx as usize).and_then(|s| s.buf.as_ref()) else {
                    return;
                };
                for s in buf.chunks(off as u64, len).into_iter().flatten() {
                    if !f(s) {
                        return;
                    }
                }
            }
        }
    }

    /// The next contiguous bytes to send.
    pub(crate) fn pending<'a>(&'a self, slots: &'a [Slot]) -> &'a [u8] {
        if !self.zero_copy {
            return &self.buf[self.off..];
        }
        let mut out: &[u8] = &[];
        if let Some(p) = self.pieces.front() {
            self.piece_slices(p, slots, |s| {
                out = s;
                false
            });
        }
        out
    }

    /// Fills `out` with the bytes to send, in order; returns the number of slices used.
    pub(crate) fn iovecs<'a>(&'a self, slots: &'a [Slot], out: &mut [IoSlice<'a>]) -> usize {
        if !self.zero_copy {
            if out.is_empty() || self.off == self.buf.len() {
                return 0;
            }
            out[0] = IoSlice::new(&self.buf[self.off..]);
            return 1;
        }
        let mut n = 0;
        for p in &self.pieces {
            if n == out.len() {
                break;
            }
            self.piece_slices(p, slots, |s| {
                if n < out.len() {
                    out[n] = IoSlice::new(s);
                    n += 1;
                }
                n < out.len()
            });
        }
        n
    }

    /// `n` bytes from the front were sent.
    pub(crate) fn consumed(&mut self, mut n: usize) {
        if !self.zero_copy {
            self.off = (self.off + n).min(self.buf.len());
            if self.off == self.buf.len() {
                self.buf.clear();
                self.off = 0;
            }
            return;
        }
        while n > 0 {
            let Some(p) = self.pieces.front_mut() else {
                break;
            };
            match p {
                Piece::Staged { start, end } => {
                    let k = (*end - *start).min(n);
                    *start += k;
                    n -= k;
                    if start == end {
                        self.pieces.pop_front();
                    }
                }
                Piece::Data { off, len, .. } => {
                    let k = (*len).min(n);
                    *off += k;
                    *len -= k;
                    n -= k;
                    if *len == 0 {
                        self.pieces.pop_front();
                    }
                }
            }
        }
        if self.pieces.is_empty() {
            self.buf.clear();
        }
    }

    /// Slot `idx`'s buffer is about to leave the queue: copy its unsent payload into the
    /// staging buffer.
    pub(crate) fn materialize(&mut self, idx: u16, buf: &IoBuf) {
        if !self.zero_copy {
            return;
        }
        for i in 0..self.pieces.len() {
            if let Piece::Data { idx: pi, off, len } = self.pieces[i]
                && pi == idx
            {
                let start = self.buf.len();
                buf.copy_out(off, len, &mut self.buf);
                let end = self.buf.len();
                self.pieces[i] = Piece::Staged { start, end };
            }
        }
    }
}
