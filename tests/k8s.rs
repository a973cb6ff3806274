//! `nimbus k8s render`: every document it prints parses back into its `k8s-openapi` type, the
//! objects fit together (selectors, service names, claims), the nodes' command line is one
//! `nimbus server` accepts, and the rendered `nats.conf` is one `nats-server` accepts.
mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::NIMBUS;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The rendered objects by kind, each parsed into its type.
#[derive(Default)]
struct Rendered {
    sets: BTreeMap<String, StatefulSet>,
    services: BTreeMap<String, Service>,
    budgets: BTreeMap<String, PodDisruptionBudget>,
    configs: BTreeMap<String, ConfigMap>,
}

fn render(args: &[&str]) -> Result<Rendered, String> {
    let out = Command::new(NIMBUS).args(["k8s", "render"]).args(args).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut r = Rendered::default();
    for doc in text.split("---\n").filter(|d| !d.trim().is_empty()) {
        let kind: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).unwrap();
        match kind["kind"].as_str().unwrap_or_else(|| panic!("no kind in {doc}")) {
            "StatefulSet" => parse_into(&mut r.sets, doc),
            "Service" => parse_into(&mut r.services, doc),
            "PodDisruptionBudget" => parse_into(&mut r.budgets, doc),
            "ConfigMap" => parse_into(&mut r.configs, doc),
            other => panic!("unexpected kind {other}:\n{doc}"),
        }
    }
    Ok(r)
}

/// Parses `doc` into its type, by its name.
fn parse_into<T>(objects: &mut BTreeMap<String, T>, doc: &str)
where
    T: k8s_openapi::serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let object: T = serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("{e}:\n{doc}"));
    objects.insert(object.metadata().name.clone().expect("a name"), object);
}

fn pod_labels(set: &StatefulSet) -> BTreeMap<String, String> {
    set.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap()
}

#[test]
fn rendered_manifests_parse_into_kubernetes_types_and_fit_together() {
    let r = render(&["--image", "registry.example.com/nimbus:0.1.0", "--namespace", "prod", "--nodes", "4"]).unwrap();
    assert_eq!(r.sets.keys().collect::<Vec<_>>(), ["nimbus", "nimbus-nats"]);
    assert_eq!(r.services.keys().collect::<Vec<_>>(), ["nimbus", "nimbus-nats", "nimbus-nodes"]);
    assert_eq!(r.budgets.keys().collect::<Vec<_>>(), ["nimbus", "nimbus-nats"]);

    for (name, set) in &r.sets {
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(set.metadata.namespace.as_deref(), Some("prod"));
        // The set's selector picks its pods; its budget and its headless service pick the same.
        let labels = pod_labels(set);
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels), "{name}");
        let budget = r.budgets[name].spec.as_ref().unwrap();
        assert_eq!(budget.selector.as_ref().unwrap().match_labels.as_ref(), Some(&labels), "{name}");
        let headless = &r.services[spec.service_name.as_deref().unwrap()];
        let headless = headless.spec.as_ref().unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"), "{name}");
        assert_eq!(headless.selector.as_ref(), Some(&labels), "{name}");
        // Each pod's volume comes from the set's claim template.
        let claims: Vec<_> =
            spec.volume_claim_templates.as_ref().unwrap().iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        let mounts = spec.template.spec.as_ref().unwrap().containers[0].volume_mounts.clone().unwrap();
        assert!(claims.iter().all(|c| mounts.iter().any(|m| &m.name == c)), "{name}: {claims:?}");
    }

    // The nodes: four `nimbus server`s named after their pods, on the rendered NATS.
    let nodes = r.sets["nimbus"].spec.as_ref().unwrap();
    assert_eq!(nodes.replicas, Some(4));
    let container = &nodes.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("registry.example.com/nimbus:0.1.0"));
    let args = container.args.clone().unwrap();
    let after = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str());
    assert_eq!(args[0], "server");
    assert_eq!(after("--node-name"), Some("$(POD_NAME)"));
    assert_eq!(after("--nats"), Some("nats://nimbus-nats.prod.svc:4222"));
    assert_eq!(after("--nats-replicas"), Some("3"));
    assert_eq!(after("--labels"), Some("region=$(NIMBUS_REGION),zone=$(NIMBUS_ZONE)"));
    let env: Vec<&str> = container.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
    for name in ["POD_NAME", "NIMBUS_REGION", "NIMBUS_ZONE", "NIMBUS_MASTER_KEY"] {
        assert!(env.contains(&name), "{env:?}");
    }
    // The transport: the cluster CA from its Secret (read-only, the key readable by the node
    // alone), the peer port on every pod and on the headless Service that names the pods.
    assert_eq!(after("--peer-advertise"), Some("$(POD_NAME).nimbus-nodes.prod.svc:7443"));
    let ca_mount = container.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "cluster-ca").unwrap();
    assert_eq!((after("--cluster-ca"), ca_mount.read_only), (Some(ca_mount.mount_path.as_str()), Some(true)));
    let volumes = nodes.template.spec.as_ref().unwrap().volumes.clone().unwrap();
    let secret = volumes.iter().find(|v| v.name == "cluster-ca").unwrap().secret.clone().unwrap();
    assert_eq!((secret.secret_name.as_deref(), secret.default_mode), (Some("nimbus-cluster-ca"), Some(0o400)));
    assert!(container.ports.as_ref().unwrap().iter().any(|p| p.container_port == 7443));
    let headless = r.services["nimbus-nodes"].spec.as_ref().unwrap();
    assert!(headless.ports.as_ref().unwrap().iter().any(|p| p.port == 7443));
    // Every flag is one `nimbus server` has.
    let help = Command::new(NIMBUS).args(["server", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag.as_str()), "`nimbus server` has no {flag}");
    }
    let gateway = r.services["nimbus"].spec.as_ref().unwrap();
    assert_eq!(gateway.selector.as_ref(), Some(&pod_labels(&r.sets["nimbus"])));

    // The NATS servers' configuration is valid for nats-server, fsyncs every write and routes
    // to every server.
    let conf = r.configs["nimbus-nats-config"].data.as_ref().unwrap()["nats.conf"].clone();
    assert!(conf.contains("sync_interval: always"), "{conf}");
    for i in 0..3 {
        assert!(conf.contains(&format!("nats-route://nimbus-nats-{i}.nimbus-nats.prod.svc:6222")), "{conf}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf.replace("/data/jetstream", &dir.path().join("js").display().to_string())).unwrap();
    let nats = std::env::var("NIMBUS_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let checked = Command::new(nats)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .env("POD_NAME", "nimbus-nats-0")
        .env("NATS_REGION_TAG", "region:eu-west")
        .env("NATS_ZONE_TAG", "zone:eu-west-1a")
        .output()
        .unwrap();
    assert!(checked.status.success(), "nats-server -t: {}", String::from_utf8_lossy(&checked.stderr));

    // Each server is tagged with its pod's region and zone, as the nodes are labelled: what
    // JetStream places a pinned app's streams by.
    assert!(conf.contains("server_tags: [$NATS_REGION_TAG, $NATS_ZONE_TAG]"), "{conf}");
    let env =
        r.sets["nimbus-nats"].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(value("NATS_REGION_TAG").as_deref(), Some("region:$(REGION)"));
    let region = env.iter().find(|e| e.name == "REGION").unwrap();
    let field = &region.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path;
    assert_eq!(field, "metadata.labels['topology.kubernetes.io/region']");
}

#[test]
fn with_an_existing_nats_nothing_of_nats_is_rendered_and_bad_flags_are_refused() {
    let r = render(&["--image", "nimbus:dev", "--nats-url", "nats://nats.infra:4222", "--name", "edge"]).unwrap();
    assert_eq!(r.sets.keys().collect::<Vec<_>>(), ["edge"]);
    assert!(r.configs.is_empty());
    let args =
        r.sets["edge"].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--nats", "nats://nats.infra:4222"]), "{args:?}");

    for (flags, says) in [
        (&["--image", "x", "--nodes", "0"][..], "--nodes must be 1 to 100"),
        (&["--image", "x", "--nats-servers", "2"][..], "--nats-servers must be 1, 3 or 5"),
        (&["--image", "x", "--storage", "10GB"][..], "--storage `10GB`"),
        (&["--image", "x", "--name", "Nimbus"][..], "--name `Nimbus`"),
        (&["--image", "bad image"][..], "not an image reference"),
        (&["--image", "x", "--nats-servers", "1", "--nats-replicas", "3"][..], "needs at least as many --nats-servers"),
    ] {
        let e = render(flags).err().unwrap_or_else(|| panic!("{flags:?} accepted"));
        assert!(e.contains(says), "{flags:?}: {e}");
    }
}
