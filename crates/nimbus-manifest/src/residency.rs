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
//! eu.pin_all([("gdpr", vec![&pinned])]);
//! assert_eq!(eu.bucket("gdpr", "carts").unwrap(), vec!["region:eu-west".to_string()]);
//! assert!(eu.bucket("blog", "posts").unwrap().is_empty(), "not pinned: anywhere");
//!
//! let us = Residency::new([("region".to_string(), "us-east".to_string())].into());
//! us.pin_all([("gdpr", vec![&pinned])]);
//! assert!(us.topic("gdpr", "audit").is_err());
//! ```
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use crate::Placement;

/// The pinned apps, as one node with its labels applies them to storage.
#[derive(Debug, Default)]
pub struct Residency {
    labels: BTreeMap<String, String>,
    /// App → the placements of its revisions that receive requests, for apps pinning anything:
    /// its data must meet all of them.
    pinned: RwLock<HashMap<String, Vec<Placement>>>,
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

    /// Applies the placements of every app from now on (those of its revisions that receive
    /// requests), forgetting apps not named.
    pub fn pin_all<'a>(&self, apps: impl IntoIterator<Item = (&'a str, Vec<&'a Placement>)>) {
        let pinned = apps.into_iter().filter_map(|(app, placements)| Some((app.to_string(), pinning(placements)?)));
        *self.pinned.write().expect("pinned apps") = pinned.collect();
    }

    /// Applies the placements of `app`'s revisions that receive requests from now on.
    pub fn pin(&self, app: &str, placements: Vec<&Placement>) {
        let mut pinned = self.pinned.write().expect("pinned apps");
        match pinning(placements) {
            Some(placements) => pinned.insert(app.to_string(), placements),
            None => pinned.remove(app),
        };
    }

    /// Applies `placement` to `app`'s data too, from now on (a revision being deployed, before
    /// anything of it runs).
    pub fn add(&self, app: &str, placement: &Placement) {
        if pins(placement) {
            self.pinned.write().expect("pinned apps").entry(app.to_string()).or_default().push(placement.clone());
        }
    }

    /// The JetStream placement tags for bucket `name` of `app` stored from this node (`key:value`
    /// of this node's labels the app and the bucket require; none when neither is pinned), or
    /// why this node may not touch it.
    pub fn bucket(&self, app: &str, name: &str) -> Result<Vec<String>, Misplaced> {
        self.data(app, Data::Bucket(name))
    }

    /// Like [`Residency::bucket`], for topic `name` of `app`. A bucket's change feed
    /// (`nimbus-kv.BUCKET`) is kept like the bucket.
    pub fn topic(&self, app: &str, name: &str) -> Result<Vec<String>, Misplaced> {
        match name.strip_prefix(crate::KV_CHANGES_PREFIX) {
            Some(bucket) => self.data(app, Data::Bucket(bucket)),
            None => self.data(app, Data::Topic(name)),
        }
    }

    fn data(&self, app: &str, data: Data<'_>) -> Result<Vec<String>, Misplaced> {
        let pinned = self.pinned.read().expect("pinned apps");
        let Some(placements) = pinned.get(app) else { return Ok(Vec::new()) };
        let mut keys: BTreeSet<&String> = BTreeSet::new();
        for placement in placements {
            let own = match data {
                Data::Bucket(name) => placement.buckets.get(name),
                Data::Topic(name) => placement.topics.get(name),
            };
            let misplaced = |what: String, requires: &BTreeMap<String, String>| Misplaced {
                app: app.to_string(),
                data: what,
                requires: crate::placement::describe(requires),
            };
            if !placement.admits(&self.labels) {
                return Err(misplaced(format!("app `{app}`"), &placement.require));
            }
            keys.extend(placement.require.keys());
            if let Some(own) = own {
                if !crate::placement::meets(own, &self.labels) {
                    let what = match data {
                        Data::Bucket(name) => format!("bucket `{name}` of app `{app}`"),
                        Data::Topic(name) => format!("topic `{name}` of app `{app}`"),
                    };
                    return Err(misplaced(what, own));
                }
                keys.extend(own.keys());
            }
        }
        Ok(tags(keys, &self.labels))
    }
}

/// `key:value` of `labels` for each of `keys` (each a key `labels` has).
fn tags<'a>(keys: impl IntoIterator<Item = &'a String>, labels: &BTreeMap<String, String>) -> Vec<String> {
    keys.into_iter().map(|key| format!("{key}:{}", labels[key])).collect()
}

/// Those of `placements` that pin anything; `None` if none does.
fn pinning(placements: Vec<&Placement>) -> Option<Vec<Placement>> {
    let kept: Vec<Placement> = placements.into_iter().filter(|p| pins(p)).cloned().collect();
    (!kept.is_empty()).then_some(kept)
}

/// Whether `placement` pins the app or any of its buckets and topics.
fn pins(placement: &Placement) -> bool {
    !placement.require.is_empty() || !placement.buckets.is_empty() || !placement.topics.is_empty()
}

impl Placement {
    /// The placement tags (`key:value`) of a node with `labels` for data it stores of an app
    /// placed so: its values of the required labels; `None` if it may not hold the app.
    pub fn storage_tags(&self, labels: &BTreeMap<String, String>) -> Option<Vec<String>> {
        self.admits(labels).then(|| tags(self.require.keys(), labels))
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
        let strict = Placement { require: labels(&[("zone", "a")]), ..Placement::default() };
        node.pin_all([("gdpr", vec![&p]), ("zoned", vec![&strict])]);
        assert_eq!(node.bucket("gdpr", "carts").unwrap(), ["region:eu-west", "tier:gold"], "required keys, in order");
        assert_eq!(node.topic("gdpr", "audit").unwrap(), ["region:eu-west", "tier:gold"]);
        let refused = node.bucket("zoned", "x").unwrap_err();
        assert_eq!((refused.requires.as_str(), refused.data.as_str()), ("zone=a", "app `zoned`"));
        assert!(refused.to_string().contains("app `zoned`"), "{refused}");

        node.pin_all([("zoned", vec![&Placement::default()])]);
        assert!(node.bucket("zoned", "x").unwrap().is_empty(), "a placement pinning nothing unpins");
        assert!(node.bucket("gdpr", "carts").unwrap().is_empty(), "apps not named are forgotten");

        // A revision being deployed pins the app at once; with several revisions served, the
        // data meets every one's placement.
        node.add("gdpr", &p);
        assert_eq!(node.bucket("gdpr", "carts").unwrap().len(), 2);
        node.pin("gdpr", vec![&strict]);
        assert!(node.bucket("gdpr", "carts").is_err(), "pin replaces the app's placements");
        node.pin("gdpr", vec![]);
        assert!(node.bucket("gdpr", "carts").unwrap().is_empty());
        node.pin_all([("mixed", vec![&Placement::default(), &strict])]);
        assert!(node.bucket("mixed", "x").is_err(), "one pinned revision pins the app's data");
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
            node.pin_all([("shop", vec![&p])]);
            assert!(node.bucket("shop", "carts").unwrap().is_empty(), "other buckets go anywhere");
        }
        assert_eq!(eu.bucket("shop", "orders").unwrap(), ["region:eu-west"]);
        let refused = us.bucket("shop", "orders").unwrap_err();
        assert_eq!(refused.data, "bucket `orders` of app `shop`");
        assert_eq!(refused.requires, "region=eu-*");
        assert!(us.topic("shop", "nimbus-kv.orders").is_err(), "a pinned bucket's change feed is pinned with it");
        assert!(us.topic("shop", "nimbus-kv.carts").unwrap().is_empty());
        assert_eq!(us.topic("shop", "audit").unwrap(), ["zone:b"], "a topic has its own requirement");
        assert!(us.bucket("shop", "audit").unwrap().is_empty(), "buckets and topics are named apart");
    }
}
