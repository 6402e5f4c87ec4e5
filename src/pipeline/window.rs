//! Execution windows: stages of an environment start only during the weekly windows the
//! pipeline template declares for it (days and `HH:MM` hours in an IANA time zone).

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use crate::config::ExecutionWindow;

/// Why a window definition cannot be used (validation normally catches these earlier).
#[derive(Debug, thiserror::Error)]
#[error("execution window {field}: {message}")]
pub struct WindowError {
    /// Field at fault.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

fn weekday(day: &str) -> Option<Weekday> {
    Some(match day.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn clock(text: &str, field: &'static str) -> Result<NaiveTime, WindowError> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|e| WindowError {
        field,
        message: format!("\"{text}\": {e}"),
    })
}

/// True when `window` applies to stages of `environment`.
pub fn applies(window: &ExecutionWindow, environment: Option<&str>) -> bool {
    window.environments.is_empty()
        || environment.is_some_and(|e| window.environments.iter().any(|w| w == e))
}

/// `None` when a stage of `environment` may start at `now`; otherwise the next moment one of
/// the applicable windows opens. No applicable window means always open.
pub fn next_opening(
    windows: &[ExecutionWindow],
    environment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, WindowError> {
    let applicable: Vec<&ExecutionWindow> =
        windows.iter().filter(|w| applies(w, environment)).collect();
    if applicable.is_empty() {
        return Ok(None);
    }
    let mut earliest: Option<DateTime<Utc>> = None;
    for window in applicable {
        let tz: Tz = window.timezone.parse().map_err(|e| WindowError {
            field: "timezone",
            message: format!("\"{}\": {e}", window.timezone),
        })?;
        let start = clock(&window.start, "start")?;
        let end = clock(&window.end, "end")?;
        let days: Vec<Weekday> = window.days.iter().filter_map(|d| weekday(d)).collect();
        let local_now = now.with_timezone(&tz);
        // Look at yesterday (for windows crossing midnight) through a week ahead.
        for offset in -1..=7 {
            let date = local_now.date_naive() + Duration::days(offset);
            if !days.contains(&date.weekday()) {
                continue;
            }
            let Some(open) = tz.from_local_datetime(&date.and_time(start)).earliest() else {
                continue;
            };
            let close_date = if end <= start {
                date + Duration::days(1)
            } else {
                date
            };
            let Some(close) = tz.from_local_datetime(&close_date.and_time(end)).latest() else {
                continue;
            };
            let (open, close) = (open.with_timezone(&Utc), close.with_timezone(&Utc));
            if open <= now && now < close {
                return Ok(None);
            }
            if open > now && earliest.is_none_or(|e| open < e) {
                earliest = Some(open);
            }
        }
    }
    Ok(earliest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[&str], start: &str, end: &str, envs: &[&str]) -> ExecutionWindow {
        ExecutionWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            timezone: "Europe/Berlin".into(),
            environments: envs.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn office_hours_in_berlin() {
        let w = [window(
            &["mon", "tue", "wed", "thu"],
            "09:00",
            "16:00",
            &["production"],
        )];
        // Wednesday 2026-11-25 10:00 UTC = 11:00 in Berlin: open.
        assert_eq!(
            next_opening(&w, Some("production"), utc("2026-11-25T10:00:00Z")).expect("ok"),
            None
        );
        // Other environments are not restricted.
        assert_eq!(
            next_opening(&w, Some("staging"), utc("2026-11-27T22:00:00Z")).expect("ok"),
            None
        );
        // Thursday 16:30 Berlin: next is Monday 09:00 Berlin = 08:00 UTC.
        assert_eq!(
            next_opening(&w, Some("production"), utc("2026-11-26T15:30:00Z")).expect("ok"),
            Some(utc("2026-11-30T08:00:00Z"))
        );
        // Summer time: Monday 2026-06-29 09:00 Berlin = 07:00 UTC.
        assert_eq!(
            next_opening(&w, Some("production"), utc("2026-06-27T12:00:00Z")).expect("ok"),
            Some(utc("2026-06-29T07:00:00Z"))
        );
    }

    #[test]
    fn windows_across_midnight_and_bad_zones() {
        let w = [window(&["fri"], "22:00", "02:00", &[])];
        // Saturday 01:00 Berlin belongs to Friday's window.
        assert_eq!(
            next_opening(&w, None, utc("2026-11-28T00:00:00Z")).expect("ok"),
            None
        );
        let mut bad = window(&["mon"], "09:00", "10:00", &[]);
        bad.timezone = "Mars/Olympus".into();
        assert!(next_opening(&[bad], None, utc("2026-11-28T00:00:00Z")).is_err());
    }
}
