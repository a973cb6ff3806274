//! The example function: a standard `wasi:http/incoming-handler` component. It runs unchanged
//! under Nimbus, `wasmtime serve` and Spin.
//!
//! - `GET /hello`          -> `Hello, world!`
//! - `GET /hello/NAME`     -> `Hello, NAME!`
//! - anything else         -> 404
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
        let (status, text) = match path.strip_prefix("/hello") {
            Some("") | Some("/") => (200, format!("{greeting}, world!\n")),
            Some(rest) if rest.starts_with('/') && !rest[1..].contains('/') => (200, format!("{greeting}, {}!\n", &rest[1..])),
            _ => (404, "Not found. Try /hello or /hello/NAME\n".to_string()),
        };
        println!("{} {path} -> {status}", method_name(&request));
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain; charset=utf-8".to_vec())]).unwrap();
        let resp = OutgoingResponse::new(headers);
        resp.set_status_code(status).unwrap();
        let body = resp.body().unwrap();
        ResponseOutparam::set(response_out, Ok(resp));
        let out = body.write().unwrap();
        out.blocking_write_and_flush(text.as_bytes()).unwrap();
        drop(out);
        OutgoingBody::finish(body, None).unwrap();
    }
}

fn method_name(request: &IncomingRequest) -> String {
    use wasip2::http::types::Method;
    match request.method() {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Head => "HEAD".into(),
        Method::Other(m) => m,
        other => format!("{other:?}").to_uppercase(),
    }
}
