//! `wasi:keyvalue` (store, atomics, batch @0.2.0-draft) on Nimbus's KV store, only for the buckets
//! in the component's `grants.kv`. Without any grant the interfaces are not linked at all, so a
//! component that imports them fails to load with a message naming the missing grant; opening
//! a bucket that was not granted is `access-denied`.
use std::sync::Arc;

use nimbus_state::{Bucket, KvStore};
use wasmtime::component::{HasData, Resource, ResourceTable, ResourceTableError};

use crate::FunctionSettings;
use crate::guest::GuestState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::OpenBucket },
        trappable_error_type: { "wasi:keyvalue/store.error" => super::Error },
    });
}

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
        Self::Other(e.to_string())
    }
}

/// The key-value capability of one invocation.
pub(crate) struct KvCtx {
    store: Option<Arc<dyn KvStore>>,
    grants: Arc<[String]>,
    component: Arc<str>,
    request_id: Arc<str>,
}

impl KvCtx {
    pub(crate) fn new(settings: &FunctionSettings, request_id: Arc<str>) -> Self {
        Self {
            store: settings.kv.clone(),
            grants: settings.kv_grants.clone(),
            component: settings.name.clone(),
            request_id,
        }
    }
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
}

const PAGE: usize = 1000;

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<OpenBucket>, Error> {
        if !self.ctx.grants.contains(&identifier) {
            tracing::warn!(component = %self.ctx.component, request_id = %self.ctx.request_id, bucket = %identifier, "kv open denied: bucket not in grants.kv");
            return Err(Error::AccessDenied);
        }
        let bucket = Bucket::new(&identifier)?;
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
        let (kv, b) = self.open_bucket(&bucket)?;
        Ok(kv.get(&b, &key).await?.map(|e| e.value.to_vec()))
    }

    async fn set(&mut self, bucket: Resource<OpenBucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
        kv.set(&b, &key, value.into(), None).await?;
        Ok(())
    }

    async fn delete(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<(), Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
        Ok(kv.delete(&b, &key).await?)
    }

    async fn exists(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<bool, Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
        Ok(kv.exists(&b, &key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<OpenBucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
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
        let page = kv.list(&b, "", after.as_deref(), PAGE).await?;
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
        let (kv, b) = self.open_bucket(&bucket)?;
        let delta = i64::try_from(delta).map_err(|_| Error::Other("delta is larger than 2^63".into()))?;
        let n = kv.increment(&b, &key, delta).await?;
        u64::try_from(n).map_err(|_| Error::Other(format!("the value of {key:?} is negative ({n})")))
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
        let values = kv.get_many(&b, &keys).await?;
        Ok(keys.into_iter().zip(values).map(|(k, v)| v.map(|e| (k, e.value.to_vec()))).collect())
    }

    async fn set_many(&mut self, bucket: Resource<OpenBucket>, pairs: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
        kv.set_many(&b, pairs.into_iter().map(|(k, v)| (k, v.into())).collect()).await?;
        Ok(())
    }

    async fn delete_many(&mut self, bucket: Resource<OpenBucket>, keys: Vec<String>) -> Result<(), Error> {
        let (kv, b) = self.open_bucket(&bucket)?;
        for key in keys {
            kv.delete(&b, &key).await?;
        }
        Ok(())
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Links `wasi:keyvalue` into a linker of component invocations.
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<GuestState>) -> wasmtime::Result<()> {
    fn view(s: &mut GuestState) -> KvView<'_> {
        let (kv, table) = s.kv_parts();
        KvView { ctx: kv, table }
    }
    store::add_to_linker::<_, HasKv>(linker, view)?;
    atomics::add_to_linker::<_, HasKv>(linker, view)?;
    batch::add_to_linker::<_, HasKv>(linker, view)
}
