//! Identify data structures and controller properties: spec offsets and round trips.

use nvme_tcp_wire::nvme::identify::IDENTIFY_DATA_LEN;
use nvme_tcp_wire::nvme::{
    Cap, Cc, Csts, IdentifyController, IdentifyControllerNvm, IdentifyNamespace,
    IdentifyNamespaceIndependent, LbaFormat, NsIdDescriptor, NsidList, NvmeError,
    PowerStateDescriptor, Vs,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

#[test]
fn newer_identify_fields_and_power_states_sit_at_spec_offsets() {
    let mut id = IdentifyController {
        nvmsr: 1,
        vwci: 2,
        mec: 3,
        npss: 1,
        ..Default::default()
    };
    id.pels.set(0x0403_0201);
    id.domainid.set(0x0605);
    id.megcap[0] = 7;
    id.ocfs.set(0x0908);
    id.maxdna[15] = 0x0A;
    id.maxcna.set(0x0C0B);
    id.psd[1] = PowerStateDescriptor {
        mp: 2500.into(),
        flags: 0x3,
        enlat: 10.into(),
        exlat: 20.into(),
        rrt: 1,
        rrl: 2,
        rwt: 3,
        rwl: 4,
        idlp: 5.into(),
        ips: 0x80,
        actp: 6.into(),
        apws: 0x42,
        ..Default::default()
    };
    let b = id.as_bytes();
    assert_eq!((b[253], b[254], b[255]), (1, 2, 3), "NVMSR, VWCI, MEC");
    assert_eq!(&b[352..356], &[1, 2, 3, 4], "PELS");
    assert_eq!(&b[356..358], &[5, 6], "DOMAINID");
    assert_eq!(b[368], 7, "MEGCAP");
    assert_eq!(&b[534..536], &[8, 9], "OCFS");
    assert_eq!(b[559], 0x0A, "MAXDNA");
    assert_eq!(&b[560..564], &[0x0B, 0x0C, 0, 0], "MAXCNA");
    let p = &b[2048 + 32..2048 + 64];
    assert_eq!(&p[0..2], &2500u16.to_le_bytes(), "MP");
    assert_eq!(p[3], 3, "flags");
    assert_eq!(&p[4..8], &[10, 0, 0, 0], "ENLAT");
    assert_eq!(&p[8..12], &[20, 0, 0, 0], "EXLAT");
    assert_eq!(&p[12..16], &[1, 2, 3, 4], "RRT RRL RWT RWL");
    assert_eq!((p[16], p[18], p[20], p[22]), (5, 0x80, 6, 0x42));

    let mut ns = IdentifyNamespace::new(8, 12);
    ns.mssrl.set(0x0201);
    ns.mcl.set(0x0605_0403);
    ns.msrc = 7;
    ns.nulbaf = 8;
    let b = ns.as_bytes();
    assert_eq!(&b[74..76], &[1, 2], "MSSRL");
    assert_eq!(&b[76..80], &[3, 4, 5, 6], "MCL");
    assert_eq!(b[80], 7, "MSRC");
    assert_eq!(b[82], 8, "NULBAF");
}

#[test]
fn identify_controller_fields_sit_at_spec_offsets() {
    let mut id = IdentifyController::default();
    id.vid.set(0x1B36);
    id.set_sn("SN1").unwrap();
    id.set_mn("ulp-ddp").unwrap();
    id.set_fr("0.1").unwrap();
    id.mdts = 5;
    id.cntlid.set(0x0102);
    id.ver.set(Vs::V1_4.0);
    id.ctratt.set(IdentifyController::CTRATT_HOST_ID_128);
    id.cntrltype = IdentifyController::CNTRLTYPE_IO;
    id.kas.set(10);
    id.aerl = 3;
    id.elpe = 0x7F;
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd.set(128);
    id.nn.set(32);
    id.oncs
        .set(IdentifyController::ONCS_DSM | IdentifyController::ONCS_WRITE_ZEROES);
    id.vwc = IdentifyController::VWC_PRESENT;
    id.sgls
        .set(IdentifyController::SGLS_SUPPORTED | IdentifyController::SGLS_OFFSET);
    id.set_subnqn("nqn.2026-11.io.ulp-ddp:sub0").unwrap();
    id.ioccsz.set(260);
    id.iorcsz.set(1);
    id.icdoff.set(0);
    id.fcatt = 0;
    id.msdbd = 1;
    id.ofcs.set(IdentifyController::OFCS_DISCONNECT);

    let b = id.as_bytes();
    assert_eq!(b.len(), IDENTIFY_DATA_LEN);
    assert_eq!(&b[0..2], &[0x36, 0x1B]);
    assert_eq!(&b[4..24], b"SN1                 ");
    assert_eq!(&b[24..31], b"ulp-ddp");
    assert_eq!(b[31], b' ');
    assert_eq!(&b[64..72], b"0.1     ");
    assert_eq!(b[77], 5, "MDTS");
    assert_eq!(&b[78..80], &[0x02, 0x01], "CNTLID");
    assert_eq!(&b[80..84], &[0x00, 0x04, 0x01, 0x00], "VER");
    assert_eq!(b[96], 1, "CTRATT");
    assert_eq!(b[111], 1, "CNTRLTYPE");
    assert_eq!(b[259], 3, "AERL");
    assert_eq!(b[262], 0x7F, "ELPE");
    assert_eq!(&b[320..322], &[10, 0], "KAS");
    assert_eq!((b[512], b[513]), (0x66, 0x44), "SQES/CQES");
    assert_eq!(&b[514..516], &[128, 0], "MAXCMD");
    assert_eq!(&b[516..520], &[32, 0, 0, 0], "NN");
    assert_eq!(&b[520..522], &[0x0C, 0], "ONCS");
    assert_eq!(b[525], 1, "VWC");
    assert_eq!(&b[536..540], &[0x01, 0x00, 0x10, 0x00], "SGLS");
    assert_eq!(&b[768..795], b"nqn.2026-11.io.ulp-ddp:sub0", "SUBNQN");
    assert_eq!(b[795], 0);
    assert_eq!(&b[1792..1796], &[0x04, 0x01, 0, 0], "IOCCSZ");
    assert_eq!(&b[1796..1800], &[1, 0, 0, 0], "IORCSZ");
    assert_eq!(b[1803], 1, "MSDBD");
    assert_eq!(&b[1804..1806], &[1, 0], "OFCS");

    let parsed = IdentifyController::parse(b).unwrap();
    assert_eq!(parsed.sn(), Ok("SN1"));
    assert_eq!(parsed.mn(), Ok("ulp-ddp"));
    assert_eq!(parsed.fr(), Ok("0.1"));
    assert_eq!(parsed.subnqn(), Ok("nqn.2026-11.io.ulp-ddp:sub0"));
    assert_eq!(parsed.in_capsule_data_size(), 4096);
    assert_eq!(parsed.max_data_transfer_bytes(0), Some(128 * 1024));
}

#[test]
fn identify_controller_from_short_buffer_is_truncated() {
    assert!(matches!(
        IdentifyController::parse(&[0u8; 4095]),
        Err(NvmeError::Truncated {
            needed: 4096,
            have: 4095,
            ..
        })
    ));
}

#[test]
fn identify_namespace_offsets_and_lba_size() {
    let mut ns = IdentifyNamespace::new(0x10_0000, 12);
    ns.nsfeat = IdentifyNamespace::NSFEAT_THIN;
    ns.dlfeat = IdentifyNamespace::DLFEAT_READ_ZEROES;
    ns.nguid = [0x11; 16];
    ns.eui64 = [0x22; 8];
    ns.lbaf[1] = LbaFormat::new(9);
    ns.nlbaf = 1;
    let b = ns.as_bytes();
    assert_eq!(&b[0..8], &[0, 0, 0x10, 0, 0, 0, 0, 0], "NSZE");
    assert_eq!(&b[8..16], &b[0..8], "NCAP");
    assert_eq!(&b[16..24], &b[0..8], "NUSE");
    assert_eq!(b[24], 1, "NSFEAT");
    assert_eq!(b[25], 1, "NLBAF");
    assert_eq!(b[26], 0, "FLBAS");
    assert_eq!(b[33], 1, "DLFEAT");
    assert_eq!(&b[104..120], &[0x11; 16], "NGUID");
    assert_eq!(&b[120..128], &[0x22; 8], "EUI64");
    assert_eq!(&b[128..132], &[0, 0, 12, 0], "LBAF0");
    assert_eq!(&b[132..136], &[0, 0, 9, 0], "LBAF1");
    assert_eq!(ns.lba_size(), Some(4096));
    ns.flbas = 1;
    assert_eq!(ns.lba_size(), Some(512));
    ns.flbas = 2; // past NLBAF
    assert_eq!(ns.lba_size(), None);
    ns.flbas = 0x20; // high index bits 6:5 -> index 16, past NLBAF
    assert_eq!(ns.flbas_index(), 16);
    assert_eq!(ns.lba_format(), None);
}

#[test]
fn identify_namespace_with_nonsense_lbads_has_no_lba_size() {
    let mut ns = IdentifyNamespace::new(1, 64);
    assert_eq!(ns.lba_size(), None);
    ns.lbaf[0].lbads = 8;
    assert_eq!(ns.lba_size(), None, "below 512 bytes");
}

#[test]
fn command_set_specific_identify_offsets() {
    let mut nvm = IdentifyControllerNvm {
        wzsl: 5,
        dmrl: 16,
        ..Default::default()
    };
    nvm.dmrsl.set(0x1000);
    nvm.dmsl.set(0x2_0000);
    let b = nvm.as_bytes();
    assert_eq!((b[1], b[3]), (5, 16));
    assert_eq!(&b[4..8], &[0, 0x10, 0, 0]);
    assert_eq!(&b[8..12], &[0, 0, 2, 0]);
    assert_eq!(IdentifyControllerNvm::parse(b).unwrap(), &nvm);

    let mut ind = IdentifyNamespaceIndependent::default();
    ind.anagrpid.set(1);
    ind.nstat = IdentifyNamespaceIndependent::NSTAT_READY;
    let b = ind.as_bytes();
    assert_eq!(b.len(), 4096);
    assert_eq!((b[4], b[14]), (1, 1));
    assert!(IdentifyNamespaceIndependent::parse(&b[..100]).is_err());
}

#[test]
fn nsid_list_stops_at_first_zero_and_checks_order() {
    let list = NsidList::from_nsids(&[1, 2, 7]).unwrap();
    let b = list.as_bytes();
    assert_eq!(&b[0..12], &[1, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0]);
    assert_eq!(
        NsidList::parse(b).unwrap().iter().collect::<Vec<_>>(),
        vec![1, 2, 7]
    );
    assert!(NsidList::from_nsids(&[2, 1]).is_err());
    assert!(NsidList::from_nsids(&[0]).is_err());
    assert!(NsidList::from_nsids(&vec![1; 1025]).is_err());
    let full: Vec<u32> = (1..=1024).collect();
    assert_eq!(NsidList::from_nsids(&full).unwrap().iter().count(), 1024);
}

#[test]
fn ns_id_descriptor_list_golden_bytes() {
    let descs = [
        NsIdDescriptor::Eui64([1; 8]),
        NsIdDescriptor::Nguid([2; 16]),
        NsIdDescriptor::Uuid([3; 16]),
        NsIdDescriptor::Csi(0),
    ];
    let mut out = [0xEEu8; 4096];
    let used = NsIdDescriptor::emit_list(&descs, &mut out).unwrap();
    assert_eq!(used, 12 + 20 + 20 + 5);
    assert_eq!(&out[0..4], &[1, 8, 0, 0]);
    assert_eq!(&out[12..16], &[2, 16, 0, 0]);
    assert_eq!(&out[32..36], &[3, 16, 0, 0]);
    assert_eq!(&out[52..57], &[4, 1, 0, 0, 0]);
    assert!(out[used..].iter().all(|&b| b == 0));
    let parsed: Result<Vec<_>, _> = NsIdDescriptor::parse_list(&out).collect();
    assert_eq!(parsed.unwrap(), descs);
}

#[test]
fn ns_id_descriptor_list_rejects_bad_lengths_and_skips_unknown_types() {
    // Unknown type 9 with 2 bytes, then a UUID.
    let mut b = vec![9, 2, 0, 0, 0xAA, 0xBB, 3, 16, 0, 0];
    b.extend_from_slice(&[5; 16]);
    b.extend_from_slice(&[0; 4]);
    let parsed: Vec<_> = NsIdDescriptor::parse_list(&b).collect();
    assert_eq!(parsed, vec![Ok(NsIdDescriptor::Uuid([5; 16]))]);

    // EUI-64 claiming 16 bytes.
    let mut b = vec![1, 16, 0, 0];
    b.extend_from_slice(&[0; 16]);
    let parsed: Vec<_> = NsIdDescriptor::parse_list(&b).collect();
    assert!(matches!(
        parsed[..],
        [Err(NvmeError::InvalidField {
            field: "NIDL",
            offset: 1,
            ..
        })]
    ));

    // Runs past the end.
    let parsed: Vec<_> = NsIdDescriptor::parse_list(&[3, 16, 0, 0, 1, 2]).collect();
    assert_eq!(parsed.len(), 1);
    assert!(parsed[0].is_err());
}

#[test]
fn controller_bring_up_values() {
    let cc = Cc::enable_nvm();
    assert!(cc.en());
    assert_eq!((cc.iosqes(), cc.iocqes(), cc.mps(), cc.css()), (6, 4, 0, 0));
    let shutdown = cc.with_shn(Cc::SHN_NORMAL);
    assert_eq!(shutdown.0, 0x0046_4001);
    let csts = Csts(0).with_rdy(true).with_shst(Csts::SHST_COMPLETE);
    assert_eq!(csts.0, 0b1001);
    assert!(csts.rdy() && !csts.cfs());
    let cap = Cap(0).with_mqes(127).with_css(Cap::CSS_NVM).with_to(10);
    assert_eq!(cap.mqes(), 127);
    assert_eq!(Cap(cap.0).timeout_ms(), 5000);
}

fn arb_desc() -> impl Strategy<Value = NsIdDescriptor> {
    prop_oneof![
        any::<[u8; 8]>().prop_map(NsIdDescriptor::Eui64),
        any::<[u8; 16]>().prop_map(NsIdDescriptor::Nguid),
        any::<[u8; 16]>().prop_map(NsIdDescriptor::Uuid),
        any::<u8>().prop_map(NsIdDescriptor::Csi),
    ]
}

proptest! {
    #[test]
    fn identify_controller_round_trips(vid in any::<u16>(), mdts in any::<u8>(), cntlid in any::<u16>(),
                                       ioccsz in any::<u32>(), nn in any::<u32>(), kas in any::<u16>(),
                                       sn in "[ -~]{0,20}", subnqn in "[a-z0-9.:-]{0,223}") {
        let mut id = IdentifyController::default();
        id.vid.set(vid);
        id.mdts = mdts;
        id.cntlid.set(cntlid);
        id.ioccsz.set(ioccsz);
        id.nn.set(nn);
        id.kas.set(kas);
        id.set_sn(&sn).unwrap();
        id.set_subnqn(&subnqn).unwrap();
        let parsed = IdentifyController::parse(id.as_bytes()).unwrap();
        prop_assert_eq!(parsed, &id);
        prop_assert_eq!(parsed.sn().unwrap(), sn.trim_end_matches(' '));
        prop_assert_eq!(parsed.subnqn(), Ok(subnqn.as_str()));
    }

    #[test]
    fn identify_namespace_round_trips(nsze in any::<u64>(), lbads in 9u8..=16, nguid in any::<[u8; 16]>()) {
        let mut ns = IdentifyNamespace::new(nsze, lbads);
        ns.nguid = nguid;
        let parsed = IdentifyNamespace::parse(ns.as_bytes()).unwrap();
        prop_assert_eq!(parsed, &ns);
        prop_assert_eq!(parsed.lba_size(), Some(1u32 << lbads));
        prop_assert_eq!(parsed.nsze.get(), nsze);
    }

    #[test]
    fn nsid_list_round_trips(mut nsids in proptest::collection::btree_set(1u32.., 0..64)
                                 .prop_map(|s| s.into_iter().collect::<Vec<_>>())) {
        nsids.truncate(1024);
        let list = NsidList::from_nsids(&nsids).unwrap();
        let parsed = NsidList::parse(list.as_bytes()).unwrap();
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), nsids);
    }

    #[test]
    fn ns_id_descriptors_round_trip(descs in proptest::collection::vec(arb_desc(), 0..20)) {
        let mut out = [0u8; 4096];
        NsIdDescriptor::emit_list(&descs, &mut out).unwrap();
        let parsed: Result<Vec<_>, _> = NsIdDescriptor::parse_list(&out).collect();
        prop_assert_eq!(parsed.unwrap(), descs);
    }

    #[test]
    fn any_bytes_parse_as_identify_without_panic(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
        let id = IdentifyController::parse(&bytes).unwrap();
        let _ = (id.sn(), id.mn(), id.fr(), id.subnqn(), id.in_capsule_data_size(), id.max_data_transfer_bytes(15));
        let ns = IdentifyNamespace::parse(&bytes).unwrap();
        let _ = ns.lba_size();
        let _ = NsidList::parse(&bytes).unwrap().iter().count();
        let _ = NsIdDescriptor::parse_list(&bytes).count();
    }
}
