//! The scheduler of services: which nodes run each service of each revision that receives
//! traffic. It is a pure function of the cluster's membership and the stored apps, so every
//! node computes the same placement without a coordinator (JetStream already orders the
//! records; a node's view of the membership lags by at most a heartbeat), and a node that joins
//! or leaves moves mostly the services it ran or now wins (rendezvous hashing; with capacity
//! nearly used up, a few others may move too).
//!
//! For each service, in a fixed order (app, revision, component): the nodes whose labels meet
//! the app's `require` and that have room (their `capacity_mb` minus what services already
//! placed there reserve: `limits.memory_mb` × processes per node) are ranked by how many of
//! `prefer` they match, then — with `spread = "zone"` — zones not yet used first, then by a
//! hash of node and service; the first `scale.max / max_per_node` (rounded up) run it.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use nimbus_manifest::Placement;
use sha2::{Digest, Sha256};

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    /// Memory services may reserve on it, MiB.
    pub(crate) capacity_mb: u64,
}

/// A service to place: which one, its app's `[placement]` and what one process needs.
#[derive(Debug, Clone)]
pub(crate) struct Demand {
    pub(crate) key: ServiceKey,
    pub(crate) placement: Placement,
    /// `scale.max`: processes across the cluster.
    pub(crate) max: u32,
    /// `scale.min`: processes across the cluster however idle.
    pub(crate) min: u32,
    /// `limits.memory_mb` of one process.
    pub(crate) memory_mb: u32,
}

/// A service of a revision of an app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ServiceKey {
    pub(crate) app: String,
    pub(crate) revision: String,
    pub(crate) component: String,
}

/// The nodes each service runs on, best first; an empty list means no node can run it now.
pub(crate) type Assignments = HashMap<ServiceKey, Vec<String>>;

/// A placement of every service, and the memory it reserves on each node (MiB).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub(crate) assignments: Assignments,
    pub(crate) reserved: HashMap<String, u64>,
    /// Each service's `scale.min`, which its nodes share ([`min_share`]).
    pub(crate) mins: HashMap<ServiceKey, u32>,
}

/// Places every demand (in key order) on the candidates.
pub(crate) fn schedule(candidates: &[Candidate], demands: &[Demand]) -> Plan {
    let mut demands: Vec<&Demand> = demands.iter().collect();
    demands.sort_by(|a, b| a.key.cmp(&b.key));
    let mut plan = Plan::default();
    for demand in demands {
        let nodes = place(candidates, &plan.reserved, demand);
        let (per_node, _) = demand.placement.split(demand.max);
        for node in &nodes {
            *plan.reserved.entry(node.clone()).or_default() += u64::from(per_node) * u64::from(demand.memory_mb);
        }
        plan.assignments.insert(demand.key.clone(), nodes);
        plan.mins.insert(demand.key.clone(), demand.min);
    }
    plan
}

/// How many of a service's `min` idle processes the node ranking `rank` of the `nodes` running
/// it keeps: in rank order, the shares differ by at most one and add up to `min`.
pub(crate) fn min_share(min: u32, nodes: usize, rank: usize) -> u32 {
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    let rank = u32::try_from(rank).unwrap_or(u32::MAX);
    min / nodes + u32::from(rank < min % nodes)
}

/// The nodes for one demand, given what is reserved on each so far.
pub(crate) fn place(candidates: &[Candidate], reserved: &HashMap<String, u64>, demand: &Demand) -> Vec<String> {
    let p = &demand.placement;
    let (per_node, nodes) = p.split(demand.max);
    let needs = u64::from(per_node) * u64::from(demand.memory_mb);
    let mut fitting: Vec<(&Candidate, usize, u64)> = candidates
        .iter()
        .filter(|c| p.admits(&c.labels))
        .filter(|c| reserved.get(&c.name).copied().unwrap_or(0) + needs <= c.capacity_mb)
        .map(|c| {
            let key = &demand.key;
            (c, p.preference(&c.labels), affinity(&c.name, &[&key.app, &key.revision, &key.component]))
        })
        .collect();
    // More preferences matched first, then the hash (stable as other nodes come and go).
    fitting.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    let mut chosen: Vec<&Candidate> = Vec::new();
    if let Some(key) = &p.spread {
        let mut zones = BTreeSet::new();
        for (c, ..) in &fitting {
            if chosen.len() < nodes as usize && zones.insert(c.labels.get(key)) {
                chosen.push(c);
            }
        }
    }
    for (c, ..) in &fitting {
        if chosen.len() < nodes as usize && !chosen.iter().any(|x| x.name == c.name) {
            chosen.push(c);
        }
    }
    chosen.into_iter().map(|c| c.name.clone()).collect()
}

/// The node owning something of `app` named by `what` (an actor key, a workflow run): of the
/// candidates the app's placement admits, the one ranking first for it (rendezvous hashing, so
/// what other nodes own stays put as nodes come and go).
pub(crate) fn owner<'a>(candidates: &'a [Candidate], placement: &Placement, what: &[&str]) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| placement.admits(&c.labels))
        .min_by_key(|c| affinity(&c.name, what))
        .map(|c| c.name.as_str())
}

/// A node's rank for something (a service, an actor key), the same on every node.
fn affinity(node: &str, what: &[&str]) -> u64 {
    let mut hash = Sha256::new().chain_update(node);
    for part in what {
        hash.update([0]);
        hash.update(part);
    }
    u64::from_be_bytes(hash.finalize()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, capacity_mb: u64) -> Candidate {
        let labels = [("zone".to_string(), zone.to_string()), ("region".to_string(), "eu-west".to_string())].into();
        Candidate { name: name.into(), labels, capacity_mb }
    }

    fn demand(app: &str, max: u32, placement: Placement) -> Demand {
        let key = ServiceKey { app: app.into(), revision: "r1".into(), component: "api".into() };
        Demand { key, placement, max, min: 0, memory_mb: 100 }
    }

    #[test]
    fn the_nodes_of_a_service_share_its_min_in_rank_order() {
        let shares = |min, nodes| (0..nodes).map(|rank| min_share(min, nodes, rank)).collect::<Vec<_>>();
        assert_eq!(shares(1, 2), [1, 0], "one idle process in the cluster, on the first node");
        assert_eq!(shares(5, 3), [2, 2, 1]);
        assert_eq!(shares(0, 3), [0, 0, 0]);
        assert_eq!(shares(4, 1), [4]);
        for (min, nodes) in [(7, 3), (2, 5), (9, 9)] {
            assert_eq!(shares(min, nodes).iter().sum::<u32>(), min);
        }
    }

    fn nodes_of(plan: &Plan, app: &str) -> Vec<String> {
        plan.assignments.iter().find(|(k, _)| k.app == app).map(|(_, v)| v.clone()).unwrap()
    }

    #[test]
    fn every_node_computes_the_same_placement_whatever_the_order_it_lists_things_in() {
        let nodes = vec![node("a", "1", 10_000), node("b", "2", 10_000), node("c", "3", 10_000)];
        let demands: Vec<Demand> = (0..20).map(|i| demand(&format!("app{i}"), 1, Placement::default())).collect();
        let one = schedule(&nodes, &demands);
        let (mut nodes2, mut demands2) = (nodes.clone(), demands.clone());
        nodes2.reverse();
        demands2.reverse();
        assert_eq!(one, schedule(&nodes2, &demands2));
        let used: BTreeSet<&String> = one.assignments.values().flatten().collect();
        assert_eq!(used.len(), 3, "twenty services spread over the three nodes: {one:?}");
    }

    #[test]
    fn a_node_leaving_moves_only_the_services_it_ran() {
        let nodes = vec![node("a", "1", 10_000), node("b", "2", 10_000), node("c", "3", 10_000)];
        let demands: Vec<Demand> = (0..30).map(|i| demand(&format!("app{i}"), 1, Placement::default())).collect();
        let before = schedule(&nodes, &demands).assignments;
        let after = schedule(&nodes[..2], &demands).assignments;
        for (key, was) in &before {
            if was[0] != "c" {
                assert_eq!(&after[key], was, "{key:?} stays where it was");
            } else {
                assert_ne!(after[key][0], "c");
            }
        }
    }

    #[test]
    fn requirements_preferences_spread_and_per_node_caps_are_honoured() {
        let nodes =
            vec![node("a", "1", 10_000), node("b", "1", 10_000), node("c", "2", 10_000), node("d", "3", 10_000)];
        let spread = Placement { spread: Some("zone".into()), max_per_node: Some(1), ..Placement::default() };
        let got = schedule(&nodes, &[demand("s", 3, spread)]);
        let zones: BTreeSet<&str> = nodes_of(&got, "s")
            .iter()
            .map(|n| nodes.iter().find(|c| &c.name == n).unwrap().labels["zone"].as_str())
            .collect();
        assert_eq!(zones.len(), 3, "three processes, one per node, in three zones: {got:?}");

        let prefer = Placement { prefer: [("zone".into(), "2".into())].into(), ..Placement::default() };
        assert_eq!(nodes_of(&schedule(&nodes, &[demand("p", 4, prefer)]), "p"), ["c"]);

        let pinned = Placement { require: [("zone".into(), "3".into())].into(), ..Placement::default() };
        assert_eq!(nodes_of(&schedule(&nodes, &[demand("r", 1, pinned)]), "r"), ["d"]);

        let nowhere = Placement { require: [("region".into(), "us-*".into())].into(), ..Placement::default() };
        assert!(nodes_of(&schedule(&nodes, &[demand("n", 1, nowhere)]), "n").is_empty());
    }

    #[test]
    fn each_key_has_one_owner_among_the_admitted_nodes_and_most_stay_when_one_goes() {
        let nodes = vec![node("a", "1", 0), node("b", "2", 0), node("c", "3", 0)];
        let any = Placement::default();
        let owners: Vec<&str> =
            (0..300).map(|k| owner(&nodes, &any, &["shop", "@actor", "cart", &k.to_string()]).unwrap()).collect();
        for n in ["a", "b", "c"] {
            let share = owners.iter().filter(|o| **o == n).count();
            assert!((50..=150).contains(&share), "{n} owns {share} of 300 keys");
        }
        for (k, was) in owners.iter().enumerate() {
            let now = owner(&nodes[..2], &any, &["shop", "@actor", "cart", &k.to_string()]).unwrap();
            if *was != "c" {
                assert_eq!(now, *was, "key {k} keeps its owner");
            }
        }
        let pinned = Placement { require: [("zone".into(), "2".into())].into(), ..Placement::default() };
        assert_eq!(owner(&nodes, &pinned, &["shop", "@actor", "cart", "k"]), Some("b"));
        let nowhere = Placement { require: [("zone".into(), "9".into())].into(), ..Placement::default() };
        assert_eq!(owner(&nodes, &nowhere, &["shop", "@actor", "cart", "k"]), None);
    }

    #[test]
    fn a_node_without_room_is_skipped_and_no_room_anywhere_places_nothing() {
        let nodes = vec![node("small", "1", 250), node("big", "2", 1_000)];
        // 2 processes × 100 MiB per node: both fit once, then only `big` has room.
        let two = Placement { max_per_node: Some(2), ..Placement::default() };
        let demands: Vec<Demand> = (0..8).map(|i| demand(&format!("app{i}"), 2, two.clone())).collect();
        let plan = schedule(&nodes, &demands);
        assert!(plan.reserved["small"] <= 250 && plan.reserved["big"] <= 1_000, "{plan:?}");
        let got = plan.assignments;
        let on = |n: &str| got.values().filter(|v| v.iter().any(|x| x == n)).count();
        assert_eq!((on("small"), on("big")), (1, 5), "250 MiB hold one 200 MiB reservation, 1000 MiB five: {got:?}");
        assert_eq!(got.values().filter(|v| v.is_empty()).count(), 2, "the seventh and eighth find no room: {got:?}");
    }
}
