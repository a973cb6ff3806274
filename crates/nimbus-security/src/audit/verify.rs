//! Reading an audit log back and naming what is wrong with it.
use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::{Body, GENESIS, Head, hash};
use crate::signing::signed_by;

/// Something wrong with a log. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The line is not `HASH JSON` of a record.
    Unreadable {
        /// Its line.
        line: usize,
    },
    /// The record's content does not match its hash: it was edited.
    Edited {
        /// The record.
        seq: u64,
        /// Its line.
        line: usize,
    },
    /// The record does not carry the hash of the one before it: one of the two was edited and
    /// its hash recomputed, or the record was inserted.
    Broken {
        /// The record.
        seq: u64,
        /// Its line.
        line: usize,
    },
    /// A signed digest vouches for another chain than the log's: records up to `covers` were
    /// rewritten (edited and every hash after recomputed).
    Rewritten {
        /// The digest's record.
        digest: u64,
        /// The newest record it vouches for.
        covers: u64,
    },
    /// Records are missing from the middle of the log.
    Deleted {
        /// The first missing record.
        from: u64,
        /// The last.
        to: u64,
    },
    /// The record is out of its place.
    Reordered {
        /// The record.
        seq: u64,
        /// The line it is on.
        line: usize,
    },
    /// A digest's signature is not valid, or not of the node's key.
    BadSignature {
        /// The digest's record.
        seq: u64,
        /// Which of the two.
        why: String,
    },
    /// The log ends before the newest record the writer recorded.
    Truncated {
        /// The log's last record.
        last: u64,
        /// The newest one written.
        expected: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable { line } => write!(f, "line {line} is not an audit record"),
            Self::Edited { seq, line } => {
                write!(f, "record {seq} (line {line}) was edited: its hash does not match it")
            }
            Self::Broken { seq, line } => write!(
                f,
                "record {seq} (line {line}) does not follow record {}: one of them was edited and re-hashed, or {seq} was inserted",
                seq - 1
            ),
            Self::Rewritten { digest, covers } => write!(
                f,
                "the chain up to record {covers} is not the one digest {digest} signed: records were edited and every hash after them recomputed"
            ),
            Self::Deleted { from, to } if from == to => write!(f, "record {from} was deleted"),
            Self::Deleted { from, to } => write!(f, "records {from} to {to} were deleted"),
            Self::Reordered { seq, line } => write!(f, "record {seq} is out of order (line {line})"),
            Self::BadSignature { seq, why } => write!(f, "digest {seq}: {why}"),
            Self::Truncated { last, expected } => {
                write!(f, "the log was cut short: it ends at record {last}, records up to {expected} were written")
            }
        }
    }
}

/// What [`verify()`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Of which events.
    pub events: u64,
    /// Of which digests.
    pub digests: u64,
    /// The newest record number read.
    pub last: u64,
    /// The newest record a valid digest vouches for.
    pub signed: u64,
    /// Everything wrong, in the order found; empty: the log is intact.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One parsed line.
struct Line {
    number: usize,
    seq: u64,
    claimed: String,
}

/// Checks the log read from `log` against the writer's `head` (its newest record, kept apart
/// from the log) and the node's public key `trusted` (hex; without it, digests are checked
/// against the key they name).
pub fn verify(log: impl BufRead, head: Option<&Head>, trusted: Option<&str>) -> Report {
    let mut report = Report::default();
    let mut lines = Vec::new();
    let mut digests = Vec::new();
    for (index, text) in log.split(b'\n').enumerate() {
        let number = index + 1;
        let Ok(text) = text else {
            report.problems.push(Problem::Unreadable { line: number });
            break;
        };
        if text.is_empty() {
            continue;
        }
        let parsed = std::str::from_utf8(&text).ok().and_then(|t| t.split_once(' '));
        let Some((claimed, record)) =
            parsed.and_then(|(h, json)| serde_json::from_str::<super::Record>(json).ok().map(|r| (h, (r, json))))
        else {
            report.problems.push(Problem::Unreadable { line: number });
            continue;
        };
        let (record, json) = record;
        report.records += 1;
        if hash(json.as_bytes()) != claimed {
            report.problems.push(Problem::Edited { seq: record.seq, line: number });
        }
        match &record.body {
            Body::Event(_) => report.events += 1,
            Body::Digest(digest) => {
                report.digests += 1;
                digests.push((record.seq, digest.clone()));
            }
        }
        lines.push((Line { number, seq: record.seq, claimed: claimed.to_string() }, record.prev));
    }
    order(&lines, &mut report);
    let hashes: HashMap<u64, &str> = lines.iter().map(|(l, _)| (l.seq, l.claimed.as_str())).collect();
    for (seq, digest) in digests {
        let message = super::Digest::message(&digest.node, digest.covers, &digest.head);
        if trusted.is_some_and(|key| key != digest.key) {
            report.problems.push(Problem::BadSignature { seq, why: "signed by another key than the node's".into() });
        } else if !signed_by(&digest.key, &message, &digest.signature) {
            report.problems.push(Problem::BadSignature { seq, why: "the signature is not valid".into() });
        } else if hashes.get(&digest.covers).is_some_and(|h| *h != digest.head) {
            report.problems.push(Problem::Rewritten { digest: seq, covers: digest.covers });
        } else {
            report.signed = report.signed.max(digest.covers);
        }
    }
    if let Some(head) = head {
        if head.seq > report.last {
            report.problems.push(Problem::Truncated { last: report.last, expected: head.seq });
        } else if hashes.get(&head.seq).is_some_and(|h| *h != head.hash) {
            report.problems.push(Problem::Rewritten { digest: 0, covers: head.seq });
        }
    }
    report
}

/// Checks that records come in order, numbered without gaps, each carrying its predecessor's
/// hash.
fn order(lines: &[(Line, String)], report: &mut Report) {
    let present: BTreeSet<u64> = lines.iter().map(|(l, _)| l.seq).collect();
    let (mut expected, mut prev) = (1u64, GENESIS.to_string());
    for (line, prev_of_line) in lines {
        if line.seq < expected || line.seq == u64::MAX {
            report.problems.push(Problem::Reordered { seq: line.seq, line: line.number });
            continue;
        }
        if line.seq == expected {
            if *prev_of_line != prev {
                report.problems.push(Problem::Broken { seq: line.seq, line: line.number });
            }
        } else {
            // Missing numbers found later in the log are reordered records (named where
            // they are); the others were deleted.
            let mut from = expected;
            for &later in present.range(expected..line.seq) {
                if later > from {
                    report.problems.push(Problem::Deleted { from, to: later - 1 });
                }
                from = later + 1;
            }
            if line.seq > from {
                report.problems.push(Problem::Deleted { from, to: line.seq - 1 });
            }
        }
        expected = line.seq + 1;
        prev.clone_from(&line.claimed);
        report.last = report.last.max(line.seq);
    }
}
