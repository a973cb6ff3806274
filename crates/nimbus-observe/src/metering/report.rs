//! Cost reports: usage of a range of UTC days grouped by the dimensions asked for, with its
//! cost, as JSON rows or CSV.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::prices::{Cost, PriceBook};
use super::store::Row;
use super::usage::Usage;

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    /// The UTC day.
    Day,
    /// The tenant label of the app.
    Tenant,
    /// The app.
    App,
    /// The revision.
    Revision,
    /// The component.
    Component,
}

impl std::str::FromStr for Dimension {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(Self::Day),
            "tenant" => Ok(Self::Tenant),
            "app" => Ok(Self::App),
            "revision" => Ok(Self::Revision),
            "component" => Ok(Self::Component),
            other => Err(format!("cannot group by `{other}`: use day, tenant, app, revision or component")),
        }
    }
}

/// Usage in the units people read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageView {
    /// Function instances run and service requests answered.
    pub invocations: u64,
    /// Lifetime of function instances, in seconds.
    pub wall_seconds: f64,
    /// CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Memory-time, in GiB-seconds.
    pub memory_gib_seconds: f64,
    /// Lifetime of service instances, in seconds.
    pub instance_seconds: f64,
    /// Bytes of outbound calls, both directions.
    pub egress_bytes: u64,
    /// Events published.
    pub events_published: u64,
    /// KV operations.
    pub kv_operations: u64,
    /// KV storage, in GiB-months.
    pub stored_gib_months: f64,
}

impl From<&Usage> for UsageView {
    fn from(u: &Usage) -> Self {
        Self {
            invocations: u.invocations(),
            wall_seconds: u.wall_seconds(),
            cpu_seconds: u.cpu_seconds(),
            memory_gib_seconds: u.memory_gib_seconds(),
            instance_seconds: u.instance_seconds(),
            egress_bytes: u.egress_bytes(),
            events_published: u.events_published(),
            kv_operations: u.kv_operations(),
            stored_gib_months: u.stored_gib_months(),
        }
    }
}

/// One group of a report; the dimensions not grouped by are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostRow {
    /// The UTC day, `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// The tenant (empty for apps without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The revision (`local` under `nimbus up`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// What it used.
    pub usage: UsageView,
    /// What that costs.
    pub cost: Cost,
}

/// A cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostReport {
    /// First day covered, `YYYY-MM-DD` (UTC).
    pub from: String,
    /// Last day covered, inclusive.
    pub to: String,
    /// What rows are grouped by.
    pub by: Vec<Dimension>,
    /// The currency of every cost.
    pub currency: String,
    /// The groups, in the order of their dimensions.
    pub rows: Vec<CostRow>,
    /// Everything in the range (with the filters applied).
    pub total: CostRow,
}

pub(crate) fn day_of(start: u64) -> String {
    let date = chrono::DateTime::from_timestamp(i64::try_from(start).unwrap_or(i64::MAX), 0).unwrap_or_default();
    date.format("%Y-%m-%d").to_string()
}

type GroupKey = (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

/// Groups `rows` (day rows) by `by` and costs each group.
pub(crate) fn build(rows: &[Row], by: &[Dimension], prices: &PriceBook, from: String, to: String) -> CostReport {
    let mut groups: BTreeMap<GroupKey, Usage> = BTreeMap::new();
    let mut total = Usage::default();
    let has = |d| by.contains(&d);
    for row in rows {
        let key = (
            has(Dimension::Day).then(|| day_of(row.start)),
            has(Dimension::Tenant).then(|| row.key.tenant.to_string()),
            has(Dimension::App).then(|| row.key.app.to_string()),
            has(Dimension::Revision).then(|| row.key.revision.to_string()),
            has(Dimension::Component).then(|| row.key.component.to_string()),
        );
        groups.entry(key).or_default().merge(&row.usage);
        total.merge(&row.usage);
    }
    let row = |(day, tenant, app, revision, component): GroupKey, usage: &Usage| CostRow {
        day,
        tenant,
        app,
        revision,
        component,
        usage: usage.into(),
        cost: prices.cost(usage),
    };
    let mut by = by.to_vec();
    by.sort();
    by.dedup();
    CostReport {
        from,
        to,
        by,
        currency: prices.currency.clone(),
        rows: groups.into_iter().map(|(k, u)| row(k, &u)).collect(),
        total: row(Default::default(), &total),
    }
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

impl CostReport {
    /// The rows as CSV (RFC 4180, a header line, `\r\n` line ends), one column per grouped
    /// dimension, then usage, then cost per item and in all, then the currency: ready for a
    /// spreadsheet.
    pub fn to_csv(&self) -> String {
        let names = ["day", "tenant", "app", "revision", "component"];
        let dims = [Dimension::Day, Dimension::Tenant, Dimension::App, Dimension::Revision, Dimension::Component];
        let mut header: Vec<&str> =
            names.iter().zip(dims).filter(|(_, d)| self.by.contains(d)).map(|(n, _)| *n).collect();
        header.extend([
            "invocations",
            "wall_seconds",
            "cpu_seconds",
            "memory_gib_seconds",
            "instance_seconds",
            "egress_bytes",
            "events_published",
            "kv_operations",
            "stored_gib_months",
            "cost_invocations",
            "cost_memory",
            "cost_cpu",
            "cost_egress",
            "cost_events",
            "cost_kv",
            "cost_instances",
            "cost_storage",
            "cost_total",
            "currency",
        ]);
        let mut out = header.join(",");
        out.push_str("\r\n");
        for r in &self.rows {
            let mut cells: Vec<String> = [&r.day, &r.tenant, &r.app, &r.revision, &r.component]
                .into_iter()
                .zip(dims)
                .filter(|(_, d)| self.by.contains(d))
                .map(|(v, _)| field(v.as_deref().unwrap_or("")))
                .collect();
            let (u, c) = (&r.usage, &r.cost);
            cells.extend([
                u.invocations.to_string(),
                format!("{:.6}", u.wall_seconds),
                format!("{:.6}", u.cpu_seconds),
                format!("{:.6}", u.memory_gib_seconds),
                format!("{:.3}", u.instance_seconds),
                u.egress_bytes.to_string(),
                u.events_published.to_string(),
                u.kv_operations.to_string(),
                format!("{:.9}", u.stored_gib_months),
            ]);
            let costs = [c.invocations, c.memory, c.cpu, c.egress, c.events, c.kv, c.instances, c.storage, c.total];
            cells.extend(costs.map(|x| format!("{x:.8}")));
            cells.push(field(&self.currency));
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::Key;
    use crate::metering::prices::CostConfig;
    use crate::metering::usage::Measure;

    #[test]
    fn rows_group_by_the_dimensions_asked_and_render_as_csv() {
        let key =
            |app: &str, c: &str| Key { tenant: "".into(), app: app.into(), revision: "r1".into(), component: c.into() };
        let calls = |n| {
            let mut u = Usage::default();
            u.add(Measure::Invocations, n);
            u
        };
        let day = 1_796_083_200; // 2026-12-01
        let rows = vec![
            Row { start: day, key: key("shop", "web"), usage: calls(1_000_000) },
            Row { start: day, key: key("shop", "api"), usage: calls(500_000) },
            Row { start: day + 86_400, key: key("shop", "web"), usage: calls(2_000_000) },
            Row { start: day, key: key("blog", "web,\"x\""), usage: calls(1) },
        ];
        let prices = CostConfig::example().prices;
        let r = build(&rows, &[Dimension::App], &prices, "2026-12-01".into(), "2026-12-02".into());
        let apps: Vec<(Option<String>, u64)> = r.rows.iter().map(|r| (r.app.clone(), r.usage.invocations)).collect();
        assert_eq!(apps, vec![(Some("blog".into()), 1), (Some("shop".into()), 3_500_000)]);
        assert!((r.total.cost.invocations - 3.500001 * 0.2).abs() < 1e-9);
        let r = build(
            &rows,
            &[Dimension::Component, Dimension::Day, Dimension::App],
            &prices,
            String::new(),
            String::new(),
        );
        assert_eq!(r.rows.len(), 4);
        assert_eq!(r.rows[0].day.as_deref(), Some("2026-12-01"));
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert!(lines[0].starts_with("day,app,component,invocations,"), "{}", lines[0]);
        assert!(lines[1].starts_with("2026-12-01,blog,\"web,\"\"x\"\"\",1,"), "{}", lines[1]);
        assert!(lines[1].ends_with(",USD"));
        assert_eq!(lines.len(), 6, "a header, four rows and the final line end");
    }
}
