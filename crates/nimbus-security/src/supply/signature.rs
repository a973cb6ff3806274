//! Artifact signatures: an Ed25519 signature over an artifact's digest, made with a build
//! pipeline's key ([`ArtifactSignature::sign`]) and checked against the keys a server trusts
//! ([`TrustedSigners::verify`]). The signed message is a fixed prefix and the digest
//! (`sha256:HEX`), so a signature can never be replayed as one of another kind.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SupplyError;
use super::tree::read_bounded;
use crate::signing::{SigningKey, signed_by};

/// The version of the signature file format this code writes and reads.
pub const SIGNATURE_FORMAT: u32 = 1;
/// The largest signature file read (one is about 250 bytes).
const MAX_SIGNATURE_BYTES: usize = 4096;
/// The largest trusted-signers file read.
const MAX_SIGNERS_BYTES: u64 = 1 << 20;
/// What is signed before the digest.
const CONTEXT: &[u8] = b"nimbus-artifact-signature-v1\n";

/// Why a signature or a trusted-signers file is refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not a signature file this version reads.
    #[error("not a Nimbus artifact signature: {why}")]
    Malformed {
        /// What is wrong with it.
        why: String,
    },
    /// It signs another digest than the artifact's.
    #[error("the signature is of {signed}, not of this artifact ({actual}): sign the artifact again after building it")]
    OtherDigest {
        /// The digest the signature names.
        signed: String,
        /// The artifact's digest.
        actual: String,
    },
    /// The signature does not verify under the key it names.
    #[error("the signature does not verify under its key {key}: the signature or the artifact was altered")]
    Invalid {
        /// The key it names, hex.
        key: String,
    },
    /// A valid signature by a key that is not trusted.
    #[error(
        "signed by {key}, a key this server does not trust: add `NAME {key}` to its trusted signers file if it should"
    )]
    Untrusted {
        /// The key, hex.
        key: String,
    },
    /// A line of a trusted-signers file is not `NAME HEX-KEY`.
    #[error("{origin}:{line}: {why}")]
    Signers {
        /// The file.
        origin: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A trusted-signers file cannot be read.
    #[error(transparent)]
    Unreadable(#[from] SupplyError),
}

/// A signature file (`X.wasm.sig` beside an artifact; JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSignature {
    /// The format version, [`SIGNATURE_FORMAT`].
    pub v: u32,
    /// The signed artifact's digest, `sha256:HEX`.
    pub digest: String,
    /// The signer's Ed25519 public key, hex.
    pub key: String,
    /// The signature, hex.
    pub signature: String,
}

impl ArtifactSignature {
    /// `key`'s signature of the artifact whose digest is `digest`.
    pub fn sign(key: &SigningKey, digest: &str) -> Self {
        Self {
            v: SIGNATURE_FORMAT,
            digest: digest.to_string(),
            key: key.public_hex(),
            signature: hex::encode(key.sign(&message(digest))),
        }
    }

    /// Reads a signature file's contents (at most 4 KiB, a format version this code knows).
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let malformed = |why: String| SignatureError::Malformed { why };
        if bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(malformed(format!("{} bytes, more than {MAX_SIGNATURE_BYTES}", bytes.len())));
        }
        let signature: Self = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if signature.v != SIGNATURE_FORMAT {
            return Err(malformed(format!(
                "format version {}, this Nimbus reads version {SIGNATURE_FORMAT}: upgrade it",
                signature.v
            )));
        }
        Ok(signature)
    }

    /// The file's contents.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a signature serializes");
        json.push('\n');
        json
    }
}

/// The message signed for an artifact's digest.
fn message(digest: &str) -> Vec<u8> {
    [CONTEXT, digest.as_bytes()].concat()
}

/// The keys whose artifact signatures a server accepts, each with a name: a file of lines
/// `NAME HEX-PUBLIC-KEY` (blank lines and `#` comments allowed), as `nimbus signing keygen`
/// prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSigners {
    names: BTreeMap<String, String>,
}

impl TrustedSigners {
    /// Parses a trusted-signers file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SignatureError> {
        let mut names = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let bad = |why: String| SignatureError::Signers { origin: origin.to_string(), line: index + 1, why };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(key), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("expected `NAME HEX-PUBLIC-KEY`".into()));
            };
            let key = key.to_ascii_lowercase();
            if hex::decode(&key).map(|k| k.len()) != Ok(32) {
                return Err(bad(format!("`{key}` is not an Ed25519 public key (64 hex digits)")));
            }
            if let Some(first) = names.insert(key.clone(), name.to_string()) {
                return Err(bad(format!("the key of `{name}` is already listed as `{first}`")));
            }
        }
        Ok(Self { names })
    }

    /// Reads a trusted-signers file (at most 1 MiB).
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let text = read_bounded(path, MAX_SIGNERS_BYTES, "a trusted signers file")?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The line naming `key` as `name` in a trusted-signers file.
    pub fn line(name: &str, key: &SigningKey) -> String {
        format!("{name} {}", key.public_hex())
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Checks that `signature` signs `digest` and verifies under its key, and that the key is
    /// trusted; the key's name.
    pub fn verify(&self, signature: &ArtifactSignature, digest: &str) -> Result<String, SignatureError> {
        if signature.digest != digest {
            return Err(SignatureError::OtherDigest { signed: signature.digest.clone(), actual: digest.to_string() });
        }
        if !signed_by(&signature.key, &message(digest), &signature.signature) {
            return Err(SignatureError::Invalid { key: signature.key.clone() });
        }
        self.names
            .get(&signature.key.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| SignatureError::Untrusted { key: signature.key.clone() })
    }
}
