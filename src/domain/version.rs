//! macOS version numbers (10.15.7 < 11.0 < 14.2.1) and Apple build numbers (20G1427 < 23C71).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::quote;

/// A dotted numeric version of at most [`OsVersion::MAX_PARTS`] components, compared component
/// by component; missing components count as 0. Held inline (every Mac has one: a million of
/// them on the heap cost 40 MB).
#[derive(Debug, Clone, Copy, Eq)]
pub struct OsVersion {
    parts: [u32; OsVersion::MAX_PARTS],
    /// How many of `parts` were written (so 14.2 is shown as written, not as 14.2.0.0).
    len: u8,
}

impl OsVersion {
    pub const MAX_PARTS: usize = 4;

    /// # Panics
    /// With more than [`OsVersion::MAX_PARTS`] parts (a literal in code; input is parsed).
    pub fn new(parts: &[u32]) -> Self {
        assert!(parts.len() <= Self::MAX_PARTS, "a version has at most {} parts", Self::MAX_PARTS);
        let mut v = OsVersion { parts: [0; Self::MAX_PARTS], len: parts.len() as u8 };
        v.parts[..parts.len()].copy_from_slice(parts);
        v
    }
    fn written(&self) -> &[u32] {
        &self.parts[..usize::from(self.len)]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a version: use numbers separated by dots, such as 14.2.1")]
pub struct BadVersion(pub String);

impl FromStr for OsVersion {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Self, BadVersion> {
        let bad = || BadVersion(quote(s));
        if s.is_empty() || s.len() > 32 {
            return Err(bad());
        }
        let mut v = OsVersion { parts: [0; Self::MAX_PARTS], len: 0 };
        for p in s.split('.') {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || usize::from(v.len) == Self::MAX_PARTS {
                return Err(bad());
            }
            v.parts[usize::from(v.len)] = p.parse::<u32>().map_err(|_| bad())?;
            v.len += 1;
        }
        Ok(v)
    }
}

impl Ord for OsVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        // Unwritten parts are 0, so the arrays compare as the versions do.
        self.parts.cmp(&other.parts)
    }
}
impl PartialOrd for OsVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for OsVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl fmt::Display for OsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.written().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// An Apple build number: major number, train letter, build number, optional suffix letter
/// (23C71, 22G120, 21A5522h). Compared as that tuple.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OsBuild {
    major: u32,
    train: u8,
    number: u32,
    suffix: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an Apple build number: use the form 23C71 (number, letter, number, optional letter)")]
pub struct BadBuild(pub String);

impl FromStr for OsBuild {
    type Err = BadBuild;
    fn from_str(s: &str) -> Result<Self, BadBuild> {
        let bad = || BadBuild(quote(s));
        let b = s.as_bytes();
        if b.len() > 16 {
            return Err(bad());
        }
        let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let n1 = digits(0);
        if n1 == 0 || n1 > 3 || b.len() <= n1 || !b[n1].is_ascii_alphabetic() {
            return Err(bad());
        }
        let major = s[..n1].parse().map_err(|_| bad())?;
        let train = b[n1].to_ascii_uppercase();
        let n2 = digits(n1 + 1);
        if n2 == 0 || n2 > 6 {
            return Err(bad());
        }
        let number = s[n1 + 1..n1 + 1 + n2].parse().map_err(|_| bad())?;
        let rest = &b[n1 + 1 + n2..];
        let suffix = match rest {
            [] => None,
            [c] if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
            _ => return Err(bad()),
        };
        Ok(OsBuild { major, train, number, suffix })
    }
}

impl fmt::Display for OsBuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.major, self.train as char, self.number)?;
        if let Some(s) = self.suffix {
            write!(f, "{}", s as char)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> OsVersion {
        s.parse().expect("valid version")
    }
    fn b(s: &str) -> OsBuild {
        s.parse().expect("valid build")
    }

    #[test]
    fn versions_compare_numerically_not_lexically() {
        assert!(v("10.15.7") < v("11.0"));
        assert!(v("11.0") < v("14.2.1"));
        assert!(v("10.9") < v("10.10"));
        assert!(v("10.12") < v("10.12.1"));
        assert_eq!(v("14"), v("14.0.0"));
        assert_eq!(v("14.2.1").to_string(), "14.2.1");
        assert_eq!(v("14.2").to_string(), "14.2", "shown as written, not padded");
        assert_eq!(v("14.2.1.3").to_string(), "14.2.1.3");
        assert_eq!(OsVersion::new(&[10, 12]), v("10.12.0"));
    }

    #[test]
    fn malformed_versions_are_refused() {
        for s in ["", "10.x", "10..1", ".1", "1.2.3.4.5", "v14", "14.2 ", "-1"] {
            assert!(s.parse::<OsVersion>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn builds_compare_by_major_train_number() {
        assert!(b("20G1427") < b("23C71"));
        assert!(b("23A344") < b("23C71"));
        assert!(b("23C64") < b("23C71"));
        assert!(b("22G120") < b("23A344"));
        assert!(b("21A5522h") > b("21A559"));
        assert_eq!(b("23c71"), b("23C71"));
        assert_eq!(b("21A5522h").to_string(), "21A5522h");
    }

    #[test]
    fn malformed_builds_are_refused() {
        for s in ["", "23", "C71", "23C", "23C71hh", "23-C71", "abc"] {
            assert!(s.parse::<OsBuild>().is_err(), "{s:?} should be refused");
        }
    }
}
