//! Actor state written before the state layout had a format version
//! (`fixtures/actor-state-unversioned.bin`, written by `encode_state` of commit ec3baf1 for
//! `count` = "42", `empty` = "" and `owner` = "ana") decodes as it was; a newer version is refused.
use nimbus_actors::{decode_state, encode_state};

#[test]
fn a_state_written_before_states_were_versioned_decodes_as_it_was() {
    let old = include_bytes!("fixtures/actor-state-unversioned.bin");
    let state = decode_state(old).unwrap();
    let entries: Vec<(&str, &[u8])> = state.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    assert_eq!(entries, [("count", b"42".as_slice()), ("empty", b"".as_slice()), ("owner", b"ana".as_slice())]);
    // Written again, it is versioned and still the same state.
    let new = encode_state(&state);
    assert_ne!(new.as_slice(), old.as_slice());
    assert_eq!(decode_state(&new).unwrap(), state);
}

#[test]
fn a_state_of_a_newer_version_is_refused() {
    let mut newer = encode_state(&Default::default());
    newer[2] += 1;
    let e = decode_state(&newer).unwrap_err().to_string();
    assert!(e.contains("format version 2"), "{e}");
}
