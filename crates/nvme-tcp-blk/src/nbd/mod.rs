//! An NBD server that exports namespaces through the [`BlockEngine`](crate::BlockEngine).
//!
//! * [`proto`]: the wire format (magics, option/reply codes, request header, replies).
//! * [`handshake`]: the fixed newstyle negotiation as a sans-IO state machine.
//! * [`server`]: the socket driver — a thread per client connection that reads requests and
//!   submits them to the engine, and a writer thread that sends the replies in completion
//!   order, a batch per vectored write.
//! * [`socket`]: TCP or Unix domain sockets (`nbd+unix://`, for local clients).
//!
//! What an export offers: `READ`, `WRITE` (with `FUA`), `FLUSH`, `TRIM` (NVMe Dataset
//! Management / Deallocate) and `WRITE_ZEROES` (with `FUA`) where the namespace supports
//! them, structured replies when negotiated, `NBD_FLAG_CAN_MULTI_CONN` (all connections reach
//! the same namespace, and an NVMe Flush covers every completed write), block size
//! constraints (minimum = logical block, preferred = physical block, maximum = the payload
//! limit). Not offered: TLS, metadata contexts / `BLOCK_STATUS`, `CACHE`, `RESIZE`,
//! extended headers.

pub mod handshake;
pub mod proto;
pub mod server;
pub mod socket;

pub use handshake::{ExportInfo, Handshake, HandshakeError, Outcome};
pub use server::{Export, NbdServer, ServerConfig};
pub use socket::{NbdAddr, NbdListener};
