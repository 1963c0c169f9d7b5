//! Target-wide state shared by every connection: subsystems, the discovery subsystem, ports
//! and their bound addresses, the discovery generation counter and the limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{DISCOVERY_NQN, Limits, PortConfig, SubsystemConfig, TargetConfig};
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
    connections: AtomicUsize,
    socket_buffer_size: usize,
    metrics: Arc<TargetMetrics>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
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
            connections: AtomicUsize::new(0),
            metrics: Arc::default(),
            socket_buffer_size: cfg.socket_buffer_size,
        })
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

    /// Counts a new connection if under the limit.
    pub fn try_open_connection(&self) -> bool {
        let max = self.limits.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Uncounts a connection.
    pub fn close_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
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
            });
            for r in &p.cfg.referrals {
                if let (Ok(ip), Ok(port)) = (r.traddr.parse(), r.trsvcid.parse()) {
                    out.push(DiscoveryEntry {
                        subtype: SubType::Referral,
                        portid: r.portid,
                        addr: SocketAddr::new(ip, port),
                        subnqn: DISCOVERY_NQN.to_string(),
                    });
                }
            }
        }
        out
    }
}
