//! Reading a capture: pcap or pcapng (by magic number), link types Ethernet, Linux cooked
//! (v1 and v2) and raw IP, IPv4 and IPv6, down to TCP segments.
//!
//! A capture that ends early or breaks in the middle is not an error: the packets read until
//! then are returned together with a [`CaptureProblem`] saying where it broke, so the replay
//! can give a partial report.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use serde::{Deserialize, Serialize};

/// One TCP segment of the capture.
#[derive(Debug, Clone)]
pub struct TcpPacket {
    /// Frame number in the capture (1-based, as Wireshark counts).
    pub frame: u64,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number of the first payload byte (or of the SYN).
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// TCP payload.
    pub payload: Vec<u8>,
}

/// Why packets or the rest of a capture could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "problem")]
pub enum CaptureProblem {
    /// The capture file broke off or is corrupt at this frame; the frames before it were read.
    Broken {
        /// First frame that could not be read.
        frame: u64,
        /// The reader's message.
        message: String,
    },
    /// An interface's link type is not one the replay decodes.
    UnsupportedLinkType {
        /// The link type, as named by the capture library.
        link_type: String,
    },
}

impl fmt::Display for CaptureProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureProblem::Broken { frame, message } => {
                write!(f, "capture broken at frame {frame}: {message}")
            }
            CaptureProblem::UnsupportedLinkType { link_type } => {
                write!(f, "link type {link_type} is not supported")
            }
        }
    }
}

/// Counts of frames that carried no usable TCP segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FrameCounts {
    /// Frames read.
    pub frames: u64,
    /// TCP segments decoded.
    pub tcp_segments: u64,
    /// Frames that are not TCP over IP (ARP, UDP, ...).
    pub not_tcp: u64,
    /// TCP segments cut by the capture's snap length (captured length below the frame's
    /// length): their payload is incomplete, so they are treated as not captured.
    pub snaplen_cut: u64,
    /// Frames whose headers do not parse.
    pub malformed: u64,
    /// IP fragments (not reassembled).
    pub ip_fragments: u64,
    /// Frames of an interface with an unsupported link type.
    pub unsupported_link: u64,
}

/// A capture's TCP segments, and what went wrong on the way.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The segments, in capture order.
    pub packets: Vec<TcpPacket>,
    /// Frame counts.
    pub counts: FrameCounts,
    /// Problems met (the capture is usable up to them).
    pub problems: Vec<CaptureProblem>,
}

/// Errors that make a capture unusable from its first byte.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading the file failed (the message carries the system's error; it is not also the
    /// source, so a printed chain names it once).
    #[error("cannot read the capture: {0}")]
    Io(std::io::Error),
    /// Neither a pcap nor a pcapng file.
    #[error("not a pcap or pcapng capture (magic number {0:02x?})")]
    UnknownFormat([u8; 4]),
    /// The file header does not parse.
    #[error("the capture's file header is invalid: {0}")]
    BadHeader(String),
}

impl From<std::io::Error> for CaptureError {
    fn from(e: std::io::Error) -> Self {
        CaptureError::Io(e)
    }
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];

/// Reads a whole capture from `bytes` (the file's content).
pub fn read_capture(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let magic: [u8; 4] = match bytes.get(..4).and_then(|m| m.try_into().ok()) {
        Some(m) => m,
        None => {
            let mut m = [0u8; 4];
            m[..bytes.len()].copy_from_slice(bytes);
            return Err(CaptureError::UnknownFormat(m));
        }
    };
    let mut cap = Capture::default();
    if magic == PCAPNG_MAGIC {
        read_pcapng(bytes, &mut cap)?;
    } else if PCAP_MAGICS.contains(&magic) {
        read_pcap(bytes, &mut cap)?;
    } else {
        return Err(CaptureError::UnknownFormat(magic));
    }
    Ok(cap)
}

/// Reads a capture file.
pub fn read_capture_file(path: &std::path::Path) -> Result<Capture, CaptureError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    read_capture(&bytes)
}

fn read_pcap(bytes: &[u8], cap: &mut Capture) -> Result<(), CaptureError> {
    let mut reader = PcapReader::new(bytes).map_err(|e| CaptureError::BadHeader(e.to_string()))?;
    let link = reader.header().datalink;
    if !supported(link) {
        cap.problems.push(CaptureProblem::UnsupportedLinkType {
            link_type: format!("{link:?}"),
        });
    }
    while let Some(pkt) = reader.next_packet() {
        let frame = cap.counts.frames + 1;
        match pkt {
            Ok(p) => {
                cap.counts.frames = frame;
                decode_frame(cap, frame, link, &p.data, p.orig_len);
            }
            Err(e) => {
                cap.problems.push(CaptureProblem::Broken {
                    frame,
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    Ok(())
}

fn read_pcapng(bytes: &[u8], cap: &mut Capture) -> Result<(), CaptureError> {
    let mut reader =
        PcapNgReader::new(bytes).map_err(|e| CaptureError::BadHeader(e.to_string()))?;
    let mut reported_links = Vec::new();
    // Link types of the current section's interfaces, by interface ID.
    let mut links: Vec<DataLink> = reader.interfaces().iter().map(|i| i.linktype).collect();
    while let Some(block) = reader.next_block() {
        let frame = cap.counts.frames + 1;
        let block = match block {
            Ok(b) => b,
            Err(e) => {
                cap.problems.push(CaptureProblem::Broken {
                    frame,
                    message: e.to_string(),
                });
                break;
            }
        };
        let (iface, data, orig_len) = match &block {
            Block::SectionHeader(_) => {
                links.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                links.push(idb.linktype);
                continue;
            }
            Block::EnhancedPacket(epb) => (
                epb.interface_id as usize,
                epb.data.as_ref(),
                epb.original_len,
            ),
            Block::SimplePacket(spb) => (0, spb.data.as_ref(), spb.original_len),
            Block::Packet(pb) => (
                usize::from(pb.interface_id),
                pb.data.as_ref(),
                pb.original_len,
            ),
            _ => continue,
        };
        let Some(&link) = links.get(iface) else {
            cap.problems.push(CaptureProblem::Broken {
                frame,
                message: format!("packet of undeclared interface {iface}"),
            });
            break;
        };
        cap.counts.frames = frame;
        if !supported(link) && !reported_links.contains(&link) {
            reported_links.push(link);
            cap.problems.push(CaptureProblem::UnsupportedLinkType {
                link_type: format!("{link:?}"),
            });
        }
        decode_frame(cap, frame, link, data, orig_len);
    }
    Ok(())
}

fn supported(link: DataLink) -> bool {
    matches!(
        link,
        DataLink::ETHERNET
            | DataLink::LINUX_SLL
            | DataLink::LINUX_SLL2
            | DataLink::RAW
            | DataLink::IPV4
            | DataLink::IPV6
    )
}

/// Length of the Linux cooked v2 header; its first two bytes are the protocol (EtherType).
/// (etherparse decodes v1 only.)
const SLL2_HEADER_LEN: usize = 20;

fn decode_frame(cap: &mut Capture, frame: u64, link: DataLink, data: &[u8], orig_len: u32) {
    let cut = (data.len() as u64) < u64::from(orig_len);
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
        DataLink::LINUX_SLL2 => match data.get(..SLL2_HEADER_LEN) {
            Some(h) => SlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([h[0], h[1]])),
                &data[SLL2_HEADER_LEN..],
            ),
            None => {
                count_bad(cap, cut);
                return;
            }
        },
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
        _ => {
            cap.counts.unsupported_link += 1;
            return;
        }
    };
    let Ok(p) = sliced else {
        count_bad(cap, cut);
        return;
    };
    let (src_ip, dst_ip, fragmented): (IpAddr, IpAddr, bool) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
            v4.is_payload_fragmented(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
            v6.is_payload_fragmented(),
        ),
        _ => {
            cap.counts.not_tcp += 1;
            return;
        }
    };
    if fragmented {
        cap.counts.ip_fragments += 1;
        return;
    }
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        cap.counts.not_tcp += 1;
        return;
    };
    if cut {
        // The headers survived but the payload did not (or not all of it).
        cap.counts.snaplen_cut += 1;
        return;
    }
    cap.counts.tcp_segments += 1;
    cap.packets.push(TcpPacket {
        frame,
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload().to_vec(),
    });
}

fn count_bad(cap: &mut Capture, cut: bool) {
    if cut {
        cap.counts.snaplen_cut += 1;
    } else {
        cap.counts.malformed += 1;
    }
}
