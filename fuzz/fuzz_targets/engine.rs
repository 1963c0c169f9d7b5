//! Fuzzes the software DDP device with arbitrary operation schedules: segments cut from a
//! stream of (mostly) well-formed C2H PDUs or made of raw bytes, at any sequence number;
//! setups and teardowns of arbitrary command IDs; right, wrong and late resync
//! confirmations; ULP copies; deferred teardown completions.
//!
//! Checks, besides "no panic": every placed range lies inside its segment; the placed
//! bytes are in the registered buffer of the command whose PDU they belong to... as far as
//! the device reports it: a placed range never exceeds the segment, the counters equal
//! the verdicts, buffers come back with the length they were registered with, each
//! teardown completes exactly once, and setup == teardown once everything is torn down.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run engine -- -max_total_time=120`

#![no_main]

use arbitrary::Arbitrary;
use ddp_engine::{EngineConfig, SoftDdpDevice, TeardownMode};
use libfuzzer_sys::fuzz_target;
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use ulp_ddp::{
    DdpCtx, DdpIo, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncAction, ResyncFlags, ResyncTracker,
    SgList, SkConfig, SockId, UlpDdpDevice, UlpDdpOps,
};

#[derive(Arbitrary, Debug)]
struct Input {
    hdgst: bool,
    ddgst: bool,
    cpda: u8,
    full_ccid_range: bool,
    deferred: bool,
    in_sync: bool,
    isn: u32,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Append a C2HData PDU (valid unless `corrupt`) to the stream.
    Pdu {
        cid: u8,
        datao: u16,
        datal: u16,
        last: bool,
        corrupt: Option<(u16, u8)>,
    },
    /// Append raw bytes to the stream.
    Raw(Vec<u8>),
    /// Send stream bytes `start .. start + len` (modulo the stream).
    Send {
        start: u16,
        len: u16,
    },
    /// Send raw bytes at any sequence number.
    SendRaw {
        seq: u32,
        bytes: Vec<u8>,
    },
    Setup {
        cid: u8,
        len: u16,
        nents: u8,
    },
    Teardown {
        cid: u8,
    },
    /// Answer a pending request the way a host does (only at an exact header).
    HostConfirm {
        header: u16,
    },
    /// Confirm anything.
    Resync(u32),
    CopyToIo {
        cid: u8,
        offset: u16,
        len: u16,
    },
    Poll,
}

#[derive(Default)]
struct Ulp {
    tracker: ResyncTracker,
    done: Mutex<Vec<(DdpCtx, DdpIo)>>,
}

impl UlpDdpOps for Ulp {
    fn resync_request(&self, _sk: SockId, seq: u32, flags: ResyncFlags) -> bool {
        self.tracker.request(seq, flags)
    }
    fn teardown_done(&self, ctx: DdpCtx, io: DdpIo) {
        if let Ok(mut d) = self.done.lock() {
            d.push((ctx, io));
        }
    }
}

fuzz_target!(|input: Input| {
    let sk = SockId(1);
    let mut dev = SoftDdpDevice::new(EngineConfig {
        io_threshold: 0,
        max_ddp_sgl_len: 8,
        full_ccid_range: input.full_ccid_range,
        teardown: if input.deferred {
            TeardownMode::Deferred
        } else {
            TeardownMode::Immediate
        },
        ..EngineConfig::connectx7_like()
    });
    let ulp = Arc::new(Ulp::default());
    let cfg = SkConfig::nvme(
        0,
        input.in_sync.then_some(input.isn),
        NvmeTcpDdpConfig {
            cpda: input.cpda % 32,
            dgst: NvmeTcpDigests {
                header: input.hdgst,
                data: input.ddgst,
            },
            queue_size: 64,
            ..NvmeTcpDdpConfig::default()
        },
    );
    if dev.sk_add(sk, &cfg, ulp.clone()).is_err() {
        return;
    }
    let mut stream: Vec<u8> = Vec::new();
    let mut headers: Vec<usize> = Vec::new();
    // cid → registered length; None once torn down and not yet done.
    let mut live: HashMap<u16, u64> = HashMap::new();
    let mut pending_done: HashMap<u64, u64> = HashMap::new();
    let mut next_ctx = 0u64;
    let (mut packets, mut bytes) = (0u64, 0u64);
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Pdu {
                cid,
                datao,
                datal,
                last,
                corrupt,
            } => {
                if stream.len() > 1 << 20 {
                    continue;
                }
                let data: Vec<u8> = (0..datal.max(1)).map(|i| (i as u8) ^ cid).collect();
                let repr = DataPduRepr {
                    pdu_type: PduType::C2hData,
                    flags: if last {
                        PduFlags::LAST_PDU
                    } else {
                        PduFlags::NONE
                    },
                    hdgst: input.hdgst,
                    ddgst: input.ddgst,
                    pda: input.cpda % 32,
                    cccid: u16::from(cid),
                    ttag: 0,
                    datao: u32::from(datao),
                    datal: data.len() as u32,
                };
                let at = stream.len();
                headers.push(at);
                stream.extend_from_slice(HeaderBuf::new(&repr).as_bytes());
                stream.extend_from_slice(&data);
                if input.ddgst {
                    stream.extend_from_slice(&crc32c(&data).to_le_bytes());
                }
                if let Some((off, x)) = corrupt {
                    let n = stream.len() - at;
                    stream[at + usize::from(off) % n] ^= x;
                }
            }
            Op::Raw(b) => {
                if stream.len() < 1 << 20 {
                    stream.extend(b.into_iter().take(4096));
                }
            }
            Op::Send { start, len } => {
                if stream.is_empty() {
                    continue;
                }
                let s = usize::from(start) % stream.len();
                let e = (s + usize::from(len)).min(stream.len());
                let seq = input.isn.wrapping_add(s as u32);
                let v = dev.on_segment(sk, seq, &stream[s..e]);
                check(&v, seq, e - s, &mut packets, &mut bytes);
            }
            Op::SendRaw { seq, bytes: b } => {
                let v = dev.on_segment(sk, seq, &b);
                check(&v, seq, b.len(), &mut packets, &mut bytes);
            }
            Op::Setup { cid, len, nents } => {
                let len = u64::from(len);
                let n = usize::from(nents % 10).max(1);
                let io = DdpIo::new(
                    u16::from(cid),
                    SgList::zeroed_chunks(len as usize, (len as usize).div_ceil(n).max(1)),
                );
                match dev.setup(sk, io) {
                    Ok(()) => {
                        assert!(
                            live.insert(u16::from(cid), len).is_none(),
                            "cid set up twice"
                        );
                    }
                    Err(e) => assert_eq!(e.io.sgl.len(), len, "setup failure changed the I/O"),
                }
            }
            Op::Teardown { cid } => {
                let cid = u16::from(cid);
                let ok = dev.teardown(sk, cid, DdpCtx(next_ctx)).is_ok();
                assert_eq!(ok, live.contains_key(&cid));
                if let Some(len) = live.remove(&cid) {
                    pending_done.insert(next_ctx, len);
                }
                next_ctx += 1;
            }
            Op::HostConfirm { header } => {
                if headers.is_empty() {
                    continue;
                }
                let h = headers[usize::from(header) % headers.len()];
                let seq = input.isn.wrapping_add(h as u32);
                if let ResyncAction::Confirm(s) = ulp.tracker.on_pdu_header(seq) {
                    dev.resync(sk, s);
                }
            }
            Op::Resync(seq) => dev.resync(sk, seq),
            Op::CopyToIo { cid, offset, len } => {
                let cid = u16::from(cid);
                let r = dev.copy_to_io(sk, cid, u64::from(offset), &vec![0xEE; usize::from(len)]);
                if let Some(l) = live.get(&cid) {
                    assert_eq!(r.is_ok(), u64::from(offset) + u64::from(len) <= *l);
                } else {
                    assert!(r.is_err());
                }
            }
            Op::Poll => {
                dev.poll_teardowns();
            }
        }
        collect(&ulp, &mut pending_done);
    }
    for cid in live.keys().copied().collect::<Vec<_>>() {
        if dev.teardown(sk, cid, DdpCtx(next_ctx)).is_ok() {
            pending_done.insert(next_ctx, live[&cid]);
            next_ctx += 1;
        }
    }
    dev.poll_teardowns();
    collect(&ulp, &mut pending_done);
    assert!(pending_done.is_empty(), "teardowns never completed");
    let st = dev.get_stats();
    assert_eq!(st.rx_nvme_tcp_setup, st.rx_nvme_tcp_teardown);
    assert_eq!(
        (st.rx_nvme_tcp_packets, st.rx_nvme_tcp_bytes),
        (packets, bytes)
    );
    assert!(dev.sk_del(sk).is_empty());
});

fn check(v: &ddp_engine::SegmentVerdict, seq: u32, len: usize, packets: &mut u64, bytes: &mut u64) {
    for r in v.placed() {
        let off = r.seq.wrapping_sub(seq) as usize;
        assert!(
            r.len > 0 && off + r.len as usize <= len,
            "placed range outside its segment"
        );
    }
    if v.ddp() {
        *packets += 1;
    }
    *bytes += v.placed_bytes();
    assert!(!(v.crc && v.digests_failed > 0));
}

fn collect(ulp: &Ulp, pending: &mut HashMap<u64, u64>) {
    let done: Vec<_> = match ulp.done.lock() {
        Ok(mut d) => d.drain(..).collect(),
        Err(_) => return,
    };
    for (ctx, io) in done {
        let len = pending
            .remove(&ctx.0)
            .expect("teardown_done twice or unknown");
        assert_eq!(io.sgl.len(), len, "buffers came back with another length");
    }
}
