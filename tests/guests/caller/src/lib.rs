//! A `wasi:http` component calling actors through `nimbus:actor/client`:
//! `POST /call/TYPE/KEY/METHOD` (body = input) answers the actor's answer, or 500 with the error.
use http_util::{read_body, respond};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

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
        respond(out, status, &body);
    }
}

wasip2::http::proxy::export!(Caller);
