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
    /// Wildcard routes by prefix (without the trailing `/...`; empty for `/...`).
    prefixes: Table<T>,
    /// The lengths of those prefixes, longest first: a path is probed only where one could match
    /// (an app with just `/...` routes every path with one probe).
    prefix_lengths: Vec<usize>,
}

/// Routes by path. The keys come from manifests and a request only probes, so a fast hash that
/// is not built to resist collision flooding is safe here (no request can add keys).
type Table<T> = HashMap<String, Vec<Route<T>>, RandomState>;

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self { exact: Table::default(), prefixes: Table::default(), prefix_lengths: Vec::new() }
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
        let table = match &route.pattern {
            RoutePattern::Exact(p) => self.exact.entry(p.clone()),
            RoutePattern::Prefix(p) => {
                if let Err(at) = self.prefix_lengths.binary_search_by(|len| p.len().cmp(len)) {
                    self.prefix_lengths.insert(at, p.len());
                }
                self.prefixes.entry(p.clone())
            }
        };
        table.or_default().push(route);
    }

    /// Every route, for listing.
    pub fn routes(&self) -> impl Iterator<Item = &Route<T>> {
        self.exact.values().chain(self.prefixes.values()).flatten()
    }

    /// Whether nothing is routed.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
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
    /// `/a/b`, `/a`, then the catch-all (each only if some wildcard prefix is that long).
    fn longest_prefix(&self, path: &str) -> Option<&Vec<Route<T>>> {
        self.prefix_lengths
            .iter()
            .filter(|&&len| len == 0 || len == path.len() || (len < path.len() && path.as_bytes()[len] == b'/'))
            .find_map(|&len| self.prefixes.get(&path[..len]))
    }
}
