//! The tamper-evident audit trail's format: a hash chain of records, each one line
//! `HASH JSON` where `HASH` is the hex SHA-256 of `JSON` and the JSON carries the hash of the
//! record before it (`prev`; the first record's is [`GENESIS`]). Records are numbered from 1
//! without gaps. Every so often the writer appends a [`Digest`]: the sequence number and hash of
//! the newest record, signed with the node's Ed25519 key ([`SigningKey`]), so a chain rewritten
//! from an edited record onwards (every hash recomputed) still contradicts a signature.
//!
//! [`Chain`] makes records and lines; [`verify()`] reads a log back and names each edited,
//! deleted, reordered or unreadable record, a broken link, a bad signature and a log cut short
//! of the [`Head`] the writer last recorded. This module does not write files (the control
//! plane's audit log does, fsyncing each line) and does not decide what is audited.
//!
//! ```
//! use nimbus_security::audit::{Body, Chain, Event, Outcome, verify};
//! use nimbus_security::signing::SigningKey;
//!
//! let key = SigningKey::generate()?;
//! let mut chain = Chain::default();
//! let mut log = String::new();
//! let event = Event { action: "deploy".into(), resource: "app:shop".into(), outcome: Outcome::Allowed,
//!     ..Event::default() };
//! log.push_str(&chain.append(Body::Event(event)).1);
//! log.push_str(&chain.append(Body::Digest(chain.digest(&key, "node-1", 0))).1);
//! let report = verify(log.as_bytes(), Some(&chain.head()), Some(&key.public_hex()));
//! assert!(report.problems.is_empty(), "{:?}", report.problems);
//! # Ok::<(), nimbus_security::signing::KeyError>(())
//! ```
mod verify;

use serde::{Deserialize, Serialize};

use crate::signing::SigningKey;

pub use verify::{Problem, Report, verify};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The version of the record format this code writes and reads.
pub const FORMAT: u32 = 1;

/// One record of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The record format's version ([`FORMAT`]).
    pub v: u32,
    /// Its number, from 1, without gaps.
    pub seq: u64,
    /// The hash of the record before it ([`GENESIS`] for the first).
    pub prev: String,
    /// What it records.
    #[serde(flatten)]
    pub body: Body,
}

/// What a record records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// Something a caller did or was refused.
    Event(Event),
    /// A signed statement of the chain so far.
    Digest(Digest),
}

/// Whether the call was allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed; recorded before the change was made (a change that then fails validation was
    /// still attempted).
    #[default]
    Allowed,
    /// Refused by the policies.
    Denied,
}

/// A call of the control API, allowed or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The node that took the call.
    pub node: String,
    /// Who: the token id (`dev` for a `--dev` call without one).
    pub principal: String,
    /// The token's user, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The address the call came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The policy action, e.g. `deploy`.
    pub action: String,
    /// What it was about: `app:NAME` or `server`.
    pub resource: String,
    /// The request, e.g. `PUT /v1/apps/shop/traffic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Allowed or denied.
    pub outcome: Outcome,
    /// Why it was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The newest record of the chain when a node signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The signing node.
    pub node: String,
    /// The sequence number of the newest record before this digest.
    pub covers: u64,
    /// Its hash.
    pub head: String,
    /// The node's Ed25519 public key, hex.
    pub key: String,
    /// The signature of [`Digest::message`], hex.
    pub signature: String,
}

impl Digest {
    /// The bytes signed: the format, node, sequence number and hash.
    pub fn message(node: &str, covers: u64, head: &str) -> Vec<u8> {
        format!("nimbus-audit-digest-v{FORMAT}\n{node}\n{covers}\n{head}").into_bytes()
    }
}

/// The newest record of a chain: its number (0 before any) and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The newest record's number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS.into() }
    }
}

/// The writing end of a chain: makes each next record and its line.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    head: Head,
}

impl Chain {
    /// A chain continuing after `head` (read back from the log's last line).
    pub fn after(head: Head) -> Self {
        Self { head }
    }

    /// The newest record.
    pub fn head(&self) -> Head {
        self.head.clone()
    }

    /// The next record holding `body` and its line (`HASH JSON\n`); the chain moves on to it.
    /// A writer that fails to store the line goes back with [`Chain::after`] the old head.
    pub fn append(&mut self, body: Body) -> (Record, String) {
        let record = Record { v: FORMAT, seq: self.head.seq + 1, prev: self.head.hash.clone(), body };
        let json = serde_json::to_string(&record).expect("a record serializes");
        let hash = hash(json.as_bytes());
        self.head = Head { seq: record.seq, hash: hash.clone() };
        (record, format!("{hash} {json}\n"))
    }

    /// A digest of the chain as it is, signed by `key` for `node` at `at_ms`.
    pub fn digest(&self, key: &SigningKey, node: &str, at_ms: u64) -> Digest {
        let signature = key.sign(&Digest::message(node, self.head.seq, &self.head.hash));
        Digest {
            at_ms,
            node: node.into(),
            covers: self.head.seq,
            head: self.head.hash.clone(),
            key: key.public_hex(),
            signature: hex::encode(signature),
        }
    }
}

/// The hex SHA-256 of `bytes`.
pub fn hash(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// A line of a log split into its hash and record; `None` if it is not one.
pub fn parse_line(line: &str) -> Option<(&str, Record)> {
    let (hash, json) = line.trim_end_matches('\n').split_once(' ')?;
    let record = serde_json::from_str(json).ok()?;
    Some((hash, record))
}

#[cfg(test)]
mod tests;
