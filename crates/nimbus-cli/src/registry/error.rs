//! What goes wrong talking to a registry, each with a stable code and what to do about it.
use std::fmt;

/// A registry failure, shown as `[code] what happened` and a help line.
#[derive(Debug)]
pub(crate) enum RegistryError {
    /// The reference names no artifact (or the repository does not exist).
    NotFound(String),
    /// The registry refused the credentials, or wants some.
    Unauthorized(String),
    /// The artifact is not a Nimbus app (wrong media types or layout).
    NotNimbus(String),
    /// A blob or the manifest is not what its digest says.
    DigestMismatch(String),
    /// A manifest or blob is larger than the CLI takes.
    TooLarge(String),
    /// Plain HTTP was asked for a registry that is not on this machine.
    Insecure(String),
    /// The reference cannot be parsed.
    BadReference(String),
    /// The registry cannot be reached or answered something else.
    Failed(String),
}

impl RegistryError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "registry_not_found",
            Self::Unauthorized(_) => "registry_unauthorized",
            Self::NotNimbus(_) => "registry_not_nimbus_app",
            Self::DigestMismatch(_) => "registry_digest_mismatch",
            Self::TooLarge(_) => "registry_too_large",
            Self::Insecure(_) => "registry_insecure",
            Self::BadReference(_) => "registry_bad_reference",
            Self::Failed(_) => "registry_failed",
        }
    }

    fn hint(&self) -> &'static str {
        match self {
            Self::NotFound(_) => {
                "check the repository and the tag or digest; `nimbus registry push REF` publishes an app"
            }
            Self::Unauthorized(_) => {
                "log in to the registry (`docker login REGISTRY` writes ~/.docker/config.json; DOCKER_CONFIG names another directory)"
            }
            Self::NotNimbus(_) => "pull an artifact that `nimbus registry push` published",
            Self::DigestMismatch(_) => {
                "the registry's content is corrupt or was tampered with: do not use it; push the app again from its source"
            }
            Self::TooLarge(_) => {
                "check that the reference names a Nimbus app; a Nimbus app artifact is never that large"
            }
            Self::Insecure(_) => "use HTTPS, or run the registry on this machine (127.0.0.1, localhost or [::1])",
            Self::BadReference(_) => "name it as REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST",
            Self::Failed(_) => {
                "check that the registry is up and reachable (and whether it speaks HTTPS: --insecure is plain HTTP)"
            }
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::NotFound(m)
            | Self::Unauthorized(m)
            | Self::NotNimbus(m)
            | Self::DigestMismatch(m)
            | Self::TooLarge(m)
            | Self::Insecure(m)
            | Self::BadReference(m)
            | Self::Failed(m) => m,
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}\n  = help: {}", self.code(), self.message(), self.hint())
    }
}

impl std::error::Error for RegistryError {}
