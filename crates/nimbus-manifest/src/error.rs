//! Errors that point at a file, a line and a field, and say what to do about it.
use std::fmt;
use std::path::PathBuf;

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {}: {cause}\n  = help: run nimbus in the directory holding nimbus.toml, or pass that directory", path.display())]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// The file was read but is not a valid manifest.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ManifestError {
    /// The diagnostics, for an invalid manifest.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(d) => d,
            Self::Read { .. } => &[],
        }
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.to_string());
    }
    if diags.len() > 1 {
        out.push_str(&format!("\n{} errors in the manifest", diags.len()));
    }
    out
}

/// One problem in a manifest, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field at fault, e.g. `component.hello.limits.memory_mb`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error in `{}`: {}\n  = help: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message,
            self.hint
        )
    }
}
