//! Admin commands as one typed enum, so a target dispatches with `match` and a host builds
//! any of them with one call: Identify, Get Log Page, Get/Set Features, Abort, Asynchronous
//! Event Request, Keep Alive and the Fabrics commands.

use super::error::NvmeError;
use super::fabrics::{CONNECT_DATA_LEN, FabricsCommand};
use super::features::{GetFeaturesCommand, SetFeaturesCommand};
use super::identify::IDENTIFY_DATA_LEN;
use super::log::GetLogPageCommand;
use super::opcode::AdminOpcode;
use super::queue::Sqe;

/// Controller or Namespace Structure (CNS, Identify CDW10 bits 7:0) values this layer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cns {
    /// 0x00: Identify Namespace for NSID.
    Namespace = 0x00,
    /// 0x01: Identify Controller.
    Controller = 0x01,
    /// 0x02: Active Namespace ID list (NSIDs greater than NSID).
    ActiveNamespaceList = 0x02,
    /// 0x03: Namespace Identification Descriptor list for NSID.
    NamespaceIdDescriptors = 0x03,
    /// 0x05: I/O command set specific Identify Namespace (CSI).
    IoCommandSetNamespace = 0x05,
    /// 0x06: I/O command set specific Identify Controller (CSI).
    IoCommandSetController = 0x06,
    /// 0x07: I/O command set specific Active Namespace ID list (CSI).
    IoCommandSetActiveNamespaceList = 0x07,
    /// 0x08: I/O command set independent Identify Namespace.
    CommandSetIndependentNamespace = 0x08,
}

impl Cns {
    /// Decodes a CNS; `None` for one this layer does not know.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::Namespace,
            0x01 => Self::Controller,
            0x02 => Self::ActiveNamespaceList,
            0x03 => Self::NamespaceIdDescriptors,
            0x05 => Self::IoCommandSetNamespace,
            0x06 => Self::IoCommandSetController,
            0x07 => Self::IoCommandSetActiveNamespaceList,
            0x08 => Self::CommandSetIndependentNamespace,
            _ => return None,
        })
    }
}

/// Identify (admin opcode 0x06). Returns 4096 bytes.
///
/// CDW10: CNS 7:0, CNTID 31:16; CDW11: CNSSID 15:0, CSI 31:24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentifyCommand {
    /// CNS: which structure.
    pub cns: Cns,
    /// NSID (meaning depends on CNS).
    pub nsid: u32,
    /// CNTID: controller identifier (for controller lists).
    pub cntid: u16,
    /// CNSSID: CNS specific identifier.
    pub cnssid: u16,
    /// CSI: command set identifier (0 = NVM).
    pub csi: u8,
}

impl IdentifyCommand {
    /// Identify Controller.
    pub const fn controller() -> Self {
        Self::with_cns(Cns::Controller, 0)
    }

    /// Identify Namespace `nsid`.
    pub const fn namespace(nsid: u32) -> Self {
        Self::with_cns(Cns::Namespace, nsid)
    }

    /// Active namespace IDs greater than `nsid` (0 for the first page).
    pub const fn active_namespaces(after_nsid: u32) -> Self {
        Self::with_cns(Cns::ActiveNamespaceList, after_nsid)
    }

    /// Namespace identification descriptors of `nsid`.
    pub const fn namespace_id_descriptors(nsid: u32) -> Self {
        Self::with_cns(Cns::NamespaceIdDescriptors, nsid)
    }

    const fn with_cns(cns: Cns, nsid: u32) -> Self {
        IdentifyCommand {
            cns,
            nsid,
            cntid: 0,
            cnssid: 0,
            csi: 0,
        }
    }

    /// Reads the command from an SQE; an unknown CNS is an invalid field (CDW10 byte 40).
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        if sqe.opcode() != AdminOpcode::Identify as u8 {
            return Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            });
        }
        let cns = Cns::from_u8(sqe.cdw10() as u8).ok_or(NvmeError::invalid(
            "CNS",
            40,
            "unsupported CNS value",
        ))?;
        Ok(IdentifyCommand {
            cns,
            nsid: sqe.nsid(),
            cntid: (sqe.cdw10() >> 16) as u16,
            cnssid: sqe.cdw11() as u16,
            csi: (sqe.cdw11() >> 24) as u8,
        })
    }

    /// Builds the SQE (CID 0, DPTR zero).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe::new(AdminOpcode::Identify as u8);
        sqe.set_nsid(self.nsid);
        sqe.set_cdw10(self.cns as u32 | (u32::from(self.cntid) << 16));
        sqe.set_cdw11(u32::from(self.cnssid) | (u32::from(self.csi) << 24));
        sqe
    }
}

/// Abort (admin opcode 0x08): abort command `cid` on submission queue `sqid`.
///
/// CDW10: SQID 15:0, CID 31:16. Completion DW0 bit 0: 0 = aborted, 1 = not aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AbortCommand {
    /// SQID of the command to abort.
    pub sqid: u16,
    /// CID of the command to abort.
    pub cid: u16,
}

impl AbortCommand {
    /// Completion DW0 when the command was not aborted.
    pub const DW0_NOT_ABORTED: u32 = 1;
    /// Completion DW0 when the command was aborted.
    pub const DW0_ABORTED: u32 = 0;

    /// Reads the command from an SQE (the opcode is checked).
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        if sqe.opcode() != AdminOpcode::Abort as u8 {
            return Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            });
        }
        Ok(AbortCommand {
            sqid: sqe.cdw10() as u16,
            cid: (sqe.cdw10() >> 16) as u16,
        })
    }

    /// Builds the SQE (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe::new(AdminOpcode::Abort as u8);
        sqe.set_cdw10(u32::from(self.sqid) | (u32::from(self.cid) << 16));
        sqe
    }
}

/// An admin command, parsed from an SQE or to be built into one.
///
/// Build: `AdminCommand::Identify(IdentifyCommand::controller()).to_sqe()`, then set the CID and
/// the DPTR (e.g. `SglDescriptor::transport_data_block(cmd.data_len() as u32)`).
/// Dispatch: `match AdminCommand::parse(sqe)? { ... }`; a parse error's
/// [`NvmeError::status`] is the completion status to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminCommand {
    /// Get Log Page (0x02).
    GetLogPage(GetLogPageCommand),
    /// Identify (0x06).
    Identify(IdentifyCommand),
    /// Abort (0x08).
    Abort(AbortCommand),
    /// Set Features (0x09).
    SetFeatures(SetFeaturesCommand),
    /// Get Features (0x0A).
    GetFeatures(GetFeaturesCommand),
    /// Asynchronous Event Request (0x0C); completes when an event occurs.
    AsyncEventRequest,
    /// Keep Alive (0x18).
    KeepAlive,
    /// Fabrics (0x7F): Connect, Property Get/Set, Disconnect.
    Fabrics(FabricsCommand),
}

impl AdminCommand {
    /// Parses an admin SQE. Opcodes outside the list above give [`NvmeError::InvalidOpcode`].
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        match AdminOpcode::from_u8(sqe.opcode()) {
            Some(AdminOpcode::GetLogPage) => GetLogPageCommand::parse(sqe).map(Self::GetLogPage),
            Some(AdminOpcode::Identify) => IdentifyCommand::parse(sqe).map(Self::Identify),
            Some(AdminOpcode::Abort) => AbortCommand::parse(sqe).map(Self::Abort),
            Some(AdminOpcode::SetFeatures) => SetFeaturesCommand::parse(sqe).map(Self::SetFeatures),
            Some(AdminOpcode::GetFeatures) => GetFeaturesCommand::parse(sqe).map(Self::GetFeatures),
            Some(AdminOpcode::AsyncEventRequest) => Ok(Self::AsyncEventRequest),
            Some(AdminOpcode::KeepAlive) => Ok(Self::KeepAlive),
            Some(AdminOpcode::Fabrics) => FabricsCommand::parse(sqe).map(Self::Fabrics),
            _ => Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            }),
        }
    }

    /// Builds the SQE (CID 0; DPTR zero except for Connect, whose in-capsule data descriptor is
    /// set).
    pub fn to_sqe(&self) -> Sqe {
        match self {
            Self::GetLogPage(c) => c.to_sqe(),
            Self::Identify(c) => c.to_sqe(),
            Self::Abort(c) => c.to_sqe(),
            Self::SetFeatures(c) => c.to_sqe(),
            Self::GetFeatures(c) => c.to_sqe(),
            Self::AsyncEventRequest => Sqe::new(AdminOpcode::AsyncEventRequest as u8),
            Self::KeepAlive => Sqe::new(AdminOpcode::KeepAlive as u8),
            Self::Fabrics(c) => c.to_sqe(),
        }
    }

    /// Bytes of data the command transfers: controller to host for Identify (4096) and Get Log
    /// Page ((NUMD + 1) × 4) and Authentication Receive (AL), host to controller for Connect
    /// (1024) and Authentication Send (TL); 0 for the others.
    pub const fn data_len(&self) -> u64 {
        match self {
            Self::Identify(_) => IDENTIFY_DATA_LEN as u64,
            Self::GetLogPage(c) => c.data_len(),
            Self::Fabrics(FabricsCommand::Connect(_)) => CONNECT_DATA_LEN as u64,
            Self::Fabrics(FabricsCommand::AuthenticationSend(c)) => c.tl as u64,
            Self::Fabrics(FabricsCommand::AuthenticationReceive(c)) => c.al as u64,
            _ => 0,
        }
    }
}
