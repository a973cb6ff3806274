//! `nimbus new` and `nimbus templates list`: app templates embedded in the binary.
//!
//! A template is a folder under `templates/` holding the app's files and a `template.toml`
//! (description, language, and optionally the WASI WIT version, the WIT packages to write into
//! `wit/`, and whether the app needs the WASI preview1 → component adapter). In file contents `{{name}}` becomes the app name and `{{crate_name}}` its
//! `snake_case` form; a file called `gitignore` is written as `.gitignore`.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use include_dir::{Dir, DirEntry, include_dir};
use serde::Deserialize;

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");
/// Nimbus's own WIT packages (`nimbus:workflow`, ...), written into templates that name them.
static NIMBUS_WIT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../wit");

/// The WIT of WASI 0.2.12 (from the wasmtime-wasi-http crate), written into templates that ask.
const WIT_DIR: &str = "wit";
const WIT_VERSION: &str = "0.2.12";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    description: String,
    language: String,
    #[serde(default)]
    wit: Option<String>,
    /// Nimbus WIT packages (directories of the repository's `wit/`) to write into `wit/`.
    #[serde(default)]
    nimbus_wit: Vec<String>,
    /// Host interface packages (directories of the repository's `wit/deps`, e.g. `keyvalue`) to
    /// write into `wit/deps/` and import into the world `app`; needs `wit`.
    #[serde(default)]
    wit_deps: Vec<String>,
    /// Writes the WASI preview1 → component reactor adapter as [`ADAPTER_FILE`], for builds
    /// that make a preview1 core module into a component (`wasm-tools component new --adapt`).
    #[serde(default)]
    preview1_adapter: bool,
}

/// The file name of the reactor adapter in an app made from a template that asks for it.
const ADAPTER_FILE: &str = "wasi_snapshot_preview1.reactor.wasm";

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// Template to start from (see `nimbus templates list`).
    template: String,
    /// Name of the app; also the directory created.
    name: String,
    /// Parent directory to create the app in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TemplatesCommand {
    /// List the templates `nimbus new` knows.
    List,
}

fn templates() -> impl Iterator<Item = (&'static str, &'static Dir<'static>)> {
    TEMPLATES.dirs().filter_map(|d| {
        let name = d.path().file_name()?.to_str()?;
        d.get_file(d.path().join("template.toml")).map(|_| (name, d))
    })
}

fn meta(dir: &Dir<'static>) -> anyhow::Result<Meta> {
    let file = dir.get_file(dir.path().join("template.toml")).context("template.toml is missing")?;
    toml::from_str(file.contents_utf8().context("template.toml is not UTF-8")?).context("invalid template.toml")
}

pub(crate) fn list(_: &TemplatesCommand) -> anyhow::Result<()> {
    println!("{:<16} {:<11} description", "template", "language");
    for (name, dir) in templates() {
        let m = meta(dir)?;
        println!("{name:<16} {:<11} {}", m.language, m.description);
    }
    Ok(())
}

pub(crate) fn new(args: &NewArgs) -> anyhow::Result<()> {
    let Some((_, dir)) = templates().find(|(n, _)| *n == args.template) else {
        let known: Vec<_> = templates().map(|(n, _)| n).collect();
        bail!("no template named `{}`; available: {} (see `nimbus templates list`)", args.template, known.join(", "));
    };
    if nimbus_manifest::LoadedManifest::parse(
        format!("[app]\nname = \"{}\"\n[component.x]\nsource = \"x.wasm\"\n", args.name),
        "nimbus.toml".into(),
    )
    .is_err()
    {
        bail!("`{}` cannot be an app name: use lower-case letters, digits, `-` and `_`, e.g. `hello-world`", args.name);
    }
    let meta = meta(dir)?;
    let dest = args.dir.join(&args.name);
    if dest.exists() {
        bail!("{} already exists; pick another name or remove it", dest.display());
    }
    let crate_name = args.name.replace('-', "_");
    write_dir(dir, dir.path(), &dest, &|text| {
        text.replace("{{name}}", &args.name).replace("{{crate_name}}", &crate_name)
    })?;
    match &meta.wit {
        Some(version) => write_wit(&dest.join(WIT_DIR), version, &meta.wit_deps)?,
        None if !meta.wit_deps.is_empty() => bail!("the template's `wit_deps` need `wit` in its template.toml"),
        None => {}
    }
    if meta.preview1_adapter {
        let adapter = dest.join(ADAPTER_FILE);
        std::fs::write(&adapter, wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
            .with_context(|| format!("cannot write {}", adapter.display()))?;
    }
    for package in &meta.nimbus_wit {
        let wit = NIMBUS_WIT.get_dir(package).with_context(|| format!("the WIT package `{package}` is missing"))?;
        write_dir(wit, wit.path(), &dest.join(WIT_DIR), &str::to_string)?;
    }
    println!("Created `{}` from `{}` in {}", args.name, args.template, dest.display());
    let app = nimbus_manifest::LoadedManifest::load(&dest).context("the template's nimbus.toml is invalid")?;
    for install in app.manifest.component.values().filter_map(|c| c.build.as_ref()?.install.as_deref()) {
        println!("Toolchain: {install}");
    }
    println!("Next:\n  cd {}\n  nimbus build\n  nimbus up", dest.display());
    Ok(())
}

fn write_dir(dir: &Dir<'static>, root: &Path, dest: &Path, render: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
    for entry in dir.entries() {
        let rel = entry.path().strip_prefix(root).expect("entries lie below their template");
        match entry {
            DirEntry::Dir(d) => write_dir(d, root, dest, render)?,
            DirEntry::File(f) if rel == Path::new("template.toml") => {}
            DirEntry::File(f) => {
                let rel = if rel == Path::new("gitignore") { Path::new(".gitignore") } else { rel };
                let out = dest.join(rel);
                std::fs::create_dir_all(out.parent().unwrap_or(dest))
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                let contents = match f.contents_utf8() {
                    Some(text) => render(text).into_bytes(),
                    None => f.contents().to_vec(),
                };
                std::fs::write(&out, contents).with_context(|| format!("cannot write {}", out.display()))?;
            }
        }
    }
    Ok(())
}

/// Writes the WASI WIT and a world `app` including `wasi:http/proxy` at `version` and the world
/// `imports` of each of `deps` (packages of the repository's `wit/deps`, written to `wit/deps/`).
fn write_wit(dest: &Path, version: &str, deps: &[String]) -> anyhow::Result<()> {
    let wit = TEMPLATES.get_dir(WIT_DIR).context("the WASI WIT is missing from the binary")?;
    let pin = |text: &str| {
        if version == WIT_VERSION {
            return text.to_string();
        }
        // Older toolchains pin an older 0.2.x: rename the packages and the feature gates newer than it.
        let mut text = text.replace(&format!("@{WIT_VERSION}"), &format!("@{version}"));
        for newer in newer_patch_versions(version) {
            text = text.replace(&format!("version = {newer}"), &format!("version = {version}"));
        }
        text
    };
    write_dir(wit, wit.path(), dest, &pin)?;
    let mut includes = vec![format!("wasi:http/proxy@{version}")];
    for dep in deps {
        let dir =
            NIMBUS_WIT.get_dir(format!("deps/{dep}")).with_context(|| format!("the WIT package `{dep}` is missing"))?;
        write_dir(dir, dir.path(), &dest.join("deps").join(dep), &str::to_string)?;
        includes.push(
            imports_world(dir)
                .with_context(|| format!("the WIT package `{dep}` has no world.wit naming its package"))?,
        );
    }
    let includes: String = includes.iter().map(|world| format!("  include {world};\n")).collect();
    let world = format!("package nimbus:app;\n\nworld app {{\n{includes}}}\n");
    std::fs::write(dest.join("world.wit"), world).with_context(|| format!("cannot write {}", dest.display()))
}

/// The world `imports` of the package a WIT directory declares in its `world.wit`
/// (`package wasi:keyvalue@0.2.0-draft;` → `wasi:keyvalue/imports@0.2.0-draft`).
fn imports_world(dir: &Dir<'static>) -> Option<String> {
    let text = dir.get_file(dir.path().join("world.wit"))?.contents_utf8()?;
    let package = text.lines().find_map(|l| l.trim().strip_prefix("package "))?.trim_end_matches(';').trim();
    Some(match package.split_once('@') {
        Some((name, version)) => format!("{name}/imports@{version}"),
        None => format!("{package}/imports"),
    })
}

/// `0.2.N` versions after `version` up to the embedded one.
fn newer_patch_versions(version: &str) -> Vec<String> {
    let patch = |v: &str| v.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
    match (patch(version), patch(WIT_VERSION)) {
        (Some(from), Some(to)) => (from + 1..=to).map(|p| format!("0.2.{p}")).collect(),
        _ => Vec::new(),
    }
}
