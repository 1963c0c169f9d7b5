//! Errors of the device operations.

use crate::caps::{Cap, CapSet};
use crate::device::SockId;
use crate::io::DdpIo;
use crate::limits::UlpDdpType;
use thiserror::Error;

/// Why a device operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DdpError {
    /// The device has no offload for this upper-layer protocol.
    #[error("the device does not offload the {0:?} protocol")]
    UnsupportedProtocol(UlpDdpType),
    /// A capability the operation needs is switched off.
    #[error("capability {0} is not active on the device")]
    CapInactive(Cap),
    /// Requested capabilities the device does not have.
    #[error("capabilities {0} are not supported by the device")]
    UnsupportedCaps(CapSet),
    /// `sk_add` for a socket that already has an offload context.
    #[error("socket {0} is already offloaded")]
    SocketExists(SockId),
    /// The socket has no offload context.
    #[error("socket {0} is not offloaded")]
    UnknownSocket(SockId),
    /// The device has no free socket context.
    #[error("the device has no free socket context (at most {max})")]
    TooManySockets {
        /// Contexts the device has.
        max: usize,
    },
    /// The socket configuration is not supported.
    #[error("unsupported socket configuration: {0}")]
    InvalidConfig(&'static str),
    /// The buffer has no byte.
    #[error("the buffer of command ID {0} is empty")]
    EmptySgl(u32),
    /// The scatter-gather list has more entries than `max_ddp_sgl_len`.
    #[error("the scatter-gather list has {nents} entries, the device takes at most {max}")]
    SglTooLong {
        /// Entries in the list.
        nents: usize,
        /// `max_ddp_sgl_len`.
        max: u32,
    },
    /// The I/O is smaller than `io_threshold`.
    #[error("an I/O of {len} bytes is below the offload threshold of {threshold} bytes")]
    BelowIoThreshold {
        /// Bytes in the I/O.
        len: u64,
        /// `io_threshold`.
        threshold: u32,
    },
    /// The device needs linear command IDs (`full_ccid_range` is false) and this one is
    /// outside `0..queue_size`.
    #[error("command ID {cid} is outside the linear range 0..{queue_size}")]
    CidOutOfRange {
        /// The command ID.
        cid: u32,
        /// The queue size given to `sk_add`.
        queue_size: u32,
    },
    /// The command ID already has buffers, or its teardown was not handed back yet.
    #[error("command ID {0} already has buffers, or its teardown is still pending")]
    CidBusy(u32),
    /// The command ID is outside what the protocol carries (NVMe/TCP: 16 bits).
    #[error("command ID {0} does not fit the protocol's command identifier")]
    CidTooWide(u32),
    /// The command ID has no buffers.
    #[error("command ID {0} has no buffers")]
    UnknownCommand(u32),
    /// A write does not fit the I/O's buffers.
    #[error(
        "{len} bytes at offset {offset} do not fit the {size}-byte buffers of command ID {cid}"
    )]
    OutOfBounds {
        /// The command ID.
        cid: u32,
        /// Data offset of the write.
        offset: u64,
        /// Bytes to write.
        len: usize,
        /// Size of the buffers.
        size: u64,
    },
}

/// A failed `setup`: the reason, and the I/O handed back to its owner.
#[derive(Debug, Error)]
#[error("DDP setup of command ID {} failed: {error}", io.command_id)]
pub struct SetupError {
    /// Why the setup failed (in the message, so not also the source: a printed chain names
    /// it once).
    pub error: DdpError,
    /// The I/O, unchanged.
    pub io: DdpIo,
}
