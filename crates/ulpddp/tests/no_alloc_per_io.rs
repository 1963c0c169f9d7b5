//! The I/O hot path does not allocate: after warm-up, thousands of reads and writes through
//! the host's `IoQueue` against the in-process target make (almost) no heap allocation.
//! Background work (keep-alive timers, a rare reconnect check) may allocate now and then, so
//! the bound is "well under one allocation per 100 I/Os", not zero; an allocation per I/O
//! anywhere on the path (host or target, reads or writes, with digests) fails it.

use std::time::Duration;

use nvme_tcp_host::{ConnectOptions, Controller, IoBuf, IoQueue, cmd};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

const NQN: &str = "nqn.2024-01.io.ulp-ddp:noalloc";

/// Keeps `qd` commands of `bs` bytes in flight until `total` completed; returns how many.
fn drive(q: &mut IoQueue, read: bool, bs: usize, qd: usize, total: u64) -> u64 {
    let nlb = (bs / 512) as u32;
    let span_blocks = (16 << 20) / bs as u64;
    let mut free: Vec<IoBuf> = (0..qd).map(|_| IoBuf::Contig(vec![0x5A; bs])).collect();
    free.reserve(qd);
    let (mut issued, mut done) = (0u64, 0u64);
    while done < total {
        while issued < total
            && let Some(buf) = free.pop()
        {
            let slba = (issued % span_blocks) * nlb as u64;
            let req = if read {
                cmd::read(1, slba, nlb, buf, issued)
            } else {
                cmd::write(1, slba, nlb, buf, issued)
            };
            match q.submit(req) {
                Ok(_) => issued += 1,
                Err(e) => {
                    free.extend(e.buf);
                    break;
                }
            }
        }
        q.poll(Duration::from_millis(100)).expect("queue alive");
        while let Some(c) = q.pop_completion() {
            assert!(c.result.is_ok(), "I/O failed: {:?}", c.result);
            free.extend(c.buf);
            done += 1;
        }
    }
    done
}

fn allocations_per_io(hdgst: bool, ddgst: bool, read: bool, bs: usize) -> f64 {
    let cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap())
        .subsystem(SubsystemConfig::new(NQN).namespace(NamespaceConfig::parse("ram:16M").unwrap()));
    let target = Target::start(cfg).unwrap();
    let addr = target.local_addrs()[0];
    let mut opts = ConnectOptions::new(addr.ip().to_string(), addr.port(), NQN);
    opts.nr_io_queues = 1;
    opts.queue_size = 33;
    opts.hdgst = hdgst;
    opts.ddgst = ddgst;
    let mut ctrl = Controller::connect(opts).unwrap();
    let mut q = ctrl.take_io_queues().pop().unwrap();
    // Warm-up: buffers, pipes and tables reach their steady-state sizes.
    drive(&mut q, read, bs, 32, 2_000);
    let before = alloc_count::process_total();
    let n = drive(&mut q, read, bs, 32, 20_000);
    let allocs = alloc_count::process_total() - before;
    q.close();
    ctrl.shutdown();
    drop(target);
    eprintln!("hdgst={hdgst} ddgst={ddgst} read={read} bs={bs}: {allocs} allocations in {n} I/Os");
    allocs as f64 / n as f64
}

/// One test, so that no other test of this binary allocates while it counts (the counter is
/// process-wide).
#[test]
fn hot_path_does_not_allocate_per_io() {
    for (hdgst, ddgst, read, bs) in [
        (false, true, true, 4096),
        (true, true, true, 128 * 1024),
        // 4 KiB writes go in-capsule; 128 KiB writes go through R2T + H2CData.
        (false, true, false, 4096),
        (true, true, false, 128 * 1024),
    ] {
        let a = allocations_per_io(hdgst, ddgst, read, bs);
        assert!(
            a < 0.01,
            "{a} allocations per I/O (hdgst={hdgst} ddgst={ddgst} read={read} bs={bs})"
        );
    }
}
