//! Cron schedules of `[[trigger.cron]]`: the expression and the time zone it is read in, each
//! parsed once when the manifest is read.
use std::fmt;
use std::str::FromStr;

const SCHEDULE_HINT: &str = "write 5 fields (`*/5 * * * *`), 6 with seconds first (`0 */5 * * * *`), or `@hourly`";

/// A cron expression: 5 fields (minute precision) or 6 with seconds first; `@daily` and friends.
#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
}

crate::value::string_value!(CronExpr, SCHEDULE_HINT, |c| c.text.clone());

impl CronExpr {
    /// Parses an expression, or says what is wrong with it.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let cron = croner::Cron::from_str(expression).map_err(|e| format!("schedule `{expression}`: {e}"))?;
        Ok(Self { text: expression.to_string(), cron })
    }

    /// The parsed expression.
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.text).finish()
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An IANA time zone, e.g. `Europe/Berlin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(pub chrono_tz::Tz);

crate::value::string_value!(TimeZone, "use an IANA zone such as `Europe/Berlin` or `UTC`", |z| z.0.name().to_string());

impl TimeZone {
    /// Parses a zone name, or says it is unknown.
    pub fn parse(zone: &str) -> Result<Self, String> {
        chrono_tz::Tz::from_str(zone).map(Self).map_err(|_| format!("unknown time zone `{zone}`"))
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// A cron schedule with its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The parsed expression.
    pub cron: croner::Cron,
    /// The zone it is read in.
    pub zone: chrono_tz::Tz,
}

impl Schedule {
    /// Parses a cron expression (5 fields, or 6 with seconds first; `@daily` and friends) and an
    /// optional IANA zone (default UTC).
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Self, String> {
        let cron = CronExpr::parse(expression)?;
        let zone = zone.map(TimeZone::parse).transpose()?;
        Ok(Self::new(&cron, zone))
    }

    /// The schedule of an expression in a zone (default UTC).
    pub fn new(cron: &CronExpr, zone: Option<TimeZone>) -> Self {
        Self { cron: cron.cron.clone(), zone: zone.map_or(chrono_tz::UTC, |z| z.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert!(Schedule::parse("0 */5 * * * *", None).is_ok());
        assert!(Schedule::parse("*/5 * * * *", Some("Europe/Berlin")).is_ok());
        assert!(Schedule::parse("@daily", None).is_ok());
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn schedules_serialize_as_written() {
        let cron = CronExpr::parse("@daily").unwrap();
        assert_eq!(String::from(cron), "@daily");
        assert_eq!(String::from(TimeZone::parse("Europe/Berlin").unwrap()), "Europe/Berlin");
    }
}
