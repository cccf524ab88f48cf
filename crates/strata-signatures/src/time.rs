//! Calendar arithmetic for the few timestamps this crate reads and prints:
//! git's `<seconds> <±hhmm>` dates, `allowed_signers` validity dates, and
//! RFC 3339 renderings for error messages. Proleptic Gregorian, UTC only.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, signed so that a commit dated before 1970
/// (git allows it) is still a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct UnixTime(pub(crate) i64);

impl UnixTime {
    pub(crate) fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(self.0.unsigned_abs())
        }
    }

    pub(crate) fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UnixTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => UnixTime(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (inverse of the above).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses an `allowed_signers` validity time as ssh-keygen(1) documents it:
/// `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]`.
///
/// OpenSSH reads a time without `Z` in the verifier's local time zone; this
/// crate has no time zone database and reads every time as UTC, which is
/// what strata's containers and systemd unit run in. Write the `Z` to be
/// unambiguous.
pub(crate) fn parse_ssh_time(text: &str) -> Result<UnixTime, String> {
    let digits = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')).unwrap_or(text);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 8 | 12 | 14) {
        return Err(format!("{text:?} is not a time of the form YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]"));
    }
    let num = |range: std::ops::Range<usize>| -> u32 { digits[range].parse().expect("ASCII digits of bounded length") };
    let year = i64::from(num(0..4));
    let (month, day) = (num(4..6), num(6..8));
    let (hour, minute) = if digits.len() >= 12 { (num(8..10), num(10..12)) } else { (0, 0) };
    let second = if digits.len() == 14 { num(12..14) } else { 0 };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(format!("{text:?} is not a valid calendar time"));
    }
    let days = days_from_civil(year, month, day);
    Ok(UnixTime(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second)))
}

/// An RFC 3339 rendering in UTC, for messages.
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = UnixTime::from_system_time(self.0).0;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        write!(f, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-146_097 * 2..146_097 * 2).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn ssh_times_of_every_documented_form() {
        assert_eq!(parse_ssh_time("19700101").unwrap(), UnixTime(0));
        assert_eq!(parse_ssh_time("19700101Z").unwrap(), UnixTime(0));
        assert_eq!(parse_ssh_time("197001020000").unwrap(), UnixTime(86_400));
        assert_eq!(parse_ssh_time("20240229123456Z").unwrap(), UnixTime(1_709_210_096));
        for bad in ["2024", "20241301", "20230229", "202401011260", "2024010112", "2024-01-01", "20240101ZZ", ""] {
            assert!(parse_ssh_time(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn rfc3339_rendering() {
        let t = UnixTime(1_709_210_096).to_system_time();
        assert_eq!(Rfc3339(t).to_string(), "2024-02-29T12:34:56Z");
        let before = UnixTime(-1).to_system_time();
        assert_eq!(Rfc3339(before).to_string(), "1969-12-31T23:59:59Z");
        assert_eq!(UnixTime::from_system_time(before), UnixTime(-1));
    }
}
