//! Fabrics commands and Connect data: golden bytes and round trips.

mod support;

use nvme_tcp_wire::nvme::fabrics::{CNTLID_DYNAMIC, CONNECT_DATA_LEN};
use nvme_tcp_wire::nvme::text::DISCOVERY_NQN;
use nvme_tcp_wire::nvme::{
    ConnectCommand, ConnectData, ConnectResponse, DisconnectCommand, FabricsCommand, NvmeError,
    PropertyGetCommand, PropertySetCommand, PropertySize, Sqe,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";

#[test]
fn admin_connect_golden_bytes() {
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 5000,
    };
    let mut sqe = cmd.to_sqe();
    sqe.set_cid(1);
    let mut expected = [0u8; 64];
    expected[0] = 0x7F; // OPC: fabrics
    expected[1] = 0x40; // PSDT = SGL
    expected[2] = 0x01; // CID
    expected[4] = 0x01; // FCTYPE: Connect
    expected[32..36].copy_from_slice(&1024u32.to_le_bytes()); // SGL1 length
    expected[39] = 0x01; // SGL1: Data Block / Offset
    expected[44] = 31; // SQSIZE
    expected[48..52].copy_from_slice(&5000u32.to_le_bytes()); // KATO
    assert_eq!(sqe.as_bytes(), &expected[..]);
    assert_eq!(
        FabricsCommand::parse(Sqe::parse(&expected).unwrap()),
        Ok(FabricsCommand::Connect(cmd))
    );
}

#[test]
fn io_connect_places_qid_and_cattr() {
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 3,
        sqsize: 127,
        cattr: ConnectCommand::CATTR_DISABLE_SQ_FLOW_CONTROL,
        kato: 0,
    };
    let sqe = cmd.to_sqe();
    let b = sqe.as_bytes();
    assert_eq!(&b[42..44], &[3, 0]);
    assert_eq!(&b[44..46], &[127, 0]);
    assert_eq!(b[46], 0x04);
    assert!(
        ConnectCommand::parse(&sqe)
            .unwrap()
            .sq_flow_control_disabled()
    );
}

#[test]
fn connect_data_golden_offsets() {
    let hostid = [0xA5; 16];
    let d = ConnectData::new(hostid, CNTLID_DYNAMIC, DISCOVERY_NQN, HOSTNQN).unwrap();
    let b = d.as_bytes();
    assert_eq!(b.len(), CONNECT_DATA_LEN);
    assert_eq!(&b[0..16], &hostid);
    assert_eq!(&b[16..18], &[0xFF, 0xFF]);
    assert_eq!(&b[256..256 + DISCOVERY_NQN.len()], DISCOVERY_NQN.as_bytes());
    assert_eq!(b[256 + DISCOVERY_NQN.len()], 0);
    assert_eq!(&b[512..512 + HOSTNQN.len()], HOSTNQN.as_bytes());
    assert!(b[768..].iter().all(|&x| x == 0));
    let parsed = ConnectData::parse(b).unwrap();
    assert_eq!(parsed.subnqn(), Ok(DISCOVERY_NQN));
    assert_eq!(parsed.hostnqn(), Ok(HOSTNQN));
    assert_eq!(parsed.cntlid(), CNTLID_DYNAMIC);
}

#[test]
fn connect_data_with_unterminated_nqn_is_an_error_not_a_panic() {
    let mut bytes = [b'x'; CONNECT_DATA_LEN];
    bytes[16] = 1;
    let d = ConnectData::parse(&bytes).unwrap();
    assert!(matches!(
        d.subnqn(),
        Err(NvmeError::InvalidString {
            field: "SUBNQN",
            ..
        })
    ));
    assert!(d.hostnqn().is_err());
    assert!(matches!(
        ConnectData::parse(&bytes[..1023]),
        Err(NvmeError::Truncated {
            needed: 1024,
            have: 1023,
            ..
        })
    ));
}

#[test]
fn property_set_golden_bytes() {
    let cmd = PropertySetCommand {
        size: PropertySize::FourBytes,
        ofst: 0x14,
        value: 0x0046_0001,
    };
    let sqe = cmd.to_sqe();
    let b = sqe.as_bytes();
    assert_eq!((b[0], b[4], b[40]), (0x7F, 0x00, 0));
    assert_eq!(&b[44..48], &[0x14, 0, 0, 0]);
    assert_eq!(&b[48..56], &[0x01, 0x00, 0x46, 0x00, 0, 0, 0, 0]);
}

#[test]
fn property_get_with_reserved_size_is_invalid_field() {
    let mut sqe = PropertyGetCommand {
        size: PropertySize::EightBytes,
        ofst: 0,
    }
    .to_sqe();
    assert_eq!(sqe.as_bytes()[40], 1);
    sqe.set_cdw10(2);
    let err = FabricsCommand::parse(&sqe).unwrap_err();
    assert!(matches!(
        err,
        NvmeError::InvalidField {
            field: "ATTRIB",
            offset: 40,
            ..
        }
    ));
}

#[test]
fn reserved_fctypes_are_refused() {
    for fctype in [0x02u8, 0x03, 0x07, 0xC0] {
        let mut sqe = DisconnectCommand::default().to_sqe();
        sqe.set_fctype(fctype);
        assert_eq!(
            FabricsCommand::parse(&sqe),
            Err(NvmeError::InvalidFctype { fctype })
        );
    }
    let mut sqe = Sqe::new(0x06);
    sqe.set_fctype(0x01);
    assert_eq!(
        FabricsCommand::parse(&sqe),
        Err(NvmeError::InvalidOpcode { opcode: 0x06 })
    );
}

#[test]
fn connect_response_dw0_encodings() {
    assert_eq!(ConnectResponse::success(0x0012).to_dw0(), 0x12);
    assert_eq!(
        ConnectResponse::invalid_parameter(true, 256).to_dw0(),
        0x0001_0100
    );
    assert_eq!(
        ConnectResponse::invalid_parameter_from_dw0(0x0001_0100),
        ConnectResponse::invalid_parameter(true, 256)
    );
    assert_eq!(
        ConnectResponse::success_from_dw0(0x0002_0005),
        ConnectResponse::Success {
            cntlid: 5,
            authreq: 2
        }
    );
}

fn arb_size() -> impl Strategy<Value = PropertySize> {
    prop_oneof![
        Just(PropertySize::FourBytes),
        Just(PropertySize::EightBytes)
    ]
}

fn arb_fabrics() -> impl Strategy<Value = FabricsCommand> {
    prop_oneof![
        (arb_size(), any::<u32>(), any::<u64>()).prop_map(|(size, ofst, value)| {
            FabricsCommand::PropertySet(PropertySetCommand { size, ofst, value })
        }),
        (arb_size(), any::<u32>()).prop_map(|(size, ofst)| FabricsCommand::PropertyGet(
            PropertyGetCommand { size, ofst }
        )),
        support::connect_command().prop_map(FabricsCommand::Connect),
        any::<u16>().prop_map(|recfmt| FabricsCommand::Disconnect(DisconnectCommand { recfmt })),
    ]
}

proptest! {
    #[test]
    fn fabrics_commands_round_trip(cmd in arb_fabrics(), cid in any::<u16>()) {
        let mut sqe = cmd.to_sqe();
        sqe.set_cid(cid);
        let parsed = Sqe::parse(sqe.as_bytes()).unwrap();
        prop_assert_eq!(parsed.cid(), cid);
        prop_assert_eq!(FabricsCommand::parse(parsed), Ok(cmd));
    }

    #[test]
    fn connect_data_round_trips(hostid in any::<[u8; 16]>(), cntlid in any::<u16>(),
                                subnqn in "[a-z0-9.:-]{0,223}", hostnqn in "[a-z0-9.:-]{0,223}") {
        let d = ConnectData::new(hostid, cntlid, &subnqn, &hostnqn).unwrap();
        let parsed = ConnectData::parse(d.as_bytes()).unwrap();
        prop_assert_eq!(parsed, &d);
        prop_assert_eq!(parsed.hostid(), hostid);
        prop_assert_eq!(parsed.cntlid(), cntlid);
        prop_assert_eq!(parsed.subnqn(), Ok(subnqn.as_str()));
        prop_assert_eq!(parsed.hostnqn(), Ok(hostnqn.as_str()));
    }

    #[test]
    fn any_fabrics_sqe_parses_without_panic(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let sqe = Sqe::parse(&bytes).unwrap();
        let _ = FabricsCommand::parse(sqe);
    }

    #[test]
    fn any_connect_data_reads_without_panic(bytes in proptest::collection::vec(any::<u8>(), 1024)) {
        let d = ConnectData::parse(&bytes).unwrap();
        let _ = (d.subnqn(), d.hostnqn(), d.cntlid(), d.hostid());
    }
}
