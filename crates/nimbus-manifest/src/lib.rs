//! The `nimbus.toml` manifest: its types, its validation and its JSON Schema.
//!
//! This crate owns what an app *is* on paper: the `[app]`, `[component.NAME]` and
//! `[[trigger.http]]` tables, the route syntax (`/exact`, `/prefix/...`), the outbound grant syntax,
//! and errors that name the file, line, column and field at fault and say what to do. It does not
//! read wasm files, run builds or serve anything; the executor and the gateway take a validated
//! [`Manifest`] from here.
//!
//! ```
//! use nimbus_manifest::LoadedManifest;
//!
//! let text = r#"
//! [app]
//! name = "hello"
//!
//! [component.hello]
//! source = "hello.wasm"
//!
//! [[trigger.http]]
//! route = "/hello/..."
//! component = "hello"
//! "#;
//! let loaded = LoadedManifest::parse(text.to_string(), "nimbus.toml".into()).unwrap();
//! assert_eq!(loaded.manifest.trigger.http[0].component, "hello");
//!
//! let err = LoadedManifest::parse(text.replace("source", "sorce"), "nimbus.toml".into()).unwrap_err();
//! assert!(err.to_string().starts_with("nimbus.toml:6:1: error in `component.hello.sorce`"));
//! ```

mod error;
mod grant;
mod locate;
mod names;
mod placement;
mod residency;
mod route;
mod schedule;
mod scope;
mod secret;
mod types;
mod validate;
mod value;

use std::path::{Path, PathBuf};

use toml_edit::Document;

pub use error::{Diagnostic, ManifestError};
pub use grant::OutboundGrant;
pub use locate::FieldPath;
pub use names::{
    KV_CHANGES_PREFIX, MAX_BUCKET_NAME_LEN, MAX_TOPIC_NAME_LEN, RESERVED_BUCKETS, RESERVED_NAME_PREFIX,
    check_bucket_name, check_topic_name,
};
pub use placement::{Placement, label_key_ok, label_value_ok};
pub use residency::{Misplaced, Residency};
pub use route::{HttpMethod, RoutePattern};
pub use schedule::{CronExpr, Schedule, TimeZone};
pub use scope::{MAX_APP_NAME_LEN, SCOPE_MARK, check_app_name, resolve, scoped_name, split_scoped};
pub use secret::{MAX_SECRET_NAME_LEN, SecretName};
pub use types::{
    ActorTrigger, AdvisorySeverity, App, Build, Component, ComponentKind, CronTrigger, DEFAULT_FUNCTION_MEMORY_MB,
    DEFAULT_FUNCTION_TIMEOUT_MS, DEFAULT_SERVICE_MEMORY_MB, DEFAULT_SERVICE_PIDS, Exports, Grants, HttpTrigger, Limits,
    Manifest, MissedTicks, Probe, Retry, Scale, Slo, TopicTrigger, Triggers, WorkflowTrigger,
};
pub use validate::{ACTORS_PREFIX, RESERVED_PATHS, RESERVED_PREFIX, WORKFLOWS_PREFIX};

/// The file name `nimbus` looks for in an app directory.
pub const MANIFEST_FILE: &str = "nimbus.toml";

/// A validated manifest together with where it came from, so later stages (loading wasm files,
/// running builds) can report errors at the right line too.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    /// The validated manifest.
    pub manifest: Manifest,
    /// The manifest file.
    pub path: PathBuf,
    /// The text with its spans, parsed once, to locate fields for diagnostics.
    doc: Document<String>,
}

impl LoadedManifest {
    /// Reads and validates `nimbus.toml` from a directory, or the file itself if `path` is one.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let file = if path.is_dir() { path.join(MANIFEST_FILE) } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|cause| ManifestError::Read { path: file.clone(), cause })?;
        Self::parse(text, file)
    }

    /// Parses and validates manifest text; `path` is used in error messages and to resolve
    /// relative paths.
    pub fn parse(text: String, path: PathBuf) -> Result<Self, ManifestError> {
        let doc = Document::parse(text.clone()).map_err(|e| {
            let offset = e.span().map_or(0, |r| r.start);
            let hint = "fix the TOML syntax at this position";
            ManifestError::Invalid(vec![located(&path, &text, offset, FieldPath::root(), e.message().trim(), hint)])
        })?;
        let manifest: Manifest =
            toml::from_str(doc.raw()).map_err(|e| ManifestError::Invalid(vec![serde_diagnostic(&doc, &path, &e)]))?;
        let loaded = Self { manifest, path, doc };
        let problems = validate::validate(&loaded.manifest);
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(ManifestError::Invalid(
                problems.into_iter().map(|p| loaded.diagnostic(&p.field, p.message, p.hint)).collect(),
            ))
        }
    }

    /// The directory relative paths in the manifest are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// Resolves a path written in the manifest.
    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.dir().join(relative)
    }

    /// A diagnostic located at `field`, for problems found after validation (say, a missing file).
    pub fn diagnostic(&self, field: &FieldPath, message: impl Into<String>, hint: impl Into<String>) -> Diagnostic {
        let offset = locate::span_of(&self.doc, field).map_or(0, |r| r.start);
        located(&self.path, self.doc.raw(), offset, field.clone(), message, hint)
    }
}

fn located(
    path: &Path,
    text: &str,
    offset: usize,
    field: FieldPath,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> Diagnostic {
    let (line, column) = locate::line_col(text, offset);
    Diagnostic {
        file: path.to_path_buf(),
        line,
        column,
        field: field.to_string(),
        message: message.into(),
        hint: hint.into(),
    }
}

fn serde_diagnostic(doc: &Document<String>, path: &Path, err: &toml::de::Error) -> Diagnostic {
    let mut offset = err.span().map_or(0, |r| r.start);
    let value::ValueError { message, value } = value::ValueError::split(err.message().trim());
    let mut field = locate::path_at(doc, offset);
    if let Some((element, start)) = value.and_then(|(_, text)| locate::element_with(doc, &field, text)) {
        (field, offset) = (element, start);
    }
    if let Some(unknown) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next())
        && !field.to_string().ends_with(unknown)
    {
        field = field.key(unknown);
    }
    let hint = if let Some((hint, _)) = value {
        hint
    } else if message.starts_with("unknown field") {
        "remove the field or fix its spelling; `nimbus schema` lists every field"
    } else if message.starts_with("missing field") {
        "add the field; `nimbus schema` shows what it takes"
    } else {
        "give the field a value of the expected type; `nimbus schema` shows it"
    };
    located(path, doc.raw(), offset, field, message, hint)
}

/// The JSON Schema of `nimbus.toml`, pretty-printed.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Manifest);
    serde_json::to_string_pretty(&schema).expect("a JSON Schema always serializes")
}
