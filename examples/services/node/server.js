// A Nimbus service in Node.js: any HTTP server listening on 127.0.0.1:$PORT.
const http = require("node:http");

const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    return;
  }
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ language: "node", path: req.url, pid: process.pid }));
});

server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log(`node service on port ${process.env.PORT}`));
// Finish in-flight requests, then exit.
process.on("SIGTERM", () => server.close(() => process.exit(0)) && server.closeIdleConnections());
