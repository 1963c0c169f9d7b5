//! NVM command set I/O commands as one typed enum: Read, Write, Flush, Write Zeroes, Dataset
//! Management (and the Fabrics commands that arrive on I/O queues).
//!
//! Read/Write/Write Zeroes: CDW10-11 SLBA, CDW12 NLB 15:0 (0's based), DEAC 25 (Write Zeroes),
//! FUA 30, LR 31. Dataset Management: CDW10 NR 7:0 (0's based), CDW11 IDR 0, IDW 1, AD 2; data is
//! NR + 1 ranges of 16 bytes.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::NvmeError;
use super::fabrics::FabricsCommand;
use super::opcode::IoOpcode;
use super::queue::Sqe;

const CDW12_FUA: u32 = 1 << 30;
const CDW12_LR: u32 = 1 << 31;
const CDW12_DEAC: u32 = 1 << 25;

/// Read (0x02) or Write (0x01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadWriteCommand {
    /// NSID.
    pub nsid: u32,
    /// SLBA: starting LBA.
    pub slba: u64,
    /// NLB: number of logical blocks, 0's based.
    pub nlb: u16,
    /// FUA: force unit access.
    pub fua: bool,
    /// LR: limited retry.
    pub lr: bool,
}

impl ReadWriteCommand {
    /// A command for `blocks` (1..=65536) blocks at `slba`; `None` if `blocks` is out of range.
    pub fn new(nsid: u32, slba: u64, blocks: u32) -> Option<Self> {
        let nlb = u16::try_from(blocks.checked_sub(1)?).ok()?;
        Some(ReadWriteCommand {
            nsid,
            slba,
            nlb,
            fua: false,
            lr: false,
        })
    }

    /// The number of blocks (NLB + 1).
    pub const fn blocks(&self) -> u32 {
        self.nlb as u32 + 1
    }

    /// The data length for a block size of `lba_size` bytes.
    pub const fn data_len(&self, lba_size: u32) -> u64 {
        self.blocks() as u64 * lba_size as u64
    }

    /// The LBA after the last one, `None` on overflow (an out-of-range request).
    pub const fn end_lba(&self) -> Option<u64> {
        self.slba.checked_add(self.blocks() as u64)
    }

    fn parse(sqe: &Sqe) -> Self {
        ReadWriteCommand {
            nsid: sqe.nsid(),
            slba: slba(sqe),
            nlb: sqe.cdw12() as u16,
            fua: sqe.cdw12() & CDW12_FUA != 0,
            lr: sqe.cdw12() & CDW12_LR != 0,
        }
    }

    fn emit(&self, opcode: IoOpcode) -> Sqe {
        let mut sqe = Sqe::new(opcode as u8);
        sqe.set_nsid(self.nsid);
        set_slba(&mut sqe, self.slba);
        sqe.set_cdw12(
            u32::from(self.nlb)
                | if self.fua { CDW12_FUA } else { 0 }
                | if self.lr { CDW12_LR } else { 0 },
        );
        sqe
    }
}

/// Write Zeroes (0x08).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WriteZeroesCommand {
    /// NSID.
    pub nsid: u32,
    /// SLBA: starting LBA.
    pub slba: u64,
    /// NLB: number of logical blocks, 0's based.
    pub nlb: u16,
    /// DEAC: deallocate the blocks as well.
    pub deac: bool,
    /// FUA.
    pub fua: bool,
    /// LR.
    pub lr: bool,
}

impl WriteZeroesCommand {
    /// The number of blocks (NLB + 1).
    pub const fn blocks(&self) -> u32 {
        self.nlb as u32 + 1
    }

    /// The LBA after the last one, `None` on overflow.
    pub const fn end_lba(&self) -> Option<u64> {
        self.slba.checked_add(self.blocks() as u64)
    }
}

/// Flush (0x00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlushCommand {
    /// NSID (0xFFFFFFFF: all namespaces).
    pub nsid: u32,
}

/// Dataset Management (0x09). The ranges travel as data (16 bytes each, see [`DsmRange`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DatasetManagementCommand {
    /// NSID.
    pub nsid: u32,
    /// NR: number of ranges, 0's based.
    pub nr: u8,
    /// IDR: integral dataset for read.
    pub idr: bool,
    /// IDW: integral dataset for write.
    pub idw: bool,
    /// AD: deallocate the ranges.
    pub ad: bool,
}

impl DatasetManagementCommand {
    /// The number of ranges (NR + 1).
    pub const fn ranges(&self) -> usize {
        self.nr as usize + 1
    }

    /// The data length: ranges × 16.
    pub const fn data_len(&self) -> u32 {
        (self.ranges() * DSM_RANGE_LEN) as u32
    }
}

/// Length of a Dataset Management range.
pub const DSM_RANGE_LEN: usize = 16;

/// One Dataset Management range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct DsmRange {
    /// 0: Context Attributes.
    pub cattr: U32,
    /// 4: Length in logical blocks (not 0's based).
    pub nlb: U32,
    /// 8: Starting LBA.
    pub slba: U64,
}

impl DsmRange {
    /// A range of `nlb` blocks at `slba`, no context attributes.
    pub fn new(slba: u64, nlb: u32) -> Self {
        DsmRange {
            cattr: U32::new(0),
            nlb: U32::new(nlb),
            slba: U64::new(slba),
        }
    }

    /// Views the first `count` ranges of `bytes` (the command's data). Fails if `bytes` is
    /// shorter than `count` × 16.
    pub fn slice_from(bytes: &[u8], count: usize) -> Result<&[DsmRange], NvmeError> {
        let needed = count.saturating_mul(DSM_RANGE_LEN);
        let data = bytes.get(..needed).ok_or(NvmeError::truncated(
            "Dataset Management ranges",
            needed,
            bytes.len(),
        ))?;
        <[DsmRange]>::ref_from_bytes(data)
            .map_err(|_| NvmeError::truncated("Dataset Management ranges", needed, bytes.len()))
    }
}

fn slba(sqe: &Sqe) -> u64 {
    u64::from(sqe.cdw10()) | (u64::from(sqe.cdw11()) << 32)
}

fn set_slba(sqe: &mut Sqe, slba: u64) {
    sqe.set_cdw10(slba as u32);
    sqe.set_cdw11((slba >> 32) as u32);
}

/// An I/O command, parsed from an SQE or to be built into one.
///
/// Build: `IoCommand::Read(ReadWriteCommand::new(1, 0, 8).unwrap()).to_sqe()`, then set the CID
/// and the DPTR. Dispatch: `match IoCommand::parse(sqe)? { ... }`; a parse error's
/// [`NvmeError::status`] is the completion status to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoCommand {
    /// Flush (0x00).
    Flush(FlushCommand),
    /// Write (0x01).
    Write(ReadWriteCommand),
    /// Read (0x02).
    Read(ReadWriteCommand),
    /// Write Zeroes (0x08).
    WriteZeroes(WriteZeroesCommand),
    /// Dataset Management (0x09).
    DatasetManagement(DatasetManagementCommand),
    /// Fabrics (0x7F): Connect or Disconnect on an I/O queue.
    Fabrics(FabricsCommand),
}

impl IoCommand {
    /// Parses an I/O SQE. Other opcodes give [`NvmeError::InvalidOpcode`].
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        Ok(match IoOpcode::from_u8(sqe.opcode()) {
            Some(IoOpcode::Flush) => IoCommand::Flush(FlushCommand { nsid: sqe.nsid() }),
            Some(IoOpcode::Write) => IoCommand::Write(ReadWriteCommand::parse(sqe)),
            Some(IoOpcode::Read) => IoCommand::Read(ReadWriteCommand::parse(sqe)),
            Some(IoOpcode::WriteZeroes) => IoCommand::WriteZeroes(WriteZeroesCommand {
                nsid: sqe.nsid(),
                slba: slba(sqe),
                nlb: sqe.cdw12() as u16,
                deac: sqe.cdw12() & CDW12_DEAC != 0,
                fua: sqe.cdw12() & CDW12_FUA != 0,
                lr: sqe.cdw12() & CDW12_LR != 0,
            }),
            Some(IoOpcode::DatasetManagement) => {
                IoCommand::DatasetManagement(DatasetManagementCommand {
                    nsid: sqe.nsid(),
                    nr: sqe.cdw10() as u8,
                    idr: sqe.cdw11() & 1 != 0,
                    idw: sqe.cdw11() & 2 != 0,
                    ad: sqe.cdw11() & 4 != 0,
                })
            }
            Some(IoOpcode::Fabrics) => IoCommand::Fabrics(FabricsCommand::parse(sqe)?),
            _ => {
                return Err(NvmeError::InvalidOpcode {
                    opcode: sqe.opcode(),
                });
            }
        })
    }

    /// Builds the SQE (CID 0, DPTR zero).
    pub fn to_sqe(&self) -> Sqe {
        match self {
            IoCommand::Flush(c) => {
                let mut sqe = Sqe::new(IoOpcode::Flush as u8);
                sqe.set_nsid(c.nsid);
                sqe
            }
            IoCommand::Write(c) => c.emit(IoOpcode::Write),
            IoCommand::Read(c) => c.emit(IoOpcode::Read),
            IoCommand::WriteZeroes(c) => {
                let mut sqe = Sqe::new(IoOpcode::WriteZeroes as u8);
                sqe.set_nsid(c.nsid);
                set_slba(&mut sqe, c.slba);
                sqe.set_cdw12(
                    u32::from(c.nlb)
                        | if c.deac { CDW12_DEAC } else { 0 }
                        | if c.fua { CDW12_FUA } else { 0 }
                        | if c.lr { CDW12_LR } else { 0 },
                );
                sqe
            }
            IoCommand::DatasetManagement(c) => {
                let mut sqe = Sqe::new(IoOpcode::DatasetManagement as u8);
                sqe.set_nsid(c.nsid);
                sqe.set_cdw10(u32::from(c.nr));
                sqe.set_cdw11(u32::from(c.idr) | (u32::from(c.idw) << 1) | (u32::from(c.ad) << 2));
                sqe
            }
            IoCommand::Fabrics(c) => c.to_sqe(),
        }
    }

    /// The NSID the command addresses (`None` for Fabrics commands).
    pub const fn nsid(&self) -> Option<u32> {
        match self {
            IoCommand::Flush(c) => Some(c.nsid),
            IoCommand::Write(c) | IoCommand::Read(c) => Some(c.nsid),
            IoCommand::WriteZeroes(c) => Some(c.nsid),
            IoCommand::DatasetManagement(c) => Some(c.nsid),
            IoCommand::Fabrics(_) => None,
        }
    }
}
