//! Wall clock and timestamp formatting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Millis;

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub(crate) fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 UTC with second precision, e.g. `2023-11-14T22:13:20Z`.
pub fn format_millis(ms: Millis) -> String {
    // Seconds are floored, also before 1970; out of jiff's range (±9999 years) is clamped.
    let secs = ms.div_euclid(1000).clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_millis(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn extreme_values_do_not_panic() {
        assert!(!format_millis(i64::MAX).is_empty());
        assert!(!format_millis(i64::MIN).is_empty());
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_millis() > 1_577_836_800_000);
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_millis(Duration::from_secs(2)), 2000);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
    }
}
