//! Metering: what every component of every revision uses, durably aggregated, costed by a price
//! book, and held to budgets.
//!
//! Request paths record into a component's [`UsageMeter`] (atomics only): function instances
//! (count, lifetime, peak memory × lifetime), the time their invocations spent on a worker
//! thread ([`Busy`]), service requests and each service instance's CPU and sampled memory,
//! bytes of outbound calls, events published and KV operations. A flush thread takes what was
//! recorded every flush interval (`--meter-flush`, default 10 s) and adds it to per-minute,
//! per-hour and per-day rows in `usage.redb` in one durable transaction: `kill -9` loses at most
//! what was recorded since the last flush. Rows are bounded by their retention (minutes 2 days,
//! hours 62 days, days 800 days), so the store grows with the number of components, not with
//! traffic.
//!
//! After each flush the [budgets](Budget) are evaluated against the month's cost: a threshold
//! reached is notified once a month (a `dev.nimbus.budget.threshold` CloudEvent through the
//! alert sinks; the store records it in the same transaction as the usage that crossed it), and
//! a budget with `throttle = true` at 100 % closes its apps' gate, which the gateway checks
//! before admitting a request (429). This module does not serve HTTP or decide what a request
//! is; the gateway, executors and supervisor record, the control API reports.
//!
//! ```no_run
//! # fn demo() -> Result<(), nimbus_observe::metering::MeteringError> {
//! use nimbus_observe::metering::{CostConfig, Dimension, Key, Metering, MeteringConfig};
//!
//! let metering = Metering::open(MeteringConfig {
//!     dir: ".nimbus".into(),
//!     flush: std::time::Duration::from_secs(10),
//!     cost: CostConfig::example(),
//!     node: "local".into(),
//! }, None)?;
//! let meter = metering.meter(Key::new("", "shop", "r1", "web"));
//! meter.instance_ended(std::time::Duration::from_millis(12), 2 << 20);
//! metering.flush_now()?;
//! let today = chrono::Utc::now().date_naive();
//! let report = metering.report(today, today, &[Dimension::App], None)?;
//! println!("{}", report.to_csv());
//! # Ok(()) }
//! ```
mod budgets;
mod counters;
mod prices;
mod report;
mod store;
mod usage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{Datelike, NaiveDate};

pub use budgets::{Budget, BudgetStatus};
pub use prices::{Cost, CostConfig, EXAMPLE as EXAMPLE_CONFIG, PriceBook};
pub use report::{CostReport, CostRow, Dimension, UsageView};
pub use store::Granularity;
pub use usage::{Busy, MEASURES, Measure, Usage, UsageMeter};

use crate::insight::Insight;
use usage::{Cell, Metered};

/// The default time between two flushes.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(10);

/// The longest report, in days (the retention of day rows).
const MAX_REPORT_DAYS: i64 = 800;

/// What went wrong metering.
#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    /// The cost configuration is not valid.
    #[error("{origin}: {reason}")]
    Config {
        /// The file (or what else it came from).
        origin: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// The usage store failed.
    #[error("the usage store {path}: {reason}")]
    Store {
        /// Its file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A report was asked for a range it cannot cover.
    #[error("{0}")]
    Range(String),
}

/// Whose usage it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The app's `tenant` label (empty without one).
    pub tenant: Arc<str>,
    /// The app.
    pub app: Arc<str>,
    /// The revision (`local` under `nimbus up`).
    pub revision: Arc<str>,
    /// The component.
    pub component: Arc<str>,
}

impl Key {
    /// The key of `component` of `revision` of `app` of `tenant`.
    pub fn new(tenant: &str, app: &str, revision: &str, component: &str) -> Self {
        Self { tenant: tenant.into(), app: app.into(), revision: revision.into(), component: component.into() }
    }

    /// The stored form: the four names joined by U+001F (names never contain it).
    fn encode(&self) -> String {
        format!("{}\u{1f}{}\u{1f}{}\u{1f}{}", self.tenant, self.app, self.revision, self.component)
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split('\u{1f}');
        let key = Self::new(parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        parts.next().is_none().then_some(key)
    }
}

/// Whether an app's new requests are refused, and why.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    why: Mutex<Option<Arc<str>>>,
}

impl Gate {
    pub(crate) fn closed(&self) -> Option<Arc<str>> {
        if !self.closed.load(Ordering::Relaxed) {
            return None;
        }
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, why: Option<&str>) {
        let mut slot = self.why.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_deref() != why {
            *slot = why.map(Arc::from);
        }
        self.closed.store(why.is_some(), Ordering::Relaxed);
    }
}

/// The apps and tenants whose budgets' hard limits are reached, and why.
#[derive(Debug, Default)]
struct Closed {
    apps: HashMap<Arc<str>, Arc<str>>,
    tenants: HashMap<Arc<str>, Arc<str>>,
}

impl Closed {
    fn why(&self, key: &Key) -> Option<Arc<str>> {
        self.apps.get(&key.app).or_else(|| self.tenants.get(&key.tenant).filter(|_| !key.tenant.is_empty())).cloned()
    }
}

/// How a node meters.
#[derive(Debug, Clone)]
pub struct MeteringConfig {
    /// Where `usage.redb` lives.
    pub dir: PathBuf,
    /// The time between two flushes: at most what `kill -9` loses.
    pub flush: Duration,
    /// Prices and budgets.
    pub cost: CostConfig,
    /// The node's name, in notifications' `source`.
    pub node: String,
}

struct Shared {
    store: store::UsageStore,
    cells: Mutex<HashMap<Key, Arc<Metered>>>,
    gates: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    cost: CostConfig,
    flush: Duration,
    node: String,
    status: Mutex<Vec<BudgetStatus>>,
    closed: Mutex<Closed>,
    counters: Option<counters::Counters>,
    notify: Mutex<Option<Insight>>,
    runtime: Option<tokio::runtime::Handle>,
    /// One flush at a time.
    flushing: Mutex<()>,
    /// Dropped with the last handle: wakes the flush thread to end.
    _stop: std::sync::mpsc::SyncSender<()>,
}

/// The node's metering. Cheap to clone; the flush thread ends (after a last flush) when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Metering(Arc<Shared>);

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").field("store", &self.0.store).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An amount of money: cents, or more digits for amounts under 1.
fn money(x: f64) -> String {
    if x.abs() >= 1.0 || x == 0.0 { format!("{x:.2}") } else { format!("{x:.6}") }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The first second of the UTC month holding `at`, and the month as `YYYY-MM`.
fn month_of(at: u64) -> (u64, String) {
    let date =
        chrono::DateTime::from_timestamp(i64::try_from(at).unwrap_or(i64::MAX), 0).unwrap_or_default().date_naive();
    let first = date.with_day(1).unwrap_or(date);
    (day_start(first), first.format("%Y-%m").to_string())
}

fn day_start(date: NaiveDate) -> u64 {
    u64::try_from(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp()).unwrap_or(0)
}

impl Metering {
    /// Opens the usage store and starts the flush thread; with `metrics`, usage is also counted
    /// in its OpenMetrics families.
    pub fn open(config: MeteringConfig, metrics: Option<&crate::Metrics>) -> Result<Self, MeteringError> {
        let store = store::UsageStore::open(&config.dir)?;
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(0);
        let shared = Arc::new(Shared {
            store,
            cells: Mutex::default(),
            gates: Mutex::default(),
            cost: config.cost,
            flush: config.flush,
            node: config.node,
            status: Mutex::default(),
            closed: Mutex::default(),
            counters: metrics.map(counters::Counters::register),
            notify: Mutex::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            flushing: Mutex::default(),
            _stop: stop,
        });
        let metering = Self(shared);
        // Budgets and gates as the store has them, before the first flush.
        metering.flush_now()?;
        let weak = Arc::downgrade(&metering.0);
        std::thread::Builder::new()
            .name("nimbus-metering".into())
            .spawn(move || flush_loop(&weak, &stopped, config.flush))
            .map_err(|e| MeteringError::Store {
                path: config.dir,
                reason: format!("cannot start the flush thread: {e}"),
            })?;
        Ok(metering)
    }

    /// Also notify budget thresholds through `insight`'s sinks (else the log only).
    pub fn notify_through(&self, insight: Insight) {
        *lock(&self.0.notify) = Some(insight);
    }

    /// The meter of `key` (the same cell for every handle of one key).
    pub fn meter(&self, key: Key) -> UsageMeter {
        let gate = lock(&self.0.gates)
            .entry(key.app.clone())
            .or_insert_with(|| {
                let gate = Gate::default();
                gate.set(lock(&self.0.closed).why(&key).as_deref());
                Arc::new(gate)
            })
            .clone();
        let mut cells = lock(&self.0.cells);
        let metered = cells.entry(key).or_insert_with(|| Arc::new(Metered { cell: Cell::default(), gate })).clone();
        UsageMeter::new(metered)
    }

    /// The time between two flushes.
    pub fn flush_interval(&self) -> Duration {
        self.0.flush
    }

    /// The price book.
    pub fn prices(&self) -> &PriceBook {
        &self.0.cost.prices
    }

    /// Where each budget stands (as of the last flush).
    pub fn budgets(&self) -> Vec<BudgetStatus> {
        lock(&self.0.status).clone()
    }

    /// Writes what was recorded now (the flush thread does every interval).
    pub fn flush_now(&self) -> Result<(), MeteringError> {
        self.0.flush()
    }

    /// The usage of the UTC days `from` to `to` (inclusive) as of the last flush, grouped by
    /// `by`, of `app` only if given.
    pub fn report(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        by: &[Dimension],
        app: Option<&str>,
    ) -> Result<CostReport, MeteringError> {
        let days = (to - from).num_days();
        if days < 0 {
            return Err(MeteringError::Range(format!("the range ends ({to}) before it begins ({from})")));
        }
        if days >= MAX_REPORT_DAYS {
            return Err(MeteringError::Range(format!(
                "{} days asked; day totals are kept {MAX_REPORT_DAYS} days",
                days + 1
            )));
        }
        let range = day_start(from)..day_start(to) + 86_400;
        let mut rows = self.0.store.rows(Granularity::Day, range)?;
        rows.retain(|r| app.is_none_or(|a| *r.key.app == *a));
        Ok(report::build(&rows, by, &self.0.cost.prices, from.to_string(), to.to_string()))
    }
}

fn flush_loop(shared: &Weak<Shared>, stopped: &std::sync::mpsc::Receiver<()>, every: Duration) {
    loop {
        match stopped.recv_timeout(every) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(shared) = shared.upgrade() else { return };
        if let Err(e) = shared.flush() {
            tracing::warn!(target: "nimbus::metering", error = %e, "usage not flushed; retrying at the next flush");
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(target: "nimbus::metering", error = %e, "the last usage was not flushed");
        }
    }
}

impl Shared {
    fn flush(&self) -> Result<(), MeteringError> {
        let _one = lock(&self.flushing);
        let now = unix_now();
        let mut taken = Vec::new();
        lock(&self.cells).retain(|key, metered| {
            let usage = metered.cell.take();
            let alone = Arc::strong_count(metered) == 1;
            if !usage.is_empty() {
                taken.push((key.clone(), metered.clone(), usage));
            }
            !alone
        });
        let deltas: Vec<(Key, Usage)> = taken.iter().map(|(k, _, u)| (k.clone(), *u)).collect();
        let budgets = &self.cost.budgets;
        let (status, crossed) = if budgets.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let (month_start, month) = month_of(now);
            let month_rows = self.store.rows(Granularity::Day, month_start..u64::MAX);
            let month_rows = match month_rows {
                Ok(rows) => rows,
                Err(e) => return Err(self.give_back(&taken, e)),
            };
            let mut usage: Vec<(Key, Usage)> = month_rows.into_iter().map(|r| (r.key, r.usage)).collect();
            usage.extend(deltas.iter().cloned());
            let status = budgets::evaluate(budgets, &self.cost.prices, &month, &usage);
            let mut crossed = Vec::new();
            for s in &status {
                for p in &s.reached {
                    let id = s.threshold_id(*p);
                    match self.store.fired(&id) {
                        Ok(false) => crossed.push((s.clone(), *p, id)),
                        Ok(true) => {}
                        Err(e) => return Err(self.give_back(&taken, e)),
                    }
                }
            }
            (status, crossed)
        };
        if !deltas.is_empty() || !crossed.is_empty() {
            let ids: Vec<String> = crossed.iter().map(|(_, _, id)| id.clone()).collect();
            if let Err(e) = self.store.add(now, &deltas, &ids) {
                return Err(self.give_back(&taken, e));
            }
        }
        if let Some(c) = &self.counters {
            c.add(&deltas, &self.cost.prices);
        }
        self.close_gates(&status);
        *lock(&self.status) = status;
        for (status, percent, _) in crossed {
            self.notify(&status, percent);
        }
        Ok(())
    }

    /// Puts back what a failed flush took.
    fn give_back(&self, taken: &[(Key, Arc<Metered>, Usage)], e: MeteringError) -> MeteringError {
        for (_, metered, usage) in taken {
            metered.cell.give_back(usage);
        }
        e
    }

    /// Closes the gates of the apps of throttled budgets, opens the others.
    fn close_gates(&self, status: &[BudgetStatus]) {
        let mut closed = Closed::default();
        for s in status.iter().filter(|s| s.throttled) {
            let why: Arc<str> = format!(
                "{} reached its monthly budget of {} {cur} ({} {cur} spent in {}); new requests are refused until the month ends or the budget is raised",
                s.budget,
                money(s.monthly),
                money(s.spent),
                s.month,
                cur = s.currency
            )
            .into();
            for app in &s.apps {
                closed.apps.insert(app.as_str().into(), why.clone());
            }
            if let Some(tenant) =
                self.cost.budgets.iter().find(|b| b.name() == s.budget).and_then(|b| b.tenant.as_deref())
            {
                closed.tenants.insert(tenant.into(), why);
            }
        }
        let tenants: HashMap<Arc<str>, Arc<str>> =
            lock(&self.cells).keys().map(|k| (k.app.clone(), k.tenant.clone())).collect();
        for (app, gate) in lock(&self.gates).iter() {
            let tenant = tenants.get(app).cloned().unwrap_or_default();
            gate.set(
                closed.why(&Key { tenant, app: app.clone(), revision: "".into(), component: "".into() }).as_deref(),
            );
        }
        *lock(&self.closed) = closed;
    }

    /// Notifies that `status` reached `percent`.
    fn notify(&self, status: &BudgetStatus, percent: u32) {
        let summary = format!(
            "{} reached {percent} % of its monthly budget: {} of {} {} spent in {}{}",
            status.budget,
            money(status.spent),
            money(status.monthly),
            status.currency,
            status.month,
            if status.throttled { "; new requests are refused" } else { "" }
        );
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let id = status.threshold_id(percent);
        let event = serde_json::json!({
            "specversion": "1.0",
            "type": "dev.nimbus.budget.threshold",
            "source": format!("nimbus://{}/budgets", self.node),
            "id": format!("{:016x}", crate::insight::fingerprint(&id)),
            "time": time,
            "subject": status.budget,
            "datacontenttype": "application/json",
            "data": {
                "budget": status.budget,
                "month": status.month,
                "threshold_percent": percent,
                "percent": status.percent,
                "spent": status.spent,
                "monthly": status.monthly,
                "currency": status.currency,
                "throttled": status.throttled,
                "apps": status.apps,
                "summary": summary,
            },
        });
        let insight = lock(&self.notify).clone();
        match (insight, &self.runtime) {
            (Some(insight), Some(rt)) => {
                rt.spawn(async move { insight.deliver(&event).await });
            }
            _ => tracing::warn!(target: "nimbus::alerts", kind = "dev.nimbus.budget.threshold", "{summary}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, cost: &str) -> MeteringConfig {
        MeteringConfig {
            dir: dir.to_path_buf(),
            flush: Duration::from_secs(3600),
            cost: CostConfig::parse(cost, "test").unwrap(),
            node: "test".into(),
        }
    }

    #[test]
    fn a_hard_limit_closes_only_its_apps_gate_and_each_threshold_fires_once() {
        let dir = tempfile::tempdir().unwrap();
        let cost = "[prices]\ncurrency = \"USD\"\nper_million_invocations = 1000000.0\n\
                    [[budget]]\napp = \"shop\"\nmonthly = 4.0\nthrottle = true\n";
        let m = Metering::open(config(dir.path(), cost), None).unwrap();
        let shop = m.meter(Key::new("", "shop", "r1", "web"));
        let blog = m.meter(Key::new("", "blog", "r1", "web"));
        for _ in 0..2 {
            shop.instance_ended(Duration::from_millis(1), 0);
        }
        blog.instance_ended(Duration::from_millis(1), 0);
        m.flush_now().unwrap();
        assert_eq!(m.budgets()[0].reached, vec![50]);
        assert!(shop.throttled().is_none());
        for _ in 0..2 {
            shop.instance_ended(Duration::from_millis(1), 0);
        }
        m.flush_now().unwrap();
        let why = shop.throttled().expect("4 of 4 USD spent closes the gate");
        assert!(why.contains("app shop reached its monthly budget of 4.00 USD"), "{why}");
        assert!(blog.throttled().is_none(), "another app is not throttled");
        // A new revision of the app meets the same closed gate; a restart keeps it closed and
        // does not notify again.
        assert!(m.meter(Key::new("", "shop", "r2", "web")).throttled().is_some());
        drop((shop, blog, m));
        let m = Metering::open(config(dir.path(), cost), None).unwrap();
        assert!(m.meter(Key::new("", "shop", "r1", "web")).throttled().is_some());
        let s = &m.budgets()[0];
        assert_eq!((s.reached.clone(), s.spent), (vec![50, 80, 100], 4.0));
        for p in [50, 80, 100] {
            assert!(m.0.store.fired(&s.threshold_id(p)).unwrap(), "{p} % was recorded as notified");
        }
    }

    #[test]
    fn usage_recorded_before_a_flush_is_reported_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let cost = "[prices]\ncurrency = \"EUR\"\nper_million_invocations = 2.0\n";
        {
            let m = Metering::open(config(dir.path(), cost), None).unwrap();
            let web = m.meter(Key::new("acme", "shop", "r1", "web"));
            for _ in 0..250 {
                web.instance_ended(Duration::from_millis(4), 1 << 20);
            }
            web.egress(1 << 20);
            m.flush_now().unwrap();
            web.egress(5);
            // Dropping the last handle flushes what is left.
        }
        let m = Metering::open(config(dir.path(), cost), None).unwrap();
        let today = chrono::Utc::now().date_naive();
        let r = m.report(today, today, &[Dimension::Tenant, Dimension::Component], None).unwrap();
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].tenant.as_deref(), Some("acme"));
        assert_eq!(r.total.usage.invocations, 250);
        assert_eq!(r.total.usage.egress_bytes, (1 << 20) + 5);
        assert!((r.total.cost.invocations - 0.0005).abs() < 1e-12);
        assert_eq!(r.currency, "EUR");
        assert!(m.report(today, today.pred_opt().unwrap(), &[], None).is_err());
        assert_eq!(m.report(today, today, &[], Some("other")).unwrap().total.usage.invocations, 0);
    }
}
