//! Proptest strategies for PDU representations, shared by the integration tests.

#![allow(dead_code)]

use nvme_tcp_wire::Fes;
use nvme_tcp_wire::nvme::ConnectCommand;
use nvme_tcp_wire::pdu::*;
use proptest::prelude::*;

/// Upper bound on generated data lengths (keeps streams small).
pub const MAX_DATA: u32 = 2048;

pub fn ic_req() -> impl Strategy<Value = IcReqRepr> {
    (0..=MAX_PDA, any::<bool>(), any::<bool>(), any::<u32>()).prop_map(|(hpda, h, d, maxr2t)| {
        IcReqRepr {
            pfv: 0,
            hpda,
            hdgst_enable: h,
            ddgst_enable: d,
            maxr2t,
        }
    })
}

pub fn ic_resp() -> impl Strategy<Value = IcRespRepr> {
    (
        0..=MAX_PDA,
        any::<bool>(),
        any::<bool>(),
        1024u32..=u32::MAX / 4,
    )
        .prop_map(|(cpda, h, d, m)| IcRespRepr {
            pfv: 0,
            cpda,
            hdgst_enable: h,
            ddgst_enable: d,
            maxh2cdata: m * 4,
        })
}

pub fn fes() -> impl Strategy<Value = Fes> {
    prop_oneof![
        Just(Fes::InvalidHeaderField),
        Just(Fes::PduSequenceError),
        Just(Fes::HeaderDigestError),
        Just(Fes::DataTransferOutOfRange),
        Just(Fes::DataTransferLimitExceeded),
        Just(Fes::UnsupportedParameter),
    ]
}

pub fn term_req(pdu_type: PduType) -> impl Strategy<Value = TermReqRepr> {
    (fes(), any::<u32>(), 0usize..=TERM_REQ_MAX_DATA)
        .prop_map(move |(f, fei, n)| TermReqRepr::new(pdu_type, f, fei, n))
}

pub fn capsule_cmd(hdgst: bool, ddgst: bool, pda: u8) -> impl Strategy<Value = CapsuleCmdRepr> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), 0..=MAX_DATA).prop_map(move |(a, b, data_len)| {
        let mut sqe = [0u8; SQE_LEN];
        sqe[..32].copy_from_slice(&a);
        sqe[32..].copy_from_slice(&b);
        CapsuleCmdRepr {
            hdgst,
            ddgst,
            pda,
            sqe,
            data_len,
        }
    })
}

pub fn capsule_resp(hdgst: bool) -> impl Strategy<Value = CapsuleRespRepr> {
    any::<[u8; CQE_LEN]>().prop_map(move |cqe| CapsuleRespRepr { hdgst, cqe })
}

pub fn data_pdu(
    pdu_type: PduType,
    hdgst: bool,
    ddgst: bool,
    pda: u8,
) -> impl Strategy<Value = DataPduRepr> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        1..=MAX_DATA,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(cccid, ttag, datao, datal, last, success)| {
            let mut flags = PduFlags::NONE;
            flags.set(PduFlags::LAST_PDU, last);
            flags.set(
                PduFlags::SUCCESS,
                last && success && pdu_type == PduType::C2hData,
            );
            DataPduRepr {
                pdu_type,
                flags,
                hdgst,
                ddgst,
                pda,
                cccid,
                ttag: if pdu_type == PduType::C2hData {
                    0
                } else {
                    ttag
                },
                datao,
                datal,
            }
        })
}

pub fn r2t(hdgst: bool) -> impl Strategy<Value = R2tRepr> {
    (any::<u16>(), any::<u16>(), any::<u32>(), 1..=u32::MAX).prop_map(
        move |(cccid, ttag, r2to, r2tl)| R2tRepr {
            hdgst,
            cccid,
            ttag,
            r2to,
            r2tl,
        },
    )
}

/// PDUs a host receives, for the given negotiated digests and the host's HPDA.
pub fn c2h_pdu(hdgst: bool, ddgst: bool, hpda: u8) -> impl Strategy<Value = PduRepr> {
    prop_oneof![
        ic_resp().prop_map(PduRepr::IcResp),
        term_req(PduType::C2hTermReq).prop_map(PduRepr::TermReq),
        capsule_resp(hdgst).prop_map(PduRepr::CapsuleResp),
        data_pdu(PduType::C2hData, hdgst, ddgst, hpda).prop_map(PduRepr::Data),
        r2t(hdgst).prop_map(PduRepr::R2t),
    ]
}

/// PDUs a controller receives, for the given negotiated digests and the controller's CPDA.
pub fn h2c_pdu(hdgst: bool, ddgst: bool, cpda: u8) -> impl Strategy<Value = PduRepr> {
    prop_oneof![
        ic_req().prop_map(PduRepr::IcReq),
        term_req(PduType::H2cTermReq).prop_map(PduRepr::TermReq),
        capsule_cmd(hdgst, ddgst, cpda).prop_map(PduRepr::CapsuleCmd),
        data_pdu(PduType::H2cData, hdgst, ddgst, cpda).prop_map(PduRepr::Data),
    ]
}

/// Deterministic data bytes for a PDU.
pub fn data_for(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7 + 1) as u8).collect()
}

/// Writes the whole PDU (header, data, data digest) to the end of `out`; returns its data.
pub fn append_pdu(out: &mut Vec<u8>, repr: &PduRepr, seed: usize) -> Vec<u8> {
    let ch = repr.common();
    let data = data_for(seed, ch.data_len());
    let start = out.len();
    out.resize(start + ch.plen as usize, 0);
    let n = emit_pdu(repr, &data, &mut out[start..]).expect("emit");
    assert_eq!(n, ch.plen as usize);
    data
}

/// Any Connect command (every field arbitrary).
pub fn connect_command() -> impl Strategy<Value = ConnectCommand> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(|(recfmt, qid, sqsize, cattr, kato)| ConnectCommand {
            recfmt,
            qid,
            sqsize,
            cattr,
            kato,
        })
}
