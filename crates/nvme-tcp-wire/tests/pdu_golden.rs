//! Golden byte vectors per PDU type, written by hand from the field tables of the NVMe/TCP
//! transport specification (nvme-tcp-protocol.md §1.2–§1.3): deconstruct (view getters),
//! construct (view setters), parse (repr from bytes) and emit (repr to bytes).

use nvme_tcp_wire::Fes;
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::*;

fn ic_req_bytes() -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..16].copy_from_slice(&[
        0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00,
        0x00, // CH: ICReq, HLEN 128, PDO 0, PLEN 128
        0x00, 0x00, 0x02, 0x03, 0x07, 0x00, 0x00, 0x00, // PFV 0, HPDA 2, DGST 3, MAXR2T 7
    ]);
    b
}

fn ic_req_repr() -> IcReqRepr {
    IcReqRepr {
        pfv: 0,
        hpda: 2,
        hdgst_enable: true,
        ddgst_enable: true,
        maxr2t: 7,
    }
}

#[test]
fn ic_req_deconstruct() {
    let b = ic_req_bytes();
    let p = IcPdu::new_checked(&b[..]).unwrap();
    assert_eq!(p.ch().pdu_type(), Some(PduType::IcReq));
    assert_eq!(p.ch().hlen(), 128);
    assert_eq!(p.ch().plen(), 128);
    assert_eq!(p.pfv(), 0);
    assert_eq!(p.pda(), 2);
    assert_eq!(p.dgst(), DGST_HDGST_ENABLE | DGST_DDGST_ENABLE);
    assert_eq!(p.max_field(), 7);
    assert!(p.reserved_is_zero());
}

#[test]
fn ic_req_construct() {
    let mut b = [0xFFu8; 128];
    let mut p = IcPdu::new_unchecked(&mut b[..]);
    p.ch_mut().set_pdu_type(PduType::IcReq);
    p.ch_mut().set_flags(PduFlags::NONE);
    p.ch_mut().set_hlen(128);
    p.ch_mut().set_pdo(0);
    p.ch_mut().set_plen(128);
    p.set_pfv(0);
    p.set_pda(2);
    p.set_dgst(3);
    p.set_max_field(7);
    p.clear_reserved();
    assert_eq!(b, ic_req_bytes());
}

#[test]
fn ic_req_parse_and_emit() {
    let b = ic_req_bytes();
    let p = IcPdu::new_checked(&b[..]).unwrap();
    assert_eq!(IcReqRepr::parse(&p).unwrap(), ic_req_repr());
    let mut out = [0xAAu8; 128];
    assert_eq!(emit_header(&ic_req_repr(), &mut out).unwrap(), 128);
    assert_eq!(out, b);
}

#[test]
fn ic_resp_golden() {
    let mut b = [0u8; 128];
    b[..16].copy_from_slice(&[
        0x01, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, // CH: ICResp
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x40,
        0x00, // PFV 0, CPDA 0, DGST 1, MAXH2CDATA 4 MiB
    ]);
    let repr = IcRespRepr {
        pfv: 0,
        cpda: 0,
        hdgst_enable: true,
        ddgst_enable: false,
        maxh2cdata: 0x40_0000,
    };
    let p = IcPdu::new_checked(&b[..]).unwrap();
    assert_eq!(p.max_field(), 0x40_0000);
    assert_eq!(IcRespRepr::parse(&p).unwrap(), repr);
    assert_eq!(HeaderBuf::new(&repr).as_bytes(), &b[..]);
    // An ICReq is not an ICResp.
    assert!(IcRespRepr::parse(&IcPdu::new_unchecked(&ic_req_bytes()[..])).is_err());
}

#[test]
fn c2h_term_req_golden_carries_the_offending_header() {
    let offending = [0x07, 0x00, 0x19, 0x18, 0x00, 0x01, 0x00, 0x00]; // a CH with HLEN 25
    let mut want = vec![
        0x03, 0x00, 0x18, 0x18, 0x20, 0x00, 0x00,
        0x00, // CH: C2HTermReq, HLEN 24, PDO 24, PLEN 32
        0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // FES 1, FEI 2 (offset 10), rsvd
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // rsvd
    ];
    want.extend_from_slice(&offending);

    let p = TermReqPdu::new_checked(&want[..]).unwrap();
    assert_eq!(p.fes(), 0x01);
    assert_eq!(p.fei(), 2);
    let repr = TermReqRepr::parse(&p).unwrap();
    assert_eq!(
        repr,
        TermReqRepr::new(PduType::C2hTermReq, Fes::InvalidHeaderField, 2, 8)
    );
    assert_eq!(repr.fes_kind(), Some(Fes::InvalidHeaderField));

    let mut buf = [0u8; TERM_REQ_MAX_PLEN];
    let n = TermReqRepr::build(
        PduType::C2hTermReq,
        Fes::InvalidHeaderField,
        2,
        &offending,
        &mut buf,
    )
    .unwrap();
    assert_eq!(&buf[..n], &want[..]);
}

#[test]
fn h2c_term_req_golden_without_data() {
    let want = [
        0x02, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00, // CH: H2CTermReq, PDO 0, PLEN 24
        0x03, 0x00, 0xEF, 0xBE, 0xAD, 0xDE, 0x00, 0x00, // FES 3, FEI 0xDEADBEEF
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let repr = TermReqRepr::new(PduType::H2cTermReq, Fes::HeaderDigestError, 0xDEAD_BEEF, 0);
    assert_eq!(HeaderBuf::new(&repr).as_bytes(), &want[..]);
    assert_eq!(
        TermReqRepr::parse(&TermReqPdu::new_checked(&want[..]).unwrap()).unwrap(),
        repr
    );
}

#[test]
fn term_req_truncates_the_offending_header_to_128_bytes() {
    let offending = [0x5Au8; 200];
    let mut buf = [0u8; TERM_REQ_MAX_PLEN];
    let n = TermReqRepr::build(
        PduType::H2cTermReq,
        Fes::PduSequenceError,
        0,
        &offending,
        &mut buf,
    )
    .unwrap();
    assert_eq!(n, 152);
    assert_eq!(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]), 152);
    assert_eq!(&buf[24..152], &offending[..128]);
}

#[test]
fn term_req_for_error_uses_the_error_fes_and_fei() {
    let err = nvme_tcp_wire::WireError::invalid("PDO", 3, nvme_tcp_wire::Reason::PdoMissing);
    let mut buf = [0u8; TERM_REQ_MAX_PLEN];
    let n = TermReqRepr::build_for_error(PduType::C2hTermReq, &err, &[1, 2, 3], &mut buf).unwrap();
    let p = TermReqPdu::new_checked(&buf[..n]).unwrap();
    assert_eq!((p.fes(), p.fei()), (1, 3));
    let dd = nvme_tcp_wire::WireError::DataDigest {
        received: 0,
        computed: 1,
    };
    assert_eq!(
        TermReqRepr::build_for_error(PduType::C2hTermReq, &dd, &[], &mut buf),
        None
    );
}

#[test]
fn capsule_cmd_golden_with_in_capsule_data() {
    let sqe: [u8; 64] = std::array::from_fn(|i| i as u8);
    let mut want = vec![
        0x04, 0x03, 0x48, 0x4C, 0x60, 0x00, 0x00,
        0x00, // CH: CapsuleCmd, HDGSTF|DDGSTF, HLEN 72, PDO 76, PLEN 96
    ];
    want.extend_from_slice(&sqe);
    let hdgst = crc32c(&want[..72]);
    want.extend_from_slice(&hdgst.to_le_bytes());
    let data = [0xC3u8; 16];
    want.extend_from_slice(&data);
    want.extend_from_slice(&crc32c(&data).to_le_bytes());
    assert_eq!(want.len(), 96);

    let p = CapsuleCmdPdu::new_checked(&want[..]).unwrap();
    assert_eq!(p.sqe(), &sqe[..]);
    assert_eq!(p.ch().pdo(), 76);
    let repr = CapsuleCmdRepr {
        hdgst: true,
        ddgst: true,
        pda: 0,
        sqe,
        data_len: 16,
    };
    assert_eq!(CapsuleCmdRepr::parse(&p).unwrap(), repr);
    let mut out = [0u8; 96];
    assert_eq!(emit_pdu(&repr, &data, &mut out).unwrap(), 96);
    assert_eq!(&out[..], &want[..]);
}

#[test]
fn capsule_cmd_without_data_has_pdo_zero() {
    let repr = CapsuleCmdRepr {
        hdgst: false,
        ddgst: true,
        pda: 0,
        sqe: [0; 64],
        data_len: 0,
    };
    let h = HeaderBuf::new(&repr);
    // No DDGSTF without data, PDO 0, PLEN = HLEN.
    assert_eq!(&h.as_bytes()[..8], &[0x04, 0x00, 0x48, 0x00, 0x48, 0, 0, 0]);
}

#[test]
fn capsule_resp_golden() {
    let cqe: [u8; 16] = [
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DW0 1, DW1 0
        0x05, 0x00, 0x01, 0x00, 0x34, 0x12, 0x00,
        0x00, // SQHD 5, SQID 1, CID 0x1234, STATUS 0
    ];
    let mut want = vec![0x05, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00];
    want.extend_from_slice(&cqe);
    let p = CapsuleRespPdu::new_checked(&want[..]).unwrap();
    assert_eq!(p.cqe(), &cqe[..]);
    let repr = CapsuleRespRepr { hdgst: false, cqe };
    assert_eq!(CapsuleRespRepr::parse(&p).unwrap(), repr);
    assert_eq!(HeaderBuf::new(&repr).as_bytes(), &want[..]);

    let mut b = [0u8; 24];
    let mut v = CapsuleRespPdu::new_unchecked(&mut b[..]);
    v.ch_mut().set_pdu_type(PduType::CapsuleResp);
    v.ch_mut().set_hlen(24);
    v.ch_mut().set_plen(24);
    v.cqe_mut().copy_from_slice(&cqe);
    assert_eq!(&b[..], &want[..]);
}

#[test]
fn h2c_data_golden() {
    let want = [
        0x06, 0x04, 0x18, 0x18, 0x18, 0x10, 0x00,
        0x00, // CH: H2CData, LAST_PDU, PDO 24, PLEN 4120
        0x02, 0x01, 0x04, 0x03, 0x00, 0x20, 0x00,
        0x00, // CCCID 0x0102, TTAG 0x0304, DATAO 0x2000
        0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DATAL 4096, rsvd
    ];
    let p = DataPdu::new_checked(&want[..]).unwrap();
    assert_eq!(
        (p.cccid(), p.ttag(), p.datao(), p.datal()),
        (0x0102, 0x0304, 0x2000, 4096)
    );
    let repr = DataPduRepr {
        pdu_type: PduType::H2cData,
        flags: PduFlags::LAST_PDU,
        hdgst: false,
        ddgst: false,
        pda: 0,
        cccid: 0x0102,
        ttag: 0x0304,
        datao: 0x2000,
        datal: 4096,
    };
    assert_eq!(DataPduRepr::parse(&p).unwrap(), repr);
    assert_eq!(HeaderBuf::new(&repr).as_bytes(), &want[..]);

    let mut b = [0u8; 24];
    let mut v = DataPdu::new_unchecked(&mut b[..]);
    v.ch_mut().set_pdu_type(PduType::H2cData);
    v.ch_mut().set_flags(PduFlags::LAST_PDU);
    v.ch_mut().set_hlen(24);
    v.ch_mut().set_pdo(24);
    v.ch_mut().set_plen(4120);
    v.set_cccid(0x0102);
    v.set_ttag(0x0304);
    v.set_datao(0x2000);
    v.set_datal(4096);
    v.clear_reserved();
    assert_eq!(b, want);
}

#[test]
fn c2h_data_golden_with_success_digests_and_padding() {
    // HPDA 1 → 8-byte alignment: header 24 + HDGST 4 = 28 → PDO 32 (4 bytes of PAD).
    let mut want = vec![
        0x07, 0x0F, 0x18, 0x20, 0x24, 0x02, 0x00,
        0x00, // CH: all four flags, PDO 32, PLEN 548
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CCCID 9, rsvd, DATAO 0
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DATAL 512
    ];
    let d = crc32c(&want);
    want.extend_from_slice(&d.to_le_bytes());
    want.extend_from_slice(&[0, 0, 0, 0]);
    let repr = DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU | PduFlags::SUCCESS,
        hdgst: true,
        ddgst: true,
        pda: 1,
        cccid: 9,
        ttag: 0,
        datao: 0,
        datal: 512,
    };
    assert_eq!(HeaderBuf::new(&repr).as_bytes(), &want[..]);
    assert_eq!(PduRepr::parse(&want).unwrap(), PduRepr::Data(repr));
}

#[test]
fn r2t_golden() {
    let mut want = vec![
        0x09, 0x01, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00, // CH: R2T, HDGSTF, PDO 0, PLEN 28
        0x42, 0x00, 0x07, 0x00, 0x00, 0x10, 0x00, 0x00, // CCCID 0x42, TTAG 7, R2TO 0x1000
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // R2TL 0x10000
    ];
    let d = crc32c(&want);
    want.extend_from_slice(&d.to_le_bytes());
    let p = R2tPdu::new_checked(&want[..]).unwrap();
    assert_eq!(
        (p.cccid(), p.ttag(), p.r2to(), p.r2tl()),
        (0x42, 7, 0x1000, 0x10000)
    );
    let repr = R2tRepr {
        hdgst: true,
        cccid: 0x42,
        ttag: 7,
        r2to: 0x1000,
        r2tl: 0x10000,
    };
    assert_eq!(R2tRepr::parse(&p).unwrap(), repr);
    assert_eq!(HeaderBuf::new(&repr).as_bytes(), &want[..]);
}

#[test]
fn views_refuse_truncated_buffers() {
    let b = [0u8; 127];
    assert!(IcPdu::new_checked(&b[..]).is_err());
    assert!(CapsuleCmdPdu::new_checked(&b[..71]).is_err());
    assert!(CapsuleRespPdu::new_checked(&b[..23]).is_err());
    assert!(R2tPdu::new_checked(&b[..23]).is_err());
    assert!(TermReqPdu::new_checked(&b[..23]).is_err());
    assert!(CommonHeader::new_checked(&b[..7]).is_err());
    assert!(PduRepr::parse(&[0x04, 0, 72, 0, 72, 0, 0, 0]).is_err());
}

#[test]
fn emit_header_refuses_a_short_buffer() {
    let mut b = [0u8; 100];
    assert!(emit_header(&ic_req_repr(), &mut b).is_err());
}
