//! Maps a request's method and path to what handles it. Exact routes win over wildcards; among
//! wildcards the longest prefix wins. Lookup costs at most one hash probe per path segment (only
//! at lengths some wildcard has), whatever the number of routes, so a server with many apps routes
//! as fast as one with a single app.
use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use nimbus_manifest::RoutePattern;

use crate::Target;

/// One `[[trigger.http]]` entry, resolved to its target `T` (a component of one revision, or an
/// app of a server).
#[derive(Debug, Clone)]
pub struct Route<T = Arc<Target>> {
    /// The route as written in the manifest (shared: it names every request's span).
    pub route: Arc<str>,
    /// The route, parsed.
    pub pattern: RoutePattern,
    /// Accepted methods (all when empty).
    pub methods: Vec<http::Method>,
    /// What handles it.
    pub target: T,
}

/// Outcome of routing one request.
#[derive(Debug)]
pub enum RouteMatch<'a, T = Arc<Target>> {
    /// A route accepts the request.
    Found(&'a Route<T>),
    /// Routes match the path but none accepts the method; the methods they do accept.
    MethodNotAllowed(Vec<http::Method>),
    /// Nothing matches the path.
    NotFound,
}

/// The routing table.
#[derive(Debug)]
pub struct Router<T = Arc<Target>> {
    exact: Table<T>,
    /// Wildcard routes by prefix (without the trailing `/...`), except the catch-all.
    prefixes: Table<T>,
    /// The lengths of those prefixes, longest first: a path is probed only where one could match.
    prefix_lengths: Vec<usize>,
    /// The `/...` routes: the fallback of every path, found without hashing or comparing
    /// anything (an app with just `/...` routes each request with no probe at all).
    catch_all: Vec<Route<T>>,
}

/// Routes by path. The keys come from manifests and a request only probes, so a fast hash that
/// is not built to resist collision flooding is safe here (no request can add keys).
type Table<T> = HashMap<String, Vec<Route<T>>, RandomState>;

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self { exact: Table::default(), prefixes: Table::default(), prefix_lengths: Vec::new(), catch_all: Vec::new() }
    }
}

impl<T> Router<T> {
    /// Builds the table from resolved routes.
    pub fn new(routes: impl IntoIterator<Item = Route<T>>) -> Self {
        let mut router = Self::default();
        for route in routes {
            router.insert(route);
        }
        router
    }

    /// Adds one route; routes with the same pattern are told apart by their methods.
    pub fn insert(&mut self, route: Route<T>) {
        let routes = match &route.pattern {
            RoutePattern::Exact(p) => self.exact.entry(p.clone()).or_default(),
            RoutePattern::Prefix(p) if p.is_empty() => &mut self.catch_all,
            RoutePattern::Prefix(p) => {
                if let Err(at) = self.prefix_lengths.binary_search_by(|len| p.len().cmp(len)) {
                    self.prefix_lengths.insert(at, p.len());
                }
                self.prefixes.entry(p.clone()).or_default()
            }
        };
        routes.push(route);
    }

    /// Every route, for listing.
    pub fn routes(&self) -> impl Iterator<Item = &Route<T>> {
        self.exact.values().chain(self.prefixes.values()).flatten().chain(&self.catch_all)
    }

    /// Whether nothing is routed.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.catch_all.is_empty()
    }

    /// Finds the route for a request.
    pub fn find(&self, method: &http::Method, path: &str) -> RouteMatch<'_, T> {
        // The most specific matching route decides; broader wildcards do not take over.
        let Some(routes) = self.exact.get(path).or_else(|| self.longest_prefix(path)) else {
            return RouteMatch::NotFound;
        };
        if let Some(route) = routes.iter().find(|r| r.methods.is_empty() || r.methods.contains(method)) {
            return RouteMatch::Found(route);
        }
        RouteMatch::MethodNotAllowed(routes.iter().flat_map(|r| r.methods.iter().cloned()).collect())
    }

    /// The wildcard routes of the longest prefix of `path` that has any: `/a/b/c` tries `/a/b/c`,
    /// `/a/b`, `/a` (each only if some wildcard prefix is that long), then the catch-all.
    fn longest_prefix(&self, path: &str) -> Option<&Vec<Route<T>>> {
        self.prefix_lengths
            .iter()
            .filter(|&&len| len == path.len() || (len < path.len() && path.as_bytes()[len] == b'/'))
            .find_map(|&len| self.prefixes.get(&path[..len]))
            .or((!self.catch_all.is_empty()).then_some(&self.catch_all))
    }
}
