//! The tracker's IP → AS table (`shoal-tracker --asn-table FILE`).
//!
//! A text table, one `prefix/len,asn` per line, IPv4 and IPv6 mixed:
//!
//! ```text
//! # comments and blank lines are allowed
//! 203.0.113.0/24,64500
//! 2001:db8::/32, AS64501
//! ```
//!
//! An address's AS is that of the longest prefix holding it (0, "unknown",
//! when none does). The AS may be written with an `AS` prefix; it must not
//! be 0. A prefix must have no bits set past its length, and a prefix listed
//! twice must name the same AS both times. A first line `prefix,asn` (after
//! any comments) is taken as a header. Any other line that does not parse is an error naming the
//! line, so a typo is caught when the tracker starts rather than served.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;

/// Longest-prefix match from addresses to AS numbers.
///
/// Kept as one hash map per address family, keyed by (prefix length,
/// network), and the prefix lengths present, longest first: a lookup tries
/// at most one map probe per length present (≤ 33 for IPv4, ≤ 129 for IPv6).
#[derive(Clone, Default)]
pub struct AsnTable {
    v4: Family,
    v6: Family,
}

#[derive(Clone, Default)]
struct Family {
    /// (prefix length, network address) → AS.
    map: HashMap<(u8, u128), u32>,
    /// The prefix lengths present, longest first.
    lens: Vec<u8>,
}

impl Family {
    fn insert(&mut self, len: u8, net: u128, asn: u32) -> Option<u32> {
        if let Err(at) = self.lens.binary_search_by(|l| len.cmp(l)) {
            self.lens.insert(at, len);
        }
        self.map.insert((len, net), asn)
    }

    /// `ip` as a `width`-bit number, most significant bits first.
    fn lookup(&self, ip: u128, width: u8) -> Option<u32> {
        self.lens.iter().find_map(|&len| {
            // `ip` < 2^width, so the mask needs no upper bound.
            let mask = match len {
                0 => 0,
                _ => u128::MAX << (width - len),
            };
            self.map.get(&(len, ip & mask)).copied()
        })
    }
}

impl fmt::Debug for AsnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnTable")
            .field("v4_prefixes", &self.v4.map.len())
            .field("v6_prefixes", &self.v6.map.len())
            .finish()
    }
}

/// Why an AS table was refused.
#[derive(Debug, thiserror::Error)]
pub enum AsnTableError {
    #[error("cannot read the AS table {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file` is the path, or a name such as `<text>` for [`AsnTable::parse`].
    #[error("{file}:{line}: {why}")]
    Line {
        file: String,
        line: usize,
        why: String,
    },
}

impl AsnTable {
    /// An empty table: every address in AS 0 (unknown).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a table file.
    pub fn load(path: &Path) -> Result<Self, AsnTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| AsnTableError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a table's text; `name` stands for the file in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, AsnTableError> {
        let mut table = AsnTable::new();
        let mut first = true;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: String| AsnTableError::Line {
                file: name.to_owned(),
                line: i + 1,
                why,
            };
            let Some((prefix, asn)) = line.split_once(',') else {
                return Err(bad(format!("expected 'prefix/len,asn', got '{line}'")));
            };
            let (prefix, asn) = (prefix.trim(), asn.trim());
            if std::mem::take(&mut first) && prefix.eq_ignore_ascii_case("prefix") {
                continue; // a header
            }
            let net: IpNet = prefix.parse().map_err(|_| {
                bad(format!(
                    "'{prefix}' is not a prefix like 203.0.113.0/24 or 2001:db8::/32"
                ))
            })?;
            if net.trunc() != net {
                return Err(bad(format!(
                    "'{prefix}' has bits set past /{} (did you mean {}?)",
                    net.prefix_len(),
                    net.trunc()
                )));
            }
            let digits = asn
                .strip_prefix("AS")
                .or_else(|| asn.strip_prefix("as"))
                .unwrap_or(asn);
            let asn: u32 = match digits.parse() {
                Ok(0) => return Err(bad("AS 0 is reserved (it means unknown here)".into())),
                Ok(n) => n,
                Err(_) => return Err(bad(format!("'{asn}' is not an AS number"))),
            };
            let old = match net {
                IpNet::V4(n) => {
                    let net = u128::from(u32::from(n.network()));
                    table.v4.insert(n.prefix_len(), net, asn)
                }
                IpNet::V6(n) => table
                    .v6
                    .insert(n.prefix_len(), u128::from(n.network()), asn),
            };
            if let Some(old) = old.filter(|&old| old != asn) {
                return Err(bad(format!("{net} is listed twice: AS {old} and AS {asn}")));
            }
        }
        Ok(table)
    }

    /// The AS of `ip` (IPv4-mapped IPv6 addresses count as IPv4), or 0
    /// when no prefix holds it.
    pub fn lookup(&self, ip: IpAddr) -> u32 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.lookup(u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => self.v6.lookup(u128::from(v6), 128),
        }
        .unwrap_or(0)
    }

    /// Prefixes held, both families.
    pub fn len(&self) -> usize {
        self.v4.map.len() + self.v6.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn line_of(e: AsnTableError) -> (usize, String) {
        match e {
            AsnTableError::Line { line, why, .. } => (line, why),
            other => panic!("expected a line error, got {other}"),
        }
    }

    #[test]
    fn good_table_with_comments_v4_and_v6() {
        let text = "prefix,asn\n\
                    # a comment\n\
                    \n\
                    203.0.113.0/24,64500\n\
                    198.51.100.0/22 , AS64502  # trailing comment\n\
                    2001:db8::/32,64501\n\
                    0.0.0.0/0,1\n";
        let t = AsnTable::parse(text, "t").unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup(ip("203.0.113.77")), 64500);
        assert_eq!(t.lookup(ip("198.51.103.255")), 64502);
        assert_eq!(t.lookup(ip("198.51.104.0")), 1, "the default route");
        assert_eq!(t.lookup(ip("2001:db8:ffff::1")), 64501);
        assert_eq!(t.lookup(ip("2001:db9::1")), 0, "no v6 default");
        assert_eq!(t.lookup(ip("::ffff:203.0.113.1")), 64500, "v4-mapped");
        assert_eq!(AsnTable::new().lookup(ip("203.0.113.1")), 0);
    }

    #[test]
    fn longest_prefix_wins() {
        let text = "10.0.0.0/8,100\n10.1.0.0/16,200\n10.1.2.0/24,300\n10.1.2.128/25,400\n\
                    2001:db8::/32,500\n2001:db8:1::/48,600\n";
        let t = AsnTable::parse(text, "t").unwrap();
        assert_eq!(t.lookup(ip("10.9.9.9")), 100);
        assert_eq!(t.lookup(ip("10.1.9.9")), 200);
        assert_eq!(t.lookup(ip("10.1.2.3")), 300);
        assert_eq!(t.lookup(ip("10.1.2.200")), 400);
        assert_eq!(t.lookup(ip("11.0.0.1")), 0);
        assert_eq!(t.lookup(ip("2001:db8:1::5")), 600);
        assert_eq!(t.lookup(ip("2001:db8:2::5")), 500);
        let host = AsnTable::parse("192.0.2.7/32,7\n::1/128,8\n", "t").unwrap();
        assert_eq!(host.lookup(ip("192.0.2.7")), 7);
        assert_eq!(host.lookup(ip("192.0.2.8")), 0);
        assert_eq!(host.lookup(ip("::1")), 8);
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, line, says) in [
            ("10.0.0.0/8,1\n\n10.0.0.0/8\n", 3, "expected"),
            ("# c\n10.0.0.300/8,1\n", 2, "not a prefix"),
            ("10.0.0.0,1\n", 1, "not a prefix"),
            ("10.0.0.1/8,1\n", 1, "did you mean 10.0.0.0/8"),
            ("2001:db8::/32,x\n", 1, "not an AS number"),
            ("10.0.0.0/8,0\n", 1, "reserved"),
            ("10.0.0.0/8,4294967296\n", 1, "not an AS number"),
            ("10.0.0.0/8,1\n10.0.0.0/8,2\n", 2, "listed twice"),
        ] {
            let (got, why) = line_of(AsnTable::parse(text, "t.csv").unwrap_err());
            assert_eq!(got, line, "{text:?}: {why}");
            assert!(why.contains(says), "{text:?}: {why}");
        }
        // The same mapping twice is harmless.
        assert!(AsnTable::parse("10.0.0.0/8,1\n10.0.0.0/8,AS1\n", "t").is_ok());
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("shoal-asn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("asn.csv");
        std::fs::write(&path, "203.0.113.0/24,64500\nnonsense\n").unwrap();
        let msg = AsnTable::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:2: ", path.display())), "{msg}");
        std::fs::write(&path, "203.0.113.0/24,64500\n").unwrap();
        assert_eq!(AsnTable::load(&path).unwrap().len(), 1);
        let missing = AsnTable::load(&dir.join("missing.csv")).unwrap_err();
        assert!(matches!(missing, AsnTableError::Read { .. }), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
