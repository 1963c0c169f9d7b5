//! `ulpddp ddp replay` through the binary: the summary, the `--json` verdict log, and
//! `--compare` of a device's log against the model (matching, and diverging).

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ddp-replay/tests/captures")
        .join(name)
}

fn replay(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["ddp", "replay"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run ulpddp");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_prints_a_summary_writes_verdicts_and_compares_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = capture("kernel-target-digests.pcap");
    let cap = cap.to_str().expect("utf-8 path");
    let log = dir.path().join("model.jsonl");
    let log_s = log.to_str().expect("utf-8 path");

    let (ok, out, err) = replay(&[cap, "--json", log_s]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("result: the device agreed with the capture"),
        "{out}"
    );
    assert!(out.contains("rx-nvme-tcp-bytes"), "{out}");
    let text = std::fs::read_to_string(&log).expect("log written");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().any(|l| l.contains(r#""pdu":"c2h-data""#)));
    assert!(lines.iter().all(|l| l.starts_with(r#"{"kind":"#)));

    // The model's own log matches.
    let (ok, _, err) = replay(&[cap, "--compare", log_s]);
    assert!(ok, "{err}");
    assert!(err.contains("matches the model"), "{err}");

    // A device that placed fewer bytes of one PDU: the first divergence is reported.
    let i = lines
        .iter()
        .position(|l| l.contains(r#""pdu":"c2h-data""#))
        .expect("a data PDU");
    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut rec: serde_json::Value = serde_json::from_str(&changed[i]).expect("json");
    rec["placed"] = serde_json::json!(1);
    changed[i] = rec.to_string();
    let dev = dir.path().join("device.jsonl");
    std::fs::write(&dev, changed.join("\n") + "\n").expect("write");
    let (ok, _, err) = replay(&[cap, "--compare", dev.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(
        err.contains(&format!("first divergence at record {i} (line {})", i + 1)),
        "{err}"
    );

    // Device options: ConnectX-7 limits on a capture of our host (CIDs with generation bits).
    let ours = capture("our-target-plain.pcap");
    let (ok, out, _) = replay(&[ours.to_str().expect("utf-8"), "--connectx7"]);
    assert!(ok);
    assert!(out.contains("setup failed (cid-out-of-range)"), "{out}");
    assert!(out.contains("warning: setup failed for"), "{out}");

    // A file that is not a capture: a clear error, no panic.
    let (ok, _, err) = replay(&[log_s]);
    assert!(!ok);
    assert!(err.contains("not a pcap or pcapng capture"), "{err}");
}
