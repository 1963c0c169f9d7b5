//! The block engine against the project's own target on loopback: random request sequences
//! checked against an in-memory model, splitting at the controller's limits, and the
//! answers after a shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use nvme_tcp_blk::{BlockEngine, BlockError, BlockOp, BlockResult, Disk, Done, EngineConfig};
use nvme_tcp_host::{ConnectOptions, Controller};
use nvme_tcp_target::namespace::{Backing, LbaSize};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use proptest::prelude::*;

const NQN: &str = "nqn.2024-01.io.test:blk-engine";

fn target(size: u64, lba: LbaSize, mdts: u32) -> TargetHandle {
    let mut ns = NamespaceConfig::new(Backing::Ram { size });
    ns.lba_size = lba;
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cfg =
        TargetConfig::single_port(addr).subsystem(SubsystemConfig::new(NQN).namespace(ns));
    cfg.limits.mdts = mdts;
    Target::start(cfg).expect("target starts")
}

fn engine(t: &TargetHandle, queues: u16) -> Arc<BlockEngine> {
    let mut o = ConnectOptions::new("127.0.0.1", t.local_addrs()[0].port(), NQN);
    o.nr_io_queues = queues;
    o.queue_size = 8;
    o.reconnect_delay = Duration::from_millis(100);
    let ctrl = Controller::connect(o).expect("connect");
    Arc::new(BlockEngine::new(ctrl, &[1], EngineConfig::default()).unwrap())
}

/// Runs one request to completion.
fn exec(disk: &Disk, queue: usize, op: BlockOp) -> BlockResult {
    let (tx, rx) = mpsc::channel();
    disk.submit(
        queue,
        op,
        Done::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(Duration::from_secs(60))
        .expect("every request is answered")
}

#[test]
fn write_zeroes_and_discard_larger_than_one_command_and_reads_split_at_mdts() {
    // 512-byte blocks: one Write Zeroes covers at most 65536 blocks = 32 MiB.
    let t = target(48 << 20, LbaSize::B512, 64 << 10);
    let e = engine(&t, 2);
    let disk = Disk::new(e.clone(), 0).unwrap();
    assert_eq!(disk.geometry().max_transfer, 64 << 10);
    let data: Vec<u8> = (0..(40u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
    // 40 MiB in one request: 640 commands.
    for (i, chunk) in data.chunks(8 << 20).enumerate() {
        let op = BlockOp::Write {
            offset: (i as u64) << 23,
            data: chunk.to_vec(),
            fua: i == 0,
        };
        exec(&disk, i, op).unwrap();
    }
    let back = exec(
        &disk,
        0,
        BlockOp::Read {
            offset: 0,
            len: 16 << 20,
        },
    )
    .unwrap();
    assert!(
        back == data[..16 << 20],
        "a read split into 256 commands comes back in order"
    );
    exec(
        &disk,
        1,
        BlockOp::WriteZeroes {
            offset: 4 << 20,
            len: 36 << 20,
            fua: false,
        },
    )
    .unwrap();
    let back = exec(
        &disk,
        0,
        BlockOp::Read {
            offset: 0,
            len: 8 << 20,
        },
    )
    .unwrap();
    assert!(back[..4 << 20] == data[..4 << 20]);
    assert!(
        back[4 << 20..].iter().all(|&b| b == 0),
        "zeroed beyond 32 MiB in one request"
    );
    let back = exec(
        &disk,
        1,
        BlockOp::Read {
            offset: 39 << 20,
            len: 1 << 20,
        },
    )
    .unwrap();
    assert!(back.iter().all(|&b| b == 0));
    exec(
        &disk,
        0,
        BlockOp::Discard {
            offset: 0,
            len: 48 << 20,
        },
    )
    .unwrap();
    exec(&disk, 0, BlockOp::Flush).unwrap();
    e.shutdown();
    t.shutdown();
}

#[test]
fn bad_requests_are_refused_and_requests_after_shutdown_fail_cleanly() {
    let t = target(1 << 20, LbaSize::B4096, 128 << 10);
    let e = engine(&t, 1);
    let disk = Disk::new(e.clone(), 0).unwrap();
    assert!(Disk::new(e.clone(), 1).is_none());
    let r = exec(
        &disk,
        0,
        BlockOp::Read {
            offset: 512,
            len: 4096,
        },
    );
    assert!(matches!(r, Err(BlockError::Unaligned { .. })), "{r:?}");
    let r = exec(&disk, 0, BlockOp::Read { offset: 0, len: 0 });
    assert!(matches!(r, Err(BlockError::Unaligned { .. })), "{r:?}");
    let r = exec(
        &disk,
        0,
        BlockOp::Write {
            offset: 1 << 20,
            data: vec![0; 4096],
            fua: false,
        },
    );
    assert!(matches!(r, Err(BlockError::OutOfRange { .. })), "{r:?}");
    let r = exec(
        &disk,
        0,
        BlockOp::Discard {
            offset: u64::MAX - 4095,
            len: 8192,
        },
    );
    assert!(matches!(r, Err(BlockError::OutOfRange { .. })), "{r:?}");
    assert_eq!(r.unwrap_err().errno(), libc::EINVAL);
    e.shutdown();
    let r = exec(
        &disk,
        0,
        BlockOp::Read {
            offset: 0,
            len: 4096,
        },
    );
    assert_eq!(r, Err(BlockError::Shutdown));
    // A callback dropped unanswered still answers.
    let (tx, rx) = mpsc::channel();
    drop(Done::new(move |r| {
        let _ = tx.send(r);
    }));
    assert_eq!(rx.recv().unwrap(), Err(BlockError::Shutdown));
    t.shutdown();
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        block: u64,
        blocks: u64,
        seed: u8,
        fua: bool,
    },
    Read {
        block: u64,
        blocks: u64,
    },
    Zeroes {
        block: u64,
        blocks: u64,
    },
    Discard {
        block: u64,
        blocks: u64,
    },
    Flush,
}

const BLOCKS: u64 = 256; // of 512 bytes: 128 KiB namespace, MDTS 8 KiB (16 blocks)

fn step() -> impl Strategy<Value = Step> {
    let range = (0..BLOCKS).prop_flat_map(|b| (Just(b), 1..=(BLOCKS - b).min(64)));
    prop_oneof![
        (range.clone(), any::<u8>(), any::<bool>()).prop_map(|((block, blocks), seed, fua)| {
            Step::Write {
                block,
                blocks,
                seed,
                fua,
            }
        }),
        range
            .clone()
            .prop_map(|(block, blocks)| Step::Read { block, blocks }),
        range
            .clone()
            .prop_map(|(block, blocks)| Step::Zeroes { block, blocks }),
        range.prop_map(|(block, blocks)| Step::Discard { block, blocks }),
        Just(Step::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any sequence of requests, spread over two queues and split at an 8 KiB MDTS, reads
    /// back what an in-memory disk would (discarded blocks of this target read as zeroes).
    #[test]
    fn requests_match_an_in_memory_disk(steps in proptest::collection::vec(step(), 1..24)) {
        let t = target(BLOCKS * 512, LbaSize::B512, 8 << 10);
        let e = engine(&t, 2);
        let disk = Disk::new(e.clone(), 0).unwrap();
        prop_assert!(disk.geometry().deallocated_reads_zeroes);
        let mut model = vec![0u8; (BLOCKS * 512) as usize];
        for (i, s) in steps.iter().enumerate() {
            let range = |block: u64, blocks: u64| (block * 512) as usize..((block + blocks) * 512) as usize;
            match s {
                Step::Write { block, blocks, seed, fua } => {
                    let data: Vec<u8> = (0..blocks * 512).map(|j| (j as u8).wrapping_mul(*seed) ^ seed).collect();
                    model[range(*block, *blocks)].copy_from_slice(&data);
                    exec(&disk, i, BlockOp::Write { offset: block * 512, data, fua: *fua }).unwrap();
                }
                Step::Read { block, blocks } => {
                    let back = exec(&disk, i, BlockOp::Read { offset: block * 512, len: (blocks * 512) as u32 }).unwrap();
                    prop_assert!(back == model[range(*block, *blocks)], "step {} {:?}", i, s);
                }
                Step::Zeroes { block, blocks } | Step::Discard { block, blocks } => {
                    model[range(*block, *blocks)].fill(0);
                    let (offset, len) = (block * 512, blocks * 512);
                    let op = if matches!(s, Step::Zeroes { .. }) {
                        BlockOp::WriteZeroes { offset, len, fua: false }
                    } else {
                        BlockOp::Discard { offset, len }
                    };
                    exec(&disk, i, op).unwrap();
                }
                Step::Flush => {
                    exec(&disk, i, BlockOp::Flush).unwrap();
                }
            }
        }
        let all = exec(&disk, 0, BlockOp::Read { offset: 0, len: (BLOCKS * 512) as u32 }).unwrap();
        prop_assert!(all == model);
        e.shutdown();
        t.shutdown();
    }
}

#[test]
fn io_to_a_removed_namespace_fails_with_invalid_namespace() {
    let t = target(1 << 20, LbaSize::B4096, 128 << 10);
    let e = engine(&t, 1);
    let disk = Disk::new(e.clone(), 0).unwrap();
    exec(
        &disk,
        0,
        BlockOp::Read {
            offset: 0,
            len: 4096,
        },
    )
    .unwrap();
    t.remove_namespace(NQN, 1).unwrap();
    let r = exec(
        &disk,
        0,
        BlockOp::Read {
            offset: 0,
            len: 4096,
        },
    );
    let Err(err) = r else {
        panic!("read of a removed namespace succeeded");
    };
    match &err {
        BlockError::Io(nvme_tcp_host::IoError::Status(s)) => assert_eq!((s.sct, s.sc), (0, 0x0B)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.errno(), libc::ENXIO);
    e.shutdown();
    t.shutdown();
}
