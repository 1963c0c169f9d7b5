//! [`SoftDdpDevice`]: the software device behind the [`UlpDdpDevice`] interface.

use crate::flow::Flow;
use crate::header::HeaderRules;
use crate::table::{IdMap, IoTable};
use crate::verdict::SegmentVerdict;
use crate::{Diagnostics, FlowInfo, SyncState};
use nvme_tcp_wire::pdu::{MAX_PDA, data_pdo};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use ulp_ddp::{
    Cap, CapSet, DdpCtx, DdpError, DdpIo, DevCaps, Limits, NVME_TCP_PFV_1_0, NvmeTcpDdpLimits,
    ProtoLimits, SetupError, SgList, SkConfig, SockId, Stats, UlpDdpDevice, UlpDdpOps, UlpDdpType,
};

/// When `teardown_done` is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeardownMode {
    /// From inside `teardown`, before it returns.
    #[default]
    Immediate,
    /// From [`SoftDdpDevice::poll_teardowns`], as a NIC completes its invalidation later.
    Deferred,
}

/// Configuration of a software device: what it supports and the limits it reports.
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
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::connectx7_like()
    }
}

struct Deferred {
    ops: Arc<dyn UlpDdpOps>,
    ctx: DdpCtx,
    io: DdpIo,
}

/// A software ULP DDP device: one per (modelled) network device, holding the receive state
/// of every offloaded socket. Sans-IO: feed it each received TCP segment of an offloaded
/// socket, in arrival order, with [`on_segment`](Self::on_segment), and pass the segment on
/// unchanged together with the returned verdict.
///
/// ```
/// use ddp_engine::{EngineConfig, SoftDdpDevice};
/// use std::sync::{Arc, Mutex};
/// use ulp_ddp::*;
///
/// struct Ulp(ResyncTracker, Mutex<Vec<DdpIo>>);
/// impl UlpDdpOps for Ulp {
///     fn resync_request(&self, _sk: SockId, seq: u32, flags: ResyncFlags) -> bool {
///         self.0.request(seq, flags)
///     }
///     fn teardown_done(&self, _ctx: DdpCtx, io: DdpIo) {
///         self.1.lock().unwrap().push(io);
///     }
/// }
///
/// let mut dev = SoftDdpDevice::new(EngineConfig { io_threshold: 0, ..EngineConfig::default() });
/// let ulp = Arc::new(Ulp(ResyncTracker::new(), Mutex::new(Vec::new())));
/// let sk = SockId(1);
/// let cfg = SkConfig::nvme(0, Some(1000), NvmeTcpDdpConfig {
///     dgst: NvmeTcpDigests { header: false, data: true },
///     ..NvmeTcpDdpConfig::default()
/// });
/// dev.sk_add(sk, &cfg, ulp.clone()).unwrap();
/// dev.setup(sk, DdpIo::new(5, SgList::zeroed(512))).unwrap();
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
/// let v = dev.on_segment(sk, 1000, &wire);
/// assert!(v.is_placed(1024, 512)); // the ULP skips copying the data
/// assert!(v.crc);                  // ... and checking its digest
///
/// dev.teardown(sk, 5, DdpCtx(5)).unwrap();
/// let io = ulp.1.lock().unwrap().pop().unwrap();
/// assert_eq!(io.sgl.to_vec(), data);
/// ```
pub struct SoftDdpDevice {
    cfg: EngineConfig,
    caps: DevCaps,
    stats: Stats,
    diag: Diagnostics,
    flows: IdMap<SockId, Flow>,
    deferred: Vec<Deferred>,
}

impl std::fmt::Debug for SoftDdpDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftDdpDevice")
            .field("cfg", &self.cfg)
            .field("caps", &self.caps)
            .field("stats", &self.stats)
            .field("sockets", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl SoftDdpDevice {
    /// A device with `cfg`; `caps_active` is restricted to `caps_hw`.
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            caps: DevCaps {
                hw: cfg.caps_hw,
                active: cfg.caps_active.intersection(cfg.caps_hw),
            },
            cfg,
            stats: Stats::default(),
            diag: Diagnostics::default(),
            flows: IdMap::default(),
            deferred: Vec::new(),
        }
    }

    /// The device's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Processes one received TCP segment of socket `sk`: `seq` is the sequence number of
    /// its first payload byte, `payload` its TCP payload. Segments come in arrival order
    /// and may be lost, reordered, duplicated or overlapping. Never allocates.
    ///
    /// The verdict says which bytes were placed (the ULP skips copying them) and whether
    /// the segment's digests were verified. A segment of a socket without offload gets an
    /// empty verdict.
    pub fn on_segment(&mut self, sk: SockId, seq: u32, payload: &[u8]) -> SegmentVerdict {
        let mut v = SegmentVerdict::NONE;
        self.on_segment_into(sk, seq, payload, &mut v);
        v
    }

    /// [`on_segment`](Self::on_segment) writing the verdict into `verdict` (overwritten),
    /// which saves initialising and moving a fresh verdict per segment — the form for a
    /// receive loop that keeps one verdict per queue.
    pub fn on_segment_into(
        &mut self,
        sk: SockId,
        seq: u32,
        payload: &[u8],
        verdict: &mut SegmentVerdict,
    ) {
        match self.flows.get_mut(&sk) {
            Some(flow) => flow.on_segment(seq, payload, verdict, &mut self.stats, &mut self.diag),
            None => {
                verdict.clear();
                self.diag.unknown_socket_segments += 1;
            }
        }
    }

    /// Delivers the `teardown_done` calls of teardowns made in
    /// [`TeardownMode::Deferred`]. Returns how many were delivered.
    pub fn poll_teardowns(&mut self) -> usize {
        let n = self.deferred.len();
        for d in self.deferred.drain(..) {
            d.ops.teardown_done(d.ctx, d.io);
        }
        n
    }

    /// Teardowns not yet completed (always 0 in [`TeardownMode::Immediate`]).
    pub fn pending_teardowns(&self) -> usize {
        self.deferred.len()
    }

    /// Engine-internal counters beyond the ten netlink statistics.
    pub fn diagnostics(&self) -> Diagnostics {
        self.diag
    }

    /// The framing state of socket `sk`.
    pub fn sync_state(&self, sk: SockId) -> Option<SyncState> {
        self.flows.get(&sk).map(Flow::sync_state)
    }

    /// Framing details of socket `sk`, for debugging and tests.
    pub fn flow_info(&self, sk: SockId) -> Option<FlowInfo> {
        self.flows.get(&sk).map(Flow::info)
    }

    /// The buffers registered for `command_id` on `sk`, for inspection (tests, debugging).
    pub fn peek_io(&self, sk: SockId, command_id: u16) -> Option<&SgList> {
        self.flows
            .get(&sk)
            .and_then(|f| f.ios.get(command_id))
            .map(|s| &s.io.sgl)
    }

    fn check_setup(&self, flow: &Flow, queue_size: u32, io: &DdpIo) -> Result<(), DdpError> {
        let cid = io.command_id;
        let len = io.sgl.len();
        if io.sgl.nents() == 0 || len == 0 {
            return Err(DdpError::EmptySgl(cid));
        }
        let max = self.cfg.max_ddp_sgl_len;
        if max != 0 && io.sgl.nents() > max as usize {
            return Err(DdpError::SglTooLong {
                nents: io.sgl.nents(),
                max,
            });
        }
        if len < u64::from(self.cfg.io_threshold) {
            return Err(DdpError::BelowIoThreshold {
                len,
                threshold: self.cfg.io_threshold,
            });
        }
        if !self.cfg.full_ccid_range && u32::from(cid) >= queue_size {
            return Err(DdpError::CidOutOfRange { cid, queue_size });
        }
        if flow.ios.get(cid).is_some() {
            return Err(DdpError::CidBusy(cid));
        }
        Ok(())
    }

    fn try_sk_add(
        &mut self,
        sk: SockId,
        config: &SkConfig,
        ulp_ops: Arc<dyn UlpDdpOps>,
    ) -> Result<(), DdpError> {
        if !self.caps.is_active(Cap::NvmeTcp) {
            return Err(DdpError::CapInactive(Cap::NvmeTcp));
        }
        if self.flows.contains_key(&sk) {
            return Err(DdpError::SocketExists(sk));
        }
        if self.flows.len() >= self.cfg.max_sockets {
            return Err(DdpError::TooManySockets {
                max: self.cfg.max_sockets,
            });
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
        let rules = HeaderRules {
            hdgst: nvme.dgst.header,
            ddgst: nvme.dgst.data,
            c2h_pdo: data_pdo(24, nvme.dgst.header, nvme.cpda),
        };
        let crc_offload = nvme.dgst.data && self.caps.is_active(Cap::NvmeTcpDdgstRx);
        let flow = Flow::new(
            sk,
            ulp_ops,
            rules,
            crc_offload,
            IoTable::new(self.cfg.full_ccid_range, nvme.queue_size),
            nvme.queue_size,
            config.next_pdu_seq,
        );
        self.flows.insert(sk, flow);
        Ok(())
    }
}

impl UlpDdpDevice for SoftDdpDevice {
    fn limits(&self, ulp: UlpDdpType) -> Result<Limits, DdpError> {
        match ulp {
            UlpDdpType::Nvme => Ok(Limits {
                max_ddp_sgl_len: self.cfg.max_ddp_sgl_len,
                io_threshold: self.cfg.io_threshold,
                tls: false,
                proto: ProtoLimits::Nvme(NvmeTcpDdpLimits {
                    full_ccid_range: self.cfg.full_ccid_range,
                }),
            }),
        }
    }

    fn sk_add(
        &mut self,
        sk: SockId,
        config: &SkConfig,
        ulp_ops: Arc<dyn UlpDdpOps>,
    ) -> Result<(), DdpError> {
        let r = self.try_sk_add(sk, config, ulp_ops);
        match r {
            Ok(()) => self.stats.rx_nvme_tcp_sk_add += 1,
            Err(_) => self.stats.rx_nvme_tcp_sk_add_fail += 1,
        }
        r
    }

    fn sk_del(&mut self, sk: SockId) -> Vec<DdpIo> {
        match self.flows.remove(&sk) {
            Some(mut flow) => {
                self.stats.rx_nvme_tcp_sk_del += 1;
                let ios = flow.ios.drain();
                self.stats.rx_nvme_tcp_teardown += ios.len() as u64;
                ios
            }
            None => Vec::new(),
        }
    }

    fn setup(&mut self, sk: SockId, io: DdpIo) -> Result<(), SetupError> {
        let Some(flow) = self.flows.get(&sk) else {
            self.stats.rx_nvme_tcp_setup_fail += 1;
            return Err(SetupError {
                error: DdpError::UnknownSocket(sk),
                io,
            });
        };
        if let Err(error) = self.check_setup(flow, flow.queue_size, &io) {
            self.stats.rx_nvme_tcp_setup_fail += 1;
            return Err(SetupError { error, io });
        }
        let cid = io.command_id;
        let Some(flow) = self.flows.get_mut(&sk) else {
            self.stats.rx_nvme_tcp_setup_fail += 1;
            return Err(SetupError {
                error: DdpError::UnknownSocket(sk),
                io,
            });
        };
        match flow.register(cid, io) {
            Ok(()) => {
                self.stats.rx_nvme_tcp_setup += 1;
                Ok(())
            }
            Err(io) => {
                self.stats.rx_nvme_tcp_setup_fail += 1;
                Err(SetupError {
                    error: DdpError::CidBusy(cid),
                    io,
                })
            }
        }
    }

    fn teardown(&mut self, sk: SockId, command_id: u16, ctx: DdpCtx) -> Result<(), DdpError> {
        let flow = self.flows.get_mut(&sk).ok_or(DdpError::UnknownSocket(sk))?;
        let slot = flow
            .ios
            .remove(command_id)
            .ok_or(DdpError::UnknownCommand(command_id))?;
        self.stats.rx_nvme_tcp_teardown += 1;
        let ops = flow.ops.clone();
        match self.cfg.teardown {
            TeardownMode::Immediate => ops.teardown_done(ctx, slot.io),
            TeardownMode::Deferred => self.deferred.push(Deferred {
                ops,
                ctx,
                io: slot.io,
            }),
        }
        Ok(())
    }

    fn resync(&mut self, sk: SockId, seq: u32) {
        if let Some(flow) = self.flows.get_mut(&sk) {
            flow.resync(seq, &mut self.diag);
        }
    }

    fn set_caps(&mut self, active: CapSet) -> Result<(), DdpError> {
        let extra = CapSet::from_bits_truncate(active.bits() & !self.caps.hw.bits());
        if !extra.is_empty() {
            return Err(DdpError::UnsupportedCaps(extra));
        }
        self.caps.active = active;
        Ok(())
    }

    fn get_caps(&self) -> DevCaps {
        self.caps
    }

    fn get_stats(&self) -> Stats {
        self.stats
    }

    fn copy_to_io(
        &mut self,
        sk: SockId,
        command_id: u16,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DdpError> {
        let flow = self.flows.get_mut(&sk).ok_or(DdpError::UnknownSocket(sk))?;
        let slot = flow
            .ios
            .get_mut(command_id)
            .ok_or(DdpError::UnknownCommand(command_id))?;
        if slot.io.sgl.write_at(offset, data) {
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
}
