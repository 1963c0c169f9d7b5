//! A whole simulation: the host (admin queue + offloading I/O queues) against the embedded
//! target over the simulated network, a read workload, and its report.
//!
//! The host and the network run in lockstep — the host sends what it has, the network
//! processes it and returns what arrived — either on one thread or on two threads named
//! `host-sim` and `nic-sim` (so per-thread CPU time separates the host's work from the
//! target's, the wire's and the NIC's). Lockstep makes both modes produce the same run for
//! the same seed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use ddp_engine::{EngineConfig, SoftDdpDevice, TeardownMode};
use nvme_tcp_host::assoc::{AdminBringUp, Poll, QueueConnect};
use nvme_tcp_host::queue::{Completion, QueueConfig, QueueCore, QueueStats};
use nvme_tcp_host::{
    CidMode, ConnectOptions, ControllerInfo, DdpNetdev, HostError, IoBuf, IoError, PlacedRange,
    ProtocolError, RxMarks, cmd,
};
use nvme_tcp_target::state::TargetState;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, TargetConfig};
use serde::{Deserialize, Serialize};
use ulp_ddp::{Stats, UlpDdpDevice};

use crate::SimError;
use crate::net::{NetSide, NicStats, isn, sock_id};
use crate::tcp::Delivery;
use crate::wire::{WireConfig, WireStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Subsystem NQN of the embedded target.
pub const SIM_NQN: &str = "nqn.2024-01.io.ulp-ddp:sim";
/// Rounds without any byte moving before a run is declared stuck.
const STALL_ROUNDS: u32 = 64;
/// Logical block size of the simulated namespace.
pub const LBA: u64 = 4096;

/// Everything a simulated read run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimParams {
    /// Wire schedule (seed, MSS, faults).
    pub wire: WireConfig,
    /// The software offload device.
    pub engine: EngineConfig,
    /// The host's `ddp_offload` option.
    pub ddp_offload: bool,
    /// Header digests.
    pub hdgst: bool,
    /// Data digests.
    pub ddgst: bool,
    /// I/O queues (each its own connection).
    pub io_queues: u16,
    /// Entries per I/O queue.
    pub queue_size: u16,
    /// Commands kept in flight per I/O queue.
    pub queue_depth: usize,
    /// Size of the RAM namespace (a multiple of 4 KiB); it is filled with a known pattern
    /// before the reads.
    pub namespace_bytes: u64,
    /// READ sizes in bytes (multiples of 4 KiB), chosen at random per I/O.
    pub read_sizes: Vec<u32>,
    /// Number of READs.
    pub reads: u64,
    /// Scatter-gather entries of each READ buffer (1 = one contiguous buffer).
    pub read_segments: usize,
    /// Check every completed READ's data against the pattern.
    pub verify: bool,
    /// Segment slots each wire advances per lockstep round: how often the host gets to
    /// react (submit, complete) while data flows. A round also ends on a connection as soon
    /// as the device asks for a resync, so the host answers promptly whatever this is.
    pub segments_per_round: u64,
    /// Run host and network on two threads (`host-sim`, `nic-sim`).
    pub threaded: bool,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            wire: WireConfig::default(),
            engine: EngineConfig {
                teardown: TeardownMode::Deferred,
                ..EngineConfig::connectx7_like()
            },
            ddp_offload: true,
            hdgst: false,
            ddgst: true,
            io_queues: 2,
            queue_size: 32,
            queue_depth: 8,
            namespace_bytes: 8 << 20,
            read_sizes: vec![32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20],
            reads: 64,
            read_segments: 1,
            verify: true,
            segments_per_round: 64,
            threaded: false,
        }
    }
}

/// A READ that completed, identified as the wire sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadId {
    /// Queue ID (= connection index).
    pub qid: u16,
    /// Command ID.
    pub cid: u16,
    /// Which READ with this CID on this queue (0 = the first).
    pub instance: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimReport {
    /// Device statistics after the disconnect (`stats-get`): the totals of the whole run,
    /// connect and fill included (a delta, when the device served earlier runs).
    pub device: Stats,
    /// Device statistics of the READ phase only (the difference of two `stats-get`).
    pub reads_device: Stats,
    /// The host's offload counters (from its queues' own counters), summed over I/O queues.
    pub host: HostCounters,
    /// NIC counters of offloaded sockets during the READ phase.
    pub nic: NicStats,
    /// Wire counters.
    pub wire: WireStats,
    /// Engine-internal counters.
    pub engine: ddp_engine::Diagnostics,
    /// READs completed.
    pub reads: u64,
    /// Payload bytes of the READs.
    pub read_bytes: u64,
    /// READs that completed with an error.
    pub read_errors: u64,
    /// READs that failed with a data digest error.
    pub ddgst_errors: u64,
    /// Successful READs whose data was not the namespace's (must be 0).
    pub bad_data: u64,
    /// READs that failed with a data digest error.
    pub digest_failed_reads: BTreeSet<ReadId>,
    /// READs whose payload had a corrupted byte delivered to the host.
    pub corrupted_reads: BTreeSet<ReadId>,
    /// CIDs seen on I/O queues, largest.
    pub max_cid: u16,
    /// CPU seconds of the host during the reads (thread CPU time).
    pub host_cpu_seconds: f64,
    /// CPU seconds of the network side (target, wire, NIC) during the reads; 0 when not
    /// threaded.
    pub net_cpu_seconds: f64,
    /// Wall seconds of the reads.
    pub wall_seconds: f64,
}

impl SimReport {
    /// READ phase: `rx-nvme-tcp-packets` over the segments received on offloaded sockets.
    pub fn offloaded_packet_ratio(&self) -> f64 {
        ratio(self.reads_device.rx_nvme_tcp_packets, self.nic.segments)
    }
    /// READ phase: `rx-nvme-tcp-bytes` over the TCP payload bytes received on offloaded
    /// sockets.
    pub fn offloaded_byte_ratio(&self) -> f64 {
        ratio(self.reads_device.rx_nvme_tcp_bytes, self.nic.payload_bytes)
    }
    /// READ phase: `rx-nvme-tcp-resync` over the segments received on offloaded sockets.
    pub fn resync_ratio(&self) -> f64 {
        ratio(self.reads_device.rx_nvme_tcp_resync, self.nic.segments)
    }
    /// READ phase: `rx-nvme-tcp-drop` over the segments received on offloaded sockets.
    pub fn drop_ratio(&self) -> f64 {
        ratio(self.reads_device.rx_nvme_tcp_drop, self.nic.segments)
    }
    /// Host CPU seconds per GiB read.
    pub fn host_cpu_per_gib(&self) -> f64 {
        if self.read_bytes == 0 {
            return 0.0;
        }
        self.host_cpu_seconds / (self.read_bytes as f64 / f64::from(1u32 << 30))
    }
}

/// `now - before`, counter by counter.
fn stats_since(now: &Stats, before: &Stats) -> Stats {
    let mut d = Stats::default();
    for id in ulp_ddp::StatId::ALL {
        *d.get_mut(id) = now.get(id).saturating_sub(before.get(id));
    }
    d
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The byte at namespace offset `off` of the fill pattern.
pub fn pattern_byte(off: u64) -> u8 {
    let w = off / 8;
    let mut z = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A;
    z = (z ^ (z >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (z >> ((off % 8) * 8)) as u8
}

fn fill_pattern(off: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(off + i as u64);
    }
}

/// A zeroed READ buffer of `len` bytes in `segments` pieces.
fn read_buffer(len: usize, segments: usize) -> IoBuf {
    if segments <= 1 {
        return IoBuf::Contig(vec![0u8; len]);
    }
    let per = len.div_ceil(segments).max(1);
    let mut segs = Vec::with_capacity(segments);
    let mut left = len;
    while left > 0 {
        let n = per.min(left);
        segs.push(vec![0u8; n]);
        left -= n;
    }
    IoBuf::Sgl(segs)
}

fn check_pattern(off: u64, buf: &IoBuf) -> bool {
    let mut o = off;
    buf.chunks(0, buf.len())
        .into_iter()
        .flatten()
        .flatten()
        .all(|&b| {
            let ok = b == pattern_byte(o);
            o += 1;
            ok
        })
}

/// A command builder's output: `nvme-tcp-host`'s builders return a [`Request`] or a
/// `Result` of one depending on whether they validate their arguments.
///
/// [`Request`]: nvme_tcp_host::Request
pub(crate) trait IntoRequest {
    fn into_request(self) -> Result<nvme_tcp_host::Request, SimError>;
}

impl IntoRequest for nvme_tcp_host::Request {
    fn into_request(self) -> Result<nvme_tcp_host::Request, SimError> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> IntoRequest for Result<nvme_tcp_host::Request, E> {
    fn into_request(self) -> Result<nvme_tcp_host::Request, SimError> {
        self.map_err(|e| SimError::Setup(e.to_string()))
    }
}

/// How the host reaches the network.
trait Link {
    fn open(&mut self) -> Result<(), SimError>;
    fn exchange(&mut self, h2c: Vec<Vec<u8>>) -> Result<(Vec<Option<Delivery>>, bool), SimError>;
    /// Marks the start of the measured phase (NIC counters, network CPU time).
    fn start_measure(&mut self) -> Result<(), SimError>;
    fn finish(&mut self) -> Result<NetSummary, SimError>;
}

/// What the network side reports at the end.
#[derive(Debug, Clone, Default)]
struct NetSummary {
    /// NIC counters of the measured phase.
    nic: NicStats,
    wire: WireStats,
    corrupted: Vec<(usize, crate::wire::Corruption)>,
    cpu: f64,
}

fn summarize(net: &NetSide, nic0: NicStats, cpu: f64) -> NetSummary {
    let nic = net.nic_stats();
    NetSummary {
        nic: NicStats {
            segments: nic.segments - nic0.segments,
            payload_bytes: nic.payload_bytes - nic0.payload_bytes,
        },
        wire: net.wire_stats(),
        corrupted: net.delivered_corruptions(),
        cpu,
    }
}

struct DirectLink(NetSide, NicStats);

impl Link for DirectLink {
    fn open(&mut self) -> Result<(), SimError> {
        self.0.open();
        Ok(())
    }
    fn exchange(&mut self, h2c: Vec<Vec<u8>>) -> Result<(Vec<Option<Delivery>>, bool), SimError> {
        let d = self.0.step(h2c)?;
        Ok((d, self.0.is_idle()))
    }
    fn start_measure(&mut self) -> Result<(), SimError> {
        self.1 = self.0.nic_stats();
        Ok(())
    }
    fn finish(&mut self) -> Result<NetSummary, SimError> {
        Ok(summarize(&self.0, self.1, 0.0))
    }
}

enum ToNet {
    Open,
    Exchange(Vec<Vec<u8>>),
    StartMeasure,
    Finish,
}

enum FromNet {
    Opened,
    Delivered(Vec<Option<Delivery>>, bool),
    Summary(NetSummary),
    Failed(SimError),
}

struct ThreadLink {
    tx: mpsc::Sender<ToNet>,
    rx: mpsc::Receiver<FromNet>,
}

impl ThreadLink {
    fn call(&mut self, m: ToNet) -> Result<FromNet, SimError> {
        self.tx.send(m).map_err(|_| SimError::NetThread)?;
        match self.rx.recv().map_err(|_| SimError::NetThread)? {
            FromNet::Failed(e) => Err(e),
            r => Ok(r),
        }
    }
}

impl Link for ThreadLink {
    fn open(&mut self) -> Result<(), SimError> {
        self.call(ToNet::Open).map(|_| ())
    }
    fn exchange(&mut self, h2c: Vec<Vec<u8>>) -> Result<(Vec<Option<Delivery>>, bool), SimError> {
        match self.call(ToNet::Exchange(h2c))? {
            FromNet::Delivered(d, idle) => Ok((d, idle)),
            _ => Err(SimError::NetThread),
        }
    }
    fn start_measure(&mut self) -> Result<(), SimError> {
        self.call(ToNet::StartMeasure).map(|_| ())
    }
    fn finish(&mut self) -> Result<NetSummary, SimError> {
        match self.call(ToNet::Finish)? {
            FromNet::Summary(s) => Ok(s),
            _ => Err(SimError::NetThread),
        }
    }
}

fn net_thread(mut net: NetSide, rx: mpsc::Receiver<ToNet>, tx: mpsc::Sender<FromNet>) {
    let mut cpu0 = crate::cpu::thread_cpu_seconds();
    let mut nic0 = NicStats::default();
    while let Ok(m) = rx.recv() {
        let reply = match m {
            ToNet::Open => {
                net.open();
                FromNet::Opened
            }
            ToNet::Exchange(h2c) => match net.step(h2c) {
                Ok(d) => FromNet::Delivered(d, net.is_idle()),
                Err(e) => FromNet::Failed(e),
            },
            ToNet::StartMeasure => {
                cpu0 = crate::cpu::thread_cpu_seconds();
                nic0 = net.nic_stats();
                FromNet::Opened
            }
            ToNet::Finish => FromNet::Summary(summarize(
                &net,
                nic0,
                crate::cpu::thread_cpu_seconds() - cpu0,
            )),
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

/// The host queues' offload counters in a run's report (copied from each queue's
/// [`QueueStats`] at the end of the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostCounters {
    /// Queues whose `sk_add` failed (software path).
    pub sk_add_fail: u64,
    /// READs whose buffer was lent to the device.
    pub setup: u64,
    /// READs the device refused (software path for that I/O).
    pub setup_fail: u64,
    /// Buffers handed back (`teardown_done`).
    pub teardown_done: u64,
    /// Payload bytes whose copy was skipped (placed by the device).
    pub placed_bytes: u64,
    /// Payload bytes the host copied itself.
    pub copied_bytes: u64,
    /// C2HData PDUs whose data digest the device verified (host CRC skipped).
    pub ddgst_offloaded: u64,
    /// Payload bytes the host ran CRC32C over.
    pub digested_bytes: u64,
    /// Data digest mismatches found by the host.
    pub ddgst_errors: u64,
    /// Resync requests confirmed to the device.
    pub resync_confirmed: u64,
    /// Placement marks the host ignored (anomalies).
    pub anomalies: u64,
}

impl HostCounters {
    fn add(&mut self, s: &QueueStats) {
        self.setup += s.ddp_setups;
        self.setup_fail += s.ddp_setup_fails;
        self.teardown_done += s.ddp_teardowns_done;
        self.placed_bytes += s.rx_offload_placed_bytes;
        self.copied_bytes += s.rx_copied_bytes;
        self.ddgst_offloaded += s.rx_offload_ddgst_pdus;
        self.digested_bytes += s.rx_digested_bytes;
        self.ddgst_errors += s.ddgst_errors;
        self.resync_confirmed += s.ddp_resyncs_confirmed;
        self.anomalies += s.ddp_anomalies;
    }
}

/// One I/O queue of the simulated host: the host's own queue core, fed segment by segment
/// with the device's marks.
struct SimQueue {
    core: QueueCore,
    /// Placed ranges of the segment being fed, as stream offsets (reused).
    placed: Vec<PlacedRange>,
}

impl SimQueue {
    fn receive(&mut self, d: &Delivery) -> Result<(), ProtocolError> {
        for m in &d.marks {
            let lo = (m.start - d.base) as usize;
            let Some(bytes) = d.data.get(lo..lo + m.len as usize) else {
                continue;
            };
            self.placed.clear();
            self.placed.extend(
                d.placed_of(m)
                    .iter()
                    .map(|&(start, len)| PlacedRange { start, len }),
            );
            let marks = RxMarks {
                crc: m.crc,
                placed: &self.placed,
            };
            self.core.rx_feed_marked(bytes, &marks)?;
        }
        Ok(())
    }

    /// Commands submitted and not yet popped.
    fn outstanding(&self) -> usize {
        self.core.in_flight() + self.core.completions_ready()
    }

    fn pop_completion(&mut self) -> Option<Completion> {
        self.core.pop_completion()
    }
}

/// The host side: admin queue, I/O queues, and the link to the network.
struct Host<L> {
    link: L,
    opts: ConnectOptions,
    admin: QueueCore,
    ioqs: Vec<SimQueue>,
    /// I/O queues whose `sk_add` failed.
    sk_add_fail: u64,
}

impl<L: Link> Host<L> {
    /// One lockstep round: sends what every queue has to send, hands over to the network
    /// and feeds back what arrived. Returns whether any byte moved and whether the network
    /// has nothing in flight.
    fn pump(&mut self) -> Result<(bool, bool), SimError> {
        let mut h2c = Vec::with_capacity(1 + self.ioqs.len());
        let a = self.admin.tx_pending().to_vec();
        self.admin.tx_consumed(a.len());
        let mut moved = !a.is_empty();
        h2c.push(a);
        for q in &mut self.ioqs {
            let t = q.core.tx_pending().to_vec();
            q.core.tx_consumed(t.len());
            moved |= !t.is_empty();
            h2c.push(t);
        }
        let (deliveries, idle) = self.link.exchange(h2c)?;
        for (i, d) in deliveries.into_iter().enumerate() {
            let Some(d) = d else { continue };
            moved = true;
            if i == 0 {
                self.admin
                    .rx_feed(&d.data)
                    .map_err(|e| SimError::Protocol(0, e))?;
            } else if let Some(q) = self.ioqs.get_mut(i - 1) {
                q.receive(&d).map_err(|e| SimError::Protocol(i as u16, e))?;
            }
        }
        for q in &mut self.ioqs {
            q.core.poll_offload();
        }
        Ok((moved, idle))
    }

    /// Pumps until `done` holds.
    fn pump_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> Result<(), SimError> {
        let mut still = 0;
        while !done(self) {
            let (moved, idle) = self.pump()?;
            if moved || !idle {
                still = 0;
            } else {
                still += 1;
                if still > STALL_ROUNDS {
                    tracing::warn!(admin = ?self.admin.phase(), admin_rx = self.admin.rx_position(), queues = ?self.ioqs.iter().map(|q| (q.core.phase(), q.core.rx_position(), q.core.in_flight())).collect::<Vec<_>>(), "stalled");
                    return Err(SimError::Stalled);
                }
            }
        }
        Ok(())
    }

    /// Drives one of the host's own association state machines over the simulated network
    /// until it is done.
    fn drive<T>(
        &mut self,
        qid: u16,
        mut step: impl FnMut(&mut Self, Instant) -> Result<Poll<T>, HostError>,
    ) -> Result<T, SimError> {
        let mut out = None;
        let mut err = None;
        self.pump_until(|h| match step(h, Instant::now()) {
            Ok(Poll::Ready(v)) => {
                out = Some(v);
                true
            }
            Ok(Poll::Pending { .. }) => false,
            Err(e) => {
                err = Some(e);
                true
            }
        })?;
        if let Some(e) = err {
            return Err(SimError::Host(qid, e.to_string()));
        }
        out.ok_or(SimError::Stalled)
    }

    /// The admin queue's association, by the host's own bring-up ([`AdminBringUp`]).
    fn connect_admin(&mut self) -> Result<ControllerInfo, SimError> {
        self.link.open()?;
        let mut sm = AdminBringUp::new(&self.opts, Instant::now())
            .map_err(|e| SimError::Setup(e.to_string()))?;
        self.drive(0, |h, now| sm.poll(&mut h.admin, now))
    }

    fn connect_io_queue(
        &mut self,
        qid: u16,
        cntlid: u16,
        queue_size: u16,
        netdev: Option<&DdpNetdev>,
        seed: u64,
    ) -> Result<(), SimError> {
        self.link.open()?;
        let index = usize::from(qid);
        let core = QueueCore::new(QueueConfig {
            qid,
            queue_size,
            hdgst: self.opts.hdgst,
            ddgst: self.opts.ddgst,
            cid_mode: netdev.map_or(CidMode::Tagged, DdpNetdev::cid_mode),
            in_capsule_max: 8192,
        });
        self.ioqs.push(SimQueue {
            core,
            placed: Vec::with_capacity(ddp_engine::MAX_PLACED_RANGES),
        });
        let k = self.ioqs.len() - 1;
        let mut sm = QueueConnect::new(&self.opts, qid, queue_size, Some(cntlid), Instant::now())
            .map_err(|e| SimError::Setup(e.to_string()))?;
        self.drive(qid, |h, now| sm.poll(&mut h.ioqs[k].core, now))?;
        let q = &mut self.ioqs[k];
        // sk_add after the queue's Connect; a failure leaves it on the software path.
        if let Some(n) = netdev
            && let Err(e) =
                q.core
                    .attach_offload(n, sock_id(index), Some(isn(seed, index)), u32::from(qid))
        {
            tracing::debug!(qid, error = %e, "sk_add failed; software path");
            self.sk_add_fail += 1;
        }
        Ok(())
    }

    /// Writes the pattern over the namespace through queue 1.
    fn prefill(&mut self, bytes: u64) -> Result<(), SimError> {
        const CHUNK: u64 = 128 << 10;
        let mut off = 0;
        let mut inflight = 0usize;
        while off < bytes || inflight > 0 {
            while off < bytes && inflight < 4 {
                let n = CHUNK.min(bytes - off);
                let mut data = vec![0u8; n as usize];
                fill_pattern(off, &mut data);
                let req = cmd::write(1, off / LBA, (n / LBA) as u32, IoBuf::Contig(data), off)
                    .into_request()?;
                self.ioqs[0]
                    .core
                    .submit(req, Instant::now())
                    .map_err(|e| SimError::Submit(e.reason))?;
                off += n;
                inflight += 1;
            }
            let mut done = Vec::new();
            self.pump_until(|h| {
                while let Some(c) = h.ioqs[0].pop_completion() {
                    done.push(c);
                }
                !done.is_empty()
            })?;
            for c in done {
                inflight -= 1;
                c.result.map_err(|e| SimError::Command(1, e))?;
            }
        }
        Ok(())
    }

    /// Runs the READs; returns the report's read part.
    fn read_workload(&mut self, p: &SimParams, r: &mut SimReport) -> Result<(), SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(p.wire.seed ^ 0x5EED_F00D);
        let sizes: Vec<u64> = p
            .read_sizes
            .iter()
            .map(|&s| u64::from(s).clamp(LBA, p.namespace_bytes) / LBA * LBA)
            .collect();
        if sizes.is_empty() {
            return Err(SimError::Setup("no read size".into()));
        }
        let mut issued = 0u64;
        let mut meta: HashMap<u64, (u16, u16, u64, u64)> = HashMap::new();
        let mut instances: HashMap<(u16, u16), u64> = HashMap::new();
        let nq = self.ioqs.len();
        let mut still = 0;
        // Buffers are reused, as an application with registered buffers does.
        let mut pool: HashMap<usize, Vec<IoBuf>> = HashMap::new();
        loop {
            for k in 0..nq {
                while issued < p.reads && self.ioqs[k].outstanding() < p.queue_depth {
                    let len = sizes[rng.random_range(..sizes.len())];
                    let blocks = (p.namespace_bytes - len) / LBA;
                    let off = rng.random_range(0..=blocks) * LBA;
                    let buf = pool
                        .get_mut(&(len as usize))
                        .and_then(Vec::pop)
                        .unwrap_or_else(|| read_buffer(len as usize, p.read_segments));
                    let q = &mut self.ioqs[k];
                    let cid = q
                        .core
                        .submit(
                            cmd::read(1, off / LBA, (len / LBA) as u32, buf, issued)
                                .into_request()?,
                            Instant::now(),
                        )
                        .map_err(|e| SimError::Submit(e.reason))?;
                    let qid = q.core.qid();
                    let n = instances.entry((qid, cid)).or_insert(0);
                    meta.insert(issued, (qid, cid, *n, off));
                    *n += 1;
                    issued += 1;
                }
            }
            let mut got = 0;
            for k in 0..nq {
                while let Some(c) = self.ioqs[k].pop_completion() {
                    got += 1;
                    let Some((qid, cid, instance, off)) = meta.remove(&c.user_data) else {
                        continue;
                    };
                    r.max_cid = r.max_cid.max(cid);
                    r.reads += 1;
                    let id = ReadId { qid, cid, instance };
                    match &c.result {
                        Ok(_) => {
                            let buf = c.buf.as_ref();
                            r.read_bytes += buf.map_or(0, |b| b.len() as u64);
                            if p.verify && !buf.is_some_and(|b| check_pattern(off, b)) {
                                r.bad_data += 1;
                            }
                        }
                        Err(e) => {
                            r.read_errors += 1;
                            if matches!(e, IoError::DataDigest { .. }) {
                                r.ddgst_errors += 1;
                                r.digest_failed_reads.insert(id);
                            }
                        }
                    }
                    // Verified runs use fresh buffers, so stale data cannot pass for new.
                    if !p.verify
                        && let Some(b) = c.buf
                    {
                        pool.entry(b.len()).or_default().push(b);
                    }
                }
            }
            if issued >= p.reads && self.ioqs.iter().all(|q| q.outstanding() == 0) {
                return Ok(());
            }
            if got == 0 {
                let (moved, idle) = self.pump()?;
                let pending = self
                    .ioqs
                    .iter()
                    .any(|q| q.core.completions_ready() > 0 || q.core.waiting_for_teardown() > 0);
                if moved || !idle || pending {
                    still = 0;
                } else {
                    still += 1;
                    if still > STALL_ROUNDS {
                        tracing::warn!(issued, queues = ?self.ioqs.iter().map(|q| (q.core.phase(), q.core.rx_position(), q.core.in_flight(), q.core.rx_state_name(), q.outstanding())).collect::<Vec<_>>(), "read workload stalled");
                        return Err(SimError::Stalled);
                    }
                }
            }
        }
    }
}

fn target_state(p: &SimParams) -> Result<Arc<TargetState>, SimError> {
    let ns = NamespaceConfig::parse(&format!("ram:{},lba=4096", p.namespace_bytes))
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let mut cfg = TargetConfig::single_port(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .subsystem(SubsystemConfig::new(SIM_NQN).namespace(ns));
    cfg.limits.max_queue_size = cfg.limits.max_queue_size.max(p.queue_size);
    let st = TargetState::new(&cfg).map_err(|e| SimError::Setup(e.to_string()))?;
    Ok(Arc::new(st))
}

fn validate(p: &SimParams) -> Result<(), SimError> {
    if p.io_queues == 0 || p.queue_size < 2 || p.queue_depth == 0 {
        return Err(SimError::Setup(
            "need at least one I/O queue, queue_size >= 2 and queue_depth >= 1".into(),
        ));
    }
    if p.queue_depth >= usize::from(p.queue_size) {
        return Err(SimError::Setup(
            "queue_depth must be below queue_size".into(),
        ));
    }
    if p.namespace_bytes < LBA || !p.namespace_bytes.is_multiple_of(LBA) {
        return Err(SimError::Setup(
            "namespace_bytes must be a multiple of 4096".into(),
        ));
    }
    Ok(())
}

fn host_run<L: Link>(link: L, p: &SimParams, dev: &SoftDdpDevice) -> Result<SimReport, SimError> {
    let mut opts = ConnectOptions::new("sim", 4420, SIM_NQN);
    // A fixed identity keeps runs byte-identical.
    opts.hostid = [0x11; 16];
    opts.hostnqn = nvme_tcp_host::options::hostnqn_from_uuid(&opts.hostid);
    opts.hdgst = p.hdgst;
    opts.ddgst = p.ddgst;
    opts.kato = None;
    opts.nr_io_queues = p.io_queues;
    let admin = QueueCore::new(QueueConfig {
        qid: 0,
        queue_size: 32,
        hdgst: p.hdgst,
        ddgst: p.ddgst,
        cid_mode: CidMode::Tagged,
        in_capsule_max: 8192,
    });
    let mut h = Host {
        link,
        opts,
        admin,
        ioqs: Vec::new(),
        sk_add_fail: 0,
    };
    let run0 = dev.get_stats();
    let info = h.connect_admin()?;
    let cntlid = info.cntlid;
    if info.io_queues_granted < p.io_queues {
        return Err(SimError::Setup(format!(
            "the target granted {} I/O queues, {} asked",
            info.io_queues_granted, p.io_queues
        )));
    }
    // The admin queue is never offloaded; the controller's device is probed once.
    let shared: Arc<dyn UlpDdpDevice> = Arc::new(dev.clone());
    let netdev = if p.ddp_offload {
        DdpNetdev::probe(&shared, false)
    } else {
        None
    };
    for qid in 1..=p.io_queues {
        h.connect_io_queue(qid, cntlid, p.queue_size, netdev.as_ref(), p.wire.seed)?;
    }
    h.prefill(p.namespace_bytes)?;
    let mut r = SimReport::default();
    h.link.start_measure()?;
    let device0 = dev.get_stats();
    let cpu0 = crate::cpu::thread_cpu_seconds();
    let t0 = Instant::now();
    h.read_workload(p, &mut r)?;
    r.host_cpu_seconds = crate::cpu::thread_cpu_seconds() - cpu0;
    r.reads_device = stats_since(&dev.get_stats(), &device0);
    r.wall_seconds = t0.elapsed().as_secs_f64();
    // Disconnect: every queue's offload is removed.
    r.host.sk_add_fail = h.sk_add_fail;
    for q in &mut h.ioqs {
        q.core.detach_offload();
        r.host.add(&q.core.stats());
    }
    let net = h.link.finish()?;
    r.nic = net.nic;
    r.wire = net.wire;
    r.net_cpu_seconds = net.cpu;
    r.corrupted_reads = net
        .corrupted
        .iter()
        .filter(|(i, _)| *i > 0)
        .map(|&(i, c)| ReadId {
            qid: i as u16,
            cid: c.cccid,
            instance: c.instance,
        })
        .collect();
    r.device = stats_since(&dev.get_stats(), &run0);
    r.engine = dev.diagnostics();
    Ok(r)
}

/// Runs a READ workload over the simulated network and reports offload ratios, resyncs,
/// drops, errors and host CPU time. Deterministic for a given `params` (CPU and wall times
/// aside).
///
/// With `params.threaded`, the host runs on a thread named `host-sim` and the network side
/// (target, wire, NIC) on one named `nic-sim`; `host_cpu_seconds` is then the host thread's
/// CPU time during the reads and `net_cpu_seconds` the network thread's.
pub fn run_sim_read_workload(params: &SimParams) -> Result<SimReport, SimError> {
    run_sim_read_workload_on(params, SoftDdpDevice::new(params.engine))
}

/// [`run_sim_read_workload`] on a device the caller owns (and may expose through a control
/// plane while the workload runs; `params.engine` is then ignored). The report's device
/// counters are deltas, so a device that served earlier runs reports this run only.
pub fn run_sim_read_workload_on(
    params: &SimParams,
    dev: SoftDdpDevice,
) -> Result<SimReport, SimError> {
    validate(params)?;
    let state = target_state(params)?;
    let net = NetSide::new(state, dev.clone(), params.wire, params.segments_per_round);
    if !params.threaded {
        return host_run(DirectLink(net, NicStats::default()), params, &dev);
    }
    let (to_net, net_rx) = mpsc::channel();
    let (net_tx, from_net) = mpsc::channel();
    let net_handle = std::thread::Builder::new()
        .name("nic-sim".into())
        .spawn(move || net_thread(net, net_rx, net_tx))
        .map_err(|e| SimError::Setup(format!("spawn: {e}")))?;
    let p = params.clone();
    let host_dev = dev.clone();
    let host_handle = std::thread::Builder::new()
        .name("host-sim".into())
        .spawn(move || {
            let link = ThreadLink {
                tx: to_net,
                rx: from_net,
            };
            host_run(link, &p, &host_dev)
        })
        .map_err(|e| SimError::Setup(format!("spawn: {e}")))?;
    let r = host_handle.join().map_err(|_| SimError::NetThread)?;
    let _ = net_handle.join();
    r
}

/// One workload run twice on the same seed: the host's `ddp_offload` option off, then on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffloadComparison {
    /// `ddp_offload` off: every byte copied and digested by the host.
    pub off: SimReport,
    /// `ddp_offload` on.
    pub on: SimReport,
}

/// Runs `params` with the host's offload option off and on (everything else equal) and
/// returns both reports, for a side-by-side view (`ulpddp perf --ddp`).
pub fn compare_offload(params: &SimParams) -> Result<OffloadComparison, SimError> {
    let off = run_sim_read_workload(&SimParams {
        ddp_offload: false,
        ..params.clone()
    })?;
    let on = run_sim_read_workload(&SimParams {
        ddp_offload: true,
        ..params.clone()
    })?;
    Ok(OffloadComparison { off, on })
}

impl std::fmt::Display for OffloadComparison {
    /// A two-column table: offload off, offload on.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (&self.off, &self.on);
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let rows: [(&str, String, String); 10] = [
            ("reads", a.reads.to_string(), b.reads.to_string()),
            (
                "read MiB",
                format!("{:.1}", a.read_bytes as f64 / 1048576.0),
                format!("{:.1}", b.read_bytes as f64 / 1048576.0),
            ),
            (
                "offloaded packets",
                pct(a.offloaded_packet_ratio()),
                pct(b.offloaded_packet_ratio()),
            ),
            (
                "offloaded bytes",
                pct(a.offloaded_byte_ratio()),
                pct(b.offloaded_byte_ratio()),
            ),
            (
                "resyncs",
                a.reads_device.rx_nvme_tcp_resync.to_string(),
                b.reads_device.rx_nvme_tcp_resync.to_string(),
            ),
            (
                "drops",
                a.reads_device.rx_nvme_tcp_drop.to_string(),
                b.reads_device.rx_nvme_tcp_drop.to_string(),
            ),
            (
                "host copied MiB",
                format!(
                    "{:.1}",
                    (a.read_bytes - a.host.placed_bytes.min(a.read_bytes)) as f64 / 1048576.0
                ),
                format!(
                    "{:.1}",
                    (b.read_bytes - b.host.placed_bytes.min(b.read_bytes)) as f64 / 1048576.0
                ),
            ),
            (
                "host CPU s",
                format!("{:.3}", a.host_cpu_seconds),
                format!("{:.3}", b.host_cpu_seconds),
            ),
            (
                "host CPU s/GiB",
                format!("{:.3}", a.host_cpu_per_gib()),
                format!("{:.3}", b.host_cpu_per_gib()),
            ),
            (
                "read errors",
                a.read_errors.to_string(),
                b.read_errors.to_string(),
            ),
        ];
        writeln!(f, "{:<20} {:>14} {:>14}", "", "offload off", "offload on")?;
        for (k, x, y) in rows {
            writeln!(f, "{k:<20} {x:>14} {y:>14}")?;
        }
        Ok(())
    }
}
