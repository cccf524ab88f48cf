//! Maintenance windows: `Sat 02:00-06:00 UTC`, `Mon-Fri 22:00-02:00 Europe/Berlin`,
//! `daily 03:00-04:00 +01:00`.
//!
//! Text from a cluster file in, a [`Window`] (or a [`WindowError`] saying which part is wrong) out;
//! [`Window::is_open`] answers for a Unix time, so tests choose their own "now".
//!
//! A window is a set of weekdays, a start and an end time of day (an end before the start runs
//! past midnight into the next day) and a time zone: UTC, a fixed offset, or an IANA zone name.
//! Times are wall-clock times in that zone, as a maintenance window on a calendar is: on the day
//! the clocks spring forward, the hour that does not exist is in no window (`Sun 02:00-06:00` in
//! Europe/Berlin opens at 03:00 local and lasts three hours); on the day they fall back, the
//! repeated hour is in the window both times (it lasts five).
//!
//! Zone rules come from the system's time zone database (/usr/share/zoneinfo, kept current by
//! the OS), or from the copy built into strata where the system has none.

use std::fmt;

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FULL_DAYS: [&str; 7] = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

/// Minutes in a day: `24:00`, the latest a window may close.
const DAY: u32 = 24 * 60;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` set: the window opens on weekday `d` (0 = Sunday).
    days: u8,
    /// Minutes after local midnight.
    start: u32,
    end: u32,
    zone: TimeZone,
    text: String,
}

/// What is wrong with a window, naming the part of it that is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the window is empty")]
    Empty,
    #[error("{0} is not a window: it needs days, times and an optional zone, separated by spaces")]
    Shape(Shown),
    #[error("{0} is not a day: use Mon, Tue, …, Sun (or the full names), a range like Mon-Fri, or daily")]
    Day(Shown),
    #[error("{0} is not a time range: write HH:MM-HH:MM, e.g. 02:00-06:00")]
    Times(Shown),
    #[error("{0} is not a time of day: write HH:MM from 00:00 to 23:59 (24:00 only as an end)")]
    Time(Shown),
    #[error("the window opens and closes at the same time, {0}")]
    Zero(Shown),
    #[error(
        "{0} is not a time zone: use UTC, an offset from -23:59 to +23:59 like +01:00, or a zone name like Europe/Berlin"
    )]
    Zone(Shown),
}

impl WindowError {
    /// How a window is written, for the `help:` line of a diagnostic.
    pub const HELP: &str = "write DAYS HH:MM-HH:MM [ZONE], e.g. \"Sat 02:00-06:00 UTC\", \"Mon-Fri 22:00-02:00 Europe/Berlin\" or \"daily 03:00-04:00 +01:00\"";
}

/// A piece of a cluster file quoted in an error: cut to a readable length, control characters
/// escaped, so a hostile value cannot flood or rewrite a terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    fn new(text: &str) -> Shown {
        const MAX: usize = 40;
        let mut out: String = text.chars().take(MAX).flat_map(char::escape_debug).collect();
        if text.chars().nth(MAX).is_some() {
            out.push('…');
        }
        Shown(out)
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.0)
    }
}

fn day(name: &str) -> Option<u32> {
    let find = |names: &[&str; 7]| names.iter().position(|d| d.eq_ignore_ascii_case(name));
    find(&DAYS).or_else(|| find(&FULL_DAYS)).map(|i| i as u32)
}

/// `H:MM` or `HH:MM`, ASCII digits only (no signs, no spaces), up to `24:00`.
fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let digits = |s: &str, min: usize| (min..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h, 1) || !digits(m, 2) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= DAY).then_some(total)
}

fn days(text: &str) -> Result<u8, WindowError> {
    let mut mask = 0u8;
    for item in text.split(',') {
        let bad = || WindowError::Day(Shown::new(item));
        if item == "daily" || item == "*" {
            mask = 0x7f;
            continue;
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
            None => {
                let d = day(item).ok_or_else(bad)?;
                (d, d)
            }
        };
        // A range wraps around the week: Fri-Mon is Friday to Monday.
        let mut d = first;
        loop {
            mask |= 1 << d;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(mask)
}

fn zone(text: &str) -> Result<TimeZone, WindowError> {
    let bad = || WindowError::Zone(Shown::new(text));
    if ["UTC", "Z"].iter().any(|z| z.eq_ignore_ascii_case(text)) {
        return Ok(TimeZone::UTC);
    }
    if let Some(rest) = text.strip_prefix('+').or_else(|| text.strip_prefix('-')) {
        let sign = if text.starts_with('-') { -1 } else { 1 };
        // +01:00, +01 and +0100 all appear in the wild.
        let hhmm = match rest.len() {
            1 | 2 => format!("{rest}:00"),
            4 if rest.bytes().all(|b| b.is_ascii_digit()) => format!("{}:{}", &rest[..2], &rest[2..]),
            _ => rest.to_string(),
        };
        let minutes = minutes(&hhmm).filter(|m| *m < DAY).ok_or_else(bad)?;
        let offset = Offset::from_seconds(sign * minutes as i32 * 60).map_err(|_| bad())?;
        return Ok(TimeZone::fixed(offset));
    }
    // IANA names are ASCII letters, digits and `/_-+`; anything else (a path, a space, `..`)
    // never reaches the database.
    let plausible = text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b))
        && text.split('/').all(|part| !part.is_empty() && !part.starts_with(['-', '+']));
    if !plausible {
        return Err(bad());
    }
    TimeZone::get(text).map_err(|_| bad())
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (day_text, times, zone_text) = match parts.as_slice() {
            [] => return Err(WindowError::Empty),
            [d, t] => (*d, *t, None),
            [d, t, z] => (*d, *t, Some(*z)),
            _ => return Err(WindowError::Shape(Shown::new(text.trim()))),
        };
        let days = days(day_text)?;
        let (start, end) = times.split_once('-').ok_or_else(|| WindowError::Times(Shown::new(times)))?;
        let time = |t: &str| minutes(t).ok_or_else(|| WindowError::Time(Shown::new(t)));
        let (start_minute, end_minute) = (time(start)?, time(end)?);
        if start_minute == DAY {
            return Err(WindowError::Time(Shown::new(start)));
        }
        if start_minute == end_minute {
            return Err(WindowError::Zero(Shown::new(times)));
        }
        let zone = match zone_text {
            None => TimeZone::UTC,
            Some(z) => zone(z)?,
        };
        Ok(Window { days, start: start_minute, end: end_minute, zone, text: text.trim().to_string() })
    }

    /// Whether the window is open at `unix` seconds.
    pub fn is_open(&self, unix: i64) -> bool {
        let unix = unix.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
        let Ok(instant) = Timestamp::from_second(unix) else { return false };
        let local = self.zone.to_datetime(instant);
        let weekday = local.weekday().to_sunday_zero_offset() as u32;
        let minute = local.hour() as u32 * 60 + local.minute() as u32;
        let opens_on = |d: u32| self.days & (1 << d) != 0;
        if self.start < self.end {
            opens_on(weekday) && minute >= self.start && minute < self.end
        } else {
            // Past midnight: open late on an opening day, or early on the day after one.
            (opens_on(weekday) && minute >= self.start) || (opens_on((weekday + 6) % 7) && minute < self.end)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time (2026-11-28 was a Saturday).
    fn at(day: i64, h: i64, m: i64) -> i64 {
        // 2026-11-28T00:00:00Z
        1_795_824_000 + day * 86_400 + h * 3600 + m * 60
    }

    /// Unix seconds of an RFC 3339 instant.
    fn instant(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn saturday_night_utc() {
        let w = Window::parse("Sat 02:00-06:00 UTC").unwrap();
        assert!(w.is_open(at(0, 2, 0)));
        assert!(w.is_open(at(0, 5, 59)));
        assert!(!w.is_open(at(0, 6, 0)));
        assert!(!w.is_open(at(0, 1, 59)));
        assert!(!w.is_open(at(1, 3, 0)), "Sunday");
        assert!(w.is_open(at(7, 3, 0)), "next Saturday");
    }

    #[test]
    fn windows_past_midnight_and_with_offsets() {
        let w = Window::parse("Mon-Fri 22:00-02:00").unwrap();
        assert!(w.is_open(at(2, 23, 0)), "Monday 23:00");
        assert!(w.is_open(at(3, 1, 0)), "Tuesday 01:00 belongs to Monday's window");
        assert!(!w.is_open(at(2, 1, 0)), "Monday 01:00 belongs to Sunday, which is closed");
        assert!(w.is_open(at(7, 1, 0)), "Saturday 01:00 belongs to Friday's window");
        let plus_one = Window::parse("Sat 02:00-06:00 +01:00").unwrap();
        assert!(plus_one.is_open(at(0, 1, 30)), "02:30 in +01:00 is 01:30 UTC");
        assert!(!plus_one.is_open(at(0, 5, 30)));
        for same in ["Sat 02:00-06:00 +01", "Sat 02:00-06:00 +0100", "saturday 2:00-6:00 +1"] {
            assert!(Window::parse(same).unwrap().is_open(at(0, 1, 30)), "{same}");
        }
        let minus = Window::parse("Fri 23:30-24:00 -05:30").unwrap();
        assert!(minus.is_open(at(0, 5, 15)), "Friday 23:45 at -05:30 is Saturday 05:15 UTC");
        assert!(Window::parse("daily 03:00-04:00").unwrap().is_open(at(4, 3, 30)));
        let weekend = Window::parse("Fri-Mon,Wed 12:00-13:00 Z").unwrap();
        for (day, open) in [(0, true), (1, true), (2, true), (3, false), (4, true), (5, false), (6, true)] {
            assert_eq!(weekend.is_open(at(day, 12, 30)), open, "day {day}");
        }
    }

    #[test]
    fn named_zones_follow_daylight_saving_time() {
        let berlin = Window::parse("Sat 02:00-06:00 Europe/Berlin").unwrap();
        // Winter: Berlin is UTC+1.
        assert!(berlin.is_open(instant("2026-11-28T01:00:00Z")));
        assert!(!berlin.is_open(instant("2026-11-28T00:59:59Z")));
        assert!(!berlin.is_open(instant("2026-11-28T05:00:00Z")));
        // Summer: UTC+2.
        assert!(berlin.is_open(instant("2026-07-04T00:00:00Z")));
        assert!(!berlin.is_open(instant("2026-07-04T04:00:00Z")));
        assert!(Window::parse("Sat 02:00-06:00 europe/berlin").unwrap().is_open(instant("2026-07-04T00:00:00Z")));
    }

    #[test]
    fn the_hour_skipped_in_spring_is_in_no_window() {
        // 2026-03-29, a Sunday: Berlin's clocks go from 02:00 to 03:00 (01:00 UTC).
        let w = Window::parse("Sun 02:00-06:00 Europe/Berlin").unwrap();
        assert!(!w.is_open(instant("2026-03-29T00:59:59Z")), "01:59:59 CET");
        assert!(w.is_open(instant("2026-03-29T01:00:00Z")), "03:00 CEST: the window opens");
        assert!(w.is_open(instant("2026-03-29T03:59:59Z")), "05:59:59 CEST");
        assert!(!w.is_open(instant("2026-03-29T04:00:00Z")), "06:00 CEST: three real hours");
        let skipped = Window::parse("Sun 02:00-03:00 Europe/Berlin").unwrap();
        let minutes_open = (0..24 * 60).filter(|m| skipped.is_open(instant("2026-03-29T00:00:00Z") + m * 60)).count();
        assert_eq!(minutes_open, 0, "02:00-03:00 does not exist that night");
        let next_week = instant("2026-04-05T00:30:00Z"); // 02:30 CEST
        assert!(skipped.is_open(next_week));
    }

    #[test]
    fn the_hour_repeated_in_autumn_is_in_the_window_twice() {
        // 2026-10-25, a Sunday: Berlin's clocks go from 03:00 back to 02:00 (01:00 UTC).
        let w = Window::parse("Sun 02:00-06:00 Europe/Berlin").unwrap();
        assert!(!w.is_open(instant("2026-10-24T23:59:59Z")), "01:59:59 CEST");
        assert!(w.is_open(instant("2026-10-25T00:00:00Z")), "02:00 CEST");
        assert!(w.is_open(instant("2026-10-25T01:30:00Z")), "02:30 CET, the second time");
        assert!(w.is_open(instant("2026-10-25T04:59:59Z")), "05:59:59 CET");
        assert!(!w.is_open(instant("2026-10-25T05:00:00Z")), "06:00 CET: five real hours");
        let repeated = Window::parse("Sun 02:00-03:00 Europe/Berlin").unwrap();
        let minutes_open = (0..24 * 60).filter(|m| repeated.is_open(instant("2026-10-24T22:00:00Z") + m * 60)).count();
        assert_eq!(minutes_open, 120);
    }

    #[test]
    fn nonsense_is_refused_naming_the_part_that_is_wrong() {
        let cases = [
            ("", "the window is empty"),
            ("  \t ", "the window is empty"),
            ("Sat", "`Sat` is not a window"),
            ("Sat 02:00-03:00 UTC extra", "is not a window"),
            ("éé 02:00-03:00", "`éé` is not a day"),
            ("Sa 02:00-03:00", "`Sa` is not a day"),
            ("Saturnine 02:00-03:00", "`Saturnine` is not a day"),
            ("Funday 02:00-03:00", "`Funday` is not a day"),
            ("Mon--Fri 02:00-03:00", "`Mon--Fri` is not a day"),
            ("Mon,,Fri 02:00-03:00", "`` is not a day"),
            ("Sat 0200", "`0200` is not a time range"),
            ("Sat 25:00-26:00", "`25:00` is not a time of day"),
            ("Sat 2-6", "`2` is not a time of day"),
            ("Sat +2:00-06:00", "`+2:00` is not a time of day"),
            ("Sat 99999999999999999999:00-01:00", "is not a time of day"),
            ("Sat 02:0é-03:00", "`02:0é` is not a time of day"),
            ("Sat 24:00-02:00", "`24:00` is not a time of day"),
            ("Sat 02:00-02:00", "opens and closes at the same time, `02:00-02:00`"),
            ("Sat 00:00-24:00 UTC+1", "`UTC+1` is not a time zone"),
            ("Sat 02:00-06:00 Mars/Olympus", "`Mars/Olympus` is not a time zone"),
            ("Sat 02:00-06:00 ../../etc/passwd", "is not a time zone"),
            ("Sat 02:00-06:00 +99:00", "`+99:00` is not a time zone"),
            ("Sat 02:00-06:00 +", "`+` is not a time zone"),
            ("Sat 02:00-06:00 +é1", "`+é1` is not a time zone"),
            ("Sat 02:00-06:00 +aé1", "`+aé1` is not a time zone"),
            ("Sat 02:00-06:00 -24:00", "`-24:00` is not a time zone"),
            ("Sat\u{1b}[31m 02:00-06:00", "`Sat\\u{1b}[31m` is not a day"),
        ];
        for (text, expected) in cases {
            let e = Window::parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
        let long = format!("{} 02:00-03:00", "x".repeat(10_000));
        let e = Window::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("…"), "{e}");
    }

    #[test]
    fn odd_whitespace_and_the_ends_of_time() {
        let w = Window::parse("\u{a0}Sat\t02:00-06:00\n UTC ").unwrap();
        assert_eq!(w.to_string(), "Sat\t02:00-06:00\n UTC");
        assert!(w.is_open(at(0, 3, 0)));
        let all_day = Window::parse("Sat 00:00-24:00").unwrap();
        assert!(all_day.is_open(at(0, 0, 0)) && all_day.is_open(at(0, 23, 59)) && !all_day.is_open(at(1, 0, 0)));
        for unix in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            w.is_open(unix);
            Window::parse("daily 23:00-01:00 Europe/Berlin").unwrap().is_open(unix);
        }
    }
}
