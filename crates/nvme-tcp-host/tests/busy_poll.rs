//! Busy polling (`ConnectOptions::busy_poll`, `TargetConfig::busy_poll`) on both sides of a
//! loopback connection: data moves, and a queue that goes idle stops spinning once the
//! budget since its last bytes is spent. Its own test binary, so that the process's CPU time
//! is this test's alone.

use std::time::{Duration, Instant};

use nvme_tcp_host::{ConnectOptions, Controller, IoBuf, cmd};
use nvme_tcp_target::namespace::Backing;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig};
use rand::RngCore;

const NQN: &str = "nqn.2024-01.io.test:busy-poll";

/// CPU time of this process (host and target threads) or of the calling thread.
fn cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn busy_polled_queues_move_data_and_sleep_when_idle() {
    let budget = Duration::from_millis(30);
    let mut cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap()).subsystem(
        SubsystemConfig::new(NQN).namespace(NamespaceConfig::new(Backing::Ram { size: 16 << 20 })),
    );
    cfg.busy_poll = budget;
    let t = Target::start(cfg).expect("target starts");
    let mut o = ConnectOptions::new("127.0.0.1", t.local_addrs()[0].port(), NQN);
    o.busy_poll = budget;
    o.ddgst = true;
    o.nr_io_queues = 2;
    let mut ctrl = Controller::connect(o).expect("connect");
    let ns = ctrl.namespace(1).unwrap();
    let mut data = vec![0u8; 4 << 20];
    rand::rng().fill_bytes(&mut data);
    ctrl.write_at(&ns, 8, &data).expect("write");
    let mut back = vec![0u8; data.len()];
    ctrl.read_at(&ns, 8, &mut back).expect("read");
    assert!(back == data, "data differs");

    // One command on a queue of its own, answered while both sides spin.
    let mut q = ctrl.take_io_queues().remove(0);
    let buf = IoBuf::Contig(vec![0; ns.lba_size as usize]);
    let c = q.execute(cmd::read(1, 8, 1, buf, 7)).expect("read");
    assert!(c.result.is_ok(), "{:?}", c.result);
    let Some(IoBuf::Contig(got)) = c.buf else {
        panic!("the buffer comes back as given")
    };
    assert_eq!(got[..], data[..got.len()]);

    // Idle: each side spins for the budget after the last bytes, then sleeps (the host in
    // poll(2) until each call's timeout, the target in its read). Spinning on would take as
    // much CPU as wall time, on each side.
    let (proc0, thread0, wall0) = (
        cpu(libc::CLOCK_PROCESS_CPUTIME_ID),
        cpu(libc::CLOCK_THREAD_CPUTIME_ID),
        Instant::now(),
    );
    for _ in 0..50 {
        assert_eq!(q.poll(Duration::from_millis(10)).expect("poll"), 0);
    }
    let wall = wall0.elapsed();
    let host = cpu(libc::CLOCK_THREAD_CPUTIME_ID) - thread0;
    let all = cpu(libc::CLOCK_PROCESS_CPUTIME_ID) - proc0;
    // (poll(2) counts whole milliseconds: a call can end up to 1 ms early.)
    assert!(
        wall >= Duration::from_millis(400),
        "poll kept its timeouts: {wall:?}"
    );
    let slack = Duration::from_millis(150);
    assert!(
        host < budget + slack,
        "the idle host queue spun {host:?} in {wall:?}"
    );
    assert!(
        all < 2 * budget + 2 * slack,
        "host and target spun {all:?} in {wall:?} while idle"
    );
    q.close();
    ctrl.shutdown();
}
