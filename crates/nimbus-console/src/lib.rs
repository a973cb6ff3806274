//! The Nimbus web console: its static assets (HTML, CSS and ES modules under `assets/`, embedded
//! in the binary) and the [`routes`] serving them at `/console/`. `nimbus server` merges the
//! routes into its control API, `nimbus up` into its local API, so the page and the API it calls
//! share an origin.
//!
//! What this crate does **not** own: data and authorization. The console has no endpoint of its
//! own; every datum it shows comes from the documented control API (`openapi/nimbus-v1.json`),
//! called from the browser with the API token the user logs in with (kept in `sessionStorage`,
//! sent as `Authorization: Bearer`, never as a cookie). What the API refuses that token, the
//! console cannot do either; it only hides or disables controls the token's role lacks.
//!
//! The assets are written without a build step: plain HTML, one CSS file and native ES modules
//! (one per page), plots drawn as hand-written SVG. Nothing is fetched from the internet, there is
//! no bundler or `node_modules` to audit, and what is served is what is in the repository. Every
//! response carries a strict Content-Security-Policy (only this origin's scripts, styles and
//! connections; no inline code; no framing), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. Pages build DOM nodes and set `textContent`; they never put
//! data (event payloads, log lines, KV values) into `innerHTML`.
//!
//! ```
//! # async fn example() -> std::io::Result<()> {
//! // Serve the console next to an API router of your own:
//! let app = axum::Router::new().merge(nimbus_console::routes());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # drop((app, listener));
//! // axum::serve(listener, app).await?;  → http://ADDR/console/
//! # Ok(())
//! # }
//! ```
use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

/// Where the console is served.
pub const PREFIX: &str = "/console/";

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One embedded file: its name under [`PREFIX`], content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// File name, e.g. `main.js`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its contents.
    pub bytes: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! assets {
    ($(($name:literal, $type:expr)),* $(,)?) => {
        &[$(Asset { name: $name, content_type: $type, bytes: include_bytes!(concat!("../assets/", $name)) }),*]
    };
}

/// Every file of the console.
pub const ASSETS: &[Asset] = assets![
    ("index.html", HTML),
    ("console.css", CSS),
    ("favicon.svg", SVG),
    ("dom.js", JS),
    ("api.js", JS),
    ("plot.js", JS),
    ("main.js", JS),
    ("apps.js", JS),
    ("metrics.js", JS),
    ("traces.js", JS),
    ("logs.js", JS),
    ("alerts.js", JS),
    ("cost.js", JS),
    ("topics.js", JS),
    ("kv.js", JS),
    ("workflows.js", JS),
];

/// The embedded file `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The console's routes: `/console` (redirects to `/console/`), `/console/` (`index.html`) and
/// `/console/FILE`; an unknown file is a 404. Stateless, so it merges into any router.
pub fn routes() -> Router {
    Router::new()
        .route("/console", get(|| async { with_headers(redirect()) }))
        .route("/console/", get(|| async { serve("index.html") }))
        .route("/console/{file}", get(|Path(file): Path<String>| async move { serve(&file) }))
}

fn redirect() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, PREFIX)]).into_response()
}

fn serve(name: &str) -> Response {
    let resp = match asset(name) {
        Some(a) => {
            ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "no-cache")], a.bytes).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("the console has no file `{name}`; it starts at {PREFIX}\n"),
        )
            .into_response(),
    };
    with_headers(resp)
}

/// Adds the security headers (see the crate doc) to a console response.
fn with_headers(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A window this page opens (or that opens it) gets no handle on it.
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower_service::Service;

    fn text(name: &str) -> &'static str {
        std::str::from_utf8(asset(name).unwrap().bytes).unwrap()
    }

    /// The values of `attr="..."` in `html`.
    fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!("{attr}=\"");
        html.match_indices(&needle).filter_map(|(at, _)| html[at + needle.len()..].split('"').next()).collect()
    }

    /// The relative modules a script imports (`from './x.js'`, `import './x.js'`).
    fn imports(js: &str) -> Vec<&str> {
        js.split(['\'', '"']).filter(|s| s.starts_with("./") && s.ends_with(".js")).map(|s| &s[2..]).collect()
    }

    #[test]
    fn every_file_index_html_references_is_embedded() {
        let html = text("index.html");
        let mut referenced: Vec<&str> = attribute_values(html, "src");
        referenced.extend(attribute_values(html, "href").into_iter().filter(|h| !h.starts_with('#')));
        assert!(referenced.contains(&"main.js") && referenced.contains(&"console.css"), "{referenced:?}");
        // And every module those modules import, transitively.
        let mut queue: Vec<&str> = referenced.clone();
        while let Some(name) = queue.pop() {
            assert!(asset(name).is_some(), "index.html needs `{name}`, which is not in ASSETS");
            if name.ends_with(".js") {
                for dep in imports(text(name)) {
                    if !referenced.contains(&dep) {
                        referenced.push(dep);
                        queue.push(dep);
                    }
                }
            }
        }
        // No embedded script is unreachable (a file added to ASSETS but never loaded).
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            assert!(referenced.contains(&a.name), "{} is embedded but nothing imports it", a.name);
        }
    }

    #[test]
    fn pages_never_put_data_into_inner_html() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let js = text(a.name);
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                assert!(!js.contains(sink), "{} uses {sink}; build DOM nodes and set textContent", a.name);
            }
        }
    }

    async fn get(path: &str) -> (StatusCode, http::HeaderMap, String) {
        let req = http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let resp = routes().call(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn serves_files_with_security_headers_and_404s_the_rest() {
        let (status, headers, body) = get("/console/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<title>"), "{body}");
        assert_eq!(headers[header::CONTENT_TYPE], HTML);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");

        let (status, headers, _) = get("/console/main.js").await;
        assert_eq!((status, &headers[header::CONTENT_TYPE]), (StatusCode::OK, &HeaderValue::from_static(JS)));

        let (status, headers, _) = get("/console").await;
        assert_eq!(
            (status, &headers[header::LOCATION]),
            (StatusCode::PERMANENT_REDIRECT, &HeaderValue::from_static(PREFIX))
        );

        for missing in ["/console/nope.js", "/console/..%2FCargo.toml", "/console/index.html.bak"] {
            let (status, headers, _) = get(missing).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        }
    }
}
