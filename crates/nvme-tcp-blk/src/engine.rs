//! The block engine: byte-addressed block requests in, NVMe commands on the controller's I/O
//! queues out.
//!
//! Each NVMe/TCP I/O queue is owned by one worker thread (an [`IoQueue`] is not shared). A
//! caller hands a [`BlockOp`] and a completion callback to [`BlockEngine::submit`] with the
//! index of the queue to use; the worker splits the request into commands the controller
//! accepts (MDTS, 65536-block NLB, 256 Dataset Management ranges), keeps up to the queue's
//! depth in flight, and calls the callback once, on its own thread, when every command of the
//! request has completed. The callback must be quick (hand the result to another thread).
//!
//! Reconnects, command timeouts, `fast_io_fail_tmo` and `ctrl_loss_tmo` are the host queue's
//! business: a request waits while its queue reconnects and fails with
//! [`BlockError::Io`] only when the host gives up on it.
//!
//! The worker blocks on its request channel while nothing is in flight. While commands are in
//! flight it waits on the socket for at most [`EngineConfig::poll_slice`] at a time before it
//! looks at the channel again, which bounds the extra latency of a request that arrives then.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nvme_tcp_host::queue::{SQE_LEN, SubmitErrorKind};
use nvme_tcp_host::{
    Completion, Controller, DataDir, HostError, IoBuf, IoError, IoQueue, NvmeStatus, Request, cmd,
};
use nvme_tcp_wire::nvme::{IoCommand, ReadWriteCommand, Sqe, WriteZeroesCommand};
use zerocopy::IntoBytes;

use crate::geometry::Geometry;

/// One namespace of an engine: what a block device front end (an NBD export, a ublk device)
/// holds.
#[derive(Debug, Clone)]
pub struct Disk {
    engine: std::sync::Arc<BlockEngine>,
    ns: usize,
    geometry: Geometry,
}

impl Disk {
    /// Namespace index `ns` of `engine`; `None` if there is no such index.
    pub fn new(engine: std::sync::Arc<BlockEngine>, ns: usize) -> Option<Self> {
        let geometry = *engine.geometry(ns)?;
        Some(Self {
            engine,
            ns,
            geometry,
        })
    }

    /// Every namespace of `engine`, in order.
    pub fn all(engine: &std::sync::Arc<BlockEngine>) -> Vec<Self> {
        (0..engine.namespaces().len())
            .filter_map(|i| Self::new(engine.clone(), i))
            .collect()
    }

    /// The device's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The engine behind it.
    pub fn engine(&self) -> &std::sync::Arc<BlockEngine> {
        &self.engine
    }

    /// Number of queues requests can be spread over.
    pub fn queue_count(&self) -> usize {
        self.engine.queue_count()
    }

    /// See [`BlockEngine::check`].
    pub fn check(&self, op: &BlockOp) -> Result<(), BlockError> {
        self.engine.check(self.ns, op)
    }

    /// See [`BlockEngine::submit`].
    pub fn submit(&self, queue: usize, op: BlockOp, done: Done) {
        self.engine.submit(self.ns, queue, op, done)
    }
}

/// One block request, in bytes. Offsets and lengths must be multiples of the logical block
/// size and inside the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOp {
    /// Read `len` bytes at `offset`; the completion carries the data.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u32,
    },
    /// Write `data` at `offset`; with `fua` the data is on stable media when it completes.
    Write {
        /// Byte offset.
        offset: u64,
        /// The data.
        data: Vec<u8>,
        /// Force Unit Access.
        fua: bool,
    },
    /// Make every completed write durable (NVMe Flush).
    Flush,
    /// The range's content is no longer needed (NVMe Dataset Management, Deallocate).
    Discard {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// Zero the range (NVMe Write Zeroes).
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
        /// Force Unit Access.
        fua: bool,
    },
}

impl BlockOp {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            BlockOp::Read { .. } => "read",
            BlockOp::Write { .. } => "write",
            BlockOp::Flush => "flush",
            BlockOp::Discard { .. } => "discard",
            BlockOp::WriteZeroes { .. } => "write-zeroes",
        }
    }

    fn range(&self) -> Option<(u64, u64)> {
        match self {
            BlockOp::Read { offset, len } => Some((*offset, u64::from(*len))),
            BlockOp::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
            BlockOp::Flush => None,
            BlockOp::Discard { offset, len } | BlockOp::WriteZeroes { offset, len, .. } => {
                Some((*offset, *len))
            }
        }
    }
}

/// Why a block request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Offset or length is not a multiple of the logical block size, or the length is 0.
    #[error("offset {offset} length {len}: not a non-empty multiple of the {lba_size}-byte block")]
    Unaligned {
        /// Byte offset asked for.
        offset: u64,
        /// Byte count asked for.
        len: u64,
        /// The logical block size.
        lba_size: u32,
    },
    /// The range ends beyond the device.
    #[error("offset {offset} length {len}: beyond the end of the {size}-byte device")]
    OutOfRange {
        /// Byte offset asked for.
        offset: u64,
        /// Byte count asked for.
        len: u64,
        /// Device size in bytes.
        size: u64,
    },
    /// The namespace does not support the operation.
    #[error("{0} is not supported by the namespace")]
    Unsupported(&'static str),
    /// The namespace is write protected (or exported read only).
    #[error("the device is read only")]
    WriteProtected,
    /// The request is malformed or was not negotiated (refused by the front end).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An NVMe command of the request failed.
    #[error("{0}")]
    Io(IoError),
    /// The engine was shut down before the request completed.
    #[error("the block device is shutting down")]
    Shutdown,
}

impl BlockError {
    /// The Linux errno for this error (positive), as a block driver reports it.
    pub fn errno(&self) -> i32 {
        match self {
            BlockError::Unaligned { .. }
            | BlockError::OutOfRange { .. }
            | BlockError::Invalid(_) => libc::EINVAL,
            BlockError::Unsupported(_) => libc::EOPNOTSUPP,
            BlockError::WriteProtected => libc::EPERM,
            BlockError::Shutdown => libc::ESHUTDOWN,
            BlockError::Io(IoError::Status(s)) => status_errno(*s),
            BlockError::Io(_) => libc::EIO,
        }
    }
}

/// The errno a block device reports for an NVMe status.
fn status_errno(s: NvmeStatus) -> i32 {
    match (s.sct, s.sc) {
        (0, 0x01) => libc::EOPNOTSUPP,         // Invalid Command Opcode
        (0, 0x02) | (0, 0x80) => libc::EINVAL, // Invalid Field in Command, LBA Out of Range
        (0, 0x0B) => libc::ENXIO,              // Invalid Namespace: the namespace is gone
        (0, 0x81) => libc::ENOSPC,             // Capacity Exceeded
        (1, 0x20) => libc::EPERM,              // Namespace is Write Protected
        _ => libc::EIO,
    }
}

/// What a completion carries: the data of a read, an empty vector otherwise.
pub type BlockResult = Result<Vec<u8>, BlockError>;

/// The completion callback of one request. If it is dropped without being called (the engine
/// went away with the request), it is called with [`BlockError::Shutdown`], so every request
/// gets exactly one answer.
///
/// It runs on an engine worker thread: it must be quick, and must not own the last reference
/// to the [`BlockEngine`] (dropping the engine joins its workers).
pub struct Done(Option<Box<dyn FnOnce(BlockResult) + Send>>);

impl Done {
    /// Wraps a callback.
    pub fn new(f: impl FnOnce(BlockResult) + Send + 'static) -> Self {
        Done(Some(Box::new(f)))
    }

    /// Calls the callback with `r`.
    pub fn complete(mut self, r: BlockResult) {
        if let Some(f) = self.0.take() {
            f(r);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(BlockError::Shutdown));
        }
    }
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Done")
    }
}

/// Tuning of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Longest wait on the socket while commands are in flight before new requests are
    /// looked at.
    pub poll_slice: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            poll_slice: Duration::from_millis(1),
        }
    }
}

enum Msg {
    /// A request for namespace `.0` (an index into the engine's namespaces).
    Op(usize, BlockOp, Done),
    /// Finish what is queued and in flight, then exit.
    Stop,
}

/// Block requests over the I/O queues of one controller, for one or more of its namespaces.
pub struct BlockEngine {
    namespaces: Vec<Geometry>,
    queues: Vec<Sender<Msg>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    ctrl: Mutex<Option<Controller>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for BlockEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockEngine")
            .field("namespaces", &self.namespaces)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl BlockEngine {
    /// Takes the controller's I/O queues and starts one worker per queue for namespaces
    /// `nsids` (at least one). The engine keeps the controller (Keep Alive, reconnects) until
    /// [`BlockEngine::shutdown`].
    pub fn new(mut ctrl: Controller, nsids: &[u32], cfg: EngineConfig) -> Result<Self, HostError> {
        if nsids.is_empty() {
            return Err(HostError::Invalid("no namespace to serve".into()));
        }
        let namespaces = nsids
            .iter()
            .map(|&n| Geometry::query(&ctrl, n))
            .collect::<Result<Vec<_>, _>>()?;
        let queues = ctrl.take_io_queues();
        if queues.is_empty() {
            return Err(HostError::Invalid(
                "the controller granted no I/O queue".into(),
            ));
        }
        let mut senders = Vec::with_capacity(queues.len());
        let mut workers = Vec::with_capacity(queues.len());
        for q in queues {
            let (tx, rx) = mpsc::channel();
            let qid = q.qid();
            let w = Worker::new(q, rx, namespaces.clone(), cfg);
            let h = std::thread::Builder::new()
                .name(format!("nvme-blk-q{qid}"))
                .spawn(move || w.run())?;
            senders.push(tx);
            workers.push(h);
        }
        Ok(Self {
            namespaces,
            queues: senders,
            workers: Mutex::new(workers),
            ctrl: Mutex::new(Some(ctrl)),
            closed: AtomicBool::new(false),
        })
    }

    /// The namespaces served, in the order given to [`BlockEngine::new`].
    pub fn namespaces(&self) -> &[Geometry] {
        &self.namespaces
    }

    /// The geometry of namespace index `ns`.
    pub fn geometry(&self, ns: usize) -> Option<&Geometry> {
        self.namespaces.get(ns)
    }

    /// Number of I/O queues (workers).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Checks `op` against namespace index `ns`: alignment, range, support. Submitting does
    /// this too.
    pub fn check(&self, ns: usize, op: &BlockOp) -> Result<(), BlockError> {
        let Some(g) = self.namespaces.get(ns) else {
            return Err(BlockError::Invalid(format!("no namespace index {ns}")));
        };
        match op {
            BlockOp::Write { .. } | BlockOp::WriteZeroes { .. } | BlockOp::Discard { .. }
                if g.write_protected =>
            {
                return Err(BlockError::WriteProtected);
            }
            BlockOp::WriteZeroes { .. } if !g.write_zeroes => {
                return Err(BlockError::Unsupported("Write Zeroes"));
            }
            BlockOp::Discard { .. } if !g.deallocate => {
                return Err(BlockError::Unsupported("Dataset Management (Deallocate)"));
            }
            _ => {}
        }
        if let Some((offset, len)) = op.range() {
            let bs = u64::from(g.lba_size);
            if len == 0 || offset % bs != 0 || len % bs != 0 {
                return Err(BlockError::Unaligned {
                    offset,
                    len,
                    lba_size: g.lba_size,
                });
            }
            if offset
                .checked_add(len)
                .is_none_or(|end| end > g.size_bytes())
            {
                return Err(BlockError::OutOfRange {
                    offset,
                    len,
                    size: g.size_bytes(),
                });
            }
        }
        Ok(())
    }

    /// Submits `op` for namespace index `ns` on queue `queue` (taken modulo the queue
    /// count); `done` is called exactly once, on the worker's thread (or on this one if the
    /// request is refused at once).
    pub fn submit(&self, ns: usize, queue: usize, op: BlockOp, done: Done) {
        if let Err(e) = self.check(ns, &op) {
            done.complete(Err(e));
            return;
        }
        if self.closed.load(Ordering::Acquire) {
            done.complete(Err(BlockError::Shutdown));
            return;
        }
        let tx = &self.queues[queue % self.queues.len()];
        if let Err(mpsc::SendError(Msg::Op(_, _, done))) = tx.send(Msg::Op(ns, op, done)) {
            done.complete(Err(BlockError::Shutdown));
        }
    }

    /// Stops taking requests, lets the workers finish what is in flight, and shuts the
    /// controller down (CC.SHN). Requests submitted afterwards fail with
    /// [`BlockError::Shutdown`]. Idempotent.
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The senders live as long as `self`, so the workers are told to stop explicitly.
        for tx in &self.queues {
            let _ = tx.send(Msg::Stop);
        }
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for h in workers {
            let _ = h.join();
        }
        if let Some(c) = self
            .ctrl
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            c.shutdown();
        }
    }
}

impl Drop for BlockEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A request being executed.
struct OpState {
    done: Option<Done>,
    /// Commands not yet completed.
    remaining: u32,
    error: Option<BlockError>,
    /// The assembled data of a read split into several commands.
    read: Option<Vec<u8>>,
    /// The data of a single-command read.
    single: Option<Vec<u8>>,
}

struct Worker {
    q: IoQueue,
    rx: Receiver<Msg>,
    namespaces: Vec<Geometry>,
    cfg: EngineConfig,
    ops: Vec<Option<OpState>>,
    free: Vec<u32>,
    pending: VecDeque<Request>,
}

/// `user_data` of a command: the request's slot in the high half, the byte offset of the
/// command's data inside the request in the low half.
fn user_data(slot: u32, part_offset: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(part_offset)
}

fn sqe_bytes(sqe: &Sqe) -> [u8; SQE_LEN] {
    let mut b = [0u8; SQE_LEN];
    b.copy_from_slice(sqe.as_bytes());
    b
}

impl Worker {
    fn new(q: IoQueue, rx: Receiver<Msg>, namespaces: Vec<Geometry>, cfg: EngineConfig) -> Self {
        Self {
            q,
            rx,
            namespaces,
            cfg,
            ops: Vec::new(),
            free: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    fn idle(&self) -> bool {
        self.pending.is_empty() && self.q.in_flight() == 0
    }

    fn run(mut self) {
        let mut open = true;
        loop {
            if open && self.idle() {
                match self.rx.recv() {
                    Ok(m) => open = self.take(m),
                    Err(_) => open = false,
                }
            }
            while open {
                match self.rx.try_recv() {
                    Ok(m) => open = self.take(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if !open && self.idle() {
                break;
            }
            self.submit_pending();
            if self.q.in_flight() > 0 {
                let slice = if self.q.is_connected() {
                    self.cfg.poll_slice
                } else {
                    self.cfg.poll_slice.max(Duration::from_millis(50))
                };
                if let Err(e) = self.q.poll(slice) {
                    tracing::error!(qid = self.q.qid(), error = %e, "I/O queue lost for good");
                }
            }
            while let Some(c) = self.q.pop_completion() {
                self.completed(c);
            }
        }
        // Whatever was sent after the stop message is answered by `Done`'s drop.
        let qid = self.q.qid();
        self.q.close();
        tracing::debug!(qid, "block worker stopped");
    }

    /// Accepts one message; false if it is the stop message.
    fn take(&mut self, m: Msg) -> bool {
        match m {
            Msg::Op(ns, op, done) => {
                match self.namespaces.get(ns) {
                    Some(g) => {
                        let g = *g;
                        self.start(&g, op, done);
                    }
                    None => {
                        done.complete(Err(BlockError::Invalid(format!("no namespace index {ns}"))))
                    }
                }
                true
            }
            Msg::Stop => false,
        }
    }

    fn alloc_slot(&mut self, st: OpState) -> u32 {
        if let Some(i) = self.free.pop() {
            self.ops[i as usize] = Some(st);
            i
        } else {
            self.ops.push(Some(st));
            (self.ops.len() - 1) as u32
        }
    }

    /// Splits `op` into commands and queues them.
    fn start(&mut self, geo: &Geometry, op: BlockOp, done: Done) {
        let nsid = geo.nsid;
        let bs = u64::from(geo.lba_size);
        let max = u64::from(geo.max_transfer);
        let slot = self.alloc_slot(OpState {
            done: Some(done),
            remaining: 0,
            error: None,
            read: None,
            single: None,
        });
        let before = self.pending.len();
        match op {
            BlockOp::Read { offset, len } => {
                let len = u64::from(len);
                if len > max
                    && let Some(Some(st)) = self.ops.get_mut(slot as usize)
                {
                    st.read = Some(vec![0; len as usize]);
                }
                let mut o = 0u64;
                while o < len {
                    let n = (len - o).min(max);
                    let buf = IoBuf::Contig(vec![0; n as usize]);
                    let ud = user_data(slot, o as u32);
                    let nlb = (n / bs) as u32;
                    self.pending
                        .push_back(cmd::read(nsid, (offset + o) / bs, nlb, buf, ud));
                    o += n;
                }
            }
            BlockOp::Write { offset, data, fua } => {
                let len = data.len() as u64;
                if len <= max {
                    let nlb = (len / bs) as u32;
                    let ud = user_data(slot, 0);
                    self.pending
                        .push_back(write_req(nsid, offset / bs, nlb, data, fua, ud));
                } else {
                    for (i, chunk) in data.chunks(max as usize).enumerate() {
                        let o = i as u64 * max;
                        let nlb = (chunk.len() as u64 / bs) as u32;
                        let ud = user_data(slot, o as u32);
                        let r = write_req(nsid, (offset + o) / bs, nlb, chunk.to_vec(), fua, ud);
                        self.pending.push_back(r);
                    }
                }
            }
            BlockOp::Flush => self.pending.push_back(cmd::flush(nsid, user_data(slot, 0))),
            BlockOp::WriteZeroes { offset, len, fua } => {
                let max_blocks = geo.max_write_zeroes_blocks();
                let mut lba = offset / bs;
                let end = (offset + len) / bs;
                while lba < end {
                    let n = (end - lba).min(max_blocks);
                    let ud = user_data(slot, 0);
                    self.pending
                        .push_back(write_zeroes_req(nsid, lba, n as u32, fua, ud));
                    lba += n;
                }
            }
            BlockOp::Discard { offset, len } => {
                // One command carries up to 256 ranges of up to 2^32-1 blocks each.
                let mut ranges: Vec<(u64, u32)> = Vec::new();
                let mut lba = offset / bs;
                let end = (offset + len) / bs;
                while lba < end {
                    let n = (end - lba).min(u64::from(u32::MAX));
                    ranges.push((lba, n as u32));
                    lba += n;
                }
                for group in ranges.chunks(256) {
                    match cmd::deallocate(nsid, group, user_data(slot, 0)) {
                        Ok(r) => self.pending.push_back(r),
                        Err(e) => {
                            tracing::error!(error = %e, "Dataset Management not built");
                        }
                    }
                }
            }
        }
        let n = (self.pending.len() - before) as u32;
        if n == 0 {
            // Nothing to send (cannot happen for a checked request): answer at once.
            if let Some(st) = self.ops[slot as usize].take() {
                self.free.push(slot);
                if let Some(d) = st.done {
                    d.complete(Ok(Vec::new()));
                }
            }
            return;
        }
        if let Some(Some(st)) = self.ops.get_mut(slot as usize) {
            st.remaining = n;
        }
    }

    fn submit_pending(&mut self) {
        while self.q.in_flight() < self.q.depth() {
            let Some(req) = self.pending.pop_front() else {
                return;
            };
            let ud = req.user_data;
            if let Err(e) = self.q.submit(req) {
                // Below depth() the queue is never full: what is left is a dead queue or a
                // command the queue cannot carry.
                let err = match e.reason {
                    SubmitErrorKind::Dead => IoError::QueueLost("controller lost"),
                    other => IoError::Invalid(other.to_string()),
                };
                self.part_done(ud, Err(BlockError::Io(err)), None);
            }
        }
    }

    fn completed(&mut self, c: Completion) {
        match c.result {
            Ok(_) => {
                let data = c.buf.and_then(IoBuf::into_vec);
                self.part_done(c.user_data, Ok(()), data);
            }
            Err(e) => self.part_done(c.user_data, Err(BlockError::Io(e)), None),
        }
    }

    /// Records the outcome of one command of a request; answers the request when it was the
    /// last.
    fn part_done(&mut self, ud: u64, r: Result<(), BlockError>, data: Option<Vec<u8>>) {
        let slot = (ud >> 32) as usize;
        let part_offset = (ud & 0xFFFF_FFFF) as usize;
        let Some(Some(st)) = self.ops.get_mut(slot) else {
            tracing::error!(ud, "completion for an unknown request");
            return;
        };
        match r {
            Err(e) => {
                st.error.get_or_insert(e);
            }
            Ok(()) => {
                if let Some(d) = data {
                    match st.read.as_mut() {
                        Some(all) => {
                            if let Some(dst) = all.get_mut(part_offset..part_offset + d.len()) {
                                dst.copy_from_slice(&d);
                            }
                        }
                        None => st.single = Some(d),
                    }
                }
            }
        }
        st.remaining = st.remaining.saturating_sub(1);
        if st.remaining > 0 {
            return;
        }
        let Some(st) = self.ops[slot].take() else {
            return;
        };
        self.free.push(slot as u32);
        let result = match st.error {
            Some(e) => Err(e),
            None => Ok(st.read.or(st.single).unwrap_or_default()),
        };
        if let Some(done) = st.done {
            done.complete(result);
        }
    }
}

fn write_req(nsid: u32, slba: u64, nlb: u32, data: Vec<u8>, fua: bool, ud: u64) -> Request {
    if !fua {
        return cmd::write(nsid, slba, nlb, IoBuf::Contig(data), ud);
    }
    let sqe = IoCommand::Write(ReadWriteCommand {
        nsid,
        slba,
        nlb: nlb.saturating_sub(1) as u16,
        fua: true,
        lr: false,
    })
    .to_sqe();
    Request {
        sqe: sqe_bytes(&sqe),
        dir: DataDir::ToController,
        buf: Some(IoBuf::Contig(data)),
        user_data: ud,
    }
}

fn write_zeroes_req(nsid: u32, slba: u64, nlb: u32, fua: bool, ud: u64) -> Request {
    if !fua {
        return cmd::write_zeroes(nsid, slba, nlb, ud);
    }
    let sqe = IoCommand::WriteZeroes(WriteZeroesCommand {
        nsid,
        slba,
        nlb: nlb.saturating_sub(1) as u16,
        deac: false,
        fua: true,
        lr: false,
    })
    .to_sqe();
    Request {
        sqe: sqe_bytes(&sqe),
        dir: DataDir::None,
        buf: None,
        user_data: ud,
    }
}
