//! TCP sequence-number arithmetic (RFC 9293 §3.4: modulo 2^32).

/// `a - b` as a signed distance; positive if `a` is after `b`.
#[inline]
pub(crate) fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// True if `a` is strictly before `b`.
#[inline]
pub(crate) fn before(a: u32, b: u32) -> bool {
    diff(a, b) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_wraps() {
        assert!(before(u32::MAX - 3, 2));
        assert!(!before(2, u32::MAX - 3));
        assert_eq!(diff(2, u32::MAX - 3), 6);
        assert!(!before(7, 7));
    }
}
