//! A small raw NVMe/TCP host for the integration tests, built on the wire crate's PDU
//! builders. It checks every PDU it receives with the wire validator.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{
    AdminOpcode, ConnectCommand, ConnectData, Cqe, IoOpcode, PropertyGetCommand,
    PropertySetCommand, PropertySize, SglDescriptor, Sqe, Status,
};
use nvme_tcp_wire::pdu::{
    CapsuleCmdRepr, DataPdu, DataPduRepr, HeaderBuf, IcPdu, IcReqRepr, IcRespRepr, PduFlags,
    PduType, emit_pdu,
};
use nvme_tcp_wire::validate::{NegotiatedParams, Role, validate_ch, validate_psh};
use zerocopy::IntoBytes;

pub const SUBNQN: &str = "nqn.2024-01.io.ulp-ddp:test";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
pub const HOSTID: [u8; 16] = [0x11; 16];

/// A target with one RAM namespace (4 MiB, 512-byte blocks) on 127.0.0.1:0.
pub fn start_target() -> TargetHandle {
    start_with(|c| c)
}

pub fn start_with(f: impl FnOnce(TargetConfig) -> TargetConfig) -> TargetHandle {
    let cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap()).subsystem(
        SubsystemConfig::new(SUBNQN).namespace(NamespaceConfig::parse("ram:4M").unwrap()),
    );
    Target::start(f(cfg)).expect("target starts")
}

/// A received PDU: header bytes (CH + PSH) and data.
#[derive(Debug)]
pub struct Pdu {
    pub header: Vec<u8>,
    pub data: Vec<u8>,
}

impl Pdu {
    pub fn pdu_type(&self) -> u8 {
        self.header[0]
    }
    pub fn flags(&self) -> PduFlags {
        PduFlags(self.header[1])
    }
    pub fn cqe(&self) -> Cqe {
        assert_eq!(
            self.pdu_type(),
            PduType::CapsuleResp as u8,
            "not a CapsuleResp: {self:?}"
        );
        *Cqe::parse(&self.header[8..24]).unwrap()
    }
}

/// The outcome of a command: data received (C2HData) and the completion.
#[derive(Debug)]
pub struct Done {
    pub data: Vec<u8>,
    pub cqe: Option<Cqe>,
    pub success_flag: bool,
}

impl Done {
    pub fn status(&self) -> Status {
        match &self.cqe {
            Some(c) => c.status(),
            None => Status::SUCCESS,
        }
    }
    pub fn dw0(&self) -> u32 {
        self.cqe.as_ref().map_or(0, |c| c.dw0())
    }
}

pub struct Client {
    pub s: TcpStream,
    pub hdgst: bool,
    pub ddgst: bool,
    pub hpda: u8,
    pub maxh2cdata: u32,
    params: NegotiatedParams,
    next_cid: u16,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// Connects from a chosen source address (another loopback address, say).
    pub fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> Self {
        Self::from_stream(connect_from(src, addr))
    }

    pub fn from_stream(s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Self {
            s,
            hdgst: false,
            ddgst: false,
            hpda: 0,
            maxh2cdata: 0,
            params: NegotiatedParams::new(Role::Host),
            next_cid: 1,
        }
    }

    /// Sends an ICReq without waiting for the answer.
    pub fn send_icreq(&mut self) {
        let req = IcReqRepr {
            pfv: 0,
            hpda: 0,
            hdgst_enable: false,
            ddgst_enable: false,
            maxr2t: 0,
        };
        let _ = self.s.write_all(HeaderBuf::new(&req).as_bytes());
    }

    /// ICReq/ICResp; returns the ICResp.
    pub fn ic(&mut self, hpda: u8, hdgst: bool, ddgst: bool) -> IcRespRepr {
        let req = IcReqRepr {
            pfv: 0,
            hpda,
            hdgst_enable: hdgst,
            ddgst_enable: ddgst,
            maxr2t: 0,
        };
        self.s.write_all(HeaderBuf::new(&req).as_bytes()).unwrap();
        let p = self.recv().expect("ICResp");
        assert_eq!(p.pdu_type(), PduType::IcResp as u8);
        let resp = IcRespRepr::parse(&IcPdu::new_unchecked(&p.header[..])).unwrap();
        self.hdgst = resp.hdgst_enable;
        self.ddgst = resp.ddgst_enable;
        self.hpda = hpda;
        self.maxh2cdata = resp.maxh2cdata;
        self.params.hdgst = resp.hdgst_enable;
        self.params.ddgst = resp.ddgst_enable;
        self.params.rx_pda = hpda;
        resp
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Sends a CapsuleCmd with optional in-capsule data.
    pub fn send_capsule(&mut self, sqe: &Sqe, data: &[u8]) {
        let mut raw = [0u8; 64];
        raw.copy_from_slice(sqe.as_bytes());
        let repr = CapsuleCmdRepr {
            hdgst: self.hdgst,
            ddgst: self.ddgst,
            pda: 0,
            sqe: raw,
            data_len: data.len() as u32,
        };
        let mut buf = vec![0u8; 256 + data.len()];
        let n = emit_pdu(&repr, data, &mut buf).unwrap();
        self.s.write_all(&buf[..n]).unwrap();
    }

    /// Sends an H2CData PDU.
    pub fn send_h2c(&mut self, cccid: u16, ttag: u16, datao: u32, data: &[u8], last: bool) {
        let repr = DataPduRepr {
            pdu_type: PduType::H2cData,
            flags: if last {
                PduFlags::LAST_PDU
            } else {
                PduFlags::NONE
            },
            hdgst: self.hdgst,
            ddgst: self.ddgst,
            pda: 0,
            cccid,
            ttag,
            datao,
            datal: data.len() as u32,
        };
        let mut buf = vec![0u8; 256 + data.len()];
        let n = emit_pdu(&repr, data, &mut buf).unwrap();
        self.s.write_all(&buf[..n]).unwrap();
    }

    /// Reads one PDU, validated as a host would; `None` on EOF.
    pub fn recv(&mut self) -> Option<Pdu> {
        let mut ch = [0u8; 8];
        if read_full(&mut self.s, &mut ch).is_err() {
            return None;
        }
        let layout =
            validate_ch(&ch, &self.params).unwrap_or_else(|e| panic!("bad CH {ch:?}: {e}"));
        let mut pdu = vec![0u8; layout.plen()];
        pdu[..8].copy_from_slice(&ch);
        read_full(&mut self.s, &mut pdu[8..]).expect("rest of PDU");
        validate_psh(&layout, &pdu[..layout.header_len()], &self.params)
            .unwrap_or_else(|e| panic!("bad header: {e}"));
        let off = layout.data_offset();
        let data = pdu[off..off + layout.data_len()].to_vec();
        if layout.has_ddgst() {
            let got = &pdu[off + data.len()..off + data.len() + 4];
            assert_eq!(crc32c(&data).to_le_bytes(), got, "data digest");
        }
        if layout.pdu_type() == PduType::C2hData {
            // PDO honours HPDA.
            let align = (self.hpda as usize + 1) * 4;
            assert_eq!(off % align, 0, "C2HData PDO {off} not aligned to HPDA");
        }
        Some(Pdu {
            header: pdu[..layout.hlen()].to_vec(),
            data,
        })
    }

    /// Collects C2HData for `cid` until its completion (CapsuleResp or SUCCESS flag).
    pub fn wait(&mut self, cid: u16) -> Done {
        let mut data = Vec::new();
        loop {
            let p = self.recv().expect("connection closed while waiting");
            match PduType::from_u8(p.pdu_type()) {
                Some(PduType::C2hData) => {
                    let h = DataPdu::new_unchecked(&p.header[..]);
                    assert_eq!(h.cccid(), cid);
                    assert_eq!(h.datao() as usize, data.len(), "DATAO contiguous");
                    data.extend_from_slice(&p.data);
                    if p.flags().contains(PduFlags::SUCCESS) {
                        return Done {
                            data,
                            cqe: None,
                            success_flag: true,
                        };
                    }
                }
                Some(PduType::CapsuleResp) => {
                    let cqe = p.cqe();
                    assert_eq!(cqe.cid(), cid, "completion for another command");
                    return Done {
                        data,
                        cqe: Some(cqe),
                        success_flag: false,
                    };
                }
                other => panic!("unexpected {other:?}: {p:?}"),
            }
        }
    }

    /// Sends a command with an SGL for `c2h_len` bytes of controller-to-host data (or the
    /// given in-capsule data) and waits for it.
    pub fn command(&mut self, mut sqe: Sqe, in_capsule: &[u8], c2h_len: u32) -> Done {
        let cid = self.cid();
        sqe.set_cid(cid);
        if in_capsule.is_empty() {
            sqe.set_dptr(SglDescriptor::transport_data_block(c2h_len));
        } else {
            sqe.set_dptr(SglDescriptor::data_block_offset(0, in_capsule.len() as u32));
        }
        self.send_capsule(&sqe, in_capsule);
        self.wait(cid)
    }

    pub fn connect_queue(
        &mut self,
        qid: u16,
        sqsize: u16,
        cattr: u8,
        kato: u32,
        cntlid: u16,
        subnqn: &str,
    ) -> Done {
        let cmd = ConnectCommand {
            recfmt: 0,
            qid,
            sqsize,
            cattr,
            kato,
        };
        let data = ConnectData::new(HOSTID, cntlid, subnqn, HOSTNQN).unwrap();
        self.command(cmd.to_sqe(), data.as_bytes(), 0)
    }

    pub fn prop_get(&mut self, ofst: u32, eight: bool) -> Done {
        let size = if eight {
            PropertySize::EightBytes
        } else {
            PropertySize::FourBytes
        };
        self.command(PropertyGetCommand { size, ofst }.to_sqe(), &[], 0)
    }

    pub fn prop_set(&mut self, ofst: u32, value: u64) -> Done {
        self.command(
            PropertySetCommand {
                size: PropertySize::FourBytes,
                ofst,
                value,
            }
            .to_sqe(),
            &[],
            0,
        )
    }

    /// ICReq, admin Connect, CC.EN = 1; returns the controller ID.
    pub fn bring_up_admin(&mut self, subnqn: &str, kato: u32) -> u16 {
        self.ic(0, false, false);
        self.admin_connect_enable(subnqn, kato)
    }

    pub fn admin_connect_enable(&mut self, subnqn: &str, kato: u32) -> u16 {
        let d = self.connect_queue(0, 31, 0, kato, CNTLID_DYNAMIC, subnqn);
        assert_eq!(d.status(), Status::SUCCESS, "admin connect");
        let cntlid = d.dw0() as u16;
        assert_eq!(self.prop_set(0x14, 0x0046_0001).status(), Status::SUCCESS);
        assert_eq!(self.prop_get(0x1C, false).dw0() & 1, 1, "CSTS.RDY");
        cntlid
    }

    pub fn identify(&mut self, cns: u8, nsid: u32) -> Done {
        let mut sqe = Sqe::new(AdminOpcode::Identify as u8);
        sqe.set_nsid(nsid);
        sqe.set_cdw10(cns as u32);
        self.command(sqe, &[], 4096)
    }

    pub fn get_log(&mut self, lid: u8, len: u32, offset: u64) -> Done {
        let mut sqe = Sqe::new(AdminOpcode::GetLogPage as u8);
        let numd = len / 4 - 1;
        sqe.set_nsid(0xFFFF_FFFF);
        sqe.set_cdw10(lid as u32 | ((numd & 0xFFFF) << 16));
        sqe.set_cdw11(numd >> 16);
        sqe.set_cdw12(offset as u32);
        sqe.set_cdw13((offset >> 32) as u32);
        self.command(sqe, &[], len)
    }

    pub fn read(&mut self, nsid: u32, slba: u64, nlb: u32, len: u32) -> Done {
        let mut sqe = Sqe::new(IoOpcode::Read as u8);
        sqe.set_nsid(nsid);
        sqe.set_cdw10(slba as u32);
        sqe.set_cdw11((slba >> 32) as u32);
        sqe.set_cdw12(nlb - 1);
        self.command(sqe, &[], len)
    }

    fn write_sqe(nsid: u32, slba: u64, nlb: u32) -> Sqe {
        let mut sqe = Sqe::new(IoOpcode::Write as u8);
        sqe.set_nsid(nsid);
        sqe.set_cdw10(slba as u32);
        sqe.set_cdw11((slba >> 32) as u32);
        sqe.set_cdw12(nlb - 1);
        sqe
    }

    pub fn write_in_capsule(&mut self, nsid: u32, slba: u64, data: &[u8]) -> Done {
        let nlb = (data.len() / 512) as u32;
        self.command(Self::write_sqe(nsid, slba, nlb), data, 0)
    }

    /// Write through R2T + H2CData, splitting at MAXH2CDATA.
    pub fn write_r2t(&mut self, nsid: u32, slba: u64, data: &[u8]) -> Done {
        let nlb = (data.len() / 512) as u32;
        let mut sqe = Self::write_sqe(nsid, slba, nlb);
        let cid = self.cid();
        sqe.set_cid(cid);
        sqe.set_dptr(SglDescriptor::transport_data_block(data.len() as u32));
        self.send_capsule(&sqe, &[]);
        let r2t = self.recv().expect("R2T");
        if r2t.pdu_type() == PduType::CapsuleResp as u8 {
            return Done {
                data: vec![],
                cqe: Some(r2t.cqe()),
                success_flag: false,
            };
        }
        assert_eq!(r2t.pdu_type(), PduType::R2t as u8);
        let ttag = u16::from_le_bytes([r2t.header[10], r2t.header[11]]);
        let r2to = u32::from_le_bytes(r2t.header[12..16].try_into().unwrap()) as usize;
        let r2tl = u32::from_le_bytes(r2t.header[16..20].try_into().unwrap()) as usize;
        assert_eq!(r2to, 0);
        assert_eq!(r2tl, data.len());
        let mut off = 0;
        while off < data.len() {
            let n = (data.len() - off).min(self.maxh2cdata as usize);
            self.send_h2c(
                cid,
                ttag,
                off as u32,
                &data[off..off + n],
                off + n == data.len(),
            );
            off += n;
        }
        self.wait(cid)
    }

    /// Expects the connection to end with a C2HTermReq; returns (FES, FEI).
    pub fn expect_term_req(&mut self) -> (u16, u32) {
        loop {
            let p = self.recv().expect("C2HTermReq before close");
            if p.pdu_type() == PduType::C2hTermReq as u8 {
                let fes = u16::from_le_bytes([p.header[8], p.header[9]]);
                let fei = u32::from_le_bytes(p.header[10..14].try_into().unwrap());
                let mut rest = [0u8; 1];
                assert!(
                    matches!(self.s.read(&mut rest), Ok(0) | Err(_)),
                    "connection stays open after C2HTermReq"
                );
                return (fes, fei);
            }
        }
    }
}

/// A TCP connection to `addr` from source address `src`.
pub fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// Polls `cond` every 5 ms until it holds; panics after 2000 tries (10 s) naming `what`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    s.read_exact(buf)
}

/// ICReq + admin queue + one I/O queue on a second connection. Returns (admin, io, cntlid).
pub fn admin_and_io(
    addr: SocketAddr,
    hdgst: bool,
    ddgst: bool,
    cattr: u8,
) -> (Client, Client, u16) {
    let mut admin = Client::connect(addr);
    admin.ic(0, hdgst, ddgst);
    let cntlid = admin.admin_connect_enable(SUBNQN, 0);
    let mut io = Client::connect(addr);
    io.ic(0, hdgst, ddgst);
    let d = io.connect_queue(1, 127, cattr, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS, "I/O connect");
    (admin, io, cntlid)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
