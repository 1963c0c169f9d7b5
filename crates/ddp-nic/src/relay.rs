//! A TCP relay inside the target namespace: it listens on the target-side address and
//! connects each accepted connection to a controller outside (in the namespace the program
//! started in), copying bytes both ways. So a controller running anywhere — another
//! process, the kernel target in qemu — becomes the peer of a real kernel TCP connection that
//! crosses the NIC: the relay's socket in the target namespace is the sending end the NIC
//! sees; its kernel retransmits what the faults drop.

use std::io;
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::NicError;
use crate::netns::NetNs;

/// Bytes copied per read.
const CHUNK: usize = 256 << 10;

/// A running relay; stopped (every connection closed, threads joined) on drop.
#[derive(Debug)]
pub struct Relay {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
    local: SocketAddrV4,
}

impl Relay {
    /// Listens on `listen` inside `inside` and relays to `upstream`, which is connected
    /// from `outside`.
    pub fn start(
        inside: &NetNs,
        listen: SocketAddrV4,
        outside: NetNs,
        upstream: SocketAddr,
    ) -> Result<Self, NicError> {
        let listener = inside
            .run(|| TcpListener::bind(listen))
            .and_then(|r| r)
            .map_err(|e| NicError::io("relay: listening in the target namespace", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| NicError::io("relay", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::Builder::new()
            .name("nic-relay".into())
            .spawn(move || accept_loop(listener, outside, upstream, s, c))
            .map_err(|e| NicError::io("relay thread", e))?;
        Ok(Self {
            stop,
            conns,
            accept: Some(accept),
            local: listen,
        })
    }

    /// Where the relay listens (in the target namespace).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for s in self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    outside: NetNs,
    upstream: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut copiers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        wait_readable(&listener, Duration::from_millis(100));
        let (down, _) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(error = %e, "relay: accept failed");
                continue;
            }
        };
        let up =
            match outside.run(|| TcpStream::connect_timeout(&upstream, Duration::from_secs(10))) {
                Ok(Ok(s)) => s,
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(%upstream, error = %e, "relay: cannot reach the controller");
                    continue;
                }
            };
        let pair = (|| -> io::Result<_> {
            down.set_nonblocking(false)?;
            down.set_nodelay(true)?;
            up.set_nodelay(true)?;
            Ok((
                down.try_clone()?,
                up.try_clone()?,
                down.try_clone()?,
                up.try_clone()?,
            ))
        })();
        let Ok((d2, u2, dk, uk)) = pair else {
            continue;
        };
        {
            let mut c = conns.lock().unwrap_or_else(|e| e.into_inner());
            c.push(dk);
            c.push(uk);
            if stop.load(Ordering::Acquire) {
                for s in c.iter() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
        for (from, to) in [(down, up), (u2, d2)] {
            if let Ok(t) = std::thread::Builder::new()
                .name("nic-relay-copy".into())
                .spawn(move || copy(from, to))
            {
                copiers.push(t);
            }
        }
        copiers.retain(|t| !t.is_finished());
    }
    for t in copiers {
        let _ = t.join();
    }
}

/// Copies until end of stream or an error, then closes the other side's write half.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match io::Read::read(&mut from, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if io::Write::write_all(&mut to, &buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn wait_readable(l: &TcpListener, t: Duration) {
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, t.as_millis() as i32) };
}
