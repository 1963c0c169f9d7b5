//! The per-socket receive state machine: PDU framing, placement, digest verification and
//! resync.
//!
//! States (named as in the kernel series' resync description):
//!
//! * **in sync** — the engine knows where every PDU starts; it parses each header,
//!   places C2HData payload of registered command IDs and verifies data digests;
//! * **resync pending** — framing was lost; the engine found a plausible header, follows
//!   PLEN from it speculatively (checking every header it reaches), asks the ULP to
//!   confirm the latest header it reached and places nothing;
//! * **searching** — no framing: every segment is scanned for a plausible header.
//!
//! A segment after a gap keeps framing when the gap lies inside the current PDU, after
//! its header (a lost data-only segment needs no resync); that PDU's digest is then not
//! verified. Any other gap, or a header that fails the checks, loses framing.
//!
//! Sequence numbers already processed are never processed again: a retransmitted or
//! duplicated segment is passed through untouched (its verdict says nothing was placed or
//! verified), a partly new one is processed from the first new byte. After a resync, only
//! PDUs starting at or after the highest sequence number seen before the confirmation are
//! offloaded: every byte is placed, and fed to a digest, at most once, and never after
//! the receiver may have handed another copy of it (kept in its out-of-order queue) to the
//! ULP.

use crate::header::{HeaderRules, MAX_HDR, PduLayout, Progress};
use crate::seq;
use crate::table::{IoSlot, IoTable};
use crate::verdict::SegmentVerdict;
use crate::{Diagnostics, FlowInfo, SyncState};
use nvme_tcp_wire::digest::Crc32c;
use nvme_tcp_wire::pdu::CH_LEN;
use ulp_ddp::{DdpIo, ResyncFlags, ResyncTracker, SgCursor, Stats};

/// Largest payload the engine accepts in one segment (sequence arithmetic needs it well
/// below 2^31). Larger "segments" are passed through and cost the framing.
pub(crate) const MAX_SEGMENT: usize = 1 << 24;

/// Largest TCP receive window (RFC 7323: 2^30 bytes); a segment ending further ahead of
/// everything seen so far does not move the high-water mark.
const MAX_WINDOW: i32 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    InSync,
    /// Speculative framing; `pending` is the last header the ULP was asked to confirm.
    Speculating {
        pending: Option<u32>,
    },
    Searching,
}

/// Headers followed speculatively after a request before the request is repeated for the
/// current header (in case the ULP had already passed the first one when it arrived).
const RE_REQUEST_PDUS: u32 = 16;

/// Requests of the current speculation kept acceptable: a confirmation of any of them, if
/// the framing followed since still holds, puts the socket back in sync. With
/// [`RE_REQUEST_PDUS`], answers up to 64 PDUs late are accepted.
const REQUESTS_KEPT: usize = 4;

/// The resync requests made for the current speculative framing (a small ring).
#[derive(Debug, Clone, Copy, Default)]
struct Requests {
    seqs: [u32; REQUESTS_KEPT],
    len: usize,
    next: usize,
    /// Headers followed since the last request.
    since: u32,
}

impl Requests {
    fn clear(&mut self) {
        *self = Requests::default();
    }
    fn push(&mut self, seq: u32) {
        self.seqs[self.next] = seq;
        self.next = (self.next + 1) % REQUESTS_KEPT;
        self.len = (self.len + 1).min(REQUESTS_KEPT);
        self.since = 0;
    }
    fn contains(&self, seq: u32) -> bool {
        self.seqs[..self.len].contains(&seq)
    }
}

/// Where the current PDU's data goes.
#[derive(Debug, Clone, Copy)]
struct Place {
    cid: u16,
    generation: u32,
    datao: u64,
    /// Where the next write goes, if known.
    cursor: SgCursor,
}

#[derive(Debug, Clone, Copy)]
struct Pdu {
    /// A PDU has begun (its first byte was seen or its start is known).
    started: bool,
    start: u32,
    /// Bytes of the PDU consumed.
    off: u32,
    hdr: [u8; MAX_HDR],
    /// Header bytes to collect: the common header first, then the whole header.
    hdr_need: u32,
    layout: Option<PduLayout>,
    /// Tracked in sync from its first byte, at or after the high-water mark.
    offload: bool,
    /// Every data byte so far went into the digest.
    crc_intact: bool,
    place: Option<Place>,
    ddgst: [u8; 4],
}

impl Pdu {
    const IDLE: Pdu = Pdu {
        started: false,
        start: 0,
        off: 0,
        hdr: [0; MAX_HDR],
        hdr_need: CH_LEN as u32,
        layout: None,
        offload: false,
        crc_intact: false,
        place: None,
        ddgst: [0; 4],
    };
}

/// Outcome of feeding bytes to the tracker.
enum Feed {
    Done,
    /// Framing lost; resume the search at this index of the fed slice.
    Lost {
        resume: usize,
    },
}

pub(crate) struct Flow {
    rules: HeaderRules,
    crc_offload: bool,
    pub(crate) ios: IoTable,
    next_generation: u32,
    mode: Mode,
    /// Next expected sequence number (meaningless while searching).
    next_seq: u32,
    /// Highest sequence number seen in any segment (exclusive), within a TCP window of
    /// the previous value.
    seen: Option<u32>,
    /// After a resync, PDUs starting before this are not offloaded (the value of `seen`
    /// when the resync was confirmed).
    floor: Option<u32>,
    pdu: Pdu,
    crc: Crc32c,
    /// Requests made for the current speculative framing.
    requests: Requests,
    /// PDUs begun (in sync or speculating): the clock of the modelled ULP latencies.
    pdus_started: u64,
}

impl Flow {
    pub(crate) fn new(
        rules: HeaderRules,
        crc_offload: bool,
        ios: IoTable,
        next_pdu_seq: Option<u32>,
    ) -> Self {
        let (mode, next_seq) = match next_pdu_seq {
            Some(s) => (Mode::InSync, s),
            None => (Mode::Searching, 0),
        };
        Self {
            rules,
            crc_offload,
            ios,
            next_generation: 0,
            mode,
            next_seq,
            seen: next_pdu_seq,
            floor: None,
            pdu: Pdu::IDLE,
            crc: Crc32c::new(),
            requests: Requests::default(),
            pdus_started: 0,
        }
    }

    /// PDUs begun so far (in sync or speculating).
    pub(crate) fn pdus_started(&self) -> u64 {
        self.pdus_started
    }

    pub(crate) fn sync_state(&self) -> SyncState {
        match self.mode {
            Mode::InSync => SyncState::InSync,
            Mode::Speculating { pending } => SyncState::ResyncPending { seq: pending },
            Mode::Searching => SyncState::Searching,
        }
    }

    pub(crate) fn info(&self) -> FlowInfo {
        FlowInfo {
            state: self.sync_state(),
            expected_seq: (self.mode != Mode::Searching).then_some(self.next_seq),
            high_water: self.seen,
        }
    }

    pub(crate) fn register(&mut self, cid: u16, io: DdpIo) -> Result<(), DdpIo> {
        let len = io.buf.len() as u64;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.ios
            .insert(
                cid,
                IoSlot {
                    io,
                    len,
                    generation,
                },
            )
            .map_err(|s| s.io)
    }

    /// The ULP confirmed a resync request: the header at `seq` is real. Accepted while the
    /// framing followed from that header still holds, however many PDUs later the
    /// confirmation arrives (within the kept requests).
    pub(crate) fn resync(&mut self, seq: u32, diag: &mut Diagnostics) {
        match self.mode {
            Mode::Speculating { .. } if self.requests.contains(seq) => {
                self.requests.clear();
                self.mode = Mode::InSync;
                // Bytes seen before now may sit in the receiver's out-of-order queue in
                // another copy, or have been placed already: offload restarts after them.
                self.floor = match self.seen {
                    Some(s) if seq::before(self.next_seq, s) => Some(s),
                    _ => Some(self.next_seq),
                };
                diag.resync_confirmed += 1;
            }
            _ => diag.resync_ignored += 1,
        }
    }

    pub(crate) fn on_segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        v: &mut SegmentVerdict,
        stats: &mut Stats,
        diag: &mut Diagnostics,
        resync: &ResyncTracker,
    ) {
        v.clear();
        if payload.is_empty() {
            return;
        }
        diag.segments += 1;
        if payload.len() > MAX_SEGMENT {
            diag.oversized_segments += 1;
            self.lose_sync(stats, diag);
            return;
        }
        let len = payload.len() as u32;
        let mut cursor = 0usize;
        if self.mode != Mode::Searching {
            let d = seq::diff(seq, self.next_seq);
            if d > 0 {
                diag.gaps += 1;
                if !self.skip_gap(d as u32) {
                    self.mode = Mode::Searching;
                    self.pdu = Pdu::IDLE;
                    self.requests.clear();
                    diag.lost_sync += 1;
                }
            } else if d < 0 {
                let behind = d.unsigned_abs();
                if behind >= len {
                    diag.old_segments += 1;
                    return;
                }
                diag.partial_segments += 1;
                cursor = behind as usize;
            }
            // The crc bit can only hold for a segment processed whole, in sync, from the
            // expected sequence number.
            v.crc = self.mode == Mode::InSync && self.crc_offload && d == 0;
        }
        loop {
            if self.mode == Mode::Searching {
                v.crc = false;
                match self.rules.find_candidate(&payload[cursor..]) {
                    None => break,
                    Some(i) => {
                        cursor += i;
                        diag.candidates += 1;
                        self.mode = Mode::Speculating { pending: None };
                        self.pdu = Pdu::IDLE;
                        self.next_seq = seq.wrapping_add(cursor as u32);
                    }
                }
            }
            let at = seq.wrapping_add(cursor as u32);
            match self.feed(at, &payload[cursor..], v, stats, diag, resync) {
                Feed::Done => break,
                Feed::Lost { resume } => {
                    v.crc = false;
                    cursor += resume.max(1);
                    if cursor >= payload.len() {
                        break;
                    }
                }
            }
        }
        let end = seq.wrapping_add(len);
        match self.seen {
            None => self.seen = Some(end),
            Some(s) if (1..=MAX_WINDOW).contains(&seq::diff(end, s)) => self.seen = Some(end),
            Some(_) => {}
        }
        if v.ddp() {
            stats.rx_nvme_tcp_packets += 1;
        }
    }

    fn lose_sync(&mut self, stats: &mut Stats, diag: &mut Diagnostics) {
        if self.mode == Mode::InSync {
            stats.rx_nvme_tcp_drop += 1;
        }
        if self.mode != Mode::Searching {
            diag.lost_sync += 1;
        }
        self.mode = Mode::Searching;
        self.pdu = Pdu::IDLE;
        self.requests.clear();
    }

    /// A gap of `gap` bytes before the segment: keeps framing if it lies inside the
    /// current PDU after its header.
    fn skip_gap(&mut self, gap: u32) -> bool {
        let Some(layout) = self.pdu.layout else {
            return false;
        };
        if !self.pdu.started || gap > layout.plen - self.pdu.off {
            return false;
        }
        self.pdu.off += gap;
        self.pdu.crc_intact = false;
        if let Some(p) = self.pdu.place.as_mut() {
            p.cursor = SgCursor::NONE;
        }
        self.next_seq = self.next_seq.wrapping_add(gap);
        if self.pdu.off == layout.plen {
            self.end_pdu();
        }
        true
    }

    fn begin_pdu(&mut self, start: u32) {
        self.pdus_started += 1;
        let offload =
            self.mode == Mode::InSync && self.floor.is_none_or(|f| !seq::before(start, f));
        if offload {
            // Past the floor: it has done its job. Kept, it would compare as "after" every
            // sequence number 2^31 bytes later and switch offload off for the next 2 GiB.
            self.floor = None;
        }
        self.pdu = Pdu {
            started: true,
            start,
            offload,
            crc_intact: offload,
            ..Pdu::IDLE
        };
    }

    fn end_pdu(&mut self) {
        self.pdu.started = false;
        self.pdu.layout = None;
    }

    /// Feeds in-order bytes starting at `seq` (== `next_seq`).
    fn feed(
        &mut self,
        seq: u32,
        data: &[u8],
        v: &mut SegmentVerdict,
        stats: &mut Stats,
        diag: &mut Diagnostics,
        resync: &ResyncTracker,
    ) -> Feed {
        let mut pos = 0usize;
        while pos < data.len() {
            let cur = seq.wrapping_add(pos as u32);
            if !self.pdu.started {
                self.begin_pdu(cur);
            }
            if !self.pdu.offload {
                v.crc = false;
            }
            let Some(layout) = self.pdu.layout else {
                // Collecting the header.
                let have = self.pdu.off as usize;
                let need = self.pdu.hdr_need as usize;
                let n = (need - have).min(data.len() - pos);
                self.pdu.hdr[have..have + n].copy_from_slice(&data[pos..pos + n]);
                self.pdu.off += n as u32;
                pos += n;
                self.next_seq = seq.wrapping_add(pos as u32);
                if have + n < need {
                    continue;
                }
                // In sync, the wire layer's rules; while speculating, the candidate test.
                let candidate = self.mode != Mode::InSync;
                let ok = match self.rules.progress(&self.pdu.hdr[..need], candidate) {
                    Some(Progress::Need(n)) => {
                        self.pdu.hdr_need = n as u32;
                        true
                    }
                    Some(Progress::Done(layout)) => {
                        self.header_done(layout, v, stats, resync);
                        true
                    }
                    None => false,
                };
                if !ok {
                    diag.bad_headers += 1;
                    let d = seq::diff(self.pdu.start, seq);
                    let resume = if d >= 0 { d as usize + 1 } else { pos };
                    self.lose_sync(stats, diag);
                    return Feed::Lost { resume };
                }
                if self.pdu.layout.is_some_and(|l| l.plen == self.pdu.off) {
                    self.end_pdu();
                }
                continue;
            };
            let off = self.pdu.off;
            let rest = data.len() - pos;
            let n = if off < layout.data_start {
                ((layout.data_start - off) as usize).min(rest)
            } else if off < layout.data_end {
                let n = ((layout.data_end - off) as usize).min(rest);
                if self.pdu.offload {
                    let chunk = &data[pos..pos + n];
                    if self.pdu.crc_intact && self.crc_offload && layout.ddgst {
                        self.crc.update(chunk);
                    }
                    if !self.pdu.crc_intact {
                        v.crc = false;
                    }
                    self.place_chunk(cur, off - layout.data_start, chunk, v, stats, diag);
                }
                n
            } else {
                let n = ((layout.plen - off) as usize).min(rest);
                if layout.ddgst {
                    let i = (off - layout.data_end) as usize;
                    let m = n.min(4usize.saturating_sub(i));
                    if let Some(dst) = self.pdu.ddgst.get_mut(i..i + m) {
                        dst.copy_from_slice(&data[pos..pos + m]);
                    }
                    let intact = self.pdu.offload && self.pdu.crc_intact && self.crc_offload;
                    if !intact {
                        v.crc = false;
                    } else if off + n as u32 == layout.plen {
                        if self.crc.finalize() == u32::from_le_bytes(self.pdu.ddgst) {
                            v.digests_verified = v.digests_verified.saturating_add(1);
                            diag.ddgst_ok += 1;
                        } else {
                            v.digests_failed = v.digests_failed.saturating_add(1);
                            v.crc = false;
                            diag.ddgst_bad += 1;
                        }
                    }
                }
                n
            };
            self.pdu.off += n as u32;
            pos += n;
            self.next_seq = seq.wrapping_add(pos as u32);
            if self.pdu.off == layout.plen {
                self.end_pdu();
            }
        }
        Feed::Done
    }

    fn header_done(
        &mut self,
        layout: PduLayout,
        v: &mut SegmentVerdict,
        stats: &mut Stats,
        resync: &ResyncTracker,
    ) {
        self.pdu.layout = Some(layout);
        if let Mode::Speculating { .. } = self.mode {
            // One request per speculative framing: the first header found, then again every
            // RE_REQUEST_PDUS headers while no confirmation came. In between the framing is
            // followed and checked header by header; a late confirmation of any kept request
            // is accepted while it holds.
            self.requests.since += 1;
            if self.requests.len == 0 || self.requests.since >= RE_REQUEST_PDUS {
                let at = self.pdu.start;
                self.mode = Mode::Speculating { pending: Some(at) };
                self.requests.push(at);
                stats.rx_nvme_tcp_resync += 1;
                v.resync_request = Some(at);
                resync.request(at, ResyncFlags::PENDING);
            }
        }
        if !self.pdu.offload {
            return;
        }
        if layout.ddgst && self.crc_offload {
            self.crc.reset();
        }
        if let Some((cid, datao)) = layout.c2h {
            let datal = u64::from(layout.data_end - layout.data_start);
            if let Some(slot) = self.ios.get(cid)
                && u64::from(datao) + datal <= slot.len
            {
                self.pdu.place = Some(Place {
                    cid,
                    generation: slot.generation,
                    datao: u64::from(datao),
                    cursor: SgCursor::NONE,
                });
            }
        }
    }

    fn place_chunk(
        &mut self,
        seq: u32,
        data_off: u32,
        chunk: &[u8],
        v: &mut SegmentVerdict,
        stats: &mut Stats,
        diag: &mut Diagnostics,
    ) {
        let Some(place) = self.pdu.place.as_mut() else {
            return;
        };
        let slot = match self.ios.get_mut(place.cid) {
            Some(s) if s.generation == place.generation => s,
            // Torn down (and maybe set up again) since the header: place nothing more.
            _ => {
                self.pdu.place = None;
                return;
            }
        };
        if !v.has_room(seq) {
            diag.verdict_full += 1;
            place.cursor = SgCursor::NONE;
            return;
        }
        let offset = place.datao + u64::from(data_off);
        if !slot
            .io
            .buf
            .write_at_cursor(&mut place.cursor, offset, chunk)
        {
            // Cannot happen: the range was checked against the buffer length at the header.
            self.pdu.place = None;
            return;
        }
        v.push(seq, chunk.len() as u32);
        stats.rx_nvme_tcp_bytes += chunk.len() as u64;
    }
}
