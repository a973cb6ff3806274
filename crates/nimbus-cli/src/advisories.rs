//! `nimbus advisories import DIR`: fills a server's offline advisory database (OSV JSON files,
//! e.g. an unpacked `https://osv-vulnerabilities.storage.googleapis.com/crates.io/all.zip`)
//! under its data dir. Deploys are checked against it without reaching the network; a running
//! server reads it again at its next deploy.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use nimbus_security::supply::Advisories;

#[derive(Debug, Subcommand)]
pub(crate) enum AdvisoriesCommand {
    /// Import the OSV advisories (`*.json`, searched recursively) in DIR; each is validated,
    /// and files that are not OSV, too large or of an ecosystem Nimbus does not scan are skipped
    /// with the reason.
    Import {
        /// A directory of OSV JSON files.
        dir: PathBuf,
        /// The server's data dir (default: the one `nimbus server` uses).
        #[arg(long, env = "NIMBUS_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// The advisory database of the server keeping its data in `data_dir`.
pub(crate) fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("advisories")
}

pub(crate) fn run(command: &AdvisoriesCommand) -> anyhow::Result<()> {
    match command {
        AdvisoriesCommand::Import { dir, data_dir } => {
            let data_dir = data_dir.clone().unwrap_or_else(crate::server::default_data_dir);
            let db = db_dir(&data_dir);
            let report = Advisories::import(dir, &db)
                .with_context(|| format!("cannot import the advisories in {} into {}", dir.display(), db.display()))?;
            for skipped in &report.skipped {
                eprintln!("skipped {}: {}", skipped.path.display(), skipped.reason);
            }
            let total = Advisories::open(&db).map(|a| a.len()).context("the imported database cannot be read")?;
            println!(
                "Imported {} advisories ({} skipped) into {}; it holds {total}. Deploys are checked against them.",
                report.imported,
                report.skipped.len(),
                db.display()
            );
            Ok(())
        }
    }
}
