//! The sockets an NBD server listens and serves on: TCP, or a Unix domain socket (what local
//! clients such as `nbd-client -unix` and qemu's `nbd+unix://` use; it skips the loopback
//! TCP stack).

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// A listening socket for [`NbdServer::start`](super::NbdServer::start).
#[derive(Debug)]
pub enum NbdListener {
    /// A TCP socket (`nbd://HOST:PORT/EXPORT`).
    Tcp(TcpListener),
    /// A Unix domain socket (`nbd+unix:///EXPORT?socket=PATH`).
    Unix(UnixListener),
}

impl From<TcpListener> for NbdListener {
    fn from(l: TcpListener) -> Self {
        NbdListener::Tcp(l)
    }
}

impl From<UnixListener> for NbdListener {
    fn from(l: UnixListener) -> Self {
        NbdListener::Unix(l)
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// The path of a Unix domain socket (`None`: an unnamed socket).
    Unix(Option<PathBuf>),
}

impl NbdAddr {
    /// The URI of `export` at this address (the form qemu and libnbd take).
    pub fn uri(&self, export: &str) -> String {
        match self {
            NbdAddr::Tcp(a) => format!("nbd://{a}/{export}"),
            NbdAddr::Unix(Some(p)) => format!("nbd+unix:///{export}?socket={}", p.display()),
            NbdAddr::Unix(None) => format!("nbd+unix:///{export}"),
        }
    }
}

impl std::fmt::Display for NbdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdAddr::Tcp(a) => write!(f, "{a}"),
            NbdAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            NbdAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

impl NbdListener {
    pub(super) fn local_addr(&self) -> std::io::Result<NbdAddr> {
        Ok(match self {
            NbdListener::Tcp(l) => NbdAddr::Tcp(l.local_addr()?),
            NbdListener::Unix(l) => NbdAddr::Unix(l.local_addr()?.as_pathname().map(Into::into)),
        })
    }

    pub(super) fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            NbdListener::Tcp(l) => NbdListener::Tcp(l.try_clone()?),
            NbdListener::Unix(l) => NbdListener::Unix(l.try_clone()?),
        })
    }

    /// Accepts a client: its socket and a name of the peer for logs.
    pub(super) fn accept(&self) -> std::io::Result<(NbdStream, String)> {
        Ok(match self {
            NbdListener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // Replies are sent in batches already; Nagle would only delay the last one.
                let _ = s.set_nodelay(true);
                (NbdStream::Tcp(s), peer.to_string())
            }
            NbdListener::Unix(l) => {
                let (s, _) = l.accept()?;
                (NbdStream::Unix(s), "unix".to_string())
            }
        })
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            NbdListener::Tcp(l) => l.as_raw_fd(),
            NbdListener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// A client connection.
#[derive(Debug)]
pub(super) enum NbdStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl NbdStream {
    pub(super) fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            NbdStream::Tcp(s) => NbdStream::Tcp(s.try_clone()?),
            NbdStream::Unix(s) => NbdStream::Unix(s.try_clone()?),
        })
    }

    pub(super) fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            NbdStream::Tcp(s) => s.shutdown(how),
            NbdStream::Unix(s) => s.shutdown(how),
        }
    }

    pub(super) fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            NbdStream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            NbdStream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for NbdStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            NbdStream::Tcp(s) => s.read(buf),
            NbdStream::Unix(s) => s.read(buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> std::io::Result<usize> {
        match self {
            NbdStream::Tcp(s) => s.read_vectored(bufs),
            NbdStream::Unix(s) => s.read_vectored(bufs),
        }
    }
}

impl Write for NbdStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            NbdStream::Tcp(s) => s.write(buf),
            NbdStream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            NbdStream::Tcp(s) => s.write_vectored(bufs),
            NbdStream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
