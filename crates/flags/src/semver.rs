//! `sem_ver` comparisons as flagd makes them: versions are read the way Go's
//! `golang.org/x/mod/semver` reads them after flagd's normalisation (a missing `v` is
//! added, a `V` becomes `v`), so `1`, `1.2` and `v1.2.3-rc.1+build` are versions and
//! `1.2.3.4` is not. Build metadata never takes part in a comparison.

use std::cmp::Ordering;

/// A version read from text, borrowing its numbers and pre-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    prerelease: &'a str,
}

/// The comparison a `sem_ver` rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SemverOp {
    Eq,
    Ne,
    Lt,
    Le,
    Ge,
    Gt,
    /// `^`: the same major version.
    SameMajor,
    /// `~`: the same major and minor version.
    SameMinor,
}

impl SemverOp {
    pub(crate) const SPELLINGS: &'static [&'static str] = &["=", "!=", "<", "<=", ">=", ">", "^", "~"];

    pub(crate) fn parse(s: &str) -> Option<SemverOp> {
        Some(match s {
            "=" => SemverOp::Eq,
            "!=" => SemverOp::Ne,
            "<" => SemverOp::Lt,
            "<=" => SemverOp::Le,
            ">=" => SemverOp::Ge,
            ">" => SemverOp::Gt,
            "^" => SemverOp::SameMajor,
            "~" => SemverOp::SameMinor,
            _ => return None,
        })
    }

    pub(crate) fn holds(self, a: &Version<'_>, b: &Version<'_>) -> bool {
        match self {
            SemverOp::Eq => a.cmp(b) == Ordering::Equal,
            SemverOp::Ne => a.cmp(b) != Ordering::Equal,
            SemverOp::Lt => a.cmp(b) == Ordering::Less,
            SemverOp::Le => a.cmp(b) != Ordering::Greater,
            SemverOp::Ge => a.cmp(b) != Ordering::Less,
            SemverOp::Gt => a.cmp(b) == Ordering::Greater,
            SemverOp::SameMajor => cmp_num(a.major, b.major) == Ordering::Equal,
            SemverOp::SameMinor => {
                cmp_num(a.major, b.major) == Ordering::Equal && cmp_num(a.minor, b.minor) == Ordering::Equal
            }
        }
    }
}

impl<'a> Version<'a> {
    /// Reads a version after flagd's normalisation: an optional leading `v` or `V`.
    pub(crate) fn parse(text: &'a str) -> Option<Version<'a>> {
        let v = text.strip_prefix('v').or_else(|| text.strip_prefix('V')).unwrap_or(text);
        let (major, mut rest) = number(v)?;
        let mut version = Version { major, minor: "0", patch: "0", prerelease: "" };
        if rest.is_empty() {
            return Some(version);
        }
        rest = rest.strip_prefix('.')?;
        let (minor, r) = number(rest)?;
        version.minor = minor;
        if r.is_empty() {
            return Some(version);
        }
        rest = r.strip_prefix('.')?;
        let (patch, r) = number(rest)?;
        version.patch = patch;
        rest = r;
        if let Some(r) = rest.strip_prefix('-') {
            let end = r.find('+').unwrap_or(r.len());
            let pre = &r[..end];
            if !pre.split('.').all(|id| identifier(id) && !(numeric(id) && id.len() > 1 && id.starts_with('0'))) {
                return None;
            }
            version.prerelease = pre;
            rest = &r[end..];
        }
        if let Some(build) = rest.strip_prefix('+') {
            if !build.split('.').all(identifier) {
                return None;
            }
            rest = "";
        }
        rest.is_empty().then_some(version)
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_num(self.major, other.major)
            .then_with(|| cmp_num(self.minor, other.minor))
            .then_with(|| cmp_num(self.patch, other.patch))
            .then_with(|| cmp_prerelease(self.prerelease, other.prerelease))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A decimal number without leading zeros at the start of `s`, and what follows it.
fn number(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    let digits = &s[..end];
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((digits, &s[end..]))
}

fn identifier(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn numeric(id: &str) -> bool {
    id.bytes().all(|b| b.is_ascii_digit())
}

/// Numbers of any length, compared by value (both are free of leading zeros).
fn cmp_num(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// No pre-release ranks above any pre-release; identifiers compare numerically when
/// both are numbers, numbers rank below words, and a shorter list below a longer one.
fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (numeric(x), numeric(y)) {
                    (true, true) => cmp_num(x, y),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version<'_> {
        Version::parse(s).unwrap_or_else(|| panic!("{s} is a version"))
    }

    #[test]
    fn shorthand_and_prefixed_versions_read_as_full_ones() {
        assert_eq!(v("1"), v("1.0.0"));
        assert_eq!(v("v1.2"), v("1.2.0"));
        assert_eq!(v("V1.0.0"), v("1.0.0"));
        assert_eq!(v("1.0.0+build.5").cmp(&v("1.0.0")), Ordering::Equal);
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in
            ["", "v", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3+", "1..2", "1.2-rc", "x1.2.3", "not-a-version"]
        {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pre_releases_order_as_semver_two_says() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for pair in chain.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert!(v("10.0.0") > v("9.99.99"));
    }

    #[test]
    fn caret_and_tilde_compare_the_leading_numbers_only() {
        assert!(SemverOp::SameMajor.holds(&v("3.1.0"), &v("3.0.0")));
        assert!(!SemverOp::SameMinor.holds(&v("3.1.0"), &v("3.0.0")));
        assert!(SemverOp::SameMinor.holds(&v("3.0.9"), &v("3.0.0")));
        assert!(!SemverOp::SameMajor.holds(&v("4.0.0"), &v("3.0.0")));
    }
}
