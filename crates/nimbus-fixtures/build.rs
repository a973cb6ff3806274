//! Builds the guest fixtures in `tests/guests` with the host's cargo: `wasm32-wasip2` components and
//! `wasm32-wasip1` modules, plus the `.wat` edge cases, and copies them into `OUT_DIR` under stable names.
use std::path::{Path, PathBuf};
use std::process::Command;

const COMPONENTS: &[&str] = &["hello", "kitchen", "events", "kv", "counter", "caller", "secrets", "workflow"];
const MODULES: &[&str] = &["wagi"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("../../tests/guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.join("guests-target");
    println!("cargo:rerun-if-changed={}", guests.display());

    build(&guests, &target_dir, "wasm32-wasip2", COMPONENTS);
    build(&guests, &target_dir, "wasm32-wasip1", MODULES);
    for (target, names) in [("wasm32-wasip2", COMPONENTS), ("wasm32-wasip1", MODULES)] {
        for name in names {
            let built = target_dir.join(target).join("release").join(format!("{name}.wasm"));
            std::fs::copy(&built, out.join(format!("{name}.wasm")))
                .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        }
    }
    for entry in std::fs::read_dir(guests.join("wat")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("wat") => {
                let binary = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                std::fs::write(out.join(format!("{stem}.wasm")), binary).unwrap();
            }
            _ => {
                std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

fn build(guests: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guests)
        .args(["build", "--release", "--locked", "--target", target])
        .arg("--target-dir")
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // The outer build's flags and target are for the host, not for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the guest fixtures");
    assert!(
        status.success(),
        "building the guest fixtures for {target} failed; is the target installed? run `rustup target add {target}`"
    );
}
