//! NVMe/TCP PDUs.
//!
//! Every PDU starts with the 8-byte common header ([`CommonHeader`]), followed by the
//! PDU-specific header (PSH), an optional header digest, padding up to PDO, data and an
//! optional data digest:
//!
//! ```text
//! CH(8) | PSH | [HDGST 4] | [PAD] | [DATA] | [DDGST 4]
//! ```
//!
//! Views (`*Pdu<T: AsRef<[u8]>>`) read and write fields in place; representations (`*Repr`)
//! are owned values with `parse` and `emit`.

mod common;
mod data;

pub use common::{CH_LEN, CommonHeader, CommonHeaderRepr, PduFlags, PduType, data_pdo};
pub use data::{DATA_PDU_HLEN, DataPdu, DataPduRepr};

/// Largest HPDA/CPDA value (0's based dwords): PDO alignment of at most 128 bytes.
pub const MAX_PDA: u8 = 31;

/// Length of the header digest and the data digest.
pub const DIGEST_LEN: usize = crate::digest::DIGEST_LEN;
