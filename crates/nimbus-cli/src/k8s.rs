//! `nimbus k8s render`: Kubernetes manifests for a Nimbus cluster — the nodes as a StatefulSet
//! (each pod a `nimbus server --node-name POD` with its zone and region as labels, a volume for
//! its data, the cluster CA from a Secret, the peer port of the inter-node transport), a Service
//! for the gateway and API, a headless Service for the nodes, a
//! PodDisruptionBudget, and (unless `--nats-url` names one) a three-server NATS JetStream
//! cluster with `sync_interval: always`. Built from the typed `k8s-openapi` structs, printed as
//! YAML documents for `kubectl apply -f -`.
use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Where the nodes keep their data in the pod.
const DATA_DIR: &str = "/var/lib/nimbus";
const GATEWAY_PORT: i32 = 3000;
const API_PORT: i32 = 3001;
/// The inter-node transport (mutual TLS with the cluster CA).
const PEER_PORT: i32 = 7443;
/// Where the cluster CA's Secret is mounted in the pod.
const CLUSTER_CA_DIR: &str = "/etc/nimbus/cluster-ca";
/// The pod labels Kubernetes copies from the node's topology labels (PodTopologyLabelsAdmission).
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Debug, Subcommand)]
pub(crate) enum K8sCommand {
    /// Print the manifests of a cluster (YAML documents for `kubectl apply -f -`).
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// The Nimbus container image: its entrypoint is the `nimbus` binary.
    #[arg(long)]
    image: String,
    /// Name of the objects (and prefix of the NATS ones).
    #[arg(long, default_value = "nimbus")]
    name: String,
    /// Namespace of the objects.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Number of Nimbus nodes.
    #[arg(long, default_value_t = 3)]
    nodes: i32,
    /// Each node's data volume.
    #[arg(long, default_value = "10Gi")]
    storage: String,
    /// Use this NATS JetStream (e.g. nats://nats.infra:4222) instead of rendering one.
    #[arg(long)]
    nats_url: Option<String>,
    /// Servers of the rendered NATS cluster: 1, 3 or 5.
    #[arg(long, default_value_t = 3)]
    nats_servers: i32,
    /// On how many NATS servers the nodes keep each record, topic and bucket (default: 3, or
    /// the rendered servers if fewer).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=5))]
    nats_replicas: Option<i32>,
    /// The NATS image (2.10 or newer).
    #[arg(long, default_value = "nats:2.10-alpine")]
    nats_image: String,
    /// Each NATS server's JetStream volume.
    #[arg(long, default_value = "10Gi")]
    nats_storage: String,
    /// The Secret whose key `master.key` holds the secrets' master key (64 hex characters).
    #[arg(long, default_value = "nimbus-master-key")]
    master_key_secret: String,
    /// The Secret holding the cluster CA (keys `ca.pem` and `ca.key`, from `nimbus nodes
    /// init-ca DIR` then `kubectl create secret generic NAME --from-file=DIR`).
    #[arg(long, default_value = "nimbus-cluster-ca")]
    cluster_ca_secret: String,
}

pub(crate) fn run(command: &K8sCommand) -> anyhow::Result<()> {
    let K8sCommand::Render(args) = command;
    for document in documents(args)? {
        print!("---\n{document}");
    }
    Ok(())
}

/// The manifests as YAML documents.
fn documents(args: &RenderArgs) -> anyhow::Result<Vec<String>> {
    check(args)?;
    let mut out = Vec::new();
    let nats_url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let nats = Nats { args };
            out.push(yaml(&nats.config()));
            out.push(yaml(&nats.service()));
            out.push(yaml(&nats.stateful_set()));
            out.push(yaml(&pdb(args, &nats.name())));
            format!("nats://{}.{}.svc:4222", nats.name(), args.namespace)
        }
    };
    let rendered = if args.nats_url.is_some() { 3 } else { args.nats_servers.min(3) };
    let replicas = args.nats_replicas.unwrap_or(rendered);
    if args.nats_url.is_none() && replicas > args.nats_servers {
        bail!("--nats-replicas {replicas} needs at least as many --nats-servers ({})", args.nats_servers);
    }
    out.push(yaml(&nodes_service(args)));
    out.push(yaml(&gateway_service(args)));
    out.push(yaml(&nodes(args, &nats_url, replicas)));
    out.push(yaml(&pdb(args, &args.name)));
    out.into_iter().collect()
}

fn yaml<T: serde::Serialize>(object: &T) -> anyhow::Result<String> {
    Ok(serde_yaml_ng::to_string(object)?)
}

fn check(args: &RenderArgs) -> anyhow::Result<()> {
    for (flag, name) in [("--name", &args.name), ("--namespace", &args.namespace)] {
        if nimbus_manifest::check_app_name(name).is_err() || name.len() > 40 {
            bail!("{flag} `{name}`: use up to 40 lower-case letters, digits and `-`, starting with a letter");
        }
    }
    if !(1..=100).contains(&args.nodes) {
        bail!("--nodes must be 1 to 100");
    }
    if args.nats_url.is_none() && ![1, 3, 5].contains(&args.nats_servers) {
        bail!("--nats-servers must be 1, 3 or 5 (JetStream needs a majority of them)");
    }
    for (flag, size) in [("--storage", &args.storage), ("--nats-storage", &args.nats_storage)] {
        let digits = size.trim_end_matches(['K', 'M', 'G', 'T', 'i']);
        let unit = &size[digits.len()..];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !["Mi", "Gi", "Ti"].contains(&unit) {
            bail!("{flag} `{size}`: write a size like 10Gi (Mi, Gi or Ti)");
        }
    }
    if args.image.trim().is_empty() || args.image.contains(char::is_whitespace) {
        bail!("--image `{}` is not an image reference", args.image);
    }
    Ok(())
}

fn meta(args: &RenderArgs, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(args.namespace.clone()),
        labels: Some(app_labels(name)),
        ..Default::default()
    }
}

fn app_labels(name: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        ("app.kubernetes.io/part-of".to_string(), "nimbus".to_string()),
    ]
    .into()
}

fn selector(name: &str) -> LabelSelector {
    LabelSelector { match_labels: Some(app_labels(name)), ..Default::default() }
}

fn env_from(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: number, ..Default::default() }
}

fn service_port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort { name: Some(name.into()), port, target_port: Some(IntOrString::Int(target)), ..Default::default() }
}

fn claim(name: &str, size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(path: &str, port: i32, scheme: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some(scheme.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Spreads a set's pods over zones and hosts where the cluster allows.
fn spread(name: &str) -> (Affinity, Vec<TopologySpreadConstraint>) {
    let affinity = Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(selector(name)),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                },
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let zones = TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_LABEL.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector(name)),
        ..Default::default()
    };
    (affinity, vec![zones])
}

/// The nodes: `nimbus server` per pod, named after the pod, labelled with its zone and region.
fn nodes(args: &RenderArgs, nats_url: &str, nats_replicas: i32) -> StatefulSet {
    let headless = format!("{}-nodes", args.name);
    let ns = &args.namespace;
    let server_args: Vec<String> = [
        "server",
        "--listen",
        &format!("0.0.0.0:{GATEWAY_PORT}"),
        "--api-listen",
        &format!("0.0.0.0:{API_PORT}"),
        "--tls",
        "auto",
        "--tls-name",
        &format!("$(POD_NAME).{headless}.{ns}.svc"),
        "--tls-name",
        &format!("{}.{ns}.svc", args.name),
        "--data-dir",
        DATA_DIR,
        "--nats",
        nats_url,
        "--nats-replicas",
        &nats_replicas.to_string(),
        "--node-name",
        "$(POD_NAME)",
        "--labels",
        "region=$(NIMBUS_REGION),zone=$(NIMBUS_ZONE)",
        "--cluster-ca",
        CLUSTER_CA_DIR,
        "--peer-listen",
        &format!("0.0.0.0:{PEER_PORT}"),
        "--peer-advertise",
        &format!("$(POD_NAME).{headless}.{ns}.svc:{PEER_PORT}"),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let master_key = EnvVar {
        name: nimbus_security::secrets::MASTER_KEY_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: args.master_key_secret.clone(),
                key: "master.key".into(),
                optional: Some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = Container {
        name: "nimbus".into(),
        image: Some(args.image.clone()),
        args: Some(server_args),
        env: Some(vec![
            env_from("POD_NAME", "metadata.name"),
            env_from("NIMBUS_REGION", &format!("metadata.labels['{REGION_LABEL}']")),
            env_from("NIMBUS_ZONE", &format!("metadata.labels['{ZONE_LABEL}']")),
            master_key,
        ]),
        ports: Some(vec![port("gateway", GATEWAY_PORT), port("api", API_PORT), port("peer", PEER_PORT)]),
        readiness_probe: Some(probe(nimbus_gateway::HEALTH_PATH, GATEWAY_PORT, "HTTPS", 5, 3)),
        liveness_probe: Some(probe(nimbus_gateway::HEALTH_PATH, GATEWAY_PORT, "HTTPS", 10, 6)),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu".to_string(), Quantity("500m".into())), ("memory".to_string(), Quantity("512Mi".into()))].into(),
            ),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..Default::default() },
            VolumeMount {
                name: "cluster-ca".into(),
                mount_path: CLUSTER_CA_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let (affinity, spread) = spread(&args.name);
    StatefulSet {
        metadata: meta(args, &args.name),
        spec: Some(StatefulSetSpec {
            replicas: Some(args.nodes),
            service_name: Some(headless),
            pod_management_policy: Some("Parallel".into()),
            selector: selector(&args.name),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(app_labels(&args.name)), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "cluster-ca".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(args.cluster_ca_secret.clone()),
                            // The key is read by the node's user alone.
                            default_mode: Some(0o400),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    affinity: Some(affinity),
                    topology_spread_constraints: Some(spread),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![claim("data", &args.storage)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The headless Service that names each node (`POD.NAME-nodes.NS.svc`).
fn nodes_service(args: &RenderArgs) -> Service {
    Service {
        metadata: meta(args, &format!("{}-nodes", args.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(app_labels(&args.name)),
            ports: Some(vec![
                service_port("gateway", GATEWAY_PORT, GATEWAY_PORT),
                service_port("api", API_PORT, API_PORT),
                service_port("peer", PEER_PORT, PEER_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service in front of every node's gateway and API (put an Ingress or a LoadBalancer on it).
fn gateway_service(args: &RenderArgs) -> Service {
    Service {
        metadata: meta(args, &args.name),
        spec: Some(ServiceSpec {
            selector: Some(app_labels(&args.name)),
            ports: Some(vec![service_port("gateway", 443, GATEWAY_PORT), service_port("api", API_PORT, API_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one pod of the set down at a time for voluntary disruptions (drains, upgrades).
fn pdb(args: &RenderArgs, name: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(args, name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(name)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The rendered NATS JetStream cluster.
struct Nats<'a> {
    args: &'a RenderArgs,
}

impl Nats<'_> {
    fn name(&self) -> String {
        format!("{}-nats", self.args.name)
    }

    /// `nats.conf`: JetStream fsyncing every write, routes to every server by its stable name,
    /// tags from the pod's topology labels.
    fn config(&self) -> ConfigMap {
        let (name, ns) = (self.name(), &self.args.namespace);
        let routes: Vec<String> =
            (0..self.args.nats_servers).map(|i| format!("    nats-route://{name}-{i}.{name}.{ns}.svc:6222")).collect();
        let cluster = if self.args.nats_servers > 1 {
            format!("cluster {{\n  name: {name}\n  listen: 0.0.0.0:6222\n  routes: [\n{}\n  ]\n}}\n", routes.join("\n"))
        } else {
            String::new()
        };
        // The servers' tags are the nodes' labels (`region:eu-west`), so that JetStream places
        // the streams of a pinned app on the servers of its region.
        let conf = format!(
            "server_name: $POD_NAME\nserver_tags: [$NATS_REGION_TAG, $NATS_ZONE_TAG]\nlisten: 0.0.0.0:4222\nhttp: 0.0.0.0:8222\njetstream {{\n  store_dir: /data/jetstream\n  sync_interval: always\n}}\n{cluster}"
        );
        ConfigMap {
            metadata: meta(self.args, &format!("{name}-config")),
            data: Some([("nats.conf".to_string(), conf)].into()),
            ..Default::default()
        }
    }

    fn service(&self) -> Service {
        Service {
            metadata: meta(self.args, &self.name()),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                selector: Some(app_labels(&self.name())),
                ports: Some(vec![service_port("client", 4222, 4222), service_port("cluster", 6222, 6222)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn stateful_set(&self) -> StatefulSet {
        let name = self.name();
        let container = Container {
            name: "nats".into(),
            image: Some(self.args.nats_image.clone()),
            args: Some(vec!["-c".into(), "/etc/nats/nats.conf".into()]),
            env: Some(vec![
                env_from("POD_NAME", "metadata.name"),
                env_from("REGION", &format!("metadata.labels['{REGION_LABEL}']")),
                env_from("ZONE", &format!("metadata.labels['{ZONE_LABEL}']")),
                // Kubernetes expands `$(VAR)` of the variables above.
                EnvVar { name: "NATS_REGION_TAG".into(), value: Some("region:$(REGION)".into()), ..Default::default() },
                EnvVar { name: "NATS_ZONE_TAG".into(), value: Some("zone:$(ZONE)".into()), ..Default::default() },
            ]),
            ports: Some(vec![port("client", 4222), port("cluster", 6222), port("monitor", 8222)]),
            readiness_probe: Some(probe("/healthz?js-enabled-only=true", 8222, "HTTP", 5, 3)),
            liveness_probe: Some(probe("/healthz?js-enabled-only=true", 8222, "HTTP", 10, 6)),
            volume_mounts: Some(vec![
                VolumeMount { name: "config".into(), mount_path: "/etc/nats".into(), ..Default::default() },
                VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() },
            ]),
            ..Default::default()
        };
        let (affinity, spread) = spread(&name);
        StatefulSet {
            metadata: meta(self.args, &name),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.args.nats_servers),
                service_name: Some(name.clone()),
                pod_management_policy: Some("Parallel".into()),
                selector: selector(&name),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(app_labels(&name)), ..Default::default() }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        volumes: Some(vec![Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: format!("{name}-config"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        affinity: Some(affinity),
                        topology_spread_constraints: Some(spread),
                        termination_grace_period_seconds: Some(60),
                        ..Default::default()
                    }),
                },
                volume_claim_templates: Some(vec![claim("data", &self.args.nats_storage)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
