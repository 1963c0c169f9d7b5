//! The NBD server's socket driver (TCP or Unix domain): an accept thread, and per client
//! connection a reader thread (negotiation, then requests to the engine) and a writer thread
//! (replies, in completion order, a batch per vectored write). In-flight requests per
//! connection are bounded in number and bytes; the reader stops reading while the bound is
//! reached, so a client cannot make the server buffer without limit.

use std::collections::HashMap;
use std::io::{BufReader, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::handshake::{ExportInfo, Handshake, Outcome};
use super::proto::{
    self, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, Command, REQUEST_HEADER_LEN, RequestHeader, errno, tflag,
};
use super::socket::{NbdAddr, NbdListener, NbdStream};
use crate::engine::{BlockError, BlockOp, BlockResult, Disk, Done};

/// Largest request payload accepted (the protocol's recommended maximum, 32 MiB).
pub const DEFAULT_MAX_PAYLOAD: u32 = 32 << 20;

/// One exported namespace.
#[derive(Debug, Clone)]
pub struct Export {
    /// The export's name (what a client asks for; `""` selects the first export).
    pub name: String,
    /// Description sent with `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// The namespace behind it.
    pub disk: Disk,
    /// Refuse writes (`NBD_FLAG_READ_ONLY`).
    pub read_only: bool,
}

impl Export {
    /// What the negotiation tells clients about this export.
    pub fn info(&self, max_payload: u32) -> ExportInfo {
        let g = self.disk.geometry();
        let mut flags = tflag::HAS_FLAGS | tflag::SEND_FLUSH | tflag::CAN_MULTI_CONN;
        if self.read_only || g.write_protected {
            flags |= tflag::READ_ONLY;
        } else {
            flags |= tflag::SEND_FUA;
            if g.deallocate {
                flags |= tflag::SEND_TRIM;
            }
            if g.write_zeroes {
                flags |= tflag::SEND_WRITE_ZEROES;
            }
        }
        ExportInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            size: g.size_bytes(),
            flags,
            min_block: g.lba_size,
            preferred_block: g.physical_block_size.max(g.lba_size),
            max_block: max_payload,
        }
    }
}

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Largest READ or WRITE payload; a larger WRITE ends the connection (its payload cannot
    /// be skipped safely), a larger READ is refused with `EINVAL`.
    pub max_payload: u32,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Payload bytes in flight per connection.
    pub max_in_flight_bytes: usize,
    /// The negotiation must finish within this time.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_in_flight: 256,
            max_in_flight_bytes: 128 << 20,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("negotiation: {0}")]
    Handshake(#[from] super::HandshakeError),
    #[error("client closed the connection during the negotiation")]
    ClosedInHandshake,
    #[error("{0}")]
    Protocol(String),
}

/// A client connection: a handle on its socket (to close it) and its thread.
type ConnEntry = (NbdStream, Option<JoinHandle<()>>);

struct Shared {
    exports: Vec<Export>,
    cfg: ServerConfig,
    stopping: AtomicBool,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    next_id: AtomicU64,
}

/// A running NBD server.
pub struct NbdServer {
    shared: Arc<Shared>,
    listener: NbdListener,
    addr: NbdAddr,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("addr", &self.addr)
            .field("exports", &self.shared.exports.len())
            .finish()
    }
}

impl NbdServer {
    /// Serves `exports` on `listener` (a [`std::net::TcpListener`] or a
    /// [`std::os::unix::net::UnixListener`]) until [`NbdServer::shutdown`].
    pub fn start(
        listener: impl Into<NbdListener>,
        exports: Vec<Export>,
        cfg: ServerConfig,
    ) -> std::io::Result<Self> {
        let listener = listener.into();
        if exports.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no export",
            ));
        }
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            exports,
            cfg,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let l = listener.try_clone()?;
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(l, s))?;
        Ok(Self {
            shared,
            listener,
            addr,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> NbdAddr {
        self.addr.clone()
    }

    /// Number of client connections being served.
    pub fn connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stops accepting, closes every client connection (requests in flight complete first)
    /// and waits for the connection threads. The engines are not shut down.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on a listening socket we own only wakes the blocked accept.
        unsafe {
            libc::shutdown(self.listener.raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let conns: Vec<_> = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, (s, h)) in conns {
            let _ = s.shutdown(Shutdown::Both);
            if let Some(h) = h {
                let _ = h.join();
            }
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop();
        }
    }
}

fn accept_loop(listener: NbdListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                if shared.stopping.load(Ordering::Acquire) {
                    return;
                }
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(track) = stream.try_clone() else {
            continue;
        };
        let s = shared.clone();
        let mut conns = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.insert(id, (track, None));
        let h = std::thread::Builder::new()
            .name(format!("nbd-conn{id}"))
            .spawn(move || {
                tracing::info!(%peer, id, "NBD client connected");
                match serve(stream, &s, id) {
                    Ok(()) => tracing::info!(%peer, id, "NBD client disconnected"),
                    Err(e) => tracing::warn!(%peer, id, error = %e, "NBD connection ended"),
                }
                let mut conns = s.conns.lock().unwrap_or_else(PoisonError::into_inner);
                conns.remove(&id);
            });
        match h {
            Ok(h) => {
                if let Some(e) = conns.get_mut(&id) {
                    e.1 = Some(h);
                }
            }
            Err(e) => {
                conns.remove(&id);
                tracing::error!(error = %e, "cannot start a connection thread");
            }
        }
    }
}

fn serve(mut stream: NbdStream, shared: &Shared, id: u64) -> Result<(), ConnError> {
    stream.set_timeouts(Some(shared.cfg.handshake_timeout))?;
    let infos = shared
        .exports
        .iter()
        .map(|e| e.info(shared.cfg.max_payload))
        .collect();
    let mut hs = Handshake::new(infos);
    let mut buf = vec![0u8; 64 << 10];
    let outcome = loop {
        if !hs.tx_pending().is_empty() {
            stream.write_all(hs.tx_pending())?;
            let n = hs.tx_pending().len();
            hs.tx_consumed(n);
        }
        if let Some(o) = hs.outcome() {
            break o;
        }
        let want = hs.wants().min(buf.len());
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(ConnError::ClosedInHandshake);
        }
        hs.feed(&buf[..n])?;
    };
    let Outcome::Transmission {
        export,
        structured_replies,
    } = outcome
    else {
        return Ok(());
    };
    let Some(export) = shared.exports.get(export) else {
        return Err(ConnError::Protocol("negotiated an unknown export".into()));
    };
    tracing::info!(id, export = %export.name, structured_replies, "NBD transmission");
    stream.set_timeouts(None)?;
    transmission(stream, export, &shared.cfg, structured_replies, id)
}

/// A reply on its way to the writer.
struct Reply {
    cookie: u64,
    read_offset: Option<u64>,
    bytes: usize,
    result: BlockResult,
}

/// Bounds the requests in flight on one connection.
struct Budget {
    state: Mutex<(usize, usize)>,
    cv: Condvar,
    max_count: usize,
    max_bytes: usize,
}

impl Budget {
    fn acquire(&self, bytes: usize) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // A request larger than the byte budget goes alone.
        while s.0 > 0 && (s.0 >= self.max_count || s.1 + bytes > self.max_bytes) {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.0 += 1;
        s.1 += bytes;
    }

    fn release(&self, bytes: usize) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 = s.0.saturating_sub(1);
        s.1 = s.1.saturating_sub(bytes);
        self.cv.notify_all();
    }
}

fn transmission(
    stream: NbdStream,
    export: &Export,
    cfg: &ServerConfig,
    structured: bool,
    id: u64,
) -> Result<(), ConnError> {
    let budget = Arc::new(Budget {
        state: Mutex::new((0, 0)),
        cv: Condvar::new(),
        max_count: cfg.max_in_flight.max(1),
        max_bytes: cfg.max_in_flight_bytes.max(1),
    });
    let (tx, rx) = mpsc::channel::<Reply>();
    let wstream = stream.try_clone()?;
    let wbudget = budget.clone();
    let writer = std::thread::Builder::new()
        .name(format!("nbd-reply{id}"))
        .spawn(move || write_replies(wstream, rx, wbudget, structured))?;
    let next_queue = AtomicUsize::new(id as usize);
    // Requests are read through a buffer: one receive takes many headers (large write
    // payloads bypass it).
    let mut reader = BufReader::with_capacity(64 << 10, stream.try_clone()?);
    let r = read_requests(&mut reader, export, cfg, &tx, &budget, &next_queue);
    // Requests in flight still answer through their clones of `tx`.
    drop(tx);
    let _ = writer.join();
    let _ = stream.shutdown(Shutdown::Both);
    r
}

fn read_requests(
    stream: &mut impl Read,
    export: &Export,
    cfg: &ServerConfig,
    tx: &Sender<Reply>,
    budget: &Arc<Budget>,
    next_queue: &AtomicUsize,
) -> Result<(), ConnError> {
    let disk = &export.disk;
    let read_only = export.read_only || disk.geometry().write_protected;
    let mut hdr = [0u8; REQUEST_HEADER_LEN];
    loop {
        match stream.read_exact(&mut hdr) {
            Ok(()) => {}
            // Between requests, a close is how many clients (libnbd's `nbd_close`, fio's
            // nbd engine) end; what was in flight is still answered (into a closed socket).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!("client closed the connection without NBD_CMD_DISC");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let h = RequestHeader::parse(&hdr).map_err(|e| ConnError::Protocol(e.to_string()))?;
        let cmd = Command::from_code(h.kind);
        let bytes = if matches!(cmd, Some(Command::Read | Command::Write)) {
            h.length.min(cfg.max_payload) as usize
        } else {
            0
        };
        if cmd == Some(Command::Write) && h.length > cfg.max_payload {
            return Err(ConnError::Protocol(format!(
                "NBD_CMD_WRITE of {} bytes exceeds the {}-byte maximum",
                h.length, cfg.max_payload
            )));
        }
        budget.acquire(bytes);
        let mut payload = None;
        if cmd == Some(Command::Write) {
            let mut data = vec![0u8; bytes];
            if let Err(e) = stream.read_exact(&mut data) {
                budget.release(bytes);
                return Err(e.into());
            }
            payload = Some(data);
        }
        let reply = |result: BlockResult, read_offset| Reply {
            cookie: h.cookie,
            read_offset,
            bytes,
            result,
        };
        let refuse = |why: BlockError| {
            let _ = tx.send(reply(Err(why), None));
        };
        let allowed_flags = match cmd {
            Some(Command::Write) => CMD_FLAG_FUA,
            Some(Command::WriteZeroes) => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
            Some(Command::Trim) => CMD_FLAG_FUA,
            _ => 0,
        };
        let op = match cmd {
            Some(Command::Disc) => {
                budget.release(0);
                return Ok(());
            }
            _ if h.flags & !allowed_flags != 0 => {
                refuse(BlockError::Invalid(format!(
                    "flags {:#x} not allowed",
                    h.flags
                )));
                continue;
            }
            Some(Command::Read) if h.length > cfg.max_payload => {
                refuse(BlockError::Invalid(format!(
                    "NBD_CMD_READ of {} bytes exceeds the {}-byte maximum",
                    h.length, cfg.max_payload
                )));
                continue;
            }
            Some(Command::Write | Command::Trim | Command::WriteZeroes) if read_only => {
                refuse(BlockError::WriteProtected);
                continue;
            }
            Some(Command::Read) => BlockOp::Read {
                offset: h.offset,
                len: h.length,
            },
            Some(Command::Write) => BlockOp::Write {
                offset: h.offset,
                data: payload.take().unwrap_or_default(),
                fua: h.flags & CMD_FLAG_FUA != 0,
            },
            Some(Command::Flush) => BlockOp::Flush,
            Some(Command::Trim) => BlockOp::Discard {
                offset: h.offset,
                len: u64::from(h.length),
            },
            Some(Command::WriteZeroes) => BlockOp::WriteZeroes {
                offset: h.offset,
                len: u64::from(h.length),
                fua: h.flags & CMD_FLAG_FUA != 0,
            },
            Some(c @ (Command::Cache | Command::BlockStatus | Command::Resize)) => {
                refuse(BlockError::Invalid(format!("{c:?} was not negotiated")));
                continue;
            }
            None => {
                refuse(BlockError::Invalid(format!(
                    "unknown command type {}",
                    h.kind
                )));
                continue;
            }
        };
        let read_offset = matches!(op, BlockOp::Read { .. }).then_some(h.offset);
        let txc = tx.clone();
        let cookie = h.cookie;
        let done = Done::new(move |result| {
            let _ = txc.send(Reply {
                cookie,
                read_offset,
                bytes,
                result,
            });
        });
        let q = next_queue.fetch_add(1, Ordering::Relaxed);
        disk.submit(q, op, done);
    }
}

/// Most replies the writer sends in one `writev` (two slices each, under `IOV_MAX`).
const REPLY_BATCH: usize = 256;

fn write_replies(stream: NbdStream, rx: Receiver<Reply>, budget: Arc<Budget>, structured: bool) {
    let mut w = ReplyWriter::new(stream, structured);
    let mut batch = Vec::with_capacity(REPLY_BATCH);
    let mut broken = false;
    while let Ok(r) = rx.recv() {
        batch.push(r);
        while batch.len() < REPLY_BATCH
            && let Ok(r) = rx.try_recv()
        {
            batch.push(r);
        }
        if !broken && let Err(e) = w.send(&batch) {
            tracing::warn!(error = %e, "cannot send NBD replies; dropping the rest");
            broken = true;
        }
        for r in batch.drain(..) {
            budget.release(r.bytes);
        }
    }
}

/// Encodes replies and sends a batch of them with one vectored write: the headers are
/// encoded into one buffer, read data goes out from the completion's own buffer (no copy).
struct ReplyWriter<W> {
    out: W,
    structured: bool,
    heads: Vec<u8>,
    /// `heads` range of each reply of the batch being sent.
    spans: Vec<(usize, usize)>,
}

impl<W: Write> ReplyWriter<W> {
    fn new(out: W, structured: bool) -> Self {
        Self {
            out,
            structured,
            heads: Vec::with_capacity(64 * REPLY_BATCH),
            spans: Vec::with_capacity(REPLY_BATCH),
        }
    }

    /// Sends every reply of `batch`, in order.
    fn send(&mut self, batch: &[Reply]) -> std::io::Result<()> {
        self.heads.clear();
        self.spans.clear();
        for r in batch {
            let start = self.heads.len();
            encode_reply_head(&mut self.heads, r, self.structured);
            self.spans.push((start, self.heads.len()));
        }
        let mut iov = Vec::with_capacity(2 * batch.len());
        for (r, &(a, b)) in batch.iter().zip(&self.spans) {
            iov.push(IoSlice::new(&self.heads[a..b]));
            if let Some(data) = reply_data(r).filter(|d| !d.is_empty()) {
                iov.push(IoSlice::new(data));
            }
        }
        write_all_vectored(&mut self.out, &mut iov)
    }
}

/// Writes every byte of `bufs`, retrying short and interrupted writes.
fn write_all_vectored(out: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The data that follows a reply's header: a successful read's.
fn reply_data(r: &Reply) -> Option<&[u8]> {
    match (&r.result, r.read_offset) {
        (Ok(data), Some(_)) => Some(data),
        _ => None,
    }
}

/// Appends the bytes of a reply that precede its data (all of it for a reply without data).
fn encode_reply_head(head: &mut Vec<u8>, r: &Reply, structured: bool) {
    match (&r.result, r.read_offset) {
        (Ok(data), Some(offset)) => {
            if structured {
                proto::structured_read_header(head, r.cookie, offset, data.len() as u32);
            } else {
                proto::simple_reply(head, 0, r.cookie);
            }
        }
        (Ok(_), None) => proto::simple_reply(head, 0, r.cookie),
        (Err(e), read_offset) => {
            let code = errno::from_errno(e.errno());
            if structured && read_offset.is_some() {
                proto::structured_error(head, r.cookie, code, &e.to_string());
            } else {
                proto::simple_reply(head, code, r.cookie);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A socket that takes at most the next of `limits` bytes per call (a short write each
    /// time), sometimes after an `Interrupted`.
    struct ShortWrites {
        out: Vec<u8>,
        limits: Vec<usize>,
        calls: usize,
    }

    impl Write for ShortWrites {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            self.calls += 1;
            let limit = self.limits[self.calls % self.limits.len()];
            if limit == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(limit - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == limit {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn reply(kind: u8, cookie: u64, len: usize) -> Reply {
        let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (cookie as u8)).collect();
        match kind % 4 {
            // A read and its data.
            0 => Reply {
                cookie,
                read_offset: Some(cookie * 512),
                bytes: len,
                result: Ok(data),
            },
            // A write, flush or trim: no data.
            1 => Reply {
                cookie,
                read_offset: None,
                bytes: 0,
                result: Ok(Vec::new()),
            },
            // A failed read: an error chunk, no data.
            2 => Reply {
                cookie,
                read_offset: Some(0),
                bytes: len,
                result: Err(BlockError::Invalid("x".repeat(len % 64))),
            },
            _ => Reply {
                cookie,
                read_offset: None,
                bytes: 0,
                result: Err(BlockError::WriteProtected),
            },
        }
    }

    proptest! {
        /// Whatever the socket takes per call, a batch goes out as each reply's header
        /// followed by its data, in order, nothing lost or repeated.
        #[test]
        fn a_batch_goes_out_whole_and_in_order_through_short_writes(
            replies in prop::collection::vec((any::<u8>(), 0usize..70_000), 1..20),
            limits in prop::collection::vec(0usize..100_000, 1..8),
            structured in any::<bool>(),
        ) {
            prop_assume!(limits.iter().any(|&l| l > 0));
            let batch: Vec<Reply> = replies
                .iter()
                .enumerate()
                .map(|(i, &(k, len))| reply(k, i as u64 + 1, len))
                .collect();
            let mut expected = Vec::new();
            for r in &batch {
                encode_reply_head(&mut expected, r, structured);
                if let Some(d) = reply_data(r) {
                    expected.extend_from_slice(d);
                }
            }
            let sink = ShortWrites { out: Vec::new(), limits, calls: 0 };
            let mut w = ReplyWriter::new(sink, structured);
            w.send(&batch).unwrap();
            prop_assert_eq!(w.out.out.len(), expected.len());
            prop_assert!(w.out.out == expected);
        }
    }

    #[test]
    fn a_read_reply_is_its_header_then_its_data() {
        let r = reply(0, 5, 4096);
        let mut w = ReplyWriter::new(Vec::new(), false);
        w.send(std::slice::from_ref(&r)).unwrap();
        let mut head = Vec::new();
        proto::simple_reply(&mut head, 0, 5);
        assert_eq!(&w.out[..16], &head[..]);
        assert_eq!(&w.out[16..], &r.result.as_ref().unwrap()[..]);
        // Structured: a 20-byte chunk header and the offset, then the data.
        let mut w = ReplyWriter::new(Vec::new(), true);
        w.send(std::slice::from_ref(&r)).unwrap();
        assert_eq!(w.out.len(), 28 + 4096);
        assert_eq!(&w.out[20..28], &(5u64 * 512).to_be_bytes());
        assert_eq!(&w.out[28..], &r.result.as_ref().unwrap()[..]);
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error_not_a_spin() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = ReplyWriter::new(Full, false);
        let e = w.send(&[reply(0, 1, 10)]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WriteZero);
    }
}
