//! Read throughput of the host against the embedded target on loopback (null namespace), with
//! the polled queue API the `perf` command uses: one thread per I/O queue keeping QD reads in
//! flight, buffers recycled from completions, nothing allocated per I/O.
//!
//! ```text
//! cargo run --release -p nvme-tcp-host --example host_read_bench -- [BS] [QD] [QUEUES] [SECS] [ddgst]
//! cargo run --release -p nvme-tcp-host --example host_read_bench -- 131072 32 1 5 ddgst
//! cargo run --release -p nvme-tcp-host --example host_read_bench -- 4096 128 1 5
//! ```
//! Prints GB/s and IOPS. Numbers depend on the machine; compare runs made the same way.

use std::time::{Duration, Instant};

use nvme_tcp_host::{ConnectOptions, Controller, IoBuf};
use nvme_tcp_target::namespace::{Backing, LbaSize};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let bs = arg(1, 131072) as usize;
    let qd = arg(2, 32) as usize;
    let queues = arg(3, 1) as u16;
    let secs = arg(4, 5);
    let ddgst = args.iter().any(|a| a == "ddgst");
    let nqn = "nqn.2024-01.io.bench:null";
    let mut ns = NamespaceConfig::new(Backing::Null { size: 64 << 30 });
    ns.lba_size = LbaSize::B4096;
    let cfg = TargetConfig::single_port("127.0.0.1:0".parse()?)
        .subsystem(SubsystemConfig::new(nqn).namespace(ns));
    let t = Target::start(cfg)?;
    let mut o = ConnectOptions::new("127.0.0.1", t.local_addrs()[0].port(), nqn);
    o.nr_io_queues = queues;
    o.queue_size = (qd as u16 + 1).max(2);
    o.ddgst = ddgst;
    o.disable_sqflow = true;
    let mut ctrl = Controller::connect(o)?;
    let nsinfo = ctrl.namespace(1)?;
    let nlb = (bs / nsinfo.lba_size as usize) as u32;
    let blocks = nsinfo.nsze;
    let qs = ctrl.take_io_queues();
    let run = Duration::from_secs(secs);
    let start = Instant::now();
    let handles: Vec<_> = qs
        .into_iter()
        .map(|mut q| {
            std::thread::spawn(move || -> (u64, u64) {
                let mut bufs: Vec<Vec<u8>> = (0..qd).map(|_| vec![0u8; bs]).collect();
                let mut lba = 0u64;
                let mut ios = 0u64;
                let mut errors = 0u64;
                let t0 = Instant::now();
                loop {
                    let stop = t0.elapsed() >= run;
                    while !stop && q.in_flight() < qd {
                        let Some(b) = bufs.pop() else { break };
                        let slba = lba % (blocks - nlb as u64);
                        lba = lba.wrapping_add(nlb as u64 * 7919);
                        if let Err(e) = q.submit_read(1, slba, nlb, IoBuf::Contig(b), 0) {
                            if let Some(b) = e.buf.and_then(IoBuf::into_vec) {
                                bufs.push(b);
                            }
                            break;
                        }
                    }
                    if stop && q.in_flight() == 0 {
                        break;
                    }
                    if q.poll(Duration::from_millis(10)).is_err() {
                        break;
                    }
                    while let Some(c) = q.pop_completion() {
                        if c.result.is_ok() {
                            ios += 1;
                        } else {
                            errors += 1;
                        }
                        if let Some(b) = c.buf.and_then(IoBuf::into_vec) {
                            bufs.push(b);
                        }
                    }
                }
                (ios, errors)
            })
        })
        .collect();
    let mut ios = 0;
    let mut errors = 0;
    for h in handles {
        let (i, e) = h.join().map_err(|_| "thread panicked")?;
        ios += i;
        errors += e;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "bs={bs} qd={qd} queues={queues} ddgst={ddgst}: {:.2} GB/s, {:.0} IOPS, {errors} errors, {:.1} s",
        ios as f64 * bs as f64 / el / 1e9,
        ios as f64 / el,
        el
    );
    ctrl.shutdown();
    Ok(())
}
