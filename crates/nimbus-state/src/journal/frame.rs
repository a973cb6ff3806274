//! The on-disk frame of every journal value: `0xFF 'w' | version u8 (1) | u32 BE length | JSON
//! metadata | (u32 BE length | bytes)*` — the metadata as JSON (readable, extensible), the
//! payloads raw after it (no encoding overhead).
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::KvError;

const MAGIC: [u8; 2] = [0xFF, b'w'];
/// The newest frame layout this build reads, and the one it writes.
const VERSION: u8 = 1;

/// Frames `meta` and `blobs`.
pub(crate) fn encode(meta: &impl Serialize, blobs: &[&[u8]]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).expect("journal metadata serializes");
    let mut out = Vec::with_capacity(7 + json.len() + blobs.iter().map(|b| 4 + b.len()).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    for part in std::iter::once(json.as_slice()).chain(blobs.iter().copied()) {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Reads what [`encode`] wrote: the metadata and the payloads.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Vec<Vec<u8>>), KvError> {
    let corrupt = || KvError::Corrupt("a stored workflow journal value is corrupt".into());
    let mut rest = match bytes.strip_prefix(&MAGIC) {
        Some([VERSION, rest @ ..]) => rest,
        Some([newer, ..]) => {
            return Err(KvError::Corrupt(format!(
                "a workflow journal value has format version {newer}, newer than this Nimbus reads ({VERSION}); \
                 upgrade Nimbus to read it"
            )));
        }
        _ => return Err(corrupt()),
    };
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes")) as usize;
        parts.push(rest.get(4..4 + len).ok_or_else(corrupt)?.to_vec());
        rest = &rest[4 + len..];
    }
    let mut parts = parts.into_iter();
    let meta = serde_json::from_slice(&parts.next().ok_or_else(corrupt)?)
        .map_err(|e| KvError::Corrupt(format!("a stored workflow journal value is corrupt: {e}")))?;
    Ok((meta, parts.collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_refusals() {
        let bytes = super::encode(&serde_json::json!({"a": 1}), &[b"x", b""]);
        let (meta, blobs): (serde_json::Value, _) = super::decode(&bytes).unwrap();
        assert_eq!(meta["a"], 1);
        assert_eq!(blobs, vec![b"x".to_vec(), Vec::new()]);
        assert!(super::decode::<serde_json::Value>(&bytes[..bytes.len() - 1]).is_err());
        let mut newer = bytes.clone();
        newer[2] = 9;
        let err = super::decode::<serde_json::Value>(&newer).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }
}
