//! The secrets capability: `wasi:config/store` (@0.2.0-draft) answering with the app's secrets
//! ([`crate::Runtime::with_secrets`]) the component was granted (`grants.secrets`), read when the
//! guest asks (so a secret set again reaches the next request). Without any grant the interface
//! is not linked at all, so a component that imports it is refused at load with the grant to
//! add; asking for a secret that was not granted is an error naming the grant, and `get-all`
//! returns only granted ones. Values are never logged or put on spans: a span records the name.
use std::sync::Arc;

use nimbus_manifest::{Component, SecretName};
use nimbus_observe::SpanKind;
use nimbus_security::secrets::SecretSource;
use wasmtime::component::{HasData, Linker};

use crate::capability::{Capability, PrepareContext, Registered};
use crate::error::LinkError;
use crate::guest::GuestState;
use crate::scope::Scope;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/config",
        world: "wasi:config/imports",
        imports: { default: async },
    });
}

use bindings::wasi::config::store;

/// The secrets capability ([`Capability`]).
pub(crate) struct Secrets;

/// The secrets one component may read, and where they come from.
pub(crate) struct SecretGrants {
    source: Option<Arc<dyn SecretSource>>,
    grants: Arc<[SecretName]>,
}

impl Capability for Secrets {
    const GRANT: &'static str = "secrets";
    const EXAMPLE: &'static str = r#"["SECRET"]"#;
    const INTERFACES: &'static [&'static str] = &["wasi:config/store"];
    type Backend = Option<Arc<dyn SecretSource>>;
    type App = SecretGrants;
    type Instance = SecretsCtx;

    fn configure(source: &Self::Backend, component: &Component) -> Result<Option<SecretGrants>, LinkError> {
        let grants = &component.grants.secrets;
        Ok((!grants.is_empty())
            .then(|| SecretGrants { source: source.clone(), grants: grants.iter().cloned().collect() }))
    }

    fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
        struct Reading;
        impl HasData for Reading {
            type Data<'a> = &'a mut SecretsCtx;
        }
        store::add_to_linker::<_, Reading>(linker, |s| s.capability::<Secrets>().0)
    }

    fn prepare(app: &SecretGrants, ctx: &PrepareContext<'_>) -> SecretsCtx {
        SecretsCtx {
            source: app.source.clone(),
            grants: app.grants.clone(),
            app: ctx.app.cloned(),
            scope: ctx.scope.clone(),
        }
    }
}

impl crate::Runtime {
    /// Where `wasi:config` reads the granted secrets (`grants.secrets`); without a source, every
    /// read fails with "no secrets on this node".
    pub fn with_secrets(mut self, source: Arc<dyn SecretSource>) -> Self {
        *Secrets::backend(&mut self.backends) = Some(source);
        self
    }
}

/// The secrets of one invocation.
pub(crate) struct SecretsCtx {
    source: Option<Arc<dyn SecretSource>>,
    grants: Arc<[SecretName]>,
    app: Option<Arc<str>>,
    scope: Arc<Scope>,
}

impl SecretsCtx {
    /// Reads granted secret `name` in a client span that names it.
    fn read(&self, name: &SecretName) -> Result<Option<String>, store::Error> {
        let mut span = self.scope.span("secret", SpanKind::Client);
        if span.is_recording() {
            span.rename(format!("get secret {name}"));
            span.set("nimbus.secret.name", name.to_string());
        }
        let source = self.source.as_ref().ok_or_else(|| store::Error::Upstream("no secrets on this node".into()))?;
        let app = self.app.as_deref().ok_or_else(|| {
            store::Error::Upstream("this function is not part of an app, so it has no secrets".into())
        })?;
        match source.get(app, name.as_str()) {
            Ok(value) => Ok(value.map(|v| v.expose().to_string())),
            Err(e) => {
                let message = nimbus_observe::report(&e);
                span.set_error("secret", &message);
                Err(store::Error::Upstream(message))
            }
        }
    }
}

impl store::Host for SecretsCtx {
    async fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        match self.grants.iter().find(|g| g.as_str() == key) {
            Some(name) => self.read(name),
            None => {
                self.scope.log("warn", &format!("read of secret `{key}` denied: not in grants.secrets"));
                Err(store::Error::Upstream(format!(
                    "secret `{key}` is not granted to this component: add it to `grants.secrets`"
                )))
            }
        }
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        let mut all = Vec::with_capacity(self.grants.len());
        for name in self.grants.iter() {
            if let Some(value) = self.read(name)? {
                all.push((name.to_string(), value));
            }
        }
        Ok(all)
    }
}
