from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import IncomingRequest, ResponseOutparam, OutgoingResponse, Fields, OutgoingBody


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(b"Hello from {{name}} (Python)! path=" + (request.path_with_query() or "").encode() + b"\n")
        OutgoingBody.finish(body, None)
