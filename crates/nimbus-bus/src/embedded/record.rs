//! The layout of an event record in the embedded bus's log tables, versioned so that a later
//! Nimbus can change it and still read what this one wrote.
//!
//! Version 1: `0xFF 0xFF | version u8 (1) | partition u16 BE | published ms u64 BE | dedup flag u8 |
//! dedup id [16] | CloudEvent JSON`. Records written before the layout had a version are the same
//! without the first three bytes; they are read as version 1. The two never meet: an unversioned
//! record starts with its partition, and a partition is below the topic's partition count, a
//! `u16`, so it is never 0xFFFF. A record of a version newer than [`VERSION`] is refused, never
//! guessed at.
use crate::BusError;

/// The first bytes of every versioned record.
const MAGIC: [u8; 2] = [0xFF, 0xFF];
/// The newest layout this build reads, and the one it writes.
const VERSION: u8 = 1;
/// Partition, publish time, dedup flag and dedup id.
const FIELDS: usize = 2 + 8 + 1 + 16;

/// The header of a stored record.
pub(super) struct Header {
    pub(super) partition: u16,
    /// Publish time, milliseconds since the epoch.
    pub(super) at: u64,
    pub(super) dedup: Option<[u8; 16]>,
}

/// Lays out a record in the newest layout.
pub(super) fn encode(header: &Header, json: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(MAGIC.len() + 1 + FIELDS + json.len());
    record.extend_from_slice(&MAGIC);
    record.push(VERSION);
    record.extend_from_slice(&header.partition.to_be_bytes());
    record.extend_from_slice(&header.at.to_be_bytes());
    record.push(u8::from(header.dedup.is_some()));
    record.extend_from_slice(&header.dedup.unwrap_or_default());
    record.extend_from_slice(json);
    record
}

/// The header fields and the CloudEvent JSON of a record in any layout this build knows.
fn split(bytes: &[u8]) -> Result<(&[u8; FIELDS], &[u8]), BusError> {
    let fields = match bytes.strip_prefix(&MAGIC) {
        None => bytes,
        Some([VERSION, rest @ ..]) => rest,
        Some([newer, ..]) => {
            return Err(BusError::Corrupt(format!(
                "a stored event has format version {newer}, newer than this Nimbus reads ({VERSION}); \
                 upgrade Nimbus to read this event store"
            )));
        }
        Some([]) => &[],
    };
    let (head, json) = fields
        .split_first_chunk::<FIELDS>()
        .ok_or_else(|| BusError::Corrupt("a stored event is truncated; the event store is corrupt".into()))?;
    Ok((head, json))
}

/// The header of a stored record.
pub(super) fn header(bytes: &[u8]) -> Result<Header, BusError> {
    let (h, _) = split(bytes)?;
    Ok(Header {
        partition: u16::from_be_bytes([h[0], h[1]]),
        at: u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
        dedup: (h[10] == 1).then(|| h[11..27].try_into().expect("16 bytes")),
    })
}

/// The CloudEvent JSON of a stored record.
pub(super) fn json(bytes: &[u8]) -> Result<&[u8], BusError> {
    Ok(split(bytes)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes_and_the_unversioned_layout() {
        let new = encode(&Header { partition: 3, at: 42, dedup: Some([7; 16]) }, b"{}");
        let h = header(&new).unwrap();
        assert_eq!((h.partition, h.at, h.dedup), (3, 42, Some([7; 16])));
        assert_eq!(json(&new).unwrap(), b"{}");
        let old = &new[3..];
        let h = header(old).unwrap();
        assert_eq!((h.partition, h.at, h.dedup), (3, 42, Some([7; 16])));
        assert_eq!(json(old).unwrap(), b"{}");
    }

    #[test]
    fn refuses_a_newer_version_and_a_truncated_record() {
        let mut newer = encode(&Header { partition: 0, at: 1, dedup: None }, b"{}");
        newer[2] = VERSION + 1;
        let e = header(&newer).err().unwrap().to_string();
        assert!(e.contains("format version 2"), "{e}");
        assert!(json(&newer).is_err());
        assert!(header(&[0xFF, 0xFF, VERSION, 0]).is_err());
    }
}
