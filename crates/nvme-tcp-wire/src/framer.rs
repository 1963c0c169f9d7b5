//! Streaming PDU framer for a receive path (sans-IO).
//!
//! Bytes of the in-order TCP stream arrive in chunks of any size, from one byte to many PDUs.
//! The [`Framer`] keeps only the PDU header it is assembling (a fixed array of at most
//! [`MAX_HLEN_WITH_HDGST`] bytes) and reports, per PDU:
//!
//! 1. [`FramerEvent::Header`]: the header, validated ([`crate::validate`]) and parsed;
//! 2. [`FramerEvent::Data`]: byte ranges *of the caller's chunk* holding the PDU's data (never
//!    copied; padding is skipped), with their offset within the PDU's data;
//! 3. [`FramerEvent::DataDigest`]: the received DDGST (and, if enabled, the one computed over
//!    the data ranges);
//! 4. [`FramerEvent::End`]: the PDU is complete.
//!
//! A PLEN above [`NegotiatedParams::max_plen`] is refused as soon as the 8-byte common header
//! is in, before anything else is read. After an error the framer stays failed (framing is lost;
//! the connection must be terminated) and [`Framer::header_bytes`] gives the offending header
//! for the Termination Request.
//!
//! The same framer serves both ends: the [`Role`](crate::validate::Role) in the parameters selects which PDU types
//! are acceptable.
//!
//! ```
//! use nvme_tcp_wire::framer::{Framer, FramerEvent};
//! use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduRepr, PduType};
//! use nvme_tcp_wire::validate::{NegotiatedParams, Role};
//! use nvme_tcp_wire::digest::data_digest;
//!
//! // A C2HData PDU with a data digest, as a host would receive it.
//! let data = [7u8; 100];
//! let repr = DataPduRepr {
//!     pdu_type: PduType::C2hData, flags: PduFlags::LAST_PDU, hdgst: false, ddgst: true,
//!     pda: 0, cccid: 5, ttag: 0, datao: 0, datal: 100,
//! };
//! let mut stream = HeaderBuf::new(&repr).as_bytes().to_vec();
//! stream.extend_from_slice(&data);
//! stream.extend_from_slice(&data_digest(&data));
//!
//! let params = NegotiatedParams { ddgst: true, ..NegotiatedParams::new(Role::Host) };
//! let mut framer = Framer::new(params);
//! framer.set_compute_data_digest(true);
//! let mut placed = Vec::new();
//! // Feed the stream in 7-byte chunks, as a socket might deliver it.
//! for chunk in stream.chunks(7) {
//!     for ev in framer.events(chunk) {
//!         match ev.expect("valid stream") {
//!             FramerEvent::Header(h) => assert!(matches!(h.repr, PduRepr::Data(_))),
//!             FramerEvent::Data { range, offset } => {
//!                 assert_eq!(offset, placed.len());
//!                 placed.extend_from_slice(&chunk[range]); // e.g. copy to buffer + DATAO
//!             }
//!             FramerEvent::DataDigest { received, computed } => {
//!                 assert_eq!(Some(received), computed)
//!             }
//!             FramerEvent::End => {}
//!         }
//!     }
//! }
//! assert_eq!(placed, data);
//! assert!(framer.is_at_pdu_boundary());
//! ```

use std::ops::Range;

use crate::digest::{Crc32c, DIGEST_LEN};
use crate::error::{Reason, Result, WireError};
use crate::pdu::{CH_LEN, MAX_HLEN_WITH_HDGST, PduRepr};
use crate::validate::{NegotiatedParams, PduLayout, validate_ch, validate_psh};

/// A validated, parsed PDU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduHeader {
    /// Where header, data and digests lie in the PDU.
    pub layout: PduLayout,
    /// The parsed header.
    pub repr: PduRepr,
}

/// What the framer found in the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramerEvent {
    /// A complete, validated PDU header. The raw bytes are in [`Framer::header_bytes`].
    Header(PduHeader),
    /// Data of the current PDU: `range` indexes the chunk passed to [`Framer::events`] (or the
    /// input of [`Framer::advance`]); `offset` is the position of its first byte within the
    /// PDU's data (add DATAO for the position within the command's data).
    Data {
        /// Bytes of the caller's chunk.
        range: Range<usize>,
        /// Offset within this PDU's data.
        offset: usize,
    },
    /// The data digest of the current PDU.
    DataDigest {
        /// DDGST as received.
        received: u32,
        /// CRC32C of the data, if [`Framer::set_compute_data_digest`] is on.
        computed: Option<u32>,
    },
    /// The current PDU is complete; the next byte starts a new PDU.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the common header.
    Ch,
    /// Reading the rest of the header (PSH and header digest).
    Psh,
    /// Skipping padding between the header and PDO.
    Pad { left: usize },
    /// Reading data.
    Data { at: usize },
    /// Reading the data digest.
    Ddgst { have: usize },
    /// The PDU is complete; `End` is yet to be reported.
    End,
    /// A previous error: framing is lost.
    Failed,
}

/// A sans-IO streaming PDU framer. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Framer {
    params: NegotiatedParams,
    state: State,
    hdr: [u8; MAX_HLEN_WITH_HDGST],
    hdr_have: usize,
    layout: Option<PduLayout>,
    ddgst: [u8; DIGEST_LEN],
    compute_ddgst: bool,
    crc: Crc32c,
    error: Option<WireError>,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(params: NegotiatedParams) -> Self {
        Self {
            params,
            state: State::Ch,
            hdr: [0; MAX_HLEN_WITH_HDGST],
            hdr_have: 0,
            layout: None,
            ddgst: [0; DIGEST_LEN],
            compute_ddgst: false,
            crc: Crc32c::new(),
            error: None,
        }
    }

    /// The parameters in force.
    pub fn params(&self) -> &NegotiatedParams {
        &self.params
    }

    /// Replaces the parameters (after ICReq/ICResp negotiated digests and PDA). Takes effect
    /// with the next PDU; call it at a PDU boundary (after the IC PDU's [`FramerEvent::End`]).
    pub fn set_params(&mut self, params: NegotiatedParams) {
        self.params = params;
    }

    /// Whether the framer computes CRC32C over each PDU's data and reports it with
    /// [`FramerEvent::DataDigest`]. Off by default (a DDP receiver may have verified the data
    /// already, or fuse the CRC with its copy).
    pub fn set_compute_data_digest(&mut self, on: bool) {
        self.compute_ddgst = on;
    }

    /// True between PDUs: nothing of a next PDU has been read and no event is pending.
    pub fn is_at_pdu_boundary(&self) -> bool {
        self.state == State::Ch && self.hdr_have == 0
    }

    /// True after an error: the stream cannot be framed any more.
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The header bytes of the current (or failed) PDU received so far: after an error, the
    /// offending header to copy into a Termination Request.
    pub fn header_bytes(&self) -> &[u8] {
        &self.hdr[..self.hdr_have]
    }

    /// The layout of the current PDU, once its header is complete.
    pub fn current_layout(&self) -> Option<&PduLayout> {
        self.layout.as_ref()
    }

    /// The events in `chunk`, in order. Stops after the first error (the framer is then failed).
    /// All of `chunk` is consumed once the iterator returns `None`.
    pub fn events<'f, 'c>(&'f mut self, chunk: &'c [u8]) -> Events<'f, 'c> {
        Events {
            framer: self,
            chunk,
            pos: 0,
            done: false,
        }
    }

    #[cold]
    fn fail(&mut self, e: WireError) -> WireError {
        self.state = State::Failed;
        self.error = Some(e);
        e
    }

    /// Consumes bytes from the start of `input` up to the next event. Returns the number of
    /// bytes consumed and the event, if one is complete; `(0, None)` means `input` is empty and
    /// more bytes are needed. Ranges in [`FramerEvent::Data`] index `input`.
    pub fn advance(&mut self, input: &[u8]) -> Result<(usize, Option<FramerEvent>)> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Failed => {
                    return Err(self
                        .error
                        .unwrap_or(WireError::Sequence(Reason::FramingLost)));
                }
                State::End => {
                    self.state = State::Ch;
                    self.hdr_have = 0;
                    self.layout = None;
                    return Ok((pos, Some(FramerEvent::End)));
                }
                State::Ch => {
                    pos += self.fill_header(&input[pos..], CH_LEN);
                    if self.hdr_have < CH_LEN {
                        return Ok((pos, None));
                    }
                    // Steps 1–5 of validation, including the PLEN limit, on the CH alone.
                    match validate_ch(&self.hdr[..CH_LEN], &self.params) {
                        Ok(l) => {
                            if l.header_len() > MAX_HLEN_WITH_HDGST {
                                // Unreachable for a validated HLEN; kept as a guard.
                                return Err(self.fail(WireError::invalid(
                                    "HLEN",
                                    2,
                                    Reason::Hlen {
                                        t: l.pdu_type(),
                                        expected: l.ch.hlen,
                                        found: l.ch.hlen,
                                    },
                                )));
                            }
                            self.layout = Some(l);
                            self.state = State::Psh;
                        }
                        Err(e) => return Err(self.fail(e)),
                    }
                }
                State::Psh => {
                    let Some(l) = self.layout else {
                        return Err(self.fail(WireError::Sequence(Reason::FramingLost)));
                    };
                    let need = l.header_len();
                    pos += self.fill_header(&input[pos..], need);
                    if self.hdr_have < need {
                        return Ok((pos, None));
                    }
                    if let Err(e) = validate_psh(&l, &self.hdr[..need], &self.params) {
                        return Err(self.fail(e));
                    }
                    let repr = match PduRepr::parse(&self.hdr[..need]) {
                        Ok(r) => r,
                        Err(e) => return Err(self.fail(e)),
                    };
                    self.crc.reset();
                    let pad = l.data_offset().saturating_sub(need);
                    self.state = if pad > 0 {
                        State::Pad { left: pad }
                    } else {
                        self.after_padding(&l)
                    };
                    return Ok((
                        pos,
                        Some(FramerEvent::Header(PduHeader { layout: l, repr })),
                    ));
                }
                State::Pad { left } => {
                    let n = left.min(input.len() - pos);
                    pos += n;
                    if n < left {
                        self.state = State::Pad { left: left - n };
                        return Ok((pos, None));
                    }
                    let Some(l) = self.layout else {
                        return Err(self.fail(WireError::Sequence(Reason::FramingLost)));
                    };
                    self.state = self.after_padding(&l);
                }
                State::Data { at } => {
                    let Some(l) = self.layout else {
                        return Err(self.fail(WireError::Sequence(Reason::FramingLost)));
                    };
                    let left = l.data_len() - at;
                    let n = left.min(input.len() - pos);
                    if n == 0 {
                        return Ok((pos, None));
                    }
                    let range = pos..pos + n;
                    if self.compute_ddgst {
                        self.crc.update(&input[range.clone()]);
                    }
                    pos += n;
                    self.state = if n < left {
                        State::Data { at: at + n }
                    } else if l.has_ddgst() {
                        State::Ddgst { have: 0 }
                    } else {
                        State::End
                    };
                    return Ok((pos, Some(FramerEvent::Data { range, offset: at })));
                }
                State::Ddgst { have } => {
                    let n = (DIGEST_LEN - have).min(input.len() - pos);
                    self.ddgst[have..have + n].copy_from_slice(&input[pos..pos + n]);
                    pos += n;
                    if have + n < DIGEST_LEN {
                        self.state = State::Ddgst { have: have + n };
                        return Ok((pos, None));
                    }
                    self.state = State::End;
                    let computed = self.compute_ddgst.then(|| self.crc.finalize());
                    return Ok((
                        pos,
                        Some(FramerEvent::DataDigest {
                            received: u32::from_le_bytes(self.ddgst),
                            computed,
                        }),
                    ));
                }
            }
        }
    }

    /// State after the header and padding: data, or the end of a PDU without data.
    fn after_padding(&self, l: &PduLayout) -> State {
        if l.data_len() > 0 {
            State::Data { at: 0 }
        } else if l.has_ddgst() {
            // Validation rejects a data digest without data; kept for completeness.
            State::Ddgst { have: 0 }
        } else {
            State::End
        }
    }

    /// Copies from `input` into the header buffer until it holds `upto` bytes; returns the
    /// bytes taken.
    fn fill_header(&mut self, input: &[u8], upto: usize) -> usize {
        let n = upto.saturating_sub(self.hdr_have).min(input.len());
        self.hdr[self.hdr_have..self.hdr_have + n].copy_from_slice(&input[..n]);
        self.hdr_have += n;
        n
    }
}

/// Iterator over the events of one chunk; see [`Framer::events`].
#[derive(Debug)]
pub struct Events<'f, 'c> {
    framer: &'f mut Framer,
    chunk: &'c [u8],
    pos: usize,
    done: bool,
}

impl Iterator for Events<'_, '_> {
    type Item = Result<FramerEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.chunk[self.pos..];
        match self.framer.advance(rest) {
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
            Ok((n, ev)) => {
                let base = self.pos;
                self.pos += n;
                match ev {
                    Some(FramerEvent::Data { range, offset }) => Some(Ok(FramerEvent::Data {
                        range: range.start + base..range.end + base,
                        offset,
                    })),
                    Some(ev) => Some(Ok(ev)),
                    None => {
                        self.done = true;
                        None
                    }
                }
            }
        }
    }
}
