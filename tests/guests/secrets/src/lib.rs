//! A `wasi:http` component reading secrets through `wasi:config/store`: `GET .../secret/NAME`
//! answers the value (404 `absent` when unset, 500 with the error when refused), `GET .../all`
//! the names `get-all` returns, one per line.
use http_util::respond;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../../wit/deps/config",
    world: "wasi:config/imports@0.2.0-draft",
    generate_all,
});

use wasi::config::store;

struct Secrets;

fn error(e: store::Error) -> (u16, Vec<u8>) {
    let text = match e {
        store::Error::Upstream(m) => format!("upstream: {m}"),
        store::Error::Io(m) => format!("io: {m}"),
    };
    (500, text.into_bytes())
}

impl wasip2::exports::http::incoming_handler::Guest for Secrets {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = if let Some((_, name)) = path.split_once("/secret/") {
            match store::get(name) {
                Ok(Some(value)) => (200, value.into_bytes()),
                Ok(None) => (404, b"absent".to_vec()),
                Err(e) => error(e),
            }
        } else if path.ends_with("/all") {
            match store::get_all() {
                Ok(all) => (200, all.into_iter().map(|(k, _)| k).collect::<Vec<_>>().join("\n").into_bytes()),
                Err(e) => error(e),
            }
        } else {
            (404, b"unknown path".to_vec())
        };
        respond(out, status, &body);
    }
}

wasip2::http::proxy::export!(Secrets);
