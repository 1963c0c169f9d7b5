//! Admin and I/O commands: golden bytes, dispatch errors and build → bytes → parse round trips.

mod support;

use nvme_tcp_wire::nvme::{
    AbortCommand, AdminCommand, AsyncEvent, AsyncEventConfig, Cns, ConnectCommand,
    DatasetManagementCommand, DisconnectCommand, DsmRange, FabricsCommand, Feature, FeatureId,
    FlushCommand, GetFeaturesCommand, GetLogPageCommand, IdentifyCommand, IoCommand,
    NumberOfQueues, NvmeError, PropertyGetCommand, PropertySize, ReadWriteCommand,
    SetFeaturesCommand, Sqe, Status, WriteZeroesCommand,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

fn reparse(sqe: &Sqe) -> &Sqe {
    Sqe::parse(sqe.as_bytes()).unwrap()
}

#[test]
fn identify_controller_golden_bytes() {
    let sqe = AdminCommand::Identify(IdentifyCommand::controller()).to_sqe();
    let b = sqe.as_bytes();
    assert_eq!(b[0], 0x06);
    assert_eq!(&b[40..44], &[0x01, 0, 0, 0], "CNS 1 in CDW10");
    assert_eq!(
        AdminCommand::Identify(IdentifyCommand::controller()).data_len(),
        4096
    );
}

#[test]
fn identify_with_unknown_cns_completes_with_invalid_field() {
    let mut sqe = IdentifyCommand::controller().to_sqe();
    sqe.set_cdw10(0x1F);
    let err = AdminCommand::parse(&sqe).unwrap_err();
    assert!(matches!(
        err,
        NvmeError::InvalidField {
            field: "CNS",
            offset: 40,
            ..
        }
    ));
    assert_eq!(err.status(), Status::INVALID_FIELD);
}

#[test]
fn get_log_page_splits_numd_into_numdl_and_numdu() {
    // 1 MiB + 4 bytes: NUMD = 0x40000 (0's based) -> NUMDL 0x0000, NUMDU 0x0004.
    let cmd = GetLogPageCommand::new(0x70, 0, 4096, (1 << 20) + 4).unwrap();
    assert_eq!(cmd.numd, 0x4_0000);
    let sqe = cmd.to_sqe();
    let b = sqe.as_bytes();
    assert_eq!(b[40], 0x70, "LID");
    assert_eq!(&b[42..44], &[0, 0], "NUMDL");
    assert_eq!(&b[44..46], &[4, 0], "NUMDU");
    assert_eq!(&b[48..56], &[0, 0x10, 0, 0, 0, 0, 0, 0], "LPOL/LPOU");
    let parsed = GetLogPageCommand::parse(reparse(&sqe)).unwrap();
    assert_eq!(parsed, cmd);
    assert_eq!(parsed.data_len(), (1 << 20) + 4);
}

#[test]
fn get_log_page_rejects_unaligned_requests() {
    assert!(GetLogPageCommand::new(1, 0, 0, 0).is_err());
    assert!(GetLogPageCommand::new(1, 0, 0, 6).is_err());
    assert!(GetLogPageCommand::new(1, 0, 2, 64).is_err());
    assert!(GetLogPageCommand::new(1, 0, 0, 1 << 34).is_ok());
    assert!(GetLogPageCommand::new(1, 0, 0, (1 << 34) + 4).is_err());
}

#[test]
fn set_features_number_of_queues_golden_bytes() {
    let cmd = SetFeaturesCommand {
        nsid: 0,
        sv: false,
        feature: Feature::NumberOfQueues(NumberOfQueues { nsq: 3, ncq: 3 }),
    };
    let sqe = cmd.to_sqe();
    let b = sqe.as_bytes();
    assert_eq!((b[0], b[40]), (0x09, 0x07));
    assert_eq!(&b[44..48], &[3, 0, 3, 0]);
    assert_eq!(
        NumberOfQueues::from_dword(0x0001_0002),
        NumberOfQueues { nsq: 2, ncq: 1 }
    );
}

#[test]
fn keep_alive_timer_and_async_event_config_values() {
    let kato = SetFeaturesCommand {
        nsid: 0,
        sv: true,
        feature: Feature::KeepAliveTimer { kato: 5000 },
    }
    .to_sqe();
    assert_eq!(kato.cdw10(), 0x8000_000F);
    assert_eq!(kato.cdw11(), 5000);
    let aec = Feature::parse(0x0B, AsyncEventConfig::NAMESPACE_ATTRIBUTE);
    assert_eq!(aec.fid(), FeatureId::AsyncEventConfiguration as u8);
    assert!(matches!(aec, Feature::AsyncEventConfiguration(c) if c.contains(1 << 8)));
}

#[test]
fn async_event_dw0_layout() {
    let ev = AsyncEvent::namespace_attribute_changed();
    assert_eq!(ev.to_dw0(), 0x0004_0002);
    assert_eq!(AsyncEvent::discovery_log_changed().to_dw0(), 0x0070_F002);
    assert_eq!(AsyncEvent::from_dw0(0x0004_0002), ev);
}

#[test]
fn abort_golden_bytes() {
    let sqe = AbortCommand {
        sqid: 2,
        cid: 0x1234,
    }
    .to_sqe();
    assert_eq!(&sqe.as_bytes()[40..44], &[2, 0, 0x34, 0x12]);
}

#[test]
fn read_golden_bytes() {
    let mut cmd = ReadWriteCommand::new(1, 0x1_0000_0002, 8).unwrap();
    cmd.fua = true;
    let sqe = IoCommand::Read(cmd).to_sqe();
    let b = sqe.as_bytes();
    assert_eq!(b[0], 0x02);
    assert_eq!(&b[4..8], &[1, 0, 0, 0], "NSID");
    assert_eq!(&b[40..48], &[2, 0, 0, 0, 1, 0, 0, 0], "SLBA");
    assert_eq!(&b[48..52], &[7, 0, 0, 0x40], "NLB 7 (0's based) + FUA");
    assert_eq!(cmd.data_len(512), 4096);
    assert_eq!(ReadWriteCommand::new(1, 0, 0), None);
    assert_eq!(ReadWriteCommand::new(1, 0, 65537), None);
    assert_eq!(
        ReadWriteCommand::new(1, u64::MAX, 2).unwrap().end_lba(),
        None
    );
}

#[test]
fn write_zeroes_deallocate_bit() {
    let sqe = IoCommand::WriteZeroes(WriteZeroesCommand {
        nsid: 1,
        slba: 0,
        nlb: 0,
        deac: true,
        fua: false,
        lr: false,
    })
    .to_sqe();
    assert_eq!(sqe.cdw12(), 1 << 25);
}

#[test]
fn dataset_management_ranges_golden_bytes() {
    let cmd = DatasetManagementCommand {
        nsid: 1,
        nr: 1,
        idr: false,
        idw: false,
        ad: true,
    };
    let sqe = IoCommand::DatasetManagement(cmd).to_sqe();
    assert_eq!((sqe.cdw10(), sqe.cdw11()), (1, 4));
    assert_eq!(cmd.data_len(), 32);
    let ranges = [DsmRange::new(0x10, 8), DsmRange::new(0x100, 16)];
    let bytes = ranges.as_bytes();
    assert_eq!(
        &bytes[0..16],
        &[0, 0, 0, 0, 8, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(DsmRange::slice_from(bytes, 2).unwrap(), &ranges);
    assert!(DsmRange::slice_from(&bytes[..31], 2).is_err());
    assert!(DsmRange::slice_from(bytes, usize::MAX).is_err());
}

#[test]
fn unknown_opcodes_complete_with_invalid_opcode() {
    for op in [0x04u8, 0x05, 0x80, 0xC0] {
        let err = IoCommand::parse(&Sqe::new(op)).unwrap_err();
        assert_eq!(err, NvmeError::InvalidOpcode { opcode: op });
        assert_eq!(err.status(), Status::INVALID_OPCODE);
    }
    assert!(
        AdminCommand::parse(&Sqe::new(0x01)).is_err(),
        "Create I/O SQ is PCIe only"
    );
}

#[test]
fn connect_and_disconnect_dispatch_on_io_queues() {
    let sqe = DisconnectCommand::default().to_sqe();
    assert_eq!(
        IoCommand::parse(&sqe),
        Ok(IoCommand::Fabrics(FabricsCommand::Disconnect(
            DisconnectCommand::default()
        )))
    );
    let connect = ConnectCommand {
        qid: 1,
        sqsize: 127,
        ..Default::default()
    };
    assert_eq!(
        AdminCommand::Fabrics(FabricsCommand::Connect(connect)).data_len(),
        1024
    );
}

fn arb_fabrics() -> impl Strategy<Value = FabricsCommand> {
    prop_oneof![
        support::connect_command().prop_map(FabricsCommand::Connect),
        any::<u32>().prop_map(|ofst| FabricsCommand::PropertyGet(PropertyGetCommand {
            size: PropertySize::EightBytes,
            ofst
        })),
        any::<u16>().prop_map(|recfmt| FabricsCommand::Disconnect(DisconnectCommand { recfmt })),
    ]
}

fn arb_feature() -> impl Strategy<Value = Feature> {
    prop_oneof![
        any::<bool>().prop_map(|wce| Feature::VolatileWriteCache { wce }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(nsq, ncq)| Feature::NumberOfQueues(NumberOfQueues { nsq, ncq })),
        any::<u32>().prop_map(|v| Feature::AsyncEventConfiguration(AsyncEventConfig(v))),
        any::<u32>().prop_map(|kato| Feature::KeepAliveTimer { kato }),
        (0x10u8..=0x7F, any::<u32>()).prop_map(|(fid, cdw11)| Feature::Other { fid, cdw11 }),
    ]
}

fn arb_cns() -> impl Strategy<Value = Cns> {
    prop_oneof![
        Just(Cns::Namespace),
        Just(Cns::Controller),
        Just(Cns::ActiveNamespaceList),
        Just(Cns::NamespaceIdDescriptors),
        Just(Cns::IoCommandSetController),
    ]
}

fn arb_admin() -> impl Strategy<Value = AdminCommand> {
    prop_oneof![
        (
            arb_cns(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u8>()
        )
            .prop_map(|(cns, nsid, cntid, cnssid, csi)| AdminCommand::Identify(
                IdentifyCommand {
                    cns,
                    nsid,
                    cntid,
                    cnssid,
                    csi
                }
            )),
        (
            any::<u32>(),
            any::<u8>(),
            0u8..0x80,
            any::<bool>(),
            any::<u32>(),
            any::<u16>(),
            any::<u64>(),
            any::<u8>()
        )
            .prop_map(|(nsid, lid, lsp, rae, numd, lsi, lpo, csi)| {
                AdminCommand::GetLogPage(GetLogPageCommand {
                    nsid,
                    lid,
                    lsp,
                    rae,
                    numd,
                    lsi,
                    lpo,
                    csi,
                })
            }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(sqid, cid)| AdminCommand::Abort(AbortCommand { sqid, cid })),
        (any::<u32>(), any::<bool>(), arb_feature()).prop_map(|(nsid, sv, feature)| {
            AdminCommand::SetFeatures(SetFeaturesCommand { nsid, sv, feature })
        }),
        (any::<u32>(), any::<u8>(), 0u8..8, any::<u32>()).prop_map(|(nsid, fid, sel, cdw11)| {
            AdminCommand::GetFeatures(GetFeaturesCommand {
                nsid,
                fid,
                sel,
                cdw11,
            })
        }),
        Just(AdminCommand::AsyncEventRequest),
        Just(AdminCommand::KeepAlive),
        arb_fabrics().prop_map(AdminCommand::Fabrics),
    ]
}

fn arb_rw() -> impl Strategy<Value = ReadWriteCommand> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(nsid, slba, nlb, fua, lr)| ReadWriteCommand {
            nsid,
            slba,
            nlb,
            fua,
            lr,
        })
}

fn arb_io() -> impl Strategy<Value = IoCommand> {
    prop_oneof![
        any::<u32>().prop_map(|nsid| IoCommand::Flush(FlushCommand { nsid })),
        arb_rw().prop_map(IoCommand::Read),
        arb_rw().prop_map(IoCommand::Write),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(nsid, slba, nlb, deac, fua, lr)| {
                IoCommand::WriteZeroes(WriteZeroesCommand {
                    nsid,
                    slba,
                    nlb,
                    deac,
                    fua,
                    lr,
                })
            }),
        (
            any::<u32>(),
            any::<u8>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(nsid, nr, idr, idw, ad)| {
                IoCommand::DatasetManagement(DatasetManagementCommand {
                    nsid,
                    nr,
                    idr,
                    idw,
                    ad,
                })
            }),
        arb_fabrics().prop_map(IoCommand::Fabrics),
    ]
}

proptest! {
    #[test]
    fn admin_commands_round_trip(cmd in arb_admin(), cid in any::<u16>()) {
        let mut sqe = cmd.to_sqe();
        sqe.set_cid(cid);
        let parsed = reparse(&sqe);
        prop_assert_eq!(parsed.cid(), cid);
        prop_assert_eq!(AdminCommand::parse(parsed), Ok(cmd));
    }

    #[test]
    fn io_commands_round_trip(cmd in arb_io(), cid in any::<u16>()) {
        let mut sqe = cmd.to_sqe();
        sqe.set_cid(cid);
        prop_assert_eq!(IoCommand::parse(reparse(&sqe)), Ok(cmd));
    }

    #[test]
    fn any_sqe_parses_or_errors_without_panic(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let sqe = Sqe::parse(&bytes).unwrap();
        if let Err(e) = AdminCommand::parse(sqe) {
            let _ = e.status();
        }
        if let Err(e) = IoCommand::parse(sqe) {
            let _ = e.status();
        }
        let _ = sqe.dptr().parse();
    }

    #[test]
    fn dsm_ranges_round_trip(ranges in proptest::collection::vec((any::<u64>(), any::<u32>()), 1..=256)) {
        let ranges: Vec<DsmRange> = ranges.into_iter().map(|(s, n)| DsmRange::new(s, n)).collect();
        let bytes = ranges.as_bytes();
        prop_assert_eq!(DsmRange::slice_from(bytes, ranges.len()).unwrap(), &ranges[..]);
    }
}
