//! Log pages: Error Information, SMART, Changed Namespace List and the discovery log page.

use nvme_tcp_wire::nvme::log::{DISCOVERY_RECORD_LEN, adrfam, sectype, subtype, treq, trtype};
use nvme_tcp_wire::nvme::text::DISCOVERY_NQN;
use nvme_tcp_wire::nvme::{
    DiscoveryLogEntry, DiscoveryLogHeader, DiscoveryLogPage, ErrorLogEntry, NsidList, NvmeError,
    SmartLog, Status, StatusField,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

const SUBNQN: &str = "nqn.2026-11.io.ulp-ddp:sub0";

#[test]
fn discovery_entry_fields_sit_at_spec_offsets() {
    let mut e = DiscoveryLogEntry::tcp(
        adrfam::IPV4,
        "192.168.1.10",
        "4420",
        subtype::NVME,
        SUBNQN,
        1,
        32,
    )
    .unwrap();
    e.eflags.set(1);
    let b = e.as_bytes();
    assert_eq!(b.len(), DISCOVERY_RECORD_LEN);
    assert_eq!(b[0], 3, "TRTYPE tcp");
    assert_eq!(b[1], 1, "ADRFAM ipv4");
    assert_eq!(b[2], 2, "SUBTYPE nvme");
    assert_eq!(b[3], treq::SECURE_CHANNEL_NOT_REQUIRED, "TREQ");
    assert_eq!(&b[4..6], &[1, 0], "PORTID");
    assert_eq!(&b[6..8], &[0xFF, 0xFF], "CNTLID dynamic");
    assert_eq!(&b[8..10], &[32, 0], "ASQSZ");
    assert_eq!(&b[10..12], &[1, 0], "EFLAGS");
    assert_eq!(&b[32..36], b"4420", "TRSVCID");
    assert_eq!(b[36], 0);
    assert_eq!(&b[256..256 + SUBNQN.len()], SUBNQN.as_bytes(), "SUBNQN");
    assert_eq!(&b[512..524], b"192.168.1.10", "TRADDR");
    assert_eq!(b[768], sectype::NONE, "TSAS SECTYPE");
    let parsed = DiscoveryLogEntry::parse(b).unwrap();
    assert_eq!(parsed.trsvcid(), Ok("4420"));
    assert_eq!(parsed.traddr(), Ok("192.168.1.10"));
    assert_eq!(parsed.subnqn(), Ok(SUBNQN));
    assert_eq!(parsed.trtype, trtype::TCP);
}

#[test]
fn discovery_entry_reads_space_padded_trsvcid() {
    let mut e = DiscoveryLogEntry {
        trsvcid: [b' '; 32],
        ..Default::default()
    };
    e.trsvcid[..4].copy_from_slice(b"8009");
    assert_eq!(e.trsvcid(), Ok("8009"));
}

#[test]
fn discovery_header_offsets_and_page_round_trip() {
    let h = DiscoveryLogHeader::new(7, 2);
    let b = h.as_bytes();
    assert_eq!(&b[0..8], &[7, 0, 0, 0, 0, 0, 0, 0], "GENCTR");
    assert_eq!(&b[8..16], &[2, 0, 0, 0, 0, 0, 0, 0], "NUMREC");
    assert_eq!(&b[16..18], &[0, 0], "RECFMT");
    assert_eq!(h.page_len(), Some(3072));

    let entries = [
        DiscoveryLogEntry::tcp(
            adrfam::IPV4,
            "10.0.0.1",
            "4420",
            subtype::NVME,
            SUBNQN,
            1,
            32,
        )
        .unwrap(),
        DiscoveryLogEntry::tcp(
            adrfam::IPV4,
            "10.0.0.1",
            "8009",
            subtype::CURRENT_DISCOVERY,
            DISCOVERY_NQN,
            1,
            32,
        )
        .unwrap(),
    ];
    let mut out = vec![0u8; 3 * 1024];
    assert_eq!(DiscoveryLogPage::emit(7, &entries, &mut out), Ok(3072));
    assert_eq!(
        out[1024 + 256..1024 + 256 + SUBNQN.len()],
        *SUBNQN.as_bytes()
    );
    let page = DiscoveryLogPage::parse(&out).unwrap();
    assert!(page.is_complete());
    assert_eq!(page.header().genctr.get(), 7);
    assert_eq!(page.entries(), &entries);

    // Only the header read (the host's first Get Log Page).
    let partial = DiscoveryLogPage::parse(&out[..1024]).unwrap();
    assert!(!partial.is_complete());
    assert!(partial.entries().is_empty());
    assert!(DiscoveryLogPage::emit(7, &entries, &mut out[..2048]).is_err());
}

#[test]
fn discovery_page_with_huge_numrec_reads_only_what_is_there() {
    let mut out = vec![0u8; 2048];
    out[..1024].copy_from_slice(DiscoveryLogHeader::new(1, u64::MAX).as_bytes());
    let page = DiscoveryLogPage::parse(&out).unwrap();
    assert_eq!(page.entries().len(), 1);
    assert_eq!(page.header().page_len(), None);
    assert!(matches!(
        DiscoveryLogPage::parse(&out[..1000]),
        Err(NvmeError::Truncated { needed: 1024, .. })
    ));
}

#[test]
fn error_log_entry_offsets() {
    let mut e = ErrorLogEntry::default();
    e.error_count.set(1);
    e.sqid.set(2);
    e.cid.set(3);
    e.status_field
        .set(StatusField::dnr(Status::LBA_OUT_OF_RANGE).to_bits());
    e.lba.set(0x55);
    e.nsid.set(1);
    e.trtype = 3;
    let b = e.as_bytes();
    assert_eq!(b.len(), 64);
    assert_eq!(
        &b[8..14],
        &[2, 0, 3, 0, 0x00, 0x81],
        "SQID, CID, status (SC 0x80 << 1 | DNR)"
    );
    assert_eq!(b[16], 0x55);
    assert_eq!(b[24], 1);
    assert_eq!(b[29], 3);
    let page = [b, b, &b[..10]].concat();
    let entries = ErrorLogEntry::slice_from(&page);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].status().status, Status::LBA_OUT_OF_RANGE);
    assert!(entries[1].status().dnr);
}

#[test]
fn smart_log_offsets() {
    let mut s = SmartLog {
        critical_warning: 0x04,
        ..Default::default()
    };
    s.composite_temperature.set(300);
    s.available_spare = 100;
    s.data_units_read.set(0x0102);
    s.power_on_hours.set(u128::MAX);
    s.num_err_log_entries.set(9);
    let b = s.as_bytes();
    assert_eq!(b.len(), 512);
    assert_eq!(b[0], 4);
    assert_eq!(&b[1..3], &[0x2C, 0x01]);
    assert_eq!(b[3], 100);
    assert_eq!(&b[32..34], &[2, 1]);
    assert_eq!(&b[128..144], &[0xFF; 16]);
    assert_eq!(b[176], 9);
    assert_eq!(SmartLog::parse(b).unwrap(), &s);
    assert!(SmartLog::parse(&b[..511]).is_err());
}

#[test]
fn changed_namespace_list_overflow_marker() {
    let list = NsidList::from_nsids(&[u32::MAX]).unwrap();
    assert!(list.overflowed());
    assert!(!NsidList::from_nsids(&[1]).unwrap().overflowed());
}

proptest! {
    #[test]
    fn discovery_entries_round_trip(a in 0u8..=255, b in 0u8..=255, port in 1u16..,
                                    portid in any::<u16>(), asqsz in any::<u16>(),
                                    nqn in "[a-z0-9.:-]{1,223}") {
        let traddr = format!("10.{a}.{b}.1");
        let trsvcid = port.to_string();
        let e = DiscoveryLogEntry::tcp(adrfam::IPV4, &traddr, &trsvcid, subtype::NVME, &nqn, portid, asqsz).unwrap();
        let p = DiscoveryLogEntry::parse(e.as_bytes()).unwrap();
        prop_assert_eq!(p, &e);
        prop_assert_eq!(p.traddr(), Ok(traddr.as_str()));
        prop_assert_eq!(p.trsvcid(), Ok(trsvcid.as_str()));
        prop_assert_eq!(p.subnqn(), Ok(nqn.as_str()));
        prop_assert_eq!((p.portid.get(), p.asqsz.get()), (portid, asqsz));
    }

    #[test]
    fn error_entries_round_trip(count in any::<u64>(), sqid in any::<u16>(), cid in any::<u16>(),
                                status in any::<u16>(), lba in any::<u64>(), nsid in any::<u32>()) {
        let mut e = ErrorLogEntry::default();
        e.error_count.set(count);
        e.sqid.set(sqid);
        e.cid.set(cid);
        e.status_field.set(status);
        e.lba.set(lba);
        e.nsid.set(nsid);
        let parsed = ErrorLogEntry::slice_from(e.as_bytes());
        prop_assert_eq!(parsed, &[e][..]);
    }

    #[test]
    fn any_bytes_read_as_discovery_page_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(page) = DiscoveryLogPage::parse(&bytes) {
            for e in page.entries() {
                let _ = (e.traddr(), e.trsvcid(), e.subnqn());
            }
            let _ = page.header().page_len();
        }
        let _ = ErrorLogEntry::slice_from(&bytes);
        let _ = SmartLog::parse(&bytes);
    }
}
