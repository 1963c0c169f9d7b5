//! Fabrics commands (Connect, Property Get/Set, Disconnect) and admin commands.

use std::sync::Arc;
use std::time::Instant;

use nvme_tcp_wire::nvme::fabrics::{AUTHREQ_ATR, CNTLID_DYNAMIC};
use nvme_tcp_wire::nvme::features::sel;
use nvme_tcp_wire::nvme::log::FirmwareSlotLog;
use nvme_tcp_wire::nvme::{
    AbortCommand, AdminCommand, Cns, ConnectCommand, ConnectData, ConnectResponse, FabricsCommand,
    Feature, GetFeaturesCommand, GetLogPageCommand, IdentifyCommand, PropertySize,
    SetFeaturesCommand, Sgl, Sqe, Status,
};
use zerocopy::IntoBytes;

use super::{Connection, Flow, Queue};
use crate::controller::{ControllerKind, ControllerParams, fid, lid};
use crate::discovery;
use crate::identify::{self, IdentifyLimits, MAX_NSID};
use crate::metrics::ConnectionIdentity;

/// SQE byte offsets reported in Connect Invalid Parameters (IATTR 0).
const IPO_QID: u16 = 42;
const IPO_SQSIZE: u16 = 44;

impl Connection {
    /// The in-capsule data of a command that carries host data in the capsule, checked
    /// against its SGL.
    pub(super) fn in_capsule<'a>(sqe: &Sqe, data: &'a [u8]) -> Result<&'a [u8], Status> {
        match sqe.dptr().parse() {
            Ok(Sgl::DataBlockOffset { offset, length }) => {
                let start = usize::try_from(offset).map_err(|_| Status::SGL_OFFSET_INVALID)?;
                let end = start
                    .checked_add(length as usize)
                    .ok_or(Status::SGL_OFFSET_INVALID)?;
                if start > data.len() {
                    return Err(Status::SGL_OFFSET_INVALID);
                }
                data.get(start..end).ok_or(Status::DATA_SGL_LENGTH_INVALID)
            }
            Ok(Sgl::TransportDataBlock { .. }) => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
            Err(e) => Err(e.status()),
        }
    }

    /// The first command of a connection must be a Fabrics Connect.
    pub(super) fn on_first_command(&mut self, sqe: &Sqe, data: &[u8], now: Instant) -> Flow {
        let cid = sqe.cid();
        let cmd = match FabricsCommand::parse(sqe) {
            Ok(FabricsCommand::Connect(c)) => c,
            Ok(_) | Err(_) => {
                self.complete(cid, Status::COMMAND_SEQUENCE_ERROR, 0, 0);
                return Flow::Continue;
            }
        };
        match self.connect(sqe, &cmd, data, now) {
            Ok(cntlid) => {
                let authreq = if self.auth.is_some() { AUTHREQ_ATR } else { 0 };
                let dw0 = ConnectResponse::Success { cntlid, authreq }.to_dw0();
                self.complete(cid, Status::SUCCESS, dw0, 0);
            }
            Err((status, dw0)) => {
                self.state
                    .metrics()
                    .connects_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(conn = self.id, ?status, "Connect refused");
                self.complete(cid, status, dw0, 0);
            }
        }
        Flow::Continue
    }

    fn connect(
        &mut self,
        sqe: &Sqe,
        cmd: &ConnectCommand,
        data: &[u8],
        now: Instant,
    ) -> Result<u16, (Status, u32)> {
        let bad_data = |ipo: u16| {
            (
                Status::CONNECT_INVALID_PARAMETERS,
                ConnectResponse::invalid_parameter(true, ipo).to_dw0(),
            )
        };
        let bad_sqe = |ipo: u16| {
            (
                Status::CONNECT_INVALID_PARAMETERS,
                ConnectResponse::invalid_parameter(false, ipo).to_dw0(),
            )
        };
        let data = Self::in_capsule(sqe, data).map_err(|s| (s, 0))?;
        if cmd.recfmt != 0 {
            return Err((Status::CONNECT_INCOMPATIBLE_FORMAT, 0));
        }
        let cd = ConnectData::parse(data).map_err(|e| (e.status(), 0))?;
        let subnqn = cd
            .subnqn()
            .map_err(|_| bad_data(ConnectData::SUBNQN_OFFSET))?;
        let hostnqn = cd
            .hostnqn()
            .map_err(|_| bad_data(ConnectData::HOSTNQN_OFFSET))?;
        let sub = self
            .state
            .subsystem(subnqn)
            .filter(|s| {
                s.kind() == ControllerKind::Discovery
                    || self
                        .state
                        .port(self.port.portid)
                        .is_none_or(|p| p.cfg.exposes(s.nqn()))
            })
            .ok_or_else(|| bad_data(ConnectData::SUBNQN_OFFSET))?;
        if !sub.allows(hostnqn) {
            tracing::warn!(subnqn, hostnqn, "host not allowed");
            return Err((Status::CONNECT_INVALID_HOST, 0));
        }
        if let Some(tls_host) = self.tls_hostnqn.as_deref()
            && tls_host != hostnqn
        {
            tracing::warn!(
                hostnqn,
                tls_host,
                "Connect names another host than the TLS PSK identity"
            );
            return Err((Status::CONNECT_INVALID_HOST, 0));
        }
        let lim = self.state.limits().clone();
        let size = cmd.sqsize as u32 + 1;
        let max = if cmd.qid == 0 {
            lim.max_admin_queue_size
        } else {
            lim.max_queue_size
        };
        if cmd.sqsize == 0 || size > max as u32 {
            return Err(bad_sqe(IPO_SQSIZE));
        }
        if !self.state.claim_host_slot(hostnqn) {
            tracing::warn!(
                hostnqn,
                limit = lim.max_connections_per_host,
                "connection limit of the host reached, answering Controller Busy"
            );
            return Err((Status::CONNECT_CONTROLLER_BUSY, 0));
        }
        let r = self.attach_queue(cmd, cd, &sub, hostnqn, now);
        if r.is_err() {
            self.state.release_host_slot(hostnqn);
        }
        r
    }

    /// The second half of Connect, once the host holds a connection slot: creates the
    /// controller (admin queue) or claims the I/O queue.
    fn attach_queue(
        &mut self,
        cmd: &ConnectCommand,
        cd: &ConnectData,
        sub: &Arc<crate::subsystem::Subsystem>,
        hostnqn: &str,
        now: Instant,
    ) -> Result<u16, (Status, u32)> {
        let bad_data = |ipo: u16| {
            (
                Status::CONNECT_INVALID_PARAMETERS,
                ConnectResponse::invalid_parameter(true, ipo).to_dw0(),
            )
        };
        let bad_sqe = |ipo: u16| {
            (
                Status::CONNECT_INVALID_PARAMETERS,
                ConnectResponse::invalid_parameter(false, ipo).to_dw0(),
            )
        };
        let lim = self.state.limits().clone();
        let size = cmd.sqsize as u32 + 1;
        let ctrl = if cmd.qid == 0 {
            if cd.cntlid() != CNTLID_DYNAMIC {
                return Err(bad_data(ConnectData::CNTLID_OFFSET));
            }
            let ctrl = sub
                .create_controller(ControllerParams {
                    hostnqn: hostnqn.to_string(),
                    hostid: cd.hostid(),
                    kato_ms: cmd.kato,
                    portid: self.port.portid,
                    max_queue_size: lim.max_queue_size,
                    max_io_queues: lim.max_io_queues,
                })
                .map_err(|s| (s, 0))?;
            ctrl.keep_alive(now);
            ctrl
        } else {
            let ctrl = sub
                .controller(cd.cntlid())
                .ok_or_else(|| bad_data(ConnectData::CNTLID_OFFSET))?;
            if ctrl.hostnqn() != hostnqn || ctrl.hostid() != cd.hostid() {
                return Err(bad_data(ConnectData::HOSTNQN_OFFSET));
            }
            if ctrl.kind() == ControllerKind::Discovery || !ctrl.is_ready() {
                return Err(bad_sqe(IPO_QID));
            }
            if !ctrl.claim_io_queue(cmd.qid) {
                return Err(bad_sqe(IPO_QID));
            }
            ctrl
        };
        ctrl.add_disconnector(self.id, (self.make_disconnector)());
        let cntlid = ctrl.cntlid();
        // A host with a key authenticates every queue of an NVM subsystem's controllers.
        self.auth = match (ctrl.kind(), self.state.host_auth(hostnqn)) {
            (ControllerKind::Discovery, _) | (_, None) => None,
            (_, Some(keys)) => Some(super::auth::queue_auth(&keys, hostnqn, sub.nqn())),
        };
        let qsize = size as u16;
        self.writes = (0..qsize).map(|_| None).collect();
        self.free_ttags = (0..qsize).rev().collect();
        self.queue = Some(Queue {
            ctrl,
            qid: cmd.qid,
            size: qsize,
            sqhd: 1 % qsize,
            sq_flow_disabled: cmd.sq_flow_control_disabled(),
        });
        self.obs.connected(
            self.state.metrics(),
            ConnectionIdentity {
                subnqn: sub.nqn().to_string(),
                hostnqn: hostnqn.to_string(),
                cntlid,
                qid: cmd.qid,
            },
            qsize,
        );
        tracing::info!(
            conn = self.id,
            cntlid,
            qid = cmd.qid,
            subnqn = sub.nqn(),
            hostnqn,
            "Connect: queue connected"
        );
        Ok(cntlid)
    }

    pub(super) fn on_admin_command(&mut self, sqe: &Sqe, data: &[u8]) -> Flow {
        let cid = sqe.cid();
        let Some(q) = &self.queue else {
            return Flow::Continue;
        };
        let ctrl = Arc::clone(&q.ctrl);
        let discovery = ctrl.kind() == ControllerKind::Discovery;
        let cmd = match AdminCommand::parse(sqe) {
            Ok(c) => c,
            Err(e) => {
                self.complete(cid, e.status(), 0, 0);
                return Flow::Continue;
            }
        };
        let _ = data;
        if !ctrl.is_ready() && !matches!(cmd, AdminCommand::Fabrics(_) | AdminCommand::KeepAlive) {
            self.complete(cid, Status::COMMAND_SEQUENCE_ERROR, 0, 0);
            return Flow::Continue;
        }
        match cmd {
            AdminCommand::Fabrics(f) => self.on_admin_fabrics(cid, f),
            AdminCommand::Identify(c) => self.identify(sqe, c),
            AdminCommand::GetLogPage(c) => self.get_log_page(sqe, c),
            AdminCommand::SetFeatures(c) => self.set_features(cid, c, discovery),
            AdminCommand::GetFeatures(c) => self.get_features(cid, c, discovery),
            AdminCommand::AsyncEventRequest => {
                if self.aers.len() >= crate::controller::MAX_OUTSTANDING_AERS {
                    self.complete(cid, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0, 0);
                } else {
                    self.aers.push(cid);
                }
            }
            AdminCommand::KeepAlive => self.complete(cid, Status::SUCCESS, 0, 0),
            AdminCommand::Abort(c) => self.abort(cid, c),
        }
        Flow::Continue
    }

    fn on_admin_fabrics(&mut self, cid: u16, f: FabricsCommand) {
        let Some(q) = &self.queue else {
            return;
        };
        let ctrl = Arc::clone(&q.ctrl);
        match f {
            FabricsCommand::Connect(_) => self.complete(cid, Status::COMMAND_SEQUENCE_ERROR, 0, 0),
            FabricsCommand::PropertyGet(p) => {
                match ctrl.property_get(p.ofst, p.size == PropertySize::EightBytes) {
                    Ok(v) => self.complete(cid, Status::SUCCESS, v as u32, (v >> 32) as u32),
                    Err(s) => self.complete(cid, s, 0, 0),
                }
            }
            FabricsCommand::PropertySet(p) => {
                match ctrl.property_set(p.ofst, p.size == PropertySize::EightBytes, p.value) {
                    Ok(reset) => {
                        if reset {
                            self.abort_aers();
                        }
                        self.complete(cid, Status::SUCCESS, 0, 0);
                    }
                    Err(s) => self.complete(cid, s, 0, 0),
                }
            }
            // Disconnect deletes an I/O queue; the admin queue goes with the association.
            FabricsCommand::Disconnect(_) => {
                self.complete(cid, Status::INVALID_QUEUE_IDENTIFIER, 0, 0)
            }
            FabricsCommand::AuthenticationSend(_) | FabricsCommand::AuthenticationReceive(_) => {
                self.complete(cid, Status::INVALID_OPCODE, 0, 0)
            }
        }
    }

    fn identify(&mut self, sqe: &Sqe, c: IdentifyCommand) {
        let cid = sqe.cid();
        let sgl_len = match Self::c2h_sgl_len(sqe) {
            Ok(l) => l as usize,
            Err(s) => return self.complete(cid, s, 0, 0),
        };
        let Some(q) = &self.queue else {
            return;
        };
        let ctrl = Arc::clone(&q.ctrl);
        let sub = Arc::clone(ctrl.subsystem());
        let discovery = ctrl.kind() == ControllerKind::Discovery;
        self.cur_nsid = c.nsid;
        let page = match c.cns {
            Cns::Controller => identify::controller(
                &ctrl,
                IdentifyLimits {
                    mdts: self.mdts,
                    in_capsule_data_size: self.port.in_capsule_data_size,
                },
            ),
            _ if discovery => return self.complete(cid, Status::INVALID_FIELD, 0, 0),
            Cns::Namespace => match sub.namespace(c.nsid) {
                Some(ns) => identify::namespace(&ns),
                None if c.nsid != 0 && c.nsid <= MAX_NSID => vec![0u8; 4096],
                None => return self.complete(cid, Status::INVALID_NAMESPACE_OR_FORMAT, 0, 0),
            },
            Cns::ActiveNamespaceList => {
                if c.nsid >= 0xFFFF_FFFE {
                    return self.complete(cid, Status::INVALID_NAMESPACE_OR_FORMAT, 0, 0);
                }
                identify::active_ns_list(&sub.active_nsids(), c.nsid)
            }
            Cns::NamespaceIdDescriptors => match sub.namespace(c.nsid) {
                Some(ns) => identify::ns_id_descriptors(&ns),
                None => return self.complete(cid, Status::INVALID_NAMESPACE_OR_FORMAT, 0, 0),
            },
            Cns::IoCommandSetController if c.csi == 0 => identify::controller_nvm(),
            Cns::IoCommandSetNamespace | Cns::CommandSetIndependentNamespace => {
                match sub.namespace(c.nsid) {
                    Some(ns) if c.cns == Cns::CommandSetIndependentNamespace => {
                        identify::namespace_independent(&ns)
                    }
                    Some(_) if c.csi == 0 => identify::namespace_nvm(),
                    Some(_) => return self.complete(cid, Status::INVALID_FIELD, 0, 0),
                    None => return self.complete(cid, Status::INVALID_NAMESPACE_OR_FORMAT, 0, 0),
                }
            }
            _ => return self.complete(cid, Status::INVALID_FIELD, 0, 0),
        };
        let n = page.len().min(sgl_len);
        self.send_data_and_complete(cid, &page[..n]);
    }

    fn get_log_page(&mut self, sqe: &Sqe, c: GetLogPageCommand) {
        let cid = sqe.cid();
        let sgl_len = match Self::c2h_sgl_len(sqe) {
            Ok(l) => l as u64,
            Err(s) => return self.complete(cid, s, 0, 0),
        };
        let Some(q) = &self.queue else {
            return;
        };
        let ctrl = Arc::clone(&q.ctrl);
        let discovery = ctrl.kind() == ControllerKind::Discovery;
        let len = c.data_len();
        if len > self.mdts as u64 || len > sgl_len || !c.lpo.is_multiple_of(4) {
            return self.complete(cid, Status::INVALID_FIELD, 0, 0);
        }
        let page = match (c.lid, discovery) {
            (lid::DISCOVERY, true) => {
                let entries = self.state.discovery_entries(
                    ctrl.hostnqn(),
                    self.port.portid,
                    self.port.local_addr,
                );
                discovery::log_page(self.state.genctr(), &entries)
            }
            (lid::ERROR, _) => ctrl.error_log(),
            (lid::SMART, false) => {
                self.fold_stats();
                ctrl.smart_log()
            }
            (lid::CHANGED_NS, false) => ctrl.changed_ns_log(),
            (lid::FW_SLOT, false) => FirmwareSlotLog::with_slot1(env!("CARGO_PKG_VERSION"))
                .as_bytes()
                .to_vec(),
            _ => return self.complete(cid, Status::INVALID_LOG_PAGE, 0, 0),
        };
        let Ok(start) = usize::try_from(c.lpo) else {
            return self.complete(cid, Status::INVALID_FIELD, 0, 0);
        };
        if start > page.len() {
            return self.complete(cid, Status::INVALID_FIELD, 0, 0);
        }
        // The host asked for `len` bytes: the page from the offset, zero-padded.
        let mut out = vec![0u8; len as usize];
        let avail = (page.len() - start).min(out.len());
        out[..avail].copy_from_slice(&page[start..start + avail]);
        ctrl.log_page_read(c.lid, c.rae);
        self.send_data_and_complete(cid, &out);
    }

    fn set_features(&mut self, cid: u16, c: SetFeaturesCommand, discovery: bool) {
        let Some(q) = &self.queue else {
            return;
        };
        let ctrl = Arc::clone(&q.ctrl);
        if c.sv {
            return self.complete(cid, Status::FEATURE_NOT_SAVEABLE, 0, 0);
        }
        let r = match c.feature {
            Feature::KeepAliveTimer { kato } => {
                ctrl.set_kato_ms(kato);
                Ok(0)
            }
            Feature::AsyncEventConfiguration(aec) => {
                ctrl.set_aec(aec.0);
                Ok(0)
            }
            _ if discovery => Err(Status::INVALID_FIELD),
            Feature::NumberOfQueues(n) => ctrl.set_number_of_queues(n.nsq, n.ncq),
            Feature::VolatileWriteCache { wce } => ctrl.set_write_cache(wce).map(|()| 0),
            Feature::Other {
                fid:
                    fid::ARBITRATION
                    | fid::POWER_MANAGEMENT
                    | fid::INTERRUPT_COALESCING
                    | fid::WRITE_ATOMICITY,
                ..
            } => Ok(0),
            Feature::Other {
                fid: fid::HOST_IDENTIFIER,
                ..
            } => Err(Status::FEATURE_NOT_CHANGEABLE),
            Feature::Other { .. } => Err(Status::INVALID_FIELD),
        };
        match r {
            Ok(dw0) => self.complete(cid, Status::SUCCESS, dw0, 0),
            Err(s) => self.complete(cid, s, 0, 0),
        }
    }

    fn get_features(&mut self, cid: u16, c: GetFeaturesCommand, discovery: bool) {
        let Some(q) = &self.queue else {
            return;
        };
        let ctrl = Arc::clone(&q.ctrl);
        if c.sel == sel::SUPPORTED_CAPABILITIES {
            // Every feature here is changeable and none is saveable or per namespace.
            return self.complete(cid, Status::SUCCESS, 0b100, 0);
        }
        // No feature is saveable, so the saved value is the default one.
        let default = c.sel == sel::DEFAULT || c.sel == sel::SAVED;
        let r = match c.fid {
            fid::KEEP_ALIVE_TIMER => Ok(if default { 0 } else { ctrl.kato_ms() }),
            fid::ASYNC_EVENT_CONFIG => Ok(if default { 0 } else { ctrl.aec() }),
            _ if discovery => Err(Status::INVALID_FIELD),
            fid::NUMBER_OF_QUEUES => Ok(ctrl.number_of_queues_dw0()),
            fid::VOLATILE_WRITE_CACHE => Ok(if default {
                ctrl.subsystem().volatile_write_cache() as u32
            } else {
                ctrl.write_cache_enabled() as u32
            }),
            fid::ARBITRATION
            | fid::POWER_MANAGEMENT
            | fid::INTERRUPT_COALESCING
            | fid::WRITE_ATOMICITY => Ok(0),
            _ => Err(Status::INVALID_FIELD),
        };
        match r {
            Ok(dw0) => self.complete(cid, Status::SUCCESS, dw0, 0),
            Err(s) => self.complete(cid, s, 0, 0),
        }
    }

    /// Abort: commands run to completion as soon as their data is there, so only held
    /// Asynchronous Event Requests on this queue can be aborted; DW0 bit 0 tells the host.
    fn abort(&mut self, cid: u16, c: AbortCommand) {
        if c.sqid == 0
            && let Some(pos) = self.aers.iter().position(|&a| a == c.cid)
        {
            self.aers.remove(pos);
            self.complete(c.cid, Status::ABORT_REQUESTED, 0, 0);
            return self.complete(cid, Status::SUCCESS, AbortCommand::DW0_ABORTED, 0);
        }
        self.complete(cid, Status::SUCCESS, AbortCommand::DW0_NOT_ABORTED, 0);
    }
}
