//! The controller model: controller properties (CAP, VS, CC, CSTS) and their state machine,
//! features, keep-alive, asynchronous events, and the error, SMART and changed-namespace
//! logs. A controller is created by an admin-queue Connect and shared by all of its queues
//! (each a TCP connection); it knows nothing about sockets.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nvme_tcp_wire::nvme::log::ChangedNamespaceList;
use nvme_tcp_wire::nvme::{Cap, Cc, Csts, SmartLog, Status, Vs};
use zerocopy::IntoBytes;

use crate::subsystem::Subsystem;

/// Controller property offsets (NVMe over Fabrics, "Controller Properties").
pub use nvme_tcp_wire::nvme::regs as prop;

/// Version reported in VS and Identify Controller: NVMe 1.3.
pub const NVME_VERSION: u32 = Vs::V1_3.0;

/// CAP.TO: worst-case time to become ready, in 500 ms units.
const CAP_TO: u8 = 15;

/// Asynchronous events waiting for an Asynchronous Event Request, per controller.
const MAX_PENDING_EVENTS: usize = 16;
/// Entries kept in the Error Information log.
pub const MAX_ERROR_LOG_ENTRIES: usize = 64;
/// NSIDs kept in the Changed Namespace List log before it reports overflow (0xFFFFFFFF).
pub const MAX_CHANGED_NS: usize = 1024;
/// Outstanding Asynchronous Event Requests accepted (AERL + 1 in Identify Controller).
pub const MAX_OUTSTANDING_AERS: usize = 4;

/// Feature identifiers handled by Get/Set Features (from the wire crate's `FeatureId`).
pub mod fid {
    use nvme_tcp_wire::nvme::FeatureId;
    /// Arbitration.
    pub const ARBITRATION: u8 = FeatureId::Arbitration as u8;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = FeatureId::PowerManagement as u8;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u8 = FeatureId::VolatileWriteCache as u8;
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = FeatureId::NumberOfQueues as u8;
    /// Interrupt Coalescing (accepted, meaningless on fabrics).
    pub const INTERRUPT_COALESCING: u8 = FeatureId::InterruptCoalescing as u8;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = FeatureId::WriteAtomicity as u8;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = FeatureId::AsyncEventConfiguration as u8;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u8 = FeatureId::KeepAliveTimer as u8;
    /// Host Identifier.
    pub const HOST_IDENTIFIER: u8 = FeatureId::HostIdentifier as u8;
}

/// Asynchronous Event Configuration bits this controller can raise.
pub mod aec {
    use nvme_tcp_wire::nvme::AsyncEventConfig;
    /// Namespace Attribute Notices (bit 8).
    pub const NS_ATTR: u32 = AsyncEventConfig::NAMESPACE_ATTRIBUTE;
    /// Discovery Log Page Change Notices (bit 31).
    pub const DISCOVERY_LOG_CHANGE: u32 = AsyncEventConfig::DISCOVERY_LOG_CHANGE;
}

/// Log page identifiers served (from the wire crate's `LogPageId`).
pub mod lid {
    use nvme_tcp_wire::nvme::LogPageId;
    /// Error Information.
    pub const ERROR: u8 = LogPageId::ErrorInformation as u8;
    /// SMART / Health Information.
    pub const SMART: u8 = LogPageId::SmartHealth as u8;
    /// Firmware Slot Information.
    pub const FW_SLOT: u8 = LogPageId::FirmwareSlot as u8;
    /// Changed Namespace List.
    pub const CHANGED_NS: u8 = LogPageId::ChangedNamespaceList as u8;
    /// Discovery.
    pub const DISCOVERY: u8 = LogPageId::Discovery as u8;
}

/// An asynchronous event to report through an Asynchronous Event Request completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncEvent {
    /// Notice: Namespace Attribute Changed (log page 04h).
    NamespaceAttributeChanged,
    /// Notice: Discovery Log Page Change (log page 70h).
    DiscoveryLogChanged,
}

impl AsyncEvent {
    /// Completion DW0 of the Asynchronous Event Request: event type (bits 2:0), event
    /// information (15:8), log page identifier (23:16).
    pub fn dw0(self) -> u32 {
        match self {
            AsyncEvent::NamespaceAttributeChanged => {
                nvme_tcp_wire::nvme::AsyncEvent::namespace_attribute_changed().to_dw0()
            }
            AsyncEvent::DiscoveryLogChanged => {
                nvme_tcp_wire::nvme::AsyncEvent::discovery_log_changed().to_dw0()
            }
        }
    }

    fn aec_bit(self) -> u32 {
        match self {
            AsyncEvent::NamespaceAttributeChanged => aec::NS_ATTR,
            AsyncEvent::DiscoveryLogChanged => aec::DISCOVERY_LOG_CHANGE,
        }
    }

    fn log_page(self) -> u8 {
        match self {
            AsyncEvent::NamespaceAttributeChanged => lid::CHANGED_NS,
            AsyncEvent::DiscoveryLogChanged => lid::DISCOVERY,
        }
    }
}

/// One Error Information log entry (the fields this target fills).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLogEntry {
    /// Error count, unique and increasing.
    pub error_count: u64,
    /// Submission queue ID.
    pub sqid: u16,
    /// Command ID.
    pub cid: u16,
    /// Status (without the phase bit).
    pub status: Status,
    /// Namespace, 0 if none.
    pub nsid: u32,
}

impl ErrorLogEntry {
    /// The 64-byte log entry (TRTYPE TCP; no parameter error location).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut e = nvme_tcp_wire::nvme::ErrorLogEntry::default();
        e.error_count.set(self.error_count);
        e.sqid.set(self.sqid);
        e.cid.set(self.cid);
        // Status field as in a CQE: bits 15:1 status, bit 0 phase tag (0).
        e.status_field.set(self.status.to_u16() << 1);
        e.parameter_error_location.set(0xFFFF);
        e.nsid.set(self.nsid);
        e.trtype = nvme_tcp_wire::nvme::log::trtype::TCP;
        let mut b = [0u8; 64];
        b.copy_from_slice(e.as_bytes());
        b
    }
}

/// Kind of controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerKind {
    /// An I/O controller of an NVM subsystem.
    Io,
    /// A discovery controller.
    Discovery,
}

/// Counters of the SMART / Health Information log page.
#[derive(Debug, Default)]
pub struct SmartCounters {
    /// 512-byte units read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Read commands completed.
    pub host_reads: AtomicU64,
    /// Write commands completed.
    pub host_writes: AtomicU64,
}

#[derive(Debug)]
struct State {
    cc: u32,
    csts: u32,
    granted_io_queues: Option<u16>,
    aec: u32,
    events: VecDeque<AsyncEvent>,
    /// Log pages whose events are masked until the host reads the page (RAE = 0).
    masked_logs: BTreeSet<u8>,
    changed_ns: BTreeSet<u32>,
    changed_ns_overflow: bool,
    error_log: VecDeque<ErrorLogEntry>,
    error_count: u64,
}

/// Something that disconnects one queue's transport (the driver registers it).
pub type Disconnector = Box<dyn Fn() + Send + Sync>;

/// A controller: the state shared by its admin queue and I/O queues.
pub struct Controller {
    cntlid: u16,
    kind: ControllerKind,
    subsystem: Arc<Subsystem>,
    hostnqn: String,
    hostid: [u8; 16],
    portid: u16,
    max_queue_size: u16,
    max_io_queues: u16,
    kato_ms: AtomicU32,
    /// Volatile Write Cache Enable (Set Features 06h).
    wce: AtomicBool,
    last_keep_alive: Mutex<Instant>,
    failed: AtomicBool,
    io_queues: Mutex<BTreeSet<u16>>,
    disconnectors: Mutex<Vec<(u64, Disconnector)>>,
    state: Mutex<State>,
    /// SMART counters.
    pub smart: SmartCounters,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("cntlid", &self.cntlid)
            .field("kind", &self.kind)
            .field("subnqn", &self.subsystem.nqn())
            .field("hostnqn", &self.hostnqn)
            .finish()
    }
}

/// Parameters of a new controller, from the admin Connect.
#[derive(Debug, Clone)]
pub struct ControllerParams {
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Keep Alive Timeout, ms (0: disabled).
    pub kato_ms: u32,
    /// Port the admin queue connected through.
    pub portid: u16,
    /// Largest I/O queue (CAP.MQES + 1).
    pub max_queue_size: u16,
    /// Most I/O queues.
    pub max_io_queues: u16,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    /// A new, disabled controller (CC = 0, CSTS = 0).
    pub fn new(
        cntlid: u16,
        kind: ControllerKind,
        subsystem: Arc<Subsystem>,
        p: ControllerParams,
    ) -> Self {
        let wce = subsystem.volatile_write_cache();
        Self {
            cntlid,
            kind,
            subsystem,
            hostnqn: p.hostnqn,
            hostid: p.hostid,
            portid: p.portid,
            max_queue_size: p.max_queue_size,
            max_io_queues: p.max_io_queues,
            kato_ms: AtomicU32::new(p.kato_ms),
            wce: AtomicBool::new(wce),
            last_keep_alive: Mutex::new(Instant::now()),
            failed: AtomicBool::new(false),
            io_queues: Mutex::new(BTreeSet::new()),
            disconnectors: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                cc: 0,
                csts: 0,
                granted_io_queues: None,
                aec: 0,
                events: VecDeque::new(),
                masked_logs: BTreeSet::new(),
                changed_ns: BTreeSet::new(),
                changed_ns_overflow: false,
                error_log: VecDeque::new(),
                error_count: 0,
            }),
            smart: SmartCounters::default(),
        }
    }

    /// Controller ID.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }
    /// I/O or discovery.
    pub fn kind(&self) -> ControllerKind {
        self.kind
    }
    /// The subsystem.
    pub fn subsystem(&self) -> &Arc<Subsystem> {
        &self.subsystem
    }
    /// Host NQN of the admin Connect.
    pub fn hostnqn(&self) -> &str {
        &self.hostnqn
    }
    /// Host identifier of the admin Connect.
    pub fn hostid(&self) -> [u8; 16] {
        self.hostid
    }
    /// Port of the admin queue.
    pub fn portid(&self) -> u16 {
        self.portid
    }
    /// Largest I/O queue size.
    pub fn max_queue_size(&self) -> u16 {
        self.max_queue_size
    }

    /// CAP: MQES, CQR = 1, TO, CSS = NVM command set, MPSMIN = MPSMAX = 4 KiB.
    pub fn cap(&self) -> u64 {
        Cap(0)
            .with_mqes(self.max_queue_size.max(2) - 1)
            .with_cqr(true)
            .with_to(CAP_TO)
            .with_css(Cap::CSS_NVM)
            .0
    }

    /// Reads a property. Returns Invalid Field for unknown offsets or a wrong size.
    pub fn property_get(&self, offset: u32, eight_bytes: bool) -> Result<u64, Status> {
        let st = lock(&self.state);
        match (offset, eight_bytes) {
            (prop::CAP, true) => Ok(self.cap()),
            (prop::VS, false) => Ok(NVME_VERSION as u64),
            (prop::CC, false) => Ok(st.cc as u64),
            (prop::CSTS, false) => Ok(st.csts as u64),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// Writes a property. Only CC is writable: EN 0→1 sets CSTS.RDY, EN 1→0 resets the
    /// controller, a shutdown notification (SHN) completes at once (CSTS.SHST = 10b) after
    /// flushing the namespaces. Returns true if the controller was reset or shut down, so
    /// the caller aborts the held Asynchronous Event Requests.
    pub fn property_set(&self, offset: u32, eight_bytes: bool, value: u64) -> Result<bool, Status> {
        if offset != prop::CC || eight_bytes {
            return Err(Status::INVALID_FIELD);
        }
        let new = Cc(value as u32);
        let mut st = lock(&self.state);
        let old = Cc(st.cc);
        st.cc = new.0;
        let mut csts = Csts(st.csts);
        let mut reset = false;
        if new.en() && !old.en() {
            csts = csts.with_rdy(true);
        }
        if !new.en() && old.en() {
            csts = csts.with_rdy(false).with_shst(Csts::SHST_NORMAL);
            st.events.clear();
            reset = true;
        }
        st.csts = csts.0;
        if new.shn() != Cc::SHN_NONE && old.shn() == Cc::SHN_NONE {
            drop(st);
            let _ = self.subsystem.flush_all();
            let mut st = lock(&self.state);
            st.csts = Csts(st.csts).with_shst(Csts::SHST_COMPLETE).0;
            return Ok(true);
        }
        if new.shn() == Cc::SHN_NONE {
            st.csts = Csts(st.csts).with_shst(Csts::SHST_NORMAL).0;
        }
        Ok(reset)
    }

    /// True once CC.EN = 1 has made the controller ready.
    pub fn is_ready(&self) -> bool {
        Csts(lock(&self.state).csts).rdy()
    }

    /// Volatile Write Cache Enable: when false, every write is durable before it completes.
    pub fn write_cache_enabled(&self) -> bool {
        self.wce.load(Ordering::Relaxed)
    }

    /// Set Features, Volatile Write Cache. Disabling the cache first writes back what it
    /// holds (the namespaces are flushed), so that no acknowledged write stays volatile.
    pub fn set_write_cache(&self, enabled: bool) -> Result<(), Status> {
        let was = self.wce.swap(enabled, Ordering::AcqRel);
        if was && !enabled && !self.subsystem.flush_all() {
            return Err(Status::WRITE_FAULT);
        }
        Ok(())
    }

    /// Keep Alive Timeout in ms (0: disabled).
    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Relaxed)
    }

    /// Sets the Keep Alive Timeout (Set Features, Keep Alive Timer) and restarts the timer.
    pub fn set_kato_ms(&self, ms: u32) {
        self.kato_ms.store(ms, Ordering::Relaxed);
        self.keep_alive(Instant::now());
    }

    /// Restarts the keep-alive timer (Keep Alive command, or any command: traffic based keep
    /// alive).
    pub fn keep_alive(&self, now: Instant) {
        *lock(&self.last_keep_alive) = now;
    }

    /// When the keep-alive timer expires, if it runs.
    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        let ms = self.kato_ms();
        (ms != 0).then(|| *lock(&self.last_keep_alive) + Duration::from_millis(ms as u64))
    }

    /// True if the controller was torn down (keep-alive expiry, admin queue loss).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Tears the controller down: marks it failed, forgets it in the subsystem and
    /// disconnects every queue. Idempotent.
    pub fn fail(&self) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.subsystem.remove_controller(self.cntlid);
        let ds = std::mem::take(&mut *lock(&self.disconnectors));
        for (_, d) in ds {
            d();
        }
    }

    /// Registers how to disconnect the queue of connection `conn_id`.
    pub fn add_disconnector(&self, conn_id: u64, d: Disconnector) {
        if self.is_failed() {
            d();
            return;
        }
        lock(&self.disconnectors).push((conn_id, d));
    }

    /// Forgets the disconnector of `conn_id` (its connection ended).
    pub fn remove_disconnector(&self, conn_id: u64) {
        lock(&self.disconnectors).retain(|(id, _)| *id != conn_id);
    }

    /// Number of I/O queues granted by Set Features (Number of Queues), if set.
    pub fn granted_io_queues(&self) -> Option<u16> {
        lock(&self.state).granted_io_queues
    }

    /// Set Features, Number of Queues: grants min(requested, limit) queues (0's based values
    /// in and out), only once; returns the CQE DW0.
    pub fn set_number_of_queues(&self, nsqr: u16, ncqr: u16) -> Result<u32, Status> {
        if nsqr == 0xFFFF || ncqr == 0xFFFF {
            return Err(Status::INVALID_FIELD);
        }
        let mut st = lock(&self.state);
        let n = match st.granted_io_queues {
            Some(n) => n,
            None => {
                let want = nsqr.max(ncqr) as u32 + 1;
                let n = want.min(self.max_io_queues as u32) as u16;
                st.granted_io_queues = Some(n);
                n
            }
        };
        let z = (n.max(1) - 1) as u32;
        Ok(z | (z << 16))
    }

    /// Number of Queues as Get Features reports it (0's based, both halves).
    pub fn number_of_queues_dw0(&self) -> u32 {
        let n = lock(&self.state)
            .granted_io_queues
            .unwrap_or(self.max_io_queues);
        let z = (n.max(1) - 1) as u32;
        z | (z << 16)
    }

    /// Claims I/O queue `qid` for a new connection. Fails if the ID is out of range (beyond
    /// the granted or maximum count) or already connected.
    pub fn claim_io_queue(&self, qid: u16) -> bool {
        let limit = self.granted_io_queues().unwrap_or(self.max_io_queues);
        if qid == 0 || qid > limit {
            return false;
        }
        lock(&self.io_queues).insert(qid)
    }

    /// Releases I/O queue `qid`.
    pub fn release_io_queue(&self, qid: u16) {
        lock(&self.io_queues).remove(&qid);
    }

    /// Asynchronous Event Configuration.
    pub fn aec(&self) -> u32 {
        lock(&self.state).aec
    }
    /// Sets the Asynchronous Event Configuration (only the notices this target can raise).
    pub fn set_aec(&self, v: u32) {
        lock(&self.state).aec = v & (aec::NS_ATTR | aec::DISCOVERY_LOG_CHANGE);
    }

    /// Queues an event for the host if it enabled it and the log page is not masked.
    /// Returns true if the event was queued.
    pub fn raise(&self, ev: AsyncEvent) -> bool {
        let mut st = lock(&self.state);
        if st.aec & ev.aec_bit() == 0 || st.masked_logs.contains(&ev.log_page()) {
            return false;
        }
        if st.events.len() >= MAX_PENDING_EVENTS || st.events.contains(&ev) {
            return false;
        }
        st.events.push_back(ev);
        true
    }

    /// Takes the next event to complete an Asynchronous Event Request with, masking its log
    /// page until the host reads it.
    pub fn take_event(&self) -> Option<AsyncEvent> {
        let mut st = lock(&self.state);
        let ev = st.events.pop_front()?;
        st.masked_logs.insert(ev.log_page());
        Some(ev)
    }

    /// True if an event waits.
    pub fn has_event(&self) -> bool {
        !lock(&self.state).events.is_empty()
    }

    /// The host read log page `lid` (with RAE = 0): unmask its events.
    pub fn log_page_read(&self, lid: u8, retain: bool) {
        let mut st = lock(&self.state);
        if lid == lid::CHANGED_NS && !retain {
            st.changed_ns.clear();
            st.changed_ns_overflow = false;
        }
        if !retain {
            st.masked_logs.remove(&lid);
        }
    }

    /// Records a namespace change and raises the notice.
    pub fn namespace_changed(&self, nsid: u32) {
        {
            let mut st = lock(&self.state);
            if st.changed_ns.len() >= MAX_CHANGED_NS {
                st.changed_ns_overflow = true;
            } else {
                st.changed_ns.insert(nsid);
            }
        }
        self.raise(AsyncEvent::NamespaceAttributeChanged);
    }

    /// The Changed Namespace List log page (4096 bytes: up to 1024 NSIDs, or 0xFFFFFFFF
    /// first on overflow).
    pub fn changed_ns_log(&self) -> Vec<u8> {
        let st = lock(&self.state);
        let ids: Vec<u32> = st.changed_ns.iter().copied().collect();
        let list = if st.changed_ns_overflow {
            ChangedNamespaceList::overflow()
        } else {
            // (A set holds at most MAX_CHANGED_NS increasing, non-zero NSIDs.)
            ChangedNamespaceList::from_nsids(&ids)
                .unwrap_or_else(|_| ChangedNamespaceList::overflow())
        };
        list.as_bytes().to_vec()
    }

    /// Records a failed command in the Error Information log (bounded; oldest dropped).
    pub fn log_error(&self, sqid: u16, cid: u16, status: Status, nsid: u32) {
        let mut st = lock(&self.state);
        st.error_count += 1;
        let e = ErrorLogEntry {
            error_count: st.error_count,
            sqid,
            cid,
            status,
            nsid,
        };
        if st.error_log.len() >= MAX_ERROR_LOG_ENTRIES {
            st.error_log.pop_back();
        }
        st.error_log.push_front(e);
    }

    /// The Error Information log: newest first, 64 bytes per entry,
    /// [`MAX_ERROR_LOG_ENTRIES`] entries (unused ones zero).
    pub fn error_log(&self) -> Vec<u8> {
        let st = lock(&self.state);
        let mut page = vec![0u8; 64 * MAX_ERROR_LOG_ENTRIES];
        for (i, e) in st.error_log.iter().enumerate() {
            page[i * 64..(i + 1) * 64].copy_from_slice(&e.to_bytes());
        }
        page
    }

    /// The SMART / Health Information log page (512 bytes).
    pub fn smart_log(&self) -> Vec<u8> {
        let mut p = SmartLog::default();
        // Composite temperature 300 K (27 °C); spare 100 %, threshold 10 %.
        p.composite_temperature.set(300);
        p.available_spare = 100;
        p.available_spare_threshold = 10;
        // Data units are thousands of 512-byte units, rounded up.
        let units = |bytes: u64| (bytes / 512).div_ceil(1000) as u128;
        p.data_units_read
            .set(units(self.smart.bytes_read.load(Ordering::Relaxed)));
        p.data_units_written
            .set(units(self.smart.bytes_written.load(Ordering::Relaxed)));
        p.host_read_commands
            .set(self.smart.host_reads.load(Ordering::Relaxed) as u128);
        p.host_write_commands
            .set(self.smart.host_writes.load(Ordering::Relaxed) as u128);
        p.num_err_log_entries
            .set(lock(&self.state).error_count as u128);
        p.as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubsystemConfig;

    fn ctrl() -> Controller {
        let sub = Arc::new(Subsystem::new(&SubsystemConfig::new("nqn.2024-01.io.test:c")).unwrap());
        Controller::new(
            1,
            ControllerKind::Io,
            sub,
            ControllerParams {
                hostnqn: "nqn.h".into(),
                hostid: [0; 16],
                kato_ms: 0,
                portid: 1,
                max_queue_size: 128,
                max_io_queues: 4,
            },
        )
    }

    #[test]
    fn enabling_sets_ready_and_disabling_resets() {
        let c = ctrl();
        assert_eq!(c.property_get(prop::CSTS, false), Ok(0));
        assert_eq!(c.property_set(prop::CC, false, 0x0046_0001), Ok(false));
        assert_eq!(c.property_get(prop::CSTS, false), Ok(1));
        assert!(c.is_ready());
        assert_eq!(c.property_set(prop::CC, false, 0x0046_0000), Ok(true));
        assert_eq!(c.property_get(prop::CSTS, false), Ok(0));
    }

    #[test]
    fn shutdown_notification_completes_at_once() {
        let c = ctrl();
        c.property_set(prop::CC, false, 1).unwrap();
        assert_eq!(c.property_set(prop::CC, false, 1 | (1 << 14)), Ok(true));
        let csts = c.property_get(prop::CSTS, false).unwrap();
        assert_eq!((csts >> 2) & 3, 0b10);
    }

    #[test]
    fn properties_check_offset_and_size() {
        let c = ctrl();
        assert_eq!(c.property_get(prop::CAP, false), Err(Status::INVALID_FIELD));
        assert_eq!(c.property_get(prop::CAP, true).unwrap() & 0xFFFF, 127);
        assert_eq!(c.property_get(prop::VS, false), Ok(NVME_VERSION as u64));
        assert_eq!(
            c.property_set(prop::CSTS, false, 1),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(c.property_get(0x40, false), Err(Status::INVALID_FIELD));
    }

    #[test]
    fn number_of_queues_is_capped_and_granted_once() {
        let c = ctrl();
        assert_eq!(c.set_number_of_queues(15, 15), Ok(3 | (3 << 16)));
        assert_eq!(c.set_number_of_queues(0, 0), Ok(3 | (3 << 16)));
        assert!(c.claim_io_queue(4));
        assert!(!c.claim_io_queue(4), "already connected");
        assert!(!c.claim_io_queue(5), "beyond the grant");
        assert!(!c.claim_io_queue(0));
    }

    #[test]
    fn events_need_enabling_and_are_masked_until_the_log_is_read() {
        let c = ctrl();
        assert!(!c.raise(AsyncEvent::NamespaceAttributeChanged));
        c.set_aec(aec::NS_ATTR);
        c.namespace_changed(3);
        assert_eq!(c.take_event(), Some(AsyncEvent::NamespaceAttributeChanged));
        c.namespace_changed(4);
        assert!(!c.has_event(), "masked until the log page is read");
        let log = c.changed_ns_log();
        assert_eq!(&log[0..8], &[3, 0, 0, 0, 4, 0, 0, 0]);
        c.log_page_read(lid::CHANGED_NS, false);
        assert!(c.changed_ns_log().iter().all(|&b| b == 0));
        assert!(c.raise(AsyncEvent::NamespaceAttributeChanged));
        assert_eq!(AsyncEvent::NamespaceAttributeChanged.dw0(), 0x0004_0002);
        assert_eq!(AsyncEvent::DiscoveryLogChanged.dw0(), 0x0070_F002);
    }

    #[test]
    fn error_log_is_bounded_and_newest_first() {
        let c = ctrl();
        for i in 0..(MAX_ERROR_LOG_ENTRIES as u16 + 10) {
            c.log_error(1, i, Status::LBA_OUT_OF_RANGE, 1);
        }
        let log = c.error_log();
        assert_eq!(log.len(), 64 * MAX_ERROR_LOG_ENTRIES);
        assert_eq!(u64::from_le_bytes(log[0..8].try_into().unwrap()), 74);
    }

    #[test]
    fn keep_alive_deadline_follows_kato() {
        let c = ctrl();
        assert_eq!(c.keep_alive_deadline(), None);
        c.set_kato_ms(1000);
        let t = Instant::now();
        c.keep_alive(t);
        assert_eq!(c.keep_alive_deadline(), Some(t + Duration::from_secs(1)));
    }
}
