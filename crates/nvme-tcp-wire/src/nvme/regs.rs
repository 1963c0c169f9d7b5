//! Controller properties (registers) a fabrics host reads and writes with Property Get/Set:
//! CAP, VS, CC and CSTS, as bit-field values with getters and `with_*` builders.
//!
//! Offsets and bit positions from NVMe Base 2.0, "Controller Properties" (CAP 0x00, VS 0x08,
//! CC 0x14, CSTS 0x1C, NSSR 0x20).

use super::fabrics::PropertySize;

/// Offset of CAP (Controller Capabilities, 8 bytes).
pub const CAP: u32 = 0x00;
/// Offset of VS (Version, 4 bytes).
pub const VS: u32 = 0x08;
/// Offset of INTMS (Interrupt Mask Set; reserved on fabrics).
pub const INTMS: u32 = 0x0C;
/// Offset of INTMC (Interrupt Mask Clear; reserved on fabrics).
pub const INTMC: u32 = 0x10;
/// Offset of CC (Controller Configuration, 4 bytes).
pub const CC: u32 = 0x14;
/// Offset of CSTS (Controller Status, 4 bytes).
pub const CSTS: u32 = 0x1C;
/// Offset of NSSR (NVM Subsystem Reset, 4 bytes).
pub const NSSR: u32 = 0x20;

/// The properties a fabrics controller defines, with their access widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// CAP, 8 bytes, read only.
    Cap,
    /// VS, 4 bytes, read only.
    Vs,
    /// CC, 4 bytes, read/write.
    Cc,
    /// CSTS, 4 bytes, read only.
    Csts,
    /// NSSR, 4 bytes, write only (optional).
    Nssr,
}

impl Property {
    /// The property at `ofst`, `None` for an offset fabrics controllers do not define.
    pub const fn from_offset(ofst: u32) -> Option<Self> {
        Some(match ofst {
            CAP => Property::Cap,
            VS => Property::Vs,
            CC => Property::Cc,
            CSTS => Property::Csts,
            NSSR => Property::Nssr,
            _ => return None,
        })
    }

    /// The property's offset.
    pub const fn offset(self) -> u32 {
        match self {
            Property::Cap => CAP,
            Property::Vs => VS,
            Property::Cc => CC,
            Property::Csts => CSTS,
            Property::Nssr => NSSR,
        }
    }

    /// The property's size; a Property Get/Set with another ATTRIB size is an invalid field.
    pub const fn size(self) -> PropertySize {
        match self {
            Property::Cap => PropertySize::EightBytes,
            _ => PropertySize::FourBytes,
        }
    }
}

macro_rules! bitfields {
    ($raw:ty; $(
        $(#[$doc:meta])*
        $kind:ident $get:ident, $with:ident : $t:ty = $lo:expr, $width:expr;
    )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(self) -> $t {
                bitfields!(@get $kind, $t, ((self.0 >> $lo) & ((1 as $raw) << $width).wrapping_sub(1)))
            }

            #[doc = concat!("A copy with `", stringify!($get), "` replaced (truncated to its width).")]
            pub const fn $with(self, v: $t) -> Self {
                let mask: $raw = ((1 as $raw) << $width).wrapping_sub(1) << $lo;
                Self((self.0 & !mask) | (((v as $raw) << $lo) & mask))
            }
        )*
    };
    (@get flag, $t:ty, $e:expr) => { $e != 0 };
    (@get field, $t:ty, $e:expr) => { $e as $t };
}

/// CAP: Controller Capabilities (offset 0x00, 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cap(pub u64);

impl Cap {
    /// CAP.CSS bit 0 (CAP bit 37): the NVM command set is supported.
    pub const CSS_NVM: u8 = 1 << 0;
    /// CAP.CSS bit 6 (CAP bit 43): one or more I/O command sets are supported.
    pub const CSS_IO_COMMAND_SETS: u8 = 1 << 6;
    /// CAP.CSS bit 7 (CAP bit 44): no I/O command set (administrative/discovery controller).
    pub const CSS_NO_IO: u8 = 1 << 7;

    bitfields! { u64;
        /// MQES (15:0): maximum queue entries supported, 0's based.
        field mqes, with_mqes: u16 = 0, 16;
        /// CQR (16): contiguous queues required.
        flag cqr, with_cqr: bool = 16, 1;
        /// AMS (18:17): arbitration mechanisms supported.
        field ams, with_ams: u8 = 17, 2;
        /// TO (31:24): worst-case time to CSTS.RDY transition, in 500 ms units.
        field to, with_to: u8 = 24, 8;
        /// DSTRD (35:32): doorbell stride (PCIe only).
        field dstrd, with_dstrd: u8 = 32, 4;
        /// NSSRS (36): NVM subsystem reset supported.
        flag nssrs, with_nssrs: bool = 36, 1;
        /// CSS (44:37): command sets supported (see the `CSS_*` constants).
        field css, with_css: u8 = 37, 8;
        /// BPS (45): boot partition support.
        flag bps, with_bps: bool = 45, 1;
        /// MPSMIN (51:48): minimum memory page size, 2^(12 + MPSMIN) bytes.
        field mpsmin, with_mpsmin: u8 = 48, 4;
        /// MPSMAX (55:52): maximum memory page size, 2^(12 + MPSMAX) bytes.
        field mpsmax, with_mpsmax: u8 = 52, 4;
        /// CMBS (57): controller memory buffer supported.
        flag cmbs, with_cmbs: bool = 57, 1;
        /// CRMS (60:59): controller ready modes supported.
        field crms, with_crms: u8 = 59, 2;
    }

    /// The worst-case ready timeout in milliseconds (TO × 500).
    pub const fn timeout_ms(self) -> u32 {
        self.to() as u32 * 500
    }
}

/// VS: Version (offset 0x08): MJR 31:16, MNR 15:8, TER 7:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Vs(pub u32);

impl Vs {
    /// NVMe 1.3.
    pub const V1_3: Vs = Vs::new(1, 3, 0);
    /// NVMe 1.4.
    pub const V1_4: Vs = Vs::new(1, 4, 0);
    /// NVMe 2.0.
    pub const V2_0: Vs = Vs::new(2, 0, 0);

    /// A version from major, minor and tertiary numbers.
    pub const fn new(mjr: u16, mnr: u8, ter: u8) -> Self {
        Vs(((mjr as u32) << 16) | ((mnr as u32) << 8) | ter as u32)
    }

    bitfields! { u32;
        /// MJR (31:16): major version.
        field mjr, with_mjr: u16 = 16, 16;
        /// MNR (15:8): minor version.
        field mnr, with_mnr: u8 = 8, 8;
        /// TER (7:0): tertiary version.
        field ter, with_ter: u8 = 0, 8;
    }
}

/// CC: Controller Configuration (offset 0x14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cc(pub u32);

impl Cc {
    /// SHN value: no notification.
    pub const SHN_NONE: u8 = 0;
    /// SHN value: normal shutdown.
    pub const SHN_NORMAL: u8 = 1;
    /// SHN value: abrupt shutdown.
    pub const SHN_ABRUPT: u8 = 2;

    bitfields! { u32;
        /// EN (0): enable.
        flag en, with_en: bool = 0, 1;
        /// CSS (6:4): I/O command set selected (0 = NVM).
        field css, with_css: u8 = 4, 3;
        /// MPS (10:7): memory page size, 2^(12 + MPS) bytes.
        field mps, with_mps: u8 = 7, 4;
        /// AMS (13:11): arbitration mechanism selected.
        field ams, with_ams: u8 = 11, 3;
        /// SHN (15:14): shutdown notification (see the `SHN_*` constants).
        field shn, with_shn: u8 = 14, 2;
        /// IOSQES (19:16): I/O SQ entry size, 2^n bytes (6 for 64 B).
        field iosqes, with_iosqes: u8 = 16, 4;
        /// IOCQES (23:20): I/O CQ entry size, 2^n bytes (4 for 16 B).
        field iocqes, with_iocqes: u8 = 20, 4;
        /// CRIME (24): controller ready independent of media enable.
        flag crime, with_crime: bool = 24, 1;
    }

    /// The CC value a host writes to enable an NVM controller: EN = 1, IOSQES = 6, IOCQES = 4,
    /// CSS = NVM, MPS = 0 (4 KiB), round-robin arbitration.
    pub const fn enable_nvm() -> Self {
        Cc(0).with_en(true).with_iosqes(6).with_iocqes(4)
    }
}

/// CSTS: Controller Status (offset 0x1C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Csts(pub u32);

impl Csts {
    /// SHST value: normal operation.
    pub const SHST_NORMAL: u8 = 0;
    /// SHST value: shutdown processing occurring.
    pub const SHST_OCCURRING: u8 = 1;
    /// SHST value: shutdown processing complete.
    pub const SHST_COMPLETE: u8 = 2;

    bitfields! { u32;
        /// RDY (0): ready.
        flag rdy, with_rdy: bool = 0, 1;
        /// CFS (1): controller fatal status.
        flag cfs, with_cfs: bool = 1, 1;
        /// SHST (3:2): shutdown status (see the `SHST_*` constants).
        field shst, with_shst: u8 = 2, 2;
        /// NSSRO (4): NVM subsystem reset occurred.
        flag nssro, with_nssro: bool = 4, 1;
        /// PP (5): processing paused.
        flag pp, with_pp: bool = 5, 1;
        /// ST (6): shutdown type (1 = NVM subsystem shutdown).
        flag st, with_st: bool = 6, 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_enable_nvm_matches_linux_value() {
        // EN | IOSQES 6 << 16 | IOCQES 4 << 20, as the Linux host writes for 4 KiB pages.
        assert_eq!(Cc::enable_nvm().0, 0x0046_0001);
    }

    #[test]
    fn cap_fields_sit_at_their_bits() {
        let cap = Cap(0)
            .with_mqes(127)
            .with_cqr(true)
            .with_to(0x0F)
            .with_css(Cap::CSS_NVM)
            .with_mpsmax(4);
        assert_eq!(cap.0, 127 | 1 << 16 | 0x0F << 24 | 1 << 37 | 4 << 52);
        assert_eq!(cap.timeout_ms(), 7500);
        assert_eq!(Cap(u64::MAX).with_mqes(0).mqes(), 0);
        assert_eq!(Cap(u64::MAX).css(), 0xFF);
    }

    #[test]
    fn builders_truncate_to_the_field_width() {
        assert_eq!(Cc(0).with_shn(0xFF).0, 3 << 14);
        assert_eq!(Csts(0).with_shst(Csts::SHST_COMPLETE).0, 0b1000);
        assert_eq!(Vs::V1_4.0, 0x0001_0400);
        assert_eq!((Vs::V1_4.mjr(), Vs::V1_4.mnr()), (1, 4));
    }

    #[test]
    fn properties_know_their_width() {
        assert_eq!(Property::from_offset(0x1C), Some(Property::Csts));
        assert_eq!(Property::from_offset(0x04), None);
        assert_eq!(Property::Cap.size(), PropertySize::EightBytes);
        assert_eq!(Property::Cc.size(), PropertySize::FourBytes);
    }
}
