//! Submission and completion queue entries and the SGL descriptor of the SQE's DPTR.
//!
//! Layouts (NVMe Base 2.0, "Common Command Format" and "Common Completion Queue Entry Layout"):
//!
//! | SQE bytes | field | | CQE bytes | field |
//! |---|---|---|---|---|
//! | 0 | OPC | | 0-3 | DW0 (command specific) |
//! | 1 | FUSE 1:0, PSDT 7:6 | | 4-7 | DW1 (command specific) |
//! | 2-3 | CID | | 8-9 | SQHD |
//! | 4-7 | NSID | | 10-11 | SQID |
//! | 8-15 | CDW2, CDW3 | | 12-13 | CID |
//! | 16-23 | MPTR | | 14-15 | status field ([`StatusField`]) |
//! | 24-39 | DPTR (SGL1) | | | |
//! | 40-63 | CDW10..CDW15 | | | |

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::{NvmeError, view_prefix};
use super::status::{Status, StatusField};

/// Length of a submission queue entry.
pub const SQE_LEN: usize = 64;
/// Length of a completion queue entry.
pub const CQE_LEN: usize = 16;
/// Length of an SGL descriptor.
pub const SGL_DESCRIPTOR_LEN: usize = 16;

/// PRP or SGL for Data Transfer (PSDT, SQE byte 1 bits 7:6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Psdt {
    /// 00b: PRPs (PCIe only).
    Prp = 0,
    /// 01b: SGLs, MPTR holds the address of a contiguous metadata buffer. NVMe over Fabrics
    /// commands use this value (Linux `NVME_CMD_SGL_METABUF`, flags 0x40).
    SglMetadataBuffer = 1,
    /// 10b: SGLs, MPTR holds the address of a metadata SGL segment.
    SglMetadataSegment = 2,
}

/// A 64-byte submission queue entry, read and written in place.
///
/// Command-independent fields have accessors here; the command specific dwords are read through
/// [`Sqe::cdw10`]..[`Sqe::cdw15`] or, better, through the typed commands of this module that
/// parse and build them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Sqe {
    opcode: u8,
    flags: u8,
    cid: U16,
    nsid: U32,
    cdw2: U32,
    cdw3: U32,
    mptr: U64,
    dptr: SglDescriptor,
    cdw10: U32,
    cdw11: U32,
    cdw12: U32,
    cdw13: U32,
    cdw14: U32,
    cdw15: U32,
}

impl Default for Sqe {
    fn default() -> Self {
        Sqe::new_zeroed()
    }
}

macro_rules! u32_accessors {
    ($( $get:ident, $set:ident, $doc:literal; )*) => {
        $(
            #[doc = concat!("Command Dword ", $doc, ".")]
            pub fn $get(&self) -> u32 {
                self.$get.get()
            }
            #[doc = concat!("Sets Command Dword ", $doc, ".")]
            pub fn $set(&mut self, v: u32) {
                self.$get.set(v)
            }
        )*
    };
}

impl Sqe {
    /// A zeroed SQE with `opcode` and PSDT = 01b (SGLs), as every NVMe over Fabrics command uses.
    pub fn new(opcode: u8) -> Self {
        let mut sqe = Sqe::new_zeroed();
        sqe.opcode = opcode;
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        sqe
    }

    /// Returns the SQE with its CID set, for building in one expression:
    /// `cmd.to_sqe().with_cid(cid).with_dptr(sgl)`.
    pub fn with_cid(mut self, cid: u16) -> Self {
        self.set_cid(cid);
        self
    }

    /// Returns the SQE with its DPTR set.
    pub fn with_dptr(mut self, sgl: SglDescriptor) -> Self {
        self.set_dptr(sgl);
        self
    }

    /// Reads an SQE from the first 64 bytes of `bytes` (e.g. a CapsuleCmd's SQE field).
    pub fn parse(bytes: &[u8]) -> Result<&Sqe, NvmeError> {
        view_prefix("SQE", SQE_LEN, bytes)
    }

    /// The SQE held in a 64-byte array (as a queue keeps the SQE of each command in flight).
    pub fn from_array(bytes: &[u8; SQE_LEN]) -> &Sqe {
        zerocopy::transmute_ref!(bytes)
    }

    /// The SQE held in a 64-byte array, to write in place (`set_cid`, `set_dptr`, ...).
    pub fn from_array_mut(bytes: &mut [u8; SQE_LEN]) -> &mut Sqe {
        zerocopy::transmute_mut!(bytes)
    }

    /// Opcode (OPC, byte 0).
    pub fn opcode(&self) -> u8 {
        self.opcode
    }

    /// Sets the opcode.
    pub fn set_opcode(&mut self, v: u8) {
        self.opcode = v;
    }

    /// The flags byte (byte 1: FUSE 1:0, PSDT 7:6).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Sets the whole flags byte.
    pub fn set_flags(&mut self, v: u8) {
        self.flags = v;
    }

    /// Fused Operation (FUSE, byte 1 bits 1:0): 0 normal, 1 first, 2 second of a fused pair.
    pub fn fuse(&self) -> u8 {
        self.flags & 0x3
    }

    /// PSDT (byte 1 bits 7:6); `None` for the reserved value 11b.
    pub fn psdt(&self) -> Option<Psdt> {
        match self.flags >> 6 {
            0 => Some(Psdt::Prp),
            1 => Some(Psdt::SglMetadataBuffer),
            2 => Some(Psdt::SglMetadataSegment),
            _ => None,
        }
    }

    /// Sets PSDT, keeping the other flag bits.
    pub fn set_psdt(&mut self, psdt: Psdt) {
        self.flags = (self.flags & 0x3F) | ((psdt as u8) << 6);
    }

    /// Command Identifier (CID, bytes 2-3).
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }

    /// Sets the CID.
    pub fn set_cid(&mut self, v: u16) {
        self.cid.set(v)
    }

    /// Namespace Identifier (NSID, bytes 4-7). For Fabrics commands byte 4 is FCTYPE instead.
    pub fn nsid(&self) -> u32 {
        self.nsid.get()
    }

    /// Sets the NSID.
    pub fn set_nsid(&mut self, v: u32) {
        self.nsid.set(v)
    }

    /// Fabrics Command Type (FCTYPE, byte 4), meaningful when the opcode is 0x7F.
    pub fn fctype(&self) -> u8 {
        self.as_bytes()[4]
    }

    /// Sets FCTYPE (byte 4), overwriting the low byte of NSID.
    pub fn set_fctype(&mut self, v: u8) {
        self.as_mut_bytes()[4] = v;
    }

    /// Metadata Pointer (MPTR, bytes 16-23).
    pub fn mptr(&self) -> u64 {
        self.mptr.get()
    }

    /// Sets MPTR.
    pub fn set_mptr(&mut self, v: u64) {
        self.mptr.set(v)
    }

    /// Data Pointer (DPTR, bytes 24-39) as SGL descriptor 1.
    pub fn dptr(&self) -> &SglDescriptor {
        &self.dptr
    }

    /// Sets DPTR.
    pub fn set_dptr(&mut self, sgl: SglDescriptor) {
        self.dptr = sgl;
    }

    u32_accessors! {
        cdw2, set_cdw2, "2";
        cdw3, set_cdw3, "3";
        cdw10, set_cdw10, "10";
        cdw11, set_cdw11, "11";
        cdw12, set_cdw12, "12";
        cdw13, set_cdw13, "13";
        cdw14, set_cdw14, "14";
        cdw15, set_cdw15, "15";
    }
}

/// A 16-byte SGL descriptor (NVMe Base 2.0, "SGL Descriptor").
///
/// Byte 15 is the SGL identifier: descriptor type in bits 7:4, subtype in bits 3:0. NVMe/TCP
/// uses two forms (see [`Sgl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct SglDescriptor {
    address: U64,
    length: U32,
    reserved: [u8; 3],
    sgl_id: u8,
}

impl SglDescriptor {
    /// SGL identifier of a Transport SGL Data Block with the transport specific subtype (0x5A).
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5A;
    /// SGL identifier of a Data Block with the Offset subtype (0x01), i.e. in-capsule data.
    pub const DATA_BLOCK_OFFSET: u8 = 0x01;

    /// A Transport SGL Data Block (0x5A) for `length` bytes moved by R2T/H2CData or C2HData.
    /// A length of 0 means the command transfers no data.
    pub fn transport_data_block(length: u32) -> Self {
        SglDescriptor {
            address: U64::new(0),
            length: U32::new(length),
            reserved: [0; 3],
            sgl_id: Self::TRANSPORT_DATA_BLOCK,
        }
    }

    /// A Data Block / Offset descriptor (0x01) for `length` bytes of in-capsule data starting
    /// `offset` bytes into the capsule's data (0 unless ICDOFF says otherwise).
    pub fn data_block_offset(offset: u64, length: u32) -> Self {
        SglDescriptor {
            address: U64::new(offset),
            length: U32::new(length),
            reserved: [0; 3],
            sgl_id: Self::DATA_BLOCK_OFFSET,
        }
    }

    /// Address (bytes 0-7): an offset for the Offset subtype, 0 for the transport data block.
    pub fn address(&self) -> u64 {
        self.address.get()
    }

    /// Length in bytes (bytes 8-11).
    pub fn length(&self) -> u32 {
        self.length.get()
    }

    /// The SGL identifier (byte 15).
    pub fn sgl_id(&self) -> u8 {
        self.sgl_id
    }

    /// Descriptor type (byte 15 bits 7:4).
    pub fn descriptor_type(&self) -> u8 {
        self.sgl_id >> 4
    }

    /// Descriptor subtype (byte 15 bits 3:0).
    pub fn subtype(&self) -> u8 {
        self.sgl_id & 0xF
    }

    /// Classifies the descriptor; an error for any form NVMe/TCP does not use (keyed, segment,
    /// bit bucket...), which a target completes with SGL Descriptor Type Invalid.
    pub fn parse(&self) -> Result<Sgl, NvmeError> {
        match self.sgl_id {
            Self::TRANSPORT_DATA_BLOCK => Ok(Sgl::TransportDataBlock {
                length: self.length(),
            }),
            Self::DATA_BLOCK_OFFSET => Ok(Sgl::DataBlockOffset {
                offset: self.address(),
                length: self.length(),
            }),
            sgl_id => Err(NvmeError::InvalidSglType { sgl_id }),
        }
    }
}

/// The SGL descriptor forms NVMe/TCP uses, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sgl {
    /// 0x5A: data moves in H2CData (after R2T) or C2HData PDUs; `length` 0 means no data.
    TransportDataBlock {
        /// Total data length in bytes.
        length: u32,
    },
    /// 0x01: data is in the command capsule at `offset`.
    DataBlockOffset {
        /// Offset into the in-capsule data.
        offset: u64,
        /// Data length in bytes.
        length: u32,
    },
}

impl From<Sgl> for SglDescriptor {
    fn from(sgl: Sgl) -> Self {
        match sgl {
            Sgl::TransportDataBlock { length } => SglDescriptor::transport_data_block(length),
            Sgl::DataBlockOffset { offset, length } => {
                SglDescriptor::data_block_offset(offset, length)
            }
        }
    }
}

/// A 16-byte completion queue entry, read and written in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Cqe {
    dw0: U32,
    dw1: U32,
    sqhd: U16,
    sqid: U16,
    cid: U16,
    status: U16,
}

impl Cqe {
    /// A completion for `cid` on `sqid` with SQ head pointer `sqhd` and `status`; DW0/DW1 zero.
    pub fn new(cid: u16, sqid: u16, sqhd: u16, status: StatusField) -> Self {
        Cqe {
            dw0: U32::new(0),
            dw1: U32::new(0),
            sqhd: U16::new(sqhd),
            sqid: U16::new(sqid),
            cid: U16::new(cid),
            status: U16::new(status.to_bits()),
        }
    }

    /// Reads a CQE from the first 16 bytes of `bytes` (e.g. a CapsuleResp's CQE field).
    pub fn parse(bytes: &[u8]) -> Result<&Cqe, NvmeError> {
        view_prefix("CQE", CQE_LEN, bytes)
    }

    /// Dword 0 (command specific result).
    pub fn dw0(&self) -> u32 {
        self.dw0.get()
    }

    /// Sets DW0.
    pub fn set_dw0(&mut self, v: u32) {
        self.dw0.set(v)
    }

    /// Dword 1 (command specific result).
    pub fn dw1(&self) -> u32 {
        self.dw1.get()
    }

    /// Sets DW1.
    pub fn set_dw1(&mut self, v: u32) {
        self.dw1.set(v)
    }

    /// The 64-bit result DW1:DW0 (e.g. an 8-byte Property Get value).
    pub fn result64(&self) -> u64 {
        u64::from(self.dw0()) | (u64::from(self.dw1()) << 32)
    }

    /// Sets DW0 and DW1 from a 64-bit result.
    pub fn set_result64(&mut self, v: u64) {
        self.set_dw0(v as u32);
        self.set_dw1((v >> 32) as u32);
    }

    /// SQ Head Pointer (SQHD, bytes 8-9).
    pub fn sqhd(&self) -> u16 {
        self.sqhd.get()
    }

    /// Sets SQHD.
    pub fn set_sqhd(&mut self, v: u16) {
        self.sqhd.set(v)
    }

    /// SQ Identifier (SQID, bytes 10-11).
    pub fn sqid(&self) -> u16 {
        self.sqid.get()
    }

    /// Sets SQID.
    pub fn set_sqid(&mut self, v: u16) {
        self.sqid.set(v)
    }

    /// Command Identifier (CID, bytes 12-13).
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }

    /// Sets CID.
    pub fn set_cid(&mut self, v: u16) {
        self.cid.set(v)
    }

    /// The raw 16-bit status field (bytes 14-15).
    pub fn status_bits(&self) -> u16 {
        self.status.get()
    }

    /// The decoded status field (status, CRD, More, DNR, phase).
    pub fn status_field(&self) -> StatusField {
        StatusField::from_bits(self.status.get())
    }

    /// Sets the status field.
    pub fn set_status_field(&mut self, v: StatusField) {
        self.status.set(v.to_bits())
    }

    /// SCT + SC.
    pub fn status(&self) -> Status {
        self.status_field().status
    }

    /// Sets SCT + SC, keeping CRD/M/DNR/phase.
    pub fn set_status(&mut self, status: Status) {
        let mut f = self.status_field();
        f.status = status;
        self.set_status_field(f);
    }

    /// Do Not Retry (status bit 15).
    pub fn dnr(&self) -> bool {
        self.status_field().dnr
    }

    /// More (status bit 14).
    pub fn more(&self) -> bool {
        self.status_field().more
    }

    /// Command Retry Delay (status bits 13:12).
    pub fn crd(&self) -> u8 {
        self.status_field().crd
    }
}

const _: () = assert!(std::mem::size_of::<Sqe>() == SQE_LEN);
const _: () = assert!(std::mem::size_of::<Cqe>() == CQE_LEN);
const _: () = assert!(std::mem::size_of::<SglDescriptor>() == SGL_DESCRIPTOR_LEN);
