//! The property-test harness: a reference stream, a segment schedule, the software device,
//! an in-order TCP receiver and a host that uses the device as nvme-tcp does. Every
//! invariant is checked as the run goes; a violation is returned as an error message.
#![allow(dead_code)]

pub mod schedule;
pub mod stream;

use ddp_engine::{EngineConfig, SoftDdpDevice, SyncState, TeardownMode};
use nvme_tcp_wire::digest::crc32c;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schedule::Arrival;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use stream::{Kind, Stream};
use ulp_ddp::{
    DdpCtx, DdpIo, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncAction, ResyncFlags, ResyncTracker,
    SgList, SkConfig, SockId, UlpDdpDevice, UlpDdpOps,
};

/// The host's callbacks: the resync tracker and the finished teardowns.
#[derive(Default)]
pub struct HostOps {
    pub tracker: ResyncTracker,
    pub done: Mutex<Vec<(DdpCtx, DdpIo)>>,
}

impl UlpDdpOps for HostOps {
    fn resync_request(&self, _sk: SockId, seq: u32, flags: ResyncFlags) -> bool {
        self.tracker.request(seq, flags)
    }
    fn teardown_done(&self, ctx: DdpCtx, io: DdpIo) {
        if let Ok(mut d) = self.done.lock() {
            d.push((ctx, io));
        }
    }
}

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
    pub resume_checks: u64,
}

pub struct Case<'a> {
    pub stream: &'a Stream,
    pub arrivals: &'a [Arrival],
    pub isn: u32,
    pub teardown: TeardownMode,
    pub full_ccid_range: bool,
    /// Seed for host-side timing choices (when deferred teardowns complete).
    pub seed: u64,
    /// The receiver keeps out-of-order bytes (first copy wins, as Linux) instead of
    /// dropping them.
    pub ooo_receiver: bool,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

struct Host<'a> {
    stream: &'a Stream,
    sk: SockId,
    ops: Arc<HostOps>,
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
    /// Host-side registration: cid → registered.
    registered: HashMap<u16, bool>,
    /// Per PDU: AND of the crc bits of the segments its data and digest came in.
    pdu_crc: Vec<bool>,
    report: Report,
    /// (d): PDU that must be placed in full if the device stays in sync up to its end.
    watch: Option<(usize, u64)>,
}

pub fn run(case: &Case<'_>) -> Result<Report, String> {
    let stream = case.stream;
    let total = stream.len();
    let mut dev = SoftDdpDevice::new(EngineConfig {
        io_threshold: 64,
        max_ddp_sgl_len: 4,
        full_ccid_range: case.full_ccid_range,
        teardown: case.teardown,
        ..EngineConfig::connectx7_like()
    });
    let ops = Arc::new(HostOps::default());
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
    dev.sk_add(sk, &cfg, ops.clone())
        .map_err(|e| format!("sk_add: {e}"))?;

    let mut host = Host {
        stream,
        sk,
        ops: ops.clone(),
        isn: case.isn,
        r: 0,
        view: vec![0; total as usize],
        have: vec![false; total as usize],
        placed_flag: vec![false; total as usize],
        crc_flag: vec![false; total as usize],
        ooo: case.ooo_receiver,
        registered: HashMap::new(),
        pdu_crc: vec![true; stream.pdus.len()],
        report: Report::default(),
        watch: None,
    };
    let mut expected_setup_fail = 0u64;
    for cmd in &stream.commands {
        if !cmd.register {
            continue;
        }
        let io = DdpIo::new(
            cmd.cid,
            SgList::zeroed_chunks(
                cmd.len as usize,
                (cmd.len as usize).div_ceil(cmd.nents as usize),
            ),
        );
        let nents = io.sgl.nents();
        match dev.setup(sk, io) {
            Ok(()) => {
                host.registered.insert(cmd.cid, true);
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
                expected_setup_fail += 1;
            }
        }
    }
    for p in &stream.pdus {
        if p.kind == Kind::C2hData && host.registered.contains_key(&p.cid) {
            host.report.registered_data_bytes += p.data_end - p.data_start;
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let mut placed_map = vec![false; total as usize];
    let mut seg = Vec::new();
    let mut packets = 0u64;
    let mut finished: HashMap<u16, Vec<u8>> = HashMap::new();
    for a in case.arrivals {
        seg.clear();
        seg.extend_from_slice(&stream.bytes[a.start as usize..a.end as usize]);
        if let Some((off, x)) = a.corrupt {
            seg[(off - a.start) as usize] ^= x;
        }
        let seq = case.isn.wrapping_add(a.start as u32);
        let diag_before = dev.diagnostics();
        let v = dev.on_segment(sk, seq, &seg);
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
                host.registered.get(&p.cid) == Some(&true),
                "placed into command {} which is not registered",
                p.cid
            );
            let buf = dev
                .peek_io(sk, p.cid)
                .ok_or_else(|| format!("no buffers for cid {}", p.cid))?;
            let mut got = vec![0u8; r.len as usize];
            let boff = u64::from(p.datao) + (off - p.data_start);
            ensure!(buf.read_at(boff, &mut got), "placed beyond the buffer");
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
        host.receive(&mut dev, a, &seg, &v)?;
        // (d) bookkeeping.
        if let Some((pi, resume)) = host.watch {
            let info = dev.flow_info(sk).ok_or("socket vanished")?;
            let d = dev.diagnostics();
            if info.state != SyncState::InSync
                || d.gaps != diag_before.gaps
                || d.verdict_full != diag_before.verdict_full
            {
                host.watch = None;
            } else if let Some(exp) = info.expected_seq {
                let f = u64::from(exp.wrapping_sub(case.isn));
                let p = &stream.pdus[pi];
                if f >= p.end {
                    for off in p.data_start..p.data_end {
                        ensure!(
                            placed_map[off as usize],
                            "after the resync (resume at {resume}) PDU {pi} at {}..{} was not placed in full (offset {off})",
                            p.start,
                            p.end
                        );
                    }
                    host.report.resume_checks += 1;
                    host.watch = None;
                }
            }
        }
        if case.teardown == TeardownMode::Deferred && rng.random_bool(0.3) {
            dev.poll_teardowns();
        }
        host.collect_done(&ops, &mut finished)?;
    }
    dev.poll_teardowns();
    host.collect_done(&ops, &mut finished)?;
    ensure!(host.r == total, "receiver stopped at {} of {total}", host.r);

    // Every registered command came back with exactly the bytes the host received.
    for cmd in &stream.commands {
        if host.registered.contains_key(&cmd.cid) {
            let buf = finished
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

    // (e) statistics reconcile.
    let st = dev.get_stats();
    ensure!(
        st.rx_nvme_tcp_setup == host.registered.len() as u64,
        "setup {}",
        st.rx_nvme_tcp_setup
    );
    ensure!(
        st.rx_nvme_tcp_setup_fail == expected_setup_fail,
        "setup-fail {}",
        st.rx_nvme_tcp_setup_fail
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
    ensure!(dev.sk_del(sk).is_empty(), "I/Os left at sk_del");
    let st = dev.get_stats();
    ensure!(
        st.rx_nvme_tcp_sk_add == st.rx_nvme_tcp_sk_del,
        "sk_add != sk_del"
    );
    let d = dev.diagnostics();
    host.report.resync_confirmed = d.resync_confirmed;
    host.report.lost_sync = d.lost_sync;
    host.report.candidates = d.candidates;
    host.report.resync_requests = st.rx_nvme_tcp_resync;
    Ok(host.report)
}

impl Host<'_> {
    /// The receiving TCP: accepts the copy's new bytes (in-order only, or out-of-order
    /// too with first copy winning) with the copy's offload marks, then delivers whatever
    /// became contiguous.
    fn receive(
        &mut self,
        dev: &mut SoftDdpDevice,
        a: &Arrival,
        seg: &[u8],
        v: &ddp_engine::SegmentVerdict,
    ) -> Result<(), String> {
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
            self.deliver(dev, start, to)?;
        }
        Ok(())
    }

    fn deliver(&mut self, dev: &mut SoftDdpDevice, from: u64, to: u64) -> Result<(), String> {
        let stream = self.stream;
        let mut i = stream.pdu_at(from).ok_or("delivered bytes in no PDU")?;
        while i < stream.pdus.len() && stream.pdus[i].start < to {
            let p = stream.pdus[i].clone();
            // Header: parsed once complete.
            if p.hdr_end > from && p.hdr_end <= to {
                let pdu_seq = self.isn.wrapping_add(p.start as u32);
                if let ResyncAction::Confirm(s) = self.ops.tracker.on_pdu_header(pdu_seq) {
                    let before = dev.flow_info(self.sk).ok_or("socket vanished")?;
                    dev.resync(self.sk, s);
                    let after = dev.flow_info(self.sk).ok_or("socket vanished")?;
                    if before.state == (SyncState::ResyncPending { seq: Some(s) }) {
                        ensure!(
                            after.state == SyncState::InSync,
                            "confirmed resync did not resync"
                        );
                        // (d): the first PDU header at or after max(expected, high water).
                        let exp = u64::from(after.expected_seq.unwrap_or(s).wrapping_sub(self.isn));
                        let hw = after
                            .high_water
                            .map(|h| u64::from(h.wrapping_sub(self.isn)))
                            .unwrap_or(0);
                        let resume = exp.max(hw);
                        let k = stream.pdus.partition_point(|q| q.start < resume);
                        if let Some(q) = stream.pdus.get(k)
                            && q.kind == Kind::C2hData
                            && self.registered.get(&q.cid) == Some(&true)
                        {
                            self.watch = Some((k, resume));
                        } else {
                            self.watch = None;
                        }
                    }
                }
            }
            // Data and digest.
            if p.kind == Kind::C2hData {
                let x = from.max(p.data_start);
                let y = to.min(p.data_end);
                if x < y && self.registered.get(&p.cid) == Some(&true) {
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
                            dev.copy_to_io(
                                self.sk,
                                p.cid,
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
                if p.completes && self.registered.get(&p.cid) == Some(&true) {
                    self.registered.insert(p.cid, false);
                    dev.teardown(self.sk, p.cid, DdpCtx(u64::from(p.cid)))
                        .map_err(|e| format!("teardown: {e}"))?;
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn collect_done(
        &mut self,
        ops: &HostOps,
        finished: &mut HashMap<u16, Vec<u8>>,
    ) -> Result<(), String> {
        let done: Vec<_> = ops.done.lock().map_err(|_| "poisoned")?.drain(..).collect();
        for (ctx, io) in done {
            let cid = ctx.0 as u16;
            ensure!(io.command_id == cid, "teardown_done for the wrong I/O");
            ensure!(
                self.registered.get(&cid) == Some(&false),
                "teardown_done for cid {cid} before its teardown"
            );
            ensure!(
                finished.insert(cid, io.sgl.to_vec()).is_none(),
                "cid {cid} done twice"
            );
        }
        Ok(())
    }
}
