use super::*;
use crate::signing::KeyError;

fn event(i: u64) -> Body {
    Body::Event(Event {
        at_ms: 1_700_000_000_000 + i,
        node: "n1".into(),
        principal: format!("token{i}"),
        action: "deploy".into(),
        resource: "app:shop".into(),
        outcome: if i.is_multiple_of(3) { Outcome::Denied } else { Outcome::Allowed },
        reason: (i.is_multiple_of(3)).then(|| "no policy permits it".into()),
        ..Event::default()
    })
}

/// Ten events with a digest after the fifth and one at the end: lines, head, key.
fn log() -> (Vec<String>, Head, SigningKey) {
    let key = SigningKey::generate().unwrap();
    let mut chain = Chain::default();
    let mut lines = Vec::new();
    for i in 1..=10 {
        lines.push(chain.append(event(i)).1);
        if i == 5 || i == 10 {
            let digest = chain.digest(&key, "n1", i);
            lines.push(chain.append(Body::Digest(digest)).1);
        }
    }
    (lines, chain.head(), key)
}

fn check(lines: &[String], head: &Head, key: &SigningKey) -> Report {
    verify(lines.concat().as_bytes(), Some(head), Some(&key.public_hex()))
}

/// Line `i` (0-based) rewritten by `edit` of its JSON, its hash recomputed or not.
fn edited(lines: &[String], i: usize, rehash: bool, edit: impl Fn(&mut Record)) -> Vec<String> {
    let mut lines = lines.to_vec();
    let (claimed, mut record) = parse_line(&lines[i]).map(|(h, r)| (h.to_string(), r)).unwrap();
    edit(&mut record);
    let json = serde_json::to_string(&record).unwrap();
    let hash = if rehash { hash(json.as_bytes()) } else { claimed };
    lines[i] = format!("{hash} {json}\n");
    lines
}

fn principal_edit(r: &mut Record) {
    if let Body::Event(e) = &mut r.body {
        e.principal = "someone-else".into();
    }
}

#[test]
fn an_intact_log_verifies_and_counts_its_records() {
    let (lines, head, key) = log();
    let report = check(&lines, &head, &key);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.events, report.digests, report.last, report.signed), (12, 10, 2, 12, 11));
}

#[test]
fn an_edited_record_is_named() {
    let (lines, head, key) = log();
    let report = check(&edited(&lines, 3, false, principal_edit), &head, &key);
    assert_eq!(report.problems, vec![Problem::Edited { seq: 4, line: 4 }]);
}

#[test]
fn an_edited_and_rehashed_record_breaks_the_next_link() {
    let (lines, head, key) = log();
    let report = check(&edited(&lines, 3, true, principal_edit), &head, &key);
    assert_eq!(report.problems, vec![Problem::Broken { seq: 5, line: 5 }]);
}

#[test]
fn a_chain_rewritten_from_an_edit_onwards_contradicts_the_signed_digests() {
    let (lines, _, key) = log();
    // Edit record 4 and recompute every hash and link after it, as an attacker with the file
    // but not the key would.
    let mut chain = Chain::default();
    let mut rewritten = Vec::new();
    for line in &lines {
        let (_, mut record) = parse_line(line).unwrap();
        if record.seq == 4 {
            principal_edit(&mut record);
        }
        rewritten.push(chain.append(record.body).1);
    }
    let report = check(&rewritten, &chain.head(), &key);
    assert_eq!(
        report.problems,
        vec![Problem::Rewritten { digest: 6, covers: 5 }, Problem::Rewritten { digest: 12, covers: 11 }]
    );
}

#[test]
fn a_deleted_record_is_named() {
    let (mut lines, head, key) = log();
    lines.remove(7); // record 8
    assert_eq!(check(&lines, &head, &key).problems, vec![Problem::Deleted { from: 8, to: 8 }]);
    lines.drain(1..3); // records 2 and 3
    let problems = check(&lines, &head, &key).problems;
    assert_eq!(problems, vec![Problem::Deleted { from: 2, to: 3 }, Problem::Deleted { from: 8, to: 8 }]);
}

#[test]
fn reordered_records_are_named() {
    let (mut lines, head, key) = log();
    lines.swap(2, 3);
    assert_eq!(check(&lines, &head, &key).problems, vec![Problem::Reordered { seq: 3, line: 4 }]);
}

#[test]
fn a_truncated_log_is_named_against_the_head() {
    let (mut lines, head, key) = log();
    lines.truncate(9);
    assert_eq!(check(&lines, &head, &key).problems, vec![Problem::Truncated { last: 9, expected: 12 }]);
    // Without the head the cut is not visible from the log alone.
    assert!(verify(lines.concat().as_bytes(), None, Some(&key.public_hex())).ok());
}

#[test]
fn digests_of_another_key_or_with_a_bad_signature_are_named() {
    let (lines, head, key) = log();
    let other = SigningKey::generate().unwrap();
    let report = verify(lines.concat().as_bytes(), Some(&head), Some(&other.public_hex()));
    assert_eq!(report.problems.len(), 2);
    assert!(matches!(&report.problems[0], Problem::BadSignature { seq: 6, why } if why.contains("another key")));
    let forged = edited(&lines, 5, true, |r| {
        if let Body::Digest(d) = &mut r.body {
            d.signature = hex::encode([7u8; 64]);
        }
    });
    let report = check(&forged, &head, &key).problems;
    assert!(report.iter().any(|p| matches!(p, Problem::BadSignature { seq: 6, why } if why.contains("not valid"))));
}

#[test]
fn unreadable_lines_and_hostile_numbers_are_reported_without_panicking() {
    let (mut lines, head, key) = log();
    lines.insert(4, "not a record\n".into());
    lines.push(edited(&lines, 0, true, |r| r.seq = u64::MAX)[0].clone());
    let problems = check(&lines, &head, &key).problems;
    assert_eq!(problems[0], Problem::Unreadable { line: 5 });
    assert!(problems.iter().any(|p| matches!(p, Problem::Reordered { seq: u64::MAX, .. })), "{problems:?}");
}

#[test]
fn a_chain_continues_after_its_head() {
    let (lines, head, key) = log();
    let mut chain = Chain::after(head);
    let mut more = lines.clone();
    more.push(chain.append(event(11)).1);
    assert!(check(&more, &chain.head(), &key).ok());
}

#[test]
fn a_key_is_created_once_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let key = SigningKey::open_or_create(&path).unwrap();
    assert_eq!(SigningKey::open_or_create(&path).unwrap().public_hex(), key.public_hex());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(SigningKey::open(&path), Err(KeyError::Invalid { .. })));
}
