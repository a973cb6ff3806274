//! Checks of what a deploy or traffic change names: the bundle against its manifest, tags and
//! hosts (DNS labels).
use crate::bundle::Bundle;
use crate::error::ControlError;
use nimbus_manifest::LoadedManifest;

pub(super) fn check_artifacts(loaded: &LoadedManifest, bundle: &Bundle) -> Result<(), ControlError> {
    let m = &loaded.manifest;
    let mut problems: Vec<String> = m
        .component
        .iter()
        .filter_map(|(c, component)| match component.source() {
            None if !bundle.trees.contains_key(c) => {
                Some(format!("service `{c}` has no files (services/{c}.tar) in the bundle"))
            }
            None => None,
            Some(_) if !bundle.artifacts.contains_key(c) => {
                Some(format!("component `{c}` has no artifact (components/{c}.wasm) in the bundle"))
            }
            Some(_) => None,
        })
        .collect();
    let is = |c: &str, service: bool| m.component.get(c).is_some_and(|x| x.command.is_some() == service);
    problems.extend(
        bundle
            .artifacts
            .keys()
            .filter(|c| !is(c, false))
            .map(|c| format!("components/{c}.wasm belongs to no function of the manifest")),
    );
    problems.extend(
        bundle
            .trees
            .keys()
            .filter(|c| !is(c, true))
            .map(|c| format!("services/{c}.tar belongs to no service of the manifest")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Invalid {
            message: "the bundle does not match its manifest; nothing was deployed".into(),
            details: problems,
        })
    }
}

pub(super) fn check_tag(tag: &str) -> Result<(), ControlError> {
    if is_dns_label(tag) {
        Ok(())
    } else {
        Err(ControlError::bad_request(
            format!("invalid tag `{tag}`"),
            "a tag is 1-63 lower-case letters, digits and `-` (it is also used as a host label), e.g. `canary`",
        ))
    }
}

pub(super) fn check_host(host: &str) -> Result<(), ControlError> {
    let host = host.to_ascii_lowercase();
    if host.len() <= 253 && host.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(ControlError::bad_request(
            format!("invalid host `{host}`"),
            "give a DNS name without scheme or port, e.g. `shop.example.com`",
        ))
    }
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
