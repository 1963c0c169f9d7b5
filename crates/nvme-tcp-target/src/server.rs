//! The I/O driver: listeners and one thread per connection with blocking sockets.
//!
//! Why threads: on this target each connection is one queue, and a queue's work is a short
//! synchronous step (parse, copy, `writev`), so a dedicated thread per connection with
//! blocking `read`/`writev` has the fewest moving parts and the lowest per-I/O cost (no
//! reactor, no wakeups, no task hand-offs); it also gives "a slow backend stalls only its own
//! queue" for free. The price is one thread per connection, bounded by
//! [`crate::Limits::max_connections`].

use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::{ConfigError, PortConfig, TargetConfig};
use crate::conn::{Connection, PortContext};
use crate::namespace::NamespaceConfig;
use crate::state::TargetState;
use crate::subsystem::NamespaceChangeError;

/// Read timeout used while a connection has a timer running.
const TICK: Duration = Duration::from_millis(100);
/// A host that reads nothing for this long is disconnected. RAM namespace data is sent while
/// holding the read lock of its stripe, so without this bound a host that stops reading could
/// hold up writers of that stripe on other queues indefinitely.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors starting a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A namespace could not be opened.
    #[error(transparent)]
    Namespace(#[from] NamespaceChangeError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// No such subsystem.
    #[error("no subsystem {0}")]
    NoSubsystem(String),
}

/// Entry point: [`Target::start`].
#[derive(Debug)]
pub struct Target;

type Registry = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// A running target. Dropping it shuts it down.
#[derive(Debug)]
pub struct TargetHandle {
    state: Arc<TargetState>,
    addrs: Vec<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    listeners: Vec<JoinHandle<()>>,
    conns: Registry,
}

impl Target {
    /// Validates `config`, opens the namespaces, binds every port and serves in background
    /// threads.
    pub fn start(config: TargetConfig) -> Result<TargetHandle, TargetError> {
        config.validate()?;
        let state = Arc::new(TargetState::new(&config)?);
        let shutdown = Arc::new(AtomicBool::new(false));
        let conns: Registry = Arc::default();
        let next_id = Arc::new(AtomicU64::new(1));
        let mut addrs = Vec::new();
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for port in &config.ports {
            let l = bind(port.addr).map_err(|source| TargetError::Bind {
                addr: port.addr,
                source,
            })?;
            let local = l.local_addr().map_err(|source| TargetError::Bind {
                addr: port.addr,
                source,
            })?;
            bound.push((port.clone(), l, local));
        }
        for (port, l, local) in bound {
            state.add_port(port.clone(), local);
            addrs.push(local);
            let ctx = Listener {
                state: Arc::clone(&state),
                shutdown: Arc::clone(&shutdown),
                conns: Arc::clone(&conns),
                next_id: Arc::clone(&next_id),
                port,
            };
            let h = std::thread::Builder::new()
                .name(format!("nvmet-listen-{}", local.port()))
                .spawn(move || ctx.run(l))
                .map_err(|source| TargetError::Bind {
                    addr: local,
                    source,
                })?;
            listeners.push(h);
            tracing::info!(%local, "listening");
        }
        Ok(TargetHandle {
            state,
            addrs,
            shutdown,
            listeners,
            conns,
        })
    }
}

impl TargetHandle {
    /// The bound addresses, in the order of the configured ports.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The shared target state (subsystems, discovery generation counter).
    pub fn state(&self) -> &Arc<TargetState> {
        &self.state
    }

    /// Adds a namespace to a subsystem at run time; hosts get a Namespace Attribute Changed
    /// event. Returns the NSID.
    pub fn add_namespace(&self, subnqn: &str, ns: &NamespaceConfig) -> Result<u32, TargetError> {
        let sub = self
            .state
            .subsystem(subnqn)
            .ok_or_else(|| TargetError::NoSubsystem(subnqn.to_string()))?;
        Ok(sub.add_namespace(ns)?)
    }

    /// Removes a namespace at run time.
    pub fn remove_namespace(&self, subnqn: &str, nsid: u32) -> Result<(), TargetError> {
        let sub = self
            .state
            .subsystem(subnqn)
            .ok_or_else(|| TargetError::NoSubsystem(subnqn.to_string()))?;
        Ok(sub.remove_namespace(nsid)?)
    }

    /// Stops the listeners, closes every connection and waits for the listener threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        for a in &self.addrs {
            // Wake the blocking accept.
            let ip = match a.ip() {
                ip if !ip.is_unspecified() => ip,
                std::net::IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            };
            let _ = TcpStream::connect_timeout(&SocketAddr::new(ip, a.port()), TICK);
        }
        for h in self.listeners.drain(..) {
            let _ = h.join();
        }
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for s in conns.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TargetHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

struct Listener {
    state: Arc<TargetState>,
    shutdown: Arc<AtomicBool>,
    conns: Registry,
    next_id: Arc<AtomicU64>,
    port: PortConfig,
}

impl Listener {
    fn run(self, l: TcpListener) {
        for stream in l.incoming() {
            if self.shutdown.load(Ordering::Acquire) {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if !self.state.try_open_connection() {
                self.state
                    .metrics()
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    limit = self.state.limits().max_connections,
                    "connection limit reached, closing a new connection"
                );
                continue;
            }
            if let Err(e) = self.spawn(stream) {
                tracing::warn!("cannot start a connection: {e}");
                self.state.close_connection();
            }
        }
    }

    fn spawn(&self, stream: TcpStream) -> std::io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(SEND_TIMEOUT))?;
        let buf = self.state.socket_buffer_size();
        if buf > 0 {
            let r = SockRef::from(&stream);
            let _ = r.set_send_buffer_size(buf);
            let _ = r.set_recv_buffer_size(buf);
        }
        let local = stream.local_addr()?;
        let peer = stream.peer_addr().ok();
        let ctx = PortContext {
            portid: self.port.portid,
            local_addr: local,
            in_capsule_data_size: self
                .port
                .in_capsule_data_size
                .unwrap_or(self.state.limits().in_capsule_data_size),
        };
        let for_disc = stream.try_clone()?;
        let factory = Box::new(move || {
            let s = for_disc.try_clone();
            Box::new(move || {
                if let Ok(s) = &s {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }) as crate::controller::Disconnector
        });
        self.state.metrics().open_connection(id, peer, Some(local));
        tracing::info!(conn = id, ?peer, %local, "connection accepted");
        let conn = Connection::new(id, Arc::clone(&self.state), ctx, factory, Instant::now());
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stream.try_clone()?);
        let state = Arc::clone(&self.state);
        let conns = Arc::clone(&self.conns);
        let shutdown = Arc::clone(&self.shutdown);
        std::thread::Builder::new()
            .name(format!("nvmet-conn-{id}"))
            .spawn(move || {
                if !shutdown.load(Ordering::Acquire) {
                    serve(&stream, conn);
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
                conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                state.metrics().close_connection(id);
                state.close_connection();
                tracing::info!(conn = id, "connection closed");
            })?;
        Ok(())
    }
}

/// Drives one connection until it closes.
fn serve(stream: &TcpStream, mut conn: Connection) {
    let mut reader = stream;
    let mut writer = stream;
    let mut ticking = false;
    loop {
        if let Err(e) = conn.flush(&mut writer) {
            tracing::debug!(conn = conn.id(), "send failed: {e}");
            break;
        }
        if conn.is_closed() {
            break;
        }
        let now = Instant::now();
        let deadline = conn.poll_timeout(now);
        if deadline.is_some() != ticking {
            ticking = deadline.is_some();
            let _ = stream.set_read_timeout(ticking.then_some(TICK));
        }
        let buf = conn.recv_buf();
        if buf.is_empty() {
            tracing::warn!(
                conn = conn.id(),
                "receive buffer full while output is stalled"
            );
            break;
        }
        match reader.read(buf) {
            Ok(0) => conn.on_eof(),
            Ok(n) => conn.on_recv(n, Instant::now()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!(conn = conn.id(), "receive failed: {e}");
                break;
            }
        }
        let now = Instant::now();
        if conn.poll_timeout(now).is_some_and(|t| now >= t) {
            conn.handle_timeout(now);
        }
    }
    if let Some(why) = conn.close_reason() {
        tracing::debug!(conn = conn.id(), "closing: {why}");
    }
}
