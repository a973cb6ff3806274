//! Many apps behind one listener (`nimbus server`): a request is routed to an app by host and
//! path, then to one of the app's revisions — by tag (the `x-nimbus-tag` header or a `TAG.HOST`
//! host) or by the app's weighted traffic split — and finally through that revision's own
//! routes. The table is swapped atomically as a whole; a request keeps the revision it was routed
//! to until it finishes, so traffic changes never cut one short.
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use nimbus_manifest::RoutePattern;

use crate::body::GatewayBody;
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::respond::error;
use crate::router::{Route, RouteMatch, Router};
use crate::{Gateway, HEALTH_PATH};

/// The header that sends a request to a tagged revision.
pub const TAG_HEADER: &str = "x-nimbus-tag";
/// The response header naming the revision that served the request.
pub const REVISION_HEADER: &str = "x-nimbus-revision";

/// One deployed revision, loaded and routable.
#[derive(Debug)]
pub struct LiveRevision {
    /// The revision id.
    pub id: Arc<str>,
    /// Its routes and functions.
    pub gateway: Gateway,
    pub(crate) header: HeaderValue,
}

impl LiveRevision {
    /// A loaded revision.
    pub fn new(id: &str, gateway: Gateway) -> Self {
        let header = HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self { id: id.into(), gateway, header }
    }
}

/// One app as the ingress sees it: where it is reachable and how its traffic is split.
#[derive(Debug)]
pub struct LiveApp {
    /// The app name.
    pub name: String,
    /// Hosts the app is bound to; empty means every host.
    pub hosts: Vec<String>,
    /// Route patterns the app claims (the union over its revisions).
    pub routes: Vec<RoutePattern>,
    /// Revisions with their percent of traffic (summing to 100, or empty when nothing is served).
    pub split: Vec<(Arc<LiveRevision>, u8)>,
    /// Tagged revisions, reachable whatever their percent.
    pub tags: HashMap<String, Arc<LiveRevision>>,
    /// Set when the app may not be on this node (its placement, e.g. `region=eu-*`): its
    /// requests are answered `421 Misdirected Request` naming where it is served.
    pub elsewhere: Option<String>,
}

impl LiveApp {
    /// Its loaded revisions: those with a share of traffic, then the tagged ones (a revision
    /// may be both).
    fn loaded(&self) -> impl Iterator<Item = &Arc<LiveRevision>> {
        self.split.iter().map(|(r, _)| r).chain(self.tags.values())
    }

    /// The revision for a request without a tag: weighted random over the split.
    fn pick(&self) -> Option<&Arc<LiveRevision>> {
        let mut roll = fastrand::u8(0..100);
        for (revision, percent) in &self.split {
            if roll < *percent {
                return Some(revision);
            }
            roll -= percent;
        }
        None
    }
}

/// Host and path → app, for every app of a server.
#[derive(Debug, Default)]
pub struct AppTable {
    by_host: HashMap<String, Router<Arc<LiveApp>>>,
    any_host: Router<Arc<LiveApp>>,
    by_name: HashMap<String, Arc<LiveApp>>,
}

impl AppTable {
    /// Builds the table. Apps must not claim the same route on the same host: the control plane
    /// refuses such deploys (and any deploy that would take another app's requests), and here
    /// the first app wins.
    pub fn new(apps: impl IntoIterator<Item = LiveApp>) -> Self {
        let mut table = Self::default();
        for app in apps {
            let app = Arc::new(app);
            table.by_name.entry(app.name.clone()).or_insert_with(|| app.clone());
            let route = |pattern: &RoutePattern| Route {
                route: pattern.to_string().into(),
                pattern: pattern.clone(),
                methods: Vec::new(),
                target: app.clone(),
            };
            if app.hosts.is_empty() {
                app.routes.iter().for_each(|p| table.any_host.insert(route(p)));
            }
            for host in &app.hosts {
                let router = table.by_host.entry(host.clone()).or_default();
                app.routes.iter().for_each(|p| router.insert(route(p)));
            }
        }
        table
    }

    /// The app for a request and the tag it asks for (from `TAG.HOST` or the tag header).
    /// Precedence: a host some app is bound to goes to that app's routes, then to the apps on
    /// every host; `TAG.HOST`, where HOST is bound and `TAG.HOST` is not, is routed like HOST with
    /// the tag (unless the request names a tag itself); any other host goes to the apps on every
    /// host. Within each, an exact route beats a wildcard and the longest wildcard wins.
    pub fn route<'a>(
        &self,
        host: &'a str,
        path: &str,
        tag_header: Option<&'a str>,
    ) -> Option<(&Arc<LiveApp>, Option<&'a str>)> {
        if tag_header.is_none()
            && !self.by_host.contains_key(host)
            && let Some((tag, rest)) = host.split_once('.')
            && self.by_host.contains_key(rest)
        {
            return self.find(rest, path).map(|app| (app, Some(tag)));
        }
        self.find(host, path).map(|app| (app, tag_header))
    }

    /// The name of the app a request to `host` and `path` goes to (`tagged`: whether it carries
    /// the tag header), as [`AppTable::route`] decides.
    pub fn owner(&self, host: &str, path: &str, tagged: bool) -> Option<&str> {
        self.route(host, path, tagged.then_some("t")).map(|(app, _)| app.name.as_str())
    }

    fn find(&self, host: &str, path: &str) -> Option<&Arc<LiveApp>> {
        self.by_host.get(host).and_then(|r| app_for(r, path)).or_else(|| app_for(&self.any_host, path))
    }
}

fn app_for<'a>(router: &'a Router<Arc<LiveApp>>, path: &str) -> Option<&'a Arc<LiveApp>> {
    match router.find(&http::Method::GET, path) {
        RouteMatch::Found(route) => Some(&route.target),
        _ => None,
    }
}

/// The ingress of a server: an [`AppTable`] that the control plane replaces as a whole.
#[derive(Debug, Default)]
pub struct Ingress {
    table: ArcSwap<AppTable>,
}

impl Ingress {
    /// An ingress routing nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the routing table; requests already routed finish on their revision.
    pub fn publish(&self, table: AppTable) {
        self.table.store(Arc::new(table));
    }

    /// The placement of `app` when it may not be on this node (see [`LiveApp::elsewhere`]).
    pub fn elsewhere(&self, app: &str) -> Option<String> {
        self.table.load().by_name.get(app).and_then(|a| a.elsewhere.clone())
    }

    /// The revision of `app` a call without a tag goes to (by its traffic split), if any.
    pub fn revision_of(&self, app: &str) -> Option<Arc<LiveRevision>> {
        self.table.load().by_name.get(app).and_then(|a| a.pick()).cloned()
    }

    /// Revision `id` of `app`, if this node has it loaded (receiving traffic or tagged).
    pub fn live(&self, app: &str, id: &str) -> Option<Arc<LiveRevision>> {
        let table = self.table.load();
        let app = table.by_name.get(app)?;
        app.loaded().find(|r| &*r.id == id).cloned()
    }

    /// A revision of `app` serving its actors (the one its traffic split picks, if it has
    /// actors; else any loaded revision that has).
    pub fn actors_of(&self, app: &str) -> Option<Arc<LiveRevision>> {
        let table = self.table.load();
        let app = table.by_name.get(app)?;
        let picked = app.pick().filter(|r| r.gateway.has_actors());
        picked.or_else(|| app.loaded().find(|r| r.gateway.has_actors())).cloned()
    }

    /// The workflows of `app` on this node (any loaded revision's: they share the app's engine).
    pub fn workflows_of(&self, app: &str) -> Option<Arc<dyn crate::WorkflowCalls>> {
        let table = self.table.load();
        let app = table.by_name.get(app)?;
        app.loaded().find_map(|r| r.gateway.workflows())
    }

    /// Every loaded revision, with its app's name, once each.
    pub fn revisions(&self) -> Vec<(String, Arc<LiveRevision>)> {
        let table = self.table.load();
        let mut out = Vec::new();
        for app in table.by_name.values() {
            let mut seen = std::collections::HashSet::new();
            out.extend(app.loaded().filter(|r| seen.insert(r.id.clone())).map(|r| (app.name.clone(), r.clone())));
        }
        out
    }

    /// Serves one request. Never fails: every problem becomes a response.
    pub async fn handle(
        &self,
        mut req: http::Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> http::Response<GatewayBody> {
        let id = RequestId::from_headers(req.headers());
        req.headers_mut().insert(REQUEST_ID_HEADER, id.header_value());
        let path = req.uri().path();
        if path == HEALTH_PATH {
            return crate::handler::health(&id);
        }
        if let Some(why) = crate::hygiene::refusal(&req) {
            return error(StatusCode::BAD_REQUEST, &id, why);
        }
        let host = request_host(&req);
        let host = host.as_ref();
        let tag_header = req.headers().get(TAG_HEADER).and_then(|v| v.to_str().ok());
        let revision = {
            let table = self.table.load();
            let Some((app, tag)) = table.route(host, path, tag_header) else {
                return error(StatusCode::NOT_FOUND, &id, "no app serves this host and path");
            };
            if let Some(requires) = &app.elsewhere {
                let message = format!(
                    "app `{}` is served only by nodes labelled {requires}; send the request to one of them",
                    app.name
                );
                return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
            }
            let chosen = match tag {
                Some(tag) => app.tags.get(tag).ok_or_else(|| format!("app `{}` has no tag `{tag}`", app.name)),
                None => app.pick().ok_or_else(|| format!("app `{}` has no revision receiving traffic", app.name)),
            };
            match chosen {
                Ok(revision) => revision.clone(),
                Err(message) => return error(StatusCode::NOT_FOUND, &id, &message),
            }
        };
        let mut resp = revision.gateway.serve(req, client).await;
        resp.headers_mut().insert(REVISION_HEADER, revision.header.clone());
        resp
    }
}

/// The request's host, lowercased, without port or trailing dot (borrowed when already clean).
fn request_host<B>(req: &http::Request<B>) -> Cow<'_, str> {
    let raw = req.uri().host().or_else(|| req.headers().get(header::HOST).and_then(|v| v.to_str().ok())).unwrap_or("");
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _port)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
