//! The offload path does not allocate per I/O: reads whose buffers are lent to the software
//! offload device (setup), placed by it from the segments it sees, skipped by the host's
//! receive path through the marks, torn down and handed back (teardown_done) make no heap
//! allocation once warmed up — neither in the host's queue core nor in the device.

use std::sync::Arc;
use std::time::Instant;

use ddp_engine::{EngineConfig, SoftDdpDevice, TeardownMode};
use nvme_tcp_host::queue::{QueueConfig, QueueCore};
use nvme_tcp_host::{CidMode, DdpNetdev, IoBuf, PlacedRange, RxMarks, cmd};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{CapsuleRespRepr, DataPduRepr, HeaderBuf, IcRespRepr, PduFlags, PduType};
use ulp_ddp::{SockId, UlpDdpDevice};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

const ISN: u32 = 0xFFFF_0000;
const LEN: usize = 128 << 10;
const MSS: usize = 8960;

/// The controller's answer to a read on `cid`: C2HData (with data digest) + CapsuleResp.
fn answer(cid: u16, data: &[u8]) -> Vec<u8> {
    let hdr = HeaderBuf::new(&DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU,
        hdgst: false,
        ddgst: true,
        pda: 0,
        cccid: cid,
        ttag: 0,
        datao: 0,
        datal: data.len() as u32,
    });
    let mut s = hdr.as_bytes().to_vec();
    s.extend_from_slice(data);
    s.extend_from_slice(&crc32c(data).to_le_bytes());
    let mut cqe = [0u8; 16];
    cqe[12..14].copy_from_slice(&cid.to_le_bytes());
    s.extend_from_slice(HeaderBuf::new(&CapsuleRespRepr { hdgst: false, cqe }).as_bytes());
    s
}

#[test]
fn offloaded_reads_make_no_heap_allocation_per_io() {
    for mode in [TeardownMode::Immediate, TeardownMode::AfterPdus(2)] {
        let dev = SoftDdpDevice::new(EngineConfig {
            teardown: mode,
            ..EngineConfig::default()
        });
        let shared: Arc<dyn UlpDdpDevice> = Arc::new(dev.clone());
        let netdev = DdpNetdev::probe(&shared, false).unwrap();
        let mut q = QueueCore::new(QueueConfig {
            qid: 1,
            queue_size: 8,
            hdgst: false,
            ddgst: true,
            cid_mode: CidMode::Linear,
            in_capsule_max: 0,
        });
        let n = q.tx_pending().len();
        q.tx_consumed(n);
        let icresp = IcRespRepr {
            pfv: 0,
            cpda: 0,
            hdgst_enable: false,
            ddgst_enable: true,
            maxh2cdata: 131072,
        };
        q.rx_feed(HeaderBuf::new(&icresp).as_bytes()).unwrap();
        q.set_live();
        q.attach_offload(&netdev, SockId(1), Some(ISN), 0).unwrap();
        let rx = dev.rx_socket(SockId(1)).unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + 3) as u8).collect();
        // Answers per CID, built before measuring (the "controller" is not under test).
        let answers: Vec<Vec<u8>> = (0..8u16).map(|c| answer(c, &data)).collect();
        let mut bufs: Vec<IoBuf> = (0..4).map(|_| IoBuf::zeroed(LEN)).collect();
        let mut placed: Vec<PlacedRange> = Vec::with_capacity(ddp_engine::MAX_PLACED_RANGES);
        let run = |q: &mut QueueCore,
                   rounds: u64,
                   bufs: &mut Vec<IoBuf>,
                   placed: &mut Vec<PlacedRange>| {
            for i in 0..rounds {
                let buf = bufs.pop().expect("a free buffer");
                let req = cmd::read(1, 0, (LEN / 512) as u32, buf, i);
                let cid = q.submit(req, Instant::now()).expect("a free slot");
                let tx = q.tx_pending().len();
                q.tx_consumed(tx);
                let s = &answers[usize::from(cid)];
                let mut off = 0;
                while off < s.len() {
                    let seg = &s[off..(off + MSS).min(s.len())];
                    let at = q.rx_position();
                    let seq = ISN.wrapping_add(at as u32);
                    let v = rx.on_segment(seq, seg);
                    placed.clear();
                    placed.extend(v.placed().iter().map(|r| PlacedRange {
                        start: at + u64::from(r.seq.wrapping_sub(seq)),
                        len: r.len,
                    }));
                    q.rx_feed_marked(seg, &RxMarks { crc: v.crc, placed })
                        .unwrap();
                    off += seg.len();
                }
                while q.in_flight() > 0 && q.completions_ready() == 0 {
                    // A teardown delayed by PDUs: the NIC catches up when the stream idles.
                    dev.flush_deferred();
                    q.poll_offload();
                }
                let c = q.pop_completion().expect("completed");
                assert!(c.result.is_ok(), "{:?}", c.result);
                bufs.push(c.buf.expect("buffer back"));
            }
        };
        run(&mut q, 16, &mut bufs, &mut placed);
        let st = q.stats();
        assert_eq!(st.rx_copied_bytes, 0, "all placed by the device");
        assert_eq!(
            st.rx_digested_bytes, 0,
            "all digests verified by the device"
        );
        // Only this thread is counted: the harness's other threads may allocate at any moment.
        let ((), allocs) = alloc_count::on_this_thread(|| run(&mut q, 512, &mut bufs, &mut placed));
        assert!(alloc_count::installed());
        assert_eq!(
            allocs, 0,
            "{mode:?}: {allocs} allocations in 512 offloaded reads"
        );
        assert_eq!(q.stats().ddp_setups, 16 + 512);
        let last = bufs.last().map(IoBuf::to_vec);
        assert!(
            last.as_deref() == Some(&data[..]),
            "the last read's data is the stream's"
        );
        q.detach_offload();
    }
}
