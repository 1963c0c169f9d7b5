//! Target configuration: listeners (ports), subsystems, namespaces, access control and
//! resource limits, built in code or loaded from the JSON that `nvmetcli save` writes.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nvme_tcp_auth::Secret;
use nvme_tcp_tls::ConfiguredPsk;
use nvme_tcp_wire::nvme::{DhGroupId, HashId};
use serde_json::Value;

use crate::namespace::{Backing, LbaSize, NamespaceConfig, parse_hex_id};

/// NQN of the discovery subsystem (NVMe base specification).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// IANA port of NVMe-oF I/O controllers.
pub const DEFAULT_IO_PORT: u16 = 4420;
/// IANA port of the NVMe/TCP discovery service.
pub const DEFAULT_DISCOVERY_PORT: u16 = 8009;

/// Largest C2HData payload a target may be configured to send (one PDU's data must fit the
/// transmit gather list).
pub const MAX_C2H_DATA: u32 = 2 << 20;

/// Longest NQN (NVMe base specification: 223 bytes, NUL-terminated in a 256-byte field).
pub const MAX_NQN_LEN: usize = 223;

/// A configuration error; `field` names the offending field (a JSON path for config files).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has a bad value or is missing.
    #[error("{field}: {reason}")]
    Field {
        /// The field, e.g. `subsystems[0].namespaces[1].device.path`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("reading {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not valid JSON: {error}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: serde_json::Error,
    },
}

impl ConfigError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Resource limits; every one is enforced, and none lets input grow memory without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open TCP connections across all ports; further connections are closed at accept.
    /// The target raises its open-file limit to what this needs at start, or refuses to
    /// start.
    pub max_connections: usize,
    /// Open connections from one source IP address; further ones are closed at accept.
    pub max_connections_per_address: usize,
    /// Connected queues (admin and I/O) of one host NQN; a further Connect is answered
    /// Controller Busy.
    pub max_connections_per_host: usize,
    /// A connection that finished no ICReq and Connect within this time is closed.
    pub connect_timeout: Duration,
    /// Idle deadline of I/O queues and of admin queues without keep-alive (KATO 0): when
    /// connection slots are scarce (see `idle_reclaim_percent`), such a queue that received
    /// nothing for this long is disconnected to make room. Zero disables it.
    pub idle_timeout: Duration,
    /// Slots are scarce when this percentage of `max_connections` is open.
    pub idle_reclaim_percent: u8,
    /// Total time the peer has to take one PDU (the largest C2HData PDU's worth of bytes)
    /// once sending stalls; a host that reads slower is disconnected.
    pub send_timeout: Duration,
    /// I/O queues per controller (the Number of Queues feature is capped to this).
    pub max_io_queues: u16,
    /// Entries per I/O queue (CAP.MQES + 1); a Connect asking for more gets Invalid
    /// Parameters.
    pub max_queue_size: u16,
    /// Entries of an admin queue.
    pub max_admin_queue_size: u16,
    /// In-capsule data accepted on I/O queues, bytes (IOCCSZ = 4 + this / 16). Admin and
    /// Fabrics commands always accept 8 KiB.
    pub in_capsule_data_size: u32,
    /// MAXH2CDATA advertised in ICResp: largest H2CData payload, bytes.
    pub maxh2cdata: u32,
    /// Maximum data transfer size of one command, bytes (a power of two ≥ 4096; MDTS).
    pub mdts: u32,
    /// Largest C2HData payload the target sends (at most [`MAX_C2H_DATA`]); reads are split
    /// at this size.
    pub c2h_data_max: u32,
    /// Bytes of solicited write data (outstanding R2Ts) plus staged read data per
    /// connection; commands wait for room beyond this.
    pub max_inflight_data: u32,
    /// Controllers per subsystem.
    pub max_controllers: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_address: 512,
            max_connections_per_host: 512,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            idle_reclaim_percent: 75,
            send_timeout: Duration::from_secs(30),
            max_io_queues: 64,
            max_queue_size: 1024,
            max_admin_queue_size: 128,
            in_capsule_data_size: 8192,
            maxh2cdata: 128 * 1024,
            mdts: 1 << 20,
            c2h_data_max: 128 * 1024,
            max_inflight_data: 16 << 20,
            max_controllers: 1024,
        }
    }
}

impl Limits {
    /// Checks the limits for consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = |n: &str, r: &str| Err(ConfigError::field(format!("limits.{n}"), r));
        if self.max_connections == 0 {
            return f("max_connections", "must be at least 1");
        }
        if self.max_connections_per_address == 0 {
            return f("max_connections_per_address", "must be at least 1");
        }
        if self.max_connections_per_host < 2 {
            return f(
                "max_connections_per_host",
                "must be at least 2 (an admin and an I/O queue)",
            );
        }
        if self.max_io_queues == 0 {
            return f(
                "max_io_queues",
                "must be at least 1 (a controller without I/O queues cannot do I/O)",
            );
        }
        if self.idle_reclaim_percent > 100 {
            return f("idle_reclaim_percent", "must be between 0 and 100");
        }
        if self.connect_timeout.is_zero() {
            return f("connect_timeout", "must be above zero");
        }
        if self.send_timeout.is_zero() {
            return f("send_timeout", "must be above zero");
        }
        if self.max_queue_size < 2 || self.max_admin_queue_size < 2 {
            return f("max_queue_size", "queues need at least 2 entries");
        }
        if self.maxh2cdata < 4096 || !self.maxh2cdata.is_multiple_of(4) || self.maxh2cdata > 1 << 24
        {
            return f(
                "maxh2cdata",
                "must be a multiple of 4 between 4096 and 16 MiB",
            );
        }
        if !self.mdts.is_power_of_two() || self.mdts < 4096 || self.mdts > 1 << 26 {
            return f("mdts", "must be a power of two between 4 KiB and 64 MiB");
        }
        if self.c2h_data_max < 4096
            || !self.c2h_data_max.is_multiple_of(4)
            || self.c2h_data_max > MAX_C2H_DATA
        {
            return f(
                "c2h_data_max",
                "must be a multiple of 4 between 4096 and 2 MiB",
            );
        }
        if !self.in_capsule_data_size.is_multiple_of(16) || self.in_capsule_data_size > 1 << 20 {
            return f(
                "in_capsule_data_size",
                "must be a multiple of 16 of at most 1 MiB",
            );
        }
        if self.max_inflight_data < self.mdts {
            return f("max_inflight_data", "must be at least mdts");
        }
        if self.max_controllers == 0 || self.max_controllers > 0xFFEF {
            return f("max_controllers", "must be between 1 and 65519");
        }
        Ok(())
    }
}

/// Which subsystems a port exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSubsystems {
    /// Every configured subsystem.
    All,
    /// Only these NQNs (empty: a discovery-only port).
    Listed(Vec<String>),
}

/// A discovery referral advertised by a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referral {
    /// Port ID of the referred discovery service.
    pub portid: u16,
    /// Transport address.
    pub traddr: String,
    /// Transport service ID (TCP port).
    pub trsvcid: String,
    /// Address family: true for IPv6.
    pub ipv6: bool,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Port ID reported in discovery log entries.
    pub portid: u16,
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Subsystems reachable through this port; discovery is always reachable.
    pub subsystems: PortSubsystems,
    /// Referrals listed in the discovery log of this port.
    pub referrals: Vec<Referral>,
    /// In-capsule data size on this port's I/O queues; `None` uses the limits.
    pub in_capsule_data_size: Option<u32>,
    /// TLS 1.3 on this port (nvmetcli `addr.tsas` / `addr.treq`).
    pub tls: PortTls,
}

/// The secure channel of a port: nvmet's `addr_tsas` (`none` / `tls1.3`) and `addr_treq`
/// (`required` / `not required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortTls {
    /// Clear text only (`tsas` none); a TLS ClientHello is not an NVMe/TCP PDU and closes
    /// the connection.
    #[default]
    None,
    /// TLS 1.3 only (`tsas` tls1.3, `treq` required): a connection that does not start with a
    /// TLS handshake is closed.
    Required,
    /// TLS 1.3 or clear text (`tsas` tls1.3, `treq` not required): the first byte tells (a
    /// TLS handshake record is 0x16, an ICReq 0x00).
    NotRequired,
}

impl PortTls {
    /// True if TLS connections are accepted.
    pub fn accepts_tls(self) -> bool {
        self != PortTls::None
    }
}

impl PortConfig {
    /// A port exposing every subsystem.
    pub fn new(portid: u16, addr: SocketAddr) -> Self {
        Self {
            portid,
            addr,
            subsystems: PortSubsystems::All,
            referrals: Vec::new(),
            in_capsule_data_size: None,
            tls: PortTls::None,
        }
    }

    /// True if `nqn` is reachable through this port.
    pub fn exposes(&self, nqn: &str) -> bool {
        match &self.subsystems {
            PortSubsystems::All => true,
            PortSubsystems::Listed(l) => l.iter().any(|n| n == nqn),
        }
    }
}

/// A subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsystemConfig {
    /// Subsystem NQN.
    pub nqn: String,
    /// Accept any host NQN.
    pub allow_any_host: bool,
    /// Host NQNs allowed to connect when `allow_any_host` is false.
    pub allowed_hosts: Vec<String>,
    /// Namespaces.
    pub namespaces: Vec<NamespaceConfig>,
    /// Serial number (Identify Controller SN, ≤ 20 ASCII characters); derived when `None`.
    pub serial: Option<String>,
    /// Model number (Identify Controller MN, ≤ 40 ASCII characters).
    pub model: Option<String>,
    /// Initial Volatile Write Cache Enable of this subsystem's controllers (a host changes
    /// it with Set Features). With the cache disabled, every write to a file or block
    /// device namespace is on stable storage before it completes; with it enabled, only
    /// writes with FUA are, and others once the host sends Flush.
    pub volatile_write_cache: bool,
}

impl SubsystemConfig {
    /// A subsystem open to any host, without namespaces.
    pub fn new(nqn: impl Into<String>) -> Self {
        Self {
            nqn: nqn.into(),
            allow_any_host: true,
            allowed_hosts: Vec::new(),
            namespaces: Vec::new(),
            serial: None,
            model: None,
            volatile_write_cache: true,
        }
    }

    /// Adds a namespace (builder style).
    pub fn namespace(mut self, ns: NamespaceConfig) -> Self {
        self.namespaces.push(ns);
        self
    }

    /// True if `hostnqn` may connect.
    pub fn allows(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.allowed_hosts.iter().any(|h| h == hostnqn)
    }
}

/// DH-HMAC-CHAP settings of a host (nvmetcli's `dhchap_*` fields of a `hosts` entry): a
/// host with a key must authenticate on every queue before anything but authentication is
/// allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAuthKeys {
    /// `dhchap_key`: the host's secret.
    pub key: Secret,
    /// `dhchap_ctrl_key`: the controller's secret, for hosts that authenticate the
    /// controller (bidirectional).
    pub ctrl_key: Option<Secret>,
    /// `dhchap_hash`: the hash function (default `hmac(sha256)`).
    pub hash: HashId,
    /// `dhchap_dhgroup`: the DH group (default `null`).
    pub dhgroup: DhGroupId,
}

impl HostAuthKeys {
    /// A host key with the default hash (SHA-256) and group (null).
    pub fn new(key: Secret) -> Self {
        HostAuthKeys {
            key,
            ctrl_key: None,
            hash: HashId::Sha256,
            dhgroup: DhGroupId::Null,
        }
    }
}

/// A known host (nvmetcli's top-level `hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Host NQN.
    pub nqn: String,
    /// Its authentication settings; `None`: the host connects without authenticating.
    pub dhchap: Option<HostAuthKeys>,
}

/// The whole target configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Listeners.
    pub ports: Vec<PortConfig>,
    /// Subsystems (the discovery subsystem is implicit).
    pub subsystems: Vec<SubsystemConfig>,
    /// Known hosts (nvmetcli's top-level `hosts`) and their authentication keys.
    pub hosts: Vec<HostConfig>,
    /// Configured TLS PSKs by host NQN (the `tls_key` of a `hosts` entry, in the PSK
    /// interchange format). A TLS handshake names the host in its PSK identity.
    pub tls_keys: BTreeMap<String, ConfiguredPsk>,
    /// Resource limits.
    pub limits: Limits,
    /// Worker threads per I/O connection are not used; this is the per-connection socket
    /// buffer size requested with SO_SNDBUF/SO_RCVBUF, bytes (0 keeps the system default).
    pub socket_buffer_size: usize,
    /// Busy polling: how long the thread of an I/O queue keeps trying its socket without
    /// sleeping after the last bytes it received, before it blocks in a read (Linux's
    /// `net.core.busy_poll`, done in user space since a loopback or TUN socket has no NAPI
    /// context to poll). A busy connection then never waits for a wake-up, at the price of a
    /// busy core; pollers sharing a core take turns by time slice, so this suits as many
    /// busy I/O queues as the target has cores. Clear-text connections only. `ZERO` (the
    /// default) blocks at once.
    pub busy_poll: Duration,
}

impl Default for TargetConfig {
    /// 127.0.0.1:4420 exposing every subsystem and 127.0.0.1:8009 for discovery only, no
    /// subsystems.
    fn default() -> Self {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let mut disc = PortConfig::new(2, SocketAddr::new(lo, DEFAULT_DISCOVERY_PORT));
        disc.subsystems = PortSubsystems::Listed(Vec::new());
        Self {
            ports: vec![
                PortConfig::new(1, SocketAddr::new(lo, DEFAULT_IO_PORT)),
                disc,
            ],
            subsystems: Vec::new(),
            hosts: Vec::new(),
            tls_keys: BTreeMap::new(),
            limits: Limits::default(),
            socket_buffer_size: 4 << 20,
            busy_poll: Duration::ZERO,
        }
    }
}

impl TargetConfig {
    /// One listener on `addr` exposing every subsystem (no separate discovery port); handy
    /// for tests and `perf` (use port 0 and read the bound port from the handle).
    pub fn single_port(addr: SocketAddr) -> Self {
        Self {
            ports: vec![PortConfig::new(1, addr)],
            ..Self::default()
        }
    }

    /// Adds a known host, with its authentication keys (builder style).
    pub fn host(mut self, h: HostConfig) -> Self {
        self.hosts.push(h);
        self
    }

    /// The authentication settings of `hostnqn`, if it must authenticate.
    pub fn host_auth(&self, hostnqn: &str) -> Option<&HostAuthKeys> {
        self.hosts
            .iter()
            .find(|h| h.nqn == hostnqn)
            .and_then(|h| h.dhchap.as_ref())
    }

    /// Adds a subsystem (builder style).
    pub fn subsystem(mut self, s: SubsystemConfig) -> Self {
        self.subsystems.push(s);
        self
    }

    /// Checks the whole configuration; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        if self.ports.is_empty() {
            return Err(ConfigError::field("ports", "no port to listen on"));
        }
        let mut host_nqns = HashSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            check_nqn(&h.nqn).map_err(|r| ConfigError::field(format!("hosts[{i}].nqn"), r))?;
            if !host_nqns.insert(h.nqn.as_str()) {
                return Err(ConfigError::field(
                    format!("hosts[{i}].nqn"),
                    "the same host twice",
                ));
            }
        }
        let mut nqns = HashSet::new();
        for (i, s) in self.subsystems.iter().enumerate() {
            let at = format!("subsystems[{i}]");
            check_nqn(&s.nqn).map_err(|r| ConfigError::field(format!("{at}.nqn"), r))?;
            if s.nqn == DISCOVERY_NQN {
                return Err(ConfigError::field(
                    format!("{at}.nqn"),
                    "the discovery NQN is served implicitly",
                ));
            }
            if !nqns.insert(s.nqn.as_str()) {
                return Err(ConfigError::field(
                    format!("{at}.nqn"),
                    format!("duplicate subsystem {}", s.nqn),
                ));
            }
            for (j, h) in s.allowed_hosts.iter().enumerate() {
                check_nqn(h)
                    .map_err(|r| ConfigError::field(format!("{at}.allowed_hosts[{j}]"), r))?;
            }
            if let Some(sn) = &s.serial
                && (sn.len() > 20 || !sn.is_ascii())
            {
                return Err(ConfigError::field(
                    format!("{at}.attr.serial"),
                    "at most 20 ASCII characters",
                ));
            }
            if let Some(mn) = &s.model
                && (mn.len() > 40 || !mn.is_ascii())
            {
                return Err(ConfigError::field(
                    format!("{at}.attr.model"),
                    "at most 40 ASCII characters",
                ));
            }
            let mut nsids = HashSet::new();
            for (j, ns) in s.namespaces.iter().enumerate() {
                if let Some(id) = ns.nsid
                    && (id == 0 || id == u32::MAX || !nsids.insert(id))
                {
                    return Err(ConfigError::field(
                        format!("{at}.namespaces[{j}].nsid"),
                        format!("NSID {id} is reserved or used twice"),
                    ));
                }
            }
        }
        let mut addrs = HashSet::new();
        let mut ids = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let at = format!("ports[{i}]");
            if !ids.insert(p.portid) {
                return Err(ConfigError::field(
                    format!("{at}.portid"),
                    format!("duplicate port ID {}", p.portid),
                ));
            }
            if p.addr.port() != 0 && !addrs.insert(p.addr) {
                return Err(ConfigError::field(
                    format!("{at}.addr"),
                    format!("{} used twice", p.addr),
                ));
            }
            if let PortSubsystems::Listed(l) = &p.subsystems {
                for (j, n) in l.iter().enumerate() {
                    if !nqns.contains(n.as_str()) {
                        return Err(ConfigError::field(
                            format!("{at}.subsystems[{j}]"),
                            format!("no subsystem {n}"),
                        ));
                    }
                }
            }
            if p.tls.accepts_tls() && self.tls_keys.is_empty() {
                return Err(ConfigError::field(
                    format!("{at}.addr.tsas"),
                    "a TLS port needs at least one host with a TLS PSK (hosts[].tls_key)",
                ));
            }
            if let Some(ics) = p.in_capsule_data_size
                && (!ics.is_multiple_of(16) || ics > 1 << 20)
            {
                return Err(ConfigError::field(
                    format!("{at}.param.inline_data_size"),
                    "must be a multiple of 16 of at most 1 MiB",
                ));
            }
        }
        Ok(())
    }

    /// Loads the JSON that `nvmetcli save` writes (`hosts`, `ports`, `subsystems`). Ports
    /// must use `trtype` `tcp`. A namespace `device.path` is a file or block device, or one
    /// of this target's specifications (`ram:SIZE`, `null[:SIZE]`, `file:PATH[,direct]`).
    /// Limits keep their defaults.
    pub fn from_nvmetcli_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: path.to_path_buf(),
            error: source,
        })?;
        Self::from_nvmetcli_json(&v)
    }

    /// As [`TargetConfig::from_nvmetcli_file`], from parsed JSON.
    pub fn from_nvmetcli_json(v: &Value) -> Result<Self, ConfigError> {
        let root = J::root(v);
        root.object()?;
        let mut cfg = TargetConfig {
            ports: Vec::new(),
            subsystems: Vec::new(),
            hosts: Vec::new(),
            tls_keys: BTreeMap::new(),
            limits: Limits::default(),
            socket_buffer_size: TargetConfig::default().socket_buffer_size,
            busy_poll: Duration::ZERO,
        };
        if let Some(hosts) = root.opt("hosts") {
            for h in hosts.array()? {
                let host = parse_host(&h)?;
                if let Some(k) = h.opt("tls_key") {
                    let mut key =
                        ConfiguredPsk::parse(k.string()?).map_err(|e| k.err(e.to_string()))?;
                    if let Some(c) = h.opt("tls_key_compat")
                        && c.flag()?
                    {
                        key = key.with_derivation(nvme_tcp_tls::Derivation::Compat);
                    }
                    cfg.tls_keys.insert(host.nqn.clone(), key);
                }
                cfg.hosts.push(host);
            }
        }
        if let Some(subs) = root.opt("subsystems") {
            for s in subs.array()? {
                cfg.subsystems.push(parse_subsystem(&s)?);
            }
        }
        if let Some(ports) = root.opt("ports") {
            for p in ports.array()? {
                cfg.ports.push(parse_port(&p)?);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A `hosts` entry: `nqn` and the optional `dhchap_key`, `dhchap_ctrl_key`, `dhchap_hash`,
/// `dhchap_dhgroup` (nvmetcli writes empty strings for unset ones).
fn parse_host(h: &J<'_>) -> Result<HostConfig, ConfigError> {
    let nqn = h.get("nqn")?.string()?.to_string();
    let text = |name: &str| -> Result<Option<(J<'_>, String)>, ConfigError> {
        match h.opt(name) {
            Some(v) => {
                let s = v.string()?.trim().to_string();
                Ok((!s.is_empty()).then_some((v, s)))
            }
            None => Ok(None),
        }
    };
    let secret = |v: &J<'_>, s: &str| -> Result<Secret, ConfigError> {
        s.parse::<Secret>().map_err(|e| v.err(e.to_string()))
    };
    let key = match text("dhchap_key")? {
        Some((v, s)) => Some(secret(&v, &s)?),
        None => None,
    };
    let ctrl_key = match text("dhchap_ctrl_key")? {
        Some((v, s)) => Some(secret(&v, &s)?),
        None => None,
    };
    let hash = match text("dhchap_hash")? {
        Some((v, s)) => HashId::from_name(&s)
            .ok_or_else(|| v.err("expected hmac(sha256), hmac(sha384) or hmac(sha512)"))?,
        None => HashId::Sha256,
    };
    let dhgroup = match text("dhchap_dhgroup")? {
        Some((v, s)) => DhGroupId::from_name(&s)
            .ok_or_else(|| v.err("expected null or ffdhe2048/3072/4096/6144/8192"))?,
        None => DhGroupId::Null,
    };
    let dhchap = match (key, ctrl_key) {
        (Some(key), ctrl_key) => Some(HostAuthKeys {
            key,
            ctrl_key,
            hash,
            dhgroup,
        }),
        (None, Some(_)) => {
            return Err(h.err("dhchap_ctrl_key needs a dhchap_key"));
        }
        (None, None) => None,
    };
    Ok(HostConfig { nqn, dhchap })
}

fn check_nqn(nqn: &str) -> Result<(), String> {
    if nqn.is_empty() || nqn.len() > MAX_NQN_LEN {
        return Err(format!(
            "an NQN has 1 to {MAX_NQN_LEN} bytes, found {}",
            nqn.len()
        ));
    }
    if !nqn.starts_with("nqn.") {
        return Err(format!("{nqn:?} does not start with \"nqn.\""));
    }
    if nqn.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        return Err("control characters in NQN".into());
    }
    Ok(())
}

/// A JSON value with its path, for error messages that name the field.
struct J<'a> {
    v: &'a Value,
    path: String,
}

impl<'a> J<'a> {
    fn root(v: &'a Value) -> Self {
        Self {
            v,
            path: String::from("(top level)"),
        }
    }
    fn err(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::field(self.path.clone(), reason)
    }
    fn child(&self, key: &str) -> String {
        if self.path == "(top level)" {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
    fn object(&self) -> Result<&'a serde_json::Map<String, Value>, ConfigError> {
        self.v
            .as_object()
            .ok_or_else(|| self.err("expected an object"))
    }
    fn opt(&self, key: &str) -> Option<J<'a>> {
        let v = self.v.as_object()?.get(key)?;
        if v.is_null() {
            return None;
        }
        Some(J {
            v,
            path: self.child(key),
        })
    }
    fn get(&self, key: &str) -> Result<J<'a>, ConfigError> {
        self.object()?;
        self.opt(key)
            .ok_or_else(|| ConfigError::field(self.child(key), "missing"))
    }
    fn array(&self) -> Result<Vec<J<'a>>, ConfigError> {
        let a = self
            .v
            .as_array()
            .ok_or_else(|| self.err("expected an array"))?;
        Ok(a.iter()
            .enumerate()
            .map(|(i, v)| J {
                v,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }
    fn string(&self) -> Result<&'a str, ConfigError> {
        self.v.as_str().ok_or_else(|| self.err("expected a string"))
    }
    /// nvmetcli writes most numbers as strings ("1"); accept both.
    fn uint(&self) -> Result<u64, ConfigError> {
        match self.v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(*b as u64),
            _ => None,
        }
        .ok_or_else(|| self.err("expected a non-negative integer"))
    }
    fn flag(&self) -> Result<bool, ConfigError> {
        match self.uint()? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.err(format!("expected 0 or 1, found {n}"))),
        }
    }
}

fn parse_subsystem(s: &J<'_>) -> Result<SubsystemConfig, ConfigError> {
    let nqn = s.get("nqn")?.string()?.to_string();
    let mut sub = SubsystemConfig::new(nqn.clone());
    sub.allow_any_host = false;
    if let Some(attr) = s.opt("attr") {
        attr.object()?;
        if let Some(a) = attr.opt("allow_any_host") {
            sub.allow_any_host = a.flag()?;
        }
        if let Some(a) = attr.opt("serial") {
            sub.serial = Some(a.string()?.to_string());
        }
        if let Some(a) = attr.opt("model") {
            sub.model = Some(a.string()?.to_string());
        }
    }
    if let Some(hosts) = s.opt("allowed_hosts") {
        for h in hosts.array()? {
            sub.allowed_hosts.push(h.string()?.to_string());
        }
    }
    if let Some(nss) = s.opt("namespaces") {
        for n in nss.array()? {
            sub.namespaces.push(parse_namespace(&n)?);
        }
    }
    Ok(sub)
}

impl NamespaceConfig {
    /// A namespace from the object `nvmetcli save` writes for one (`nsid`, `enable`,
    /// `device.path`, `device.uuid`, `device.nguid`, `device.eui64`), as in a configuration
    /// file; for adding a namespace at run time in the configuration's shape.
    pub fn from_nvmetcli_json(v: &Value) -> Result<Self, ConfigError> {
        let j = J {
            v,
            path: "namespace".into(),
        };
        parse_namespace(&j)
    }
}

fn parse_namespace(n: &J<'_>) -> Result<NamespaceConfig, ConfigError> {
    let nsid_j = n.get("nsid")?;
    let nsid = nsid_j.uint()?;
    if nsid == 0 || nsid >= u32::MAX as u64 {
        return Err(nsid_j.err(format!("NSID {nsid} out of range")));
    }
    let dev = n.get("device")?;
    let path_j = dev.get("path")?;
    let path = path_j.string()?;
    let mut ns = if path.starts_with("ram:")
        || path == "null"
        || path.starts_with("null:")
        || path.starts_with("file:")
    {
        NamespaceConfig::parse(path).map_err(|e| path_j.err(e.to_string()))?
    } else if path.is_empty() {
        return Err(path_j.err("empty path"));
    } else {
        NamespaceConfig::new(Backing::File {
            path: PathBuf::from(path),
            direct: false,
        })
    };
    ns.nsid = Some(nsid as u32);
    if let Some(e) = n.opt("enable") {
        ns.enabled = e.flag()?;
    }
    // nvmetcli writes all-zero identifiers for "not set".
    if let Some(u) = dev.opt("uuid") {
        let id: [u8; 16] = parse_hex_id("uuid", u.string()?).map_err(|e| u.err(e.to_string()))?;
        ns.uuid = (id != [0; 16]).then_some(id);
    }
    if let Some(u) = dev.opt("nguid") {
        let id: [u8; 16] = parse_hex_id("nguid", u.string()?).map_err(|e| u.err(e.to_string()))?;
        ns.nguid = (id != [0; 16]).then_some(id);
    }
    if let Some(u) = dev.opt("eui64") {
        let id: [u8; 8] = parse_hex_id("eui64", u.string()?).map_err(|e| u.err(e.to_string()))?;
        ns.eui64 = (id != [0; 8]).then_some(id);
    }
    if let Some(b) = dev.opt("lba_size") {
        ns.lba_size =
            LbaSize::from_bytes(b.uint()?).ok_or_else(|| b.err("expected 512 or 4096"))?;
    }
    Ok(ns)
}

fn parse_addr(a: &J<'_>) -> Result<(SocketAddr, bool), ConfigError> {
    let trtype = a.get("trtype")?;
    if !trtype.string()?.eq_ignore_ascii_case("tcp") {
        return Err(trtype.err(format!(
            "only \"tcp\" is served, found {:?}",
            trtype.string()?
        )));
    }
    let fam = a.get("adrfam")?;
    let ipv6 = match fam.string()? {
        "ipv4" => false,
        "ipv6" => true,
        other => return Err(fam.err(format!("expected ipv4 or ipv6, found {other:?}"))),
    };
    let ta = a.get("traddr")?;
    let ip: IpAddr = ta.string()?.parse().map_err(|_| {
        ta.err(format!(
            "{:?} is not an IP address",
            ta.string().unwrap_or("")
        ))
    })?;
    if ip.is_ipv6() != ipv6 {
        return Err(ta.err("address does not match adrfam"));
    }
    let sv = a.get("trsvcid")?;
    let port = u16::try_from(sv.uint()?).map_err(|_| sv.err("not a TCP port"))?;
    Ok((SocketAddr::new(ip, port), ipv6))
}

/// nvmetcli's `addr.tsas` (`none`, `tls1.3`) and `addr.treq` (`not specified`,
/// `required`, `not required`).
fn parse_port_tls(a: &J<'_>) -> Result<PortTls, ConfigError> {
    let tls = match a.opt("tsas") {
        None => false,
        Some(t) => match t.string()? {
            "none" | "" => false,
            "tls1.3" => true,
            other => {
                return Err(t.err(format!("expected \"none\" or \"tls1.3\", found {other:?}")));
            }
        },
    };
    let required = match a.opt("treq") {
        None => tls,
        Some(t) => match t.string()? {
            "not specified" | "" => tls,
            "required" => true,
            "not required" => false,
            other => {
                return Err(t.err(format!(
                    "expected \"not specified\", \"required\" or \"not required\", found {other:?}"
                )));
            }
        },
    };
    match (tls, required) {
        (false, true) => Err(a.err("treq \"required\" needs tsas \"tls1.3\"")),
        (false, false) => Ok(PortTls::None),
        (true, true) => Ok(PortTls::Required),
        (true, false) => Ok(PortTls::NotRequired),
    }
}

fn parse_port(p: &J<'_>) -> Result<PortConfig, ConfigError> {
    let id_j = p.get("portid")?;
    let portid = u16::try_from(id_j.uint()?).map_err(|_| id_j.err("port ID exceeds 65535"))?;
    let addr_j = p.get("addr")?;
    let (addr, _) = parse_addr(&addr_j)?;
    let mut port = PortConfig::new(portid, addr);
    port.tls = parse_port_tls(&addr_j)?;
    let mut subs = Vec::new();
    if let Some(s) = p.opt("subsystems") {
        for n in s.array()? {
            subs.push(n.string()?.to_string());
        }
    }
    port.subsystems = PortSubsystems::Listed(subs);
    if let Some(refs) = p.opt("referrals") {
        for r in refs.array()? {
            if let Some(e) = r.opt("enable")
                && !e.flag()?
            {
                continue;
            }
            let rid = r.get("portid")?;
            let a = r.get("addr")?;
            let (raddr, ipv6) = parse_addr(&a)?;
            port.referrals.push(Referral {
                portid: u16::try_from(rid.uint()?).map_err(|_| rid.err("port ID exceeds 65535"))?,
                traddr: raddr.ip().to_string(),
                trsvcid: raddr.port().to_string(),
                ipv6,
            });
        }
    }
    if let Some(param) = p.opt("param")
        && let Some(ics) = param.opt("inline_data_size")
    {
        let v = ics.uint()?;
        port.in_capsule_data_size = Some(u32::try_from(v).map_err(|_| ics.err("too large"))?);
    }
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"{
      "hosts": [ { "nqn": "nqn.2014-08.org.nvmexpress:uuid:host-a" } ],
      "ports": [
        {
          "addr": { "adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified",
                    "trsvcid": "4420", "trtype": "tcp", "tsas": "none" },
          "param": { "inline_data_size": "16384" },
          "portid": 1,
          "referrals": [
            { "addr": { "adrfam": "ipv6", "traddr": "::1", "trsvcid": "8009", "trtype": "tcp" },
              "enable": 1, "name": "r1", "portid": 7 }
          ],
          "subsystems": [ "nqn.2024-01.io.example:disk" ]
        }
      ],
      "subsystems": [
        {
          "allowed_hosts": [ "nqn.2014-08.org.nvmexpress:uuid:host-a" ],
          "attr": { "allow_any_host": "0", "serial": "0123456789", "model": "Linux" },
          "namespaces": [
            { "device": { "nguid": "00000000-0000-0000-0000-000000000000",
                          "path": "ram:16M",
                          "uuid": "11111111-2222-3333-4444-555555555555" },
              "enable": 1, "nsid": 1 }
          ],
          "nqn": "nqn.2024-01.io.example:disk"
        }
      ]
    }"#;

    fn load(s: &str) -> Result<TargetConfig, ConfigError> {
        TargetConfig::from_nvmetcli_json(&serde_json::from_str(s).unwrap())
    }

    #[test]
    fn loads_an_nvmetcli_save() {
        let c = load(SAVED).unwrap();
        assert_eq!(c.hosts.len(), 1);
        assert_eq!(c.hosts[0].dhchap, None);
        let p = &c.ports[0];
        assert_eq!(p.addr, "127.0.0.1:4420".parse().unwrap());
        assert_eq!(p.in_capsule_data_size, Some(16384));
        assert_eq!(p.referrals[0].portid, 7);
        assert!(p.referrals[0].ipv6);
        let s = &c.subsystems[0];
        assert!(!s.allow_any_host);
        assert!(s.allows("nqn.2014-08.org.nvmexpress:uuid:host-a"));
        assert!(!s.allows("nqn.2014-08.org.nvmexpress:uuid:other"));
        let ns = &s.namespaces[0];
        assert_eq!(ns.nsid, Some(1));
        assert_eq!(ns.backing, Backing::Ram { size: 16 << 20 });
        assert_eq!(ns.nguid, None, "all-zero NGUID means unset");
        assert_eq!(ns.uuid.unwrap()[0], 0x11);
    }

    #[test]
    fn nvmetcli_hosts_carry_dhchap_keys() {
        let key = Secret::generate(Some(HashId::Sha256)).to_string();
        let ck = Secret::generate(None).to_string();
        let json = format!(
            r#"{{ "hosts": [
                {{ "nqn": "nqn.h1", "dhchap_key": "{key}", "dhchap_ctrl_key": "{ck}",
                   "dhchap_hash": "hmac(sha512)", "dhchap_dhgroup": "ffdhe4096" }},
                {{ "nqn": "nqn.h2", "dhchap_key": "", "dhchap_ctrl_key": "" }} ],
              "ports": [ {{ "portid": 1, "addr": {{ "trtype": "tcp", "adrfam": "ipv4",
                 "traddr": "127.0.0.1", "trsvcid": "4420" }} }} ] }}"#
        );
        let c = load(&json).unwrap();
        let a = c.host_auth("nqn.h1").unwrap();
        assert_eq!(a.key.to_string(), key);
        assert_eq!(a.ctrl_key.as_ref().unwrap().to_string(), ck);
        assert_eq!((a.hash, a.dhgroup), (HashId::Sha512, DhGroupId::Ffdhe4096));
        assert!(c.host_auth("nqn.h2").is_none(), "empty strings mean no key");
        let bad = json.replace(&key, "DHHC-1:00:AAAA:");
        assert_eq!(err_field(&bad), "hosts[0].dhchap_key");
        let bad = json.replace("ffdhe4096", "ffdhe1024");
        assert_eq!(err_field(&bad), "hosts[0].dhchap_dhgroup");
        let bad = json.replace("hmac(sha512)", "md5");
        assert_eq!(err_field(&bad), "hosts[0].dhchap_hash");
    }

    fn err_field(s: &str) -> String {
        match load(s) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_offending_field() {
        let c = SAVED.replace(
            "\"trtype\": \"tcp\", \"tsas\"",
            "\"trtype\": \"rdma\", \"tsas\"",
        );
        assert_eq!(err_field(&c), "ports[0].addr.trtype");
        let c = SAVED.replace("\"path\": \"ram:16M\"", "\"path\": \"ram:16Q\"");
        assert_eq!(err_field(&c), "subsystems[0].namespaces[0].device.path");
        let c = SAVED.replace("\"nsid\": 1", "\"nsid\": 0");
        assert_eq!(err_field(&c), "subsystems[0].namespaces[0].nsid");
        let c = SAVED.replace(
            "\"subsystems\": [ \"nqn.2024-01.io.example:disk\" ]",
            "\"subsystems\": [ \"nqn.x:nope\" ]",
        );
        assert_eq!(err_field(&c), "ports[0].subsystems[0]");
        let c = SAVED.replace("\"allow_any_host\": \"0\"", "\"allow_any_host\": \"2\"");
        assert_eq!(err_field(&c), "subsystems[0].attr.allow_any_host");
        let c = SAVED.replace("\"traddr\": \"127.0.0.1\"", "\"traddr\": \"::1\"");
        assert_eq!(err_field(&c), "ports[0].addr.traddr");
        let c = SAVED.replace("\"nqn\": \"nqn.2024-01.io.example:disk\"", "\"nqnx\": 1");
        assert_eq!(err_field(&c), "subsystems[0].nqn");
    }

    #[test]
    fn default_config_listens_on_4420_and_8009() {
        let c = TargetConfig::default();
        c.validate().unwrap();
        assert_eq!(c.ports[0].addr.port(), 4420);
        assert_eq!(c.ports[1].addr.port(), 8009);
        assert!(!c.ports[1].exposes("nqn.any"));
    }

    #[test]
    fn limits_are_checked() {
        let l = Limits {
            maxh2cdata: 1000,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
        let l = Limits {
            mdts: 3 << 12,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
        Limits::default().validate().unwrap();
    }

    #[test]
    fn nqns_are_checked_like_nvmet_and_a_little_stricter() {
        let check = |nqn: &str| {
            TargetConfig::default()
                .subsystem(SubsystemConfig::new(nqn))
                .validate()
                .map_err(|e| e.to_string())
        };
        assert!(check("nqn.2024-01.io.example:disk").is_ok());
        let longest = format!("nqn.2024-01.io.example:{}", "x".repeat(MAX_NQN_LEN - 23));
        assert_eq!(longest.len(), MAX_NQN_LEN);
        assert!(check(&longest).is_ok());
        let e = check(&format!("{longest}y")).unwrap_err();
        assert!(e.contains("223"), "{e}");
        assert!(check(DISCOVERY_NQN).unwrap_err().contains("discovery"));
        // Stricter than nvmet: the nqn. prefix, no control characters.
        assert!(check("blktests-subsystem-1").unwrap_err().contains("nqn."));
        assert!(check("nqn.2024-01.io.example:a\tb").is_err());
        assert!(check("").is_err());
        let mut s = SubsystemConfig::new("nqn.2024-01.io.example:disk");
        s.allow_any_host = false;
        s.allowed_hosts = vec!["host-a".into()];
        let e = TargetConfig::default().subsystem(s).validate().unwrap_err();
        assert!(e.to_string().contains("allowed_hosts[0]"), "{e}");
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        for (l, field) in [
            (
                Limits {
                    max_io_queues: 0,
                    ..Limits::default()
                },
                "max_io_queues",
            ),
            (
                Limits {
                    max_connections_per_host: 1,
                    ..Limits::default()
                },
                "max_connections_per_host",
            ),
            (
                Limits {
                    idle_reclaim_percent: 101,
                    ..Limits::default()
                },
                "idle_reclaim_percent",
            ),
            (
                Limits {
                    send_timeout: std::time::Duration::ZERO,
                    ..Limits::default()
                },
                "send_timeout",
            ),
        ] {
            let e = l.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn tls_ports_and_host_keys_load_from_nvmetcli_json() {
        let key = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
        let json = |tsas: &str, treq: &str, key: &str| {
            format!(
                r#"{{"hosts": [{{"nqn": "nqn.2014-08.org.nvmexpress:uuid:host-a", "tls_key": "{key}", "tls_key_compat": true}}],
                "ports": [{{"portid": 1, "addr": {{"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                "trsvcid": 0, "tsas": "{tsas}", "treq": "{treq}"}}, "subsystems": []}}]}}"#
            )
        };
        let c = load(&json("tls1.3", "required", key)).unwrap();
        assert_eq!(c.ports[0].tls, PortTls::Required);
        let k = &c.tls_keys["nqn.2014-08.org.nvmexpress:uuid:host-a"];
        assert_eq!(k.derivation(), nvme_tcp_tls::Derivation::Compat);
        let c = load(&json("tls1.3", "not required", key)).unwrap();
        assert_eq!(c.ports[0].tls, PortTls::NotRequired);
        let c = load(&json("none", "not specified", key)).unwrap();
        assert_eq!(c.ports[0].tls, PortTls::None);
        let e = load(&json("none", "required", key))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls1.3"), "{e}");
        let e = load(&json("tls1.2", "required", key))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tsas"), "{e}");
        let bad = key.replace("LrZ", "LrY");
        let e = load(&json("tls1.3", "required", &bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_key") && e.contains("CRC"), "{e}");
        // A TLS port without any host key cannot work.
        let e = load(&json("tls1.3", "required", key).replace(r#""tls_key": "#, r#""x": "#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TLS PSK"), "{e}");
    }

    #[test]
    fn duplicate_nsids_are_refused() {
        let mut s = SubsystemConfig::new("nqn.2024-01.io.example:a");
        let mut ns = NamespaceConfig::parse("ram:1M").unwrap();
        ns.nsid = Some(3);
        s.namespaces = vec![ns.clone(), ns];
        let c = TargetConfig::default().subsystem(s);
        assert!(
            matches!(c.validate(), Err(ConfigError::Field { field, .. }) if field == "subsystems[0].namespaces[1].nsid")
        );
    }
}
