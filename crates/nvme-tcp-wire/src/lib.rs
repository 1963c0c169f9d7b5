//! The NVMe/TCP wire layer.
//!
//! * [`pdu`]: the nine PDU types as zero-copy views over byte buffers (`*Pdu<T: AsRef<[u8]>>`)
//!   with checked constructors, and owned representations (`*Repr`) that parse and emit.
//! * [`digest`]: CRC32C header and data digests.
//! * [`validate`]: receive-side header validation in spec order, whole or as the header's
//!   bytes arrive, returning allocation-free errors that know the Termination Request FES/FEI
//!   to send. Every reader of a PDU stream in the workspace frames with it.
//! * [`framer`]: a generic streaming framer over arbitrarily chunked bytes (events: header,
//!   data ranges, data digest, end), built on [`validate`]; the trace replay reads captured
//!   streams with it.
//! * [`nvme`]: NVMe structures (SQE, CQE, SGL, Fabrics, Identify, log pages, features).
//!
//! No I/O happens here and nothing on the parse path allocates.
//!
//! ```
//! use nvme_tcp_wire::digest::crc32c;
//! assert_eq!(crc32c(b"123456789"), 0xE306_9283);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod digest;
pub mod error;
pub mod framer;
pub mod pdu;

pub use error::{Fes, Reason, WireError};
pub mod nvme;
pub mod validate;
