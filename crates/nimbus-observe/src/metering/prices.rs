//! The price book and the cost configuration file (`--cost-config`): prices per unit of each
//! measure, and the budgets.
use serde::{Deserialize, Serialize};

use super::usage::Usage;
use super::{MeteringError, budgets::Budget};

/// The example configuration, whose prices apply when no file is given.
pub const EXAMPLE: &str = include_str!("../../../../examples/cost.toml");

/// Prices per unit of usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBook {
    /// The currency every price and budget is in (ISO 4217 code).
    pub currency: String,
    /// Per million invocations.
    #[serde(default)]
    pub per_million_invocations: f64,
    /// Per GiB-second of memory-time.
    #[serde(default)]
    pub per_gib_second: f64,
    /// Per second of CPU time.
    #[serde(default)]
    pub per_cpu_second: f64,
    /// Per GiB of outbound transfer.
    #[serde(default)]
    pub per_gib_egress: f64,
    /// Per million events published.
    #[serde(default)]
    pub per_million_events: f64,
    /// Per million KV operations.
    #[serde(default)]
    pub per_million_kv_operations: f64,
    /// Per hour of a service instance.
    #[serde(default)]
    pub per_instance_hour: f64,
    /// Per GiB-month of KV storage (30 days).
    #[serde(default)]
    pub per_gib_month_stored: f64,
}

/// What a usage costs, per item and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cost {
    /// Invocations.
    pub invocations: f64,
    /// Memory-time.
    pub memory: f64,
    /// CPU time.
    pub cpu: f64,
    /// Outbound transfer.
    pub egress: f64,
    /// Events published.
    pub events: f64,
    /// KV operations.
    pub kv: f64,
    /// Service instances.
    pub instances: f64,
    /// KV storage.
    pub storage: f64,
    /// The sum.
    pub total: f64,
}

impl PriceBook {
    /// What `u` costs.
    pub fn cost(&self, u: &Usage) -> Cost {
        let gib = (1u64 << 30) as f64;
        let mut c = Cost {
            invocations: u.invocations() as f64 / 1e6 * self.per_million_invocations,
            memory: u.memory_gib_seconds() * self.per_gib_second,
            cpu: u.cpu_seconds() * self.per_cpu_second,
            egress: u.egress_bytes() as f64 / gib * self.per_gib_egress,
            events: u.events_published() as f64 / 1e6 * self.per_million_events,
            kv: u.kv_operations() as f64 / 1e6 * self.per_million_kv_operations,
            instances: u.instance_seconds() / 3600.0 * self.per_instance_hour,
            storage: u.stored_gib_months() * self.per_gib_month_stored,
            total: 0.0,
        };
        c.total = c.invocations + c.memory + c.cpu + c.egress + c.events + c.kv + c.instances + c.storage;
        c
    }

    fn check(&self) -> Result<(), String> {
        let prices = [
            ("per_million_invocations", self.per_million_invocations),
            ("per_gib_second", self.per_gib_second),
            ("per_cpu_second", self.per_cpu_second),
            ("per_gib_egress", self.per_gib_egress),
            ("per_million_events", self.per_million_events),
            ("per_million_kv_operations", self.per_million_kv_operations),
            ("per_instance_hour", self.per_instance_hour),
            ("per_gib_month_stored", self.per_gib_month_stored),
        ];
        let max = super::budgets::MAX_AMOUNT;
        if let Some((name, p)) = prices.iter().find(|(_, p)| !p.is_finite() || !(0.0..=max).contains(p)) {
            return Err(format!("prices.{name} = {p}: a price is a number from 0 to {max:e}"));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("prices.currency = {:?}: an ISO 4217 code such as \"USD\"", self.currency));
        }
        Ok(())
    }
}

/// The cost configuration: prices and budgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// The price book.
    pub prices: PriceBook,
    /// The budgets.
    #[serde(default, rename = "budget")]
    pub budgets: Vec<Budget>,
}

impl CostConfig {
    /// Reads a configuration file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, MeteringError> {
        let invalid = |reason: String| MeteringError::Config { origin: origin.to_string(), reason };
        let config: Self = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.prices.check().map_err(invalid)?;
        let mut names = std::collections::HashSet::new();
        for b in &config.budgets {
            b.check().map_err(invalid)?;
            if !names.insert(b.name()) {
                return Err(invalid(format!("two budgets for {}: keep one", b.name())));
            }
        }
        Ok(config)
    }

    /// The example's prices, no budgets.
    pub fn example() -> Self {
        Self::parse(EXAMPLE, "the built-in price book").expect("the example configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::usage::Measure;

    #[test]
    fn the_example_costs_a_million_lambda_style_invocations_like_lambda() {
        let book = CostConfig::example().prices;
        let mut u = Usage::default();
        u.add(Measure::Invocations, 1_000_000);
        // 1M × 100 ms at 128 MiB = 12,500 GiB-s.
        u.add(Measure::MemoryKibMillis, 1_000_000 * 128 * 1024 * 100);
        u.add(Measure::EgressBytes, 2 << 30);
        let c = book.cost(&u);
        assert!((c.invocations - 0.20).abs() < 1e-9);
        assert!((c.memory - 12_500.0 * 0.0000166667).abs() < 1e-6, "{c:?}");
        assert!((c.egress - 0.18).abs() < 1e-9);
        assert!((c.total - (c.invocations + c.memory + c.egress)).abs() < 1e-9);
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let err = |text: &str| CostConfig::parse(text, "cost.toml").unwrap_err().to_string();
        assert!(err("[prices]\ncurrency = \"USD\"\nper_gib_second = -1\n").contains("prices.per_gib_second"));
        assert!(err("[prices]\ncurrency = \"USD\"\nper_cpu_second = 1e308\n").contains("from 0 to 1e12"));
        assert!(err("[prices]\ncurrency = \"dollars\"\n").contains("ISO 4217"));
        assert!(err("[prices]\ncurrency = \"USD\"\nper_gb_second = 1\n").contains("per_gb_second"), "unknown keys");
        let budget = "[prices]\ncurrency = \"USD\"\n[[budget]]\n";
        assert!(err(&format!("{budget}monthly = 5.0\n")).contains("`app` or `tenant`"));
        assert!(err(&format!("{budget}app = \"a\"\ntenant = \"t\"\nmonthly = 5.0\n")).contains("`app` or `tenant`"));
        assert!(err(&format!("{budget}app = \"a\"\nmonthly = 0.0\n")).contains("monthly"));
        assert!(err(&format!("{budget}app = \"a\"\nmonthly = 5.0\nalert_at = [0]\n")).contains("alert_at"));
        let twice = format!("{budget}app = \"a\"\nmonthly = 5.0\n[[budget]]\napp = \"a\"\nmonthly = 6.0\n");
        assert!(err(&twice).contains("two budgets"));
        assert!(err("[prices\n").contains("cost.toml"));
    }
}
