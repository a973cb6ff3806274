//! A `wasi:http` component using `wasi:keyvalue`: `GET /get/BUCKET/KEY`, `PUT /set/BUCKET/KEY`
//! (body = value), `POST /incr/BUCKET/KEY?by=N`, `DELETE /delete/BUCKET/KEY`, `GET /list/BUCKET`
//! (every key, one per line, following cursors), `POST /batch/BUCKET` (sets `a=1`, `b=2`, then
//! reads `a`, `b`, `c`), `POST /fill/BUCKET?n=N` (sets `k0`..`kN-1` in one batch); with
//! `nimbus:keyvalue/cas`: `GET /vget/BUCKET/KEY` (`REVISION VALUE`), `PUT
//! /cas/BUCKET/KEY?expect=REVISION|none` (body = value; `written REVISION` or `conflict
//! REVISION|none`). Errors answer 500 with the `wasi:keyvalue` error.
use http_util::{read_body, respond};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

wit_bindgen::generate!({
    path: ["../../../wit/deps/keyvalue", "../../../wit/nimbus-keyvalue"],
    world: "nimbus:keyvalue/imports@0.1.0",
    generate_all,
});

use nimbus::keyvalue::cas;
use wasi::keyvalue::{atomics, batch, store};

struct Kv;

fn error(e: store::Error) -> (u16, Vec<u8>) {
    let text = match e {
        store::Error::NoSuchStore => "no-such-store".to_string(),
        store::Error::AccessDenied => "access-denied".to_string(),
        store::Error::Other(m) => format!("other: {m}"),
    };
    (500, text.into_bytes())
}

fn run(method: &Method, path: &str, query: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), store::Error> {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let (op, name, key) = (parts.first().copied().unwrap_or(""), parts.get(1).copied().unwrap_or(""), parts.get(2).copied().unwrap_or(""));
    // `shop%2Fcarts`: a bucket another app exports (`shop/carts`).
    let bucket = store::open(&name.replace("%2F", "/"))?;
    Ok(match (method, op) {
        (Method::Get, "get") => match bucket.get(key)? {
            Some(v) => (200, v),
            None => (404, b"absent".to_vec()),
        },
        (Method::Put, "set") => {
            bucket.set(key, &body)?;
            (204, Vec::new())
        }
        (Method::Post, "incr") => {
            let by = query.strip_prefix("by=").and_then(|n| n.parse().ok()).unwrap_or(1);
            (200, atomics::increment(&bucket, key, by)?.to_string().into_bytes())
        }
        (Method::Delete, "delete") => {
            bucket.delete(key)?;
            (204, Vec::new())
        }
        (Method::Get, "list") => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            (200, keys.join("\n").into_bytes())
        }
        (Method::Post, "batch") => {
            batch::set_many(&bucket, &[("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())])?;
            let got = batch::get_many(&bucket, &["a".to_string(), "b".to_string(), "c".to_string()])?;
            let text: Vec<String> = got
                .into_iter()
                .map(|v| v.map_or("-".to_string(), |(k, v)| format!("{k}={}", String::from_utf8_lossy(&v))))
                .collect();
            (200, text.join(",").into_bytes())
        }
        (Method::Post, "fill") => {
            let n: usize = query.strip_prefix("n=").and_then(|n| n.parse().ok()).unwrap_or(0);
            let pairs: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("k{i}"), i.to_string().into_bytes())).collect();
            batch::set_many(&bucket, &pairs)?;
            (204, Vec::new())
        }
        (Method::Get, "vget") => match cas::get(&bucket, key)? {
            Some(v) => (200, format!("{} {}", v.revision, String::from_utf8_lossy(&v.value)).into_bytes()),
            None => (404, b"absent".to_vec()),
        },
        (Method::Put, "cas") => {
            let expected = match query.strip_prefix("expect=") {
                Some("none") => None,
                Some(n) => Some(n.parse().unwrap_or(u64::MAX)),
                None => return Ok((400, b"expect=REVISION|none".to_vec())),
            };
            let text = match cas::swap(&bucket, key, expected, &body)? {
                cas::Outcome::Written(r) => format!("written {r}"),
                cas::Outcome::Conflict(r) => format!("conflict {}", r.map_or("none".to_string(), |r| r.to_string())),
            };
            (200, text.into_bytes())
        }
        _ => (404, b"unknown operation".to_vec()),
    })
}

impl wasip2::exports::http::incoming_handler::Guest for Kv {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let method = request.method();
        let body = read_body(&request);
        let (status, body) = run(&method, path, query, body).unwrap_or_else(error);
        respond(out, status, &body);
    }
}

wasip2::http::proxy::export!(Kv);
