//! What a caller below the deployer role may not read: the values of the `env` of a revision's
//! components (they often hold credentials until secrets proper exist). Such a caller gets the
//! manifest re-rendered from its parsed values, each `env` key kept and its value replaced by
//! [`REDACTED`]; comments are left out, since they can say anything.
use crate::auth::Principal;
use nimbus_security::policy::Action;

/// What replaces a redacted value.
pub const REDACTED: &str = "<redacted>";

/// Whether `principal` may read the `env` values of `app`'s revisions (deployers and admins).
pub(crate) fn sees_env(principal: &Principal, app: &str) -> bool {
    principal.may(Action::Deploy, Some(app))
}

/// `manifest` with every component's `env` values replaced by [`REDACTED`]. A stored manifest
/// always parses; if one does not, nothing of it is shown.
pub(crate) fn redact_env(manifest: &str) -> String {
    let Ok(mut doc) = manifest.parse::<toml::Table>() else { return format!("# {REDACTED}: unreadable manifest\n") };
    let components =
        doc.get_mut("component").and_then(toml::Value::as_table_mut).into_iter().flat_map(|t| t.iter_mut());
    for (_, component) in components {
        let Some(env) = component.get_mut("env").and_then(toml::Value::as_table_mut) else { continue };
        for (_, value) in env.iter_mut() {
            *value = toml::Value::String(REDACTED.into());
        }
    }
    toml::to_string(&doc).unwrap_or_else(|_| format!("# {REDACTED}: unreadable manifest\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_replaced_and_keys_kept() {
        let manifest = r#"# the password is hunter2
[app]
name = "shop"

[component.web]
source = "web.wasm"
env = { TOKEN = "s3cret", GREETING = "hi" }

[component.api]
command = ["python3", "server.py"]

[component.api.env]
DB_PASSWORD = "hunter2"
"#;
        let shown = redact_env(manifest);
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("\"hi\""), "{shown}");
        let parsed: toml::Table = shown.parse().unwrap();
        assert_eq!(parsed["component"]["web"]["env"]["TOKEN"].as_str(), Some(REDACTED));
        assert_eq!(parsed["component"]["api"]["env"]["DB_PASSWORD"].as_str(), Some(REDACTED));
        assert_eq!(parsed["component"]["web"]["source"].as_str(), Some("web.wasm"));
        assert_eq!(parsed["app"]["name"].as_str(), Some("shop"));
    }
}
