//! The host's use of the ULP DDP interface, as the kernel series' nvme-tcp uses it, around
//! the sans-IO [`QueueCore`] of `nvme-tcp-host`.
//!
//! * Controller level ([`DdpNetdev::probe`]): with the host's `ddp_offload` option on and the
//!   device's `nvme-tcp` capability active, the limits are read once; `full_ccid_range =
//!   false` makes every I/O queue use linear CIDs ([`CidMode::Linear`], Linux's
//!   `NVME_QUIRK_SKIP_CID_GEN`). The admin queue is never offloaded.
//! * Queue level ([`DdpQueue`]): `sk_add` after the queue's Connect succeeded (failure: the
//!   queue stays on the software path, counted); `sk_del` when the queue is torn down.
//! * I/O level: a READ whose payload is at least `io_threshold` is set up with its CID and
//!   buffers, which the device owns until `teardown_done` (failure: that I/O takes the
//!   software path, counted). On completion the host calls `teardown` and completes the I/O
//!   only when `teardown_done` hands the buffers back.
//! * Receive: through the [`RxOffload`] hook of the queue core, per received segment (the
//!   model of an skb), the host skips copying the bytes the device placed and copies the
//!   others itself ([`UlpDdpDevice::copy_to_io`] for device-owned buffers); it skips the
//!   data digest of a PDU only when every segment carrying its data or digest had the `crc`
//!   bit, and otherwise recomputes CRC32C over the I/O's buffers (the kernel's
//!   `nvme_tcp_ddp_ddgst_recalc`), failing the read with a data digest error on mismatch.
//! * Resync: `resync_request` stores the latest request atomically ([`ResyncTracker`]); at
//!   every PDU header the receive path parses, it confirms with `resync(seq)` only if the
//!   header starts exactly at the requested sequence number.
//!
//! Buffers of offloaded I/Os: the caller's buffer is moved into the [`DdpIo`]; the queue
//! core gets a placeholder of the same length that it never writes (every payload byte of
//! such an I/O is accounted for by the hook), taken from a per-queue pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use nvme_tcp_host::queue::{
    Completion, DataDir, QueueConfig, QueueCore, Request, RxOffload, SubmitError,
};
use nvme_tcp_host::{CidMode, IoBuf, IoError, ProtocolError};
use nvme_tcp_wire::digest::Crc32c;
use nvme_tcp_wire::pdu::{CommonHeaderRepr, PduType};
use serde::{Deserialize, Serialize};
use ulp_ddp::{
    Cap, DdpCtx, DdpIo, Limits, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncAction, ResyncFlags,
    ResyncTracker, SetupError, SgList, SkConfig, SockId, UlpDdpDevice, UlpDdpOps, UlpDdpType,
};

use crate::tcp::Delivery;

/// Bytes of stream kept from before the current delivery, so the fields of a PDU header
/// can be read back when they are needed: the first payload byte is at most PDO ≤ 255
/// bytes after the header's start, and the digest ends where it is consumed.
const TAIL: usize = 256;

/// NVM command set opcode of Read.
const NVM_OPCODE_READ: u8 = 0x02;

/// Locks a mutex, ignoring poisoning (a panicking peer thread already failed the run).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The offload device a controller uses (the kernel's `ctrl->ddp_netdev`), with its limits.
pub struct DdpNetdev<D> {
    /// The device.
    pub dev: Arc<Mutex<D>>,
    /// Its NVMe/TCP limits, read once at controller setup.
    pub limits: Limits,
}

impl<D> Clone for DdpNetdev<D> {
    fn clone(&self) -> Self {
        Self {
            dev: Arc::clone(&self.dev),
            limits: self.limits,
        }
    }
}

impl<D: UlpDdpDevice> DdpNetdev<D> {
    /// The device to offload through, if the host option `ddp_offload` is on, the device's
    /// `nvme-tcp` capability is active and it reports NVMe/TCP limits without requiring TLS
    /// support the host would need (this host has no TLS).
    pub fn probe(dev: &Arc<Mutex<D>>, ddp_offload: bool) -> Option<Self> {
        if !ddp_offload {
            return None;
        }
        let d = lock(dev);
        if !d.get_caps().is_active(Cap::NvmeTcp) {
            return None;
        }
        let limits = d.limits(UlpDdpType::Nvme).ok()?;
        limits.nvme()?;
        Some(Self {
            dev: Arc::clone(dev),
            limits,
        })
    }

    /// The CID mode I/O queues must use: linear when the device cannot take the full
    /// 16-bit range.
    pub fn cid_mode(&self) -> CidMode {
        match self.limits.nvme() {
            Some(l) if !l.full_ccid_range => CidMode::Linear,
            _ => CidMode::Tagged,
        }
    }
}

/// What the host did with the offload, per queue (the device counts the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostOffloadStats {
    /// Queues whose `sk_add` failed (software path).
    pub sk_add_fail: u64,
    /// READs set up for placement.
    pub setup: u64,
    /// READs whose setup failed (software path for that I/O).
    pub setup_fail: u64,
    /// `teardown_done` callbacks received.
    pub teardown_done: u64,
    /// Payload bytes whose copy was skipped (placed by the device).
    pub placed_bytes: u64,
    /// Payload bytes of large READs the host copied itself.
    pub copied_bytes: u64,
    /// C2HData PDUs whose data digest check was skipped (verified by the device).
    pub ddgst_offloaded: u64,
    /// C2HData PDUs of large READs whose data digest the host computed itself.
    pub ddgst_software: u64,
    /// Data digest mismatches found by the host on large READs.
    pub ddgst_errors: u64,
    /// Resync requests confirmed with `resync(seq)`.
    pub resync_confirmed: u64,
    /// PDU headers parsed past a pending resync request (no answer sent).
    pub resync_mismatch: u64,
}

/// The ULP callbacks of one queue (`struct ulp_ddp_ulp_ops` + the queue's
/// `resync_tcp_seq`).
#[derive(Debug, Default)]
struct QueueUlp {
    resync: ResyncTracker,
    done: Mutex<Vec<(DdpCtx, DdpIo)>>,
}

impl UlpDdpOps for QueueUlp {
    fn resync_request(&self, _sk: SockId, seq: u32, flags: ResyncFlags) -> bool {
        self.resync.request(seq, flags)
    }

    fn teardown_done(&self, ctx: DdpCtx, io: DdpIo) {
        lock(&self.done).push((ctx, io));
    }
}

/// Where the data of a large READ goes.
#[derive(Debug)]
enum Dest {
    /// Buffers handed to the device by `setup`.
    Device,
    /// `setup` failed: the host keeps the buffers and writes every byte itself.
    Host(SgList),
}

/// A data digest the host must check once it has the buffers back.
#[derive(Debug, Clone, Copy)]
struct DigestCheck {
    datao: u64,
    datal: u64,
    received: u32,
}

/// A large READ in flight.
#[derive(Debug)]
struct LargeRead {
    dest: Dest,
    contig: bool,
    checks: Vec<DigestCheck>,
    error: Option<IoError>,
}

/// A completed large READ waiting for `teardown_done`.
#[derive(Debug)]
struct Tearing {
    completion: Completion,
    read: LargeRead,
}

/// The C2H PDU being received, as the hook sees it.
#[derive(Debug, Clone, Copy)]
struct PduCtx {
    seq: u64,
    pdo: u64,
    plen: u64,
    ddgst: bool,
    data: bool,
    /// CCCID and DATAO, read from the header once needed.
    psh: Option<(u16, u64)>,
    /// Every segment carrying data or digest bytes of this PDU so far had `crc`.
    crc_ok: bool,
}

impl PduCtx {
    fn data_start(&self) -> u64 {
        self.seq + self.pdo
    }
    fn datal(&self) -> u64 {
        self.plen
            .saturating_sub(self.pdo)
            .saturating_sub(if self.ddgst { 4 } else { 0 })
    }
}

/// Receive context of the hook: the current segment and the bytes just before it.
#[derive(Debug)]
struct RxCtx {
    tail: [u8; TAIL],
    tail_len: usize,
    /// Stream offset of the delivery being processed (`Hook::data[0]`).
    base: u64,
    /// Stream offset and length of the current segment (mark) within it.
    mark_base: u64,
    mark_len: usize,
    mark_crc: bool,
    placed: Vec<(u64, u32)>,
    pdu: Option<PduCtx>,
}

impl RxCtx {
    fn new() -> Self {
        Self {
            tail: [0; TAIL],
            tail_len: 0,
            base: 0,
            mark_base: 0,
            mark_len: 0,
            mark_crc: false,
            placed: Vec::with_capacity(8),
            pdu: None,
        }
    }

    /// The stream byte at `off`, from the delivery `data` or the bytes kept before it.
    fn byte_at(&self, data: &[u8], off: u64) -> Option<u8> {
        if off >= self.base {
            data.get(usize::try_from(off - self.base).ok()?).copied()
        } else {
            let back = usize::try_from(self.base - off).ok()?;
            (back <= self.tail_len).then(|| self.tail[self.tail_len - back])
        }
    }

    /// Remembers the last bytes of a processed delivery.
    fn push_tail(&mut self, data: &[u8]) {
        if data.len() >= TAIL {
            self.tail.copy_from_slice(&data[data.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let keep = self.tail_len.min(TAIL - data.len());
            self.tail
                .copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + data.len()].copy_from_slice(data);
            self.tail_len = keep + data.len();
        }
    }

    /// ANDs the current segment's `crc` bit into the PDU if the segment carries any of the
    /// PDU's data or digest bytes.
    fn account_mark(&mut self) {
        let (base, len, crc) = (self.mark_base, self.mark_len, self.mark_crc);
        if let Some(p) = self.pdu.as_mut()
            && p.data
        {
            let (a, b) = (p.data_start(), p.seq + p.plen);
            if base < b && base + len as u64 > a {
                p.crc_ok &= crc;
            }
        }
    }
}

/// The receive hook of one queue for one segment; `data` is the whole delivery the
/// segment is part of.
struct Hook<'a, D> {
    rx: &'a mut RxCtx,
    data: &'a [u8],
    dev: Option<&'a Arc<Mutex<D>>>,
    sk: SockId,
    isn: u32,
    ulp: &'a QueueUlp,
    reads: &'a mut HashMap<u16, LargeRead>,
    stats: &'a mut HostOffloadStats,
    off_ddp: bool,
    off_ddgst: bool,
}

impl<D: UlpDdpDevice> Hook<'_, D> {
    /// CCCID and DATAO of the current C2HData PDU.
    fn psh(&mut self) -> Option<(u16, u64)> {
        let p = self.rx.pdu?;
        if let Some(v) = p.psh {
            return Some(v);
        }
        let b = |o: u64| self.rx.byte_at(self.data, p.seq + o);
        let cccid = u16::from_le_bytes([b(8)?, b(9)?]);
        let datao = u32::from_le_bytes([b(12)?, b(13)?, b(14)?, b(15)?]);
        let v = (cccid, u64::from(datao));
        if let Some(pdu) = self.rx.pdu.as_mut() {
            pdu.psh = Some(v);
        }
        Some(v)
    }

    /// Copies the unplaced parts of `seq..seq+len` of a large READ to its buffers.
    fn place_large(&mut self, cid: u16, datao_at_seq: u64, seq: u64, len: usize) {
        let Some(read) = self.reads.get_mut(&cid) else {
            return;
        };
        let end = seq + len as u64;
        let mut cur = seq;
        let copy = |from: u64, to: u64, read: &mut LargeRead, stats: &mut HostOffloadStats| {
            if from >= to {
                return;
            }
            let lo = (from - self.rx.base) as usize;
            let hi = (to - self.rx.base) as usize;
            let Some(bytes) = self.data.get(lo..hi) else {
                return;
            };
            let off = datao_at_seq + (from - seq);
            stats.copied_bytes += bytes.len() as u64;
            let ok = match &mut read.dest {
                Dest::Host(sgl) => sgl.write_at(off, bytes),
                Dest::Device => self
                    .dev
                    .is_some_and(|d| lock(d).copy_to_io(self.sk, cid, off, bytes).is_ok()),
            };
            if !ok && read.error.is_none() {
                read.error = Some(IoError::Invalid(format!(
                    "payload at offset {off} does not fit the buffers of CID {cid}"
                )));
            }
        };
        if matches!(read.dest, Dest::Device) {
            for &(ps, pl) in &self.rx.placed {
                let (a, b) = (ps.max(cur), (ps + u64::from(pl)).min(end));
                if a >= b {
                    continue;
                }
                copy(cur, a, read, self.stats);
                self.stats.placed_bytes += b - a;
                cur = b;
            }
        }
        copy(cur, end, read, self.stats);
    }
}

impl<D: UlpDdpDevice> RxOffload for Hook<'_, D> {
    fn pdu_start(&mut self, seq: u64, ch: &CommonHeaderRepr) {
        if self.off_ddp
            && let Some(dev) = self.dev
        {
            let tcp_seq = self.isn.wrapping_add(seq as u32);
            match self.ulp.resync.on_pdu_header(tcp_seq) {
                ResyncAction::Confirm(s) => {
                    lock(dev).resync(self.sk, s);
                    self.stats.resync_confirmed += 1;
                }
                ResyncAction::Mismatch { .. } => self.stats.resync_mismatch += 1,
                ResyncAction::None => {}
            }
        }
        self.rx.pdu = Some(PduCtx {
            seq,
            pdo: u64::from(ch.pdo),
            plen: u64::from(ch.plen),
            ddgst: ch.has_ddgst(),
            data: ch.pdu_type == PduType::C2hData,
            psh: None,
            crc_ok: true,
        });
        self.rx.account_mark();
    }

    fn ddgst_offloaded(&mut self, _pdu_seq: u64) -> bool {
        let large = self
            .psh()
            .is_some_and(|(cid, _)| self.reads.contains_key(&cid));
        // Large READs: the host never digests the placeholder; it checks the real buffers.
        self.off_ddgst || large
    }

    fn placed(&mut self, seq: u64, len: usize) -> usize {
        let Some(p) = self.rx.pdu else {
            return 0;
        };
        let Some((cid, datao)) = self.psh() else {
            return 0;
        };
        if self.reads.contains_key(&cid) {
            let at = datao + seq.saturating_sub(p.data_start());
            self.place_large(cid, at, seq, len);
            return len;
        }
        // Other commands: the device has no buffers for them, so it placed nothing; count
        // any leading placed bytes all the same.
        let end = seq + len as u64;
        let mut cur = seq;
        for &(ps, pl) in &self.rx.placed {
            let pe = ps + u64::from(pl);
            if ps <= cur && pe > cur {
                cur = pe.min(end);
            }
        }
        let n = (cur - seq) as usize;
        self.stats.placed_bytes += n as u64;
        n
    }

    fn ddgst_verified(&mut self, _pdu_seq: u64) -> bool {
        let Some(p) = self.rx.pdu else {
            return false;
        };
        let verified = self.off_ddgst && p.crc_ok;
        let Some((cid, datao)) = self.psh() else {
            return false;
        };
        let Some(read) = self.reads.get_mut(&cid) else {
            if verified {
                self.stats.ddgst_offloaded += 1;
            }
            // Not verified: the queue core recomputes over the command's own buffer.
            return verified;
        };
        if verified {
            self.stats.ddgst_offloaded += 1;
            return true;
        }
        let d = p.seq + p.plen - 4;
        let b = |o: u64| self.rx.byte_at(self.data, o);
        let received = match (b(d), b(d + 1), b(d + 2), b(d + 3)) {
            (Some(a), Some(b), Some(c), Some(e)) => u32::from_le_bytes([a, b, c, e]),
            _ => {
                read.error
                    .get_or_insert(IoError::Protocol(ProtocolError::Closed));
                return true;
            }
        };
        self.stats.ddgst_software += 1;
        let check = DigestCheck {
            datao,
            datal: p.datal(),
            received,
        };
        match &read.dest {
            // The device owns the buffers: check once `teardown_done` hands them back.
            Dest::Device => read.checks.push(check),
            Dest::Host(sgl) => {
                if let Err(e) = verify(sgl, &check) {
                    self.stats.ddgst_errors += 1;
                    read.error.get_or_insert(e);
                }
            }
        }
        true
    }
}

/// CRC32C of `check`'s range of `sgl` against the received digest.
fn verify(sgl: &SgList, check: &DigestCheck) -> Result<(), IoError> {
    let mut c = Crc32c::new();
    let mut skip = check.datao;
    let mut left = check.datal;
    for seg in sgl.segments() {
        if left == 0 {
            break;
        }
        let len = seg.len() as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(left);
        c.update(&seg[skip as usize..(skip + n) as usize]);
        left -= n;
        skip = 0;
    }
    let computed = c.finalize();
    if left != 0 || computed != check.received {
        return Err(IoError::DataDigest {
            received: check.received,
            computed,
        });
    }
    Ok(())
}

/// One I/O queue of a host using ULP DDP receive offload.
pub struct DdpQueue<D> {
    core: QueueCore,
    qid: u16,
    queue_size: u16,
    sk: SockId,
    isn: u32,
    netdev: Option<DdpNetdev<D>>,
    off_ddp: bool,
    off_ddgst: bool,
    ulp: Arc<QueueUlp>,
    rx: RxCtx,
    reads: HashMap<u16, LargeRead>,
    tearing: HashMap<u64, Tearing>,
    next_ctx: u64,
    ready: std::collections::VecDeque<Completion>,
    shadows: Vec<Vec<u8>>,
    stats: HostOffloadStats,
}

impl<D> std::fmt::Debug for DdpQueue<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdpQueue")
            .field("qid", &self.qid)
            .field("sk", &self.sk)
            .field("off_ddp", &self.off_ddp)
            .field("off_ddgst", &self.off_ddgst)
            .finish_non_exhaustive()
    }
}

impl<D: UlpDdpDevice + Send + 'static> DdpQueue<D> {
    /// A new I/O queue (its ICReq queued). `sk` names its socket towards the device and
    /// `isn` is the TCP sequence number of the first byte the controller sends on it.
    /// `netdev` is the controller's offload device, if any ([`DdpNetdev::probe`]); it decides
    /// the CID mode.
    pub fn new(mut cfg: QueueConfig, sk: SockId, isn: u32, netdev: Option<DdpNetdev<D>>) -> Self {
        if let Some(n) = &netdev {
            cfg.cid_mode = n.cid_mode();
        }
        let depth = usize::from(cfg.queue_size.saturating_sub(1).max(1));
        Self {
            qid: cfg.qid,
            queue_size: cfg.queue_size,
            core: QueueCore::new(cfg),
            sk,
            isn,
            netdev,
            off_ddp: false,
            off_ddgst: false,
            ulp: Arc::new(QueueUlp::default()),
            rx: RxCtx::new(),
            reads: HashMap::with_capacity(depth),
            tearing: HashMap::with_capacity(depth),
            next_ctx: 1,
            ready: std::collections::VecDeque::with_capacity(depth),
            shadows: Vec::new(),
            stats: HostOffloadStats::default(),
        }
    }

    /// The queue core.
    pub fn core(&self) -> &QueueCore {
        &self.core
    }

    /// The queue core, mutably (transmit, Connect).
    pub fn core_mut(&mut self) -> &mut QueueCore {
        &mut self.core
    }

    /// Queue ID.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// True while the socket is offloaded (`NVME_TCP_Q_OFF_DDP`).
    pub fn is_offloaded(&self) -> bool {
        self.off_ddp
    }

    /// True if data digests are verified by the device (`NVME_TCP_Q_OFF_DDGST_RX`).
    pub fn is_ddgst_offloaded(&self) -> bool {
        self.off_ddgst
    }

    /// Host-side offload counters.
    pub fn offload_stats(&self) -> HostOffloadStats {
        self.stats
    }

    /// Offloads the socket (`nvme_tcp_offload_socket`); call once the queue's Connect
    /// succeeded. A failure leaves the queue on the software path and is counted.
    pub fn offload_socket(&mut self) {
        let Some(netdev) = &self.netdev else {
            return;
        };
        let Some(neg) = self.core.negotiated() else {
            return;
        };
        let cfg = SkConfig::nvme(
            u32::from(self.qid),
            Some(self.isn.wrapping_add(self.core.rx_position() as u32)),
            NvmeTcpDdpConfig {
                cpda: 0,
                dgst: NvmeTcpDigests {
                    header: neg.hdgst,
                    data: neg.ddgst,
                },
                queue_size: u32::from(self.queue_size),
                ..NvmeTcpDdpConfig::default()
            },
        );
        let mut dev = lock(&netdev.dev);
        let ops: Arc<dyn UlpDdpOps> = self.ulp.clone();
        match dev.sk_add(self.sk, &cfg, ops) {
            Ok(()) => {
                self.off_ddp = true;
                self.off_ddgst = neg.ddgst && dev.get_caps().is_active(Cap::NvmeTcpDdgstRx);
            }
            Err(e) => {
                tracing::warn!(qid = self.qid, error = %e, "ULP DDP sk_add failed; no offload");
                self.stats.sk_add_fail += 1;
            }
        }
    }

    /// Removes the socket's offload (`ulp_ddp_sk_del`), as the queue stops. READs still set
    /// up get their buffers back from the device and finish on the software path.
    pub fn stop(&mut self) {
        if !self.off_ddp {
            return;
        }
        self.off_ddp = false;
        self.off_ddgst = false;
        let Some(netdev) = &self.netdev else {
            return;
        };
        let ios = lock(&netdev.dev).sk_del(self.sk);
        for io in ios {
            if let Some(read) = self.reads.get_mut(&io.command_id) {
                read.dest = Dest::Host(io.sgl);
            }
        }
        self.collect_teardowns();
    }

    /// Submits a command. A READ (NVM opcode 02h, data to the host) whose payload is at
    /// least the device's `io_threshold` is offloaded when the queue is: its buffer goes to
    /// the device with `setup` (or, if that fails, stays with the host's software path)
    /// and comes back in the completion once the device's `teardown_done` returned it.
    pub fn submit(&mut self, mut req: Request) -> Result<u16, SubmitError> {
        let len = req.buf.as_ref().map_or(0, IoBuf::len);
        let threshold = self
            .netdev
            .as_ref()
            .map_or(u64::MAX, |n| u64::from(n.limits.io_threshold));
        let read = req.dir == DataDir::ToHost && req.sqe[0] == NVM_OPCODE_READ;
        let offload = self.off_ddp && read && len > 0 && len as u64 >= threshold;
        let Some(buf) = req.buf.take_if(|_| offload) else {
            return self.core.submit(req, Instant::now());
        };
        req.buf = Some(IoBuf::Contig(self.take_shadow(len)));
        let cid = match self.core.submit(req, Instant::now()) {
            Ok(cid) => cid,
            Err(e) => {
                if let Some(IoBuf::Contig(v)) = e.buf {
                    self.shadows.push(v);
                }
                return Err(SubmitError {
                    reason: e.reason,
                    buf: Some(buf),
                });
            }
        };
        let contig = matches!(buf, IoBuf::Contig(_));
        let sgl = match buf {
            IoBuf::Contig(v) => SgList::new(vec![v.into_boxed_slice()]),
            IoBuf::Sgl(segs) => SgList::new(segs.into_iter().map(Vec::into_boxed_slice).collect()),
        };
        let dest = match self
            .netdev
            .as_ref()
            .map(|n| lock(&n.dev).setup(self.sk, DdpIo::new(cid, sgl)))
        {
            Some(Ok(())) => {
                self.stats.setup += 1;
                Dest::Device
            }
            Some(Err(SetupError { error, io })) => {
                tracing::debug!(qid = self.qid, cid, %error, "ULP DDP setup failed; software path");
                self.stats.setup_fail += 1;
                Dest::Host(io.sgl)
            }
            None => Dest::Host(SgList::default()),
        };
        self.reads.insert(
            cid,
            LargeRead {
                dest,
                contig,
                checks: Vec::new(),
                error: None,
            },
        );
        Ok(cid)
    }

    fn take_shadow(&mut self, len: usize) -> Vec<u8> {
        match self.shadows.iter().position(|s| s.len() == len) {
            Some(i) => self.shadows.swap_remove(i),
            // Never written: large zeroed allocations stay untouched pages.
            None => vec![0u8; len],
        }
    }

    /// Bytes waiting to be sent.
    pub fn tx_pending(&self) -> &[u8] {
        self.core.tx_pending()
    }

    /// Reports that `n` bytes of [`DdpQueue::tx_pending`] were sent.
    pub fn tx_consumed(&mut self, n: usize) {
        self.core.tx_consumed(n);
    }

    /// Feeds received in-order bytes, segment by segment with their offload marks.
    pub fn receive(&mut self, d: &Delivery) -> Result<(), ProtocolError> {
        let mut res = Ok(());
        self.rx.base = d.base;
        for m in &d.marks {
            let lo = (m.start - d.base) as usize;
            let Some(bytes) = d.data.get(lo..lo + m.len as usize) else {
                continue;
            };
            self.rx.mark_base = m.start;
            self.rx.mark_len = bytes.len();
            self.rx.mark_crc = m.crc;
            self.rx.placed.clear();
            self.rx.placed.extend_from_slice(d.placed_of(m));
            self.rx.account_mark();
            if res.is_ok() {
                let mut hook = Hook {
                    rx: &mut self.rx,
                    data: &d.data,
                    dev: self.netdev.as_ref().map(|n| &n.dev),
                    sk: self.sk,
                    isn: self.isn,
                    ulp: &self.ulp,
                    reads: &mut self.reads,
                    stats: &mut self.stats,
                    off_ddp: self.off_ddp,
                    off_ddgst: self.off_ddgst,
                };
                res = self.core.rx_feed(bytes, &mut hook);
            }
        }
        self.rx.push_tail(&d.data);
        // No command is submitted while a delivery is processed, so a completed CID cannot
        // be reused before its teardown below.
        self.process_completions();
        res
    }

    /// Moves completions from the core: large READs are torn down (and wait for
    /// `teardown_done`), the others are ready at once.
    fn process_completions(&mut self) {
        while let Some(mut c) = self.core.pop_completion() {
            let Some(read) = self.reads.remove(&c.cid) else {
                self.ready.push_back(c);
                continue;
            };
            if let Some(IoBuf::Contig(v)) = c.buf.take() {
                self.shadows.push(v);
            }
            if let Dest::Host(_) = read.dest {
                let LargeRead {
                    dest,
                    contig,
                    checks,
                    error,
                } = read;
                if let Dest::Host(sgl) = dest {
                    // Checks deferred while the device still owned the buffers (before an
                    // sk_del) are due now.
                    finish(&mut c, sgl, contig, &checks, error, &mut self.stats);
                }
                self.ready.push_back(c);
                continue;
            }
            let ctx = self.next_ctx;
            self.next_ctx += 1;
            let r = match &self.netdev {
                Some(n) => lock(&n.dev).teardown(self.sk, c.cid, DdpCtx(ctx)),
                None => Ok(()),
            };
            match r {
                // The I/O completes when `teardown_done` hands the buffers back.
                Ok(()) => {
                    self.tearing.insert(
                        ctx,
                        Tearing {
                            completion: c,
                            read,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(qid = self.qid, cid = c.cid, error = %e, "teardown failed");
                    c.result = Err(IoError::QueueLost("offload context lost"));
                    self.ready.push_back(c);
                }
            }
        }
        self.collect_teardowns();
    }

    /// Completes the large READs whose `teardown_done` arrived.
    pub fn collect_teardowns(&mut self) {
        let done = std::mem::take(&mut *lock(&self.ulp.done));
        for (ctx, io) in done {
            self.stats.teardown_done += 1;
            let Some(t) = self.tearing.remove(&ctx.0) else {
                continue;
            };
            let Tearing {
                mut completion,
                read,
            } = t;
            finish(
                &mut completion,
                io.sgl,
                read.contig,
                &read.checks,
                read.error,
                &mut self.stats,
            );
            self.ready.push_back(completion);
        }
    }

    /// The next completed command.
    pub fn pop_completion(&mut self) -> Option<Completion> {
        self.collect_teardowns();
        self.ready.pop_front()
    }

    /// Commands submitted and not yet handed back by [`DdpQueue::pop_completion`].
    pub fn outstanding(&self) -> usize {
        self.core.in_flight() + self.tearing.len() + self.ready.len()
    }

    /// Completed commands ready for [`DdpQueue::pop_completion`].
    pub fn completions_ready(&self) -> usize {
        self.ready.len() + lock(&self.ulp.done).len()
    }

    /// Large READs waiting for `teardown_done`.
    pub fn waiting_for_teardown(&self) -> usize {
        self.tearing.len()
    }
}

/// Gives a large READ its buffers back and applies the digest checks and errors.
fn finish(
    c: &mut Completion,
    sgl: SgList,
    contig: bool,
    checks: &[DigestCheck],
    error: Option<IoError>,
    stats: &mut HostOffloadStats,
) {
    if c.result.is_ok() {
        if let Some(e) = error {
            c.result = Err(e);
        } else {
            for ch in checks {
                if let Err(e) = verify(&sgl, ch) {
                    stats.ddgst_errors += 1;
                    c.result = Err(e);
                    break;
                }
            }
        }
    }
    let mut segs: Vec<Vec<u8>> = sgl.into_segments().into_iter().map(Vec::from).collect();
    c.buf = Some(if contig && segs.len() == 1 {
        IoBuf::Contig(segs.pop().unwrap_or_default())
    } else {
        IoBuf::Sgl(segs)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Mark;
    use nvme_tcp_wire::digest::crc32c;
    use nvme_tcp_wire::pdu::{CapsuleRespRepr, DataPduRepr, HeaderBuf, IcRespRepr, PduFlags};
    use ulp_ddp::{CapSet, DdpError, DevCaps, NvmeTcpDdpLimits, ProtoLimits, Stats};

    const ISN: u32 = u32::MAX - 100;

    fn read(slba: u64, nlb: u32, buf: IoBuf, user_data: u64) -> Request {
        use crate::sim::IntoRequest;
        match nvme_tcp_host::cmd::read(1, slba, nlb, buf, user_data).into_request() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }
    const SK: SockId = SockId(7);

    /// A device that records what the host asks and completes teardowns on request.
    #[derive(Default)]
    struct MockDev {
        active: bool,
        ops: Option<Arc<dyn UlpDdpOps>>,
        sk_add_cfg: Option<SkConfig>,
        ios: HashMap<u16, DdpIo>,
        torn: Vec<(DdpCtx, DdpIo)>,
        resyncs: Vec<u32>,
        copied: u64,
        sk_del: u32,
    }

    impl MockDev {
        fn complete_teardowns(&mut self) {
            let ops = self.ops.clone();
            for (ctx, io) in self.torn.drain(..) {
                if let Some(o) = &ops {
                    o.teardown_done(ctx, io);
                }
            }
        }
    }

    impl UlpDdpDevice for MockDev {
        fn limits(&self, _ulp: UlpDdpType) -> Result<Limits, DdpError> {
            Ok(Limits {
                max_ddp_sgl_len: 0,
                io_threshold: 4096,
                tls: false,
                proto: ProtoLimits::Nvme(NvmeTcpDdpLimits {
                    full_ccid_range: false,
                }),
            })
        }
        fn sk_add(
            &mut self,
            _sk: SockId,
            config: &SkConfig,
            ulp_ops: Arc<dyn UlpDdpOps>,
        ) -> Result<(), DdpError> {
            self.sk_add_cfg = Some(*config);
            self.ops = Some(ulp_ops);
            Ok(())
        }
        fn sk_del(&mut self, _sk: SockId) -> Vec<DdpIo> {
            self.sk_del += 1;
            self.ios.drain().map(|(_, io)| io).collect()
        }
        fn setup(&mut self, _sk: SockId, io: DdpIo) -> Result<(), SetupError> {
            self.ios.insert(io.command_id, io);
            Ok(())
        }
        fn teardown(&mut self, _sk: SockId, cid: u16, ctx: DdpCtx) -> Result<(), DdpError> {
            let io = self.ios.remove(&cid).ok_or(DdpError::UnknownCommand(cid))?;
            self.torn.push((ctx, io));
            Ok(())
        }
        fn resync(&mut self, _sk: SockId, seq: u32) {
            self.resyncs.push(seq);
        }
        fn set_caps(&mut self, active: CapSet) -> Result<(), DdpError> {
            self.active = !active.is_empty();
            Ok(())
        }
        fn get_caps(&self) -> DevCaps {
            DevCaps {
                hw: CapSet::ALL,
                active: if self.active {
                    CapSet::ALL
                } else {
                    CapSet::EMPTY
                },
            }
        }
        fn get_stats(&self) -> Stats {
            Stats::default()
        }
        fn copy_to_io(
            &mut self,
            _sk: SockId,
            cid: u16,
            offset: u64,
            data: &[u8],
        ) -> Result<(), DdpError> {
            let io = self
                .ios
                .get_mut(&cid)
                .ok_or(DdpError::UnknownCommand(cid))?;
            self.copied += data.len() as u64;
            if io.sgl.write_at(offset, data) {
                Ok(())
            } else {
                Err(DdpError::UnknownCommand(cid))
            }
        }
    }

    /// Feeds `bytes` at stream offset `at` as one segment with `crc` and `placed` ranges.
    fn deliver(q: &mut DdpQueue<MockDev>, at: u64, bytes: &[u8], crc: bool, placed: &[(u64, u32)]) {
        let d = Delivery {
            base: at,
            data: bytes.to_vec(),
            marks: vec![Mark {
                start: at,
                len: bytes.len() as u32,
                crc,
                placed_lo: 0,
                placed_hi: placed.len() as u32,
            }],
            placed: placed.to_vec(),
        };
        q.receive(&d).unwrap();
    }

    fn c2h(cid: u16, data: &[u8], digest: u32) -> Vec<u8> {
        let hdr = HeaderBuf::new(&DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::LAST_PDU | PduFlags::SUCCESS,
            hdgst: false,
            ddgst: true,
            pda: 0,
            cccid: cid,
            ttag: 0,
            datao: 0,
            datal: data.len() as u32,
        });
        let mut out = hdr.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.extend_from_slice(&digest.to_le_bytes());
        out
    }

    /// A live, offloaded queue over a mock device; returns the stream position.
    fn live_queue() -> (Arc<Mutex<MockDev>>, DdpQueue<MockDev>, u64) {
        let dev = Arc::new(Mutex::new(MockDev {
            active: true,
            ..MockDev::default()
        }));
        let netdev = DdpNetdev::probe(&dev, true).expect("offload available");
        assert_eq!(netdev.cid_mode(), CidMode::Linear);
        let mut q = DdpQueue::new(
            QueueConfig {
                qid: 1,
                queue_size: 8,
                hdgst: false,
                ddgst: true,
                cid_mode: CidMode::Tagged,
                in_capsule_max: 0,
            },
            SK,
            ISN,
            Some(netdev),
        );
        let n = q.tx_pending().len();
        q.tx_consumed(n);
        let icresp = HeaderBuf::new(&IcRespRepr {
            pfv: 0,
            cpda: 0,
            hdgst_enable: false,
            ddgst_enable: true,
            maxh2cdata: 131072,
        });
        let mut pos = 0;
        deliver(&mut q, pos, icresp.as_bytes(), false, &[]);
        pos += icresp.as_bytes().len() as u64;
        // The Connect stands in as any command completed by a CapsuleResp.
        let cid = q
            .core_mut()
            .submit_now(nvme_tcp_host::cmd::flush(1, 99), Instant::now())
            .unwrap();
        let mut cqe = [0u8; 16];
        cqe[12..14].copy_from_slice(&cid.to_le_bytes());
        let resp = HeaderBuf::new(&CapsuleRespRepr { hdgst: false, cqe });
        deliver(&mut q, pos, resp.as_bytes(), false, &[]);
        pos += resp.as_bytes().len() as u64;
        assert!(q.pop_completion().unwrap().result.is_ok());
        q.core_mut().set_live();
        q.offload_socket();
        assert!(q.is_offloaded() && q.is_ddgst_offloaded());
        (dev, q, pos)
    }

    #[test]
    fn sk_add_gets_the_next_pdu_sequence_number_and_the_queue_config() {
        let (dev, mut q, pos) = live_queue();
        let cfg = lock(&dev).sk_add_cfg.unwrap();
        assert_eq!(cfg.next_pdu_seq, Some(ISN.wrapping_add(pos as u32)));
        let nvme = cfg.nvme_config().unwrap();
        assert_eq!(nvme.queue_size, 8);
        assert!(nvme.dgst.data && !nvme.dgst.header);
        q.stop();
        assert_eq!(lock(&dev).sk_del, 1);
        assert!(!q.is_offloaded());
    }

    #[test]
    fn host_copies_only_unplaced_bytes_and_completes_after_teardown_done() {
        let (dev, mut q, pos) = live_queue();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 31) as u8).collect();
        let cid = q
            .submit(read(0, 2, IoBuf::Contig(vec![0; 8192]), 5))
            .unwrap();
        assert!(cid < 8, "linear CID");
        // The device placed the first half itself.
        assert!(
            lock(&dev)
                .ios
                .get_mut(&cid)
                .unwrap()
                .sgl
                .write_at(0, &data[..4096])
        );
        let pdu = c2h(cid, &data, crc32c(&data));
        deliver(&mut q, pos, &pdu, false, &[(pos + 24, 4096)]);
        assert_eq!(lock(&dev).copied, 4096, "only the unplaced half is copied");
        assert_eq!(q.offload_stats().placed_bytes, 4096);
        assert!(q.pop_completion().is_none(), "waits for teardown_done");
        assert_eq!(q.waiting_for_teardown(), 1);
        lock(&dev).complete_teardowns();
        let c = q.pop_completion().unwrap();
        assert!(c.result.is_ok(), "{:?}", c.result);
        assert_eq!(c.buf.unwrap(), IoBuf::Contig(data));
        // Not every segment had the crc bit: the digest was checked in software.
        assert_eq!(q.offload_stats().ddgst_software, 1);
        assert_eq!(q.offload_stats().ddgst_offloaded, 0);
    }

    #[test]
    fn reads_in_flight_at_sk_del_finish_on_the_software_path() {
        let (dev, mut q, pos) = live_queue();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        let cid = q
            .submit(read(0, 2, IoBuf::Contig(vec![0; 8192]), 5))
            .unwrap();
        // The device placed the first 4 KiB of a first PDU, then the queue stops.
        assert!(
            lock(&dev)
                .ios
                .get_mut(&cid)
                .unwrap()
                .sgl
                .write_at(0, &data[..4096])
        );
        let first = {
            let hdr = HeaderBuf::new(&DataPduRepr {
                pdu_type: PduType::C2hData,
                flags: PduFlags::NONE,
                hdgst: false,
                ddgst: true,
                pda: 0,
                cccid: cid,
                ttag: 0,
                datao: 0,
                datal: 4096,
            });
            let mut v = hdr.as_bytes().to_vec();
            v.extend_from_slice(&data[..4096]);
            v.extend_from_slice(&crc32c(&data[..4096]).to_le_bytes());
            v
        };
        deliver(&mut q, pos, &first, false, &[(pos + 24, 4096)]);
        q.stop();
        assert!(!q.is_offloaded());
        assert_eq!(lock(&dev).sk_del, 1);
        // The rest arrives after the offload is gone.
        let hdr = HeaderBuf::new(&DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::LAST_PDU | PduFlags::SUCCESS,
            hdgst: false,
            ddgst: true,
            pda: 0,
            cccid: cid,
            ttag: 0,
            datao: 4096,
            datal: 4096,
        });
        let mut second = hdr.as_bytes().to_vec();
        second.extend_from_slice(&data[4096..]);
        second.extend_from_slice(&crc32c(&data[4096..]).to_le_bytes());
        deliver(&mut q, pos + first.len() as u64, &second, false, &[]);
        let c = q.pop_completion().unwrap();
        assert!(c.result.is_ok(), "{:?}", c.result);
        assert_eq!(c.buf.unwrap(), IoBuf::Contig(data));
        assert_eq!(q.offload_stats().ddgst_software, 2);
    }

    #[test]
    fn a_bad_digest_fails_the_offloaded_read_after_teardown() {
        let (dev, mut q, pos) = live_queue();
        let data = vec![0x42u8; 8192];
        let cid = q
            .submit(read(0, 2, IoBuf::Contig(vec![0; 8192]), 5))
            .unwrap();
        let pdu = c2h(cid, &data, crc32c(&data) ^ 1);
        deliver(&mut q, pos, &pdu, false, &[]);
        lock(&dev).complete_teardowns();
        let c = q.pop_completion().unwrap();
        assert!(
            matches!(c.result, Err(IoError::DataDigest { .. })),
            "{:?}",
            c.result
        );
    }

    #[test]
    fn a_verified_pdu_skips_the_digest_check() {
        let (dev, mut q, pos) = live_queue();
        let data = vec![0x42u8; 8192];
        let cid = q
            .submit(read(0, 2, IoBuf::Contig(vec![0; 8192]), 5))
            .unwrap();
        assert!(lock(&dev).ios.get_mut(&cid).unwrap().sgl.write_at(0, &data));
        // A wrong digest that the device claims it verified is not checked again.
        let pdu = c2h(cid, &data, 0xDEAD_BEEF);
        deliver(&mut q, pos, &pdu, true, &[(pos + 24, 8192)]);
        lock(&dev).complete_teardowns();
        let c = q.pop_completion().unwrap();
        assert!(c.result.is_ok());
        assert_eq!(q.offload_stats().ddgst_offloaded, 1);
        assert_eq!(lock(&dev).copied, 0);
    }

    #[test]
    fn resync_is_confirmed_only_at_a_header_starting_exactly_at_the_requested_seq() {
        let (dev, mut q, mut pos) = live_queue();
        let ops = lock(&dev).ops.clone().unwrap();
        let data = vec![7u8; 64];
        // A request for the middle of the next PDU: never confirmed.
        ops.resync_request(SK, ISN.wrapping_add(pos as u32 + 30), ResyncFlags::PENDING);
        for _ in 0..2 {
            let cid = q.submit(read(0, 1, IoBuf::Contig(vec![0; 64]), 1)).unwrap();
            let pdu = c2h(cid, &data, crc32c(&data));
            deliver(&mut q, pos, &pdu, false, &[]);
            pos += pdu.len() as u64;
            assert!(q.pop_completion().unwrap().result.is_ok());
        }
        assert!(lock(&dev).resyncs.is_empty());
        assert!(q.offload_stats().resync_mismatch > 0);
        // A newer request for the exact start of the next PDU: confirmed once.
        let want = ISN.wrapping_add(pos as u32);
        ops.resync_request(SK, want, ResyncFlags::PENDING);
        for _ in 0..2 {
            let cid = q.submit(read(0, 1, IoBuf::Contig(vec![0; 64]), 1)).unwrap();
            let pdu = c2h(cid, &data, crc32c(&data));
            deliver(&mut q, pos, &pdu, false, &[]);
            pos += pdu.len() as u64;
            assert!(q.pop_completion().unwrap().result.is_ok());
        }
        assert_eq!(lock(&dev).resyncs, [want]);
        assert_eq!(q.offload_stats().resync_confirmed, 1);
    }

    #[test]
    fn small_reads_and_a_disabled_capability_are_not_offloaded() {
        let (dev, mut q, pos) = live_queue();
        let data = vec![9u8; 512];
        let cid = q
            .submit(read(0, 1, IoBuf::Contig(vec![0; 512]), 1))
            .unwrap();
        assert!(lock(&dev).ios.is_empty(), "below io_threshold: no setup");
        let pdu = c2h(cid, &data, crc32c(&data));
        deliver(&mut q, pos, &pdu, false, &[]);
        let c = q.pop_completion().unwrap();
        assert_eq!(c.buf.unwrap(), IoBuf::Contig(data));
        lock(&dev).active = false;
        assert!(DdpNetdev::probe(&dev, true).is_none());
        lock(&dev).active = true;
        assert!(DdpNetdev::probe(&dev, false).is_none());
    }
}
