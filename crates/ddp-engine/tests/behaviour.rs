//! Behaviour of the software device, one rule per test.

use ddp_engine::{EngineConfig, RxSocket, SegmentVerdict, SoftDdpDevice, SyncState, TeardownMode};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use ulp_ddp::{
    Cap, CapSet, CapsSetRequest, DdpCtx, DdpError, DdpEvent, DdpIo, IoBuf, NvmeTcpDdpConfig,
    NvmeTcpDigests, ResyncAction, SkConfig, SockId, UlpDdpDevice, UlpDdpSocket, caps_set,
};

const SK: SockId = SockId(1);

fn cfg() -> EngineConfig {
    EngineConfig {
        io_threshold: 0,
        ..EngineConfig::connectx7_like()
    }
}

/// A device with one offloaded socket: the device, the ULP's handle and the receive path's.
struct Dev {
    dev: SoftDdpDevice,
    sock: Box<dyn UlpDdpSocket>,
    rx: RxSocket,
}

fn device(cfg: EngineConfig, hdgst: bool, ddgst: bool, isn: Option<u32>) -> Dev {
    let dev = SoftDdpDevice::new(cfg);
    let sk_cfg = SkConfig::nvme(
        0,
        isn,
        NvmeTcpDdpConfig {
            dgst: NvmeTcpDigests {
                header: hdgst,
                data: ddgst,
            },
            queue_size: 32,
            ..NvmeTcpDdpConfig::default()
        },
    );
    let sock = dev.sk_add(SK, &sk_cfg).unwrap();
    let rx = dev.rx_socket(SK).unwrap();
    Dev { dev, sock, rx }
}

impl Dev {
    fn seg(&self, seq: u32, payload: &[u8]) -> SegmentVerdict {
        self.rx.on_segment(seq, payload)
    }

    fn setup(&mut self, cid: u32, len: usize) {
        self.sock
            .setup(DdpIo::new(cid, IoBuf::zeroed_chunks(len, 4096)))
            .unwrap();
    }

    /// Tears `cid` down, lets the device finish, and takes the buffer back.
    fn teardown_and_take(&mut self, cid: u32) -> Vec<u8> {
        self.sock.teardown(cid, DdpCtx(u64::from(cid))).unwrap();
        self.dev.flush_deferred();
        let Some(DdpEvent::TeardownDone { ctx, io }) = self.sock.poll_event() else {
            panic!("no teardown_done for cid {cid}");
        };
        assert_eq!(ctx, DdpCtx(u64::from(cid)));
        assert_eq!(io.command_id, cid);
        io.buf.to_vec()
    }

    fn state(&self) -> SyncState {
        self.dev.sync_state(SK).unwrap()
    }
}

/// A C2HData PDU on the wire.
fn c2h(cid: u16, datao: u32, data: &[u8], hdgst: bool, ddgst: bool) -> Vec<u8> {
    let repr = DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU,
        hdgst,
        ddgst,
        pda: 0,
        cccid: cid,
        ttag: 0,
        datao,
        datal: data.len() as u32,
    };
    let mut v = HeaderBuf::new(&repr).as_bytes().to_vec();
    v.extend_from_slice(data);
    if ddgst {
        v.extend_from_slice(&crc32c(data).to_le_bytes());
    }
    v
}

fn data(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[test]
fn places_payload_at_datao_and_verifies_the_digest() {
    let mut d = device(cfg(), true, true, Some(100));
    d.setup(3, 8192);
    let payload = data(4096, 1);
    let wire = c2h(3, 4096, &payload, true, true);
    let v = d.seg(100, &wire);
    assert!(v.is_placed(100 + 28, 4096));
    assert!(v.crc);
    assert_eq!(v.digests_verified, 1);
    let buf = d.teardown_and_take(3);
    assert_eq!(&buf[4096..], &payload[..]);
    assert!(buf[..4096].iter().all(|b| *b == 0));
    let st = d.dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_packets, st.rx_nvme_tcp_bytes), (1, 4096));
}

#[test]
fn headers_and_digests_split_at_every_byte_are_still_offloaded() {
    let payload = data(300, 2);
    for hdgst in [false, true] {
        let wire = c2h(1, 0, &payload, hdgst, true);
        let mut d = device(cfg(), hdgst, true, Some(u32::MAX - 5));
        d.setup(1, 300);
        let mut placed = 0;
        let mut all_crc = true;
        for (i, b) in wire.iter().enumerate() {
            let v = d.seg(
                (u32::MAX - 5).wrapping_add(i as u32),
                std::slice::from_ref(b),
            );
            placed += v.placed_bytes();
            all_crc &= v.crc;
        }
        assert_eq!(placed, 300);
        assert!(all_crc, "every one-byte segment keeps the crc bit");
        assert_eq!(d.dev.diagnostics().ddgst_ok, 1);
        assert_eq!(d.teardown_and_take(1), payload);
    }
}

#[test]
fn a_bad_data_digest_is_reported_and_never_verified() {
    let mut d = device(cfg(), false, true, Some(0));
    d.setup(1, 512);
    let mut wire = c2h(1, 0, &data(512, 3), false, true);
    let n = wire.len();
    wire[n - 1] ^= 0x80;
    let v = d.seg(0, &wire);
    assert!(!v.crc);
    assert_eq!((v.digests_verified, v.digests_failed), (0, 1));
    assert_eq!(d.dev.diagnostics().ddgst_bad, 1);
    // Placement does not depend on the digest: the ULP checks it in software.
    assert_eq!(v.placed_bytes(), 512);
}

#[test]
fn a_pdu_that_would_overflow_the_buffers_is_not_placed_at_all() {
    let mut d = device(cfg(), false, false, Some(0));
    d.setup(1, 1000);
    let v = d.seg(0, &c2h(1, 600, &data(500, 4), false, false));
    assert!(!v.ddp());
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_bytes, 0);
}

#[test]
fn nothing_is_placed_for_a_command_after_its_teardown() {
    let mut d = device(cfg(), false, false, Some(0));
    d.setup(1, 2000);
    let wire = c2h(1, 0, &data(2000, 5), false, false);
    let v = d.seg(0, &wire[..1000]);
    assert_eq!(v.placed_bytes(), 1000 - 24);
    let first = d.teardown_and_take(1);
    assert_eq!(&first[..1000 - 24], &data(2000, 5)[..1000 - 24]);
    // A new I/O with the same command ID does not receive the old PDU's rest either.
    d.setup(1, 2000);
    let v = d.seg(1000, &wire[1000..]);
    assert!(!v.ddp());
    assert_eq!(d.teardown_and_take(1), vec![0u8; 2000]);
}

#[test]
fn a_duplicate_segment_passes_through_without_placement_or_crc() {
    let mut d = device(cfg(), false, true, Some(0));
    d.setup(1, 4000);
    let wire = c2h(1, 0, &data(4000, 6), false, true);
    let v1 = d.seg(0, &wire[..1448]);
    assert!(v1.ddp() && v1.crc);
    let dup = d.seg(0, &wire[..1448]);
    assert!(!dup.ddp() && !dup.crc);
    // A retransmission overlapping old and new bytes: only the new bytes are processed,
    // and the crc bit is off (part of the segment was not fed to the digest).
    let v2 = d.seg(1000, &wire[1000..2896]);
    assert!(v2.is_placed(1448, 2896 - 1448));
    assert!(!v2.is_placed(1000, 1));
    assert!(!v2.crc);
    let v3 = d.seg(2896, &wire[2896..]);
    assert!(
        v3.crc,
        "the PDU's digest was still computed over every byte once"
    );
    assert_eq!(v3.digests_verified, 1);
    assert_eq!(d.dev.diagnostics().partial_segments, 1);
}

#[test]
fn a_lost_data_only_segment_keeps_framing() {
    let mut d = device(cfg(), false, true, Some(0));
    d.setup(1, 4000);
    d.setup(2, 100);
    let mut wire = c2h(1, 0, &data(4000, 7), false, true);
    let second_at = wire.len() as u32;
    wire.extend(c2h(2, 0, &data(100, 8), false, true));
    d.seg(0, &wire[..1000]);
    // 1000..2000 lost.
    let v = d.seg(2000, &wire[2000..]);
    assert_eq!(d.state(), SyncState::InSync);
    assert!(
        !v.crc,
        "the first PDU lost bytes: its digest cannot be verified"
    );
    assert!(v.is_placed(second_at + 24, 100));
    assert_eq!(v.resync_request, None);
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_resync, 0, "no resync needed");
    // The retransmission is old for the device: the ULP copies it itself.
    let r = d.seg(1000, &wire[1000..2000]);
    assert!(!r.ddp() && !r.crc);
}

#[test]
fn a_lost_header_costs_framing_until_the_ulp_confirms_a_resync() {
    let mut d = device(cfg(), false, true, Some(0));
    for cid in 1..=3 {
        d.setup(cid, 1000);
    }
    let p1 = c2h(1, 0, &data(1000, 1), false, true);
    let p2 = c2h(2, 0, &data(1000, 2), false, true);
    let p3 = c2h(3, 0, &data(1000, 3), false, true);
    let (a, b) = (p1.len() as u32, (p1.len() + p2.len()) as u32);
    // The segment holding p1's end and p2's header is lost: the next one starts in p2's data.
    let v = d.seg(a + 100, &p2[100..]);
    assert!(!v.ddp());
    assert_eq!(d.state(), SyncState::Searching);
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_resync, 0);
    // p3's header arrives: a candidate; the device asks the ULP.
    let v = d.seg(b, &p3[..500]);
    assert!(!v.ddp());
    assert_eq!(v.resync_request, Some(b));
    assert_eq!(d.state(), SyncState::ResyncPending { seq: Some(b) });
    // The ULP parses the headers before p3 (nothing to answer yet), then p3's.
    assert_eq!(d.sock.pdu_header(0), ResyncAction::None);
    assert_eq!(d.sock.pdu_header(a), ResyncAction::None);
    assert_eq!(d.state(), SyncState::ResyncPending { seq: Some(b) });
    assert_eq!(d.sock.pdu_header(b), ResyncAction::Confirmed(b));
    assert_eq!(d.state(), SyncState::InSync);
    // Answered once: the same header again is not a confirmation.
    assert_eq!(d.sock.pdu_header(b), ResyncAction::None);
    assert_eq!(d.dev.diagnostics().resync_confirmed, 1);
    // The PDU in progress stays un-offloaded; the next one is offloaded again.
    let v = d.seg(b + 500, &p3[500..]);
    assert!(!v.ddp() && !v.crc);
    let p4 = c2h(1, 0, &data(10, 4), false, true);
    let end3 = b + p3.len() as u32;
    d.teardown_and_take(1);
    d.setup(1, 1000);
    let v = d.seg(end3, &p4);
    assert!(v.is_placed(end3 + 24, 10) && v.crc);
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_resync, 1);
}

#[test]
fn a_header_past_the_request_is_a_mismatch_and_no_answer() {
    let mut d = device(cfg(), false, false, None);
    let wire: Vec<u8> = (0..3u16)
        .flat_map(|i| c2h(i, 0, &data(40, i as u8), false, false))
        .collect();
    d.seg(500, &wire[..64]);
    assert_eq!(d.state(), SyncState::ResyncPending { seq: Some(500) });
    // The ULP's next header is past the request (the request came too late for it).
    assert_eq!(
        d.sock.pdu_header(564),
        ResyncAction::Mismatch {
            requested: 500,
            pdu_seq: 564
        }
    );
    assert_eq!(d.state(), SyncState::ResyncPending { seq: Some(500) });
    assert_eq!(d.dev.diagnostics().resync_confirmed, 0);
}

/// `n` C2HData PDUs of 64 data bytes for command 1, PDU `i` at DATAO `64 i`, laid out from
/// sequence number `base`: (wire bytes of each PDU, its sequence number, its data).
fn small_pdus(n: usize, base: u32, salt: u8) -> Vec<(Vec<u8>, u32, Vec<u8>)> {
    let mut seq = base;
    (0..n)
        .map(|i| {
            let payload = data(64, salt.wrapping_add(i as u8));
            let wire = c2h(1, 64 * i as u32, &payload, false, true);
            let at = seq;
            seq = seq.wrapping_add(wire.len() as u32);
            (wire, at, payload)
        })
        .collect()
}

/// Feeds PDUs `range` one per segment and, as the ULP, copies the data of every PDU the
/// device did not place; returns which PDUs were placed (in full; never in part here).
fn feed(d: &mut Dev, pdus: &[(Vec<u8>, u32, Vec<u8>)], range: std::ops::Range<usize>) -> Vec<bool> {
    range
        .map(|i| {
            let (wire, at, payload) = &pdus[i];
            let v = d.seg(*at, wire);
            let placed = v.is_placed(at + 24, 64);
            assert!(placed || !v.ddp(), "PDU {i} placed in part");
            if !placed {
                d.sock.copy_to_io(1, 64 * i as u64, payload).unwrap();
            }
            placed
        })
        .collect()
}

fn all_data(pdus: &[(Vec<u8>, u32, Vec<u8>)]) -> Vec<u8> {
    pdus.iter().flat_map(|p| p.2.clone()).collect()
}

#[test]
fn one_request_per_speculative_framing_repeated_every_16_headers() {
    let mut d = device(cfg(), false, true, None);
    let pdus = small_pdus(40, 500, 0);
    let wire: Vec<u8> = pdus.iter().flat_map(|p| p.0.clone()).collect();
    let v = d.seg(500, &wire);
    // Headers 0, 16 and 32 of the speculative framing.
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_resync, 3);
    assert_eq!(v.resync_request, Some(pdus[32].1));
    assert_eq!(
        d.state(),
        SyncState::ResyncPending {
            seq: Some(pdus[32].1)
        }
    );
    // The ULP only ever sees the latest request: the older headers are no answer.
    assert_eq!(d.sock.pdu_header(pdus[0].1), ResyncAction::None);
    assert_eq!(d.sock.pdu_header(pdus[16].1), ResyncAction::None);
    assert_eq!(
        d.sock.pdu_header(pdus[32].1),
        ResyncAction::Confirmed(pdus[32].1)
    );
    assert_eq!(d.state(), SyncState::InSync);
}

/// A confirmation that takes effect `late` PDU headers after the ULP gave it (the answer
/// travelling to the NIC) still resyncs: the PDUs passed meanwhile are not placed, the
/// next one is, and the data the ULP ends up with is right.
#[test]
fn a_confirmation_taking_effect_1_2_or_8_pdus_late_resumes_offload() {
    for late in [1u32, 2, 8] {
        let mut d = device(
            EngineConfig {
                resync_answer_delay_pdus: late,
                ..cfg()
            },
            false,
            true,
            None,
        );
        let n = 20;
        d.setup(1, 64 * n);
        let pdus = small_pdus(n, 7000, late as u8);
        // PDU 0 is the candidate: the device asks, the ULP parses that header and confirms.
        assert_eq!(feed(&mut d, &pdus, 0..1), [false]);
        assert_eq!(d.state(), SyncState::ResyncPending { seq: Some(7000) });
        assert_eq!(d.sock.pdu_header(7000), ResyncAction::Confirmed(7000));
        assert_ne!(d.state(), SyncState::InSync, "late {late}: not yet");
        let k = 1 + late as usize;
        let placed = feed(&mut d, &pdus, 1..n);
        // The answer takes effect as the device passes the `late`-th header; offload
        // resumes at the next PDU.
        assert!(
            placed[..late as usize].iter().all(|p| !p),
            "late {late}: {placed:?}"
        );
        assert!(
            placed[k - 1..].iter().all(|p| *p),
            "late {late}: {placed:?}"
        );
        assert_eq!(d.state(), SyncState::InSync);
        let diag = d.dev.diagnostics();
        assert_eq!((diag.resync_confirmed, diag.resync_ignored), (1, 0));
        assert_eq!(d.teardown_and_take(1), all_data(&pdus), "late {late}");
    }
}

/// A ULP that parses the requested header after the device has passed 1, 2 or 8 more (it
/// lags behind the device) confirms it, and the device takes it: the framing followed
/// since still holds.
#[test]
fn a_ulp_parsing_the_requested_header_1_2_or_8_pdus_late_resumes_offload() {
    for late in [1usize, 2, 8] {
        let mut d = device(cfg(), false, true, None);
        let n = 20;
        d.setup(1, 64 * n);
        let pdus = small_pdus(n, u32::MAX - 300, late as u8);
        let placed = feed(&mut d, &pdus, 0..1 + late);
        assert!(placed.iter().all(|p| !p));
        assert_eq!(
            d.state(),
            SyncState::ResyncPending {
                seq: Some(pdus[0].1)
            }
        );
        // Now the ULP parses the headers, from the requested one on.
        assert_eq!(
            d.sock.pdu_header(pdus[0].1),
            ResyncAction::Confirmed(pdus[0].1)
        );
        assert_eq!(d.state(), SyncState::InSync, "late {late}");
        for p in &pdus[1..=late] {
            assert_eq!(d.sock.pdu_header(p.1), ResyncAction::None);
        }
        let placed = feed(&mut d, &pdus, 1 + late..n);
        assert!(placed.iter().all(|p| *p), "late {late}: {placed:?}");
        assert_eq!(d.teardown_and_take(1), all_data(&pdus), "late {late}");
    }
}

/// A ULP more than 16 headers behind: by the time it parses the first requested header the
/// device has repeated its request at a later header; the ULP confirms that one when it
/// gets there.
#[test]
fn a_ulp_more_than_16_pdus_late_confirms_the_repeated_request() {
    let mut d = device(cfg(), false, true, None);
    let n = 30;
    d.setup(1, 64 * n);
    let pdus = small_pdus(n, 100, 9);
    feed(&mut d, &pdus, 0..20);
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_resync, 2);
    let mut confirmed = None;
    for (i, p) in pdus[..20].iter().enumerate() {
        match d.sock.pdu_header(p.1) {
            ResyncAction::None => {}
            ResyncAction::Confirmed(s) => {
                assert_eq!(s, p.1);
                confirmed = Some(i);
                break;
            }
            other => panic!("header {i}: {other:?}"),
        }
    }
    assert_eq!(confirmed, Some(16));
    assert_eq!(d.state(), SyncState::InSync);
    let placed = feed(&mut d, &pdus, 20..n);
    assert!(placed.iter().all(|p| *p), "{placed:?}");
    assert_eq!(d.teardown_and_take(1), all_data(&pdus));
}

/// The device keeps the last four requests of a speculative framing (one every 16
/// headers): an answer that takes effect within about 64 headers is accepted, a later one
/// is not (the device asks again instead).
#[test]
fn a_confirmation_older_than_the_kept_requests_is_ignored() {
    for (late, accepted) in [(60u32, true), (68, false)] {
        let mut d = device(
            EngineConfig {
                resync_answer_delay_pdus: late,
                ..cfg()
            },
            false,
            true,
            None,
        );
        let n = 100;
        d.setup(1, 64 * n);
        let pdus = small_pdus(n, 0, 1);
        feed(&mut d, &pdus, 0..1);
        assert_eq!(d.sock.pdu_header(0), ResyncAction::Confirmed(0));
        let placed = feed(&mut d, &pdus, 1..late as usize + 1);
        assert!(placed.iter().all(|p| !p));
        let diag = d.dev.diagnostics();
        assert_eq!(
            (diag.resync_confirmed, diag.resync_ignored),
            (u64::from(accepted), u64::from(!accepted)),
            "answer {late} PDUs late"
        );
        assert_eq!(d.state() == SyncState::InSync, accepted);
        let placed = feed(&mut d, &pdus, late as usize + 1..n);
        assert_eq!(placed.iter().all(|p| *p), accepted, "{placed:?}");
        assert_eq!(d.teardown_and_take(1), all_data(&pdus));
    }
}

/// An answer that takes effect after the framing it was about broke is ignored: the
/// device does not go back in sync on a framing it no longer follows.
#[test]
fn a_late_confirmation_is_ignored_once_the_framing_broke() {
    let mut d = device(
        EngineConfig {
            resync_answer_delay_pdus: 2,
            ..cfg()
        },
        false,
        true,
        None,
    );
    d.setup(1, 64 * 10);
    let pdus = small_pdus(10, 0, 2);
    feed(&mut d, &pdus, 0..1);
    assert_eq!(d.sock.pdu_header(0), ResyncAction::Confirmed(0));
    // PDU 1's header is lost: the segment after starts in its data.
    d.seg(pdus[1].1 + 30, &pdus[1].0[30..]);
    assert_eq!(d.state(), SyncState::Searching);
    let placed = feed(&mut d, &pdus, 2..5);
    assert!(placed.iter().all(|p| !p));
    assert_ne!(d.state(), SyncState::InSync);
    let diag = d.dev.diagnostics();
    assert_eq!((diag.resync_confirmed, diag.resync_ignored), (0, 1));
}

#[test]
fn a_corrupt_header_in_sync_counts_a_drop_and_searches_again() {
    let d = device(cfg(), true, false, Some(0));
    let mut wire = c2h(1, 0, &data(10, 1), true, false);
    wire[12] ^= 1; // DATAO, caught by the header digest
    d.seg(0, &wire);
    assert_eq!(d.dev.get_stats().rx_nvme_tcp_drop, 1);
    assert_eq!(d.state(), SyncState::Searching);
    assert_eq!(d.dev.diagnostics().bad_headers, 1);
}

#[test]
fn setup_enforces_the_limits_and_hands_the_io_back() {
    let mut d = device(
        EngineConfig {
            io_threshold: 4096,
            max_ddp_sgl_len: 2,
            ..EngineConfig::connectx7_like()
        },
        false,
        false,
        Some(0),
    );
    type IsExpected = fn(&DdpError) -> bool;
    let cases: Vec<(DdpIo, IsExpected)> = vec![
        (DdpIo::new(1, IoBuf::zeroed(100)), |e| {
            matches!(e, DdpError::BelowIoThreshold { .. })
        }),
        (DdpIo::new(1, IoBuf::zeroed_chunks(8192, 1000)), |e| {
            matches!(e, DdpError::SglTooLong { nents: 9, max: 2 })
        }),
        (DdpIo::new(32, IoBuf::zeroed(8192)), |e| {
            matches!(
                e,
                DdpError::CidOutOfRange {
                    cid: 32,
                    queue_size: 32
                }
            )
        }),
        (DdpIo::new(1, IoBuf::default()), |e| {
            matches!(e, DdpError::EmptySgl(1))
        }),
        (DdpIo::new(0x1_0000, IoBuf::zeroed(8192)), |e| {
            matches!(e, DdpError::CidTooWide(0x1_0000))
        }),
    ];
    let n = cases.len() as u64;
    for (io, is) in cases {
        let want = io.clone();
        let err = d.sock.setup(io).unwrap_err();
        assert!(is(&err.error), "{err}");
        assert_eq!(err.io, want);
    }
    d.sock.setup(DdpIo::new(31, IoBuf::zeroed(8192))).unwrap();
    let busy = d
        .sock
        .setup(DdpIo::new(31, IoBuf::zeroed(8192)))
        .unwrap_err();
    assert_eq!(busy.error, DdpError::CidBusy(31));
    assert!(d.dev.rx_socket(SockId(9)).is_none());
    assert!(!d.dev.on_segment(SockId(9), 0, &[0u8; 10]).ddp());
    assert_eq!(d.dev.diagnostics().unknown_socket_segments, 1);
    let st = d.dev.get_stats();
    assert_eq!(
        (st.rx_nvme_tcp_setup, st.rx_nvme_tcp_setup_fail),
        (1, n + 1)
    );
}

/// A command ID is free again only once the ULP took its `TeardownDone`: until then — the
/// device has not finished the teardown, or has but the event is not taken — setup is
/// refused with `CidBusy` and hands the I/O back.
#[test]
fn setup_of_a_cid_whose_teardown_done_was_not_taken_is_refused() {
    for mode in [
        TeardownMode::Immediate,
        TeardownMode::AfterPdus(2),
        TeardownMode::Deferred,
    ] {
        let mut d = device(
            EngineConfig {
                teardown: mode,
                ..cfg()
            },
            false,
            false,
            Some(0),
        );
        d.setup(5, 128);
        d.sock.teardown(5, DdpCtx(55)).unwrap();
        let busy = |d: &mut Dev, why: &str| {
            let io = DdpIo::new(5, IoBuf::zeroed(64));
            let err = d.sock.setup(io.clone()).unwrap_err();
            assert_eq!(err.error, DdpError::CidBusy(5), "{mode:?}: {why}");
            assert_eq!(err.io, io, "{mode:?}: the I/O comes back unchanged");
        };
        busy(&mut d, "teardown not finished");
        // The device passes PDU headers (completing an AfterPdus teardown) ...
        let mut seq = 0u32;
        for i in 0..3 {
            let w = c2h(9, 0, &data(16, i), false, false);
            d.seg(seq, &w);
            seq += w.len() as u32;
        }
        // ... and finishes whatever is deferred; the event is there, but not taken.
        let due = d.dev.flush_deferred();
        assert_eq!(due, usize::from(mode == TeardownMode::Deferred), "{mode:?}");
        assert_eq!(d.dev.pending_teardowns(), 0);
        busy(&mut d, "teardown_done not taken");
        let Some(DdpEvent::TeardownDone { ctx, io }) = d.sock.poll_event() else {
            panic!("{mode:?}: no teardown_done");
        };
        assert_eq!((ctx, io.command_id, io.buf.len()), (DdpCtx(55), 5, 128));
        assert!(d.sock.poll_event().is_none(), "{mode:?}: done once");
        // Taken: the command ID is free; the returned buffer serves the next I/O.
        d.sock.setup(io).unwrap();
        let st = d.dev.get_stats();
        assert_eq!(
            (st.rx_nvme_tcp_setup, st.rx_nvme_tcp_setup_fail),
            (2, 2),
            "{mode:?}"
        );
    }
}

#[test]
fn an_after_pdus_teardown_completes_after_that_many_pdu_headers() {
    let mut d = device(
        EngineConfig {
            teardown: TeardownMode::AfterPdus(3),
            ..cfg()
        },
        false,
        false,
        Some(0),
    );
    d.setup(1, 64);
    d.sock.teardown(1, DdpCtx(7)).unwrap();
    let mut seq = 0u32;
    for i in 0..3 {
        assert!(d.sock.poll_event().is_none(), "after {i} headers");
        assert_eq!(d.dev.pending_teardowns(), 1);
        let w = c2h(9, 0, &data(16, i), false, false);
        d.seg(seq, &w);
        seq += w.len() as u32;
    }
    assert_eq!(d.dev.pending_teardowns(), 0);
    assert!(matches!(
        d.sock.poll_event(),
        Some(DdpEvent::TeardownDone { ctx: DdpCtx(7), .. })
    ));
}

#[test]
fn full_ccid_range_takes_any_command_id() {
    let mut d = device(
        EngineConfig {
            full_ccid_range: true,
            ..cfg()
        },
        false,
        false,
        Some(0),
    );
    d.sock.setup(DdpIo::new(0xF00D, IoBuf::zeroed(64))).unwrap();
    let v = d.seg(0, &c2h(0xF00D, 0, &data(64, 1), false, false));
    assert_eq!(v.placed_bytes(), 64);
}

#[test]
fn sk_add_needs_the_nvme_tcp_capability_and_crc_needs_ddgst_rx() {
    let dev = SoftDdpDevice::new(EngineConfig {
        caps_active: CapSet::EMPTY,
        ..cfg()
    });
    let sk_cfg = SkConfig::nvme(
        0,
        Some(0),
        NvmeTcpDdpConfig {
            dgst: NvmeTcpDigests::from_bits(3),
            ..NvmeTcpDdpConfig::default()
        },
    );
    assert_eq!(
        dev.sk_add(SK, &sk_cfg).err(),
        Some(DdpError::CapInactive(Cap::NvmeTcp))
    );
    let out = caps_set(
        &dev,
        CapsSetRequest {
            wanted: CapSet::of(Cap::NvmeTcp),
            wanted_mask: CapSet::ALL,
        },
    )
    .unwrap();
    assert!(out.notify);
    assert_eq!(out.caps.active, CapSet::of(Cap::NvmeTcp));
    let again = caps_set(
        &dev,
        CapsSetRequest {
            wanted: CapSet::of(Cap::NvmeTcp),
            wanted_mask: CapSet::of(Cap::NvmeTcp),
        },
    )
    .unwrap();
    assert!(!again.notify, "no change, no notification");
    let mut sock = dev.sk_add(SK, &sk_cfg).unwrap();
    assert!(!sock.ddgst_offloaded());
    assert_eq!(
        dev.sk_add(SK, &sk_cfg).err(),
        Some(DdpError::SocketExists(SK))
    );
    sock.setup(DdpIo::new(1, IoBuf::zeroed(64))).unwrap();
    let v = dev.on_segment(SK, 0, &c2h(1, 0, &data(64, 1), true, true));
    assert_eq!(v.placed_bytes(), 64);
    assert!(!v.crc, "digest offload is off");
    let st = dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_sk_add, st.rx_nvme_tcp_sk_add_fail), (1, 2));
}

#[test]
fn sk_del_hands_back_outstanding_ios_and_pending_teardowns() {
    let mut d = device(
        EngineConfig {
            teardown: TeardownMode::Deferred,
            ..cfg()
        },
        false,
        false,
        Some(0),
    );
    d.setup(1, 64);
    d.setup(2, 64);
    d.setup(3, 64);
    d.sock.teardown(3, DdpCtx(3)).unwrap();
    let Dev { dev, sock, rx } = d;
    let mut ios: Vec<u32> = sock.sk_del().iter().map(|io| io.command_id).collect();
    ios.sort();
    assert_eq!(ios, [1, 2, 3]);
    let st = dev.get_stats();
    assert_eq!(
        (
            st.rx_nvme_tcp_setup,
            st.rx_nvme_tcp_teardown,
            st.rx_nvme_tcp_sk_del
        ),
        (3, 3, 1)
    );
    assert!(
        !rx.on_segment(0, &c2h(1, 0, &data(64, 1), false, false))
            .ddp()
    );
    assert!(dev.rx_socket(SK).is_none());
    assert_eq!(dev.pending_teardowns(), 0);
}

#[test]
fn dropping_the_socket_handle_deletes_the_context() {
    let mut d = device(cfg(), false, false, Some(0));
    d.setup(1, 64);
    let Dev { dev, sock, rx } = d;
    drop(sock);
    assert!(dev.rx_socket(SK).is_none());
    assert!(
        !rx.on_segment(0, &c2h(1, 0, &data(64, 1), false, false))
            .ddp()
    );
    let st = dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_teardown, st.rx_nvme_tcp_sk_del), (1, 1));
}

#[test]
fn deferred_teardown_completes_at_flush() {
    let mut d = device(
        EngineConfig {
            teardown: TeardownMode::Deferred,
            ..cfg()
        },
        false,
        false,
        Some(0),
    );
    d.setup(1, 64);
    d.sock.teardown(1, DdpCtx(42)).unwrap();
    assert!(d.sock.poll_event().is_none());
    assert_eq!(d.dev.pending_teardowns(), 1);
    // Passing PDUs does not complete it.
    d.seg(0, &c2h(9, 0, &data(16, 0), false, false));
    assert!(d.sock.poll_event().is_none());
    assert_eq!(d.dev.flush_deferred(), 1);
    assert!(matches!(
        d.sock.poll_event(),
        Some(DdpEvent::TeardownDone {
            ctx: DdpCtx(42),
            ..
        })
    ));
    assert_eq!(
        d.sock.teardown(1, DdpCtx(1)),
        Err(DdpError::UnknownCommand(1))
    );
}

#[test]
fn copy_to_io_fills_what_the_device_did_not_place() {
    let mut d = device(cfg(), false, false, Some(0));
    d.setup(1, 100);
    d.sock.copy_to_io(1, 90, &[7; 10]).unwrap();
    assert!(matches!(
        d.sock.copy_to_io(1, 95, &[7; 10]),
        Err(DdpError::OutOfBounds { .. })
    ));
    let mut read = Vec::new();
    d.sock
        .read_io(1, 88, 12, &mut |c| read.extend_from_slice(c))
        .unwrap();
    assert_eq!(read, [0, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
    let buf = d.teardown_and_take(1);
    assert_eq!(&buf[90..], &[7; 10]);
    assert_eq!(
        d.dev.get_stats().rx_nvme_tcp_bytes,
        0,
        "ULP copies are not placement"
    );
}

/// The 2 GiB fault: after a confirmed resync the device keeps offloading however long the
/// stream runs — past 2 GiB (where a sequence number compares as "before" one 2^31 bytes
/// earlier), past 4 GiB and past the wrap of the sequence space. Sans-IO and fast: each
/// 16 MiB unit is one large C2HData PDU for a command without buffers (nothing to copy or
/// checksum) and one 4 KiB PDU for the registered command, whose placement is checked.
#[test]
fn offload_continues_past_4_gib_of_stream_after_a_resync() {
    const UNIT_BIG: usize = 1 << 24; // one segment: header and data of the big PDU
    const SMALL: usize = 4096;
    const UNITS: u32 = 280; // 280 * (16 MiB + 4120) bytes ≈ 4.5 GB > 2^32
    let isn = 0xF000_0000u32;
    let mut d = device(cfg(), false, false, None);
    d.setup(1, SMALL);
    let mut big = vec![0u8; UNIT_BIG];
    let big_hdr = HeaderBuf::new(&DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::NONE,
        hdgst: false,
        ddgst: false,
        pda: 0,
        cccid: 2,
        ttag: 0,
        datao: 0,
        datal: (UNIT_BIG - 24) as u32,
    });
    big[..24].copy_from_slice(big_hdr.as_bytes());
    let mut seq = isn;
    let mut stream_bytes = 0u64;
    let mut placed = 0u64;
    for unit in 0..UNITS {
        // The ULP parses every header (as nvme-tcp reports each to the device).
        let v = d.seg(seq, &big);
        let big_at = seq;
        seq = seq.wrapping_add(UNIT_BIG as u32);
        let action = d.sock.pdu_header(big_at);
        if unit == 0 {
            // Added without a known PDU boundary: the first header is the candidate.
            assert_eq!(v.resync_request, Some(isn));
            assert_eq!(action, ResyncAction::Confirmed(isn));
            assert_eq!(d.state(), SyncState::InSync);
        } else {
            assert_eq!(action, ResyncAction::None, "unit {unit}");
        }
        let payload: Vec<u8> = (0..SMALL)
            .map(|i| (i as u32).wrapping_mul(7).wrapping_add(unit) as u8)
            .collect();
        let small = c2h(1, 0, &payload, false, false);
        let v = d.seg(seq, &small);
        assert_eq!(d.sock.pdu_header(seq), ResyncAction::None);
        assert!(
            v.is_placed(seq.wrapping_add(24), SMALL as u32),
            "unit {unit}: not placed {} bytes into the stream ({:?})",
            stream_bytes + UNIT_BIG as u64,
            d.dev.flow_info(SK)
        );
        assert_eq!(
            d.dev.peek_io(SK, 1).as_deref(),
            Some(&payload[..]),
            "unit {unit}"
        );
        placed += v.placed_bytes();
        seq = seq.wrapping_add(small.len() as u32);
        stream_bytes += (UNIT_BIG + small.len()) as u64;
    }
    assert!(stream_bytes > 1 << 32, "{stream_bytes}");
    assert_eq!(placed, u64::from(UNITS) * SMALL as u64);
    let diag = d.dev.diagnostics();
    assert_eq!((diag.lost_sync, diag.resync_confirmed), (0, 1));
    assert_eq!(d.state(), SyncState::InSync);
}
