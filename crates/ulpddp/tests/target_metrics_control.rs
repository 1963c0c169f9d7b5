//! The target process's metrics endpoint and control socket, end to end through the binary:
//! `ulpddp target --metrics ADDR --control-socket PATH`, driven by `ulpddp` host commands,
//! scraped over HTTP and controlled with JSON-RPC lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");
const NQN: &str = "nqn.2024-01.io.ulp-ddp:metrics-test";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-1111-1111-111111111111";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-2222-2222-222222222222";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Target {
    _child: Kill,
    port: u16,
    metrics: SocketAddr,
}

fn start(dir: &Path) -> Target {
    let sock = dir.join("ctl.sock");
    let mut child = Command::new(BIN)
        .args(["target", "--listen", "127.0.0.1:0", "--no-discovery-port"])
        .args(["--nqn", NQN, "--ns", "ram:8M", "--allow-host", HOST_A])
        .args(["--metrics", "127.0.0.1:0", "--control-socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut port, mut metrics) = (None, None);
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            port = Some(a.parse::<SocketAddr>().unwrap().port());
        }
        if let Some(a) = line.strip_prefix("metrics on http://") {
            metrics = Some(a.trim_end_matches("/metrics").parse().unwrap());
        }
        if line.starts_with("control socket ") {
            break;
        }
    }
    Target {
        _child: Kill(child),
        port: port.expect("target printed no listener"),
        metrics: metrics.expect("target printed no metrics address"),
    }
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the first sample line that starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn rpc(dir: &Path, method: &str, params: Value) -> Value {
    let mut s = UnixStream::connect(dir.join("ctl.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn host(t: &Target, verb: &str, hostnqn: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg(verb)
        .args([
            "-a",
            "127.0.0.1",
            "--trsvcid",
            &t.port.to_string(),
            "--nqn",
            NQN,
        ])
        .args(["-q", hostnqn])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn metrics_count_io_and_serve_concurrent_scrapes() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path());
    let before = scrape(t.metrics);
    assert!(before.contains("ulpddp_build_info{version=\""), "{before}");
    assert!(before.contains("nvmet_connections 0"), "{before}");
    assert!(
        !before.contains("nvmet_namespace_"),
        "no I/O, no family: {before}"
    );
    assert!(
        !before.contains("ulp_ddp_"),
        "no device, no family: {before}"
    );

    let data = dir.path().join("w.bin");
    std::fs::write(&data, vec![0x5Au8; 64 * 1024]).unwrap();
    let w = host(
        &t,
        "write",
        HOST_A,
        &["-n", "1", "-s", "0", "-d", data.to_str().unwrap()],
    );
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let out = dir.path().join("r.bin");
    let r = host(
        &t,
        "read",
        HOST_A,
        &[
            "-n",
            "1",
            "-s",
            "0",
            "-c",
            "127",
            "-d",
            out.to_str().unwrap(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&data).unwrap());
    // A refused host counts as a refused Connect.
    assert!(!host(&t, "id-ctrl", HOST_B, &[]).status.success());

    // An idle client and a half-sent request do not hold up the scrapes that follow.
    let idle = TcpStream::connect(t.metrics).unwrap();
    let mut half = TcpStream::connect(t.metrics).unwrap();
    half.write_all(b"GET /met").unwrap();
    let addr = t.metrics;
    let bodies: Vec<String> = (0..6)
        .map(|_| std::thread::spawn(move || scrape(addr)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    drop((idle, half));
    for body in &bodies {
        let ns = format!("{{subnqn=\"{NQN}\",nsid=\"1\",op=");
        let reads = sample(
            body,
            &format!("nvmet_namespace_commands_total{ns}\"read\"}}"),
        );
        let rbytes = sample(body, &format!("nvmet_namespace_bytes_total{ns}\"read\"}}"));
        let wbytes = sample(body, &format!("nvmet_namespace_bytes_total{ns}\"write\"}}"));
        assert!(reads.is_some_and(|n| n >= 1.0), "{body}");
        assert_eq!(rbytes, Some(65536.0), "{body}");
        assert_eq!(wbytes, Some(65536.0), "{body}");
        let lat = format!("nvmet_namespace_latency_seconds_count{ns}\"read\"}}");
        assert_eq!(sample(body, &lat), reads, "{body}");
        assert!(sample(body, "nvmet_connect_refused_total").is_some_and(|n| n >= 1.0));
        let connects = format!("nvmet_subsystem_connects_total{{subnqn=\"{NQN}\"}}");
        assert!(sample(body, &connects).is_some_and(|n| n >= 4.0), "{body}");
    }
}

#[test]
fn control_socket_changes_namespaces_and_hosts_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path());
    let subs = rpc(dir.path(), "subsystem-list", json!({}));
    let s = &subs["result"][0];
    assert_eq!(s["nqn"], NQN);
    assert_eq!(s["allowed_hosts"], json!([HOST_A]));
    assert_eq!(s["attr"]["allow_any_host"], "0");
    assert_eq!(s["namespaces"][0]["nsid"], 1);
    assert_eq!(s["namespaces"][0]["device"]["path"], "ram:8388608");

    // A namespace in the configuration file's shape.
    let add = rpc(
        dir.path(),
        "namespace-add",
        json!({"nqn": NQN, "namespace": {"nsid": 5, "enable": 1, "device": {"path": "ram:4M", "lba_size": 4096}}}),
    );
    assert_eq!(add["result"]["nsid"], 5, "{add}");
    let id = host(&t, "id-ns", HOST_A, &["--namespace-id", "5", "-o", "json"]);
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );
    let v: Value = serde_json::from_slice(&id.stdout).unwrap();
    assert_eq!(
        (v["nsze"].as_u64(), v["lbafs"][0]["ds"].as_u64()),
        (Some(1024), Some(12))
    );
    let bad = rpc(
        dir.path(),
        "namespace-add",
        json!({"nqn": NQN, "namespace": {"nsid": 6}}),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let missing = rpc(
        dir.path(),
        "namespace-add",
        json!({"nqn": NQN, "namespace": {"nsid": 6, "device": {"path": "/nonexistent/x.img"}}}),
    );
    assert_eq!(missing["error"]["code"], -32001, "{missing}");
    let rm = rpc(
        dir.path(),
        "namespace-remove",
        json!({"nqn": NQN, "nsid": 5}),
    );
    assert_eq!(rm["result"], true, "{rm}");
    assert!(
        !host(&t, "id-ns", HOST_A, &["--namespace-id", "5"])
            .status
            .success()
    );

    // Hosts.
    assert!(!host(&t, "id-ctrl", HOST_B, &[]).status.success());
    let h = rpc(
        dir.path(),
        "host-add",
        json!({"nqn": NQN, "hostnqn": HOST_B}),
    );
    assert_eq!(h["result"]["allowed_hosts"], json!([HOST_A, HOST_B]), "{h}");
    assert!(host(&t, "id-ctrl", HOST_B, &[]).status.success());
    rpc(
        dir.path(),
        "host-remove",
        json!({"nqn": NQN, "hostnqn": HOST_B}),
    );
    assert!(!host(&t, "id-ctrl", HOST_B, &[]).status.success());

    // Connections: an interactive host holds an admin and an I/O queue open.
    let mut c = Kill(
        Command::new(BIN)
            .args([
                "connect",
                "-a",
                "127.0.0.1",
                "-s",
                &t.port.to_string(),
                "-n",
                NQN,
            ])
            .args(["-q", HOST_A, "--interactive"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(c.0.stdout.take().unwrap()).lines();
    // `connect` prints the namespace table once both queues are up.
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("Node"), "{first}");
    let conns = rpc(dir.path(), "connection-list", json!({}));
    let list = conns["result"].as_array().unwrap();
    let ours: Vec<&Value> = list.iter().filter(|c| c["hostnqn"] == HOST_A).collect();
    assert_eq!(ours.len(), 2, "{conns}");
    assert!(ours.iter().any(|c| c["qid"] == 0) && ours.iter().any(|c| c["qid"] == 1));
    writeln!(c.0.stdin.as_mut().unwrap(), "disconnect").unwrap();
    assert!(c.0.wait().unwrap().success());

    // The same through `ulpddp rpc`.
    let out = Command::new(BIN)
        .args(["rpc", "--socket"])
        .arg(dir.path().join("ctl.sock"))
        .args(["host-list", &json!({"nqn": NQN}).to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        json!({"allow_any_host": false, "allowed_hosts": [HOST_A]})
    );

    let unknown = rpc(dir.path(), "frobnicate", json!({}));
    assert_eq!(unknown["error"]["code"], -32601);
    let nosub = rpc(dir.path(), "namespace-list", json!({"nqn": "nqn.none:x"}));
    assert_eq!(nosub["error"]["code"], -32000);
}

#[test]
fn disconnect_ends_an_interactive_session_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let t = start(dir.path());
    let mut c = Kill(
        Command::new(BIN)
            .args([
                "connect",
                "-a",
                "127.0.0.1",
                "-s",
                &t.port.to_string(),
                "-n",
                NQN,
            ])
            .args(["-q", HOST_A, "--interactive"])
            .env("XDG_RUNTIME_DIR", &run)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(c.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("Node"), "{first}");
    let other = Command::new(BIN)
        .args(["disconnect", "-n", "nqn.2024-01.io.ulp-ddp:other"])
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&other.stdout).trim(),
        "NQN:nqn.2024-01.io.ulp-ddp:other disconnected 0 controller(s)"
    );
    let out = Command::new(BIN)
        .args(["disconnect", "-n", NQN])
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("NQN:{NQN} disconnected 1 controller(s)")
    );
    // The session shut its controller down and exited on its own (stdin is still open).
    assert!(c.0.wait().unwrap().success());
    assert_eq!(std::fs::read_dir(run.join("ulpddp")).unwrap().count(), 0);
}
