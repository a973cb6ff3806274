//! A component's imports against its grants.
use crate::supply::{Capability, Reach, SupplyError, capabilities, imports, reach};

const COMPONENT: &str = r#"(component
    (import "wasi:keyvalue/store@0.2.0-draft" (instance))
    (import "wasi:http/outgoing-handler@0.2.0" (instance))
    (import "wasi:http/types@0.2.0" (instance))
    (import "wasi:io/streams@0.2.0" (instance))
    (import "wasi:filesystem/preopens@0.2.0" (instance))
    (import "wasi:filesystem/types@0.2.0" (instance))
    (import "nimbus:events/publisher@0.1.0" (instance))
    (component $inner
        (import "acme:inner/thing" (instance))
    )
    (core module $m
        (import "hidden" "f" (func))
    )
)"#;

fn component_imports() -> Vec<String> {
    imports(&wat::parse_str(COMPONENT).expect("valid wat")).expect("readable")
}

#[test]
fn a_components_top_level_imports_are_listed() {
    assert_eq!(
        component_imports(),
        [
            "nimbus:events/publisher@0.1.0",
            "wasi:filesystem/preopens@0.2.0",
            "wasi:filesystem/types@0.2.0",
            "wasi:http/outgoing-handler@0.2.0",
            "wasi:http/types@0.2.0",
            "wasi:io/streams@0.2.0",
            "wasi:keyvalue/store@0.2.0-draft",
        ]
    );
}

#[test]
fn a_core_modules_import_modules_are_listed() {
    let module = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (import "env" "host_log" (func (param i32 i32))))"#,
    )
    .expect("valid wat");
    let names = imports(&module).expect("readable");
    assert_eq!(names, ["env", "wasi_snapshot_preview1"]);
    assert_eq!(capabilities(&names), [Capability::Other("env".into())]);
    assert!(matches!(imports(b"not wasm"), Err(SupplyError::Parse { .. })));
}

#[test]
fn imports_map_to_the_capabilities_they_need() {
    assert_eq!(
        capabilities(&component_imports()),
        [Capability::Kv, Capability::Publish, Capability::Outbound, Capability::Other("wasi:filesystem".into())]
    );
    let of = Capability::of_import;
    assert_eq!(of("wasi:config/store@0.2.0-draft"), Some(Capability::Secrets));
    assert_eq!(of("nimbus:actor/client@0.1.0"), Some(Capability::Actors));
    assert_eq!(of("nimbus:actor/state@0.1.0"), None, "linked for every actor");
    assert_eq!(of("wasi:sockets/tcp@0.2.0"), Some(Capability::Other("wasi:sockets".into())));
    assert_eq!(of("wasi:cli/environment@0.2.0"), None);
    assert_eq!("kv".parse(), Ok(Capability::Kv));
    assert_eq!(Capability::Other("wasi:sockets".into()).to_string(), "wasi:sockets");
}

#[test]
fn reach_compares_imports_with_grants() {
    let report = reach(&component_imports(), &[Capability::Kv, Capability::Secrets]);
    let lines: Vec<String> = report.iter().map(Reach::to_string).collect();
    assert_eq!(
        lines,
        [
            "kv: imported and granted",
            "publish: imported but not granted: it will be denied at run time",
            "secrets: granted but not imported: the grant is unused, consider removing it",
            "outbound: imported but not granted: it will be denied at run time",
            "wasi:filesystem: imported but not granted: it will be denied at run time",
        ]
    );
    assert_eq!(report[0], Reach { capability: Capability::Kv, imported: true, granted: true });
    assert_eq!(report[0].advice(), None);
}
