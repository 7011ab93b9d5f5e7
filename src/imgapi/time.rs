//! Dates as IMGAPI writes them (`2013-01-08T20:21:17.932Z`) and as HTTP
//! writes them (`Tue, 08 Jan 2013 20:21:17 GMT`), without a date library.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ`
pub fn iso8601(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS(.sss)Z` (also without the `Z` or with a
/// `+00:00` offset) into milliseconds since the epoch.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    // Every field is unsigned digits of its own width, so no value an
    // input can carry overflows the arithmetic below.
    let num = |f: &str, width: usize| -> Option<i64> {
        (f.len() == width && f.bytes().all(|b| b.is_ascii_digit()))
            .then(|| f.parse().ok())
            .flatten()
    };
    let mut dp = date.split('-');
    let y = num(dp.next()?, 4)?;
    let mo = u32::try_from(num(dp.next()?, 2)?).ok()?;
    let d = u32::try_from(num(dp.next()?, 2)?).ok()?;
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut tp = hms.split(':');
    let h = num(tp.next()?, 2)?;
    let mi = num(tp.next()?, 2)?;
    let sec = num(tp.next()?, 2)?;
    if tp.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = format!("{:0<3}", frac.get(..3.min(frac.len()))?)
        .parse()
        .ok()?;
    let days = days_from_civil(y, mo, d);
    let total = ((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms;
    u64::try_from(total).ok()
}

/// True for the strict form IMGAPI validates `published_at` with.
pub fn is_imgapi_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let basic = b.len() >= 20
        && digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    basic
        && (s.len() == 20 && s.ends_with('Z')
            || s.len() > 21
                && b.get(19) == Some(&b'.')
                && s.ends_with('Z')
                && digits(20..s.len() - 1))
        && parse_iso8601(s).is_some()
}

/// `Tue, 08 Jan 2013 20:21:17 GMT`
pub fn http_date(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let (y, mo, d) = civil(days);
    let s = secs.rem_euclid(86_400);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD
        .get(days.rem_euclid(7) as usize)
        .copied()
        .unwrap_or("Thu");
    let mn = MO
        .get((mo as usize).saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{wd}, {d:02} {mn} {y:04} {:02}:{:02}:{:02} GMT",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let ms = 1_357_676_477_932;
        assert_eq!(iso8601(ms), "2013-01-08T20:21:17.932Z");
        assert_eq!(parse_iso8601("2013-01-08T20:21:17.932Z"), Some(ms));
        assert_eq!(parse_iso8601("2013-01-08T20:21:17Z"), Some(ms - 932));
        assert_eq!(http_date(ms), "Tue, 08 Jan 2013 20:21:17 GMT");
        assert!(is_imgapi_date("2013-01-08T20:21:17.932Z"));
        assert!(is_imgapi_date("2013-01-08T20:21:17Z"));
        assert!(!is_imgapi_date("2013-01-08"));
        assert!(!is_imgapi_date("2013-13-08T20:21:17Z"));
        assert_eq!(parse_iso8601("garbage"), None);
        // Signs and overlong fields are not dates (they overflowed once).
        for bad in [
            "2026-01-01T-9223372036854775808:00:00Z",
            "2026-01-01T00:-9223372036854775808:00Z",
            "99999999999-01-01T00:00:00Z",
            "2026-1-01T00:00:00Z",
            "+2026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
