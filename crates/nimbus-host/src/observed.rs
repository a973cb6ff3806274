//! What the node's alerting ([`nimbus_observe::insight`]) is told of the revision serving an
//! app: each component's fingerprint (so a deploy's changes are evidence of the anomalies that
//! follow it), the manifest's `[[slo]]` objectives and the limits forecasts are judged against.
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use nimbus_manifest::Manifest;
use nimbus_observe::insight::{Deployed, Slo};

/// The revision `revision` of `m` as alerting sees it; `digests` are the components' code
/// digests where known (a component's fingerprint is its digest and its configuration).
pub fn deployed(m: &Manifest, revision: &str, digests: &BTreeMap<String, String>) -> Deployed {
    let components = m
        .component
        .iter()
        .map(|(name, c)| {
            let mut h = DefaultHasher::new();
            serde_json::to_string(c).unwrap_or_default().hash(&mut h);
            let code = digests.get(name).map_or("", String::as_str);
            (name.clone(), format!("{code}+{:016x}", h.finish()))
        })
        .collect();
    Deployed {
        app: m.app.name.clone(),
        revision: revision.to_string(),
        components,
        slos: m
            .objectives()
            .map(|(s, component)| Slo {
                route: s.route.clone(),
                component: component.to_string(),
                p99_ms: s.p99_ms.map(|ms| ms as f64),
                availability: s.availability,
            })
            .collect(),
        memory_mb: m.component.iter().map(|(n, c)| (n.clone(), u64::from(c.memory_mb()))).collect(),
        queue_depth: m.component.iter().map(|(n, c)| (n.clone(), u64::from(c.limits.queue_depth))).collect(),
    }
}
