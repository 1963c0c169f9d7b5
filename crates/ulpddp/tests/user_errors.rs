//! A user error reads cleanly: `Error: ...` and its causes on stderr, exit status 1, and no
//! Rust backtrace even when RUST_BACKTRACE is set in the environment.

use std::net::TcpListener;
use std::process::Command;

#[test]
fn a_refused_connection_is_one_clean_error_without_a_backtrace() {
    // A port that was free a moment ago and has nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let out = Command::new(env!("CARGO_BIN_EXE_ulpddp"))
        .args(["id-ctrl", "-a", "127.0.0.1", "--trsvcid"])
        .arg(port.to_string())
        .args(["--nqn", "nqn.2024-01.io.ulp-ddp:nobody"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run ulpddp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("Error: connecting to"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    // No cause line repeats the one before it.
    let lines: Vec<&str> = err.lines().collect();
    for w in lines.windows(2) {
        assert_ne!(w[0].trim(), w[1].trim(), "{err}");
    }
}
