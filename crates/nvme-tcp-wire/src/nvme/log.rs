//! Log pages: the Get Log Page command, Error Information entries, SMART / Health Information,
//! the Changed Namespace List and the Discovery log page.
//!
//! Layouts: NVMe Base 2.0 "Log Page Identifiers" and the per-page figures; the discovery log
//! page per NVMe over Fabrics 1.1 (cross-checked against Linux `struct nvmf_disc_rsp_page_hdr` /
//! `struct nvmf_disc_rsp_page_entry`).

use zerocopy::little_endian::{U16, U32, U64, U128};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::{NvmeError, view_prefix};
#[cfg(doc)]
use super::identify::NsidList;
use super::opcode::AdminOpcode;
use super::queue::Sqe;
use super::status::StatusField;
use super::text::{
    NQN_FIELD_LEN, ascii_field, nqn_field, set_ascii_field_nul_padded, set_nqn_field,
};

/// Log Page Identifiers (LID) this layer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LogPageId {
    /// 0x00 Supported Log Pages.
    SupportedLogPages = 0x00,
    /// 0x01 Error Information.
    ErrorInformation = 0x01,
    /// 0x02 SMART / Health Information.
    SmartHealth = 0x02,
    /// 0x03 Firmware Slot Information.
    FirmwareSlot = 0x03,
    /// 0x04 Changed Namespace List.
    ChangedNamespaceList = 0x04,
    /// 0x05 Commands Supported and Effects.
    CommandsSupportedEffects = 0x05,
    /// 0x0C Asymmetric Namespace Access.
    Ana = 0x0C,
    /// 0x70 Discovery (discovery controllers only).
    Discovery = 0x70,
    /// 0x80 Reservation Notification.
    ReservationNotification = 0x80,
}

impl LogPageId {
    /// Decodes a LID; `None` for one this layer does not know (a controller answers those with
    /// Invalid Log Page).
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::SupportedLogPages,
            0x01 => Self::ErrorInformation,
            0x02 => Self::SmartHealth,
            0x03 => Self::FirmwareSlot,
            0x04 => Self::ChangedNamespaceList,
            0x05 => Self::CommandsSupportedEffects,
            0x0C => Self::Ana,
            0x70 => Self::Discovery,
            0x80 => Self::ReservationNotification,
            _ => return None,
        })
    }
}

/// Get Log Page (admin opcode 0x02).
///
/// CDW10: LID 7:0, LSP 14:8, RAE 15, NUMDL 31:16; CDW11: NUMDU 15:0, LSI 31:16;
/// CDW12/13: LPOL/LPOU (byte offset); CDW14: CSI 31:24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GetLogPageCommand {
    /// NSID (0xFFFFFFFF or 0 for controller-wide pages).
    pub nsid: u32,
    /// LID: Log Page Identifier (raw, see [`LogPageId`]).
    pub lid: u8,
    /// LSP: Log Specific Parameter (7 bits).
    pub lsp: u8,
    /// RAE: Retain Asynchronous Event.
    pub rae: bool,
    /// NUMD: number of dwords to return, 0's based (NUMDU:NUMDL).
    pub numd: u32,
    /// LSI: Log Specific Identifier.
    pub lsi: u16,
    /// LPO: Log Page Offset in bytes (dword aligned).
    pub lpo: u64,
    /// CSI: Command Set Identifier.
    pub csi: u8,
}

impl GetLogPageCommand {
    /// A request for `len` bytes of log page `lid` starting at byte `offset`. Fails unless
    /// `len` is a non-zero multiple of 4 no larger than 2^34 bytes and `offset` is a multiple
    /// of 4.
    pub fn new(lid: u8, nsid: u32, offset: u64, len: u64) -> Result<Self, NvmeError> {
        if len == 0 || !len.is_multiple_of(4) || len / 4 - 1 > u64::from(u32::MAX) {
            return Err(NvmeError::invalid(
                "NUMD",
                40,
                "length must be a non-zero multiple of 4 below 2^34",
            ));
        }
        if !offset.is_multiple_of(4) {
            return Err(NvmeError::invalid(
                "LPO",
                48,
                "offset must be dword aligned",
            ));
        }
        Ok(GetLogPageCommand {
            nsid,
            lid,
            numd: (len / 4 - 1) as u32,
            lpo: offset,
            ..Default::default()
        })
    }

    /// The number of bytes the command asks for: (NUMD + 1) × 4.
    pub const fn data_len(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }

    /// The LID as a known log page, if it is one.
    pub const fn log_page_id(&self) -> Option<LogPageId> {
        LogPageId::from_u8(self.lid)
    }

    /// Reads the command from an SQE (the opcode is checked).
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        if sqe.opcode() != AdminOpcode::GetLogPage as u8 {
            return Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            });
        }
        let (cdw10, cdw11) = (sqe.cdw10(), sqe.cdw11());
        Ok(GetLogPageCommand {
            nsid: sqe.nsid(),
            lid: cdw10 as u8,
            lsp: ((cdw10 >> 8) & 0x7F) as u8,
            rae: cdw10 & (1 << 15) != 0,
            numd: (cdw10 >> 16) | ((cdw11 & 0xFFFF) << 16),
            lsi: (cdw11 >> 16) as u16,
            lpo: u64::from(sqe.cdw12()) | (u64::from(sqe.cdw13()) << 32),
            csi: (sqe.cdw14() >> 24) as u8,
        })
    }

    /// Builds the SQE (CID 0, DPTR zero: set both before sending).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe::new(AdminOpcode::GetLogPage as u8);
        sqe.set_nsid(self.nsid);
        sqe.set_cdw10(
            u32::from(self.lid)
                | (u32::from(self.lsp & 0x7F) << 8)
                | (u32::from(self.rae) << 15)
                | ((self.numd & 0xFFFF) << 16),
        );
        sqe.set_cdw11((self.numd >> 16) | (u32::from(self.lsi) << 16));
        sqe.set_cdw12(self.lpo as u32);
        sqe.set_cdw13((self.lpo >> 32) as u32);
        sqe.set_cdw14(u32::from(self.csi) << 24);
        sqe
    }
}

/// The Changed Namespace List log page (LID 0x04): up to 1024 NSIDs whose attributes changed,
/// or 0xFFFFFFFF in the first entry when more changed (see [`NsidList::overflowed`]).
pub type ChangedNamespaceList = super::identify::NsidList;

/// Length of an Error Information log entry.
pub const ERROR_LOG_ENTRY_LEN: usize = 64;

/// One 64-byte entry of the Error Information log page (LID 0x01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct ErrorLogEntry {
    /// 0: Error Count (unique, incrementing; 0 = empty entry).
    pub error_count: U64,
    /// 8: Submission Queue ID.
    pub sqid: U16,
    /// 10: Command ID.
    pub cid: U16,
    /// 12: Status Field (same layout as the CQE status field; bit 0 is the phase tag).
    pub status_field: U16,
    /// 14: Parameter Error Location: bits 7:0 byte, bits 10:8 bit of the command's bad field.
    pub parameter_error_location: U16,
    /// 16: LBA of the first failing block.
    pub lba: U64,
    /// 24: Namespace.
    pub nsid: U32,
    /// 28: Vendor Specific Information Available.
    pub vsia: u8,
    /// 29: Transport Type (TRTYPE).
    pub trtype: u8,
    /// 30: reserved.
    pub reserved30: [u8; 2],
    /// 32: Command Specific Information.
    pub csi: U64,
    /// 40: Transport Type Specific Information.
    pub ttsi: U16,
    /// 42: reserved.
    pub reserved42: [u8; 22],
}

impl ErrorLogEntry {
    /// The decoded status field.
    pub fn status(&self) -> StatusField {
        StatusField::from_bits(self.status_field.get())
    }

    /// Views `bytes` (a Get Log Page payload) as error entries; a trailing partial entry is
    /// ignored.
    pub fn slice_from(bytes: &[u8]) -> &[ErrorLogEntry] {
        let whole = bytes.len() / ERROR_LOG_ENTRY_LEN * ERROR_LOG_ENTRY_LEN;
        <[ErrorLogEntry]>::ref_from_bytes(&bytes[..whole]).unwrap_or(&[])
    }
}

/// Length of the SMART / Health Information log page.
pub const SMART_LOG_LEN: usize = 512;

/// SMART / Health Information log page (LID 0x02, 512 bytes).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SmartLog {
    /// 0: Critical Warning bits.
    pub critical_warning: u8,
    /// 1: Composite Temperature (kelvin).
    pub composite_temperature: U16,
    /// 3: Available Spare (percent).
    pub available_spare: u8,
    /// 4: Available Spare Threshold (percent).
    pub available_spare_threshold: u8,
    /// 5: Percentage Used.
    pub percentage_used: u8,
    /// 6: Endurance Group Critical Warning Summary.
    pub endurance_group_critical_warning: u8,
    /// 7: reserved.
    pub reserved7: [u8; 25],
    /// 32: Data Units Read (thousands of 512-byte units).
    pub data_units_read: U128,
    /// 48: Data Units Written (thousands of 512-byte units).
    pub data_units_written: U128,
    /// 64: Host Read Commands.
    pub host_read_commands: U128,
    /// 80: Host Write Commands.
    pub host_write_commands: U128,
    /// 96: Controller Busy Time (minutes).
    pub controller_busy_time: U128,
    /// 112: Power Cycles.
    pub power_cycles: U128,
    /// 128: Power On Hours.
    pub power_on_hours: U128,
    /// 144: Unsafe Shutdowns.
    pub unsafe_shutdowns: U128,
    /// 160: Media and Data Integrity Errors.
    pub media_errors: U128,
    /// 176: Number of Error Information Log Entries.
    pub num_err_log_entries: U128,
    /// 192: Warning Composite Temperature Time (minutes).
    pub warning_temp_time: U32,
    /// 196: Critical Composite Temperature Time (minutes).
    pub critical_comp_time: U32,
    /// 200: Temperature Sensors 1..8 (kelvin).
    pub temp_sensor: [U16; 8],
    /// 216: Thermal Management Temperature 1 Transition Count.
    pub thm_temp1_trans_count: U32,
    /// 220: Thermal Management Temperature 2 Transition Count.
    pub thm_temp2_trans_count: U32,
    /// 224: Total Time For Thermal Management Temperature 1.
    pub thm_temp1_total_time: U32,
    /// 228: Total Time For Thermal Management Temperature 2.
    pub thm_temp2_total_time: U32,
    /// 232: reserved.
    pub reserved232: [u8; 280],
}

impl Default for SmartLog {
    fn default() -> Self {
        SmartLog::new_zeroed()
    }
}

impl SmartLog {
    /// Views the first 512 bytes of `bytes` as the SMART log.
    pub fn parse(bytes: &[u8]) -> Result<&SmartLog, NvmeError> {
        view_prefix("SMART / Health log", SMART_LOG_LEN, bytes)
    }
}

/// Length of the Firmware Slot Information log page.
pub const FW_SLOT_LOG_LEN: usize = 512;

/// Firmware Slot Information log page (LID 0x03, 512 bytes).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// 0: Active Firmware Info (AFI): bits 2:0 the active slot.
    pub afi: u8,
    /// 1: reserved.
    pub reserved1: [u8; 7],
    /// 8: Firmware Revision for Slot 1..7 (FRS1..FRS7), ASCII, space padded.
    pub frs: [[u8; 8]; 7],
    /// 64: reserved.
    pub reserved64: [u8; 448],
}

impl FirmwareSlotLog {
    /// A log with `revision` (at most 8 ASCII characters are kept) in slot 1, the active one.
    pub fn with_slot1(revision: &str) -> Self {
        let mut log = FirmwareSlotLog::new_zeroed();
        log.afi = 1;
        let r = revision.as_bytes();
        let n = r.len().min(8);
        log.frs[0] = [b' '; 8];
        log.frs[0][..n].copy_from_slice(&r[..n]);
        log
    }

    /// Views the first 512 bytes of `bytes` as the log.
    pub fn parse(bytes: &[u8]) -> Result<&FirmwareSlotLog, NvmeError> {
        view_prefix("Firmware Slot log", FW_SLOT_LOG_LEN, bytes)
    }
}

/// Length of the discovery log page header, and of each entry.
pub const DISCOVERY_RECORD_LEN: usize = 1024;

/// Discovery log page header (LID 0x70, bytes 0-1023).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DiscoveryLogHeader {
    /// 0: Generation Counter; changes whenever the page changes.
    pub genctr: U64,
    /// 8: Number of Records.
    pub numrec: U64,
    /// 16: Record Format (0).
    pub recfmt: U16,
    /// 18: reserved.
    pub reserved18: [u8; 1006],
}

impl Default for DiscoveryLogHeader {
    fn default() -> Self {
        DiscoveryLogHeader::new_zeroed()
    }
}

impl DiscoveryLogHeader {
    /// A header for `numrec` records at generation `genctr`.
    pub fn new(genctr: u64, numrec: u64) -> Self {
        let mut h = DiscoveryLogHeader::new_zeroed();
        h.genctr.set(genctr);
        h.numrec.set(numrec);
        h
    }

    /// Views the first 1024 bytes of `bytes` as the header.
    pub fn parse(bytes: &[u8]) -> Result<&DiscoveryLogHeader, NvmeError> {
        view_prefix("Discovery log header", DISCOVERY_RECORD_LEN, bytes)
    }

    /// The bytes a host must read to get the whole page: 1024 × (NUMREC + 1), `None` on
    /// overflow.
    pub fn page_len(&self) -> Option<u64> {
        self.numrec
            .get()
            .checked_add(1)?
            .checked_mul(DISCOVERY_RECORD_LEN as u64)
    }
}

/// TRTYPE: Transport Type.
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FC: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
    /// Intra-host (loop).
    pub const LOOP: u8 = 254;
}

/// ADRFAM: Address Family.
pub mod adrfam {
    /// IPv4.
    pub const IPV4: u8 = 1;
    /// IPv6.
    pub const IPV6: u8 = 2;
    /// InfiniBand.
    pub const IB: u8 = 3;
    /// Fibre Channel.
    pub const FC: u8 = 4;
}

/// SUBTYPE: Subsystem Type.
pub mod subtype {
    /// A referral to another discovery subsystem.
    pub const DISCOVERY_REFERRAL: u8 = 1;
    /// An NVM subsystem.
    pub const NVME: u8 = 2;
    /// The current discovery subsystem.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// TREQ: Transport Requirements.
pub mod treq {
    /// Bits 1:0: secure channel requirement not specified.
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0;
    /// Bits 1:0: secure channel required.
    pub const SECURE_CHANNEL_REQUIRED: u8 = 1;
    /// Bits 1:0: secure channel not required.
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 2;
    /// Bit 2: the controller can disable SQ flow control.
    pub const DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;
}

/// TSAS SECTYPE for TCP (byte 0 of TSAS).
pub mod sectype {
    /// No security.
    pub const NONE: u8 = 0;
    /// TLS 1.2.
    pub const TLS12: u8 = 1;
    /// TLS 1.3.
    pub const TLS13: u8 = 2;
}

/// One 1024-byte discovery log page entry.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DiscoveryLogEntry {
    /// 0: Transport Type (see [`trtype`]).
    pub trtype: u8,
    /// 1: Address Family (see [`adrfam`]).
    pub adrfam: u8,
    /// 2: Subsystem Type (see [`subtype`]).
    pub subtype: u8,
    /// 3: Transport Requirements (see [`treq`]).
    pub treq: u8,
    /// 4: Port ID.
    pub portid: U16,
    /// 6: Controller ID (0xFFFF: dynamic controller model).
    pub cntlid: U16,
    /// 8: Admin Max SQ Size.
    pub asqsz: U16,
    /// 10: Entry Flags (bit 0 DUPRETINFO, bit 1 EPCSD).
    pub eflags: U16,
    /// 12: reserved.
    pub reserved12: [u8; 20],
    /// 32: Transport Service Identifier (the TCP port, ASCII); see
    /// [`DiscoveryLogEntry::trsvcid`].
    pub trsvcid: [u8; 32],
    /// 64: reserved.
    pub reserved64: [u8; 192],
    /// 256: NVM Subsystem Qualified Name.
    pub subnqn: [u8; NQN_FIELD_LEN],
    /// 512: Transport Address (the IP address, ASCII).
    pub traddr: [u8; 256],
    /// 768: Transport Specific Address Subtype (TCP: SECTYPE in byte 0).
    pub tsas: [u8; 256],
}

impl Default for DiscoveryLogEntry {
    fn default() -> Self {
        DiscoveryLogEntry::new_zeroed()
    }
}

impl DiscoveryLogEntry {
    /// An NVMe/TCP entry for `subnqn` reachable at `traddr`:`trsvcid`, with the dynamic
    /// controller model, no secure channel requirement and SECTYPE none.
    pub fn tcp(
        adrfam: u8,
        traddr: &str,
        trsvcid: &str,
        subtype: u8,
        subnqn: &str,
        portid: u16,
        asqsz: u16,
    ) -> Result<Self, NvmeError> {
        let mut e = DiscoveryLogEntry::new_zeroed();
        e.trtype = trtype::TCP;
        e.adrfam = adrfam;
        e.subtype = subtype;
        e.treq = treq::SECURE_CHANNEL_NOT_REQUIRED;
        e.portid.set(portid);
        e.cntlid.set(super::fabrics::CNTLID_DYNAMIC);
        e.asqsz.set(asqsz);
        e.set_trsvcid(trsvcid)?;
        e.set_traddr(traddr)?;
        e.set_subnqn(subnqn)?;
        e.tsas[0] = sectype::NONE;
        Ok(e)
    }

    /// Views the first 1024 bytes of `bytes` as an entry.
    pub fn parse(bytes: &[u8]) -> Result<&DiscoveryLogEntry, NvmeError> {
        view_prefix("Discovery log entry", DISCOVERY_RECORD_LEN, bytes)
    }

    /// TRSVCID, checked, without padding (spaces or NULs).
    pub fn trsvcid(&self) -> Result<&str, NvmeError> {
        ascii_field("TRSVCID", &self.trsvcid)
    }

    /// Sets TRSVCID (NUL padded, at most 31 bytes).
    pub fn set_trsvcid(&mut self, v: &str) -> Result<(), NvmeError> {
        set_ascii_field_nul_padded("TRSVCID", &mut self.trsvcid, v)
    }

    /// TRADDR, checked, without padding.
    pub fn traddr(&self) -> Result<&str, NvmeError> {
        ascii_field("TRADDR", &self.traddr)
    }

    /// Sets TRADDR (NUL padded, at most 255 bytes).
    pub fn set_traddr(&mut self, v: &str) -> Result<(), NvmeError> {
        set_ascii_field_nul_padded("TRADDR", &mut self.traddr, v)
    }

    /// SUBNQN, checked.
    pub fn subnqn(&self) -> Result<&str, NvmeError> {
        nqn_field("SUBNQN", &self.subnqn)
    }

    /// Sets SUBNQN.
    pub fn set_subnqn(&mut self, v: &str) -> Result<(), NvmeError> {
        set_nqn_field("SUBNQN", &mut self.subnqn, v)
    }

    /// TSAS SECTYPE for TCP entries (see [`sectype`]).
    pub fn sectype(&self) -> u8 {
        self.tsas[0]
    }
}

/// A discovery log page (or the first part of one) read from a Get Log Page payload.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryLogPage<'a> {
    header: &'a DiscoveryLogHeader,
    entries: &'a [DiscoveryLogEntry],
}

impl<'a> DiscoveryLogPage<'a> {
    /// Reads the header and the whole entries that `bytes` holds (at most NUMREC). A host
    /// compares [`DiscoveryLogPage::is_complete`] and re-reads the page if GENCTR changed.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, NvmeError> {
        let header = DiscoveryLogHeader::parse(bytes)?;
        let rest = &bytes[DISCOVERY_RECORD_LEN..];
        let available = rest.len() / DISCOVERY_RECORD_LEN;
        let n = usize::try_from(header.numrec.get())
            .unwrap_or(usize::MAX)
            .min(available);
        let entries = <[DiscoveryLogEntry]>::ref_from_bytes(&rest[..n * DISCOVERY_RECORD_LEN])
            .map_err(|_| {
                NvmeError::truncated("Discovery log entries", DISCOVERY_RECORD_LEN, rest.len())
            })?;
        Ok(DiscoveryLogPage { header, entries })
    }

    /// The header.
    pub fn header(&self) -> &'a DiscoveryLogHeader {
        self.header
    }

    /// The entries present in the buffer.
    pub fn entries(&self) -> &'a [DiscoveryLogEntry] {
        self.entries
    }

    /// True if the buffer held all NUMREC entries.
    pub fn is_complete(&self) -> bool {
        self.entries.len() as u64 == self.header.numrec.get()
    }

    /// Writes a whole page (header with `genctr`, then `entries`) into `out`, which must hold at
    /// least 1024 × (entries + 1) bytes. Returns the bytes written.
    pub fn emit(
        genctr: u64,
        entries: &[DiscoveryLogEntry],
        out: &mut [u8],
    ) -> Result<usize, NvmeError> {
        let len = (entries.len() + 1) * DISCOVERY_RECORD_LEN;
        let Some(out) = out.get_mut(..len) else {
            return Err(NvmeError::truncated("Discovery log page", len, out.len()));
        };
        let header = DiscoveryLogHeader::new(genctr, entries.len() as u64);
        out[..DISCOVERY_RECORD_LEN].copy_from_slice(header.as_bytes());
        for (chunk, e) in out[DISCOVERY_RECORD_LEN..]
            .chunks_exact_mut(DISCOVERY_RECORD_LEN)
            .zip(entries)
        {
            chunk.copy_from_slice(e.as_bytes());
        }
        Ok(len)
    }
}

const _: () = assert!(std::mem::size_of::<ErrorLogEntry>() == ERROR_LOG_ENTRY_LEN);
const _: () = assert!(std::mem::size_of::<SmartLog>() == SMART_LOG_LEN);
const _: () = assert!(std::mem::size_of::<DiscoveryLogHeader>() == DISCOVERY_RECORD_LEN);
const _: () = assert!(std::mem::size_of::<DiscoveryLogEntry>() == DISCOVERY_RECORD_LEN);
