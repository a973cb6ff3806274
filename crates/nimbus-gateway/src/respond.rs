//! Responses the gateway writes itself: JSON errors that always carry the request id.
use http::{HeaderValue, StatusCode, header};

use crate::body::GatewayBody;
use crate::request_id::{REQUEST_ID_HEADER, RequestId};

/// `{"error": ..., "request_id": ...}` with the status and the `x-request-id` header.
pub(crate) fn error(status: StatusCode, request_id: &RequestId, message: &str) -> http::Response<GatewayBody> {
    let body = serde_json::json!({ "error": message, "status": status.as_u16(), "request_id": request_id.as_str() });
    let mut resp = http::Response::new(GatewayBody::full(format!("{body}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(&mut resp, request_id);
    resp
}

pub(crate) fn set_request_id<B>(resp: &mut http::Response<B>, request_id: &RequestId) {
    resp.headers_mut().insert(REQUEST_ID_HEADER, request_id.header_value());
}
