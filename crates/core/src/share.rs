//! Shares of capacity or traffic, in basis points so arithmetic stays exact.

use std::fmt;

/// A share between 0 and 100 %, in basis points (1 % = 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BasisPoints(u16);

impl BasisPoints {
    pub const ZERO: Self = Self(0);
    pub const FULL: Self = Self(10_000);

    /// Returns `None` above 100 %.
    pub fn new(bp: u32) -> Option<Self> {
        (bp <= 10_000).then_some(Self(bp as u16))
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    /// `floor(self × n)`: how many of `n` things fit within this share.
    pub fn of(self, n: u32) -> u32 {
        ((u64::from(n) * u64::from(self.0)) / 10_000) as u32
    }
}

impl fmt::Display for BasisPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
        }
    }
}

/// How large a rolling batch may be: a share of the zone, or a fixed count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Share(BasisPoints),
    Hosts(u32),
}

impl BatchSize {
    /// Hosts per batch in a zone of `zone_hosts`: never more than the batch allows,
    /// never fewer than one.
    pub fn hosts_in(self, zone_hosts: u32) -> u32 {
        let n = match self {
            BatchSize::Share(bp) => bp.of(zone_hosts),
            BatchSize::Hosts(n) => n.min(zone_hosts),
        };
        n.max(1)
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Share(bp) => bp.fmt(f),
            BatchSize::Hosts(n) => write!(f, "{n} hosts"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_at_least_one_host_and_never_above_the_share() {
        let third = BatchSize::Share(BasisPoints::new(3_300).unwrap());
        assert_eq!(third.hosts_in(10), 3);
        assert_eq!(third.hosts_in(2), 1);
        assert_eq!(third.hosts_in(1000), 330);
        assert_eq!(BatchSize::Hosts(5).hosts_in(3), 3);
        assert_eq!(BasisPoints::new(10_001), None);
        assert_eq!(BasisPoints::new(1_050).unwrap().to_string(), "10.50%");
    }
}
