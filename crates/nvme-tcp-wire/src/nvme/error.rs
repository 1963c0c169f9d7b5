//! Errors raised while parsing NVMe structures from untrusted bytes.

use super::status::Status;

/// A problem with an NVMe structure read from the wire or built by a caller.
///
/// A target answers most of these with a completion; [`NvmeError::status`] gives the status to
/// complete the command with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmeError {
    /// The buffer is shorter than the structure needs.
    #[error("truncated {structure}: need {needed} bytes, have {have}")]
    Truncated {
        /// Name of the structure (as in the spec).
        structure: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The opcode is not one this layer knows for the queue it arrived on.
    #[error("invalid opcode {opcode:#04x}")]
    InvalidOpcode {
        /// OPC as received.
        opcode: u8,
    },
    /// A Fabrics command with a command type (FCTYPE) this layer does not know.
    #[error("invalid fabrics command type {fctype:#04x}")]
    InvalidFctype {
        /// FCTYPE as received.
        fctype: u8,
    },
    /// A field has a value the spec does not allow (or this layer does not support).
    #[error("invalid {field} at byte {offset}: {reason}")]
    InvalidField {
        /// Name of the field, as in the spec.
        field: &'static str,
        /// Byte offset of the field in its structure (SQE, data buffer, descriptor).
        offset: u32,
        /// What was expected.
        reason: &'static str,
    },
    /// An SGL descriptor of a type or subtype NVMe/TCP does not use.
    #[error("unsupported SGL descriptor identifier {sgl_id:#04x}")]
    InvalidSglType {
        /// Byte 15 of the descriptor: `(type << 4) | subtype`.
        sgl_id: u8,
    },
    /// A string field is not valid (not ASCII/UTF-8, not terminated, too long).
    #[error("invalid string in {field}: {reason}")]
    InvalidString {
        /// Name of the field, as in the spec.
        field: &'static str,
        /// What was expected.
        reason: &'static str,
    },
}

impl NvmeError {
    /// The completion status a controller returns for a command that failed to parse this way.
    pub const fn status(&self) -> Status {
        match self {
            NvmeError::Truncated { .. } => Status::DATA_SGL_LENGTH_INVALID,
            NvmeError::InvalidOpcode { .. } | NvmeError::InvalidFctype { .. } => {
                Status::INVALID_OPCODE
            }
            NvmeError::InvalidField { .. } | NvmeError::InvalidString { .. } => {
                Status::INVALID_FIELD
            }
            NvmeError::InvalidSglType { .. } => Status::SGL_DESCRIPTOR_TYPE_INVALID,
        }
    }

    pub(crate) const fn truncated(structure: &'static str, needed: usize, have: usize) -> Self {
        NvmeError::Truncated {
            structure,
            needed,
            have,
        }
    }

    pub(crate) const fn invalid(field: &'static str, offset: u32, reason: &'static str) -> Self {
        NvmeError::InvalidField {
            field,
            offset,
            reason,
        }
    }
}

/// Views the first `size_of::<T>()` bytes of `bytes` as a `T`, or reports the named structure
/// (needing `needed` bytes) as truncated. The shared body of the `parse` functions of the
/// fixed-size NVMe views.
pub(crate) fn view_prefix<'a, T>(
    structure: &'static str,
    needed: usize,
    bytes: &'a [u8],
) -> Result<&'a T, NvmeError>
where
    T: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable,
{
    T::ref_from_prefix(bytes)
        .map(|(view, _)| view)
        .map_err(|_| NvmeError::truncated(structure, needed, bytes.len()))
}
