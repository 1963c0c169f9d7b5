//! The target over real loopback sockets, driven by a raw NVMe/TCP client.

mod common;

use std::io::Write;

use common::*;
use nvme_tcp_target::config::DISCOVERY_NQN;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig};
use nvme_tcp_wire::Fes;
use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{
    AdminOpcode, DiscoveryLogPage, IdentifyController, IdentifyNamespace, NsIdDescriptor, NsidList,
    Sqe, Status,
};
use nvme_tcp_wire::pdu::{CapsuleCmdRepr, HeaderBuf, PduType};
use zerocopy::IntoBytes;

#[test]
fn ic_negotiation_echoes_digests_and_answers_cpda_0() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    for (hpda, hdgst, ddgst) in [
        (0, false, false),
        (0, true, true),
        (3, true, false),
        (31, false, true),
    ] {
        let mut c = Client::connect(addr);
        let r = c.ic(hpda, hdgst, ddgst);
        assert_eq!(r.cpda, 0);
        assert_eq!((r.hdgst_enable, r.ddgst_enable), (hdgst, ddgst));
        assert!(r.maxh2cdata >= 128 * 1024);
        // A whole bring-up and a read prove the negotiated layout (PDO per HPDA, digests).
        let cntlid = c.admin_connect_enable(SUBNQN, 0);
        assert!(cntlid > 0);
        let d = c.identify(1, 0);
        assert_eq!(d.status(), Status::SUCCESS);
        assert_eq!(d.data.len(), 4096);
    }
}

#[test]
fn admin_bring_up_reports_the_controller() {
    let t = start_target();
    let mut c = Client::connect(t.local_addrs()[0]);
    let cntlid = c.bring_up_admin(SUBNQN, 0);
    let cap = c.prop_get(0x00, true);
    assert_eq!(cap.status(), Status::SUCCESS);
    assert!(cap.dw0() & 0xFFFF >= 31, "MQES");
    assert_eq!(c.prop_get(0x08, false).dw0(), 0x0001_0300);
    let d = c.identify(1, 0);
    let id = IdentifyController::parse(&d.data).unwrap();
    assert_eq!(id.cntlid.get(), cntlid);
    assert_eq!(id.subnqn().unwrap(), SUBNQN);
    assert_eq!(id.cntrltype, IdentifyController::CNTRLTYPE_IO);
    assert_eq!(id.icdoff.get(), 0);
    assert_ne!(id.sgls.get() & 1, 0);
    assert_eq!(id.in_capsule_data_size(), 8192);
    assert_eq!(id.max_data_transfer_bytes(0), Some(1 << 20));
    assert_ne!(id.kas.get(), 0);
    // Shutdown notification completes.
    assert_eq!(c.prop_set(0x14, 0x0046_4001).status(), Status::SUCCESS);
    assert_eq!(
        (c.prop_get(0x1C, false).dw0() >> 2) & 3,
        2,
        "CSTS.SHST complete"
    );
}

#[test]
fn identify_lists_namespaces_and_their_identifiers() {
    let t = start_with(|mut c| {
        c.subsystems[0].namespaces.push(
            NamespaceConfig::parse("null:1G,lba=4096,nsid=5,eui64=0102030405060708").unwrap(),
        );
        c
    });
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(SUBNQN, 0);
    let list = c.identify(2, 0);
    let ids: Vec<u32> = NsidList::parse(&list.data).unwrap().iter().collect();
    assert_eq!(ids, vec![1, 5]);
    let ns = c.identify(0, 5);
    let id = IdentifyNamespace::parse(&ns.data).unwrap();
    assert_eq!(id.nsze.get(), (1 << 30) / 4096);
    assert_eq!(id.lba_size(), Some(4096));
    let desc = c.identify(3, 5);
    let kinds: Vec<_> = NsIdDescriptor::parse_list(&desc.data)
        .map(|d| d.unwrap().nidt())
        .collect();
    assert_eq!(kinds.len(), 4, "EUI-64, NGUID, UUID, CSI");
    assert_eq!(
        c.identify(3, 9).status(),
        Status::INVALID_NAMESPACE_OR_FORMAT
    );
    // An inactive NSID reads as zeroes.
    let inactive = c.identify(0, 9);
    assert_eq!(inactive.status(), Status::SUCCESS);
    assert!(inactive.data.iter().all(|&b| b == 0));
}

#[test]
fn writes_read_back_in_capsule_and_through_r2t_with_digests() {
    let t = start_target();
    for (hdgst, ddgst) in [(false, false), (true, true)] {
        let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], hdgst, ddgst, 0);
        let small = pattern(4096, 1);
        assert_eq!(io.write_in_capsule(1, 8, &small).status(), Status::SUCCESS);
        let d = io.read(1, 8, 8, 4096);
        assert_eq!(d.status(), Status::SUCCESS);
        assert_eq!(d.data, small);

        // 1 MiB through R2T: several H2CData PDUs at MAXH2CDATA.
        let big = pattern(1 << 20, 7);
        assert_eq!(io.write_r2t(1, 2048, &big).status(), Status::SUCCESS);
        let d = io.read(1, 2048, 2048, 1 << 20);
        assert_eq!(d.status(), Status::SUCCESS);
        assert!(d.data == big, "read back differs");
    }
}

#[test]
fn reads_are_padded_to_hpda() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let mut admin = Client::connect(addr);
    admin.ic(0, false, false);
    let cntlid = admin.admin_connect_enable(SUBNQN, 0);
    let mut io = Client::connect(addr);
    io.ic(7, true, true);
    let d = io.connect_queue(1, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS);
    let d = io.read(1, 0, 256, 128 * 1024);
    assert_eq!(d.status(), Status::SUCCESS);
    assert_eq!(d.data.len(), 128 * 1024);
}

#[test]
fn disabled_sq_flow_control_gives_sqhd_ffff_and_success_flag() {
    let t = start_target();
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], false, true, 1 << 2);
    let w = io.write_in_capsule(1, 0, &pattern(512, 3));
    assert_eq!(w.cqe.as_ref().unwrap().sqhd(), 0xFFFF);
    let d = io.read(1, 0, 1, 512);
    assert!(d.success_flag, "C2HData SUCCESS instead of a CapsuleResp");
    assert_eq!(d.data, pattern(512, 3));
}

#[test]
fn io_errors_have_the_nvme_status() {
    let t = start_target();
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], false, false, 0);
    let nlb = (4 << 20) / 512;
    assert_eq!(
        io.read(1, nlb - 1, 2, 1024).status(),
        Status::LBA_OUT_OF_RANGE
    );
    assert_eq!(
        io.read(2, 0, 1, 512).status(),
        Status::INVALID_NAMESPACE_OR_FORMAT
    );
    // 2 MiB exceeds MDTS (1 MiB).
    assert_eq!(io.read(1, 0, 4096, 2 << 20).status(), Status::INVALID_FIELD);
    // SGL shorter than the transfer.
    assert_eq!(
        io.read(1, 0, 8, 512).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    let d = io.read(1, 0, 2, 1024);
    assert_eq!(d.status(), Status::SUCCESS);
    let e = io.read(1, nlb, 1, 512);
    assert!(
        e.cqe.unwrap().status_field().dnr,
        "DNR on a permanent error"
    );
}

#[test]
fn flush_write_zeroes_and_deallocate() {
    let t = start_target();
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], false, false, 0);
    io.write_in_capsule(1, 0, &pattern(4096, 9));
    let mut flush = Sqe::new(0x00);
    flush.set_nsid(1);
    assert_eq!(io.command(flush, &[], 0).status(), Status::SUCCESS);
    let mut wz = Sqe::new(0x08);
    wz.set_nsid(1);
    wz.set_cdw10(0);
    wz.set_cdw12(1); // 2 blocks
    assert_eq!(io.command(wz, &[], 0).status(), Status::SUCCESS);
    let d = io.read(1, 0, 8, 4096);
    assert!(d.data[..1024].iter().all(|&b| b == 0));
    assert_eq!(d.data[1024..], pattern(4096, 9)[1024..]);
    // DSM deallocate blocks 2..4.
    let mut dsm = Sqe::new(0x09);
    dsm.set_nsid(1);
    dsm.set_cdw10(0); // one range
    dsm.set_cdw11(1 << 2);
    let range = nvme_tcp_wire::nvme::DsmRange::new(2, 2);
    assert_eq!(
        io.command(dsm, range.as_bytes(), 0).status(),
        Status::SUCCESS
    );
    let d = io.read(1, 0, 8, 4096);
    assert!(d.data[..2048].iter().all(|&b| b == 0));
    assert_eq!(d.data[2048..], pattern(4096, 9)[2048..]);
}

#[test]
fn discovery_log_lists_the_subsystem_and_genctr_follows_changes() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.bring_up_admin(DISCOVERY_NQN, 0);
    let id = c.identify(1, 0);
    let id = IdentifyController::parse(&id.data).unwrap();
    assert_eq!(id.cntrltype, IdentifyController::CNTRLTYPE_DISCOVERY);
    let hdr = c.get_log(0x70, 1024, 0);
    let gen1 = DiscoveryLogPage::parse(&hdr.data).map(|p| p.header().genctr.get());
    let page = c.get_log(0x70, 3 * 1024, 0);
    let p = DiscoveryLogPage::parse(&page.data).unwrap();
    assert!(p.is_complete());
    let subs: Vec<_> = p
        .entries()
        .iter()
        .map(|e| e.subnqn().unwrap().to_string())
        .collect();
    assert_eq!(subs, vec![SUBNQN.to_string(), DISCOVERY_NQN.to_string()]);
    assert_eq!(p.entries()[0].trsvcid().unwrap(), addr.port().to_string());
    assert_eq!(p.entries()[0].traddr().unwrap(), "127.0.0.1");
    t.state()
        .add_subsystem(&SubsystemConfig::new("nqn.2024-01.io.ulp-ddp:second"))
        .unwrap();
    let page = c.get_log(0x70, 4 * 1024, 0);
    let p = DiscoveryLogPage::parse(&page.data).unwrap();
    assert_eq!(p.entries().len(), 3);
    assert_ne!(Ok(p.header().genctr.get()), gen1, "GENCTR changed");
    // A discovery controller has no I/O queues and no namespaces.
    assert_eq!(c.identify(0, 1).status(), Status::INVALID_FIELD);
}

#[test]
fn malformed_pdu_gets_c2h_term_req_and_other_connections_keep_working() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let (_admin, mut good, _) = admin_and_io(addr, true, true, 0);

    // Wrong HLEN on a capsule: FES 0x01, FEI 2.
    let mut bad = Client::connect(addr);
    bad.ic(0, false, false);
    let repr = CapsuleCmdRepr {
        hdgst: false,
        ddgst: false,
        pda: 0,
        sqe: [0; 64],
        data_len: 0,
    };
    let mut bytes = HeaderBuf::new(&repr).as_bytes().to_vec();
    bytes[2] = 70;
    bad.s.write_all(&bytes).unwrap();
    assert_eq!(bad.expect_term_req(), (Fes::InvalidHeaderField as u16, 2));

    // Header digest error: FES 0x03, FEI = the received digest.
    let mut bad = Client::connect(addr);
    bad.ic(0, true, false);
    let repr = CapsuleCmdRepr {
        hdgst: true,
        ddgst: false,
        pda: 0,
        sqe: Sqe::new(AdminOpcode::KeepAlive as u8)
            .as_bytes()
            .try_into()
            .unwrap(),
        data_len: 0,
    };
    let mut bytes = HeaderBuf::new(&repr).as_bytes().to_vec();
    bytes[72] ^= 0xFF;
    let received = u32::from_le_bytes(bytes[72..76].try_into().unwrap());
    bad.s.write_all(&bytes).unwrap();
    assert_eq!(
        bad.expect_term_req(),
        (Fes::HeaderDigestError as u16, received)
    );

    // A PDU before ICReq: PDU sequence error.
    let mut bad = Client::connect(addr);
    let bytes = HeaderBuf::new(&CapsuleCmdRepr {
        hdgst: false,
        ddgst: false,
        pda: 0,
        sqe: [0; 64],
        data_len: 0,
    })
    .as_bytes()
    .to_vec();
    bad.s.write_all(&bytes).unwrap();
    assert_eq!(bad.expect_term_req().0, Fes::PduSequenceError as u16);

    // H2CData for a TTAG that has no R2T: FES 0x01, FEI 10.
    let mut bad = Client::connect(addr);
    bad.ic(0, false, false);
    bad.send_h2c(1, 77, 0, &[0u8; 512], true);
    assert_eq!(bad.expect_term_req(), (Fes::InvalidHeaderField as u16, 10));

    // The other connection is unaffected.
    let data = pattern(8192, 5);
    assert_eq!(good.write_r2t(1, 64, &data).status(), Status::SUCCESS);
    assert_eq!(good.read(1, 64, 16, 8192).data, data);
}

#[test]
fn h2c_data_digest_error_fails_only_the_command() {
    let t = start_target();
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], false, true, 0);
    let mut sqe = Sqe::new(0x01);
    sqe.set_nsid(1);
    sqe.set_cdw12(7);
    let cid = io.cid();
    sqe.set_cid(cid);
    sqe.set_dptr(nvme_tcp_wire::nvme::SglDescriptor::transport_data_block(
        4096,
    ));
    io.send_capsule(&sqe, &[]);
    let r2t = io.recv().unwrap();
    assert_eq!(r2t.pdu_type(), PduType::R2t as u8);
    let ttag = u16::from_le_bytes([r2t.header[10], r2t.header[11]]);
    // Build the PDU by hand with a wrong DDGST.
    let mut buf = vec![0u8; 4096 + 64];
    let repr = nvme_tcp_wire::pdu::DataPduRepr {
        pdu_type: PduType::H2cData,
        flags: nvme_tcp_wire::pdu::PduFlags::LAST_PDU,
        hdgst: false,
        ddgst: true,
        pda: 0,
        cccid: cid,
        ttag,
        datao: 0,
        datal: 4096,
    };
    let n = nvme_tcp_wire::pdu::emit_pdu(&repr, &[0xAB; 4096], &mut buf).unwrap();
    buf[n - 1] ^= 0xFF;
    io.s.write_all(&buf[..n]).unwrap();
    assert_eq!(io.wait(cid).status(), Status::TRANSIENT_TRANSPORT_ERROR);
    // The queue still works.
    assert_eq!(io.read(1, 0, 8, 4096).status(), Status::SUCCESS);
}

#[test]
fn connect_from_a_host_not_allowed_is_refused() {
    let t = start_with(|mut c| {
        c.subsystems[0].allow_any_host = false;
        c.subsystems[0].allowed_hosts = vec!["nqn.2014-08.org.nvmexpress:uuid:someone-else".into()];
        c
    });
    let mut c = Client::connect(t.local_addrs()[0]);
    c.ic(0, false, false);
    let d = c.connect_queue(0, 31, 0, 0, CNTLID_DYNAMIC, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_HOST);
    // Unknown subsystem: Invalid Parameters pointing at SUBNQN in the data.
    let d = c.connect_queue(0, 31, 0, 0, CNTLID_DYNAMIC, "nqn.2024-01.io.nope:x");
    assert_eq!(d.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(d.dw0(), (1 << 16) | 256, "IATTR data, IPO 256");
}

#[test]
fn io_queue_connect_checks_controller_and_queue_limits() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let mut admin = Client::connect(addr);
    admin.ic(0, false, false);
    let cntlid = admin.admin_connect_enable(SUBNQN, 0);
    let mut io = Client::connect(addr);
    io.ic(0, false, false);
    // Unknown controller.
    let d = io.connect_queue(1, 31, 0, 0, cntlid + 100, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_PARAMETERS);
    // Queue larger than the limit (1024 entries).
    let d = io.connect_queue(1, 4096, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_PARAMETERS);
    let d = io.connect_queue(1, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS);
    // The same QID twice.
    let mut io2 = Client::connect(addr);
    io2.ic(0, false, false);
    let d = io2.connect_queue(1, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn keep_alive_timeout_tears_the_controller_down() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let mut admin = Client::connect(addr);
    admin.ic(0, false, false);
    let cntlid = admin.admin_connect_enable(SUBNQN, 500);
    let mut io = Client::connect(addr);
    io.ic(0, false, false);
    let d = io.connect_queue(1, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS);
    // No Keep Alive is sent: both connections get closed by the target.
    assert!(admin.recv().is_none(), "admin queue closed");
    assert!(io.recv().is_none(), "I/O queue closed");
    // The controller is gone: a new I/O queue cannot join it.
    let mut late = Client::connect(addr);
    late.ic(0, false, false);
    let d = late.connect_queue(2, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn features_and_keep_alive() {
    let t = start_target();
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(SUBNQN, 0);
    let mut sf = Sqe::new(AdminOpcode::SetFeatures as u8);
    sf.set_cdw10(0x07);
    sf.set_cdw11(0xFFFE_FFFE);
    let d = c.command(sf, &[], 0);
    assert_eq!(d.status(), Status::SUCCESS);
    assert_eq!(d.dw0(), (63 << 16) | 63, "capped at 64 queues");
    let mut gf = Sqe::new(AdminOpcode::GetFeatures as u8);
    gf.set_cdw10(0x0F);
    assert_eq!(c.command(gf, &[], 0).status(), Status::SUCCESS);
    let ka = Sqe::new(AdminOpcode::KeepAlive as u8);
    assert_eq!(c.command(ka, &[], 0).status(), Status::SUCCESS);
    let mut bad = Sqe::new(AdminOpcode::GetFeatures as u8);
    bad.set_cdw10(0x55);
    assert_eq!(c.command(bad, &[], 0).status(), Status::INVALID_FIELD);
    assert_eq!(c.get_log(0x02, 512, 0).status(), Status::SUCCESS);
    assert_eq!(c.get_log(0x01, 4096, 0).data.len(), 4096);
    assert_eq!(c.get_log(0x42, 512, 0).status(), Status::INVALID_LOG_PAGE);
}

#[test]
fn asynchronous_event_completes_on_namespace_change() {
    let t = start_target();
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(SUBNQN, 0);
    let mut sf = Sqe::new(AdminOpcode::SetFeatures as u8);
    sf.set_cdw10(0x0B);
    sf.set_cdw11(1 << 8);
    assert_eq!(c.command(sf, &[], 0).status(), Status::SUCCESS);
    let mut aer = Sqe::new(AdminOpcode::AsyncEventRequest as u8);
    let cid = c.cid();
    aer.set_cid(cid);
    c.send_capsule(&aer, &[]);
    let nsid = t
        .add_namespace(SUBNQN, &NamespaceConfig::parse("ram:1M").unwrap())
        .unwrap();
    assert_eq!(nsid, 2);
    let d = c.wait(cid);
    assert_eq!(d.status(), Status::SUCCESS);
    assert_eq!(
        d.dw0(),
        0x0004_0002,
        "notice, namespace attribute changed, log 04h"
    );
    let log = c.get_log(0x04, 4096, 0);
    assert_eq!(&log.data[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn file_namespace_reads_and_writes_through_the_backing_file() {
    let path = std::env::temp_dir().join(format!("nvme-tcp-target-it-{}.img", std::process::id()));
    std::fs::write(&path, pattern(2 << 20, 11)).unwrap();
    let spec = format!("file:{}", path.display());
    let t = start_with(|mut c| {
        c.subsystems[0].namespaces = vec![NamespaceConfig::parse(&spec).unwrap()];
        c
    });
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], true, true, 0);
    // 1 MiB read: 8 C2HData PDUs from staged buffers.
    let d = io.read(1, 0, 2048, 1 << 20);
    assert_eq!(d.status(), Status::SUCCESS);
    assert!(d.data == pattern(2 << 20, 11)[..1 << 20]);
    let w = pattern(64 * 1024, 99);
    assert_eq!(io.write_r2t(1, 100, &w).status(), Status::SUCCESS);
    let mut flush = Sqe::new(0x00);
    flush.set_nsid(1);
    assert_eq!(io.command(flush, &[], 0).status(), Status::SUCCESS);
    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk[100 * 512..100 * 512 + w.len()] == w[..]);
    drop(t);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn nvmetcli_configuration_is_served() {
    let json = format!(
        r#"{{
          "hosts": [ {{ "nqn": "{HOSTNQN}" }} ],
          "ports": [ {{ "addr": {{ "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "0",
                                   "trtype": "tcp" }},
                        "portid": 3, "referrals": [], "subsystems": [ "{SUBNQN}" ] }} ],
          "subsystems": [ {{ "allowed_hosts": [ "{HOSTNQN}" ],
                             "attr": {{ "allow_any_host": "0", "serial": "feedface" }},
                             "namespaces": [ {{ "device": {{ "path": "ram:8M" }}, "enable": 1, "nsid": 3 }} ],
                             "nqn": "{SUBNQN}" }} ]
        }}"#
    );
    let cfg =
        nvme_tcp_target::TargetConfig::from_nvmetcli_json(&serde_json::from_str(&json).unwrap())
            .unwrap();
    let t = nvme_tcp_target::Target::start(cfg).unwrap();
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(SUBNQN, 0);
    let id = c.identify(1, 0);
    assert_eq!(
        IdentifyController::parse(&id.data).unwrap().sn().unwrap(),
        "feedface"
    );
    let list = c.identify(2, 0);
    let ids: Vec<u32> = NsidList::parse(&list.data).unwrap().iter().collect();
    assert_eq!(ids, vec![3]);
    // The discovery log reports the port ID of the configuration.
    let mut d = Client::connect(t.local_addrs()[0]);
    d.bring_up_admin(DISCOVERY_NQN, 0);
    let page = d.get_log(0x70, 3 * 1024, 0);
    let p = DiscoveryLogPage::parse(&page.data).unwrap();
    assert_eq!(p.entries()[0].portid.get(), 3);
}

#[test]
fn ipv6_listener_serves_when_the_host_has_ipv6() {
    let cfg = nvme_tcp_target::TargetConfig::single_port("[::1]:0".parse().unwrap()).subsystem(
        SubsystemConfig::new(SUBNQN).namespace(NamespaceConfig::parse("ram:1M").unwrap()),
    );
    let t = match nvme_tcp_target::Target::start(cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("no IPv6 loopback here ({e}); skipping");
            return;
        }
    };
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(DISCOVERY_NQN, 0);
    let page = c.get_log(0x70, 3 * 1024, 0);
    let p = DiscoveryLogPage::parse(&page.data).unwrap();
    assert_eq!(p.entries()[0].adrfam, 2, "IPv6 entry");
    assert_eq!(p.entries()[0].traddr().unwrap(), "::1");
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let t = start_with(|mut c| {
        c.limits.max_connections = 1;
        c
    });
    let mut first = Client::connect(t.local_addrs()[0]);
    first.ic(0, false, false);
    let mut second = Client::connect(t.local_addrs()[0]);
    second
        .s
        .write_all(
            HeaderBuf::new(&nvme_tcp_wire::pdu::IcReqRepr {
                pfv: 0,
                hpda: 0,
                hdgst_enable: false,
                ddgst_enable: false,
                maxr2t: 0,
            })
            .as_bytes(),
        )
        .ok();
    assert!(second.recv().is_none(), "second connection closed");
    // The first one still works.
    first.admin_connect_enable(SUBNQN, 0);
}

#[test]
fn r2t_waits_while_the_inflight_budget_is_spent() {
    let t = start_with(|mut c| {
        c.limits.max_inflight_data = 1 << 20;
        c
    });
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], false, false, 0);
    let mut cids = Vec::new();
    for slba in [0u64, 2048] {
        let mut sqe = Sqe::new(0x01);
        sqe.set_nsid(1);
        sqe.set_cdw10(slba as u32);
        sqe.set_cdw12(2047);
        let cid = io.cid();
        sqe.set_cid(cid);
        sqe.set_dptr(nvme_tcp_wire::nvme::SglDescriptor::transport_data_block(
            1 << 20,
        ));
        io.send_capsule(&sqe, &[]);
        cids.push(cid);
    }
    let data = pattern(1 << 20, 1);
    for &cid in &cids {
        // Exactly one R2T at a time: the next one comes after the previous command completes.
        let r2t = io.recv().unwrap();
        assert_eq!(r2t.pdu_type(), PduType::R2t as u8);
        assert_eq!(u16::from_le_bytes([r2t.header[8], r2t.header[9]]), cid);
        let ttag = u16::from_le_bytes([r2t.header[10], r2t.header[11]]);
        let mut off = 0;
        while off < data.len() {
            let n = (data.len() - off).min(io.maxh2cdata as usize);
            io.send_h2c(
                cid,
                ttag,
                off as u32,
                &data[off..off + n],
                off + n == data.len(),
            );
            off += n;
        }
        let resp = io.recv().unwrap();
        assert_eq!(resp.cqe().cid(), cid);
        assert_eq!(resp.cqe().status(), Status::SUCCESS);
    }
}

#[test]
fn abort_completes_a_held_asynchronous_event_request() {
    let t = start_target();
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(SUBNQN, 0);
    let mut aer = Sqe::new(AdminOpcode::AsyncEventRequest as u8);
    let aer_cid = c.cid();
    aer.set_cid(aer_cid);
    c.send_capsule(&aer, &[]);
    let mut abort = Sqe::new(AdminOpcode::Abort as u8);
    abort.set_cdw10((aer_cid as u32) << 16);
    let abort_cid = c.cid();
    abort.set_cid(abort_cid);
    c.send_capsule(&abort, &[]);
    let first = c.recv().unwrap().cqe();
    assert_eq!(first.cid(), aer_cid);
    assert_eq!(first.status(), Status::ABORT_REQUESTED);
    let second = c.recv().unwrap().cqe();
    assert_eq!(second.cid(), abort_cid);
    assert_eq!(second.dw0() & 1, 0, "aborted");
}

#[test]
fn discovery_controller_reports_log_changes_by_event() {
    let t = start_target();
    let mut c = Client::connect(t.local_addrs()[0]);
    c.bring_up_admin(DISCOVERY_NQN, 0);
    let mut sf = Sqe::new(AdminOpcode::SetFeatures as u8);
    sf.set_cdw10(0x0B);
    sf.set_cdw11(1 << 31);
    assert_eq!(c.command(sf, &[], 0).status(), Status::SUCCESS);
    let mut aer = Sqe::new(AdminOpcode::AsyncEventRequest as u8);
    let cid = c.cid();
    aer.set_cid(cid);
    c.send_capsule(&aer, &[]);
    t.state()
        .add_subsystem(&SubsystemConfig::new("nqn.2024-01.io.ulp-ddp:third"))
        .unwrap();
    let d = c.wait(cid);
    assert_eq!(
        d.dw0(),
        0x0070_F002,
        "notice, discovery log change, log 70h"
    );
}

#[test]
fn largest_configurable_c2h_pdus_are_sent_whole() {
    let t = start_with(|mut c| {
        c.limits.mdts = 4 << 20;
        c.limits.c2h_data_max = nvme_tcp_target::config::MAX_C2H_DATA;
        c.subsystems[0]
            .namespaces
            .push(NamespaceConfig::parse("null:64M").unwrap());
        c
    });
    let (_admin, mut io, _) = admin_and_io(t.local_addrs()[0], true, true, 0);
    let data = pattern(4 << 20, 21);
    assert_eq!(io.write_r2t(1, 0, &data).status(), Status::SUCCESS);
    let d = io.read(1, 0, 8192, 4 << 20);
    assert_eq!(d.status(), Status::SUCCESS);
    assert!(d.data == data);
    let z = io.read(2, 0, 8192, 4 << 20);
    assert_eq!(z.status(), Status::SUCCESS);
    assert!(z.data.iter().all(|&b| b == 0));
}

#[test]
fn a_discovery_only_port_serves_discovery_but_not_the_subsystem() {
    let t = start_with(|mut c| {
        let mut disc = nvme_tcp_target::PortConfig::new(2, "127.0.0.1:0".parse().unwrap());
        disc.subsystems = nvme_tcp_target::config::PortSubsystems::Listed(vec![]);
        c.ports.push(disc);
        c
    });
    let disc_addr = t.local_addrs()[1];
    let mut c = Client::connect(disc_addr);
    c.ic(0, false, false);
    let d = c.connect_queue(0, 31, 0, 0, CNTLID_DYNAMIC, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_PARAMETERS);
    // Its discovery log points at the I/O port.
    let mut c = Client::connect(disc_addr);
    c.bring_up_admin(DISCOVERY_NQN, 0);
    let page = c.get_log(0x70, 3 * 1024, 0);
    let p = DiscoveryLogPage::parse(&page.data).unwrap();
    assert_eq!(p.entries()[0].subnqn().unwrap(), SUBNQN);
    assert_eq!(
        p.entries()[0].trsvcid().unwrap(),
        t.local_addrs()[0].port().to_string()
    );
    assert_eq!(
        p.entries()[1].portid.get(),
        2,
        "current discovery subsystem"
    );
}
