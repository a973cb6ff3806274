use std::path::PathBuf;

/// Why a dependency list, an artifact or the advisory database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SupplyError {
    /// A file or directory could not be read or written.
    #[error("cannot read or write {}: check that it exists and that this process may use it", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A lockfile, SBOM, advisory or wasm binary is not what its name says it is.
    #[error("{origin} is not a valid {what}: fix or regenerate it")]
    Parse {
        /// The kind of input: `Cargo.lock`, `CycloneDX SBOM`, `OSV advisory`, `wasm binary`, ...
        what: &'static str,
        /// Where it came from: a file's path or a section of an artifact.
        origin: String,
        /// The parser's own error, or a message saying what is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An input is over a limit that keeps a hostile artifact or directory from exhausting memory.
    #[error(
        "{origin} is too large for {what} ({size} {unit}, at most {limit}): {hint}",
        unit = too_large_unit(.what),
        hint = too_large_hint(.what)
    )]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Where it came from: a file's path or a section of an artifact.
        origin: String,
        /// Its size in bytes (entries, for a directory), or at least how far reading got.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl SupplyError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn parse(
        what: &'static str,
        origin: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Parse { what, origin: origin.into(), source: source.into() }
    }
}

/// The `what` of a [`SupplyError::TooLarge`] for a `cargo auditable` section inflating past its limit.
pub(crate) const AUDITABLE_SECTION: &str = "a `cargo auditable` section";
/// The `what` of a [`SupplyError::TooLarge`] for a directory with too many entries.
pub(crate) const DIRECTORY_SCAN: &str = "a directory scan";

fn too_large_unit(what: &str) -> &'static str {
    if what == DIRECTORY_SCAN { "entries" } else { "bytes" }
}

fn too_large_hint(what: &str) -> &'static str {
    match what {
        DIRECTORY_SCAN => "scan the service's own directory, or ship an SBOM beside the artifact instead",
        AUDITABLE_SECTION => {
            "the artifact's dependency list is implausibly large; rebuild it with `cargo auditable build`"
        }
        _ => "this is not a plausible input; check the file is the one meant",
    }
}
