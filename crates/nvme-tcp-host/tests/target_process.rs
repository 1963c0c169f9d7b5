//! The host against the project's target (`nvme-tcp-target`) running as a process of its own,
//! killed with SIGKILL and started again while every slot of an I/O queue is in flight.
//!
//! The target process is this test binary run again with [`CHILD`] set: then only
//! `target_process` does anything (it serves a file-backed namespace until killed).
//!
//! No verdict depends on timing; waits are bounded only to turn a hang into a failure.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nvme_tcp_host::{ConnectOptions, Controller, IoBuf, IoQueue};
use nvme_tcp_target::namespace::{Backing, LbaSize};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig};

const NQN: &str = "nqn.2024-01.io.test:host-target-process";
/// Set in the target process: `ADDR PATH`.
const CHILD: &str = "NVME_TCP_HOST_TEST_TARGET_PROCESS";
const LBA: usize = 4096;
/// Blocks per write.
const NLB: u32 = 4;

/// The target process's body (does nothing in the test process itself).
#[test]
fn target_process() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (addr, path) = spec.split_once(' ').expect("ADDR PATH");
    let ns = NamespaceConfig::new(Backing::File {
        path: path.into(),
        direct: false,
    });
    let mut ns = ns;
    ns.lba_size = LbaSize::B4096;
    let cfg = TargetConfig::single_port(addr.parse().expect("address"))
        .subsystem(SubsystemConfig::new(NQN).namespace(ns));
    let t = Target::start(cfg).expect("target starts");
    println!("serving on {}", t.local_addrs()[0]);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A running target process.
struct TargetProcess {
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl TargetProcess {
    fn start(addr: SocketAddr, path: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "target_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{addr} {}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the target process");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("target output");
            assert!(n > 0, "the target process exited before serving");
            if line.contains("serving on") {
                break;
            }
        }
        Self {
            child,
            _stdout: out,
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGKILL, and reap it.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pattern(i: u64) -> Vec<u8> {
    (0..NLB as usize * LBA)
        .map(|b| (b as u64 ^ i.wrapping_mul(0x9E37_79B9)).wrapping_mul(31) as u8)
        .collect()
}

/// Keeps every slot of `q` busy with writes `next..total` (write `i` at block `i * NLB`),
/// until `until` writes have been acknowledged; every completion must be a success.
fn write_until(q: &mut IoQueue, next: &mut u64, total: u64, acked: &mut Vec<u64>, until: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < until {
        assert!(Instant::now() < deadline, "writes stopped completing");
        while *next < total && q.in_flight() < q.depth() {
            let i = *next;
            q.submit_write(1, i * u64::from(NLB), NLB, IoBuf::Contig(pattern(i)), i)
                .expect("submit");
            *next += 1;
        }
        q.poll(Duration::from_millis(50))
            .expect("the queue is alive");
        while let Some(c) = q.pop_completion() {
            assert!(c.result.is_ok(), "write {}: {:?}", c.user_data, c.result);
            acked.push(c.user_data);
        }
    }
}

#[test]
fn a_full_queue_resumes_after_the_target_process_is_killed_and_restarted() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("host-target-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ns.img");
    std::fs::write(&path, vec![0u8; 16 << 20]).unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let target = TargetProcess::start(addr, &path);

    let mut o = ConnectOptions::new("127.0.0.1", addr.port(), NQN);
    o.kato = None; // the admin queue is re-established on demand
    o.queue_size = 16;
    o.reconnect_delay = Duration::from_millis(50);
    // Without a slot for the Connect the queue never comes back: fail, don't hang.
    o.ctrl_loss_tmo = Some(Duration::from_secs(20));
    let mut ctrl = Controller::connect(o).expect("connect");
    let mut q = ctrl.take_io_queues().pop().expect("an I/O queue");
    let depth = q.depth() as u64;
    let total = depth * 6;
    let (mut next, mut acked) = (0u64, Vec::new());

    // Every slot in flight while the target cannot answer (stopped), then it dies.
    target.signal(libc::SIGSTOP);
    while next < depth {
        q.submit_write(
            1,
            next * u64::from(NLB),
            NLB,
            IoBuf::Contig(pattern(next)),
            next,
        )
        .expect("submit");
        next += 1;
    }
    q.flush().unwrap();
    assert_eq!(q.in_flight() as u64, depth, "every slot in flight");
    target.kill();
    let target = TargetProcess::start(addr, &path);
    write_until(&mut q, &mut next, total, &mut acked, (total / 2) as usize);

    // Again under load: killed with whatever is in flight (the queue is kept full).
    target.kill();
    let target = TargetProcess::start(addr, &path);
    write_until(&mut q, &mut next, total, &mut acked, total as usize);
    assert!(q.stats().reconnects >= 2);

    // Every acknowledged write is on the target.
    acked.sort_unstable();
    assert_eq!(acked, (0..total).collect::<Vec<_>>());
    for &i in &acked {
        q.submit_read(
            1,
            i * u64::from(NLB),
            NLB,
            IoBuf::Contig(vec![0; NLB as usize * LBA]),
            i,
        )
        .expect("submit");
        let c = q.wait_for(i).expect("read");
        assert!(c.result.is_ok(), "read {i}: {:?}", c.result);
        assert!(
            c.buf.unwrap().to_vec() == pattern(i),
            "write {i} is not on the target"
        );
    }
    drop(q);
    drop(ctrl);
    drop(target);
    let _ = std::fs::remove_dir_all(&dir);
}
