//! Maps a request's method and path to the component that handles it. Exact routes win over
//! wildcards; among wildcards the longest prefix wins.
use std::collections::HashMap;
use std::sync::Arc;

use nimbus_manifest::RoutePattern;

use crate::Target;

/// One `[[trigger.http]]` entry, resolved.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route as written in the manifest.
    pub route: String,
    /// The route, parsed.
    pub pattern: RoutePattern,
    /// Accepted methods (all when empty).
    pub methods: Vec<http::Method>,
    /// What handles it.
    pub target: Arc<Target>,
}

/// Outcome of routing one request.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// A route accepts the request.
    Found(&'a Route),
    /// Routes match the path but none accepts the method; the methods they do accept.
    MethodNotAllowed(Vec<http::Method>),
    /// Nothing matches the path.
    NotFound,
}

/// The routing table.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<Route>>,
    /// Wildcard routes, longest prefix first.
    prefixes: Vec<(String, Vec<Route>)>,
}

impl Router {
    /// Builds the table from resolved routes.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut router = Self::default();
        let mut prefixes: HashMap<String, Vec<Route>> = HashMap::new();
        for route in routes {
            match &route.pattern {
                RoutePattern::Exact(p) => router.exact.entry(p.clone()).or_default().push(route),
                RoutePattern::Prefix(p) => prefixes.entry(p.clone()).or_default().push(route),
            }
        }
        router.prefixes = prefixes.into_iter().collect();
        router.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        router
    }

    /// Every route, for listing at start-up.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.exact.values().chain(self.prefixes.iter().map(|(_, r)| r)).flatten()
    }

    /// Finds the route for a request.
    pub fn find(&self, method: &http::Method, path: &str) -> RouteMatch<'_> {
        // The most specific matching route decides; broader wildcards do not take over.
        let routes = self.exact.get(path).or_else(|| {
            self.prefixes.iter().find(|(_, routes)| routes[0].pattern.matches(path)).map(|(_, routes)| routes)
        });
        let Some(routes) = routes else { return RouteMatch::NotFound };
        if let Some(route) = routes.iter().find(|r| r.methods.is_empty() || r.methods.contains(method)) {
            return RouteMatch::Found(route);
        }
        RouteMatch::MethodNotAllowed(routes.iter().flat_map(|r| r.methods.iter().cloned()).collect())
    }
}
