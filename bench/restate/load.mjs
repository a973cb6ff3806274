// Load generator for bench/workflows.sh: invokes order/run through the Restate ingress and waits
// for each result. Usage: node load.mjs INGRESS_PORT "LABEL"
// Prints: LABEL: 3-step run p50 X ms, p99 Y ms (one at a time); Z runs/s with 64 clients
import http from "node:http";

const [port, label] = [Number(process.argv[2]), process.argv[3] ?? "restate"];
const CLIENTS = 64, WARMUP = 20, SAMPLES = 200, RUN_FOR_MS = 5000;
const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });

// One invocation: POST /order/run, resolves once the handler's result is back (HTTP 200).
function invoke(id) {
    const body = JSON.stringify({ id });
    return new Promise((resolve, reject) => {
        const req = http.request(
            {
                host: "127.0.0.1", port, path: "/order/run", method: "POST", agent,
                headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
                timeout: 30_000,
            },
            (res) => {
                let text = "";
                res.setEncoding("utf8");
                res.on("data", (c) => (text += c));
                res.on("end", () =>
                    res.statusCode === 200 && text.includes("shipped")
                        ? resolve(text)
                        : reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`)));
            });
        req.on("timeout", () => req.destroy(new Error("timed out after 30 s")));
        req.on("error", reject);
        req.end(body);
    });
}

// Same quantile as the Nimbus bench: sorted[round((n - 1) * q)].
const quantile = (sorted, q) => sorted[Math.round((sorted.length - 1) * q)];

for (let i = 0; i < WARMUP; i++) await invoke(`w${i}`);
const latencies = [];
for (let i = 0; i < SAMPLES; i++) {
    const t = process.hrtime.bigint();
    await invoke(`l${i}`);
    latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
}
latencies.sort((a, b) => a - b);

let done = 0;
const start = performance.now();
await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (let i = 0; performance.now() - start < RUN_FOR_MS; i++) {
        await invoke(`t${c}-${i}`);
        done++;
    }
}));
const rate = done / ((performance.now() - start) / 1000);
agent.destroy();
console.log(`${label}: 3-step run p50 ${quantile(latencies, 0.5).toFixed(2)} ms, ` +
    `p99 ${quantile(latencies, 0.99).toFixed(2)} ms (one at a time); ${rate.toFixed(0)} runs/s with ${CLIENTS} clients`);
