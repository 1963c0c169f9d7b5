//! The NBD server's TCP driver: an accept thread, and per client connection a reader thread
//! (negotiation, then requests to the engine) and a writer thread (replies, in completion
//! order). In-flight requests per connection are bounded in number and bytes; the reader
//! stops reading while the bound is reached, so a client cannot make the server buffer
//! without limit.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::handshake::{ExportInfo, Handshake, Outcome};
use super::proto::{
    self, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, Command, REQUEST_HEADER_LEN, RequestHeader, errno, tflag,
};
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
type ConnEntry = (TcpStream, Option<JoinHandle<()>>);

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
    listener: TcpListener,
    addr: SocketAddr,
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
    /// Serves `exports` on `listener` until [`NbdServer::shutdown`].
    pub fn start(
        listener: TcpListener,
        exports: Vec<Export>,
        cfg: ServerConfig,
    ) -> std::io::Result<Self> {
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
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
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

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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

fn serve(mut stream: TcpStream, shared: &Shared, id: u64) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(shared.cfg.handshake_timeout))?;
    stream.set_write_timeout(Some(shared.cfg.handshake_timeout))?;
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
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
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
    stream: TcpStream,
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
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ConnError::Protocol(
                    "client closed the connection without NBD_CMD_DISC".into(),
                ));
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

fn write_replies(stream: TcpStream, rx: Receiver<Reply>, budget: Arc<Budget>, structured: bool) {
    let mut w = BufWriter::with_capacity(256 << 10, stream);
    let mut broken = false;
    let mut head = Vec::with_capacity(64);
    while let Ok(r) = rx.recv() {
        let mut next = Some(r);
        while let Some(r) = next.take() {
            if !broken && let Err(e) = write_reply(&mut w, &mut head, &r, structured) {
                tracing::warn!(error = %e, "cannot send NBD replies; dropping the rest");
                broken = true;
            }
            budget.release(r.bytes);
            next = rx.try_recv().ok();
        }
        if !broken && let Err(e) = w.flush() {
            tracing::warn!(error = %e, "cannot send NBD replies; dropping the rest");
            broken = true;
        }
    }
}

fn write_reply(
    w: &mut impl Write,
    head: &mut Vec<u8>,
    r: &Reply,
    structured: bool,
) -> std::io::Result<()> {
    head.clear();
    match (&r.result, r.read_offset) {
        (Ok(data), Some(offset)) => {
            if structured {
                proto::structured_read_header(head, r.cookie, offset, data.len() as u32);
            } else {
                proto::simple_reply(head, 0, r.cookie);
            }
            w.write_all(head)?;
            w.write_all(data)
        }
        (Ok(_), None) => {
            proto::simple_reply(head, 0, r.cookie);
            w.write_all(head)
        }
        (Err(e), read_offset) => {
            let code = errno::from_errno(e.errno());
            if structured && read_offset.is_some() {
                proto::structured_error(head, r.cookie, code, &e.to_string());
            } else {
                proto::simple_reply(head, code, r.cookie);
            }
            w.write_all(head)
        }
    }
}
