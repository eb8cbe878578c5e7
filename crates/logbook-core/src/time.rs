//! Time forms accepted anywhere a time is: RFC 3339 (`2026-11-22T10:00:00.123Z`, any offset), a bare date
//! (`2026-11-22`, midnight UTC), epoch milliseconds (`1795428000123`), and relative times: `now`, `now-15m`,
//! `now+1h`, and the bare forms `15m`, `1h`, `7d`, `2w` meaning "that long ago". Units: s, m, h, d, w.
//!
//! Internally a time is milliseconds since the Unix epoch (`i64`). Output is always RFC 3339 UTC with
//! milliseconds.

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The current time in milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Formats milliseconds as RFC 3339 UTC with exactly three fractional digits. An event's two times are each
/// formatted twice as it is written (for its hash and its stored line), so the accepted range (years 1970 to
/// 9999) is written digit by digit; anything else goes through chrono, which a test checks this against.
pub fn format_millis(millis: Millis) -> String {
    MillisText::new(millis).as_str().to_string()
}

/// A time as [`format_millis`] writes it, kept on the stack for the accepted range (years 1970 to 9999), so
/// that writing it into a larger text allocates nothing.
pub struct MillisText {
    bytes: [u8; 24],
    /// The text of a time outside the accepted range.
    other: Option<String>,
}

impl MillisText {
    pub fn new(millis: Millis) -> MillisText {
        let mut bytes = [0u8; 24];
        let other = if write_millis(millis, &mut bytes) {
            None
        } else {
            Some(match Utc.timestamp_millis_opt(millis).single() {
                Some(datetime) => datetime.to_rfc3339_opts(SecondsFormat::Millis, true),
                None => millis.to_string(),
            })
        };
        MillisText { bytes, other }
    }

    pub fn as_str(&self) -> &str {
        match &self.other {
            Some(text) => text,
            None => std::str::from_utf8(&self.bytes).expect("digits and separators are ASCII"),
        }
    }
}

/// Writes a time of the accepted range (years 1970 to 9999) as [`format_millis`] does, into `out`, and says
/// whether it did (false, and `out` untouched, for any other time).
pub fn write_millis(millis: Millis, out: &mut [u8; 24]) -> bool {
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
        return false;
    }
    let (days, in_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut put = |at: usize, value: i64, width: usize| {
        let mut value = value;
        for position in (at..at + width).rev() {
            out[position] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, hour, 2);
    put(14, minute, 2);
    put(17, second, 2);
    put(20, milli, 3);
    for (position, separator) in SEPARATORS {
        out[position] = separator;
    }
    true
}

const SEPARATORS: [(usize, u8); 7] = [
    (4, b'-'),
    (7, b'-'),
    (10, b'T'),
    (13, b':'),
    (16, b':'),
    (19, b'.'),
    (23, b'Z'),
];

/// The time [`write_millis`] wrote as `text`, or `None` when `text` is not exactly what it writes for some
/// time (another form, a date that does not exist, a time out of the accepted range).
pub fn read_millis(text: &[u8]) -> Option<Millis> {
    let text: &[u8; 24] = text.try_into().ok()?;
    if SEPARATORS
        .iter()
        .any(|&(at, separator)| text[at] != separator)
    {
        return None;
    }
    let number = |at: usize, width: usize| {
        text[at..at + width].iter().try_fold(0i64, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + i64::from(digit - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second, milli) = (
        number(11, 2)?,
        number(14, 2)?,
        number(17, 2)?,
        number(20, 3)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days since 1970-01-01 of the civil date (the inverse of the algorithm in `write_millis`).
    let year_march = year - i64::from(month <= 2);
    let era = year_march.div_euclid(400);
    let year_of_era = year_march - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let millis = days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + milli;
    // A day past the month's end (February 30th) would be read as another date: not this text.
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (day <= month_days && (MIN_MILLIS..=MAX_MILLIS).contains(&millis)).then_some(millis)
}

/// Earliest and latest times accepted (years 1970 and 9999), so that every accepted time formats cleanly.
pub const MIN_MILLIS: Millis = 0;
pub const MAX_MILLIS: Millis = 253_402_300_799_999;

/// Parses any accepted time form relative to `now`. The error says which forms are accepted.
pub fn parse_time(input: &str, now: Millis) -> Result<Millis, String> {
    let text = input.trim();
    let expected = "expected an RFC 3339 time (2026-11-22T10:00:00Z), a date (2026-11-22), epoch milliseconds, \
                    or a relative time (now, now-15m, 1h, 7d; units s, m, h, d, w)";
    if text.is_empty() {
        return Err(format!("empty time: {expected}"));
    }
    let parsed = if text == "now" {
        Some(now)
    } else if let Some(rest) = text.strip_prefix("now-") {
        parse_duration(rest).and_then(|d| now.checked_sub(d))
    } else if let Some(rest) = text.strip_prefix("now+") {
        parse_duration(rest).and_then(|d| now.checked_add(d))
    } else if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().ok()
    } else if let Some(duration) = parse_duration(text) {
        now.checked_sub(duration)
    } else if let Ok(datetime) = DateTime::parse_from_rfc3339(text) {
        Some(datetime.timestamp_millis())
    } else if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
            .map(|naive| naive.and_utc().timestamp_millis())
    } else {
        None
    };
    match parsed {
        Some(millis) if (MIN_MILLIS..=MAX_MILLIS).contains(&millis) => Ok(millis),
        Some(_) => Err(format!("time `{text}` is outside the years 1970 to 9999")),
        None => Err(format!("invalid time `{text}`: {expected}")),
    }
}

/// Parses `15m`, `1h`, `7d`, `2w`, `30s` into milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if number < 0 {
        return None;
    }
    let unit_millis: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 604_800_000,
        _ => return None,
    };
    number.checked_mul(unit_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_341_600_000; // 2026-11-22T10:00:00Z

    #[test]
    fn formats_like_chrono_across_the_accepted_range() {
        let chrono = |millis: Millis| {
            Utc.timestamp_millis_opt(millis)
                .single()
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        let mut samples = vec![
            MIN_MILLIS,
            MAX_MILLIS,
            NOW,
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
        ];
        // Every day boundary of a few leap and century years, and spread values from a fixed LCG.
        for year_start in [946_684_800_000i64, 4_102_444_800_000, 1_704_067_200_000] {
            for day in 0..367 {
                samples.push(year_start + day * 86_400_000);
                samples.push(year_start + day * 86_400_000 - 1);
            }
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            samples.push((state >> 16) as i64 % (MAX_MILLIS + 1));
        }
        for millis in samples {
            let text = format_millis(millis);
            assert_eq!(text, chrono(millis), "{millis}");
            assert_eq!(read_millis(text.as_bytes()), Some(millis), "{text}");
        }
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn reads_a_text_exactly_when_it_is_what_is_written() {
        // Every field one past its range on either side, over leap and common years.
        for year in [1969, 1970, 1999, 2000, 2023, 2024, 2100, 9999] {
            for month in 0..=13 {
                for day in [0, 1, 28, 29, 30, 31, 32] {
                    for (hour, minute, second) in
                        [(0, 0, 0), (23, 59, 59), (24, 0, 0), (0, 60, 0), (0, 0, 60)]
                    {
                        let text = format!(
                            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.999Z"
                        );
                        let read = read_millis(text.as_bytes());
                        // chrono reads a leap second (:60), which is never written.
                        let valid = chrono::DateTime::parse_from_rfc3339(&text)
                            .ok()
                            .filter(|_| second < 60)
                            .map(|t| t.timestamp_millis())
                            .filter(|m| (MIN_MILLIS..=MAX_MILLIS).contains(m));
                        assert_eq!(read, valid, "{text}");
                        if let Some(millis) = read {
                            assert_eq!(format_millis(millis), text);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reads_only_what_it_writes() {
        for text in [
            "1969-12-31T23:59:59.999Z",
            "2026-02-29T00:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-00-01T00:00:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:60:00.000Z",
            "2026-01-01T00:00:60.000Z",
            "2026-01-01T00:00:00.000+",
            "2026-01-01 00:00:00.000Z",
            "2026-01-01T00:00:00.00Z",
            "2026-01-01T00:00:0a.000Z",
            "+026-01-01T00:00:00.000Z",
        ] {
            assert_eq!(read_millis(text.as_bytes()), None, "{text}");
        }
        assert_eq!(
            read_millis(b"2024-02-29T23:59:59.999Z"),
            Some(1_709_251_199_999)
        );
        assert_eq!(
            read_millis(b"2000-02-29T00:00:00.000Z"),
            Some(951_782_400_000)
        );
        assert_eq!(read_millis(b"1900-02-29T00:00:00.000Z"), None);
        assert_eq!(read_millis(b"2100-02-29T00:00:00.000Z"), None);
        assert_eq!(read_millis(b"2023-02-29T00:00:00.000Z"), None);
        assert_eq!(read_millis(b"9999-12-31T23:59:59.999Z"), Some(MAX_MILLIS));
        assert_eq!(read_millis(b"1970-01-01T00:00:00.000Z"), Some(0));
    }

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert_eq!(parse_time("now-15m", NOW), Ok(NOW - 900_000));
        assert_eq!(parse_time("now+1h", NOW), Ok(NOW + 3_600_000));
        assert_eq!(parse_time("1h", NOW), Ok(NOW - 3_600_000));
        assert_eq!(parse_time("7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_time("2w", NOW), Ok(NOW - 14 * 86_400_000));
        assert_eq!(parse_time("30s", NOW), Ok(NOW - 30_000));
        assert_eq!(parse_time("1795341600123", NOW), Ok(1_795_341_600_123));
        assert_eq!(
            parse_time("2026-11-22T10:00:00.123Z", NOW),
            Ok(1_795_341_600_123)
        );
        assert_eq!(parse_time("2026-11-22T11:00:00+01:00", NOW), Ok(NOW));
        assert_eq!(parse_time("2026-11-22", NOW), Ok(NOW - 10 * 3_600_000));
    }

    #[test]
    fn rejects_garbage_with_the_accepted_forms() {
        for bad in [
            "",
            "yesterday",
            "now-",
            "5y",
            "-5m",
            "2026-13-01",
            "99999999999999999999",
        ] {
            let error = parse_time(bad, NOW).unwrap_err();
            assert!(error.contains("time"), "{bad}: {error}");
        }
    }

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(format_millis(1_795_341_600_123), "2026-11-22T10:00:00.123Z");
        assert_eq!(format_millis(NOW), "2026-11-22T10:00:00.000Z");
    }
}
