//! Per-segment processing never allocates: a counting global allocator watches
//! `on_segment` in every state (in sync with placement and digests, after a gap, while
//! searching, while a resync is pending, on duplicates and overlaps).
//!
//! The allocator is the only `unsafe` in the crate's tests: implementing `GlobalAlloc`
//! requires it; it forwards to the system allocator unchanged.

use ddp_engine::{EngineConfig, SoftDdpDevice};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use ulp_ddp::{
    DdpCtx, DdpIo, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncFlags, ResyncTracker, SgList, SkConfig,
    SockId, UlpDdpDevice, UlpDdpOps,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` with the same arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Ulp(ResyncTracker);

impl UlpDdpOps for Ulp {
    fn resync_request(&self, _sk: SockId, seq: u32, flags: ResyncFlags) -> bool {
        self.0.request(seq, flags)
    }
    fn teardown_done(&self, _ctx: DdpCtx, _io: DdpIo) {}
}

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

#[test]
fn on_segment_does_not_allocate_in_any_state() {
    let sk = SockId(1);
    let mut dev = SoftDdpDevice::new(EngineConfig::connectx7_like());
    dev.sk_add(
        sk,
        &SkConfig::nvme(
            0,
            Some(0),
            NvmeTcpDdpConfig {
                dgst: NvmeTcpDigests::from_bits(3),
                ..NvmeTcpDdpConfig::default()
            },
        ),
        Arc::new(Ulp(ResyncTracker::new())),
    )
    .unwrap();
    let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i * 7) as u8).collect();
    let mut stream = Vec::new();
    let mut starts = Vec::new();
    for cid in 0..8u16 {
        starts.push(stream.len());
        dev.setup(sk, DdpIo::new(cid, SgList::zeroed_chunks(data.len(), 4096)))
            .unwrap();
        stream.extend(c2h(cid, &data));
    }
    let mss = 1448;
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut pos = 0usize;
    let mut k = 0u32;
    let mut placed = 0u64;
    while pos < stream.len() {
        let end = (pos + mss).min(stream.len());
        k += 1;
        // Every 97th segment is lost, and those holding the headers of PDUs 3 and 6;
        // every 31st is duplicated, every 53rd overlaps its predecessor.
        let header_lost = [3, 6].iter().any(|&i| (pos..end).contains(&starts[i]));
        if !k.is_multiple_of(97) && !header_lost {
            let v = dev.on_segment(sk, pos as u32, &stream[pos..end]);
            placed += v.placed_bytes();
        }
        if k.is_multiple_of(31) {
            dev.on_segment(sk, pos as u32, &stream[pos..end]);
        }
        if k.is_multiple_of(53) && pos > 100 {
            dev.on_segment(sk, (pos - 100) as u32, &stream[pos - 100..end]);
        }
        if let Some(s) = dev.flow_info(sk).and_then(|i| match i.state {
            ddp_engine::SyncState::ResyncPending { seq } => seq,
            _ => None,
        }) {
            dev.resync(sk, s);
        }
        pos = end;
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "on_segment allocated");
    let d = dev.diagnostics();
    assert!(
        placed > 0 && d.lost_sync > 0 && d.resync_confirmed > 0 && d.old_segments > 0,
        "{d:?}"
    );
}
