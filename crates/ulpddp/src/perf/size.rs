//! Byte sizes as users type them: `4096`, `4k`, `128KiB`, `1G`, `2MB` (binary multiples).

/// Parses a size as the target's namespace specs do (`4096`, `4k`, `128KiB`, `1G`: powers of
/// 1024), with the error as text.
pub fn parse_size(s: &str) -> Result<u64, String> {
    nvme_tcp_target::namespace::parse_size(s).map_err(|e| e.to_string())
}

/// Formats a byte count with a binary suffix (`128KiB`).
pub fn format_size(n: u64) -> String {
    for (shift, suffix) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{}", n >> shift, suffix);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("128KiB").unwrap(), 131072);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("2MB").unwrap(), 2 << 20);
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        assert!(parse_size("").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("12x").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999t").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(n in 0u64..(1 << 50)) {
            prop_assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }
    }
}
