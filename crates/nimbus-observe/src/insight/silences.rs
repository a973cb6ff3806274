//! Silences: an app and optional matchers on component and signal, with an end time; a firing alert they match
//! is recorded but not notified (nor is its resolution). Kept in `silences.json` (written to a
//! temporary file, fsynced and renamed), so an acknowledged silence survives a crash.
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::book::Alert;

/// Silences kept at most.
pub const MAX_SILENCES: usize = 1_000;
/// The longest a silence may last: 30 days.
pub const MAX_SILENCE_S: u64 = 30 * 24 * 3600;

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    /// 16 hex digits.
    pub id: String,
    /// The app whose alerts it silences.
    pub app: String,
    /// Only alerts of this component.
    #[serde(default)]
    pub component: Option<String>,
    /// Only alerts of this signal (`latency_p95`, `error_rate`...).
    #[serde(default)]
    pub signal: Option<String>,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Who created it (the token's id, or `local`).
    pub created_by: String,
    /// When it was created (Unix ms).
    pub created_at: u64,
    /// When it ends (Unix ms).
    pub ends_at: u64,
}

/// A silence to create (for the app it is created under: every alert of the app matching the
/// component and signal given, all of them without).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Only alerts of this component.
    #[serde(default)]
    pub component: Option<String>,
    /// Only alerts of this signal.
    #[serde(default)]
    pub signal: Option<String>,
    /// How long it lasts, in seconds (1 to 2,592,000: 30 days).
    pub duration_s: u64,
    /// Why (at most 1,000 characters).
    #[serde(default)]
    pub comment: String,
}

/// Why a silence was refused.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// It lasts too long, or says too much.
    #[error("{0}")]
    Invalid(String),
    /// Too many silences.
    #[error("{MAX_SILENCES} silences exist; delete some (`nimbus alerts silences`, `nimbus alerts unsilence ID`)")]
    Full,
    /// It could not be written to disk (it was not created).
    #[error("could not write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Silence {
    /// Whether it holds at `now` and matches `alert`.
    pub fn matches(&self, alert: &Alert, now: u64) -> bool {
        let is = |m: &Option<String>, v: &str| m.as_deref().is_none_or(|m| m == v);
        now < self.ends_at
            && self.app == alert.app
            && is(&self.component, &alert.component)
            && is(&self.signal, &alert.signal)
    }
}

impl NewSilence {
    /// Checks it; the silence of `app` it makes.
    pub(crate) fn validate(self, app: &str, id: String, created_by: String, now: u64) -> Result<Silence, SilenceError> {
        if !(1..=MAX_SILENCE_S).contains(&self.duration_s) {
            return Err(SilenceError::Invalid(format!(
                "duration_s must be between 1 and {MAX_SILENCE_S} (30 days), got {}",
                self.duration_s
            )));
        }
        for v in [&self.component, &self.signal].into_iter().flatten() {
            if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                return Err(SilenceError::Invalid(format!(
                    "matcher {v:?} must be 1 to 128 characters without control characters"
                )));
            }
        }
        if self.comment.chars().count() > 1_000 {
            return Err(SilenceError::Invalid("comment is longer than 1,000 characters".into()));
        }
        Ok(Silence {
            id,
            app: app.to_string(),
            component: self.component,
            signal: self.signal,
            comment: self.comment,
            created_by,
            created_at: now,
            ends_at: now + self.duration_s * 1000,
        })
    }
}

/// The silences and where they are kept.
#[derive(Debug, Default)]
pub(crate) struct Silences {
    file: Option<PathBuf>,
    list: Vec<Silence>,
}

impl Silences {
    /// Reads `file` (none yet: no silences; unreadable: logged, none).
    pub(crate) fn open(file: Option<PathBuf>) -> Self {
        let list = file
            .as_ref()
            .and_then(|f| match std::fs::read(f) {
                Ok(bytes) => serde_json::from_slice::<Vec<Silence>>(&bytes)
                    .inspect_err(|e| tracing::error!(file = %f.display(), error = %e, "silences file unreadable; starting without silences"))
                    .ok(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::error!(file = %f.display(), error = %e, "silences file unreadable; starting without silences");
                    None
                }
            })
            .unwrap_or_default();
        Self { file, list }
    }

    pub(crate) fn active(&self, now: u64) -> impl Iterator<Item = &Silence> {
        self.list.iter().filter(move |s| s.ends_at > now)
    }

    pub(crate) fn silenced(&self, alert: &Alert, now: u64) -> bool {
        self.list.iter().any(|s| s.matches(alert, now))
    }

    /// Adds `silence` (dropping expired ones), durably before it returns.
    pub(crate) fn add(&mut self, silence: Silence, now: u64) -> Result<(), SilenceError> {
        let mut next: Vec<Silence> = self.list.iter().filter(|s| s.ends_at > now).cloned().collect();
        if next.len() >= MAX_SILENCES {
            return Err(SilenceError::Full);
        }
        next.push(silence);
        self.save(&next)?;
        self.list = next;
        Ok(())
    }

    /// Removes the silence `id` of `app`; whether it existed.
    pub(crate) fn remove(&mut self, app: &str, id: &str) -> Result<bool, SilenceError> {
        let next: Vec<Silence> = self.list.iter().filter(|s| s.id != id || s.app != app).cloned().collect();
        if next.len() == self.list.len() {
            return Ok(false);
        }
        self.save(&next)?;
        self.list = next;
        Ok(true)
    }

    fn save(&self, list: &[Silence]) -> Result<(), SilenceError> {
        let Some(path) = &self.file else { return Ok(()) };
        let io = |source| SilenceError::Io { path: path.clone(), source };
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(list).expect("silences serialize")).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::book::tests::alert;

    fn new(component: Option<&str>, duration_s: u64) -> NewSilence {
        NewSilence { component: component.map(str::to_string), signal: None, duration_s, comment: "deploying".into() }
    }

    #[test]
    fn a_silence_matches_its_alerts_until_it_ends() {
        let s = new(Some("api"), 60).validate("shop", "s1".into(), "t".into(), 1_000).unwrap();
        assert!(s.matches(&alert("api", 7.0), 1_000));
        let other_app = new(Some("api"), 60).validate("bank", "s2".into(), "t".into(), 1_000).unwrap();
        assert!(!other_app.matches(&alert("api", 7.0), 1_000), "another app");
        assert!(!s.matches(&alert("front", 7.0), 1_000), "another component");
        assert!(!s.matches(&alert("api", 7.0), 61_000), "ended");
    }

    #[test]
    fn silences_that_last_too_long_or_match_nonsense_are_refused() {
        assert!(new(None, 60).validate("shop", "s".into(), "t".into(), 0).is_ok(), "a whole app");
        assert!(new(None, 0).validate("shop", "s".into(), "t".into(), 0).is_err());
        assert!(new(None, MAX_SILENCE_S + 1).validate("shop", "s".into(), "t".into(), 0).is_err());
        assert!(new(Some("a\nb"), 60).validate("shop", "s".into(), "t".into(), 0).is_err());
    }

    #[test]
    fn silences_survive_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("silences.json");
        let mut s = Silences::open(Some(file.clone()));
        s.add(new(None, 60).validate("shop", "s1".into(), "t".into(), 0).unwrap(), 0).unwrap();
        s.add(new(None, 60).validate("bank", "s2".into(), "t".into(), 0).unwrap(), 0).unwrap();
        let mut reopened = Silences::open(Some(file.clone()));
        assert_eq!(reopened.active(0).count(), 2);
        assert!(!reopened.remove("bank", "s1").unwrap(), "only the app's own");
        assert!(reopened.remove("shop", "s1").unwrap());
        assert!(!reopened.remove("shop", "s1").unwrap());
        assert_eq!(Silences::open(Some(file)).active(0).map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s2"]);
    }
}
