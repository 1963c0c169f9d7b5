//! The host commands against a controller that breaks the protocol on every command: the
//! command fails after the retry limit, `ulpddp` exits 1 with the violation as the cause,
//! and logs one warning for the outage rather than one per reconnect.
//!
//! The controller is the host crate's scripted one (its test support, included by path).

#[path = "../../nvme-tcp-host/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Misbehave, Mock, NQN};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:2b7c6f0e-61a4-4d0e-9a3e-6d1f0c2b9e41";

#[test]
fn read_fails_after_max_retries_with_the_violation_as_the_cause() {
    let m = Mock::start(64, 4096);
    m.misbehave(Some(Misbehave::UnknownCccid));
    let port = m.port().to_string();
    let mut child = Command::new(BIN)
        .args([
            "read",
            "-a",
            "127.0.0.1",
            "--trsvcid",
            &port,
            "--nqn",
            NQN,
            "-q",
            HOSTNQN,
        ])
        .args([
            "-n",
            "1",
            "-s",
            "0",
            "-c",
            "7",
            "-d",
            "/dev/null",
            "--keep-alive-tmo",
            "0",
        ])
        .args(["--reconnect-delay", "0", "--max-retries", "2"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ulpddp");
    // A host that re-sends forever never exits: bound the wait (by the controller's count of
    // broken commands, far past the limit, or a minute) to fail instead of hanging.
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if m.counters.misbehaved.load(Ordering::SeqCst) > 100 || Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ulpddp did not give up");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("ulpddp output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("command failed after 3 attempt(s): retry limit reached"),
        "{err}"
    );
    assert!(err.contains("C2HData for unknown CCCID"), "{err}");
    // Sent once and re-sent twice, every time on a connection it broke.
    assert_eq!(m.counters.misbehaved.load(Ordering::SeqCst), 3);
    assert_eq!(m.counters.io_connects.load(Ordering::SeqCst), 3);
    // One WARN for the outage (with its cause), then the error.
    let warns = err.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warns, 1, "{err}");
}
