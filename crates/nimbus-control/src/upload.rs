//! Deploy uploads: each bundle streams to a file of its own in the uploads directory (under the
//! data directory) through a small buffer, so an upload costs the server a bounded amount of
//! memory whatever its size. The largest bundle accepted is enforced as the bytes arrive; at most a configured number of uploads run
//! at once, the rest are answered `503` with `Retry-After`. The file is removed when the upload
//! is done with, fails, or is abandoned (the client disconnects, or stops sending until the
//! connection's idle timeout); files a killed server left behind are removed at start.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bundle::Bundle;
use crate::error::ControlError;

/// Bytes buffered in memory per upload on their way to disk.
const BUFFER_BYTES: usize = 256 << 10;
const PREFIX: &str = "upload-";

/// Where uploads go and how many may run at once.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_bytes: u64,
}

/// A bundle received whole into its file (removed on drop), holding its upload slot.
#[derive(Debug)]
pub(crate) struct Upload {
    file: tempfile::NamedTempFile,
    _slot: OwnedSemaphorePermit,
}

impl Uploads {
    /// Uploads into `dir` (created; leftovers of an earlier run removed), at most `max_concurrent`
    /// at once (at least 1), each at most `max_bytes`.
    pub fn new(dir: PathBuf, max_concurrent: usize, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        remove_leftovers(&dir)?;
        let max_concurrent = max_concurrent.max(1);
        Ok(Self { dir, slots: Arc::new(Semaphore::new(max_concurrent)), max_concurrent, max_bytes })
    }

    /// Streams `body` into a new file; refused at once when every slot is taken.
    pub(crate) async fn receive(&self, body: axum::body::Body) -> Result<Upload, ControlError> {
        let too_large = || {
            ControlError::TooLarge(format!(
                "the bundle is larger than the {} MiB this server accepts",
                self.max_bytes >> 20
            ))
        };
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            ControlError::Busy(format!(
                "{} deploy uploads are in progress, the most this server takes at once",
                self.max_concurrent
            ))
        })?;
        let file = tempfile::Builder::new()
            .prefix(PREFIX)
            .suffix(".tar")
            .tempfile_in(&self.dir)
            .map_err(|e| ControlError::internal("writing the upload", e))?;
        let writer = file.as_file().try_clone().map_err(|e| ControlError::internal("writing the upload", e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(BUFFER_BYTES, tokio::fs::File::from_std(writer));
        let mut body = body;
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ControlError::bad_request(format!("the upload broke off: {e}"), "retry the deploy"))?;
            let Ok(data) = frame.into_data() else { continue };
            received += data.len() as u64;
            if received > self.max_bytes {
                return Err(too_large());
            }
            writer.write_all(&data).await.map_err(|e| ControlError::internal("writing the upload", e))?;
        }
        writer.flush().await.map_err(|e| ControlError::internal("writing the upload", e))?;
        Ok(Upload { file, _slot: slot })
    }
}

impl Upload {
    /// Reads the bundle from the file (off the async threads).
    pub(crate) async fn unpack(&self) -> Result<Bundle, ControlError> {
        let file = self.file.reopen().map_err(|e| ControlError::internal("reading the upload", e))?;
        let len = file.metadata().map_err(|e| ControlError::internal("reading the upload", e))?.len();
        tokio::task::spawn_blocking(move || Bundle::read(std::io::BufReader::new(file), len))
            .await
            .map_err(|e| ControlError::internal("unpacking the upload", e))?
    }
}

fn remove_leftovers(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
