//! `ulpddp target` and its signals: SIGHUP reloads the `--config` file without stopping the
//! target, SIGTERM drains it and exits cleanly.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");
const NQN: &str = "nqn.2024-01.io.ulp-ddp:signals";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(namespaces: &[(u32, &str)]) -> String {
    let nss: Vec<String> = namespaces
        .iter()
        .map(|(id, path)| {
            format!(r#"{{ "device": {{ "path": "{path}" }}, "enable": 1, "nsid": {id} }}"#)
        })
        .collect();
    format!(
        r#"{{
          "ports": [ {{ "addr": {{ "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "0",
                                   "trtype": "tcp" }},
                        "portid": 1, "subsystems": [ "{NQN}" ] }} ],
          "subsystems": [ {{ "attr": {{ "allow_any_host": "1" }},
                             "namespaces": [ {} ], "nqn": "{NQN}" }} ]
        }}"#,
        nss.join(", ")
    )
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Reads lines until one contains `what`; returns the lines read. Bounded by the output.
fn until(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let done = l.contains(what);
        seen.push(l);
        if done {
            return seen;
        }
    }
    panic!("no line with {what:?} in {seen:?}");
}

#[test]
fn sighup_reloads_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.json");
    std::fs::write(&path, config(&[(1, "ram:4M")])).unwrap();
    let mut child = Command::new(BIN)
        .args(["target", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut guard = Kill(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = until(&mut lines, "listening on");
    let addr: std::net::SocketAddr = first
        .last()
        .and_then(|l| l.strip_prefix("listening on "))
        .unwrap()
        .parse()
        .unwrap();
    until(&mut lines, "serving");

    std::fs::write(&path, config(&[(1, "ram:4M"), (2, "ram:1M")])).unwrap();
    signal(pid, "-HUP");
    let out = until(&mut lines, "added namespace 2");
    assert!(
        out.iter().any(|l| l.contains("configuration reloaded")),
        "{out:?}"
    );
    // Still serving.
    assert!(
        guard.0.try_wait().unwrap().is_none(),
        "SIGHUP killed the target"
    );
    std::net::TcpStream::connect(addr).unwrap();

    // A configuration that does not load is reported and changes nothing.
    std::fs::write(&path, "{ not json").unwrap();
    signal(pid, "-HUP");
    let out = until(&mut lines, "not reloaded");
    // The parser's complaint, once (a cause is not repeated by the error that wraps it).
    let line = out.last().unwrap();
    assert!(line.contains(": not valid JSON: "), "{line}");
    assert_eq!(line.matches("at line 1 column").count(), 1, "{line}");
    assert!(guard.0.try_wait().unwrap().is_none());

    signal(pid, "-TERM");
    until(&mut lines, "shut down");
    let status = guard.0.wait().unwrap();
    assert!(status.success(), "{status}");
}
