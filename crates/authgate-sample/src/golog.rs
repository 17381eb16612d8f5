//! Log lines in the format of Go's standard `log` package (`YYYY/MM/DD HH:MM:SS message`), so the
//! sample's output reads like the original's. Timestamps are UTC, computed here to avoid pulling
//! a date crate in for one format.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// `golog!("Starting {what} server at {addr}")` writes one timestamped line to stderr.
macro_rules! golog {
    ($($arg:tt)*) => {
        $crate::golog::write_line(format_args!($($arg)*))
    };
}
pub(crate) use golog;

pub(crate) fn write_line(message: fmt::Arguments<'_>) {
    // One eprintln! holds the stderr lock for the whole line, so concurrent lines don't interleave.
    eprintln!("{} {message}", timestamp(SystemTime::now()));
}

/// `2023/12/12 10:01:31` for the given instant, in UTC.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`, restricted to dates after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // shift the epoch to 0000-03-01, so leap days end each cycle
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        timestamp(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn formats_like_go_log() {
        assert_eq!(at(0), "1970/01/01 00:00:00");
        // The ASM doc's startup line: 2023/12/12 10:01:31.
        assert_eq!(at(1_702_375_291), "2023/12/12 10:01:31");
        assert_eq!(at(951_782_400), "2000/02/29 00:00:00");
        assert_eq!(at(951_868_799), "2000/02/29 23:59:59");
        assert_eq!(at(4_107_542_400), "2100/03/01 00:00:00");
    }
}
