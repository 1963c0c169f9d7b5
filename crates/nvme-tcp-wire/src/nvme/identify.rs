//! Identify data structures (4096 bytes each): Identify Controller (CNS 0x01), Identify
//! Namespace (CNS 0x00), the Active Namespace ID list (CNS 0x02) and the Namespace
//! Identification Descriptor list (CNS 0x03).
//!
//! Layouts follow NVMe Base 2.0 / NVM Command Set 1.0 (cross-checked against the Linux
//! `struct nvme_id_ctrl` / `struct nvme_id_ns` field offsets). The structs are zero-copy views
//! with public fields named as in the spec; multi-byte fields are little-endian wrappers
//! (`.get()` / `.set()`), string fields have checked helpers.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::{NvmeError, view_prefix};
use super::text::{NQN_FIELD_LEN, ascii_field, nqn_field, set_ascii_field, set_nqn_field};

/// Length of every Identify data structure.
pub const IDENTIFY_DATA_LEN: usize = 4096;

/// Identify Controller data structure (CNS 0x01).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentifyController {
    /// 0: PCI Vendor ID.
    pub vid: U16,
    /// 2: PCI Subsystem Vendor ID.
    pub ssvid: U16,
    /// 4: Serial Number (ASCII, space padded); see [`IdentifyController::sn`].
    pub sn: [u8; 20],
    /// 24: Model Number (ASCII, space padded).
    pub mn: [u8; 40],
    /// 64: Firmware Revision (ASCII, space padded).
    pub fr: [u8; 8],
    /// 72: Recommended Arbitration Burst.
    pub rab: u8,
    /// 73: IEEE OUI Identifier.
    pub ieee: [u8; 3],
    /// 76: Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// 77: Maximum Data Transfer Size, a power of two in units of CAP.MPSMIN; 0 = no limit.
    pub mdts: u8,
    /// 78: Controller ID.
    pub cntlid: U16,
    /// 80: Version (same encoding as the VS property).
    pub ver: U32,
    /// 84: RTD3 Resume Latency.
    pub rtd3r: U32,
    /// 88: RTD3 Entry Latency.
    pub rtd3e: U32,
    /// 92: Optional Asynchronous Events Supported (bit 8 namespace attribute notices, bit 31
    /// discovery log page change notices).
    pub oaes: U32,
    /// 96: Controller Attributes (bit 0: 128-bit host identifier).
    pub ctratt: U32,
    /// 100: Read Recovery Levels Supported.
    pub rrls: U16,
    /// 102: reserved.
    pub reserved102: [u8; 9],
    /// 111: Controller Type (1 I/O, 2 discovery, 3 administrative; 0 not reported).
    pub cntrltype: u8,
    /// 112: FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// 128: Command Retry Delay Time 1 (100 ms units).
    pub crdt1: U16,
    /// 130: Command Retry Delay Time 2.
    pub crdt2: U16,
    /// 132: Command Retry Delay Time 3.
    pub crdt3: U16,
    /// 134: reserved.
    pub reserved134: [u8; 119],
    /// 253: NVM Subsystem Report (NVMe-MI).
    pub nvmsr: u8,
    /// 254: VPD Write Cycle Information (NVMe-MI).
    pub vwci: u8,
    /// 255: Management Endpoint Capabilities (NVMe-MI).
    pub mec: u8,
    /// 256: Optional Admin Command Support.
    pub oacs: U16,
    /// 258: Abort Command Limit, 0's based.
    pub acl: u8,
    /// 259: Asynchronous Event Request Limit, 0's based.
    pub aerl: u8,
    /// 260: Firmware Updates.
    pub frmw: u8,
    /// 261: Log Page Attributes.
    pub lpa: u8,
    /// 262: Error Log Page Entries, 0's based.
    pub elpe: u8,
    /// 263: Number of Power States Support, 0's based.
    pub npss: u8,
    /// 264: Admin Vendor Specific Command Configuration.
    pub avscc: u8,
    /// 265: Autonomous Power State Transition Attributes.
    pub apsta: u8,
    /// 266: Warning Composite Temperature Threshold (kelvin).
    pub wctemp: U16,
    /// 268: Critical Composite Temperature Threshold (kelvin).
    pub cctemp: U16,
    /// 270: Maximum Time for Firmware Activation.
    pub mtfa: U16,
    /// 272: Host Memory Buffer Preferred Size.
    pub hmpre: U32,
    /// 276: Host Memory Buffer Minimum Size.
    pub hmmin: U32,
    /// 280: Total NVM Capacity (bytes, 128-bit little-endian).
    pub tnvmcap: [u8; 16],
    /// 296: Unallocated NVM Capacity (bytes, 128-bit little-endian).
    pub unvmcap: [u8; 16],
    /// 312: Replay Protected Memory Block Support.
    pub rpmbs: U32,
    /// 316: Extended Device Self-test Time.
    pub edstt: U16,
    /// 318: Device Self-test Options.
    pub dsto: u8,
    /// 319: Firmware Update Granularity.
    pub fwug: u8,
    /// 320: Keep Alive Support: granularity of KATO in 100 ms units; 0 = Keep Alive unsupported.
    pub kas: U16,
    /// 322: Host Controlled Thermal Management Attributes.
    pub hctma: U16,
    /// 324: Minimum Thermal Management Temperature.
    pub mntmt: U16,
    /// 326: Maximum Thermal Management Temperature.
    pub mxtmt: U16,
    /// 328: Sanitize Capabilities.
    pub sanicap: U32,
    /// 332: Host Memory Buffer Minimum Descriptor Entry Size.
    pub hmminds: U32,
    /// 336: Host Memory Maximum Descriptors Entries.
    pub hmmaxd: U16,
    /// 338: NVM Set Identifier Maximum.
    pub nvmsetidmax: U16,
    /// 340: Endurance Group Identifier Maximum.
    pub endgidmax: U16,
    /// 342: ANA Transition Time.
    pub anatt: u8,
    /// 343: Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// 344: ANA Group Identifier Maximum.
    pub anagrpmax: U32,
    /// 348: Number of ANA Group Identifiers.
    pub nanagrpid: U32,
    /// 352: Persistent Event Log Size (64 KiB units).
    pub pels: U32,
    /// 356: Domain Identifier.
    pub domainid: U16,
    /// 358: reserved.
    pub reserved358: [u8; 10],
    /// 368: Max Endurance Group Capacity (bytes, 128-bit little-endian).
    pub megcap: [u8; 16],
    /// 384: reserved.
    pub reserved384: [u8; 128],
    /// 512: Submission Queue Entry Size: bits 3:0 required, 7:4 maximum, as powers of two
    /// (0x66 for 64 B).
    pub sqes: u8,
    /// 513: Completion Queue Entry Size (0x44 for 16 B).
    pub cqes: u8,
    /// 514: Maximum Outstanding Commands (fabrics: per queue).
    pub maxcmd: U16,
    /// 516: Number of Namespaces (the highest valid NSID).
    pub nn: U32,
    /// 520: Optional NVM Command Support (see the `ONCS_*` constants).
    pub oncs: U16,
    /// 522: Fused Operation Support.
    pub fuses: U16,
    /// 524: Format NVM Attributes.
    pub fna: u8,
    /// 525: Volatile Write Cache (bit 0 present).
    pub vwc: u8,
    /// 526: Atomic Write Unit Normal.
    pub awun: U16,
    /// 528: Atomic Write Unit Power Fail.
    pub awupf: U16,
    /// 530: I/O Command Set Vendor Specific Command Configuration.
    pub icsvscc: u8,
    /// 531: Namespace Write Protection Capabilities.
    pub nwpc: u8,
    /// 532: Atomic Compare & Write Unit.
    pub acwu: U16,
    /// 534: Optional Copy Formats Supported.
    pub ocfs: U16,
    /// 536: SGL Support (see the `SGLS_*` constants).
    pub sgls: U32,
    /// 540: Maximum Number of Allowed Namespaces.
    pub mnan: U32,
    /// 544: Maximum Domain Namespace Attachments (128-bit little-endian).
    pub maxdna: [u8; 16],
    /// 560: Maximum I/O Controller Namespace Attachments.
    pub maxcna: U32,
    /// 564: reserved.
    pub reserved564: [u8; 204],
    /// 768: NVM Subsystem NVMe Qualified Name (NUL terminated); see
    /// [`IdentifyController::subnqn`].
    pub subnqn: [u8; NQN_FIELD_LEN],
    /// 1024: reserved.
    pub reserved1024: [u8; 768],
    /// 1792: I/O Queue Command Capsule Supported Size, in 16-byte units (SQE + in-capsule data).
    pub ioccsz: U32,
    /// 1796: I/O Queue Response Capsule Supported Size, in 16-byte units.
    pub iorcsz: U32,
    /// 1800: In Capsule Data Offset, in 16-byte units (Linux hosts require 0).
    pub icdoff: U16,
    /// 1802: Fabrics Controller Attributes (bit 0: static controller model).
    pub fcatt: u8,
    /// 1803: Maximum SGL Data Block Descriptors (0 = no limit; NVMe/TCP uses 1).
    pub msdbd: u8,
    /// 1804: Optional Fabric Commands Support (bit 0: Disconnect).
    pub ofcs: U16,
    /// 1806: Discovery Controller Type.
    pub dctype: u8,
    /// 1807: reserved.
    pub reserved1807: [u8; 241],
    /// 2048: Power State Descriptors 0..=31 (NPSS + 1 of them are valid).
    pub psd: [PowerStateDescriptor; 32],
    /// 3072: vendor specific.
    pub vs: [u8; 1024],
}

impl Default for IdentifyController {
    fn default() -> Self {
        IdentifyController::new_zeroed()
    }
}

impl IdentifyController {
    /// CNTRLTYPE: I/O controller.
    pub const CNTRLTYPE_IO: u8 = 1;
    /// CNTRLTYPE: discovery controller.
    pub const CNTRLTYPE_DISCOVERY: u8 = 2;
    /// CNTRLTYPE: administrative controller.
    pub const CNTRLTYPE_ADMIN: u8 = 3;
    /// ONCS bit 0: Compare.
    pub const ONCS_COMPARE: u16 = 1 << 0;
    /// ONCS bit 1: Write Uncorrectable.
    pub const ONCS_WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// ONCS bit 2: Dataset Management.
    pub const ONCS_DSM: u16 = 1 << 2;
    /// ONCS bit 3: Write Zeroes.
    pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
    /// ONCS bit 5: Reservations.
    pub const ONCS_RESERVATIONS: u16 = 1 << 5;
    /// SGLS bits 1:0 = 01b: SGLs supported, no alignment requirement.
    pub const SGLS_SUPPORTED: u32 = 1;
    /// SGLS bit 2: Keyed SGL Data Block descriptor supported (RDMA).
    pub const SGLS_KEYED: u32 = 1 << 2;
    /// SGLS bit 20: Address field of an SGL Data Block may be an offset (in-capsule data).
    pub const SGLS_OFFSET: u32 = 1 << 20;
    /// OAES bit 8: Namespace Attribute Notices.
    pub const OAES_NS_ATTRIBUTE: u32 = 1 << 8;
    /// OAES bit 31: Discovery Log Page Change Notices.
    pub const OAES_DISCOVERY_LOG_CHANGE: u32 = 1 << 31;
    /// CTRATT bit 0: 128-bit Host Identifier supported.
    pub const CTRATT_HOST_ID_128: u32 = 1 << 0;
    /// VWC bit 0: a volatile write cache is present.
    pub const VWC_PRESENT: u8 = 1 << 0;
    /// LPA bit 2: Get Log Page extended data (NUMDU, LPOL/LPOU) supported.
    pub const LPA_EXTENDED_DATA: u8 = 1 << 2;
    /// OFCS bit 0: Disconnect command supported.
    pub const OFCS_DISCONNECT: u16 = 1 << 0;

    /// Views the first 4096 bytes of `bytes` as Identify Controller data.
    pub fn parse(bytes: &[u8]) -> Result<&IdentifyController, NvmeError> {
        view_prefix("Identify Controller", IDENTIFY_DATA_LEN, bytes)
    }

    /// SN, checked and without padding.
    pub fn sn(&self) -> Result<&str, NvmeError> {
        ascii_field("SN", &self.sn)
    }

    /// Sets SN (printable ASCII, at most 20 bytes).
    pub fn set_sn(&mut self, v: &str) -> Result<(), NvmeError> {
        set_ascii_field("SN", &mut self.sn, v)
    }

    /// MN, checked and without padding.
    pub fn mn(&self) -> Result<&str, NvmeError> {
        ascii_field("MN", &self.mn)
    }

    /// Sets MN (printable ASCII, at most 40 bytes).
    pub fn set_mn(&mut self, v: &str) -> Result<(), NvmeError> {
        set_ascii_field("MN", &mut self.mn, v)
    }

    /// FR, checked and without padding.
    pub fn fr(&self) -> Result<&str, NvmeError> {
        ascii_field("FR", &self.fr)
    }

    /// Sets FR (printable ASCII, at most 8 bytes).
    pub fn set_fr(&mut self, v: &str) -> Result<(), NvmeError> {
        set_ascii_field("FR", &mut self.fr, v)
    }

    /// SUBNQN, checked.
    pub fn subnqn(&self) -> Result<&str, NvmeError> {
        nqn_field("SUBNQN", &self.subnqn)
    }

    /// Sets SUBNQN.
    pub fn set_subnqn(&mut self, v: &str) -> Result<(), NvmeError> {
        set_nqn_field("SUBNQN", &mut self.subnqn, v)
    }

    /// The maximum data transfer size in bytes for a minimum page size of 2^(12 + `mpsmin`)
    /// bytes; `None` when MDTS is 0 (no limit) or the size does not fit in a `u64`.
    pub fn max_data_transfer_bytes(&self, mpsmin: u8) -> Option<u64> {
        if self.mdts == 0 {
            return None;
        }
        let shift = u32::from(self.mdts) + 12 + u32::from(mpsmin);
        1u64.checked_shl(shift)
    }

    /// The in-capsule data bytes an I/O command capsule may carry: IOCCSZ × 16 − 64 (0 if
    /// IOCCSZ is below the 4 units of a bare SQE).
    pub fn in_capsule_data_size(&self) -> u32 {
        self.ioccsz.get().saturating_mul(16).saturating_sub(64)
    }
}

/// A Power State Descriptor (32 bytes) of Identify Controller.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct PowerStateDescriptor {
    /// 0: Maximum Power (units per the Max Power Scale flag: 0.01 W or 0.0001 W).
    pub mp: U16,
    /// 2: reserved.
    pub reserved2: u8,
    /// 3: bit 0 Max Power Scale, bit 1 Non-Operational State.
    pub flags: u8,
    /// 4: Entry Latency (microseconds).
    pub enlat: U32,
    /// 8: Exit Latency (microseconds).
    pub exlat: U32,
    /// 12: Relative Read Throughput.
    pub rrt: u8,
    /// 13: Relative Read Latency.
    pub rrl: u8,
    /// 14: Relative Write Throughput.
    pub rwt: u8,
    /// 15: Relative Write Latency.
    pub rwl: u8,
    /// 16: Idle Power.
    pub idlp: U16,
    /// 18: Idle Power Scale (bits 7:6).
    pub ips: u8,
    /// 19: reserved.
    pub reserved19: u8,
    /// 20: Active Power.
    pub actp: U16,
    /// 22: Active Power Workload (bits 2:0) and Active Power Scale (bits 7:6).
    pub apws: u8,
    /// 23: reserved.
    pub reserved23: [u8; 9],
}

/// An LBA Format descriptor (4 bytes) of Identify Namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LbaFormat {
    /// Metadata Size in bytes per LBA.
    pub ms: U16,
    /// LBA Data Size, a power of two (9 = 512 B, 12 = 4096 B); 0 = format not available.
    pub lbads: u8,
    /// Relative Performance (bits 1:0).
    pub rp: u8,
}

impl LbaFormat {
    /// An LBA format with no metadata and 2^`lbads` byte blocks.
    pub fn new(lbads: u8) -> Self {
        LbaFormat {
            ms: U16::new(0),
            lbads,
            rp: 0,
        }
    }
}

/// Identify Namespace data structure for the NVM command set (CNS 0x00).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentifyNamespace {
    /// 0: Namespace Size, in logical blocks.
    pub nsze: U64,
    /// 8: Namespace Capacity, in logical blocks.
    pub ncap: U64,
    /// 16: Namespace Utilization, in logical blocks.
    pub nuse: U64,
    /// 24: Namespace Features (bit 0 thin provisioning).
    pub nsfeat: u8,
    /// 25: Number of LBA Formats, 0's based.
    pub nlbaf: u8,
    /// 26: Formatted LBA Size: bits 3:0 low index, 6:5 high index, bit 4 metadata at end of LBA.
    pub flbas: u8,
    /// 27: Metadata Capabilities.
    pub mc: u8,
    /// 28: End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// 29: End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// 30: Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// 31: Reservation Capabilities.
    pub rescap: u8,
    /// 32: Format Progress Indicator.
    pub fpi: u8,
    /// 33: Deallocate Logical Block Features (bits 2:0 read behaviour after deallocate:
    /// 1 = zeroes; bit 3 Write Zeroes may deallocate).
    pub dlfeat: u8,
    /// 34: Namespace Atomic Write Unit Normal.
    pub nawun: U16,
    /// 36: Namespace Atomic Write Unit Power Fail.
    pub nawupf: U16,
    /// 38: Namespace Atomic Compare & Write Unit.
    pub nacwu: U16,
    /// 40: Namespace Atomic Boundary Size Normal.
    pub nabsn: U16,
    /// 42: Namespace Atomic Boundary Offset.
    pub nabo: U16,
    /// 44: Namespace Atomic Boundary Size Power Fail.
    pub nabspf: U16,
    /// 46: Namespace Optimal I/O Boundary.
    pub noiob: U16,
    /// 48: NVM Capacity (bytes, 128-bit little-endian).
    pub nvmcap: [u8; 16],
    /// 64: Namespace Preferred Write Granularity.
    pub npwg: U16,
    /// 66: Namespace Preferred Write Alignment.
    pub npwa: U16,
    /// 68: Namespace Preferred Deallocate Granularity.
    pub npdg: U16,
    /// 70: Namespace Preferred Deallocate Alignment.
    pub npda: U16,
    /// 72: Namespace Optimal Write Size.
    pub nows: U16,
    /// 74: Maximum Single Source Range Length (Copy).
    pub mssrl: U16,
    /// 76: Maximum Copy Length.
    pub mcl: U32,
    /// 80: Maximum Source Range Count, 0's based.
    pub msrc: u8,
    /// 81: reserved (Key Per I/O Status in NVM 1.1).
    pub reserved81: u8,
    /// 82: Number of Unique Capability LBA Formats.
    pub nulbaf: u8,
    /// 83: reserved.
    pub reserved83: [u8; 9],
    /// 92: ANA Group Identifier.
    pub anagrpid: U32,
    /// 96: reserved.
    pub reserved96: [u8; 3],
    /// 99: Namespace Attributes (bit 0 write protected).
    pub nsattr: u8,
    /// 100: NVM Set Identifier.
    pub nvmsetid: U16,
    /// 102: Endurance Group Identifier.
    pub endgid: U16,
    /// 104: Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// 120: IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// 128: LBA Format 0..=63 support.
    pub lbaf: [LbaFormat; 64],
    /// 384: vendor specific.
    pub vs: [u8; 3712],
}

impl Default for IdentifyNamespace {
    fn default() -> Self {
        IdentifyNamespace::new_zeroed()
    }
}

impl IdentifyNamespace {
    /// NSFEAT bit 0: thin provisioning.
    pub const NSFEAT_THIN: u8 = 1 << 0;
    /// DLFEAT bits 2:0 = 001b: deallocated blocks read as zeroes.
    pub const DLFEAT_READ_ZEROES: u8 = 0x1;
    /// DLFEAT bit 3: Write Zeroes with DEAC deallocates.
    pub const DLFEAT_WRITE_ZEROES_DEALLOCATES: u8 = 1 << 3;

    /// A namespace of `nsze` blocks of 2^`lbads` bytes (9 for 512 B, 12 for 4 KiB), fully
    /// allocated, with one LBA format and no metadata.
    pub fn new(nsze: u64, lbads: u8) -> Self {
        let mut ns = IdentifyNamespace::new_zeroed();
        ns.nsze.set(nsze);
        ns.ncap.set(nsze);
        ns.nuse.set(nsze);
        ns.nlbaf = 0;
        ns.flbas = 0;
        ns.lbaf[0] = LbaFormat::new(lbads);
        ns
    }

    /// Views the first 4096 bytes of `bytes` as Identify Namespace data.
    pub fn parse(bytes: &[u8]) -> Result<&IdentifyNamespace, NvmeError> {
        view_prefix("Identify Namespace", IDENTIFY_DATA_LEN, bytes)
    }

    /// The index of the formatted LBA format, from FLBAS bits 3:0 and 6:5.
    pub fn flbas_index(&self) -> usize {
        usize::from(self.flbas & 0x0F) | (usize::from(self.flbas & 0x60) >> 1)
    }

    /// The LBA format in use; `None` if FLBAS points past NLBAF.
    pub fn lba_format(&self) -> Option<&LbaFormat> {
        let i = self.flbas_index();
        if i > usize::from(self.nlbaf) {
            return None;
        }
        self.lbaf.get(i)
    }

    /// The logical block size in bytes; `None` if the format is invalid or LBADS is outside
    /// 9..=31 (the spec requires at least 512 bytes).
    pub fn lba_size(&self) -> Option<u32> {
        let lbads = self.lba_format()?.lbads;
        if (9..32).contains(&lbads) {
            Some(1u32 << lbads)
        } else {
            None
        }
    }
}

/// I/O Command Set specific Identify Controller data structure for the NVM command set
/// (CNS 0x06, CSI 0): limits of Verify, Write Zeroes, Write Uncorrectable and Dataset
/// Management. Hosts that see VS 2.0 may ask for it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentifyControllerNvm {
    /// 0: Verify Size Limit (power of two, units of CAP.MPSMIN; 0 = no limit).
    pub vsl: u8,
    /// 1: Write Zeroes Size Limit (same units).
    pub wzsl: u8,
    /// 2: Write Uncorrectable Size Limit (same units).
    pub wusl: u8,
    /// 3: Dataset Management Ranges Limit (0 = no limit beyond 256).
    pub dmrl: u8,
    /// 4: Dataset Management Range Size Limit (logical blocks; 0 = no limit).
    pub dmrsl: U32,
    /// 8: Dataset Management Size Limit (logical blocks; 0 = no limit).
    pub dmsl: U64,
    /// 16: reserved.
    pub reserved16: [u8; 4080],
}

impl Default for IdentifyControllerNvm {
    fn default() -> Self {
        IdentifyControllerNvm::new_zeroed()
    }
}

impl IdentifyControllerNvm {
    /// Views the first 4096 bytes of `bytes` as this structure.
    pub fn parse(bytes: &[u8]) -> Result<&IdentifyControllerNvm, NvmeError> {
        view_prefix("Identify Controller (NVM)", IDENTIFY_DATA_LEN, bytes)
    }
}

/// I/O Command Set Independent Identify Namespace data structure (CNS 0x08).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentifyNamespaceIndependent {
    /// 0: Common Namespace Features.
    pub nsfeat: u8,
    /// 1: Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// 2: Reservation Capabilities.
    pub rescap: u8,
    /// 3: Format Progress Indicator.
    pub fpi: u8,
    /// 4: ANA Group Identifier.
    pub anagrpid: U32,
    /// 8: Namespace Attributes.
    pub nsattr: u8,
    /// 9: reserved.
    pub reserved9: u8,
    /// 10: NVM Set Identifier.
    pub nvmsetid: U16,
    /// 12: Endurance Group Identifier.
    pub endgid: U16,
    /// 14: Namespace Status (bit 0: ready).
    pub nstat: u8,
    /// 15: reserved.
    pub reserved15: [u8; 4081],
}

impl Default for IdentifyNamespaceIndependent {
    fn default() -> Self {
        IdentifyNamespaceIndependent::new_zeroed()
    }
}

impl IdentifyNamespaceIndependent {
    /// NSTAT bit 0: the namespace is ready.
    pub const NSTAT_READY: u8 = 1 << 0;

    /// Views the first 4096 bytes of `bytes` as this structure.
    pub fn parse(bytes: &[u8]) -> Result<&IdentifyNamespaceIndependent, NvmeError> {
        view_prefix(
            "Identify Namespace (command set independent)",
            IDENTIFY_DATA_LEN,
            bytes,
        )
    }
}

/// Maximum number of NSIDs in an NSID list (Active Namespace ID list, Changed Namespace List).
pub const NSID_LIST_LEN: usize = 1024;

/// A 4096-byte list of up to 1024 NSIDs, in increasing order, terminated by the first zero
/// entry. Used by the Active Namespace ID list (CNS 0x02) and the Changed Namespace List log.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NsidList {
    entries: [U32; NSID_LIST_LEN],
}

impl Default for NsidList {
    fn default() -> Self {
        NsidList::new_zeroed()
    }
}

impl NsidList {
    /// A list of `nsids`. Fails if there are more than 1024, if one is 0, or if they are not
    /// strictly increasing (the order the spec requires).
    pub fn from_nsids(nsids: &[u32]) -> Result<Self, NvmeError> {
        if nsids.len() > NSID_LIST_LEN {
            return Err(NvmeError::invalid("NSID list", 0, "more than 1024 entries"));
        }
        let mut list = NsidList::new_zeroed();
        let mut prev = 0u32;
        for (slot, &nsid) in list.entries.iter_mut().zip(nsids) {
            if nsid <= prev {
                return Err(NvmeError::invalid(
                    "NSID list",
                    0,
                    "NSIDs must be non-zero and increasing",
                ));
            }
            slot.set(nsid);
            prev = nsid;
        }
        Ok(list)
    }

    /// Views the first 4096 bytes of `bytes` as an NSID list.
    pub fn parse(bytes: &[u8]) -> Result<&NsidList, NvmeError> {
        view_prefix("NSID list", IDENTIFY_DATA_LEN, bytes)
    }

    /// The NSIDs up to the first zero entry.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|e| e.get()).take_while(|&n| n != 0)
    }

    /// The Changed Namespace List that says "more than 1024 namespaces changed": 0xFFFFFFFF
    /// in the first entry.
    pub fn overflow() -> Self {
        let mut list = NsidList::new_zeroed();
        list.entries[0].set(u32::MAX);
        list
    }

    /// True if the first entry is 0xFFFFFFFF, which in the Changed Namespace List log means
    /// "more than 1024 namespaces changed".
    pub fn overflowed(&self) -> bool {
        self.entries[0].get() == u32::MAX
    }
}

/// Namespace Identifier Type (NIDT) of a namespace identification descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Nidt {
    /// 1: IEEE Extended Unique Identifier, 8 bytes.
    Eui64 = 1,
    /// 2: Namespace Globally Unique Identifier, 16 bytes.
    Nguid = 2,
    /// 3: Namespace UUID, 16 bytes.
    Uuid = 3,
    /// 4: Command Set Identifier, 1 byte.
    Csi = 4,
}

impl Nidt {
    /// The NIDL the spec fixes for this type.
    pub const fn nidl(self) -> usize {
        match self {
            Nidt::Eui64 => 8,
            Nidt::Nguid | Nidt::Uuid => 16,
            Nidt::Csi => 1,
        }
    }
}

/// One namespace identification descriptor (CNS 0x03).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsIdDescriptor {
    /// EUI-64.
    Eui64([u8; 8]),
    /// NGUID.
    Nguid([u8; 16]),
    /// UUID.
    Uuid([u8; 16]),
    /// Command Set Identifier (0 = NVM).
    Csi(u8),
}

impl NsIdDescriptor {
    /// The descriptor's type.
    pub const fn nidt(&self) -> Nidt {
        match self {
            NsIdDescriptor::Eui64(_) => Nidt::Eui64,
            NsIdDescriptor::Nguid(_) => Nidt::Nguid,
            NsIdDescriptor::Uuid(_) => Nidt::Uuid,
            NsIdDescriptor::Csi(_) => Nidt::Csi,
        }
    }

    fn nid(&self) -> &[u8] {
        match self {
            NsIdDescriptor::Eui64(v) => v,
            NsIdDescriptor::Nguid(v) | NsIdDescriptor::Uuid(v) => v,
            NsIdDescriptor::Csi(v) => std::slice::from_ref(v),
        }
    }

    /// Writes `descriptors` as a descriptor list into `out` (normally 4096 bytes), zero-filling
    /// the rest so the list is terminated. Returns the bytes used by the descriptors; fails if
    /// they do not fit.
    pub fn emit_list(descriptors: &[NsIdDescriptor], out: &mut [u8]) -> Result<usize, NvmeError> {
        let mut at = 0usize;
        for d in descriptors {
            let nid = d.nid();
            let end = at + 4 + nid.len();
            if end > out.len() {
                return Err(NvmeError::invalid(
                    "Namespace Identification Descriptor list",
                    at as u32,
                    "descriptors do not fit in the buffer",
                ));
            }
            out[at] = d.nidt() as u8;
            out[at + 1] = nid.len() as u8;
            out[at + 2] = 0;
            out[at + 3] = 0;
            out[at + 4..end].copy_from_slice(nid);
            at = end;
        }
        out[at..].fill(0);
        Ok(at)
    }

    /// Iterates the descriptors of a list; stops at a zero NIDT or the end of `bytes`.
    /// Unknown types are skipped by their NIDL; a descriptor that runs past the buffer or has the
    /// wrong NIDL for its type yields one error and ends the iteration.
    pub fn parse_list(bytes: &[u8]) -> NsIdDescriptors<'_> {
        NsIdDescriptors { bytes, at: 0 }
    }
}

/// Iterator over a Namespace Identification Descriptor list; see
/// [`NsIdDescriptor::parse_list`].
#[derive(Debug, Clone)]
pub struct NsIdDescriptors<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for NsIdDescriptors<'_> {
    type Item = Result<NsIdDescriptor, NvmeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let header = self.bytes.get(self.at..self.at + 4)?;
            let (nidt, nidl) = (header[0], usize::from(header[1]));
            if nidt == 0 {
                self.at = self.bytes.len();
                return None;
            }
            let start = self.at + 4;
            let Some(nid) = self.bytes.get(start..start + nidl) else {
                let offset = self.at as u32;
                self.at = self.bytes.len();
                return Some(Err(NvmeError::invalid(
                    "NIDL",
                    offset + 1,
                    "descriptor runs past the end of the list",
                )));
            };
            let offset = self.at as u32;
            self.at = start + nidl;
            let Some(kind) = Nidt::from_u8(nidt) else {
                continue; // a type this layer does not know: skip it
            };
            if nidl != kind.nidl() {
                self.at = self.bytes.len();
                return Some(Err(NvmeError::invalid(
                    "NIDL",
                    offset + 1,
                    "length does not match the identifier type",
                )));
            }
            let d = match kind {
                Nidt::Eui64 => NsIdDescriptor::Eui64(nid.try_into().ok()?),
                Nidt::Nguid => NsIdDescriptor::Nguid(nid.try_into().ok()?),
                Nidt::Uuid => NsIdDescriptor::Uuid(nid.try_into().ok()?),
                Nidt::Csi => NsIdDescriptor::Csi(*nid.first()?),
            };
            return Some(Ok(d));
        }
    }
}

impl Nidt {
    /// Decodes NIDT; `None` for reserved values.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Nidt::Eui64,
            2 => Nidt::Nguid,
            3 => Nidt::Uuid,
            4 => Nidt::Csi,
            _ => return None,
        })
    }
}

const _: () = assert!(std::mem::size_of::<IdentifyController>() == IDENTIFY_DATA_LEN);
const _: () = assert!(std::mem::size_of::<IdentifyNamespace>() == IDENTIFY_DATA_LEN);
const _: () = assert!(std::mem::size_of::<PowerStateDescriptor>() == 32);
const _: () = assert!(std::mem::size_of::<NsidList>() == IDENTIFY_DATA_LEN);
const _: () = assert!(std::mem::size_of::<IdentifyControllerNvm>() == IDENTIFY_DATA_LEN);
const _: () = assert!(std::mem::size_of::<IdentifyNamespaceIndependent>() == IDENTIFY_DATA_LEN);
