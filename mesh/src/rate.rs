//! Rates as people write them on command lines.

/// `2mbps` → 2 000 000; units are decimal and case-insensitive; fractions are
/// fine (`1.5mbps`). `None` for anything else, zero included.
pub fn parse_bitrate(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let (number, scale) = [("gbps", 1e9), ("mbps", 1e6), ("kbps", 1e3), ("bps", 1.0)]
        .into_iter()
        .find_map(|(unit, scale)| Some((lower.strip_suffix(unit)?, scale)))?;
    let value: f64 = number.trim().parse().ok()?;
    let bits = (value * scale).round();
    (bits.is_finite() && bits >= 1.0 && bits <= u64::MAX as f64).then_some(bits as u64)
}

/// [`parse_bitrate`] for a command-line flag: the error says what a rate
/// looks like.
pub fn rate_arg(s: &str) -> Result<u64, String> {
    parse_bitrate(s).ok_or_else(|| format!("'{s}' is not a rate like 800kbps, 4mbps or 1gbps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_bitrate("2mbps"), Some(2_000_000));
        assert_eq!(parse_bitrate("1.5Mbps"), Some(1_500_000));
        assert_eq!(parse_bitrate("500kbps"), Some(500_000));
        assert_eq!(parse_bitrate("0kbps"), None);
        assert_eq!(parse_bitrate("fast"), None);
        assert_eq!(parse_bitrate("2mb"), None);
    }
}
