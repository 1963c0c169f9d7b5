//! The packets a TUN device with `IFF_VNET_HDR` carries: a virtio-net header, then an IPv4
//! packet (anything else is forwarded untouched). TCP checksums, and re-segmentation of
//! TSO/GSO super-packets into wire-sized segments.

use std::net::Ipv4Addr;

/// Length of `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// virtio-net header flags and GSO types (virtio spec 5.1.6).
pub mod vnet {
    /// The checksum is partial: the sender computed only the pseudo-header sum.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum was verified (the kernel's `CHECKSUM_UNNECESSARY`).
    pub const F_DATA_VALID: u8 = 2;
    /// Not a GSO packet.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 super-packet.
    pub const GSO_TCPV4: u8 = 1;
    /// ECN bit of the GSO type.
    pub const GSO_ECN: u8 = 0x80;
}

/// Byte offsets inside the IPv4 and TCP headers (RFC 791, RFC 9293).
mod field {
    pub const IP_TOTAL_LEN: std::ops::Range<usize> = 2..4;
    pub const IP_ID: std::ops::Range<usize> = 4..6;
    pub const IP_PROTO: usize = 9;
    pub const IP_CSUM: std::ops::Range<usize> = 10..12;
    pub const IP_SRC: std::ops::Range<usize> = 12..16;
    pub const IP_DST: std::ops::Range<usize> = 16..20;
    pub const TCP_SPORT: std::ops::Range<usize> = 0..2;
    pub const TCP_DPORT: std::ops::Range<usize> = 2..4;
    pub const TCP_SEQ: std::ops::Range<usize> = 4..8;
    pub const TCP_DOFF: usize = 12;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CSUM: std::ops::Range<usize> = 16..18;
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// The virtio-net header fields the forwarder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_*` flags.
    pub flags: u8,
    /// `GSO_*` type.
    pub gso_type: u8,
    /// Payload bytes per segment of a GSO packet.
    pub gso_size: u16,
}

impl VnetHdr {
    /// Parses the header at the start of `pkt` (little-endian, as a TUN device without
    /// TUNSETVNETBE uses on little-endian machines; the fields are native-endian).
    pub fn parse(pkt: &[u8]) -> Option<Self> {
        let h = pkt.get(..VNET_HDR_LEN)?;
        Some(Self {
            flags: h[0],
            gso_type: h[1],
            gso_size: u16::from_ne_bytes([h[4], h[5]]),
        })
    }
}

/// A TCP/IPv4 segment: where its parts are inside an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSeg {
    /// IPv4 header length.
    pub ip_hlen: usize,
    /// TCP header length.
    pub tcp_hlen: usize,
    /// IP total length (bytes of the packet that count).
    pub total: usize,
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port.
    pub dst: (Ipv4Addr, u16),
    /// Sequence number.
    pub seq: u32,
    /// Flags.
    pub flags: u8,
}

impl TcpSeg {
    /// Parses an IPv4 packet carrying TCP; `None` for anything else, or a malformed packet
    /// (such packets are forwarded without a look).
    pub fn parse(ip: &[u8]) -> Option<Self> {
        let first = *ip.first()?;
        if first >> 4 != 4 || ip.get(field::IP_PROTO) != Some(&6) {
            return None;
        }
        let ip_hlen = usize::from(first & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes(
            ip.get(field::IP_TOTAL_LEN)?.try_into().ok()?,
        ));
        // A fragment (MF set or an offset) is not a whole segment.
        let frag = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?);
        if ip_hlen < 20 || total > ip.len() || frag & 0x3fff != 0 {
            return None;
        }
        let tcp = ip.get(ip_hlen..total)?;
        let tcp_hlen = usize::from(tcp.get(field::TCP_DOFF)? >> 4) * 4;
        if tcp_hlen < 20 || tcp_hlen > tcp.len() {
            return None;
        }
        let addr = |r: std::ops::Range<usize>| -> Option<Ipv4Addr> {
            let b: [u8; 4] = ip.get(r)?.try_into().ok()?;
            Some(Ipv4Addr::from(b))
        };
        let port = |r: std::ops::Range<usize>| -> Option<u16> {
            Some(u16::from_be_bytes(tcp.get(r)?.try_into().ok()?))
        };
        Some(Self {
            ip_hlen,
            tcp_hlen,
            total,
            src: (addr(field::IP_SRC)?, port(field::TCP_SPORT)?),
            dst: (addr(field::IP_DST)?, port(field::TCP_DPORT)?),
            seq: u32::from_be_bytes(tcp.get(field::TCP_SEQ)?.try_into().ok()?),
            flags: *tcp.get(field::TCP_FLAGS)?,
        })
    }

    /// Offset of the TCP payload in the IP packet.
    pub fn payload_start(&self) -> usize {
        self.ip_hlen + self.tcp_hlen
    }

    /// TCP payload length.
    pub fn payload_len(&self) -> usize {
        self.total - self.payload_start()
    }
}

/// Adds `data` to a ones-complement sum (RFC 1071), as big-endian 16-bit words; an odd last
/// byte is padded with zero. Summing 32-bit words and folding gives the same result.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP checksum sum over the pseudo-header and the segment (`ip` is the IPv4 packet).
fn tcp_sum(ip: &[u8], seg: &TcpSeg) -> u64 {
    let tcp_len = (seg.total - seg.ip_hlen) as u64;
    let mut acc = sum(&ip[field::IP_SRC.start..field::IP_DST.end], 0);
    acc += 6 + tcp_len;
    sum(&ip[seg.ip_hlen..seg.total], acc)
}

/// True if the TCP checksum of the segment is correct.
pub fn tcp_checksum_ok(ip: &[u8], seg: &TcpSeg) -> bool {
    fold(tcp_sum(ip, seg)) == 0xffff
}

/// Computes and stores the full TCP checksum of the segment.
pub fn set_tcp_checksum(ip: &mut [u8], seg: &TcpSeg) {
    let c = seg.ip_hlen + field::TCP_CSUM.start;
    ip[c..c + 2].fill(0);
    let v = !fold(tcp_sum(ip, seg));
    ip[c..c + 2].copy_from_slice(&v.to_be_bytes());
}

/// Computes and stores the IPv4 header checksum.
pub fn set_ip_checksum(ip: &mut [u8], ip_hlen: usize) {
    ip[field::IP_CSUM].fill(0);
    let v = !fold(sum(&ip[..ip_hlen], 0));
    ip[field::IP_CSUM].copy_from_slice(&v.to_be_bytes());
}

/// Splits a TCP/IPv4 packet (`ip`, parsed as `seg`) into segments of at most `mss` payload
/// bytes, each a complete packet with a virtio-net header (no flags) and full IP and TCP
/// checksums, appended to `out`. A packet that needs no split gets its checksums completed.
/// The sequence numbers advance, the IP ID increments, and FIN/PSH stay on the last
/// segment and CWR on the first, as the kernel's TSO segmentation does.
pub fn segment(ip: &[u8], seg: &TcpSeg, mss: usize, out: &mut Vec<Vec<u8>>) {
    let hlen = seg.payload_start();
    let payload = &ip[hlen..seg.total];
    let mss = mss.max(1);
    let n = payload.len().div_ceil(mss).max(1);
    let id = u16::from_be_bytes([ip[field::IP_ID.start], ip[field::IP_ID.start + 1]]);
    for i in 0..n {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let mut p = Vec::with_capacity(VNET_HDR_LEN + hlen + chunk.len());
        p.extend_from_slice(&[0; VNET_HDR_LEN]);
        p.extend_from_slice(&ip[..hlen]);
        p.extend_from_slice(chunk);
        let q = &mut p[VNET_HDR_LEN..];
        let total = (hlen + chunk.len()) as u16;
        q[field::IP_TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
        q[field::IP_ID].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        let s = seg.ip_hlen;
        let seq = seg.seq.wrapping_add((i * mss) as u32);
        q[s + field::TCP_SEQ.start..s + field::TCP_SEQ.end].copy_from_slice(&seq.to_be_bytes());
        let mut flags = seg.flags;
        if i + 1 < n {
            flags &= !(tcp_flags::FIN | tcp_flags::PSH);
        }
        if i > 0 {
            flags &= !tcp_flags::CWR;
        }
        q[s + field::TCP_FLAGS] = flags;
        set_ip_checksum(q, seg.ip_hlen);
        let this = TcpSeg {
            total: usize::from(total),
            seq,
            flags,
            ..*seg
        };
        set_tcp_checksum(q, &this);
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet from 10.0.0.2:4420 to 10.0.0.1:5000 with `payload`.
    fn packet(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        p.extend_from_slice(&4420u16.to_be_bytes());
        p.extend_from_slice(&5000u16.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        set_ip_checksum(&mut p, 20);
        let seg = TcpSeg::parse(&p).unwrap();
        set_tcp_checksum(&mut p, &seg);
        p
    }

    #[test]
    fn checksum_detects_a_flipped_byte_and_fixing_it_restores_it() {
        let mut p = packet(7, tcp_flags::ACK, b"hello, world!");
        let seg = TcpSeg::parse(&p).unwrap();
        assert!(tcp_checksum_ok(&p, &seg));
        p[45] ^= 0x40;
        assert!(!tcp_checksum_ok(&p, &seg));
        set_tcp_checksum(&mut p, &seg);
        assert!(tcp_checksum_ok(&p, &seg));
    }

    #[test]
    fn ip_checksum_of_a_known_header() {
        // RFC 1071 style example header (Wikipedia's IPv4 checksum example): 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        set_ip_checksum(&mut h, 20);
        assert_eq!(&h[10..12], &[0xb8, 0x61]);
    }

    #[test]
    fn segmentation_splits_payload_advances_seq_and_keeps_fin_on_the_last() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let p = packet(
            u32::MAX - 100,
            tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN,
            &payload,
        );
        let seg = TcpSeg::parse(&p).unwrap();
        let mut out = Vec::new();
        segment(&p, &seg, 1448, &mut out);
        assert_eq!(out.len(), 3);
        let mut joined = Vec::new();
        for (i, o) in out.iter().enumerate() {
            let ip = &o[VNET_HDR_LEN..];
            let s = TcpSeg::parse(ip).unwrap();
            assert!(tcp_checksum_ok(ip, &s));
            assert_eq!(s.seq, (u32::MAX - 100).wrapping_add(i as u32 * 1448));
            assert_eq!(s.flags & tcp_flags::FIN != 0, i == 2);
            joined.extend_from_slice(&ip[s.payload_start()..s.total]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn non_tcp_and_truncated_packets_are_not_parsed() {
        let p = packet(1, tcp_flags::ACK, b"x");
        assert!(TcpSeg::parse(&p[..30]).is_none());
        let mut udp = p.clone();
        udp[9] = 17;
        assert!(TcpSeg::parse(&udp).is_none());
        assert!(TcpSeg::parse(&[]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = TcpSeg::parse(&bytes);
            let _ = VnetHdr::parse(&bytes);
        }
    }
}
