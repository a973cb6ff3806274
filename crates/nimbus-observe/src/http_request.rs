//! The HTTP request of a server span, kept as it arrived and written out as OpenTelemetry HTTP
//! semantic-convention attributes only when the trace is kept or exported. Most traces are
//! neither (the store keeps failed, slow and a budget of the rest), and formatting the path, the
//! client address and the span name on every request showed in the gateway's profiles.
use std::sync::Arc;

use opentelemetry::KeyValue;

/// What a server span knows of its request. Every field is a cheap clone of what the gateway
/// already holds; the route, its target and the status are added as they become known
/// ([`Span::set_http_route`](crate::Span::set_http_route),
/// [`Span::set_http_status`](crate::Span::set_http_status)).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `http.request.method`.
    method: http::Method,
    /// The request target; its path is `url.path`.
    uri: http::Uri,
    /// `network.protocol.version`.
    version: http::Version,
    /// `nimbus.request_id`.
    request_id: http::HeaderValue,
    /// `client.address`.
    client: Option<std::net::IpAddr>,
    /// `http.route`, once routing found one; the span is then named `{method} {route}`.
    pub(crate) route: Option<Arc<str>>,
    /// `nimbus.app` and `nimbus.component` of the route's target.
    pub(crate) target: Option<(Arc<str>, Arc<str>)>,
    /// `http.response.status_code`.
    pub(crate) status: Option<u16>,
}

impl HttpRequest {
    /// The request `req` with id `request_id`, from `client`.
    pub fn new<B>(req: &http::Request<B>, request_id: http::HeaderValue, client: Option<std::net::IpAddr>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            request_id,
            client,
            route: None,
            target: None,
            status: None,
        }
    }

    /// The span's name once it has a route.
    pub(crate) fn span_name(&self) -> Option<String> {
        self.route.as_ref().map(|route| format!("{} {route}", self.method))
    }

    /// Appends the request's attributes.
    pub(crate) fn write_attributes(self, out: &mut Vec<KeyValue>) {
        out.push(KeyValue::new("http.request.method", self.method.as_str().to_string()));
        out.push(KeyValue::new("url.path", self.uri.path().to_string()));
        out.push(KeyValue::new("network.protocol.version", protocol(self.version)));
        out.push(KeyValue::new("nimbus.request_id", String::from_utf8_lossy(self.request_id.as_bytes()).into_owned()));
        if let Some(client) = self.client {
            out.push(KeyValue::new("client.address", client.to_string()));
        }
        if let Some(route) = self.route {
            out.push(KeyValue::new("http.route", route));
        }
        if let Some((app, component)) = self.target {
            out.push(KeyValue::new("nimbus.app", app));
            out.push(KeyValue::new("nimbus.component", component));
        }
        if let Some(status) = self.status {
            out.push(KeyValue::new("http.response.status_code", i64::from(status)));
        }
    }
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
