//! NVMe structures a fabrics host and target exchange inside NVMe/TCP capsules and data PDUs.
//!
//! * [`Sqe`] (64 B) and [`Cqe`] (16 B): zero-copy little-endian submission and completion queue
//!   entries with per-field accessors; [`SglDescriptor`] for the SQE's DPTR.
//! * [`Status`]: a typed status (SCT + SC) with named constants; [`StatusField`] is the CQE's
//!   16-bit status field with CRD/M/DNR.
//! * [`AdminOpcode`], [`IoOpcode`], [`FabricsType`]: command opcodes.
//! * [`fabrics`]: Connect (command and its 1024-byte [`ConnectData`]), Property Get/Set,
//!   Disconnect.
//! * [`auth`]: Authentication Send/Receive and the DH-HMAC-CHAP messages they carry.
//! * [`regs`]: the controller properties CAP, VS, CC, CSTS.
//! * [`identify`]: Identify Controller / Namespace, NSID lists, namespace identification
//!   descriptors.
//! * [`log`]: Get Log Page, Error Information, SMART / Health, Changed Namespace List (an
//!   [`NsidList`]), the discovery log page.
//! * [`features`]: Get/Set Features (Number of Queues, Keep Alive Timer, Async Event
//!   Configuration) and the Asynchronous Event Request completion.
//! * [`AdminCommand`] and [`IoCommand`]: typed commands that parse from and build into an
//!   [`Sqe`] (Identify, Get Log Page, features, Abort, AER, Keep Alive, Read, Write, Flush,
//!   Write Zeroes, Dataset Management, Fabrics).
//!
//! Everything here parses untrusted bytes without panicking: views are length-checked through
//! `zerocopy`, and string fields (space-padded ASCII, NUL-padded NQNs) go through the checked
//! helpers of [`text`].
//!
//! ```
//! use nvme_tcp_wire::nvme::{Cqe, Sqe, Status, AdminOpcode, SglDescriptor};
//! use zerocopy::{FromBytes, IntoBytes};
//!
//! let mut sqe = Sqe::new(AdminOpcode::KeepAlive as u8);
//! sqe.set_cid(7);
//! sqe.set_dptr(SglDescriptor::transport_data_block(0));
//! let bytes = sqe.as_bytes();
//! let parsed = Sqe::ref_from_bytes(bytes).unwrap();
//! assert_eq!(parsed.cid(), 7);
//!
//! let cqe = Cqe::new(7, 0, 1, Status::INVALID_FIELD.into());
//! assert_eq!(cqe.status(), Status::INVALID_FIELD);
//! assert!(!cqe.status_field().dnr);
//! ```
//!
//! A host builds a command in one expression; a target dispatches it with one `match`, and a
//! parse error already knows the status to complete with:
//!
//! ```
//! use nvme_tcp_wire::nvme::{AdminCommand, IdentifyCommand, Cns, SglDescriptor, Status};
//!
//! let cmd = AdminCommand::Identify(IdentifyCommand::controller());
//! let sqe = cmd
//!     .to_sqe()
//!     .with_cid(1)
//!     .with_dptr(SglDescriptor::transport_data_block(cmd.data_len() as u32));
//!
//! let status = match AdminCommand::parse(&sqe) {
//!     Ok(AdminCommand::Identify(IdentifyCommand { cns: Cns::Controller, .. })) => Status::SUCCESS,
//!     Ok(_) => Status::INVALID_OPCODE,
//!     Err(e) => e.status(),
//! };
//! assert!(status.is_success());
//! ```

mod admin;
pub mod auth;
mod error;
pub mod fabrics;
pub mod features;
pub mod identify;
mod io;
pub mod log;
mod opcode;
mod queue;
pub mod regs;
mod status;
pub mod text;

pub use admin::{AbortCommand, AdminCommand, Cns, IdentifyCommand};
pub use auth::{AuthMessage, AuthReceiveCommand, AuthSendCommand, DhGroupId, HashId};
pub use error::NvmeError;
pub use fabrics::{
    ConnectCommand, ConnectData, ConnectResponse, DisconnectCommand, FabricsCommand,
    PropertyGetCommand, PropertySetCommand, PropertySize,
};
pub use features::{
    AsyncEvent, AsyncEventConfig, Feature, FeatureId, GetFeaturesCommand, NumberOfQueues,
    SetFeaturesCommand,
};
pub use identify::{
    IdentifyController, IdentifyControllerNvm, IdentifyNamespace, IdentifyNamespaceIndependent,
    LbaFormat, Nidt, NsIdDescriptor, NsIdDescriptors, NsidList, PowerStateDescriptor,
};
pub use io::{
    DatasetManagementCommand, DsmRange, FlushCommand, IoCommand, ReadWriteCommand,
    WriteZeroesCommand,
};
pub use log::{
    ChangedNamespaceList, DiscoveryLogEntry, DiscoveryLogHeader, DiscoveryLogPage, ErrorLogEntry,
    GetLogPageCommand, LogPageId, SmartLog,
};
pub use opcode::{AdminOpcode, FabricsType, IoOpcode};
pub use queue::{CQE_LEN, Cqe, Psdt, SGL_DESCRIPTOR_LEN, SQE_LEN, Sgl, SglDescriptor, Sqe};
pub use regs::{Cap, Cc, Csts, Property, Vs};
pub use status::{Status, StatusCodeType, StatusField};

/// Result with an [`NvmeError`].
pub type Result<T> = std::result::Result<T, NvmeError>;
