//! NVMe/TCP host (initiator).
//!
//! TODO(issue 4): crate documentation with a runnable example.

#![warn(missing_docs)]

pub mod buf;
pub mod error;
pub mod options;
pub mod queue;
pub mod tags;

pub use buf::IoBuf;
pub use error::{HostError, IoError, NvmeStatus, ProtocolError};
pub use options::{CidMode, ConnectOptions};
pub use queue::{Completion, CqeInfo, DataDir, QueueCore, Request};
