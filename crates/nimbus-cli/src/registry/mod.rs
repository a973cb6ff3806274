//! `nimbus registry push|pull`: an app as an OCI artifact in any OCI registry (layout in
//! `layout`), and the pull `nimbus deploy oci://REF` deploys from. Pulls happen here, in the
//! CLI, which holds the user's registry credentials: the server receives the checked bundle as
//! from any deploy (so signatures are verified against its trusted signers just the same), with
//! the digest it came from recorded on the revision.
mod app_dir;
mod client;
mod error;
mod layout;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use nimbus_manifest::LoadedManifest;

pub(crate) use client::Pulled;

/// How to reach the registry.
#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    /// Plain HTTP instead of HTTPS; only for a registry on this machine (127.0.0.1, localhost).
    #[arg(long)]
    pub(crate) insecure: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Push the app in DIR (its manifest and built components) to REF as an OCI artifact and
    /// print its digest. Credentials come from the docker config file (`docker login`).
    Push {
        /// Where to push: REGISTRY/REPOSITORY:TAG.
        reference: String,
        /// App directory or manifest file.
        #[arg(long, default_value = ".", env = "NIMBUS_APP")]
        dir: PathBuf,
        /// Sign, with this key (`nimbus signing keygen`), every component that has no signature
        /// beside its artifact.
        #[arg(long, env = "NIMBUS_SIGNING_KEY", value_name = "KEY_FILE")]
        sign: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull the app at REF, check every blob against its digest, and write it as an app
    /// directory that `nimbus up` runs.
    Pull {
        /// What to pull: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST.
        reference: String,
        /// Directory to write the app into (default: the repository's last name).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

pub(crate) fn run(command: &RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Push { reference, dir, sign, registry } => {
            let loaded = LoadedManifest::load(dir)?;
            let key = sign.as_deref().map(crate::signing::open_key).transpose()?;
            let bundle = crate::deploy::pack(&loaded, key.as_ref())?;
            let target = client::Registry::new(reference, registry.insecure)?;
            let digest = runtime()?.block_on(target.push(&bundle))?;
            eprintln!("Pushed app `{}` to {reference}", loaded.manifest.app.name);
            println!("{digest}");
            Ok(())
        }
        RegistryCommand::Pull { reference, output, registry } => {
            let pulled = pull(reference, registry)?;
            let dir = match output {
                Some(dir) => dir.clone(),
                None => PathBuf::from(default_dir(reference)),
            };
            app_dir::write(&pulled.bundle, &dir)?;
            println!("Pulled {} into {}", pulled.pinned, dir.display());
            Ok(())
        }
    }
}

/// Pulls and checks the app at `reference`.
pub(crate) fn pull(reference: &str, registry: &RegistryArgs) -> anyhow::Result<Pulled> {
    let source = client::Registry::new(reference, registry.insecure)?;
    Ok(runtime()?.block_on(source.pull())?)
}

/// The last name of the repository in `reference`, without tag or digest.
fn default_dir(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    let name = name.rsplit('/').next().unwrap_or(name);
    name.split(':').next().unwrap_or(name)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}
