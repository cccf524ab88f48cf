//! Maintenance windows: `Sat 02:00-06:00 UTC`, `Mon-Fri 22:00-02:00 +01:00`, `daily 03:00-04:00`.
//!
//! A window is a set of weekdays, a start and an end time of day (an end before the start runs
//! past midnight into the next day) and a fixed UTC offset. Pure arithmetic on Unix seconds, so
//! tests choose their own "now".

use std::fmt;

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` set: the window opens on weekday `d` (0 = Sunday).
    days: u8,
    /// Minutes after local midnight.
    start: u32,
    end: u32,
    /// Offset of local time from UTC, in minutes.
    offset: i32,
    text: String,
}

fn day(name: &str) -> Option<u32> {
    DAYS.iter().position(|d| d.eq_ignore_ascii_case(&name[..name.len().min(3)]) && name.len() >= 3).map(|i| i as u32)
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m).or((h == 24 && m == 0).then_some(24 * 60))
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let bad = || {
            format!(
                "`{text}` is not a maintenance window; write DAYS HH:MM-HH:MM [UTC|+HH:MM], e.g. \"Sat 02:00-06:00 UTC\" or \"Mon-Fri 22:00-02:00\""
            )
        };
        let (days, times, zone) = match parts.as_slice() {
            [d, t] => (*d, *t, "UTC"),
            [d, t, z] => (*d, *t, *z),
            _ => return Err(bad()),
        };
        let mut mask = 0u8;
        for item in days.split(',') {
            match item {
                "daily" | "*" => mask = 0x7f,
                range if range.contains('-') => {
                    let (a, b) = range.split_once('-').ok_or_else(bad)?;
                    let (a, b) = (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                single => mask |= 1 << day(single).ok_or_else(bad)?,
            }
        }
        let (start, end) = times.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(start).ok_or_else(bad)?, minutes(end).ok_or_else(bad)?);
        if start == end {
            return Err(format!("`{text}`: the window opens and closes at the same time"));
        }
        let offset = match zone {
            "UTC" | "Z" | "utc" => 0,
            z if z.starts_with('+') || z.starts_with('-') => {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                sign * minutes(&z[1..]).ok_or_else(bad)? as i32
            }
            _ => return Err(bad()),
        };
        Ok(Window { days: mask, start, end, offset, text: text.to_string() })
    }

    /// Whether the window is open at `unix` seconds.
    pub fn is_open(&self, unix: i64) -> bool {
        let local = unix + self.offset as i64 * 60;
        let days = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        let weekday = ((days + 4).rem_euclid(7)) as u32; // 1970-01-01 was a Thursday
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
        let berlin = Window::parse("Sat 02:00-06:00 +01:00").unwrap();
        assert!(berlin.is_open(at(0, 1, 30)), "02:30 in +01:00 is 01:30 UTC");
        assert!(!berlin.is_open(at(0, 5, 30)));
        assert!(Window::parse("daily 03:00-04:00").unwrap().is_open(at(4, 3, 30)));
    }

    #[test]
    fn nonsense_is_refused_with_the_expected_form() {
        for bad in ["Sat", "Funday 02:00-03:00", "Sat 25:00-26:00", "Sat 02:00-02:00", "Sat 02:00-06:00 CET"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert!(Window::parse("Sat 2-6").unwrap_err().contains("e.g. \"Sat 02:00-06:00 UTC\""));
    }
}
