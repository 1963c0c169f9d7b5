//! The replay: finds NVMe/TCP connections, plays each through the device (controller-to-host
//! segments, in capture order) and through a replay ULP that uses the ULP DDP interface as the
//! host does.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use ddp_engine::{EngineConfig, RxSocket, SoftDdpDevice, TeardownMode};
use nvme_tcp_wire::framer::{Framer, FramerEvent};
use nvme_tcp_wire::nvme::{ConnectCommand, Cqe, FabricsType, IoOpcode, Sqe};
use nvme_tcp_wire::pdu::{IcReqRepr, IcRespRepr, PduFlags, PduRepr, PduType};
use nvme_tcp_wire::validate::{NegotiatedParams, Role};
use serde::{Deserialize, Serialize};
use ulp_ddp::{
    DdpCtx, DdpError, DdpEvent, DdpIo, IoBuf, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncAction,
    SkConfig, SockId, UlpDdpDevice, UlpDdpSocket,
};

use crate::capture::{Capture, TcpPacket};
use crate::perturb::{Perturb, PerturbCounts, Perturber};
use crate::report::{
    ConnSummary, DigestVerdict, Finding, MAX_FINDINGS, PduRecord, Record, ResyncEvent, Summary,
};
use crate::stream::{Chunk, MAX_OOO_BYTES, Reassembler};

/// The NVMe/TCP port (IANA).
pub const NVME_TCP_PORT: u16 = 4420;

/// How to replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplayOptions {
    /// Connections with this port on one side are NVMe/TCP (that side is the controller).
    /// Others are recognised by an ICReq at the start of their stream.
    pub port: u16,
    /// The device's configuration.
    pub engine: EngineConfig,
    /// Size of the host buffers' segments (pages): a read of `n` bytes is lent as
    /// `ceil(n / page_size)` segments, as the block layer hands it over.
    pub page_size: usize,
    /// Largest read the replay lends a buffer for (bigger ones stay on the software path).
    pub max_io: u64,
    /// Most bytes lent to the device at once.
    pub max_lent: u64,
    /// Perturbations of the controller-to-host segments.
    pub perturb: Option<Perturb>,
    /// Long run: replay the I/O part of each offloaded connection until its
    /// controller-to-host stream has this many bytes (0: once).
    pub long_run_bytes: u64,
    /// Keep per-PDU records (for `--json` and `--compare`).
    pub records: bool,
    /// Fault injection, to test the checks themselves: the device is given each
    /// controller-to-host segment with one payload byte flipped (a device whose DMA is
    /// broken), while the host receives it intact. Every replay with placement must then
    /// report device errors.
    pub inject_device_fault: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            port: NVME_TCP_PORT,
            engine: default_engine(),
            page_size: 4096,
            max_io: 64 << 20,
            max_lent: 1 << 30,
            perturb: None,
            long_run_bytes: 0,
            records: false,
            inject_device_fault: false,
        }
    }
}

/// The device configuration the replay uses by default: one that offloads a Linux host's
/// reads — the full CID range (Linux puts generation bits in its CIDs), no SG-list limit
/// (Linux sends 1 MiB reads of 4 KiB pages: 256 entries), no threshold.
pub fn default_engine() -> EngineConfig {
    EngineConfig {
        max_ddp_sgl_len: 0,
        io_threshold: 0,
        full_ccid_range: true,
        teardown: TeardownMode::Immediate,
        ..EngineConfig::connectx7_like()
    }
}

/// What a replay produced.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The summary.
    pub summary: Summary,
    /// Per-PDU records (if asked for).
    pub records: Vec<Record>,
}

/// Replays a capture.
pub fn replay(capture: &Capture, opts: &ReplayOptions) -> Replay {
    let dev = Arc::new(SoftDdpDevice::new(opts.engine));
    let mut out = Out {
        summary: Summary {
            frames: capture.counts,
            capture_problems: capture.problems.clone(),
            ..Summary::default()
        },
        records: Vec::new(),
        keep_records: opts.records,
        lent: 0,
    };
    let (conns, other) = find_connections(&capture.packets, opts.port);
    out.summary.other_connections = other;
    let mut perturbed = PerturbCounts::default();
    // A long run repeats one queue: the one with the most controller-to-host data.
    let long_run_conn = conns
        .iter()
        .enumerate()
        .max_by_key(|(_, (host, _, pkts))| {
            pkts.iter()
                .filter(|p| p.src != *host)
                .map(|p| p.payload.len() as u64)
                .sum::<u64>()
        })
        .map(|(i, _)| i);
    for (i, (host, target, pkts)) in conns.into_iter().enumerate() {
        let mut opts_i = opts.clone();
        if Some(i) != long_run_conn {
            opts_i.long_run_bytes = 0;
        }
        let opts = &opts_i;
        let mut c = Conn::new(
            i as u64,
            host,
            target,
            Arc::clone(&dev) as Arc<dyn UlpDdpDevice>,
            &dev,
            opts,
        );
        c.run(&pkts, &mut out);
        if let Some(p) = &c.perturber {
            let k = p.counts;
            perturbed.dropped += k.dropped;
            perturbed.reordered += k.reordered;
            perturbed.duplicated += k.duplicated;
            perturbed.resplit += k.resplit;
            perturbed.corrupted += k.corrupted;
        }
        out.summary.connections.push(c.conn_summary());
    }
    let s = &mut out.summary;
    if opts.perturb.is_some() {
        s.perturbed = Some(perturbed);
    }
    s.stats = dev.get_stats();
    s.diagnostics = dev.diagnostics();
    s.resync_requests = s.stats.rx_nvme_tcp_resync;
    if s.connections.is_empty() {
        s.warnings.push(format!(
            "no NVMe/TCP connection found (port {} or an ICReq at a stream's start)",
            opts.port
        ));
    }
    let failed: u64 = s.setup_failures.values().sum();
    if failed > 0 && failed * 2 >= s.reads_offloaded + failed {
        s.warnings.push(format!(
            "setup failed for {failed} of {} reads offered to the device: at least half were \
             not offloaded; check the device options (--sgl-len, --linear-cids, --io-threshold)",
            s.reads_offloaded + failed
        ));
    }
    Replay {
        summary: out.summary,
        records: out.records,
    }
}

struct Out {
    summary: Summary,
    records: Vec<Record>,
    keep_records: bool,
    /// Bytes lent to the device now.
    lent: u64,
}

impl Out {
    fn finding(&mut self, kind: &str, stream: &str, frame: u64, detail: String) {
        let f = Finding {
            kind: kind.to_string(),
            stream: stream.to_string(),
            frame,
            detail,
        };
        if f.is_device_error() {
            self.summary.device_errors += 1;
        }
        self.summary.findings_total += 1;
        if self.summary.findings.len() < MAX_FINDINGS {
            self.summary.findings.push(f);
        }
    }

    fn record(&mut self, r: Record) {
        if self.keep_records {
            self.records.push(r);
        }
    }
}

type ConnPackets<'a> = Vec<&'a TcpPacket>;

/// Groups the segments by connection and decides which side is the controller. Returns the
/// NVMe/TCP connections (host, controller, segments in capture order) and the number of
/// other TCP connections.
fn find_connections(
    packets: &[TcpPacket],
    port: u16,
) -> (Vec<(SocketAddr, SocketAddr, ConnPackets<'_>)>, u64) {
    let mut order: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut by_pair: HashMap<(SocketAddr, SocketAddr), ConnPackets<'_>> = HashMap::new();
    for p in packets {
        let key = if p.src <= p.dst {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        by_pair
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(p);
    }
    let mut conns = Vec::new();
    let mut other = 0;
    for key in order {
        let Some(pkts) = by_pair.remove(&key) else {
            continue;
        };
        let (a, b) = key;
        let target = if b.port() == port && a.port() != port {
            Some(b)
        } else if a.port() == port && b.port() != port {
            Some(a)
        } else {
            // An ICReq as the first payload of one direction: its sender is the host.
            pkts.iter()
                .find(|p| !p.payload.is_empty())
                .filter(|p| looks_like_icreq(&p.payload))
                .map(|p| p.dst)
        };
        match target {
            Some(t) => {
                let host = if t == a { b } else { a };
                conns.push((host, t, pkts));
            }
            None => other += 1,
        }
    }
    (conns, other)
}

fn looks_like_icreq(payload: &[u8]) -> bool {
    matches!(
        PduRepr::parse(payload.get(..nvme_tcp_wire::pdu::IC_PDU_LEN).unwrap_or(&[])),
        Ok(PduRepr::IcReq(_))
    )
}

/// Headers a framing search must find in a row before it trusts a framing.
const SEARCH_MIN_HEADERS: usize = 3;
/// Most bytes kept while searching for the framing.
const SEARCH_WINDOW: usize = 4 << 20;
/// Search again only after this many new bytes arrived (and at the end).
const SEARCH_STEP: usize = 16 << 10;

/// Finds where PDUs start in `bytes`, for a receiver in `role`: the first offset from which
/// [`SEARCH_MIN_HEADERS`] valid headers follow each other — or at least one whose framing
/// ends exactly at the end of the bytes, if `at_end` or the candidate is at offset 0 (a
/// capture that starts mid-stream usually starts at a segment, and a host sends each command
/// in its own segments). With `known` parameters only those
/// are tried; otherwise every combination of digests (PDA 0).
fn find_framing(
    bytes: &[u8],
    role: Role,
    known: Option<NegotiatedParams>,
    at_end: bool,
) -> Option<(usize, NegotiatedParams)> {
    let combos: Vec<NegotiatedParams> = match known {
        Some(p) => vec![p],
        None => [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .map(|(h, d)| NegotiatedParams {
                hdgst: h,
                ddgst: d,
                max_plen: u32::MAX,
                ..NegotiatedParams::new(role)
            })
            .collect(),
    };
    let types: &[PduType] = match role {
        Role::Host => &[
            PduType::C2hData,
            PduType::CapsuleResp,
            PduType::R2t,
            PduType::C2hTermReq,
        ],
        Role::Controller => &[PduType::CapsuleCmd, PduType::H2cData, PduType::H2cTermReq],
    };
    for o in 0..bytes.len().saturating_sub(8) {
        let Some(t) = PduType::from_u8(bytes[o]) else {
            continue;
        };
        if !types.contains(&t) || bytes[o + 2] != t.hlen() {
            continue;
        }
        for p in &combos {
            let mut f = Framer::new(*p);
            let mut headers = 0;
            let mut pos = o;
            let mut ok = true;
            // Runs on past the end with empty input to take the last PDU's End.
            while headers < SEARCH_MIN_HEADERS + 1 {
                match f.advance(&bytes[pos..]) {
                    Ok((n, ev)) => {
                        pos += n;
                        if matches!(ev, Some(FramerEvent::Header(_))) {
                            headers += 1;
                        }
                        if n == 0 && ev.is_none() {
                            break;
                        }
                    }
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            let enough = headers > SEARCH_MIN_HEADERS
                || (headers >= SEARCH_MIN_HEADERS && f.is_at_pdu_boundary())
                || ((at_end || o == 0)
                    && headers >= 1
                    && pos == bytes.len()
                    && f.is_at_pdu_boundary());
            if ok && enough {
                return Some((o, *p));
            }
        }
    }
    None
}

/// Where a direction's PDU framing stands for the replay ULP.
enum Framing {
    /// Following PDUs; the current PDU started at `pdu_start`.
    Known { framer: Box<Framer>, pdu_start: u64 },
    /// Looking for PDU boundaries in the bytes kept.
    Searching {
        probe: Vec<Chunk>,
        bytes: usize,
        searched_at: usize,
    },
}

/// A read the host sent.
struct Read {
    len: u64,
    /// The buffer is lent to the device.
    ddp: bool,
    /// The data as the ULP received it (what the buffer must hold at the end).
    expected: Vec<u8>,
}

/// The C2HData PDU being received.
struct DataPdu {
    cid: u16,
    datao: u32,
    datal: u32,
    seq: u32,
    /// Data+digest span in stream offsets.
    span: (u64, u64),
    crc_all: bool,
    placed: u64,
    digest: Option<(u32, Option<u32>)>,
    success: bool,
    resync: Option<ResyncEvent>,
    has_ddgst: bool,
}

/// The header of the PDU in progress, other than C2HData.
struct OtherPdu {
    seq: u32,
    name: &'static str,
    cid: Option<u16>,
    resync: Option<ResyncEvent>,
    completes: Option<u16>,
    connect_ok: bool,
}

enum Cur {
    None,
    Data(DataPdu),
    Other(OtherPdu),
}

struct Dir {
    rx: Option<Reassembler>,
    framing: Framing,
    /// Stream bytes before this offset are not parsed (before the first PDU found).
    skip_to: u64,
}

impl Dir {
    fn new() -> Self {
        Self {
            rx: None,
            skip_to: 0,
            framing: Framing::Searching {
                probe: Vec::new(),
                bytes: 0,
                searched_at: 0,
            },
        }
    }
}

/// Long-run bookkeeping: where the I/O part of the connection starts.
#[derive(Clone, Copy)]
struct IoStart {
    index: usize,
    h2t_off: u64,
    t2h_off: u64,
}

struct Conn<'d> {
    index: u64,
    name: String,
    host: SocketAddr,
    dev: Arc<dyn UlpDdpDevice>,
    soft: &'d SoftDdpDevice,
    opts: ReplayOptions,
    h2t: Dir,
    t2h: Dir,
    icreq: Option<IcReqRepr>,
    icresp: Option<IcRespRepr>,
    params: Option<NegotiatedParams>,
    qid: Option<u16>,
    sqsize: Option<u16>,
    connect_cid: Option<u16>,
    from_start: bool,
    sock: Option<Box<dyn UlpDdpSocket>>,
    rx: Option<RxSocket>,
    reads: HashMap<u16, Read>,
    /// Reads waiting for their CID's previous command to complete (perturbed runs).
    deferred: HashMap<u16, Vec<(u64, u64)>>,
    cur: Cur,
    pdus: u64,
    dead: bool,
    perturber: Option<Perturber>,
    io_start: Option<IoStart>,
    /// Packet index being processed.
    at: usize,
    /// The capture has ended (last framing search).
    at_end: bool,
}

impl<'d> Conn<'d> {
    fn new(
        index: u64,
        host: SocketAddr,
        target: SocketAddr,
        dev: Arc<dyn UlpDdpDevice>,
        soft: &'d SoftDdpDevice,
        opts: &ReplayOptions,
    ) -> Self {
        Self {
            index,
            name: format!("{host}->{target}"),
            host,
            dev,
            soft,
            opts: opts.clone(),
            h2t: Dir::new(),
            t2h: Dir::new(),
            icreq: None,
            icresp: None,
            params: None,
            qid: None,
            sqsize: None,
            connect_cid: None,
            from_start: false,
            sock: None,
            rx: None,
            reads: HashMap::new(),
            deferred: HashMap::new(),
            cur: Cur::None,
            pdus: 0,
            dead: false,
            perturber: opts.perturb.map(|p| Perturber::new(p, index)),
            io_start: None,
            at: 0,
            at_end: false,
        }
    }

    fn conn_summary(&self) -> ConnSummary {
        ConnSummary {
            stream: self.name.clone(),
            qid: self.qid,
            from_start: self.from_start,
            hdgst: self.params.is_some_and(|p| p.hdgst),
            ddgst: self.params.is_some_and(|p| p.ddgst),
            offloaded: self.io_start.is_some(),
            pdus: self.pdus,
        }
    }

    fn run(&mut self, pkts: &[&TcpPacket], out: &mut Out) {
        self.prepare_mid_stream(pkts, out);
        for (i, p) in pkts.iter().enumerate() {
            if self.dead {
                break;
            }
            self.at = i;
            self.packet(p.src == self.host, p.seq, &p.payload, p.syn, p.frame, out);
        }
        if let Some(pt) = self.perturber.as_mut() {
            let rest = pt.flush();
            for (seq, payload) in rest {
                self.t2h_segment(seq, &payload, 0, out);
            }
        }
        if self.opts.long_run_bytes > 0 && !self.dead {
            self.long_run(pkts, out);
        }
        self.finish(out);
    }

    /// A connection whose start was not captured: find the controller-to-host framing ahead
    /// (digests from the headers) and offload the socket from its first segment, letting the
    /// device find the framing by resync.
    fn prepare_mid_stream(&mut self, pkts: &[&TcpPacket], out: &mut Out) {
        if pkts.iter().any(|p| p.syn) {
            return;
        }
        // The host knows where its PDUs are; the replay finds out by looking ahead.
        let Some((params, first_frame)) = self.look_ahead(pkts, false, None) else {
            if let Some(p) = pkts.iter().find(|p| p.src != self.host) {
                out.finding(
                    "stream-error",
                    &self.name,
                    p.frame,
                    "start not captured and no PDU framing found: not offloaded".into(),
                );
            }
            return;
        };
        let _ = first_frame;
        self.params = Some(params);
        let h2t_known = NegotiatedParams {
            role: Role::Controller,
            ..params
        };
        self.look_ahead(pkts, true, Some(h2t_known));
        // The device is told nothing: it finds the framing by resync.
        self.attach(None, 0, out);
    }

    /// Finds the framing of one direction in the first bytes the capture has of it, and
    /// starts that direction's receiver there (bytes before the first PDU are skipped).
    fn look_ahead(
        &mut self,
        pkts: &[&TcpPacket],
        h2t: bool,
        known: Option<NegotiatedParams>,
    ) -> Option<(NegotiatedParams, u64)> {
        let host = self.host;
        let mut it = pkts
            .iter()
            .filter(|p| (p.src == host) == h2t && !p.payload.is_empty());
        let first = it.next()?;
        let mut r = Reassembler::new(first.seq);
        let mut bytes = Vec::new();
        for p in std::iter::once(first).chain(it) {
            for c in r.push(p.seq, &p.payload, false, &[], p.frame) {
                bytes.extend_from_slice(&c.data);
            }
            if bytes.len() >= SEARCH_WINDOW {
                break;
            }
        }
        let role = if h2t { Role::Controller } else { Role::Host };
        let (at, params) = find_framing(&bytes, role, known, true)?;
        let mut framer = Framer::new(NegotiatedParams {
            max_plen: u32::MAX,
            ..params
        });
        framer.set_compute_data_digest(!h2t);
        let dir = if h2t { &mut self.h2t } else { &mut self.t2h };
        dir.rx = Some(Reassembler::new(first.seq));
        dir.framing = Framing::Known {
            framer: Box::new(framer),
            pdu_start: at as u64,
        };
        dir.skip_to = at as u64;
        Some((params, first.frame))
    }

    fn packet(
        &mut self,
        from_host: bool,
        seq: u32,
        payload: &[u8],
        syn: bool,
        frame: u64,
        out: &mut Out,
    ) {
        if from_host {
            if syn {
                self.h2t = Dir::new();
                self.h2t.rx = Some(Reassembler::new(seq.wrapping_add(1)));
                self.h2t.framing = Framing::Known {
                    framer: Box::new(Framer::new(NegotiatedParams {
                        max_plen: u32::MAX,
                        ..NegotiatedParams::new(Role::Controller)
                    })),
                    pdu_start: 0,
                };
                self.from_start = true;
                return;
            }
            if payload.is_empty() {
                return;
            }
            let rx = self.h2t.rx.get_or_insert_with(|| Reassembler::new(seq));
            let chunks = rx.push(seq, payload, false, &[], frame);
            self.deliver_h2t(chunks, out);
            self.check_hole(true, out);
        } else {
            if syn {
                self.t2h = Dir::new();
                self.t2h.rx = Some(Reassembler::new(seq.wrapping_add(1)));
                let mut framer = Framer::new(NegotiatedParams {
                    max_plen: u32::MAX,
                    ..NegotiatedParams::new(Role::Host)
                });
                framer.set_compute_data_digest(true);
                self.t2h.framing = Framing::Known {
                    framer: Box::new(framer),
                    pdu_start: 0,
                };
                return;
            }
            if payload.is_empty() {
                return;
            }
            // Perturbations apply to what the device sees: the offloaded part.
            match self.perturber.as_mut().filter(|_| self.sock.is_some()) {
                Some(pt) => {
                    for (s, p) in pt.push((seq, payload.to_vec())) {
                        self.t2h_segment(s, &p, frame, out);
                    }
                }
                None => self.t2h_segment(seq, payload, frame, out),
            }
        }
    }

    /// A controller-to-host segment: through the device, then to the host's receiver.
    fn t2h_segment(&mut self, seq: u32, payload: &[u8], frame: u64, out: &mut Out) {
        if self.dead {
            return;
        }
        let mut crc = false;
        let mut placed = Vec::new();
        if let Some(rx) = &self.rx {
            let v = if self.opts.inject_device_fault && !payload.is_empty() {
                let mut bad = payload.to_vec();
                bad[payload.len() / 2] ^= 0xff;
                rx.on_segment(seq, &bad)
            } else {
                rx.on_segment(seq, payload)
            };
            crc = v.crc;
            placed = v.placed().iter().map(|r| (r.seq, r.len)).collect();
            if let Some(req) = v.resync_request {
                out.record(Record::ResyncRequest {
                    stream: self.name.clone(),
                    segment_seq: seq,
                    seq: req,
                });
            }
        }
        let rx = self.t2h.rx.get_or_insert_with(|| Reassembler::new(seq));
        let chunks = rx.push(seq, payload, crc, &placed, frame);
        self.deliver_t2h(chunks, out);
        self.check_hole(false, out);
    }

    /// Gives up on a hole the capture will not fill (too much waiting behind it).
    fn check_hole(&mut self, h2t: bool, out: &mut Out) {
        let dir = if h2t { &mut self.h2t } else { &mut self.t2h };
        let Some(rx) = dir.rx.as_mut() else {
            return;
        };
        if rx.ooo_bytes() <= MAX_OOO_BYTES {
            return;
        }
        self.skip_hole(h2t, out);
    }

    fn skip_hole(&mut self, h2t: bool, out: &mut Out) {
        let dir = if h2t { &mut self.h2t } else { &mut self.t2h };
        let Some(rx) = dir.rx.as_mut() else {
            return;
        };
        let Some((skipped, chunks)) = rx.skip_hole() else {
            return;
        };
        let frame = chunks.first().map_or(0, |c| c.frame);
        out.finding(
            "stream-hole",
            &self.name,
            frame,
            format!(
                "{} bytes of the {} stream are not in the capture; framing searched again",
                skipped,
                if h2t {
                    "host-to-controller"
                } else {
                    "controller-to-host"
                }
            ),
        );
        let framing = Framing::Searching {
            probe: Vec::new(),
            bytes: 0,
            searched_at: 0,
        };
        if h2t {
            self.h2t.framing = framing;
            self.deliver_h2t(chunks, out);
        } else {
            self.abandon_pdu();
            self.t2h.framing = framing;
            self.deliver_t2h(chunks, out);
        }
    }

    // ---- host-to-controller: learn commands ----

    fn deliver_h2t(&mut self, chunks: Vec<Chunk>, out: &mut Out) {
        for c in chunks {
            self.h2t_chunk(c, out);
        }
    }

    fn h2t_chunk(&mut self, c: Chunk, out: &mut Out) {
        let Some(c) = skip_front(c, self.h2t.skip_to) else {
            return;
        };
        let known = self.params.map(|p| NegotiatedParams {
            role: Role::Controller,
            rx_pda: self.icresp.map_or(0, |r| r.cpda),
            ..p
        });
        let Some((c, start)) = search_step(
            &mut self.h2t.framing,
            c,
            Role::Controller,
            known,
            self.at_end,
        ) else {
            return;
        };
        let mut pos = start;
        loop {
            let Framing::Known { framer, .. } = &mut self.h2t.framing else {
                return;
            };
            match framer.advance(&c.data[pos..]) {
                Ok((n, ev)) => {
                    pos += n;
                    match ev {
                        Some(FramerEvent::Header(h)) => self.host_pdu(h.repr, c.frame, out),
                        Some(_) => {}
                        None => return,
                    }
                }
                Err(e) => {
                    out.finding(
                        "stream-error",
                        &self.name,
                        c.frame,
                        format!("host-to-controller stream: {e}; framing searched again"),
                    );
                    self.h2t.framing = Framing::Searching {
                        probe: Vec::new(),
                        bytes: 0,
                        searched_at: 0,
                    };
                    return;
                }
            }
        }
    }

    fn host_pdu(&mut self, repr: PduRepr, frame: u64, out: &mut Out) {
        match repr {
            PduRepr::IcReq(r) => self.icreq = Some(r),
            PduRepr::CapsuleCmd(cmd) => {
                let Ok(sqe) = Sqe::parse(&cmd.sqe) else {
                    return;
                };
                if sqe.opcode() == 0x7F && sqe.fctype() == FabricsType::Connect as u8 {
                    if let Ok(cc) = ConnectCommand::parse(sqe) {
                        self.qid = Some(cc.qid);
                        self.sqsize = Some(cc.sqsize);
                        self.connect_cid = Some(sqe.cid());
                    }
                    return;
                }
                // Admin queue commands (opcode 0x02 is Get Log Page there) are never offloaded.
                if self.qid == Some(0) || sqe.opcode() != IoOpcode::Read as u8 {
                    return;
                }
                self.read_command(sqe.cid(), u64::from(sqe.dptr().length()), frame, out);
            }
            _ => {}
        }
    }

    /// The host sends a Read: lend its buffer to the device (`setup`) before the command
    /// leaves, as the host does for reads of at least `io_threshold` bytes.
    fn read_command(&mut self, cid: u16, len: u64, frame: u64, out: &mut Out) {
        if self.perturber.is_some() && self.reads.contains_key(&cid) {
            // The host sent this only after the previous command with this CID completed,
            // but perturbations delayed that completion: wait for it, as the host did.
            self.deferred.entry(cid).or_default().push((len, frame));
            return;
        }
        if let Some(old) = self.reads.remove(&cid) {
            // The previous read with this CID has no completion in the capture.
            self.reclaim(cid, old, out);
        }
        out.summary.reads += 1;
        let mut read = Read {
            len,
            ddp: false,
            expected: Vec::new(),
        };
        let not_offered = |out: &mut Out, why: &str| {
            *out.summary
                .reads_not_offered
                .entry(why.to_string())
                .or_insert(0) += 1;
        };
        let Some(sock) = self.sock.as_mut() else {
            not_offered(out, "queue-not-offloaded");
            self.reads.insert(cid, read);
            return;
        };
        if len == 0 || len < u64::from(self.opts.engine.io_threshold) {
            not_offered(out, "below-io-threshold");
        } else if len > self.opts.max_io {
            not_offered(out, "larger-than-max-io");
        } else if out.lent + len > self.opts.max_lent {
            not_offered(out, "replay-memory-limit");
        } else {
            let buf = IoBuf::zeroed_chunks(len as usize, self.opts.page_size.max(1));
            match sock.setup(DdpIo::new(u32::from(cid), buf)) {
                Ok(()) => {
                    read.ddp = true;
                    read.expected = vec![0; len as usize];
                    out.lent += len;
                    out.summary.reads_offloaded += 1;
                }
                Err(e) => {
                    *out.summary
                        .setup_failures
                        .entry(setup_reason(&e.error).to_string())
                        .or_insert(0) += 1;
                    if out.summary.setup_failures.values().sum::<u64>() == 1 {
                        out.summary
                            .warnings
                            .push(format!("first failed setup (frame {frame}): {e}"));
                    }
                }
            }
        }
        self.reads.insert(cid, read);
    }

    // ---- controller-to-host: the replay ULP ----

    fn deliver_t2h(&mut self, chunks: Vec<Chunk>, out: &mut Out) {
        for c in chunks {
            if self.dead {
                return;
            }
            self.t2h_chunk(c, out);
        }
    }

    fn t2h_chunk(&mut self, c: Chunk, out: &mut Out) {
        let Some(c) = skip_front(c, self.t2h.skip_to) else {
            return;
        };
        let known = self.params.map(|p| NegotiatedParams {
            role: Role::Host,
            rx_pda: self.icreq.map_or(0, |r| r.hpda),
            ..p
        });
        let before = match &self.t2h.framing {
            Framing::Searching { .. } => true,
            Framing::Known { .. } => false,
        };
        let Some((c, start)) =
            search_step(&mut self.t2h.framing, c, Role::Host, known, self.at_end)
        else {
            return;
        };
        if before && let Framing::Known { framer, .. } = &self.t2h.framing {
            self.params.get_or_insert(*framer.params());
        }
        if start > 0 {
            // Bytes before the framing found: the ULP cannot check what was placed there.
            let placed: u64 = c
                .placed
                .iter()
                .filter(|p| p.off < c.off + start as u64)
                .map(|p| p.len.min(c.off + start as u64 - p.off))
                .sum();
            if placed > 0 {
                out.summary.warnings.push(format!(
                    "{}: {placed} placed bytes before the framing was found could not be checked",
                    self.name
                ));
            }
        }
        let mut pos = start;
        loop {
            let Framing::Known { framer, pdu_start } = &mut self.t2h.framing else {
                return;
            };
            if framer.is_at_pdu_boundary() {
                *pdu_start = c.off + pos as u64;
            }
            let pdu_start = *pdu_start;
            let res = framer.advance(&c.data[pos..]);
            match res {
                Ok((n, ev)) => {
                    let base = pos;
                    pos += n;
                    match ev {
                        Some(FramerEvent::Header(h)) => {
                            self.pdu_header(h, pdu_start, out);
                        }
                        Some(FramerEvent::Data { range, offset }) => {
                            let r = base + range.start..base + range.end;
                            self.pdu_data(&c, r, offset, out);
                        }
                        Some(FramerEvent::DataDigest { received, computed }) => {
                            if let Cur::Data(d) = &mut self.cur {
                                d.digest = Some((received, computed));
                            }
                        }
                        Some(FramerEvent::End) => {
                            self.crc_marks(&c);
                            self.pdu_end(c.frame, out);
                            if self.dead {
                                return;
                            }
                        }
                        None => {
                            self.crc_marks(&c);
                            return;
                        }
                    }
                }
                Err(e) => {
                    out.finding(
                        "stream-error",
                        &self.name,
                        c.frame,
                        format!("controller-to-host stream: {e}; framing searched again"),
                    );
                    self.abandon_pdu();
                    self.t2h.framing = Framing::Searching {
                        probe: Vec::new(),
                        bytes: 0,
                        searched_at: 0,
                    };
                    return;
                }
            }
        }
    }

    /// ANDs the chunk's `crc` mark into the current PDU's if the chunk carries some of its
    /// data or digest.
    fn crc_marks(&mut self, c: &Chunk) {
        if let Cur::Data(d) = &mut self.cur {
            let (a, b) = (d.span.0.max(c.off), d.span.1.min(c.end()));
            if a < b && !c.crc {
                d.crc_all = false;
            }
        }
    }

    fn abandon_pdu(&mut self) {
        self.cur = Cur::None;
    }

    fn pdu_header(&mut self, h: nvme_tcp_wire::framer::PduHeader, start: u64, out: &mut Out) {
        let Some(rx) = self.t2h.rx.as_ref() else {
            return;
        };
        let seq = rx.seq_of(start);
        self.pdus += 1;
        // The one-step resync answer, on every header.
        let resync = match self.sock.as_mut().map(|s| s.pdu_header(seq)) {
            Some(ResyncAction::Confirmed(_)) => {
                out.summary.resync_confirmed += 1;
                Some(ResyncEvent::Confirmed)
            }
            Some(ResyncAction::Mismatch { .. }) => Some(ResyncEvent::Mismatch),
            _ => None,
        };
        let plen = h.layout.plen() as u64;
        self.cur = match h.repr {
            PduRepr::Data(d) => Cur::Data(DataPdu {
                cid: d.cccid,
                datao: d.datao,
                datal: d.datal,
                seq,
                span: (start + h.layout.data_offset() as u64, start + plen),
                crc_all: true,
                placed: 0,
                digest: None,
                success: d.flags.contains(PduFlags::SUCCESS),
                resync,
                has_ddgst: h.layout.has_ddgst(),
            }),
            PduRepr::CapsuleResp(r) => {
                let cqe = Cqe::parse(&r.cqe).ok();
                let cid = cqe.map(|c| c.cid());
                let ok = cqe.is_some_and(|c| c.status().is_success());
                Cur::Other(OtherPdu {
                    seq,
                    name: "capsule-resp",
                    cid,
                    resync,
                    completes: cid,
                    connect_ok: ok && cid.is_some() && cid == self.connect_cid,
                })
            }
            PduRepr::IcResp(r) => {
                self.icresp = Some(r);
                if let Some(req) = self.icreq {
                    let p = NegotiatedParams::from_ic_exchange(Role::Host, &req, &r);
                    let p = NegotiatedParams {
                        max_plen: u32::MAX,
                        ..p
                    };
                    self.params = Some(p);
                    if let Framing::Known { framer, .. } = &mut self.t2h.framing {
                        framer.set_params(p);
                    }
                    if let Framing::Known { framer, .. } = &mut self.h2t.framing {
                        let t = NegotiatedParams::from_ic_exchange(Role::Controller, &req, &r);
                        framer.set_params(NegotiatedParams {
                            max_plen: u32::MAX,
                            ..t
                        });
                    }
                }
                Cur::Other(OtherPdu {
                    seq,
                    name: "ic-resp",
                    cid: None,
                    resync,
                    completes: None,
                    connect_ok: false,
                })
            }
            PduRepr::R2t(r) => Cur::Other(OtherPdu {
                seq,
                name: "r2t",
                cid: Some(r.cccid),
                resync,
                completes: None,
                connect_ok: false,
            }),
            PduRepr::TermReq(_) => Cur::Other(OtherPdu {
                seq,
                name: "c2h-term-req",
                cid: None,
                resync,
                completes: None,
                connect_ok: false,
            }),
            _ => Cur::None,
        };
    }

    fn pdu_data(&mut self, c: &Chunk, r: std::ops::Range<usize>, offset: usize, out: &mut Out) {
        let Cur::Data(d) = &mut self.cur else {
            return;
        };
        let bytes = &c.data[r.clone()];
        let stream_off = c.off + r.start as u64;
        let data_off = u64::from(d.datao) + offset as u64;
        if self.sock.is_some() {
            out.summary.data_bytes += bytes.len() as u64;
        }
        let read = self.reads.get_mut(&d.cid);
        let in_bounds = read
            .as_ref()
            .is_some_and(|rd| data_off + bytes.len() as u64 <= rd.len);
        let ddp = read.as_ref().is_some_and(|rd| rd.ddp) && in_bounds;
        if let Some(rd) = read
            && rd.ddp
            && in_bounds
        {
            let at = data_off as usize;
            rd.expected[at..at + bytes.len()].copy_from_slice(bytes);
        }
        // Walk the bytes: placed parts are checked against the capture, the rest copied.
        let mut cur = stream_off;
        let end = stream_off + bytes.len() as u64;
        let mut pieces: Vec<(u64, u64, bool)> = Vec::new();
        for p in &c.placed {
            let (a, b) = (p.off.max(cur), (p.off + p.len).min(end));
            if a >= b {
                continue;
            }
            if a > cur {
                pieces.push((cur, a, false));
            }
            pieces.push((a, b, true));
            cur = b;
        }
        if cur < end {
            pieces.push((cur, end, false));
        }
        let name = self.name.clone();
        for (a, b, placed) in pieces {
            let slice = &bytes[(a - stream_off) as usize..(b - stream_off) as usize];
            let doff = data_off + (a - stream_off);
            if placed {
                d.placed += b - a;
                out.summary.bytes_placed += b - a;
                if !ddp {
                    out.finding(
                        "placed-without-setup",
                        &name,
                        c.frame,
                        format!(
                            "{} bytes placed for CID {} at DATAO {} + {}, which has no buffer",
                            b - a,
                            d.cid,
                            d.datao,
                            doff - u64::from(d.datao)
                        ),
                    );
                    continue;
                }
                let Some(sock) = self.sock.as_mut() else {
                    continue;
                };
                let mut got = Vec::with_capacity(slice.len());
                let res = sock.read_io(u32::from(d.cid), doff, slice.len(), &mut |s| {
                    got.extend_from_slice(s)
                });
                if res.is_err() || got != slice {
                    let first = got.iter().zip(slice).position(|(x, y)| x != y).unwrap_or(0);
                    out.finding(
                        "placed-mismatch",
                        &name,
                        c.frame,
                        format!(
                            "CID {} data offset {}: placed bytes differ from the capture \
                             (first at +{first})",
                            d.cid, doff
                        ),
                    );
                }
            } else if ddp && let Some(sock) = self.sock.as_mut() {
                // The ULP's own copy of what the device did not place.
                if let Err(e) = sock.copy_to_io(u32::from(d.cid), doff, slice) {
                    out.finding("setup-error", &name, c.frame, format!("copy_to_io: {e}"));
                }
            }
        }
    }

    fn pdu_end(&mut self, frame: u64, out: &mut Out) {
        let cur = std::mem::replace(&mut self.cur, Cur::None);
        let offloaded = self.sock.is_some();
        match cur {
            Cur::Data(d) if !offloaded => {
                if d.success {
                    self.complete(d.cid, frame, out);
                }
            }
            Cur::Data(d) => {
                out.summary.c2h_data_pdus += 1;
                let device_ddgst = self.sock.as_ref().is_some_and(|s| s.ddgst_offloaded());
                let verdict = match d.digest {
                    _ if !d.has_ddgst => DigestVerdict::None,
                    Some((received, computed)) => {
                        let good = computed == Some(received);
                        match (device_ddgst && d.crc_all, good) {
                            (true, true) => DigestVerdict::Device,
                            (true, false) => DigestVerdict::DeviceFalseOk,
                            (false, true) => DigestVerdict::Software,
                            (false, false) => DigestVerdict::Bad,
                        }
                    }
                    None => DigestVerdict::None,
                };
                match verdict {
                    DigestVerdict::Device => out.summary.ddgst_device += 1,
                    DigestVerdict::Software => out.summary.ddgst_software += 1,
                    DigestVerdict::Bad => out.summary.ddgst_bad += 1,
                    DigestVerdict::DeviceFalseOk => {
                        out.summary.ddgst_bad += 1;
                        out.finding(
                            "false-crc",
                            &self.name,
                            frame,
                            format!(
                                "CID {} DATAO {}: crc mark on every segment, but the data \
                                 digest is wrong",
                                d.cid, d.datao
                            ),
                        );
                    }
                    DigestVerdict::None => {}
                }
                out.record(Record::Pdu(PduRecord {
                    stream: self.name.clone(),
                    seq: d.seq,
                    pdu: "c2h-data".into(),
                    cid: Some(d.cid),
                    datao: Some(d.datao),
                    datal: Some(d.datal),
                    placed: d.placed,
                    ddgst: verdict,
                    resync: d.resync,
                }));
                if d.success {
                    self.complete(d.cid, frame, out);
                }
            }
            Cur::Other(o) => {
                if offloaded {
                    out.record(Record::Pdu(PduRecord {
                        stream: self.name.clone(),
                        seq: o.seq,
                        pdu: o.name.into(),
                        cid: o.cid,
                        datao: None,
                        datal: None,
                        placed: 0,
                        ddgst: DigestVerdict::None,
                        resync: o.resync,
                    }));
                }
                if o.name == "c2h-term-req" {
                    self.dead = true;
                    return;
                }
                if o.connect_ok {
                    if self.qid.is_some_and(|q| q != 0) && self.sock.is_none() {
                        // As the host: offload the I/O queue's socket once its Connect
                        // succeeded; the next PDU starts right after this one.
                        let next = self
                            .t2h
                            .rx
                            .as_ref()
                            .zip(self.current_end())
                            .map(|(rx, end)| rx.seq_of(end));
                        self.attach(next, frame, out);
                    }
                } else if let Some(cid) = o.completes {
                    self.complete(cid, frame, out);
                }
            }
            Cur::None => {}
        }
    }

    /// Stream offset where the PDU that just ended ends.
    fn current_end(&self) -> Option<u64> {
        match &self.t2h.framing {
            Framing::Known { framer, pdu_start } => {
                framer.current_layout().map(|l| pdu_start + l.plen() as u64)
            }
            Framing::Searching { .. } => None,
        }
        .or_else(|| self.t2h.rx.as_ref().map(|r| r.next()))
    }

    /// `sk_add` with the negotiated digests and PDA.
    fn attach(&mut self, next_pdu_seq: Option<u32>, frame: u64, out: &mut Out) {
        let Some(p) = self.params else {
            return;
        };
        let cfg = SkConfig::nvme(
            0,
            next_pdu_seq,
            NvmeTcpDdpConfig {
                cpda: self.icreq.map_or(0, |r| r.hpda),
                dgst: NvmeTcpDigests {
                    header: p.hdgst,
                    data: p.ddgst,
                },
                queue_size: self.queue_size(),
                ..NvmeTcpDdpConfig::default()
            },
        );
        let sk = SockId(self.index + 1);
        match self.dev.sk_add(sk, &cfg) {
            Ok(sock) => {
                self.sock = Some(sock);
                self.rx = self.soft.rx_socket(sk);
                self.io_start = Some(IoStart {
                    index: self.at + 1,
                    h2t_off: self.h2t.rx.as_ref().map_or(0, |r| r.next()),
                    t2h_off: self.t2h.rx.as_ref().map_or(0, |r| r.next()),
                });
            }
            Err(e) => out.finding("setup-error", &self.name, frame, format!("sk_add: {e}")),
        }
    }

    /// The queue size from the Connect's SQSIZE (0's based); 1024 when the Connect was not
    /// captured.
    fn queue_size(&self) -> u32 {
        self.sqsize.map_or(1024, |s| u32::from(s) + 1)
    }

    /// A read's completion: `teardown`, then take the device's events.
    fn complete(&mut self, cid: u16, frame: u64, out: &mut Out) {
        let Some(read) = self.reads.remove(&cid) else {
            return;
        };
        self.complete_read(cid, read, frame, out);
        if let Some(q) = self.deferred.get_mut(&cid)
            && !q.is_empty()
        {
            let (len, f) = q.remove(0);
            self.read_command(cid, len, f, out);
        }
    }

    fn complete_read(&mut self, cid: u16, read: Read, frame: u64, out: &mut Out) {
        if !read.ddp {
            return;
        }
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        if let Err(e) = sock.teardown(u32::from(cid), DdpCtx(u64::from(cid))) {
            out.finding("setup-error", &self.name, frame, format!("teardown: {e}"));
            return;
        }
        let mut waiting = BTreeMap::new();
        waiting.insert(cid, read);
        self.take_events(&mut waiting, frame, out);
        // Teardowns not handed back yet wait for later events (or sk_del at the end).
        for (cid, r) in waiting {
            self.reads.insert(cid, r);
        }
    }

    fn take_events(&mut self, waiting: &mut BTreeMap<u16, Read>, frame: u64, out: &mut Out) {
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        while let Some(ev) = sock.poll_event() {
            let DdpEvent::TeardownDone { io, .. } = ev;
            let Ok(cid) = u16::try_from(io.command_id) else {
                continue;
            };
            let read = waiting.remove(&cid).or_else(|| self.reads.remove(&cid));
            if let Some(read) = read {
                check_buffer(&self.name, cid, &read, io, frame, out);
                out.summary.reads_checked += 1;
            }
        }
    }

    /// A read that will not complete: take its buffer back.
    fn reclaim(&mut self, cid: u16, read: Read, out: &mut Out) {
        if !read.ddp {
            return;
        }
        out.lent = out.lent.saturating_sub(read.len);
        out.summary.reads_unfinished += 1;
        if let Some(sock) = self.sock.as_mut()
            && sock
                .teardown(u32::from(cid), DdpCtx(u64::from(cid)))
                .is_ok()
        {
            while sock.poll_event().is_some() {}
        }
    }

    /// The I/O part of the connection again and again, sequence numbers shifted, until the
    /// controller-to-host stream reaches `long_run_bytes`.
    fn long_run(&mut self, pkts: &[&TcpPacket], out: &mut Out) {
        let Some(start) = self.io_start else {
            out.summary.warnings.push(format!(
                "{}: long run needs an offloaded I/O queue",
                self.name
            ));
            return;
        };
        let (Some(h2t), Some(t2h)) = (self.h2t.rx.as_ref(), self.t2h.rx.as_ref()) else {
            return;
        };
        let h2t_len = h2t.next() - start.h2t_off;
        let t2h_len = t2h.next() - start.t2h_off;
        if t2h_len == 0 || h2t.has_hole() || t2h.has_hole() {
            out.summary.warnings.push(format!(
                "{}: long run needs a complete I/O part in both directions",
                self.name
            ));
            return;
        }
        let (h2t_from, t2h_from) = (h2t.seq_of(start.h2t_off), t2h.seq_of(start.t2h_off));
        let body: Vec<&TcpPacket> = pkts[start.index.min(pkts.len())..]
            .iter()
            .copied()
            .filter(|p| !p.payload.is_empty() && !p.syn && !p.fin && !p.rst)
            .collect();
        let mut pass: u64 = 1;
        while self.t2h.rx.as_ref().map_or(0, |r| r.next()) < self.opts.long_run_bytes && !self.dead
        {
            let before = self.t2h.rx.as_ref().map_or(0, |r| r.next());
            for p in &body {
                let from_host = p.src == self.host;
                let (from, len) = if from_host {
                    (h2t_from, h2t_len)
                } else {
                    (t2h_from, t2h_len)
                };
                // Only segments inside the I/O part (not retransmissions of earlier bytes).
                let rel = p.seq.wrapping_sub(from);
                if u64::from(rel) >= len {
                    continue;
                }
                let seq = p.seq.wrapping_add((pass * len) as u32);
                self.packet(from_host, seq, &p.payload, false, p.frame, out);
                if self.dead {
                    break;
                }
            }
            pass += 1;
            out.summary.long_run_passes += 1;
            let now = self.t2h.rx.as_ref().map_or(0, |r| r.next());
            if now < before + t2h_len {
                out.summary.warnings.push(format!(
                    "{}: long run stopped after pass {}: the stream did not advance by the \
                     I/O part's {t2h_len} bytes",
                    self.name,
                    pass - 1
                ));
                break;
            }
        }
    }

    fn finish(&mut self, out: &mut Out) {
        // Holes never filled: what came after them is still usable.
        for h2t in [true, false] {
            while self.dir(h2t).rx.as_ref().is_some_and(|r| r.has_hole()) && !self.dead {
                self.skip_hole(h2t, out);
            }
        }
        // Bytes still waiting for a framing decision: a last search that accepts a framing
        // ending exactly at the end of the stream.
        self.at_end = true;
        for h2t in [true, false] {
            let dir = if h2t { &self.h2t } else { &self.t2h };
            let (Framing::Searching { probe, .. }, Some(rx)) = (&dir.framing, &dir.rx) else {
                continue;
            };
            if probe.is_empty() || self.dead {
                continue;
            }
            let last = Chunk {
                off: rx.next(),
                data: Vec::new(),
                crc: false,
                placed: Vec::new(),
                frame: 0,
            };
            if h2t {
                self.h2t_chunk(last, out);
            } else {
                self.t2h_chunk(last, out);
            }
            let dir = if h2t { &self.h2t } else { &self.t2h };
            if let Framing::Searching { probe, bytes, .. } = &dir.framing
                && !probe.is_empty()
            {
                {
                    let frame = probe.first().map_or(0, |c| c.frame);
                    let n = *bytes;
                    out.finding(
                        "stream-error",
                        &self.name,
                        frame,
                        format!("{n} bytes at the end with no PDU framing found"),
                    );
                }
            }
        }
        if let Framing::Known { framer, .. } = &self.t2h.framing
            && !framer.is_at_pdu_boundary()
            && !self.dead
        {
            out.summary.warnings.push(format!(
                "{}: the capture ends inside a controller-to-host PDU",
                self.name
            ));
        }
        let stuck: usize = self.deferred.values().map(Vec::len).sum();
        if stuck > 0 {
            out.summary.warnings.push(format!(
                "{}: {stuck} reads never sent: the completion of their CID's previous command \
                 is not in the stream",
                self.name
            ));
        }
        let Some(sock) = self.sock.take() else {
            return;
        };
        self.rx = None;
        let mut waiting: BTreeMap<u16, Read> = self.reads.drain().filter(|(_, r)| r.ddp).collect();
        for io in sock.sk_del() {
            let Ok(cid) = u16::try_from(io.command_id) else {
                continue;
            };
            if let Some(r) = waiting.remove(&cid) {
                out.lent = out.lent.saturating_sub(r.len);
                out.summary.reads_unfinished += 1;
            }
        }
        for (_, r) in waiting {
            out.lent = out.lent.saturating_sub(r.len);
        }
    }

    fn dir(&self, h2t: bool) -> &Dir {
        if h2t { &self.h2t } else { &self.t2h }
    }
}

/// Compares a buffer handed back at `teardown_done` with the data the ULP received.
fn check_buffer(name: &str, cid: u16, read: &Read, io: DdpIo, frame: u64, out: &mut Out) {
    out.lent = out.lent.saturating_sub(read.len);
    let buf = io.buf.to_vec();
    if buf != read.expected {
        let at = buf
            .iter()
            .zip(&read.expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        out.finding(
            "buffer-mismatch",
            name,
            frame,
            format!(
                "CID {cid}: the buffer handed back differs from the received data at offset {at}"
            ),
        );
    }
}

fn setup_reason(e: &DdpError) -> &'static str {
    match e {
        DdpError::EmptySgl(_) => "empty-sgl",
        DdpError::SglTooLong { .. } => "sgl-too-long",
        DdpError::BelowIoThreshold { .. } => "below-io-threshold",
        DdpError::CidOutOfRange { .. } => "cid-out-of-range",
        DdpError::CidBusy(_) => "cid-busy",
        DdpError::CidTooWide(_) => "cid-too-wide",
        _ => "other",
    }
}

/// Feeds a chunk to a direction's framing: while searching, keeps it and looks for the
/// framing; returns the chunk to parse and where parsing starts in it — the probe's bytes
/// from the framing found, merged into one chunk (marks kept) — or `None` to wait.
fn search_step(
    framing: &mut Framing,
    c: Chunk,
    role: Role,
    known: Option<NegotiatedParams>,
    at_end: bool,
) -> Option<(Chunk, usize)> {
    let Framing::Searching {
        probe,
        bytes,
        searched_at,
    } = framing
    else {
        return Some((c, 0));
    };
    *bytes += c.data.len();
    probe.push(c);
    while *bytes > SEARCH_WINDOW && probe.len() > 1 {
        let old = probe.remove(0);
        *bytes -= old.data.len();
    }
    // Search again once the bytes doubled or grew by SEARCH_STEP, and at the end.
    if !at_end && *searched_at > 0 && *bytes < *searched_at + SEARCH_STEP.min(*searched_at) {
        return None;
    }
    *searched_at = *bytes;
    let merged = merge(probe);
    let Some((at, params)) = find_framing(&merged.data, role, known, at_end) else {
        // Keep the bytes (as one chunk) for the next try.
        probe.push(merged);
        return None;
    };
    let mut framer = Framer::new(NegotiatedParams {
        max_plen: u32::MAX,
        ..params
    });
    framer.set_compute_data_digest(role == Role::Host);
    *framing = Framing::Known {
        framer: Box::new(framer),
        pdu_start: merged.off + at as u64,
    };
    Some((merged, at))
}

/// The part of `c` at or after `skip_to` (`None` if nothing is left).
fn skip_front(mut c: Chunk, skip_to: u64) -> Option<Chunk> {
    if c.off >= skip_to {
        return Some(c);
    }
    if c.end() <= skip_to {
        return None;
    }
    let cut = (skip_to - c.off) as usize;
    c.data.drain(..cut);
    c.off = skip_to;
    c.placed.retain_mut(|p| {
        let end = p.off + p.len;
        p.off = p.off.max(skip_to);
        end > p.off && {
            p.len = end - p.off;
            true
        }
    });
    Some(c)
}

/// The probe's chunks as one (contiguous: they came in order); `crc` is kept only if all had
/// it — a conservative mark for the first PDU after a search.
fn merge(probe: &mut Vec<Chunk>) -> Chunk {
    let mut it = probe.drain(..);
    let Some(mut first) = it.next() else {
        return Chunk {
            off: 0,
            data: Vec::new(),
            crc: false,
            placed: Vec::new(),
            frame: 0,
        };
    };
    for c in it {
        first.crc &= c.crc;
        first.data.extend_from_slice(&c.data);
        first.placed.extend(c.placed);
    }
    first
}
