//! The control plane end to end: a Unix socket, a software device, the JSON-RPC methods and
//! the Prometheus endpoint.

use std::io::{Read, Write};
use std::sync::Arc;

use ddp_engine::{EngineConfig, SoftDdpDevice};
use serde_json::json;
use ulp_ddp::{Cap, CapSet};
use ulp_ddp_ctl::client::{Client, ClientError};
use ulp_ddp_ctl::metrics::{MetricsServer, QueueMetricsSet};
use ulp_ddp_ctl::server::ControlServer;
use ulp_ddp_ctl::{Registry, SharedDevice};

fn device(hw: CapSet, active: CapSet) -> SharedDevice {
    let cfg = EngineConfig {
        caps_hw: hw,
        caps_active: active,
        ..EngineConfig::connectx7_like()
    };
    Arc::new(SoftDdpDevice::new(cfg))
}

fn setup() -> (tempfile::TempDir, ControlServer, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    reg.add("sim0", device(CapSet::ALL, CapSet::EMPTY));
    reg.add("sim1", device(CapSet::of(Cap::NvmeTcp), CapSet::EMPTY));
    let srv = ControlServer::bind(dir.path().join("ctl.sock"), reg.clone()).unwrap();
    (dir, srv, reg)
}

#[test]
fn caps_get_reports_hw_and_active_by_name() {
    let (_d, srv, _r) = setup();
    let mut c = Client::connect(srv.path()).unwrap();
    let r = c.call("caps-get", json!({"ifindex": 1})).unwrap();
    assert_eq!(
        r,
        json!({"ifindex": 1, "hw": ["nvme-tcp", "nvme-tcp-ddgst-rx"], "active": []})
    );
}

#[test]
fn caps_set_applies_the_mask_and_notifies_subscribers() {
    let (_d, srv, _r) = setup();
    let mut sub = Client::connect(srv.path()).unwrap();
    sub.subscribe().unwrap();
    let mut c = Client::connect(srv.path()).unwrap();
    let r = c
        .call(
            "caps-set",
            json!({"ifindex": 1, "wanted": 3, "wanted-mask": ["nvme-tcp"]}),
        )
        .unwrap();
    assert_eq!(r["active"], json!(["nvme-tcp"]));
    let (m, p) = sub.next_notification().unwrap();
    assert_eq!(m, "caps-set-ntf");
    assert_eq!(
        p,
        json!({"ifindex": 1, "hw": ["nvme-tcp", "nvme-tcp-ddgst-rx"], "active": ["nvme-tcp"]})
    );
    // Same request again: nothing changes, so no notification; the next one we get is for
    // the following real change.
    c.call(
        "caps-set",
        json!({"ifindex": 1, "wanted": 3, "wanted-mask": 1}),
    )
    .unwrap();
    c.call(
        "caps-set",
        json!({"ifindex": 1, "wanted": 0, "wanted_mask": 1}),
    )
    .unwrap();
    let (_, p) = sub.next_notification().unwrap();
    assert_eq!(p["active"], json!([]));
}

#[test]
fn a_subscriber_hears_every_change_made_after_its_subscribe_returned() {
    // The subscription is in place when the reply arrives: a change another client makes
    // right after is notified (the subscriber was once registered only after its reply).
    let (_d, srv, _r) = setup();
    let mut c = Client::connect(srv.path()).unwrap();
    for i in 0..300 {
        let mut sub = Client::connect(srv.path()).unwrap();
        sub.set_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        sub.subscribe().unwrap();
        let wanted = if i % 2 == 0 { 1 } else { 0 };
        c.call(
            "caps-set",
            json!({"ifindex": 1, "wanted": wanted, "wanted-mask": 1}),
        )
        .unwrap();
        let (m, p) = sub
            .next_notification()
            .unwrap_or_else(|e| panic!("round {i}: no notification: {e}"));
        assert_eq!(m, "caps-set-ntf");
        let want = if wanted == 1 {
            json!(["nvme-tcp"])
        } else {
            json!([])
        };
        assert_eq!(p["active"], want, "round {i}");
    }
}

#[test]
fn unknown_capability_is_refused_and_changes_nothing() {
    let (_d, srv, _r) = setup();
    let mut c = Client::connect(srv.path()).unwrap();
    let e = c.call(
        "caps-set",
        json!({"ifindex": 1, "wanted": ["nvme-tls"], "wanted-mask": ["nvme-tls"]}),
    );
    match e {
        Err(ClientError::Rpc { code, message }) => {
            assert_eq!(code, -32602);
            assert!(message.contains("nvme-tls"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let e = c.call(
        "caps-set",
        json!({"ifindex": 1, "wanted": 4, "wanted-mask": 4}),
    );
    assert!(
        matches!(e, Err(ClientError::Rpc { code: -32602, .. })),
        "{e:?}"
    );
    assert_eq!(
        c.call("caps-get", json!({"ifindex": 1})).unwrap()["active"],
        json!([])
    );
}

#[test]
fn switching_on_a_capability_the_device_lacks_is_refused() {
    let (_d, srv, _r) = setup();
    let mut c = Client::connect(srv.path()).unwrap();
    let e = c.call(
        "caps-set",
        json!({"ifindex": 2, "wanted": 3, "wanted-mask": 3}),
    );
    match e {
        Err(ClientError::Rpc { code, message }) => {
            assert_eq!(code, -32001);
            assert!(message.contains("nvme-tcp-ddgst-rx"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        c.call("caps-get", json!({"ifindex": 2})).unwrap()["active"],
        json!([])
    );
    // Switching off what it lacks is harmless.
    assert!(
        c.call(
            "caps-set",
            json!({"ifindex": 2, "wanted": 0, "wanted-mask": 2})
        )
        .is_ok()
    );
}

#[test]
fn stats_get_names_the_ten_counters_like_the_netlink_family() {
    let (_d, srv, _r) = setup();
    let mut c = Client::connect(srv.path()).unwrap();
    let r = c.call("stats-get", json!({"ifindex": 1})).unwrap();
    let obj = r.as_object().unwrap();
    assert_eq!(obj.len(), 11);
    for n in [
        "sk-add",
        "sk-add-fail",
        "sk-del",
        "setup",
        "setup-fail",
        "teardown",
        "drop",
        "resync",
        "packets",
        "bytes",
    ] {
        assert_eq!(obj[&format!("rx-nvme-tcp-{n}")], json!(0), "{n}");
    }
}

#[test]
fn bad_requests_get_json_rpc_errors() {
    let (_d, srv, _r) = setup();
    let mut c = Client::connect(srv.path()).unwrap();
    assert!(matches!(
        c.call("caps-get", json!({"ifindex": 9})),
        Err(ClientError::Rpc { code: -32000, .. })
    ));
    assert!(matches!(
        c.call("caps-get", json!({})),
        Err(ClientError::Rpc { code: -32602, .. })
    ));
    assert!(matches!(
        c.call("frobnicate", json!({})),
        Err(ClientError::Rpc { code: -32601, .. })
    ));
    // Raw garbage on the socket: a parse error, and the connection stays usable.
    let mut raw = std::os::unix::net::UnixStream::connect(srv.path()).unwrap();
    raw.write_all(b"{not json\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"dev-list\"}\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while got.matches('\n').count() < 2 {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0);
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("-32700"), "{got}");
    assert!(got.contains("\"sim1\""), "{got}");
}

/// One `GET /metrics` (the connection closed after the answer); fails rather than hangs.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn metrics_endpoint_exposes_counters_and_queue_latency() {
    let reg = Registry::new();
    reg.add("sim0", device(CapSet::ALL, CapSet::ALL));
    let qm = Arc::new(QueueMetricsSet::new([1, 2]));
    qm.queue(1)
        .unwrap()
        .record(true, 4096, std::time::Duration::from_micros(30), true);
    let srv = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), reg, vec![Box::new(qm)]).unwrap();
    let body = scrape(srv.local_addr());
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("ulp_ddp_rx_nvme_tcp_sk_add_total{ifindex=\"1\",device=\"sim0\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("nvme_tcp_queue_reads_total{qid=\"1\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("nvme_tcp_queue_latency_seconds_bucket{qid=\"1\",le=\"5e-05\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("nvme_tcp_queue_latency_seconds_bucket{qid=\"1\",le=\"2.5e-05\"} 0"),
        "{body}"
    );
}

#[test]
fn metrics_without_a_device_have_no_ddp_families() {
    let srv = MetricsServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Registry::new(),
        vec![Box::new(Arc::new(QueueMetricsSet::new([1])))],
    )
    .unwrap();
    let body = scrape(srv.local_addr());
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(!body.contains("ulp_ddp_"), "{body}");
    assert!(
        body.contains("nvme_tcp_queue_reads_total{qid=\"1\"} 0"),
        "{body}"
    );
}

#[test]
fn idle_clients_do_not_hold_up_concurrent_scrapes() {
    let reg = Registry::new();
    reg.add("sim0", device(CapSet::ALL, CapSet::ALL));
    let srv = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), reg, Vec::new()).unwrap();
    let addr = srv.local_addr();
    // Clients that connect and send nothing, or half a request, and stay.
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /metr").unwrap();
        }
        idle.push(s);
    }
    // Eight scrapes at once, all answered while the idle clients are still connected.
    let scrapes: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || scrape(addr)))
        .collect();
    for t in scrapes {
        let body = t.join().unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("ulp_ddp_rx_nvme_tcp_sk_add_total"), "{body}");
    }
    // Keep-alive: two requests on one connection.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut both = String::new();
    s.read_to_string(&mut both).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 1, "{both}");
    assert_eq!(both.matches("HTTP/1.1 404").count(), 1, "{both}");
    drop(idle);
}
