//! The property-test harness: a reference stream, a segment schedule, the software device,
//! an in-order TCP receiver and a host that uses the device as nvme-tcp does: it reports
//! every PDU header it parses with `pdu_header` (possibly some headers late), copies what
//! the device did not place, tears an I/O down when its command completes and takes the
//! buffer back from `poll_event`, and reuses the command ID for its next read once (and
//! only once) the buffer is back. Every invariant is checked as the run goes; a violation
//! is returned as an error message.
#![allow(dead_code)]

pub mod schedule;
pub mod stream;

use ddp_engine::{
    Diagnostics, EngineConfig, RxSocket, SegmentVerdict, SoftDdpDevice, SyncState, TeardownMode,
};
use nvme_tcp_wire::digest::crc32c;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schedule::Arrival;
use std::collections::{HashMap, HashSet, VecDeque};
use stream::{Kind, Stream};
use ulp_ddp::{
    DdpCtx, DdpError, DdpEvent, DdpIo, IoBuf, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncAction,
    SkConfig, SockId, UlpDdpDevice, UlpDdpSocket,
};

/// Requests of one speculative framing the engine keeps acceptable (its documented
/// tolerance: a confirmation of any of the last four requests is accepted).
pub const REQUESTS_KEPT: u64 = 4;

/// Size of the buffer of the host's next read on a reused command ID. Its data lies beyond
/// the end of the run: nothing may ever be placed into it.
const NEXT_READ_LEN: usize = 4096;

/// `DdpCtx` bit marking the teardown of a next read.
const NEXT_READ_CTX: u64 = 1 << 32;

/// What a run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub segments: u64,
    pub placed_bytes: u64,
    pub registered_data_bytes: u64,
    pub ddgst_pdus: u64,
    pub verified_pdus: u64,
    pub resync_confirmed: u64,
    pub resync_requests: u64,
    pub lost_sync: u64,
    pub candidates: u64,
    /// PDUs checked to be placed in full after a confirmed resync.
    pub resume_checks: u64,
    /// Confirmations that took effect after the device had passed more PDU headers.
    pub late_confirmations: u64,
    /// Confirmations checked to be accepted because the framing still held.
    pub kept_checks: u64,
    /// Setups refused with `CidBusy` because the command ID's buffer was not back yet.
    pub busy_refusals: u64,
    /// Command IDs reused (set up again after their `TeardownDone` was taken).
    pub reused_cids: u64,
}

impl Report {
    pub fn add(&mut self, r: &Report) {
        self.segments += r.segments;
        self.placed_bytes += r.placed_bytes;
        self.registered_data_bytes += r.registered_data_bytes;
        self.ddgst_pdus += r.ddgst_pdus;
        self.verified_pdus += r.verified_pdus;
        self.resync_confirmed += r.resync_confirmed;
        self.resync_requests += r.resync_requests;
        self.lost_sync += r.lost_sync;
        self.candidates += r.candidates;
        self.resume_checks += r.resume_checks;
        self.late_confirmations += r.late_confirmations;
        self.kept_checks += r.kept_checks;
        self.busy_refusals += r.busy_refusals;
        self.reused_cids += r.reused_cids;
    }
}

pub struct Case<'a> {
    pub stream: &'a Stream,
    pub arrivals: &'a [Arrival],
    pub isn: u32,
    pub teardown: TeardownMode,
    pub full_ccid_range: bool,
    /// Seed for host-side timing choices (when delayed work is flushed).
    pub seed: u64,
    /// The receiver keeps out-of-order bytes (first copy wins, as Linux) instead of
    /// dropping them.
    pub ooo_receiver: bool,
    /// `EngineConfig::resync_answer_delay_pdus`: PDU headers the device passes before a
    /// confirmation takes effect.
    pub answer_delay: u32,
    /// The host reports each parsed PDU header to `pdu_header` only after parsing this many
    /// more (a ULP that answers late).
    pub ulp_lag: usize,
}

impl Case<'_> {
    /// The teardown modes and answer delays the properties run across.
    pub const TEARDOWNS: [TeardownMode; 4] = [
        TeardownMode::Immediate,
        TeardownMode::AfterPdus(1),
        TeardownMode::AfterPdus(5),
        TeardownMode::Deferred,
    ];
    pub const DELAYS: [u32; 4] = [0, 1, 2, 8];
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

/// Where a command ID stands on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cid {
    /// The buffers of the stream's command are registered.
    Registered,
    /// Torn down; its `TeardownDone` not taken yet.
    Tearing,
    /// Reused: the buffers of the host's next read (data beyond the run) are registered.
    NextRead,
    /// The next read was torn down at the end of the run.
    NextReadTearing,
    /// Done with.
    Free,
}

/// The identity of one speculative framing, as the device's counters show it: any way
/// out of it (lost framing, a new candidate, a confirmation) changes one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Epoch {
    candidates: u64,
    lost_sync: u64,
    resync_confirmed: u64,
}

impl Epoch {
    fn of(d: &Diagnostics) -> Self {
        Self {
            candidates: d.candidates,
            lost_sync: d.lost_sync,
            resync_confirmed: d.resync_confirmed,
        }
    }
}

/// A request the device made, known to belong to the framing it was speculating on when
/// the segment that made it ended.
#[derive(Debug, Clone, Copy)]
struct Request {
    epoch: Epoch,
    /// `rx-nvme-tcp-resync` right after the request: its index.
    index: u64,
    /// [`Host::device_clock`] after the segment that made it.
    clock: u64,
}

/// A confirmation on its way to the device.
#[derive(Debug, Clone, Copy)]
struct Answer {
    seq: u32,
    request: Option<Request>,
}

/// Counters before a device call, to see what the call did.
#[derive(Debug, Clone, Copy)]
struct Snap {
    diag: Diagnostics,
}

struct Host<'a> {
    stream: &'a Stream,
    dev: SoftDdpDevice,
    sock: Box<dyn UlpDdpSocket>,
    sk: SockId,
    isn: u32,
    /// Receiver: next in-order offset.
    r: u64,
    /// The bytes the receiver accepted (the host's view of the stream once delivered).
    view: Vec<u8>,
    /// Per stream byte: accepted; placed by the device in the copy it was accepted from;
    /// that copy's crc bit.
    have: Vec<bool>,
    placed_flag: Vec<bool>,
    crc_flag: Vec<bool>,
    ooo: bool,
    cids: HashMap<u16, Cid>,
    /// Command IDs whose stream command was registered.
    offloaded: HashSet<u16>,
    /// Per PDU: AND of the crc bits of the segments its data and digest came in.
    pdu_crc: Vec<bool>,
    report: Report,
    /// (d): PDU that must be placed in full if the device stays in sync up to its end,
    /// the resume point, and the counters when the watch was set.
    watch: Option<(usize, u64, Diagnostics)>,
    /// Headers parsed and not yet reported (the ULP's lag).
    unreported: VecDeque<u32>,
    lag: usize,
    /// Requests the device made, by sequence number.
    requests: HashMap<u32, Request>,
    /// Confirmations not yet taken into account by the device, oldest first.
    answers: VecDeque<Answer>,
    /// The stream commands' buffers that came back, by command ID.
    finished: HashMap<u16, Vec<u8>>,
    next_reads_back: u64,
    /// An I/O kept for setups the host expects to be refused (no allocation per probe).
    probe: Option<DdpIo>,
    expected_setup_fail: u64,
    setups: u64,
}

pub fn run(case: &Case<'_>) -> Result<Report, String> {
    let stream = case.stream;
    let total = stream.len();
    let dev = SoftDdpDevice::new(EngineConfig {
        io_threshold: 64,
        max_ddp_sgl_len: 4,
        full_ccid_range: case.full_ccid_range,
        teardown: case.teardown,
        resync_answer_delay_pdus: case.answer_delay,
        ..EngineConfig::connectx7_like()
    });
    let sk = SockId(7);
    let queue_size = stream.commands.len() as u32;
    let cfg = SkConfig::nvme(
        0,
        Some(case.isn),
        NvmeTcpDdpConfig {
            cpda: stream.cpda,
            dgst: NvmeTcpDigests {
                header: stream.hdgst,
                data: stream.ddgst,
            },
            queue_size: queue_size.max(1),
            ..NvmeTcpDdpConfig::default()
        },
    );
    let sock = dev.sk_add(sk, &cfg).map_err(|e| format!("sk_add: {e}"))?;
    let rx: RxSocket = dev.rx_socket(sk).ok_or("no receive handle after sk_add")?;

    let mut host = Host {
        stream,
        dev: dev.clone(),
        sock,
        sk,
        isn: case.isn,
        r: 0,
        view: vec![0; total as usize],
        have: vec![false; total as usize],
        placed_flag: vec![false; total as usize],
        crc_flag: vec![false; total as usize],
        ooo: case.ooo_receiver,
        cids: HashMap::new(),
        offloaded: HashSet::new(),
        pdu_crc: vec![true; stream.pdus.len()],
        report: Report::default(),
        watch: None,
        unreported: VecDeque::new(),
        lag: case.ulp_lag,
        requests: HashMap::new(),
        answers: VecDeque::new(),
        finished: HashMap::new(),
        next_reads_back: 0,
        probe: Some(DdpIo::new(0, IoBuf::zeroed(NEXT_READ_LEN))),
        expected_setup_fail: 0,
        setups: 0,
    };
    for cmd in &stream.commands {
        if !cmd.register {
            continue;
        }
        let io = DdpIo::new(
            u32::from(cmd.cid),
            IoBuf::zeroed_chunks(
                cmd.len as usize,
                (cmd.len as usize).div_ceil(cmd.nents as usize),
            ),
        );
        let nents = io.buf.segment_count();
        match host.sock.setup(io) {
            Ok(()) => {
                host.setups += 1;
                host.cids.insert(cmd.cid, Cid::Registered);
                host.offloaded.insert(cmd.cid);
            }
            Err(e) => {
                // Only the limits may refuse it.
                ensure!(
                    cmd.len < 64 || nents > 4,
                    "setup of cid {} ({} bytes, {} entries) failed: {}",
                    cmd.cid,
                    cmd.len,
                    nents,
                    e
                );
                ensure!(
                    e.io.command_id == u32::from(cmd.cid) && e.io.buf.len() == cmd.len as usize,
                    "a refused setup did not hand the I/O back unchanged"
                );
                host.expected_setup_fail += 1;
            }
        }
    }
    for p in &stream.pdus {
        if p.kind == Kind::C2hData && host.offloaded.contains(&p.cid) {
            host.report.registered_data_bytes += p.data_end - p.data_start;
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let mut placed_map = vec![false; total as usize];
    let mut seg = Vec::new();
    let mut packets = 0u64;
    let mut v = SegmentVerdict::NONE;
    for a in case.arrivals {
        seg.clear();
        seg.extend_from_slice(&stream.bytes[a.start as usize..a.end as usize]);
        if let Some((off, x)) = a.corrupt {
            seg[(off - a.start) as usize] ^= x;
        }
        let seq = case.isn.wrapping_add(a.start as u32);
        let snap = host.snap();
        rx.on_segment_into(seq, &seg, &mut v);
        host.after_device_call(&snap)?;
        if std::env::var_os("DDP_TRACE").is_some() {
            eprintln!(
                "arr {}..{} R={} -> placed {} crc {} req {:?} state {:?}",
                a.start,
                a.end,
                host.r,
                v.placed_bytes(),
                v.crc,
                v.resync_request.map(|s| s.wrapping_sub(case.isn)),
                dev.flow_info(sk)
                    .map(|i| (i.state, i.expected_seq.map(|e| e.wrapping_sub(case.isn))))
            );
        }
        if let Some(req) = v.resync_request {
            host.note_request(req)?;
        }
        host.report.segments += 1;
        if v.ddp() {
            packets += 1;
        }
        // (a) every placed byte is where the in-order stream puts it, holds this segment's
        // byte, belongs to a registered command and is placed once.
        for r in v.placed() {
            let off = u64::from(r.seq.wrapping_sub(case.isn));
            let end = off + u64::from(r.len);
            ensure!(
                off >= a.start && end <= a.end,
                "placed range {off}..{end} outside its segment {}..{}",
                a.start,
                a.end
            );
            let i = stream
                .pdu_at(off)
                .ok_or_else(|| format!("placed offset {off} in no PDU"))?;
            let p = &stream.pdus[i];
            ensure!(
                p.kind == Kind::C2hData && off >= p.data_start && end <= p.data_end,
                "placed range {off}..{end} is not inside the data of PDU {i} ({:?})",
                p
            );
            ensure!(
                host.cids.get(&p.cid) == Some(&Cid::Registered),
                "placed into command {} which is not registered (host: {:?})",
                p.cid,
                host.cids.get(&p.cid)
            );
            let buf = dev
                .peek_io(sk, p.cid)
                .ok_or_else(|| format!("no buffers for cid {}", p.cid))?;
            let boff = (u64::from(p.datao) + (off - p.data_start)) as usize;
            let got = buf
                .get(boff..boff + r.len as usize)
                .ok_or("placed beyond the buffer")?;
            ensure!(
                got[..] == seg[(off - a.start) as usize..(end - a.start) as usize],
                "buffer of cid {} at {boff} does not hold the placed bytes",
                p.cid
            );
            for b in &mut placed_map[off as usize..end as usize] {
                ensure!(!*b, "offset {off}..{end} placed twice");
                *b = true;
            }
            host.report.placed_bytes += u64::from(r.len);
        }
        host.receive(a, &seg, &v)?;
        // (d) bookkeeping.
        host.check_watch(&placed_map)?;
        if case.teardown != TeardownMode::Immediate && rng.random_bool(0.3) {
            host.flush()?;
        }
        host.collect_done()?;
        host.probe_busy()?;
    }
    // The ULP reports the headers it still owes, the device finishes its delayed work.
    while let Some(s) = host.unreported.pop_front() {
        host.pdu_header(s)?;
    }
    host.flush()?;
    host.collect_done()?;
    ensure!(host.r == total, "receiver stopped at {} of {total}", host.r);

    // Every registered command came back with exactly the bytes the host received.
    for cmd in &stream.commands {
        if host.offloaded.contains(&cmd.cid) {
            let buf = host
                .finished
                .get(&cmd.cid)
                .ok_or_else(|| format!("cid {} never came back", cmd.cid))?;
            let mut want = vec![0u8; cmd.len as usize];
            for p in stream
                .pdus
                .iter()
                .filter(|p| p.kind == Kind::C2hData && p.cid == cmd.cid)
            {
                let o = p.datao as usize;
                want[o..o + (p.data_end - p.data_start) as usize]
                    .copy_from_slice(&host.view[p.data_start as usize..p.data_end as usize]);
            }
            ensure!(
                *buf == want,
                "final buffer of cid {} differs from the received data",
                cmd.cid
            );
        }
    }
    // The next reads end with the run: tear them down; nothing was ever placed in them.
    let next: Vec<u16> = host
        .cids
        .iter()
        .filter(|(_, s)| **s == Cid::NextRead)
        .map(|(c, _)| *c)
        .collect();
    for cid in next {
        host.sock
            .teardown(u32::from(cid), DdpCtx(NEXT_READ_CTX | u64::from(cid)))
            .map_err(|e| format!("teardown of the next read: {e}"))?;
        host.cids.insert(cid, Cid::NextReadTearing);
    }
    host.flush()?;
    host.collect_done()?;
    ensure!(
        host.next_reads_back == host.report.reused_cids,
        "{} next reads registered, {} came back",
        host.report.reused_cids,
        host.next_reads_back
    );
    // Every command completes in these streams: every buffer is back.
    ensure!(
        host.cids.values().all(|s| *s == Cid::Free),
        "buffers not back after the flush: {:?}",
        host.cids
    );

    // (e) statistics reconcile.
    let st = dev.get_stats();
    ensure!(
        st.rx_nvme_tcp_setup == host.setups,
        "setup {} != {}",
        st.rx_nvme_tcp_setup,
        host.setups
    );
    ensure!(
        st.rx_nvme_tcp_setup_fail == host.expected_setup_fail,
        "setup-fail {} != {}",
        st.rx_nvme_tcp_setup_fail,
        host.expected_setup_fail
    );
    ensure!(
        st.rx_nvme_tcp_setup == st.rx_nvme_tcp_teardown,
        "setup {} != teardown {}",
        st.rx_nvme_tcp_setup,
        st.rx_nvme_tcp_teardown
    );
    ensure!(
        st.rx_nvme_tcp_packets == packets,
        "packets {} != {packets}",
        st.rx_nvme_tcp_packets
    );
    ensure!(
        st.rx_nvme_tcp_bytes == host.report.placed_bytes,
        "bytes {} != {}",
        st.rx_nvme_tcp_bytes,
        host.report.placed_bytes
    );
    let d = dev.diagnostics();
    host.report.resync_confirmed = d.resync_confirmed;
    host.report.lost_sync = d.lost_sync;
    host.report.candidates = d.candidates;
    host.report.resync_requests = st.rx_nvme_tcp_resync;
    let report = host.report;
    ensure!(host.sock.sk_del().is_empty(), "I/Os left at sk_del");
    let st = dev.get_stats();
    ensure!(
        st.rx_nvme_tcp_sk_add == st.rx_nvme_tcp_sk_del,
        "sk_add != sk_del"
    );
    ensure!(
        !rx.on_segment(case.isn, &stream.bytes[..total.min(64) as usize])
            .ddp(),
        "placement after sk_del"
    );
    Ok(report)
}

impl Host<'_> {
    fn snap(&self) -> Snap {
        Snap {
            diag: self.dev.diagnostics(),
        }
    }

    fn resync_requests(&self) -> u64 {
        self.dev.get_stats().rx_nvme_tcp_resync
    }

    /// After any call that may let confirmations take effect: checks that a confirmation
    /// of a kept request of the framing still followed was accepted, and sets the (d)
    /// watch after an accepted one.
    fn after_device_call(&mut self, before: &Snap) -> Result<(), String> {
        let d = self.dev.diagnostics();
        let confirmed = d.resync_confirmed - before.diag.resync_confirmed;
        let ignored = d.resync_ignored - before.diag.resync_ignored;
        let landed = confirmed + ignored;
        ensure!(
            landed as usize <= self.answers.len(),
            "{landed} confirmations took effect, {} were given",
            self.answers.len()
        );
        let mut last = None;
        for _ in 0..landed {
            last = self.answers.pop_front();
        }
        if landed == 1
            && let Some(a) = last
        {
            // The device processed more segments between the request and its effect.
            if confirmed == 1
                && let Some(req) = a.request
                && self.device_clock() > req.clock
            {
                self.report.late_confirmations += 1;
            }
            // The framing the request was made on still held (no loss, no new candidate,
            // no other confirmation) and the request is among the kept ones: it must be
            // accepted, however late.
            // (The epoch the answer met: the call's losses and candidates, not its own
            // confirmation.)
            let met = Epoch {
                resync_confirmed: before.diag.resync_confirmed,
                ..Epoch::of(&d)
            };
            if let Some(req) = a.request
                && req.epoch == met
                && self.resync_requests() - req.index < REQUESTS_KEPT
            {
                ensure!(
                    confirmed == 1,
                    "a confirmation of request {} (sequence {}) was ignored although the framing it was made on still held",
                    req.index,
                    a.seq.wrapping_sub(self.isn)
                );
                self.report.kept_checks += 1;
            }
        }
        if confirmed > 0 {
            let after = self.dev.flow_info(self.sk).ok_or("socket vanished")?;
            ensure!(
                after.state == SyncState::InSync,
                "an accepted confirmation left the device in {:?}",
                after.state
            );
            // (d): offload resumes at the first PDU header at or after max(expected, high
            // water) as they were when the confirmation took effect.
            let exp = after
                .expected_seq
                .map(|e| u64::from(e.wrapping_sub(self.isn)))
                .unwrap_or(0);
            let hw = after
                .high_water
                .map(|h| u64::from(h.wrapping_sub(self.isn)))
                .unwrap_or(0);
            let resume = exp.max(hw);
            let k = self.stream.pdus.partition_point(|q| q.start < resume);
            self.watch = match self.stream.pdus.get(k) {
                Some(q)
                    if q.kind == Kind::C2hData
                        && self.cids.get(&q.cid) == Some(&Cid::Registered) =>
                {
                    Some((k, resume, d))
                }
                _ => None,
            };
        }
        Ok(())
    }

    /// The device's clock as the host sees it: segments processed.
    fn device_clock(&self) -> u64 {
        self.dev.diagnostics().segments
    }

    /// The device asked to confirm `seq`; remembered if it belongs to the framing the
    /// device is following now.
    fn note_request(&mut self, seq: u32) -> Result<(), String> {
        let info = self.dev.flow_info(self.sk).ok_or("socket vanished")?;
        if info.state == (SyncState::ResyncPending { seq: Some(seq) }) {
            let req = Request {
                epoch: Epoch::of(&self.dev.diagnostics()),
                index: self.resync_requests(),
                clock: self.device_clock(),
            };
            self.requests.insert(seq, req);
        }
        Ok(())
    }

    /// The ULP reports a parsed PDU header.
    fn pdu_header(&mut self, seq: u32) -> Result<(), String> {
        let snap = self.snap();
        let action = self.sock.pdu_header(seq);
        match action {
            ResyncAction::Confirmed(s) => {
                ensure!(s == seq, "confirmed {s} at the header at {seq}");
                self.answers.push_back(Answer {
                    seq: s,
                    request: self.requests.get(&s).copied(),
                });
            }
            ResyncAction::Mismatch { requested, pdu_seq } => {
                ensure!(
                    pdu_seq == seq && (seq.wrapping_sub(requested) as i32) > 0,
                    "mismatch {requested} at {pdu_seq} for the header at {seq}"
                );
            }
            ResyncAction::None => {}
        }
        self.after_device_call(&snap)
    }

    /// The device finishes its delayed work (confirmations and teardowns).
    fn flush(&mut self) -> Result<(), String> {
        let snap = self.snap();
        self.dev.flush_deferred();
        self.after_device_call(&snap)
    }

    fn check_watch(&mut self, placed_map: &[bool]) -> Result<(), String> {
        let Some((pi, resume, at)) = self.watch else {
            return Ok(());
        };
        let info = self.dev.flow_info(self.sk).ok_or("socket vanished")?;
        let d = self.dev.diagnostics();
        if info.state != SyncState::InSync
            || d.gaps != at.gaps
            || d.verdict_full != at.verdict_full
            || d.lost_sync != at.lost_sync
        {
            self.watch = None;
        } else if let Some(exp) = info.expected_seq {
            let f = u64::from(exp.wrapping_sub(self.isn));
            let p = &self.stream.pdus[pi];
            if f >= p.end {
                for off in p.data_start..p.data_end {
                    ensure!(
                        placed_map[off as usize],
                        "after the resync (resume at {resume}) PDU {pi} at {}..{} was not placed in full (offset {off})",
                        p.start,
                        p.end
                    );
                }
                self.report.resume_checks += 1;
                self.watch = None;
            }
        }
        Ok(())
    }

    /// The receiving TCP: accepts the copy's new bytes (in-order only, or out-of-order
    /// too with first copy winning) with the copy's offload marks, then delivers whatever
    /// became contiguous.
    fn receive(&mut self, a: &Arrival, seg: &[u8], v: &SegmentVerdict) -> Result<(), String> {
        let from = if self.ooo {
            a.start
        } else if a.start <= self.r && self.r < a.end {
            self.r
        } else {
            return Ok(());
        };
        let mut fresh = vec![false; (a.end - a.start) as usize];
        for off in from..a.end {
            let i = off as usize;
            if !self.have[i] {
                self.have[i] = true;
                self.view[i] = seg[(off - a.start) as usize];
                self.crc_flag[i] = v.crc;
                self.placed_flag[i] = false;
                fresh[(off - a.start) as usize] = true;
            }
        }
        for r in v.placed() {
            let off = u64::from(r.seq.wrapping_sub(self.isn));
            for o in off..off + u64::from(r.len) {
                if fresh[(o - a.start) as usize] {
                    self.placed_flag[o as usize] = true;
                }
            }
        }
        let start = self.r;
        while self.r < self.stream.len() && self.have[self.r as usize] {
            self.r += 1;
        }
        if self.r > start {
            let to = self.r;
            self.deliver(start, to)?;
        }
        Ok(())
    }

    fn deliver(&mut self, from: u64, to: u64) -> Result<(), String> {
        let stream = self.stream;
        let mut i = stream.pdu_at(from).ok_or("delivered bytes in no PDU")?;
        while i < stream.pdus.len() && stream.pdus[i].start < to {
            let p = stream.pdus[i].clone();
            // Header: parsed once complete, reported to the device `lag` headers later.
            if p.hdr_end > from && p.hdr_end <= to {
                self.unreported
                    .push_back(self.isn.wrapping_add(p.start as u32));
                while self.unreported.len() > self.lag {
                    if let Some(s) = self.unreported.pop_front() {
                        self.pdu_header(s)?;
                    }
                }
            }
            // Data and digest.
            if p.kind == Kind::C2hData {
                let x = from.max(p.data_start);
                let y = to.min(p.data_end);
                if x < y && self.cids.get(&p.cid) == Some(&Cid::Registered) {
                    // Copy the runs the device did not place in the accepted copy.
                    let mut k = x;
                    while k < y {
                        let placed = self.placed_flag[k as usize];
                        let mut e = k;
                        while e < y && self.placed_flag[e as usize] == placed {
                            e += 1;
                        }
                        if !placed {
                            let bytes = &self.view[k as usize..e as usize];
                            self.sock
                                .copy_to_io(
                                    u32::from(p.cid),
                                    u64::from(p.datao) + (k - p.data_start),
                                    bytes,
                                )
                                .map_err(|e| format!("copy_to_io: {e}"))?;
                        }
                        k = e;
                    }
                }
                let (x, y) = (from.max(p.data_start), to.min(p.end));
                if p.ddgst && x < y {
                    self.pdu_crc[i] &= self.crc_flag[x as usize..y as usize].iter().all(|c| *c);
                }
            }
            // End of PDU.
            if p.end > from && p.end <= to {
                if p.ddgst {
                    self.report.ddgst_pdus += 1;
                    if self.pdu_crc[i] {
                        // (b) verified only over exactly this PDU's data, and matching.
                        let data = &self.view[p.data_start as usize..p.data_end as usize];
                        let dg = &self.view[p.data_end as usize..p.end as usize];
                        ensure!(
                            crc32c(data).to_le_bytes() == dg,
                            "PDU {i} reported verified but its digest does not match (bad digest sent: {})",
                            p.bad_digest
                        );
                        ensure!(
                            data == &stream.bytes[p.data_start as usize..p.data_end as usize],
                            "PDU {i} reported verified over corrupted data"
                        );
                        self.report.verified_pdus += 1;
                    }
                }
                if p.completes && self.cids.get(&p.cid) == Some(&Cid::Registered) {
                    self.sock
                        .teardown(u32::from(p.cid), DdpCtx(u64::from(p.cid)))
                        .map_err(|e| format!("teardown: {e}"))?;
                    self.cids.insert(p.cid, Cid::Tearing);
                    // Not back yet (even when the device completed it at once: the event
                    // is not taken): the command ID is not free.
                    self.probe_busy()?;
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Setups of command IDs whose buffers are registered or not back yet must be refused
    /// with `CidBusy`, handing the I/O back.
    fn probe_busy(&mut self) -> Result<(), String> {
        let busy: Vec<u16> = self
            .cids
            .iter()
            .filter(|(_, s)| **s != Cid::Free)
            .map(|(c, _)| *c)
            .collect();
        for cid in busy {
            let mut io = self.probe.take().ok_or("probe I/O lost")?;
            io.command_id = u32::from(cid);
            match self.sock.setup(io) {
                Ok(()) => {
                    return Err(format!(
                        "setup of cid {cid} succeeded while it is {:?}",
                        self.cids.get(&cid)
                    ));
                }
                Err(e) => {
                    ensure!(
                        e.error == DdpError::CidBusy(u32::from(cid)),
                        "setup of busy cid {cid} ({:?}) failed with {}",
                        self.cids.get(&cid),
                        e.error
                    );
                    self.expected_setup_fail += 1;
                    if self.cids.get(&cid) == Some(&Cid::Tearing) {
                        self.report.busy_refusals += 1;
                    }
                    self.probe = Some(e.io);
                }
            }
        }
        Ok(())
    }

    /// Takes the finished teardowns; a command ID whose buffer is back is reused at once
    /// for the host's next read.
    fn collect_done(&mut self) -> Result<(), String> {
        while let Some(DdpEvent::TeardownDone { ctx, io }) = self.sock.poll_event() {
            let cid = (ctx.0 & 0xFFFF) as u16;
            ensure!(
                io.command_id == u32::from(cid),
                "teardown_done of ctx {ctx:?} carries the I/O of cid {}",
                io.command_id
            );
            if ctx.0 & NEXT_READ_CTX != 0 {
                ensure!(
                    self.cids.get(&cid) == Some(&Cid::NextReadTearing),
                    "teardown_done for the next read of cid {cid} before its teardown"
                );
                ensure!(
                    io.buf.len() == NEXT_READ_LEN && io.buf.to_vec().iter().all(|b| *b == 0),
                    "the next read of cid {cid} was written to"
                );
                self.cids.insert(cid, Cid::Free);
                self.next_reads_back += 1;
                continue;
            }
            ensure!(
                self.cids.get(&cid) == Some(&Cid::Tearing),
                "teardown_done for cid {cid} before its teardown ({:?})",
                self.cids.get(&cid)
            );
            ensure!(
                self.finished.insert(cid, io.buf.to_vec()).is_none(),
                "cid {cid} done twice"
            );
            // The buffer is back: the command ID is free and the host reuses it.
            let next = DdpIo::new(u32::from(cid), IoBuf::zeroed(NEXT_READ_LEN));
            self.sock
                .setup(next)
                .map_err(|e| format!("setup of cid {cid} after its teardown_done: {e}"))?;
            self.setups += 1;
            self.report.reused_cids += 1;
            self.cids.insert(cid, Cid::NextRead);
        }
        Ok(())
    }
}
