//! The cluster's copy of each node's audit trail, in NATS JetStream: one stream per node
//! (`NIMBUS_AUDIT_<hex of the node's name>`, on the cluster's replicas, fsynced as the NATS
//! servers are configured), each record published as its log line with the stream's last
//! sequence expected to be the record's number minus one, so the stream's sequence is the
//! record's number and the copy is always a prefix of the node's log. A node publishes each
//! record, and waits for the acknowledgement, before the call it records goes on; any node reads
//! any node's copy, also after that node is gone.
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self};

use crate::error::ControlError;

/// The copies of the audit trails of a cluster's nodes.
#[derive(Clone)]
pub struct AuditReplica {
    js: jetstream::Context,
    replicas: usize,
}

impl std::fmt::Debug for AuditReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReplica").field("replicas", &self.replicas).finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> ControlError {
    ControlError::Unavailable {
        message: format!(
            "the cluster's copy of the audit trail cannot be {what} (NATS JetStream does not answer, or the stream has no leader yet); changes are refused while it cannot be written, reads of this node's own trail go on"
        ),
        source: Some(nimbus_observe::cause(e)),
    }
}

impl AuditReplica {
    /// The copies on the NATS servers of `client`, each kept on `replicas` servers.
    pub fn new(client: async_nats::Client, replicas: usize) -> Self {
        Self { js: jetstream::new(client), replicas: replicas.max(1) }
    }

    fn stream_name(node: &str) -> String {
        format!("NIMBUS_AUDIT_{}", hex::encode(node))
    }

    fn subject(node: &str) -> String {
        format!("nimbus.audit.{}", hex::encode(node))
    }

    /// `node`'s stream, created if `create`; `None` if there is none.
    async fn stream(&self, node: &str, create: bool) -> Result<Option<stream::Stream>, ControlError> {
        if create {
            let config = stream::Config {
                name: Self::stream_name(node),
                description: Some(format!("The audit trail of Nimbus node `{node}`")),
                subjects: vec![Self::subject(node)],
                storage: StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            };
            let stream = self.js.get_or_create_stream(config).await.map_err(|e| unavailable("opened", e))?;
            return Ok(Some(stream));
        }
        match self.js.get_stream(Self::stream_name(node)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(unavailable("read", e)),
            },
        }
    }

    /// The number of the newest record in `node`'s copy (0: none).
    pub async fn last(&self, node: &str) -> Result<u64, ControlError> {
        let Some(mut stream) = self.stream(node, true).await? else { return Ok(0) };
        Ok(stream.info().await.map_err(|e| unavailable("read", e))?.state.last_sequence)
    }

    /// Publishes record `seq` of `node` (its log line) after record `seq - 1`, and waits until
    /// the servers have stored it.
    pub(crate) async fn publish(&self, node: &str, seq: u64, line: &str) -> Result<(), ControlError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Sequence", (seq - 1).to_string().as_str());
        let payload = bytes::Bytes::copy_from_slice(line.trim_end().as_bytes());
        // A stream just created with several replicas answers `no stream found` until its
        // group has a leader: nothing was stored, so the record is sent again, for up to ~3 s.
        let mut tries = 0;
        loop {
            let acked = match self.js.publish_with_headers(Self::subject(node), headers.clone(), payload.clone()).await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(_) => return Ok(()),
                Err(e) if tries < 30 && e.kind() == PublishErrorKind::StreamNotFound => {}
                Err(e) => return Err(unavailable("written", e)),
            }
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The lines of `node`'s copy numbered after `after`, at most `limit`, oldest first.
    pub async fn lines(&self, node: &str, after: u64, limit: usize) -> Result<Vec<String>, ControlError> {
        let Some(mut stream) = self.stream(node, false).await? else {
            return Err(ControlError::NotFound(format!(
                "no node `{node}` has kept an audit trail in this cluster (`nimbus nodes list` names the nodes)"
            )));
        };
        let last = stream.info().await.map_err(|e| unavailable("read", e))?.state.last_sequence;
        let mut out = Vec::new();
        for seq in (after + 1)..=last.min(after.saturating_add(limit as u64)) {
            let message = stream.get_raw_message(seq).await.map_err(|e| unavailable("read", e))?;
            out.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
        Ok(out)
    }
}
