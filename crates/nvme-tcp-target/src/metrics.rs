//! Counters of a running target, for an exporter (Prometheus) or a control socket to read:
//! per subsystem (Connect results, completions by status), per namespace (commands, bytes,
//! errors and a latency histogram per kind of command) and per connection (who, which queue,
//! commands, bytes, errors).
//!
//! The I/O path only does relaxed atomic adds on counters it holds an `Arc` to (looked up once
//! per connection and namespace); maps are locked only when a connection opens or closes, a
//! namespace is first used on a connection, a command fails, or a reader takes a
//! [`TargetMetrics::snapshot`]. Every map is bounded: connections by the connection limit,
//! subsystems and namespaces by the configuration, statuses by the 11-bit status space.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nvme_tcp_wire::nvme::Status;

/// Upper bounds (seconds) of the latency histogram buckets (+Inf is implied).
pub const LATENCY_BUCKETS_S: [f64; 16] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    100e-3, 250e-3, 1.0,
];

/// The kind of an I/O command, for per-kind figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Read (opcode 02h).
    Read,
    /// Write (opcode 01h).
    Write,
    /// Every other I/O command (Flush, Write Zeroes, Dataset Management, ...).
    Other,
}

impl OpKind {
    /// All kinds, in label order.
    pub const ALL: [OpKind; 3] = [OpKind::Read, OpKind::Write, OpKind::Other];

    /// The kind of an NVM command set opcode.
    pub fn of_opcode(opcode: u8) -> Self {
        match opcode {
            0x02 => OpKind::Read,
            0x01 => OpKind::Write,
            _ => OpKind::Other,
        }
    }

    /// Label value: `read`, `write`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Other => "other",
        }
    }
}

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_S`]).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram read out: cumulative counts per upper bound (the last is +Inf), sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`, without the +Inf bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations (the +Inf bucket).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_s: f64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cum = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_S.len());
        for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            buckets.push((*b, cum));
        }
        cum += self.buckets[LATENCY_BUCKETS_S.len()].load(Relaxed);
        HistogramSnapshot {
            buckets,
            count: cum,
            sum_s: self.sum_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// Counters of one kind of command on one namespace.
#[derive(Debug, Default)]
pub struct OpCounters {
    /// Completed commands (successful or not).
    pub commands: AtomicU64,
    /// Bytes transferred by successful commands.
    pub bytes: AtomicU64,
    /// Commands that completed with an error status.
    pub errors: AtomicU64,
    /// Latency from the command capsule's arrival to its completion being queued.
    pub latency: LatencyHistogram,
}

/// Counters of one namespace.
#[derive(Debug, Default)]
pub struct NamespaceMetrics {
    ops: [OpCounters; 3],
}

impl NamespaceMetrics {
    /// The counters of one kind of command.
    pub fn op(&self, k: OpKind) -> &OpCounters {
        &self.ops[k as usize]
    }
}

/// Counters of one subsystem.
#[derive(Debug, Default)]
pub struct SubsystemMetrics {
    namespaces: RwLock<BTreeMap<u32, Arc<NamespaceMetrics>>>,
    /// Completions with an error status, by `(SCT << 8) | SC`.
    errors: Mutex<BTreeMap<u16, u64>>,
    /// Connect commands accepted (admin and I/O queues).
    pub connects: AtomicU64,
}

impl SubsystemMetrics {
    /// The counters of namespace `nsid`, created on first use.
    pub fn namespace(&self, nsid: u32) -> Arc<NamespaceMetrics> {
        if let Some(m) = read(&self.namespaces).get(&nsid) {
            return Arc::clone(m);
        }
        Arc::clone(write(&self.namespaces).entry(nsid).or_default())
    }

    /// Counts one completion with an error status.
    pub fn count_error(&self, status: Status) {
        let code = u16::from(status.sct()) << 8 | u16::from(status.sc());
        *lock(&self.errors).entry(code).or_insert(0) += 1;
    }
}

/// Who is on a connection, once its Connect succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionIdentity {
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Controller ID.
    pub cntlid: u16,
    /// Queue ID (0: admin).
    pub qid: u16,
}

/// Counters of one connection.
#[derive(Debug)]
pub struct ConnectionMetrics {
    /// Connection number (the target's `conn` id in logs).
    pub id: u64,
    /// The host's address.
    pub peer: Option<SocketAddr>,
    /// Our address.
    pub local: Option<SocketAddr>,
    identity: Mutex<Option<ConnectionIdentity>>,
    /// Completed commands.
    pub commands: AtomicU64,
    /// Commands that completed with an error status.
    pub errors: AtomicU64,
    /// Bytes read by hosts (sent in C2HData).
    pub bytes_read: AtomicU64,
    /// Bytes written by hosts.
    pub bytes_written: AtomicU64,
}

impl ConnectionMetrics {
    fn new(id: u64, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        Self {
            id,
            peer,
            local,
            identity: Mutex::new(None),
            commands: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    /// Who is on the connection, if Connect succeeded.
    pub fn identity(&self) -> Option<ConnectionIdentity> {
        lock(&self.identity).clone()
    }
}

/// The counters of a whole target.
#[derive(Debug, Default)]
pub struct TargetMetrics {
    subsystems: RwLock<BTreeMap<String, Arc<SubsystemMetrics>>>,
    connections: RwLock<BTreeMap<u64, Arc<ConnectionMetrics>>>,
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// TCP connections closed at once because the connection limit was reached.
    pub connections_rejected: AtomicU64,
    /// Connect commands refused (unknown subsystem, host not allowed, bad parameters).
    pub connects_refused: AtomicU64,
}

/// A point-in-time copy of every counter, for exporters.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// TCP connections accepted so far.
    pub connections_accepted: u64,
    /// TCP connections refused for the connection limit.
    pub connections_rejected: u64,
    /// Connect commands refused.
    pub connects_refused: u64,
    /// Per subsystem, by NQN.
    pub subsystems: BTreeMap<String, SubsystemSnapshot>,
    /// Open connections, by id.
    pub connections: Vec<ConnectionSnapshot>,
}

/// One subsystem's counters.
#[derive(Debug, Clone, Default)]
pub struct SubsystemSnapshot {
    /// Connect commands accepted.
    pub connects: u64,
    /// Error completions by `(SCT << 8) | SC`.
    pub errors: BTreeMap<u16, u64>,
    /// Per namespace, by NSID.
    pub namespaces: BTreeMap<u32, Vec<OpSnapshot>>,
}

/// One kind of command on one namespace.
#[derive(Debug, Clone)]
pub struct OpSnapshot {
    /// The kind.
    pub kind: OpKind,
    /// Completed commands.
    pub commands: u64,
    /// Bytes of successful commands.
    pub bytes: u64,
    /// Error completions.
    pub errors: u64,
    /// Latency.
    pub latency: HistogramSnapshot,
}

/// One open connection.
#[derive(Debug, Clone)]
pub struct ConnectionSnapshot {
    /// Connection number.
    pub id: u64,
    /// The host's address.
    pub peer: Option<SocketAddr>,
    /// Our address.
    pub local: Option<SocketAddr>,
    /// Who, once connected.
    pub identity: Option<ConnectionIdentity>,
    /// Completed commands.
    pub commands: u64,
    /// Error completions.
    pub errors: u64,
    /// Bytes read by the host.
    pub bytes_read: u64,
    /// Bytes written by the host.
    pub bytes_written: u64,
}

impl TargetMetrics {
    /// The counters of subsystem `nqn`, created on first use.
    pub fn subsystem(&self, nqn: &str) -> Arc<SubsystemMetrics> {
        if let Some(m) = read(&self.subsystems).get(nqn) {
            return Arc::clone(m);
        }
        Arc::clone(write(&self.subsystems).entry(nqn.to_string()).or_default())
    }

    /// Registers an accepted connection.
    pub fn open_connection(
        &self,
        id: u64,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Arc<ConnectionMetrics> {
        self.connections_accepted.fetch_add(1, Relaxed);
        let m = Arc::new(ConnectionMetrics::new(id, peer, local));
        write(&self.connections).insert(id, Arc::clone(&m));
        m
    }

    /// The counters of connection `id`; a detached set if it was not registered (a
    /// connection driven without the server, as in tests and fuzzing).
    pub fn connection(&self, id: u64) -> Arc<ConnectionMetrics> {
        read(&self.connections)
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Arc::new(ConnectionMetrics::new(id, None, None)))
    }

    /// Forgets a closed connection.
    pub fn close_connection(&self, id: u64) {
        write(&self.connections).remove(&id);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let subsystems = read(&self.subsystems)
            .iter()
            .map(|(nqn, s)| {
                let namespaces = read(&s.namespaces)
                    .iter()
                    .map(|(nsid, ns)| {
                        let ops = OpKind::ALL
                            .iter()
                            .map(|&kind| {
                                let c = ns.op(kind);
                                OpSnapshot {
                                    kind,
                                    commands: c.commands.load(Relaxed),
                                    bytes: c.bytes.load(Relaxed),
                                    errors: c.errors.load(Relaxed),
                                    latency: c.latency.snapshot(),
                                }
                            })
                            .collect();
                        (*nsid, ops)
                    })
                    .collect();
                let snap = SubsystemSnapshot {
                    connects: s.connects.load(Relaxed),
                    errors: lock(&s.errors).clone(),
                    namespaces,
                };
                (nqn.clone(), snap)
            })
            .collect();
        let connections = read(&self.connections)
            .values()
            .map(|c| ConnectionSnapshot {
                id: c.id,
                peer: c.peer,
                local: c.local,
                identity: c.identity(),
                commands: c.commands.load(Relaxed),
                errors: c.errors.load(Relaxed),
                bytes_read: c.bytes_read.load(Relaxed),
                bytes_written: c.bytes_written.load(Relaxed),
            })
            .collect();
        MetricsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_rejected: self.connections_rejected.load(Relaxed),
            connects_refused: self.connects_refused.load(Relaxed),
            subsystems,
            connections,
        }
    }
}

/// What a connection remembers of a command between its capsule and its completion.
#[derive(Debug, Clone, Copy)]
struct Started {
    at: Instant,
    kind: OpKind,
    nsid: u32,
    bytes: u64,
}

/// The per-connection side of the metrics, owned by the connection state machine: it sees
/// each command begin (capsule parsed) and end (completion queued) and updates the counters.
#[derive(Debug)]
pub struct CommandObserver {
    conn: Arc<ConnectionMetrics>,
    sub: Option<Arc<SubsystemMetrics>>,
    namespaces: Vec<(u32, Arc<NamespaceMetrics>)>,
    started: HashMap<u16, Started>,
    max_started: usize,
    io_queue: bool,
}

/// Namespaces a connection keeps looked up (more are looked up again, still correct).
const NS_CACHE: usize = 16;

impl CommandObserver {
    /// An observer for connection `conn`.
    pub fn new(conn: Arc<ConnectionMetrics>) -> Self {
        Self {
            conn,
            sub: None,
            namespaces: Vec::new(),
            started: HashMap::new(),
            max_started: 0,
            io_queue: false,
        }
    }

    /// The connection's Connect succeeded: from now on commands count for `sub`.
    pub fn connected(
        &mut self,
        target: &TargetMetrics,
        identity: ConnectionIdentity,
        queue_size: u16,
    ) {
        let sub = target.subsystem(&identity.subnqn);
        sub.connects.fetch_add(1, Relaxed);
        self.io_queue = identity.qid != 0;
        *lock(&self.conn.identity) = Some(identity);
        self.sub = Some(sub);
        // At most queue_size commands are outstanding: no allocation per command.
        self.max_started = usize::from(queue_size) + 1;
        self.started = HashMap::with_capacity(self.max_started);
    }

    /// A command capsule of an I/O queue was accepted. `bytes` is its data length (SGL length).
    pub fn begin(&mut self, cid: u16, opcode: u8, nsid: u32, bytes: u64, now: Instant) {
        if !self.io_queue || self.started.len() >= self.max_started {
            return;
        }
        self.started.entry(cid).or_insert(Started {
            at: now,
            kind: OpKind::of_opcode(opcode),
            nsid,
            bytes,
        });
    }

    /// The completion of command `cid` was queued with `status`.
    pub fn end(&mut self, cid: u16, status: Status) {
        let ok = status.is_success();
        self.conn.commands.fetch_add(1, Relaxed);
        if !ok {
            self.conn.errors.fetch_add(1, Relaxed);
            if let Some(s) = &self.sub {
                s.count_error(status);
            }
        }
        let Some(st) = self.started.remove(&cid) else {
            return;
        };
        let Some(ns) = self.namespace(st.nsid) else {
            return;
        };
        let c = ns.op(st.kind);
        c.commands.fetch_add(1, Relaxed);
        if ok {
            c.bytes.fetch_add(st.bytes, Relaxed);
            match st.kind {
                OpKind::Read => self.conn.bytes_read.fetch_add(st.bytes, Relaxed),
                OpKind::Write => self.conn.bytes_written.fetch_add(st.bytes, Relaxed),
                OpKind::Other => 0,
            };
        } else {
            c.errors.fetch_add(1, Relaxed);
        }
        c.latency.record(st.at.elapsed());
    }

    fn namespace(&mut self, nsid: u32) -> Option<Arc<NamespaceMetrics>> {
        if let Some((_, m)) = self.namespaces.iter().find(|(n, _)| *n == nsid) {
            return Some(Arc::clone(m));
        }
        let m = self.sub.as_ref()?.namespace(nsid);
        if self.namespaces.len() >= NS_CACHE {
            self.namespaces.clear();
        }
        self.namespaces.push((nsid, Arc::clone(&m)));
        Some(m)
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(qid: u16) -> ConnectionIdentity {
        ConnectionIdentity {
            subnqn: "nqn.2024-01.io.t:s".into(),
            hostnqn: "nqn.h".into(),
            cntlid: 1,
            qid,
        }
    }

    #[test]
    fn commands_count_per_namespace_kind_and_connection() {
        let t = TargetMetrics::default();
        let c = t.open_connection(7, None, None);
        let mut o = CommandObserver::new(t.connection(7));
        o.connected(&t, identity(1), 32);
        let now = Instant::now();
        o.begin(1, 0x02, 1, 4096, now);
        o.begin(2, 0x01, 1, 8192, now);
        o.begin(3, 0x02, 2, 512, now);
        o.begin(4, 0x00, 1, 0, now);
        o.end(1, Status::SUCCESS);
        o.end(2, Status::SUCCESS);
        o.end(3, Status::LBA_OUT_OF_RANGE);
        o.end(4, Status::SUCCESS);
        o.end(99, Status::SUCCESS); // never begun: counts for the connection only
        let s = t.snapshot();
        let sub = &s.subsystems["nqn.2024-01.io.t:s"];
        assert_eq!(sub.connects, 1);
        let ns1 = &sub.namespaces[&1];
        assert_eq!((ns1[0].commands, ns1[0].bytes), (1, 4096));
        assert_eq!((ns1[1].commands, ns1[1].bytes), (1, 8192));
        assert_eq!(ns1[2].commands, 1);
        assert_eq!(ns1[0].latency.count, 1);
        let ns2 = &sub.namespaces[&2];
        assert_eq!((ns2[0].commands, ns2[0].bytes, ns2[0].errors), (1, 0, 1));
        let code = u16::from(Status::LBA_OUT_OF_RANGE.sct()) << 8
            | u16::from(Status::LBA_OUT_OF_RANGE.sc());
        assert_eq!(sub.errors[&code], 1);
        assert_eq!(c.commands.load(Relaxed), 5);
        assert_eq!(c.errors.load(Relaxed), 1);
        assert_eq!(c.bytes_read.load(Relaxed), 4096);
        assert_eq!(c.bytes_written.load(Relaxed), 8192);
        assert_eq!(s.connections.len(), 1);
        assert_eq!(s.connections[0].identity, Some(identity(1)));
        t.close_connection(7);
        assert!(t.snapshot().connections.is_empty());
    }

    #[test]
    fn admin_commands_do_not_enter_namespace_figures() {
        let t = TargetMetrics::default();
        let mut o = CommandObserver::new(t.connection(1));
        o.connected(&t, identity(0), 32);
        o.begin(1, 0x02, 1, 4096, Instant::now());
        o.end(1, Status::SUCCESS);
        assert!(
            t.snapshot().subsystems["nqn.2024-01.io.t:s"]
                .namespaces
                .is_empty()
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(30));
        h.record(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (5e-6, 1));
        assert_eq!(s.buckets.last().unwrap().1, 2);
        assert!(s.sum_s > 5.0);
    }
}
