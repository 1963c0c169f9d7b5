//! Per-segment processing never allocates: a counting global allocator watches
//! `on_segment` in every state (in sync with placement and digests, after a gap, while
//! searching, while a resync is pending, on duplicates and overlaps), together with what
//! the ULP does per PDU (`pdu_header`, `teardown`, `poll_event`, `setup` with the buffer
//! that came back), with and without delayed resync answers and teardowns.

use ddp_engine::{EngineConfig, SoftDdpDevice, SyncState, TeardownMode};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use ulp_ddp::{
    DdpCtx, DdpEvent, DdpIo, IoBuf, NvmeTcpDdpConfig, NvmeTcpDigests, SkConfig, SockId,
    UlpDdpDevice,
};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

fn c2h(cid: u16, data: &[u8]) -> Vec<u8> {
    let repr = DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU,
        hdgst: true,
        ddgst: true,
        pda: 0,
        cccid: cid,
        ttag: 0,
        datao: 0,
        datal: data.len() as u32,
    };
    let mut v = HeaderBuf::new(&repr).as_bytes().to_vec();
    v.extend_from_slice(data);
    v.extend_from_slice(&crc32c(data).to_le_bytes());
    v
}

/// Feeds eight 128 KiB reads through one socket, with losses (of data and of headers),
/// duplicates and overlaps; the ULP confirms resync requests at the requested header, and
/// tears each I/O down and sets it up again with the very buffer it got back. Counts the
/// allocations of everything on the per-segment path: `on_segment`, `pdu_header`,
/// `teardown`, `poll_event`, `setup`.
fn run_without_allocating(teardown: TeardownMode, answer_delay: u32) {
    let sk = SockId(1);
    let dev = SoftDdpDevice::new(EngineConfig {
        teardown,
        resync_answer_delay_pdus: answer_delay,
        ..EngineConfig::connectx7_like()
    });
    let mut sock = dev
        .sk_add(
            sk,
            &SkConfig::nvme(
                0,
                Some(0),
                NvmeTcpDdpConfig {
                    dgst: NvmeTcpDigests::from_bits(3),
                    ..NvmeTcpDdpConfig::default()
                },
            ),
        )
        .unwrap();
    let rx = dev.rx_socket(sk).unwrap();
    let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i * 7) as u8).collect();
    let mut stream = Vec::new();
    let mut starts = Vec::new();
    for cid in 0..8u16 {
        starts.push(stream.len());
        sock.setup(DdpIo::new(
            u32::from(cid),
            IoBuf::zeroed_chunks(data.len(), 4096),
        ))
        .unwrap();
        stream.extend(c2h(cid, &data));
    }
    let mss = 1448;
    let mut done_pdus = 0usize;
    let mut pos = 0usize;
    let mut k = 0u32;
    let mut placed = 0u64;
    // Only this thread is counted: the harness's other threads may allocate at any moment.
    let ((), allocs) = alloc_count::on_this_thread(|| {
        while pos < stream.len() {
            let end = (pos + mss).min(stream.len());
            k += 1;
            // Every 97th segment is lost, and those holding the headers of PDUs 3 and 6;
            // every 31st is duplicated, every 53rd overlaps its predecessor.
            let header_lost = [3, 6].iter().any(|&i| (pos..end).contains(&starts[i]));
            if !k.is_multiple_of(97) && !header_lost {
                let v = rx.on_segment(pos as u32, &stream[pos..end]);
                placed += v.placed_bytes();
            }
            if k.is_multiple_of(31) {
                rx.on_segment(pos as u32, &stream[pos..end]);
            }
            if k.is_multiple_of(53) && pos > 100 {
                rx.on_segment((pos - 100) as u32, &stream[pos - 100..end]);
            }
            // The ULP parses the header the device asked about.
            if let Some(SyncState::ResyncPending { seq: Some(s) }) = dev.sync_state(sk) {
                sock.pdu_header(s);
            }
            // A PDU ended: its I/O is torn down; the buffer that comes back serves again.
            while done_pdus < starts.len()
                && starts.get(done_pdus + 1).copied().unwrap_or(stream.len()) <= end
            {
                sock.teardown(done_pdus as u32, DdpCtx(done_pdus as u64))
                    .unwrap();
                done_pdus += 1;
            }
            while let Some(DdpEvent::TeardownDone { io, .. }) = sock.poll_event() {
                sock.setup(io).unwrap();
            }
            pos = end;
        }
    });
    assert!(alloc_count::installed());
    assert_eq!(allocs, 0, "{teardown:?}, delay {answer_delay}: allocated");
    let d = dev.diagnostics();
    assert!(
        placed > 0 && d.lost_sync > 0 && d.resync_confirmed > 0 && d.old_segments > 0,
        "{d:?}"
    );
    // Teardowns still due come back at the flush; every I/O was set up again.
    dev.flush_deferred();
    while let Some(DdpEvent::TeardownDone { io, .. }) = sock.poll_event() {
        sock.setup(io).unwrap();
    }
    assert_eq!(dev.get_stats().rx_nvme_tcp_setup, 16);
}

#[test]
fn per_segment_processing_does_not_allocate() {
    run_without_allocating(TeardownMode::Immediate, 0);
    // (An answer 2 PDUs late would land after PDU 6's lost header: ignored, as it must be.)
    run_without_allocating(TeardownMode::AfterPdus(2), 1);
}
