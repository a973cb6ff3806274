//! A misbehaving-on-purpose `wasi:http` component: each path exercises one thing the host must
//! handle (echo, logging, env, outbound grants, sandboxed filesystem, a body streamed slowly, and the malicious cases:
//! infinite loop, memory bomb, unbounded recursion, panic, never answering).
use std::io::Write as _;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Kitchen);

struct Kitchen;

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).unwrap();
    let resp_body = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = resp_body.write().unwrap();
    for chunk in body.chunks(4096) {
        stream.write_all(chunk).unwrap();
    }
    stream.flush().unwrap();
    drop(stream);
    OutgoingBody::finish(resp_body, None).unwrap();
}

/// Sends the response head at once, then `chunks` lines with a pause before each but the first.
fn drip(out: ResponseOutparam, chunks: u32, pause: std::time::Duration) {
    let resp = OutgoingResponse::new(Fields::new());
    let resp_body = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = resp_body.write().unwrap();
    for i in 0..chunks {
        if i > 0 {
            std::thread::sleep(pause);
        }
        stream.write_all(format!("drop {i}\n").as_bytes()).unwrap();
        stream.flush().unwrap();
    }
    drop(stream);
    OutgoingBody::finish(resp_body, None).unwrap();
}

fn read_body(req: &IncomingRequest) -> Vec<u8> {
    let body = req.consume().unwrap();
    let mut data = Vec::new();
    {
        let stream = body.stream().unwrap();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
    }
    IncomingBody::finish(body);
    data
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse_small(depth: u64) -> u64 {
    std::hint::black_box(recurse_small(depth + 1)).wrapping_add(depth)
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut local = *pad;
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

fn outbound(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("url needs a scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get).map_err(|_| "method")?;
    req.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }))
        .map_err(|_| "scheme")?;
    req.set_authority(Some(authority)).map_err(|_| "authority")?;
    req.set_path_with_query(Some(path)).map_err(|_| "path")?;
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let resp = future
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
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

impl wasip2::exports::http::incoming_handler::Guest for Kitchen {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_query.split_once('?').unwrap_or((&path_query, ""));
        let path = path.trim_start_matches("/kitchen");
        match path {
            "/echo" => {
                let method = format!("{:?}", request.method());
                let headers: Vec<String> = request
                    .headers()
                    .entries()
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("x-"))
                    .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(&v)))
                    .collect();
                let body = read_body(&request);
                let text = format!(
                    "method={method}\npath={path_query}\nheaders={}\nbody_len={}\n",
                    headers.join(", "),
                    body.len()
                );
                respond(out, 200, text.as_bytes());
            }
            "/big" => {
                let kb: usize = query_param(query, "kb").and_then(|v| v.parse().ok()).unwrap_or(1024);
                respond(out, 200, &vec![b'x'; kb * 1024]);
            }
            "/log" => {
                println!("hello on stdout");
                eprintln!("hello on stderr");
                respond(out, 200, b"logged\n");
            }
            "/env" => {
                let name = query_param(query, "name").unwrap_or_default();
                let value = std::env::var(&name).unwrap_or_else(|_| "<unset>".into());
                respond(out, 200, value.as_bytes());
            }
            "/fs" => match std::fs::read_to_string("/etc/passwd") {
                Ok(_) => respond(out, 200, b"read host file\n"),
                Err(e) => respond(out, 200, format!("fs denied: {e}\n").as_bytes()),
            },
            "/outbound" => {
                let url = query_param(query, "url").unwrap_or_default();
                match outbound(&url) {
                    Ok((status, body)) => {
                        let mut text = format!("upstream status {status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(out, 200, &text);
                    }
                    Err(e) => respond(out, 502, format!("outbound error: {e}\n").as_bytes()),
                }
            }
            "/bounce" => {
                // Calls `via` (another component), asking it to bounce back to `back`: two
                // components granted each other ping-pong until the call depth limit stops them.
                let via = query_param(query, "via").unwrap_or_default();
                let back = query_param(query, "back").unwrap_or_default();
                match outbound(&format!("http://{via}.internal/kitchen/bounce?via={back}&back={via}")) {
                    Ok((status, body)) => {
                        let mut text = format!("{via}: {status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(out, 200, &text);
                    }
                    Err(e) => respond(out, 502, format!("outbound error: {e}\n").as_bytes()),
                }
            }
            "/drip" => {
                let chunks: u32 = query_param(query, "chunks").and_then(|v| v.parse().ok()).unwrap_or(3);
                let ms: u64 = query_param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                drip(out, chunks, std::time::Duration::from_millis(ms));
            }
            "/sleep" => {
                let ms: u64 = query_param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, 200, format!("slept {ms}ms\n").as_bytes());
            }
            "/spin" => {
                // Busy for `ms` milliseconds of wall time: CPU time, not waiting.
                let ms: u64 = query_param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(10);
                let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                let mut x: u64 = 0;
                while std::time::Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                respond(out, 200, format!("spun {ms}ms\n").as_bytes());
            }
            "/loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/recurse" => {
                let n = recurse_small(0);
                respond(out, 200, format!("{n}").as_bytes());
            }
            "/recurse-frames" => {
                let mut pad = [0u8; 256];
                let n = recurse(0, &mut pad);
                respond(out, 200, format!("{n}").as_bytes());
            }
            "/panic" => panic!("kitchen guest panicked on purpose"),
            "/never" => drop(out),
            _ => respond(out, 404, b"kitchen: no such path\n"),
        }
    }
}
