//! `nimbus build`: runs each component's build command, with progress and actionable errors.
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use nimbus_manifest::{FieldPath, LoadedManifest};

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// App directory or manifest file.
    #[arg(default_value = ".", env = "NIMBUS_APP")]
    pub(crate) dir: PathBuf,
    /// Build only these components (default: all).
    #[arg(long = "component", short = 'c')]
    pub(crate) components: Vec<String>,
}

pub(crate) fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let loaded = LoadedManifest::load(&args.dir)?;
    build_all(&loaded, &args.components)
}

/// Builds the named components (all when empty) of a loaded app.
pub(crate) fn build_all(loaded: &LoadedManifest, only: &[String]) -> anyhow::Result<()> {
    for name in only {
        if !loaded.manifest.component.contains_key(name) {
            bail!("no component named `{name}` in {}", loaded.path.display());
        }
    }
    let selected: Vec<_> =
        loaded.manifest.component.iter().filter(|(name, _)| only.is_empty() || only.contains(name)).collect();
    let total = selected.len();
    for (i, (name, component)) in selected.into_iter().enumerate() {
        let step = format!("[{}/{total}]", i + 1);
        let Some(build) = &component.build else {
            match component.source() {
                Some(source) => println!("{step} {name}: no build command, using {source}"),
                None => println!("{step} {name}: no build command (service)"),
            }
            continue;
        };
        let workdir = build.workdir.as_deref().map_or_else(|| loaded.dir().to_path_buf(), |w| loaded.resolve(w));
        println!("{step} {name}: {} (in {})", build.command, workdir.display());
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&workdir)
            .status()
            .with_context(|| format!("could not start `sh` to build `{name}` in {}", workdir.display()))?;
        if !status.success() {
            let at = FieldPath::root().key("component").key(name.clone()).key("build").key("command");
            let hint = match (status.code(), &build.install) {
                (Some(127), Some(install)) => {
                    format!("a program in the command was not found: install it with `{install}`, then run `nimbus build` again")
                }
                (Some(127), None) => "a program in the command was not found (see the shell message above): install it and run `nimbus build` again".to_string(),
                (_, Some(install)) => format!("fix the errors printed above and run `nimbus build` again; the toolchain installs with `{install}`"),
                (_, None) => "fix the errors printed above and run `nimbus build` again".to_string(),
            };
            bail!("{}", loaded.diagnostic(&at, format!("the build of `{name}` failed ({status})"), hint));
        }
        let Some(source) = component.source() else {
            println!("{step} {name}: built in {:.1}s", started.elapsed().as_secs_f64());
            continue;
        };
        let artifact = loaded.resolve(source);
        if !artifact.exists() {
            let at = FieldPath::root().key("component").key(name.clone()).key("source");
            bail!(
                "{}",
                loaded.diagnostic(
                    &at,
                    format!("the build of `{name}` succeeded but {} does not exist", artifact.display()),
                    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
                        "point `source` at the file the build writes; CARGO_TARGET_DIR is set, so cargo writes \
                         there unless the command passes `--target-dir`"
                    } else {
                        "point `source` at the file the build writes"
                    }
                )
            );
        }
        println!("{step} {name}: built {source} in {:.1}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
