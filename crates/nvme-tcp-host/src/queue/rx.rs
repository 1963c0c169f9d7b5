//! The receive path of a queue: a state machine named after the wire,
//! `RecvPduHeader → [RecvPad] → RecvData → RecvDataDigest`, built for direct data placement.
//!
//! C2HData payload is written only into the buffer of the command its CCCID names, at DATAO,
//! after DATAO/DATAL were checked against that buffer; there is no staging copy on the socket
//! path ([`QueueCore::rx_direct`]). The data digest is computed over each chunk right after it
//! was placed, while the bytes are in cache.
//!
//! An offload device (ULP DDP) may already have placed payload bytes into the same buffers and
//! verified data digests; it says so with the marks fed along with the bytes
//! ([`QueueCore::rx_feed_marked`], [`RxMarks`]), and the receive path skips the copy or the
//! CRC accordingly. Stream offsets count every byte fed to this queue since its connection
//! was established.

use nvme_tcp_wire::digest::Crc32c;
use nvme_tcp_wire::pdu::field as pdu_field;
use nvme_tcp_wire::pdu::{
    CH_LEN, CommonHeader, CommonHeaderRepr, DataPdu, IC_PDU_LEN, IcPdu, IcRespRepr, PduFlags,
    PduType, R2tPdu, TERM_REQ_HLEN, TermReqPdu,
};
use nvme_tcp_wire::validate::{NegotiatedParams, PduLayout, Role, validate_ch, validate_psh};

use super::{CqeInfo, DataDir, Negotiated, Phase, QueueCore, cqe_fields};
use crate::error::{IoError, ProtocolError};
use crate::offload::RxMarks;
use crate::tags::CidState;
use ulp_ddp::ResyncAction;

/// Largest header (CH + PSH + HDGST) a controller sends: ICResp, 128 bytes, no digest.
const MAX_RX_HEADER: usize = IC_PDU_LEN + 4;

/// Receive states, named after what is being read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxState {
    /// The common header, then the rest of the PDU header and its digest.
    RecvPduHeader,
    /// Padding between the header (digest) and PDO.
    RecvPad { left: usize },
    /// C2HData payload, placed into the command's buffer.
    RecvData,
    /// The 4-byte data digest after C2HData payload.
    RecvDataDigest,
    /// The data of a C2HTermReq (a copy of the PDU header it complains about).
    RecvTermReqData { left: usize, fes: u16, fei: u32 },
    /// A protocol error happened; input is refused.
    Failed,
}

/// The C2HData PDU being received.
#[derive(Debug, Clone)]
struct DataCursor {
    idx: u16,
    cid: u16,
    /// Next transfer offset to place at.
    off: usize,
    /// Payload bytes of this PDU not yet placed.
    left: usize,
    /// DATAO / DATAL of this PDU.
    datao: usize,
    datal: usize,
    crc: Crc32c,
    /// Compute the CRC while placing (false: the offload verifies it).
    crc_inline: bool,
    ddgst: bool,
    success: bool,
}

/// Receive-side state of one connection.
#[derive(Debug)]
pub(crate) struct RxMachine {
    pub(crate) state: RxState,
    hdr: [u8; MAX_RX_HEADER],
    have: usize,
    need: usize,
    /// Stream offset of the next byte.
    pos: u64,
    /// Stream offset of the current PDU's first byte.
    pdu_seq: u64,
    /// The current PDU's common header, validated.
    layout: Option<PduLayout>,
    data: Option<DataCursor>,
    ddgst: [u8; 4],
    ddgst_have: usize,
    /// Every run of the current PDU's data and digest bytes so far carried the crc mark.
    crc_marked: bool,
}

impl RxMachine {
    pub(crate) fn new() -> Self {
        Self {
            state: RxState::RecvPduHeader,
            hdr: [0; MAX_RX_HEADER],
            have: 0,
            need: CH_LEN,
            pos: 0,
            pdu_seq: 0,
            layout: None,
            data: None,
            ddgst: [0; 4],
            ddgst_have: 0,
            crc_marked: false,
        }
    }
    pub(crate) fn set_failed(&mut self) {
        self.state = RxState::Failed;
    }
    /// Stream offset of the next byte to receive.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }
}

impl QueueCore {
    /// The receive state (for tests and diagnostics).
    pub fn rx_state_name(&self) -> &'static str {
        match self.rx.state {
            RxState::RecvPduHeader => "RecvPduHeader",
            RxState::RecvPad { .. } => "RecvPad",
            RxState::RecvData => "RecvData",
            RxState::RecvDataDigest => "RecvDataDigest",
            RxState::RecvTermReqData { .. } => "RecvTermReqData",
            RxState::Failed => "Failed",
        }
    }

    /// Stream offset of the next byte this queue expects.
    pub fn rx_position(&self) -> u64 {
        self.rx.position()
    }

    /// Feeds bytes received from the controller (all of them are consumed unless an error is
    /// returned). C2HData payload is copied into the destination buffer at DATAO.
    pub fn rx_feed(&mut self, input: &[u8]) -> Result<(), ProtocolError> {
        self.rx_feed_marked(input, &RxMarks::NONE)
    }

    /// Feeds bytes received from the controller together with the marks the offload device
    /// left on them (they must all come from segments with the same marks: feed a delivery
    /// segment by segment). Payload in `marks.placed` of a read whose buffer is lent to the
    /// device is not copied; a PDU's data digest is not computed if every run of its data and
    /// digest came with `marks.crc`. Then takes the device's events.
    pub fn rx_feed_marked(
        &mut self,
        input: &[u8],
        marks: &RxMarks<'_>,
    ) -> Result<(), ProtocolError> {
        let r = self.rx_feed_inner(input, marks);
        self.poll_offload();
        r
    }

    fn rx_feed_inner(
        &mut self,
        mut input: &[u8],
        marks: &RxMarks<'_>,
    ) -> Result<(), ProtocolError> {
        while !input.is_empty() {
            let n = match self.rx.state {
                RxState::Failed => return Err(ProtocolError::Closed),
                RxState::RecvPduHeader => {
                    let n = (self.rx.need - self.rx.have).min(input.len());
                    let have = self.rx.have;
                    self.rx.hdr[have..have + n].copy_from_slice(&input[..n]);
                    self.rx.have += n;
                    self.rx.pos += n as u64;
                    self.header_progress()?;
                    n
                }
                RxState::RecvPad { left } => {
                    let n = left.min(input.len());
                    self.rx.pos += n as u64;
                    self.pad_progress(left - n);
                    n
                }
                RxState::RecvData => {
                    self.rx.crc_marked &= marks.crc;
                    self.data_copy(input, marks)?
                }
                RxState::RecvDataDigest => {
                    self.rx.crc_marked &= marks.crc;
                    let n = (4 - self.rx.ddgst_have).min(input.len());
                    let h = self.rx.ddgst_have;
                    self.rx.ddgst[h..h + n].copy_from_slice(&input[..n]);
                    self.rx.ddgst_have += n;
                    self.rx.pos += n as u64;
                    if self.rx.ddgst_have == 4 {
                        self.finish_data_pdu()?;
                    }
                    n
                }
                RxState::RecvTermReqData { left, fes, fei } => {
                    let n = left.min(input.len());
                    self.rx.pos += n as u64;
                    if left == n {
                        return Err(self.fail(ProtocolError::term_req(fes, fei)));
                    }
                    self.rx.state = RxState::RecvTermReqData {
                        left: left - n,
                        fes,
                        fei,
                    };
                    n
                }
            };
            input = &input[n..];
        }
        Ok(())
    }

    /// While receiving C2HData payload: the caller's buffer at the current DATAO, at most up
    /// to the end of this PDU's data and of the buffer segment. The driver reads from the
    /// socket straight into it and reports the count to [`QueueCore::rx_direct_done`].
    /// `None` in any other state.
    pub fn rx_direct(&mut self) -> Option<&mut [u8]> {
        if self.rx.state != RxState::RecvData {
            return None;
        }
        // (A read whose buffer is lent to the offload device has none here: `None`.)
        let cur = self.rx.data.as_ref()?;
        let (left, off, idx) = (cur.left, cur.off, cur.idx);
        let buf = self.slots[idx as usize].buf.as_mut()?;
        let (seg, soff) = buf.locate(off)?;
        let s = buf.segment_mut(seg);
        let n = (s.len() - soff).min(left);
        Some(&mut s[soff..soff + n])
    }

    /// While receiving C2HData payload of a read whose buffer is lent to the offload device:
    /// the payload bytes of this PDU still to come (0 in any other state). A driver may feed
    /// bytes the device marked placed within this many without reading them from the socket
    /// (their content is not looked at, [`QueueCore::rx_feed_marked`]).
    pub fn rx_lent_payload_left(&self) -> usize {
        if self.rx.state != RxState::RecvData {
            return 0;
        }
        match self.rx.data.as_ref() {
            Some(cur) if self.slots[usize::from(cur.idx)].ddp => cur.left,
            _ => 0,
        }
    }

    /// Reports that `n` bytes were written into the slice last returned by
    /// [`QueueCore::rx_direct`]; digests them and advances. `n` larger than that slice is
    /// clamped.
    pub fn rx_direct_done(&mut self, n: usize) -> Result<(), ProtocolError> {
        if n == 0 {
            return Ok(());
        }
        let max = self.rx_direct().map_or(0, |s| s.len());
        let n = n.min(max);
        self.stats.rx_direct_bytes += n as u64;
        self.rx.crc_marked = false;
        self.data_placed(n)
    }

    /// Copies payload from `input` into the destination buffer; returns bytes consumed. For a
    /// read whose buffer is lent to the device, the placed ranges are skipped and the rest is
    /// copied through the device (`copy_to_io`).
    fn data_copy(&mut self, input: &[u8], marks: &RxMarks<'_>) -> Result<usize, ProtocolError> {
        let Some(cur) = self.rx.data.as_ref() else {
            return Err(self.fail(ProtocolError::Closed));
        };
        let (idx, cid, off, left) = (cur.idx, cur.cid, cur.off, cur.left);
        let pos = self.rx.pos;
        if self.slots[usize::from(idx)].ddp {
            let n = left.min(input.len());
            let end = pos + n as u64;
            let mut at = pos;
            let mut copy_err = None;
            let mut copy = |core: &mut QueueCore, from: u64, to: u64| {
                if from >= to {
                    return;
                }
                let bytes = &input[(from - pos) as usize..(to - pos) as usize];
                let data_off = (off as u64) + (from - pos);
                core.stats.rx_copied_bytes += bytes.len() as u64;
                if let Some(o) = core.offload.as_mut()
                    && let Err(e) = o.sock.copy_to_io(u32::from(cid), data_off, bytes)
                {
                    copy_err.get_or_insert(e);
                }
            };
            for r in marks.placed {
                let (a, b) = (r.start.max(at), (r.start + u64::from(r.len)).min(end));
                if a >= b {
                    continue;
                }
                copy(self, at, a);
                self.stats.rx_offload_placed_bytes += b - a;
                at = b;
            }
            copy(self, at, end);
            if let Some(e) = copy_err {
                // The device refused the ULP's own copy: the read cannot be trusted.
                let slot = &mut self.slots[usize::from(idx)];
                slot.data_error.get_or_insert(IoError::Invalid(format!(
                    "copy into the offloaded buffer of CID {cid} failed: {e}"
                )));
            }
            self.data_placed(n)?;
            return Ok(n);
        }
        let Some(dst_len) = self.rx_direct().map(|s| s.len()) else {
            // Unreachable by construction (RecvData always has a cursor inside the buffer);
            // refuse rather than panic.
            return Err(self.fail(ProtocolError::Closed));
        };
        let n = dst_len.min(input.len());
        let end = pos + n as u64;
        if marks
            .placed
            .iter()
            .any(|r| r.start < end && r.start + u64::from(r.len) > pos)
        {
            // Placement reported for a buffer the host did not lend: ignored.
            self.stats.ddp_anomalies += 1;
        }
        if let Some(dst) = self.rx_direct() {
            dst[..n].copy_from_slice(&input[..n]);
        }
        self.stats.rx_copied_bytes += n as u64;
        self.data_placed(n)?;
        Ok(n)
    }

    /// Advances over `n` payload bytes now present in the buffer at the cursor, digesting them.
    fn data_placed(&mut self, n: usize) -> Result<(), ProtocolError> {
        let Some(cur) = self.rx.data.as_mut() else {
            return Err(self.fail(ProtocolError::Closed));
        };
        if cur.crc_inline
            && let Some(buf) = self.slots[cur.idx as usize].buf.as_ref()
            && let Some((seg, soff)) = buf.locate(cur.off)
        {
            // The bytes were just written: digest them while they are in cache.
            cur.crc.update(&buf.segment(seg)[soff..soff + n]);
            self.stats.rx_digested_bytes += n as u64;
        }
        cur.off += n;
        cur.left -= n;
        self.rx.pos += n as u64;
        let slot = &mut self.slots[cur.idx as usize];
        slot.rcvd = cur.off;
        if cur.left == 0 {
            if cur.ddgst {
                self.rx.state = RxState::RecvDataDigest;
                self.rx.ddgst_have = 0;
            } else {
                self.finish_data_pdu()?;
            }
        }
        Ok(())
    }

    /// End of a C2HData PDU (after its digest, if any).
    fn finish_data_pdu(&mut self) -> Result<(), ProtocolError> {
        let Some(cur) = self.rx.data.take() else {
            return Err(self.fail(ProtocolError::Closed));
        };
        if cur.ddgst {
            let received = u32::from_le_bytes(self.rx.ddgst);
            let device_verified = !cur.crc_inline
                && self.rx.crc_marked
                && self.offload.as_ref().is_some_and(|o| o.ddgst);
            if device_verified {
                self.stats.rx_offload_ddgst_pdus += 1;
            } else {
                let computed = if cur.crc_inline {
                    Some(cur.crc.finalize())
                } else {
                    // Not verified by the device: digest the destination buffer, as Linux
                    // recomputes over the request's pages.
                    self.digest_buffer(cur.idx, cur.datao, cur.datal)
                };
                if computed != Some(received) {
                    // A data digest error fails this command only (data transfer error); the
                    // queue stays up (NVMe/TCP: data digest errors are per command).
                    self.stats.ddgst_errors += 1;
                    let slot = &mut self.slots[cur.idx as usize];
                    slot.data_error = Some(match computed {
                        Some(computed) => IoError::DataDigest {
                            received,
                            computed,
                            datao: cur.datao as u32,
                            datal: cur.datal as u32,
                        },
                        None => IoError::Invalid(format!(
                            "the data of CID {} could not be read back for its digest",
                            cur.cid
                        )),
                    });
                }
            }
        }
        self.rx.state = RxState::RecvPduHeader;
        self.rx.have = 0;
        self.rx.need = CH_LEN;
        if cur.success {
            // SUCCESS: the command completed, no CapsuleResp follows.
            let len = self.slots[cur.idx as usize].len;
            if cur.off != len && !self.slots[cur.idx as usize].short_transfer_allowed() {
                return Err(self.fail(ProtocolError::ShortRead {
                    cid: cur.cid,
                    received: cur.off,
                    expected: len,
                }));
            }
            self.complete(
                cur.idx,
                Ok(CqeInfo {
                    dw0: 0,
                    dw1: 0,
                    sqhd: 0xFFFF,
                }),
            );
        }
        Ok(())
    }

    /// CRC32C of `len` bytes at `datao` of slot `idx`'s buffer, wherever it is (the slot's
    /// own, or lent to the device). `None` if it cannot be read.
    fn digest_buffer(&mut self, idx: u16, datao: usize, len: usize) -> Option<u32> {
        let mut c = Crc32c::new();
        let slot = &self.slots[usize::from(idx)];
        let ok = if slot.ddp {
            let cid = u32::from(slot.cid);
            let off = self.offload.as_mut()?;
            off.sock
                .read_io(cid, datao as u64, len, &mut |b| {
                    c.update(b);
                })
                .is_ok()
        } else {
            slot.buf.as_ref().is_some_and(|b| {
                b.for_each_chunk(datao as u64, len, |x| {
                    c.update(x);
                })
            })
        };
        self.stats.rx_digested_bytes += len as u64;
        ok.then(|| c.finalize())
    }

    fn pad_progress(&mut self, left: usize) {
        if left > 0 {
            self.rx.state = RxState::RecvPad { left };
        } else {
            self.rx.state = RxState::RecvData;
        }
    }

    /// Called after header bytes arrived: validates the common header once complete, then
    /// the whole header once complete.
    fn header_progress(&mut self) -> Result<(), ProtocolError> {
        if self.rx.have < self.rx.need {
            return Ok(());
        }
        if self.rx.need == CH_LEN {
            self.rx.pdu_seq = self.rx.pos - CH_LEN as u64;
            let layout = match self.check_common_header() {
                Ok(l) => l,
                Err(ProtocolError::Header(detail)) if self.phase == Phase::WaitIcResp => {
                    // The very first bytes are no NVMe/TCP common header at all.
                    let mut first = [0u8; CH_LEN];
                    first.copy_from_slice(&self.rx.hdr[..CH_LEN]);
                    return Err(self.fail(ProtocolError::NotNvmeTcp { first, detail }));
                }
                Err(e) => return Err(self.fail(e)),
            };
            self.resync_check();
            self.rx.need = layout.header_len();
            self.rx.layout = Some(layout);
            if self.rx.have < self.rx.need {
                return Ok(());
            }
        }
        let Some(layout) = self.rx.layout else {
            return Err(self.fail(ProtocolError::Closed));
        };
        // Header digest and the per-type rules (DATAL, R2TL, ICResp fields): the wire layer's
        // validation core, over the header as received.
        if let Err(e) = validate_psh(&layout, &self.rx.hdr[..self.rx.need], &self.rx_params()) {
            return Err(self.fail(e.into()));
        }
        let mut ch = layout.ch;
        ch.flags = PduFlags(self.rx.hdr[pdu_field::common::FLAGS]);
        self.rx.have = 0;
        self.rx.need = CH_LEN;
        self.rx.state = RxState::RecvPduHeader;
        let r = match ch.pdu_type {
            PduType::IcResp => self.handle_icresp(),
            PduType::C2hTermReq => self.handle_term_req(&ch),
            PduType::CapsuleResp => self.handle_capsule_resp(),
            PduType::R2t => self.handle_r2t(),
            PduType::C2hData => self.handle_c2h_data(&ch),
            _ => Err(ProtocolError::UnexpectedPdu {
                pdu_type: ch.pdu_type as u8,
                state: "from a controller",
            }),
        };
        r.map_err(|e| self.fail(e))
    }

    /// Common-header checks (PDU type and direction, flags, HLEN, PDO, PLEN, in spec order)
    /// through the wire layer's validator, plus the host's sequence rule: ICResp only as the
    /// first PDU. The header digest is checked once the whole header is in.
    fn check_common_header(&self) -> Result<PduLayout, ProtocolError> {
        let mut ch = [0u8; CH_LEN];
        ch.copy_from_slice(&self.rx.hdr[..CH_LEN]);
        let mut ch = CommonHeader::new_unchecked(ch);
        // SUCCESS without LAST_PDU concerns one command: it is reported against that command
        // once its CCCID is known (handle_c2h_data), so the validator sees it cleared.
        let flags = ch.flags();
        if ch.pdu_type() == Some(PduType::C2hData)
            && flags.contains(PduFlags::SUCCESS)
            && !flags.contains(PduFlags::LAST_PDU)
        {
            ch.set_flags(PduFlags(flags.0 & !PduFlags::SUCCESS.0));
        }
        let layout = validate_ch(&ch.into_inner(), &self.rx_params())?;
        let t = layout.pdu_type();
        let allowed = match self.phase {
            Phase::WaitIcResp => matches!(t, PduType::IcResp | PduType::C2hTermReq),
            _ => t != PduType::IcResp,
        };
        if !allowed {
            return Err(ProtocolError::UnexpectedPdu {
                pdu_type: t as u8,
                state: if self.phase == Phase::WaitIcResp {
                    "before ICResp"
                } else {
                    "after ICResp"
                },
            });
        }
        Ok(layout)
    }

    /// What the validation core checks received PDUs against.
    fn rx_params(&self) -> NegotiatedParams {
        let neg = self.neg.unwrap_or(Negotiated {
            hdgst: false,
            ddgst: false,
            cpda: 0,
            maxh2cdata: 0,
        });
        NegotiatedParams {
            hdgst: neg.hdgst,
            ddgst: neg.ddgst,
            // Data is placed into the command's buffer, never staged: PLEN needs no bound
            // beyond the DATAO/DATAL checks against that buffer.
            max_plen: u32::MAX,
            ..NegotiatedParams::new(Role::Host)
        }
    }

    fn handle_icresp(&mut self) -> Result<(), ProtocolError> {
        let pdu = IcPdu::new_unchecked(&self.rx.hdr[..IC_PDU_LEN]);
        let r = IcRespRepr::parse(&pdu)?;
        // PFV, CPDA and MAXH2CDATA were checked with the header (validate_psh).
        if r.hdgst_enable != self.cfg.hdgst || r.ddgst_enable != self.cfg.ddgst {
            return Err(ProtocolError::IcResp(format!(
                "digests requested hdgst={} ddgst={}, controller enabled hdgst={} ddgst={}",
                self.cfg.hdgst, self.cfg.ddgst, r.hdgst_enable, r.ddgst_enable
            )));
        }
        self.neg = Some(Negotiated {
            hdgst: r.hdgst_enable,
            ddgst: r.ddgst_enable,
            cpda: r.cpda,
            maxh2cdata: r.maxh2cdata,
        });
        self.phase = Phase::Connecting;
        Ok(())
    }

    fn handle_term_req(&mut self, ch: &CommonHeaderRepr) -> Result<(), ProtocolError> {
        let pdu = TermReqPdu::new_unchecked(&self.rx.hdr[..TERM_REQ_HLEN]);
        let (fes, fei) = (pdu.fes(), pdu.fei());
        let left = (ch.plen as usize).saturating_sub(TERM_REQ_HLEN);
        if left == 0 {
            return Err(ProtocolError::term_req(fes, fei));
        }
        self.rx.state = RxState::RecvTermReqData { left, fes, fei };
        Ok(())
    }

    /// The violation of a PDU that names `cid`, which has no command in flight: stale or
    /// duplicate if the CID was issued on this queue before, else unknown.
    fn not_in_flight(&self, pdu: &'static str, cid: u16) -> ProtocolError {
        match self.tags.classify(cid) {
            CidState::Completed => ProtocolError::StaleCid {
                pdu,
                cid,
                duplicate: true,
            },
            CidState::Stale => ProtocolError::StaleCid {
                pdu,
                cid,
                duplicate: false,
            },
            CidState::Unknown | CidState::InFlight(_) if pdu == "CapsuleResp" => {
                ProtocolError::UnknownCid { cid }
            }
            CidState::Unknown | CidState::InFlight(_) => {
                ProtocolError::UnknownCccid { pdu, cccid: cid }
            }
        }
    }

    fn handle_capsule_resp(&mut self) -> Result<(), ProtocolError> {
        let Some((dw0, dw1, sqhd, cid, status)) = cqe_fields(&self.rx.hdr[pdu_field::capsule::CQE])
        else {
            return Err(ProtocolError::Closed);
        };
        let Some(idx) = self.tags.lookup(cid) else {
            return Err(self.not_in_flight("CapsuleResp", cid));
        };
        self.sqhd = sqhd;
        let slot = &self.slots[idx as usize];
        if status.is_success()
            && slot.dir == DataDir::ToHost
            && slot.rcvd != slot.len
            && !slot.short_transfer_allowed()
        {
            // No short read: a successful read must have received every byte.
            return Err(ProtocolError::ShortRead {
                cid,
                received: slot.rcvd,
                expected: slot.len,
            });
        }
        let result = if status.is_success() {
            Ok(CqeInfo { dw0, dw1, sqhd })
        } else {
            Err(IoError::Status(status))
        };
        self.complete(idx, result);
        Ok(())
    }

    fn handle_r2t(&mut self) -> Result<(), ProtocolError> {
        let pdu = R2tPdu::new_unchecked(&self.rx.hdr[..]);
        let (cid, ttag, r2to, r2tl) = (pdu.cccid(), pdu.ttag(), pdu.r2to(), pdu.r2tl());
        let Some(idx) = self.tags.lookup(cid) else {
            return Err(self.not_in_flight("R2T", cid));
        };
        let slot = &self.slots[idx as usize];
        if slot.dir != DataDir::ToController || slot.in_capsule {
            return Err(ProtocolError::R2tNotExpected { cid });
        }
        let (o, l) = (r2to as usize, r2tl as usize);
        // R2TL > 0, R2TO continues where the previous R2T ended (MAXR2T is 0: one at a
        // time), and the range stays inside the command's data.
        if l == 0 || o != slot.r2t_next || o.checked_add(l).is_none_or(|e| e > slot.len) {
            return Err(ProtocolError::R2tOutOfRange {
                cid,
                r2to,
                r2tl,
                len: slot.len,
                sent: slot.r2t_next,
            });
        }
        self.slots[idx as usize].r2t_next = o + l;
        self.emit_h2c_data(idx, ttag, o, l);
        Ok(())
    }

    /// The resync handshake at a PDU header: tell the device where this header starts.
    fn resync_check(&mut self) {
        let Some(off) = self.offload.as_mut() else {
            return;
        };
        let Some(isn) = off.isn else { return };
        let seq = isn.wrapping_add(self.rx.pdu_seq as u32);
        if let ResyncAction::Confirmed(_) = off.sock.pdu_header(seq) {
            self.stats.ddp_resyncs_confirmed += 1;
        }
    }

    fn handle_c2h_data(&mut self, ch: &CommonHeaderRepr) -> Result<(), ProtocolError> {
        let pdu = DataPdu::new_unchecked(&self.rx.hdr[..]);
        let (cid, datao, datal) = (pdu.cccid(), pdu.datao(), pdu.datal());
        let Some(idx) = self.tags.lookup(cid) else {
            return Err(self.not_in_flight("C2HData", cid));
        };
        let success = ch.flags.contains(PduFlags::SUCCESS);
        let last = ch.flags.contains(PduFlags::LAST_PDU);
        if success && !last {
            return Err(ProtocolError::SuccessWithoutLast { cid });
        }
        let slot = &self.slots[idx as usize];
        if slot.dir != DataDir::ToHost || (slot.buf.is_none() && !slot.ddp) {
            return Err(ProtocolError::DataForNonRead { cid });
        }
        if slot.last_seen {
            return Err(ProtocolError::LastPdu {
                cid,
                detail: "data after the PDU flagged LAST_PDU",
            });
        }
        // DATAL = PLEN − PDO − DDGST was checked with the header (validate_psh); an empty
        // C2HData is refused here.
        let carried = ch.data_len();
        if datal == 0 {
            return Err(ProtocolError::DataLength {
                cid,
                datal,
                carried,
            });
        }
        let (o, l) = (datao as usize, datal as usize);
        if o.checked_add(l).is_none_or(|e| e > slot.len) {
            return Err(ProtocolError::DataOutOfRange {
                cid,
                datao,
                datal,
                len: slot.len,
            });
        }
        if o != slot.rcvd {
            return Err(ProtocolError::NotContiguous {
                cid,
                datao,
                expected: slot.rcvd,
            });
        }
        if success && o + l != slot.len && !slot.short_transfer_allowed() {
            return Err(ProtocolError::ShortRead {
                cid,
                received: o + l,
                expected: slot.len,
            });
        }
        // Digest while placing only when the PDU carries a data digest (without DDGST there is
        // nothing to compare with) and no offload may have verified it; otherwise the digest
        // is settled at the PDU's end, from the marks or over the destination buffer.
        let crc_inline =
            ch.has_ddgst() && !slot.ddp && !self.offload.as_ref().is_some_and(|o| o.ddgst);
        self.rx.crc_marked = true;
        self.slots[idx as usize].last_seen = last;
        self.rx.data = Some(DataCursor {
            idx,
            cid,
            off: o,
            left: l,
            datao: o,
            datal: l,
            crc: Crc32c::new(),
            crc_inline,
            ddgst: ch.has_ddgst(),
            success,
        });
        let pad = (ch.pdo as usize).saturating_sub(ch.header_len());
        self.pad_progress(pad);
        Ok(())
    }
}
