import { ResponseOutparam, OutgoingResponse, OutgoingBody, Fields } from "wasi:http/types@0.2.10";

export const incomingHandler = {
  handle(request, responseOut) {
    const response = new OutgoingResponse(Fields.fromList([["content-type", new TextEncoder().encode("text/plain")]]));
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(new TextEncoder().encode(`Hello from {{name}} (JavaScript)! path=${request.pathWithQuery()}\n`));
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
