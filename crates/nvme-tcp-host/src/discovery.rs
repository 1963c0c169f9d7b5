//! Discovery: connect to a discovery controller (port 8009 by default), read the discovery log
//! page (re-reading while its generation counter changes), and turn its entries into
//! [`ConnectOptions`] for the subsystems they list.

use nvme_tcp_wire::nvme::log::{DISCOVERY_RECORD_LEN, DiscoveryLogEntry, DiscoveryLogHeader};

use crate::cmd::lid;
use crate::ctrl::Controller;
use crate::error::{HostError, Result};
use crate::options::ConnectOptions;

/// SUBTYPE of an entry: a referral to another discovery subsystem.
pub const SUBTYPE_REFERRAL: u8 = 1;
/// SUBTYPE of an entry: an NVM subsystem.
pub const SUBTYPE_NVME: u8 = 2;
/// SUBTYPE of an entry: the current discovery subsystem.
pub const SUBTYPE_CURRENT_DISCOVERY: u8 = 3;

/// Entries read at most from one log page (the page is sized by the controller's NUMREC).
const MAX_RECORDS: u64 = 1024;
/// Attempts to get a consistent page while GENCTR keeps changing.
const GENCTR_RETRIES: usize = 5;

/// One discovery log entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Transport type (3 = TCP).
    pub trtype: u8,
    /// Address family (1 IPv4, 2 IPv6).
    pub adrfam: u8,
    /// Subsystem type (see `SUBTYPE_*`).
    pub subtype: u8,
    /// Transport requirements.
    pub treq: u8,
    /// Port id.
    pub portid: u16,
    /// Controller id (0xFFFF: dynamic).
    pub cntlid: u16,
    /// Admin max SQ size.
    pub asqsz: u16,
    /// Entry flags.
    pub eflags: u16,
    /// Transport service id (the TCP port, as text).
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address.
    pub traddr: String,
    /// TCP security type (TSAS byte 0).
    pub sectype: u8,
}

impl DiscoveryEntry {
    fn from_wire(e: &DiscoveryLogEntry) -> Self {
        let s = |r: std::result::Result<&str, _>| r.map(str::to_owned).unwrap_or_default();
        Self {
            trtype: e.trtype,
            adrfam: e.adrfam,
            subtype: e.subtype,
            treq: e.treq,
            portid: e.portid.get(),
            cntlid: e.cntlid.get(),
            asqsz: e.asqsz.get(),
            eflags: e.eflags.get(),
            trsvcid: s(e.trsvcid()),
            subnqn: s(e.subnqn()),
            traddr: s(e.traddr()),
            sectype: e.sectype(),
        }
    }

    /// `tcp`, `rdma`, ... as nvme-cli prints it.
    pub fn trtype_name(&self) -> &'static str {
        match self.trtype {
            1 => "rdma",
            2 => "fc",
            3 => "tcp",
            254 => "loop",
            _ => "unrecognized",
        }
    }
    /// `ipv4`, `ipv6`, ...
    pub fn adrfam_name(&self) -> &'static str {
        match self.adrfam {
            1 => "ipv4",
            2 => "ipv6",
            3 => "infiniband",
            4 => "fibre-channel",
            _ => "unrecognized",
        }
    }
    /// The subsystem type as nvme-cli prints it.
    pub fn subtype_name(&self) -> &'static str {
        match self.subtype {
            SUBTYPE_REFERRAL => "discovery subsystem referral",
            SUBTYPE_NVME => "nvme subsystem",
            SUBTYPE_CURRENT_DISCOVERY => "current discovery subsystem",
            _ => "unrecognized",
        }
    }

    /// Connect options for this entry, other settings copied from `base`.
    pub fn connect_options(&self, base: &ConnectOptions) -> Result<ConnectOptions> {
        let port =
            self.trsvcid.trim().parse().map_err(|_| {
                HostError::Invalid(format!("TRSVCID {:?} is not a port", self.trsvcid))
            })?;
        let mut o = base.clone();
        o.addr = self.traddr.clone();
        o.port = port;
        o.subnqn = self.subnqn.clone();
        Ok(o)
    }
}

/// A discovery log page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryLog {
    /// Generation counter of the page read.
    pub genctr: u64,
    /// The entries.
    pub entries: Vec<DiscoveryEntry>,
}

/// Connects to the discovery controller of `opts` (use [`ConnectOptions::discovery`]), reads
/// the log page and disconnects.
pub fn discover(opts: ConnectOptions) -> Result<DiscoveryLog> {
    let ctrl = Controller::connect(opts)?;
    let log = read_log(&ctrl);
    ctrl.shutdown();
    log
}

/// Reads the discovery log page from a connected discovery controller: header first, then the
/// whole page; if GENCTR changed in between, again (a few times).
pub fn read_log(ctrl: &Controller) -> Result<DiscoveryLog> {
    for _ in 0..GENCTR_RETRIES {
        let hdr = ctrl.get_log_page(lid::DISCOVERY, 0, 0, DISCOVERY_RECORD_LEN)?;
        let h = DiscoveryLogHeader::parse(&hdr)
            .map_err(|e| HostError::Unsupported(format!("discovery log header: {e}")))?;
        let genctr = h.genctr.get();
        let numrec = h.numrec.get().min(MAX_RECORDS);
        let page_len = (numrec as usize + 1) * DISCOVERY_RECORD_LEN;
        let page = ctrl.get_log_page(lid::DISCOVERY, 0, 0, page_len)?;
        let h2 = DiscoveryLogHeader::parse(&page)
            .map_err(|e| HostError::Unsupported(format!("discovery log header: {e}")))?;
        if h2.genctr.get() != genctr {
            tracing::info!("discovery log changed while reading (GENCTR); reading again");
            continue;
        }
        let n = h2.numrec.get().min(numrec) as usize;
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let off = (i + 1) * DISCOVERY_RECORD_LEN;
            let Some(bytes) = page.get(off..off + DISCOVERY_RECORD_LEN) else {
                break;
            };
            let e = DiscoveryLogEntry::parse(bytes)
                .map_err(|e| HostError::Unsupported(format!("discovery log entry {i}: {e}")))?;
            entries.push(DiscoveryEntry::from_wire(e));
        }
        return Ok(DiscoveryLog { genctr, entries });
    }
    Err(HostError::Unsupported(
        "the discovery log's GENCTR kept changing while it was read".into(),
    ))
}
