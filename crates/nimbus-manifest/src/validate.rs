//! Checks that serde cannot express: names, ranges, references between tables, route conflicts.
use std::collections::BTreeMap;

use crate::locate::FieldPath;
use crate::names::{RESERVED_BUCKETS, RESERVED_NAME_PREFIX, check_bucket_name, check_topic_name};
use crate::route::{HttpMethod, RoutePattern};
use crate::types::{Component, Limits, Manifest, Probe, Retry, Scale, TopicTrigger};

/// Paths the gateway answers itself; routes may not claim them.
pub const RESERVED_PATHS: &[&str] = &["/healthz"];
/// The gateway's CloudEvents ingress (`POST /events/{topic}`); routes may not start with it.
pub const RESERVED_PREFIX: &str = "/events";
/// The gateway's actor endpoint (`POST /actors/{type}/{key}/{method}`); routes may not start with it.
pub const ACTORS_PREFIX: &str = "/actors";
/// The gateway's workflow endpoint (`POST /workflows/{name}`); routes may not start with it.
pub const WORKFLOWS_PREFIX: &str = "/workflows";

/// A problem found by validation, before it is located in the text.
pub(crate) struct Problem {
    pub field: FieldPath,
    pub message: String,
    pub hint: String,
}

fn problem(field: FieldPath, message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem { field, message: message.into(), hint: hint.into() }
}

pub(crate) fn validate(m: &Manifest) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = crate::scope::check_app_name(&m.app.name) {
        out.push(problem(FieldPath::root().key("app").key("name"), e, "use a name like `shop` or `hello-world`"));
    }
    for (key, value) in &m.app.labels {
        let at = FieldPath::root().key("app").key("labels").key(key.clone());
        let checked = crate::scope::check_app_name(key)
            .map_err(|e| format!("label {e}"))
            .and_then(|()| crate::scope::check_app_name(value).map_err(|_| format!("the value of label `{key}` must be 1 to 63 lower-case letters, digits, `-` or `_`, starting with a letter or digit")));
        if let Err(e) = checked {
            out.push(problem(at, e, "use labels like `tenant = \"acme\"`"));
        }
    }
    if m.component.is_empty() {
        out.push(problem(
            FieldPath::root(),
            "the app has no components",
            "add a `[component.NAME]` table with a `source = \"path/to/file.wasm\"`",
        ));
    }
    for (name, c) in &m.component {
        let at = FieldPath::root().key("component").key(name.clone());
        if let Err(e) = crate::scope::check_app_name(name) {
            out.push(problem(
                at.clone(),
                format!("component {e}"),
                "rename the component, e.g. `[component.checkout]`",
            ));
        }
        check_kind(c, &at, &mut out);
        if let Some(build) = &c.build
            && build.command.trim().is_empty()
        {
            out.push(problem(
                at.clone().key("build").key("command"),
                "the build command is empty",
                "set it, e.g. `cargo build --target wasm32-wasip2 --release`, or remove `build`",
            ));
        }
        for key in c.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                out.push(problem(
                    at.clone().key("env").key(key.clone()),
                    format!("environment variable name `{key}` is empty or contains `=` or NUL"),
                    "use names like `LOG_LEVEL`",
                ));
            }
        }
        check_limits(&c.limits, c.command.is_some(), &at.clone().key("limits"), &mut out);
        check_grants(m, c, &at, &mut out);
    }
    check_http_triggers(m, &mut out);
    check_event_triggers(m, &mut out);
    check_exports(m, &mut out);
    check_placement(m, &mut out);
    check_objectives(m, &mut out);
    out
}

fn check_objectives(m: &Manifest, out: &mut Vec<Problem>) {
    let mut seen = BTreeMap::new();
    for (i, s) in m.slo.iter().enumerate() {
        let at = FieldPath::root().key("slo").index(i);
        if !m.trigger.http.iter().any(|t| t.route.to_string() == s.route) {
            out.push(problem(
                at.clone().key("route"),
                format!("no `[[trigger.http]]` has route `{}`", s.route),
                "name a route exactly as a `[[trigger.http]]` declares it, e.g. `route = \"/api/...\"`",
            ));
        }
        if let Some(first) = seen.insert(s.route.clone(), i) {
            out.push(problem(
                at.clone().key("route"),
                format!("route `{}` already has an objective in slo[{first}]", s.route),
                "give each route one `[[slo]]` with both `p99_ms` and `availability`",
            ));
        }
        if s.p99_ms.is_none() && s.availability.is_none() {
            out.push(problem(
                at.clone(),
                "the objective sets neither `p99_ms` nor `availability`",
                "set one or both, e.g. `p99_ms = 200`",
            ));
        }
        if s.p99_ms.is_some_and(|ms| !(1..=600_000).contains(&ms)) {
            out.push(problem(at.clone().key("p99_ms"), "`p99_ms` must be between 1 and 600000", "e.g. `p99_ms = 200`"));
        }
        if s.availability.is_some_and(|a| !(50.0..100.0).contains(&a)) {
            out.push(problem(
                at.key("availability"),
                "`availability` is a percentage of at least 50 and below 100",
                "e.g. `availability = 99.9`",
            ));
        }
    }
}

fn check_placement(m: &Manifest, out: &mut Vec<Problem>) {
    let p = &m.placement;
    for (field, labels) in [("require", &p.require), ("prefer", &p.prefer)] {
        check_labels(labels, &FieldPath::root().key("placement").key(field), out);
    }
    for (kind, pinned, check) in [
        ("buckets", &p.buckets, app_bucket_name as fn(&str) -> Result<(), String>),
        ("topics", &p.topics, |n: &str| app_topic_name(n, true)),
    ] {
        for (name, labels) in pinned {
            let at = FieldPath::root().key("placement").key(kind).key(name.clone());
            if let Err(e) = check(name) {
                out.push(problem(at.clone(), format!("`{name}`: {e}"), "pin the app's own buckets and topics by name"));
            }
            check_labels(labels, &at, out);
        }
    }
    if let Some(key) = p.spread.as_ref().filter(|k| !crate::placement::label_key_ok(k)) {
        out.push(problem(
            FieldPath::root().key("placement").key("spread"),
            format!("`{key}` is not a label key"),
            "name the label whose values should differ, e.g. `spread = \"zone\"`",
        ));
    }
    if p.max_per_node == Some(0) {
        out.push(problem(
            FieldPath::root().key("placement").key("max_per_node"),
            "`max_per_node` must be at least 1",
            "cap the processes of a service on one node, e.g. `max_per_node = 2`; leave it out for no cap",
        ));
    }
}

/// Label patterns of `[placement]` (at `at`): label keys → value patterns.
fn check_labels(labels: &BTreeMap<String, String>, at: &FieldPath, out: &mut Vec<Problem>) {
    for (key, pattern) in labels {
        if !crate::placement::label_key_ok(key) {
            out.push(problem(
                at.clone().key(key.clone()),
                format!("`{key}` is not a label key"),
                "use a label the nodes carry (`--labels region=eu-west`), e.g. `require = { region = \"eu-*\" }`",
            ));
        } else if !crate::placement::pattern_ok(pattern) {
            out.push(problem(
                at.clone().key(key.clone()),
                format!("`{pattern}` is not a label value pattern"),
                "use letters, digits, `-`, `_`, `.` and `*` for any run of characters, e.g. `eu-*`",
            ));
        }
    }
}

/// The grants of component `c` (at `at`): names and origins well formed, each grant on the
/// kind of component it is for.
fn check_grants(m: &Manifest, c: &Component, at: &FieldPath, out: &mut Vec<Problem>) {
    for (i, topic) in c.grants.publish.iter().enumerate() {
        if let Err(e) = topic_ref(topic, &m.app.name) {
            out.push(problem(
                at.clone().key("grants").key("publish").index(i),
                format!("topic `{topic}`: {e}"),
                "name topics like `orders` or `orders.created`",
            ));
        }
    }
    for (i, name) in c.grants.kv.iter().enumerate() {
        if let Err(e) = bucket_ref(name, &m.app.name) {
            out.push(problem(
                at.clone().key("grants").key("kv").index(i),
                format!("bucket `{name}`: {e}"),
                "name buckets like `carts` or `sessions`",
            ));
        }
    }
    for (i, name) in c.grants.actors.iter().enumerate() {
        if let Err(e) = check_bucket_name(name) {
            out.push(problem(
                at.clone().key("grants").key("actors").index(i),
                format!("actor type `{name}`: {e}"),
                "name actor types like `cart`",
            ));
        }
    }
    if !c.grants.actors.is_empty() && c.command.is_some() {
        out.push(problem(
            at.clone().key("grants").key("actors"),
            "`grants.actors` is for functions; a service calls actors with `POST /actors/TYPE/KEY/METHOD`",
            "remove it",
        ));
    }
    if !c.grants.kv.is_empty() && c.command.is_some() {
        out.push(problem(
            at.clone().key("grants").key("kv"),
            "`grants.kv` is for functions (`wasi:keyvalue`); services keep their own state",
            "remove it",
        ));
    }
    check_secret_env(c, at, out);
    for (i, name) in c.grants.invoke.iter().enumerate() {
        let at = at.clone().key("grants").key("invoke").index(i);
        match name.split_once('/') {
            Some((app, component)) => {
                if let Err(e) = other_app(app, &m.app.name)
                    .and_then(|()| crate::scope::check_app_name(component).map_err(|e| format!("component {e}")))
                {
                    out.push(problem(at, format!("`{name}`: {e}"), "name a component another app exports, `APP/NAME`"));
                }
            }
            None => check_component_ref(m, name, at, out),
        }
    }
    if !c.grants.publish.is_empty() && c.command.is_some() {
        out.push(problem(
            at.clone().key("grants").key("publish"),
            "`grants.publish` is for functions; a service publishes with `POST /events/{topic}` on the gateway",
            "remove it",
        ));
    }
}

/// A service gets each granted secret as an environment variable: two secrets, or a secret and
/// an `env` entry, must not claim the same one.
fn check_secret_env(c: &Component, at: &FieldPath, out: &mut Vec<Problem>) {
    let mut seen = std::collections::HashMap::new();
    for (i, name) in c.grants.secrets.iter().enumerate() {
        let var = name.env_name();
        let clash = if c.env.contains_key(&var) {
            Some(format!("`env.{var}`"))
        } else {
            seen.insert(var.clone(), name).map(|other| format!("secret `{other}`"))
        };
        if let Some(clash) = clash {
            out.push(problem(
                at.clone().key("grants").key("secrets").index(i),
                format!("secret `{name}` would be the environment variable `{var}`, which {clash} already is"),
                "grant each secret once, and rename the clashing `env` entry or secret",
            ));
        }
    }
}

fn check_component_ref(m: &Manifest, name: &str, at: FieldPath, out: &mut Vec<Problem>) {
    if !m.component.contains_key(name) {
        let known: Vec<_> = m.component.keys().map(|k| format!("`{k}`")).collect();
        out.push(problem(
            at,
            format!("no component named `{name}`"),
            if known.is_empty() {
                "define it with a `[component.NAME]` table".to_string()
            } else {
                format!("use one of {}, or define `[component.{name}]`", known.join(", "))
            },
        ));
    }
}

fn check_retry(r: &Retry, at: &FieldPath, out: &mut Vec<Problem>) {
    let ranges: [(&str, u64, u64, u64, &str); 3] = [
        ("max_attempts", r.max_attempts.into(), 1, 100, "attempts"),
        ("backoff_ms", r.backoff_ms, 1, 3_600_000, "milliseconds"),
        ("max_backoff_ms", r.max_backoff_ms, r.backoff_ms.max(1), 86_400_000, "milliseconds, at least backoff_ms"),
    ];
    check_ranges(at, ranges, out);
}

fn check_event_triggers(m: &Manifest, out: &mut Vec<Problem>) {
    check_topic_triggers(m, out);
    check_actor_triggers(m, out);
    check_workflow_triggers(m, out);
    check_kv_triggers(m, out);
}

fn check_topic_triggers(m: &Manifest, out: &mut Vec<Problem>) {
    let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut public: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    for (i, t) in m.trigger.topic.iter().enumerate() {
        let at = FieldPath::root().key("trigger").key("topic").index(i);
        check_component_ref(m, &t.component, at.clone().key("component"), out);
        if let Err(e) = topic_ref(&t.topic, &m.app.name) {
            out.push(problem(
                at.clone().key("topic"),
                format!("topic `{}`: {e}", t.topic),
                "name topics like `orders`",
            ));
        }
        check_public(t, i, &at, &mut public, out);
        let group = t.group.clone().unwrap_or_else(|| t.component.clone());
        if let Err(e) = check_topic_name(&group, false) {
            out.push(problem(at.clone().key("group"), format!("group `{group}`: {e}"), "name groups like `billing`"));
        }
        if let Some(dlq) = &t.dead_letter {
            if let Err(e) = app_topic_name(dlq, true) {
                out.push(problem(at.clone().key("dead_letter"), format!("topic `{dlq}`: {e}"), "e.g. `orders.dlq`"));
            } else if dlq == &t.topic {
                out.push(problem(
                    at.clone().key("dead_letter"),
                    "the dead-letter topic is the topic itself: a failing event would loop forever",
                    format!("use another topic, e.g. `{}.dlq`", t.topic),
                ));
            }
        }
        check_retry(&t.retry, &at.clone().key("retry"), out);
        check_ranges(&at, [("concurrency", t.concurrency.into(), 1, 1024, "events at once")], out);
        let is_service = m.component.get(&t.component).is_some_and(|c| c.command.is_some());
        match &t.path {
            Some(_) if !is_service => out.push(problem(
                at.clone().key("path"),
                "`path` is for services; a function gets events through `nimbus:events/handler`",
                "remove it",
            )),
            Some(p) if !p.starts_with('/') => out.push(problem(
                at.clone().key("path"),
                format!("path `{p}` does not start with `/`"),
                "e.g. `/events`",
            )),
            _ => {}
        }
        if let Some(first) = groups.insert((t.topic.clone(), group.clone()), i) {
            out.push(problem(
                at.key("group"),
                format!("trigger.topic[{first}] already consumes `{}` as group `{group}`", t.topic),
                "give this trigger its own `group`, or remove one of the two",
            ));
        }
    }
}

fn check_actor_triggers(m: &Manifest, out: &mut Vec<Problem>) {
    let mut types = BTreeMap::new();
    for (i, t) in m.trigger.actor.iter().enumerate() {
        let at = FieldPath::root().key("trigger").key("actor").index(i);
        check_component_ref(m, &t.component, at.clone().key("component"), out);
        if let Err(e) = check_bucket_name(&t.actor_type) {
            out.push(problem(
                at.clone().key("type"),
                format!("actor type `{}`: {e}", t.actor_type),
                "name types like `cart`",
            ));
        }
        if m.component.get(&t.component).is_some_and(|c| c.command.is_some()) {
            out.push(problem(
                at.clone().key("component"),
                "an actor is a function (`nimbus:actor/handler`), not a service",
                "point it at a wasm component",
            ));
        }
        check_ranges(&at, [("idle_timeout_s", t.idle_timeout_s, 1, 86_400, "seconds")], out);
        if m.component.get(&t.component).is_some_and(|c| !c.grants.actors.is_empty()) {
            out.push(problem(
                FieldPath::root().key("component").key(t.component.clone()).key("grants").key("actors"),
                "an actor may not call actors (a call back to a busy actor would wait for itself)",
                "call the other actors from a function, or remove `grants.actors`",
            ));
        }
        if let Some(first) = types.insert(t.actor_type.clone(), i) {
            out.push(problem(
                at.key("type"),
                format!("actor type `{}` is already served by trigger.actor[{first}]", t.actor_type),
                "give each type one trigger",
            ));
        }
    }
}

fn check_workflow_triggers(m: &Manifest, out: &mut Vec<Problem>) {
    let mut names = BTreeMap::new();
    for (i, t) in m.trigger.workflow.iter().enumerate() {
        let at = FieldPath::root().key("trigger").key("workflow").index(i);
        check_component_ref(m, &t.component, at.clone().key("component"), out);
        if let Err(e) = check_bucket_name(&t.name) {
            out.push(problem(
                at.clone().key("name"),
                format!("workflow `{}`: {e}", t.name),
                "name workflows like `order`",
            ));
        }
        if m.component.get(&t.component).is_some_and(|c| c.command.is_some()) {
            out.push(problem(
                at.clone().key("component"),
                "a workflow is a function (`nimbus:workflow/handler`), not a service",
                "point it at a wasm component",
            ));
        }
        check_ranges(&at, [("retention_s", t.retention_s, 1, 10 * 365 * 24 * 3600, "seconds")], out);
        if let Some(topic) = &t.topic
            && let Err(e) = app_topic_name(topic, true)
        {
            out.push(problem(
                at.clone().key("topic"),
                format!("topic `{topic}`: {e}"),
                "name one of the app's own topics, like `orders`",
            ));
        }
        if let Some(first) = names.insert(t.name.clone(), i) {
            out.push(problem(
                at.key("name"),
                format!("workflow `{}` is already served by trigger.workflow[{first}]", t.name),
                "give each workflow one trigger",
            ));
        }
    }
}

fn check_kv_triggers(m: &Manifest, out: &mut Vec<Problem>) {
    for (i, t) in m.trigger.kv.iter().enumerate() {
        let at = FieldPath::root().key("trigger").key("kv").index(i);
        check_component_ref(m, &t.component, at.clone().key("component"), out);
        if let Err(e) = app_bucket_name(&t.bucket) {
            out.push(problem(
                at.clone().key("bucket"),
                format!("bucket `{}`: {e}", t.bucket),
                "name buckets like `carts`",
            ));
        }
        check_retry(&t.retry, &at.clone().key("retry"), out);
        check_ranges(&at, [("concurrency", t.concurrency.into(), 1, 1024, "changes at once")], out);
        if t.path.is_some() && m.component.get(&t.component).is_none_or(|c| c.command.is_none()) {
            out.push(problem(
                at.clone().key("path"),
                "`path` is for services; a function gets changes through `nimbus:events/handler`",
                "remove it",
            ));
        }
    }
    for (i, t) in m.trigger.cron.iter().enumerate() {
        let at = FieldPath::root().key("trigger").key("cron").index(i);
        check_component_ref(m, &t.component, at.clone().key("component"), out);
        check_retry(&t.retry, &at.clone().key("retry"), out);
    }
}

/// Checks a bucket a grant names: the app's own (`carts`) or another app's (`shop/carts`).
fn bucket_ref(name: &str, own: &str) -> Result<(), String> {
    match name.split_once('/') {
        Some((app, bucket)) => other_app(app, own).and_then(|()| app_bucket_name(bucket)),
        None => app_bucket_name(name),
    }
}

/// Checks a topic a grant or trigger names: the app's own (`orders`) or another app's
/// (`shop/orders`).
/// `public` of a topic trigger: only on the app's own topics, and the same in every trigger of
/// one topic (`seen`: the first trigger of each topic and what it said).
fn check_public<'m>(
    t: &'m TopicTrigger,
    i: usize,
    at: &FieldPath,
    seen: &mut BTreeMap<&'m str, (usize, bool)>,
    out: &mut Vec<Problem>,
) {
    if t.public && t.topic.contains('/') {
        out.push(problem(
            at.clone().key("public"),
            format!("topic `{}` belongs to another app; only its owner can make it public", t.topic),
            "remove `public`, or ask the owner to declare it public",
        ));
    }
    match seen.get(t.topic.as_str()) {
        Some(&(first, public)) if public != t.public => out.push(problem(
            at.clone().key("public"),
            format!("trigger.topic[{first}] says `public = {public}` for topic `{}`", t.topic),
            "say the same `public` in every trigger of a topic",
        )),
        Some(_) => {}
        None => {
            seen.insert(&t.topic, (i, t.public));
        }
    }
}

fn topic_ref(name: &str, own: &str) -> Result<(), String> {
    match name.split_once('/') {
        Some((app, topic)) => other_app(app, own).and_then(|()| app_topic_name(topic, true)),
        None => app_topic_name(name, true),
    }
}

fn other_app(app: &str, own: &str) -> Result<(), String> {
    crate::scope::check_app_name(app).map_err(|e| format!("app {e}"))?;
    if app == own {
        return Err(format!("`{app}/` names this app itself; name its own buckets and topics without it"));
    }
    Ok(())
}

/// `[export]`: valid names of this app's buckets and topics, shared with other valid apps.
fn check_exports(m: &Manifest, out: &mut Vec<Problem>) {
    check_export_table(m, "kv", &m.export.kv, app_bucket_name, out);
    check_export_table(m, "topics", &m.export.topics, |n| app_topic_name(n, true), out);
    check_export_table(m, "components", &m.export.components, |_| Ok(()), out);
    for name in m.export.components.keys() {
        check_component_ref(m, name, FieldPath::root().key("export").key("components").key(name.clone()), out);
    }
}

fn check_export_table(
    m: &Manifest,
    kind: &str,
    exports: &BTreeMap<String, Vec<String>>,
    check: fn(&str) -> Result<(), String>,
    out: &mut Vec<Problem>,
) {
    for (name, apps) in exports {
        let at = FieldPath::root().key("export").key(kind).key(name.clone());
        if let Err(e) = check(name) {
            out.push(problem(at.clone(), format!("`{name}`: {e}"), "export the app's own buckets and topics by name"));
        }
        for (i, app) in apps.iter().enumerate() {
            if let Err(e) = other_app(app, &m.app.name) {
                out.push(problem(at.clone().index(i), e, "list the apps it is shared with, e.g. `[\"billing\"]`"));
            }
        }
    }
}

/// Checks a topic an app names: a valid name that the platform does not keep for itself.
fn app_topic_name(name: &str, dots: bool) -> Result<(), String> {
    check_topic_name(name, dots)?;
    if crate::names::is_reserved(name) {
        return Err(format!("names starting with `{RESERVED_NAME_PREFIX}` are kept for the platform's own topics"));
    }
    Ok(())
}

/// Checks a bucket an app names: a valid name that the platform does not keep for itself.
fn app_bucket_name(name: &str) -> Result<(), String> {
    check_bucket_name(name)?;
    if RESERVED_BUCKETS.contains(&name) || crate::names::is_reserved(name) {
        return Err(format!(
            "`{name}` is kept for the platform (reserved: {}, and names starting with `{RESERVED_NAME_PREFIX}`)",
            RESERVED_BUCKETS.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

fn check_limits(l: &Limits, service: bool, at: &FieldPath, out: &mut Vec<Problem>) {
    let (max_memory, memory_unit) =
        if service { (1 << 20, "MiB") } else { (4096, "MiB (wasm32 memories end at 4 GiB)") };
    let ranges: [(&str, u64, u64, u64, &str); 8] = [
        ("memory_mb", l.memory_mb.unwrap_or(1).into(), 1, max_memory, memory_unit),
        ("timeout_ms", l.timeout_ms.unwrap_or(1), 1, 24 * 3_600_000, "milliseconds"),
        ("max_concurrency", l.max_concurrency.into(), 1, 10_000, "instances"),
        ("queue_depth", l.queue_depth.into(), 0, 1_000_000, "waiting requests"),
        ("queue_timeout_ms", l.queue_timeout_ms, 1, 3_600_000, "milliseconds"),
        ("max_body_kb", l.max_body_kb, 0, 4 * 1024 * 1024, "KiB"),
        ("cpu_millis", l.cpu_millis.unwrap_or(1).into(), 1, 1_024_000, "thousandths of a core"),
        ("pids", l.pids.unwrap_or(1).into(), 1, 1_000_000, "processes and threads"),
    ];
    check_ranges(at, ranges, out);
}

/// Exactly one of `source` and `command`, and only the fields of that kind.
fn check_kind(c: &Component, at: &FieldPath, out: &mut Vec<Problem>) {
    match (&c.source, &c.command) {
        (None, None) => out.push(problem(
            at.clone(),
            "the component has neither `source` nor `command`",
            "a function sets `source = \"path/to/file.wasm\"`; a service sets `command = [\"python3\", \"server.py\"]`",
        )),
        (Some(_), Some(_)) => out.push(problem(
            at.clone().key("command"),
            "the component has both `source` and `command`",
            "keep `source` for a WebAssembly function or `command` for a service, not both",
        )),
        (Some(source), None) => {
            if source.trim().is_empty() {
                out.push(problem(
                    at.clone().key("source"),
                    "`source` is empty",
                    "set it to the path of the component's .wasm file",
                ));
            }
            let service_only = [
                ("workdir", c.workdir.is_some()),
                ("readiness", c.readiness.is_some()),
                ("liveness", c.liveness.is_some()),
                ("shutdown_grace_s", c.shutdown_grace_s.is_some()),
                ("scale", c.scale.is_some()),
            ];
            for (field, set) in [("cpu_millis", c.limits.cpu_millis.is_some()), ("pids", c.limits.pids.is_some())] {
                if set {
                    out.push(problem(
                        at.clone().key("limits").key(field),
                        format!("`limits.{field}` applies to services (`command`); a function is bounded by its deadline and memory"),
                        "remove it",
                    ));
                }
            }
            for (field, set) in service_only {
                if set {
                    out.push(problem(
                        at.clone().key(field),
                        format!("`{field}` applies to services (`command`), not to WebAssembly functions"),
                        "remove it",
                    ));
                }
            }
        }
        (None, Some(command)) => {
            if command.first().is_none_or(|p| p.trim().is_empty()) {
                out.push(problem(
                    at.clone().key("command"),
                    "`command` is empty",
                    "give the program and its arguments, e.g. `[\"python3\", \"server.py\"]`",
                ));
            }
            if c.shutdown_grace_s.is_some_and(|g| g > 3_600) {
                out.push(problem(at.clone().key("shutdown_grace_s"), "more than an hour", "use 0 to 3600 seconds"));
            }
            if let Some(scale) = &c.scale {
                check_scale(scale, &at.clone().key("scale"), out);
            }
            for (name, probe) in [("readiness", &c.readiness), ("liveness", &c.liveness)] {
                if let Some(p) = probe {
                    check_probe(p, &at.clone().key(name), out);
                }
            }
        }
    }
}

/// `(field, value, min, max, unit)`: each value out of its range is a problem at its field.
fn check_ranges<const N: usize>(at: &FieldPath, ranges: [(&str, u64, u64, u64, &str); N], out: &mut Vec<Problem>) {
    for (field, value, min, max, unit) in ranges {
        if !(min..=max).contains(&value) {
            out.push(problem(
                at.clone().key(field),
                format!("{value} is out of range"),
                format!("use a value from {min} to {max} {unit}").trim_end().to_string(),
            ));
        }
    }
}

fn check_scale(s: &Scale, at: &FieldPath, out: &mut Vec<Problem>) {
    let ranges: [(&str, u64, u64, u64); 8] = [
        ("max", s.max.into(), 1, 1_000),
        ("initial", s.initial.into(), 0, 1_000),
        ("target_concurrency", s.target_concurrency.into(), 1, 100_000),
        ("idle_timeout_s", s.idle_timeout_s, 1, 86_400),
        ("warm", s.warm.into(), 0, 1_000),
        ("stable_window_s", s.stable_window_s, 1, 3_600),
        ("panic_window_s", s.panic_window_s, 1, 3_600),
        ("panic_threshold_pct", s.panic_threshold_pct.into(), 110, 10_000),
    ];
    check_ranges(at, ranges.map(|(field, value, min, max)| (field, value, min, max, "")), out);
    if s.min > s.max {
        out.push(problem(
            at.clone().key("min"),
            format!("min = {} is more than max = {}", s.min, s.max),
            "lower `min` or raise `max`",
        ));
    }
    if s.panic_window_s > s.stable_window_s {
        out.push(problem(
            at.clone().key("panic_window_s"),
            "the panic window is longer than the stable window",
            "the panic window reacts to bursts: make it shorter, e.g. a tenth of `stable_window_s`",
        ));
    }
}

fn check_probe(p: &Probe, at: &FieldPath, out: &mut Vec<Problem>) {
    if let Some(path) = &p.path
        && (!path.starts_with('/') || path.contains(char::is_whitespace))
    {
        out.push(problem(at.clone().key("path"), format!("`{path}` is not a path"), "write a path such as `/healthz`"));
    }
    let ranges: [(&str, u64, u64, u64); 4] = [
        ("period_ms", p.period_ms, 10, 3_600_000),
        ("timeout_ms", p.timeout_ms, 1, 60_000),
        ("start_timeout_s", p.start_timeout_s, 1, 3_600),
        ("failure_threshold", p.failure_threshold.into(), 1, 100),
    ];
    check_ranges(at, ranges.map(|(field, value, min, max)| (field, value, min, max, "")), out);
}

fn check_http_triggers(m: &Manifest, out: &mut Vec<Problem>) {
    let mut seen: BTreeMap<RoutePattern, (usize, Vec<HttpMethod>)> = BTreeMap::new();
    for (i, t) in m.trigger.http.iter().enumerate() {
        let at = FieldPath::root().key("trigger").key("http").index(i);
        check_component_ref(m, &t.component, at.clone().key("component"), out);
        let route = t.route.clone();
        let under = |prefix: &str| match &route {
            RoutePattern::Exact(p) | RoutePattern::Prefix(p) => {
                p == prefix || p.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
            }
        };
        let under_events = under(RESERVED_PREFIX) || under(ACTORS_PREFIX) || under(WORKFLOWS_PREFIX);
        if under_events || RESERVED_PATHS.iter().any(|p| matches!(&route, RoutePattern::Exact(e) if e == p)) {
            out.push(problem(
                at.clone().key("route"),
                format!("route `{}` is reserved by the gateway", t.route),
                "pick another path",
            ));
        }
        let methods = t.methods.clone();
        if let Some((first, other)) = seen.get(&route) {
            let overlap = other.is_empty() || methods.is_empty() || methods.iter().any(|m| other.contains(m));
            if overlap {
                out.push(problem(
                    at.key("route"),
                    format!("route `{}` is already handled by trigger.http[{first}]", t.route),
                    "remove one of the two triggers, or give them disjoint `methods`",
                ));
                continue;
            }
        }
        seen.entry(route).or_insert((i, Vec::new())).1.extend(methods);
    }
}
