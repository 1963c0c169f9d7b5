//! A table of malformed PDU headers, each with the Termination Request FES/FEI the receiver
//! must send (nvme-tcp-protocol.md §1.8–§1.9).

use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::*;
use nvme_tcp_wire::validate::{NegotiatedParams, Role, validate_ch, validate_header};
use nvme_tcp_wire::{Fes, WireError};

fn host(hdgst: bool, ddgst: bool) -> NegotiatedParams {
    NegotiatedParams {
        hdgst,
        ddgst,
        ..NegotiatedParams::new(Role::Host)
    }
}

fn ctrl(hdgst: bool, ddgst: bool) -> NegotiatedParams {
    NegotiatedParams {
        hdgst,
        ddgst,
        max_h2c_data: 8192,
        ..NegotiatedParams::new(Role::Controller)
    }
}

fn bytes(repr: &impl EmitHeader) -> Vec<u8> {
    HeaderBuf::new(repr).as_bytes().to_vec()
}

fn c2h(hdgst: bool, ddgst: bool, datal: u32) -> Vec<u8> {
    bytes(&DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU,
        hdgst,
        ddgst,
        pda: 0,
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal,
    })
}

fn h2c(datal: u32) -> Vec<u8> {
    bytes(&DataPduRepr {
        pdu_type: PduType::H2cData,
        flags: PduFlags::NONE,
        hdgst: false,
        ddgst: false,
        pda: 0,
        cccid: 1,
        ttag: 2,
        datao: 0,
        datal,
    })
}

fn r2t(r2tl: u32) -> Vec<u8> {
    bytes(&R2tRepr {
        hdgst: false,
        cccid: 1,
        ttag: 1,
        r2to: 0,
        r2tl,
    })
}

fn ic_req() -> Vec<u8> {
    bytes(&IcReqRepr {
        pfv: 0,
        hpda: 0,
        hdgst_enable: false,
        ddgst_enable: false,
        maxr2t: 0,
    })
}

fn ic_resp() -> Vec<u8> {
    bytes(&IcRespRepr {
        pfv: 0,
        cpda: 0,
        hdgst_enable: false,
        ddgst_enable: false,
        maxh2cdata: 0x40_0000,
    })
}

fn capsule_resp(hdgst: bool) -> Vec<u8> {
    bytes(&CapsuleRespRepr {
        hdgst,
        cqe: [0; 16],
    })
}

fn c2h_term(n: usize) -> Vec<u8> {
    let mut b = [0u8; TERM_REQ_MAX_PLEN];
    let n = TermReqRepr::build(
        PduType::C2hTermReq,
        Fes::InvalidHeaderField,
        0,
        &[0u8; 128][..n],
        &mut b,
    )
    .unwrap();
    b[..n].to_vec()
}

fn set_plen(b: &mut [u8], plen: u32) {
    b[4..8].copy_from_slice(&plen.to_le_bytes());
}

fn fix_hdgst(b: &mut [u8]) {
    let hlen = b[2] as usize;
    let d = crc32c(&b[..hlen]);
    b[hlen..hlen + 4].copy_from_slice(&d.to_le_bytes());
}

type Case = (&'static str, Vec<u8>, NegotiatedParams, Option<(Fes, u32)>);

fn cases() -> Vec<Case> {
    use Fes::*;
    let mut v: Vec<Case> = Vec::new();

    // 1. PDU-TYPE and direction.
    let mut b = c2h(false, false, 512);
    b[0] = 0x08;
    v.push((
        "reserved type 0x08",
        b,
        host(false, false),
        Some((InvalidHeaderField, 0)),
    ));
    v.push((
        "C2HData received by a controller",
        c2h(false, false, 512),
        ctrl(false, false),
        Some((InvalidHeaderField, 0)),
    ));
    v.push((
        "ICReq received by a host",
        ic_req(),
        host(false, false),
        Some((InvalidHeaderField, 0)),
    ));
    v.push((
        "R2T received by a controller",
        r2t(4096),
        ctrl(false, false),
        Some((InvalidHeaderField, 0)),
    ));

    // 2. FLAGS.
    let mut b = h2c(512);
    b[1] |= PduFlags::SUCCESS.0;
    v.push((
        "SUCCESS on H2CData",
        b,
        ctrl(false, false),
        Some((InvalidHeaderField, 1)),
    ));
    let mut b = c2h(false, false, 512);
    b[1] = PduFlags::SUCCESS.0;
    v.push((
        "SUCCESS without LAST_PDU",
        b,
        host(false, false),
        Some((InvalidHeaderField, 1)),
    ));
    v.push((
        "HDGSTF missing although negotiated",
        c2h(false, false, 512),
        host(true, false),
        Some((InvalidHeaderField, 1)),
    ));
    v.push((
        "HDGSTF set although not negotiated",
        c2h(true, false, 512),
        host(false, false),
        Some((InvalidHeaderField, 1)),
    ));
    v.push((
        "DDGSTF missing although negotiated",
        c2h(false, false, 512),
        host(false, true),
        Some((InvalidHeaderField, 1)),
    ));
    let mut b = ic_resp();
    b[1] = PduFlags::HDGSTF.0;
    v.push((
        "flags on ICResp",
        b,
        host(true, true),
        Some((InvalidHeaderField, 1)),
    ));
    let mut b = r2t(4096);
    b[1] = PduFlags::LAST_PDU.0;
    v.push((
        "LAST_PDU on R2T",
        b,
        host(false, false),
        Some((InvalidHeaderField, 1)),
    ));

    // 3. HLEN.
    let mut b = c2h(false, false, 512);
    b[2] = 25;
    v.push((
        "HLEN 25 on C2HData",
        b,
        host(false, false),
        Some((InvalidHeaderField, 2)),
    ));
    let mut b = capsule_resp(true);
    b[2] = 255;
    v.push((
        "HLEN 255 on CapsuleResp with header digest",
        b,
        host(true, false),
        Some((InvalidHeaderField, 2)),
    ));
    let mut b = c2h(false, false, 512);
    b[2] = 25;
    b[3] = 0;
    v.push((
        "HLEN and PDO both bad: the lower field is reported",
        b,
        host(false, false),
        Some((InvalidHeaderField, 2)),
    ));

    // 4. PDO.
    let mut b = capsule_resp(false);
    b[3] = 24;
    v.push((
        "PDO on CapsuleResp",
        b,
        host(false, false),
        Some((InvalidHeaderField, 3)),
    ));
    let mut b = c2h(false, false, 512);
    b[3] = 0;
    v.push((
        "C2HData with PDO 0",
        b,
        host(false, false),
        Some((InvalidHeaderField, 3)),
    ));
    let mut b = c2h(true, false, 512);
    fix_hdgst(&mut b);
    b[3] = 24;
    v.push((
        "PDO inside the header digest",
        b,
        host(true, false),
        Some((InvalidHeaderField, 3)),
    ));
    v.push((
        "PDO not aligned to the receiver's PDA",
        c2h(false, false, 512),
        NegotiatedParams {
            rx_pda: 3,
            ..host(false, false)
        },
        Some((InvalidHeaderField, 3)),
    ));
    let mut b = c2h(false, false, 0);
    set_plen(&mut b, 20);
    v.push((
        "PDO beyond PLEN",
        b,
        host(false, false),
        Some((InvalidHeaderField, 3)),
    ));
    let mut b = bytes(&CapsuleCmdRepr {
        hdgst: false,
        ddgst: false,
        pda: 0,
        sqe: [0; 64],
        data_len: 0,
    });
    set_plen(&mut b, 72 + 16);
    v.push((
        "in-capsule data without PDO",
        b,
        ctrl(false, false),
        Some((InvalidHeaderField, 3)),
    ));

    // 5. PLEN.
    let mut b = r2t(4096);
    set_plen(&mut b, 30);
    v.push((
        "R2T with data",
        b,
        host(false, false),
        Some((InvalidHeaderField, 4)),
    ));
    let mut b = ic_resp();
    set_plen(&mut b, 129);
    v.push((
        "ICResp PLEN 129",
        b,
        host(false, false),
        Some((InvalidHeaderField, 4)),
    ));
    let mut b = c2h(false, true, 512);
    set_plen(&mut b, 24 + 4);
    v.push((
        "data digest without data",
        b,
        host(false, true),
        Some((InvalidHeaderField, 4)),
    ));
    v.push((
        "PLEN above the receiver's maximum",
        c2h(false, false, 1 << 20),
        NegotiatedParams {
            max_plen: 65536,
            ..host(false, false)
        },
        Some((DataTransferLimitExceeded, 0)),
    ));

    // 6. Header digest.
    let mut b = c2h(true, false, 512);
    b[24..28].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    v.push((
        "header digest mismatch",
        b,
        host(true, false),
        Some((HeaderDigestError, 0x1234_5678)),
    ));

    // 7. Per-type fields.
    let mut b = c2h(false, false, 512);
    b[16..20].copy_from_slice(&513u32.to_le_bytes());
    v.push((
        "DATAL ≠ PLEN − PDO",
        b,
        host(false, false),
        Some((InvalidHeaderField, 16)),
    ));
    v.push((
        "H2CData above MAXH2CDATA",
        h2c(8196),
        ctrl(false, false),
        Some((DataTransferLimitExceeded, 0)),
    ));
    v.push((
        "R2TL 0",
        r2t(0),
        host(false, false),
        Some((InvalidHeaderField, 16)),
    ));
    let mut b = ic_req();
    b[8] = 1;
    v.push((
        "ICReq PFV 1",
        b,
        ctrl(false, false),
        Some((UnsupportedParameter, 8)),
    ));
    let mut b = ic_req();
    b[10] = 32;
    v.push((
        "ICReq HPDA 32",
        b,
        ctrl(false, false),
        Some((InvalidHeaderField, 10)),
    ));
    let mut b = ic_resp();
    b[12..16].copy_from_slice(&1000u32.to_le_bytes());
    v.push((
        "ICResp MAXH2CDATA 1000",
        b,
        host(false, false),
        Some((InvalidHeaderField, 12)),
    ));

    // Malformed Termination Requests are not answered.
    let mut b = c2h_term(128);
    set_plen(&mut b, 153);
    v.push(("C2HTermReq PLEN 153", b, host(false, false), None));
    let mut b = c2h_term(0);
    set_plen(&mut b, 23);
    v.push(("C2HTermReq PLEN 23", b, host(false, false), None));
    let mut b = c2h_term(4);
    b[1] = PduFlags::HDGSTF.0;
    v.push(("C2HTermReq with a digest flag", b, host(true, false), None));
    v
}

#[test]
fn every_malformed_header_yields_its_fes_and_fei() {
    for (name, b, params, want) in cases() {
        let err = validate_header(&b, &params).expect_err(name);
        assert_eq!(err.termination(), want, "{name}: {err}");
        if want.is_none() {
            assert!(
                matches!(err, WireError::MalformedTermReq { .. }),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn the_unmodified_headers_are_valid() {
    let ok: Vec<(Vec<u8>, NegotiatedParams)> = vec![
        (c2h(true, true, 512), host(true, true)),
        (h2c(8192), ctrl(false, false)),
        (r2t(1), host(false, false)),
        (ic_req(), ctrl(false, false)),
        (ic_resp(), host(false, false)),
        (capsule_resp(true), host(true, false)),
        (c2h_term(0), host(true, true)),
        (c2h_term(128), host(false, false)),
    ];
    for (b, p) in ok {
        validate_header(&b, &p).unwrap();
    }
}

#[test]
fn plen_limit_is_decided_on_the_common_header_alone() {
    let b = c2h(false, false, 1 << 20);
    let p = NegotiatedParams {
        max_plen: 4096,
        ..host(false, false)
    };
    let e = validate_ch(&b[..8], &p).unwrap_err();
    assert_eq!(e.termination(), Some((Fes::DataTransferLimitExceeded, 0)));
}

#[test]
fn truncated_input_is_not_a_termination() {
    let b = c2h(true, false, 512);
    let p = host(true, false);
    assert!(matches!(
        validate_header(&b[..5], &p),
        Err(WireError::Truncated { .. })
    ));
    assert!(matches!(
        validate_header(&b[..26], &p),
        Err(WireError::Truncated { .. })
    ));
}
