//! NVMe/TCP over TLS 1.3 (TP 8011) between the host and the project's target on loopback:
//! data round trips through TLS queues, a TLS-required port refuses clear text, a port
//! without TLS refuses a ClientHello, a wrong PSK is refused, and none of these failures
//! touches the controllers already connected. The discovery log names the secure channel.

use std::sync::Arc;
use std::time::Duration;

use nvme_tcp_host::{ConnectOptions, Controller, DdpNetdev, HostError, TlsOptions, discovery};
use nvme_tcp_target::config::PortTls;
use nvme_tcp_target::namespace::Backing;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use nvme_tcp_tls::{ConfiguredPsk, IdentityVersion, KeyHash};
use nvme_tcp_wire::nvme::log::{sectype, treq};
use rand::RngCore;

const NQN: &str = "nqn.2024-01.io.test:tls";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:6d1f0f6e-9a3c-4f4e-8a55-0d6c3b1e2a77";

fn key(b: u8) -> ConfiguredPsk {
    ConfiguredPsk::new(KeyHash::Sha256, vec![b; 32]).unwrap()
}

/// A target with a TLS port (`tls`) and a clear-text port, `HOST` holding `key(1)`.
fn target(tls: PortTls) -> TargetHandle {
    let ns = NamespaceConfig::new(Backing::Ram { size: 16 << 20 });
    let mut cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap())
        .subsystem(SubsystemConfig::new(NQN).namespace(ns));
    cfg.ports[0].tls = tls;
    let mut plain = nvme_tcp_target::PortConfig::new(2, "127.0.0.1:0".parse().unwrap());
    plain.tls = PortTls::None;
    cfg.ports.push(plain);
    cfg.tls_keys.insert(HOST.into(), key(1));
    Target::start(cfg).expect("target starts")
}

fn opts(port: u16, tls: Option<ConfiguredPsk>) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port, NQN);
    o.hostnqn = HOST.into();
    o.ctrl_loss_tmo = Some(Duration::ZERO);
    o.connect_timeout = Duration::from_secs(10);
    o.tls = tls.map(|key| TlsOptions {
        key,
        identity: IdentityVersion::V0,
    });
    o
}

fn round_trip(ctrl: &Controller, lba: u64, len: usize) {
    let ns = ctrl.namespace(1).unwrap();
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    ctrl.write_at(&ns, lba, &data).expect("write");
    let mut back = vec![0u8; len];
    ctrl.read_at(&ns, lba, &mut back).expect("read");
    assert!(back == data, "data differs");
}

#[test]
fn data_round_trips_over_tls_with_and_without_digests_and_both_identity_versions() {
    let t = target(PortTls::Required);
    let port = t.local_addrs()[0].port();
    for (digests, version) in [(false, IdentityVersion::V0), (true, IdentityVersion::V1)] {
        let mut o = opts(port, Some(key(1)));
        o.tls.as_mut().unwrap().identity = version;
        o.hdgst = digests;
        o.ddgst = digests;
        o.nr_io_queues = 2;
        o.queue_size = 32;
        let ctrl = Controller::connect(o).expect("TLS connect");
        // Large transfers (many TLS records per PDU) and small ones.
        round_trip(&ctrl, 0, 4 << 20);
        round_trip(&ctrl, 3000, 4096);
        ctrl.shutdown();
    }
}

#[test]
fn a_tls_required_port_refuses_clear_text_and_the_tls_controller_keeps_working() {
    let t = target(PortTls::Required);
    let port = t.local_addrs()[0].port();
    let ctrl = Controller::connect(opts(port, Some(key(1)))).expect("TLS connect");
    let e = Controller::connect(opts(port, None)).expect_err("clear text refused");
    assert!(
        matches!(
            e,
            HostError::Io(_) | HostError::Protocol(_) | HostError::Timeout { .. }
        ),
        "{e}"
    );
    round_trip(&ctrl, 0, 64 << 10);
    ctrl.shutdown();
}

#[test]
fn a_port_without_tls_refuses_a_client_hello_and_a_wrong_psk_is_refused() {
    let t = target(PortTls::Required);
    let (tls_port, plain_port) = (t.local_addrs()[0].port(), t.local_addrs()[1].port());
    let plain = Controller::connect(opts(plain_port, None)).expect("clear-text connect");
    let tls = Controller::connect(opts(tls_port, Some(key(1)))).expect("TLS connect");
    // ClientHello on the clear-text port.
    let e = Controller::connect(opts(plain_port, Some(key(1)))).expect_err("no TLS there");
    assert!(matches!(e, HostError::Tls(_)), "{e}");
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
    // Wrong key on the TLS port.
    let e = Controller::connect(opts(tls_port, Some(key(2)))).expect_err("wrong PSK");
    assert!(matches!(e, HostError::Tls(_)), "{e}");
    assert!(e.to_string().contains("PSK was refused"), "{e}");
    // A host without a key on the target.
    let mut o = opts(tls_port, Some(key(1)));
    o.hostnqn = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000000".into();
    assert!(matches!(Controller::connect(o), Err(HostError::Tls(_))));
    round_trip(&plain, 0, 64 << 10);
    round_trip(&tls, 100, 64 << 10);
    plain.shutdown();
    tls.shutdown();
}

#[test]
fn a_tls_optional_port_takes_both() {
    let t = target(PortTls::NotRequired);
    let port = t.local_addrs()[0].port();
    let a = Controller::connect(opts(port, Some(key(1)))).expect("TLS connect");
    let b = Controller::connect(opts(port, None)).expect("clear-text connect");
    round_trip(&a, 0, 256 << 10);
    round_trip(&b, 1000, 256 << 10);
    a.shutdown();
    b.shutdown();
}

#[test]
fn the_discovery_log_names_the_secure_channel_of_each_port() {
    let t = target(PortTls::Required);
    let (tls_port, plain_port) = (t.local_addrs()[0].port(), t.local_addrs()[1].port());
    let mut o = ConnectOptions::discovery("127.0.0.1", tls_port);
    o.hostnqn = HOST.into();
    o.tls = Some(TlsOptions {
        key: key(1),
        identity: IdentityVersion::V0,
    });
    let log = discovery::discover(o).expect("discovery over TLS");
    let for_port = |p: u16| {
        log.entries
            .iter()
            .find(|e| e.subnqn == NQN && e.trsvcid == p.to_string())
            .unwrap_or_else(|| panic!("no entry for port {p}: {log:?}"))
            .clone()
    };
    let e = for_port(tls_port);
    assert_eq!(
        (e.treq & 3, e.sectype),
        (treq::SECURE_CHANNEL_REQUIRED, sectype::TLS13)
    );
    let e = for_port(plain_port);
    assert_eq!(e.treq & 3, treq::SECURE_CHANNEL_NOT_SPECIFIED);
    assert_eq!(e.sectype, sectype::NONE);
}

#[test]
fn tls_queues_do_not_use_an_offload_device_without_tls() {
    let dev = ddp_engine::SoftDdpDevice::new(ddp_engine::EngineConfig::default());
    let shared: Arc<dyn ulp_ddp::UlpDdpDevice> = Arc::new(dev);
    assert!(!shared.limits(ulp_ddp::UlpDdpType::Nvme).unwrap().tls);
    assert!(DdpNetdev::probe(&shared, false).is_some());
    assert!(DdpNetdev::probe(&shared, true).is_none());
}

/// A controller that answers the ClientHello one byte at a time, each well within the
/// connect timeout, fails the connect once the connect timeout has passed: the timeout
/// bounds the whole handshake, not each read.
#[test]
fn a_controller_that_trickles_its_handshake_fails_the_connect_after_the_connect_timeout() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    const BYTES: usize = 100;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let peer = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let (mut c, _) = l.accept().unwrap();
            let mut hello = [0u8; 5];
            c.read_exact(&mut hello).unwrap();
            // A handshake record announcing 512 bytes, then its body byte by byte.
            c.write_all(&[0x16, 0x03, 0x03, 0x02, 0x00]).unwrap();
            let mut sent = 0;
            while sent < BYTES && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
                if c.write_all(&[0]).is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        }
    });
    let mut o = opts(port, Some(key(1)));
    o.connect_timeout = Duration::from_millis(300);
    let r = Controller::connect(o);
    stop.store(true, Ordering::Release);
    let sent = peer.join().unwrap();
    let e = r.expect_err("a handshake of zeros succeeded");
    assert!(
        sent < BYTES,
        "the handshake waited for all {sent} bytes, one every 50 ms, with a 300 ms connect \
         timeout ({e})"
    );
    assert!(
        matches!(&e, HostError::Tls(m) if m.contains("connect timeout")),
        "{e}"
    );
}
