//! Behaviour of the software device, one rule per test.

use ddp_engine::{EngineConfig, SoftDdpDevice, SyncState, TeardownMode};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use std::sync::{Arc, Mutex};
use ulp_ddp::{
    Cap, CapSet, CapsSetRequest, DdpCtx, DdpError, DdpIo, NvmeTcpDdpConfig, NvmeTcpDigests,
    ResyncFlags, SgList, SkConfig, SockId, UlpDdpDevice, UlpDdpOps, caps_set,
};

#[derive(Default)]
struct Ulp {
    requests: Mutex<Vec<u32>>,
    done: Mutex<Vec<(DdpCtx, DdpIo)>>,
}

impl UlpDdpOps for Ulp {
    fn resync_request(&self, _sk: SockId, seq: u32, flags: ResyncFlags) -> bool {
        assert!(flags.contains(ResyncFlags::PENDING));
        self.requests.lock().unwrap().push(seq);
        true
    }
    fn teardown_done(&self, ctx: DdpCtx, io: DdpIo) {
        self.done.lock().unwrap().push((ctx, io));
    }
}

const SK: SockId = SockId(1);

fn cfg() -> EngineConfig {
    EngineConfig {
        io_threshold: 0,
        ..EngineConfig::connectx7_like()
    }
}

fn device(
    cfg: EngineConfig,
    hdgst: bool,
    ddgst: bool,
    isn: Option<u32>,
) -> (SoftDdpDevice, Arc<Ulp>) {
    let mut dev = SoftDdpDevice::new(cfg);
    let ulp = Arc::new(Ulp::default());
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
    dev.sk_add(SK, &sk_cfg, ulp.clone()).unwrap();
    (dev, ulp)
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

fn setup(dev: &mut SoftDdpDevice, cid: u16, len: usize) {
    dev.setup(SK, DdpIo::new(cid, SgList::zeroed_chunks(len, 4096)))
        .unwrap();
}

fn teardown_and_take(dev: &mut SoftDdpDevice, ulp: &Ulp, cid: u16) -> Vec<u8> {
    dev.teardown(SK, cid, DdpCtx(u64::from(cid))).unwrap();
    dev.poll_teardowns();
    let (ctx, io) = ulp.done.lock().unwrap().pop().unwrap();
    assert_eq!(ctx, DdpCtx(u64::from(cid)));
    io.sgl.to_vec()
}

#[test]
fn places_payload_at_datao_and_verifies_the_digest() {
    let (mut dev, ulp) = device(cfg(), true, true, Some(100));
    setup(&mut dev, 3, 8192);
    let d = data(4096, 1);
    let wire = c2h(3, 4096, &d, true, true);
    let v = dev.on_segment(SK, 100, &wire);
    assert!(v.is_placed(100 + 28, 4096));
    assert!(v.crc);
    assert_eq!(v.digests_verified, 1);
    let buf = teardown_and_take(&mut dev, &ulp, 3);
    assert_eq!(&buf[4096..], &d[..]);
    assert!(buf[..4096].iter().all(|b| *b == 0));
    let st = dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_packets, st.rx_nvme_tcp_bytes), (1, 4096));
}

#[test]
fn headers_and_digests_split_at_every_byte_are_still_offloaded() {
    let d = data(300, 2);
    for hdgst in [false, true] {
        let wire = c2h(1, 0, &d, hdgst, true);
        let (mut dev, ulp) = device(cfg(), hdgst, true, Some(u32::MAX - 5));
        setup(&mut dev, 1, 300);
        let mut placed = 0;
        let mut all_crc = true;
        for (i, b) in wire.iter().enumerate() {
            let v = dev.on_segment(
                SK,
                (u32::MAX - 5).wrapping_add(i as u32),
                std::slice::from_ref(b),
            );
            placed += v.placed_bytes();
            all_crc &= v.crc;
        }
        assert_eq!(placed, 300);
        assert!(all_crc, "every one-byte segment keeps the crc bit");
        assert_eq!(dev.diagnostics().ddgst_ok, 1);
        assert_eq!(teardown_and_take(&mut dev, &ulp, 1), d);
    }
}

#[test]
fn a_bad_data_digest_is_reported_and_never_verified() {
    let (mut dev, _ulp) = device(cfg(), false, true, Some(0));
    setup(&mut dev, 1, 512);
    let mut wire = c2h(1, 0, &data(512, 3), false, true);
    let n = wire.len();
    wire[n - 1] ^= 0x80;
    let v = dev.on_segment(SK, 0, &wire);
    assert!(!v.crc);
    assert_eq!((v.digests_verified, v.digests_failed), (0, 1));
    assert_eq!(dev.diagnostics().ddgst_bad, 1);
    // Placement does not depend on the digest: the ULP checks it in software.
    assert_eq!(v.placed_bytes(), 512);
}

#[test]
fn a_pdu_that_would_overflow_the_buffers_is_not_placed_at_all() {
    let (mut dev, _ulp) = device(cfg(), false, false, Some(0));
    setup(&mut dev, 1, 1000);
    let v = dev.on_segment(SK, 0, &c2h(1, 600, &data(500, 4), false, false));
    assert!(!v.ddp());
    assert_eq!(dev.get_stats().rx_nvme_tcp_bytes, 0);
}

#[test]
fn nothing_is_placed_for_a_command_after_its_teardown() {
    let (mut dev, ulp) = device(cfg(), false, false, Some(0));
    setup(&mut dev, 1, 2000);
    let wire = c2h(1, 0, &data(2000, 5), false, false);
    let v = dev.on_segment(SK, 0, &wire[..1000]);
    assert_eq!(v.placed_bytes(), 1000 - 24);
    dev.teardown(SK, 1, DdpCtx(1)).unwrap();
    // A new I/O with the same command ID does not receive the old PDU's rest either.
    setup(&mut dev, 1, 2000);
    let v = dev.on_segment(SK, 1000, &wire[1000..]);
    assert!(!v.ddp());
    assert_eq!(teardown_and_take(&mut dev, &ulp, 1), vec![0u8; 2000]);
}

#[test]
fn a_duplicate_segment_passes_through_without_placement_or_crc() {
    let (mut dev, _ulp) = device(cfg(), false, true, Some(0));
    setup(&mut dev, 1, 4000);
    let wire = c2h(1, 0, &data(4000, 6), false, true);
    let v1 = dev.on_segment(SK, 0, &wire[..1448]);
    assert!(v1.ddp() && v1.crc);
    let dup = dev.on_segment(SK, 0, &wire[..1448]);
    assert!(!dup.ddp() && !dup.crc);
    // A retransmission overlapping old and new bytes: only the new bytes are processed,
    // and the crc bit is off (part of the segment was not fed to the digest).
    let v2 = dev.on_segment(SK, 1000, &wire[1000..2896]);
    assert!(v2.is_placed(1448, 2896 - 1448));
    assert!(!v2.is_placed(1000, 1));
    assert!(!v2.crc);
    let v3 = dev.on_segment(SK, 2896, &wire[2896..]);
    assert!(
        v3.crc,
        "the PDU's digest was still computed over every byte once"
    );
    assert_eq!(v3.digests_verified, 1);
    assert_eq!(dev.diagnostics().partial_segments, 1);
}

#[test]
fn a_lost_data_only_segment_keeps_framing() {
    let (mut dev, ulp) = device(cfg(), false, true, Some(0));
    setup(&mut dev, 1, 4000);
    setup(&mut dev, 2, 100);
    let mut wire = c2h(1, 0, &data(4000, 7), false, true);
    let second_at = wire.len() as u32;
    wire.extend(c2h(2, 0, &data(100, 8), false, true));
    dev.on_segment(SK, 0, &wire[..1000]);
    // 1000..2000 lost.
    let v = dev.on_segment(SK, 2000, &wire[2000..]);
    assert_eq!(dev.sync_state(SK), Some(SyncState::InSync));
    assert!(
        !v.crc,
        "the first PDU lost bytes: its digest cannot be verified"
    );
    assert!(v.is_placed(second_at + 24, 100));
    assert!(ulp.requests.lock().unwrap().is_empty(), "no resync needed");
    // The retransmission is old for the device: the ULP copies it itself.
    let r = dev.on_segment(SK, 1000, &wire[1000..2000]);
    assert!(!r.ddp() && !r.crc);
}

#[test]
fn a_lost_header_costs_framing_until_the_ulp_confirms_a_resync() {
    let (mut dev, ulp) = device(cfg(), false, true, Some(0));
    for cid in 1..=3 {
        setup(&mut dev, cid, 1000);
    }
    let p1 = c2h(1, 0, &data(1000, 1), false, true);
    let p2 = c2h(2, 0, &data(1000, 2), false, true);
    let p3 = c2h(3, 0, &data(1000, 3), false, true);
    let (a, b) = (p1.len() as u32, (p1.len() + p2.len()) as u32);
    // The segment holding p1's end and p2's header is lost: the next one starts in p2's data.
    let v = dev.on_segment(SK, a + 100, &p2[100..]);
    assert!(!v.ddp());
    assert_eq!(dev.sync_state(SK), Some(SyncState::Searching));
    assert_eq!(dev.get_stats().rx_nvme_tcp_resync, 0);
    // p3's header arrives: a candidate; the device asks the ULP.
    let v = dev.on_segment(SK, b, &p3[..500]);
    assert!(!v.ddp());
    assert_eq!(v.resync_request, Some(b));
    assert_eq!(*ulp.requests.lock().unwrap(), vec![b]);
    assert_eq!(
        dev.sync_state(SK),
        Some(SyncState::ResyncPending { seq: Some(b) })
    );
    // A wrong confirmation is ignored.
    dev.resync(SK, b + 1);
    assert_eq!(dev.diagnostics().resync_ignored, 1);
    dev.resync(SK, b);
    assert_eq!(dev.sync_state(SK), Some(SyncState::InSync));
    // The PDU in progress stays un-offloaded; the next one is offloaded again.
    let v = dev.on_segment(SK, b + 500, &p3[500..]);
    assert!(!v.ddp() && !v.crc);
    let p4 = c2h(1, 0, &data(10, 4), false, true);
    let end3 = b + p3.len() as u32;
    dev.teardown(SK, 1, DdpCtx(1)).unwrap();
    setup(&mut dev, 1, 1000);
    let v = dev.on_segment(SK, end3, &p4);
    assert!(v.is_placed(end3 + 24, 10) && v.crc);
    assert_eq!(dev.get_stats().rx_nvme_tcp_resync, 1);
}

#[test]
fn a_confirmation_for_a_replaced_request_is_ignored() {
    let (mut dev, ulp) = device(cfg(), false, false, None);
    let mut wire = Vec::new();
    for i in 0..3u16 {
        wire.extend(c2h(i, 0, &data(40, i as u8), false, false));
    }
    dev.on_segment(SK, 500, &wire);
    let reqs = ulp.requests.lock().unwrap().clone();
    assert_eq!(
        reqs,
        vec![500, 500 + 64, 500 + 128],
        "one request per header reached"
    );
    dev.resync(SK, 500);
    assert_ne!(dev.sync_state(SK), Some(SyncState::InSync));
    dev.resync(SK, 500 + 128);
    assert_eq!(dev.sync_state(SK), Some(SyncState::InSync));
}

#[test]
fn a_corrupt_header_in_sync_counts_a_drop_and_searches_again() {
    let (mut dev, _ulp) = device(cfg(), true, false, Some(0));
    let mut wire = c2h(1, 0, &data(10, 1), true, false);
    wire[12] ^= 1; // DATAO, caught by the header digest
    dev.on_segment(SK, 0, &wire);
    assert_eq!(dev.get_stats().rx_nvme_tcp_drop, 1);
    assert_eq!(dev.sync_state(SK), Some(SyncState::Searching));
    assert_eq!(dev.diagnostics().bad_headers, 1);
}

#[test]
fn setup_enforces_the_limits_and_hands_the_io_back() {
    let (mut dev, _ulp) = device(
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
        (DdpIo::new(1, SgList::zeroed(100)), |e| {
            matches!(e, DdpError::BelowIoThreshold { .. })
        }),
        (DdpIo::new(1, SgList::zeroed_chunks(8192, 1000)), |e| {
            matches!(e, DdpError::SglTooLong { nents: 9, max: 2 })
        }),
        (DdpIo::new(32, SgList::zeroed(8192)), |e| {
            matches!(
                e,
                DdpError::CidOutOfRange {
                    cid: 32,
                    queue_size: 32
                }
            )
        }),
        (DdpIo::new(1, SgList::default()), |e| {
            matches!(e, DdpError::EmptySgl(1))
        }),
    ];
    let n = cases.len() as u64;
    for (io, is) in cases {
        let want = io.clone();
        let err = dev.setup(SK, io).unwrap_err();
        assert!(is(&err.error), "{err}");
        assert_eq!(err.io, want);
    }
    dev.setup(SK, DdpIo::new(31, SgList::zeroed(8192))).unwrap();
    let busy = dev
        .setup(SK, DdpIo::new(31, SgList::zeroed(8192)))
        .unwrap_err();
    assert_eq!(busy.error, DdpError::CidBusy(31));
    let unknown = dev
        .setup(SockId(9), DdpIo::new(1, SgList::zeroed(8192)))
        .unwrap_err();
    assert_eq!(unknown.error, DdpError::UnknownSocket(SockId(9)));
    let st = dev.get_stats();
    assert_eq!(
        (st.rx_nvme_tcp_setup, st.rx_nvme_tcp_setup_fail),
        (1, n + 2)
    );
}

#[test]
fn full_ccid_range_takes_any_command_id() {
    let (mut dev, _ulp) = device(
        EngineConfig {
            full_ccid_range: true,
            ..cfg()
        },
        false,
        false,
        Some(0),
    );
    dev.setup(SK, DdpIo::new(0xF00D, SgList::zeroed(64)))
        .unwrap();
    let v = dev.on_segment(SK, 0, &c2h(0xF00D, 0, &data(64, 1), false, false));
    assert_eq!(v.placed_bytes(), 64);
}

#[test]
fn sk_add_needs_the_nvme_tcp_capability_and_crc_needs_ddgst_rx() {
    let mut dev = SoftDdpDevice::new(EngineConfig {
        caps_active: CapSet::EMPTY,
        ..cfg()
    });
    let ulp: Arc<dyn UlpDdpOps> = Arc::new(Ulp::default());
    let sk_cfg = SkConfig::nvme(
        0,
        Some(0),
        NvmeTcpDdpConfig {
            dgst: NvmeTcpDigests::from_bits(3),
            ..NvmeTcpDdpConfig::default()
        },
    );
    assert_eq!(
        dev.sk_add(SK, &sk_cfg, ulp.clone()),
        Err(DdpError::CapInactive(Cap::NvmeTcp))
    );
    let out = caps_set(
        &mut dev,
        CapsSetRequest {
            wanted: CapSet::of(Cap::NvmeTcp),
            wanted_mask: CapSet::ALL,
        },
    )
    .unwrap();
    assert!(out.notify);
    assert_eq!(out.caps.active, CapSet::of(Cap::NvmeTcp));
    let again = caps_set(
        &mut dev,
        CapsSetRequest {
            wanted: CapSet::of(Cap::NvmeTcp),
            wanted_mask: CapSet::of(Cap::NvmeTcp),
        },
    )
    .unwrap();
    assert!(!again.notify, "no change, no notification");
    dev.sk_add(SK, &sk_cfg, ulp.clone()).unwrap();
    assert_eq!(
        dev.sk_add(SK, &sk_cfg, ulp),
        Err(DdpError::SocketExists(SK))
    );
    dev.setup(SK, DdpIo::new(1, SgList::zeroed(64))).unwrap();
    let v = dev.on_segment(SK, 0, &c2h(1, 0, &data(64, 1), true, true));
    assert_eq!(v.placed_bytes(), 64);
    assert!(!v.crc, "digest offload is off");
    let st = dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_sk_add, st.rx_nvme_tcp_sk_add_fail), (1, 2));
}

#[test]
fn sk_del_hands_back_outstanding_ios_as_teardowns() {
    let (mut dev, _ulp) = device(cfg(), false, false, Some(0));
    setup(&mut dev, 1, 64);
    setup(&mut dev, 2, 64);
    let ios = dev.sk_del(SK);
    assert_eq!(ios.len(), 2);
    let st = dev.get_stats();
    assert_eq!(
        (
            st.rx_nvme_tcp_setup,
            st.rx_nvme_tcp_teardown,
            st.rx_nvme_tcp_sk_del
        ),
        (2, 2, 1)
    );
    assert!(!dev.on_segment(SK, 0, &[0u8; 10]).ddp());
}

#[test]
fn deferred_teardown_completes_on_poll() {
    let (mut dev, ulp) = device(
        EngineConfig {
            teardown: TeardownMode::Deferred,
            ..cfg()
        },
        false,
        false,
        Some(0),
    );
    setup(&mut dev, 1, 64);
    dev.teardown(SK, 1, DdpCtx(42)).unwrap();
    assert!(ulp.done.lock().unwrap().is_empty());
    assert_eq!(dev.pending_teardowns(), 1);
    assert_eq!(dev.poll_teardowns(), 1);
    assert_eq!(ulp.done.lock().unwrap()[0].0, DdpCtx(42));
    assert_eq!(
        dev.teardown(SK, 1, DdpCtx(1)),
        Err(DdpError::UnknownCommand(1))
    );
}

#[test]
fn copy_to_io_fills_what_the_device_did_not_place() {
    let (mut dev, ulp) = device(cfg(), false, false, Some(0));
    setup(&mut dev, 1, 100);
    dev.copy_to_io(SK, 1, 90, &[7; 10]).unwrap();
    assert!(matches!(
        dev.copy_to_io(SK, 1, 95, &[7; 10]),
        Err(DdpError::OutOfBounds { .. })
    ));
    let buf = teardown_and_take(&mut dev, &ulp, 1);
    assert_eq!(&buf[90..], &[7; 10]);
    assert_eq!(
        dev.get_stats().rx_nvme_tcp_bytes,
        0,
        "ULP copies are not placement"
    );
}
