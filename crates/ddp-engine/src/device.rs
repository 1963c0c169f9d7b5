//! [`SoftDdpDevice`]: the software device behind the [`UlpDdpDevice`] interface, and its
//! per-socket handles: [`SoftDdpSocket`] (the ULP's side) and [`RxSocket`] (the receive
//! path's side).
//!
//! Locking: the device-wide socket registry is touched only by control operations
//! (`sk_add`, `sk_del`, lookups, `get_stats`); the data path of a socket — the receive path
//! placing payload and the ULP's setup, teardown and own copies — shares only that socket's
//! state, so two queues never contend. Resync requests and confirmations cross between the
//! two sides through atomics ([`ResyncTracker`]); finished teardowns are events the ULP polls.

use crate::flow::Flow;
use crate::header::HeaderRules;
use crate::table::{IdMap, IoTable};
use crate::verdict::SegmentVerdict;
use crate::{Diagnostics, FlowInfo, SyncState};
use nvme_tcp_wire::pdu::MAX_PDA;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use ulp_ddp::{
    Cap, CapSet, DdpCtx, DdpError, DdpEvent, DdpIo, DevCaps, Limits, NVME_TCP_PFV_1_0,
    NvmeTcpDdpLimits, ProtoLimits, ResyncAction, ResyncTracker, SetupError, SkConfig, SockId,
    Stats, UlpDdpDevice, UlpDdpSocket, UlpDdpType,
};

/// When teardowns complete (`teardown_done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeardownMode {
    /// At once: the event is ready when `teardown` returns.
    #[default]
    Immediate,
    /// After the device has passed this many more PDU headers on the socket (or at
    /// [`SoftDdpDevice::flush_deferred`]), as a NIC completes its invalidation later.
    AfterPdus(u32),
    /// Only at [`SoftDdpDevice::flush_deferred`].
    Deferred,
}

/// Configuration of a software device: what it supports, the limits it reports, and how
/// late it is (the asynchrony a real NIC has between the ULP and the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EngineConfig {
    /// Capabilities the device has.
    pub caps_hw: CapSet,
    /// Capabilities active when the device is created.
    pub caps_active: CapSet,
    /// Reported `max_ddp_sgl_len` (0 = no limit), enforced by `setup`.
    pub max_ddp_sgl_len: u32,
    /// Reported `io_threshold`, enforced by `setup`.
    pub io_threshold: u32,
    /// Reported `full_ccid_range`; when false `setup` takes command IDs `0..queue_size` only.
    pub full_ccid_range: bool,
    /// Most offloaded sockets.
    pub max_sockets: usize,
    /// When teardowns complete.
    pub teardown: TeardownMode,
    /// PDU headers the device passes on a socket before a resync confirmation from the ULP
    /// takes effect (0: at the next segment). Models the confirmation travelling to the NIC.
    pub resync_answer_delay_pdus: u32,
}

impl EngineConfig {
    /// The limits of the ConnectX-7 driver in the kernel series: 128 SG entries, a 32 KiB
    /// threshold, linear command IDs, 4000 queues, no TLS; both capabilities on.
    pub const fn connectx7_like() -> Self {
        Self {
            caps_hw: CapSet::ALL,
            caps_active: CapSet::ALL,
            max_ddp_sgl_len: 128,
            io_threshold: 32 * 1024,
            full_ccid_range: false,
            max_sockets: 4000,
            teardown: TeardownMode::Immediate,
            resync_answer_delay_pdus: 0,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::connectx7_like()
    }
}

/// Locks a mutex, ignoring poisoning: the state is plain data whose invariants hold between
/// statements, and a panicking test thread has already failed its test.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A teardown whose `teardown_done` is not due yet.
struct Tearing {
    ctx: DdpCtx,
    io: DdpIo,
    /// PDU headers still to pass (`None`: only at a flush).
    left: Option<u32>,
}

/// A resync confirmation on its way to the device.
struct Answer {
    seq: u32,
    left: u32,
}

/// The state of one offloaded socket, shared by its receive path and its ULP handle.
pub(crate) struct SockState {
    pub(crate) flow: Flow,
    pub(crate) stats: Stats,
    pub(crate) diag: Diagnostics,
    tearing: VecDeque<Tearing>,
    events: VecDeque<DdpEvent>,
    answers: VecDeque<Answer>,
    /// PDU headers passed, as of the last delay bookkeeping.
    pdus_seen: u64,
}

impl SockState {
    /// Moves due teardowns and resync answers along after the receive path passed PDU
    /// headers.
    fn advance(&mut self) {
        let passed = self.flow.pdus_started() - self.pdus_seen;
        self.pdus_seen = self.flow.pdus_started();
        if passed == 0 || (self.answers.is_empty() && self.tearing.is_empty()) {
            return;
        }
        while let Some(a) = self.answers.front_mut() {
            a.left = a
                .left
                .saturating_sub(passed.min(u64::from(u32::MAX)) as u32);
            if a.left > 0 {
                break;
            }
            let seq = a.seq;
            self.answers.pop_front();
            self.flow.resync(seq, &mut self.diag);
        }
        let mut i = 0;
        while i < self.tearing.len() {
            let t = &mut self.tearing[i];
            if let Some(left) = t.left.as_mut() {
                *left = left.saturating_sub(passed.min(u64::from(u32::MAX)) as u32);
                if *left == 0 {
                    if let Some(t) = self.tearing.remove(i) {
                        self.events.push_back(DdpEvent::TeardownDone {
                            ctx: t.ctx,
                            io: t.io,
                        });
                    }
                    continue;
                }
            }
            i += 1;
        }
    }

    fn flush(&mut self) {
        while let Some(a) = self.answers.pop_front() {
            self.flow.resync(a.seq, &mut self.diag);
        }
        while let Some(t) = self.tearing.pop_front() {
            self.events.push_back(DdpEvent::TeardownDone {
                ctx: t.ctx,
                io: t.io,
            });
        }
    }

    /// True if `cid` was torn down and its buffer not yet handed back.
    fn teardown_pending(&self, cid: u32) -> bool {
        self.tearing.iter().any(|t| t.io.command_id == cid)
            || self.events.iter().any(|e| match e {
                DdpEvent::TeardownDone { io, .. } => io.command_id == cid,
            })
    }
}

/// One offloaded socket: its state, and the resync meeting point.
pub(crate) struct SocketShared {
    sk: SockId,
    state: Mutex<SockState>,
    resync: ResyncTracker,
    deleted: AtomicBool,
}

struct Inner {
    cfg: EngineConfig,
    caps_hw: CapSet,
    caps_active: AtomicU64,
    sockets: Mutex<IdMap<SockId, Arc<SocketShared>>>,
    /// Device-level counters and the totals of deleted sockets.
    retired: Mutex<(Stats, Diagnostics)>,
}

impl Inner {
    fn caps(&self) -> DevCaps {
        DevCaps {
            hw: self.caps_hw,
            active: CapSet::from_bits_truncate(self.caps_active.load(Ordering::Acquire)),
        }
    }
}

/// A software ULP DDP device: one per (modelled) network device. Cheap to clone (a handle);
/// share it as `Arc<dyn UlpDdpDevice>` with the ULP, and feed each received TCP segment of
/// an offloaded socket, in arrival order, to that socket's [`RxSocket`]
/// ([`rx_socket`](Self::rx_socket)), passing the segment on unchanged together with the
/// returned verdict.
///
/// ```
/// use ddp_engine::{EngineConfig, SoftDdpDevice};
/// use ulp_ddp::*;
///
/// let dev = SoftDdpDevice::new(EngineConfig { io_threshold: 0, ..EngineConfig::default() });
/// let sk = SockId(1);
/// let cfg = SkConfig::nvme(0, Some(1000), NvmeTcpDdpConfig {
///     dgst: NvmeTcpDigests { header: false, data: true },
///     ..NvmeTcpDdpConfig::default()
/// });
/// let mut sock = dev.sk_add(sk, &cfg).unwrap();
/// let rx = dev.rx_socket(sk).unwrap();
/// sock.setup(DdpIo::new(5, IoBuf::zeroed(512))).unwrap();
///
/// // One C2HData PDU for command 5: 24-byte header, 512 bytes of data, data digest.
/// let data = [0x5Au8; 512];
/// let hdr = nvme_tcp_wire::pdu::HeaderBuf::new(&nvme_tcp_wire::pdu::DataPduRepr {
///     pdu_type: nvme_tcp_wire::pdu::PduType::C2hData,
///     flags: nvme_tcp_wire::pdu::PduFlags::LAST_PDU,
///     hdgst: false, ddgst: true, pda: 0, cccid: 5, ttag: 0, datao: 0, datal: 512,
/// });
/// let mut wire = hdr.as_bytes().to_vec();
/// wire.extend_from_slice(&data);
/// wire.extend_from_slice(&nvme_tcp_wire::digest::crc32c(&data).to_le_bytes());
///
/// let v = rx.on_segment(1000, &wire);
/// assert!(v.is_placed(1024, 512)); // the ULP skips copying the data
/// assert!(v.crc);                  // ... and checking its digest
///
/// sock.teardown(5, DdpCtx(5)).unwrap();
/// let Some(DdpEvent::TeardownDone { ctx, io }) = sock.poll_event() else { panic!() };
/// assert_eq!(ctx, DdpCtx(5));
/// assert_eq!(io.buf.to_vec(), data);
/// assert!(sock.sk_del().is_empty());
/// ```
#[derive(Clone)]
pub struct SoftDdpDevice {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SoftDdpDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftDdpDevice")
            .field("cfg", &self.inner.cfg)
            .field("caps", &self.inner.caps())
            .field("sockets", &lock(&self.inner.sockets).len())
            .finish_non_exhaustive()
    }
}

impl SoftDdpDevice {
    /// A device with `cfg`; `caps_active` is restricted to `caps_hw`.
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                caps_hw: cfg.caps_hw,
                caps_active: AtomicU64::new(cfg.caps_active.intersection(cfg.caps_hw).bits()),
                cfg,
                sockets: Mutex::new(IdMap::default()),
                retired: Mutex::new((Stats::default(), Diagnostics::default())),
            }),
        }
    }

    /// The device's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    fn socket(&self, sk: SockId) -> Option<Arc<SocketShared>> {
        lock(&self.inner.sockets).get(&sk).cloned()
    }

    /// The receive-path handle of offloaded socket `sk` (the NIC's per-flow context), to
    /// keep for the flow's life: feeding segments through it touches only that socket.
    pub fn rx_socket(&self, sk: SockId) -> Option<RxSocket> {
        self.socket(sk).map(|s| RxSocket { s })
    }

    /// Processes one received TCP segment of socket `sk` (a registry lookup, then
    /// [`RxSocket::on_segment`]). A segment of a socket without offload gets an empty verdict.
    pub fn on_segment(&self, sk: SockId, seq: u32, payload: &[u8]) -> SegmentVerdict {
        let mut v = SegmentVerdict::NONE;
        match self.socket(sk) {
            Some(s) => RxSocket { s }.on_segment_into(seq, payload, &mut v),
            None => lock(&self.inner.retired).1.unknown_socket_segments += 1,
        }
        v
    }

    /// Delivers every delayed resync confirmation and teardown at once (the stream went
    /// idle: a NIC finishes its queued work). Returns how many teardowns became due.
    pub fn flush_deferred(&self) -> usize {
        // Lock order: registry, then a socket's state (nothing takes them the other way).
        let sockets = lock(&self.inner.sockets);
        let mut n = 0;
        for s in sockets.values() {
            let mut st = lock(&s.state);
            n += st.tearing.len();
            st.flush();
        }
        n
    }

    /// Teardowns whose `teardown_done` is not due yet, over all sockets.
    pub fn pending_teardowns(&self) -> usize {
        let sockets = lock(&self.inner.sockets);
        sockets.values().map(|s| lock(&s.state).tearing.len()).sum()
    }

    /// Engine-internal counters beyond the ten netlink statistics, over all sockets.
    pub fn diagnostics(&self) -> Diagnostics {
        self.totals().1
    }

    fn totals(&self) -> (Stats, Diagnostics) {
        let sockets: Vec<_> = lock(&self.inner.sockets).values().cloned().collect();
        let (mut stats, mut diag) = *lock(&self.inner.retired);
        for s in sockets {
            let st = lock(&s.state);
            add_stats(&mut stats, &st.stats);
            diag.add(&st.diag);
        }
        (stats, diag)
    }

    /// The framing state of socket `sk`.
    pub fn sync_state(&self, sk: SockId) -> Option<SyncState> {
        self.socket(sk).map(|s| lock(&s.state).flow.sync_state())
    }

    /// Framing details of socket `sk`, for debugging and tests.
    pub fn flow_info(&self, sk: SockId) -> Option<FlowInfo> {
        self.socket(sk).map(|s| lock(&s.state).flow.info())
    }

    /// A copy of the bytes registered for `command_id` on `sk` (tests, debugging).
    pub fn peek_io(&self, sk: SockId, command_id: u16) -> Option<Vec<u8>> {
        let s = self.socket(sk)?;
        let st = lock(&s.state);
        st.flow.ios.get(command_id).map(|slot| slot.io.buf.to_vec())
    }

    fn try_sk_add(&self, sk: SockId, config: &SkConfig) -> Result<SoftDdpSocket, DdpError> {
        let caps = self.inner.caps();
        if !caps.is_active(Cap::NvmeTcp) {
            return Err(DdpError::CapInactive(Cap::NvmeTcp));
        }
        let Some(nvme) = config.nvme_config() else {
            return Err(DdpError::UnsupportedProtocol(config.ulp_type()));
        };
        if nvme.pfv != NVME_TCP_PFV_1_0 {
            return Err(DdpError::InvalidConfig("unsupported PDU format version"));
        }
        if nvme.cpda > MAX_PDA {
            return Err(DdpError::InvalidConfig("cpda above 31"));
        }
        if nvme.queue_size == 0 || nvme.queue_size > u32::from(u16::MAX) + 1 {
            return Err(DdpError::InvalidConfig("queue_size outside 1..=65536"));
        }
        let cfg = &self.inner.cfg;
        let rules = HeaderRules::new(nvme.dgst.header, nvme.dgst.data, nvme.cpda);
        let crc_offload = nvme.dgst.data && caps.is_active(Cap::NvmeTcpDdgstRx);
        let flow = Flow::new(
            rules,
            crc_offload,
            IoTable::new(cfg.full_ccid_range, nvme.queue_size),
            config.next_pdu_seq,
        );
        let shared = Arc::new(SocketShared {
            sk,
            state: Mutex::new(SockState {
                flow,
                stats: Stats::default(),
                diag: Diagnostics::default(),
                tearing: VecDeque::with_capacity(nvme.queue_size.min(1024) as usize),
                events: VecDeque::with_capacity(nvme.queue_size.min(1024) as usize),
                answers: VecDeque::with_capacity(4),
                pdus_seen: 0,
            }),
            resync: ResyncTracker::new(),
            deleted: AtomicBool::new(false),
        });
        {
            let mut sockets = lock(&self.inner.sockets);
            if sockets.contains_key(&sk) {
                return Err(DdpError::SocketExists(sk));
            }
            if sockets.len() >= cfg.max_sockets {
                return Err(DdpError::TooManySockets {
                    max: cfg.max_sockets,
                });
            }
            sockets.insert(sk, Arc::clone(&shared));
        }
        Ok(SoftDdpSocket {
            dev: Arc::clone(&self.inner),
            s: shared,
            crc_offload,
            queue_size: nvme.queue_size,
            active: true,
        })
    }
}

fn add_stats(a: &mut Stats, b: &Stats) {
    a.rx_nvme_tcp_sk_add += b.rx_nvme_tcp_sk_add;
    a.rx_nvme_tcp_sk_add_fail += b.rx_nvme_tcp_sk_add_fail;
    a.rx_nvme_tcp_sk_del += b.rx_nvme_tcp_sk_del;
    a.rx_nvme_tcp_setup += b.rx_nvme_tcp_setup;
    a.rx_nvme_tcp_setup_fail += b.rx_nvme_tcp_setup_fail;
    a.rx_nvme_tcp_teardown += b.rx_nvme_tcp_teardown;
    a.rx_nvme_tcp_drop += b.rx_nvme_tcp_drop;
    a.rx_nvme_tcp_resync += b.rx_nvme_tcp_resync;
    a.rx_nvme_tcp_packets += b.rx_nvme_tcp_packets;
    a.rx_nvme_tcp_bytes += b.rx_nvme_tcp_bytes;
}

impl UlpDdpDevice for SoftDdpDevice {
    fn limits(&self, ulp: UlpDdpType) -> Result<Limits, DdpError> {
        let cfg = &self.inner.cfg;
        match ulp {
            UlpDdpType::Nvme => Ok(Limits {
                max_ddp_sgl_len: cfg.max_ddp_sgl_len,
                io_threshold: cfg.io_threshold,
                tls: false,
                proto: ProtoLimits::Nvme(NvmeTcpDdpLimits {
                    full_ccid_range: cfg.full_ccid_range,
                }),
            }),
        }
    }

    fn sk_add(&self, sk: SockId, config: &SkConfig) -> Result<Box<dyn UlpDdpSocket>, DdpError> {
        let r = self.try_sk_add(sk, config);
        let mut retired = lock(&self.inner.retired);
        match r {
            Ok(s) => {
                retired.0.rx_nvme_tcp_sk_add += 1;
                Ok(Box::new(s))
            }
            Err(e) => {
                retired.0.rx_nvme_tcp_sk_add_fail += 1;
                Err(e)
            }
        }
    }

    fn set_caps(&self, active: CapSet) -> Result<(), DdpError> {
        let extra = CapSet::from_bits_truncate(active.bits() & !self.inner.caps_hw.bits());
        if !extra.is_empty() {
            return Err(DdpError::UnsupportedCaps(extra));
        }
        self.inner
            .caps_active
            .store(active.bits(), Ordering::Release);
        Ok(())
    }

    fn get_caps(&self) -> DevCaps {
        self.inner.caps()
    }

    fn get_stats(&self) -> Stats {
        self.totals().0
    }
}

/// The receive path's handle of one offloaded socket (the NIC's flow context).
#[derive(Clone)]
pub struct RxSocket {
    s: Arc<SocketShared>,
}

impl std::fmt::Debug for RxSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxSocket").field("sk", &self.s.sk).finish()
    }
}

impl RxSocket {
    /// The socket.
    pub fn sk(&self) -> SockId {
        self.s.sk
    }

    /// False once the ULP deleted the socket's offload (`sk_del`): segments are then passed
    /// through with empty verdicts.
    pub fn is_live(&self) -> bool {
        !self.s.deleted.load(Ordering::Acquire)
    }

    /// Processes one received TCP segment: `seq` is the sequence number of its first payload
    /// byte, `payload` its TCP payload. Segments come in arrival order and may be lost,
    /// reordered, duplicated or overlapping; only segments whose TCP checksum was verified
    /// may be fed (a NIC offloads only those). Never allocates.
    ///
    /// The verdict says which bytes were placed (the ULP skips copying them) and whether the
    /// segment's digests were verified. After `sk_del` the verdict is empty.
    pub fn on_segment(&self, seq: u32, payload: &[u8]) -> SegmentVerdict {
        let mut v = SegmentVerdict::NONE;
        self.on_segment_into(seq, payload, &mut v);
        v
    }

    /// [`on_segment`](Self::on_segment) writing the verdict into `verdict` (overwritten),
    /// the form for a receive loop that keeps one verdict per queue.
    pub fn on_segment_into(&self, seq: u32, payload: &[u8], verdict: &mut SegmentVerdict) {
        verdict.clear();
        if self.s.deleted.load(Ordering::Acquire) {
            return;
        }
        let mut guard = lock(&self.s.state);
        let st = &mut *guard;
        st.flow.on_segment(
            seq,
            payload,
            verdict,
            &mut st.stats,
            &mut st.diag,
            &self.s.resync,
        );
        st.advance();
    }
}

/// The ULP's handle of one offloaded socket, returned by `sk_add`.
pub struct SoftDdpSocket {
    dev: Arc<Inner>,
    s: Arc<SocketShared>,
    crc_offload: bool,
    queue_size: u32,
    active: bool,
}

impl std::fmt::Debug for SoftDdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftDdpSocket")
            .field("sk", &self.s.sk)
            .finish_non_exhaustive()
    }
}

impl SoftDdpSocket {
    fn check_setup(&self, st: &SockState, io: &DdpIo) -> Result<u16, DdpError> {
        let cfg = &self.dev.cfg;
        let cid = io.command_id;
        let Ok(cid16) = u16::try_from(cid) else {
            return Err(DdpError::CidTooWide(cid));
        };
        let len = io.buf.len() as u64;
        if len == 0 {
            return Err(DdpError::EmptySgl(cid));
        }
        let max = cfg.max_ddp_sgl_len;
        if max != 0 && io.buf.segment_count() > max as usize {
            return Err(DdpError::SglTooLong {
                nents: io.buf.segment_count(),
                max,
            });
        }
        if len < u64::from(cfg.io_threshold) {
            return Err(DdpError::BelowIoThreshold {
                len,
                threshold: cfg.io_threshold,
            });
        }
        if !cfg.full_ccid_range && cid >= self.queue_size {
            return Err(DdpError::CidOutOfRange {
                cid,
                queue_size: self.queue_size,
            });
        }
        if st.flow.ios.get(cid16).is_some() || st.teardown_pending(cid) {
            return Err(DdpError::CidBusy(cid));
        }
        Ok(cid16)
    }

    fn remove(&mut self) -> Vec<DdpIo> {
        if !self.active {
            return Vec::new();
        }
        self.active = false;
        self.s.deleted.store(true, Ordering::Release);
        lock(&self.dev.sockets).remove(&self.s.sk);
        let mut st = lock(&self.s.state);
        let mut ios = st.flow.ios.drain();
        st.stats.rx_nvme_tcp_teardown += ios.len() as u64;
        ios.extend(st.tearing.drain(..).map(|t| t.io));
        ios.extend(st.events.drain(..).map(|e| match e {
            DdpEvent::TeardownDone { io, .. } => io,
        }));
        st.stats.rx_nvme_tcp_sk_del += 1;
        let mut retired = lock(&self.dev.retired);
        add_stats(&mut retired.0, &st.stats);
        retired.1.add(&st.diag);
        st.stats = Stats::default();
        st.diag = Diagnostics::default();
        ios
    }
}

impl Drop for SoftDdpSocket {
    fn drop(&mut self) {
        self.remove();
    }
}

impl UlpDdpSocket for SoftDdpSocket {
    fn sk(&self) -> SockId {
        self.s.sk
    }

    fn ddgst_offloaded(&self) -> bool {
        self.crc_offload
    }

    fn setup(&mut self, io: DdpIo) -> Result<(), SetupError> {
        let mut st = lock(&self.s.state);
        match self.check_setup(&st, &io) {
            Ok(cid) => match st.flow.register(cid, io) {
                Ok(()) => {
                    st.stats.rx_nvme_tcp_setup += 1;
                    Ok(())
                }
                Err(io) => {
                    st.stats.rx_nvme_tcp_setup_fail += 1;
                    Err(SetupError {
                        error: DdpError::CidBusy(io.command_id),
                        io,
                    })
                }
            },
            Err(error) => {
                st.stats.rx_nvme_tcp_setup_fail += 1;
                Err(SetupError { error, io })
            }
        }
    }

    fn teardown(&mut self, command_id: u32, ctx: DdpCtx) -> Result<(), DdpError> {
        let cid = u16::try_from(command_id).map_err(|_| DdpError::CidTooWide(command_id))?;
        let mut st = lock(&self.s.state);
        let slot = st
            .flow
            .ios
            .remove(cid)
            .ok_or(DdpError::UnknownCommand(command_id))?;
        st.stats.rx_nvme_tcp_teardown += 1;
        let left = match self.dev.cfg.teardown {
            TeardownMode::Immediate => {
                st.events
                    .push_back(DdpEvent::TeardownDone { ctx, io: slot.io });
                return Ok(());
            }
            TeardownMode::AfterPdus(n) => Some(n.max(1)),
            TeardownMode::Deferred => None,
        };
        st.tearing.push_back(Tearing {
            ctx,
            io: slot.io,
            left,
        });
        Ok(())
    }

    fn poll_event(&mut self) -> Option<DdpEvent> {
        lock(&self.s.state).events.pop_front()
    }

    fn pdu_header(&mut self, seq: u32) -> ResyncAction {
        let action = self.s.resync.on_pdu_header(seq);
        if let ResyncAction::Confirmed(s) = action {
            let mut guard = lock(&self.s.state);
            let st = &mut *guard;
            let delay = self.dev.cfg.resync_answer_delay_pdus;
            if delay == 0 {
                st.flow.resync(s, &mut st.diag);
            } else {
                st.answers.push_back(Answer {
                    seq: s,
                    left: delay,
                });
            }
        }
        action
    }

    fn copy_to_io(&mut self, command_id: u32, offset: u64, data: &[u8]) -> Result<(), DdpError> {
        let cid = u16::try_from(command_id).map_err(|_| DdpError::CidTooWide(command_id))?;
        let mut st = lock(&self.s.state);
        let slot = st
            .flow
            .ios
            .get_mut(cid)
            .ok_or(DdpError::UnknownCommand(command_id))?;
        if slot.io.buf.write_at(offset, data) {
            Ok(())
        } else {
            Err(DdpError::OutOfBounds {
                cid: command_id,
                offset,
                len: data.len(),
                size: slot.len,
            })
        }
    }

    fn read_io(
        &mut self,
        command_id: u32,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DdpError> {
        let cid = u16::try_from(command_id).map_err(|_| DdpError::CidTooWide(command_id))?;
        let st = lock(&self.s.state);
        let slot = st
            .flow
            .ios
            .get(cid)
            .ok_or(DdpError::UnknownCommand(command_id))?;
        if slot.io.buf.for_each_chunk(offset, len, f) {
            Ok(())
        } else {
            Err(DdpError::OutOfBounds {
                cid: command_id,
                offset,
                len,
                size: slot.len,
            })
        }
    }

    fn sk_del(mut self: Box<Self>) -> Vec<DdpIo> {
        self.remove()
    }
}
