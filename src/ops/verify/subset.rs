//! `verify --read-data-subset`: a share of the referenced objects read and
//! re-hashed as `--deep` does, the rest checked by listing only — so a daily
//! check of a large repository costs a bounded share of its requests and
//! egress (restic's `--read-data-subset`, kopia's `--verify-files-percent`).
//! Objects are the unit: a pack is read whole or not at all.

use sha2::Digest;

/// Which share of the content to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataSubset {
    /// Each object with this probability (above 0, at most 1), at random:
    /// `10%` reads about a tenth of the bytes, a different tenth each run.
    Fraction(f64),
    /// Group `n` of `m` (1-based) by a hash of the object's name: runs of
    /// `1/7` … `7/7` read every object exactly once between them.
    Group {
        /// Which group.
        n: u64,
        /// How many groups.
        m: u64,
    },
    /// About this many bytes, objects chosen at random.
    Bytes(u64),
}

impl DataSubset {
    /// Parses `N%`, `N/M` or a size (`500M`, `2G`; suffixes are powers of
    /// 1024); `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--read-data-subset {text:?}: {why}");
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Self::Fraction(p / 100.0)),
                _ => Err(bad("give a percentage above 0 and at most 100, e.g. 10%")),
            };
        }
        if let Some((n, m)) = text.split_once('/') {
            return match (n.trim().parse::<u64>(), m.trim().parse::<u64>()) {
                (Ok(n), Ok(m)) if n >= 1 && n <= m => Ok(Self::Group { n, m }),
                _ => Err(bad("give a group n/m with 1 <= n <= m, e.g. 1/7")),
            };
        }
        crate::common::units::parse_bytes(text)
            .filter(|&bytes| bytes > 0)
            .map(Self::Bytes)
            .ok_or_else(|| bad("give N%, n/m or a size such as 500M or 2G"))
    }

    /// Picks objects for a repository of `total` referenced bytes.
    pub(super) fn chooser(self, total: u64) -> Chooser {
        let fraction = match self {
            Self::Fraction(p) => p,
            Self::Bytes(bytes) => (bytes as f64 / total.max(1) as f64).min(1.0),
            Self::Group { n, m } => return Chooser::Group { n, m },
        };
        Chooser::Random(fraction)
    }
}

/// Whether each object is read.
pub(super) enum Chooser {
    Random(f64),
    Group { n: u64, m: u64 },
}

impl Chooser {
    pub fn reads(&self, key: &str) -> bool {
        match *self {
            Chooser::Random(p) => rand::random::<f64>() < p,
            Chooser::Group { n, m } => {
                let hash = sha2::Sha256::digest(key.as_bytes());
                let number = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
                number % m == n - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse_and_groups_partition() {
        assert_eq!(DataSubset::parse("10%"), Ok(DataSubset::Fraction(0.1)));
        assert_eq!(
            DataSubset::parse("2/7"),
            Ok(DataSubset::Group { n: 2, m: 7 })
        );
        assert_eq!(DataSubset::parse("2G"), Ok(DataSubset::Bytes(2 << 30)));
        assert_eq!(
            DataSubset::parse("500MiB"),
            Ok(DataSubset::Bytes(500 << 20))
        );
        for bad in ["0%", "101%", "0/3", "4/3", "x", "", "10Q"] {
            assert!(DataSubset::parse(bad).is_err(), "{bad}");
        }
        let keys: Vec<String> = (0..1000).map(|i| format!("content/{i:04}")).collect();
        let groups: Vec<Chooser> = (1..=4)
            .map(|n| DataSubset::Group { n, m: 4 }.chooser(0))
            .collect();
        for key in &keys {
            let chosen = groups.iter().filter(|g| g.reads(key)).count();
            assert_eq!(chosen, 1, "{key} in exactly one group");
        }
        let first = keys.iter().filter(|k| groups[0].reads(k)).count();
        assert!((150..350).contains(&first), "{first} of 1000 in group 1/4");
    }
}
