#![no_main]
//! The host receive path fed arbitrary PDU streams.
//!
//! The first input byte picks the digests and the chunking; the queue then has reads (with
//! buffers pre-filled with 0xEE), a write and a no-data command in flight, and the rest of the
//! input is fed to it, alternating between the copy path (`rx_feed`) and the direct socket
//! path (`rx_direct`/`rx_direct_done`). Checked: no panic; a write buffer never changes; a read
//! buffer only changes inside the range the receive path accepted as that command's data.

use std::time::Instant;

use nvme_tcp_host::queue::{DataDir, NoOffload, QueueConfig, QueueCore, Request};
use nvme_tcp_host::{CidMode, IoBuf};
use nvme_tcp_wire::pdu::{HeaderBuf, IcRespRepr};

const FILL: u8 = 0xEE;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (hdgst, ddgst) = (mode & 1 != 0, mode & 2 != 0);
    let chunk = 1 + (mode >> 2) as usize * 7;
    let mut q = QueueCore::new(QueueConfig {
        qid: 1,
        queue_size: 8,
        hdgst,
        ddgst,
        cid_mode: if mode & 0x80 != 0 { CidMode::Linear } else { CidMode::Tagged },
        in_capsule_max: 64,
    });
    let n = q.tx_pending().len();
    q.tx_consumed(n);
    let icresp = HeaderBuf::new(&IcRespRepr {
        pfv: 0,
        cpda: 0,
        hdgst_enable: hdgst,
        ddgst_enable: ddgst,
        maxh2cdata: 4096,
    });
    if q.rx_feed(icresp.as_bytes(), &mut NoOffload).is_err() {
        return;
    }
    q.set_live();
    let now = Instant::now();
    let mut reads = Vec::new();
    for (i, len) in [512usize, 4096, 33].into_iter().enumerate() {
        let mut sqe = [0u8; 64];
        sqe[0] = 0x02;
        let buf = if i == 1 {
            IoBuf::Sgl(vec![vec![FILL; 1000], vec![], vec![FILL; 3096]])
        } else {
            IoBuf::Contig(vec![FILL; len])
        };
        let req = Request { sqe, dir: DataDir::ToHost, buf: Some(buf), user_data: i as u64 };
        if let Ok(cid) = q.submit(req, now) {
            reads.push((i as u64, cid));
        }
    }
    let mut sqe = [0u8; 64];
    sqe[0] = 0x01;
    let write = Request {
        sqe,
        dir: DataDir::ToController,
        buf: Some(IoBuf::Contig(vec![0x55; 9000])),
        user_data: 100,
    };
    let _ = q.submit(write, now);
    let noop = Request { sqe: [0; 64], dir: DataDir::None, buf: None, user_data: 101 };
    let _ = q.submit(noop, now);

    let mut received = [0usize; 3];
    let mut input = rest;
    let mut i = 0usize;
    while !input.is_empty() {
        for &(u, cid) in &reads {
            if let Some(r) = q.bytes_received(cid) {
                received[u as usize] = received[u as usize].max(r);
            }
        }
        let n = chunk.min(input.len());
        let r = if i % 2 == 1
            && let Some(dst) = q.rx_direct()
        {
            let m = dst.len().min(n);
            dst[..m].copy_from_slice(&input[..m]);
            input = &input[m..];
            q.rx_direct_done(m, &mut NoOffload)
        } else {
            let r = q.rx_feed(&input[..n], &mut NoOffload);
            input = &input[n..];
            r
        };
        let pending = q.tx_pending().len();
        q.tx_consumed(pending);
        if r.is_err() {
            break;
        }
        i += 1;
    }
    for &(u, cid) in &reads {
        if let Some(r) = q.bytes_received(cid) {
            received[u as usize] = received[u as usize].max(r);
        }
    }
    q.fail_all(nvme_tcp_host::IoError::QueueLost("fuzz end"));
    while let Some(c) = q.pop_completion() {
        let Some(buf) = c.buf else { continue };
        let bytes = buf.to_vec();
        match c.user_data {
            100 => assert!(bytes.iter().all(|&b| b == 0x55), "write buffer modified"),
            u if u < 3 => {
                // A completed read may hold data up to its full length; otherwise only the
                // accepted prefix may differ from the fill.
                if c.result.is_err() {
                    let r = received[u as usize].max(c.c2h_bytes).min(bytes.len());
                    assert!(bytes[r..].iter().all(|&b| b == FILL), "read buffer written past the accepted data");
                }
            }
            _ => {}
        }
    }
});
