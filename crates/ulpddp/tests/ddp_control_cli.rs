//! The control plane end to end through the binary: `ulpddp perf --ddp --ctl-socket` runs the
//! simulated network with the software device and serves it; `ulpddp ddp …` reads and
//! switches it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ddp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("ddp").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn caps_and_stats_of_a_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let sock_s = sock.to_str().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "perf",
            "--ddp",
            "--size",
            "8M",
            "--ctl-socket",
            sock_s,
            "--hold",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);

    // Wait until both runs are over and the process only serves the control plane.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        assert!(
            Instant::now() < deadline,
            "perf --ddp did not finish its runs"
        );
        match lines.next() {
            Some(Ok(l)) if l.contains("serving the control plane") => break,
            Some(Ok(_)) => continue,
            _ => panic!("perf --ddp exited early"),
        }
    }

    let (ok, out, err) = ddp(&["caps-get", "--socket", sock_s, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ifindex"], 1);
    assert_eq!(
        v["hw"],
        serde_json::json!(["nvme-tcp", "nvme-tcp-ddgst-rx"])
    );
    assert_eq!(v["active"], v["hw"]);

    // The counters of the two runs: the offload-on run placed data, and everything it set
    // up it also tore down (blktests nvme/055 after disconnect).
    let (ok, out, err) = ddp(&["stats-get", "--socket", sock_s, "--json"]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(s["rx-nvme-tcp-packets"].as_u64().unwrap() > 0, "{s}");
    assert!(s["rx-nvme-tcp-bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["rx-nvme-tcp-setup"], s["rx-nvme-tcp-teardown"], "{s}");
    assert_eq!(s["rx-nvme-tcp-sk-add"], s["rx-nvme-tcp-sk-del"], "{s}");
    assert_eq!(s["rx-nvme-tcp-setup-fail"], 0, "{s}");

    // Switch the data-digest offload off: the table shows what is active now.
    let (ok, out, err) = ddp(&[
        "caps-set",
        "--socket",
        sock_s,
        "--wanted",
        "",
        "--wanted-mask",
        "nvme-tcp-ddgst-rx",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.trim() == "active   nvme-tcp"),
        "{out}"
    );

    // An unknown capability is refused, names itself, and changes nothing.
    let (ok, _, err) = ddp(&[
        "caps-set",
        "--socket",
        sock_s,
        "--wanted",
        "nvme-tls",
        "--wanted-mask",
        "nvme-tls",
    ]);
    assert!(!ok);
    assert!(err.contains("nvme-tls"), "{err}");
    let (_, out, _) = ddp(&["caps-get", "--socket", sock_s, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["active"], serde_json::json!(["nvme-tcp"]));
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let (ok, _, err) = ddp(&["stats-get", "--socket", "/nonexistent/ulpddp.sock"]);
    assert!(!ok);
    assert!(
        err.contains("no control socket at /nonexistent/ulpddp.sock"),
        "{err}"
    );
}
