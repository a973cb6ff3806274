//! One hop of the fault-injection benchmark's app (`bench/faults.sh`), configured by its env:
//! `NAME` (its component name), `NEXT` (the URL of the next hop, e.g. `http://api.internal/api`:
//! the request's path after its route prefix and its query are appended), `STORE` (a KV bucket it
//! writes `order/ID` into, `ID` from the `id` query parameter).
//!
//! Its fault comes from the env (`FAULT_SLEEP_MS`, `FAULT_ERROR_RATE`: fixed per revision, the
//! "bad deploy") and, read on every request or event, from KV key `NAME` of bucket `faults`
//! (injected at run time without a redeploy): comma-separated `sleep=MS`, `error=RATE` (0..1)
//! and, for event deliveries, `nack` (fail every delivery, so it is retried and the group's
//! acknowledged position stops) or `hang=MS` (sleep that long before acknowledging).
//!
//! Over HTTP it sleeps and fails as its fault says, then calls `NEXT` (a non-2xx answer or an
//! error there is a `502` here) and writes `STORE`; as an event handler (`nimbus:events/handler`)
//! it acknowledges unless the fault says otherwise.
use http_util::{read_body, respond};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingRequest, Method, OutgoingRequest, ResponseOutparam, Scheme};

wit_bindgen::generate!({
    path: ["../../../wit/nimbus-events", "../../../wit/deps/keyvalue", "wit"],
    world: "test:chain/chain",
    generate_all,
});

use exports::nimbus::events::handler::Guest as Handler;
use nimbus::events::types::{Error, Event};
use wasi::keyvalue::store;

struct Chain;

/// What this hop is told to do wrong, from its env and its KV key together.
#[derive(Default, Debug)]
struct Fault {
    sleep_ms: u64,
    error_rate: f64,
    nack: bool,
    hang_ms: u64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn name() -> String {
    env("NAME").unwrap_or_else(|| "chain".into())
}

fn fault() -> Fault {
    let mut f = Fault {
        sleep_ms: env("FAULT_SLEEP_MS").and_then(|v| v.parse().ok()).unwrap_or(0),
        error_rate: env("FAULT_ERROR_RATE").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        ..Fault::default()
    };
    // No bucket granted, no key or a KV error: only the env's fault.
    let Some(value) = store::open("faults").ok().and_then(|b| b.get(&name()).ok().flatten()) else {
        return f;
    };
    for item in String::from_utf8_lossy(&value).split(',').map(str::trim) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        match k {
            "sleep" => f.sleep_ms += v.parse().unwrap_or(0),
            "error" => f.error_rate = f.error_rate.max(v.parse().unwrap_or(0.0)),
            "nack" => f.nack = true,
            "hang" => f.hang_ms = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    f
}

fn sleep(ms: u64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// True with probability `rate`.
fn unlucky(rate: f64) -> bool {
    rate > 0.0 && (wasip2::random::random::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64 <= rate
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// GET `url`: the status and body, or why there was none.
fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("url needs a scheme")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get).map_err(|_| "method")?;
    req.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http })).map_err(|_| "scheme")?;
    req.set_authority(Some(authority)).map_err(|_| "authority")?;
    req.set_path_with_query(Some(path)).map_err(|_| "path")?;
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let resp = future.get().ok_or("no response")?.map_err(|_| "response taken twice")?.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.consume().map_err(|_| "body")?;
    let mut data = Vec::new();
    {
        let stream = body.stream().map_err(|_| "stream")?;
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            data.extend_from_slice(&chunk);
        }
    }
    Ok((status, data))
}

/// One request: the fault, then the next hop and the store.
fn serve(path_query: &str) -> (u16, String) {
    let me = name();
    let f = fault();
    sleep(f.sleep_ms);
    if unlucky(f.error_rate) {
        return (500, format!("{me}: injected error\n"));
    }
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let mut text = format!("{me} ok\n");
    if let Some(bucket) = env("STORE") {
        let id = query_param(query, "id").unwrap_or("0");
        let written = store::open(&bucket).and_then(|b| b.set(&format!("order/{id}"), path_query.as_bytes()));
        if let Err(e) = written {
            return (500, format!("{me}: kv {bucket}: {e:?}\n"));
        }
    }
    if let Some(next) = env("NEXT") {
        // The route prefix (`/shop`) is this hop's; the rest goes on.
        let rest = path.splitn(3, '/').nth(2).unwrap_or("");
        let url = format!("{next}/{rest}{}{query}", if query.is_empty() { "" } else { "?" });
        match get(&url) {
            Ok((status, body)) if (200..300).contains(&status) => text.push_str(&String::from_utf8_lossy(&body)),
            Ok((status, body)) => {
                return (502, format!("{me}: {url} answered {status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => return (502, format!("{me}: {url} failed: {e}\n")),
        }
    }
    (200, text)
}

impl wasip2::exports::http::incoming_handler::Guest for Chain {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_query = request.path_with_query().unwrap_or_default();
        let _ = read_body(&request);
        let (status, text) = serve(&path_query);
        respond(out, status, text.as_bytes());
    }
}

impl Handler for Chain {
    fn handle(event: Event) -> Result<(), Error> {
        let f = fault();
        if f.nack {
            return Err(Error::Failed(format!("{}: not acknowledging event {}", name(), event.id)));
        }
        sleep(f.sleep_ms + f.hang_ms);
        if unlucky(f.error_rate) {
            return Err(Error::Failed(format!("{}: injected error on event {}", name(), event.id)));
        }
        Ok(())
    }
}

export!(Chain);
wasip2::http::proxy::export!(Chain);
