//! `ulpddp perf` against a target that stops answering reads in the middle of the run: the
//! run ends on time, perf waits for the reads in flight for the drain period only (not for
//! the host's command timeout, Aborts and reconnects), then reports them as abandoned and
//! fails.
//!
//! The controller is the host crate's scripted one (its test support, included by path).

#[path = "../../nvme-tcp-host/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Mock, NQN};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:2b7c6f0e-61a4-4d0e-9a3e-6d1f0c2b9e41";

/// `--runtime` of the run.
const RUNTIME_S: u64 = 2;
/// perf's default `--drain-timeout`.
const DRAIN_S: u64 = 5;
/// Commands in flight (one queue).
const QD: usize = 8;

#[test]
fn perf_ends_after_the_drain_period_when_the_target_stops_answering() {
    let m = Mock::start(2048, 4096);
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let port = m.port().to_string();
    let target = format!("127.0.0.1:{port}");
    let qd = QD.to_string();
    let runtime = RUNTIME_S.to_string();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args([
            "perf",
            "--target",
            &target,
            "--nqn",
            NQN,
            "--hostnqn",
            HOSTNQN,
        ])
        .args([
            "--rw", "randread", "--bs", "4k", "--qd", &qd, "--queues", "1",
        ])
        .args(["--runtime", &runtime, "--output-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .expect("run ulpddp perf");
    let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();

    // The target answers for a while, then holds every read from then on.
    let until = Instant::now() + Duration::from_secs(20);
    while m.counters.reads.load(Ordering::SeqCst) < 100 {
        if Instant::now() > until || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("perf did not start reading: {}", stderr());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    m.faults.swallow_reads.store(true, Ordering::SeqCst);

    // Without a bound perf would wait for the host's command timeout (30 s), then Abort,
    // reconnect and re-send until the retry limit: minutes. The bound is generous (not a
    // performance figure): it only tells a bounded drain from that.
    let limit = Duration::from_secs(RUNTIME_S + DRAIN_S + 20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "perf still running {limit:?} after it started (run {RUNTIME_S} s, drain \
                 {DRAIN_S} s): {}",
                stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = stderr();
    // Every slot of the queue ended up on a read the target holds.
    assert_eq!(m.counters.swallowed.load(Ordering::SeqCst), QD, "{err}");
    assert!(
        err.contains(&format!(
            "{QD} commands still in flight {DRAIN_S} s after the run; abandoned"
        )),
        "{err}"
    );
    assert!(
        err.contains("some I/Os did not complete within --drain-timeout"),
        "{err}"
    );
    assert_eq!(status.code(), Some(1), "{err}");
    // The figures are still printed, with the abandoned reads.
    let out = std::fs::read_to_string(&out_path).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(v["jobs"][0]["abandoned_ios"], QD as u64, "{out}");
    assert_eq!(v["jobs"][0]["io_errors"], 0, "{out}");
}
