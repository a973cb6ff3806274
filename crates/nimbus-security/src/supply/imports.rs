//! What a component could ask the host for (its imports) against what it was granted.
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use wasmparser::{Parser, Payload};

use super::SupplyError;

/// Packages every component is linked with whatever its grants (or, for core modules, WASI
/// preview 1): importing them asks for nothing.
const AMBIENT_PACKAGES: [&str; 7] =
    ["wasi:io", "wasi:clocks", "wasi:random", "wasi:cli", "nimbus:workflow", "wasi_snapshot_preview1", "wasi_unstable"];
/// Interfaces that carry types only, or that the host links for every component of a kind
/// (`nimbus:actor/state` for every actor).
const AMBIENT_INTERFACES: [&str; 3] = ["wasi:http/types", "nimbus:events/types", "nimbus:actor/state"];

/// A host capability a component is granted in `nimbus.toml` (named as its grant is), or another
/// package it imports that no grant covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// `kv`: `wasi:keyvalue/*`.
    Kv,
    /// `publish`: `nimbus:events/publisher`.
    Publish,
    /// `actors`: `nimbus:actor/client` (calls to actors).
    Actors,
    /// `secrets`: `wasi:config/*`.
    Secrets,
    /// `outbound`: `wasi:http/outgoing-handler`.
    Outbound,
    /// Any other package (`wasi:filesystem`, `wasi:sockets`, `acme:billing`), or a core module's
    /// import module (`env`), by name.
    Other(String),
}

impl Capability {
    /// The capability an imported interface asks for (`wasi:keyvalue/store@0.2.0-draft` is
    /// [`Capability::Kv`]); `None` for what every component is linked with (`wasi:io`,
    /// `wasi:clocks`, `wasi:random`, `wasi:cli`, `wasi:http/types`, ...).
    pub fn of_import(import: &str) -> Option<Self> {
        let interface = import.split('@').next().unwrap_or(import);
        let package = interface.split('/').next().unwrap_or(interface);
        if AMBIENT_PACKAGES.contains(&package) || AMBIENT_INTERFACES.contains(&interface) {
            return None;
        }
        Some(match (package, interface) {
            ("wasi:keyvalue", _) => Self::Kv,
            (_, "nimbus:events/publisher") => Self::Publish,
            ("nimbus:actor", _) => Self::Actors,
            ("wasi:config", _) => Self::Secrets,
            (_, "wasi:http/outgoing-handler") => Self::Outbound,
            _ => Self::Other(package.to_owned()),
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kv => "kv",
            Self::Publish => "publish",
            Self::Actors => "actors",
            Self::Secrets => "secrets",
            Self::Outbound => "outbound",
            Self::Other(name) => name,
        })
    }
}

impl FromStr for Capability {
    type Err = std::convert::Infallible;

    /// A grant's name (`kv`, `publish`, `actors`, `secrets`, `outbound`); anything else is
    /// [`Capability::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kv" => Self::Kv,
            "publish" => Self::Publish,
            "actors" => Self::Actors,
            "secrets" => Self::Secrets,
            "outbound" => Self::Outbound,
            other => Self::Other(other.to_owned()),
        })
    }
}

/// The names a wasm binary imports: a component's top-level imports (the interface it names,
/// with its version: `wasi:keyvalue/store@0.2.0-draft`), or a core module's import modules
/// (`wasi_snapshot_preview1`, `env`); each once, sorted. Nested modules' and components' imports
/// are satisfied inside the component and are not listed.
pub fn imports(bytes: &[u8]) -> Result<Vec<String>, SupplyError> {
    let invalid = |e| SupplyError::parse("wasm binary", "the artifact", e);
    let mut names = BTreeSet::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let name = import.map_err(invalid)?.name;
                    names.insert(name.full_implements().unwrap_or_else(|| name.full_name()).into_owned());
                }
            }
            Payload::ImportSection(section) if depth == 0 => {
                for import in section.into_imports() {
                    names.insert(import.map_err(invalid)?.module.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names.into_iter().collect())
}

/// The capabilities `imports` ask for ([`Capability::of_import`]), each once, sorted.
pub fn capabilities(imports: &[String]) -> Vec<Capability> {
    let set: BTreeSet<Capability> = imports.iter().filter_map(|i| Capability::of_import(i)).collect();
    set.into_iter().collect()
}

/// A capability a component imports, is granted, or both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reach {
    /// The capability.
    pub capability: Capability,
    /// Whether the component imports it (could ask for it).
    pub imported: bool,
    /// Whether it was granted.
    pub granted: bool,
}

impl Reach {
    /// What to tell the operator, if anything: an import without a grant is denied at run time, a
    /// grant without an import is unused.
    pub fn advice(&self) -> Option<&'static str> {
        match (self.imported, self.granted) {
            (true, false) => Some("imported but not granted: it will be denied at run time"),
            (false, true) => Some("granted but not imported: the grant is unused, consider removing it"),
            _ => None,
        }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.capability, self.advice().unwrap_or("imported and granted"))
    }
}

/// Every capability `imports` ask for or `granted` gives, sorted, with which of the two it is.
pub fn reach(imports: &[String], granted: &[Capability]) -> Vec<Reach> {
    let imported: BTreeSet<Capability> = capabilities(imports).into_iter().collect();
    let granted: BTreeSet<&Capability> = granted.iter().collect();
    let all: BTreeSet<&Capability> = imported.iter().chain(granted.iter().copied()).collect();
    all.into_iter()
        .map(|c| Reach { capability: c.clone(), imported: imported.contains(c), granted: granted.contains(c) })
        .collect()
}
