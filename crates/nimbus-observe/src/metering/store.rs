//! The usage store: `usage.redb` with per-minute, per-hour and per-day totals of every
//! (tenant, app, revision, component), each bounded by its retention, and the budget thresholds
//! already notified. Every flush is one durable transaction.
use std::ops::Range;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::usage::Usage;
use super::{Key, MeteringError};

/// A period of totals and how long its rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Per minute, kept 2 days.
    Minute,
    /// Per hour, kept 62 days.
    Hour,
    /// Per UTC day, kept 800 days.
    Day,
}

type Rows = TableDefinition<'static, (u64, &'static str), &'static [u8]>;

const MINUTE: Rows = TableDefinition::new("usage_minute");
const HOUR: Rows = TableDefinition::new("usage_hour");
const DAY: Rows = TableDefinition::new("usage_day");
/// `budget \x1f month \x1f percent` → when it was notified (unix seconds).
const FIRED: TableDefinition<'static, &'static str, u64> = TableDefinition::new("budget_fired");

impl Granularity {
    /// Every granularity.
    pub const ALL: [Granularity; 3] = [Self::Minute, Self::Hour, Self::Day];

    /// Seconds per row.
    pub fn seconds(self) -> u64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    /// How long rows are kept, in seconds.
    pub fn retention(self) -> u64 {
        match self {
            Self::Minute => 2 * 86_400,
            Self::Hour => 62 * 86_400,
            Self::Day => 800 * 86_400,
        }
    }

    fn table(self) -> Rows {
        match self {
            Self::Minute => MINUTE,
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }

    /// The start of the row holding `at`.
    pub fn start(self, at: u64) -> u64 {
        at - at % self.seconds()
    }
}

/// One stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Start of its period, unix seconds.
    pub start: u64,
    /// Whose usage it is.
    pub key: Key,
    /// The totals.
    pub usage: Usage,
}

/// The usage database of this node.
#[derive(Debug)]
pub(crate) struct UsageStore {
    db: Database,
    path: PathBuf,
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> MeteringError {
    MeteringError::Store { path: path.to_path_buf(), reason: e.to_string() }
}

impl UsageStore {
    /// Opens (or creates) `usage.redb` in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, MeteringError> {
        std::fs::create_dir_all(dir).map_err(|e| store_error(dir, e))?;
        let path = dir.join("usage.redb");
        let db = Database::create(&path).map_err(|e| store_error(&path, e))?;
        let store = Self { db, path };
        store.write(|txn| {
            for g in Granularity::ALL {
                txn.open_table(g.table())?;
            }
            txn.open_table(FIRED)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>) -> Result<(), MeteringError> {
        let txn = self.db.begin_write().map_err(|e| store_error(&self.path, e))?;
        f(&txn).map_err(|e| store_error(&self.path, e))?;
        txn.commit().map_err(|e| store_error(&self.path, e))
    }

    /// Adds `deltas` (recorded up to `at`, unix seconds) to their minute, hour and day rows,
    /// records `fired` budget thresholds, and drops rows past their retention — one durable
    /// transaction.
    pub(crate) fn add(&self, at: u64, deltas: &[(Key, Usage)], fired: &[String]) -> Result<(), MeteringError> {
        self.write(|txn| {
            for g in Granularity::ALL {
                let mut table = txn.open_table(g.table())?;
                let start = g.start(at);
                for (key, delta) in deltas {
                    let k = key.encode();
                    let mut total = match table.get((start, k.as_str()))? {
                        Some(v) => Usage::decode(v.value()).unwrap_or_default(),
                        None => Usage::default(),
                    };
                    total.merge(delta);
                    table.insert((start, k.as_str()), total.encode().as_slice())?;
                }
                let cutoff = at.saturating_sub(g.retention());
                table.retain_in::<(u64, &str), _>(..(cutoff, ""), |_, _| false)?;
            }
            let mut table = txn.open_table(FIRED)?;
            for f in fired {
                table.insert(f.as_str(), at)?;
            }
            Ok(())
        })
    }

    /// The rows of `g` whose period starts within `range`.
    pub(crate) fn rows(&self, g: Granularity, range: Range<u64>) -> Result<Vec<Row>, MeteringError> {
        let err = |e: redb::Error| store_error(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(g.table()).map_err(|e| err(e.into()))?;
        let mut rows = Vec::new();
        for entry in table.range::<(u64, &str)>((range.start, "")..(range.end, "")).map_err(|e| err(e.into()))? {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            let (start, key) = k.value();
            if let (Some(key), Some(usage)) = (Key::decode(key), Usage::decode(v.value())) {
                rows.push(Row { start, key, usage });
            }
        }
        Ok(rows)
    }

    /// Whether the budget threshold `id` was notified already.
    pub(crate) fn fired(&self, id: &str) -> Result<bool, MeteringError> {
        let err = |e: redb::Error| store_error(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(FIRED).map_err(|e| err(e.into()))?;
        Ok(table.get(id).map_err(|e| err(e.into()))?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::usage::Measure;

    fn key(app: &str, component: &str) -> Key {
        Key { tenant: "".into(), app: app.into(), revision: "r1".into(), component: component.into() }
    }

    fn invocations(n: u64) -> Usage {
        let mut u = Usage::default();
        u.add(Measure::Invocations, n);
        u
    }

    #[test]
    fn flushes_add_up_per_period_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_800_000_000 - 1_800_000_000 % 86_400 + 3600;
        {
            let store = UsageStore::open(dir.path()).unwrap();
            store
                .add(t0 + 5, &[(key("shop", "web"), invocations(3)), (key("shop", "api"), invocations(1))], &[])
                .unwrap();
            store.add(t0 + 65, &[(key("shop", "web"), invocations(4))], &["b\x1f2027-01\x1f50".into()]).unwrap();
        }
        let store = UsageStore::open(dir.path()).unwrap();
        let minutes = store.rows(Granularity::Minute, t0..t0 + 120).unwrap();
        let web: Vec<(u64, u64)> = minutes
            .iter()
            .filter(|r| r.key.component.as_ref() == "web")
            .map(|r| (r.start, r.usage.invocations()))
            .collect();
        assert_eq!(web, vec![(t0, 3), (t0 + 60, 4)]);
        let days = store.rows(Granularity::Day, t0 - 3600..t0 + 1).unwrap();
        assert_eq!(days.iter().map(|r| r.usage.invocations()).sum::<u64>(), 8);
        assert!(store.fired("b\x1f2027-01\x1f50").unwrap());
        assert!(!store.fired("b\x1f2027-01\x1f80").unwrap());
    }

    #[test]
    fn rows_past_their_retention_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::open(dir.path()).unwrap();
        let t0 = 1_800_000_000;
        store.add(t0, &[(key("shop", "web"), invocations(1))], &[]).unwrap();
        let later = t0 + 3 * 86_400;
        store.add(later, &[(key("shop", "web"), invocations(1))], &[]).unwrap();
        assert_eq!(store.rows(Granularity::Minute, 0..u64::MAX).unwrap().len(), 1, "minutes are kept 2 days");
        assert_eq!(store.rows(Granularity::Hour, 0..u64::MAX).unwrap().len(), 2);
        assert_eq!(store.rows(Granularity::Day, 0..u64::MAX).unwrap().len(), 2);
    }
}
