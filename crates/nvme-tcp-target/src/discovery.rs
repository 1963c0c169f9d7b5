//! The Discovery Log Page (log page 70h) served by discovery controllers.

use std::net::SocketAddr;

use nvme_tcp_wire::nvme::DiscoveryLogEntry;
use nvme_tcp_wire::nvme::log::{
    DISCOVERY_RECORD_LEN, DiscoveryLogPage, adrfam, sectype, subtype, treq,
};

use crate::config::PortTls;

/// What a discovery log entry points at (SUBTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubType {
    /// Another discovery service (referral).
    Referral,
    /// An NVM subsystem.
    NvmSubsystem,
    /// The discovery subsystem answering this request.
    CurrentDiscovery,
}

/// One entry of the discovery log, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// What the entry points at.
    pub subtype: SubType,
    /// Port ID.
    pub portid: u16,
    /// Transport address and service ID.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// The port's secure channel (TREQ bits 1:0 and TSAS SECTYPE).
    pub tls: PortTls,
}

/// Admin submission queue size advertised (ASQSZ).
const ASQSZ: u16 = 32;

impl DiscoveryEntry {
    /// The 1024-byte record; TREQ says SQ flow control may be disabled.
    pub fn to_record(&self) -> Option<DiscoveryLogEntry> {
        let fam = if self.addr.is_ipv6() {
            adrfam::IPV6
        } else {
            adrfam::IPV4
        };
        let st = match self.subtype {
            SubType::Referral => subtype::DISCOVERY_REFERRAL,
            SubType::NvmSubsystem => subtype::NVME,
            SubType::CurrentDiscovery => subtype::CURRENT_DISCOVERY,
        };
        let mut e = DiscoveryLogEntry::tcp(
            fam,
            &self.addr.ip().to_string(),
            &self.addr.port().to_string(),
            st,
            &self.subnqn,
            self.portid,
            ASQSZ,
        )
        .ok()?;
        // As nvmet-tcp: without TLS the secure channel is not specified; with TLS 1.3
        // (SECTYPE 2) it is required or not; SQ flow control disable supported.
        let (channel, sec) = match self.tls {
            PortTls::None => (treq::SECURE_CHANNEL_NOT_SPECIFIED, sectype::NONE),
            PortTls::Required => (treq::SECURE_CHANNEL_REQUIRED, sectype::TLS13),
            PortTls::NotRequired => (treq::SECURE_CHANNEL_NOT_REQUIRED, sectype::TLS13),
        };
        e.treq = channel | treq::DISABLE_SQ_FLOW_CONTROL;
        e.tsas[0] = sec;
        Some(e)
    }
}

/// The whole Discovery Log Page: header (GENCTR, NUMREC, RECFMT 0) and the entries.
pub fn log_page(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let recs: Vec<DiscoveryLogEntry> = entries
        .iter()
        .filter_map(DiscoveryEntry::to_record)
        .collect();
    let mut page = vec![0u8; (recs.len() + 1) * DISCOVERY_RECORD_LEN];
    // The buffer is sized for the records, so emitting cannot fail.
    let _ = DiscoveryLogPage::emit(genctr, &recs, &mut page);
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_holds_header_and_entries() {
        let e = DiscoveryEntry {
            subtype: SubType::NvmSubsystem,
            portid: 1,
            addr: "127.0.0.1:4420".parse().unwrap(),
            subnqn: "nqn.2024-01.io.test:a".into(),
            tls: PortTls::None,
        };
        let tls = DiscoveryEntry {
            tls: PortTls::Required,
            ..e.clone()
        };
        let page = log_page(7, &[e.clone(), e, tls]);
        let p = DiscoveryLogPage::parse(&page).unwrap();
        assert_eq!(p.header().genctr.get(), 7);
        assert_eq!(p.entries().len(), 3);
        assert_eq!(p.entries()[0].treq & 3, treq::SECURE_CHANNEL_NOT_SPECIFIED);
        assert_eq!(p.entries()[0].sectype(), sectype::NONE);
        assert_eq!(p.entries()[2].treq & 3, treq::SECURE_CHANNEL_REQUIRED);
        assert_eq!(p.entries()[2].sectype(), sectype::TLS13);
        assert_eq!(p.entries()[0].trsvcid().unwrap(), "4420");
        assert_eq!(p.entries()[0].traddr().unwrap(), "127.0.0.1");
        assert_eq!(p.entries()[0].subnqn().unwrap(), "nqn.2024-01.io.test:a");
        assert_eq!(p.entries()[0].subtype, subtype::NVME);
    }
}
