//! Sizes as people write them (`500M`, `1.5GiB`, `2G`, `100000`): the one
//! reader behind every size and rate option.

/// `text` as a number of bytes: a decimal number, optionally followed by K,
/// M, G or T (powers of 1024, with or without `i` and `B`); `None` for
/// anything else, a negative number or one beyond `u64`.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches('B').trim_end_matches('i');
    let (number, scale) = match text.char_indices().last()? {
        (at, c) if c.is_ascii_alphabetic() => {
            let power = "KMGT".find(c.to_ascii_uppercase())? as i32 + 1;
            (&text[..at], 1024f64.powi(power))
        }
        _ => (text, 1.0),
    };
    let bytes = number.trim().parse::<f64>().ok()? * scale;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(parse_bytes("100000"), Some(100_000));
        assert_eq!(parse_bytes("20M"), Some(20 << 20));
        assert_eq!(parse_bytes("512KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("8MB"), Some(8 << 20));
        assert_eq!(parse_bytes("2t"), Some(2 << 40));
        for wrong in ["", "-5M", "10X", "fast", "NaN", "inf", "99999999999T"] {
            assert_eq!(parse_bytes(wrong), None, "{wrong:?} accepted");
        }
    }
}
