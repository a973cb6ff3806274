//! The key-value capability: `wasi:keyvalue` (store, atomics, batch @0.2.0-draft) and Nimbus's
//! compare-and-swap extension `nimbus:keyvalue/cas` (`wit/nimbus-keyvalue`) on Nimbus's KV
//! store ([`crate::Runtime::with_kv`]), only for the buckets in the component's `grants.kv`.
//! Without any grant the interfaces are not linked at all, so a component that imports them is
//! refused at load with the grant to add; opening a bucket that was not granted is
//! `access-denied`. A granted name is a bucket of the function's
//! own app ([`crate::Function::bind_app`]), or `APP/BUCKET` one that app exports to it (checked
//! at deploy): apps never see each other's buckets otherwise.
use std::sync::Arc;

use nimbus_manifest::Component;
use nimbus_observe::SpanKind;
use nimbus_state::{Bucket, KvStore, Swap};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

use crate::capability::{Capability, PrepareContext, Registered};
use crate::error::LinkError;
use crate::guest::GuestState;
use crate::scope::Scope;

mod bindings {
    wasmtime::component::bindgen!({
        path: ["../../wit/deps/keyvalue", "../../wit/nimbus-keyvalue"],
        world: "nimbus:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::OpenBucket },
        trappable_error_type: { "wasi:keyvalue/store.error" => super::Error },
    });
}

use bindings::nimbus::keyvalue::cas;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// An opened bucket, as the guest holds it. List cursors handed to the guest index `cursors`.
pub struct OpenBucket {
    bucket: Bucket,
    cursors: Vec<String>,
}

/// A failed `wasi:keyvalue` call.
pub enum Error {
    AccessDenied,
    Other(String),
}

impl From<ResourceTableError> for Error {
    fn from(e: ResourceTableError) -> Self {
        Self::Other(e.to_string())
    }
}

impl From<nimbus_state::KvError> for Error {
    fn from(e: nimbus_state::KvError) -> Self {
        Self::Other(nimbus_observe::report(&e))
    }
}

/// The key-value capability ([`Capability`]).
pub(crate) struct KeyValue;

/// The buckets one component may open, and the store they live in.
pub(crate) struct KvGrants {
    store: Option<Arc<dyn KvStore>>,
    grants: Arc<[String]>,
}

impl Capability for KeyValue {
    const GRANT: &'static str = "kv";
    const EXAMPLE: &'static str = r#"["BUCKET"]"#;
    const INTERFACES: &'static [&'static str] =
        &["wasi:keyvalue/store", "wasi:keyvalue/atomics", "wasi:keyvalue/batch", "nimbus:keyvalue/cas"];
    type Backend = Option<Arc<dyn KvStore>>;
    type App = KvGrants;
    type Instance = KvCtx;

    /// Bucket names were checked with the manifest; they resolve against the app at open.
    fn configure(store: &Self::Backend, component: &Component) -> Result<Option<KvGrants>, LinkError> {
        let grants = &component.grants.kv;
        Ok((!grants.is_empty()).then(|| KvGrants { store: store.clone(), grants: grants.iter().cloned().collect() }))
    }

    fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
        fn view(s: &mut GuestState) -> KvView<'_> {
            let (ctx, table) = s.capability::<KeyValue>();
            KvView { ctx, table }
        }
        store::add_to_linker::<_, HasKv>(linker, view)?;
        atomics::add_to_linker::<_, HasKv>(linker, view)?;
        batch::add_to_linker::<_, HasKv>(linker, view)?;
        cas::add_to_linker::<_, HasKv>(linker, view)
    }

    fn prepare(app: &KvGrants, ctx: &PrepareContext<'_>) -> KvCtx {
        KvCtx { store: app.store.clone(), grants: app.grants.clone(), app: ctx.app.cloned(), scope: ctx.scope.clone() }
    }
}

impl crate::Runtime {
    /// The KV store behind `wasi:keyvalue` (`grants.kv`); without one, every call fails with
    /// "no state store".
    pub fn with_kv(mut self, kv: Arc<dyn KvStore>) -> Self {
        *KeyValue::backend(&mut self.backends) = Some(kv);
        self
    }
}

/// The key-value capability of one invocation.
pub(crate) struct KvCtx {
    store: Option<Arc<dyn KvStore>>,
    grants: Arc<[String]>,
    app: Option<Arc<str>>,
    scope: Arc<Scope>,
}

pub(crate) struct KvView<'a> {
    ctx: &'a KvCtx,
    table: &'a mut ResourceTable,
}

impl KvView<'_> {
    fn open_bucket(&mut self, bucket: &Resource<OpenBucket>) -> Result<(Arc<dyn KvStore>, Bucket), Error> {
        let store = self.ctx.store.clone().ok_or_else(|| Error::Other("this node has no state store".into()))?;
        Ok((store, self.table.get(bucket)?.bucket.clone()))
    }

    /// Runs one store operation `op` on `bucket` in a client span (`get carts`), metered as
    /// `keys` operations.
    async fn call<T, F: Future<Output = Result<T, Error>>>(
        &mut self,
        bucket: &Resource<OpenBucket>,
        op: &'static str,
        keys: usize,
        f: impl FnOnce(Arc<dyn KvStore>, Bucket) -> F,
    ) -> Result<T, Error> {
        let (kv, b) = self.open_bucket(bucket)?;
        self.ctx.scope.telemetry.usage.kv_operations(keys as u64);
        let mut span = self.ctx.scope.span(op, SpanKind::Client);
        if span.is_recording() {
            span.rename(format!("{op} {}", b.name()));
            span.set("db.system.name", "nimbus_kv");
            span.set("db.operation.name", op);
            span.set("db.collection.name", b.name().to_string());
        }
        let result = f(kv, b).await;
        if let Err(Error::Other(m)) = &result {
            span.set_error("kv", m);
        }
        result
    }
}

const PAGE: usize = 1000;

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<OpenBucket>, Error> {
        if !self.ctx.grants.contains(&identifier) {
            self.ctx.scope.log("warn", &format!("kv open of bucket `{identifier}` denied: not in grants.kv"));
            return Err(Error::AccessDenied);
        }
        let app = self.ctx.app.as_deref().ok_or(Error::AccessDenied)?;
        let (owner, name) = nimbus_manifest::resolve(app, &identifier);
        let bucket = Bucket::new(owner, name)?;
        Ok(self.table.push(OpenBucket { bucket, cursors: Vec::new() })?)
    }

    fn convert_error(&mut self, err: Error) -> wasmtime::Result<store::Error> {
        Ok(match err {
            Error::AccessDenied => store::Error::AccessDenied,
            Error::Other(m) => store::Error::Other(m),
        })
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.call(&bucket, "get", 1, async |kv, b| Ok(kv.get(&b, &key).await?.map(|e| e.value.to_vec()))).await
    }

    async fn set(&mut self, bucket: Resource<OpenBucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.call(&bucket, "set", 1, async |kv, b| {
            kv.set(&b, &key, value.into(), None).await?;
            Ok(())
        })
        .await
    }

    async fn delete(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<(), Error> {
        self.call(&bucket, "delete", 1, async |kv, b| Ok(kv.delete(&b, &key).await?)).await
    }

    async fn exists(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<bool, Error> {
        self.call(&bucket, "exists", 1, async |kv, b| Ok(kv.exists(&b, &key).await?)).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<OpenBucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, Error> {
        let after = match cursor {
            None => None,
            Some(n) => {
                let open = self.table.get(&bucket)?;
                let index = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
                Some(
                    index
                        .and_then(|i| open.cursors.get(i).cloned())
                        .ok_or_else(|| Error::Other(format!("unknown cursor {n}")))?,
                )
            }
        };
        let page =
            self.call(&bucket, "list", 1, async |kv, b| Ok(kv.list(&b, "", after.as_deref(), PAGE).await?)).await?;
        let cursor = match page.cursor {
            Some(next) => {
                let open = self.table.get_mut(&bucket)?;
                open.cursors.push(next);
                Some(open.cursors.len() as u64)
            }
            None => None,
        };
        Ok(store::KeyResponse { keys: page.keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(&mut self, bucket: Resource<OpenBucket>, key: String, delta: u64) -> Result<u64, Error> {
        let delta = i64::try_from(delta).map_err(|_| Error::Other("delta is larger than 2^63".into()))?;
        let n = self.call(&bucket, "increment", 1, async |kv, b| Ok(kv.increment(&b, &key, delta).await?)).await?;
        u64::try_from(n).map_err(|_| Error::Other(format!("the value of {key:?} is negative ({n})")))
    }
}

impl cas::Host for KvView<'_> {
    async fn get(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<Option<cas::Versioned>, Error> {
        let entry = self.call(&bucket, "get", 1, async |kv, b| Ok(kv.get(&b, &key).await?)).await?;
        Ok(entry.map(|e| cas::Versioned { value: e.value.to_vec(), revision: e.revision }))
    }

    async fn swap(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<cas::Outcome, Error> {
        let swap = self
            .call(&bucket, "swap", 1, async |kv, b| Ok(kv.compare_and_swap(&b, &key, expected, value.into()).await?))
            .await?;
        Ok(match swap {
            Swap::Done(revision) => cas::Outcome::Written(revision),
            Swap::Conflict(current) => cas::Outcome::Conflict(current),
        })
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let values =
            self.call(&bucket, "get_many", keys.len(), async |kv, b| Ok(kv.get_many(&b, &keys).await?)).await?;
        Ok(keys.into_iter().zip(values).map(|(k, v)| v.map(|e| (k, e.value.to_vec()))).collect())
    }

    async fn set_many(&mut self, bucket: Resource<OpenBucket>, pairs: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        let pairs: Vec<(String, bytes::Bytes)> = pairs.into_iter().map(|(k, v)| (k, v.into())).collect();
        self.call(&bucket, "set_many", pairs.len(), async |kv, b| Ok(kv.set_many(&b, pairs).await?)).await
    }

    async fn delete_many(&mut self, bucket: Resource<OpenBucket>, keys: Vec<String>) -> Result<(), Error> {
        self.call(&bucket, "delete_many", keys.len(), async |kv, b| {
            for key in keys {
                kv.delete(&b, &key).await?;
            }
            Ok(())
        })
        .await
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}
