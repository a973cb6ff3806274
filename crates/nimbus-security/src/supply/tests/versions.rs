//! Version ordering: PEP 440 and lenient semver.
use std::cmp::Ordering;

use super::super::pep440::Pep440;
use super::super::version::Scheme;
use crate::supply::Ecosystem;

fn pep(version: &str) -> Pep440 {
    version.parse().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pep440_orders_releases_numerically() {
    assert!(pep("2.3.1") < pep("2.31.0"));
    assert!(pep("2.9") < pep("2.10"));
    assert_eq!(pep("1.0"), pep("1.0.0"));
    assert_eq!(pep("v1.0"), pep("1.0"));
    assert!(pep("1!0.1") > pep("2024.1"), "an epoch outranks any release");
}

#[test]
fn pep440_orders_pre_post_and_dev_releases() {
    let ordered = [
        "1.0.dev0",
        "1.0a1.dev1",
        "1.0a1",
        "1.0b2",
        "1.0rc1",
        "1.0",
        "1.0+local.7",
        "1.0.post1.dev0",
        "1.0.post1",
        "1.1.dev1",
    ];
    for pair in ordered.windows(2) {
        assert_eq!(pep(pair[0]).cmp(&pep(pair[1])), Ordering::Less, "{} < {}", pair[0], pair[1]);
    }
}

#[test]
fn pep440_accepts_the_spellings_it_normalizes() {
    assert_eq!(pep("1.0-RC-1"), pep("1.0rc1"));
    assert_eq!(pep("1.0alpha"), pep("1.0a0"));
    assert_eq!(pep("1.0c1"), pep("1.0rc1"));
    assert_eq!(pep("1.0-1"), pep("1.0.post1"));
    assert_eq!(pep("1.0_rev2"), pep("1.0.post2"));
    assert_eq!(pep("1.0.DEV"), pep("1.0.dev0"));
    for invalid in ["", "latest", "1.0.x", "1..0", "1.0+", "1.0+a..b", "1.0 beta"] {
        assert!(invalid.parse::<Pep440>().is_err(), "{invalid:?}");
    }
}

#[test]
fn semver_is_lenient_about_prefixes_and_missing_parts() {
    let semver = |v| Scheme::of(Ecosystem::Go).parse(v).unwrap_or_else(|| panic!("{v}"));
    assert!(semver("v1.2.3") == semver("1.2.3"));
    assert!(semver("1.2") == semver("1.2.0"));
    assert!(semver("v20.10.7+incompatible") == semver("20.10.7"), "build metadata does not count");
    // A Go pseudo-version is a prerelease of the next patch.
    assert!(semver("v0.0.0-20220722155237-a158d28d115b") < semver("0.0.0-20220906165146-f3363e06e74c"));
    assert!(semver("v0.0.0-20220906165146-f3363e06e74c") < semver("0.0.0"));
    assert!(Scheme::of(Ecosystem::CratesIo).parse("1.0.0.0").is_none());
    assert!(Scheme::of(Ecosystem::Npm).parse("latest").is_none());
}

#[test]
fn versions_of_two_schemes_do_not_compare() {
    let a = Scheme::Semver.parse("1.0.0").expect("semver");
    let b = Scheme::Pep440.parse("1.0.0").expect("pep 440");
    assert_eq!(a.partial_cmp(&b), None);
}
