//! `ulpddp nbd --socket PATH`: an NBD server on a Unix domain socket, used by qemu-img over
//! `nbd+unix://`; a stale socket file is replaced, a live one or a non-socket refused, and the
//! file is removed at exit.

use std::io::{BufRead, BufReader, Lines};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");
const NQN: &str = "nqn.2024-01.io.ulp-ddp:nbd-cli";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Kill, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (Kill(child), BufReader::new(stdout).lines())
}

/// Reads lines until one contains `what` and returns it. Bounded by the output.
fn until(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> String {
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        if l.contains(what) {
            return l;
        }
        seen.push(l);
    }
    panic!("no line with {what:?} in {seen:?}");
}

/// Runs `ulpddp nbd` against `port` on the socket `path` to completion; its stderr.
fn nbd_fails(port: &str, path: &Path) -> String {
    let out = Command::new(BIN)
        .args(["nbd", "-a", "127.0.0.1", "--trsvcid", port, "--nqn", NQN])
        .arg("--socket")
        .arg(path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "ulpddp nbd succeeded on {path:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nbd_on_a_unix_socket_serves_qemu_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_target, mut tlines) = spawn(&[
        "target",
        "--listen",
        "127.0.0.1:0",
        "--no-discovery-port",
        "--nqn",
        NQN,
        "--ns",
        "ram:8M",
        "--allow-any-host",
    ]);
    let line = until(&mut tlines, "listening on ");
    let port = line.rsplit(':').next().unwrap().to_string();

    // A file that is not a socket is left alone.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"keep me").unwrap();
    let err = nbd_fails(&port, &plain);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");

    // A socket file left behind by a server that is gone is replaced.
    let sock = dir.path().join("nbd.sock");
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let sock_s = sock.to_str().unwrap();
    let (mut nbd, mut nlines) = spawn(&[
        "nbd",
        "-a",
        "127.0.0.1",
        "--trsvcid",
        &port,
        "--nqn",
        NQN,
        "--socket",
        sock_s,
    ]);
    let export = until(&mut nlines, "export ns1");
    let uri = format!("nbd+unix:///ns1?socket={sock_s}");
    assert!(export.ends_with(&uri), "{export}");
    until(&mut nlines, &format!("NBD server on unix:{sock_s}"));

    // A server listening there is not displaced.
    let err = nbd_fails(&port, &sock);
    assert!(err.contains("another server is listening"), "{err}");

    let out = Command::new("qemu-img")
        .args(["info", "--output=json", &uri])
        .output()
        .expect("qemu-img (Debian package qemu-utils) cannot run");
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{info}");
    assert!(info.contains("\"virtual-size\": 8388608"), "{info}");

    // SIGTERM: the server ends and removes its socket file.
    let ok = Command::new("kill")
        .args(["-TERM", &nbd.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = nbd.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ulpddp nbd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "the socket file is still there");
}
