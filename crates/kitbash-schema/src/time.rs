//! RFC 3339 UTC timestamps (`2025-12-21T12:00:00.000Z`) from Unix milliseconds, without a date crate.

/// Formats Unix milliseconds as RFC 3339 UTC in one fixed layout, `YYYY-MM-DDTHH:MM:SS.mmmZ`:
/// always three fractional digits, also for whole seconds (`2025-12-21T12:00:01.000Z`), so a
/// consumer parses one format. (The seed's example, `…:00Z`, is valid RFC 3339 too, but a
/// format that drops the digits only when they are zero breaks fixed-layout parsers.)
pub fn rfc3339_utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
}

/// The UTC calendar date (`2025-07-01`) of Unix milliseconds.
pub fn utc_date(unix_ms: i64) -> String {
    let (y, m, d) = civil_from_days(unix_ms.div_euclid(1000).div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // 1703160000 = 2023-12-21T12:00:00Z; 1766318400 = 2025-12-21T12:00:00Z (the seed's example).
        assert_eq!(rfc3339_utc(1_766_318_400_000), "2025-12-21T12:00:00.000Z");
        assert_eq!(rfc3339_utc(1_703_160_000_250), "2023-12-21T12:00:00.250Z");
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(utc_date(1_751_328_000_000), "2025-07-01");
    }
}
