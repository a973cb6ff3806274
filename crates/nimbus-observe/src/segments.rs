//! A bounded on-disk log of records: numbered segment files of length-prefixed records,
//! appended by one writer, the oldest segments deleted when the total passes its size bound or
//! a segment passes the retention. A torn tail (a crash mid-write) ends reading of that segment.
//!
//! A segment file is versioned so that a later Nimbus can change it and still read what this one
//! wrote. Version 1: `"NSG" 0xFF | version u8 (1) | (record length u32 LE | record)*`. Segments
//! written before the layout had a version are the same without the first five bytes; they are
//! read as version 1. The two never meet: an unversioned segment starts with a record length,
//! and one whose last byte is 0xFF would be a record over 4 GB. A segment of a version newer than
//! [`VERSION`] is skipped with a warning, never guessed at.
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Size bound and age bound of a segment log.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Bytes on disk the log may use (the newest segment included).
    pub max_bytes: u64,
    /// Age after which a whole segment is deleted.
    pub retention: Duration,
}

/// Each log is kept in this many segments (at least), so deleting one frees a small share.
const SEGMENTS: u64 = 8;
const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// The first bytes of every versioned segment.
const MAGIC: [u8; 4] = [b'N', b'S', b'G', 0xFF];
/// The newest layout this build reads, and the one it writes.
const VERSION: u8 = 1;

/// A segment this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("segment format version {0} is newer than this Nimbus reads ({VERSION}); upgrade Nimbus to read it")]
pub(crate) struct NewerSegment(u8);

/// The records of one segment file's bytes, in any layout this build knows; a torn tail ends them.
pub(crate) fn records(bytes: &[u8]) -> Result<Vec<&[u8]>, NewerSegment> {
    let mut rest = match bytes.strip_prefix(&MAGIC) {
        None => bytes,
        Some([VERSION, rest @ ..]) => rest,
        Some([newer, ..]) => return Err(NewerSegment(*newer)),
        Some([]) => &[],
    };
    let mut out = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((record, next)) = tail.split_at_checked(len) else { break };
        out.push(record);
        rest = next;
    }
    Ok(out)
}

pub(crate) struct SegmentLog {
    dir: PathBuf,
    bounds: Bounds,
    current: Option<(u64, BufWriter<File>, u64)>,
}

impl SegmentLog {
    pub(crate) fn open(dir: &Path, bounds: Bounds) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), bounds, current: None })
    }

    fn segment_bytes(&self) -> u64 {
        (self.bounds.max_bytes / SEGMENTS).max(MIN_SEGMENT_BYTES)
    }

    /// Appends `records` and flushes them to the file (not fsynced: telemetry is not
    /// acknowledged data).
    pub(crate) fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> std::io::Result<()> {
        let segment_bytes = self.segment_bytes();
        for record in records {
            let (_, writer, size) = match &mut self.current {
                Some(c) if c.2 < segment_bytes => c,
                _ => self.rotate()?,
            };
            let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
            writer.write_all(&len.to_le_bytes())?;
            writer.write_all(&record[..len as usize])?;
            *size += 4 + u64::from(len);
        }
        if let Some((_, w, _)) = &mut self.current {
            w.flush()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<&mut (u64, BufWriter<File>, u64)> {
        if let Some((_, mut w, _)) = self.current.take() {
            w.flush()?;
        }
        let segments = list(&self.dir);
        let next = segments.last().map_or(0, |(n, _)| n + 1);
        let file = OpenOptions::new().create(true).append(true).open(self.dir.join(name(next)))?;
        let mut writer = BufWriter::with_capacity(64 * 1024, file);
        writer.write_all(&MAGIC)?;
        writer.write_all(&[VERSION])?;
        self.current = Some((next, writer, MAGIC.len() as u64 + 1));
        self.enforce(&segments);
        Ok(self.current.as_mut().expect("just set"))
    }

    /// Deletes the oldest closed segments beyond the bounds (the new, empty one is kept).
    fn enforce(&self, closed: &[(u64, PathBuf)]) {
        let now = SystemTime::now();
        let sizes: Vec<(u64, SystemTime)> = closed
            .iter()
            .map(|(_, p)| fs::metadata(p).map_or((0, now), |m| (m.len(), m.modified().unwrap_or(now))))
            .collect();
        let mut total: u64 = sizes.iter().map(|s| s.0).sum();
        // The newest segment about to be written needs room too.
        let budget = self.bounds.max_bytes.saturating_sub(self.segment_bytes());
        for ((_, path), (size, modified)) in closed.iter().zip(sizes) {
            let expired = now.duration_since(modified).is_ok_and(|age| age > self.bounds.retention);
            if total <= budget && !expired {
                break;
            }
            if fs::remove_file(path).is_ok() {
                total -= size;
            }
        }
    }

    /// Every record still stored, oldest first.
    pub(crate) fn read_all(dir: &Path) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (_, path) in list(dir) {
            let Ok(mut file) = File::open(&path) else { continue };
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).is_err() {
                continue;
            }
            match records(&bytes) {
                Ok(records) => out.extend(records.into_iter().map(<[u8]>::to_vec)),
                Err(e) => tracing::warn!(segment = %path.display(), error = %e, "telemetry segment skipped"),
            }
        }
        out
    }

    /// Bytes the segments use on disk.
    pub(crate) fn disk_bytes(dir: &Path) -> u64 {
        list(dir).iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum()
    }
}

fn name(n: u64) -> String {
    format!("{n:016}.seg")
}

fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    segments.sort();
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_its_bound_and_reads_back_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = Bounds { max_bytes: 1 << 20, retention: Duration::from_secs(3600) };
        let mut log = SegmentLog::open(dir.path(), bounds).unwrap();
        let record = vec![7u8; 1000];
        for _ in 0..5000 {
            log.append([record.as_slice()]).unwrap();
        }
        let used = SegmentLog::disk_bytes(dir.path());
        assert!(used <= bounds.max_bytes, "{used} bytes on disk for a bound of {}", bounds.max_bytes);
        let back = SegmentLog::read_all(dir.path());
        assert!(back.len() > 500 && back.len() < 5000, "{} records kept", back.len());
        assert!(back.iter().all(|r| *r == record));
    }

    #[test]
    fn a_torn_tail_is_skipped_and_writing_resumes_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = Bounds { max_bytes: 1 << 20, retention: Duration::from_secs(3600) };
        let mut log = SegmentLog::open(dir.path(), bounds).unwrap();
        log.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        drop(log);
        let seg = list(dir.path())[0].1.clone();
        let mut f = OpenOptions::new().append(true).open(seg).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(b"short").unwrap();
        let mut log = SegmentLog::open(dir.path(), bounds).unwrap();
        log.append([b"three".as_slice()]).unwrap();
        assert_eq!(SegmentLog::read_all(dir.path()), vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn reads_a_segment_written_before_segments_were_versioned() {
        // Written by the code of commit ec3baf1: records "one", "two", "" and a log line.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segments-unversioned");
        let expected: Vec<Vec<u8>> =
            vec![b"one".to_vec(), b"two".to_vec(), Vec::new(), br#"{"level":"INFO","message":"three"}"#.to_vec()];
        assert_eq!(SegmentLog::read_all(&dir), expected);

        // A new segment next to it is versioned, and both read back in order.
        let copy = tempfile::tempdir().unwrap();
        fs::copy(dir.join(name(0)), copy.path().join(name(0))).unwrap();
        let bounds = Bounds { max_bytes: 1 << 20, retention: Duration::from_secs(3600) };
        SegmentLog::open(copy.path(), bounds).unwrap().append([b"four".as_slice()]).unwrap();
        assert!(fs::read(copy.path().join(name(1))).unwrap().starts_with(&MAGIC));
        let mut all = expected;
        all.push(b"four".to_vec());
        assert_eq!(SegmentLog::read_all(copy.path()), all);
    }

    #[test]
    fn a_segment_of_a_newer_version_is_refused() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION + 1);
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(b"one");
        let e = records(&bytes).unwrap_err().to_string();
        assert!(e.contains("version 2"), "{e}");
        bytes[MAGIC.len()] = VERSION;
        assert_eq!(records(&bytes).unwrap(), [b"one".as_slice()]);
    }
}
