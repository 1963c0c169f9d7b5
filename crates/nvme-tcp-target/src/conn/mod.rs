//! The controller side of one NVMe/TCP connection, as a sans-IO state machine.
//!
//! The driver (see [`crate::server`]) reads socket bytes into [`Connection::recv_buf`], reports
//! them with [`Connection::on_recv`], writes queued output with [`Connection::flush`] and
//! calls [`Connection::handle_timeout`] when [`Connection::poll_timeout`] passes. The state
//! machine never touches a socket; it does call the namespace backends synchronously, so a
//! slow backend stalls only the queue (connection) that uses it.
//!
//! Receive path: only whole PDUs are handled. The receive buffer holds at least one PDU of the
//! largest allowed size (MAXH2CDATA or in-capsule data, plus the largest header), and the
//! validator refuses a larger PLEN before anything is buffered, so memory is bounded. Every
//! header goes through [`nvme_tcp_wire::validate`] (spec-order checks, FES/FEI); the
//! state-dependent checks (PDU sequence, TTAG/CCCID, DATAO ranges) are here. Any failure
//! queues a C2HTermReq and closes the connection.
//!
//! Transmit path: see the `tx` module. Output is batched: all PDUs answering the commands of one read
//! are sent with as few `writev` calls as possible.

mod admin;
mod auth;
mod io;
pub(crate) mod tx;

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::nvme::{Cqe, DatasetManagementCommand, Sqe, Status, StatusField};
use nvme_tcp_wire::pdu::field as pdu_field;
use nvme_tcp_wire::pdu::{
    CH_LEN, CapsuleRespRepr, DataPdu, DataPduRepr, HeaderBuf, IcPdu, IcReqRepr, IcRespRepr,
    MAX_HEADER_LEN, MAX_HLEN_WITH_HDGST, PduFlags, PduType, R2tRepr, TERM_REQ_MAX_PLEN,
    TermReqRepr,
};
use nvme_tcp_wire::validate::{
    HeaderProgress, NegotiatedParams, PduLayout, Role, validate_partial,
};
use nvme_tcp_wire::{Reason, WireError};
use zerocopy::IntoBytes;

use crate::backend::AlignedBuf;
use crate::controller::{Controller, Disconnector};
use crate::metrics::CommandObserver;
use crate::namespace::Namespace;
use crate::state::TargetState;
use tx::{BufPool, Tx};

/// In-capsule data accepted for admin and Fabrics commands (NVMe/TCP: 8 KiB).
pub const ADMIN_IN_CAPSULE_DATA: u32 = 8192;
/// How often an admin queue holding Asynchronous Event Requests looks for new events.
pub const AER_POLL: Duration = Duration::from_millis(100);
/// Queued output above which the connection stops handling input until it is sent.
const TX_HIGH_WATER: usize = 8 << 20;
/// Size of the bounce buffer for `O_DIRECT` writes and zeroing files.
const BOUNCE_LEN: usize = 128 * 1024;
/// Namespaces cached per connection before the cache is reset.
const NS_TABLE_MAX: usize = 64;
/// SMART counters are folded into the controller every this many commands.
const STATS_FOLD: u32 = 1024;

/// What the connection knows about the port it was accepted on.
#[derive(Debug, Clone, Copy)]
pub struct PortContext {
    /// Port ID.
    pub portid: u16,
    /// Local address of the connection (advertised in discovery for wildcard ports).
    pub local_addr: SocketAddr,
    /// In-capsule data size of the port's I/O queues.
    pub in_capsule_data_size: u32,
}

/// Builds a [`Disconnector`] for this connection (the driver knows how to close it).
pub type DisconnectorFactory = Box<dyn Fn() -> Disconnector + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for ICReq.
    AwaitIcReq,
    /// Initialized.
    Ready,
    /// Closed: flush what is queued (a C2HTermReq, say), then drop the connection.
    Closed,
}

/// What the handler of a PDU decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The PDU is handled.
    Continue,
    /// The PDU cannot be handled until queued output is sent; keep it and retry.
    Stall,
}

/// The queue (admin or I/O) this connection carries, once Connect succeeded.
struct Queue {
    ctrl: Arc<Controller>,
    qid: u16,
    size: u16,
    sqhd: u16,
    sq_flow_disabled: bool,
}

/// Where the data of a write that uses R2T goes.
enum WriteSink {
    Namespace {
        ns: Arc<Namespace>,
        offset: u64,
        /// FUA, or the write cache disabled: each piece is durable before completion.
        durable: bool,
    },
    Dsm {
        cmd: DatasetManagementCommand,
        buf: Vec<u8>,
    },
}

/// A command waiting for its data (R2T sent or queued). Its index is the TTAG.
struct PendingWrite {
    cccid: u16,
    nsid: u32,
    sink: WriteSink,
    len: u32,
    received: u32,
    status: Status,
}

#[derive(Default)]
struct LocalStats {
    bytes_read: u64,
    bytes_written: u64,
    reads: u64,
    writes: u64,
    pending: u32,
}

/// The controller end of one NVMe/TCP connection.
pub struct Connection {
    id: u64,
    state: Arc<TargetState>,
    port: PortContext,
    phase: Phase,
    params: NegotiatedParams,
    hpda: u8,
    maxh2cdata: u32,
    c2h_max: usize,
    mdts: u32,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    stalled: bool,
    tx: Tx,
    queue: Option<Queue>,
    /// DH-HMAC-CHAP state when the queue's host must authenticate.
    auth: Option<nvme_tcp_auth::ControllerAuth>,
    /// The host NQN of the TLS PSK identity the connection authenticated with (TLS only).
    tls_hostnqn: Option<String>,
    created: Instant,
    /// Time from `created` to finish ICReq and Connect.
    connect_timeout: Duration,
    /// When held Asynchronous Event Requests were last matched with pending events.
    aer_checked: Instant,
    make_disconnector: DisconnectorFactory,
    writes: Vec<Option<PendingWrite>>,
    free_ttags: Vec<u16>,
    r2t_waiting: VecDeque<u16>,
    r2t_inflight: u64,
    aers: Vec<u16>,
    bounce: Option<AlignedBuf>,
    stats: LocalStats,
    /// Feeds the target's metrics (command begin/end).
    obs: CommandObserver,
    zero_crc: Option<(usize, u32)>,
    cur_nsid: u32,
    /// Opcode and CDW10 of the command being handled (for diagnostics).
    cur_cmd: (u8, u32),
    close_reason: Option<String>,
    /// Namespaces this connection has used; transmit items refer to them by index.
    ns_table: Vec<Arc<Namespace>>,
    /// NSID → index in `ns_table`, valid for `ns_gen`.
    ns_map: Vec<(u32, usize)>,
    ns_gen: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("phase", &self.phase)
            .field("qid", &self.queue.as_ref().map(|q| q.qid))
            .finish()
    }
}

impl Connection {
    /// Records that the connection runs over TLS with a PSK bound to `hostnqn` (the host NQN
    /// of its PSK identity): a Connect naming another host is refused (Connect Invalid Host),
    /// so a host's PSK cannot open a controller for another host.
    pub fn set_tls_hostnqn(&mut self, hostnqn: String) {
        self.tls_hostnqn = Some(hostnqn);
    }

    /// A new connection accepted on `port`, waiting for ICReq.
    pub fn new(
        id: u64,
        state: Arc<TargetState>,
        port: PortContext,
        make_disconnector: DisconnectorFactory,
        now: Instant,
    ) -> Self {
        let lim = state.limits().clone();
        let in_capsule = ADMIN_IN_CAPSULE_DATA.max(port.in_capsule_data_size);
        let max_pdu = MAX_HEADER_LEN + lim.maxh2cdata.max(in_capsule) as usize + 4;
        let rx_len = (2 * max_pdu).max(256 * 1024);
        let mut params = NegotiatedParams::new(Role::Controller);
        params.max_plen = max_pdu as u32;
        params.max_h2c_data = lim.maxh2cdata;
        let c2h_max = lim
            .c2h_data_max
            .min(lim.mdts)
            .clamp(4096, crate::config::MAX_C2H_DATA) as usize;
        let pool = BufPool::new(c2h_max, (lim.max_inflight_data as usize / c2h_max).max(1));
        let obs = CommandObserver::new(state.metrics().connection(id));
        Self {
            id,
            state,
            port,
            phase: Phase::AwaitIcReq,
            params,
            hpda: 0,
            maxh2cdata: lim.maxh2cdata,
            c2h_max,
            mdts: lim.mdts,
            rx: vec![0u8; rx_len],
            rx_start: 0,
            rx_end: 0,
            stalled: false,
            tx: Tx::new(pool),
            queue: None,
            auth: None,
            tls_hostnqn: None,
            created: now,
            connect_timeout: lim.connect_timeout,
            aer_checked: now,
            make_disconnector,
            writes: Vec::new(),
            free_ttags: Vec::new(),
            r2t_waiting: VecDeque::new(),
            r2t_inflight: 0,
            aers: Vec::new(),
            bounce: None,
            stats: LocalStats::default(),
            obs,
            zero_crc: None,
            cur_nsid: 0,
            cur_cmd: (0, 0),
            close_reason: None,
            ns_table: Vec::new(),
            ns_map: Vec::new(),
            ns_gen: u64::MAX,
        }
    }

    /// Connection ID (unique within the target).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once the host authenticated this queue (DH-HMAC-CHAP); false for queues whose
    /// host needs no authentication.
    pub fn authenticated(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.is_authenticated())
    }

    /// True once the connection must be closed (after [`Connection::flush`]).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Why the connection closed, if it did on its own.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// True if output is queued.
    pub fn wants_flush(&self) -> bool {
        !self.tx.is_empty()
    }

    /// The controller ID and queue ID, once connected.
    pub fn queue_id(&self) -> Option<(u16, u16)> {
        self.queue.as_ref().map(|q| (q.ctrl.cntlid(), q.qid))
    }

    /// Space to read socket bytes into (empty only while input is stalled on output: flush
    /// first).
    pub fn recv_buf(&mut self) -> &mut [u8] {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx_start > 0 && self.rx.len() - self.rx_end < self.rx.len() / 4 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        &mut self.rx[self.rx_end..]
    }

    /// Reports `n` bytes read into [`Connection::recv_buf`] and handles every complete PDU.
    pub fn on_recv(&mut self, n: usize, now: Instant) {
        self.rx_end = (self.rx_end + n).min(self.rx.len());
        self.process(now);
    }

    /// The peer closed its end.
    pub fn on_eof(&mut self) {
        if self.phase != Phase::Closed {
            self.close("peer closed the connection");
        }
    }

    /// Writes all queued output to `w`, handling input that waited for room. `w` should be
    /// non-blocking: `WouldBlock` is passed on with the rest still queued (and namespace
    /// data copied out, so no lock waits on the peer); call again when the socket is
    /// writable.
    pub fn flush<W: Write + ?Sized>(&mut self, w: &mut W) -> std::io::Result<()> {
        loop {
            self.tx.flush(w, &self.ns_table)?;
            if self.stalled && self.phase != Phase::Closed {
                self.stalled = false;
                self.process(Instant::now());
                if !self.tx.is_empty() {
                    continue;
                }
            }
            return Ok(());
        }
    }

    /// True if the target may disconnect this connection when it has been idle while
    /// connection slots are scarce: an I/O queue, or an admin queue without keep-alive
    /// (KATO 0). Connections before Connect have the connect deadline instead; admin queues
    /// with keep-alive have theirs.
    pub fn idle_reclaimable(&self) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.qid != 0 || q.ctrl.kato_ms() == 0)
    }

    /// True while a command is in flight: output is queued, or a write waits for data.
    pub fn has_work(&self) -> bool {
        !self.tx.is_empty() || self.free_ttags.len() < self.writes.len() || self.stalled
    }

    /// Bytes written to the peer so far.
    pub fn bytes_sent(&self) -> u64 {
        self.tx.sent_total()
    }

    /// The largest PDU this connection sends (a C2HData PDU with the largest payload):
    /// the unit of the driver's send deadline.
    pub fn max_send_pdu(&self) -> usize {
        MAX_HEADER_LEN + 128 + self.c2h_max + 4
    }

    /// When [`Connection::handle_timeout`] should run next.
    pub fn poll_timeout(&self, _now: Instant) -> Option<Instant> {
        match &self.queue {
            None => Some(self.created + self.connect_timeout),
            Some(q) if q.qid == 0 => {
                let ka = q.ctrl.keep_alive_deadline();
                // A fixed point after the last check: `now + AER_POLL` would never be due
                // when the caller asks "is it time?" with the same `now`.
                let aer = (!self.aers.is_empty()).then(|| self.aer_checked + AER_POLL);
                match (ka, aer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Some(_) => None,
        }
    }

    /// Handles timers: the connect deadline, keep-alive expiry (which tears the controller
    /// down), and events for held Asynchronous Event Requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        let Some(q) = &self.queue else {
            if now >= self.created + self.connect_timeout {
                self.close("no Connect within the connect timeout");
            }
            return;
        };
        if q.ctrl.is_failed() {
            self.close("controller torn down");
            return;
        }
        if q.qid == 0
            && let Some(deadline) = q.ctrl.keep_alive_deadline()
            && now >= deadline
        {
            tracing::warn!(
                cntlid = q.ctrl.cntlid(),
                hostnqn = q.ctrl.hostnqn(),
                "keep alive timeout expired, tearing the controller down"
            );
            let ctrl = Arc::clone(&q.ctrl);
            self.close("keep alive timeout");
            ctrl.fail();
            return;
        }
        self.aer_checked = now;
        self.complete_aers();
    }

    fn close(&mut self, why: &str) {
        if self.close_reason.is_none() {
            self.close_reason = Some(why.to_string());
        }
        self.phase = Phase::Closed;
    }

    /// Handles complete PDUs in the receive buffer.
    fn process(&mut self, now: Instant) {
        let rx = std::mem::take(&mut self.rx);
        while self.phase != Phase::Closed {
            if self.tx.queued_bytes() > TX_HIGH_WATER {
                self.stalled = true;
                break;
            }
            let avail = &rx[self.rx_start..self.rx_end];
            // The header is validated as its bytes arrive (refusing an oversized PLEN before
            // anything else is read); the PDU is handled once all PLEN bytes are in.
            let layout = match validate_partial(avail, &self.params) {
                Ok(HeaderProgress::Complete(l)) => l,
                Ok(HeaderProgress::Need(_)) => break,
                Err(e) => {
                    let hlen = usize::from(avail[pdu_field::common::HLEN])
                        .clamp(CH_LEN, avail.len().min(MAX_HLEN_WITH_HDGST));
                    self.terminate(&e, &avail[..hlen]);
                    break;
                }
            };
            let plen = layout.plen();
            if avail.len() < plen {
                break;
            }
            let pdu = &avail[..plen];
            match self.handle_pdu(&layout, pdu, now) {
                Flow::Continue => self.rx_start += plen,
                Flow::Stall => {
                    self.stalled = true;
                    break;
                }
            }
        }
        self.rx = rx;
        self.complete_aers();
    }

    /// Queues a C2HTermReq for `err` (if it calls for one) and closes.
    fn terminate(&mut self, err: &WireError, offending: &[u8]) {
        tracing::warn!(conn = self.id, "fatal transport error: {err}");
        let mut buf = [0u8; TERM_REQ_MAX_PLEN];
        if let Some(n) = TermReqRepr::build_for_error(PduType::C2hTermReq, err, offending, &mut buf)
        {
            self.tx.push_bytes(&buf[..n]);
        }
        self.close(&err.to_string());
    }

    fn handle_pdu(&mut self, layout: &PduLayout, pdu: &[u8], now: Instant) -> Flow {
        match layout.pdu_type() {
            PduType::IcReq => self.on_icreq(pdu),
            PduType::H2cTermReq => {
                tracing::info!(conn = self.id, "host terminated the connection");
                self.close("H2CTermReq received");
                Flow::Continue
            }
            _ if self.phase != Phase::Ready => {
                self.terminate(
                    &WireError::Sequence(Reason::BeforeIcReq(layout.pdu_type())),
                    &pdu[..layout.hlen()],
                );
                Flow::Continue
            }
            PduType::CapsuleCmd => self.on_capsule(layout, pdu, now),
            PduType::H2cData => {
                self.on_h2c_data(layout, pdu);
                Flow::Continue
            }
            other => {
                // The validator only lets host-to-controller types through.
                self.terminate(
                    &WireError::invalid(
                        "PDU-TYPE",
                        pdu_field::common::PDU_TYPE,
                        Reason::NotExpected(other),
                    ),
                    &pdu[..layout.hlen()],
                );
                Flow::Continue
            }
        }
    }

    /// ICReq: answer CPDA 0 (the Linux host refuses anything else), echo the requested
    /// digests, announce MAXH2CDATA; pad C2H data PDUs to the host's HPDA.
    fn on_icreq(&mut self, pdu: &[u8]) -> Flow {
        if self.phase != Phase::AwaitIcReq {
            self.terminate(
                &WireError::Sequence(Reason::IcReqAgain),
                &pdu[..pdu.len().min(128)],
            );
            return Flow::Continue;
        }
        let req = match IcReqRepr::parse(&IcPdu::new_unchecked(pdu)) {
            Ok(r) => r,
            Err(e) => {
                self.terminate(&e, &pdu[..pdu.len().min(128)]);
                return Flow::Continue;
            }
        };
        self.hpda = req.hpda;
        let resp = IcRespRepr {
            pfv: 0,
            cpda: 0,
            hdgst_enable: req.hdgst_enable,
            ddgst_enable: req.ddgst_enable,
            maxh2cdata: self.maxh2cdata,
        };
        self.tx.push_bytes(HeaderBuf::new(&resp).as_bytes());
        self.params.hdgst = req.hdgst_enable;
        self.params.ddgst = req.ddgst_enable;
        self.params.rx_pda = 0;
        self.phase = Phase::Ready;
        Flow::Continue
    }

    fn on_capsule(&mut self, layout: &PduLayout, pdu: &[u8], now: Instant) -> Flow {
        let Ok(sqe) = Sqe::parse(&pdu[CH_LEN..CH_LEN + 64]) else {
            return Flow::Continue;
        };
        let sqe = *sqe;
        let off = layout.data_offset();
        let data = &pdu[off..off + layout.data_len()];
        if let Some(q) = &mut self.queue {
            q.sqhd = if q.sqhd + 1 >= q.size { 0 } else { q.sqhd + 1 };
        }
        self.cur_nsid = 0;
        self.cur_cmd = (sqe.opcode(), sqe.cdw10());
        if layout.has_ddgst() && !data.is_empty() {
            let received = &pdu[off + data.len()..off + data.len() + 4];
            if crc32c(data).to_le_bytes() != received {
                // NVMe/TCP: a data digest error fails the command (Transient Transport
                // Error, retryable) and the connection stays up.
                tracing::warn!(
                    conn = self.id,
                    cid = sqe.cid(),
                    "in-capsule data digest error"
                );
                self.complete(sqe.cid(), Status::TRANSIENT_TRANSPORT_ERROR, 0, 0);
                return Flow::Continue;
            }
        }
        if self.queue.is_some() {
            let bytes = u64::from(sqe.dptr().length());
            self.obs
                .begin(sqe.cid(), sqe.opcode(), sqe.nsid(), bytes, now);
        }
        let gate = match &self.queue {
            Some(_) => self.auth_gate(&sqe),
            None => auth::Gate::Pass,
        };
        let flow = match (&self.queue, gate) {
            (Some(q), auth::Gate::Auth) => {
                if q.qid == 0 {
                    q.ctrl.keep_alive(now);
                }
                self.on_auth_command(&sqe, data)
            }
            (Some(_), auth::Gate::Refuse) => {
                self.complete(sqe.cid(), Status::AUTHENTICATION_REQUIRED, 0, 0);
                Flow::Continue
            }
            (None, _) => self.on_first_command(&sqe, data, now),
            (Some(q), auth::Gate::Pass) if q.qid == 0 => {
                q.ctrl.keep_alive(now);
                self.on_admin_command(&sqe, data)
            }
            (Some(_), auth::Gate::Pass) => self.on_io_command(&sqe, data),
        };
        if flow == Flow::Stall
            && let Some(q) = &mut self.queue
        {
            q.sqhd = if q.sqhd == 0 { q.size - 1 } else { q.sqhd - 1 };
        }
        flow
    }

    /// Queues a CapsuleResp.
    fn complete(&mut self, cid: u16, status: Status, dw0: u32, dw1: u32) {
        self.obs.end(cid, status);
        let (sqid, sqhd) = match &self.queue {
            Some(q) => (q.qid, if q.sq_flow_disabled { 0xFFFF } else { q.sqhd }),
            None => (0, 0),
        };
        let retryable = matches!(
            status,
            Status::TRANSIENT_TRANSPORT_ERROR | Status::ABORTED_SQ_DELETION
        ) || status == Status::CONNECT_CONTROLLER_BUSY;
        let sf = if status.is_success() || retryable {
            StatusField::from(status)
        } else {
            StatusField::dnr(status)
        };
        if !status.is_success() {
            tracing::debug!(
                conn = self.id,
                sqid,
                cid,
                opcode = self.cur_cmd.0,
                cdw10 = self.cur_cmd.1,
                nsid = self.cur_nsid,
                "command failed: {status:?}"
            );
            if let Some(q) = &self.queue {
                q.ctrl.log_error(sqid, cid, status, self.cur_nsid);
            }
        }
        let mut cqe = Cqe::new(cid, sqid, sqhd, sf);
        cqe.set_dw0(dw0);
        cqe.set_dw1(dw1);
        let mut raw = [0u8; 16];
        raw.copy_from_slice(cqe.as_bytes());
        let repr = CapsuleRespRepr {
            hdgst: self.params.hdgst,
            cqe: raw,
        };
        self.tx.push_bytes(HeaderBuf::new(&repr).as_bytes());
    }

    /// True if a successful read may end with SUCCESS instead of a CapsuleResp (the host
    /// disabled SQ flow control).
    fn success_flag_allowed(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| q.sq_flow_disabled)
    }

    /// Queues a C2HData header.
    fn push_c2h_header(&mut self, cccid: u16, datao: u32, datal: u32, last: bool, success: bool) {
        let flags = PduFlags::data(last, success);
        let repr = DataPduRepr {
            pdu_type: PduType::C2hData,
            flags,
            hdgst: self.params.hdgst,
            ddgst: self.params.ddgst,
            pda: self.hpda,
            cccid,
            ttag: 0,
            datao,
            datal,
        };
        self.tx.push_bytes(HeaderBuf::new(&repr).as_bytes());
    }

    /// Sends `data` (admin data: Identify, log pages) as C2HData PDUs and completes the
    /// command, with SUCCESS on the last PDU when allowed.
    fn send_data_and_complete(&mut self, cid: u16, data: &[u8]) {
        if data.is_empty() {
            self.complete(cid, Status::SUCCESS, 0, 0);
            return;
        }
        let success = self.success_flag_allowed();
        let mut datao = 0;
        for chunk in data.chunks(self.c2h_max) {
            let last = datao + chunk.len() == data.len();
            self.push_c2h_header(cid, datao as u32, chunk.len() as u32, last, last && success);
            self.tx.push_bytes(chunk);
            if self.params.ddgst {
                self.tx.push_bytes(&crc32c(chunk).to_le_bytes());
            }
            datao += chunk.len();
        }
        if !success {
            self.complete(cid, Status::SUCCESS, 0, 0);
        }
    }

    /// The data length an SQE's SGL describes for controller-to-host data, or the status
    /// to fail with.
    fn c2h_sgl_len(sqe: &Sqe) -> Result<u32, Status> {
        match sqe.dptr().parse() {
            Ok(nvme_tcp_wire::nvme::Sgl::TransportDataBlock { length }) => Ok(length),
            Ok(nvme_tcp_wire::nvme::Sgl::DataBlockOffset { .. }) => {
                Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
            }
            Err(e) => Err(e.status()),
        }
    }

    /// Sends an R2T for a pending write, or queues it while the in-flight budget is spent.
    fn start_r2t(&mut self, ttag: u16) {
        let Some(Some(w)) = self.writes.get(ttag as usize) else {
            return;
        };
        let len = w.len as u64;
        let budget = self.state.limits().max_inflight_data as u64;
        if self.r2t_inflight + len > budget && self.r2t_inflight > 0 {
            self.r2t_waiting.push_back(ttag);
            return;
        }
        self.r2t_inflight += len;
        let repr = R2tRepr {
            hdgst: self.params.hdgst,
            cccid: w.cccid,
            ttag,
            r2to: 0,
            r2tl: w.len,
        };
        self.tx.push_bytes(HeaderBuf::new(&repr).as_bytes());
    }

    /// Registers a write that needs its data through R2T. Fails when every TTAG is in use
    /// (the host has more commands outstanding than its queue holds).
    fn begin_r2t(&mut self, w: PendingWrite) -> Result<(), Status> {
        let Some(ttag) = self.free_ttags.pop() else {
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        };
        if let Some(slot) = self.writes.get_mut(ttag as usize) {
            *slot = Some(w);
        }
        self.start_r2t(ttag);
        Ok(())
    }

    /// H2CData: checked against its R2T (TTAG, CCCID, DATAO contiguity, range, LAST_PDU),
    /// then the data digest; data goes straight from the receive buffer to the backend.
    fn on_h2c_data(&mut self, layout: &PduLayout, pdu: &[u8]) {
        let hdr = DataPdu::new_unchecked(pdu);
        let (ttag, cccid, datao, datal) = (hdr.ttag(), hdr.cccid(), hdr.datao(), hdr.datal());
        let last = layout.ch.flags.contains(PduFlags::LAST_PDU);
        let header = &pdu[..layout.hlen()];
        let Some(Some(w)) = self.writes.get(ttag as usize) else {
            self.terminate(
                &WireError::invalid(
                    "TTAG",
                    pdu_field::data::TTAG.start,
                    Reason::UnknownTtag(ttag),
                ),
                header,
            );
            return;
        };
        if self.r2t_waiting.contains(&ttag) {
            self.terminate(
                &WireError::invalid(
                    "TTAG",
                    pdu_field::data::TTAG.start,
                    Reason::TtagBeforeR2t(ttag),
                ),
                header,
            );
            return;
        }
        if w.cccid != cccid {
            self.terminate(
                &WireError::invalid(
                    "CCCID",
                    pdu_field::data::CCCID.start,
                    Reason::CccidOfTtag {
                        ttag,
                        owner: w.cccid,
                        cccid,
                    },
                ),
                header,
            );
            return;
        }
        let end = datao as u64 + datal as u64;
        if datao < w.received || end > w.len as u64 {
            self.terminate(
                &WireError::OutOfRange(Reason::OutsideR2t {
                    datao,
                    datal,
                    len: w.len,
                    next: w.received,
                }),
                header,
            );
            return;
        }
        if datao != w.received {
            self.terminate(
                &WireError::Sequence(Reason::Datao {
                    datao,
                    expected: w.received,
                }),
                header,
            );
            return;
        }
        if last != (end == w.len as u64) {
            self.terminate(
                &WireError::Sequence(Reason::LastPdu {
                    last,
                    end,
                    len: w.len,
                }),
                header,
            );
            return;
        }
        let off = layout.data_offset();
        let data = &pdu[off..off + datal as usize];
        let digest_ok = !layout.has_ddgst()
            || crc32c(data).to_le_bytes() == pdu[off + data.len()..off + data.len() + 4];
        let mut bounce = self.bounce.take();
        let Some(Some(w)) = self.writes.get_mut(ttag as usize) else {
            return;
        };
        if !digest_ok {
            tracing::warn!(conn = self.id, cid = cccid, "H2CData data digest error");
            w.status = Status::TRANSIENT_TRANSPORT_ERROR;
        } else if w.status.is_success() {
            match &mut w.sink {
                WriteSink::Namespace {
                    ns,
                    offset,
                    durable,
                } => {
                    let b = bounce.get_or_insert_with(|| AlignedBuf::new(BOUNCE_LEN));
                    if let Err(e) = ns
                        .backend()
                        .write_at(*offset + datao as u64, data, b, *durable)
                    {
                        tracing::warn!(nsid = ns.nsid(), "write failed: {e}");
                        w.status = Status::WRITE_FAULT;
                    }
                }
                WriteSink::Dsm { buf, .. } => buf.extend_from_slice(data),
            }
        }
        w.received = end as u32;
        self.bounce = bounce;
        if last {
            self.finish_write(ttag);
        }
    }

    /// All data of an R2T write arrived: complete it and start waiting R2Ts.
    fn finish_write(&mut self, ttag: u16) {
        let Some(w) = self.writes.get_mut(ttag as usize).and_then(Option::take) else {
            return;
        };
        self.free_ttags.push(ttag);
        self.r2t_inflight = self.r2t_inflight.saturating_sub(w.len as u64);
        self.cur_nsid = w.nsid;
        let status = match (w.status, w.sink) {
            (s, _) if !s.is_success() => s,
            (_, WriteSink::Dsm { cmd, buf }) => self.dsm_ranges(&cmd, &buf),
            (s, WriteSink::Namespace { .. }) => {
                self.stats.bytes_written += w.len as u64;
                self.stats.writes += 1;
                self.count_op();
                s
            }
        };
        self.complete(w.cccid, status, 0, 0);
        while let Some(next) = self.r2t_waiting.pop_front() {
            let before = self.r2t_waiting.len();
            self.start_r2t(next);
            if self.r2t_waiting.len() > before {
                break;
            }
        }
    }

    /// Completes held Asynchronous Event Requests with pending events.
    fn complete_aers(&mut self) {
        let Some(q) = &self.queue else {
            return;
        };
        if q.qid != 0 || self.aers.is_empty() {
            return;
        }
        let ctrl = Arc::clone(&q.ctrl);
        while !self.aers.is_empty() {
            let Some(ev) = ctrl.take_event() else {
                break;
            };
            let cid = self.aers.remove(0);
            self.complete(cid, Status::SUCCESS, ev.dw0(), 0);
        }
    }

    /// Aborts the held Asynchronous Event Requests (controller reset or shutdown).
    fn abort_aers(&mut self) {
        for cid in std::mem::take(&mut self.aers) {
            self.complete(cid, Status::ABORTED_SQ_DELETION, 0, 0);
        }
    }

    fn count_op(&mut self) {
        self.stats.pending += 1;
        if self.stats.pending >= STATS_FOLD {
            self.fold_stats();
        }
    }

    fn fold_stats(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(q) = &self.queue else {
            return;
        };
        let s = &q.ctrl.smart;
        s.bytes_read.fetch_add(self.stats.bytes_read, Relaxed);
        s.bytes_written.fetch_add(self.stats.bytes_written, Relaxed);
        s.host_reads.fetch_add(self.stats.reads, Relaxed);
        s.host_writes.fetch_add(self.stats.writes, Relaxed);
        self.stats = LocalStats::default();
    }

    /// The index in the namespace table of active namespace `nsid` (cached per queue, so the
    /// hot path takes no shared lock and no reference).
    fn ns_index(&mut self, nsid: u32) -> Result<usize, Status> {
        let Some(q) = &self.queue else {
            return Err(Status::INVALID_NAMESPACE_OR_FORMAT);
        };
        let sub = q.ctrl.subsystem();
        let generation = sub.ns_generation();
        if generation != self.ns_gen {
            self.ns_map.clear();
            self.ns_gen = generation;
            if self.tx.is_empty() && self.ns_table.len() > NS_TABLE_MAX {
                self.ns_table.clear();
            }
        }
        if let Some(&(_, i)) = self.ns_map.iter().find(|(n, _)| *n == nsid) {
            return Ok(i);
        }
        let ns = sub
            .namespace(nsid)
            .ok_or(Status::INVALID_NAMESPACE_OR_FORMAT)?;
        let i = match self.ns_table.iter().position(|t| Arc::ptr_eq(t, &ns)) {
            Some(i) => i,
            None => {
                self.ns_table.push(ns);
                self.ns_table.len() - 1
            }
        };
        if self.ns_map.len() < NS_TABLE_MAX {
            self.ns_map.push((nsid, i));
        }
        Ok(i)
    }

    /// CRC32C of `len` zero bytes (cached for the last length asked).
    fn zero_crc(&mut self, len: usize) -> u32 {
        if let Some((l, c)) = self.zero_crc
            && l == len
        {
            return c;
        }
        let mut crc = nvme_tcp_wire::digest::Crc32c::new();
        let zeros = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len());
            crc.update(&zeros[..n]);
            left -= n;
        }
        let c = crc.finalize();
        self.zero_crc = Some((len, c));
        c
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.fold_stats();
        if let Some(q) = self.queue.take() {
            self.state.release_host_slot(q.ctrl.hostnqn());
            q.ctrl.remove_disconnector(self.id);
            if q.qid == 0 {
                // Losing the admin queue ends the association (as nvmet does).
                q.ctrl.fail();
            } else {
                q.ctrl.release_io_queue(q.qid);
            }
        }
    }
}
