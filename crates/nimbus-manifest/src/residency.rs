//! Data residency as one node applies it to storage: which apps are pinned to labels
//! (`[placement] require`) or keep single buckets and topics in a region (`[placement.buckets]`,
//! `[placement.topics]`), and for each app's data (KV buckets, topics, actor state, workflow
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
//! assert_eq!(eu.bucket("gdpr", "carts").unwrap(), vec!["region:eu-west".to_string()]);
//! assert!(eu.bucket("blog", "posts").unwrap().is_empty(), "not pinned: anywhere");
//!
//! let us = Residency::new([("region".to_string(), "us-east".to_string())].into());
//! us.pin("gdpr", &pinned);
//! assert!(us.topic("gdpr", "audit").is_err());
//! ```
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use crate::Placement;

/// The pinned apps, as one node with its labels applies them to storage.
#[derive(Debug, Default)]
pub struct Residency {
    labels: BTreeMap<String, String>,
    /// App → its `require`, for apps that have one.
    pinned: RwLock<HashMap<String, Placement>>,
}

/// A node's call on data its labels do not admit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the data of {data} is kept only on nodes labelled {requires}, and this node is not one")]
pub struct Misplaced {
    /// The app the data belongs to.
    pub app: String,
    /// What: `app `gdpr``, `bucket `carts` of app `shop``.
    pub data: String,
    /// The requirement, `region=eu-*`.
    pub requires: String,
}

/// Which of an app's data a call is about.
#[derive(Debug, Clone, Copy)]
enum Data<'a> {
    Bucket(&'a str),
    Topic(&'a str),
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
        let pinned = apps.into_iter().filter(|(_, p)| pins(p)).map(|(app, p)| (app.to_string(), p.clone())).collect();
        *self.pinned.write().expect("pinned apps") = pinned;
    }

    /// Applies `app`'s placement from now on (one pinning nothing unpins it).
    pub fn pin(&self, app: &str, placement: &Placement) {
        let mut pinned = self.pinned.write().expect("pinned apps");
        if pins(placement) {
            pinned.insert(app.to_string(), placement.clone());
        } else {
            pinned.remove(app);
        }
    }

    /// Forgets `app` (deleted).
    pub fn forget(&self, app: &str) {
        self.pinned.write().expect("pinned apps").remove(app);
    }

    /// The JetStream placement tags for bucket `name` of `app` stored from this node (`key:value`
    /// of this node's labels the app and the bucket require; none when neither is pinned), or
    /// why this node may not touch it.
    pub fn bucket(&self, app: &str, name: &str) -> Result<Vec<String>, Misplaced> {
        self.data(app, Data::Bucket(name))
    }

    /// Like [`Residency::bucket`], for topic `name` of `app`.
    pub fn topic(&self, app: &str, name: &str) -> Result<Vec<String>, Misplaced> {
        self.data(app, Data::Topic(name))
    }

    fn data(&self, app: &str, data: Data<'_>) -> Result<Vec<String>, Misplaced> {
        let pinned = self.pinned.read().expect("pinned apps");
        let Some(placement) = pinned.get(app) else { return Ok(Vec::new()) };
        let own = match data {
            Data::Bucket(name) => placement.buckets.get(name),
            Data::Topic(name) => placement.topics.get(name),
        };
        let misplaced = |data: String, requires: &BTreeMap<String, String>| Misplaced {
            app: app.to_string(),
            data,
            requires: crate::placement::describe(requires),
        };
        if !placement.admits(&self.labels) {
            return Err(misplaced(format!("app `{app}`"), &placement.require));
        }
        let mut keys: BTreeSet<&String> = placement.require.keys().collect();
        if let Some(own) = own {
            if !crate::placement::meets(own, &self.labels) {
                let data = match data {
                    Data::Bucket(name) => format!("bucket `{name}` of app `{app}`"),
                    Data::Topic(name) => format!("topic `{name}` of app `{app}`"),
                };
                return Err(misplaced(data, own));
            }
            keys.extend(own.keys());
        }
        Ok(keys.into_iter().map(|key| format!("{key}:{}", self.labels[key])).collect())
    }
}

/// Whether `placement` pins the app or any of its buckets and topics.
fn pins(placement: &Placement) -> bool {
    !placement.require.is_empty() || !placement.buckets.is_empty() || !placement.topics.is_empty()
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
        assert_eq!(node.bucket("gdpr", "carts").unwrap(), ["region:eu-west", "tier:gold"], "required keys, in order");
        assert_eq!(node.topic("gdpr", "audit").unwrap(), ["region:eu-west", "tier:gold"]);

        let strict = Placement { require: labels(&[("zone", "a")]), ..Placement::default() };
        node.pin("zoned", &strict);
        let refused = node.bucket("zoned", "x").unwrap_err();
        assert_eq!((refused.requires.as_str(), refused.data.as_str()), ("zone=a", "app `zoned`"));
        assert!(refused.to_string().contains("app `zoned`"), "{refused}");

        node.pin("zoned", &Placement::default());
        assert!(node.bucket("zoned", "x").unwrap().is_empty(), "a placement pinning nothing unpins");
        node.forget("gdpr");
        assert!(node.bucket("gdpr", "carts").unwrap().is_empty());

        node.pin_all([("zoned", &strict)]);
        assert!(node.topic("zoned", "t").is_err());
        node.pin_all([]);
        assert!(node.topic("zoned", "t").is_ok(), "apps not named are forgotten");
    }

    #[test]
    fn single_buckets_and_topics_of_an_app_that_runs_anywhere_are_pinned_on_their_own() {
        let eu = Residency::new(labels(&[("region", "eu-west"), ("zone", "b")]));
        let us = Residency::new(labels(&[("region", "us-east"), ("zone", "b")]));
        let p = Placement {
            buckets: [("orders".to_string(), labels(&[("region", "eu-*")]))].into(),
            topics: [("audit".to_string(), labels(&[("zone", "b")]))].into(),
            ..Placement::default()
        };
        for node in [&eu, &us] {
            node.pin("shop", &p);
            assert!(node.bucket("shop", "carts").unwrap().is_empty(), "other buckets go anywhere");
        }
        assert_eq!(eu.bucket("shop", "orders").unwrap(), ["region:eu-west"]);
        let refused = us.bucket("shop", "orders").unwrap_err();
        assert_eq!(refused.data, "bucket `orders` of app `shop`");
        assert_eq!(refused.requires, "region=eu-*");
        assert_eq!(us.topic("shop", "audit").unwrap(), ["zone:b"], "a topic has its own requirement");
        assert!(us.bucket("shop", "audit").unwrap().is_empty(), "buckets and topics are named apart");
    }
}
