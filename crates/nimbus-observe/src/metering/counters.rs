//! Usage as OpenMetrics counters on `/metrics` (`nimbus_usage_*_total` per tenant, app and
//! component — not per revision, so that deploys do not add series without end;
//! `nimbus_cost_total` per app and currency). They advance at each flush, by what the flush
//! wrote.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Unit;

use super::Key;
use super::prices::PriceBook;
use super::usage::Usage;
use crate::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    tenant: String,
    app: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    tenant: String,
    app: String,
    currency: String,
}

type Float = Counter<f64, std::sync::atomic::AtomicU64>;

#[derive(Debug, Clone)]
pub(crate) struct Counters {
    invocations: Family<UsageLabels, Counter>,
    wall: Family<UsageLabels, Float>,
    cpu: Family<UsageLabels, Float>,
    memory: Family<UsageLabels, Float>,
    instances: Family<UsageLabels, Float>,
    egress: Family<UsageLabels, Counter>,
    events: Family<UsageLabels, Counter>,
    kv: Family<UsageLabels, Counter>,
    stored: Family<UsageLabels, Float>,
    cost: Family<CostLabels, Float>,
}

impl Counters {
    /// Registers the families in `metrics`.
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let c = Self {
            invocations: Family::default(),
            wall: Family::default(),
            cpu: Family::default(),
            memory: Family::default(),
            instances: Family::default(),
            egress: Family::default(),
            events: Family::default(),
            kv: Family::default(),
            stored: Family::default(),
            cost: Family::default(),
        };
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("nimbus_usage");
            r.register("invocations", "Function instances run and service requests answered", c.invocations.clone());
            r.register_with_unit("wall", "Lifetime of function instances", Unit::Seconds, c.wall.clone());
            r.register_with_unit("cpu", "CPU time of functions (poll time) and services", Unit::Seconds, c.cpu.clone());
            r.register(
                "memory_gib_seconds",
                "Memory-time: peak linear memory x lifetime for functions, sampled resident memory for services",
                c.memory.clone(),
            );
            r.register_with_unit("instance", "Lifetime of service instances", Unit::Seconds, c.instances.clone());
            r.register_with_unit("egress", "Bytes of outbound calls, both directions", Unit::Bytes, c.egress.clone());
            r.register("events_published", "Events components published", c.events.clone());
            r.register("kv_operations", "KV operations components made", c.kv.clone());
            r.register("stored_gib_months", "KV storage held over time (30-day months)", c.stored.clone());
        });
        metrics.with_registry(|r| {
            r.sub_registry_with_prefix("nimbus").register(
                "cost",
                "Cost of the usage metered so far, by the price book",
                c.cost.clone(),
            );
        });
        c
    }

    /// Adds what a flush wrote.
    pub(crate) fn add(&self, deltas: &[(Key, Usage)], prices: &PriceBook) {
        for (key, u) in deltas {
            let labels = UsageLabels {
                tenant: key.tenant.to_string(),
                app: key.app.to_string(),
                component: key.component.to_string(),
            };
            self.invocations.get_or_create(&labels).inc_by(u.invocations());
            self.wall.get_or_create(&labels).inc_by(u.wall_seconds());
            self.cpu.get_or_create(&labels).inc_by(u.cpu_seconds());
            self.memory.get_or_create(&labels).inc_by(u.memory_gib_seconds());
            self.instances.get_or_create(&labels).inc_by(u.instance_seconds());
            self.egress.get_or_create(&labels).inc_by(u.egress_bytes());
            self.events.get_or_create(&labels).inc_by(u.events_published());
            self.kv.get_or_create(&labels).inc_by(u.kv_operations());
            self.stored.get_or_create(&labels).inc_by(u.stored_gib_months());
            let cost = CostLabels { tenant: labels.tenant, app: labels.app, currency: prices.currency.clone() };
            self.cost.get_or_create(&cost).inc_by(prices.cost(u).total);
        }
    }
}
