//! Deployment windows: when a step may start, in a region's local time.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use std::fmt;

/// `allow` windows (none means always) minus `block` periods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Windows {
    pub allow: Vec<WeeklyWindow>,
    pub block: Vec<BlockedDates>,
}

/// `Mon-Fri 09:00-17:00`: the days it applies to and a span of minutes within each.
/// An end before the start runs past midnight into the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeeklyWindow {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight, `start_minute < 1440`, `end_minute <= 1440`.
    pub start_minute: u16,
    pub end_minute: u16,
}

/// `2026-12-24/2026-12-26`: whole local days, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedDates {
    pub first: Date,
    pub last: Date,
}

/// Why a window check said no.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    OutsideAllowed,
    Blocked(BlockedDates),
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::OutsideAllowed => f.write_str("outside the allowed deployment windows"),
            Closed::Blocked(b) if b.first == b.last => write!(f, "in the blocked period {}", b.first),
            Closed::Blocked(b) => write!(f, "in the blocked period {}/{}", b.first, b.last),
        }
    }
}

fn day_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl WeeklyWindow {
    fn contains(&self, date: Date, minute: u16) -> bool {
        let today = day_index(date.weekday());
        if self.start_minute < self.end_minute {
            self.days[today] && (self.start_minute..self.end_minute).contains(&minute)
        } else {
            // Overnight window: the evening part belongs to today, the early part to yesterday.
            let yesterday = (today + 6) % 7;
            (self.days[today] && minute >= self.start_minute) || (self.days[yesterday] && minute < self.end_minute)
        }
    }
}

impl Windows {
    /// Whether a step may start at `at` in a region whose clock reads `tz`.
    pub fn check(&self, at: Timestamp, tz: &TimeZone) -> Result<(), Closed> {
        let local = tz.to_datetime(at);
        let date = local.date();
        if let Some(b) = self.block.iter().find(|b| b.first <= date && date <= b.last) {
            return Err(Closed::Blocked(*b));
        }
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        if self.allow.is_empty() || self.allow.iter().any(|w| w.contains(date, minute)) {
            Ok(())
        } else {
            Err(Closed::OutsideAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn business_hours() -> Windows {
        Windows {
            allow: vec![WeeklyWindow {
                days: [true, true, true, true, true, false, false],
                start_minute: 9 * 60,
                end_minute: 17 * 60,
            }],
            block: vec![BlockedDates { first: date(2026, 12, 24), last: date(2026, 12, 26) }],
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn windows_follow_the_region_clock() {
        let w = business_hours();
        let chicago = TimeZone::get("America/Chicago").unwrap();
        // Monday 2026-11-30 15:00 UTC is 09:00 in Chicago.
        assert_eq!(w.check(at("2026-11-30T15:00:00Z"), &chicago), Ok(()));
        assert_eq!(w.check(at("2026-11-30T14:59:00Z"), &chicago), Err(Closed::OutsideAllowed));
        assert_eq!(w.check(at("2026-11-30T14:59:00Z"), &TimeZone::UTC), Ok(()));
        // Saturday.
        assert!(w.check(at("2026-12-05T12:00:00Z"), &TimeZone::UTC).is_err());
        // Thursday, but blocked.
        assert!(matches!(w.check(at("2026-12-24T12:00:00Z"), &TimeZone::UTC), Err(Closed::Blocked(_))));
        assert_eq!(w.check(at("2026-12-28T12:00:00Z"), &TimeZone::UTC), Ok(()));
    }

    #[test]
    fn overnight_windows_span_midnight() {
        let w = Windows {
            allow: vec![WeeklyWindow {
                days: [false, false, false, false, true, false, false],
                start_minute: 22 * 60,
                end_minute: 2 * 60,
            }],
            block: vec![],
        };
        // Friday 23:00 and Saturday 01:00 belong to Friday's window; Saturday 23:00 does not.
        assert_eq!(w.check(at("2026-12-04T23:00:00Z"), &TimeZone::UTC), Ok(()));
        assert_eq!(w.check(at("2026-12-05T01:00:00Z"), &TimeZone::UTC), Ok(()));
        assert!(w.check(at("2026-12-05T23:00:00Z"), &TimeZone::UTC).is_err());
    }
}
