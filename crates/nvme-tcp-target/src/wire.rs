//! The byte stream a connection's thread reads PDUs from and writes PDUs to: the TCP socket
//! itself, or a TLS 1.3 session over it (NVMe/TCP TLS, TP 8011), set up before ICReq.
//!
//! Writes never block (`MSG_DONTWAIT`, as the clear-text path): a full socket gives
//! `WouldBlock` and the driver waits for room with its send deadline; a TLS write that
//! returned `WouldBlock` is retried with the same bytes first, which the connection's transmit
//! queue guarantees (nothing is consumed until written). Reads block with the socket's read
//! timeout.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvme_tcp_tls::{TlsServer, TlsStream};
use socket2::SockRef;

use crate::config::PortTls;

/// First byte of a TLS record carrying a handshake message (a ClientHello); an NVMe/TCP
/// connection starts with an ICReq, PDU type 0x00.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The socket as TLS sees it: blocking reads (with the socket's read timeout), writes that
/// never block once the session is up.
#[derive(Debug)]
pub struct SockIo {
    sock: Arc<TcpStream>,
    dontwait: bool,
    /// While the handshake runs: when it must be over. Every read waits at most until then
    /// (the socket's read timeout alone restarts with every byte a slow peer sends).
    deadline: Option<Instant>,
}

impl Read for SockIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(handshake_deadline_passed());
            }
            self.sock.set_read_timeout(Some(left))?;
            return match (&*self.sock).read(buf) {
                // The socket's timeout, the time left, expired.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(handshake_deadline_passed()),
                r => r,
            };
        }
        (&*self.sock).read(buf)
    }
}

impl Write for SockIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.dontwait {
            SockRef::from(&*self.sock).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        } else {
            SockRef::from(&*self.sock).send_with_flags(buf, libc::MSG_NOSIGNAL)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn handshake_deadline_passed() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the TLS handshake did not finish within the connect timeout",
    )
}

/// A connection's byte stream.
#[derive(Debug)]
pub enum Wire {
    /// Clear text on the socket.
    Plain(Arc<TcpStream>),
    /// A TLS 1.3 session on the socket.
    Tls(Box<TlsStream<SockIo>>),
}

/// `Write` over a blocking socket that never blocks: `send` with `MSG_DONTWAIT`.
struct DontWait<'a>(&'a TcpStream);

impl Write for DontWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SockRef::from(self.0).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        SockRef::from(self.0)
            .send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire {
    /// The host NQN of the PSK identity a TLS session was established with; `None` in
    /// clear text.
    pub fn tls_hostnqn(&self) -> Option<String> {
        match self {
            Wire::Plain(_) => None,
            Wire::Tls(t) => {
                let id = t.psk_identity()?;
                nvme_tcp_tls::PskIdentity::parse(id.as_bytes())
                    .ok()
                    .map(|i| i.hostnqn)
            }
        }
    }

    /// Reads what arrived (blocking up to the socket's read timeout).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => (&**s).read(buf),
            Wire::Tls(t) => t.read(buf),
        }
    }

    /// Reads what arrived without waiting: `Ok(None)` if nothing did. Only clear text can
    /// tell (a TLS record may be half there); a TLS session answers `Ok(None)` at once.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Wire::Plain(s) => {
                // SAFETY: `recv` writes at most `buf.len()` initialised bytes into `buf`;
                // viewing them as `MaybeUninit` is sound.
                let uninit = unsafe {
                    std::slice::from_raw_parts_mut(
                        buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
                        buf.len(),
                    )
                };
                match SockRef::from(&**s).recv_with_flags(uninit, libc::MSG_DONTWAIT) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Wire::Tls(_) => Ok(None),
        }
    }

    /// Runs `f` with a writer that never blocks.
    pub fn with_writer<R>(&mut self, f: impl FnOnce(&mut dyn Write) -> R) -> R {
        match self {
            Wire::Plain(s) => f(&mut DontWait(s)),
            Wire::Tls(t) => f(&mut **t),
        }
    }

    /// True for a TLS session.
    pub fn is_tls(&self) -> bool {
        matches!(self, Wire::Tls(_))
    }
}

/// Sets up the stream of a connection accepted on a port with `tls`: on a TLS port, waits up
/// to `timeout` for the first byte; a TLS handshake record starts the handshake, anything
/// else is clear text (refused on a TLS-required port). The error says why the connection
/// is closed.
pub fn establish(
    sock: &Arc<TcpStream>,
    tls: PortTls,
    server: Option<&TlsServer>,
    timeout: Duration,
) -> Result<Wire, String> {
    if tls == PortTls::None {
        return Ok(Wire::Plain(Arc::clone(sock)));
    }
    let Some(server) = server else {
        return Err("TLS port without TLS keys".into());
    };
    let deadline = Instant::now() + timeout;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    let n = match sock.peek(&mut first) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(format!("no TLS handshake within {timeout:?}"));
        }
        Err(e) => return Err(e.to_string()),
    };
    if n == 0 {
        return Err("closed before the first byte".into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        if tls == PortTls::Required {
            return Err(format!(
                "clear text (first byte {:#04x}) on a port that requires TLS",
                first[0]
            ));
        }
        sock.set_read_timeout(None).map_err(|e| e.to_string())?;
        return Ok(Wire::Plain(Arc::clone(sock)));
    }
    let io = SockIo {
        sock: Arc::clone(sock),
        dontwait: false,
        deadline: Some(deadline),
    };
    let mut t = server.accept(io).map_err(|e| e.to_string())?;
    t.get_mut().dontwait = true;
    t.get_mut().deadline = None;
    sock.set_read_timeout(None).map_err(|e| e.to_string())?;
    tracing::debug!(
        identity = t.psk_identity().unwrap_or_default(),
        cipher = t.cipher().unwrap_or("?"),
        "TLS session established"
    );
    Ok(Wire::Tls(Box::new(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A peer that sends its ClientHello one byte at a time, each well within the connect
    /// timeout, is closed when the connect timeout has passed since it connected: the timeout
    /// bounds the whole handshake, not each read.
    #[test]
    fn a_peer_that_trickles_its_handshake_is_closed_after_the_connect_timeout() {
        const BYTES: usize = 100;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peer = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut c = TcpStream::connect(addr).unwrap();
                // A handshake record announcing 512 bytes, then its body byte by byte.
                c.write_all(&[TLS_HANDSHAKE_RECORD, 0x03, 0x01, 0x02, 0x00])
                    .unwrap();
                let mut sent = 0;
                while sent < BYTES && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                    if c.write_all(&[0]).is_err() {
                        break;
                    }
                    sent += 1;
                }
                sent
            }
        });
        let (s, _) = l.accept().unwrap();
        let sock = Arc::new(s);
        let server = TlsServer::new(Arc::new(|_: &nvme_tcp_tls::PskIdentity| None)).unwrap();
        let r = establish(
            &sock,
            PortTls::Required,
            Some(&server),
            Duration::from_millis(300),
        );
        stop.store(true, Ordering::Release);
        let sent = peer.join().unwrap();
        let Err(why) = r else {
            panic!("a handshake of zeros succeeded");
        };
        assert!(
            sent < BYTES,
            "the handshake waited for all {sent} bytes, one every 50 ms, with a 300 ms \
             connect timeout ({why})"
        );
        assert!(why.contains("connect timeout"), "{why}");
    }
}
