//! `{{name}}`: an HTTP function. A standard `wasi:http/incoming-handler` component, so it runs
//! unchanged under Nimbus, `wasmtime serve` and Spin.
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Handler);

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let text = format!("Hello from {{name}} (Rust)! path={path}\n");
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap();
        let response = OutgoingResponse::new(headers);
        let body = response.body().unwrap();
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().unwrap();
        out.blocking_write_and_flush(text.as_bytes()).unwrap();
        drop(out);
        OutgoingBody::finish(body, None).unwrap();
    }
}
