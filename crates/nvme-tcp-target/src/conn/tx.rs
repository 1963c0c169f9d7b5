//! The transmit queue of a connection.
//!
//! PDU headers, digests and small payloads (Identify pages, log pages) are written into a
//! byte arena; bulk read data is *referenced*: RAM namespace bytes are sent straight from the
//! namespace stripes, `null` data from a static zero page, file data from a bounded buffer
//! pool. [`Tx::flush`] gathers up to [`MAX_IOV`] pieces per `writev`, holding the read locks
//! of the RAM stripes it sends from, and computes the data digest of RAM data under those
//! same locks (from the store's cached block digests when the data is block aligned), so the
//! digest always matches the bytes on the wire.
//!
//! No lock is held while waiting for the peer: the writer is expected to be non-blocking
//! (the server sends with `MSG_DONTWAIT`). When the socket cannot take everything, the unsent
//! part of the RAM data under the held locks is copied into the arena before the locks are
//! dropped and `WouldBlock` is returned, so a host that stops reading delays only its own
//! connection, never writers of the same namespace region, and the bytes sent later are the
//! ones the digest was computed over.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::{Arc, RwLockReadGuard};

use nvme_tcp_wire::digest::Crc32c;

use crate::backend::{AlignedBuf, Backend, Stripe, StripeSpan};
use crate::namespace::Namespace;

// One item never needs more pieces or locks than these limits: its data is at most
// `config::MAX_C2H_DATA` (2 MiB = 32 zero pages, or 3 RAM stripes).
const _: () = assert!(crate::config::MAX_C2H_DATA as usize / ZERO_PAGE <= MAX_IOV);
const _: () =
    assert!(crate::config::MAX_C2H_DATA as usize / crate::backend::RAM_STRIPE < MAX_GUARDS);

/// Most pieces gathered into one `writev`.
pub const MAX_IOV: usize = 64;
/// Most RAM stripe locks held during one `writev`.
const MAX_GUARDS: usize = 32;
/// Size of the static zero page used for `null` reads.
const ZERO_PAGE: usize = 64 * 1024;
static ZEROES: [u8; ZERO_PAGE] = [0u8; ZERO_PAGE];

/// One piece of queued output.
#[derive(Debug)]
pub(crate) enum TxItem {
    /// Bytes in the arena.
    Arena { start: usize, len: usize },
    /// Bytes of a RAM namespace (an index into the connection's namespace table, so that
    /// queuing data costs no reference count traffic); `ddgst_at` is where in the arena the
    /// data digest goes, if it still has to be computed.
    Ram {
        ns: usize,
        offset: u64,
        len: usize,
        ddgst_at: Option<usize>,
    },
    /// Zero bytes.
    Zeroes { len: usize },
    /// Bytes in a pool buffer, returned to the pool once sent.
    Pool { buf: usize, len: usize },
}

impl TxItem {
    fn len(&self) -> usize {
        match self {
            TxItem::Arena { len, .. }
            | TxItem::Ram { len, .. }
            | TxItem::Zeroes { len }
            | TxItem::Pool { len, .. } => *len,
        }
    }
}

/// Fixed-size buffers for data that has to be staged (file reads).
#[derive(Debug)]
pub(crate) struct BufPool {
    bufs: Vec<AlignedBuf>,
    free: Vec<usize>,
    buf_size: usize,
    max_bufs: usize,
}

impl BufPool {
    pub(crate) fn new(buf_size: usize, max_bufs: usize) -> Self {
        Self {
            bufs: Vec::new(),
            free: Vec::new(),
            buf_size,
            max_bufs: max_bufs.max(1),
        }
    }
    /// Buffers that can still be handed out.
    pub(crate) fn available(&self) -> usize {
        self.free.len() + (self.max_bufs - self.bufs.len())
    }
    /// Takes a buffer, allocating it the first time (buffers are reused afterwards).
    pub(crate) fn take(&mut self) -> Option<usize> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        if self.bufs.len() < self.max_bufs {
            self.bufs.push(AlignedBuf::new(self.buf_size));
            return Some(self.bufs.len() - 1);
        }
        None
    }
    pub(crate) fn give_back(&mut self, i: usize) {
        self.free.push(i);
    }
    pub(crate) fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        self.bufs[i].as_mut_slice()
    }
    fn buf(&self, i: usize) -> &[u8] {
        self.bufs[i].as_slice()
    }
}

/// The transmit queue.
#[derive(Debug)]
pub(crate) struct Tx {
    arena: Vec<u8>,
    items: VecDeque<TxItem>,
    /// Bytes of `items[0]` already written.
    front_sent: usize,
    queued: usize,
    /// Bytes written since the connection started.
    sent_total: u64,
    pub(crate) pool: BufPool,
}

impl Tx {
    pub(crate) fn new(pool: BufPool) -> Self {
        Self {
            arena: Vec::with_capacity(64 * 1024),
            items: VecDeque::with_capacity(256),
            front_sent: 0,
            queued: 0,
            sent_total: 0,
            pool,
        }
    }

    /// Bytes waiting to be sent.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes written so far.
    pub(crate) fn sent_total(&self) -> u64 {
        self.sent_total
    }

    /// True if nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, item: TxItem) {
        if item.len() == 0 {
            if let TxItem::Pool { buf, .. } = item {
                self.pool.give_back(buf);
            }
            return;
        }
        self.queued += item.len();
        // Merge adjacent arena pieces so that many small PDUs make one iovec.
        if let (Some(TxItem::Arena { start, len }), TxItem::Arena { start: s2, len: l2 }) =
            (self.items.back_mut(), &item)
            && *start + *len == *s2
        {
            *len += *l2;
            return;
        }
        self.items.push_back(item);
    }

    /// Appends bytes to the arena and queues them.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.push(TxItem::Arena {
            start,
            len: bytes.len(),
        });
    }

    /// Reserves `len` zeroed arena bytes, queues them and returns their offset (for a
    /// digest filled in later).
    pub(crate) fn push_placeholder(&mut self, len: usize) -> usize {
        let start = self.arena.len();
        self.arena.resize(start + len, 0);
        self.push(TxItem::Arena { start, len });
        start
    }

    /// Queues RAM namespace data; its digest (if `ddgst_at`) is computed when sent.
    fn push_ram(&mut self, ns: usize, offset: u64, len: usize, ddgst_at: Option<usize>) {
        self.push(TxItem::Ram {
            ns,
            offset,
            len,
            ddgst_at,
        });
    }

    /// Queues `len` bytes of a RAM namespace at `offset`, followed by their data digest
    /// when `ddgst` (computed at send time, under the same stripe locks as the send).
    pub(crate) fn push_ram_data(&mut self, ns: usize, offset: u64, len: usize, ddgst: bool) {
        let at = ddgst.then_some(self.arena.len());
        self.push_ram(ns, offset, len, at);
        if ddgst {
            self.push_placeholder(4);
        }
    }

    /// Queues zero bytes.
    pub(crate) fn push_zeroes(&mut self, len: usize) {
        self.push(TxItem::Zeroes { len });
    }

    /// Queues `len` bytes of pool buffer `buf`.
    pub(crate) fn push_pool(&mut self, buf: usize, len: usize) {
        self.push(TxItem::Pool { buf, len });
    }

    /// Marks `n` bytes as sent, releasing finished items.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n.min(self.queued);
        self.sent_total += n as u64;
        while n > 0 {
            let Some(front) = self.items.front() else {
                break;
            };
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            if let Some(TxItem::Pool { buf, .. }) = self.items.pop_front() {
                self.pool.give_back(buf);
            }
        }
        if self.items.is_empty() {
            self.arena.clear();
            self.front_sent = 0;
        }
    }

    /// Writes everything queued to `w`. On an error (`WouldBlock` from a non-blocking `w`),
    /// what was written is accounted for and the rest stays queued; RAM data that was under
    /// a lock is copied out first (see the module documentation).
    pub(crate) fn flush<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        nss: &[Arc<Namespace>],
    ) -> io::Result<()> {
        while !self.items.is_empty() {
            self.flush_chunk(w, nss)?;
        }
        Ok(())
    }

    /// Sends one gathered chunk completely.
    fn flush_chunk<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        nss: &[Arc<Namespace>],
    ) -> io::Result<()> {
        // Pass A: choose the items of this chunk.
        let ram_of = |ns: usize| match nss.get(ns).map(|n| n.backend()) {
            Some(Backend::Ram(r)) => Some(r),
            _ => None,
        };
        let mut n_items = 0;
        let mut iovs_needed = 0;
        let mut guards_needed = 0;
        for it in self.items.iter() {
            let (iov, g) = match it {
                TxItem::Arena { .. } | TxItem::Pool { .. } => (1, 0),
                TxItem::Zeroes { len } => (len.div_ceil(ZERO_PAGE).max(1), 0),
                TxItem::Ram {
                    ns, offset, len, ..
                } => match ram_of(*ns) {
                    Some(r) => {
                        let k = r.spans(*offset, *len).count().max(1);
                        (k, k)
                    }
                    None => (1, 0),
                },
            };
            if n_items > 0 && (iovs_needed + iov > MAX_IOV || guards_needed + g > MAX_GUARDS) {
                break;
            }
            iovs_needed += iov;
            guards_needed += g;
            n_items += 1;
        }

        // Pass B: take the stripe read locks (the first item's blocking, in ascending order;
        // later ones only if free, so that no lock is waited for while another is held out
        // of order) and compute pending data digests under them.
        type Guard<'a> = RwLockReadGuard<'a, Stripe>;
        let mut guards: [Option<(Guard<'_>, StripeSpan)>; MAX_GUARDS] =
            std::array::from_fn(|_| None);
        let mut g_at = 0;
        let mut n_ready = 0;
        let mut item_guards = [(0usize, 0usize); MAX_IOV];
        'items: for (idx, it) in self.items.iter_mut().take(n_items).enumerate() {
            if let TxItem::Ram {
                ns,
                offset,
                len,
                ddgst_at,
            } = it
            {
                let Some(ram) = ram_of(*ns) else {
                    return Err(io::Error::other("RAM item without RAM namespace"));
                };
                let first = g_at;
                for span in ram.spans(*offset, *len) {
                    let g = if idx == 0 {
                        ram.read_stripe(span.stripe).map_err(io::Error::other)?
                    } else {
                        match ram.try_read_stripe(span.stripe) {
                            Some(g) => g,
                            None => {
                                for slot in guards.iter_mut().take(g_at).skip(first) {
                                    *slot = None;
                                }
                                break 'items;
                            }
                        }
                    };
                    guards[g_at] = Some((g, span));
                    g_at += 1;
                }
                item_guards[idx] = (first, g_at);
                if let Some(at) = ddgst_at.take() {
                    // Whole cached blocks where possible (see `RamStore::digest_span`).
                    let mut cached = Some(0u32);
                    for (g, s) in guards[first..g_at].iter().flatten() {
                        cached = cached.and_then(|acc| ram.digest_span(g, s, acc));
                    }
                    let digest = cached.unwrap_or_else(|| {
                        let mut crc = Crc32c::new();
                        for (g, s) in guards[first..g_at].iter().flatten() {
                            crc.update(&g[s.start..s.start + s.len]);
                        }
                        crc.finalize()
                    });
                    if let Some(dst) = self.arena.get_mut(at..at + 4) {
                        dst.copy_from_slice(&digest.to_le_bytes());
                    }
                }
            }
            n_ready = idx + 1;
        }

        // Pass C: gather the pieces.
        let mut iov: [IoSlice<'_>; MAX_IOV] = std::array::from_fn(|_| IoSlice::new(&[]));
        let mut n_iov = 0;
        let mut total = 0;
        for (idx, it) in self.items.iter().take(n_ready).enumerate() {
            let mut skip = if idx == 0 { self.front_sent } else { 0 };
            match it {
                TxItem::Arena { start, len } => {
                    let s = &self.arena[start + skip..start + len];
                    iov[n_iov] = IoSlice::new(s);
                    n_iov += 1;
                    total += s.len();
                }
                TxItem::Pool { buf, len } => {
                    let s = &self.pool.buf(*buf)[skip..*len];
                    iov[n_iov] = IoSlice::new(s);
                    n_iov += 1;
                    total += s.len();
                }
                TxItem::Zeroes { len } => {
                    let mut left = len - skip;
                    while left > 0 {
                        let n = left.min(ZERO_PAGE);
                        iov[n_iov] = IoSlice::new(&ZEROES[..n]);
                        n_iov += 1;
                        total += n;
                        left -= n;
                    }
                }
                TxItem::Ram { .. } => {
                    let (from, to) = item_guards[idx];
                    for (g, s) in guards[from..to].iter().flatten() {
                        let piece = &g[s.start..s.start + s.len];
                        if skip >= piece.len() {
                            skip -= piece.len();
                            continue;
                        }
                        iov[n_iov] = IoSlice::new(&piece[skip..]);
                        n_iov += 1;
                        total += piece.len() - skip;
                        skip = 0;
                    }
                }
            }
        }

        // Write the chunk out completely.
        let mut slices = &mut iov[..n_iov];
        let mut written = 0;
        let mut result = Ok(());
        while written < total {
            match w.write_vectored(slices) {
                Ok(0) => {
                    result = Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed"));
                    break;
                }
                Ok(n) => {
                    written += n;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.copy_out_locked(written, n_ready, &guards, &item_guards);
        }
        drop(guards);
        self.advance(written);
        result
    }

    /// Replaces every RAM item among the first `n_ready` that `written` bytes did not finish
    /// by a copy of its bytes in the arena, read under the locks still held in `guards`.
    fn copy_out_locked(
        &mut self,
        mut written: usize,
        n_ready: usize,
        guards: &[Option<(RwLockReadGuard<'_, Stripe>, StripeSpan)>],
        item_guards: &[(usize, usize)],
    ) {
        for (idx, &(from, to)) in item_guards.iter().enumerate().take(n_ready) {
            let Some(it) = self.items.get(idx) else {
                return;
            };
            let skip = if idx == 0 { self.front_sent } else { 0 };
            let left = it.len() - skip;
            if written >= left {
                written -= left;
                continue;
            }
            written = 0;
            let TxItem::Ram { len, .. } = *it else {
                continue;
            };
            let start = self.arena.len();
            for (g, s) in guards[from..to].iter().flatten() {
                self.arena.extend_from_slice(&g[s.start..s.start + s.len]);
            }
            if self.arena.len() - start != len {
                // Cannot happen (the guards cover the item); keep the reference then.
                self.arena.truncate(start);
                continue;
            }
            self.items[idx] = TxItem::Arena { start, len };
        }
    }
}
