//! Cron schedules with time zones: 5-field expressions (minute hour day-of-month month
//! day-of-week, Sunday = 0 or 7, as in crontab and Kubernetes CronJobs) or a macro.

use k8s_openapi::jiff::{tz::TimeZone, Timestamp, Zoned};

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// Most missed slots looked at when catching up (as a CronJob does), so a plan that was
/// suspended for years cannot spin.
const MAX_MISSED: usize = 100;

/// Parses `spec.schedule` and `spec.timeZone`; errors name the field and the problem.
pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, (String, String)> {
    let expr = schedule.trim();
    // croner knows every macro but @midnight.
    let expr = if expr.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        expr
    };
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser.parse(expr).map_err(|e| {
        (
            "spec.schedule".to_string(),
            format!("{schedule:?} is not a valid cron expression ({e}); use 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly"),
        )
    })?;
    let tz = match time_zone {
        None | Some("") => TimeZone::UTC,
        Some(name) => TimeZone::get(name).map_err(|_| {
            (
                "spec.timeZone".to_string(),
                format!("{name:?} is not a known IANA time zone (e.g. Europe/Madrid, America/New_York, UTC)"),
            )
        })?,
    };
    Ok(Schedule { cron, tz })
}

impl Schedule {
    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = Zoned::new(t, self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest slot in `(after, now]`, if any, and how many slots that range held.
    pub fn latest_due(&self, after: Timestamp, now: Timestamp) -> Option<(Timestamp, usize)> {
        let mut latest = None;
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next_after(t) {
            if next > now {
                break;
            }
            count += 1;
            latest = Some(next);
            t = next;
            if count >= MAX_MISSED {
                // Jump close to now and take the last slot from there.
                if let Ok(prev) = self
                    .cron
                    .find_previous_occurrence(&Zoned::new(now, self.tz.clone()), true)
                {
                    latest = Some(prev.timestamp().max(next));
                }
                break;
            }
        }
        latest.map(|l| (l, count))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_and_macros() {
        let s = parse("10 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:10:00Z")),
            Some(ts("2026-01-01T01:10:00Z"))
        );
        let h = parse("@hourly", None).unwrap();
        assert_eq!(
            h.next_after(ts("2026-01-01T00:10:00Z")),
            Some(ts("2026-01-01T01:00:00Z"))
        );
        let m = parse("@midnight", None).unwrap();
        assert_eq!(
            m.next_after(ts("2026-01-01T00:10:00Z")),
            Some(ts("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn sunday_is_zero_or_seven_as_in_crontab() {
        // 2026-01-04 is a Sunday.
        for expr in ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN"] {
            let s = parse(expr, None).unwrap();
            assert_eq!(
                s.next_after(ts("2026-01-01T00:00:00Z")),
                Some(ts("2026-01-04T03:00:00Z")),
                "{expr}"
            );
        }
        let weekdays = parse("0 3 * * 1-5", None).unwrap();
        assert_eq!(
            weekdays.next_after(ts("2026-01-03T00:00:00Z")),
            Some(ts("2026-01-05T03:00:00Z"))
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let (field, msg) = parse("61 * * * *", None).unwrap_err();
        assert_eq!(field, "spec.schedule");
        assert!(
            msg.starts_with("\"61 * * * *\" is not a valid cron expression"),
            "{msg}"
        );
        assert_eq!(parse("* * * * * *", None).unwrap_err().0, "spec.schedule");
        let (field, msg) = parse("@daily", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(field, "spec.timeZone");
        assert!(msg.contains("Mars/Olympus"));
    }

    #[test]
    fn time_zone_and_daylight_saving() {
        let s = parse("30 2 * * *", Some("Europe/Madrid")).unwrap();
        // Winter: UTC+1.
        assert_eq!(
            s.next_after(ts("2026-01-10T00:00:00Z")),
            Some(ts("2026-01-10T01:30:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            s.next_after(ts("2026-07-10T00:00:00Z")),
            Some(ts("2026-07-10T00:30:00Z"))
        );
        // 2026-03-29 02:30 does not exist in Madrid (02:00 jumps to 03:00): no slot that day,
        // and the schedule goes on the next day.
        let after_gap = s.next_after(ts("2026-03-28T23:00:00Z")).unwrap();
        assert!(after_gap >= ts("2026-03-29T01:00:00Z"), "{after_gap}");
        assert!(after_gap <= ts("2026-03-30T00:30:00Z"), "{after_gap}");
        // 2026-10-25 02:30 happens twice in Madrid: at most two slots, never a loop.
        let first = s.next_after(ts("2026-10-24T23:00:00Z")).unwrap();
        let second = s.next_after(first).unwrap();
        assert!(second > first);
        assert!(s.next_after(second).unwrap() >= ts("2026-10-26T00:00:00Z"));
    }

    #[test]
    fn catching_up_takes_only_the_latest_slot() {
        let s = parse("*/10 * * * *", None).unwrap();
        let (latest, n) = s
            .latest_due(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:35:00Z"))
            .unwrap();
        assert_eq!((latest, n), (ts("2026-01-01T00:30:00Z"), 3));
        assert_eq!(
            s.latest_due(ts("2026-01-01T00:30:00Z"), ts("2026-01-01T00:35:00Z")),
            None
        );
        // Years of missed slots stop counting at the cap but still find the latest.
        let (latest, n) = s
            .latest_due(ts("2020-01-01T00:00:00Z"), ts("2026-01-01T00:35:00Z"))
            .unwrap();
        assert_eq!(latest, ts("2026-01-01T00:30:00Z"));
        assert_eq!(n, MAX_MISSED);
    }
}
