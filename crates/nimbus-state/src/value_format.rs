//! The layout of a value in the embedded backend, versioned so that a later Nimbus can change it
//! and still read what this one wrote.
//!
//! Version 1: `0xFF 'k' | version u8 (1) | revision u64 BE | expires ms u64 BE (0: never) | value`.
//! Values written before the layout had a version are the same without the first three bytes;
//! they are read as version 1. The two never meet: an unversioned value starts with its revision,
//! whose first byte stays 0 for the first 2^56 writes to a bucket, and a versioned one with 0xFF.
//! A value of a version newer than [`VERSION`] is refused, never guessed at.
use crate::KvError;

/// The first bytes of every versioned value.
const MAGIC: [u8; 2] = [0xFF, b'k'];
/// The newest layout this build reads, and the one it writes.
pub(crate) const VERSION: u8 = 1;
/// Revision and expiry.
const FIELDS: usize = 16;

/// A value as stored: its revision, its expiry and the bytes the caller wrote.
pub(crate) struct Record<'a> {
    pub(crate) revision: u64,
    /// Milliseconds since the epoch; 0 for a value without TTL.
    pub(crate) expires: u64,
    pub(crate) value: &'a [u8],
}

/// Lays out a value in the newest layout.
pub(crate) fn encode(revision: u64, expires: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + FIELDS + value.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Reads a value in any layout this build knows, versioned or not.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record<'_>, KvError> {
    let fields = match bytes.strip_prefix(&MAGIC) {
        None => bytes,
        Some([VERSION, rest @ ..]) => rest,
        Some([newer, ..]) => {
            return Err(KvError::Corrupt(format!(
                "a stored value has format version {newer}, newer than this Nimbus reads ({VERSION}); \
                 upgrade Nimbus to read this state file"
            )));
        }
        Some([]) => return Err(corrupt()),
    };
    let (head, value) = fields.split_at_checked(FIELDS).ok_or_else(corrupt)?;
    let (revision, expires) = head.split_at(8);
    Ok(Record {
        revision: u64::from_be_bytes(revision.try_into().expect("8 bytes")),
        expires: u64::from_be_bytes(expires.try_into().expect("8 bytes")),
        value,
    })
}

fn corrupt() -> KvError {
    KvError::Corrupt("a stored value is truncated; the state file is corrupt".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes_and_the_unversioned_layout() {
        let new = encode(7, 0, b"hello");
        let r = decode(&new).unwrap();
        assert_eq!((r.revision, r.expires, r.value), (7, 0, b"hello".as_slice()));
        let mut old = 9u64.to_be_bytes().to_vec();
        old.extend_from_slice(&123u64.to_be_bytes());
        old.extend_from_slice(b"v");
        let r = decode(&old).unwrap();
        assert_eq!((r.revision, r.expires, r.value), (9, 123, b"v".as_slice()));
    }

    #[test]
    fn refuses_a_newer_version_and_a_truncated_value() {
        let mut newer = encode(1, 0, b"x");
        newer[2] = VERSION + 1;
        let e = decode(&newer).err().unwrap().to_string();
        assert!(e.contains("format version 2"), "{e}");
        assert!(decode(&[0xFF, b'k']).is_err());
        assert!(decode(&encode(1, 0, b"")[..10]).is_err());
    }
}
