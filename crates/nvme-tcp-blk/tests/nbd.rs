//! The NBD server over the project's own target on loopback, with real clients (qemu-img and
//! qemu-io from qemu-utils) and with a hand-driven socket for the malformed-input cases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvme_tcp_blk::nbd::proto::{self, IHAVEOPT, RequestHeader, opt, rep};
use nvme_tcp_blk::nbd::{Export, NbdAddr, NbdListener, NbdServer, ServerConfig};
use nvme_tcp_blk::{BlockEngine, Disk, EngineConfig};
use nvme_tcp_host::{ConnectOptions, Controller};
use nvme_tcp_target::namespace::{Backing, LbaSize};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use rand::RngCore;

const NQN: &str = "nqn.2024-01.io.test:nbd";

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

fn target(
    addr: SocketAddr,
    namespaces: Vec<(Backing, LbaSize)>,
    mdts: Option<u32>,
) -> TargetHandle {
    let mut sub = SubsystemConfig::new(NQN);
    for (b, lba) in namespaces {
        let mut ns = NamespaceConfig::new(b);
        ns.lba_size = lba;
        sub = sub.namespace(ns);
    }
    let mut cfg = TargetConfig::single_port(addr).subsystem(sub);
    if let Some(m) = mdts {
        cfg.limits.mdts = m;
    }
    Target::start(cfg).expect("target starts")
}

fn opts(port: u16, queues: u16) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port, NQN);
    o.nr_io_queues = queues;
    o.queue_size = 32;
    o.ddgst = true;
    o.reconnect_delay = Duration::from_millis(100);
    o.ctrl_loss_tmo = Some(Duration::from_secs(60));
    o
}

struct Setup {
    engine: Arc<BlockEngine>,
    server: Option<NbdServer>,
}

impl Setup {
    fn new(o: ConnectOptions, nsids: &[u32], cfg: ServerConfig) -> Self {
        Self::on(
            o,
            nsids,
            cfg,
            TcpListener::bind("127.0.0.1:0").unwrap().into(),
        )
    }

    fn on(o: ConnectOptions, nsids: &[u32], cfg: ServerConfig, l: NbdListener) -> Self {
        let ctrl = Controller::connect(o).expect("connect");
        let engine = Arc::new(BlockEngine::new(ctrl, nsids, EngineConfig::default()).unwrap());
        let exports = Disk::all(&engine)
            .into_iter()
            .map(|disk| Export {
                name: format!("ns{}", disk.geometry().nsid),
                description: String::new(),
                disk,
                read_only: false,
            })
            .collect();
        let server = NbdServer::start(l, exports, cfg).unwrap();
        Self {
            engine,
            server: Some(server),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self.server.as_ref().unwrap().local_addr() {
            NbdAddr::Tcp(a) => a,
            a => panic!("{a} is not a TCP address"),
        }
    }

    fn url(&self, export: &str) -> String {
        self.server.as_ref().unwrap().local_addr().uri(export)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        self.engine.shutdown();
    }
}

/// Runs a qemu tool, failing the test (not hanging it) if it does not end.
fn run(tool: &str, args: &[&str]) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} (Debian package qemu-utils) cannot run: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{tool} {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn file_backing(dir: &Path, name: &str, size: usize) -> (PathBuf, Backing) {
    let p = dir.join(name);
    std::fs::write(&p, random(size)).unwrap();
    (
        p.clone(),
        Backing::File {
            path: p,
            direct: false,
        },
    )
}

/// Writes `size` random bytes to `url` with `qemu-img convert` (to `dir/NAME.src` first),
/// reads them back into `dir/NAME.back` and compares.
fn qemu_img_round_trip(dir: &Path, name: &str, url: &str, size: usize) {
    let src = dir.join(format!("{name}.src"));
    let back = dir.join(format!("{name}.back"));
    let data = random(size);
    std::fs::write(&src, &data).unwrap();
    let (src, back_s) = (src.to_str().unwrap(), back.to_str().unwrap());
    run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", src, url],
    );
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", url, back_s],
    );
    assert!(
        std::fs::read(&back).unwrap() == data,
        "{name}: read back differs"
    );
}

#[test]
fn qemu_img_writes_and_reads_back_two_namespaces_with_checksums() {
    let dir = tmpdir();
    let (p1, b1) = file_backing(dir.path(), "ns1.img", 24 << 20);
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            (b1, LbaSize::B4096),
            (Backing::Ram { size: 16 << 20 }, LbaSize::B512),
        ],
        // A small MDTS: qemu's 1-2 MiB requests are split into many commands.
        Some(64 << 10),
    );
    let s = Setup::new(
        opts(t.local_addrs()[0].port(), 3),
        &[1, 2],
        ServerConfig::default(),
    );
    assert_eq!(s.engine.queue_count(), 3);
    assert_eq!(s.engine.geometry(0).unwrap().max_transfer, 64 << 10);
    let info = run("qemu-img", &["info", &s.url("ns2")]);
    assert!(info.contains("16 MiB"), "{info}");
    for (export, size) in [("ns1", 24usize << 20), ("ns2", 16 << 20)] {
        qemu_img_round_trip(dir.path(), export, &s.url(export), size);
    }
    // The first namespace is a file: the data is in it.
    let src = std::fs::read(dir.path().join("ns1.src")).unwrap();
    assert!(std::fs::read(&p1).unwrap() == src, "namespace file differs");
    drop(s);
    t.shutdown();
}

#[test]
fn qemu_img_over_a_unix_socket_writes_and_reads_back() {
    let dir = tmpdir();
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![(Backing::Ram { size: 16 << 20 }, LbaSize::B512)],
        None,
    );
    let sock = dir.path().join("nbd.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let s = Setup::on(
        opts(t.local_addrs()[0].port(), 2),
        &[1],
        ServerConfig::default(),
        l.into(),
    );
    let url = s.url("ns1");
    assert_eq!(url, format!("nbd+unix:///ns1?socket={}", sock.display()));
    let info = run("qemu-img", &["info", &url]);
    assert!(info.contains("16 MiB"), "{info}");
    qemu_img_round_trip(dir.path(), "ns1", &url, 16 << 20);
    // Shutting down wakes the accepting thread of a Unix socket too: no hang.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(s);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the server on a Unix socket did not shut down");
    t.shutdown();
}

#[test]
fn qemu_io_write_zeroes_discard_fua_flush_and_unaligned_writes() {
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![(Backing::Ram { size: 8 << 20 }, LbaSize::B4096)],
        None,
    );
    let s = Setup::new(
        opts(t.local_addrs()[0].port(), 2),
        &[1],
        ServerConfig::default(),
    );
    let url = s.url("ns1");
    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "write -z 64k 128k",
            "-c",
            "write -f -P 0xcd 512k 4k",
            "-c",
            "write -P 0x11 700k 5", // not block aligned: qemu reads, modifies, writes
            "-c",
            "flush",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "read -P 0 64k 128k",
            "-c",
            "read -P 0xab 192k 320k",
            "-c",
            "read -P 0xcd 512k 4k",
            "-c",
            "read -P 0x11 700k 5",
            "-c",
            "read -P 0xab 716805 1k",
            "-c",
            "discard 1M 1M",
            &url,
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.contains("error"), "{out}");
    drop(s);
    t.shutdown();
}

/// A minimal NBD client for the malformed-input cases.
struct Client {
    s: TcpStream,
}

fn option(s: &mut TcpStream, o: u32, data: &[u8]) {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&o.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
}

/// Reads one option reply: (type, data).
fn option_reply(s: &mut TcpStream) -> (u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    let t = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
    let mut d = vec![0u8; len];
    s.read_exact(&mut d).unwrap();
    (t, d)
}

impl Client {
    fn connect(addr: SocketAddr, export: &str) -> Self {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        s.write_all(&3u32.to_be_bytes()).unwrap();
        let mut d = (export.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(export.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        option(&mut s, opt::GO, &d);
        loop {
            let (t, _) = option_reply(&mut s);
            assert!(t == rep::INFO || t == rep::ACK, "GO refused: {t:#x}");
            if t == rep::ACK {
                break;
            }
        }
        Self { s }
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let h = RequestHeader {
            flags,
            kind,
            cookie,
            offset,
            length,
        };
        self.s.write_all(&h.emit()).unwrap();
        self.s.write_all(payload).unwrap();
    }

    /// Reads a simple reply: (error, cookie), and `data_len` data bytes if the error is 0.
    fn reply(&mut self, data_len: usize) -> (u32, u64, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(
            u32::from_be_bytes(h[0..4].try_into().unwrap()),
            proto::SIMPLE_REPLY_MAGIC
        );
        let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let mut data = Vec::new();
        if err == 0 && data_len > 0 {
            data = vec![0u8; data_len];
            self.s.read_exact(&mut data).unwrap();
        }
        (err, cookie, data)
    }

    /// True if the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

const READ: u16 = 0;
const WRITE: u16 = 1;
const DISC: u16 = 2;
const FLUSH: u16 = 3;
const TRIM: u16 = 4;
const BLOCK_STATUS: u16 = 7;

#[test]
fn malformed_requests_get_clear_errors_and_the_server_stays_up() {
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![(Backing::Ram { size: 4 << 20 }, LbaSize::B4096)],
        None,
    );
    let cfg = ServerConfig {
        max_payload: 1 << 20,
        ..ServerConfig::default()
    };
    let s = Setup::new(opts(t.local_addrs()[0].port(), 1), &[1], cfg);
    let mut c = Client::connect(s.addr(), "ns1");
    let block = random(4096);
    c.send(WRITE, 0, 1, 8192, 4096, &block);
    assert_eq!(c.reply(0).0, 0);
    // Unaligned offset, unaligned length, beyond the end, too long, unknown command,
    // unknown flag, a command that was not negotiated: EINVAL each, payloads consumed.
    c.send(READ, 0, 2, 100, 4096, &[]);
    c.send(WRITE, 0, 3, 4096, 100, &[0; 100]);
    c.send(WRITE, 0, 4, 4 << 20, 4096, &block);
    c.send(READ, 0, 5, 0, 2 << 20, &[]);
    c.send(99, 0, 6, 0, 0, &[]);
    c.send(READ, 1 << 7, 7, 0, 4096, &[]);
    c.send(BLOCK_STATUS, 0, 8, 0, 4096, &[]);
    let mut seen = Vec::new();
    for _ in 0..7 {
        let (err, cookie, _) = c.reply(0);
        assert_eq!(err, proto::errno::EINVAL, "cookie {cookie}");
        seen.push(cookie);
    }
    seen.sort();
    assert_eq!(seen, (2..=8).collect::<Vec<u64>>());
    // The connection still works, and the data is there.
    c.send(FLUSH, 0, 9, 0, 0, &[]);
    assert_eq!(c.reply(0).0, 0);
    c.send(READ, 0, 10, 8192, 4096, &[]);
    let (err, cookie, data) = c.reply(4096);
    assert_eq!((err, cookie), (0, 10));
    assert!(data == block);
    c.send(TRIM, 0, 11, 2 << 20, 1 << 20, &[]);
    assert_eq!(c.reply(0).0, 0);
    // A bad magic cannot be recovered from: the server closes that connection.
    c.s.write_all(&[0xde; 28]).unwrap();
    assert!(c.closed());
    // A write longer than the maximum payload cannot be skipped safely: closed too.
    let mut c = Client::connect(s.addr(), "ns1");
    c.send(WRITE, 0, 1, 0, 64 << 20, &[]);
    assert!(c.closed());
    // An unknown export is refused in the negotiation, which goes on.
    let mut raw = TcpStream::connect(s.addr()).unwrap();
    let mut g = [0u8; 18];
    raw.read_exact(&mut g).unwrap();
    raw.write_all(&1u32.to_be_bytes()).unwrap();
    option(&mut raw, opt::GO, b"\0\0\0\x04nope\0\0");
    assert_eq!(option_reply(&mut raw).0, rep::ERR_UNKNOWN);
    option(&mut raw, opt::ABORT, &[]);
    assert_eq!(option_reply(&mut raw).0, rep::ACK);
    // Other clients are served throughout.
    let mut c = Client::connect(s.addr(), "");
    c.send(READ, 0, 1, 8192, 4096, &[]);
    assert!(c.reply(4096).2 == block);
    c.send(DISC, 0, 2, 0, 0, &[]);
    assert!(c.closed());
    drop(s);
    t.shutdown();
}

/// Waits (bounded) until the server serves `n` connections.
fn wait_connections(s: &Setup, n: usize) {
    for _ in 0..2000 {
        if s.server.as_ref().unwrap().connections() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the server still has {} connections, expected {n}",
        s.server.as_ref().unwrap().connections()
    );
}

#[test]
fn client_vanishing_mid_io_leaves_the_server_serving() {
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![(Backing::Ram { size: 16 << 20 }, LbaSize::B4096)],
        None,
    );
    let s = Setup::new(
        opts(t.local_addrs()[0].port(), 2),
        &[1],
        ServerConfig::default(),
    );
    let data = random(128 << 10);
    {
        let mut c = Client::connect(s.addr(), "ns1");
        for i in 0..64u64 {
            c.send(WRITE, 0, i, i * (128 << 10), 128 << 10, &data);
        }
        for i in 0..32u64 {
            c.send(READ, 0, 100 + i, i * (128 << 10), 128 << 10, &[]);
        }
        // Half a request, then gone without reading a reply.
        c.s.write_all(&[0x25, 0x60]).unwrap();
    }
    wait_connections(&s, 0);
    let mut c = Client::connect(s.addr(), "ns1");
    c.send(FLUSH, 0, 1, 0, 0, &[]);
    assert_eq!(c.reply(0).0, 0);
    c.send(READ, 0, 2, 63 * (128 << 10), 128 << 10, &[]);
    let (err, _, back) = c.reply(128 << 10);
    assert_eq!(err, 0);
    // Every write was sent before the client left; whether it ran is not acknowledged, so
    // only a successful, complete read is asserted, plus the server's survival.
    assert_eq!(back.len(), 128 << 10);
    drop(c);
    wait_connections(&s, 0);
    drop(s);
    t.shutdown();
}

#[test]
fn target_restart_during_io_loses_no_acknowledged_write() {
    let dir = tmpdir();
    let (path, backing) = file_backing(dir.path(), "ns.img", 16 << 20);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let t = target(addr, vec![(backing.clone(), LbaSize::B4096)], None);
    let taddr = t.local_addrs()[0];
    let mut o = opts(taddr.port(), 2);
    o.kato = None;
    let s = Setup::new(o, &[1], ServerConfig::default());
    let mut c = Client::connect(s.addr(), "ns1");
    let chunk = 64 << 10;
    let chunks: Vec<Vec<u8>> = (0..48).map(|_| random(chunk)).collect();
    // 16 writes in flight; the target goes away after 8 are acknowledged.
    for (i, d) in chunks.iter().enumerate().take(16) {
        c.send(WRITE, 0, i as u64, (i * chunk) as u64, chunk as u32, d);
    }
    let mut acked = Vec::new();
    for _ in 0..8 {
        let (err, cookie, _) = c.reply(0);
        assert_eq!(err, 0);
        acked.push(cookie);
    }
    t.shutdown();
    // More writes while the target is down: they wait for the reconnect.
    for (i, d) in chunks.iter().enumerate().skip(16) {
        c.send(WRITE, 0, i as u64, (i * chunk) as u64, chunk as u32, d);
    }
    let t2 = target(taddr, vec![(backing, LbaSize::B4096)], None);
    while acked.len() < chunks.len() {
        let (err, cookie, _) = c.reply(0);
        assert_eq!(err, 0, "write {cookie} failed across the restart");
        acked.push(cookie);
    }
    c.send(FLUSH, 0, 1000, 0, 0, &[]);
    assert_eq!(c.reply(0).0, 0);
    for (i, d) in chunks.iter().enumerate() {
        c.send(READ, 0, i as u64, (i * chunk) as u64, chunk as u32, &[]);
        let (err, _, back) = c.reply(chunk);
        assert_eq!(err, 0);
        assert!(&back == d, "chunk {i} differs");
    }
    let file = std::fs::read(&path).unwrap();
    for (i, d) in chunks.iter().enumerate() {
        assert!(
            file[i * chunk..(i + 1) * chunk] == d[..],
            "chunk {i} not in the file"
        );
    }
    drop(c);
    drop(s);
    t2.shutdown();
}

#[test]
fn target_gone_for_good_fails_io_cleanly() {
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![(Backing::Ram { size: 4 << 20 }, LbaSize::B4096)],
        None,
    );
    let mut o = opts(t.local_addrs()[0].port(), 1);
    o.kato = None;
    o.ctrl_loss_tmo = Some(Duration::from_millis(500));
    let s = Setup::new(o, &[1], ServerConfig::default());
    let mut c = Client::connect(s.addr(), "ns1");
    c.send(READ, 0, 1, 0, 4096, &[]);
    assert_eq!(c.reply(4096).0, 0);
    t.shutdown();
    for cookie in 2..5 {
        c.send(READ, 0, cookie, 0, 4096, &[]);
        let (err, got, _) = c.reply(4096);
        assert_eq!((err, got), (proto::errno::EIO, cookie));
    }
    c.send(DISC, 0, 9, 0, 0, &[]);
    assert!(c.closed());
}

#[test]
fn a_namespace_that_disappears_fails_its_io_and_the_others_go_on() {
    let t = target(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            (Backing::Ram { size: 4 << 20 }, LbaSize::B4096),
            (Backing::Ram { size: 4 << 20 }, LbaSize::B4096),
        ],
        None,
    );
    let s = Setup::new(
        opts(t.local_addrs()[0].port(), 1),
        &[1, 2],
        ServerConfig::default(),
    );
    let mut c1 = Client::connect(s.addr(), "ns1");
    let mut c2 = Client::connect(s.addr(), "ns2");
    c2.send(READ, 0, 1, 0, 4096, &[]);
    assert_eq!(c2.reply(4096).0, 0);
    t.remove_namespace(NQN, 2).unwrap();
    for cookie in 2..4 {
        c2.send(READ, 0, cookie, 0, 4096, &[]);
        let (err, got, _) = c2.reply(4096);
        assert_eq!(got, cookie);
        assert_eq!(
            err,
            proto::errno::EIO,
            "Invalid Namespace is an I/O error for NBD"
        );
    }
    c1.send(WRITE, 0, 1, 0, 4096, &[7; 4096]);
    assert_eq!(c1.reply(0).0, 0);
    c1.send(READ, 0, 2, 0, 4096, &[]);
    assert!(c1.reply(4096).2 == [7; 4096]);
    drop((c1, c2));
    drop(s);
    t.shutdown();
}
