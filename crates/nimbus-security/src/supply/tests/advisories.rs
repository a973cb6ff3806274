//! The advisory database: import, open and matching per the OSV specification.
use std::fs;
use std::path::Path;

use serde_json::json;

use crate::supply::{Advisories, Ecosystem, Finding, Package, Severity};

/// An OSV record affecting one package.
fn advisory(id: &str, ecosystem: &str, name: &str, affected: serde_json::Value) -> serde_json::Value {
    let mut entry = json!({ "package": { "ecosystem": ecosystem, "name": name } });
    if let (Some(entry), Some(fields)) = (entry.as_object_mut(), affected.as_object()) {
        entry.extend(fields.clone());
    }
    json!({
        "schema_version": "1.6.0", "id": id, "modified": "2024-01-01T00:00:00Z",
        "summary": format!("{id} in {name}"), "affected": [entry]
    })
}

fn write(dir: &Path, file: &str, record: &serde_json::Value) {
    let path = dir.join(file);
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(path, serde_json::to_vec_pretty(record).expect("json")).expect("write");
}

fn with_extra(mut record: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(record), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
        record.extend(extra.clone());
    }
    record
}

/// A database holding a realistic set of advisories, one per rule under test.
fn database() -> (tempfile::TempDir, Advisories) {
    let feed = tempfile::tempdir().expect("tempdir");
    let feed = feed.path();
    // crates.io, SEMVER, severity from a CVSS 3.1 vector (9.8).
    let rustsec = advisory(
        "RUSTSEC-2099-0001",
        "crates.io",
        "tinyparse",
        json!({ "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0.0.0-0" }, { "fixed": "0.4.2" }] }] }),
    );
    let cvss = json!({ "severity": [{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" }] });
    write(feed, "crates/RUSTSEC-2099-0001.json", &with_extra(rustsec, cvss));
    // npm, two ranges; GitHub's database severity wins over the CVSS vector (6.1).
    let ghsa = advisory(
        "GHSA-jf85-cpcp-j695",
        "npm",
        "lodash",
        json!({ "ranges": [{ "type": "ECOSYSTEM", "events": [
            { "introduced": "0" }, { "fixed": "4.17.12" }, { "introduced": "4.17.15" }, { "fixed": "4.17.21" }] }] }),
    );
    let extra = json!({
        "aliases": ["CVE-2019-10744"],
        "database_specific": { "severity": "CRITICAL", "github_reviewed": true },
        "severity": [{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N" }]
    });
    write(feed, "npm/GHSA-jf85-cpcp-j695.json", &with_extra(ghsa, extra));
    // PyPI, ECOSYSTEM with PEP 440 ordering; "MODERATE" is medium.
    let pysec = advisory(
        "PYSEC-2099-1",
        "PyPI",
        "Requests",
        json!({ "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "2.3.0" }, { "fixed": "2.31.0" }] }] }),
    );
    write(
        feed,
        "pypi/PYSEC-2099-1.json",
        &with_extra(pysec, json!({ "database_specific": { "severity": "MODERATE" } })),
    );
    // Go, last_affected, and no severity at all.
    let go = advisory(
        "GO-2099-0001",
        "Go",
        "github.com/gin-gonic/gin",
        json!({ "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "1.5.0" }, { "last_affected": "1.9.0" }] }] }),
    );
    write(feed, "go/GO-2099-0001.json", &go);
    // Go, a fix that is a pseudo-version.
    let net = advisory(
        "GO-2099-0002",
        "Go",
        "golang.org/x/net",
        json!({ "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": "0.0.0-20220906165146-f3363e06e74c" }] }] }),
    );
    write(feed, "go/GO-2099-0002.json", &with_extra(net, json!({ "database_specific": { "severity": "HIGH" } })));
    // Explicit versions and no range.
    let django = advisory("PYSEC-2099-2", "PyPI", "django", json!({ "versions": ["4.2.1", "4.2.2"] }));
    write(feed, "pypi/PYSEC-2099-2.json", &with_extra(django, json!({ "database_specific": { "severity": "low" } })));
    // Withdrawn: never matches.
    let withdrawn = advisory(
        "RUSTSEC-2099-0002",
        "crates.io",
        "tinyparse",
        json!({ "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }] }] }),
    );
    write(
        feed,
        "crates/RUSTSEC-2099-0002.json",
        &with_extra(withdrawn, json!({ "withdrawn": "2099-02-01T00:00:00Z" })),
    );
    // A GIT range cannot be ordered without the repository: it does not match by itself.
    let git = advisory(
        "OSV-2099-1",
        "crates.io",
        "gitonly",
        json!({ "ranges": [{ "type": "GIT", "repo": "https://example.com/g", "events": [{ "introduced": "0" }, { "fixed": "4f1c2b7" }] }] }),
    );
    write(feed, "crates/OSV-2099-1.json", &git);

    let db = tempfile::tempdir().expect("tempdir");
    let report = Advisories::import(feed, db.path()).expect("imported");
    assert_eq!(report.imported, 8, "{report:?}");
    assert_eq!(report.skipped, []);
    let advisories = Advisories::open(db.path()).expect("opened");
    assert_eq!(advisories.len(), 7, "the withdrawn advisory is not loaded");
    (db, advisories)
}

fn package(ecosystem: Ecosystem, name: &str, version: &str) -> Package {
    Package { ecosystem, name: name.into(), version: version.into(), source: "test".into() }
}

fn hits(advisories: &Advisories, ecosystem: Ecosystem, name: &str, version: &str) -> Vec<Finding> {
    advisories.scan(&[package(ecosystem, name, version)])
}

fn fixed(findings: &[Finding]) -> Vec<Option<&str>> {
    findings.iter().map(|f| f.fixed.as_deref()).collect()
}

#[test]
fn introduced_and_fixed_bound_what_is_affected() {
    let (_db, db) = database();
    let found = hits(&db, Ecosystem::CratesIo, "tinyparse", "0.4.1");
    assert_eq!(found.len(), 1, "the withdrawn one is not reported: {found:?}");
    assert_eq!((found[0].id.as_str(), found[0].severity), ("RUSTSEC-2099-0001", Severity::Critical));
    assert_eq!(fixed(&found), [Some("0.4.2")]);
    assert_eq!(
        found[0].to_string(),
        "RUSTSEC-2099-0001 (critical): tinyparse 0.4.1 from test: RUSTSEC-2099-0001 in tinyparse; upgrade to 0.4.2"
    );
    assert_eq!(hits(&db, Ecosystem::CratesIo, "tinyparse", "0.4.2"), []);
    assert_eq!(hits(&db, Ecosystem::CratesIo, "tinyparse", "1.0.0"), []);
    assert_eq!(hits(&db, Ecosystem::Npm, "tinyparse", "0.4.1"), [], "another ecosystem's package");
}

#[test]
fn several_introduced_events_each_open_a_range() {
    let (_db, db) = database();
    assert_eq!(fixed(&hits(&db, Ecosystem::Npm, "lodash", "4.17.11")), [Some("4.17.12")]);
    assert_eq!(hits(&db, Ecosystem::Npm, "lodash", "4.17.13"), []);
    let found = hits(&db, Ecosystem::Npm, "lodash", "4.17.20");
    assert_eq!(fixed(&found), [Some("4.17.21")]);
    assert_eq!(found[0].severity, Severity::Critical, "database_specific wins over the 6.1 vector");
    assert_eq!(found[0].aliases, ["CVE-2019-10744"]);
    assert_eq!(hits(&db, Ecosystem::Npm, "lodash", "4.17.21"), []);
}

#[test]
fn pypi_versions_compare_per_pep_440_and_names_normalize() {
    let (_db, db) = database();
    let found = hits(&db, Ecosystem::PyPI, "requests", "2.3.1");
    assert_eq!((fixed(&found), found[0].severity), (vec![Some("2.31.0")], Severity::Medium));
    assert_eq!(hits(&db, Ecosystem::PyPI, "requests", "2.30.0").len(), 1, "2.30.0 < 2.31.0");
    assert_eq!(hits(&db, Ecosystem::PyPI, "requests", "2.31.0"), [], "2.31.0 is not 2.3.1");
    assert_eq!(hits(&db, Ecosystem::PyPI, "requests", "2.31.0.post1"), []);
    assert_eq!(hits(&db, Ecosystem::PyPI, "requests", "2.31.0rc1").len(), 1, "a prerelease of the fix is before it");
    assert_eq!(hits(&db, Ecosystem::PyPI, "requests", "2.2.9"), []);
}

#[test]
fn last_affected_includes_that_version_only() {
    let (_db, db) = database();
    let found = hits(&db, Ecosystem::Go, "github.com/gin-gonic/gin", "v1.9.0");
    assert_eq!((fixed(&found), found[0].severity), (vec![None], Severity::Unknown));
    assert_eq!(hits(&db, Ecosystem::Go, "github.com/gin-gonic/gin", "v1.9.1"), []);
    assert_eq!(hits(&db, Ecosystem::Go, "github.com/gin-gonic/gin", "v1.4.9"), []);
}

#[test]
fn go_versions_and_pseudo_versions_match() {
    let (_db, db) = database();
    let found = hits(&db, Ecosystem::Go, "golang.org/x/net", "v0.0.0-20220722155237-a158d28d115b");
    assert_eq!(fixed(&found), [Some("0.0.0-20220906165146-f3363e06e74c")]);
    assert_eq!(hits(&db, Ecosystem::Go, "golang.org/x/net", "v0.1.0"), []);
}

#[test]
fn explicit_versions_match_exactly() {
    let (_db, db) = database();
    let found = hits(&db, Ecosystem::PyPI, "Django", "4.2.1");
    assert_eq!((fixed(&found), found[0].severity), (vec![None], Severity::Low));
    assert_eq!(hits(&db, Ecosystem::PyPI, "django", "4.2.2.0").len(), 1, "4.2.2.0 is 4.2.2 in PEP 440");
    assert_eq!(hits(&db, Ecosystem::PyPI, "django", "4.2.3"), []);
}

#[test]
fn git_ranges_do_not_match_by_themselves() {
    let (_db, db) = database();
    assert_eq!(hits(&db, Ecosystem::CratesIo, "gitonly", "1.0.0"), []);
}

#[test]
fn a_scan_is_ordered_worst_first_and_reports_each_advisory_once() {
    let (_db, db) = database();
    let mut packages = vec![
        package(Ecosystem::PyPI, "django", "4.2.1"),
        package(Ecosystem::CratesIo, "tinyparse", "0.1.0"),
        package(Ecosystem::PyPI, "requests", "2.3.1"),
        package(Ecosystem::CratesIo, "serde", "1.0.100"),
    ];
    packages.push(Package { source: "Cargo.lock".into(), ..package(Ecosystem::CratesIo, "tinyparse", "0.1.0") });
    let findings = db.scan(&packages);
    let ids: Vec<&str> = findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["RUSTSEC-2099-0001", "PYSEC-2099-1", "PYSEC-2099-2"]);
    assert_eq!(findings.iter().map(|f| f.severity).max(), Some(Severity::Critical));
}

#[test]
fn import_skips_what_is_not_an_advisory_with_the_reason() {
    let feed = tempfile::tempdir().expect("tempdir");
    let good = advisory("GHSA-aaaa-bbbb-cccc", "npm", "left-pad", json!({ "versions": ["1.3.0"] }));
    write(feed.path(), "GHSA-aaaa-bbbb-cccc.json", &good);
    let huge = with_extra(good.clone(), json!({ "id": "GHSA-huge", "details": "x".repeat(1 << 20) }));
    write(feed.path(), "huge.json", &huge);
    fs::write(feed.path().join("broken.json"), "{\"id\": \"GHSA-x\", \"affected\": [").expect("write");
    write(feed.path(), "escape.json", &with_extra(good.clone(), json!({ "id": "../../etc/passwd" })));
    let debian = advisory("DSA-5000-1", "Debian:12", "openssl", json!({ "versions": ["3.0.11-1"] }));
    write(feed.path(), "deb/DSA-5000-1.json", &debian);
    fs::write(feed.path().join("README.md"), "# not an advisory").expect("write");

    let db = tempfile::tempdir().expect("tempdir");
    let report = Advisories::import(feed.path(), &db.path().join("osv")).expect("imported");
    assert_eq!(report.imported, 1);
    let skipped: Vec<(String, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.path.file_name().expect("a name").to_string_lossy().into_owned(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    let reason = |file: &str| skipped.iter().find(|(f, _)| f == file).map(|(_, r)| *r).unwrap_or_default();
    assert!(reason("huge.json").starts_with("larger than 1048576 bytes"), "{skipped:?}");
    assert!(reason("broken.json").starts_with("not an OSV record: EOF while parsing"), "{skipped:?}");
    assert!(reason("escape.json").contains("cannot be a file name"), "{skipped:?}");
    assert_eq!(reason("DSA-5000-1.json"), "it affects no crates.io, npm, PyPI or Go package");
    let files: Vec<_> = fs::read_dir(db.path().join("osv")).expect("the database").collect();
    assert_eq!(files.len(), 1, "nothing but the advisory is written");
    assert_eq!(Advisories::open(&db.path().join("osv")).expect("opened").len(), 1);
}

#[test]
fn a_later_withdrawal_replaces_the_advisory() {
    let feed = tempfile::tempdir().expect("tempdir");
    let db = tempfile::tempdir().expect("tempdir");
    let record = advisory("GHSA-aaaa-bbbb-cccc", "npm", "left-pad", json!({ "versions": ["1.3.0"] }));
    write(feed.path(), "a.json", &record);
    Advisories::import(feed.path(), db.path()).expect("imported");
    assert_eq!(hits(&Advisories::open(db.path()).expect("opened"), Ecosystem::Npm, "left-pad", "1.3.0").len(), 1);

    write(feed.path(), "a.json", &with_extra(record, json!({ "withdrawn": "2099-01-01T00:00:00Z" })));
    Advisories::import(feed.path(), db.path()).expect("imported");
    assert_eq!(hits(&Advisories::open(db.path()).expect("opened"), Ecosystem::Npm, "left-pad", "1.3.0"), []);
}

#[test]
fn a_missing_database_is_empty_and_a_corrupt_one_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(Advisories::open(&dir.path().join("none")).expect("empty").is_empty());
    fs::write(dir.path().join("GHSA-x.json"), "{").expect("write");
    let err = Advisories::open(dir.path()).expect_err("corrupt");
    assert!(err.to_string().contains("is not a valid OSV advisory"), "{err}");
}

#[test]
fn severities_parse_and_order() {
    assert_eq!("Moderate".parse::<Severity>(), Ok(Severity::Medium));
    assert_eq!("CRITICAL".parse::<Severity>(), Ok(Severity::Critical));
    assert!("severe".parse::<Severity>().is_err());
    assert!(Severity::Unknown < Severity::Low && Severity::Low < Severity::Medium);
    assert!(Severity::High < Severity::Critical);
    let cvss = Severity::from_cvss;
    assert_eq!(cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), Some(Severity::Critical));
    assert_eq!(cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"), Some(Severity::Medium));
    assert_eq!(cvss("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"), Some(Severity::High));
    assert_eq!(cvss("CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"), Some(Severity::Low));
    assert_eq!(cvss("not a vector"), None);
    assert_eq!(serde_json::to_string(&Severity::High).expect("json"), "\"high\"");
}

#[test]
#[cfg(unix)]
fn import_does_not_follow_symbolic_links() {
    use std::os::unix::fs::symlink;

    let outside = tempfile::tempdir().expect("tempdir");
    write(outside.path(), "GHSA-aaaa-bbbb-cccc.json", &advisory("GHSA-aaaa-bbbb-cccc", "npm", "x", json!({})));
    let feed = tempfile::tempdir().expect("tempdir");
    symlink(outside.path().join("GHSA-aaaa-bbbb-cccc.json"), feed.path().join("linked.json")).expect("symlink");
    symlink(outside.path(), feed.path().join("linked-dir")).expect("symlink");
    let db = tempfile::tempdir().expect("tempdir");
    let report = Advisories::import(feed.path(), db.path()).expect("imported");
    assert_eq!(report.imported, 0);
    assert_eq!(report.skipped.len(), 2);
    assert!(report.skipped.iter().all(|s| s.reason == "a symbolic link, not followed"), "{report:?}");
}
