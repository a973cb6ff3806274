// {{name}}: a Nimbus service. Any HTTP server works: it must listen on 127.0.0.1:$PORT.
const http = require("node:http");

const server = http.createServer((req, res) => {
  const body = req.url === "/healthz" ? "ok" : `Hello from {{name}} (Node.js)! path=${req.url}\n`;
  res.writeHead(200, { "content-type": "text/plain" }).end(body);
});
server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)) && server.closeIdleConnections());
