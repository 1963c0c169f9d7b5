//! Completion status: Status Code Type (SCT) + Status Code (SC), and the CQE status field.
//!
//! Values from the NVM Express Base Specification 2.0 ("Status Field Definition", generic and
//! command specific status values), the NVM Command Set Specification (NVM generic codes 0x80+)
//! and NVMe over Fabrics 1.1 (Connect status values).

use std::fmt;

/// Status Code Type (SCT, CQE status bits 11:9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StatusCodeType {
    /// 0: Generic Command Status.
    Generic = 0,
    /// 1: Command Specific Status.
    CommandSpecific = 1,
    /// 2: Media and Data Integrity Errors.
    MediaDataIntegrity = 2,
    /// 3: Path Related Status.
    PathRelated = 3,
    /// 7: Vendor Specific.
    VendorSpecific = 7,
}

impl StatusCodeType {
    /// Decodes a 3-bit SCT; `None` for the reserved values 4..=6.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Generic,
            1 => Self::CommandSpecific,
            2 => Self::MediaDataIntegrity,
            3 => Self::PathRelated,
            7 => Self::VendorSpecific,
            _ => return None,
        })
    }
}

/// A command's completion status: Status Code Type (3 bits) and Status Code (8 bits).
///
/// The named constants cover the codes a fabrics host and target meet. Some command specific
/// codes share a value (e.g. SCT 1 / SC 0x80 is "Connect Incompatible Format" for Connect and
/// "Conflicting Attributes" for Dataset Management); [`Status::name`] gives the Fabrics meaning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status {
    sct: u8,
    sc: u8,
}

macro_rules! status_consts {
    ($( $(#[$doc:meta])* $name:ident = ($sct:expr, $sc:expr, $text:expr); )*) => {
        impl Status {
            $( $(#[$doc])* pub const $name: Status = Status { sct: $sct, sc: $sc }; )*

            /// The spec's name for this status, if it is one of the named constants.
            pub const fn name(self) -> Option<&'static str> {
                $( if self.sct == $sct && self.sc == $sc { return Some($text); } )*
                None
            }
        }
    };
}

status_consts! {
    /// Generic 0x00: Successful Completion.
    SUCCESS = (0, 0x00, "Successful Completion");
    /// Generic 0x01: Invalid Command Opcode.
    INVALID_OPCODE = (0, 0x01, "Invalid Command Opcode");
    /// Generic 0x02: Invalid Field in Command.
    INVALID_FIELD = (0, 0x02, "Invalid Field in Command");
    /// Generic 0x03: Command ID Conflict.
    COMMAND_ID_CONFLICT = (0, 0x03, "Command ID Conflict");
    /// Generic 0x04: Data Transfer Error.
    DATA_TRANSFER_ERROR = (0, 0x04, "Data Transfer Error");
    /// Generic 0x05: Commands Aborted due to Power Loss Notification.
    ABORTED_POWER_LOSS = (0, 0x05, "Commands Aborted due to Power Loss Notification");
    /// Generic 0x06: Internal Error.
    INTERNAL_ERROR = (0, 0x06, "Internal Error");
    /// Generic 0x07: Command Abort Requested.
    ABORT_REQUESTED = (0, 0x07, "Command Abort Requested");
    /// Generic 0x08: Command Aborted due to SQ Deletion.
    ABORTED_SQ_DELETION = (0, 0x08, "Command Aborted due to SQ Deletion");
    /// Generic 0x09: Command Aborted due to Failed Fused Command.
    ABORTED_FAILED_FUSED = (0, 0x09, "Command Aborted due to Failed Fused Command");
    /// Generic 0x0A: Command Aborted due to Missing Fused Command.
    ABORTED_MISSING_FUSED = (0, 0x0A, "Command Aborted due to Missing Fused Command");
    /// Generic 0x0B: Invalid Namespace or Format.
    INVALID_NAMESPACE_OR_FORMAT = (0, 0x0B, "Invalid Namespace or Format");
    /// Generic 0x0C: Command Sequence Error.
    COMMAND_SEQUENCE_ERROR = (0, 0x0C, "Command Sequence Error");
    /// Generic 0x0D: Invalid SGL Segment Descriptor.
    INVALID_SGL_SEGMENT_DESCRIPTOR = (0, 0x0D, "Invalid SGL Segment Descriptor");
    /// Generic 0x0E: Invalid Number of SGL Descriptors.
    INVALID_NUMBER_OF_SGL_DESCRIPTORS = (0, 0x0E, "Invalid Number of SGL Descriptors");
    /// Generic 0x0F: Data SGL Length Invalid.
    DATA_SGL_LENGTH_INVALID = (0, 0x0F, "Data SGL Length Invalid");
    /// Generic 0x10: Metadata SGL Length Invalid.
    METADATA_SGL_LENGTH_INVALID = (0, 0x10, "Metadata SGL Length Invalid");
    /// Generic 0x11: SGL Descriptor Type Invalid.
    SGL_DESCRIPTOR_TYPE_INVALID = (0, 0x11, "SGL Descriptor Type Invalid");
    /// Generic 0x12: Invalid Use of Controller Memory Buffer.
    INVALID_CMB_USE = (0, 0x12, "Invalid Use of Controller Memory Buffer");
    /// Generic 0x13: PRP Offset Invalid.
    PRP_OFFSET_INVALID = (0, 0x13, "PRP Offset Invalid");
    /// Generic 0x14: Atomic Write Unit Exceeded.
    ATOMIC_WRITE_UNIT_EXCEEDED = (0, 0x14, "Atomic Write Unit Exceeded");
    /// Generic 0x15: Operation Denied.
    OPERATION_DENIED = (0, 0x15, "Operation Denied");
    /// Generic 0x16: SGL Offset Invalid.
    SGL_OFFSET_INVALID = (0, 0x16, "SGL Offset Invalid");
    /// Generic 0x18: Host Identifier Inconsistent Format.
    HOST_ID_INCONSISTENT_FORMAT = (0, 0x18, "Host Identifier Inconsistent Format");
    /// Generic 0x19: Keep Alive Timer Expired.
    KEEP_ALIVE_TIMER_EXPIRED = (0, 0x19, "Keep Alive Timer Expired");
    /// Generic 0x1A: Keep Alive Timeout Invalid.
    KEEP_ALIVE_TIMEOUT_INVALID = (0, 0x1A, "Keep Alive Timeout Invalid");
    /// Generic 0x1B: Command Aborted due to Preempt and Abort.
    ABORTED_PREEMPT = (0, 0x1B, "Command Aborted due to Preempt and Abort");
    /// Generic 0x1C: Sanitize Failed.
    SANITIZE_FAILED = (0, 0x1C, "Sanitize Failed");
    /// Generic 0x1D: Sanitize In Progress.
    SANITIZE_IN_PROGRESS = (0, 0x1D, "Sanitize In Progress");
    /// Generic 0x1E: SGL Data Block Granularity Invalid.
    SGL_DATA_BLOCK_GRANULARITY_INVALID = (0, 0x1E, "SGL Data Block Granularity Invalid");
    /// Generic 0x20: Namespace is Write Protected.
    NAMESPACE_WRITE_PROTECTED = (0, 0x20, "Namespace is Write Protected");
    /// Generic 0x21: Command Interrupted.
    COMMAND_INTERRUPTED = (0, 0x21, "Command Interrupted");
    /// Generic 0x22: Transient Transport Error.
    TRANSIENT_TRANSPORT_ERROR = (0, 0x22, "Transient Transport Error");
    /// Generic 0x24: Admin Command Media Not Ready.
    ADMIN_COMMAND_MEDIA_NOT_READY = (0, 0x24, "Admin Command Media Not Ready");
    /// Generic (NVM command set) 0x80: LBA Out of Range.
    LBA_OUT_OF_RANGE = (0, 0x80, "LBA Out of Range");
    /// Generic (NVM command set) 0x81: Capacity Exceeded.
    CAPACITY_EXCEEDED = (0, 0x81, "Capacity Exceeded");
    /// Generic (NVM command set) 0x82: Namespace Not Ready.
    NAMESPACE_NOT_READY = (0, 0x82, "Namespace Not Ready");
    /// Generic (NVM command set) 0x83: Reservation Conflict.
    RESERVATION_CONFLICT = (0, 0x83, "Reservation Conflict");
    /// Generic (NVM command set) 0x84: Format In Progress.
    FORMAT_IN_PROGRESS = (0, 0x84, "Format In Progress");

    /// Command specific 0x00: Completion Queue Invalid.
    COMPLETION_QUEUE_INVALID = (1, 0x00, "Completion Queue Invalid");
    /// Command specific 0x01: Invalid Queue Identifier.
    INVALID_QUEUE_IDENTIFIER = (1, 0x01, "Invalid Queue Identifier");
    /// Command specific 0x02: Invalid Queue Size.
    INVALID_QUEUE_SIZE = (1, 0x02, "Invalid Queue Size");
    /// Command specific 0x03: Abort Command Limit Exceeded.
    ABORT_COMMAND_LIMIT_EXCEEDED = (1, 0x03, "Abort Command Limit Exceeded");
    /// Command specific 0x05: Asynchronous Event Request Limit Exceeded.
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = (1, 0x05, "Asynchronous Event Request Limit Exceeded");
    /// Command specific 0x06: Invalid Firmware Slot.
    INVALID_FIRMWARE_SLOT = (1, 0x06, "Invalid Firmware Slot");
    /// Command specific 0x07: Invalid Firmware Image.
    INVALID_FIRMWARE_IMAGE = (1, 0x07, "Invalid Firmware Image");
    /// Command specific 0x08: Invalid Interrupt Vector.
    INVALID_INTERRUPT_VECTOR = (1, 0x08, "Invalid Interrupt Vector");
    /// Command specific 0x09: Invalid Log Page.
    INVALID_LOG_PAGE = (1, 0x09, "Invalid Log Page");
    /// Command specific 0x0A: Invalid Format.
    INVALID_FORMAT = (1, 0x0A, "Invalid Format");
    /// Command specific 0x0C: Invalid Queue Deletion.
    INVALID_QUEUE_DELETION = (1, 0x0C, "Invalid Queue Deletion");
    /// Command specific 0x0D: Feature Identifier Not Saveable.
    FEATURE_NOT_SAVEABLE = (1, 0x0D, "Feature Identifier Not Saveable");
    /// Command specific 0x0E: Feature Not Changeable.
    FEATURE_NOT_CHANGEABLE = (1, 0x0E, "Feature Not Changeable");
    /// Command specific 0x0F: Feature Not Namespace Specific.
    FEATURE_NOT_NAMESPACE_SPECIFIC = (1, 0x0F, "Feature Not Namespace Specific");
    /// Command specific 0x80 (Fabrics Connect): Connect Incompatible Format (RECFMT).
    CONNECT_INCOMPATIBLE_FORMAT = (1, 0x80, "Connect Incompatible Format");
    /// Command specific 0x81 (Fabrics Connect): Connect Controller Busy.
    CONNECT_CONTROLLER_BUSY = (1, 0x81, "Connect Controller Busy");
    /// Command specific 0x82 (Fabrics Connect): Connect Invalid Parameters; DW0 carries
    /// IATTR/IPO (see [`crate::nvme::fabrics::ConnectResponse::invalid_parameter`]).
    CONNECT_INVALID_PARAMETERS = (1, 0x82, "Connect Invalid Parameters");
    /// Command specific 0x83 (Fabrics Connect): Connect Restart Discovery.
    CONNECT_RESTART_DISCOVERY = (1, 0x83, "Connect Restart Discovery");
    /// Command specific 0x84 (Fabrics Connect): Connect Invalid Host.
    CONNECT_INVALID_HOST = (1, 0x84, "Connect Invalid Host");
    /// Command specific 0x90 (Fabrics): Discovery Restart.
    DISCOVERY_RESTART = (1, 0x90, "Discovery Restart");
    /// Command specific 0x91 (Fabrics): Authentication Required.
    AUTHENTICATION_REQUIRED = (1, 0x91, "Authentication Required");
    /// Command specific 0x80 (NVM, Dataset Management): Conflicting Attributes. Shares its
    /// value with [`Status::CONNECT_INCOMPATIBLE_FORMAT`]; [`Status::name`] gives the Connect
    /// meaning.
    CONFLICTING_ATTRIBUTES = (1, 0x80, "Conflicting Attributes");
    /// Command specific 0x81 (NVM): Invalid Protection Information.
    INVALID_PROTECTION_INFORMATION = (1, 0x81, "Invalid Protection Information");
    /// Command specific 0x82 (NVM, Write): Attempted Write to Read Only Range.
    WRITE_TO_READ_ONLY_RANGE = (1, 0x82, "Attempted Write to Read Only Range");

    /// Media and data integrity 0x80: Write Fault.
    WRITE_FAULT = (2, 0x80, "Write Fault");
    /// Media and data integrity 0x81: Unrecovered Read Error.
    UNRECOVERED_READ_ERROR = (2, 0x81, "Unrecovered Read Error");
    /// Media and data integrity 0x82: End-to-end Guard Check Error.
    GUARD_CHECK_ERROR = (2, 0x82, "End-to-end Guard Check Error");
    /// Media and data integrity 0x83: End-to-end Application Tag Check Error.
    APPLICATION_TAG_CHECK_ERROR = (2, 0x83, "End-to-end Application Tag Check Error");
    /// Media and data integrity 0x84: End-to-end Reference Tag Check Error.
    REFERENCE_TAG_CHECK_ERROR = (2, 0x84, "End-to-end Reference Tag Check Error");
    /// Media and data integrity 0x85: Compare Failure.
    COMPARE_FAILURE = (2, 0x85, "Compare Failure");
    /// Media and data integrity 0x86: Access Denied.
    ACCESS_DENIED = (2, 0x86, "Access Denied");
    /// Media and data integrity 0x87: Deallocated or Unwritten Logical Block.
    DEALLOCATED_OR_UNWRITTEN_BLOCK = (2, 0x87, "Deallocated or Unwritten Logical Block");

    /// Path related 0x00: Internal Path Error.
    INTERNAL_PATH_ERROR = (3, 0x00, "Internal Path Error");
    /// Path related 0x01: Asymmetric Access Persistent Loss.
    ANA_PERSISTENT_LOSS = (3, 0x01, "Asymmetric Access Persistent Loss");
    /// Path related 0x02: Asymmetric Access Inaccessible.
    ANA_INACCESSIBLE = (3, 0x02, "Asymmetric Access Inaccessible");
    /// Path related 0x03: Asymmetric Access Transition.
    ANA_TRANSITION = (3, 0x03, "Asymmetric Access Transition");
    /// Path related 0x60: Controller Pathing Error.
    CONTROLLER_PATHING_ERROR = (3, 0x60, "Controller Pathing Error");
    /// Path related 0x70: Host Pathing Error.
    HOST_PATHING_ERROR = (3, 0x70, "Host Pathing Error");
    /// Path related 0x71: Command Aborted By Host.
    ABORTED_BY_HOST = (3, 0x71, "Command Aborted By Host");
}

impl Status {
    /// A status from its raw SCT (low 3 bits used) and SC.
    pub const fn new(sct: u8, sc: u8) -> Self {
        Status { sct: sct & 0x7, sc }
    }

    /// A status from a typed SCT and an SC.
    pub const fn with_type(sct: StatusCodeType, sc: u8) -> Self {
        Status { sct: sct as u8, sc }
    }

    /// The raw Status Code Type (0..=7).
    pub const fn sct(self) -> u8 {
        self.sct
    }

    /// The Status Code Type, `None` if reserved.
    pub const fn status_code_type(self) -> Option<StatusCodeType> {
        StatusCodeType::from_u8(self.sct)
    }

    /// The Status Code.
    pub const fn sc(self) -> u8 {
        self.sc
    }

    /// True for Successful Completion.
    pub const fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The 11-bit `(SCT << 8) | SC` value, as Linux prints it (e.g. 0x182).
    pub const fn to_u16(self) -> u16 {
        ((self.sct as u16) << 8) | self.sc as u16
    }

    /// Inverse of [`Status::to_u16`]; bits above 10 are ignored.
    pub const fn from_u16(v: u16) -> Self {
        Status::new((v >> 8) as u8, v as u8)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status(sct={}, sc={:#04x}", self.sct, self.sc)?;
        if let Some(name) = self.name() {
            write!(f, " \"{name}\"")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (sct {} sc {:#04x})", self.sct, self.sc),
            None => write!(f, "sct {} sc {:#04x}", self.sct, self.sc),
        }
    }
}

/// The CQE status field (bytes 14-15): phase tag, status, CRD, More and Do Not Retry.
///
/// Bit layout: P 0, SC 8:1, SCT 11:9, CRD 13:12, M 14, DNR 15. Fabrics transports do not use the
/// phase tag; it is kept so that a parse/emit round trip preserves every bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusField {
    /// SCT + SC.
    pub status: Status,
    /// Command Retry Delay (0 = none, 1..=3 select CRDT1..3 of Identify Controller).
    pub crd: u8,
    /// More: more status information is in the Error Information log page.
    pub more: bool,
    /// Do Not Retry.
    pub dnr: bool,
    /// Phase tag (unused by fabrics transports).
    pub phase: bool,
}

impl StatusField {
    /// Decodes the 16-bit status field.
    pub const fn from_bits(v: u16) -> Self {
        StatusField {
            status: Status::new(((v >> 9) & 0x7) as u8, (v >> 1) as u8),
            crd: ((v >> 12) & 0x3) as u8,
            more: v & (1 << 14) != 0,
            dnr: v & (1 << 15) != 0,
            phase: v & 1 != 0,
        }
    }

    /// Encodes the 16-bit status field; `crd` is truncated to 2 bits.
    pub const fn to_bits(self) -> u16 {
        (self.phase as u16)
            | ((self.status.sc as u16) << 1)
            | ((self.status.sct as u16 & 0x7) << 9)
            | ((self.crd as u16 & 0x3) << 12)
            | ((self.more as u16) << 14)
            | ((self.dnr as u16) << 15)
    }

    /// A status field with DNR set (the usual choice for errors a retry cannot fix).
    pub const fn dnr(status: Status) -> Self {
        StatusField {
            status,
            crd: 0,
            more: false,
            dnr: true,
            phase: false,
        }
    }
}

impl From<Status> for StatusField {
    fn from(status: Status) -> Self {
        StatusField {
            status,
            ..StatusField::default()
        }
    }
}
