//! The secrets an app's components are granted, read once at assembly: a secret that is not set
//! fails the assembly with a diagnostic at the grant (and what to do), before any function loads
//! or service starts. Services get the values as environment variables; functions read them
//! again when they ask (`wasi:config`), so they see a secret set later.
use std::collections::HashMap;
use std::sync::Arc;

use nimbus_manifest::{FieldPath, LoadedManifest};
use nimbus_security::secrets::{SecretSource, SecretValue};

use crate::AssembleError;

/// Per component, its granted secrets as (environment variable, value).
pub(crate) type SecretEnv = HashMap<String, Vec<(String, SecretValue)>>;

/// Reads every granted secret of the app from `source`.
pub(crate) fn read(
    loaded: &LoadedManifest,
    source: Option<&Arc<dyn SecretSource>>,
) -> Result<SecretEnv, AssembleError> {
    let m = &loaded.manifest;
    let mut env = SecretEnv::new();
    let mut problems = Vec::new();
    for (component, c) in &m.component {
        for (i, name) in c.grants.secrets.iter().enumerate() {
            let at = FieldPath::root().key("component").key(component.clone()).key("grants").key("secrets").index(i);
            let (message, hint) = match source.map(|s| (s.get(&m.app.name, name.as_str()), s)) {
                Some((Ok(Some(value)), _)) => {
                    env.entry(component.clone()).or_default().push((name.env_name(), value));
                    continue;
                }
                Some((Ok(None), s)) => (
                    format!("secret `{name}` of app `{}` is not set", m.app.name),
                    s.how_to_set(&m.app.name, name.as_str()),
                ),
                Some((Err(e), _)) => (
                    format!("secret `{name}` cannot be read: {}", nimbus_observe::report(&e)),
                    "fix the secrets store, then deploy again".to_string(),
                ),
                None => (
                    format!("secret `{name}` is granted, but this node has no secrets"),
                    "remove the grant".to_string(),
                ),
            };
            problems.push(loaded.diagnostic(&at, message, hint).to_string());
        }
    }
    if problems.is_empty() { Ok(env) } else { Err(AssembleError::Secrets(problems)) }
}
