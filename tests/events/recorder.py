"""A service that records every CloudEvent POSTed to it (binary mode) as one line
`TYPE ID ERRORCODE` in $RECORD_FILE (written before answering, so an acknowledged delivery is
recorded), and answers with $STATUS (default 200). $BODY shapes the answer's body: empty by
default; `endless` streams one without end (64 KiB every 10 ms); `stall` announces 100 bytes and
sends none."""
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD = os.environ["RECORD_FILE"]
STATUS = int(os.environ.get("STATUS", "200"))
BODY = os.environ.get("BODY", "")


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
        if BODY == "endless":
            self.endless(STATUS)
        elif BODY == "stall":
            self.send_response(STATUS)
            self.send_header("content-length", "100")
            self.end_headers()
            self.wfile.flush()
            time.sleep(3600)
        else:
            self.answer(STATUS)

    def endless(self, status):
        self.send_response(status)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                time.sleep(0.01)
        except OSError:  # the reader went away
            self.close_connection = True

    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
