//! What the `wasi:http` guest fixtures share: reading a whole request body and sending a whole
//! response.
use wasip2::http::types::{Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// The request body, read to the end.
pub fn read_body(req: &IncomingRequest) -> Vec<u8> {
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

/// Answers with `status` and `body` (written in 4 KiB chunks, the most one blocking write takes).
pub fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let resp = OutgoingResponse::new(Fields::new());
    resp.set_status_code(status).unwrap();
    let resp_body = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let stream = resp_body.write().unwrap();
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(resp_body, None).unwrap();
}
