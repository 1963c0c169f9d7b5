//! In-band authentication (NVMe Base 2.0 §8.13 / TP 8006, DH-HMAC-CHAP): the Authentication
//! Send / Receive commands and the messages they carry.
//!
//! SQE fields of Authentication Send (FCTYPE 0x05) and Authentication Receive (FCTYPE 0x06),
//! offsets in the SQE:
//!
//! | field | bytes | value for DH-HMAC-CHAP |
//! |---|---|---|
//! | SPSP0 | 41 | 0x01 |
//! | SPSP1 | 42 | 0x01 |
//! | SECP | 43 | 0xE9 |
//! | TL (Send) / AL (Receive) | 44-47 | transfer / allocation length |
//!
//! Every message starts with AUTH_Type (byte 0), AUTH_Id (byte 1) and T_ID (bytes 4-5). The
//! layouts, offsets in the message:
//!
//! | message | type/id | fields |
//! |---|---|---|
//! | AUTH_Negotiate | 00h/00h | SC_C 6, NAPD 7, descriptors of 64 B from 8: AUTHID 0, HALEN 2, DHLEN 3, hash IDs from 4, DH group IDs from 34 |
//! | DH-HMAC-CHAP_Challenge | 01h/01h | HL 6, HASHID 8, DHGID 9, DHVLEN 10-11, SEQNUM 12-15, C1 (HL) from 16, then DHV (DHVLEN) |
//! | DH-HMAC-CHAP_Reply | 01h/02h | HL 6, CVALID 8, DHVLEN 10-11, SEQNUM 12-15, R1 (HL) from 16, C2 (HL), DHV (DHVLEN) |
//! | DH-HMAC-CHAP_Success1 | 01h/03h | HL 6, RVALID 8, R2 (HL) from 16 |
//! | DH-HMAC-CHAP_Success2 | 01h/04h | (16 bytes) |
//! | AUTH_Failure2 / AUTH_Failure1 | 00h/F0h, 00h/F1h | RESCODE 6, RESCODE_EXP 7 |
//!
//! Parsing borrows the variable-length values from the buffer and never allocates; every
//! length field is checked against the bytes received.

use super::error::NvmeError;
use super::fabrics::fabrics_sqe_with;
use super::opcode::{AdminOpcode, FabricsType};
use super::queue::Sqe;

/// SECP of DH-HMAC-CHAP (the security protocol "NVMe in-band authentication").
pub const SECP_DHCHAP: u8 = 0xE9;
/// SPSP0 and SPSP1 of DH-HMAC-CHAP.
pub const SPSP_DHCHAP: u8 = 0x01;
/// AUTHID of the DH-HMAC-CHAP protocol descriptor in AUTH_Negotiate.
pub const AUTHID_DHCHAP: u8 = 0x01;
/// Size of one protocol descriptor in AUTH_Negotiate.
pub const PROTOCOL_DESCRIPTOR_LEN: usize = 64;
/// Most hash IDs (HALEN) and DH group IDs (DHLEN) a descriptor holds.
pub const MAX_IDS: usize = 30;
/// Largest hash length (SHA-512).
pub const MAX_HASH_LEN: usize = 64;
/// Size of the fixed part of Challenge, Reply, Success1 and Success2.
pub const DHCHAP_HEADER_LEN: usize = 16;
/// Size of AUTH_Negotiate's fixed part.
pub const NEGOTIATE_HEADER_LEN: usize = 8;
/// Size of AUTH_Failure1/2.
pub const FAILURE_LEN: usize = 8;

/// AUTH_Type (byte 0).
pub mod auth_type {
    /// Messages common to authentication protocols (Negotiate, Failure1/2).
    pub const COMMON: u8 = 0x00;
    /// DH-HMAC-CHAP messages.
    pub const DHCHAP: u8 = 0x01;
}

/// AUTH_Id (byte 1).
pub mod auth_id {
    /// AUTH_Negotiate (type 00h).
    pub const NEGOTIATE: u8 = 0x00;
    /// DH-HMAC-CHAP_Challenge.
    pub const CHALLENGE: u8 = 0x01;
    /// DH-HMAC-CHAP_Reply.
    pub const REPLY: u8 = 0x02;
    /// DH-HMAC-CHAP_Success1.
    pub const SUCCESS1: u8 = 0x03;
    /// DH-HMAC-CHAP_Success2.
    pub const SUCCESS2: u8 = 0x04;
    /// AUTH_Failure2 (type 00h): host to controller.
    pub const FAILURE2: u8 = 0xF0;
    /// AUTH_Failure1 (type 00h): controller to host.
    pub const FAILURE1: u8 = 0xF1;
}

/// Field offsets of the messages.
mod field {
    pub type Field = std::ops::Range<usize>;
    pub const AUTH_TYPE: usize = 0;
    pub const AUTH_ID: usize = 1;
    pub const T_ID: Field = 4..6;
    // AUTH_Negotiate
    pub const SC_C: usize = 6;
    pub const NAPD: usize = 7;
    // protocol descriptor (relative)
    pub const D_AUTHID: usize = 0;
    pub const D_HALEN: usize = 2;
    pub const D_DHLEN: usize = 3;
    pub const D_HASH_IDS: usize = 4;
    pub const D_DH_IDS: usize = 34;
    // DH-HMAC-CHAP messages
    pub const HL: usize = 6;
    pub const HASHID: usize = 8;
    pub const CVALID: usize = 8;
    pub const RVALID: usize = 8;
    pub const DHGID: usize = 9;
    pub const DHVLEN: Field = 10..12;
    pub const SEQNUM: Field = 12..16;
    // Failure
    pub const RESCODE: usize = 6;
    pub const RESCODE_EXP: usize = 7;
}

macro_rules! id_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$d:meta])* $v:ident = $n:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$d])* $v = $n),* }
        impl $name {
            /// The identifier for a wire value, if defined.
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v { $($n => Some(Self::$v),)* _ => None }
            }
            /// Every defined identifier, in wire order.
            pub const ALL: &'static [Self] = &[$(Self::$v),*];
        }
    };
}

id_enum! {
    /// Hash function identifier (HASHID; the `XX` of a `DHHC-1:XX:` secret uses the same
    /// values, 0 meaning "not transformed").
    HashId {
        /// SHA-256 (HL 32).
        Sha256 = 0x01,
        /// SHA-384 (HL 48).
        Sha384 = 0x02,
        /// SHA-512 (HL 64).
        Sha512 = 0x03,
    }
}

impl HashId {
    /// The hash length HL.
    pub const fn hash_len(self) -> usize {
        match self {
            HashId::Sha256 => 32,
            HashId::Sha384 => 48,
            HashId::Sha512 => 64,
        }
    }

    /// The name nvmetcli and the Linux configfs use (`hmac(sha256)`...).
    pub const fn hmac_name(self) -> &'static str {
        match self {
            HashId::Sha256 => "hmac(sha256)",
            HashId::Sha384 => "hmac(sha384)",
            HashId::Sha512 => "hmac(sha512)",
        }
    }

    /// Reads `hmac(sha256)`, `sha256` or `SHA-256` (and the 384/512 forms).
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let s = s
            .strip_prefix("hmac(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(&s);
        match s.replace('-', "").as_str() {
            "sha256" => Some(HashId::Sha256),
            "sha384" => Some(HashId::Sha384),
            "sha512" => Some(HashId::Sha512),
            _ => None,
        }
    }
}

id_enum! {
    /// Diffie-Hellman group identifier (DHGID).
    DhGroupId {
        /// No Diffie-Hellman exchange.
        Null = 0x00,
        /// RFC 7919 ffdhe2048.
        Ffdhe2048 = 0x01,
        /// RFC 7919 ffdhe3072.
        Ffdhe3072 = 0x02,
        /// RFC 7919 ffdhe4096.
        Ffdhe4096 = 0x03,
        /// RFC 7919 ffdhe6144.
        Ffdhe6144 = 0x04,
        /// RFC 7919 ffdhe8192.
        Ffdhe8192 = 0x05,
    }
}

impl DhGroupId {
    /// Size of a public value (DHVLEN) in bytes: the size of the group's prime; 0 for null.
    pub const fn value_len(self) -> usize {
        match self {
            DhGroupId::Null => 0,
            DhGroupId::Ffdhe2048 => 256,
            DhGroupId::Ffdhe3072 => 384,
            DhGroupId::Ffdhe4096 => 512,
            DhGroupId::Ffdhe6144 => 768,
            DhGroupId::Ffdhe8192 => 1024,
        }
    }

    /// The name nvmetcli and the Linux configfs use (`null`, `ffdhe2048`...).
    pub const fn name(self) -> &'static str {
        match self {
            DhGroupId::Null => "null",
            DhGroupId::Ffdhe2048 => "ffdhe2048",
            DhGroupId::Ffdhe3072 => "ffdhe3072",
            DhGroupId::Ffdhe4096 => "ffdhe4096",
            DhGroupId::Ffdhe6144 => "ffdhe6144",
            DhGroupId::Ffdhe8192 => "ffdhe8192",
        }
    }

    /// Reads a name as [`DhGroupId::name`] writes it.
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL.iter().copied().find(|g| g.name() == s)
    }
}

id_enum! {
    /// Reason code explanation (RESCODE_EXP) of AUTH_Failure1/2; RESCODE is always
    /// [`RESCODE_FAILED`].
    FailureReason {
        /// Authentication failed (wrong response).
        Failed = 0x01,
        /// Authentication protocol not usable.
        NotUsable = 0x02,
        /// Secure channel concatenation mismatch.
        ConcatMismatch = 0x03,
        /// Hash function not usable.
        HashUnusable = 0x04,
        /// DH group not usable.
        DhGroupUnusable = 0x05,
        /// Incorrect payload.
        IncorrectPayload = 0x06,
        /// Incorrect protocol message (out of order, wrong T_ID).
        IncorrectMessage = 0x07,
    }
}

/// RESCODE of AUTH_Failure1/2: "authentication failure".
pub const RESCODE_FAILED: u8 = 0x01;

/// A message that does not parse, with the failure reason a peer answers it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Fewer bytes than the message's lengths say.
    #[error("truncated {message}: need {needed} bytes, have {have}")]
    Truncated {
        /// Message name.
        message: &'static str,
        /// Bytes the message needs.
        needed: usize,
        /// Bytes received.
        have: usize,
    },
    /// An AUTH_Type / AUTH_Id pair no protocol defines.
    #[error("unknown authentication message type {auth_type:#04x} id {auth_id:#04x}")]
    UnknownMessage {
        /// AUTH_Type.
        auth_type: u8,
        /// AUTH_Id.
        auth_id: u8,
    },
    /// A field has a value the spec does not allow.
    #[error("invalid {field} in {message}: {reason}")]
    InvalidField {
        /// Message name.
        message: &'static str,
        /// Field name, as in the spec.
        field: &'static str,
        /// What was expected.
        reason: &'static str,
    },
}

impl AuthError {
    /// The RESCODE_EXP a peer reports for this message.
    pub const fn failure_reason(&self) -> FailureReason {
        match self {
            AuthError::UnknownMessage { .. } => FailureReason::IncorrectMessage,
            _ => FailureReason::IncorrectPayload,
        }
    }
}

fn need(message: &'static str, needed: usize, buf: &[u8]) -> Result<(), AuthError> {
    if buf.len() < needed {
        Err(AuthError::Truncated {
            message,
            needed,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

fn le16(b: &[u8], r: field::Field) -> u16 {
    u16::from_le_bytes([b[r.start], b[r.start + 1]])
}

fn le32(b: &[u8], r: field::Field) -> u32 {
    u32::from_le_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

/// A view of the header every authentication message starts with (AUTH_Type, AUTH_Id, T_ID).
#[derive(Debug, Clone, Copy)]
pub struct AuthHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AuthHeader<T> {
    /// Wraps a buffer that holds at least the 6 header bytes.
    pub fn new_checked(buffer: T) -> Result<Self, AuthError> {
        need("authentication message", field::T_ID.end, buffer.as_ref())?;
        Ok(Self { buffer })
    }

    /// AUTH_Type.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// AUTH_Id.
    pub fn auth_id(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_ID]
    }

    /// T_ID: the transaction identifier.
    pub fn t_id(&self) -> u16 {
        le16(self.buffer.as_ref(), field::T_ID)
    }
}

/// AUTH_Negotiate: the host offers protocols (only DH-HMAC-CHAP is defined) with the hash
/// functions and DH groups it supports, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiateRepr<'a> {
    /// T_ID chosen by the host for this transaction.
    pub t_id: u16,
    /// SC_C: secure channel concatenation (0: none).
    pub sc_c: u8,
    /// The DH-HMAC-CHAP descriptor's hash IDs (HALEN of them).
    pub hash_ids: &'a [u8],
    /// The DH-HMAC-CHAP descriptor's DH group IDs (DHLEN of them).
    pub dhgroup_ids: &'a [u8],
}

impl<'a> NegotiateRepr<'a> {
    /// Bytes [`NegotiateRepr::emit`] writes (one descriptor).
    pub const fn buffer_len(&self) -> usize {
        NEGOTIATE_HEADER_LEN + PROTOCOL_DESCRIPTOR_LEN
    }

    fn parse(b: &'a [u8]) -> Result<Self, AuthError> {
        const M: &str = "AUTH_Negotiate";
        need(M, NEGOTIATE_HEADER_LEN, b)?;
        let napd = b[field::NAPD] as usize;
        if napd == 0 {
            return Err(AuthError::InvalidField {
                message: M,
                field: "NAPD",
                reason: "at least one protocol descriptor",
            });
        }
        need(M, NEGOTIATE_HEADER_LEN + napd * PROTOCOL_DESCRIPTOR_LEN, b)?;
        let d = b[NEGOTIATE_HEADER_LEN..]
            .chunks_exact(PROTOCOL_DESCRIPTOR_LEN)
            .take(napd)
            .find(|d| d[field::D_AUTHID] == AUTHID_DHCHAP)
            .ok_or(AuthError::InvalidField {
                message: M,
                field: "AUTHID",
                reason: "no DH-HMAC-CHAP (01h) descriptor",
            })?;
        let halen = d[field::D_HALEN] as usize;
        let dhlen = d[field::D_DHLEN] as usize;
        if halen > MAX_IDS || dhlen > MAX_IDS {
            return Err(AuthError::InvalidField {
                message: M,
                field: if halen > MAX_IDS { "HALEN" } else { "DHLEN" },
                reason: "at most 30 identifiers",
            });
        }
        Ok(NegotiateRepr {
            t_id: le16(b, field::T_ID),
            sc_c: b[field::SC_C],
            hash_ids: &d[field::D_HASH_IDS..field::D_HASH_IDS + halen],
            dhgroup_ids: &d[field::D_DH_IDS..field::D_DH_IDS + dhlen],
        })
    }

    fn emit(&self, b: &mut [u8]) {
        b[field::AUTH_TYPE] = auth_type::COMMON;
        b[field::AUTH_ID] = auth_id::NEGOTIATE;
        b[field::T_ID].copy_from_slice(&self.t_id.to_le_bytes());
        b[field::SC_C] = self.sc_c;
        b[field::NAPD] = 1;
        let d = &mut b[NEGOTIATE_HEADER_LEN..NEGOTIATE_HEADER_LEN + PROTOCOL_DESCRIPTOR_LEN];
        let halen = self.hash_ids.len().min(MAX_IDS);
        let dhlen = self.dhgroup_ids.len().min(MAX_IDS);
        d[field::D_AUTHID] = AUTHID_DHCHAP;
        d[field::D_HALEN] = halen as u8;
        d[field::D_DHLEN] = dhlen as u8;
        d[field::D_HASH_IDS..field::D_HASH_IDS + halen].copy_from_slice(&self.hash_ids[..halen]);
        d[field::D_DH_IDS..field::D_DH_IDS + dhlen].copy_from_slice(&self.dhgroup_ids[..dhlen]);
    }
}

/// DH-HMAC-CHAP_Challenge: the controller's choice of hash and group, challenge C1,
/// sequence number S1 and DH public value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeRepr<'a> {
    /// T_ID of the transaction.
    pub t_id: u16,
    /// HASHID.
    pub hashid: u8,
    /// DHGID.
    pub dhgid: u8,
    /// SEQNUM: S1.
    pub seqnum: u32,
    /// C1 (HL bytes).
    pub cval: &'a [u8],
    /// The controller's DH public value (DHVLEN bytes; empty for the null group).
    pub dhv: &'a [u8],
}

impl<'a> ChallengeRepr<'a> {
    /// Bytes [`ChallengeRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        DHCHAP_HEADER_LEN + self.cval.len() + self.dhv.len()
    }

    fn parse(b: &'a [u8]) -> Result<Self, AuthError> {
        const M: &str = "DH-HMAC-CHAP_Challenge";
        need(M, DHCHAP_HEADER_LEN, b)?;
        let hl = b[field::HL] as usize;
        let dhvlen = le16(b, field::DHVLEN) as usize;
        need(M, DHCHAP_HEADER_LEN + hl + dhvlen, b)?;
        let cval = &b[DHCHAP_HEADER_LEN..DHCHAP_HEADER_LEN + hl];
        Ok(ChallengeRepr {
            t_id: le16(b, field::T_ID),
            hashid: b[field::HASHID],
            dhgid: b[field::DHGID],
            seqnum: le32(b, field::SEQNUM),
            cval,
            dhv: &b[DHCHAP_HEADER_LEN + hl..DHCHAP_HEADER_LEN + hl + dhvlen],
        })
    }

    fn emit(&self, b: &mut [u8]) {
        dhchap_header(b, auth_id::CHALLENGE, self.t_id, self.cval.len());
        b[field::HASHID] = self.hashid;
        b[field::DHGID] = self.dhgid;
        b[field::DHVLEN].copy_from_slice(&(self.dhv.len() as u16).to_le_bytes());
        b[field::SEQNUM].copy_from_slice(&self.seqnum.to_le_bytes());
        let hl = self.cval.len();
        b[DHCHAP_HEADER_LEN..DHCHAP_HEADER_LEN + hl].copy_from_slice(self.cval);
        b[DHCHAP_HEADER_LEN + hl..DHCHAP_HEADER_LEN + hl + self.dhv.len()]
            .copy_from_slice(self.dhv);
    }
}

/// DH-HMAC-CHAP_Reply: the host's response R1, its challenge C2 for bidirectional
/// authentication (CVALID), S2 and its DH public value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyRepr<'a> {
    /// T_ID of the transaction.
    pub t_id: u16,
    /// CVALID: C2 is valid (the host authenticates the controller).
    pub cvalid: bool,
    /// SEQNUM: S2 (0 when the controller is not authenticated).
    pub seqnum: u32,
    /// R1 (HL bytes).
    pub rval: &'a [u8],
    /// C2 (HL bytes; meaningful when `cvalid`).
    pub cval: &'a [u8],
    /// The host's DH public value (DHVLEN bytes).
    pub dhv: &'a [u8],
}

impl<'a> ReplyRepr<'a> {
    /// Bytes [`ReplyRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        DHCHAP_HEADER_LEN + 2 * self.rval.len() + self.dhv.len()
    }

    fn parse(b: &'a [u8]) -> Result<Self, AuthError> {
        const M: &str = "DH-HMAC-CHAP_Reply";
        need(M, DHCHAP_HEADER_LEN, b)?;
        let hl = b[field::HL] as usize;
        let dhvlen = le16(b, field::DHVLEN) as usize;
        need(M, DHCHAP_HEADER_LEN + 2 * hl + dhvlen, b)?;
        let s = DHCHAP_HEADER_LEN;
        Ok(ReplyRepr {
            t_id: le16(b, field::T_ID),
            cvalid: b[field::CVALID] & 1 != 0,
            seqnum: le32(b, field::SEQNUM),
            rval: &b[s..s + hl],
            cval: &b[s + hl..s + 2 * hl],
            dhv: &b[s + 2 * hl..s + 2 * hl + dhvlen],
        })
    }

    fn emit(&self, b: &mut [u8]) {
        let hl = self.rval.len();
        dhchap_header(b, auth_id::REPLY, self.t_id, hl);
        b[field::CVALID] = u8::from(self.cvalid);
        b[field::DHVLEN].copy_from_slice(&(self.dhv.len() as u16).to_le_bytes());
        b[field::SEQNUM].copy_from_slice(&self.seqnum.to_le_bytes());
        let s = DHCHAP_HEADER_LEN;
        b[s..s + hl].copy_from_slice(self.rval);
        let c = &mut b[s + hl..s + 2 * hl];
        if self.cval.len() == hl {
            c.copy_from_slice(self.cval);
        } else {
            c.fill(0);
        }
        b[s + 2 * hl..s + 2 * hl + self.dhv.len()].copy_from_slice(self.dhv);
    }
}

/// DH-HMAC-CHAP_Success1: the host is authenticated; R2 answers C2 when RVALID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Success1Repr<'a> {
    /// T_ID of the transaction.
    pub t_id: u16,
    /// HL of the negotiated hash.
    pub hl: u8,
    /// R2, the controller's response, present when the host sent a valid C2 (RVALID).
    pub rval: Option<&'a [u8]>,
}

impl<'a> Success1Repr<'a> {
    /// Bytes [`Success1Repr::emit`] writes (the R2 field is always there, zero without RVALID).
    pub const fn buffer_len(&self) -> usize {
        DHCHAP_HEADER_LEN + self.hl as usize
    }

    fn parse(b: &'a [u8]) -> Result<Self, AuthError> {
        const M: &str = "DH-HMAC-CHAP_Success1";
        need(M, DHCHAP_HEADER_LEN, b)?;
        let hl = b[field::HL];
        let rvalid = b[field::RVALID] & 1 != 0;
        let rval = if rvalid {
            need(M, DHCHAP_HEADER_LEN + hl as usize, b)?;
            Some(&b[DHCHAP_HEADER_LEN..DHCHAP_HEADER_LEN + hl as usize])
        } else {
            None
        };
        Ok(Success1Repr {
            t_id: le16(b, field::T_ID),
            hl,
            rval,
        })
    }

    fn emit(&self, b: &mut [u8]) {
        let hl = self.hl as usize;
        dhchap_header(b, auth_id::SUCCESS1, self.t_id, hl);
        let r = &mut b[DHCHAP_HEADER_LEN..DHCHAP_HEADER_LEN + hl];
        match self.rval {
            Some(v) if v.len() == hl => {
                b[field::RVALID] = 1;
                b[DHCHAP_HEADER_LEN..DHCHAP_HEADER_LEN + hl].copy_from_slice(v);
            }
            _ => r.fill(0),
        }
    }
}

/// A parsed authentication message (the data of an Authentication Send or Receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMessage<'a> {
    /// AUTH_Negotiate (host to controller).
    Negotiate(NegotiateRepr<'a>),
    /// DH-HMAC-CHAP_Challenge (controller to host).
    Challenge(ChallengeRepr<'a>),
    /// DH-HMAC-CHAP_Reply (host to controller).
    Reply(ReplyRepr<'a>),
    /// DH-HMAC-CHAP_Success1 (controller to host).
    Success1(Success1Repr<'a>),
    /// DH-HMAC-CHAP_Success2 (host to controller).
    Success2 {
        /// T_ID of the transaction.
        t_id: u16,
    },
    /// AUTH_Failure1 (controller to host) or AUTH_Failure2 (host to controller).
    Failure {
        /// True for Failure1, false for Failure2.
        from_controller: bool,
        /// T_ID of the transaction.
        t_id: u16,
        /// RESCODE.
        rescode: u8,
        /// RESCODE_EXP (see [`FailureReason`]).
        rescode_exp: u8,
    },
}

fn dhchap_header(b: &mut [u8], id: u8, t_id: u16, hl: usize) {
    b[..DHCHAP_HEADER_LEN].fill(0);
    b[field::AUTH_TYPE] = auth_type::DHCHAP;
    b[field::AUTH_ID] = id;
    b[field::T_ID].copy_from_slice(&t_id.to_le_bytes());
    b[field::HL] = hl as u8;
}

impl<'a> AuthMessage<'a> {
    /// Parses a message from the bytes of an Authentication Send or Receive. Bytes past the
    /// message (an allocation length larger than the message) are ignored.
    pub fn parse(b: &'a [u8]) -> Result<Self, AuthError> {
        let h = AuthHeader::new_checked(b)?;
        match (h.auth_type(), h.auth_id()) {
            (auth_type::COMMON, auth_id::NEGOTIATE) => NegotiateRepr::parse(b).map(Self::Negotiate),
            (auth_type::COMMON, id @ (auth_id::FAILURE1 | auth_id::FAILURE2)) => {
                need(
                    if id == auth_id::FAILURE1 {
                        "AUTH_Failure1"
                    } else {
                        "AUTH_Failure2"
                    },
                    FAILURE_LEN,
                    b,
                )?;
                Ok(AuthMessage::Failure {
                    from_controller: id == auth_id::FAILURE1,
                    t_id: h.t_id(),
                    rescode: b[field::RESCODE],
                    rescode_exp: b[field::RESCODE_EXP],
                })
            }
            (auth_type::DHCHAP, auth_id::CHALLENGE) => ChallengeRepr::parse(b).map(Self::Challenge),
            (auth_type::DHCHAP, auth_id::REPLY) => ReplyRepr::parse(b).map(Self::Reply),
            (auth_type::DHCHAP, auth_id::SUCCESS1) => Success1Repr::parse(b).map(Self::Success1),
            (auth_type::DHCHAP, auth_id::SUCCESS2) => {
                need("DH-HMAC-CHAP_Success2", DHCHAP_HEADER_LEN, b)?;
                Ok(AuthMessage::Success2 { t_id: h.t_id() })
            }
            (auth_type, auth_id) => Err(AuthError::UnknownMessage { auth_type, auth_id }),
        }
    }

    /// T_ID of the message.
    pub const fn t_id(&self) -> u16 {
        match self {
            AuthMessage::Negotiate(m) => m.t_id,
            AuthMessage::Challenge(m) => m.t_id,
            AuthMessage::Reply(m) => m.t_id,
            AuthMessage::Success1(m) => m.t_id,
            AuthMessage::Success2 { t_id } | AuthMessage::Failure { t_id, .. } => *t_id,
        }
    }

    /// The message's name in the spec.
    pub const fn name(&self) -> &'static str {
        match self {
            AuthMessage::Negotiate(_) => "AUTH_Negotiate",
            AuthMessage::Challenge(_) => "DH-HMAC-CHAP_Challenge",
            AuthMessage::Reply(_) => "DH-HMAC-CHAP_Reply",
            AuthMessage::Success1(_) => "DH-HMAC-CHAP_Success1",
            AuthMessage::Success2 { .. } => "DH-HMAC-CHAP_Success2",
            AuthMessage::Failure {
                from_controller: true,
                ..
            } => "AUTH_Failure1",
            AuthMessage::Failure { .. } => "AUTH_Failure2",
        }
    }

    /// Bytes [`AuthMessage::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            AuthMessage::Negotiate(m) => m.buffer_len(),
            AuthMessage::Challenge(m) => m.buffer_len(),
            AuthMessage::Reply(m) => m.buffer_len(),
            AuthMessage::Success1(m) => m.buffer_len(),
            AuthMessage::Success2 { .. } => DHCHAP_HEADER_LEN,
            AuthMessage::Failure { .. } => FAILURE_LEN,
        }
    }

    /// Writes the message into the first [`AuthMessage::buffer_len`] bytes of `b`.
    ///
    /// # Panics
    /// If `b` is shorter than [`AuthMessage::buffer_len`] (a caller bug, not input).
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..self.buffer_len()];
        match self {
            AuthMessage::Negotiate(m) => {
                b.fill(0);
                m.emit(b)
            }
            AuthMessage::Challenge(m) => m.emit(b),
            AuthMessage::Reply(m) => m.emit(b),
            AuthMessage::Success1(m) => m.emit(b),
            AuthMessage::Success2 { t_id } => dhchap_header(b, auth_id::SUCCESS2, *t_id, 0),
            AuthMessage::Failure {
                from_controller,
                t_id,
                rescode,
                rescode_exp,
            } => {
                b.fill(0);
                b[field::AUTH_TYPE] = auth_type::COMMON;
                b[field::AUTH_ID] = if *from_controller {
                    auth_id::FAILURE1
                } else {
                    auth_id::FAILURE2
                };
                b[field::T_ID].copy_from_slice(&t_id.to_le_bytes());
                b[field::RESCODE] = *rescode;
                b[field::RESCODE_EXP] = *rescode_exp;
            }
        }
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v);
        v
    }
}

/// Authentication Send (FCTYPE 0x05): `tl` bytes of an authentication message to the
/// controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthSendCommand {
    /// SECP: security protocol ([`SECP_DHCHAP`]).
    pub secp: u8,
    /// SPSP0.
    pub spsp0: u8,
    /// SPSP1.
    pub spsp1: u8,
    /// TL: transfer length.
    pub tl: u32,
}

/// Authentication Receive (FCTYPE 0x06): up to `al` bytes of the controller's next
/// authentication message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthReceiveCommand {
    /// SECP: security protocol ([`SECP_DHCHAP`]).
    pub secp: u8,
    /// SPSP0.
    pub spsp0: u8,
    /// SPSP1.
    pub spsp1: u8,
    /// AL: allocation length.
    pub al: u32,
}

/// SQE byte offsets of the fields (for error locations).
pub mod sqe_offset {
    /// SPSP0.
    pub const SPSP0: u16 = 41;
    /// SPSP1.
    pub const SPSP1: u16 = 42;
    /// SECP.
    pub const SECP: u16 = 43;
    /// TL / AL.
    pub const LEN: u16 = 44;
}

fn auth_fields(sqe: &Sqe, fctype: FabricsType) -> Result<(u8, u8, u8, u32), NvmeError> {
    if sqe.opcode() != AdminOpcode::Fabrics as u8 {
        return Err(NvmeError::InvalidOpcode {
            opcode: sqe.opcode(),
        });
    }
    if sqe.fctype() != fctype as u8 {
        return Err(NvmeError::InvalidFctype {
            fctype: sqe.fctype(),
        });
    }
    let dw10 = sqe.cdw10();
    Ok((
        (dw10 >> 24) as u8,
        (dw10 >> 8) as u8,
        (dw10 >> 16) as u8,
        sqe.cdw11(),
    ))
}

fn auth_cdw10(secp: u8, spsp0: u8, spsp1: u8) -> u32 {
    (u32::from(secp) << 24) | (u32::from(spsp1) << 16) | (u32::from(spsp0) << 8)
}

impl AuthSendCommand {
    /// A DH-HMAC-CHAP Authentication Send of `tl` bytes.
    pub const fn dhchap(tl: u32) -> Self {
        AuthSendCommand {
            secp: SECP_DHCHAP,
            spsp0: SPSP_DHCHAP,
            spsp1: SPSP_DHCHAP,
            tl,
        }
    }

    /// Reads the command from an SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        let (secp, spsp0, spsp1, tl) = auth_fields(sqe, FabricsType::AuthenticationSend)?;
        Ok(AuthSendCommand {
            secp,
            spsp0,
            spsp1,
            tl,
        })
    }

    /// Builds the SQE (CID 0, DPTR zero).
    pub fn to_sqe(&self) -> Sqe {
        fabrics_sqe_with(
            FabricsType::AuthenticationSend,
            auth_cdw10(self.secp, self.spsp0, self.spsp1),
            self.tl,
        )
    }
}

impl AuthReceiveCommand {
    /// A DH-HMAC-CHAP Authentication Receive of up to `al` bytes.
    pub const fn dhchap(al: u32) -> Self {
        AuthReceiveCommand {
            secp: SECP_DHCHAP,
            spsp0: SPSP_DHCHAP,
            spsp1: SPSP_DHCHAP,
            al,
        }
    }

    /// Reads the command from an SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        let (secp, spsp0, spsp1, al) = auth_fields(sqe, FabricsType::AuthenticationReceive)?;
        Ok(AuthReceiveCommand {
            secp,
            spsp0,
            spsp1,
            al,
        })
    }

    /// Builds the SQE (CID 0, DPTR zero).
    pub fn to_sqe(&self) -> Sqe {
        fabrics_sqe_with(
            FabricsType::AuthenticationReceive,
            auth_cdw10(self.secp, self.spsp0, self.spsp1),
            self.al,
        )
    }
}

/// Checks SECP/SPSP0/SPSP1 of an authentication command: the SQE byte offset of the first
/// field that is not DH-HMAC-CHAP's.
pub const fn check_dhchap_protocol(secp: u8, spsp0: u8, spsp1: u8) -> Result<(), u16> {
    if secp != SECP_DHCHAP {
        Err(sqe_offset::SECP)
    } else if spsp0 != SPSP_DHCHAP {
        Err(sqe_offset::SPSP0)
    } else if spsp1 != SPSP_DHCHAP {
        Err(sqe_offset::SPSP1)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::FabricsCommand;
    use zerocopy::IntoBytes;

    // Golden bytes, laid out by hand from the tables above.
    const NEGOTIATE: [u8; 72] = {
        let mut b = [0u8; 72];
        b[0] = 0x00; // AUTH_Type common
        b[1] = 0x00; // AUTH_Negotiate
        b[4] = 0x34; // T_ID 0x1234
        b[5] = 0x12;
        b[7] = 1; // NAPD
        b[8] = 0x01; // AUTHID DH-HMAC-CHAP
        b[10] = 3; // HALEN
        b[11] = 2; // DHLEN
        b[12] = 1;
        b[13] = 2;
        b[14] = 3;
        b[8 + 34] = 0;
        b[8 + 35] = 1;
        b
    };

    #[test]
    fn negotiate_deconstruct() {
        let m = AuthMessage::parse(&NEGOTIATE).unwrap();
        let AuthMessage::Negotiate(n) = m else {
            panic!("{m:?}")
        };
        assert_eq!(n.t_id, 0x1234);
        assert_eq!(n.sc_c, 0);
        assert_eq!(n.hash_ids, &[1, 2, 3]);
        assert_eq!(n.dhgroup_ids, &[0, 1]);
    }

    #[test]
    fn negotiate_construct() {
        let n = NegotiateRepr {
            t_id: 0x1234,
            sc_c: 0,
            hash_ids: &[1, 2, 3],
            dhgroup_ids: &[0, 1],
        };
        assert_eq!(AuthMessage::Negotiate(n).to_vec(), NEGOTIATE);
    }

    const CHALLENGE: [u8; 22] = [
        0x01, 0x01, 0, 0, 0x07, 0x00, // type, id, rsvd, T_ID 7
        4, 0, // HL 4, rsvd
        0x01, 0x01, // HASHID SHA-256, DHGID ffdhe2048
        2, 0, // DHVLEN 2
        0x78, 0x56, 0x34, 0x12, // SEQNUM
        0xC1, 0xC1, 0xC1, 0xC1, // C1
        0xD0, 0xD1, // DHV
    ];

    #[test]
    fn challenge_parse_and_emit() {
        let m = AuthMessage::parse(&CHALLENGE).unwrap();
        let want = ChallengeRepr {
            t_id: 7,
            hashid: 1,
            dhgid: 1,
            seqnum: 0x1234_5678,
            cval: &[0xC1; 4],
            dhv: &[0xD0, 0xD1],
        };
        assert_eq!(m, AuthMessage::Challenge(want));
        assert_eq!(AuthMessage::Challenge(want).to_vec(), CHALLENGE);
    }

    const REPLY: [u8; 26] = [
        0x01, 0x02, 0, 0, 0x07, 0x00, // type, id, rsvd, T_ID 7
        4, 0, // HL 4
        1, 0, // CVALID
        2, 0, // DHVLEN 2
        9, 0, 0, 0, // SEQNUM 9
        0xA1, 0xA2, 0xA3, 0xA4, // R1
        0xC2, 0xC2, 0xC2, 0xC2, // C2
        0xE0, 0xE1, // DHV
    ];

    #[test]
    fn reply_parse_and_emit() {
        let m = AuthMessage::parse(&REPLY).unwrap();
        let want = ReplyRepr {
            t_id: 7,
            cvalid: true,
            seqnum: 9,
            rval: &[0xA1, 0xA2, 0xA3, 0xA4],
            cval: &[0xC2; 4],
            dhv: &[0xE0, 0xE1],
        };
        assert_eq!(m, AuthMessage::Reply(want));
        assert_eq!(AuthMessage::Reply(want).to_vec(), REPLY);
    }

    #[test]
    fn success1_failure_success2_golden() {
        let s1 = [
            0x01, 0x03, 0, 0, 0x07, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xEF,
        ];
        let m = AuthMessage::Success1(Success1Repr {
            t_id: 7,
            hl: 2,
            rval: Some(&[0xBE, 0xEF]),
        });
        assert_eq!(m.to_vec(), s1);
        assert_eq!(AuthMessage::parse(&s1).unwrap(), m);
        let no_r2 = AuthMessage::Success1(Success1Repr {
            t_id: 7,
            hl: 2,
            rval: None,
        });
        assert_eq!(no_r2.to_vec()[8], 0, "RVALID clear");
        assert_eq!(AuthMessage::parse(&no_r2.to_vec()).unwrap(), no_r2);

        let s2 = [0x01, 0x04, 0, 0, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(AuthMessage::Success2 { t_id: 7 }.to_vec(), s2);
        assert_eq!(
            AuthMessage::parse(&s2).unwrap(),
            AuthMessage::Success2 { t_id: 7 }
        );

        let f1 = [0x00, 0xF1, 0, 0, 0x07, 0, 0x01, 0x04];
        let m = AuthMessage::Failure {
            from_controller: true,
            t_id: 7,
            rescode: RESCODE_FAILED,
            rescode_exp: FailureReason::HashUnusable as u8,
        };
        assert_eq!(m.to_vec(), f1);
        assert_eq!(AuthMessage::parse(&f1).unwrap(), m);
        assert_eq!(m.name(), "AUTH_Failure1");
        let mut f2 = f1;
        f2[1] = 0xF0;
        assert!(matches!(
            AuthMessage::parse(&f2).unwrap(),
            AuthMessage::Failure {
                from_controller: false,
                ..
            }
        ));
    }

    #[test]
    fn truncated_messages_are_refused() {
        for msg in [&NEGOTIATE[..], &CHALLENGE[..], &REPLY[..]] {
            for n in 0..msg.len() {
                let e = AuthMessage::parse(&msg[..n]).unwrap_err();
                assert!(matches!(e, AuthError::Truncated { .. }), "{n}: {e}");
                assert_eq!(e.failure_reason(), FailureReason::IncorrectPayload);
            }
        }
        // A DHVLEN that points past the message.
        let mut c = CHALLENGE;
        c[10] = 0xFF;
        assert!(matches!(
            AuthMessage::parse(&c),
            Err(AuthError::Truncated { .. })
        ));
    }

    #[test]
    fn malformed_negotiate_is_refused() {
        let mut n = NEGOTIATE;
        n[7] = 0;
        assert!(matches!(
            AuthMessage::parse(&n),
            Err(AuthError::InvalidField { field: "NAPD", .. })
        ));
        let mut n = NEGOTIATE;
        n[8] = 0x02;
        assert!(matches!(
            AuthMessage::parse(&n),
            Err(AuthError::InvalidField {
                field: "AUTHID",
                ..
            })
        ));
        let mut n = NEGOTIATE;
        n[10] = 31;
        assert!(matches!(
            AuthMessage::parse(&n),
            Err(AuthError::InvalidField { field: "HALEN", .. })
        ));
        let mut n = NEGOTIATE;
        n[7] = 2; // two descriptors announced, one sent
        assert!(matches!(
            AuthMessage::parse(&n),
            Err(AuthError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_messages_name_their_type_and_id() {
        let e = AuthMessage::parse(&[0x01, 0x09, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(
            e,
            AuthError::UnknownMessage {
                auth_type: 1,
                auth_id: 9
            }
        );
        assert_eq!(e.failure_reason(), FailureReason::IncorrectMessage);
    }

    #[test]
    fn auth_send_and_receive_sqe_golden() {
        let sqe = AuthSendCommand::dhchap(72).to_sqe();
        let b = sqe.as_bytes();
        assert_eq!(b[0], 0x7F);
        assert_eq!(b[4], 0x05);
        assert_eq!(&b[40..48], &[0, 0x01, 0x01, 0xE9, 72, 0, 0, 0]);
        assert_eq!(
            FabricsCommand::parse(&sqe).unwrap(),
            FabricsCommand::AuthenticationSend(AuthSendCommand::dhchap(72))
        );
        let sqe = AuthReceiveCommand::dhchap(4096).to_sqe();
        let b = sqe.as_bytes();
        assert_eq!(b[4], 0x06);
        assert_eq!(&b[40..48], &[0, 0x01, 0x01, 0xE9, 0, 0x10, 0, 0]);
        assert_eq!(
            FabricsCommand::parse(&sqe).unwrap(),
            FabricsCommand::AuthenticationReceive(AuthReceiveCommand::dhchap(4096))
        );
        assert_eq!(check_dhchap_protocol(0xE9, 1, 1), Ok(()));
        assert_eq!(check_dhchap_protocol(0xEA, 1, 1), Err(43));
        assert_eq!(check_dhchap_protocol(0xE9, 2, 1), Err(41));
    }

    #[test]
    fn names_round_trip() {
        for h in HashId::ALL {
            assert_eq!(HashId::from_name(h.hmac_name()), Some(*h));
        }
        assert_eq!(HashId::from_name("SHA-384"), Some(HashId::Sha384));
        for g in DhGroupId::ALL {
            assert_eq!(DhGroupId::from_name(g.name()), Some(*g));
        }
        assert_eq!(DhGroupId::from_name("ffdhe1024"), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(m) = AuthMessage::parse(&bytes) {
                // What parses re-emits to bytes that parse to the same message.
                let v = m.to_vec();
                proptest::prop_assert_eq!(AuthMessage::parse(&v).unwrap(), m);
            }
        }
    }
}
