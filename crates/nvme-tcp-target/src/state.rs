//! Target-wide state shared by every connection: subsystems, the discovery subsystem, ports
//! and their bound addresses, the discovery generation counter and the limits.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::{
    DISCOVERY_NQN, HostAuthKeys, Limits, PortConfig, SubsystemConfig, TargetConfig,
};
use crate::controller::{AsyncEvent, ControllerKind};
use crate::discovery::{DiscoveryEntry, SubType};
use crate::metrics::TargetMetrics;
use crate::subsystem::{NamespaceChangeError, Subsystem};

/// A port with the address it is bound to.
#[derive(Debug, Clone)]
pub struct BoundPort {
    /// Configuration.
    pub cfg: PortConfig,
    /// The bound address (the configured one with port 0 resolved).
    pub bound: SocketAddr,
}

/// The state shared by all connections of a target.
#[derive(Debug)]
pub struct TargetState {
    limits: Limits,
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    discovery: Arc<Subsystem>,
    ports: RwLock<Vec<BoundPort>>,
    genctr: AtomicU64,
    connections: Mutex<ConnectionCounts>,
    send_stalls: AtomicU64,
    socket_buffer_size: usize,
    busy_poll: Duration,
    /// Hosts that must authenticate, by NQN.
    host_auth: RwLock<HashMap<String, Arc<HostAuthKeys>>>,
    metrics: Arc<TargetMetrics>,
}

/// Open connections, in all and per source address and per host NQN.
#[derive(Debug, Default)]
struct ConnectionCounts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    per_host: HashMap<String, usize>,
}

/// Why a new connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionRefused {
    /// `max_connections` connections are open.
    TargetFull,
    /// `max_connections_per_address` connections from this address are open.
    AddressFull,
}

fn count_down<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn host_auth_map(cfg: &TargetConfig) -> HashMap<String, Arc<HostAuthKeys>> {
    cfg.hosts
        .iter()
        .filter_map(|h| Some((h.nqn.clone(), Arc::new(h.dhchap.clone()?))))
        .collect()
}

impl TargetState {
    /// Builds the state of a validated configuration, opening every namespace. Ports are
    /// added once bound ([`TargetState::add_port`]).
    pub fn new(cfg: &TargetConfig) -> Result<Self, NamespaceChangeError> {
        let mut subsystems = BTreeMap::new();
        for s in &cfg.subsystems {
            let mut sub = Subsystem::new(s)?;
            sub.set_max_controllers(cfg.limits.max_controllers as usize);
            subsystems.insert(s.nqn.clone(), Arc::new(sub));
        }
        let mut disc = Subsystem::discovery();
        disc.set_max_controllers(cfg.limits.max_controllers as usize);
        Ok(Self {
            limits: cfg.limits.clone(),
            subsystems: RwLock::new(subsystems),
            discovery: Arc::new(disc),
            ports: RwLock::new(Vec::new()),
            genctr: AtomicU64::new(1),
            connections: Mutex::new(ConnectionCounts::default()),
            send_stalls: AtomicU64::new(0),
            metrics: Arc::default(),
            socket_buffer_size: cfg.socket_buffer_size,
            busy_poll: cfg.busy_poll,
            host_auth: RwLock::new(host_auth_map(cfg)),
        })
    }

    /// The DH-HMAC-CHAP settings of `hostnqn` when it must authenticate.
    pub fn host_auth(&self, hostnqn: &str) -> Option<Arc<HostAuthKeys>> {
        read(&self.host_auth).get(hostnqn).cloned()
    }

    /// Replaces the hosts' DH-HMAC-CHAP settings (queues connected from now on use them;
    /// connected queues keep what they authenticated with). Returns whether they changed.
    pub fn set_host_auth(&self, cfg: &TargetConfig) -> bool {
        let new = host_auth_map(cfg);
        let mut cur = write(&self.host_auth);
        let changed =
            cur.len() != new.len() || new.iter().any(|(k, v)| cur.get(k).is_none_or(|c| c != v));
        *cur = new;
        changed
    }

    /// The target's counters (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<TargetMetrics> {
        &self.metrics
    }

    /// Limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Requested socket buffer size.
    pub fn socket_buffer_size(&self) -> usize {
        self.socket_buffer_size
    }

    /// How long a connection spins on its socket before blocking
    /// ([`crate::TargetConfig::busy_poll`]).
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// The subsystem (or the discovery subsystem) with this NQN.
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        if nqn == DISCOVERY_NQN {
            return Some(Arc::clone(&self.discovery));
        }
        read(&self.subsystems).get(nqn).cloned()
    }

    /// All NVM subsystems.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        read(&self.subsystems).values().cloned().collect()
    }

    /// Records a bound port.
    pub fn add_port(&self, cfg: PortConfig, bound: SocketAddr) {
        write(&self.ports).push(BoundPort { cfg, bound });
        self.config_changed();
    }

    /// Replaces what port `portid` exposes (subsystems, referrals, in-capsule size) with
    /// `cfg`, keeping its address. Returns false if there is no such port.
    pub fn update_port(&self, cfg: &PortConfig) -> bool {
        let mut ports = write(&self.ports);
        let Some(p) = ports.iter_mut().find(|p| p.cfg.portid == cfg.portid) else {
            return false;
        };
        let addr = p.cfg.addr;
        p.cfg = PortConfig {
            addr,
            ..cfg.clone()
        };
        drop(ports);
        self.config_changed();
        true
    }

    /// The port with this ID.
    pub fn port(&self, portid: u16) -> Option<BoundPort> {
        read(&self.ports)
            .iter()
            .find(|p| p.cfg.portid == portid)
            .cloned()
    }

    /// Discovery Log Page generation counter.
    pub fn genctr(&self) -> u64 {
        self.genctr.load(Ordering::Acquire)
    }

    /// Bumps the generation counter and tells the discovery controllers.
    pub fn config_changed(&self) {
        self.genctr.fetch_add(1, Ordering::AcqRel);
        for c in self.discovery.controllers() {
            c.raise(AsyncEvent::DiscoveryLogChanged);
        }
    }

    /// Adds a subsystem at run time.
    pub fn add_subsystem(
        &self,
        cfg: &SubsystemConfig,
    ) -> Result<Arc<Subsystem>, NamespaceChangeError> {
        let mut sub = Subsystem::new(cfg)?;
        sub.set_max_controllers(self.limits.max_controllers as usize);
        let sub = Arc::new(sub);
        write(&self.subsystems).insert(cfg.nqn.clone(), Arc::clone(&sub));
        self.config_changed();
        Ok(sub)
    }

    /// Removes a subsystem at run time; its controllers are torn down.
    pub fn remove_subsystem(&self, nqn: &str) -> bool {
        let Some(sub) = write(&self.subsystems).remove(nqn) else {
            return false;
        };
        for c in sub.controllers() {
            c.fail();
        }
        self.config_changed();
        true
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, ConnectionCounts> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `peer` if under the target-wide and per-address limits.
    pub fn try_open_connection(&self, peer: IpAddr) -> Result<(), AdmissionRefused> {
        let mut c = self.counts();
        if c.total >= self.limits.max_connections {
            return Err(AdmissionRefused::TargetFull);
        }
        let n = c.per_address.entry(peer).or_insert(0);
        if *n >= self.limits.max_connections_per_address {
            return Err(AdmissionRefused::AddressFull);
        }
        *n += 1;
        c.total += 1;
        Ok(())
    }

    /// Uncounts a connection from `peer`.
    pub fn close_connection(&self, peer: IpAddr) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        count_down(&mut c.per_address, &peer);
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.counts().total
    }

    /// True when connection slots are scarce: idle queues may then be disconnected.
    pub fn slots_scarce(&self) -> bool {
        let l = &self.limits;
        self.connection_count() * 100 >= l.max_connections * l.idle_reclaim_percent as usize
    }

    /// Counts a connected queue of `hostnqn` if under the per-host limit.
    pub fn claim_host_slot(&self, hostnqn: &str) -> bool {
        let mut c = self.counts();
        let max = self.limits.max_connections_per_host;
        match c.per_host.get_mut(hostnqn) {
            Some(n) if *n >= max => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                c.per_host.insert(hostnqn.to_string(), 1);
                true
            }
        }
    }

    /// Uncounts a queue of `hostnqn`.
    pub fn release_host_slot(&self, hostnqn: &str) {
        count_down(&mut self.counts().per_host, &hostnqn.to_string());
    }

    /// Connected queues of `hostnqn`.
    pub fn host_connection_count(&self, hostnqn: &str) -> usize {
        self.counts().per_host.get(hostnqn).copied().unwrap_or(0)
    }

    /// Counts a connection whose sending stalled because the peer did not read.
    pub fn count_send_stall(&self) {
        self.send_stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// How often sending stalled on a peer that did not read (each stall is waited out
    /// without holding any namespace lock).
    pub fn send_stalls(&self) -> u64 {
        self.send_stalls.load(Ordering::Relaxed)
    }

    /// The discovery log entries for `hostnqn`, seen from a connection to port `portid`
    /// whose local address is `local`: every subsystem the host may use, on every port
    /// exposing it; the current discovery subsystem on this port; this port's referrals.
    /// A port bound to an unspecified address advertises `local`'s IP.
    pub fn discovery_entries(
        &self,
        hostnqn: &str,
        portid: u16,
        local: SocketAddr,
    ) -> Vec<DiscoveryEntry> {
        let ports = read(&self.ports).clone();
        let subs = self.subsystems();
        let mut out = Vec::new();
        let advertised = |p: &BoundPort| {
            let ip = if p.bound.ip().is_unspecified() {
                local.ip()
            } else {
                p.bound.ip()
            };
            SocketAddr::new(ip, p.bound.port())
        };
        for p in &ports {
            for s in &subs {
                if p.cfg.exposes(s.nqn()) && s.allows(hostnqn) && s.kind() == ControllerKind::Io {
                    out.push(DiscoveryEntry {
                        subtype: SubType::NvmSubsystem,
                        portid: p.cfg.portid,
                        addr: advertised(p),
                        subnqn: s.nqn().to_string(),
                        tls: p.cfg.tls,
                    });
                }
            }
        }
        if let Some(p) = ports.iter().find(|p| p.cfg.portid == portid) {
            out.push(DiscoveryEntry {
                subtype: SubType::CurrentDiscovery,
                portid,
                addr: advertised(p),
                subnqn: DISCOVERY_NQN.to_string(),
                tls: p.cfg.tls,
            });
            for r in &p.cfg.referrals {
                if let (Ok(ip), Ok(port)) = (r.traddr.parse(), r.trsvcid.parse()) {
                    out.push(DiscoveryEntry {
                        subtype: SubType::Referral,
                        portid: r.portid,
                        addr: SocketAddr::new(ip, port),
                        subnqn: DISCOVERY_NQN.to_string(),
                        tls: crate::config::PortTls::None,
                    });
                }
            }
        }
        out
    }
}
