//! What a block device built on a namespace looks like: size, block sizes, transfer limits and
//! the optional commands, all derived from Identify Controller and Identify Namespace the way
//! the Linux NVMe host derives its queue limits.

use nvme_tcp_host::{Controller, HostError};
use nvme_tcp_wire::nvme::{IdentifyCommand, IdentifyController, IdentifyNamespace};

/// Largest data transfer one NVMe command carries, whatever MDTS allows: the Linux kernel
/// target fails commands above 4 MiB although it reports no limit, and ublk caps an I/O at
/// 1 MiB anyway.
pub const MAX_COMMAND_BYTES: u32 = 1 << 20;

/// NLB is 16 bits, 0's based: one Read/Write/Write Zeroes covers at most 65536 blocks.
const MAX_NLB: u64 = 65536;

/// A namespace seen as a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size in bytes (the formatted LBA size).
    pub lba_size: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Physical block size in bytes: the smallest write the device does without a
    /// read-modify-write or a torn write on power fail — min(preferred write granularity,
    /// atomic write unit power fail), as Linux computes it.
    pub physical_block_size: u32,
    /// Optimal I/O size in bytes (NOWS), 0 if the namespace does not say.
    pub optimal_io_size: u32,
    /// Largest data transfer of one command in bytes: MDTS, NLB's 65536 blocks and
    /// [`MAX_COMMAND_BYTES`], whichever is least. Larger requests are split.
    pub max_transfer: u32,
    /// The controller has a volatile write cache (VWC): Flush and FUA matter.
    pub volatile_write_cache: bool,
    /// Write Zeroes is supported (ONCS).
    pub write_zeroes: bool,
    /// Dataset Management (Deallocate) is supported (ONCS).
    pub deallocate: bool,
    /// Deallocated blocks read as zeroes (DLFEAT).
    pub deallocated_reads_zeroes: bool,
    /// The namespace is write protected (NSATTR bit 0).
    pub write_protected: bool,
}

impl Geometry {
    /// Queries Identify Controller and Identify Namespace `nsid` on `ctrl`.
    pub fn query(ctrl: &Controller, nsid: u32) -> Result<Self, HostError> {
        let info = ctrl.info()?;
        let raw_ns = ctrl.identify_raw(IdentifyCommand::namespace(nsid))?;
        let id = info
            .identify_controller()
            .ok_or_else(|| HostError::Unsupported("Identify Controller data too short".into()))?;
        let ns = IdentifyNamespace::parse(&raw_ns)
            .map_err(|e| HostError::Unsupported(format!("Identify Namespace: {e}")))?;
        Self::from_identify(nsid, id, ns, info.max_transfer)
    }

    /// Derives the geometry from the Identify structures and the controller's MDTS in bytes.
    pub fn from_identify(
        nsid: u32,
        id: &IdentifyController,
        ns: &IdentifyNamespace,
        mdts_bytes: Option<u64>,
    ) -> Result<Self, HostError> {
        if ns.nsze.get() == 0 {
            // All-zero Identify data: the namespace is not active.
            return Err(HostError::NamespaceNotFound(nsid));
        }
        let lba_size = ns.lba_size().ok_or_else(|| {
            HostError::Unsupported(format!("namespace {nsid}: LBA format unusable"))
        })?;
        if ns.lba_format().is_some_and(|f| f.ms.get() != 0) {
            return Err(HostError::Unsupported(format!(
                "namespace {nsid}: LBA format with metadata"
            )));
        }
        let bs = u64::from(lba_size);
        // NSFEAT bit 4 (OPTPERF): NPWG and NOWS are valid. Bit 1 (NSABP): NAWUPF is valid.
        let optperf = ns.nsfeat & (1 << 4) != 0;
        let nsabp = ns.nsfeat & (1 << 1) != 0;
        let mut phys = bs;
        let mut optimal = 0u64;
        if optperf {
            phys = bs * (1 + u64::from(ns.npwg.get()));
            if ns.nows.get() != 0 {
                optimal = bs * (1 + u64::from(ns.nows.get()));
            }
        }
        let atomic = if nsabp && ns.nawupf.get() != 0 {
            bs * (1 + u64::from(ns.nawupf.get()))
        } else {
            bs * (1 + u64::from(id.awupf.get()))
        };
        let physical = phys.min(atomic).max(bs);
        let mut max_transfer = (bs * MAX_NLB).min(u64::from(MAX_COMMAND_BYTES));
        if let Some(m) = mdts_bytes {
            max_transfer = max_transfer.min(m);
        }
        // Whole blocks, at least one.
        let max_transfer = (max_transfer / bs).max(1) * bs;
        let oncs = id.oncs.get();
        Ok(Geometry {
            nsid,
            lba_size,
            blocks: ns.nsze.get(),
            physical_block_size: u32::try_from(physical).unwrap_or(lba_size),
            optimal_io_size: u32::try_from(optimal).unwrap_or(0),
            max_transfer: u32::try_from(max_transfer).unwrap_or(lba_size),
            volatile_write_cache: id.vwc & IdentifyController::VWC_PRESENT != 0,
            write_zeroes: oncs & IdentifyController::ONCS_WRITE_ZEROES != 0,
            deallocate: oncs & IdentifyController::ONCS_DSM != 0,
            deallocated_reads_zeroes: ns.dlfeat & 0x7 == IdentifyNamespace::DLFEAT_READ_ZEROES,
            write_protected: ns.nsattr & 1 != 0,
        })
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.lba_size))
    }

    /// Largest number of blocks one Write Zeroes covers.
    pub fn max_write_zeroes_blocks(&self) -> u64 {
        MAX_NLB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctrl() -> IdentifyController {
        let mut id = IdentifyController::default();
        id.oncs
            .set(IdentifyController::ONCS_DSM | IdentifyController::ONCS_WRITE_ZEROES);
        id.vwc = IdentifyController::VWC_PRESENT;
        id
    }

    #[test]
    fn plain_namespace_has_lba_sized_physical_blocks_and_capped_transfers() {
        let ns = IdentifyNamespace::new(1 << 20, 12);
        let g = Geometry::from_identify(1, &ctrl(), &ns, None).unwrap();
        assert_eq!(g.lba_size, 4096);
        assert_eq!(g.physical_block_size, 4096);
        assert_eq!(g.size_bytes(), 4 << 30);
        assert_eq!(g.max_transfer, MAX_COMMAND_BYTES);
        assert!(g.volatile_write_cache && g.write_zeroes && g.deallocate);
        let g = Geometry::from_identify(1, &ctrl(), &ns, Some(128 << 10)).unwrap();
        assert_eq!(g.max_transfer, 128 << 10, "MDTS wins when smaller");
    }

    #[test]
    fn npwg_and_atomic_write_unit_give_the_physical_block_size() {
        let mut ns = IdentifyNamespace::new(1 << 20, 9);
        ns.nsfeat = (1 << 4) | (1 << 1);
        ns.npwg.set(7); // 8 blocks = 4 KiB preferred
        ns.nows.set(255); // 128 KiB optimal
        ns.nawupf.set(15); // 8 KiB atomic
        let g = Geometry::from_identify(1, &ctrl(), &ns, None).unwrap();
        assert_eq!(g.physical_block_size, 4096);
        assert_eq!(g.optimal_io_size, 128 << 10);
        ns.nawupf.set(1); // 1 KiB atomic: the physical block shrinks to it
        let g = Geometry::from_identify(1, &ctrl(), &ns, None).unwrap();
        assert_eq!(g.physical_block_size, 1024);
    }

    #[test]
    fn refuses_inactive_and_metadata_namespaces() {
        let ns = IdentifyNamespace::new(0, 9);
        assert!(Geometry::from_identify(1, &ctrl(), &ns, None).is_err());
        // What an inactive namespace returns: all zeroes, the LBA format too.
        let zero = IdentifyNamespace::default();
        let e = Geometry::from_identify(3, &ctrl(), &zero, None).unwrap_err();
        assert_eq!(e.to_string(), "namespace 3 not found");
        let mut ns = IdentifyNamespace::new(8, 9);
        ns.lbaf[0].ms.set(8);
        assert!(Geometry::from_identify(1, &ctrl(), &ns, None).is_err());
    }
}
