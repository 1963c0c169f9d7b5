//! The receive path fed hand-built PDU streams: every malformed case ends in a clear error
//! and nothing is written outside the buffer of the command the data belongs to.

use std::time::Instant;

use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{
    CapsuleRespRepr, DataPduRepr, HeaderBuf, IcRespRepr, PduFlags, PduType, R2tRepr,
};
use proptest::prelude::*;

use super::*;
use crate::error::{IoError, ProtocolError};

fn cfg(hdgst: bool, ddgst: bool) -> QueueConfig {
    QueueConfig {
        qid: 1,
        queue_size: 8,
        hdgst,
        ddgst,
        cid_mode: CidMode::Tagged,
        in_capsule_max: 4096,
    }
}

fn icresp(hdgst: bool, ddgst: bool, maxh2cdata: u32) -> Vec<u8> {
    HeaderBuf::new(&IcRespRepr {
        pfv: 0,
        cpda: 0,
        hdgst_enable: hdgst,
        ddgst_enable: ddgst,
        maxh2cdata,
    })
    .as_bytes()
    .to_vec()
}

/// A live queue (ICResp received, Connect assumed done) with digests as given.
fn live(hdgst: bool, ddgst: bool) -> QueueCore {
    live_cfg(cfg(hdgst, ddgst))
}

fn live_cfg(c: QueueConfig) -> QueueCore {
    let (hdgst, ddgst) = (c.hdgst, c.ddgst);
    let mut q = QueueCore::new(c);
    let icreq = q.tx_pending().to_vec();
    assert_eq!(icreq.len(), 128);
    assert_eq!(icreq[0], 0x00);
    assert_eq!(icreq[11], (hdgst as u8) | ((ddgst as u8) << 1));
    q.tx_consumed(icreq.len());
    q.rx_feed(&icresp(hdgst, ddgst, 8192)).unwrap();
    assert_eq!(q.phase(), Phase::Connecting);
    q.set_live();
    q
}

fn read_req(len: usize, user_data: u64) -> Request {
    let mut sqe = [0u8; SQE_LEN];
    sqe[0] = 0x02;
    Request {
        sqe,
        dir: DataDir::ToHost,
        buf: Some(IoBuf::Contig(vec![0xEE; len])),
        user_data,
    }
}

fn write_req(data: Vec<u8>, user_data: u64) -> Request {
    let mut sqe = [0u8; SQE_LEN];
    sqe[0] = 0x01;
    Request {
        sqe,
        dir: DataDir::ToController,
        buf: Some(IoBuf::Contig(data)),
        user_data,
    }
}

fn submit(q: &mut QueueCore, r: Request) -> u16 {
    let cid = q.submit(r, Instant::now()).unwrap();
    let n = q.tx_pending().len();
    q.tx_consumed(n);
    cid
}

fn c2h(q: &QueueCore, cid: u16, datao: u32, data: &[u8], flags: PduFlags) -> Vec<u8> {
    let neg = q.negotiated().unwrap();
    let repr = DataPduRepr {
        pdu_type: PduType::C2hData,
        flags,
        hdgst: neg.hdgst,
        ddgst: neg.ddgst,
        pda: 0,
        cccid: cid,
        ttag: 0,
        datao,
        datal: data.len() as u32,
    };
    let mut v = HeaderBuf::new(&repr).as_bytes().to_vec();
    v.extend_from_slice(data);
    if neg.ddgst {
        v.extend_from_slice(&crc32c(data).to_le_bytes());
    }
    v
}

fn resp(q: &QueueCore, cid: u16, status: u16) -> Vec<u8> {
    let mut cqe = [0u8; 16];
    cqe[12..14].copy_from_slice(&cid.to_le_bytes());
    cqe[14..16].copy_from_slice(&(status << 1).to_le_bytes());
    HeaderBuf::new(&CapsuleRespRepr {
        hdgst: q.negotiated().unwrap().hdgst,
        cqe,
    })
    .as_bytes()
    .to_vec()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn feed_err(q: &mut QueueCore, bytes: &[u8]) -> ProtocolError {
    q.rx_feed(bytes).unwrap_err()
}

fn only_completion(q: &mut QueueCore) -> Completion {
    let c = q.pop_completion().expect("a completion");
    assert!(q.pop_completion().is_none());
    c
}

#[test]
fn read_places_each_pdu_at_its_datao_and_completes_on_capsule_resp() {
    for (h, d) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut q = live(h, d);
        let cid = submit(&mut q, read_req(8192, 7));
        let data = pattern(8192, 3);
        let mut s = c2h(&q, cid, 0, &data[..4096], PduFlags::NONE);
        s.extend(c2h(&q, cid, 4096, &data[4096..], PduFlags::LAST_PDU));
        s.extend(resp(&q, cid, 0));
        q.rx_feed(&s).unwrap();
        let c = only_completion(&mut q);
        assert_eq!(c.user_data, 7);
        assert!(c.result.is_ok(), "{:?}", c.result);
        assert_eq!(c.buf.unwrap().to_vec(), data);
        assert_eq!(q.in_flight(), 0);
    }
}

#[test]
fn data_is_digested_only_when_the_pdu_carries_a_data_digest() {
    for (h, d) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut q = live(h, d);
        let cid = submit(&mut q, read_req(8192, 1));
        let data = pattern(8192, 5);
        let mut s = c2h(&q, cid, 0, &data, PduFlags::LAST_PDU);
        s.extend(resp(&q, cid, 0));
        q.rx_feed(&s).unwrap();
        assert!(only_completion(&mut q).result.is_ok());
        let want = if d { 8192 } else { 0 };
        assert_eq!(q.stats().rx_digested_bytes, want, "hdgst {h} ddgst {d}");
    }
}

#[test]
fn byte_at_a_time_feeding_gives_the_same_result() {
    let mut q = live(true, true);
    let cid = submit(&mut q, read_req(1000, 1));
    let data = pattern(1000, 9);
    let mut s = c2h(&q, cid, 0, &data, PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    for b in &s {
        q.rx_feed(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(only_completion(&mut q).buf.unwrap().to_vec(), data);
}

#[test]
fn success_flag_completes_without_capsule_resp() {
    let mut q = live(false, true);
    let cid = submit(&mut q, read_req(512, 2));
    let data = pattern(512, 1);
    q.rx_feed(&c2h(
        &q,
        cid,
        0,
        &data,
        PduFlags::LAST_PDU | PduFlags::SUCCESS,
    ))
    .unwrap();
    let c = only_completion(&mut q);
    assert_eq!(c.result.unwrap().sqhd, 0xFFFF);
    // A CapsuleResp after SUCCESS names a finished command: a duplicate completion.
    let s = resp(&q, cid, 0);
    let e = feed_err(&mut q, &s);
    assert_eq!(
        e,
        ProtocolError::StaleCid {
            pdu: "CapsuleResp",
            cid,
            duplicate: true
        }
    );
    assert!(
        e.to_string()
            .contains("already completed (duplicate completion)"),
        "{e}"
    );
}

#[test]
fn success_without_last_pdu_fails_the_command_and_the_queue() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(512, 2));
    let s = c2h(&q, cid, 0, &[1; 512], PduFlags::SUCCESS);
    let e = feed_err(&mut q, &s);
    assert_eq!(e, ProtocolError::SuccessWithoutLast { cid });
    let c = only_completion(&mut q);
    assert!(matches!(c.result, Err(IoError::Protocol(_))));
    assert_eq!(q.phase(), Phase::Failed);
    assert!(q.rx_feed(&[0]).is_err(), "input refused after failure");
}

#[test]
fn unknown_cccid_is_rejected_and_no_buffer_changes() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(512, 2));
    let s = c2h(&q, cid ^ 0x100, 0, &[1; 512], PduFlags::LAST_PDU);
    let e = feed_err(&mut q, &s);
    assert!(matches!(e, ProtocolError::UnknownCccid { .. }), "{e}");
    q.fail_all(IoError::QueueLost("test"));
    assert_eq!(
        only_completion(&mut q).buf.unwrap().to_vec(),
        vec![0xEE; 512]
    );
}

#[test]
fn data_beyond_the_buffer_is_rejected_before_any_byte_is_placed() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(4096, 2));
    let mut s = c2h(&q, cid, 0, &[1; 4096], PduFlags::NONE);
    s.extend(c2h(&q, cid, 4096, &[2; 16], PduFlags::LAST_PDU));
    let e = feed_err(&mut q, &s);
    assert!(
        matches!(
            e,
            ProtocolError::DataOutOfRange {
                datao: 4096,
                datal: 16,
                ..
            }
        ),
        "{e}"
    );
    let c = only_completion(&mut q);
    assert_eq!(c.buf.unwrap().to_vec(), vec![1; 4096]);
}

#[test]
fn datao_must_continue_the_data_received_so_far() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(8192, 2));
    let s = c2h(&q, cid, 4096, &[1; 4096], PduFlags::LAST_PDU);
    let e = feed_err(&mut q, &s);
    assert_eq!(
        e,
        ProtocolError::NotContiguous {
            cid,
            datao: 4096,
            expected: 0
        }
    );
    assert_eq!(
        only_completion(&mut q).buf.unwrap().to_vec(),
        vec![0xEE; 8192]
    );
}

#[test]
fn datal_must_match_the_pdu_length() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(4096, 2));
    let mut s = c2h(&q, cid, 0, &[1; 1024], PduFlags::LAST_PDU);
    s[16..20].copy_from_slice(&2048u32.to_le_bytes()); // DATAL 2048, PLEN says 1024
    let e = feed_err(&mut q, &s);
    // A header field error (FES 0x01) naming DATAL (FEI 16), from the validation core.
    assert!(
        matches!(&e, ProtocolError::Header(w)
            if w.termination() == Some((nvme_tcp_wire::Fes::InvalidHeaderField, 16))),
        "{e}"
    );
}

#[test]
fn successful_capsule_resp_after_partial_data_is_a_short_read() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(8192, 2));
    let mut s = c2h(&q, cid, 0, &[1; 4096], PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    let e = feed_err(&mut q, &s);
    assert!(
        matches!(
            e,
            ProtocolError::ShortRead {
                received: 4096,
                expected: 8192,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn error_status_after_partial_data_is_reported_as_the_status() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(8192, 2));
    let mut s = c2h(&q, cid, 0, &[1; 4096], PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0x04));
    q.rx_feed(&s).unwrap();
    let c = only_completion(&mut q);
    assert!(matches!(c.result, Err(IoError::Status(st)) if st.sc == 4));
}

#[test]
fn data_after_last_pdu_is_rejected() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(8192, 2));
    let mut s = c2h(&q, cid, 0, &[1; 4096], PduFlags::LAST_PDU);
    s.extend(c2h(&q, cid, 4096, &[1; 4096], PduFlags::LAST_PDU));
    let e = feed_err(&mut q, &s);
    assert!(matches!(e, ProtocolError::LastPdu { .. }), "{e}");
}

#[test]
fn data_digest_error_fails_only_that_command_and_the_queue_stays_up() {
    let mut q = live(false, true);
    let a = submit(&mut q, read_req(512, 1));
    let b = submit(&mut q, read_req(512, 2));
    let mut bad = c2h(&q, a, 0, &[1; 512], PduFlags::LAST_PDU);
    let n = bad.len();
    bad[n - 1] ^= 0xFF;
    let mut s = bad;
    s.extend(resp(&q, a, 0));
    s.extend(c2h(&q, b, 0, &[2; 512], PduFlags::LAST_PDU));
    s.extend(resp(&q, b, 0));
    q.rx_feed(&s).unwrap();
    let ca = q.pop_completion().unwrap();
    assert!(
        matches!(ca.result, Err(IoError::DataDigest { .. })),
        "{:?}",
        ca.result
    );
    let cb = q.pop_completion().unwrap();
    assert!(cb.result.is_ok());
    assert_eq!(q.phase(), Phase::Live);
    assert_eq!(q.stats().ddgst_errors, 1);
}

#[test]
fn header_digest_error_is_fatal() {
    let mut q = live(true, false);
    let cid = submit(&mut q, read_req(512, 1));
    let mut s = resp(&q, cid, 0);
    s[24] ^= 1;
    let e = feed_err(&mut q, &s);
    assert!(
        matches!(e, ProtocolError::Header(WireError::HeaderDigest { .. })),
        "{e}"
    );
    assert_eq!(q.phase(), Phase::Failed);
}

#[test]
fn digest_flags_must_match_the_negotiation() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(512, 1));
    let mut s = resp(&q, cid, 0);
    s[1] |= 0x01; // HDGSTF without negotiated header digests
    let e = feed_err(&mut q, &s);
    assert!(
        matches!(
            e,
            ProtocolError::Header(WireError::InvalidField { offset: 1, .. })
        ),
        "{e}"
    );
}

#[test]
fn a_wrong_hlen_is_rejected_from_the_common_header_alone() {
    let mut q = live(true, false);
    // HLEN 255 with HDGST: the host must not size a header read from it.
    let ch = [0x05u8, 0x01, 255, 0, 0, 1, 0, 0];
    let e = feed_err(&mut q, &ch);
    assert!(
        matches!(
            e,
            ProtocolError::Header(WireError::InvalidField { offset: 2, .. })
        ),
        "{e}"
    );
}

#[test]
fn h2c_types_and_reserved_types_are_rejected() {
    for t in [0x00u8, 0x02, 0x04, 0x06, 0x08, 0x0A, 0xFF, 0x01] {
        let mut q = live(false, false);
        let ch = [t, 0, 24, 0, 24, 0, 0, 0];
        let e = feed_err(&mut q, &ch);
        assert!(
            matches!(
                e,
                ProtocolError::UnexpectedPdu { .. } | ProtocolError::Header(_)
            ),
            "type {t:#x}: {e}"
        );
    }
}

#[test]
fn c2h_data_for_a_write_is_rejected() {
    let mut q = live(false, false);
    let cid = submit(&mut q, write_req(vec![5; 512], 1));
    let s = c2h(&q, cid, 0, &[1; 512], PduFlags::LAST_PDU);
    let e = feed_err(&mut q, &s);
    assert_eq!(e, ProtocolError::DataForNonRead { cid });
    let c = only_completion(&mut q);
    assert_eq!(
        c.buf.unwrap().to_vec(),
        vec![5; 512],
        "write buffer untouched"
    );
}

#[test]
fn small_writes_go_in_capsule_with_data_digest() {
    let mut q = live(true, true);
    let data = pattern(1024, 4);
    q.submit(write_req(data.clone(), 1), Instant::now())
        .unwrap();
    let tx = q.tx_pending().to_vec();
    // CapsuleCmd: 72 + HDGST 4, PDO 76, data, DDGST.
    assert_eq!(tx[0], 0x04);
    assert_eq!(tx[3], 76);
    assert_eq!(tx.len(), 76 + 1024 + 4);
    assert_eq!(&tx[76..76 + 1024], &data[..]);
    assert_eq!(&tx[1100..], &crc32c(&data).to_le_bytes());
    assert_eq!(tx[8 + 39], 0x01, "SGL data block / offset");
}

fn r2t(q: &QueueCore, cid: u16, ttag: u16, r2to: u32, r2tl: u32) -> Vec<u8> {
    HeaderBuf::new(&R2tRepr {
        hdgst: q.negotiated().unwrap().hdgst,
        cccid: cid,
        ttag,
        r2to,
        r2tl,
    })
    .as_bytes()
    .to_vec()
}

#[test]
fn r2t_is_answered_with_h2c_data_split_at_maxh2cdata() {
    let mut q = live(false, true);
    let data = pattern(20000, 8);
    let cid = submit(&mut q, write_req(data.clone(), 1));
    q.rx_feed(&r2t(&q, cid, 0x33, 0, 20000)).unwrap();
    let tx = q.tx_pending().to_vec();
    // MAXH2CDATA 8192: 8192 + 8192 + 3616.
    let mut off = 0;
    let mut got = Vec::new();
    let mut pdus = 0;
    while off < tx.len() {
        let p = DataPdu::new_checked(&tx[off..]).unwrap();
        assert_eq!(p.ch().pdu_type(), Some(PduType::H2cData));
        assert_eq!(p.ttag(), 0x33);
        assert_eq!(p.cccid(), cid);
        assert_eq!(p.datao() as usize, got.len());
        let l = p.datal() as usize;
        let last = p.ch().flags().contains(PduFlags::LAST_PDU);
        let d = &tx[off + 24..off + 24 + l];
        assert_eq!(&tx[off + 24 + l..off + 28 + l], &crc32c(d).to_le_bytes());
        got.extend_from_slice(d);
        off += p.ch().plen() as usize;
        pdus += 1;
        assert_eq!(last, got.len() == 20000);
    }
    assert_eq!(pdus, 3);
    assert_eq!(got, data);
}

#[test]
fn r2t_ranges_are_checked() {
    // R2TL 0 is a header field error (FES 0x01, FEI 16), from the validation core.
    let mut q = live(false, false);
    let cid = submit(&mut q, write_req(vec![0; 20000], 1));
    let s = r2t(&q, cid, 1, 0, 0);
    let e = feed_err(&mut q, &s);
    assert!(
        matches!(&e, ProtocolError::Header(w)
            if w.termination() == Some((nvme_tcp_wire::Fes::InvalidHeaderField, 16))),
        "{e}"
    );
    for (o, l) in [(4096u32, 4096u32), (0, 20001), (u32::MAX, 2)] {
        let mut q = live(false, false);
        let cid = submit(&mut q, write_req(vec![0; 20000], 1));
        let s = r2t(&q, cid, 1, o, l);
        let e = feed_err(&mut q, &s);
        assert!(
            matches!(e, ProtocolError::R2tOutOfRange { .. }),
            "{o}/{l}: {e}"
        );
    }
    let mut q = live(false, false);
    let cid = submit(&mut q, write_req(vec![0; 100], 1));
    let s = r2t(&q, cid, 1, 0, 100);
    let e = feed_err(&mut q, &s);
    assert_eq!(e, ProtocolError::R2tNotExpected { cid }, "in-capsule write");
}

#[test]
fn c2h_term_req_reports_its_fes() {
    let mut q = live(false, false);
    let mut s = vec![0x03u8, 0, 24, 24, 32, 0, 0, 0, 0x02, 0, 0, 0, 0, 0];
    s.resize(32, 0);
    let e = feed_err(&mut q, &s);
    assert!(matches!(e, ProtocolError::TermReq { fes: 2, .. }), "{e}");
}

#[test]
fn icresp_with_other_digests_than_requested_is_rejected() {
    let mut q = QueueCore::new(cfg(true, true));
    let e = feed_err(&mut q, &icresp(true, false, 8192));
    assert!(matches!(e, ProtocolError::IcResp(_)), "{e}");
    let mut q = QueueCore::new(cfg(false, false));
    let e = feed_err(&mut q, &icresp(false, false, 1000));
    // MAXH2CDATA below 4096: a header field error naming MAXH2CDATA (FEI 12).
    assert!(
        matches!(&e, ProtocolError::Header(w)
            if w.termination() == Some((nvme_tcp_wire::Fes::InvalidHeaderField, 12))),
        "{e}"
    );
}

#[test]
fn first_bytes_that_are_no_nvme_tcp_header_name_the_port_as_not_nvme_tcp() {
    let mut q = QueueCore::new(cfg(false, false));
    let e = feed_err(&mut q, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(
        matches!(e, ProtocolError::NotNvmeTcp { first, .. } if &first == b"HTTP/1.1"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(
            "not an NVMe/TCP port: the first bytes received, \"HTTP/1.1\", are not an ICResp ("
        ),
        "{e}"
    );
    // Once the connection is up, the same bytes are an ordinary header error.
    let mut q = live(false, false);
    let e = feed_err(&mut q, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(matches!(e, ProtocolError::Header(_)), "{e}");
}

#[test]
fn stale_cid_from_an_earlier_generation_is_rejected() {
    let mut q = live(false, false);
    let mut sqe = [0u8; SQE_LEN];
    sqe[0] = 0x00;
    let req = || Request {
        sqe,
        dir: DataDir::None,
        buf: None,
        user_data: 0,
    };
    let old = submit(&mut q, req());
    q.rx_feed(&resp(&q, old, 0)).unwrap();
    q.pop_completion().unwrap();
    // Reuse all slots so the old one comes back with a new generation.
    let mut cids = Vec::new();
    for _ in 0..q.depth() {
        cids.push(submit(&mut q, req()));
    }
    assert!(!cids.contains(&old));
    let s = resp(&q, old, 0);
    let e = feed_err(&mut q, &s);
    assert_eq!(
        e,
        ProtocolError::StaleCid {
            pdu: "CapsuleResp",
            cid: old,
            duplicate: false
        }
    );
    assert!(e.to_string().contains("(stale completion)"), "{e}");
}

#[test]
fn direct_receive_hands_out_the_buffer_at_datao() {
    let mut q = live(false, true);
    let cid = submit(&mut q, read_req(8192, 1));
    let data = pattern(8192, 5);
    let mut first = c2h(&q, cid, 0, &data[..4096], PduFlags::NONE);
    let hdr_len = first.len() - 4096 - 4;
    first.truncate(hdr_len);
    q.rx_feed(&first).unwrap();
    assert_eq!(q.rx_state_name(), "RecvData");
    // Socket read straight into the caller's buffer, in two pieces.
    for part in [&data[..1000], &data[1000..4096]] {
        let dst = q.rx_direct().unwrap();
        assert!(dst.len() >= part.len());
        dst[..part.len()].copy_from_slice(part);
        q.rx_direct_done(part.len()).unwrap();
    }
    assert_eq!(q.rx_state_name(), "RecvDataDigest");
    assert!(q.rx_direct().is_none());
    let mut rest = crc32c(&data[..4096]).to_le_bytes().to_vec();
    rest.extend(c2h(&q, cid, 4096, &data[4096..], PduFlags::LAST_PDU));
    rest.extend(resp(&q, cid, 0));
    q.rx_feed(&rest).unwrap();
    let c = only_completion(&mut q);
    assert!(c.result.is_ok());
    assert_eq!(c.buf.unwrap().to_vec(), data);
    assert_eq!(q.stats().rx_direct_bytes, 4096);
}

#[test]
fn scatter_gather_buffers_receive_across_segments() {
    let mut q = live(false, true);
    let mut sqe = [0u8; SQE_LEN];
    sqe[0] = 0x02;
    let cid = submit(
        &mut q,
        Request {
            sqe,
            dir: DataDir::ToHost,
            buf: Some(IoBuf::Sgl(vec![
                vec![0; 100],
                vec![],
                vec![0; 3000],
                vec![0; 996],
            ])),
            user_data: 1,
        },
    );
    let data = pattern(4096, 2);
    let mut s = c2h(&q, cid, 0, &data[..150], PduFlags::NONE);
    s.extend(c2h(&q, cid, 150, &data[150..], PduFlags::LAST_PDU));
    s.extend(resp(&q, cid, 0));
    q.rx_feed(&s).unwrap();
    let c = only_completion(&mut q);
    let b = c.buf.unwrap();
    assert_eq!(b.segment(0).len(), 100);
    assert_eq!(b.segment(2).len(), 3000);
    assert_eq!(b.to_vec(), data);
}

/// A queue offloaded to the software engine; the TCP sequence number of stream offset 0 is
/// `ISN` (near the wrap).
const ISN: u32 = u32::MAX - 1000;

fn offloaded(ddgst: bool) -> (ddp_engine::SoftDdpDevice, ddp_engine::RxSocket, QueueCore) {
    use std::sync::Arc;
    let dev = ddp_engine::SoftDdpDevice::new(ddp_engine::EngineConfig {
        io_threshold: 1024,
        ..Default::default()
    });
    let shared: Arc<dyn ulp_ddp::UlpDdpDevice> = Arc::new(dev.clone());
    let netdev = crate::DdpNetdev::probe(&shared, false).expect("nvme-tcp active");
    let mut q = live_cfg(QueueConfig {
        cid_mode: netdev.cid_mode(),
        ..cfg(false, ddgst)
    });
    q.attach_offload(&netdev, ulp_ddp::SockId(1), Some(ISN), 0)
        .unwrap();
    let rx = dev.rx_socket(ulp_ddp::SockId(1)).unwrap();
    (dev, rx, q)
}

/// Feeds `s` as one segment through the device, then to the queue with the device's marks.
fn through_device(rx: &ddp_engine::RxSocket, q: &mut QueueCore, s: &[u8]) {
    let at = q.rx_position();
    let seq = ISN.wrapping_add(at as u32);
    let v = rx.on_segment(seq, s);
    let placed: Vec<crate::PlacedRange> = v
        .placed()
        .iter()
        .map(|r| crate::PlacedRange {
            start: at + u64::from(r.seq.wrapping_sub(seq)),
            len: r.len,
        })
        .collect();
    q.rx_feed_marked(
        s,
        &crate::RxMarks {
            crc: v.crc,
            placed: &placed,
        },
    )
    .unwrap();
}

#[test]
fn placed_payload_is_not_copied_and_a_verified_digest_not_recomputed() {
    let (dev, rx, mut q) = offloaded(true);
    let cid = submit(&mut q, read_req(4096, 1));
    assert_eq!(
        q.stats().ddp_setups,
        1,
        "large read lent to the device before sending"
    );
    let data = pattern(4096, 3);
    let mut s = c2h(&q, cid, 0, &data, PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    through_device(&rx, &mut q, &s);
    let c = only_completion(&mut q);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(c.buf.unwrap().to_vec(), data);
    let st = q.stats();
    assert_eq!(st.rx_offload_placed_bytes, 4096);
    assert_eq!(st.rx_copied_bytes, 0);
    assert_eq!(st.rx_offload_ddgst_pdus, 1);
    assert_eq!(st.rx_digested_bytes, 0);
    assert_eq!(st.ddp_teardowns_done, 1);
    let ds = ulp_ddp::UlpDdpDevice::get_stats(&dev);
    assert_eq!((ds.rx_nvme_tcp_setup, ds.rx_nvme_tcp_teardown), (1, 1));
    q.detach_offload();
    let ds = ulp_ddp::UlpDdpDevice::get_stats(&dev);
    assert_eq!((ds.rx_nvme_tcp_sk_add, ds.rx_nvme_tcp_sk_del), (1, 1));
}

#[test]
fn unmarked_bytes_of_a_lent_buffer_are_copied_and_digested_over_the_buffer() {
    let (_dev, _rx, mut q) = offloaded(true);
    let cid = submit(&mut q, read_req(4096, 1));
    let data = pattern(4096, 5);
    let mut s = c2h(&q, cid, 0, &data, PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    // The device never saw these bytes: no marks.
    q.rx_feed(&s).unwrap();
    let c = only_completion(&mut q);
    assert!(c.result.is_ok());
    assert_eq!(c.buf.unwrap().to_vec(), data);
    assert_eq!(q.stats().rx_copied_bytes, 4096);
    assert_eq!(q.stats().rx_digested_bytes, 4096);
    // A corrupted payload the device did not verify fails that read only.
    let cid = submit(&mut q, read_req(4096, 2));
    let mut s = c2h(&q, cid, 0, &data, PduFlags::LAST_PDU);
    s[100] ^= 1;
    s.extend(resp(&q, cid, 0));
    q.rx_feed(&s).unwrap();
    assert!(matches!(
        only_completion(&mut q).result,
        Err(IoError::DataDigest { .. })
    ));
}

#[test]
fn a_read_completes_only_when_its_buffer_comes_back_and_its_cid_waits() {
    use std::sync::Arc;
    let dev = ddp_engine::SoftDdpDevice::new(ddp_engine::EngineConfig {
        io_threshold: 1024,
        teardown: ddp_engine::TeardownMode::Deferred,
        ..Default::default()
    });
    let shared: Arc<dyn ulp_ddp::UlpDdpDevice> = Arc::new(dev.clone());
    let netdev = crate::DdpNetdev::probe(&shared, false).unwrap();
    let mut q = live_cfg(QueueConfig {
        queue_size: 2, // one slot: a new read needs the same CID
        cid_mode: netdev.cid_mode(),
        ..cfg(false, false)
    });
    q.attach_offload(&netdev, ulp_ddp::SockId(9), None, 0)
        .unwrap();
    let cid = submit(&mut q, read_req(2048, 1));
    let mut s = c2h(&q, cid, 0, &[4; 2048], PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    q.rx_feed(&s).unwrap();
    assert!(q.pop_completion().is_none(), "waits for teardown_done");
    assert_eq!(q.waiting_for_teardown(), 1);
    let refused = q.submit(read_req(2048, 2), Instant::now());
    assert!(
        matches!(
            refused,
            Err(SubmitError {
                reason: SubmitErrorKind::QueueFull,
                ..
            })
        ),
        "the CID is not reused before teardown_done"
    );
    assert_eq!(dev.flush_deferred(), 1);
    let c = q.pop_completion().expect("completed after teardown_done");
    assert_eq!(c.buf.unwrap().to_vec(), vec![4; 2048]);
    assert!(q.submit(read_req(2048, 2), Instant::now()).is_ok());
}

#[test]
fn placement_marks_for_a_buffer_not_lent_are_ignored_and_counted() {
    let (_dev, _rx, mut q) = offloaded(false);
    let cid = submit(&mut q, read_req(512, 1)); // below io_threshold: not lent
    let data = pattern(512, 1);
    let mut s = c2h(&q, cid, 0, &data, PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    let at = q.rx_position();
    let bogus = [crate::PlacedRange {
        start: at + 24,
        len: 512,
    }];
    q.rx_feed_marked(
        &s,
        &crate::RxMarks {
            crc: true,
            placed: &bogus,
        },
    )
    .unwrap();
    let c = only_completion(&mut q);
    assert_eq!(c.buf.unwrap().to_vec(), data, "copied all the same");
    assert_eq!(q.stats().ddp_anomalies, 1);
}

#[test]
fn reset_connection_reissues_commands_in_flight() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(512, 9));
    let _ = feed_err(&mut q, &[0xFF; 8]);
    q.reset_connection();
    assert_eq!(q.phase(), Phase::WaitIcResp);
    assert_eq!(q.tx_pending().len(), 128, "ICReq again");
    q.tx_consumed(128);
    q.rx_feed(&icresp(false, false, 8192)).unwrap();
    q.set_live();
    let tx = q.tx_pending().to_vec();
    assert_eq!(tx[0], 0x04, "the read is re-issued");
    assert_eq!(u16::from_le_bytes([tx[10], tx[11]]), cid);
    q.tx_consumed(tx.len());
    let mut s = c2h(&q, cid, 0, &[3; 512], PduFlags::LAST_PDU);
    s.extend(resp(&q, cid, 0));
    q.rx_feed(&s).unwrap();
    let c = only_completion(&mut q);
    assert_eq!(c.user_data, 9);
    assert_eq!(c.buf.unwrap().to_vec(), vec![3; 512]);
}

proptest! {
    /// Whatever the chunking of a valid stream, the same data lands in the buffers.
    #[test]
    fn any_chunking_places_the_same_bytes(cuts in proptest::collection::vec(1usize..700, 1..40),
                                          h in any::<bool>(), d in any::<bool>()) {
        let mut q = live(h, d);
        let a = submit(&mut q, read_req(3000, 1));
        let b = submit(&mut q, read_req(1000, 2));
        let da = pattern(3000, 1);
        let db = pattern(1000, 2);
        let mut s = c2h(&q, a, 0, &da[..1200], PduFlags::NONE);
        s.extend(c2h(&q, b, 0, &db, PduFlags::LAST_PDU | PduFlags::SUCCESS));
        s.extend(c2h(&q, a, 1200, &da[1200..], PduFlags::LAST_PDU));
        s.extend(resp(&q, a, 0));
        let mut rest = &s[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            // Alternate between the copy path and the direct path.
            if i % 2 == 1 && let Some(dst) = q.rx_direct() {
                let m = dst.len().min(n);
                dst[..m].copy_from_slice(&rest[..m]);
                q.rx_direct_done(m).unwrap();
                rest = &rest[m..];
            } else {
                q.rx_feed(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            i += 1;
        }
        let c1 = q.pop_completion().unwrap();
        let c2 = q.pop_completion().unwrap();
        prop_assert_eq!(c1.user_data, 2);
        prop_assert_eq!(c1.buf.unwrap().to_vec(), db);
        prop_assert_eq!(c2.buf.unwrap().to_vec(), da);
    }

    /// Arbitrary bytes after a valid ICResp never panic, and a read buffer only ever changes
    /// inside the range that was accepted as contiguous data.
    #[test]
    fn garbage_never_writes_outside_accepted_ranges(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut q = live(false, false);
        let cid = submit(&mut q, read_req(256, 1));
        let _w = submit(&mut q, write_req(vec![0x55; 64], 2));
        // Make part of the garbage plausible: a C2HData header for the read.
        let mut s = c2h(&q, cid, 0, &[], PduFlags::NONE);
        s.truncate(8);
        s.extend_from_slice(&bytes);
        let _ = q.rx_feed(&s);
        let rcvd = q.slots.iter().find(|sl| sl.cid == cid).map(|sl| sl.rcvd).unwrap_or(0);
        q.fail_all(IoError::QueueLost("end"));
        while let Some(c) = q.pop_completion() {
            let b = c.buf.unwrap().to_vec();
            if c.user_data == 2 {
                prop_assert_eq!(b, vec![0x55; 64]);
            } else {
                prop_assert!(b[rcvd.min(256)..].iter().all(|&x| x == 0xEE));
            }
        }
    }
}

use nvme_tcp_wire::WireError;
use nvme_tcp_wire::pdu::DataPdu;

/// Drains everything waiting to be sent, through gather writes of at most `max` bytes.
fn drain_tx(q: &mut QueueCore, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut iov = [std::io::IoSlice::new(&[]); 8];
        let n = q.tx_iovecs(&mut iov);
        if n == 0 {
            break;
        }
        let mut took = 0;
        for s in &iov[..n] {
            let k = s.len().min(max - took);
            out.extend_from_slice(&s[..k]);
            took += k;
            if took == max {
                break;
            }
        }
        q.tx_consumed(took);
    }
    assert!(q.tx_is_empty());
    out
}

fn live_mode(hdgst: bool, ddgst: bool, zero_copy: bool) -> QueueCore {
    let mut q = QueueCore::new(cfg(hdgst, ddgst));
    q.set_zero_copy_tx(zero_copy);
    let n = drain_tx(&mut q, usize::MAX).len();
    assert_eq!(n, 128);
    q.rx_feed(&icresp(hdgst, ddgst, 8192)).unwrap();
    q.set_live();
    q
}

proptest! {
    /// Zero-copy transmit sends exactly the bytes copy mode sends, whatever the write sizes,
    /// scatter-gather layout, digests, send sizes and R2T ranges, and whether data digests
    /// were computed ahead ([`QueueCore::digest_ahead`]) for some of the writes or not.
    #[test]
    fn zero_copy_tx_sends_the_same_bytes(lens in proptest::collection::vec(1usize..30000, 1..5),
                                         split in 1usize..5000, max in 1usize..70000,
                                         first_r2t in 1usize..30000, ahead in 0usize..6,
                                         h in any::<bool>(), d in any::<bool>()) {
        let mut streams = Vec::new();
        for (zc, ahead) in [(false, 0), (true, 0), (true, ahead)] {
            let mut q = live_mode(h, d, zc);
            let mut cids = Vec::new();
            for (i, &len) in lens.iter().enumerate() {
                let data = pattern(len, i as u8);
                let buf = if len > split {
                    IoBuf::Sgl(vec![data[..split].to_vec(), data[split..].to_vec()])
                } else {
                    IoBuf::Contig(data)
                };
                let mut sqe = [0u8; SQE_LEN];
                sqe[0] = 0x01;
                let cid = q.submit(Request { sqe, dir: DataDir::ToController, buf: Some(buf), user_data: i as u64 }, Instant::now()).unwrap();
                cids.push((cid, len));
            }
            let mut out = drain_tx(&mut q, max);
            for _ in 0..ahead {
                q.digest_ahead();
            }
            for &(cid, len) in &cids {
                if len > 4096 {
                    // One R2T for all of it, or two (MAXR2T is 1: the second after the
                    // first's data).
                    let a = first_r2t.min(len);
                    q.rx_feed(&r2t(&q, cid, 9, 0, a as u32)).unwrap();
                    out.extend(drain_tx(&mut q, max));
                    if a < len {
                        q.rx_feed(&r2t(&q, cid, 9, a as u32, (len - a) as u32)).unwrap();
                        out.extend(drain_tx(&mut q, max));
                    }
                }
            }
            prop_assert!(!q.digest_ahead(), "nothing left to digest once the R2Ts came");
            streams.push(out);
        }
        prop_assert!(streams[0] == streams[1]);
        prop_assert!(streams[0] == streams[2]);
    }
}

#[test]
fn write_digests_are_computed_ahead_one_at_a_time_and_used_for_the_first_h2c_data() {
    let mut q = live(false, true);
    let a = pattern(8192, 1);
    let b = pattern(20000, 2);
    let cid_a = submit(&mut q, write_req(a.clone(), 1));
    let cid_b = submit(&mut q, write_req(b.clone(), 2));
    drain_tx(&mut q, usize::MAX);
    // One write per call, then nothing.
    assert!(q.digest_ahead());
    assert!(q.digest_ahead());
    assert!(!q.digest_ahead());
    let idx_a = q.tags.lookup(cid_a).unwrap() as usize;
    let idx_b = q.tags.lookup(cid_b).unwrap() as usize;
    // MAXH2CDATA 8192: the first PDU's DATAL.
    assert_eq!(q.slots[idx_a].h2c_digest, Some((8192, crc32c(&a))));
    assert_eq!(q.slots[idx_b].h2c_digest, Some((8192, crc32c(&b[..8192]))));
    // A wrong digest planted in the slot shows on the wire: the computed-ahead one is what
    // the first PDU carries, and only the first.
    q.slots[idx_b].h2c_digest = Some((8192, 0xdead_beef));
    q.rx_feed(&r2t(&q, cid_b, 5, 0, 20000)).unwrap();
    let tx = drain_tx(&mut q, usize::MAX);
    let p = DataPdu::new_checked(&tx).unwrap();
    assert_eq!((p.datao(), p.datal()), (0, 8192));
    assert_eq!(&tx[24 + 8192..28 + 8192], &0xdead_beef_u32.to_le_bytes());
    let off = p.ch().plen() as usize;
    let p2 = DataPdu::new_checked(&tx[off..]).unwrap();
    assert_eq!(p2.datao(), 8192);
    let d2 = &tx[off + 24..off + 24 + 8192];
    assert_eq!(
        &tx[off + 24 + 8192..off + 28 + 8192],
        &crc32c(d2).to_le_bytes()
    );
    // A write whose R2Ts come before any digest ahead is digested as it is sent, and
    // not again later.
    let c = submit(&mut q, write_req(pattern(9000, 3), 3));
    drain_tx(&mut q, usize::MAX);
    q.rx_feed(&r2t(&q, c, 6, 0, 9000)).unwrap();
    assert!(!q.digest_ahead());
}

#[test]
fn unsent_zero_copy_payload_survives_its_command_completing() {
    let mut streams = Vec::new();
    for zc in [false, true] {
        let mut q = live_mode(false, true, zc);
        let data = pattern(20000, 3);
        let mut sqe = [0u8; SQE_LEN];
        sqe[0] = 0x01;
        let req = Request {
            sqe,
            dir: DataDir::ToController,
            buf: Some(IoBuf::Contig(data.clone())),
            user_data: 1,
        };
        let cid = q.submit(req, Instant::now()).unwrap();
        let mut out = drain_tx(&mut q, usize::MAX);
        q.rx_feed(&r2t(&q, cid, 9, 0, 20000)).unwrap();
        // Part of the H2CData goes out, then the controller fails the command.
        let mut iov = [std::io::IoSlice::new(&[]); 8];
        let n = q.tx_iovecs(&mut iov);
        let first: Vec<u8> = iov[..n]
            .iter()
            .flat_map(|s| s.iter().copied())
            .take(5000)
            .collect();
        q.tx_consumed(first.len());
        out.extend(first);
        let s = resp(&q, cid, 0x06);
        q.rx_feed(&s).unwrap();
        let c = only_completion(&mut q);
        // The caller gets the buffer back and may reuse it at once.
        let mut b = c.buf.unwrap().into_vec().unwrap();
        b.fill(0);
        out.extend(drain_tx(&mut q, usize::MAX));
        streams.push(out);
    }
    assert!(
        streams[0] == streams[1],
        "the rest of the PDUs carries the original data"
    );
}

/// Fabrics Connect as the queue's driver submits it (user data of the host's own commands).
fn connect_req() -> Request {
    let o = crate::ConnectOptions::new("127.0.0.1", 4420, "nqn.test:sub");
    crate::cmd::connect(&o, 1, 8, Some(1), u64::MAX).unwrap()
}

/// The receive side of a new connection up to ICResp (the driver then sends Connect).
fn reconnect(q: &mut QueueCore) {
    q.reset_connection();
    let n = q.tx_pending().len();
    q.tx_consumed(n);
    q.rx_feed(&icresp(false, false, 8192)).unwrap();
    assert_eq!(q.phase(), Phase::Connecting);
}

#[test]
fn the_connect_of_a_reconnect_gets_a_slot_while_every_other_slot_waits_for_it() {
    let mut q = live(false, false);
    let depth = q.depth();
    assert_eq!(depth, 7, "queue_size - 1");
    let cids: Vec<u16> = (0..depth as u64)
        .map(|ud| submit(&mut q, read_req(512, ud)))
        .collect();
    assert_eq!(q.in_flight(), depth);
    let refused = q.submit(read_req(512, 99), Instant::now()).unwrap_err();
    assert_eq!(refused.reason, SubmitErrorKind::QueueFull);
    // The connection dies with every slot in flight; the new connection's Connect still
    // gets a slot, and the queue does not count it against the caller's depth.
    q.connection_failed(&IoError::Protocol(ProtocolError::Closed), 5);
    reconnect(&mut q);
    let connect = q
        .submit_now(connect_req(), Instant::now())
        .expect("a slot for Connect");
    assert!(!cids.contains(&connect));
    assert_eq!(q.in_flight(), depth);
    let sent = q.tx_pending().to_vec();
    q.tx_consumed(sent.len());
    assert_eq!(
        sent.len(),
        72 + 1024,
        "only the Connect goes out before the queue is live"
    );
    q.rx_feed(&resp(&q, connect, 0)).unwrap();
    let c = q.take_completion_for(u64::MAX).unwrap();
    assert!(c.result.is_ok());
    q.set_live();
    // Every waiting command is re-sent with its CID, and completes.
    assert_eq!(q.tx_pending().len(), 72 * depth);
    let n = q.tx_pending().len();
    q.tx_consumed(n);
    for &cid in &cids {
        q.rx_feed(&c2h(&q, cid, 0, &[7; 512], PduFlags::LAST_PDU))
            .unwrap();
        q.rx_feed(&resp(&q, cid, 0)).unwrap();
    }
    let mut done = 0;
    while let Some(c) = q.pop_completion() {
        assert!(c.result.is_ok(), "{:?}", c.result);
        done += 1;
    }
    assert_eq!(done, depth);
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn a_command_fails_with_the_last_cause_after_max_retries_failed_connections() {
    let mut q = live(false, false);
    let cid = submit(&mut q, read_req(512, 1));
    let cause = |i: u16| {
        IoError::Protocol(ProtocolError::UnknownCccid {
            pdu: "C2HData",
            cccid: 0x100 + i,
        })
    };
    for i in 0..3 {
        assert_eq!(q.connection_failed(&cause(i), 3), 0);
        assert_eq!(q.retries(cid), Some(u32::from(i) + 1));
        // A loss before the command was re-sent does not count (it was not in flight).
        reconnect(&mut q);
        assert_eq!(q.connection_failed(&cause(99), 3), 0);
        reconnect(&mut q);
        q.set_live();
    }
    // The fourth connection it was sent on fails: 1 + 3 retries used up.
    assert_eq!(q.connection_failed(&cause(3), 3), 1);
    let c = q.pop_completion().unwrap();
    assert_eq!(c.user_data, 1);
    match c.result {
        Err(IoError::GaveUp {
            attempts,
            reason,
            last,
        }) => {
            assert_eq!((attempts, reason), (4, GiveUpReason::RetryLimit));
            assert_eq!(*last, cause(3));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.buf.is_some(), "the buffer comes back");
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn giving_up_on_waiting_commands_names_the_last_failure_of_those_that_were_sent() {
    let mut q = live(false, false);
    submit(&mut q, read_req(512, 1));
    q.connection_failed(&IoError::Transport("connection reset".into()), 5);
    reconnect(&mut q);
    // Submitted while the queue is down: never sent.
    q.submit(read_req(512, 2), Instant::now()).unwrap();
    q.fail_waiting(GiveUpReason::FastIoFail);
    let mut got: Vec<_> = std::iter::from_fn(|| q.pop_completion()).collect();
    got.sort_by_key(|c| c.user_data);
    assert_eq!(
        got[0].result,
        Err(IoError::GaveUp {
            attempts: 1,
            reason: GiveUpReason::FastIoFail,
            last: Box::new(IoError::Transport("connection reset".into())),
        })
    );
    assert_eq!(
        got[1].result,
        Err(IoError::QueueLost("fast_io_fail_tmo expired"))
    );
}
