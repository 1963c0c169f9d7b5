//! SQE, CQE, SGL descriptor and status: golden bytes and round trips.

use nvme_tcp_wire::nvme::{
    Cqe, NvmeError, Psdt, SQE_LEN, Sgl, SglDescriptor, Sqe, Status, StatusCodeType, StatusField,
};
use proptest::prelude::*;
use zerocopy::{FromBytes, IntoBytes};

#[test]
fn sqe_fields_sit_at_spec_offsets() {
    let mut sqe = Sqe::new(0x02);
    sqe.set_cid(0x1234);
    sqe.set_nsid(0xAABB_CCDD);
    sqe.set_mptr(0x0102_0304_0506_0708);
    sqe.set_dptr(SglDescriptor::transport_data_block(0x1000));
    sqe.set_cdw10(0x1111_1111);
    sqe.set_cdw15(0xFFEE_DDCC);
    let b = sqe.as_bytes();
    assert_eq!(b.len(), SQE_LEN);
    assert_eq!(b[0], 0x02);
    assert_eq!(b[1], 0x40, "PSDT = 01b (SGL) is the default on fabrics");
    assert_eq!(&b[2..4], &[0x34, 0x12]);
    assert_eq!(&b[4..8], &[0xDD, 0xCC, 0xBB, 0xAA]);
    assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(&b[24..32], &[0; 8], "transport data block has no address");
    assert_eq!(&b[32..36], &[0x00, 0x10, 0, 0]);
    assert_eq!(b[39], 0x5A);
    assert_eq!(&b[40..44], &[0x11; 4]);
    assert_eq!(&b[60..64], &[0xCC, 0xDD, 0xEE, 0xFF]);
    assert_eq!(sqe.psdt(), Some(Psdt::SglMetadataBuffer));
}

#[test]
fn sqe_builds_in_one_expression() {
    let sqe = Sqe::new(0x06)
        .with_cid(9)
        .with_dptr(SglDescriptor::transport_data_block(4096));
    assert_eq!(sqe.cid(), 9);
    assert_eq!(
        sqe.dptr().parse(),
        Ok(Sgl::TransportDataBlock { length: 4096 })
    );
}

#[test]
fn status_display_names_the_code() {
    assert_eq!(
        Status::TRANSIENT_TRANSPORT_ERROR.to_string(),
        "Transient Transport Error (sct 0 sc 0x22)"
    );
    assert_eq!(Status::new(7, 0xC0).to_string(), "sct 7 sc 0xc0");
    assert_eq!(
        Status::CONFLICTING_ATTRIBUTES,
        Status::CONNECT_INCOMPATIBLE_FORMAT
    );
    assert_eq!(Status::ANA_TRANSITION.to_u16(), 0x303);
}

#[test]
fn sqe_parse_rejects_short_buffer() {
    let err = Sqe::parse(&[0u8; 63]).unwrap_err();
    assert!(matches!(
        err,
        NvmeError::Truncated {
            needed: 64,
            have: 63,
            ..
        }
    ));
    assert!(
        Sqe::parse(&[0u8; 72]).is_ok(),
        "a longer buffer is read by prefix"
    );
}

#[test]
fn in_capsule_sgl_golden_bytes() {
    let d = SglDescriptor::data_block_offset(0, 1024);
    assert_eq!(
        d.as_bytes(),
        &[0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x04, 0, 0, 0, 0, 0, 0x01]
    );
    assert_eq!(
        d.parse(),
        Ok(Sgl::DataBlockOffset {
            offset: 0,
            length: 1024
        })
    );
}

#[test]
fn keyed_sgl_is_refused_with_sgl_type_invalid() {
    let mut bytes = [0u8; 16];
    bytes[15] = 0x40; // Keyed SGL Data Block (RDMA only)
    let d = SglDescriptor::read_from_bytes(&bytes).unwrap();
    let err = d.parse().unwrap_err();
    assert_eq!(err, NvmeError::InvalidSglType { sgl_id: 0x40 });
    assert_eq!(err.status(), Status::SGL_DESCRIPTOR_TYPE_INVALID);
}

#[test]
fn cqe_golden_bytes_decode_status() {
    // DW0 = 1, DW1 = 0, SQHD 5, SQID 0, CID 0x0203, status: SCT 1, SC 0x82, DNR.
    let status: u16 = (1 << 15) | (1 << 9) | (0x82 << 1);
    let mut bytes = [0u8; 16];
    bytes[0] = 1;
    bytes[8] = 5;
    bytes[12..14].copy_from_slice(&0x0203u16.to_le_bytes());
    bytes[14..16].copy_from_slice(&status.to_le_bytes());
    let cqe = Cqe::parse(&bytes).unwrap();
    assert_eq!(cqe.dw0(), 1);
    assert_eq!(cqe.sqhd(), 5);
    assert_eq!(cqe.cid(), 0x0203);
    assert_eq!(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        cqe.status().status_code_type(),
        Some(StatusCodeType::CommandSpecific)
    );
    assert!(cqe.dnr());
    assert!(!cqe.more());
    assert_eq!(cqe.crd(), 0);
    assert_eq!(cqe.status().to_u16(), 0x182);
}

#[test]
fn cqe_status_bits_for_crd_more_and_phase() {
    let f = StatusField::from_bits(0b0111_0000_0000_0001);
    assert!(f.phase);
    assert_eq!(f.crd, 3);
    assert!(f.more);
    assert!(!f.dnr);
    assert!(f.status.is_success());
}

#[test]
fn transient_transport_error_and_lba_out_of_range_values() {
    assert_eq!(Status::TRANSIENT_TRANSPORT_ERROR.to_u16(), 0x22);
    assert_eq!(Status::LBA_OUT_OF_RANGE.to_u16(), 0x80);
    assert_eq!(Status::INVALID_NAMESPACE_OR_FORMAT.to_u16(), 0x0B);
    assert_eq!(Status::DATA_TRANSFER_ERROR.to_u16(), 0x04);
    assert_eq!(Status::CONNECT_INVALID_HOST.to_u16(), 0x184);
    assert_eq!(Status::INVALID_LOG_PAGE.to_u16(), 0x109);
    assert_eq!(Status::new(1, 0x84).name(), Some("Connect Invalid Host"));
    assert_eq!(Status::new(4, 0x00).status_code_type(), None);
}

#[test]
fn cqe_result64_splits_into_dw0_and_dw1() {
    let mut cqe = Cqe::default();
    cqe.set_result64(0x0000_0001_0020_03FF);
    assert_eq!(cqe.dw0(), 0x0020_03FF);
    assert_eq!(cqe.dw1(), 1);
    assert_eq!(cqe.result64(), 0x0000_0001_0020_03FF);
}

fn arb_sgl() -> impl Strategy<Value = Sgl> {
    prop_oneof![
        any::<u32>().prop_map(|length| Sgl::TransportDataBlock { length }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(offset, length)| Sgl::DataBlockOffset { offset, length }),
    ]
}

proptest! {
    #[test]
    fn any_64_bytes_parse_as_sqe_and_emit_identically(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let sqe = Sqe::parse(&bytes).unwrap();
        prop_assert_eq!(sqe.as_bytes(), &bytes[..]);
    }

    #[test]
    fn sgl_round_trips(sgl in arb_sgl()) {
        let d = SglDescriptor::from(sgl);
        let back = SglDescriptor::read_from_bytes(d.as_bytes()).unwrap();
        prop_assert_eq!(back.parse(), Ok(sgl));
    }

    #[test]
    fn status_field_round_trips(bits in any::<u16>()) {
        prop_assert_eq!(StatusField::from_bits(bits).to_bits(), bits);
    }

    #[test]
    fn cqe_round_trips(cid in any::<u16>(), sqid in any::<u16>(), sqhd in any::<u16>(),
                       sct in 0u8..8, sc in any::<u8>(), dnr in any::<bool>(), more in any::<bool>(),
                       crd in 0u8..4, dw0 in any::<u32>(), dw1 in any::<u32>()) {
        let field = StatusField { status: Status::new(sct, sc), crd, more, dnr, phase: false };
        let mut cqe = Cqe::new(cid, sqid, sqhd, field);
        cqe.set_dw0(dw0);
        cqe.set_dw1(dw1);
        let parsed = Cqe::parse(cqe.as_bytes()).unwrap();
        prop_assert_eq!(parsed, &cqe);
        prop_assert_eq!(parsed.status_field(), field);
        prop_assert_eq!((parsed.cid(), parsed.sqid(), parsed.sqhd()), (cid, sqid, sqhd));
    }
}
