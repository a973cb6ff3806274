//! Sharing between apps, checked at deploy: an app may name another app's bucket, topic or
//! component (`shop/carts`) only while every serving revision of that app exports it to the app
//! (`[export]`), and an app's new revision may not stop exporting what a serving revision of
//! another app uses. Deny by default: without an export, apps share nothing. (A call to another
//! app's component is checked again when it is made, against the revision that serves it.)
use std::collections::BTreeMap;

use nimbus_manifest::Manifest;

use super::AppState;
use crate::error::ControlError;

impl AppState {
    /// The manifests of the revisions that serve the app: with traffic or a tag.
    fn serving(&self) -> impl Iterator<Item = &Manifest> {
        let traffic = &self.record.traffic;
        self.revisions.iter().filter(|(id, _)| traffic.serves(id)).map(|(_, l)| &*l.manifest)
    }
}

/// What `kind` is called in messages, and its `[export]` table.
fn words(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "kv" => ("bucket", "kv"),
        "topic" => ("topic", "topics"),
        _ => ("component", "components"),
    }
}

/// Refuses a deploy of `m` that imports what is not exported to it, or stops exporting what a
/// serving revision of another app imports.
pub(super) fn check(apps: &BTreeMap<String, AppState>, m: &Manifest) -> Result<(), ControlError> {
    let me = &m.app.name;
    for (kind, owner, name) in m.imports() {
        let (what, table) = words(kind);
        let exported = apps.get(&owner).is_some_and(|a| {
            let mut serving = a.serving().peekable();
            serving.peek().is_some() && serving.all(|o| o.export.to(kind, &name, me))
        });
        if !exported {
            return Err(ControlError::bad_request(
                format!(
                    "`{owner}/{name}`: app `{owner}` does not export {what} `{name}` to `{me}`; nothing was deployed"
                ),
                format!(
                    "deploy `{owner}` with `[export] {table} = {{ {name} = [\"{me}\"] }}` first, or remove `{owner}/{name}`"
                ),
            ));
        }
    }
    for (other, state) in apps.iter().filter(|(n, _)| *n != me) {
        for used in state.serving() {
            for (kind, owner, name) in used.imports() {
                if &owner == me && !m.export.to(kind, &name, other) {
                    let (what, table) = words(kind);
                    return Err(ControlError::conflict(
                        format!(
                            "app `{other}` uses {what} `{name}` of `{me}`, which this revision does not export to it; nothing was deployed"
                        ),
                        format!(
                            "keep `{name} = [\"{other}\"]` in `[export].{table}`, or first deploy `{other}` without `{me}/{name}`"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
