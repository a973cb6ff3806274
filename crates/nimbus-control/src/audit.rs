//! The node's audit log: every change made through the control API and every refusal, appended
//! to a hash chain ([`nimbus_security::audit`]) in `DATA_DIR/audit/log`, one fsynced line per
//! record, before the change is made. The newest record's number and hash are kept apart in
//! `head` (so a log cut short is seen), and every [`DIGEST_EVERY`] with new records a digest
//! signed with the node's key (`node.key`) is appended. A record that cannot be written refuses
//! the change (fail closed); the partial line is cut off so the chain stays whole. In a cluster
//! each record is also published to the cluster's copy ([`AuditReplica`]) and acknowledged
//! there before the change goes on, so a node's trail outlives its disk.
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_security::audit::{self, Body, Chain, Event, Head, Record, Report};
use nimbus_security::signing::SigningKey;

use crate::audit_replica::AuditReplica;
use crate::error::ControlError;

/// How often a digest is signed while records come in.
pub const DIGEST_EVERY: Duration = Duration::from_secs(60);

/// The log's files.
const LOG: &str = "log";
const HEAD: &str = "head";
const KEY: &str = "node.key";

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file of it cannot be read or written.
    #[error("cannot use the audit log in {}: check the disk and the directory's permissions", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signing key cannot be used.
    #[error(transparent)]
    Key(#[from] nimbus_security::signing::KeyError),
}

/// A node's audit log.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    node: String,
    key: SigningKey,
    writer: Mutex<Writer>,
    /// In a cluster, the copy each record is published to before it counts as written, and the
    /// runtime that publishes it.
    replica: Option<(AuditReplica, tokio::runtime::Handle)>,
}

#[derive(Debug)]
struct Writer {
    file: File,
    head: File,
    chain: Chain,
    /// The chain's newest record when the last digest was signed.
    digested: u64,
    /// The newest record the cluster's copy holds.
    replicated: u64,
}

impl AuditLog {
    /// The log in `dir` of node `node`, created if there is none. A last line cut short by a
    /// crash (never acknowledged: the change it recorded was not made) is removed.
    pub fn open(dir: &Path, node: &str) -> Result<Self, AuditError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = SigningKey::open_or_create(&dir.join(KEY))?;
        let path = dir.join(LOG);
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io(&path))?;
        let head = last_record(&mut file).map_err(io(&path))?;
        let head_path = dir.join(HEAD);
        let head_file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&head_path).map_err(io(&head_path))?;
        let digested = head.seq;
        let replicated = head.seq;
        let writer = Writer { file, head: head_file, chain: Chain::after(head), digested, replicated };
        Ok(Self { dir: dir.to_path_buf(), node: node.to_string(), key, writer: Mutex::new(writer), replica: None })
    }

    /// This log with every record also published to the cluster's copy (`replica`) before it
    /// counts as written. Records the copy lacks (written while NATS could not be reached) are
    /// published first; a copy longer than this log (the node's log was lost or replaced) is
    /// refused, since the two chains would mix.
    pub async fn replicated(mut self, replica: AuditReplica) -> Result<Self, ControlError> {
        let last = replica.last(&self.node).await?;
        let head = self.writer.get_mut().expect("audit writer").chain.head().seq;
        if last > head {
            return Err(ControlError::Unavailable {
                message: format!(
                    "the cluster's copy of node `{}`'s audit trail holds {last} records, its log in {} only {head}: the log was lost or replaced; restore it from a backup, or start this node under another --node-name",
                    self.node,
                    self.dir.display()
                ),
                source: None,
            });
        }
        // Usually the copy is whole: the log is read only when records are missing from it.
        if last < head {
            for (seq, line) in self.lines(last, usize::MAX)? {
                replica.publish(&self.node, seq, &line).await?;
            }
        }
        self.writer.get_mut().expect("audit writer").replicated = head;
        self.replica = Some((replica, tokio::runtime::Handle::current()));
        Ok(self)
    }

    /// The cluster's copies of the nodes' trails, if this log is replicated.
    pub(crate) fn replica(&self) -> Option<&AuditReplica> {
        self.replica.as_ref().map(|(r, _)| r)
    }

    /// The node the log belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Appends `event` (its time and node filled in); durable when this returns.
    pub fn record(&self, mut event: Event) -> Result<Record, ControlError> {
        event.at_ms = now_ms();
        event.node.clone_from(&self.node);
        self.append(Body::Event(event))
    }

    /// Appends a signed digest of the chain if records came since the last one.
    pub fn digest(&self) -> Result<Option<Record>, ControlError> {
        let digest = {
            let writer = self.writer.lock().expect("audit writer");
            if writer.chain.head().seq == writer.digested {
                return Ok(None);
            }
            writer.chain.digest(&self.key, &self.node, now_ms())
        };
        self.append(Body::Digest(digest)).map(Some)
    }

    fn append(&self, body: Body) -> Result<Record, ControlError> {
        let mut writer = self.writer.lock().expect("audit writer");
        let before = writer.chain.head();
        let (record, line) = writer.chain.append(body);
        if let Err(e) = writer.write(&line) {
            writer.chain = Chain::after(before);
            return Err(ControlError::Unavailable {
                message: format!(
                    "the audit log in {} cannot be written, so changes are refused until it can (free disk space or fix the directory)",
                    self.dir.display()
                ),
                source: Some(nimbus_observe::cause(e)),
            });
        }
        if matches!(record.body, Body::Digest(_)) {
            writer.digested = record.seq;
        }
        self.replicate(&mut writer, record.seq, &line)?;
        Ok(record)
    }

    /// Publishes record `seq` (`line`) to the cluster's copy, after any the copy lacks; blocks
    /// the calling (blocking) thread until the NATS servers acknowledge. On failure the record
    /// stays in this log and is published before the next one (after asking the copy how far it
    /// got: a publish whose acknowledgement was lost may have been stored).
    fn replicate(&self, writer: &mut Writer, seq: u64, line: &str) -> Result<(), ControlError> {
        let Some((replica, runtime)) = &self.replica else { return Ok(()) };
        runtime.block_on(async {
            if writer.replicated + 1 < seq {
                writer.replicated = replica.last(&self.node).await?;
                let missing = seq.saturating_sub(writer.replicated + 1) as usize;
                for (number, missed) in self.lines(writer.replicated, missing)? {
                    replica.publish(&self.node, number, &missed).await?;
                    writer.replicated = number;
                }
            }
            if writer.replicated < seq {
                replica.publish(&self.node, seq, line).await?;
                writer.replicated = seq;
            }
            Ok(())
        })
    }

    /// The lines of records numbered after `after`, at most `limit`, with their numbers.
    fn lines(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, ControlError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let file = self.read_log()?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| ControlError::internal("reading the audit log", e))?;
            if let Some((_, record)) = audit::parse_line(&line).filter(|(_, r)| r.seq > after) {
                out.push((record.seq, line));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Records after number `after`, at most `limit`, oldest first, each with its line's hash.
    pub fn list(&self, after: u64, limit: usize) -> Result<Vec<(String, Record)>, ControlError> {
        Ok(self.lines(after, limit)?.iter().filter_map(|(_, line)| parsed(line)).collect())
    }

    /// Checks the log against its head and this node's key.
    pub fn verify(&self) -> Result<Report, ControlError> {
        let head = self.writer.lock().expect("audit writer").chain.head();
        let file = self.read_log()?;
        Ok(audit::verify(BufReader::new(file), Some(&head), Some(&self.key.public_hex())))
    }

    fn read_log(&self) -> Result<File, ControlError> {
        File::open(self.dir.join(LOG)).map_err(|e| ControlError::internal("opening the audit log", e))
    }

    /// Signs a digest every [`DIGEST_EVERY`] while records come in, until the runtime stops.
    pub fn spawn_digests(self: &Arc<Self>) {
        let log = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DIGEST_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(log) = log.upgrade() else { return };
                if let Err(e) = tokio::task::spawn_blocking(move || log.digest()).await.expect("digest task") {
                    tracing::error!(error = %nimbus_observe::report(&e), "cannot sign an audit digest");
                }
            }
        });
    }
}

impl Writer {
    /// Writes `line` and the head, both synced; on failure the log is cut back to before it.
    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        let written = self.file.write_all(line.as_bytes()).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Best effort: a disk that refused the line may refuse this too; the next open cuts
            // a partial last line anyway.
            let _ = self.file.set_len(len);
            return Err(e);
        }
        let head = serde_json::to_string(&self.chain.head()).expect("a head serializes");
        self.head.set_len(0)?;
        std::os::unix::fs::FileExt::write_all_at(&self.head, head.as_bytes(), 0)?;
        self.head.sync_data()
    }
}

/// The newest record of the log in `file`; a partial last line is cut off.
fn last_record(file: &mut File) -> std::io::Result<Head> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < tail.len() {
        tracing::warn!("the audit log ends in a partial record (a crash while writing it); it is removed");
        file.set_len(start + complete as u64)?;
        file.sync_data()?;
    }
    let last = tail[..complete].split(|b| *b == b'\n').rev().find(|l| !l.is_empty());
    let head = last
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(audit::parse_line)
        .map(|(hash, record)| Head { seq: record.seq, hash: hash.to_string() });
    match (head, last) {
        (Some(head), _) => Ok(head),
        (None, None) => Ok(Head::default()),
        (None, Some(_)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the last line of the audit log is not a record; run `nimbus audit verify --dir` on a copy and restore the log",
        )),
    }
}

/// A log line's hash and record.
pub(crate) fn parsed(line: &str) -> Option<(String, Record)> {
    audit::parse_line(line).map(|(hash, record)| (hash.to_string(), record))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Checks the log in `dir` (a copy of a node's `DATA_DIR/audit`, say) against the head and the
/// key kept beside it.
pub fn verify_dir(dir: &Path) -> Result<Report, AuditError> {
    let path = dir.join(LOG);
    let file = File::open(&path).map_err(|source| AuditError::Io { path, source })?;
    let head: Option<Head> = std::fs::read(dir.join(HEAD)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let key = SigningKey::open(&dir.join(KEY))?;
    Ok(audit::verify(BufReader::new(file), head.as_ref(), Some(&key.public_hex())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_security::audit::Outcome;

    fn event(action: &str) -> Event {
        Event {
            principal: "t1".into(),
            action: action.into(),
            resource: "app:shop".into(),
            outcome: Outcome::Allowed,
            ..Event::default()
        }
    }

    #[test]
    fn records_survive_reopening_and_a_partial_last_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), "n1").unwrap();
        log.record(event("deploy")).unwrap();
        log.record(event("traffic")).unwrap();
        assert_eq!(log.digest().unwrap().unwrap().seq, 3);
        assert!(log.digest().unwrap().is_none(), "no digest without new records");
        drop(log);
        // A crash halfway through a line.
        let mut file = OpenOptions::new().append(true).open(dir.path().join(LOG)).unwrap();
        file.write_all(b"abc {\"v\":1,\"se").unwrap();
        let log = AuditLog::open(dir.path(), "n1").unwrap();
        let record = log.record(event("delete")).unwrap();
        assert_eq!(record.seq, 4);
        let report = log.verify().unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.events, report.digests, report.signed), (3, 1, 2));
        let listed: Vec<u64> = log.list(1, 2).unwrap().into_iter().map(|(_, r)| r.seq).collect();
        assert_eq!(listed, [2, 3]);
        assert!(verify_dir(dir.path()).unwrap().ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_record_that_cannot_be_written_is_refused_and_the_chain_does_not_move() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(LOG)).unwrap();
        let log = AuditLog::open(dir.path(), "n1").unwrap();
        let refused = log.record(event("deploy")).unwrap_err();
        assert!(refused.to_string().contains("cannot be written"), "{refused}");
        assert_eq!(log.writer.lock().unwrap().chain.head(), Head::default());
    }
}
