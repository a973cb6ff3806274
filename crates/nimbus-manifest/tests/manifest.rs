//! Manifest parsing and validation through the crate's public API.
use nimbus_manifest::{FieldPath, LoadedManifest, ManifestError};

const VALID: &str = r#"[app]
name = "shop"
version = "1.0.0"

[component.checkout]
source = "target/checkout.wasm"
build = { command = "cargo build --release", watch = ["src/**/*.rs"] }
env = { LOG_LEVEL = "debug" }
limits = { memory_mb = 64, timeout_ms = 5000 }
grants = { outbound = ["https://payments.example.com", "http://127.0.0.1:8080"] }

[[trigger.http]]
route = "/checkout/..."
component = "checkout"

[[trigger.http]]
route = "/health-check"
component = "checkout"
methods = ["GET", "HEAD"]
"#;

fn parse(text: &str) -> Result<LoadedManifest, ManifestError> {
    LoadedManifest::parse(text.to_string(), "app/nimbus.toml".into())
}

fn only_error(text: &str) -> nimbus_manifest::Diagnostic {
    let err = parse(text).unwrap_err();
    let diags = err.diagnostics();
    assert_eq!(diags.len(), 1, "expected one diagnostic, got: {err}");
    diags[0].clone()
}

#[test]
fn valid_manifest_parses_with_defaults() {
    let m = parse(VALID).unwrap();
    let c = &m.manifest.component["checkout"];
    assert_eq!(c.memory_mb(), 64);
    assert_eq!(c.limits.max_concurrency, 100, "unset limits keep their defaults");
    assert_eq!(c.build.as_ref().unwrap().watch, vec!["src/**/*.rs"]);
    let methods: Vec<String> = m.manifest.trigger.http[1].methods.iter().map(|m| m.0.to_string()).collect();
    assert_eq!(methods, ["GET", "HEAD"]);
    assert_eq!(m.resolve(c.source().unwrap()), std::path::Path::new("app/target/checkout.wasm"));
}

#[test]
fn unknown_field_names_line_field_and_fix() {
    let d = only_error(&VALID.replace("env = {", "enviroment = {"));
    assert_eq!((d.line, d.field.as_str()), (8, "component.checkout.enviroment"));
    assert!(d.message.contains("unknown field `enviroment`"), "{}", d.message);
    assert!(d.hint.contains("nimbus schema"));
    let rendered = d.to_string();
    assert!(rendered.starts_with("app/nimbus.toml:8:1: error in `component.checkout.enviroment`"), "{rendered}");
}

#[test]
fn unknown_field_in_inline_table_and_array_of_tables() {
    let d = only_error(&VALID.replace("memory_mb = 64", "memory = 64"));
    assert_eq!(d.line, 9);
    assert_eq!(d.field, "component.checkout.limits.memory");
    let d = only_error(&VALID.replace("methods = [", "verbs = ["));
    assert_eq!(d.line, 19);
    assert_eq!(d.field, "trigger.http[1].verbs");
}

#[test]
fn a_component_is_a_function_or_a_service() {
    let d = only_error(&VALID.replace("source = \"target/checkout.wasm\"\n", ""));
    assert!(d.message.contains("neither `source` nor `command`"), "{}", d.message);
    assert_eq!(d.field, "component.checkout");
    assert_eq!(d.line, 5);
    let d = only_error(
        &VALID.replace("source = \"target/checkout.wasm\"\n", "source = \"x.wasm\"\ncommand = [\"python3\"]\n"),
    );
    assert!(d.message.contains("both `source` and `command`"), "{}", d.message);
    assert_eq!(d.field, "component.checkout.command");

    // Services take outbound grants too (their sandbox's egress proxy enforces them).
    let granted = parse(&VALID.replace("source = \"target/checkout.wasm\"\n", "command = [\"python3\"]\n")).unwrap();
    assert_eq!(granted.manifest.component["checkout"].grants.outbound.len(), 2);
    let service = VALID.replace(
        "source = \"target/checkout.wasm\"\n",
        "command = [\"python3\", \"app.py\"]\nreadiness = { path = \"/ready\" }\nscale = { min = 1, max = 3 }\n",
    );
    let m = parse(&service).unwrap().manifest;
    let c = &m.component["checkout"];
    assert_eq!(
        c.kind(),
        nimbus_manifest::ComponentKind::Service { command: &["python3".to_string(), "app.py".to_string()] }
    );
    assert_eq!(c.scale.as_ref().unwrap().target_concurrency, 100, "unset scale fields keep their defaults");
    assert_eq!(c.timeout(), Some(std::time::Duration::from_secs(5)), "VALID sets timeout_ms = 5000");
    let unlimited = parse(&service.replace("limits = { memory_mb = 64, timeout_ms = 5000 }\n", "")).unwrap();
    assert_eq!(unlimited.manifest.component["checkout"].timeout(), None, "services have no time limit by default");

    let cases = [
        ("command = [\"python3\", \"app.py\"]", "command = []", "component.checkout.command", "`command` is empty"),
        (
            "readiness = { path = \"/ready\" }",
            "readiness = { path = \"ready\" }",
            "component.checkout.readiness.path",
            "is not a path",
        ),
        (
            "scale = { min = 1, max = 3 }",
            "scale = { min = 4, max = 3 }",
            "component.checkout.scale.min",
            "more than max",
        ),
        (
            "scale = { min = 1, max = 3 }",
            "scale = { panic_window_s = 90 }",
            "component.checkout.scale.panic_window_s",
            "longer than the stable window",
        ),
        ("scale = { min = 1, max = 3 }", "scale = { mni = 1 }", "component.checkout.scale.mni", "unknown field"),
    ];
    for (from, to, field, message) in cases {
        let d = only_error(&service.replace(from, to));
        assert_eq!(d.field, field, "{to}");
        assert!(d.message.contains(message), "{to}: {}", d.message);
    }
    // Service settings on a function are refused, not ignored.
    let d =
        only_error(&VALID.replace("source = \"target/checkout.wasm\"\n", "source = \"x.wasm\"\nscale = { max = 2 }\n"));
    assert_eq!(d.field, "component.checkout.scale");
    assert!(d.message.contains("applies to services"), "{}", d.message);
}

#[test]
fn wrong_type_is_located() {
    let d = only_error(&VALID.replace("memory_mb = 64", "memory_mb = \"lots\""));
    assert_eq!(d.line, 9);
    assert!(d.message.contains("invalid type"), "{}", d.message);
}

#[test]
fn syntax_error_is_located() {
    let d = only_error(&VALID.replace("name = \"shop\"", "name = shop"));
    assert_eq!(d.line, 2);
}

#[test]
fn semantic_errors_are_all_reported_at_their_lines() {
    let text = VALID
        .replace("component = \"checkout\"\n\n", "component = \"chekout\"\n\n")
        .replace("memory_mb = 64", "memory_mb = 99999")
        .replace("grants = { outbound", "grants = { kv = [\"Carts!\"], outbound")
        .replace("/health-check", "/healthz");
    let err = parse(&text).unwrap_err();
    let diags = err.diagnostics();
    let summary: Vec<_> = diags.iter().map(|d| (d.line, d.field.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (9, "component.checkout.limits.memory_mb"),
            (10, "component.checkout.grants.kv[0]"),
            (14, "trigger.http[0].component"),
            (17, "trigger.http[1].route"),
        ]
    );
    assert!(diags[2].hint.contains("`checkout`"), "{}", diags[2].hint);
    assert!(err.to_string().ends_with("4 errors in the manifest"));
}

#[test]
fn malformed_values_are_located_at_the_element_with_their_own_hint() {
    let cases = [
        (
            "https://payments.example.com",
            "payments.example.com",
            (10, 24),
            "grants.outbound[0]",
            "needs a scheme",
            "an origin",
        ),
        ("http://127.0.0.1:8080", "http://127.0.0.1:99999", (10, 56), "grants.outbound[1]", "port", "an origin"),
        ("/health-check", "health-check", (17, 9), "trigger.http[1].route", "must start with `/`", "`/prefix/...`"),
        ("\"HEAD\"", "\"get it\"", (19, 19), "trigger.http[1].methods[1]", "not an HTTP method", "upper-case"),
    ];
    for (from, to, (line, column), field, message, hint) in cases {
        let d = only_error(&VALID.replace(from, to));
        assert_eq!((d.line, d.column), (line, column), "{to}");
        assert!(d.field.ends_with(field), "{to}: {}", d.field);
        assert!(d.message.contains(message), "{to}: {}", d.message);
        assert!(d.hint.contains(hint), "{to}: {}", d.hint);
        assert!(!d.message.contains("help") && !d.hint.contains(to), "{to}: {d}");
    }
}

#[test]
fn conflicting_and_reserved_routes_are_rejected() {
    let dup = format!("{VALID}\n[[trigger.http]]\nroute = \"/checkout/...\"\ncomponent = \"checkout\"\n");
    let d = only_error(&dup);
    assert!(d.message.contains("already handled by trigger.http[0]"), "{}", d.message);
    assert_eq!(d.line, 22);
    let disjoint = format!(
        "{VALID}\n[[trigger.http]]\nroute = \"/health-check\"\ncomponent = \"checkout\"\nmethods = [\"POST\"]\n"
    );
    assert!(parse(&disjoint).is_ok(), "disjoint methods on one route are fine");
    let reserved = VALID.replace("/health-check", "/healthz");
    assert!(only_error(&reserved).message.contains("reserved"));
    let bad_method = VALID.replace("\"HEAD\"", "\"get it\"");
    assert_eq!(only_error(&bad_method).field, "trigger.http[1].methods[1]");
}

#[test]
fn names_and_empty_apps() {
    let d = only_error(&VALID.replace("name = \"shop\"", "name = \"Shop App\""));
    assert_eq!((d.line, d.field.as_str()), (2, "app.name"));
    let d = only_error("[app]\nname = \"x\"\n");
    assert!(d.message.contains("no components"));
}

#[test]
fn later_stages_can_locate_fields() {
    let m = parse(VALID).unwrap();
    let field = FieldPath::root().key("component").key("checkout").key("source");
    let d = m.diagnostic(&field, "file not found", "run `nimbus build`");
    assert_eq!((d.line, d.column), (6, 1));
    assert_eq!(d.field, "component.checkout.source");
}

#[test]
fn load_reads_directory_or_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nimbus.toml"), VALID).unwrap();
    assert_eq!(LoadedManifest::load(dir.path()).unwrap().dir(), dir.path());
    let err = LoadedManifest::load(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, ManifestError::Read { .. }));
}

#[test]
fn schema_rejects_unknown_fields() {
    let schema: serde_json::Value = serde_json::from_str(&nimbus_manifest::json_schema()).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["component"].is_object());
    let limits = &schema["$defs"]["Limits"];
    assert_eq!(limits["additionalProperties"], false);
    assert!(limits["properties"]["memory_mb"]["description"].as_str().unwrap().contains("default 128"));
}

const SERVICE: &str = "\n[component.api]\ncommand = [\"python3\", \"server.py\"]\n";

#[test]
fn topic_and_cron_triggers_parse_with_defaults() {
    let text = format!(
        "{VALID}{SERVICE}\n[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\n\n[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"api\"\npath = \"/events\"\nretry = {{ max_attempts = 3 }}\ndead_letter = \"orders.failed\"\n\n[[trigger.cron]]\nschedule = \"0 */5 * * * *\"\ncomponent = \"checkout\"\ntimezone = \"Europe/Berlin\"\nmissed = \"run-once\"\n"
    )
    .replace("grants = { outbound", "grants = { publish = [\"orders.created\"], outbound");
    let m = parse(&text).expect("valid").manifest;
    let t = &m.trigger.topic[0];
    assert_eq!(
        (t.group.as_deref(), t.retry.max_attempts, t.concurrency, t.dead_letter.as_deref()),
        (None, 5, 16, None)
    );
    assert_eq!(m.trigger.topic[1].retry.max_attempts, 3);
    assert_eq!(m.trigger.topic[1].retry.backoff_ms, 200);
    assert_eq!(m.trigger.cron[0].missed, nimbus_manifest::MissedTicks::RunOnce);
    assert_eq!(m.component["checkout"].grants.publish, ["orders.created"]);
}

#[test]
fn bad_event_triggers_are_located() {
    let cases: [(&str, &str, &str); 15] = [
        ("[[trigger.actor]]\ntype = \"Cart!\"\ncomponent = \"checkout\"\n", "trigger.actor[0].type", "actor type"),
        (
            "[[trigger.actor]]\ntype = \"cart\"\ncomponent = \"checkout\"\nidle_timeout_s = 0\n",
            "trigger.actor[0].idle_timeout_s",
            "out of range",
        ),
        ("[[trigger.kv]]\nbucket = \"Carts\"\ncomponent = \"checkout\"\n", "trigger.kv[0].bucket", "bucket"),
        (
            "[[trigger.kv]]\nbucket = \"carts\"\ncomponent = \"checkout\"\npath = \"/x\"\n",
            "trigger.kv[0].path",
            "for services",
        ),
        ("[[trigger.topic]]\ntopic = \"Orders!\"\ncomponent = \"checkout\"\n", "trigger.topic[0].topic", "lowercase"),
        ("[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"nope\"\n", "trigger.topic[0].component", "no component"),
        (
            "[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\ndead_letter = \"orders\"\n",
            "trigger.topic[0].dead_letter",
            "loop",
        ),
        (
            "[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\nretry = { max_attempts = 0 }\n",
            "trigger.topic[0].retry.max_attempts",
            "out of range",
        ),
        (
            "[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\npath = \"/x\"\n",
            "trigger.topic[0].path",
            "for services",
        ),
        (
            "[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\ngroup = \"a.b\"\n",
            "trigger.topic[0].group",
            "group",
        ),
        (
            "[[trigger.topic]]\ntopic = \"billing/orders\"\ncomponent = \"checkout\"\npublic = true\n",
            "trigger.topic[0].public",
            "only its owner",
        ),
        (
            "[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\npublic = true\n\n[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"checkout\"\ngroup = \"b\"\n",
            "trigger.topic[1].public",
            "says `public = true`",
        ),
        (
            "[[trigger.cron]]\nschedule = \"61 * * * *\"\ncomponent = \"checkout\"\n",
            "trigger.cron[0].schedule",
            "schedule",
        ),
        (
            "[[trigger.cron]]\nschedule = \"* * * * *\"\ncomponent = \"checkout\"\ntimezone = \"Mars/Base\"\n",
            "trigger.cron[0].timezone",
            "time zone",
        ),
        (
            "[[trigger.cron]]\nschedule = \"* * * * *\"\ncomponent = \"checkout\"\nmissed = \"sometimes\"\n",
            "trigger.cron[0].missed",
            "unknown variant",
        ),
    ];
    for (table, field, message) in cases {
        let d = only_error(&format!("{VALID}\n{table}"));
        assert_eq!(d.field, field, "{table}");
        assert!(d.message.contains(message), "{table}: {}", d.message);
    }
    let twice = format!(
        "{VALID}\n[[trigger.topic]]\ntopic = \"o\"\ncomponent = \"checkout\"\n\n[[trigger.topic]]\ntopic = \"o\"\ncomponent = \"checkout\"\n"
    );
    assert!(only_error(&twice).message.contains("already consumes"));
    let grant = VALID.replace("grants = { outbound", "grants = { publish = [\"Bad Topic\"], outbound");
    assert_eq!(only_error(&grant).field, "component.checkout.grants.publish[0]");
    let bucket = VALID.replace("grants = { outbound", "grants = { kv = [\"carts\", \"Carts!\"], outbound");
    assert_eq!(only_error(&bucket).field, "component.checkout.grants.kv[1]");
    let events_route = VALID.replace("/health-check", "/events/orders");
    assert!(only_error(&events_route).message.contains("reserved"));
    let grant = VALID.replace("grants = { outbound", "grants = { actors = [\"Cart!\"], outbound");
    assert_eq!(only_error(&grant).field, "component.checkout.grants.actors[0]");
    let reentrant = format!("{VALID}\n[[trigger.actor]]\ntype = \"cart\"\ncomponent = \"checkout\"\n")
        .replace("grants = { outbound", "grants = { actors = [\"cart\"], outbound");
    assert!(only_error(&reentrant).message.contains("may not call actors"));
    let actors_route = VALID.replace("/health-check", "/actors/...");
    assert!(only_error(&actors_route).message.contains("reserved"));
}

#[test]
fn names_reserved_for_the_platform_cannot_be_granted() {
    let with = |grants: &str| VALID.replace("grants = { outbound", &format!("grants = {{ {grants}, outbound"));
    let d = only_error(&with("kv = [\"carts\", \"actors\"]"));
    assert_eq!((d.field.as_str(), d.line), ("component.checkout.grants.kv[1]", 10));
    assert!(d.message.contains("`actors` is kept for the platform"), "{}", d.message);
    let d = only_error(&with("kv = [\"nimbus-x\"]"));
    assert_eq!(d.field, "component.checkout.grants.kv[0]");
    let d = only_error(&with("publish = [\"nimbus-kv.carts\"]"));
    assert_eq!(d.field, "component.checkout.grants.publish[0]");
    assert!(d.message.contains("kept for the platform"), "{}", d.message);
    let d = only_error(&format!("{VALID}\n[[trigger.topic]]\ntopic = \"nimbus-cron.0\"\ncomponent = \"checkout\"\n"));
    assert_eq!(d.field, "trigger.topic[0].topic");
    let d = only_error(&format!("{VALID}\n[[trigger.kv]]\nbucket = \"actors\"\ncomponent = \"checkout\"\n"));
    assert_eq!(d.field, "trigger.kv[0].bucket");
    assert!(parse(&with("kv = [\"carts\"], publish = [\"payments\"]")).is_ok());
}

#[test]
fn exports_and_imports_are_validated_and_located() {
    let exported = |t: &str| format!("{VALID}\n[export]\n{t}\n");
    let d = only_error(&exported("kv = { Carts = [\"billing\"] }"));
    assert_eq!((d.field.as_str(), d.line), ("export.kv.Carts", 22));
    let d = only_error(&exported("topics = { orders = [\"billing\", \"shop\"] }"));
    assert_eq!(d.field, "export.topics.orders[1]");
    assert!(d.message.contains("names this app itself"), "{}", d.message);
    let d = only_error(&exported("kv = { actors = [\"billing\"] }"));
    assert!(d.message.contains("kept for the platform"), "{}", d.message);
    let m = parse(&exported("kv = { carts = [\"billing\"] }\ntopics = { orders = [\"billing\"] }")).unwrap().manifest;
    assert!(m.export.kv_to("carts", "billing") && !m.export.kv_to("carts", "third"));
    assert!(m.export.topic_to("orders", "billing") && !m.export.topic_to("payments", "billing"));

    let with = |grants: &str| VALID.replace("grants = { outbound", &format!("grants = {{ {grants}, outbound"));
    let d = only_error(&with("kv = [\"Shop/carts\"]"));
    assert_eq!(d.field, "component.checkout.grants.kv[0]");
    let d = only_error(&with("kv = [\"shop/carts\"]"));
    assert!(d.message.contains("names this app itself"), "{}", d.message);
    let d = only_error(&with("publish = [\"billing/nimbus-kv.x\"]"));
    assert!(d.message.contains("kept for the platform"), "{}", d.message);
    let m = parse(&format!(
        "{}\n[[trigger.topic]]\ntopic = \"billing/invoices\"\ncomponent = \"checkout\"\n",
        with("kv = [\"billing/carts\"], publish = [\"billing/orders\"]")
    ))
    .unwrap()
    .manifest;
    let imports: Vec<(&str, String, String)> = m.imports().into_iter().collect();
    assert_eq!(
        imports,
        [
            ("kv", "billing".to_string(), "carts".to_string()),
            ("topic", "billing".to_string(), "invoices".to_string()),
            ("topic", "billing".to_string(), "orders".to_string())
        ]
    );
}

#[test]
fn secret_grants_are_checked_names_and_may_not_shadow_env() {
    let granted =
        |secrets: &str| VALID.replace("grants = { outbound", &format!("grants = {{ secrets = {secrets}, outbound"));
    let ok = parse(&granted(r#"["stripe-key", "db_password"]"#)).unwrap();
    let names: Vec<_> = ok.manifest.component["checkout"].grants.secrets.iter().map(|s| s.env_name()).collect();
    assert_eq!(names, ["STRIPE_KEY", "DB_PASSWORD"]);

    let d = only_error(&granted(r#"["ok", "Stripe.Key"]"#));
    assert_eq!(d.field, "component.checkout.grants.secrets[1]");
    assert!(d.message.contains("lowercase letters"), "{}", d.message);

    let d = only_error(&granted(r#"["log-level"]"#));
    assert_eq!(d.field, "component.checkout.grants.secrets[0]");
    assert!(d.message.contains("`env.LOG_LEVEL`"), "{}", d.message);

    let d = only_error(&granted(r#"["db-url", "db_url"]"#));
    assert_eq!(d.field, "component.checkout.grants.secrets[1]");
    assert!(d.message.contains("secret `db-url`"), "{}", d.message);
}

#[test]
fn invoke_grants_name_a_component_of_the_app_or_an_app_and_its_component() {
    let granted =
        |invoke: &str| VALID.replace("grants = { outbound", &format!("grants = {{ invoke = {invoke}, outbound"));
    let ok = parse(&granted(r#"["checkout", "billing/charge"]"#)).unwrap();
    let grants = &ok.manifest.component["checkout"].grants;
    let app = ok.manifest.app.name.as_str();
    assert!(grants.may_invoke(app, app, "checkout"));
    assert!(grants.may_invoke(app, "billing", "charge"));
    assert!(!grants.may_invoke(app, app, "charge"), "`billing/charge` is not this app's `charge`");
    assert!(!grants.may_invoke(app, "billing", "checkout"));

    let d = only_error(&granted(r#"["checkout", "nope"]"#));
    assert_eq!(d.field, "component.checkout.grants.invoke[1]");
    assert!(d.message.contains("no component named `nope`"), "{}", d.message);

    let d = only_error(&granted(&format!(r#"["{app}/checkout"]"#)));
    assert_eq!(d.field, "component.checkout.grants.invoke[0]");
    assert!(d.message.contains("names this app itself"), "{}", d.message);

    let d = only_error(&granted(r#"["billing/Charge"]"#));
    assert!(d.message.contains("component name `Charge`"), "{}", d.message);
}

#[test]
fn exported_components_must_exist() {
    let d = only_error(&format!("{VALID}\n[export]\ncomponents = {{ nope = [\"billing\"] }}\n"));
    assert_eq!(d.field, "export.components.nope");
    assert!(d.message.contains("no component named `nope`"), "{}", d.message);
}

#[test]
fn placement_requires_label_keys_and_value_patterns() {
    let ok = parse(&format!(
        "{VALID}\n[placement]\nrequire = {{ region = \"eu-*\", \"topology.kubernetes.io/zone\" = \"*-1a\" }}\n"
    ))
    .unwrap();
    assert_eq!(ok.manifest.placement.describe(), "region=eu-*, topology.kubernetes.io/zone=*-1a");
    let d = only_error(&format!("{VALID}\n[placement]\nrequire = {{ \"-region\" = \"eu\" }}\n"));
    assert_eq!(d.field, "placement.require.-region");
    assert!(d.message.contains("not a label key"), "{}", d.message);
    let d = only_error(&format!("{VALID}\n[placement]\nrequire = {{ region = \"eu west\" }}\n"));
    assert!(d.message.contains("`eu west` is not a label value pattern"), "{}", d.message);
    let d = only_error(&format!("{VALID}\n[placement]\navoid = {{ region = \"eu\" }}\n"));
    assert!(d.message.contains("avoid"), "unknown fields are refused: {}", d.message);
}

#[test]
fn placement_of_services_prefers_spreads_and_caps_per_node() {
    let ok =
        parse(&format!("{VALID}\n[placement]\nprefer = {{ zone = \"a\" }}\nspread = \"zone\"\nmax_per_node = 2\n"))
            .unwrap();
    let p = &ok.manifest.placement;
    assert_eq!((p.spread.as_deref(), p.max_per_node), (Some("zone"), Some(2)));
    let d = only_error(&format!("{VALID}\n[placement]\nprefer = {{ zone = \"a b\" }}\n"));
    assert_eq!(d.field, "placement.prefer.zone");
    let d = only_error(&format!("{VALID}\n[placement]\nspread = \"-zone\"\n"));
    assert_eq!(d.field, "placement.spread");
    let d = only_error(&format!("{VALID}\n[placement]\nmax_per_node = 0\n"));
    assert_eq!(d.field, "placement.max_per_node");
    assert!(d.message.contains("at least 1"), "{}", d.message);
}

#[test]
fn placement_pins_single_buckets_and_topics_by_name() {
    let ok = parse(&format!(
        "{VALID}\n[placement.buckets]\norders = {{ region = \"eu-*\" }}\n[placement.topics]\n\"audit.v1\" = {{ region = \"eu-*\" }}\n"
    ))
    .unwrap();
    let p = &ok.manifest.placement;
    assert_eq!(p.buckets["orders"]["region"], "eu-*");
    assert!(p.topics.contains_key("audit.v1") && p.require.is_empty(), "the app itself is not pinned");
    let d = only_error(&format!("{VALID}\n[placement.buckets]\n\"Bad Name\" = {{ region = \"eu\" }}\n"));
    assert_eq!(d.field, "placement.buckets.Bad Name");
    let d = only_error(&format!("{VALID}\n[placement.topics]\naudit = {{ region = \"eu west\" }}\n"));
    assert_eq!(d.field, "placement.topics.audit.region");
    assert!(d.message.contains("not a label value pattern"), "{}", d.message);
}

#[test]
fn objectives_name_a_declared_route_and_sane_targets() {
    let ok =
        parse(&format!("{VALID}\n[[slo]]\nroute = \"/checkout/...\"\np99_ms = 200\navailability = 99.9\n")).unwrap();
    let objectives: Vec<_> = ok.manifest.objectives().map(|(s, c)| (s.p99_ms, s.availability, c)).collect();
    assert_eq!(objectives, [(Some(200), Some(99.9), "checkout")]);
    let d = only_error(&format!("{VALID}\n[[slo]]\nroute = \"/nowhere\"\np99_ms = 200\n"));
    assert_eq!(d.field, "slo[0].route");
    assert!(d.message.contains("no `[[trigger.http]]` has route `/nowhere`"), "{d:?}");
    assert!(d.line > 20, "the diagnostic points at the line: {d:?}");
    let d = only_error(&format!("{VALID}\n[[slo]]\nroute = \"/checkout/...\"\navailability = 100\n"));
    assert_eq!(d.field, "slo[0].availability");
    let d = only_error(&format!("{VALID}\n[[slo]]\nroute = \"/checkout/...\"\n"));
    assert!(d.message.contains("neither"), "{d:?}");
    let d = only_error(&format!("{VALID}\n[[slo]]\nroute = \"/checkout/...\"\np99_ms = 0\n"));
    assert_eq!(d.field, "slo[0].p99_ms");
}

#[test]
fn labels_are_names_and_the_tenant_is_one() {
    let labelled = VALID
        .replace("version = \"1.0.0\"\n", "version = \"1.0.0\"\nlabels = { tenant = \"acme\", team = \"pay-1\" }\n");
    assert_eq!(parse(&labelled).unwrap().manifest.app.tenant(), "acme");
    assert_eq!(parse(VALID).unwrap().manifest.app.tenant(), "", "no label, no tenant");
    // The usage store separates names with U+001F: a label must never hold one.
    for bad in ["\\u001f", "", "Acme", "a b", "x".repeat(64).as_str()] {
        let d = only_error(
            &VALID
                .replace("version = \"1.0.0\"\n", &format!("version = \"1.0.0\"\nlabels = {{ tenant = \"{bad}\" }}\n")),
        );
        assert_eq!(d.field.as_str(), "app.labels.tenant", "{bad:?}");
        assert!(d.message.contains("the value of label `tenant`"), "{}", d.message);
    }
    let d =
        only_error(&VALID.replace("version = \"1.0.0\"\n", "version = \"1.0.0\"\nlabels = { Tenant = \"acme\" }\n"));
    assert!(d.message.contains("label name `Tenant`"), "{}", d.message);
}
