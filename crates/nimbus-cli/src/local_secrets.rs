//! Secrets under `nimbus up`: a local run reads each granted secret from the environment as
//! `NIMBUS_SECRET_<NAME>` (`stripe-key` → `NIMBUS_SECRET_STRIPE_KEY`), the way Spin reads
//! `SPIN_VARIABLE_*`, so nothing is written next to the app. A server keeps them sealed instead
//! (`nimbus secrets set`).
use nimbus_manifest::SecretName;
use nimbus_security::secrets::{SecretSource, SecretValue, SecretsError};

/// Prefix of the environment variables holding a local run's secrets.
const PREFIX: &str = "NIMBUS_SECRET_";

/// The secrets of the process's environment.
#[derive(Debug, Default)]
pub(crate) struct EnvSecrets;

fn variable(name: &str) -> String {
    SecretName::parse(name).map_or_else(|_| String::new(), |n| format!("{PREFIX}{}", n.env_name()))
}

impl SecretSource for EnvSecrets {
    fn get(&self, _app: &str, name: &str) -> Result<Option<SecretValue>, SecretsError> {
        match std::env::var(variable(name)) {
            Ok(value) => Ok(Some(SecretValue::new(value))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretsError::NotText),
        }
    }

    fn how_to_set(&self, _app: &str, name: &str) -> String {
        format!("a local run reads it from the environment: export {}=VALUE, then start again", variable(name))
    }
}
