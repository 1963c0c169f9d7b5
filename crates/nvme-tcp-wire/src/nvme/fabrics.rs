//! Fabrics commands (opcode 0x7F): Connect and its data, Property Get/Set, Disconnect.
//!
//! SQE layouts (NVMe over Fabrics 1.1 / NVMe Base 2.0 "Fabrics Command Set"; offsets in the SQE):
//!
//! | command | fields |
//! |---|---|
//! | common | OPC 0 = 0x7F, CID 2-3, FCTYPE 4, SGL1 24-39 |
//! | Property Set (0x00) | ATTRIB 40 (bits 2:0 size: 0 = 4 B, 1 = 8 B), OFST 44-47, VALUE 48-55 |
//! | Connect (0x01) | RECFMT 40-41, QID 42-43, SQSIZE 44-45 (0's based), CATTR 46, KATO 48-51 (ms) |
//! | Property Get (0x04) | ATTRIB 40, OFST 44-47; value returned in CQE DW0 (DW1:DW0 for 8 B) |
//! | Authentication Send (0x05) / Receive (0x06) | see [`super::auth`] |
//! | Disconnect (0x08) | RECFMT 40-41 |
//!
//! Connect data (1024 B, in-capsule): HOSTID 0-15, CNTLID 16-17, SUBNQN 256-511,
//! HOSTNQN 512-767. Connect response DW0: CNTLID 15:0 and AUTHREQ 31:16 on success; IPO 15:0 and
//! IATTR 16 with "Connect Invalid Parameters".

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::auth::{AuthReceiveCommand, AuthSendCommand};
use super::error::{NvmeError, view_prefix};
use super::opcode::{AdminOpcode, FabricsType};
use super::queue::Sqe;
use super::text::{NQN_FIELD_LEN, nqn_field, set_nqn_field};

/// CNTLID a host puts in the admin queue's Connect data to ask for any controller (dynamic
/// controller model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

/// AUTHREQ bit 1 (Connect response DW0 bit 17), ATR: the host must authenticate on this
/// queue (Authentication Send/Receive) before any other command.
pub const AUTHREQ_ATR: u16 = 1 << 1;
/// AUTHREQ bit 2 (DW0 bit 18), ASCR: authentication with secure channel concatenation
/// required.
pub const AUTHREQ_ASCR: u16 = 1 << 2;

/// Length of the Connect command's data.
pub const CONNECT_DATA_LEN: usize = 1024;

fn fabrics_sqe(fctype: FabricsType) -> Sqe {
    let mut sqe = Sqe::new(AdminOpcode::Fabrics as u8);
    sqe.set_fctype(fctype as u8);
    sqe
}

/// A Fabrics SQE of type `fctype` with CDW10 and CDW11 set (CID 0, DPTR zero).
pub(super) fn fabrics_sqe_with(fctype: FabricsType, cdw10: u32, cdw11: u32) -> Sqe {
    let mut sqe = fabrics_sqe(fctype);
    sqe.set_cdw10(cdw10);
    sqe.set_cdw11(cdw11);
    sqe
}

fn expect_fctype(sqe: &Sqe, fctype: FabricsType) -> Result<(), NvmeError> {
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
    Ok(())
}

/// Size of a property access (ATTRIB bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertySize {
    /// 000b: 4 bytes.
    FourBytes = 0,
    /// 001b: 8 bytes.
    EightBytes = 1,
}

impl PropertySize {
    fn parse(attrib: u8) -> Result<Self, NvmeError> {
        match attrib & 0x7 {
            0 => Ok(PropertySize::FourBytes),
            1 => Ok(PropertySize::EightBytes),
            _ => Err(NvmeError::invalid(
                "ATTRIB",
                40,
                "size must be 0 (4 B) or 1 (8 B)",
            )),
        }
    }

    /// The access width in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            PropertySize::FourBytes => 4,
            PropertySize::EightBytes => 8,
        }
    }
}

/// Property Set (FCTYPE 0x00): write `value` to the property at `ofst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropertySetCommand {
    /// ATTRIB size.
    pub size: PropertySize,
    /// OFST: property offset (CAP 0x00, VS 0x08, CC 0x14, CSTS 0x1C...).
    pub ofst: u32,
    /// VALUE; only the low 4 bytes are meaningful for a 4-byte access.
    pub value: u64,
}

impl PropertySetCommand {
    /// Reads the command from an SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        expect_fctype(sqe, FabricsType::PropertySet)?;
        Ok(PropertySetCommand {
            size: PropertySize::parse(sqe.cdw10() as u8)?,
            ofst: sqe.cdw11(),
            value: u64::from(sqe.cdw12()) | (u64::from(sqe.cdw13()) << 32),
        })
    }

    /// Builds the SQE (CID 0, SGL1 zero: the command carries no data).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = fabrics_sqe(FabricsType::PropertySet);
        sqe.set_cdw10(self.size as u32);
        sqe.set_cdw11(self.ofst);
        sqe.set_cdw12(self.value as u32);
        sqe.set_cdw13((self.value >> 32) as u32);
        sqe
    }
}

/// Property Get (FCTYPE 0x04): read the property at `ofst`; the value comes back in CQE
/// DW0 (4 B) or DW1:DW0 (8 B, see [`crate::nvme::Cqe::result64`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropertyGetCommand {
    /// ATTRIB size.
    pub size: PropertySize,
    /// OFST: property offset.
    pub ofst: u32,
}

impl PropertyGetCommand {
    /// Reads the command from an SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        expect_fctype(sqe, FabricsType::PropertyGet)?;
        Ok(PropertyGetCommand {
            size: PropertySize::parse(sqe.cdw10() as u8)?,
            ofst: sqe.cdw11(),
        })
    }

    /// Builds the SQE (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = fabrics_sqe(FabricsType::PropertyGet);
        sqe.set_cdw10(self.size as u32);
        sqe.set_cdw11(self.ofst);
        sqe
    }
}

/// Connect (FCTYPE 0x01): create the admin queue (QID 0) or an I/O queue. The 1024-byte
/// [`ConnectData`] travels in the capsule (SGL1 = Data Block Offset, length 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnectCommand {
    /// RECFMT: record format of the command and data; 0 is the only one defined.
    pub recfmt: u16,
    /// QID: 0 for the admin queue.
    pub qid: u16,
    /// SQSIZE: submission queue size, 0's based.
    pub sqsize: u16,
    /// CATTR: bits 1:0 priority class, bit 2 "disable SQ flow control".
    pub cattr: u8,
    /// KATO: Keep Alive Timeout in milliseconds (admin queue only; 0 disables).
    pub kato: u32,
}

impl ConnectCommand {
    /// CATTR bit 2: the host asks to disable SQ flow control (SQHD is then not maintained).
    pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

    /// Reads the command from an SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        expect_fctype(sqe, FabricsType::Connect)?;
        Ok(ConnectCommand {
            recfmt: sqe.cdw10() as u16,
            qid: (sqe.cdw10() >> 16) as u16,
            sqsize: sqe.cdw11() as u16,
            cattr: (sqe.cdw11() >> 16) as u8,
            kato: sqe.cdw12(),
        })
    }

    /// Builds the SQE with SGL1 describing 1024 bytes of in-capsule data at offset 0 (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = fabrics_sqe(FabricsType::Connect);
        sqe.set_cdw10(u32::from(self.recfmt) | (u32::from(self.qid) << 16));
        sqe.set_cdw11(u32::from(self.sqsize) | (u32::from(self.cattr) << 16));
        sqe.set_cdw12(self.kato);
        sqe.set_dptr(super::queue::SglDescriptor::data_block_offset(
            0,
            CONNECT_DATA_LEN as u32,
        ));
        sqe
    }

    /// True if CATTR asks to disable SQ flow control.
    pub const fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & Self::CATTR_DISABLE_SQ_FLOW_CONTROL != 0
    }
}

/// Disconnect (FCTYPE 0x08): delete the I/O queue the command arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DisconnectCommand {
    /// RECFMT: 0.
    pub recfmt: u16,
}

impl DisconnectCommand {
    /// Reads the command from an SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        expect_fctype(sqe, FabricsType::Disconnect)?;
        Ok(DisconnectCommand {
            recfmt: sqe.cdw10() as u16,
        })
    }

    /// Builds the SQE (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = fabrics_sqe(FabricsType::Disconnect);
        sqe.set_cdw10(u32::from(self.recfmt));
        sqe
    }
}

/// A parsed Fabrics command, for dispatch by `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FabricsCommand {
    /// Property Set.
    PropertySet(PropertySetCommand),
    /// Connect.
    Connect(ConnectCommand),
    /// Property Get.
    PropertyGet(PropertyGetCommand),
    /// Disconnect.
    Disconnect(DisconnectCommand),
    /// Authentication Send.
    AuthenticationSend(AuthSendCommand),
    /// Authentication Receive.
    AuthenticationReceive(AuthReceiveCommand),
}

impl FabricsCommand {
    /// Parses a Fabrics SQE. Reserved FCTYPEs give [`NvmeError::InvalidFctype`].
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        if sqe.opcode() != AdminOpcode::Fabrics as u8 {
            return Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            });
        }
        match FabricsType::from_u8(sqe.fctype()) {
            Some(FabricsType::PropertySet) => PropertySetCommand::parse(sqe).map(Self::PropertySet),
            Some(FabricsType::Connect) => ConnectCommand::parse(sqe).map(Self::Connect),
            Some(FabricsType::PropertyGet) => PropertyGetCommand::parse(sqe).map(Self::PropertyGet),
            Some(FabricsType::Disconnect) => DisconnectCommand::parse(sqe).map(Self::Disconnect),
            Some(FabricsType::AuthenticationSend) => {
                AuthSendCommand::parse(sqe).map(Self::AuthenticationSend)
            }
            Some(FabricsType::AuthenticationReceive) => {
                AuthReceiveCommand::parse(sqe).map(Self::AuthenticationReceive)
            }
            None => Err(NvmeError::InvalidFctype {
                fctype: sqe.fctype(),
            }),
        }
    }

    /// Builds the SQE (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        match self {
            Self::PropertySet(c) => c.to_sqe(),
            Self::Connect(c) => c.to_sqe(),
            Self::PropertyGet(c) => c.to_sqe(),
            Self::Disconnect(c) => c.to_sqe(),
            Self::AuthenticationSend(c) => c.to_sqe(),
            Self::AuthenticationReceive(c) => c.to_sqe(),
        }
    }
}

/// The 1024-byte data of a Connect command, read and written in place.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ConnectData {
    hostid: [u8; 16],
    cntlid: U16,
    reserved18: [u8; 238],
    subnqn: [u8; NQN_FIELD_LEN],
    hostnqn: [u8; NQN_FIELD_LEN],
    reserved768: [u8; 256],
}

impl Default for ConnectData {
    fn default() -> Self {
        ConnectData::new_zeroed()
    }
}

impl ConnectData {
    /// Builds Connect data; fails if an NQN is longer than 223 bytes or contains a NUL.
    pub fn new(
        hostid: [u8; 16],
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
    ) -> Result<Self, NvmeError> {
        let mut d = ConnectData::new_zeroed();
        d.hostid = hostid;
        d.cntlid.set(cntlid);
        d.set_subnqn(subnqn)?;
        d.set_hostnqn(hostnqn)?;
        Ok(d)
    }

    /// Views the first 1024 bytes of `bytes` (the capsule's in-capsule data) as Connect data.
    pub fn parse(bytes: &[u8]) -> Result<&ConnectData, NvmeError> {
        view_prefix("Connect data", CONNECT_DATA_LEN, bytes)
    }

    /// HOSTID (bytes 0-15): the host identifier (a UUID for NVMe/TCP).
    pub fn hostid(&self) -> [u8; 16] {
        self.hostid
    }

    /// Sets HOSTID.
    pub fn set_hostid(&mut self, v: [u8; 16]) {
        self.hostid = v;
    }

    /// CNTLID (bytes 16-17): [`CNTLID_DYNAMIC`] on the admin queue, the admin queue's controller
    /// on I/O queues.
    pub fn cntlid(&self) -> u16 {
        self.cntlid.get()
    }

    /// Sets CNTLID.
    pub fn set_cntlid(&mut self, v: u16) {
        self.cntlid.set(v)
    }

    /// SUBNQN (bytes 256-511), checked (NUL-terminated, ≤ 223 bytes, UTF-8).
    pub fn subnqn(&self) -> Result<&str, NvmeError> {
        nqn_field("SUBNQN", &self.subnqn)
    }

    /// Sets SUBNQN.
    pub fn set_subnqn(&mut self, nqn: &str) -> Result<(), NvmeError> {
        set_nqn_field("SUBNQN", &mut self.subnqn, nqn)
    }

    /// HOSTNQN (bytes 512-767), checked.
    pub fn hostnqn(&self) -> Result<&str, NvmeError> {
        nqn_field("HOSTNQN", &self.hostnqn)
    }

    /// Sets HOSTNQN.
    pub fn set_hostnqn(&mut self, nqn: &str) -> Result<(), NvmeError> {
        set_nqn_field("HOSTNQN", &mut self.hostnqn, nqn)
    }

    /// Byte offset of SUBNQN in the data (the IPO a target reports for a bad SUBNQN).
    pub const SUBNQN_OFFSET: u16 = 256;
    /// Byte offset of HOSTNQN in the data.
    pub const HOSTNQN_OFFSET: u16 = 512;
    /// Byte offset of CNTLID in the data.
    pub const CNTLID_OFFSET: u16 = 16;
}

/// The command specific DW0 of a Connect response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectResponse {
    /// Success: the controller ID and the authentication requirements.
    Success {
        /// CNTLID (DW0 15:0).
        cntlid: u16,
        /// AUTHREQ (DW0 31:16): bit 1 ATR (authentication required), bit 2 ASCR (secure channel
        /// concatenation required).
        authreq: u16,
    },
    /// "Connect Invalid Parameters": which byte was wrong.
    InvalidParameter {
        /// IATTR (DW0 bit 16): false = the SQE, true = the Connect data.
        in_data: bool,
        /// IPO (DW0 15:0): byte offset of the invalid parameter.
        ipo: u16,
    },
}

impl ConnectResponse {
    /// DW0 of a successful Connect with no authentication required.
    pub const fn success(cntlid: u16) -> Self {
        ConnectResponse::Success { cntlid, authreq: 0 }
    }

    /// DW0 for "Connect Invalid Parameters" pointing at byte `ipo` of the SQE or the data.
    pub const fn invalid_parameter(in_data: bool, ipo: u16) -> Self {
        ConnectResponse::InvalidParameter { in_data, ipo }
    }

    /// Encodes DW0.
    pub const fn to_dw0(self) -> u32 {
        match self {
            ConnectResponse::Success { cntlid, authreq } => {
                cntlid as u32 | ((authreq as u32) << 16)
            }
            ConnectResponse::InvalidParameter { in_data, ipo } => {
                ipo as u32 | ((in_data as u32) << 16)
            }
        }
    }

    /// Decodes DW0 of a successful Connect.
    pub const fn success_from_dw0(dw0: u32) -> Self {
        ConnectResponse::Success {
            cntlid: dw0 as u16,
            authreq: (dw0 >> 16) as u16,
        }
    }

    /// Decodes DW0 of a "Connect Invalid Parameters" completion.
    pub const fn invalid_parameter_from_dw0(dw0: u32) -> Self {
        ConnectResponse::InvalidParameter {
            in_data: dw0 & (1 << 16) != 0,
            ipo: dw0 as u16,
        }
    }
}

const _: () = assert!(std::mem::size_of::<ConnectData>() == CONNECT_DATA_LEN);
