//! The small languages inside manifest scalars: deployment windows, blocked dates,
//! alarm thresholds and `N of M` data points, rolling batch sizes. Each parser returns
//! a message that quotes the text and shows the accepted form.

use crate::yaml::{parse_share, suggest};
use jiff::civil::Date;
use rollwave_core::alarm::{Comparison, Threshold};
use rollwave_core::share::BatchSize;
use rollwave_core::window::{BlockedDates, WeeklyWindow};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const WINDOW_FORM: &str =
    "write DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 09:00-17:00\", \"Sat,Sun 10:00-14:00\" or \"daily 22:00-06:00\"";

/// `Mon-Fri 09:00-17:00`, `Sat 10:00-14:00`, `Mon,Wed,Fri …`, `Fri-Mon …` (ranges wrap
/// around the week), `daily …` or `* …`. The end may be `24:00`; an end before the start
/// runs overnight.
pub fn weekly_window(s: &str) -> Result<WeeklyWindow, String> {
    let mut parts = s.split_whitespace();
    let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("invalid window {s:?}: {WINDOW_FORM}"));
    };
    let days = weekdays(days).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    let Some((start, end)) = times.split_once('-') else {
        return Err(format!("invalid window {s:?}: {WINDOW_FORM}"));
    };
    let start_minute = minute_of_day(start, false).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    let end_minute = minute_of_day(end, true).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    if start_minute == end_minute {
        return Err(format!(
            "invalid window {s:?}: it starts and ends at the same time; write 00:00-24:00 for the whole day"
        ));
    }
    Ok(WeeklyWindow { days, start_minute, end_minute })
}

fn weekdays(s: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if s == "daily" || s == "*" {
        return Ok([true; 7]);
    }
    for item in s.split(',') {
        let (first, last) = item.split_once('-').unwrap_or((item, item));
        let first = weekday(first)?;
        let last = weekday(last)?;
        // Walk forward from the first day, wrapping past Sunday: `Fri-Mon` is Fri, Sat, Sun, Mon.
        let mut day = first;
        loop {
            days[day] = true;
            if day == last {
                break;
            }
            day = (day + 1) % 7;
        }
    }
    Ok(days)
}

fn weekday(s: &str) -> Result<usize, String> {
    DAYS.iter().position(|d| *d == s).ok_or_else(|| match suggest(s, DAYS) {
        Some(near) => format!("unknown day {s:?}; did you mean {near:?}?"),
        None => format!("unknown day {s:?}; days are Mon, Tue, Wed, Thu, Fri, Sat, Sun, or daily"),
    })
}

/// `HH:MM` as minutes after midnight; `24:00` only when `end_of_day` is allowed.
fn minute_of_day(s: &str, end_of_day: bool) -> Result<u16, String> {
    let bytes = s.as_bytes();
    let well_formed =
        bytes.len() == 5 && bytes[2] == b':' && s.bytes().enumerate().all(|(i, b)| i == 2 || b.is_ascii_digit());
    if !well_formed {
        return Err(format!("time {s:?} is not HH:MM, e.g. 09:00"));
    }
    let hour = u16::from(bytes[0] - b'0') * 10 + u16::from(bytes[1] - b'0');
    let minute = u16::from(bytes[3] - b'0') * 10 + u16::from(bytes[4] - b'0');
    match (hour, minute) {
        (24, 0) if end_of_day => Ok(1440),
        (24, 0) => Err("a window cannot start at 24:00; write 00:00".to_owned()),
        (0..=23, 0..=59) => Ok(hour * 60 + minute),
        _ => Err(format!("time {s:?} is not a time of day (00:00 to 23:59)")),
    }
}

/// `2026-12-24` or `2026-12-24/2026-12-26` (both ends included).
pub fn blocked_dates(s: &str) -> Result<BlockedDates, String> {
    let (first, last) = s.split_once('/').unwrap_or((s, s));
    let first = date(s, first)?;
    let last = date(s, last)?;
    if last < first {
        return Err(format!("invalid blocked period {s:?}: it ends before it starts"));
    }
    Ok(BlockedDates { first, last })
}

fn date(whole: &str, s: &str) -> Result<Date, String> {
    const FORM: &str = "write YYYY-MM-DD or YYYY-MM-DD/YYYY-MM-DD, e.g. 2026-12-24/2026-12-26";
    let bytes = s.as_bytes();
    // jiff accepts more than a bare date (e.g. a date with a time), so check the shape first.
    let shaped = bytes.len() == 10
        && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !shaped {
        return Err(format!("invalid blocked period {whole:?}: {FORM}"));
    }
    s.parse::<Date>().map_err(|_| format!("invalid blocked period {whole:?}: {s} is not a date in the calendar"))
}

/// `> 0.02`, `>= 5`, `< 1`, `<= 0.5`, or a bare number meaning `>`.
pub fn threshold(s: &str) -> Result<Threshold, String> {
    const FORM: &str = "write a comparison and a number, e.g. \"> 0.02\", \">= 5\", \"< 1\" or \"<= 0.5\"";
    let t = s.trim();
    let (comparison, number) = [
        (">=", Comparison::GreaterOrEqual),
        ("<=", Comparison::LessOrEqual),
        (">", Comparison::Greater),
        ("<", Comparison::Less),
    ]
    .iter()
    .find_map(|(op, comparison)| t.strip_prefix(op).map(|rest| (*comparison, rest.trim_start())))
    .unwrap_or((Comparison::Greater, t));
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(Threshold { comparison, value }),
        _ => Err(format!("invalid threshold {s:?}: {FORM}")),
    }
}

/// `3 of 5` (N breaching periods out of the last M, `1 <= N <= M <= 100`), or `3` for `3 of 3`.
pub fn datapoints(s: &str) -> Result<(u32, u32), String> {
    const FORM: &str = "write \"N of M\" (alarm when N of the last M periods breach), e.g. \"3 of 5\"";
    let words: Vec<&str> = s.split_whitespace().collect();
    let (n, m) = match words.as_slice() {
        [n] => (*n, *n),
        [n, "of", m] => (*n, *m),
        _ => return Err(format!("invalid datapoints {s:?}: {FORM}")),
    };
    let number = |t: &str| t.parse::<u32>().ok().filter(|_| t.bytes().all(|b| b.is_ascii_digit()));
    let (Some(n), Some(m)) = (number(n), number(m)) else {
        return Err(format!("invalid datapoints {s:?}: {FORM}"));
    };
    if m > 100 {
        return Err(format!("invalid datapoints {s:?}: at most 100 periods can be evaluated"));
    }
    if n == 0 || n > m {
        return Err(format!("invalid datapoints {s:?}: N must be between 1 and M"));
    }
    Ok((n, m))
}

/// A share of each zone (`33%`) or a number of hosts (`2`); never zero.
pub fn batch(s: &str) -> Result<BatchSize, String> {
    const FORM: &str = "write a share of each zone such as 33% or a number of hosts such as 2";
    let t = s.trim();
    if t.ends_with('%') {
        let share = parse_share(t).map_err(|e| format!("invalid batch: {e}"))?;
        if share.get() == 0 {
            return Err(format!("invalid batch {s:?}: a batch must be more than 0%"));
        }
        return Ok(BatchSize::Share(share));
    }
    match t.parse::<u32>() {
        Ok(0) => Err(format!("invalid batch {s:?}: a batch needs at least one host")),
        Ok(hosts) if t.bytes().all(|b| b.is_ascii_digit()) => Ok(BatchSize::Hosts(hosts)),
        _ => Err(format!("invalid batch {s:?}: {FORM}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date as d;

    fn days(s: &str) -> [bool; 7] {
        weekdays(s).unwrap()
    }

    #[test]
    fn windows_read_days_and_times() {
        let w = weekly_window("Mon-Fri 09:00-17:00").unwrap();
        assert_eq!(
            w,
            WeeklyWindow { days: [true, true, true, true, true, false, false], start_minute: 540, end_minute: 1020 }
        );
        assert_eq!(days("Sat"), [false, false, false, false, false, true, false]);
        assert_eq!(days("Mon,Wed,Fri"), [true, false, true, false, true, false, false]);
        assert_eq!(days("Sun-Tue"), [true, true, false, false, false, false, true]);
        assert_eq!(days("Fri-Mon,Wed"), [true, false, true, false, true, true, true]);
        assert_eq!(days("daily"), [true; 7]);
        assert_eq!(days("*"), [true; 7]);
        let overnight = weekly_window("daily   22:00-06:00").unwrap();
        assert_eq!((overnight.start_minute, overnight.end_minute), (1320, 360));
        assert_eq!(weekly_window("Sat 00:00-24:00").unwrap().end_minute, 1440);
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let err = |s| weekly_window(s).unwrap_err();
        assert!(err("Mon-Fri").contains("DAYS HH:MM-HH:MM"));
        assert!(err("Mon-Fry 09:00-17:00").contains("unknown day \"Fry\"; did you mean \"Fri\"?"));
        assert!(err("Xyz 09:00-17:00").contains("days are Mon"));
        assert!(err("Mon 9:00-17:00").contains("not HH:MM"));
        assert!(err("Mon 09:00-25:00").contains("not a time of day"));
        assert!(err("Mon 24:00-05:00").contains("cannot start at 24:00"));
        assert!(err("Mon 09:00-09:00").contains("same time"));
        assert!(err("Mon 09:00-17:00 extra").contains("DAYS HH:MM-HH:MM"));
        assert!(err("Mon 09:0é-17:00").contains("not HH:MM"));
    }

    #[test]
    fn blocked_dates_are_inclusive_ranges() {
        assert_eq!(blocked_dates("2026-12-24"), Ok(BlockedDates { first: d(2026, 12, 24), last: d(2026, 12, 24) }));
        assert_eq!(
            blocked_dates("2026-12-24/2026-12-26"),
            Ok(BlockedDates { first: d(2026, 12, 24), last: d(2026, 12, 26) })
        );
        assert!(blocked_dates("2026-12-26/2026-12-24").unwrap_err().contains("ends before it starts"));
        assert!(blocked_dates("2026-02-30").unwrap_err().contains("not a date in the calendar"));
        assert!(blocked_dates("2026-12-24T10:00").unwrap_err().contains("YYYY-MM-DD"));
        assert!(blocked_dates("24/12/2026").unwrap_err().contains("YYYY-MM-DD"));
    }

    #[test]
    fn thresholds_take_a_comparison_or_default_to_greater() {
        let t = |s| threshold(s).unwrap();
        assert_eq!(t("> 0.02"), Threshold { comparison: Comparison::Greater, value: 0.02 });
        assert_eq!(t(">=5"), Threshold { comparison: Comparison::GreaterOrEqual, value: 5.0 });
        assert_eq!(t("< 1"), Threshold { comparison: Comparison::Less, value: 1.0 });
        assert_eq!(t("<= 0.5"), Threshold { comparison: Comparison::LessOrEqual, value: 0.5 });
        assert_eq!(t("800"), Threshold { comparison: Comparison::Greater, value: 800.0 });
        for bad in ["", ">", "= 5", "== 5", "> abc", "> inf", "NaN", "> 1 2"] {
            assert!(threshold(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn datapoints_are_n_of_m() {
        assert_eq!(datapoints("3 of 5"), Ok((3, 5)));
        assert_eq!(datapoints("2"), Ok((2, 2)));
        assert_eq!(datapoints("100 of 100"), Ok((100, 100)));
        assert!(datapoints("0 of 5").unwrap_err().contains("between 1 and M"));
        assert!(datapoints("6 of 5").unwrap_err().contains("between 1 and M"));
        assert!(datapoints("1 of 101").unwrap_err().contains("at most 100"));
        assert!(datapoints("3/5").unwrap_err().contains("N of M"));
        assert!(datapoints("+3 of 5").unwrap_err().contains("N of M"));
    }

    #[test]
    fn batches_are_shares_or_host_counts() {
        assert_eq!(batch("33%").map(|b| b.to_string()), Ok("33%".to_owned()));
        assert_eq!(batch("2"), Ok(BatchSize::Hosts(2)));
        assert!(batch("0").unwrap_err().contains("at least one host"));
        assert!(batch("0%").unwrap_err().contains("more than 0%"));
        assert!(batch("150%").unwrap_err().contains("above 100%"));
        assert!(batch("half").unwrap_err().contains("33%"));
    }
}
