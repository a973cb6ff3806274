//! `nimbus deploy`: pack the app's manifest and built components into a bundle (or pull the
//! registry artifact `oci://REF` names, pinned to its digest) and upload it as a new immutable
//! revision, with a progress bar on a terminal.
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nimbus_control::{BUNDLE_CONTENT_TYPE, Bundle, DeployResult};
use nimbus_manifest::{FieldPath, LoadedManifest};
use nimbus_security::signing::SigningKey;
use nimbus_security::supply::{ArtifactSignature, Format};

use crate::manage::traffic_line;
use crate::registry::RegistryArgs;
use crate::remote::{Client, OutputArgs, RemoteArgs};

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// App directory or manifest file, or `oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:DIGEST`):
    /// an artifact `nimbus registry push` published, deployed pinned to its digest.
    #[arg(default_value = ".", env = "NIMBUS_APP")]
    dir: PathBuf,
    /// Run `nimbus build` first.
    #[arg(long)]
    build: bool,
    /// Bind the app to this host (repeat for more); replaces the current binding.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Point this tag at the new revision (reach it with `x-nimbus-tag: TAG` or host TAG.HOST).
    #[arg(long)]
    tag: Option<String>,
    /// Create the revision without sending traffic to it (the first revision always gets 100%).
    #[arg(long)]
    no_promote: bool,
    /// Take the hosts and requests this deploy claims from the apps that serve them now (admin
    /// token not limited to apps); without it such a deploy is refused.
    #[arg(long)]
    take_over: bool,
    /// Sign, with this key (`nimbus signing keygen`), every component that has no signature
    /// beside its artifact (`X.wasm.sig`): functions' artifacts and services' packed trees.
    #[arg(long, env = "NIMBUS_SIGNING_KEY", value_name = "KEY_FILE")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub(crate) fn run(args: &DeployArgs) -> anyhow::Result<()> {
    let key = args.sign.as_deref().map(crate::signing::open_key).transpose()?;
    let (bundle, what, source) = match args.dir.to_str().and_then(|d| d.strip_prefix("oci://")) {
        Some(reference) => {
            anyhow::ensure!(!args.build, "--build builds an app directory; an oci:// artifact is built already");
            let mut pulled = crate::registry::pull(reference, &args.registry)?;
            if let Some(key) = &key {
                sign_unsigned(&mut pulled.bundle, key);
            }
            let source = format!("oci://{}", pulled.pinned);
            (pulled.bundle, source.clone(), Some(source))
        }
        None => {
            let loaded = LoadedManifest::load(&args.dir)?;
            if args.build {
                crate::build::build_all(&loaded, &[])?;
            }
            (pack(&loaded, key.as_ref())?, format!("app `{}`", loaded.manifest.app.name), None)
        }
    };
    let client = Client::new(&args.remote)?;
    let archive = bundle.pack();

    let mut query = vec![format!("promote={}", !args.no_promote)];
    if let Some(source) = &source {
        query.push(format!("source={}", crate::remote::seg(source)));
    }
    if !args.hosts.is_empty() {
        query.push(format!("hosts={}", crate::remote::seg(&args.hosts.join(","))));
    }
    if let Some(tag) = &args.tag {
        query.push(format!("tag={}", crate::remote::seg(tag)));
    }
    if args.take_over {
        query.push("take_over=true".into());
    }
    let progress = progress_bar(archive.len() as u64);
    let body = upload_body(archive, progress.clone());
    let result: DeployResult = client
        .call(reqwest::Method::POST, &format!("/v1/deployments?{}", query.join("&")), Some(body), BUNDLE_CONTENT_TYPE)
        .with_context(|| format!("deploy of {what} to {} failed", client.base()))?;
    progress.finish_and_clear();
    args.output.print(&result, |r| {
        let what = if r.created { "new revision" } else { "unchanged: identical content is revision" };
        println!("Deployed app `{}`: {what} {}", r.app, r.revision);
        println!("  traffic: {}", traffic_line(&r.traffic));
    })
}

/// Signs, with `key`, each component of `bundle` that has no signature.
fn sign_unsigned(bundle: &mut Bundle, key: &SigningKey) {
    for (name, bytes) in bundle.artifacts.iter().chain(&bundle.trees) {
        bundle.signatures.entry(name.clone()).or_insert_with(|| sign(key, bytes));
    }
}

/// The manifest text and each component's built artifact (a function's with the SBOMs and the
/// signature beside it); components without a signature are signed with `key`, if given.
pub(crate) fn pack(loaded: &LoadedManifest, key: Option<&SigningKey>) -> anyhow::Result<Bundle> {
    let manifest =
        std::fs::read_to_string(&loaded.path).with_context(|| format!("cannot read {}", loaded.path.display()))?;
    let mut artifacts = BTreeMap::new();
    let mut trees = BTreeMap::new();
    let mut sboms = BTreeMap::new();
    let mut signatures = BTreeMap::new();
    for (name, component) in &loaded.manifest.component {
        let Some(source) = component.source() else {
            let workdir = loaded.resolve(component.workdir.as_deref().unwrap_or("."));
            let tree = pack_tree(&workdir)
                .with_context(|| format!("cannot pack service `{name}` from {}", workdir.display()))?;
            if let Some(key) = key {
                signatures.insert(name.clone(), sign(key, &tree));
            }
            trees.insert(name.clone(), tree);
            continue;
        };
        let path = loaded.resolve(source);
        let bytes = std::fs::read(&path).map_err(|e| {
            let at = FieldPath::root().key("component").key(name.clone()).key("source");
            anyhow::anyhow!(
                "{}",
                loaded.diagnostic(
                    &at,
                    format!("cannot read {}: {e}", path.display()),
                    "build the component first with `nimbus build` (or `nimbus deploy --build`)"
                )
            )
        })?;
        artifacts.insert(name.clone(), bytes);
        for (sbom, format) in nimbus_security::supply::sboms_beside(&path) {
            let suffix = if format == Format::Spdx { "spdx" } else { "cdx" };
            let bytes = std::fs::read(&sbom).with_context(|| format!("cannot read the SBOM {}", sbom.display()))?;
            sboms.insert(format!("{name}.{suffix}.json"), bytes);
        }
        let beside = crate::signing::signature_path(&path);
        if beside.is_file() {
            let bytes = std::fs::read(&beside).with_context(|| format!("cannot read {}", beside.display()))?;
            signatures.insert(name.clone(), bytes);
        } else if let Some(key) = key {
            signatures.insert(name.clone(), sign(key, &artifacts[name]));
        }
    }
    Ok(Bundle { manifest, artifacts, trees, sboms, signatures })
}

/// `key`'s signature file for `bytes`.
fn sign(key: &SigningKey, bytes: &[u8]) -> Vec<u8> {
    ArtifactSignature::sign(key, &nimbus_control::digest(bytes)).to_json().into_bytes()
}

/// Directories never shipped with a service: version control, local state (`.nimbus`: the
/// event log and the local API token of `nimbus up`) and build caches.
const SKIPPED: &[&str] = &[".git", ".nimbus", "target/debug", "node_modules/.cache", "__pycache__"];

/// A tar of a service's working directory (files keep their modes, symlinks stay symlinks).
fn pack_tree(dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let text = path.to_string_lossy();
            if SKIPPED.iter().any(|s| text == *s || text.ends_with(&format!("/{s}"))) {
                continue;
            }
            if entry.file_type()?.is_dir() {
                builder.append_dir(&path, entry.path())?;
                stack.push(path);
            } else {
                builder.append_path_with_name(entry.path(), &path)?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style);
    }
    bar
}

/// The archive as a stream of 64 KiB chunks that advances the progress bar as it is sent.
fn upload_body(archive: Vec<u8>, progress: indicatif::ProgressBar) -> reqwest::Body {
    let chunks: Vec<bytes::Bytes> =
        bytes::Bytes::from(archive).chunks(64 << 10).map(bytes::Bytes::copy_from_slice).collect();
    let stream = futures::stream::iter(chunks.into_iter().map(move |chunk| {
        progress.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}
