//! The I/O driver: listeners and one thread per connection with blocking sockets.
//!
//! Why threads: on this target each connection is one queue, and a queue's work is a short
//! synchronous step (parse, copy, `writev`), so a dedicated thread per connection with
//! blocking `read`/`writev` has the fewest moving parts and the lowest per-I/O cost (no
//! reactor, no wakeups, no task hand-offs); it also gives "a slow backend stalls only its own
//! queue" for free. The price is one thread per connection, bounded by
//! [`crate::Limits::max_connections`].
//!
//! Sending never blocks while namespace data is locked: output goes out with `MSG_DONTWAIT`
//! and, when the socket is full, the connection copies what it still has under a lock,
//! drops the lock and waits (`poll`) for room. The peer has [`crate::Limits::send_timeout`]
//! in total to take each PDU's worth of bytes.
//!
//! Each connection costs one file descriptor; [`Target::start`] raises `RLIMIT_NOFILE` to
//! what [`crate::Limits::max_connections`] needs or refuses to start. When `accept` fails for
//! lack of descriptors or memory, the listener backs off (10 ms doubling to 1 s) with one
//! WARN per episode.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvme_tcp_tls::TlsServer;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::{ConfigError, PortConfig, TargetConfig};
use crate::conn::{Connection, PortContext};
use crate::namespace::NamespaceConfig;
use crate::state::{AdmissionRefused, TargetState};
use crate::subsystem::NamespaceChangeError;
use crate::wire::{self, Wire};

/// Read timeout used while a connection has a timer running.
const TICK: Duration = Duration::from_millis(100);
/// File descriptors kept free for everything but connections (listeners, namespace files,
/// standard streams, the control sockets of the program around the target).
pub const FD_RESERVE: u64 = 128;
/// File descriptors one connection uses (its socket).
pub const FDS_PER_CONNECTION: u64 = 1;
/// First and longest wait of the listener after `accept` failed for lack of resources.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

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
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: std::io::Error,
    },
    /// No such subsystem.
    #[error("no subsystem {0}")]
    NoSubsystem(String),
    /// The TLS library refused the setup.
    #[error("TLS: {0}")]
    Tls(String),
    /// The open-file limit cannot be raised to what `max_connections` needs.
    #[error(
        "max_connections {max_connections} needs {needed} open files, but the limit is {hard} \
         and cannot be raised ({reason}); raise it (ulimit -n, LimitNOFILE=) or lower \
         max_connections to at most {fits}"
    )]
    FdLimit {
        /// The configured connection limit.
        max_connections: usize,
        /// Descriptors needed.
        needed: u64,
        /// The hard limit found.
        hard: u64,
        /// Connections that fit the hard limit.
        fits: u64,
        /// Why raising failed.
        reason: String,
    },
}

/// Raises the soft (and if need be, the hard) `RLIMIT_NOFILE` to at least `needed`.
fn raise_nofile(needed: u64) -> Result<(), (u64, String)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err((0, std::io::Error::last_os_error().to_string()));
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    let want = libc::rlimit {
        rlim_cur: needed,
        rlim_max: lim.rlim_max.max(needed),
    };
    // SAFETY: `want` is a valid rlimit; raising the hard limit needs CAP_SYS_RESOURCE and
    // fails cleanly without it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        tracing::info!(
            from = lim.rlim_cur,
            to = needed,
            "raised the open-file limit"
        );
        return Ok(());
    }
    let err = std::io::Error::last_os_error().to_string();
    Err((lim.rlim_max, err))
}

/// The listener's reaction to failing `accept` calls: resource exhaustion (no descriptors,
/// no memory) is waited out with a doubling delay, and reported once per episode.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

/// What to do after a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffStep {
    /// Wait this long before accepting again.
    pub wait: Duration,
    /// True for the first failure of an episode: log it as a warning (later ones at debug).
    pub warn: bool,
}

impl AcceptBackoff {
    /// `accept` failed with `e`.
    pub fn on_error(&mut self, e: &std::io::Error) -> BackoffStep {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !exhausted {
            // A connection that died in the backlog (ECONNABORTED) and the like: go on.
            return BackoffStep {
                wait: Duration::ZERO,
                warn: false,
            };
        }
        let (first, max) = ACCEPT_BACKOFF;
        let warn = self.delay.is_none();
        let wait = self.delay.map_or(first, |d| (d * 2).min(max));
        self.delay = Some(wait);
        BackoffStep { wait, warn }
    }

    /// `accept` succeeded; returns true if that ends an episode of failures.
    pub fn on_success(&mut self) -> bool {
        self.delay.take().is_some()
    }
}

/// What [`TargetHandle::reload`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Changes applied, one line each.
    pub changes: Vec<String>,
    /// Differences that need a restart, one line each.
    pub not_applied: Vec<String>,
}

/// Entry point: [`Target::start`].
#[derive(Debug)]
pub struct Target;

/// What the target knows about a live connection outside its thread.
#[derive(Debug)]
struct ConnEntry {
    stream: Arc<TcpStream>,
    /// Milliseconds since `Shared::epoch` of the last bytes received.
    last_rx_ms: AtomicU64,
    /// `Connection::idle_reclaimable`.
    reclaimable: AtomicBool,
    /// [`IDLE`], [`ACTIVE`] or [`CLOSING`]: another thread closes the connection only by
    /// moving it from `IDLE` to `CLOSING`, so never while its thread handles a command.
    phase: AtomicU8,
    /// True for an admin queue (closing it tears its controller's I/O queues down).
    admin: AtomicBool,
}

/// The connection's thread waits for input with nothing in flight.
const IDLE: u8 = 0;
/// The connection's thread is handling input or has commands in flight.
const ACTIVE: u8 = 1;
/// Another thread (reclaim, drain) is closing the connection.
const CLOSING: u8 = 2;

impl ConnEntry {
    /// Closes the connection if it is idle; true if it did.
    fn close_if_idle(&self) -> bool {
        let won = self
            .phase
            .compare_exchange(IDLE, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        won
    }

    fn active(&self) -> bool {
        self.phase.load(Ordering::Acquire) == ACTIVE
    }
}

#[derive(Debug)]
struct Shared {
    state: Arc<TargetState>,
    shutdown: AtomicBool,
    draining: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<ConnEntry>>>,
    next_id: AtomicU64,
    epoch: Instant,
    /// When idle queues were last looked for (ms since `epoch`), to scan at most once per
    /// second.
    last_reclaim_ms: AtomicU64,
    /// The TLS server of the TLS ports (keys from the configuration at start).
    tls: Option<TlsServer>,
    /// The host PSKs `tls` was built with.
    tls_keys: std::collections::BTreeMap<String, nvme_tcp_tls::ConfiguredPsk>,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnEntry>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Disconnects queues idle for `idle_timeout` while slots are scarce. Returns how many.
    fn reclaim_idle(&self) -> usize {
        let lim = self.state.limits();
        if lim.idle_timeout.is_zero() || !self.state.slots_scarce() {
            return 0;
        }
        let now = self.now_ms();
        let last = self.last_reclaim_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return 0;
        }
        self.last_reclaim_ms.store(now.max(1), Ordering::Relaxed);
        let idle_ms = lim.idle_timeout.as_millis() as u64;
        let mut n = 0;
        for (id, e) in self.conns().iter() {
            if e.reclaimable.load(Ordering::Acquire)
                && now.saturating_sub(e.last_rx_ms.load(Ordering::Relaxed)) >= idle_ms
                && e.close_if_idle()
            {
                tracing::info!(
                    conn = id,
                    "disconnected an idle queue: connection slots are scarce"
                );
                n += 1;
            }
        }
        n
    }
}

/// A running target. Dropping it shuts it down.
#[derive(Debug)]
pub struct TargetHandle {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    listeners: Vec<JoinHandle<()>>,
}

impl Target {
    /// Validates `config`, raises the open-file limit to what it needs, opens the
    /// namespaces, binds every port and serves in background threads.
    pub fn start(config: TargetConfig) -> Result<TargetHandle, TargetError> {
        config.validate()?;
        let max = config.limits.max_connections;
        let needed = (max as u64)
            .saturating_mul(FDS_PER_CONNECTION)
            .saturating_add(FD_RESERVE);
        raise_nofile(needed).map_err(|(hard, reason)| TargetError::FdLimit {
            max_connections: max,
            needed,
            hard,
            fits: hard.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION,
            reason,
        })?;
        let state = Arc::new(TargetState::new(&config)?);
        let shared = Arc::new(Shared {
            state: Arc::clone(&state),
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            last_reclaim_ms: AtomicU64::new(0),
            tls: tls_server(&config)?,
            tls_keys: config.tls_keys.clone(),
        });
        let mut addrs = Vec::new();
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for port in &config.ports {
            let l = bind(port.addr).map_err(|source| TargetError::Bind {
                addr: port.addr,
                error: source,
            })?;
            let local = l.local_addr().map_err(|source| TargetError::Bind {
                addr: port.addr,
                error: source,
            })?;
            bound.push((port.clone(), l, local));
        }
        for (port, l, local) in bound {
            state.add_port(port.clone(), local);
            addrs.push(local);
            let ctx = Listener {
                shared: Arc::clone(&shared),
                port,
            };
            let h = std::thread::Builder::new()
                .name(format!("nvmet-listen-{}", local.port()))
                .spawn(move || ctx.run(l))
                .map_err(|source| TargetError::Bind {
                    addr: local,
                    error: source,
                })?;
            listeners.push(h);
            tracing::info!(%local, "listening");
        }
        Ok(TargetHandle {
            shared,
            addrs,
            listeners,
        })
    }
}

/// The TLS server for the configured host PSKs, when a port accepts TLS.
fn tls_server(config: &TargetConfig) -> Result<Option<TlsServer>, TargetError> {
    if !config.ports.iter().any(|p| p.tls.accepts_tls()) {
        return Ok(None);
    }
    let keys = config.tls_keys.clone();
    TlsServer::new(Arc::new(move |id| keys.get(&id.hostnqn).cloned()))
        .map(Some)
        .map_err(|e| TargetError::Tls(e.to_string()))
}

impl TargetHandle {
    /// The bound addresses, in the order of the configured ports.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The shared target state (subsystems, discovery generation counter).
    pub fn state(&self) -> &Arc<TargetState> {
        &self.shared.state
    }

    /// Adds a namespace to a subsystem at run time; hosts get a Namespace Attribute Changed
    /// event. Returns the NSID.
    pub fn add_namespace(&self, subnqn: &str, ns: &NamespaceConfig) -> Result<u32, TargetError> {
        let sub = self
            .state()
            .subsystem(subnqn)
            .ok_or_else(|| TargetError::NoSubsystem(subnqn.to_string()))?;
        Ok(sub.add_namespace(ns)?)
    }

    /// Removes a namespace at run time.
    pub fn remove_namespace(&self, subnqn: &str, nsid: u32) -> Result<(), TargetError> {
        let sub = self
            .state()
            .subsystem(subnqn)
            .ok_or_else(|| TargetError::NoSubsystem(subnqn.to_string()))?;
        Ok(sub.remove_namespace(nsid)?)
    }

    /// Applies a changed configuration without a restart (what `SIGHUP` does in `ulpddp
    /// target`): subsystems are added and removed, access lists replaced, namespaces added,
    /// removed or reopened where their configuration changed (hosts get Namespace Attribute
    /// Changed), and what each existing port exposes is updated. What needs a restart (new
    /// or moved ports, limits, subsystem identity, the write-cache default) is left as it is
    /// and listed in the summary.
    pub fn reload(&self, cfg: &TargetConfig) -> Result<ReloadSummary, TargetError> {
        cfg.validate()?;
        let state = self.state();
        let mut sum = ReloadSummary::default();
        if state.set_host_auth(cfg) {
            sum.changes
                .push("hosts' authentication keys (for new connections)".into());
        }
        if cfg.tls_keys != self.shared.tls_keys {
            sum.not_applied.push("TLS PSKs of hosts".into());
        }
        let wanted: std::collections::HashSet<&str> =
            cfg.subsystems.iter().map(|s| s.nqn.as_str()).collect();
        for old in state.subsystems() {
            if !wanted.contains(old.nqn()) {
                state.remove_subsystem(old.nqn());
                sum.changes.push(format!("removed subsystem {}", old.nqn()));
            }
        }
        for sc in &cfg.subsystems {
            let Some(sub) = state.subsystem(&sc.nqn) else {
                state.add_subsystem(sc)?;
                sum.changes.push(format!("added subsystem {}", sc.nqn));
                continue;
            };
            sub.set_access(sc.allow_any_host, sc.allowed_hosts.clone());
            if sc.volatile_write_cache != sub.volatile_write_cache()
                || sc.serial.as_deref().is_some_and(|s| s != sub.serial())
                || sc.model.as_deref().is_some_and(|m| m != sub.model())
            {
                sum.not_applied
                    .push(format!("{}: serial, model or write cache default", sc.nqn));
            }
            let enabled: Vec<&NamespaceConfig> =
                sc.namespaces.iter().filter(|n| n.enabled).collect();
            for nsid in sub.active_nsids() {
                let keep = enabled.iter().any(|n| {
                    n.nsid.unwrap_or(nsid) == nsid
                        && sub.namespace(nsid).is_some_and(|ns| {
                            *ns.config()
                                == NamespaceConfig {
                                    nsid: Some(nsid),
                                    ..(*n).clone()
                                }
                        })
                });
                if !keep {
                    sub.remove_namespace(nsid)?;
                    sum.changes
                        .push(format!("{}: removed namespace {nsid}", sc.nqn));
                }
            }
            for n in enabled {
                let present = match n.nsid {
                    Some(id) => sub.namespace(id).is_some(),
                    None => sub.active_nsids().iter().any(|&id| {
                        sub.namespace(id)
                            .is_some_and(|ns| ns.config().backing == n.backing)
                    }),
                };
                if !present {
                    let id = sub.add_namespace(n)?;
                    sum.changes
                        .push(format!("{}: added namespace {id}", sc.nqn));
                }
            }
        }
        for p in &cfg.ports {
            match state.port(p.portid) {
                Some(o) if o.cfg.addr == p.addr || o.bound == p.addr => {
                    let same = PortConfig {
                        addr: o.cfg.addr,
                        ..p.clone()
                    } == o.cfg;
                    if p.tls != o.cfg.tls {
                        sum.not_applied
                            .push(format!("port {}: TLS setting", p.portid));
                    } else if !same {
                        state.update_port(p);
                        sum.changes.push(format!("updated port {}", p.portid));
                    }
                }
                _ => sum
                    .not_applied
                    .push(format!("port {} ({}): new or moved", p.portid, p.addr)),
            }
        }
        if cfg.limits != *state.limits() {
            sum.not_applied.push("limits".into());
        }
        Ok(sum)
    }

    /// Stops the listeners, closes every connection and waits for the listener threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Graceful shutdown: stops accepting connections, lets every connection finish the
    /// commands it has in flight (writes waiting for their data, responses not yet sent)
    /// and closes each as soon as it has none, closes what is left after `timeout`, and
    /// flushes every namespace. Returns the number of connections that were cut off with
    /// work in flight.
    pub fn drain(mut self, timeout: Duration) -> usize {
        self.stop_listeners();
        self.shared.draining.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut cut = 0;
        // Bounded: one pass per 10 ms until the deadline.
        loop {
            let conns: Vec<Arc<ConnEntry>> = self.shared.conns().values().cloned().collect();
            if conns.is_empty() {
                break;
            }
            let late = Instant::now() >= deadline;
            let any_active = conns.iter().any(|e| e.active());
            for e in &conns {
                if late {
                    if !e.close_if_idle() {
                        cut += e.active() as usize;
                        e.phase.store(CLOSING, Ordering::Release);
                        let _ = e.stream.shutdown(std::net::Shutdown::Both);
                    }
                    continue;
                }
                // Admin queues go last: losing one tears down its controller's I/O queues.
                if !(e.admin.load(Ordering::Acquire) && any_active) {
                    e.close_if_idle();
                }
            }
            if late {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for s in self.state().subsystems() {
            let _ = s.flush_all();
        }
        self.stop();
        cut
    }

    fn stop_listeners(&mut self) {
        if self.shared.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        for a in &self.addrs {
            // Wake the blocking accept.
            let ip = match a.ip() {
                ip if !ip.is_unspecified() => ip,
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            };
            let _ = TcpStream::connect_timeout(&SocketAddr::new(ip, a.port()), TICK);
        }
        for h in self.listeners.drain(..) {
            let _ = h.join();
        }
    }

    fn stop(&mut self) {
        self.stop_listeners();
        for e in self.shared.conns().values() {
            let _ = e.stream.shutdown(std::net::Shutdown::Both);
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
    shared: Arc<Shared>,
    port: PortConfig,
}

impl Listener {
    fn run(self, l: TcpListener) {
        let state = &self.shared.state;
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = l.accept();
            if self.shared.shutdown.load(Ordering::Acquire) {
                break;
            }
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    let step = backoff.on_error(&e);
                    if step.warn {
                        tracing::warn!(
                            "accept failed: {e}; retrying with backoff (further failures are \
                             logged at debug level)"
                        );
                    } else {
                        tracing::debug!("accept failed: {e}");
                    }
                    std::thread::sleep(step.wait);
                    continue;
                }
            };
            if backoff.on_success() {
                tracing::info!("accepting connections again");
            }
            let peer = peer.ip();
            let mut admitted = state.try_open_connection(peer);
            if admitted.is_err() && self.shared.reclaim_idle() > 0 {
                admitted = state.try_open_connection(peer);
            }
            if let Err(refused) = admitted {
                state
                    .metrics()
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                match refused {
                    AdmissionRefused::TargetFull => tracing::warn!(
                        %peer,
                        limit = state.limits().max_connections,
                        "connection limit reached, closing a new connection"
                    ),
                    AdmissionRefused::AddressFull => tracing::warn!(
                        %peer,
                        limit = state.limits().max_connections_per_address,
                        "connection limit of the address reached, closing a new connection"
                    ),
                }
                continue;
            }
            if state.slots_scarce() {
                self.shared.reclaim_idle();
            }
            if let Err(e) = self.spawn(stream, peer) {
                tracing::warn!("cannot start a connection: {e}");
                state.close_connection(peer);
            }
        }
    }

    fn spawn(&self, stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
        let shared = &self.shared;
        let state = &shared.state;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        let buf = state.socket_buffer_size();
        if buf > 0 {
            let r = SockRef::from(&stream);
            let _ = r.set_send_buffer_size(buf);
            let _ = r.set_recv_buffer_size(buf);
        }
        let local = stream.local_addr()?;
        let peer_addr = stream.peer_addr().ok();
        let ctx = PortContext {
            portid: self.port.portid,
            local_addr: local,
            in_capsule_data_size: self
                .port
                .in_capsule_data_size
                .unwrap_or(state.limits().in_capsule_data_size),
        };
        let stream = Arc::new(stream);
        let for_disc = Arc::clone(&stream);
        let factory = Box::new(move || {
            let s = Arc::clone(&for_disc);
            Box::new(move || {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }) as crate::controller::Disconnector
        });
        state.metrics().open_connection(id, peer_addr, Some(local));
        tracing::info!(conn = id, peer = ?peer_addr, %local, "connection accepted");
        let conn = Connection::new(id, Arc::clone(state), ctx, factory, Instant::now());
        let entry = Arc::new(ConnEntry {
            stream: Arc::clone(&stream),
            last_rx_ms: AtomicU64::new(shared.now_ms()),
            reclaimable: AtomicBool::new(false),
            phase: AtomicU8::new(ACTIVE),
            admin: AtomicBool::new(false),
        });
        shared.conns().insert(id, Arc::clone(&entry));
        let shared = Arc::clone(shared);
        let tls = self.port.tls;
        let spawned = std::thread::Builder::new()
            .name(format!("nvmet-conn-{id}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    if !shared.shutdown.load(Ordering::Acquire) {
                        let limit = shared.state.limits().connect_timeout;
                        match wire::establish(&stream, tls, shared.tls.as_ref(), limit) {
                            Ok(mut w) => {
                                let mut conn = conn;
                                if let Some(h) = w.tls_hostnqn() {
                                    conn.set_tls_hostnqn(h);
                                }
                                serve(&stream, &mut w, conn, &shared, &entry)
                            }
                            Err(why) => {
                                shared
                                    .state
                                    .metrics()
                                    .connections_rejected
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(conn = id, peer = ?peer_addr, "closing: {why}");
                            }
                        }
                    }
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    shared.conns().remove(&id);
                    shared.state.metrics().close_connection(id);
                    shared.state.close_connection(peer);
                    tracing::info!(conn = id, "connection closed");
                }
            });
        if let Err(e) = spawned {
            shared.conns().remove(&id);
            shared.state.metrics().close_connection(id);
            return Err(e);
        }
        Ok(())
    }
}

/// Waits until `stream` can take more bytes or `timeout` passes.
fn wait_writable(stream: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Sends everything `conn` has queued. The peer has `send_timeout` in total to take each
/// PDU's worth ([`Connection::max_send_pdu`]) of bytes once sending stalls; partial progress
/// does not restart the clock.
fn flush_with_deadline(
    stream: &TcpStream,
    wire: &mut Wire,
    conn: &mut Connection,
    state: &TargetState,
) -> std::io::Result<()> {
    let timeout = state.limits().send_timeout;
    let pdu = conn.max_send_pdu() as u64;
    // (start of the current window, bytes sent when it started)
    let mut window: Option<(Instant, u64)> = None;
    loop {
        match wire.with_writer(|w| conn.flush(w)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                let sent = conn.bytes_sent();
                let (start, base) = match window {
                    Some((t, b)) if sent - b < pdu => (t, b),
                    Some(_) => (now, sent),
                    None => {
                        state.count_send_stall();
                        (now, sent)
                    }
                };
                window = Some((start, base));
                let deadline = start + timeout;
                if now >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the host did not take a PDU's worth of data within {timeout:?}"),
                    ));
                }
                wait_writable(stream, deadline - now)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Busy polling ([`crate::TargetConfig::busy_poll`]): tries the socket without blocking
/// until `until` (`None`: no end); no sched_yield between tries (it would hand the core to
/// any runnable thread for a whole time slice). `None`: nothing arrived by then, or a TLS
/// session, which is not polled; the caller blocks. After [`TICK`] of spinning with budget
/// left it returns `WouldBlock`, so that the caller handles its timeouts and spins on.
fn busy_read(
    wire: &mut Wire,
    buf: &mut [u8],
    until: Option<Instant>,
) -> Option<std::io::Result<usize>> {
    let start = Instant::now();
    if until.is_some_and(|u| u <= start) || wire.is_tls() {
        return None;
    }
    let tick = start + TICK;
    loop {
        match wire.try_read(buf) {
            Ok(Some(n)) => return Some(Ok(n)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            return None;
        }
        if now >= tick {
            return Some(Err(std::io::ErrorKind::WouldBlock.into()));
        }
        std::hint::spin_loop();
    }
}

/// Drives one connection until it closes.
fn serve(
    stream: &TcpStream,
    wire: &mut Wire,
    mut conn: Connection,
    shared: &Shared,
    entry: &ConnEntry,
) {
    let mut ticking = false;
    let mut last_rx = Instant::now();
    loop {
        if let Err(e) = flush_with_deadline(stream, wire, &mut conn, &shared.state) {
            if e.kind() == std::io::ErrorKind::TimedOut {
                tracing::warn!(
                    conn = conn.id(),
                    "disconnecting a host that reads too slowly: {e}"
                );
            } else {
                tracing::debug!(conn = conn.id(), "send failed: {e}");
            }
            break;
        }
        if conn.is_closed() {
            break;
        }
        entry.admin.store(
            conn.queue_id().is_some_and(|(_, qid)| qid == 0),
            Ordering::Release,
        );
        entry
            .reclaimable
            .store(conn.idle_reclaimable(), Ordering::Release);
        if shared.draining.load(Ordering::Acquire) && !conn.has_work() {
            break;
        }
        let now = Instant::now();
        let deadline = conn.poll_timeout(now);
        if deadline.is_some() != ticking {
            ticking = deadline.is_some();
            let _ = stream.set_read_timeout(ticking.then_some(TICK));
        }
        let phase = if conn.has_work() { ACTIVE } else { IDLE };
        if entry
            .phase
            .compare_exchange(ACTIVE, phase, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            break; // closing
        }
        // Busy polling is for I/O queues (the admin queue idles between Keep Alives), and
        // only within its budget after the last bytes received: an idle queue sleeps.
        let spin_until = if conn.queue_id().is_some_and(|(_, qid)| qid != 0) {
            last_rx.checked_add(shared.state.busy_poll())
        } else {
            Some(last_rx)
        };
        let buf = conn.recv_buf();
        if buf.is_empty() {
            tracing::warn!(
                conn = conn.id(),
                "receive buffer full while output is stalled"
            );
            break;
        }
        let read = match busy_read(wire, buf, spin_until) {
            Some(r) => r,
            None => wire.read(buf),
        };
        if entry
            .phase
            .compare_exchange(phase, ACTIVE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Closed by another thread while waiting: what arrived meanwhile was in flight
            // on the wire, as at any disconnect.
            break;
        }
        match read {
            Ok(0) => conn.on_eof(),
            Ok(n) => {
                entry.last_rx_ms.store(shared.now_ms(), Ordering::Relaxed);
                last_rx = Instant::now();
                conn.on_recv(n, last_rx)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_and_warns_once_per_episode() {
        let mut b = AcceptBackoff::default();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let first = b.on_error(&emfile);
        assert!(first.warn);
        assert_eq!(first.wait, ACCEPT_BACKOFF.0);
        let mut last = first.wait;
        for _ in 0..20 {
            let s = b.on_error(&emfile);
            assert!(!s.warn, "one warning per episode");
            assert!(s.wait >= last && s.wait <= ACCEPT_BACKOFF.1);
            last = s.wait;
        }
        assert_eq!(last, ACCEPT_BACKOFF.1);
        assert!(b.on_success(), "the episode ends");
        assert!(!b.on_success());
        assert!(b.on_error(&emfile).warn, "a new episode warns again");
        let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        let mut b = AcceptBackoff::default();
        assert_eq!(b.on_error(&aborted).wait, Duration::ZERO);
        assert!(!b.on_success(), "not an episode");
    }
}
