//! Identify data built from the model (CNS 00h, 01h, 02h, 03h).

use nvme_tcp_wire::nvme::identify::IDENTIFY_DATA_LEN;
use nvme_tcp_wire::nvme::{
    IdentifyController, IdentifyControllerNvm, IdentifyNamespace, IdentifyNamespaceIndependent,
    NsIdDescriptor, NsidList,
};
use zerocopy::IntoBytes;

use crate::controller::{
    Controller, ControllerKind, MAX_ERROR_LOG_ENTRIES, MAX_OUTSTANDING_AERS, NVME_VERSION,
};
use crate::namespace::Namespace;

/// Highest NSID a host may use (Identify Controller NN).
pub const MAX_NSID: u32 = 1024;
/// Keep Alive granularity reported in KAS, in 100 ms units (1 s).
const KAS: u16 = 10;
/// Abort Command Limit, 0's based.
const ACL: u8 = 3;
/// Firmware revision reported in FR.
const FIRMWARE_REVISION: &str = env!("CARGO_PKG_VERSION");

/// Inputs of Identify Controller that do not live in the controller.
#[derive(Debug, Clone, Copy)]
pub struct IdentifyLimits {
    /// Maximum data transfer size in bytes (a power of two ≥ 4096).
    pub mdts: u32,
    /// In-capsule data accepted on I/O queues of this port.
    pub in_capsule_data_size: u32,
}

/// Identify Controller (CNS 01h).
pub fn controller(ctrl: &Controller, lim: IdentifyLimits) -> Vec<u8> {
    let sub = ctrl.subsystem();
    let mut id = IdentifyController::default();
    // Every string is ASCII and within its field (checked in the configuration), so these
    // setters cannot fail; a failure would leave the field blank rather than break Identify.
    let _ = id.set_sn(sub.serial());
    let _ = id.set_mn(sub.model());
    let _ = id.set_fr(&FIRMWARE_REVISION[..FIRMWARE_REVISION.len().min(8)]);
    let _ = id.set_subnqn(sub.nqn());
    id.rab = 6;
    // CMIC bit 1: the subsystem may have several controllers (hosts share namespaces).
    id.cmic = 1 << 1;
    id.mdts = (lim.mdts / 4096).max(1).trailing_zeros() as u8;
    id.cntlid.set(ctrl.cntlid());
    id.ver.set(NVME_VERSION);
    id.ctratt.set(IdentifyController::CTRATT_HOST_ID_128);
    id.acl = ACL;
    id.aerl = (MAX_OUTSTANDING_AERS - 1) as u8;
    id.frmw = 0x3; // one slot, read only
    id.lpa = IdentifyController::LPA_EXTENDED_DATA;
    id.elpe = (MAX_ERROR_LOG_ENTRIES - 1) as u8;
    id.kas.set(KAS);
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd.set(ctrl.max_queue_size());
    id.sgls
        .set(IdentifyController::SGLS_SUPPORTED | IdentifyController::SGLS_OFFSET);
    id.iorcsz.set(1);
    id.icdoff.set(0);
    id.msdbd = 1;
    id.ofcs.set(IdentifyController::OFCS_DISCONNECT);
    match ctrl.kind() {
        ControllerKind::Io => {
            id.cntrltype = IdentifyController::CNTRLTYPE_IO;
            id.oaes.set(IdentifyController::OAES_NS_ATTRIBUTE);
            id.nn
                .set(MAX_NSID.max(sub.active_nsids().last().copied().unwrap_or(0)));
            id.oncs
                .set(IdentifyController::ONCS_DSM | IdentifyController::ONCS_WRITE_ZEROES);
            id.vwc = IdentifyController::VWC_PRESENT;
            id.ioccsz.set((64 + lim.in_capsule_data_size) / 16);
        }
        ControllerKind::Discovery => {
            id.cntrltype = IdentifyController::CNTRLTYPE_DISCOVERY;
            id.oaes.set(IdentifyController::OAES_DISCOVERY_LOG_CHANGE);
            id.ioccsz.set(4);
        }
    }
    id.as_bytes().to_vec()
}

/// Identify Namespace (CNS 00h) of an active namespace.
pub fn namespace(ns: &Namespace) -> Vec<u8> {
    let mut id = IdentifyNamespace::new(ns.nlb(), ns.lba_size().shift());
    id.nsfeat = IdentifyNamespace::NSFEAT_THIN;
    // Deallocated blocks read as zeroes on every backend.
    id.dlfeat = IdentifyNamespace::DLFEAT_READ_ZEROES;
    // NMIC bit 0: may be attached to several controllers.
    id.nmic = 1;
    id.nguid = ns.ids().nguid;
    id.eui64 = ns.ids().eui64.unwrap_or([0; 8]);
    id.as_bytes().to_vec()
}

/// Active Namespace ID list (CNS 02h): active NSIDs above `after`, at most 1024.
pub fn active_ns_list(active: &[u32], after: u32) -> Vec<u8> {
    let ids: Vec<u32> = active
        .iter()
        .copied()
        .filter(|&n| n > after)
        .take(1024)
        .collect();
    NsidList::from_nsids(&ids)
        .unwrap_or_default()
        .as_bytes()
        .to_vec()
}

/// Namespace Identification Descriptor list (CNS 03h).
pub fn ns_id_descriptors(ns: &Namespace) -> Vec<u8> {
    let ids = ns.ids();
    let mut list = Vec::with_capacity(4);
    if let Some(e) = ids.eui64 {
        list.push(NsIdDescriptor::Eui64(e));
    }
    list.push(NsIdDescriptor::Nguid(ids.nguid));
    list.push(NsIdDescriptor::Uuid(ids.uuid));
    list.push(NsIdDescriptor::Csi(0));
    let mut out = vec![0u8; IDENTIFY_DATA_LEN];
    // Four descriptors take at most 60 bytes of the 4096.
    let _ = NsIdDescriptor::emit_list(&list, &mut out);
    out
}

/// I/O Command Set specific Identify Controller for the NVM command set (CNS 06h, CSI 0):
/// no limits beyond MDTS (all zero).
pub fn controller_nvm() -> Vec<u8> {
    IdentifyControllerNvm::default().as_bytes().to_vec()
}

/// I/O Command Set specific Identify Namespace for the NVM command set (CNS 05h, CSI 0): no
/// protection information, no extended LBA formats (all zero).
pub fn namespace_nvm() -> Vec<u8> {
    vec![0u8; IDENTIFY_DATA_LEN]
}

/// I/O Command Set Independent Identify Namespace (CNS 08h).
pub fn namespace_independent(_ns: &Namespace) -> Vec<u8> {
    let id = IdentifyNamespaceIndependent {
        nsfeat: IdentifyNamespace::NSFEAT_THIN,
        nmic: 1,
        nstat: IdentifyNamespaceIndependent::NSTAT_READY,
        ..Default::default()
    };
    id.as_bytes().to_vec()
}
