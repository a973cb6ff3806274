//! Artifact signatures: made by one key, accepted only from trusted keys, for the digest they
//! name, unaltered.
use crate::signing::SigningKey;
use crate::supply::{ArtifactSignature, SignatureError, TrustedSigners};

const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn trusting(name: &str, key: &SigningKey) -> TrustedSigners {
    TrustedSigners::parse(&format!("# release keys\n\n{}\n", TrustedSigners::line(name, key)), "signers").unwrap()
}

#[test]
fn a_trusted_keys_signature_of_the_digest_verifies_and_names_the_key() {
    let key = SigningKey::generate().unwrap();
    let signature = ArtifactSignature::sign(&key, DIGEST);
    let read = ArtifactSignature::parse(signature.to_json().as_bytes()).unwrap();
    assert_eq!(read, signature);
    assert_eq!(trusting("ci", &key).verify(&read, DIGEST).unwrap(), "ci");
}

#[test]
fn a_signature_of_another_digest_an_altered_one_and_an_untrusted_key_are_refused() {
    let key = SigningKey::generate().unwrap();
    let signers = trusting("ci", &key);
    let signature = ArtifactSignature::sign(&key, DIGEST);

    let other = DIGEST.replace("9f86", "0000");
    let err = signers.verify(&signature, &other).unwrap_err();
    assert!(matches!(err, SignatureError::OtherDigest { .. }), "{err}");

    // The digest edited to match another artifact: the signature no longer verifies.
    let forged = ArtifactSignature { digest: other.clone(), ..signature.clone() };
    let err = signers.verify(&forged, &other).unwrap_err();
    assert!(matches!(err, SignatureError::Invalid { .. }), "{err}");

    // A stranger's valid signature.
    let stranger = SigningKey::generate().unwrap();
    let err = signers.verify(&ArtifactSignature::sign(&stranger, DIGEST), DIGEST).unwrap_err();
    assert!(matches!(&err, SignatureError::Untrusted { key } if *key == stranger.public_hex()), "{err}");
    assert!(err.to_string().contains("trusted signers file"), "{err}");

    // A stranger's signature carrying the trusted key's name: it does not verify.
    let impostor = ArtifactSignature { key: key.public_hex(), ..ArtifactSignature::sign(&stranger, DIGEST) };
    assert!(matches!(signers.verify(&impostor, DIGEST), Err(SignatureError::Invalid { .. })));
}

#[test]
fn malformed_signature_files_are_refused_with_the_reason() {
    let key = SigningKey::generate().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&ArtifactSignature::sign(&key, DIGEST).to_json()).unwrap();
    json["v"] = 2.into();
    let err = ArtifactSignature::parse(json.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("format version 2"), "{err}");
    for bad in [&b"not json"[..], br#"{"v": 1}"#, &vec![b' '; 5000]] {
        assert!(matches!(ArtifactSignature::parse(bad), Err(SignatureError::Malformed { .. })));
    }
}

#[test]
fn trusted_signers_files_name_the_bad_line() {
    let key = SigningKey::generate().unwrap();
    let line = TrustedSigners::line("ci", &key);
    let cases = [
        (format!("{line}\nsolo\n"), "signers:2: expected `NAME HEX-PUBLIC-KEY`"),
        ("ci abcd\n".to_string(), "signers:1: `abcd` is not an Ed25519 public key"),
        (
            format!("{line}\n{}\n", line.replacen("ci", "again", 1)),
            "signers:2: the key of `again` is already listed as `ci`",
        ),
    ];
    for (text, expected) in cases {
        let err = TrustedSigners::parse(&text, "signers").unwrap_err();
        assert!(err.to_string().starts_with(expected), "{err}");
    }
    assert_eq!(trusting("ci", &key).len(), 1);
}
