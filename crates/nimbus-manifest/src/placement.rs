//! `[placement]`: on which nodes of a cluster an app may be, and where its services run.
//! `require` is data residency: an app whose requirement a node's labels do not meet is never
//! loaded there (its artifacts are not fetched, its code does not run, its requests and data
//! calls are refused), and a deploy through such a node is refused before anything is stored.
//! The other fields steer the scheduler of services (functions run on whichever node a request
//! reaches): `prefer` ranks nodes, `spread` puts a service's nodes in different zones first,
//! `max_per_node` caps its processes on one node — so `scale.max / max_per_node` nodes (rounded
//! up) run it. `buckets` and `topics` pin single buckets and topics of an app that runs
//! anywhere (see [`crate::Residency`]). Labels are written as in Kubernetes (`region=eu-west`,
//! `topology.kubernetes.io/zone=eu-west-1a`).
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[placement]` of an app.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Labels a node must have for the app to be stored, run or served there: label → value,
    /// where `*` matches any run of characters, e.g. `{ region = "eu-*" }`. Every entry must
    /// match. Nodes that do not match answer the app's requests `421` and refuse its deploys.
    #[serde(default)]
    pub require: BTreeMap<String, String>,
    /// Labels the scheduler prefers for the app's services, written like `require`: nodes that
    /// match more of them are picked first. A preference, never a requirement.
    #[serde(default)]
    pub prefer: BTreeMap<String, String>,
    /// A label key (e.g. `zone`) whose values the nodes running a service should differ in:
    /// nodes with a value not yet used come first, so losing one zone leaves the service running.
    #[serde(default)]
    pub spread: Option<String>,
    /// Most processes of one service on one node (default: all of `scale.max`, on one node).
    #[serde(default)]
    pub max_per_node: Option<u32>,
    /// Buckets of the app kept in a region while the app itself runs anywhere: bucket → labels,
    /// written like `require` (e.g. `{ carts = { region = "eu-*" } }`). Only nodes that match
    /// read or write them (components elsewhere get an error), and their streams are placed on
    /// the NATS servers of the region.
    #[serde(default)]
    pub buckets: BTreeMap<String, BTreeMap<String, String>>,
    /// Topics of the app kept in a region, like `buckets`.
    #[serde(default)]
    pub topics: BTreeMap<String, BTreeMap<String, String>>,
}

impl Placement {
    /// Whether a node with `labels` may hold the app.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        meets(&self.require, labels)
    }

    /// How many of the `prefer` entries a node with `labels` matches.
    pub fn preference(&self, labels: &BTreeMap<String, String>) -> usize {
        all_match(&self.prefer, labels)
    }

    /// Processes of a service scaling to `max` on one node, and on how many nodes it runs.
    pub fn split(&self, max: u32) -> (u32, u32) {
        let max = max.max(1);
        let per_node = self.max_per_node.unwrap_or(max).clamp(1, max);
        (per_node, max.div_ceil(per_node))
    }

    /// `region=eu-*, zone=a`, for messages; empty when anything goes.
    pub fn describe(&self) -> String {
        describe(&self.require)
    }
}

/// `region=eu-*, zone=a` for `labels`.
pub(crate) fn describe(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Whether a node with `labels` meets every entry of `require`.
pub(crate) fn meets(require: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    all_match(require, labels) == require.len()
}

/// How many of `patterns` the `labels` match.
fn all_match(patterns: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> usize {
    patterns.iter().filter(|(key, pattern)| labels.get(*key).is_some_and(|value| matches(pattern, value))).count()
}

/// `*` in `pattern` matches any run of characters (none too); everything else itself.
fn matches(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `key` is a label key: a name (see [`label_value_ok`]) with an optional DNS
/// `prefix/`, as Kubernetes has them.
pub fn label_key_ok(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    word(name) && prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(word))
}

/// Whether `value` is a label value: empty, or 1 to 63 letters, digits, `-`, `_` or `.`,
/// starting and ending with a letter or digit.
pub fn label_value_ok(value: &str) -> bool {
    value.is_empty() || word(value)
}

fn word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `pattern` is a label value with `*` wildcards.
pub(crate) fn pattern_ok(pattern: &str) -> bool {
    pattern.split('*').all(|part| {
        part.is_empty() || part.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }) && pattern.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        for (pattern, value, expected) in [
            ("eu-*", "eu-west", true),
            ("eu-*", "eu-", true),
            ("eu-*", "us-east", false),
            ("*-west", "eu-west", true),
            ("*", "", true),
            ("eu-west", "eu-west", true),
            ("eu-west", "eu-west-1", false),
            ("e*w*t", "eu-west", true),
            ("e*w*t", "eu-wes", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
        ] {
            assert_eq!(matches(pattern, value), expected, "{pattern} ~ {value}");
        }
    }

    #[test]
    fn a_placement_admits_only_nodes_meeting_every_requirement() {
        let p = Placement {
            require: [("region".into(), "eu-*".into()), ("tier".into(), "gold".into())].into(),
            ..Placement::default()
        };
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(p.admits(&labels(&[("region", "eu-west"), ("tier", "gold"), ("zone", "a")])));
        assert!(!p.admits(&labels(&[("region", "eu-west")])), "a missing label does not match");
        assert!(!p.admits(&labels(&[("region", "us-east"), ("tier", "gold")])));
        assert!(Placement::default().admits(&labels(&[])));
        assert_eq!(p.describe(), "region=eu-*, tier=gold");
    }

    #[test]
    fn a_service_splits_into_processes_per_node_and_nodes() {
        let p = |max_per_node| Placement { max_per_node, ..Placement::default() };
        assert_eq!(p(None).split(4), (4, 1), "all on one node by default");
        assert_eq!(p(Some(1)).split(3), (1, 3));
        assert_eq!(p(Some(2)).split(5), (2, 3), "rounded up");
        assert_eq!(p(Some(8)).split(3), (3, 1), "never more per node than in all");
        assert_eq!(p(Some(2)).split(0), (1, 1), "a service runs somewhere");
    }
}
