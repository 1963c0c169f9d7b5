//! Get Features / Set Features (admin opcodes 0x0A / 0x09) and the feature values a fabrics
//! host and target exchange: Number of Queues, Keep Alive Timer, Asynchronous Event
//! Configuration, Volatile Write Cache. Also the Asynchronous Event Request completion.
//!
//! CDW10: FID 7:0, SEL 10:8 (Get), SV 31 (Set); CDW11: the feature value.

use super::error::NvmeError;
use super::opcode::AdminOpcode;
use super::queue::Sqe;

/// Feature Identifiers (FID) this layer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FeatureId {
    /// 0x01 Arbitration.
    Arbitration = 0x01,
    /// 0x02 Power Management.
    PowerManagement = 0x02,
    /// 0x04 Temperature Threshold.
    TemperatureThreshold = 0x04,
    /// 0x05 Error Recovery.
    ErrorRecovery = 0x05,
    /// 0x06 Volatile Write Cache.
    VolatileWriteCache = 0x06,
    /// 0x07 Number of Queues.
    NumberOfQueues = 0x07,
    /// 0x08 Interrupt Coalescing (PCIe).
    InterruptCoalescing = 0x08,
    /// 0x09 Interrupt Vector Configuration (PCIe).
    InterruptVectorConfiguration = 0x09,
    /// 0x0A Write Atomicity Normal.
    WriteAtomicity = 0x0A,
    /// 0x0B Asynchronous Event Configuration.
    AsyncEventConfiguration = 0x0B,
    /// 0x0C Autonomous Power State Transition.
    AutonomousPowerStateTransition = 0x0C,
    /// 0x0D Host Memory Buffer (PCIe).
    HostMemoryBuffer = 0x0D,
    /// 0x0E Timestamp.
    Timestamp = 0x0E,
    /// 0x0F Keep Alive Timer.
    KeepAliveTimer = 0x0F,
    /// 0x16 Host Behavior Support.
    HostBehaviorSupport = 0x16,
    /// 0x81 Host Identifier.
    HostIdentifier = 0x81,
    /// 0x82 Reservation Notification Mask.
    ReservationNotificationMask = 0x82,
    /// 0x83 Reservation Persistence.
    ReservationPersistence = 0x83,
}

impl FeatureId {
    /// Decodes a FID; `None` for one this layer does not know.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x01 => Self::Arbitration,
            0x02 => Self::PowerManagement,
            0x04 => Self::TemperatureThreshold,
            0x05 => Self::ErrorRecovery,
            0x06 => Self::VolatileWriteCache,
            0x07 => Self::NumberOfQueues,
            0x08 => Self::InterruptCoalescing,
            0x09 => Self::InterruptVectorConfiguration,
            0x0A => Self::WriteAtomicity,
            0x0B => Self::AsyncEventConfiguration,
            0x0C => Self::AutonomousPowerStateTransition,
            0x0D => Self::HostMemoryBuffer,
            0x0E => Self::Timestamp,
            0x0F => Self::KeepAliveTimer,
            0x16 => Self::HostBehaviorSupport,
            0x81 => Self::HostIdentifier,
            0x82 => Self::ReservationNotificationMask,
            0x83 => Self::ReservationPersistence,
            _ => return None,
        })
    }
}

/// Number of Queues (FID 0x07): requested (Set Features CDW11) or allocated (completion DW0)
/// I/O queue counts, both 0's based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NumberOfQueues {
    /// NSQR / NSQA (15:0): number of I/O submission queues, 0's based.
    pub nsq: u16,
    /// NCQR / NCQA (31:16): number of I/O completion queues, 0's based.
    pub ncq: u16,
}

impl NumberOfQueues {
    /// Decodes CDW11 (request) or DW0 (completion).
    pub const fn from_dword(v: u32) -> Self {
        NumberOfQueues {
            nsq: v as u16,
            ncq: (v >> 16) as u16,
        }
    }

    /// Encodes CDW11 or DW0.
    pub const fn to_dword(self) -> u32 {
        self.nsq as u32 | ((self.ncq as u32) << 16)
    }
}

/// Asynchronous Event Configuration (FID 0x0B), CDW11: which events the host wants reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AsyncEventConfig(pub u32);

impl AsyncEventConfig {
    /// Bits 7:0: SMART / health critical warnings.
    pub const SMART_CRITICAL_WARNINGS: u32 = 0xFF;
    /// Bit 8: Namespace Attribute Notices.
    pub const NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
    /// Bit 9: Firmware Activation Notices.
    pub const FIRMWARE_ACTIVATION: u32 = 1 << 9;
    /// Bit 10: Telemetry Log Notices.
    pub const TELEMETRY_LOG: u32 = 1 << 10;
    /// Bit 11: ANA Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Bit 31: Discovery Log Page Change Notices.
    pub const DISCOVERY_LOG_CHANGE: u32 = 1 << 31;

    /// True if every bit of `mask` is enabled.
    pub const fn contains(self, mask: u32) -> bool {
        self.0 & mask == mask
    }
}

/// A feature value carried by Set Features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// FID 0x06: volatile write cache enable (WCE, CDW11 bit 0).
    VolatileWriteCache {
        /// WCE.
        wce: bool,
    },
    /// FID 0x07: requested number of I/O queues.
    NumberOfQueues(NumberOfQueues),
    /// FID 0x0B: asynchronous events to report.
    AsyncEventConfiguration(AsyncEventConfig),
    /// FID 0x0F: Keep Alive Timeout in milliseconds (CDW11).
    KeepAliveTimer {
        /// KATO in ms.
        kato: u32,
    },
    /// Any other FID, with its raw CDW11 (CDW12..15 are not kept). Never produced by
    /// [`Feature::parse`] for the FIDs above.
    Other {
        /// FID.
        fid: u8,
        /// CDW11.
        cdw11: u32,
    },
}

impl Feature {
    /// Decodes the feature from FID and CDW11.
    pub const fn parse(fid: u8, cdw11: u32) -> Self {
        match fid {
            0x06 => Feature::VolatileWriteCache {
                wce: cdw11 & 1 != 0,
            },
            0x07 => Feature::NumberOfQueues(NumberOfQueues::from_dword(cdw11)),
            0x0B => Feature::AsyncEventConfiguration(AsyncEventConfig(cdw11)),
            0x0F => Feature::KeepAliveTimer { kato: cdw11 },
            fid => Feature::Other { fid, cdw11 },
        }
    }

    /// The FID.
    pub const fn fid(&self) -> u8 {
        match self {
            Feature::VolatileWriteCache { .. } => FeatureId::VolatileWriteCache as u8,
            Feature::NumberOfQueues(_) => FeatureId::NumberOfQueues as u8,
            Feature::AsyncEventConfiguration(_) => FeatureId::AsyncEventConfiguration as u8,
            Feature::KeepAliveTimer { .. } => FeatureId::KeepAliveTimer as u8,
            Feature::Other { fid, .. } => *fid,
        }
    }

    /// The CDW11 encoding.
    pub const fn cdw11(&self) -> u32 {
        match self {
            Feature::VolatileWriteCache { wce } => *wce as u32,
            Feature::NumberOfQueues(n) => n.to_dword(),
            Feature::AsyncEventConfiguration(c) => c.0,
            Feature::KeepAliveTimer { kato } => *kato,
            Feature::Other { cdw11, .. } => *cdw11,
        }
    }
}

/// Set Features (admin opcode 0x09).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetFeaturesCommand {
    /// NSID (0 or 0xFFFFFFFF for controller-wide features).
    pub nsid: u32,
    /// SV: save the value across resets.
    pub sv: bool,
    /// The feature and its value.
    pub feature: Feature,
}

impl SetFeaturesCommand {
    /// Reads the command from an SQE (the opcode is checked).
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        if sqe.opcode() != AdminOpcode::SetFeatures as u8 {
            return Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            });
        }
        Ok(SetFeaturesCommand {
            nsid: sqe.nsid(),
            sv: sqe.cdw10() & (1 << 31) != 0,
            feature: Feature::parse(sqe.cdw10() as u8, sqe.cdw11()),
        })
    }

    /// Builds the SQE (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe::new(AdminOpcode::SetFeatures as u8);
        sqe.set_nsid(self.nsid);
        sqe.set_cdw10(u32::from(self.feature.fid()) | (u32::from(self.sv) << 31));
        sqe.set_cdw11(self.feature.cdw11());
        sqe
    }
}

/// Get Features SEL values (CDW10 bits 10:8).
pub mod sel {
    /// Current value.
    pub const CURRENT: u8 = 0;
    /// Default value.
    pub const DEFAULT: u8 = 1;
    /// Saved value.
    pub const SAVED: u8 = 2;
    /// Supported capabilities.
    pub const SUPPORTED_CAPABILITIES: u8 = 3;
}

/// Get Features (admin opcode 0x0A). The value comes back in completion DW0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GetFeaturesCommand {
    /// NSID.
    pub nsid: u32,
    /// FID (raw, see [`FeatureId`]).
    pub fid: u8,
    /// SEL: which value (see [`sel`]).
    pub sel: u8,
    /// CDW11 (feature specific; usually 0).
    pub cdw11: u32,
}

impl GetFeaturesCommand {
    /// Reads the command from an SQE (the opcode is checked).
    pub fn parse(sqe: &Sqe) -> Result<Self, NvmeError> {
        if sqe.opcode() != AdminOpcode::GetFeatures as u8 {
            return Err(NvmeError::InvalidOpcode {
                opcode: sqe.opcode(),
            });
        }
        Ok(GetFeaturesCommand {
            nsid: sqe.nsid(),
            fid: sqe.cdw10() as u8,
            sel: ((sqe.cdw10() >> 8) & 0x7) as u8,
            cdw11: sqe.cdw11(),
        })
    }

    /// Builds the SQE (CID 0).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe::new(AdminOpcode::GetFeatures as u8);
        sqe.set_nsid(self.nsid);
        sqe.set_cdw10(u32::from(self.fid) | (u32::from(self.sel & 0x7) << 8));
        sqe.set_cdw11(self.cdw11);
        sqe
    }

    /// The FID as a known feature, if it is one.
    pub const fn feature_id(&self) -> Option<FeatureId> {
        FeatureId::from_u8(self.fid)
    }
}

/// The completion DW0 of an Asynchronous Event Request: what happened and which log page to
/// read (reading it, without RAE, re-arms the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AsyncEvent {
    /// Asynchronous Event Type (bits 2:0, see the `AET_*` constants).
    pub aet: u8,
    /// Asynchronous Event Information (bits 15:8).
    pub aei: u8,
    /// Log Page Identifier (bits 23:16).
    pub lid: u8,
}

impl AsyncEvent {
    /// AET: error status.
    pub const AET_ERROR: u8 = 0;
    /// AET: SMART / health status.
    pub const AET_SMART: u8 = 1;
    /// AET: notice.
    pub const AET_NOTICE: u8 = 2;
    /// AET: I/O command set specific status.
    pub const AET_IO_COMMAND_SET: u8 = 6;
    /// AET: vendor specific.
    pub const AET_VENDOR: u8 = 7;
    /// Notice AEI: Namespace Attribute Changed (log page 0x04).
    pub const AEI_NAMESPACE_ATTRIBUTE_CHANGED: u8 = 0x00;
    /// Notice AEI: Firmware Activation Starting.
    pub const AEI_FIRMWARE_ACTIVATION_STARTING: u8 = 0x01;
    /// Notice AEI: ANA Change.
    pub const AEI_ANA_CHANGE: u8 = 0x03;
    /// Notice AEI: Discovery Log Page Change (log page 0x70).
    pub const AEI_DISCOVERY_LOG_CHANGE: u8 = 0xF0;

    /// The namespace-attribute-changed notice a target sends after adding or removing
    /// namespaces.
    pub const fn namespace_attribute_changed() -> Self {
        AsyncEvent {
            aet: Self::AET_NOTICE,
            aei: Self::AEI_NAMESPACE_ATTRIBUTE_CHANGED,
            lid: 0x04,
        }
    }

    /// The discovery-log-change notice of a discovery controller.
    pub const fn discovery_log_changed() -> Self {
        AsyncEvent {
            aet: Self::AET_NOTICE,
            aei: Self::AEI_DISCOVERY_LOG_CHANGE,
            lid: 0x70,
        }
    }

    /// Decodes DW0.
    pub const fn from_dw0(v: u32) -> Self {
        AsyncEvent {
            aet: (v & 0x7) as u8,
            aei: (v >> 8) as u8,
            lid: (v >> 16) as u8,
        }
    }

    /// Encodes DW0.
    pub const fn to_dw0(self) -> u32 {
        (self.aet as u32 & 0x7) | ((self.aei as u32) << 8) | ((self.lid as u32) << 16)
    }
}
