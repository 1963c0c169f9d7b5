//! The framer yields the same PDUs, data and digests however the stream is chunked.
//!
//! `PROPTEST_CASES` raises the case count of the random-chunking properties (default 256).

mod support;

use nvme_tcp_wire::Fes;
use nvme_tcp_wire::WireError;
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::framer::{Framer, FramerEvent};
use nvme_tcp_wire::pdu::*;
use nvme_tcp_wire::validate::{NegotiatedParams, Role};
use proptest::prelude::*;

/// What the framer reported, with data ranges resolved and merged per PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Header(PduRepr),
    Data(Vec<u8>),
    Digest {
        received: u32,
        computed: Option<u32>,
    },
    End,
}

/// Feeds `chunks` in order; returns the records and the first error.
fn run<'a>(
    params: NegotiatedParams,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Rec>, Option<WireError>) {
    let mut f = Framer::new(params);
    f.set_compute_data_digest(true);
    let mut recs = Vec::new();
    let mut expect_offset = 0;
    for chunk in chunks {
        for ev in f.events(chunk) {
            match ev {
                Err(e) => return (recs, Some(e)),
                Ok(FramerEvent::Header(h)) => {
                    expect_offset = 0;
                    recs.push(Rec::Header(h.repr));
                }
                Ok(FramerEvent::Data { range, offset }) => {
                    assert_eq!(offset, expect_offset, "data offsets are contiguous");
                    assert!(!range.is_empty(), "no empty data events");
                    expect_offset += range.len();
                    match recs.last_mut() {
                        Some(Rec::Data(d)) => d.extend_from_slice(&chunk[range]),
                        _ => recs.push(Rec::Data(chunk[range].to_vec())),
                    }
                }
                Ok(FramerEvent::DataDigest { received, computed }) => {
                    recs.push(Rec::Digest { received, computed })
                }
                Ok(FramerEvent::End) => recs.push(Rec::End),
            }
        }
    }
    (recs, None)
}

/// The records a correct framer reports for `pdus` written by `support::append_pdu`.
fn expected(pdus: &[PduRepr]) -> (Vec<u8>, Vec<Rec>) {
    let mut stream = Vec::new();
    let mut recs = Vec::new();
    for (i, p) in pdus.iter().enumerate() {
        let data = support::append_pdu(&mut stream, p, i);
        let ch = p.common();
        // Parsing normalizes the PDA; compare with the parsed form.
        let hdr = HeaderBuf::new(p);
        recs.push(Rec::Header(PduRepr::parse(hdr.as_bytes()).unwrap()));
        if !data.is_empty() {
            recs.push(Rec::Data(data.clone()));
        }
        if ch.has_ddgst() {
            let d = crc32c(&data);
            recs.push(Rec::Digest {
                received: d,
                computed: Some(d),
            });
        }
        recs.push(Rec::End);
    }
    (stream, recs)
}

fn host_params() -> NegotiatedParams {
    NegotiatedParams {
        hdgst: true,
        ddgst: true,
        rx_pda: 3,
        ..NegotiatedParams::new(Role::Host)
    }
}

/// A host-side stream with every C2H type, digests on, HPDA 3 (padding after headers).
fn host_stream() -> Vec<PduRepr> {
    vec![
        PduRepr::IcResp(IcRespRepr {
            pfv: 0,
            cpda: 0,
            hdgst_enable: true,
            ddgst_enable: true,
            maxh2cdata: 65536,
        }),
        PduRepr::R2t(R2tRepr {
            hdgst: true,
            cccid: 1,
            ttag: 2,
            r2to: 0,
            r2tl: 8192,
        }),
        PduRepr::Data(DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::NONE,
            hdgst: true,
            ddgst: true,
            pda: 3,
            cccid: 3,
            ttag: 0,
            datao: 0,
            datal: 37,
        }),
        PduRepr::Data(DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::LAST_PDU | PduFlags::SUCCESS,
            hdgst: true,
            ddgst: true,
            pda: 3,
            cccid: 3,
            ttag: 0,
            datao: 37,
            datal: 5,
        }),
        PduRepr::CapsuleResp(CapsuleRespRepr {
            hdgst: true,
            cqe: [9; 16],
        }),
        PduRepr::TermReq(TermReqRepr::new(
            PduType::C2hTermReq,
            Fes::PduSequenceError,
            0,
            24,
        )),
    ]
}

#[test]
fn whole_stream_in_one_chunk() {
    let (stream, want) = expected(&host_stream());
    let (got, err) = run(host_params(), [&stream[..]]);
    assert_eq!(err, None);
    assert_eq!(got, want);
}

#[test]
fn every_split_point_yields_the_same_events() {
    let (stream, want) = expected(&host_stream());
    for i in 0..=stream.len() {
        let (got, err) = run(host_params(), [&stream[..i], &stream[i..]]);
        assert_eq!(err, None, "split at {i}");
        assert_eq!(got, want, "split at {i}");
    }
}

#[test]
fn every_pair_of_split_points_yields_the_same_events() {
    let (stream, want) = expected(&host_stream());
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let (got, err) = run(host_params(), [&stream[..i], &stream[i..j], &stream[j..]]);
            assert_eq!(err, None, "split at {i}, {j}");
            assert_eq!(got, want, "split at {i}, {j}");
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    let (stream, want) = expected(&host_stream());
    let (got, err) = run(host_params(), stream.chunks(1));
    assert_eq!(err, None);
    assert_eq!(got, want);
}

#[test]
fn controller_side_stream_with_in_capsule_data() {
    let pdus = vec![
        PduRepr::IcReq(IcReqRepr {
            pfv: 0,
            hpda: 0,
            hdgst_enable: false,
            ddgst_enable: true,
            maxr2t: 0,
        }),
        PduRepr::CapsuleCmd(CapsuleCmdRepr {
            hdgst: false,
            ddgst: true,
            pda: 0,
            sqe: [1; 64],
            data_len: 1024,
        }),
        PduRepr::CapsuleCmd(CapsuleCmdRepr {
            hdgst: false,
            ddgst: true,
            pda: 0,
            sqe: [2; 64],
            data_len: 0,
        }),
        PduRepr::Data(DataPduRepr {
            pdu_type: PduType::H2cData,
            flags: PduFlags::LAST_PDU,
            hdgst: false,
            ddgst: true,
            pda: 0,
            cccid: 2,
            ttag: 7,
            datao: 0,
            datal: 300,
        }),
    ];
    let params = NegotiatedParams {
        ddgst: true,
        ..NegotiatedParams::new(Role::Controller)
    };
    let (stream, want) = expected(&pdus);
    for i in 0..=stream.len() {
        let (got, err) = run(params, [&stream[..i], &stream[i..]]);
        assert_eq!(err, None, "split at {i}");
        assert_eq!(got, want, "split at {i}");
    }
}

#[test]
fn refuses_an_oversized_plen_after_the_common_header() {
    let repr = DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU,
        hdgst: false,
        ddgst: false,
        pda: 0,
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal: 1 << 30,
    };
    let hdr = HeaderBuf::new(&repr);
    let params = NegotiatedParams {
        max_plen: 1 << 20,
        ..NegotiatedParams::new(Role::Host)
    };
    let mut f = Framer::new(params);
    // Seven bytes: nothing to decide yet.
    assert_eq!(f.events(&hdr.as_bytes()[..7]).count(), 0);
    // The eighth byte completes the CH: refused before the PSH is read.
    let (n, _) = match f.advance(&hdr.as_bytes()[7..]) {
        Err(e) => {
            assert_eq!(e.termination(), Some((Fes::DataTransferLimitExceeded, 0)));
            (0, ())
        }
        Ok(_) => panic!("oversized PLEN accepted"),
    };
    assert_eq!(n, 0);
    assert_eq!(f.header_bytes().len(), 8);
    assert!(f.is_failed());
    // The framer stays failed.
    assert!(f.advance(&[0]).is_err());
}

#[test]
fn a_corrupted_header_fails_at_the_same_point_whatever_the_chunking() {
    let (mut stream, want) = expected(&host_stream());
    // Corrupt the R2T's header digest (the R2T starts right after the 128-byte ICResp).
    stream[128 + 24] ^= 0xFF;
    let (whole, err) = run(host_params(), [&stream[..]]);
    let err = err.expect("error");
    assert_eq!(err.termination().map(|t| t.0), Some(Fes::HeaderDigestError));
    assert_eq!(whole, want[..2].to_vec()); // ICResp header + End
    for i in 0..=stream.len() {
        let (got, e) = run(host_params(), [&stream[..i], &stream[i..]]);
        assert_eq!(got, whole, "split at {i}");
        assert_eq!(e.as_ref(), Some(&err), "split at {i}");
    }
}

#[test]
fn failed_framer_offers_the_offending_header_for_a_termination_request() {
    let mut b = HeaderBuf::new(&CapsuleRespRepr {
        hdgst: false,
        cqe: [0; 16],
    })
    .as_bytes()
    .to_vec();
    b[2] = 30; // bad HLEN
    let mut f = Framer::new(NegotiatedParams::new(Role::Host));
    let err = f.events(&b).find_map(|e| e.err()).expect("error");
    let mut out = [0u8; TERM_REQ_MAX_PLEN];
    let n =
        TermReqRepr::build_for_error(Role::Host.term_req_type(), &err, f.header_bytes(), &mut out)
            .expect("answered with a termination request");
    let t = TermReqPdu::new_checked(&out[..n]).unwrap();
    assert_eq!((t.fes(), t.fei()), (1, 2));
    assert_eq!(&out[24..n], &b[..8]);
}

#[test]
fn a_wrong_data_digest_is_reported_not_failed() {
    let (mut stream, _) = expected(&host_stream());
    let last = stream.len();
    // Last C2HData data digest: corrupt the last byte before the CapsuleResp (28 bytes) and
    // TermReq (48 bytes).
    stream[last - 28 - 48 - 1] ^= 1;
    let (got, err) = run(host_params(), [&stream[..]]);
    assert_eq!(err, None);
    let digests: Vec<_> = got
        .iter()
        .filter_map(|r| match r {
            Rec::Digest { received, computed } => Some(Some(*received) == *computed),
            _ => None,
        })
        .collect();
    assert_eq!(digests, vec![true, false]);
}

proptest! {
    #[test]
    fn random_host_streams_frame_identically_under_random_chunking(
        (h, d, pda, pdus) in (any::<bool>(), any::<bool>(), 0..=MAX_PDA).prop_flat_map(|(h, d, pda)| {
            (Just(h), Just(d), Just(pda), proptest::collection::vec(support::c2h_pdu(h, d, pda), 1..6))
        }),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let params = NegotiatedParams { hdgst: h, ddgst: d, rx_pda: pda, ..NegotiatedParams::new(Role::Host) };
        let (stream, want) = expected(&pdus);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for p in points {
            chunks.push(&stream[prev..p]);
            prev = p;
        }
        chunks.push(&stream[prev..]);
        let (got, err) = run(params, chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn random_controller_streams_frame_identically_one_byte_at_a_time(
        (h, d, pda, pdus) in (any::<bool>(), any::<bool>(), 0..=MAX_PDA).prop_flat_map(|(h, d, pda)| {
            (Just(h), Just(d), Just(pda), proptest::collection::vec(support::h2c_pdu(h, d, pda), 1..4))
        }),
    ) {
        let params = NegotiatedParams {
            hdgst: h, ddgst: d, rx_pda: pda, max_h2c_data: u32::MAX,
            ..NegotiatedParams::new(Role::Controller)
        };
        let (stream, want) = expected(&pdus);
        let (got, err) = run(params, stream.chunks(1));
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_framer(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
    ) {
        let mut f = Framer::new(NegotiatedParams::new(Role::Controller));
        for c in bytes.chunks(chunk) {
            for ev in f.events(c) {
                if let Ok(FramerEvent::Data { range, .. }) = ev {
                    prop_assert!(range.end <= c.len());
                }
            }
        }
    }
}
