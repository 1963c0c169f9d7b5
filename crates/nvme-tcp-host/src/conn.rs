//! The socket driver of a queue: a non-blocking kernel TCP socket around a [`QueueCore`].
//!
//! Receive: while the core is inside C2HData payload, one `readv` reads straight into the
//! caller's buffer at DATAO and, in the same call, the next few bytes (the following PDU
//! headers) into a small receive pipe. Otherwise the pipe takes what the socket has; PDU
//! headers are parsed from it and the payload bytes that came with them are placed from it.
//! After a large data PDU the pipe read is kept short, so the bulk of the next payload again
//! goes directly into its buffer.
//!
//! Behind an offload device on the network path ([`crate::marks`]), an offloaded queue
//! reads differently: PDU headers and unplaced data go into the pipe; payload the device
//! already placed is discarded from the socket without a copy (`recv` with `MSG_TRUNC`); the
//! bytes are fed to the core with the marks the device published for them. While inside
//! placed payload the socket's `SO_RCVLOWAT` is the payload left, so the host wakes once per
//! PDU rather than once per segment.
//!
//! Transmit: all PDUs queued since the last flush go out in one gather `write` (batching many
//! capsules per system call); H2CData answering R2Ts that arrived in a read goes out before
//! the next read. TCP_NODELAY is set.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::error::{HostError, ProtocolError};
use crate::marks::{FlowMarks, StreamMarks};
use crate::offload::RxMarks;
use crate::options::ConnectOptions;
use crate::queue::QueueCore;

/// Placed payload is fed to the core from this (its content is never looked at: the core
/// skips placed bytes of a lent buffer).
static SKIPPED: [u8; 64 << 10] = [0; 64 << 10];

/// Smallest receive pipe: room for a few PDU headers.
const MIN_PIPE: usize = 256;
/// Pipe read size after a large C2HData PDU: enough for a CapsuleResp and the next data PDU
/// header (with digests), little payload.
const SHORT_PIPE_READ: usize = 128;
/// A C2HData PDU at least this large counts as "large" for the pipe heuristic.
const LARGE_PDU: usize = 16 << 10;
/// Largest SO_RCVLOWAT asked for while waiting for placed payload (far below the receive
/// buffer, so the peer's window always allows that much).
const MAX_RCVLOWAT: usize = 256 << 10;

/// A queue's TCP connection: the socket and the receive pipe. The queue's state lives in a
/// [`QueueCore`] that the caller keeps (so it survives the connection, for re-issue after a
/// reconnect) and passes to every call.
pub struct Connection {
    stream: HostStream,
    pipe: Box<[u8]>,
    pipe_len: usize,
    short_pipe: bool,
    closed: bool,
    /// The marks of this connection, when an offload device on the path keeps them.
    flow: Option<Arc<dyn FlowMarks>>,
    /// Scratch for mark look-ups.
    marks: StreamMarks,
    /// The socket's SO_RCVLOWAT (1 unless waiting for placed payload).
    rcvlowat: libc::c_int,
    /// How long [`Connection::poll`] spins before sleeping ([`ConnectOptions::busy_poll`]).
    busy_poll: Duration,
    /// When bytes last arrived (busy polling spins only within its budget after that).
    last_rx: Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.closed)
            .finish()
    }
}

/// Opens a TCP connection to the controller with the socket options the host uses.
pub fn tcp_connect(opts: &ConnectOptions) -> Result<TcpStream, HostError> {
    let target = opts.socket_addr_string();
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| HostError::Invalid(format!("cannot resolve {target}: {e}")))?
        .collect();
    let mut last = None;
    for a in addrs {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(a),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if let Some(sz) = opts.socket_buffer {
            // Best effort: the kernel clamps to its limits.
            let _ = sock.set_recv_buffer_size(sz);
            let _ = sock.set_send_buffer_size(sz);
        }
        sock.set_tcp_nodelay(true)?;
        match sock.connect_timeout(&a.into(), opts.connect_timeout) {
            Ok(()) => return Ok(sock.into()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = Some(io::Error::new(
                    e.kind(),
                    format!(
                        "no answer within {:?} (the connect timeout)",
                        opts.connect_timeout
                    ),
                ))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(error) => HostError::Connect {
            addr: target,
            error,
        },
        None => HostError::Invalid(format!("{target}: no address")),
    })
}

/// The byte stream of a queue: the socket, or a TLS 1.3 session over it (set up before
/// ICReq). Marks of an offload device on the network path count TCP bytes, which are not the
/// plaintext bytes of a TLS session, so a TLS queue never reads with marks.
enum HostStream {
    Plain(TcpStream),
    Tls(Box<nvme_tcp_tls::TlsStream<TlsSock>>),
}

/// The socket under a TLS session. While the handshake runs, every read and write waits at
/// most until `deadline` (the socket's timeouts alone restart with every byte a slow peer
/// sends).
struct TlsSock {
    sock: TcpStream,
    deadline: Option<Instant>,
}

impl TlsSock {
    /// The time left before the deadline, or an error once it passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(handshake_deadline_passed());
        }
        Ok(Some(left))
    }
}

fn handshake_deadline_passed() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the TLS handshake did not finish within the connect timeout",
    )
}

impl Read for TlsSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.left()? else {
            return self.sock.read(buf);
        };
        self.sock.set_read_timeout(Some(left))?;
        match self.sock.read(buf) {
            // The socket's timeout, the time left, expired.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(handshake_deadline_passed()),
            r => r,
        }
    }
}

impl Write for TlsSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.sock.set_write_timeout(Some(left))?;
        }
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl HostStream {
    fn sock(&self) -> &TcpStream {
        match self {
            HostStream::Plain(s) => s,
            HostStream::Tls(t) => &t.get_ref().sock,
        }
    }

    /// Decrypted bytes waiting inside the TLS session (invisible to `poll`).
    fn pending(&self) -> usize {
        match self {
            HostStream::Plain(_) => 0,
            HostStream::Tls(t) => t.pending(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HostStream::Plain(s) => s.read(buf),
            HostStream::Tls(t) => t.read(buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            HostStream::Plain(s) => s.read_vectored(bufs),
            HostStream::Tls(t) => t.read_vectored(bufs),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            HostStream::Plain(s) => s.write_vectored(bufs),
            HostStream::Tls(t) => t.write_vectored(bufs),
        }
    }
}

/// Runs the TLS 1.3 handshake on a fresh blocking socket (bounded by the connect timeout).
fn tls_handshake(
    stream: TcpStream,
    opts: &ConnectOptions,
    tls: &crate::options::TlsOptions,
) -> Result<HostStream, HostError> {
    let psk = tls
        .key
        .tls_psk(tls.identity, &opts.hostnqn, &opts.subnqn)
        .map_err(|e| HostError::Tls(e.to_string()))?;
    let client = nvme_tcp_tls::TlsClient::new(psk).map_err(|e| HostError::Tls(e.to_string()))?;
    let sock = TlsSock {
        sock: stream,
        deadline: Some(Instant::now() + opts.connect_timeout),
    };
    let mut t = client
        .connect(sock)
        .map_err(|e| HostError::Tls(e.to_string()))?;
    t.get_mut().deadline = None;
    t.get_ref().sock.set_read_timeout(None)?;
    t.get_ref().sock.set_write_timeout(None)?;
    Ok(HostStream::Tls(Box::new(t)))
}

impl Connection {
    /// Connects to the controller (and runs the TLS handshake when `opts.tls` asks for it);
    /// then [`Connection::handshake`] exchanges ICReq/ICResp.
    pub fn open(opts: &ConnectOptions) -> Result<Self, HostError> {
        let stream = tcp_connect(opts)?;
        let stream = match &opts.tls {
            Some(tls) => tls_handshake(stream, opts, tls)?,
            None => HostStream::Plain(stream),
        };
        stream.sock().set_nonblocking(true)?;
        let flow = match (&opts.mark_source, &stream) {
            (Some(src), HostStream::Plain(s)) => src.0.flow(s.local_addr()?, s.peer_addr()?),
            _ => None,
        };
        Ok(Self {
            stream,
            pipe: vec![0u8; opts.rx_pipe_size.max(MIN_PIPE)].into_boxed_slice(),
            pipe_len: 0,
            short_pipe: false,
            closed: false,
            flow,
            marks: StreamMarks::default(),
            rcvlowat: 1,
            busy_poll: Duration::ZERO,
            last_rx: Instant::now(),
        })
    }

    /// Busy polling ([`ConnectOptions::busy_poll`]): how long [`Connection::poll`] spins
    /// before it sleeps. I/O queues only: the admin queue idles between Keep Alives.
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.busy_poll = budget;
    }

    /// The marks the offload device on the path keeps for this connection, if any.
    pub fn flow(&self) -> Option<&Arc<dyn FlowMarks>> {
        self.flow.as_ref()
    }

    /// Sends as much of the pending transmit data as the socket takes now.
    pub fn flush(&mut self, core: &mut QueueCore) -> Result<(), HostError> {
        flush_to(&mut self.stream, core)
    }

    /// Flushes, then waits up to `timeout` (`None`: don't wait) for the socket and processes
    /// everything it has. Returns once at least one read or write happened, or the timeout
    /// passed.
    pub fn poll(
        &mut self,
        core: &mut QueueCore,
        timeout: Option<Duration>,
    ) -> Result<(), HostError> {
        if self.closed {
            return Err(ProtocolError::Closed.into());
        }
        self.flush(core)?;
        let progressed = self.read_and_note(core)?;
        if progressed || timeout.is_none_or(|t| t.is_zero()) {
            return Ok(());
        }
        if self.stream.pending() > 0 {
            return Ok(());
        }
        let start = Instant::now();
        // Nothing to read: compute the data digests of writes waiting for their R2Ts now,
        // one at a time, looking at the socket in between.
        while core.digest_ahead() {
            if self.read_and_note(core)? {
                return Ok(());
            }
        }
        if !self.busy_poll.is_zero() {
            // Spin on the socket (one non-blocking read per turn) until something arrives,
            // the caller's timeout passes, or the budget since the last bytes received is
            // spent: an idle queue sleeps. No sched_yield between turns: it would hand the
            // core to any runnable thread, whatever its priority, for a whole time slice.
            // (A sum past what an Instant holds means no limit from that side.)
            let budget_end = self.last_rx.checked_add(self.busy_poll);
            let timeout_end = timeout.and_then(|t| start.checked_add(t));
            let end = match (budget_end, timeout_end) {
                (Some(b), Some(t)) => Some(b.min(t)),
                (b, t) => b.or(t),
            };
            while end.is_none_or(|e| Instant::now() < e) {
                std::hint::spin_loop();
                self.flush(core)?;
                if self.read_and_note(core)? || self.stream.pending() > 0 {
                    return Ok(());
                }
            }
        }
        // What is left of the caller's timeout after the digests and the spin.
        let timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
        if timeout.is_some_and(|t| t.is_zero()) {
            return Ok(());
        }
        let want_write = !core.tx_is_empty();
        let mut pfd = libc::pollfd {
            fd: self.stream.sock().as_raw_fd(),
            events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
            revents: 0,
        };
        let ms = timeout
            .map(|t| t.as_millis().clamp(1, i32::MAX as u128) as i32)
            .unwrap_or(0);
        // SAFETY: `pfd` is a valid pollfd for the duration of the call, nfds = 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        self.flush(core)?;
        self.read_and_note(core)?;
        Ok(())
    }

    /// [`Connection::read_available`], noting when bytes arrived for busy polling.
    fn read_and_note(&mut self, core: &mut QueueCore) -> Result<bool, HostError> {
        let any = self.read_available(core)?;
        if any {
            self.last_rx = Instant::now();
        }
        Ok(any)
    }

    /// Reads until the socket would block or enough commands completed. Returns true if any
    /// byte arrived.
    ///
    /// Returning while completions are few lets the caller reuse their buffers for the next
    /// commands at once. Reading on until the socket is drained instead lets the controller
    /// run out of commands while the host is still reading: with a fast sender the whole
    /// queue depth completes before anything is resubmitted, and the queue alternates
    /// between full and empty.
    fn read_available(&mut self, core: &mut QueueCore) -> Result<bool, HostError> {
        if core.is_offloaded()
            && let Some(flow) = self.flow.clone()
        {
            return self.read_marked(core, flow.as_ref());
        }
        let mut any = false;
        let mut drained = false;
        let ready_before = core.completions_ready();
        // Bounded so one busy queue cannot starve its caller's submissions forever.
        for _ in 0..64 {
            let Self {
                stream,
                pipe,
                pipe_len,
                short_pipe,
                closed,
                ..
            } = self;
            if *pipe_len > 0 {
                let r = core.rx_feed(&pipe[..*pipe_len]);
                *pipe_len = 0;
                r?;
                // R2Ts among those bytes queued H2CData: send it now, so the controller
                // receives the data while this loop goes on reading, rather than after it.
                if !core.tx_is_empty() {
                    flush_to(stream, core)?;
                }
            }
            if drained {
                break;
            }
            // Hand completions back early enough that the caller can keep its queue depth
            // (a continuous stream would otherwise keep this loop reading): once a quarter of
            // the depth is ready, or already after one command while PDUs are large (one
            // more `write` per 128 KiB read is cheap; making the controller wait is not). At
            // least one read per call, so a caller waiting for one command makes progress.
            let ready = core.completions_ready();
            if any && (ready * 4 >= core.depth().max(4) || (*short_pipe && ready > ready_before)) {
                break;
            }
            let direct = core.rx_direct();
            let direct_len = direct.as_ref().map_or(0, |d| d.len());
            if direct.is_some() {
                // Inside payload: if much of it is left, the PDUs are large; keep the next
                // header read short so the next payload also goes direct.
                *short_pipe = direct_len >= LARGE_PDU;
            }
            let pipe_read = if *short_pipe {
                SHORT_PIPE_READ
            } else {
                pipe.len()
            };
            let res = match direct {
                Some(d) => {
                    let mut iov = [IoSliceMut::new(d), IoSliceMut::new(&mut pipe[..pipe_read])];
                    stream.read_vectored(&mut iov)
                }
                None => stream.read(&mut pipe[..pipe_read]),
            };
            match res {
                Ok(0) => {
                    *closed = true;
                    return Err(ProtocolError::Closed.into());
                }
                Ok(n) => {
                    any = true;
                    let d = n.min(direct_len);
                    if d > 0 {
                        core.rx_direct_done(d)?;
                    }
                    *pipe_len = n - d;
                    // A short read emptied the socket: feed what came and stop, instead of
                    // one more read that would only report EAGAIN. (A TLS read returns one
                    // record at most, so a short one says nothing about the socket.)
                    drained = matches!(stream, HostStream::Plain(_)) && n < direct_len + pipe_read;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.pipe_len > 0 {
            let r = core.rx_feed(&self.pipe[..self.pipe_len]);
            self.pipe_len = 0;
            r?;
        }
        Ok(any)
    }

    /// [`Connection::read_available`] for an offloaded queue behind a device that keeps
    /// marks: placed payload is discarded from the socket without a copy, everything else is
    /// read into the pipe, and all of it is fed with its marks.
    fn read_marked(
        &mut self,
        core: &mut QueueCore,
        flow: &dyn FlowMarks,
    ) -> Result<bool, HostError> {
        let mut any = false;
        let ready_before = core.completions_ready();
        for _ in 0..64 {
            let ready = core.completions_ready();
            if any && (ready * 4 >= core.depth().max(4) || ready > ready_before) {
                break;
            }
            let at = core.rx_position();
            let lent = core.rx_lent_payload_left() as u64;
            let placed = flow.placed_from(at);
            let res = match placed {
                Some((start, end)) if start <= at && lent > 0 => {
                    // Placed payload of a lent buffer: discard it, no copy.
                    let want = (end - at).min(lent).min(SKIPPED.len() as u64) as usize;
                    match recv_trunc(self.stream.sock(), want) {
                        Ok(0) => Ok(0),
                        Ok(n) => {
                            any = true;
                            self.feed_marked(core, flow, at, false, n)?;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => {
                    // Headers and unplaced bytes: read up to the next placed run, so that
                    // placed payload is not read into memory.
                    let mut want = self.pipe.len();
                    if let Some((start, _)) = placed
                        && start > at
                    {
                        want = want.min((start - at) as usize);
                    }
                    self.stream.read(&mut self.pipe[..want])
                }
            };
            match res {
                Ok(0) => {
                    self.closed = true;
                    return Err(ProtocolError::Closed.into());
                }
                Ok(n) => {
                    any = true;
                    self.pipe_len = n;
                    let r = self.feed_marked(core, flow, at, true, n);
                    self.pipe_len = 0;
                    r?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.set_rcvlowat(core.rx_lent_payload_left());
        Ok(any)
    }

    /// While the stream is inside placed payload, the host has nothing to do until the rest
    /// of that payload has arrived (the device places it; the next bytes the host needs are
    /// the digest and the following header): it asks the kernel to report the socket readable
    /// only once `lent_left` bytes are queued (`SO_RCVLOWAT`), instead of at every segment.
    /// Capped well below the receive buffer, so the sender can always send that much.
    fn set_rcvlowat(&mut self, lent_left: usize) {
        let want = lent_left.clamp(1, MAX_RCVLOWAT) as libc::c_int;
        if want == self.rcvlowat {
            return;
        }
        // SAFETY: a c_int option value of the right size for SO_RCVLOWAT; the fd is open.
        let r = unsafe {
            libc::setsockopt(
                self.stream.sock().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            self.rcvlowat = want;
        }
    }

    /// Feeds `n` bytes at stream offset `at` with the marks the device published for them:
    /// from the pipe (`read`), or skipped placed payload.
    fn feed_marked(
        &mut self,
        core: &mut QueueCore,
        flow: &dyn FlowMarks,
        at: u64,
        read: bool,
        n: usize,
    ) -> Result<(), HostError> {
        let end = at + n as u64;
        flow.marks(at, end, &mut self.marks);
        let mut run_start = at;
        for run in &self.marks.crc_runs {
            let run_end = run.end.min(end);
            if run_end <= run_start {
                continue;
            }
            let (lo, hi) = ((run_start - at) as usize, (run_end - at) as usize);
            let bytes = if read {
                &self.pipe[lo..hi]
            } else {
                &SKIPPED[..hi - lo]
            };
            let marks = RxMarks {
                crc: run.crc,
                placed: &self.marks.placed,
            };
            core.rx_feed_marked(bytes, &marks)?;
            run_start = run_end;
        }
        if run_start < end {
            // Bytes beyond the runs the device reported: no marks. Only read bytes can be
            // there (a skip covers placed, hence marked, bytes only).
            let lo = (run_start - at) as usize;
            if !read {
                return Err(HostError::Invalid(
                    "the offload device reported placed bytes without their marks".into(),
                ));
            }
            core.rx_feed(&self.pipe[lo..n])?;
        }
        flow.consumed(end);
        Ok(())
    }

    /// Shuts the socket down (both directions).
    pub fn shutdown(&mut self) {
        let _ = self.stream.sock().shutdown(std::net::Shutdown::Both);
        self.closed = true;
    }
}

/// Sends as much of `core`'s pending transmit data as `stream` takes now.
fn flush_to(stream: &mut HostStream, core: &mut QueueCore) -> Result<(), HostError> {
    loop {
        // One gather write for everything queued (headers and, in zero-copy mode, the
        // commands' own buffers), up to 64 pieces at a time.
        let mut iov = [IoSlice::new(&[]); 64];
        let n = core.tx_iovecs(&mut iov);
        if n == 0 {
            return Ok(());
        }
        match stream.write_vectored(&iov[..n]) {
            Ok(0) => return Err(ProtocolError::Closed.into()),
            Ok(n) => core.tx_consumed(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Discards up to `len` bytes from the socket's receive queue without copying them
/// (`recv(MSG_TRUNC)` on a TCP socket). Returns the count discarded.
fn recv_trunc(stream: &TcpStream, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC a TCP socket discards the bytes and writes nothing to the
    // buffer, so a null buffer is valid; the fd is open for the duration of the call.
    let r = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
