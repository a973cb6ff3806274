//! An event handler (`nimbus:events/handler`) that also serves `wasi:http` and publishes
//! (`nimbus:events/publisher`). What it does with an event depends on the event's `type`:
//! `ok`, `fail` (retry), `reject` (no retry), `trap`, `loop` (never returns), `forward`
//! (publishes a copy to the topic named in the `target` extension, keeping `partitionkey`).
//! Over HTTP, `POST /publish/TOPIC` publishes the request body as an event of type `http`.
use http_util::{read_body, respond};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../../wit/nimbus-events",
    world: "nimbus:events/event-handler",
    generate_all,
});

use exports::nimbus::events::handler::Guest;
use nimbus::events::publisher;
use nimbus::events::types::{Error, Event};

struct Events;

impl Guest for Events {
    fn handle(event: Event) -> Result<(), Error> {
        match event.type_.as_str() {
            "ok" => Ok(()),
            "fail" => Err(Error::Failed(format!("event {} failed on purpose", event.id))),
            "reject" => Err(Error::Rejected(format!("event {} is malformed", event.id))),
            "trap" => panic!("event {} trapped", event.id),
            "loop" => loop {
                std::hint::spin_loop();
            },
            "forward" => {
                let target = event.extensions.iter().find(|(k, _)| k == "target").map(|(_, v)| v.clone());
                let Some(target) = target else {
                    return Err(Error::Rejected("no `target` extension".into()));
                };
                let copy = Event {
                    id: format!("fwd-{}", event.id),
                    source: String::new(),
                    type_: "forwarded".into(),
                    extensions: event.extensions.into_iter().filter(|(k, _)| k == "partitionkey").collect(),
                    ..event
                };
                publisher::publish(&target, &copy).map_err(Error::Failed)
            }
            other => Err(Error::Rejected(format!("unknown type `{other}`"))),
        }
    }
}

export!(Events);

struct Http;

impl wasip2::exports::http::incoming_handler::Guest for Http {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let body = read_body(&request);
        let (status, text) = match path.strip_prefix("/publish/") {
            Some(topic) => {
                let event = Event {
                    id: String::new(),
                    source: String::new(),
                    type_: "http".into(),
                    subject: None,
                    time: None,
                    datacontenttype: Some("text/plain".into()),
                    data: body,
                    extensions: Vec::new(),
                };
                match publisher::publish(topic, &event) {
                    Ok(()) => (202, "published".to_string()),
                    Err(e) => (500, e),
                }
            }
            None => (404, "try POST /publish/TOPIC".to_string()),
        };
        respond(out, status, text.as_bytes());
    }
}

wasip2::http::proxy::export!(Http);
