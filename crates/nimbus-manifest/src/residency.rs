//! Data residency as one node applies it to storage: which apps are pinned to labels
//! (`[placement] require`), and for each app's data (KV buckets, topics, actor state, workflow
//! journals, artifacts) whether this node may touch it and where it must be stored. The stores
//! on NATS JetStream consult a [`Residency`] on every call: a node whose labels do not meet an
//! app's requirement is refused its data ([`Misplaced`]) — whichever path asks, including
//! another app that imports a pinned app's bucket or topic — and a pinned app's streams are
//! created with JetStream placement tags naming this node's values of the required labels
//! (`region:eu-west` for `require = { region = "eu-*" }` on a node labelled `region=eu-west`),
//! so only NATS servers carrying those `server_tags` store them.
//!
//! ```
//! use nimbus_manifest::{Placement, Residency};
//! let eu = Residency::new([("region".to_string(), "eu-west".to_string())].into());
//! let pinned = Placement { require: [("region".into(), "eu-*".into())].into(), ..Placement::default() };
//! eu.pin("gdpr", &pinned);
//! assert_eq!(eu.storage("gdpr").unwrap(), vec!["region:eu-west".to_string()]);
//! assert!(eu.storage("blog").unwrap().is_empty(), "not pinned: anywhere");
//!
//! let us = Residency::new([("region".to_string(), "us-east".to_string())].into());
//! us.pin("gdpr", &pinned);
//! assert!(us.storage("gdpr").is_err());
//! ```
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::Placement;

/// The pinned apps, as one node with its labels applies them to storage.
#[derive(Debug, Default)]
pub struct Residency {
    labels: BTreeMap<String, String>,
    /// App → its `require`, for apps that have one.
    pinned: RwLock<HashMap<String, Placement>>,
}

/// A node's call on data of an app its labels do not admit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the data of app `{app}` is kept only on nodes labelled {requires}, and this node is not one")]
pub struct Misplaced {
    /// The pinned app.
    pub app: String,
    /// Its requirement, `region=eu-*`.
    pub requires: String,
}

impl Residency {
    /// A node with `labels`, nothing pinned yet.
    pub fn new(labels: BTreeMap<String, String>) -> Self {
        Self { labels, pinned: RwLock::default() }
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Whether this node may hold an app placed so.
    pub fn admits(&self, placement: &Placement) -> bool {
        placement.admits(&self.labels)
    }

    /// Applies the placement of every app from now on, forgetting apps not named.
    pub fn pin_all<'a>(&self, apps: impl IntoIterator<Item = (&'a str, &'a Placement)>) {
        let pinned = apps
            .into_iter()
            .filter(|(_, p)| !p.require.is_empty())
            .map(|(app, p)| (app.to_string(), p.clone()))
            .collect();
        *self.pinned.write().expect("pinned apps") = pinned;
    }

    /// Applies `app`'s placement from now on (one without `require` unpins it).
    pub fn pin(&self, app: &str, placement: &Placement) {
        let mut pinned = self.pinned.write().expect("pinned apps");
        if placement.require.is_empty() {
            pinned.remove(app);
        } else {
            pinned.insert(app.to_string(), placement.clone());
        }
    }

    /// Forgets `app` (deleted).
    pub fn forget(&self, app: &str) {
        self.pinned.write().expect("pinned apps").remove(app);
    }

    /// The JetStream placement tags for `app`'s data stored from this node (`key:value` of
    /// this node's labels the app requires; none when it is not pinned), or why this node may
    /// not touch it.
    pub fn storage(&self, app: &str) -> Result<Vec<String>, Misplaced> {
        let pinned = self.pinned.read().expect("pinned apps");
        let Some(placement) = pinned.get(app) else { return Ok(Vec::new()) };
        placement
            .storage_tags(&self.labels)
            .ok_or_else(|| Misplaced { app: app.to_string(), requires: placement.describe() })
    }
}

impl Placement {
    /// The placement tags (`key:value`) of a node with `labels` for data it stores of an app
    /// placed so: its values of the required labels; `None` if it may not hold the app.
    pub fn storage_tags(&self, labels: &BTreeMap<String, String>) -> Option<Vec<String>> {
        self.admits(labels).then(|| self.require.keys().map(|key| format!("{key}:{}", labels[key])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_pinned_apps_data_is_tagged_with_the_nodes_required_labels_and_refused_elsewhere() {
        let node = Residency::new(labels(&[("region", "eu-west"), ("zone", "b"), ("tier", "gold")]));
        let p = Placement { require: labels(&[("region", "eu-*"), ("tier", "gold")]), ..Placement::default() };
        node.pin("gdpr", &p);
        assert_eq!(node.storage("gdpr").unwrap(), ["region:eu-west", "tier:gold"], "required keys only, in order");

        let strict = Placement { require: labels(&[("zone", "a")]), ..Placement::default() };
        node.pin("zoned", &strict);
        let refused = node.storage("zoned").unwrap_err();
        assert_eq!(refused.requires, "zone=a");
        assert!(refused.to_string().contains("`zoned`"), "{refused}");

        node.pin("zoned", &Placement::default());
        assert!(node.storage("zoned").unwrap().is_empty(), "a placement without require unpins");
        node.forget("gdpr");
        assert!(node.storage("gdpr").unwrap().is_empty());

        node.pin_all([("zoned", &strict)]);
        assert!(node.storage("zoned").is_err());
        node.pin_all([]);
        assert!(node.storage("zoned").is_ok(), "apps not named are forgotten");
    }
}
