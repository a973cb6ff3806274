//! Which app owns which requests, and the check that keeps a deploy from taking another app's.
//!
//! The gateway routes a request by host, then path ([`nimbus_gateway::AppTable::route`]). Here
//! a deploy's claims (its hosts and the routes of all its revisions) are checked against every
//! other app's before anything is stored:
//! - a host belongs to one app: binding a host another app is bound to is refused;
//! - among apps on every host, the same route in two apps is refused;
//! - any deploy that would route to this app a request another app serves now is refused: a
//!   route inside another app's wildcard, a host whose requests apps on every host serve, a
//!   `TAG.HOST` of another app's host, a redeploy that adds such routes.
//!
//! An admin token (not limited to apps) may pass `take_over`: captures are allowed and the hosts
//! the deploy names move from their owners to this app. Two apps on every host with the same route
//! cannot be resolved that way (neither would win); one of them must bind a host or go.
//!
//! The check is exact, not a heuristic: requests fall into finitely many classes that route
//! alike in any table built from these claims (each bound host, `TAG.HOST` for each, any other
//! host; each exact path, each wildcard prefix and a segment below it that no route names, any
//! other path; with and without a tag header), and one request of each class is routed through
//! both tables, the one in effect and the one the deploy would publish.
use std::collections::BTreeSet;

use nimbus_gateway::{AppTable, LiveApp};
use nimbus_manifest::RoutePattern;

use crate::auth::Principal;
use crate::error::ControlError;
use crate::model::Role;

/// What an app claims: its hosts (none: every host) and the routes of all its revisions.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub name: String,
    pub hosts: Vec<String>,
    pub routes: Vec<RoutePattern>,
}

/// Hosts a take-over moved: the app that lost them and the hosts it keeps.
pub(crate) type Moved = Vec<(String, Vec<String>)>;

/// Whether `principal` may take requests over from other apps: an admin over every app (or
/// anyone in `--dev` mode).
pub(crate) fn may_take_over(principal: &Principal) -> Result<(), ControlError> {
    match &principal.token {
        Some(t) if t.role != Role::Admin || !t.apps.is_empty() => Err(ControlError::Forbidden(format!(
            "token `{}` may not take hosts or routes over from other apps; that needs an admin token not limited to apps",
            t.id
        ))),
        _ => Ok(()),
    }
}

/// Whether `principal` may move `app` from tenant `from` to tenant `to` (empty: none). The
/// tenant decides whose budget the app's cost counts against, so an app's own deployer may not
/// choose it: that needs an admin token not limited to apps.
pub(crate) fn may_change_tenant(principal: &Principal, app: &str, from: &str, to: &str) -> Result<(), ControlError> {
    match &principal.token {
        Some(t) if t.role != Role::Admin || !t.apps.is_empty() => Err(ControlError::Forbidden(format!(
            "token `{}` may not change the tenant of app `{app}` ({} -> {}): its cost counts against the tenant's budget, so that needs an admin token not limited to apps; deploy it without changing `[app] labels.tenant`",
            t.id,
            if from.is_empty() { "none" } else { from },
            if to.is_empty() { "none" } else { to },
        ))),
        _ => Ok(()),
    }
}

/// Checks `proposed` against the claims of the apps in effect (`current`, which may hold the
/// deploying app's own earlier claim); returns the hosts a take-over moves.
pub(crate) fn admit(current: &[Claim], proposed: &Claim, take_over: bool) -> Result<Moved, ControlError> {
    let others = || current.iter().filter(|c| c.name != proposed.name);
    let mut moved = Moved::new();
    for other in others() {
        let taken: Vec<&String> = proposed.hosts.iter().filter(|h| other.hosts.contains(h)).collect();
        if taken.is_empty() {
            continue;
        }
        if !take_over {
            return Err(ControlError::conflict(
                format!("host `{}` belongs to app `{}`; nothing was deployed", taken[0], other.name),
                "a host belongs to the first app bound to it: use another host, or ask an admin to reassign it with `nimbus deploy --take-over`",
            ));
        }
        let kept: Vec<String> = other.hosts.iter().filter(|h| !taken.contains(h)).cloned().collect();
        if kept.is_empty() {
            // An app without hosts serves every host: it must not become one by losing its own.
            return Err(ControlError::conflict(
                format!(
                    "taking host `{}` would leave app `{}` with no host; nothing was deployed",
                    taken[0], other.name
                ),
                format!("bind app `{}` to another host first, or delete it", other.name),
            ));
        }
        moved.push((other.name.clone(), kept));
    }
    if proposed.hosts.is_empty() {
        for other in others().filter(|o| o.hosts.is_empty()) {
            if let Some(route) = other.routes.iter().find(|r| proposed.routes.contains(r)) {
                return Err(ControlError::conflict(
                    format!(
                        "route `{route}` on every host is already served by app `{}`; nothing was deployed",
                        other.name
                    ),
                    format!(
                        "bind this app to its own host with `nimbus deploy --host NAME`, or change the route (app `{}` keeps it until it is deleted)",
                        other.name
                    ),
                ));
            }
        }
    }
    let after: Vec<Claim> = current
        .iter()
        .filter(|c| c.name != proposed.name)
        .map(|c| match moved.iter().find(|(name, _)| *name == c.name) {
            Some((_, hosts)) => Claim { hosts: hosts.clone(), ..c.clone() },
            None => c.clone(),
        })
        .chain([proposed.clone()])
        .collect();
    if !take_over && let Some((victim, request)) = first_capture(current, &after, proposed) {
        return Err(ControlError::conflict(
            format!(
                "this deploy would take requests app `{victim}` serves ({request}) to app `{}`; nothing was deployed",
                proposed.name
            ),
            "requests an app serves stay with it: use routes or a host no other app serves, or ask an admin to reassign them with `nimbus deploy --take-over`",
        ));
    }
    Ok(moved)
}

/// A request another app serves under `before` that `proposed` would serve under `after`: that
/// app and the request (with `*` for any label or segment).
fn first_capture(before: &[Claim], after: &[Claim], proposed: &Claim) -> Option<(String, String)> {
    let (old, new) = (table(before), table(after));
    let all = || before.iter().chain(after);
    let hosts: BTreeSet<&str> = all().flat_map(|c| c.hosts.iter().map(String::as_str)).collect();
    let label = (0..)
        .map(|i| format!("t{i}"))
        .find(|l| !hosts.iter().any(|h| h.starts_with(&format!("{l}."))))
        .expect("a free label");
    let segments: BTreeSet<&str> = all().flat_map(|c| &c.routes).flat_map(|r| pattern_path(r).split('/')).collect();
    let fresh = (0..).map(|i| format!("x{i}")).find(|s| !segments.contains(s.as_str())).expect("a free segment");
    // The hosts the proposed app can receive: its own (and TAG.HOST of each), or every host.
    let probe_hosts: Vec<(String, Option<&str>)> = if proposed.hosts.is_empty() {
        hosts
            .iter()
            .flat_map(|h| [(h.to_string(), Some(*h)), (format!("{label}.{h}"), Some(*h))])
            .chain([(String::new(), None)])
            .collect()
    } else {
        proposed
            .hosts
            .iter()
            .flat_map(|h| [(h.clone(), Some(h.as_str())), (format!("{label}.{h}"), Some(h.as_str()))])
            .collect()
    };
    for (host, base) in &probe_hosts {
        // Only the routes of apps on this host (or its base) and of apps on every host matter.
        let relevant = all().filter(|c| c.hosts.is_empty() || base.is_some_and(|b| c.hosts.iter().any(|h| h == b)));
        let patterns: BTreeSet<&RoutePattern> = relevant.flat_map(|c| &c.routes).collect();
        let paths = patterns
            .iter()
            .flat_map(|p| match p {
                RoutePattern::Exact(e) => vec![e.clone()],
                RoutePattern::Prefix(p) if p.is_empty() => vec!["/".to_string()],
                RoutePattern::Prefix(p) => vec![p.clone(), format!("{p}/{fresh}")],
            })
            .chain([format!("/{fresh}")])
            .filter(|path| proposed.routes.iter().any(|r| r.matches(path)));
        for path in paths {
            for tagged in [false, true] {
                let before = old.owner(host, &path, tagged);
                if before.is_some_and(|b| b != proposed.name)
                    && new.owner(host, &path, tagged) == Some(proposed.name.as_str())
                {
                    let shown_host = match host.strip_prefix(&format!("{label}.")) {
                        _ if host.is_empty() => "any host".to_string(),
                        Some(base) => format!("*.{base}"),
                        None => host.clone(),
                    };
                    let mut request = format!("`{shown_host}` `{}`", path.replace(&fresh, "*"));
                    if tagged {
                        request.push_str(" with a tag header");
                    }
                    return Some((before.unwrap_or_default().to_string(), request));
                }
            }
        }
    }
    None
}

fn pattern_path(p: &RoutePattern) -> &str {
    match p {
        RoutePattern::Exact(p) | RoutePattern::Prefix(p) => p,
    }
}

/// The routing table of these claims (no revisions: only which app a request reaches matters).
fn table(claims: &[Claim]) -> AppTable {
    AppTable::new(claims.iter().map(|c| LiveApp {
        elsewhere: None,
        name: c.name.clone(),
        hosts: c.hosts.clone(),
        routes: c.routes.clone(),
        split: Vec::new(),
        tags: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::{Claim, admit};
    use nimbus_manifest::RoutePattern;

    fn claim(name: &str, hosts: &[&str], routes: &[&str]) -> Claim {
        Claim {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            routes: routes.iter().map(|r| RoutePattern::parse(r).unwrap()).collect(),
        }
    }

    fn refused(current: &[Claim], proposed: Claim) -> String {
        admit(current, &proposed, false).unwrap_err().to_string()
    }

    #[test]
    fn each_capture_shape_is_refused_and_free_requests_are_not() {
        let b = claim("b", &[], &["/b/..."]);
        let all = [b.clone()];
        assert!(refused(&all, claim("a", &[], &["/b/secret"])).contains("app `b` serves (`any host` `/b/secret`)"));
        assert!(refused(&all, claim("a", &[], &["/b/x/..."])).contains("app `b`"));
        assert!(refused(&all, claim("a", &["127.0.0.1", "localhost"], &["/..."])).contains("`/b`"));
        assert!(refused(&all, claim("a", &[], &["/b/..."])).contains("already served by app `b`"));
        // Free requests: a catch-all beside /b/..., another path, a host for other paths.
        admit(&all, &claim("a", &[], &["/..."]), false).unwrap();
        admit(&all, &claim("a", &[], &["/bb/..."]), false).unwrap();
        admit(&all, &claim("a", &["a.test"], &["/a/..."]), false).unwrap();
        // Hosts and their TAG.HOST names belong to their app.
        let shop = [claim("shop", &["shop.test"], &["/..."])];
        assert!(refused(&shop, claim("a", &["shop.test"], &["/x"])).contains("host `shop.test` belongs to app `shop`"));
        assert!(
            refused(&shop, claim("a", &["canary.shop.test"], &["/..."]))
                .contains("app `shop` serves (`canary.shop.test`")
        );
        // A take-over moves the host, but never leaves an app without hosts (it would serve all).
        let shop = [claim("shop", &["shop.test", "www.shop.test"], &["/..."])];
        let moved = admit(&shop, &claim("a", &["shop.test"], &["/..."]), true).unwrap();
        assert_eq!(moved, vec![("shop".to_string(), vec!["www.shop.test".to_string()])]);
        let all_of_it = admit(&shop, &claim("a", &["shop.test", "www.shop.test"], &["/..."]), true);
        assert!(all_of_it.unwrap_err().to_string().contains("would leave app `shop` with no host"));
        // A redeploy keeps what its app already serves.
        let both = [b, claim("a", &[], &["/a/..."])];
        admit(&both, &claim("a", &[], &["/a/...", "/a/more"]), false).unwrap();
        assert!(refused(&both, claim("a", &[], &["/a/...", "/b"])).contains("app `b`"));
    }
}
