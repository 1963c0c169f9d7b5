//! Subsystems at run time: namespaces, host access control and controller ID allocation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use nvme_tcp_wire::nvme::Status;

use crate::config::{DISCOVERY_NQN, SubsystemConfig};
use crate::controller::{Controller, ControllerKind, ControllerParams};
use crate::namespace::{Namespace, NamespaceConfig, NamespaceOpenError};

/// Lowest and highest dynamic controller IDs (0xFFF0.. are reserved).
pub const CNTLID_MIN: u16 = 1;
/// Highest dynamic controller ID.
pub const CNTLID_MAX: u16 = 0xFFEF;

#[derive(Debug)]
struct Access {
    allow_any_host: bool,
    allowed_hosts: Vec<String>,
}

#[derive(Debug, Default)]
struct Controllers {
    next: u16,
    live: BTreeMap<u16, Weak<Controller>>,
}

/// Errors changing a subsystem's namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceChangeError {
    /// The NSID is in use.
    #[error("namespace {0} exists already")]
    Exists(u32),
    /// No such namespace.
    #[error("no namespace {0}")]
    NotFound(u32),
    /// No free NSID.
    #[error("no free namespace ID")]
    Full,
    /// The backend could not be opened.
    #[error(transparent)]
    Open(#[from] NamespaceOpenError),
}

/// A subsystem: an NVM subsystem with namespaces, or the discovery subsystem.
#[derive(Debug)]
pub struct Subsystem {
    nqn: String,
    kind: ControllerKind,
    serial: String,
    model: String,
    access: RwLock<Access>,
    namespaces: RwLock<BTreeMap<u32, Arc<Namespace>>>,
    controllers: Mutex<Controllers>,
    max_controllers: usize,
    ns_generation: std::sync::atomic::AtomicU64,
    volatile_write_cache: bool,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subsystem {
    /// Builds an NVM subsystem and opens its enabled namespaces.
    pub fn new(cfg: &SubsystemConfig) -> Result<Self, NamespaceChangeError> {
        let s = Self {
            nqn: cfg.nqn.clone(),
            kind: ControllerKind::Io,
            serial: cfg
                .serial
                .clone()
                .unwrap_or_else(|| derive_serial(&cfg.nqn)),
            model: cfg.model.clone().unwrap_or_else(|| "ulp-ddp".to_string()),
            access: RwLock::new(Access {
                allow_any_host: cfg.allow_any_host,
                allowed_hosts: cfg.allowed_hosts.clone(),
            }),
            namespaces: RwLock::new(BTreeMap::new()),
            controllers: Mutex::new(Controllers {
                next: CNTLID_MIN,
                live: BTreeMap::new(),
            }),
            max_controllers: (CNTLID_MAX - CNTLID_MIN + 1) as usize,
            ns_generation: std::sync::atomic::AtomicU64::new(0),
            volatile_write_cache: cfg.volatile_write_cache,
        };
        for ns in cfg.namespaces.iter().filter(|n| n.enabled) {
            s.add_namespace(ns)?;
        }
        Ok(s)
    }

    /// The discovery subsystem (any host may connect).
    pub fn discovery() -> Self {
        let mut s = Self::new(&SubsystemConfig::new(DISCOVERY_NQN))
            .unwrap_or_else(|_| unreachable!("no namespaces to open"));
        s.kind = ControllerKind::Discovery;
        s
    }

    /// Caps the number of live controllers.
    pub fn set_max_controllers(&mut self, n: usize) {
        self.max_controllers = n.max(1);
    }

    /// The NQN.
    pub fn nqn(&self) -> &str {
        &self.nqn
    }
    /// Discovery or NVM subsystem.
    pub fn kind(&self) -> ControllerKind {
        self.kind
    }
    /// Serial number (Identify Controller SN).
    pub fn serial(&self) -> &str {
        &self.serial
    }
    /// Model number (Identify Controller MN).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The Volatile Write Cache Enable a new controller starts with.
    pub fn volatile_write_cache(&self) -> bool {
        self.volatile_write_cache
    }

    /// True if `hostnqn` may connect (allow-any-host, or listed).
    pub fn allows(&self, hostnqn: &str) -> bool {
        let a = read(&self.access);
        a.allow_any_host || a.allowed_hosts.iter().any(|h| h == hostnqn)
    }

    /// Replaces the access list.
    pub fn set_access(&self, allow_any_host: bool, allowed_hosts: Vec<String>) {
        *write(&self.access) = Access {
            allow_any_host,
            allowed_hosts,
        };
    }

    /// The namespace with this ID, if active.
    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        read(&self.namespaces).get(&nsid).cloned()
    }

    /// Changes whenever a namespace is added or removed (lets queues cache lookups).
    pub fn ns_generation(&self) -> u64 {
        self.ns_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Active NSIDs, ascending.
    pub fn active_nsids(&self) -> Vec<u32> {
        read(&self.namespaces).keys().copied().collect()
    }

    /// Highest active NSID (Identify Controller NN reports the maximum allowed, see
    /// [`crate::identify`]).
    pub fn namespace_count(&self) -> usize {
        read(&self.namespaces).len()
    }

    /// Opens and adds a namespace; returns its NSID. Controllers are told (Namespace
    /// Attribute Changed).
    pub fn add_namespace(&self, cfg: &NamespaceConfig) -> Result<u32, NamespaceChangeError> {
        let nsid = {
            let map = read(&self.namespaces);
            match cfg.nsid {
                Some(id) if map.contains_key(&id) => return Err(NamespaceChangeError::Exists(id)),
                Some(id) => id,
                None => (1..u32::MAX)
                    .find(|id| !map.contains_key(id))
                    .ok_or(NamespaceChangeError::Full)?,
            }
        };
        let ns = Arc::new(Namespace::open(&self.nqn, nsid, cfg)?);
        {
            let mut map = write(&self.namespaces);
            if map.contains_key(&nsid) {
                return Err(NamespaceChangeError::Exists(nsid));
            }
            map.insert(nsid, ns);
            self.ns_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        for c in self.controllers() {
            c.namespace_changed(nsid);
        }
        Ok(nsid)
    }

    /// Removes a namespace. Commands in flight keep their reference and finish.
    pub fn remove_namespace(&self, nsid: u32) -> Result<(), NamespaceChangeError> {
        write(&self.namespaces)
            .remove(&nsid)
            .ok_or(NamespaceChangeError::NotFound(nsid))?;
        self.ns_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for c in self.controllers() {
            c.namespace_changed(nsid);
        }
        Ok(())
    }

    /// Flushes every namespace (shutdown notification, write cache disabled, target
    /// shutdown). Errors are logged; returns false if any flush failed.
    pub fn flush_all(&self) -> bool {
        let nss: Vec<_> = read(&self.namespaces).values().cloned().collect();
        let mut ok = true;
        for ns in nss {
            if let Err(e) = ns.backend().flush() {
                tracing::warn!(subnqn = %self.nqn, nsid = ns.nsid(), "flush failed: {e}");
                ok = false;
            }
        }
        ok
    }

    /// Creates a controller with a dynamic controller ID. Fails with Controller Busy when
    /// the subsystem has no free ID or reached its controller limit.
    pub fn create_controller(
        self: &Arc<Self>,
        params: ControllerParams,
    ) -> Result<Arc<Controller>, Status> {
        let mut cs = lock(&self.controllers);
        cs.live.retain(|_, w| w.strong_count() > 0);
        if cs.live.len() >= self.max_controllers {
            return Err(Status::CONNECT_CONTROLLER_BUSY);
        }
        let mut id = cs.next;
        for _ in 0..=(CNTLID_MAX - CNTLID_MIN) {
            if !(CNTLID_MIN..=CNTLID_MAX).contains(&id) {
                id = CNTLID_MIN;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = cs.live.entry(id) {
                let c = Arc::new(Controller::new(id, self.kind, Arc::clone(self), params));
                slot.insert(Arc::downgrade(&c));
                cs.next = id.wrapping_add(1);
                return Ok(c);
            }
            id = id.wrapping_add(1);
        }
        Err(Status::CONNECT_CONTROLLER_BUSY)
    }

    /// The live controller with this ID.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        lock(&self.controllers)
            .live
            .get(&cntlid)
            .and_then(Weak::upgrade)
            .filter(|c| !c.is_failed())
    }

    /// All live controllers.
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        lock(&self.controllers)
            .live
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Forgets a controller (it was torn down).
    pub fn remove_controller(&self, cntlid: u16) {
        lock(&self.controllers).live.remove(&cntlid);
    }
}

/// A 20-character serial number derived from the NQN.
fn derive_serial(nqn: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nqn.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ControllerParams {
        ControllerParams {
            hostnqn: "nqn.h".into(),
            hostid: [1; 16],
            kato_ms: 0,
            portid: 1,
            max_queue_size: 128,
            max_io_queues: 4,
        }
    }

    #[test]
    fn access_control_follows_the_list() {
        let mut cfg = SubsystemConfig::new("nqn.2024-01.io.test:s");
        cfg.allow_any_host = false;
        cfg.allowed_hosts = vec!["nqn.host-a".into()];
        let s = Subsystem::new(&cfg).unwrap();
        assert!(s.allows("nqn.host-a"));
        assert!(!s.allows("nqn.host-b"));
        s.set_access(true, vec![]);
        assert!(s.allows("nqn.host-b"));
    }

    #[test]
    fn controller_ids_are_dynamic_and_reused_after_teardown() {
        let s = Arc::new(Subsystem::new(&SubsystemConfig::new("nqn.2024-01.io.test:s")).unwrap());
        let a = s.create_controller(params()).unwrap();
        let b = s.create_controller(params()).unwrap();
        assert_ne!(a.cntlid(), b.cntlid());
        assert!(s.controller(a.cntlid()).is_some());
        a.fail();
        assert!(s.controller(a.cntlid()).is_none());
    }

    #[test]
    fn controller_limit_answers_busy() {
        let mut s = Subsystem::new(&SubsystemConfig::new("nqn.2024-01.io.test:s")).unwrap();
        s.set_max_controllers(1);
        let s = Arc::new(s);
        let _a = s.create_controller(params()).unwrap();
        assert_eq!(
            s.create_controller(params()).unwrap_err(),
            Status::CONNECT_CONTROLLER_BUSY
        );
    }

    #[test]
    fn namespaces_get_the_lowest_free_id_and_changes_are_noticed() {
        let s = Arc::new(Subsystem::new(&SubsystemConfig::new("nqn.2024-01.io.test:s")).unwrap());
        let c = s.create_controller(params()).unwrap();
        c.set_aec(crate::controller::aec::NS_ATTR);
        let ns = NamespaceConfig::parse("ram:1M").unwrap();
        assert_eq!(s.add_namespace(&ns).unwrap(), 1);
        assert_eq!(s.add_namespace(&ns).unwrap(), 2);
        s.remove_namespace(1).unwrap();
        assert_eq!(s.active_nsids(), vec![2]);
        assert!(c.has_event());
        assert!(matches!(
            s.remove_namespace(1),
            Err(NamespaceChangeError::NotFound(1))
        ));
    }
}
