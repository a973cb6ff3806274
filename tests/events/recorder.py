"""A service that records every CloudEvent POSTed to it (binary mode) as one line
`TYPE ID ERRORCODE` in $RECORD_FILE (written before answering, so an acknowledged delivery is
recorded), and answers with $STATUS (default 200)."""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD = os.environ["RECORD_FILE"]
STATUS = int(os.environ.get("STATUS", "200"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.answer(200)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        h = self.headers
        line = f"{h.get('ce-type')} {h.get('ce-id')} {h.get('ce-nimbuserrorcode', '-')} {h.get('traceparent', '-')}\n"
        with open(RECORD, "a") as f:
            f.write(line)
        self.answer(STATUS)

    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
