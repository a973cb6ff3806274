//! A `wasi:http` component calling actors through `nimbus:actor/client`:
//! `POST /call/TYPE/KEY/METHOD` (body = input) answers the actor's answer, or 500 with the error.
use wasip2::http::types::{Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../../wit/nimbus-actor",
    world: "nimbus:actor/actor-client",
    generate_all,
});

struct Caller;

impl wasip2::exports::http::incoming_handler::Guest for Caller {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let input = read_body(&request);
        let parts: Vec<&str> = path.trim_start_matches("/call/").splitn(3, '/').collect();
        let (status, body) = match parts.as_slice() {
            [ty, key, method] => match nimbus::actor::client::call(ty, key, method, &input) {
                Ok(output) => (200, output),
                Err(e) => (500, e.into_bytes()),
            },
            _ => (404, b"POST /call/TYPE/KEY/METHOD".to_vec()),
        };
        let resp = OutgoingResponse::new(Fields::new());
        resp.set_status_code(status).unwrap();
        let resp_body = resp.body().unwrap();
        ResponseOutparam::set(out, Ok(resp));
        let stream = resp_body.write().unwrap();
        stream.blocking_write_and_flush(&body).unwrap();
        drop(stream);
        OutgoingBody::finish(resp_body, None).unwrap();
    }
}

wasip2::http::proxy::export!(Caller);

fn read_body(req: &IncomingRequest) -> Vec<u8> {
    let body = req.consume().unwrap();
    let mut data = Vec::new();
    {
        let stream = body.stream().unwrap();
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            data.extend_from_slice(&chunk);
        }
    }
    IncomingBody::finish(body);
    data
}
