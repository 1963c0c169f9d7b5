//! Checked helpers for the two kinds of string fields in NVMe structures.
//!
//! * ASCII fields (SN, MN, FR, TRSVCID...): printable ASCII, left justified, padded with spaces
//!   (0x20) to the field length.
//! * NQN fields (SUBNQN, HOSTNQN): UTF-8, NUL-terminated and NUL-padded in a 256-byte field; the
//!   NQN itself is at most [`NQN_MAX_LEN`] bytes.
//!
//! Readers never panic and never allocate; writers refuse values that do not fit.

use super::error::NvmeError;

/// Maximum length of an NQN in bytes, without the terminating NUL (NVMe Base 2.0, "NVM Qualified
/// Names").
pub const NQN_MAX_LEN: usize = 223;

/// Length of an NQN field in Connect data, Identify Controller and discovery log entries.
pub const NQN_FIELD_LEN: usize = 256;

/// The well-known NQN of a discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Reads a space-padded ASCII field: trailing spaces (and, leniently, trailing NULs, which some
/// devices write) are dropped. Fails on a byte outside printable ASCII (0x20..=0x7E).
pub fn ascii_field<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a str, NvmeError> {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    let s = &bytes[..end];
    if !s.iter().all(|b| (0x20..=0x7E).contains(b)) {
        return Err(NvmeError::InvalidString {
            field,
            reason: "not printable ASCII",
        });
    }
    // Printable ASCII is valid UTF-8.
    std::str::from_utf8(s).map_err(|_| NvmeError::InvalidString {
        field,
        reason: "not printable ASCII",
    })
}

/// Writes `value` into a space-padded ASCII field. Fails if `value` is longer than the field or
/// holds a byte outside printable ASCII.
pub fn set_ascii_field(field: &'static str, dst: &mut [u8], value: &str) -> Result<(), NvmeError> {
    set_padded_ascii(field, dst, value, b' ')
}

/// Writes `value` into a NUL-padded ASCII field (how Linux and SPDK targets fill TRSVCID and
/// TRADDR of discovery log entries); [`ascii_field`] reads both paddings. Fails if `value` does
/// not leave room for at least one NUL or holds a byte outside printable ASCII.
pub fn set_ascii_field_nul_padded(
    field: &'static str,
    dst: &mut [u8],
    value: &str,
) -> Result<(), NvmeError> {
    set_padded_ascii(field, dst, value, 0)
}

/// Copies printable-ASCII `value` into `dst` and fills the rest with `pad`. A NUL-padded field
/// must keep at least one NUL, so `value` may then be at most `dst.len() - 1` bytes.
fn set_padded_ascii(
    field: &'static str,
    dst: &mut [u8],
    value: &str,
    pad: u8,
) -> Result<(), NvmeError> {
    let v = value.as_bytes();
    let room = if pad == 0 {
        dst.len().checked_sub(1)
    } else {
        Some(dst.len())
    };
    if room.is_none_or(|room| v.len() > room) {
        return Err(NvmeError::InvalidString {
            field,
            reason: "longer than the field",
        });
    }
    if !v.iter().all(|b| (0x20..=0x7E).contains(b)) {
        return Err(NvmeError::InvalidString {
            field,
            reason: "not printable ASCII",
        });
    }
    dst[..v.len()].copy_from_slice(v);
    dst[v.len()..].fill(pad);
    Ok(())
}

/// Reads a NUL-terminated NQN field. Fails if there is no NUL inside the field, if the NQN is
/// longer than [`NQN_MAX_LEN`], or if it is not UTF-8. An all-zero field reads as `""`.
pub fn nqn_field<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a str, NvmeError> {
    let len = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(NvmeError::InvalidString {
            field,
            reason: "no NUL terminator",
        })?;
    if len > NQN_MAX_LEN {
        return Err(NvmeError::InvalidString {
            field,
            reason: "NQN longer than 223 bytes",
        });
    }
    std::str::from_utf8(&bytes[..len]).map_err(|_| NvmeError::InvalidString {
        field,
        reason: "NQN is not UTF-8",
    })
}

/// Writes `nqn` into a NUL-padded NQN field. Fails if it is longer than [`NQN_MAX_LEN`] (or than
/// the field minus its terminator) or contains a NUL.
pub fn set_nqn_field(field: &'static str, dst: &mut [u8], nqn: &str) -> Result<(), NvmeError> {
    let v = nqn.as_bytes();
    if v.len() > NQN_MAX_LEN || v.len() >= dst.len() {
        return Err(NvmeError::InvalidString {
            field,
            reason: "NQN longer than 223 bytes",
        });
    }
    if v.contains(&0) {
        return Err(NvmeError::InvalidString {
            field,
            reason: "NQN contains a NUL",
        });
    }
    dst[..v.len()].copy_from_slice(v);
    dst[v.len()..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_field_trims_spaces_and_rejects_control_bytes() {
        assert_eq!(ascii_field("SN", b"abc   "), Ok("abc"));
        assert_eq!(ascii_field("SN", b"      "), Ok(""));
        assert!(ascii_field("SN", b"a\x01c ").is_err());
        assert!(ascii_field("SN", b"\xffbc ").is_err());
    }

    #[test]
    fn set_ascii_field_pads_and_refuses_overflow() {
        let mut b = [0u8; 8];
        set_ascii_field("MN", &mut b, "ab").unwrap();
        assert_eq!(&b, b"ab      ");
        assert!(set_ascii_field("MN", &mut b, "123456789").is_err());
        assert!(set_ascii_field("MN", &mut b, "é").is_err());
    }

    #[test]
    fn nqn_field_needs_terminator_and_bounded_length() {
        let mut f = [0u8; NQN_FIELD_LEN];
        set_nqn_field("SUBNQN", &mut f, DISCOVERY_NQN).unwrap();
        assert_eq!(nqn_field("SUBNQN", &f), Ok(DISCOVERY_NQN));
        assert!(nqn_field("SUBNQN", &[b'a'; NQN_FIELD_LEN]).is_err());
        let mut long = [b'a'; NQN_FIELD_LEN];
        long[224] = 0;
        assert!(nqn_field("SUBNQN", &long).is_err());
        assert!(set_nqn_field("SUBNQN", &mut f, &"a".repeat(224)).is_err());
        assert!(set_nqn_field("SUBNQN", &mut f, "a\0b").is_err());
    }
}
