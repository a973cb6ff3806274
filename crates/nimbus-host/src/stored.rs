//! Metering of KV storage: every flush interval, the bytes each bucket of the apps this host
//! runs holds, charged to the app as component `kv/BUCKET` (no revision: data outlives
//! revisions). Not on a node of a cluster, where every node sees the same JetStream buckets and
//! would charge them once each.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nimbus_observe::UsageMeter;
use nimbus_observe::metering::{Key, Metering};
use nimbus_state::{Bucket, KvStore};

#[derive(Debug)]
pub(crate) struct StoredBytes {
    kv: Arc<dyn KvStore>,
    metering: Metering,
    /// App → its tenant label, for the apps assembled here.
    apps: Mutex<HashMap<String, String>>,
}

impl StoredBytes {
    /// Samples `kv` for `metering` every `every`, in a task that ends with the returned handle.
    pub(crate) fn start(kv: Arc<dyn KvStore>, metering: Metering, every: Duration) -> Arc<Self> {
        let stored = Arc::new(Self { kv, metering, apps: Mutex::default() });
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sample(Arc::downgrade(&stored), every));
            }
            Err(_) => tracing::warn!(target: "nimbus::metering", "no async runtime: KV storage is not metered"),
        }
        stored
    }

    /// `app` (labelled `tenant`) runs here: its buckets are metered.
    pub(crate) fn serve(&self, app: &str, tenant: &str) {
        self.apps.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), tenant.to_string());
    }

    /// Charges what each served app's buckets hold for `elapsed`.
    async fn charge(&self, elapsed: Duration) {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let names = match self.kv.bucket_names().await {
            Ok(names) => names,
            Err(e) => {
                return tracing::warn!(target: "nimbus::metering", error = %nimbus_observe::report(&e), "KV storage not metered this time");
            }
        };
        for stored in names {
            let Some((app, name)) = nimbus_manifest::split_scoped(&stored) else { continue };
            let (Some(tenant), Ok(bucket)) = (apps.get(app), Bucket::new(app, name)) else { continue };
            match self.kv.stored_bytes(&bucket).await {
                Ok(bytes) => self.meter(tenant, app, name).kv_stored(bytes, elapsed),
                Err(e) => {
                    tracing::warn!(target: "nimbus::metering", %stored, error = %nimbus_observe::report(&e), "KV storage not metered this time")
                }
            }
        }
    }

    fn meter(&self, tenant: &str, app: &str, bucket: &str) -> UsageMeter {
        self.metering.meter(Key::new(tenant, app, "", &format!("kv/{bucket}")))
    }
}

async fn sample(stored: Weak<StoredBytes>, every: Duration) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Some(stored) = stored.upgrade() else { return };
        let now = Instant::now();
        stored.charge(now - last).await;
        last = now;
    }
}
