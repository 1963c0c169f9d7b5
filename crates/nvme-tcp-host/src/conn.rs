//! The socket driver of a queue: a non-blocking kernel TCP socket around a [`QueueCore`].
//!
//! Receive: while the core is inside C2HData payload, one `readv` reads straight into the
//! caller's buffer at DATAO and, in the same call, the next few bytes (the following PDU
//! headers) into a small receive pipe. Otherwise the pipe takes what the socket has; PDU
//! headers are parsed from it and the payload bytes that came with them are placed from it.
//! After a large data PDU the pipe read is kept short, so the bulk of the next payload again
//! goes directly into its buffer.
//!
//! Transmit: all PDUs queued since the last flush go out in one `write` (batching many
//! capsules per system call). TCP_NODELAY is set.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::error::{HostError, ProtocolError};
use crate::options::ConnectOptions;
use crate::queue::QueueCore;

/// Smallest receive pipe: room for a few PDU headers.
const MIN_PIPE: usize = 256;
/// Pipe read size after a large C2HData PDU: enough for a CapsuleResp and the next data PDU
/// header (with digests), little payload.
const SHORT_PIPE_READ: usize = 128;
/// A C2HData PDU at least this large counts as "large" for the pipe heuristic.
const LARGE_PDU: usize = 16 << 10;

/// A queue's TCP connection: the socket and the receive pipe. The queue's state lives in a
/// [`QueueCore`] that the caller keeps (so it survives the connection, for re-issue after a
/// reconnect) and passes to every call.
pub struct Connection {
    stream: TcpStream,
    pipe: Box<[u8]>,
    pipe_len: usize,
    short_pipe: bool,
    closed: bool,
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
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(HostError::Io)
        .unwrap_or_else(|| HostError::Invalid(format!("{target}: no address"))))
}

impl Connection {
    /// Connects to the controller; then [`Connection::handshake`] exchanges ICReq/ICResp.
    pub fn open(opts: &ConnectOptions) -> Result<Self, HostError> {
        let stream = tcp_connect(opts)?;
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            pipe: vec![0u8; opts.rx_pipe_size.max(MIN_PIPE)].into_boxed_slice(),
            pipe_len: 0,
            short_pipe: false,
            closed: false,
        })
    }

    /// Sends as much of the pending transmit data as the socket takes now.
    pub fn flush(&mut self, core: &mut QueueCore) -> Result<(), HostError> {
        loop {
            // One gather write for everything queued (headers and, in zero-copy mode, the
            // commands' own buffers), up to 64 pieces at a time.
            let mut iov = [IoSlice::new(&[]); 64];
            let n = core.tx_iovecs(&mut iov);
            if n == 0 {
                return Ok(());
            }
            match self.stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(ProtocolError::Closed.into()),
                Ok(n) => core.tx_consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
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
        let progressed = self.read_available(core)?;
        if progressed || timeout.is_none_or(|t| t.is_zero()) {
            return Ok(());
        }
        let want_write = !core.tx_is_empty();
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
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
        self.read_available(core)?;
        Ok(())
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
        let mut any = false;
        let ready_before = core.completions_ready();
        // Bounded so one busy queue cannot starve its caller's submissions forever.
        for _ in 0..64 {
            let Self {
                stream,
                pipe,
                pipe_len,
                short_pipe,
                closed,
            } = self;
            if *pipe_len > 0 {
                let r = core.rx_feed(&pipe[..*pipe_len]);
                *pipe_len = 0;
                r?;
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

    /// Shuts the socket down (both directions).
    pub fn shutdown(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.closed = true;
    }
}
