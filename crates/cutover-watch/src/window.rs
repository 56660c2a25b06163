//! Maintenance windows: when `cutover watch` may apply on its own. A window is a span of
//! local time on some days of the week, in a time zone (`{ days: [sat, sun], from: "02:00",
//! to: "05:00", tz: Europe/Berlin }`); one whose `to` is not after its `from` runs past
//! midnight, and belongs to the day it starts. No windows: always open.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// One window, checked: see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub from: Time,
    pub to: Time,
    pub tz: TimeZone,
}

impl Window {
    /// Reads one window; the error says which part is wrong.
    pub fn parse(days: &[String], from: &str, to: &str, tz: &str) -> Result<Window, String> {
        let days = days
            .iter()
            .map(|d| weekday(d).ok_or_else(|| format!("`{d}` is not a day (mon … sun)")))
            .collect::<Result<Vec<_>, _>>()?;
        let time = |t: &str| {
            t.parse::<Time>()
                .map_err(|_| format!("`{t}` is not a time of day (HH:MM)"))
        };
        let tz = TimeZone::get(tz).map_err(|e| format!("time zone `{tz}`: {e}"))?;
        Ok(Window {
            days,
            from: time(from)?,
            to: time(to)?,
            tz,
        })
    }

    /// Whether `at` is inside this window.
    pub fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let t = local.time();
        let overnight = self.to <= self.from;
        let today = self.days.contains(&local.weekday());
        let yesterday = self.days.contains(&local.weekday().previous());
        if overnight {
            (today && t >= self.from) || (yesterday && t < self.to)
        } else {
            today && t >= self.from && t < self.to
        }
    }

    /// When this window next opens at or after `at` (within two weeks).
    fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        let local = at.to_zoned(self.tz.clone());
        (0..15).find_map(|n| {
            let day = local.date().checked_add(n.days()).ok()?;
            if !self.days.contains(&day.weekday()) {
                return None;
            }
            let start: Zoned = day.to_datetime(self.from).to_zoned(self.tz.clone()).ok()?;
            (start.timestamp() >= at).then(|| start.timestamp())
        })
    }
}

fn weekday(d: &str) -> Option<Weekday> {
    Some(match d.to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// Whether an automatic apply may run at `at`: inside any window, or no windows at all.
pub fn open(windows: &[Window], at: Timestamp) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(at))
}

/// When the next window opens after `at`, if any does within two weeks.
pub fn next_open(windows: &[Window], at: Timestamp) -> Option<Timestamp> {
    windows.iter().filter_map(|w| w.next_open(at)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_window_is_local_time_on_its_days_in_its_zone() {
        // 2026-12-05 is a Saturday; Berlin is UTC+1 in December.
        let w = Window::parse(
            &["sat".into(), "sun".into()],
            "02:00",
            "05:00",
            "Europe/Berlin",
        )
        .expect("valid");
        assert!(w.contains(ts("2026-12-05T01:30:00Z")), "02:30 in Berlin");
        assert!(
            !w.contains(ts("2026-12-05T04:00:00Z")),
            "05:00 in Berlin: closed"
        );
        assert!(!w.contains(ts("2026-12-04T01:30:00Z")), "a Friday");
        assert_eq!(
            next_open(&[w], ts("2026-12-04T12:00:00Z")),
            Some(ts("2026-12-05T01:00:00Z"))
        );
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let w = Window::parse(&["fri".into()], "22:00", "02:00", "UTC").expect("valid");
        assert!(w.contains(ts("2026-12-04T23:00:00Z")), "Friday night");
        assert!(
            w.contains(ts("2026-12-05T01:00:00Z")),
            "early Saturday, still Friday's"
        );
        assert!(
            !w.contains(ts("2026-12-05T23:00:00Z")),
            "Saturday night is not Friday's"
        );
        assert!(
            open(&[], ts("2026-12-05T23:00:00Z")),
            "no windows: always open"
        );
    }

    #[test]
    fn a_bad_day_time_or_zone_is_named() {
        let e = Window::parse(&["someday".into()], "02:00", "03:00", "UTC").expect_err("day");
        assert!(e.contains("`someday` is not a day"), "{e}");
        let e = Window::parse(&["mon".into()], "2am", "03:00", "UTC").expect_err("time");
        assert!(e.contains("`2am` is not a time of day"), "{e}");
        let e = Window::parse(&["mon".into()], "02:00", "03:00", "Mars/Olympus").expect_err("tz");
        assert!(e.contains("time zone `Mars/Olympus`"), "{e}");
    }
}
