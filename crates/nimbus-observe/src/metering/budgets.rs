//! Budgets: a monthly amount per app or tenant, thresholds notified once a month, and an
//! optional hard limit that closes the app's gate (new requests get 429).
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Key;
use super::prices::PriceBook;
use super::usage::Usage;

/// The largest monthly amount and price accepted: costs stay finite numbers.
pub(crate) const MAX_AMOUNT: f64 = 1e12;

fn default_alert_at() -> Vec<u32> {
    vec![50, 80, 100]
}

/// One budget of the cost configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The app it covers (or `tenant`).
    #[serde(default)]
    pub app: Option<String>,
    /// The tenant it covers: every app labelled `tenant = NAME` (or `app`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The amount per calendar month (UTC), in the price book's currency.
    pub monthly: f64,
    /// Percentages of `monthly` notified once a month each.
    #[serde(default = "default_alert_at")]
    pub alert_at: Vec<u32>,
    /// At 100 %, refuse new requests to the app(s) with 429 until the month ends.
    #[serde(default)]
    pub throttle: bool,
}

impl Budget {
    /// `app NAME` or `tenant NAME`.
    pub fn name(&self) -> String {
        match (&self.app, &self.tenant) {
            (Some(app), _) => format!("app {app}"),
            (None, Some(tenant)) => format!("tenant {tenant}"),
            (None, None) => String::new(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.app.is_some() == self.tenant.is_some() {
            return Err("each [[budget]] names exactly one of `app` or `tenant`".into());
        }
        if !self.monthly.is_finite() || self.monthly <= 0.0 || self.monthly > MAX_AMOUNT {
            return Err(format!(
                "budget for {}: monthly = {} must be a positive amount of at most {MAX_AMOUNT:e}",
                self.name(),
                self.monthly
            ));
        }
        if let Some(bad) = self.alert_at.iter().find(|p| **p == 0 || **p > 1000) {
            return Err(format!(
                "budget for {}: alert_at has {bad}; thresholds are percentages from 1 to 1000",
                self.name()
            ));
        }
        Ok(())
    }

    /// Whether `key`'s usage counts against this budget.
    pub(crate) fn covers(&self, key: &Key) -> bool {
        match (&self.app, &self.tenant) {
            (Some(app), _) => *app == *key.app,
            (None, Some(tenant)) => *tenant == *key.tenant,
            (None, None) => false,
        }
    }
}

/// Where a budget stands this month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetStatus {
    /// `app NAME` or `tenant NAME`.
    pub budget: String,
    /// The month, `YYYY-MM` (UTC).
    pub month: String,
    /// The monthly amount.
    pub monthly: f64,
    /// The currency.
    pub currency: String,
    /// Cost so far this month (as of the last flush).
    pub spent: f64,
    /// `spent` in percent of `monthly`.
    pub percent: f64,
    /// The thresholds reached this month.
    pub reached: Vec<u32>,
    /// Whether new requests to its apps are refused (hard limit reached).
    pub throttled: bool,
    /// The apps it covers: its app, or the apps of its tenant with usage this month.
    pub apps: Vec<String>,
}

impl BudgetStatus {
    /// The id of threshold `percent` of this budget this month at this amount (what the store
    /// records once notified): a budget raised mid-month notifies its thresholds again.
    pub(crate) fn threshold_id(&self, percent: u32) -> String {
        format!("{}\u{1f}{}\u{1f}{}\u{1f}{percent}", self.budget, self.month, self.monthly)
    }
}

/// Where each budget stands, from the month's usage so far.
pub(crate) fn evaluate(
    budgets: &[Budget],
    prices: &PriceBook,
    month: &str,
    usage: &[(Key, Usage)],
) -> Vec<BudgetStatus> {
    budgets
        .iter()
        .map(|b| {
            let mut total = Usage::default();
            let mut apps = BTreeSet::new();
            for (key, u) in usage.iter().filter(|(k, _)| b.covers(k)) {
                total.merge(u);
                apps.insert(key.app.to_string());
            }
            if let Some(app) = &b.app {
                apps.insert(app.clone());
            }
            let spent = prices.cost(&total).total;
            let percent = spent / b.monthly * 100.0;
            let mut reached: Vec<u32> = b.alert_at.iter().copied().filter(|p| percent >= f64::from(*p)).collect();
            reached.sort_unstable();
            reached.dedup();
            BudgetStatus {
                budget: b.name(),
                month: month.to_string(),
                monthly: b.monthly,
                currency: prices.currency.clone(),
                spent,
                percent,
                reached,
                throttled: b.throttle && percent >= 100.0,
                apps: apps.into_iter().collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::prices::CostConfig;
    use crate::metering::usage::Measure;

    #[test]
    fn thresholds_are_reached_by_the_cost_of_covered_apps_only() {
        let config = CostConfig::parse(
            "[prices]\ncurrency = \"USD\"\nper_million_invocations = 1000000.0\n\
             [[budget]]\napp = \"shop\"\nmonthly = 10.0\nthrottle = true\n\
             [[budget]]\ntenant = \"acme\"\nmonthly = 100.0\nalert_at = [10]\n",
            "test",
        )
        .unwrap();
        let key = |tenant: &str, app: &str| Key {
            tenant: tenant.into(),
            app: app.into(),
            revision: "r".into(),
            component: "c".into(),
        };
        let calls = |n: u64| {
            let mut u = Usage::default();
            u.add(Measure::Invocations, n);
            u
        };
        let usage =
            vec![(key("acme", "shop"), calls(7)), (key("acme", "blog"), calls(5)), (key("", "other"), calls(500))];
        let status = evaluate(&config.budgets, &config.prices, "2026-12", &usage);
        assert_eq!(status[0].reached, vec![50], "{status:?}");
        assert!((status[0].spent - 7.0).abs() < 1e-9 && !status[0].throttled);
        assert_eq!(status[1].reached, vec![10]);
        assert_eq!(status[1].apps, vec!["blog".to_string(), "shop".to_string()]);
        let status = evaluate(&config.budgets, &config.prices, "2026-12", &[(key("acme", "shop"), calls(10))]);
        assert_eq!(status[0].reached, vec![50, 80, 100]);
        assert!(status[0].throttled, "a hard limit closes at 100 %");
    }
}
