//! Captures as they come in real life: truncated, corrupted, without NVMe/TCP, cut by a snap
//! length, missing a connection's start — and in other encodings of the same traffic (IPv6,
//! raw IP, Linux cooked). Each gives a clear message and a partial report, never a panic, and
//! the device never "disagrees" with a capture because the capture is bad.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ddp_replay::capture::{
    Capture, CaptureError, CaptureProblem, TcpPacket, read_capture, read_capture_file,
};
use ddp_replay::{ReplayOptions, replay};
use etherparse::PacketBuilder;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use proptest::prelude::*;

fn path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(name)
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).expect("stored capture")
}

fn load(name: &str) -> Capture {
    read_capture_file(&path(name)).expect("stored capture")
}

/// Writes frames as a pcap file with the given link type.
fn pcap(link: DataLink, frames: &[(Vec<u8>, u32)]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: link,
        snaplen: 1 << 18,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
    for (i, (data, orig_len)) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket {
            timestamp: Duration::from_micros(i as u64),
            orig_len: *orig_len,
            data: Cow::Borrowed(data),
        })
        .expect("write packet");
    }
    w.into_writer()
}

/// A TCP segment as an Ethernet frame (or a raw IP packet), IPv4 or IPv6 as its addresses.
fn frame(p: &TcpPacket, ethernet: bool) -> Vec<u8> {
    let tcp = |ip: etherparse::PacketBuilderStep<etherparse::IpHeaders>| {
        let mut t = ip.tcp(p.src.port(), p.dst.port(), p.seq, 65535);
        if p.syn {
            t = t.syn();
        }
        if p.fin {
            t = t.fin();
        }
        if p.rst {
            t = t.rst();
        }
        let mut out = Vec::new();
        t.write(&mut out, &p.payload).expect("build");
        out
    };
    let ip = |src: IpAddr, dst: IpAddr| -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match (src, dst, ethernet) {
            (IpAddr::V4(s), IpAddr::V4(d), true) => {
                PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(s.octets(), d.octets(), 64)
            }
            (IpAddr::V6(s), IpAddr::V6(d), true) => {
                PacketBuilder::ethernet2([1; 6], [2; 6]).ipv6(s.octets(), d.octets(), 64)
            }
            (IpAddr::V4(s), IpAddr::V4(d), false) => {
                PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            }
            (IpAddr::V6(s), IpAddr::V6(d), false) => {
                PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            }
            _ => unreachable!("mixed address families"),
        }
    };
    tcp(ip(p.src.ip(), p.dst.ip()))
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    let v4 = match a.ip() {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    };
    SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port())
}

#[test]
fn ipv6_and_raw_ip_give_the_same_result_as_the_original() {
    let cap = load("our-target-digests.pcapng");
    let want = replay(&cap, &ReplayOptions::default()).summary;
    for (v6, ethernet) in [(true, true), (true, false), (false, false)] {
        let frames: Vec<(Vec<u8>, u32)> = cap
            .packets
            .iter()
            .map(|p| {
                let mut q = p.clone();
                if v6 {
                    q.src = to_v6(p.src);
                    q.dst = to_v6(p.dst);
                }
                let f = frame(&q, ethernet);
                let n = f.len() as u32;
                (f, n)
            })
            .collect();
        let link = if ethernet {
            DataLink::ETHERNET
        } else {
            DataLink::RAW
        };
        let got = replay(
            &read_capture(&pcap(link, &frames)).expect("valid"),
            &ReplayOptions::default(),
        )
        .summary;
        let case = format!("ipv6 {v6} ethernet {ethernet}");
        assert_eq!(got.connections.len(), want.connections.len(), "{case}");
        assert_eq!(got.reads_checked, want.reads_checked, "{case}");
        assert_eq!(got.bytes_placed, want.bytes_placed, "{case}");
        assert_eq!(got.ddgst_device, want.ddgst_device, "{case}");
        assert_eq!(got.stats, want.stats, "{case}");
        if v6 {
            assert!(got.connections[0].stream.starts_with("[::ffff:127.0.0.1]"));
        }
        assert!(got.is_clean());
    }
}

#[test]
fn a_truncated_capture_gives_a_partial_report() {
    for name in ["our-target-plain.pcap", "our-target-digests.pcapng"] {
        let all = bytes(name);
        let full = replay(
            &read_capture(&all).expect("valid"),
            &ReplayOptions::default(),
        )
        .summary;
        let cut = &all[..all.len() * 3 / 5];
        let cap = read_capture(cut).expect("header intact");
        assert!(
            matches!(cap.problems.as_slice(), [CaptureProblem::Broken { .. }]),
            "{name}: {:?}",
            cap.problems
        );
        let s = replay(&cap, &ReplayOptions::default()).summary;
        assert!(s.to_text().contains("capture broken at frame"), "{name}");
        assert!(!s.connections.is_empty(), "{name}");
        assert!(s.reads_checked > 0 && s.reads_checked <= full.reads_checked);
        assert!(s.frames.frames < full.frames.frames);
        assert!(s.is_clean(), "{name}:\n{}", s.to_text());
    }
}

#[test]
fn not_a_capture_is_a_clear_error() {
    for junk in [&b""[..], b"ab", b"hello world, not a capture"] {
        match read_capture(junk) {
            Err(CaptureError::UnknownFormat(_)) => {}
            other => panic!("{junk:?}: {other:?}"),
        }
    }
    // A pcap magic with a broken header.
    let mut bad = bytes("our-target-plain.pcap");
    bad.truncate(10);
    assert!(matches!(
        read_capture(&bad),
        Err(CaptureError::BadHeader(_))
    ));
}

#[test]
fn a_capture_without_nvme_tcp_says_so() {
    let pkts = [
        TcpPacket {
            frame: 1,
            src: "10.0.0.1:40000".parse().expect("addr"),
            dst: "10.0.0.2:80".parse().expect("addr"),
            seq: 1,
            syn: false,
            fin: false,
            rst: false,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        },
        TcpPacket {
            frame: 2,
            src: "10.0.0.2:80".parse().expect("addr"),
            dst: "10.0.0.1:40000".parse().expect("addr"),
            seq: 1,
            syn: false,
            fin: false,
            rst: false,
            payload: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        },
    ];
    let mut frames: Vec<(Vec<u8>, u32)> = pkts
        .iter()
        .map(|p| {
            let f = frame(p, true);
            let n = f.len() as u32;
            (f, n)
        })
        .collect();
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5353, 5353)
        .write(&mut udp, b"mdns")
        .expect("udp");
    let n = udp.len() as u32;
    frames.push((udp, n));
    let cap = read_capture(&pcap(DataLink::ETHERNET, &frames)).expect("valid");
    assert_eq!((cap.counts.tcp_segments, cap.counts.not_tcp), (2, 1));
    let s = replay(&cap, &ReplayOptions::default()).summary;
    assert!(s.connections.is_empty());
    assert_eq!(s.other_connections, 1);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("no NVMe/TCP connection"))
    );
    assert!(s.is_clean());
}

#[test]
fn a_snap_length_that_cut_payload_is_counted_and_survived() {
    let cap = load("kernel-target-digests.pcap");
    let full = replay(&cap, &ReplayOptions::default()).summary;
    // As `tcpdump -s 1000` would have captured it.
    let frames: Vec<(Vec<u8>, u32)> = cap
        .packets
        .iter()
        .map(|p| {
            let f = frame(p, true);
            let n = f.len() as u32;
            (f[..f.len().min(1000)].to_vec(), n)
        })
        .collect();
    let cut = read_capture(&pcap(DataLink::ETHERNET, &frames)).expect("valid");
    assert!(cut.counts.snaplen_cut > 0);
    assert_eq!(
        cut.counts.snaplen_cut + cut.counts.tcp_segments,
        cap.counts.tcp_segments
    );
    let s = replay(&cut, &ReplayOptions::default()).summary;
    assert!(s.to_text().contains("cut by snaplen"));
    assert!(
        s.findings.iter().any(|f| f.kind == "stream-hole"),
        "{}",
        s.to_text()
    );
    assert!(s.bytes_placed < full.bytes_placed);
    assert!(s.is_clean(), "{}", s.to_text());
}

#[test]
fn a_connection_without_its_start_is_offloaded_through_resync() {
    // The stored Linux capture started after the connect: no SYN, ICReq or Connect.
    let s = replay(
        &load("linux-host-midstream.pcap"),
        &ReplayOptions::default(),
    )
    .summary;
    assert!(s.connections.iter().all(|c| !c.from_start));
    assert!(s.resync_confirmed > 0, "{}", s.to_text());
    assert!(s.bytes_placed > 0, "{}", s.to_text());
    assert!(s.is_clean(), "{}", s.to_text());

    // Our capture with its first frames gone: connections that started before the cut are
    // replayed from the middle, inside PDUs.
    let cap = load("our-target-digests.pcapng");
    for drop in [40usize, 150, 200] {
        let mut c = cap.clone();
        c.packets.drain(..drop);
        let s = replay(&c, &ReplayOptions::default()).summary;
        assert!(s.connections.iter().any(|c| !c.from_start), "drop {drop}");
        assert!(s.is_clean(), "drop {drop}:\n{}", s.to_text());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any truncation and any corruption of a capture file: read and replayed without a
    /// panic, and what cannot be read is said.
    #[test]
    fn corrupted_captures_never_panic(
        which in 0usize..2,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..40),
    ) {
        let name = ["kernel-target-plain.pcap", "our-target-digests.pcapng"][which];
        let mut b = bytes(name);
        for (at, x) in flips {
            let i = ((b.len() as f64 * at) as usize).min(b.len() - 1);
            b[i] ^= x | 1;
        }
        b.truncate(((b.len() as f64) * cut) as usize);
        if let Ok(cap) = read_capture(&b) {
            let s = replay(&cap, &ReplayOptions::default()).summary;
            let _ = s.to_text();
        }
    }
}
