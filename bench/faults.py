"""Fault-injection benchmark of Nimbus's operations intelligence (anomaly detection, predictive
alerts, root-cause ranking; GET /v1/alerts), end to end on loopback against `nimbus server`.

The app `shop`: gateway -> function `front` (/shop/...) -> service `api` (Python, sandboxed) ->
{a dependency outside the platform (this script's own server), function `store` (KV write),
topic `orders` (published through the gateway)} -> function `worker` (topic trigger). The
functions are tests/guests/chain; the service is bench/faults/app/api.py.

Steady load (`--rate` req/s on GET /shop/order, keep-alive, paced so that a slow phase does not
turn into a burst afterwards), a warm-up, a fault-free period (false alerts per hour), then each
scenario in a random order (`--seed`) after a random pause: inject, hold, remove, recover.
Scenarios (the component the root-cause ranking should name in brackets):
  latency          KV `faults/T` = sleep=MS, or the service's sleep_ms   [T, drawn from front/api/store]
  errors           error=RATE on T (a share of 500s)                      [T, drawn from front/api/store]
  slow-dependency  the dependency `api` calls slows down, a ramp          [api]
  bad-deploy       a new revision whose `front` has FAULT_SLEEP_MS, then `nimbus rollback` [front]
  memory-leak      `api` keeps KiB per request (aimed at its limit late in the hold) [api]
  consumer-stall   `worker` stops acknowledging deliveries (nack)         [worker]

Figures: recall (an alert detected in [inject, remove + 30 s]), precision (alerts matching a
fault / all alerts after the warm-up), false alerts per hour of fault-free load, time to detect,
root-cause top-1/top-3 (suspects of the first matching alert), forecast lead time before the SLO
or limit breach the script observes itself; CPU and RSS of the nimbus process (/proc).

Usage: faults.py NIMBUS CHAIN_WASM [options]  (bench/faults.sh builds both and passes them)."""
import argparse, atexit, bisect, http.client, json, os, random, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
APP = "shop"
KINDS = ["latency", "errors", "slow-dependency", "bad-deploy", "memory-leak", "consumer-stall"]
MATCH_GRACE_S = 30  # an alert detected up to this long after a fault's removal still counts for it

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("nimbus", nargs="?"), p.add_argument("chain_wasm", nargs="?")
p.add_argument("--rescore", metavar="DIR", help="score an earlier run again from its --out DIR (nothing is started)")
p.add_argument("--seed", type=int, default=None, help="random seed of the schedule (default: random, printed)")
p.add_argument("--step", default="2s", help="metrics step for the server (NIMBUS_METRICS_STEP; '' leaves the default)")
p.add_argument("--rate", type=float, default=60, help="requests per second of steady load")
p.add_argument("--warmup", type=float, default=None, help="seconds of load before anything counts (default max(60, 30 steps))")
p.add_argument("--quiet", type=float, default=600, help="seconds of fault-free load after the warm-up")
p.add_argument("--hold", type=float, default=90, help="seconds each fault is held")
p.add_argument("--recover", type=float, default=120, help="seconds after each removal")
p.add_argument("--jitter", type=float, default=60, help="a random pause of up to this many seconds before each injection")
p.add_argument("--scenarios", default=",".join(KINDS), help="comma-separated, from: " + ", ".join(KINDS))
p.add_argument("--repeat", type=int, default=1, help="run each scenario this many times (targets drawn anew)")
p.add_argument("--latency-ms", type=int, default=200, help="latency added by `latency`")
p.add_argument("--error-rate", type=float, default=0.2, help="share of failed requests in `errors`")
p.add_argument("--deploy-sleep-ms", type=int, default=150, help="FAULT_SLEEP_MS of the bad revision of `front`")
p.add_argument("--dep-ms", type=int, default=800, help="the slow dependency's delay at the end of its ramp")
p.add_argument("--memory-mb", type=int, default=256, help="limits.memory_mb of `api`")
p.add_argument("--slo-p99-ms", type=int, default=300), p.add_argument("--slo-availability", type=float, default=99.5)
p.add_argument("--no-slo", action="store_true", help="declare no [[slo]] (also the fallback if the server refuses it)")
p.add_argument("--out", default=None, help="directory for results.md, alerts.json, timeline.json, the server log")
p.add_argument("--log", default="warn", help="the server's NIMBUS_LOG")
args = p.parse_args()
SEED = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
rng = random.Random(SEED)
OUT = args.out or args.rescore or tempfile.mkdtemp(prefix=f"nimbus-faults-{SEED}-")
os.makedirs(OUT, exist_ok=True)
STEP_S = float(args.step.rstrip("s")) if args.step.endswith("s") and args.step[:-1].replace(".", "").isdigit() else 5.0
WARMUP = args.warmup if args.warmup is not None else max(60.0, 30 * STEP_S)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


# ---------------------------------------------------------------------------------------------
# Clean-up: every process and server this script starts goes when it exits, however it exits.
STARTED, CLEANUPS = [], []


def cleanup():
    for fn in reversed(CLEANUPS):
        try:
            fn()
        except Exception:
            pass
    for proc in STARTED:
        if proc.poll() is None:
            proc.terminate()
    for proc in STARTED:
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()


atexit.register(cleanup)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, lambda n, f: sys.exit(128 + n))


# ---------------------------------------------------------------------------------------------
# The dependency outside the platform, and where `api` reads its faults: this script's server.
class Dep:
    lock = threading.Lock()
    api_fault = {}           # what GET /faults/api answers
    ramp = None              # (t0, ms at the end, seconds to get there) of GET /dep's delay

    @classmethod
    def delay_s(cls):
        with cls.lock:
            if not cls.ramp:
                return 0.0
            t0, ms, span = cls.ramp
        return min(1.0, max(0.0, (time.time() - t0) / span)) * ms / 1000


class DepHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one answer, not one answer plus a delayed ACK (40 ms)

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/faults/api"):
            with Dep.lock:
                data = json.dumps(Dep.api_fault).encode()
        else:
            time.sleep(Dep.delay_s())
            data = b"dependency ok\n"
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


dep_server = ThreadingHTTPServer(("127.0.0.1", 0), DepHandler)
dep_server.daemon_threads = True
DEP_PORT = dep_server.server_address[1]
threading.Thread(target=dep_server.serve_forever, daemon=True).start()
CLEANUPS.append(dep_server.shutdown)


# ---------------------------------------------------------------------------------------------
# The server.
class Server:
    def __init__(self):
        self.data = tempfile.mkdtemp(prefix="nimbus-faults-data-")
        CLEANUPS.append(lambda: shutil.rmtree(self.data, ignore_errors=True))
        self.gw_port, self.api_port = free_port(), free_port()
        self.gateway, self.api = f"http://127.0.0.1:{self.gw_port}", f"http://127.0.0.1:{self.api_port}"
        env = {**os.environ, "NIMBUS_LOG": args.log}
        for k in ("NIMBUS_TOKEN", "NIMBUS_SERVER"):
            env.pop(k, None)
        if args.step:
            env["NIMBUS_METRICS_STEP"] = args.step
        self.log_path = os.path.join(OUT, "server.log")
        self.proc = subprocess.Popen(
            [args.nimbus, "server", "--listen", f"127.0.0.1:{self.gw_port}", "--api-listen", f"127.0.0.1:{self.api_port}",
             "--data-dir", self.data, "--cache-dir", os.path.join(self.data, "cache"),
             "--max-memory-mb", str(max(256, args.memory_mb))],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "w"), text=True, env=env)
        STARTED.append(self.proc)
        self.token, banner, ready = None, [], threading.Event()

        def read():
            for line in self.proc.stdout:
                banner.append(line)
                if line.strip().startswith("nbt_"):
                    self.token = line.strip()
                if line.startswith("Ready"):
                    ready.set()
            ready.set()  # stdout closed: the server is gone

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90) or self.proc.poll() is not None or not self.token:
            self.proc.poll()
            tail = open(self.log_path).read()[-4000:]
            raise SystemExit(f"nimbus server did not come up (exit status {self.proc.returncode}, admin token "
                             f"{'seen' if self.token else 'not seen'} in 90 s).\nstdout:\n{''.join(banner)}\n"
                             f"stderr ({self.log_path}):\n{tail}")
        self.banner = "".join(banner)

    def call(self, method, path, body=None, ctype="application/json", ok=(200, 201, 202, 204)):
        req = urllib.request.Request(self.api + path, data=body, method=method,
                                     headers={"authorization": f"Bearer {self.token}", "content-type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {data[:500].decode(errors='replace')}")
        return status, data

    def cli(self, *cli_args):
        env = {**os.environ, "NIMBUS_SERVER": self.api, "NIMBUS_TOKEN": self.token, "HOME": self.data}
        env.pop("XDG_CONFIG_HOME", None)
        return subprocess.run([args.nimbus, *cli_args], capture_output=True, text=True, env=env, timeout=300)

    def set_kv_fault(self, component, value):
        if value:
            self.call("PUT", f"/v1/apps/{APP}/kv/faults/keys/{component}", value.encode(), "application/octet-stream")
        else:
            self.call("DELETE", f"/v1/apps/{APP}/kv/faults/keys/{component}", ok=(200, 204, 404))


# ---------------------------------------------------------------------------------------------
# The app.
def manifest(server, front_env="", slo=True):
    m = f"""[app]
name = "{APP}"

[component.front]
source = "chain.wasm"
env = {{ NAME = "front", NEXT = "http://api.internal/api"{front_env} }}
grants = {{ kv = ["faults"], invoke = ["api"] }}
limits = {{ timeout_ms = 20000, max_concurrency = 500 }}

[component.api]
command = ["python3", "api.py"]
env = {{ FAULTS_URL = "http://127.0.0.1:{DEP_PORT}/faults/api", DEP_URL = "http://127.0.0.1:{DEP_PORT}/dep", STORE_URL = "http://store.internal/store", EVENTS_URL = "{server.gateway}/events/orders" }}
readiness = {{ path = "/healthz" }}
grants = {{ invoke = ["store"], outbound = ["http://127.0.0.1:{DEP_PORT}", "{server.gateway}"] }}
limits = {{ memory_mb = {args.memory_mb}, max_concurrency = 500 }}
scale = {{ min = 1, max = 1, initial = 1, target_concurrency = 500 }}

[component.store]
source = "chain.wasm"
env = {{ NAME = "store", STORE = "orders" }}
grants = {{ kv = ["faults", "orders"] }}
limits = {{ timeout_ms = 20000, max_concurrency = 500 }}

[component.worker]
source = "chain.wasm"
env = {{ NAME = "worker" }}
grants = {{ kv = ["faults"] }}
limits = {{ timeout_ms = 20000 }}

[[trigger.http]]
route = "/shop/..."
component = "front"

[[trigger.topic]]
topic = "orders"
component = "worker"
public = true
concurrency = 16
retry = {{ max_attempts = 100, backoff_ms = 200, max_backoff_ms = 2000 }}
"""
    if slo:
        m += f"""
[[slo]]
route = "/shop/..."
p99_ms = {args.slo_p99_ms}
availability = {args.slo_availability}
"""
    return m


def write_app(server, front_env="", slo=True):
    d = tempfile.mkdtemp(prefix="nimbus-faults-app-")
    CLEANUPS.append(lambda: shutil.rmtree(d, ignore_errors=True))
    os.chmod(d, 0o755)
    shutil.copy(os.path.join(HERE, "faults", "app", "api.py"), d)
    shutil.copy(args.chain_wasm, os.path.join(d, "chain.wasm"))
    open(os.path.join(d, "nimbus.toml"), "w").write(manifest(server, front_env, slo))
    return d


def deploy(server, d):
    out = server.cli("deploy", d, "-o", "json")
    if out.returncode != 0:
        raise RuntimeError(f"nimbus deploy failed:\n{out.stderr}{out.stdout}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------------------
# Load: `rate` requests per second spread over enough keep-alive connections that a slow phase
# (up to ~1 s per request) keeps the pace; a connection that fell behind skips the slots it missed.
RECORDS = []  # (start unix s, seconds, status; 0 = no answer)
stop_load = threading.Event()


def load_thread(server, i, n):
    period = n / args.rate
    nxt = time.time() + i / args.rate
    conn, seq = None, 0
    while not stop_load.is_set():
        now = time.time()
        if nxt > now:
            time.sleep(nxt - now)
        nxt = max(nxt + period, time.time())
        seq += 1
        t0 = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", server.gw_port, timeout=15)
            conn.request("GET", f"/shop/order?id={i}-{seq}")
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except (http.client.HTTPException, OSError):
            status = 0
            if conn:
                conn.close()
            conn = None
        RECORDS.append((t0, time.time() - t0, status))


_sorted = {"n": -1, "rs": [], "ts": []}


def window(t0, t1):
    """The load's figures for requests started in [t0, t1)."""
    if _sorted["n"] != len(RECORDS):  # appended by the load threads in finishing order: sort once per change
        rs = sorted(RECORDS)
        _sorted.update(n=len(rs), rs=rs, ts=[r[0] for r in rs])
    rs = _sorted["rs"][bisect.bisect_left(_sorted["ts"], t0):bisect.bisect_left(_sorted["ts"], t1)]
    if not rs:
        return {"n": 0, "rps": 0, "p50_ms": None, "p99_ms": None, "err": None}
    lat = sorted(r[1] for r in rs)
    return {"n": len(rs), "rps": len(rs) / max(1e-9, t1 - t0), "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "err": sum(1 for r in rs if not 200 <= r[2] < 300) / len(rs)}


# ---------------------------------------------------------------------------------------------
# Sampling: CPU and RSS of nimbus (/proc), the service's RSS, the consumer group's lag, alerts.
SAMPLES = []   # (t, nimbus cpu % of one core, nimbus rss MB, api rss MB or None, api pid or None, machine busy %, io pressure)
LAGS = []      # (t, lag of group worker)
ALERTS = {}    # id -> the latest version seen
ALERTS_API = {"status": None, "error": None}
stop_sampling = threading.Event()
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_ticks():
    """Busy and total clock ticks of all cores so far."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f[:8]) - f[3] - f[4], sum(f[:8])


def io_pressure():
    """The share of the last 10 s some task waited on I/O (PSI), in %, if the kernel says."""
    try:
        return float(open("/proc/pressure/io").readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid):
    children = [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return children + [d for c in children for d in descendants(c)]


def api_pid(server):
    """The `api` service's python process (inside its sandbox: a descendant of nimbus)."""
    for pid in descendants(server.proc.pid):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and os.path.basename(cmd[0].decode()).startswith("python") and b"api.py" in cmd:
            return pid
    return None


def sampler(server):
    pid = server.proc.pid
    last_t, last_ticks, apid, n = time.time(), proc_cpu_ticks(pid), None, 0
    last_busy, last_total = machine_ticks()
    while not stop_sampling.wait(2.0):
        n += 1
        try:
            t, ticks = time.time(), proc_cpu_ticks(pid)
            cpu = (ticks - last_ticks) / TICK / (t - last_t) * 100
            last_t, last_ticks = t, ticks
            rss = proc_rss_mb(pid)
            busy, total = machine_ticks()
            machine = (busy - last_busy) / max(1, total - last_total) * 100
            last_busy, last_total = busy, total
        except OSError:
            return  # the server is gone; the main thread notices
        api_rss = None
        try:
            if apid is None or n % 5 == 0:
                apid = api_pid(server) or apid
            api_rss = proc_rss_mb(apid) if apid else None
        except OSError:
            apid = None
        SAMPLES.append((t, cpu, rss, api_rss, apid, machine, io_pressure()))


def poller(server):
    while not stop_sampling.wait(5.0):
        poll_once(server)


def poll_once(server):
    try:
        _, data = server.call("GET", f"/v1/apps/{APP}/topics/orders/groups")
        groups = json.loads(data).get("groups", [])
        LAGS.append((time.time(), sum(g.get("lag", 0) for g in groups)))
    except Exception:
        pass
    try:
        status, data = server.call("GET", f"/v1/alerts?state=all&app={APP}&limit=1000", ok=(200, 404, 405, 501))
        ALERTS_API["status"] = status
        if status == 200:
            for a in json.loads(data).get("alerts", []):
                ALERTS[a["id"]] = a
    except Exception as e:
        ALERTS_API["error"] = str(e)


# ---------------------------------------------------------------------------------------------
# Scenarios.
class Scenario:
    def __init__(self, kind, target, detail):
        self.kind, self.target, self.detail = kind, target, detail
        self.inject_t = self.remove_t = None
        self.note = ""

    @property
    def name(self):
        return f"{self.kind} ({self.target})" if self.kind in ("latency", "errors") else self.kind


def plan():
    kinds = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {KINDS}")
    out = []
    for _ in range(args.repeat):
        for k in kinds:
            if k == "latency":
                t = rng.choice(["front", "api", "store"]); out.append(Scenario(k, t, f"+{args.latency_ms} ms on {t}"))
            elif k == "errors":
                t = rng.choice(["front", "api", "store"]); out.append(Scenario(k, t, f"{args.error_rate:.0%} 500s on {t}"))
            elif k == "slow-dependency":
                out.append(Scenario(k, "api", f"api's dependency 0 -> {args.dep_ms} ms over {0.75 * args.hold:.0f} s"))
            elif k == "bad-deploy":
                out.append(Scenario(k, "front", f"new revision, front FAULT_SLEEP_MS={args.deploy_sleep_ms}; rollback"))
            elif k == "memory-leak":
                out.append(Scenario(k, "api", ""))
            elif k == "consumer-stall":
                out.append(Scenario(k, "worker", "worker fails every delivery (nack)"))
    rng.shuffle(out)
    return out


def inject(server, s, ctx):
    if s.kind in ("latency", "errors"):
        if s.target == "api":
            with Dep.lock:
                Dep.api_fault = {"sleep_ms": args.latency_ms} if s.kind == "latency" else {"error_rate": args.error_rate}
        else:
            server.set_kv_fault(s.target, f"sleep={args.latency_ms}" if s.kind == "latency" else f"error={args.error_rate}")
    elif s.kind == "slow-dependency":
        with Dep.lock:
            Dep.ramp = (time.time(), args.dep_ms, 0.75 * args.hold)
    elif s.kind == "bad-deploy":
        rev = deploy(server, ctx["bad_app"])
        s.note = f"revision {rev.get('revision', '?')}"
    elif s.kind == "memory-leak":
        # Aimed to reach the limit at ~85 % of the hold from the service's resident size now.
        rss = next((x[3] for x in reversed(SAMPLES) if x[3]), 30.0)
        kb = max(1, int((args.memory_mb - rss) * 1024 / (0.85 * args.hold * args.rate)))
        s.detail = f"api keeps {kb} KiB per request (limit {args.memory_mb} MB, RSS {rss:.0f} MB at start)"
        with Dep.lock:
            Dep.api_fault = {"leak_kb": kb}
    elif s.kind == "consumer-stall":
        server.set_kv_fault("worker", "nack")


def remove(server, s, ctx):
    if s.kind in ("latency", "errors", "memory-leak"):
        if s.target == "api":
            with Dep.lock:
                Dep.api_fault = {}
        else:
            server.set_kv_fault(s.target, "")
    elif s.kind == "slow-dependency":
        with Dep.lock:
            Dep.ramp = None
    elif s.kind == "bad-deploy":
        out = server.cli("rollback", APP, "-o", "json")
        if out.returncode != 0:
            raise RuntimeError(f"nimbus rollback failed:\n{out.stderr}{out.stdout}")
    elif s.kind == "consumer-stall":
        server.set_kv_fault("worker", "")


def sleep_until(t, server):
    while time.time() < t:
        if server.proc.poll() is not None:
            raise SystemExit(f"nimbus server exited with status {server.proc.returncode} mid-run; see {server.log_path}")
        time.sleep(min(1.0, max(0.0, t - time.time())))


# ---------------------------------------------------------------------------------------------
# Scoring.
def matches(alert, s):
    return s.inject_t * 1000 <= alert["detected_at"] <= (s.remove_t + MATCH_GRACE_S) * 1000


def breach_time(s):
    """When the script itself saw the SLO (or the memory limit) broken during the fault: the first
    second whose trailing 30 s of requests had a p99 over the SLO or more failures than its
    availability allows (only requests since the injection), or the service's RSS at 95 % of its
    limit (or its process replaced)."""
    t_end = s.remove_t + MATCH_GRACE_S
    if s.kind == "memory-leak":
        before = next((x[4] for x in reversed(SAMPLES) if x[0] < s.inject_t and x[4]), None)
        for t, _, _, a, pid, *_ in SAMPLES:
            if s.inject_t <= t <= t_end and a and a >= 0.95 * args.memory_mb:
                return t, "memory"
            if s.inject_t <= t <= t_end and before and pid and pid != before:
                return t, "memory"  # the process was replaced: killed at its limit
    if args.no_slo:
        return None, ""
    t = s.inject_t + 1
    while t <= t_end:
        w = window(max(t - 30, s.inject_t), t)  # what happened before the injection is not its breach
        if w["n"] >= 20 and w["p99_ms"] > args.slo_p99_ms:
            return t, "slo_latency"
        if w["n"] >= 20 and w["err"] > 1 - args.slo_availability / 100:
            return t, "slo_availability"
        t += 1
    return None, ""


def fmt_s(x):
    return "-" if x is None else f"{x:.0f} s" if abs(x) >= 10 else f"{x:.1f} s"


def score(scenarios, t_quiet, t_quiet_end, t_start, t_end):
    alerts = sorted(ALERTS.values(), key=lambda a: a["detected_at"])
    counted = [a for a in alerts if a["detected_at"] >= t_quiet * 1000]
    rows, per = [], []
    for s in scenarios:
        m = [a for a in counted if matches(a, s)]
        first = m[0] if m else None
        ttd = (first["detected_at"] / 1000 - s.inject_t) if first else None
        suspects = [x["component"] for x in (first.get("suspects") or [])] if first else []
        ranked = suspects or ([first["component"]] if first else [])
        top1 = bool(ranked) and ranked[0] == s.target
        top3 = s.target in ranked[:3]
        breach, why = breach_time(s)
        # The forecast of what broke: memory towards the limit, p99 towards the objective
        # (availability has no forecast, only its burn-rate alert).
        forecasts = [a for a in m if a["kind"] == "forecast" and (not breach or a["signal"] == why)]
        lead = None
        if breach and forecasts:
            lead = breach - forecasts[0]["detected_at"] / 1000
        stated = forecasts[0].get("lead_time_s") if forecasts else None
        hold = window(s.inject_t, s.remove_t)
        per.append(dict(scenario=s.name, target=s.target, detail=s.detail, note=s.note, inject=s.inject_t, remove=s.remove_t,
                        detected=bool(first), ttd_s=ttd, top1=top1, top3=top3, first_alert=first, alerts=[a["id"] for a in m],
                        suspects=suspects, breach=breach, breach_why=why, forecast_lead_s=lead, stated_lead_s=stated,
                        during=hold))
        first_txt = "-" if not first else f"{first['kind']}/{first['signal']} on {first['component']}"
        rank_txt = ", ".join(suspects[:3]) if suspects else ("(no suspects)" if first else "-")
        lead_txt = "-" if lead is None else f"{lead:+.0f} s" + (f" (says {stated:.0f} s)" if stated is not None else "")
        if breach and not forecasts:
            lead_txt = f"no {why} forecast; breach at +{breach - s.inject_t:.0f} s" if why != "slo_availability" else "-"
        elif forecasts and not breach:
            lead_txt = f"{forecasts[0]['signal']} forecast at +{forecasts[0]['detected_at'] / 1000 - s.inject_t:.0f} s, no breach"
        rows.append(f"| {s.name} | {s.target} | +{s.inject_t - t_start:.0f} s | {'yes' if first else '**no**'} | {fmt_s(ttd)} | "
                    f"{first_txt} | {rank_txt} | {'yes' if top1 else 'no'} | {'yes' if top3 else 'no'} | {len(m)} | {lead_txt} | "
                    f"{hold['p99_ms'] or 0:.0f} ms / {100 * (hold['err'] or 0):.1f} % |")
    matched = [a for a in counted if any(matches(a, s) for s in scenarios)]
    false = [a for a in counted if a not in matched]
    quiet_false = [a for a in counted if t_quiet * 1000 <= a["detected_at"] < t_quiet_end * 1000]
    fault_time = sum(min(s.remove_t + MATCH_GRACE_S, t_end) - s.inject_t for s in scenarios)
    free_h = max(1e-9, (t_end - t_quiet - fault_time) / 3600)
    quiet_h = max(1e-9, (t_quiet_end - t_quiet) / 3600)
    n = len(per)
    ttds = [r["ttd_s"] for r in per if r["ttd_s"] is not None]
    totals = dict(
        recall=sum(r["detected"] for r in per) / n if n else None,
        precision=len(matched) / len(counted) if counted else None,
        alerts=len(counted), matched=len(matched), false=len(false),
        false_per_h_quiet=len(quiet_false) / quiet_h, false_quiet=len(quiet_false), quiet_h=quiet_h,
        false_per_h_all=len(false) / free_h, free_h=free_h,
        ttd_median_s=statistics.median(ttds) if ttds else None, ttd_max_s=max(ttds) if ttds else None,
        within_60s=sum(1 for t in ttds if t <= 60) / n if n else None,
        top1=sum(r["top1"] for r in per) / n if n else None, top3=sum(r["top3"] for r in per) / n if n else None,
        warmup_alerts=len([a for a in alerts if a["detected_at"] < t_quiet * 1000]))
    return rows, per, totals, false


def pct(x):
    return "-" if x is None else f"{x:.2f}"


def main():
    log(f"seed {SEED}; output in {OUT}")
    server = Server()
    log(f"nimbus server up: gateway {server.gateway}, API {server.api}, pid {server.proc.pid}")
    slo = not args.no_slo
    good = write_app(server, slo=slo)
    try:
        rev = deploy(server, good)
    except RuntimeError as e:
        if slo and "slo" in str(e):
            log("the server refuses [[slo]] in the manifest; running without SLOs")
            slo, args.no_slo = False, True
            good = write_app(server, slo=False)
            rev = deploy(server, good)
        else:
            raise
    bad_env = f', FAULT_SLEEP_MS = "{args.deploy_sleep_ms}"'
    ctx = {"bad_app": write_app(server, front_env=bad_env, slo=slo)}
    log(f"deployed revision {rev.get('revision', '?')}")
    deadline, last = time.time() + 60, None
    while True:
        try:
            with urllib.request.urlopen(f"{server.gateway}/shop/order?id=probe", timeout=10) as r:
                if r.status == 200:
                    break
        except Exception as e:
            last = e
        if time.time() > deadline or server.proc.poll() is not None:
            raise SystemExit(f"the app does not answer GET /shop/order: {last}; server log {server.log_path}:\n"
                             f"{open(server.log_path).read()[-3000:]}")
        time.sleep(0.5)
    scenarios = plan()
    log(f"scenarios in order: {', '.join(s.name for s in scenarios)}")

    threads = max(8, int(args.rate * 1.2))
    workers = [threading.Thread(target=load_thread, args=(server, i, threads), daemon=True) for i in range(threads)]
    t_start = time.time()
    for w in workers:
        w.start()
    threading.Thread(target=sampler, args=(server,), daemon=True).start()
    threading.Thread(target=poller, args=(server,), daemon=True).start()
    log(f"load: {args.rate:g} req/s over {threads} keep-alive connections; warm-up {WARMUP:.0f} s")
    sleep_until(t_start + WARMUP, server)
    t_quiet = time.time()
    log(f"fault-free period: {args.quiet:.0f} s")
    sleep_until(t_quiet + args.quiet, server)
    t_quiet_end = time.time()
    if ALERTS_API["status"] != 200:
        log(f"note: GET /v1/alerts answers {ALERTS_API['status'] or ALERTS_API['error']}; scenarios run anyway")
    for s in scenarios:
        sleep_until(time.time() + rng.uniform(0, args.jitter), server)
        s.inject_t = time.time()
        inject(server, s, ctx)
        log(f"inject {s.name}: {s.detail} {s.note}".rstrip())
        sleep_until(s.inject_t + args.hold, server)
        remove(server, s, ctx)
        s.remove_t = time.time()
        during = window(s.inject_t, s.remove_t)
        log(f"removed {s.name}; during it: {during['rps']:.0f} req/s, p50 {during['p50_ms'] or 0:.0f} ms, "
            f"p99 {during['p99_ms'] or 0:.0f} ms, errors {100 * (during['err'] or 0):.1f} %; alerts so far {len(ALERTS)}")
        sleep_until(s.remove_t + args.recover, server)
    t_end = time.time()
    stop_load.set()
    poll_once(server)
    stop_sampling.set()
    for w in workers:
        w.join(timeout=20)
    step_used = None
    try:  # the per-step history the detector saw, kept for diagnosing misses
        _, data = server.call("GET", f"/v1/metrics/series?app={APP}&range_s=3600")
        step_used = json.loads(data).get("step_s")
        open(os.path.join(OUT, "series.json"), "wb").write(data)
    except Exception:
        pass
    report(server, scenarios, t_start, t_quiet, t_quiet_end, t_end, step_used)


def report(server, scenarios, t_start, t_quiet, t_quiet_end, t_end, step_used):
    quiet = window(t_quiet, t_quiet_end)
    cpu = [x[1] for x in SAMPLES]
    rss = [x[2] for x in SAMPLES]
    qcpu = [x[1] for x in SAMPLES if t_quiet <= x[0] < t_quiet_end]
    api_rss = [x[3] for x in SAMPLES if x[3]]
    busy = [x[5] for x in SAMPLES]
    lines = [f"### Fault injection (bench/faults.sh), seed {SEED}", "",
             f"`nimbus server`, app `shop` (front fn -> api service -> store fn + topic orders -> worker fn), "
             f"{args.rate:g} req/s steady load ({len(RECORDS)} requests), metrics step {step_used if step_used else '?'} s "
             f"(asked `NIMBUS_METRICS_STEP={args.step or 'default'}`), warm-up {WARMUP:.0f} s, fault-free {args.quiet:.0f} s, "
             f"hold {args.hold:.0f} s, recover {args.recover:.0f} s (+ up to {args.jitter:.0f} s random pause before each injection); "
             f"SLO on /shop/...: " + ("none" if args.no_slo else f"p99 {args.slo_p99_ms} ms, availability {args.slo_availability} %") + ".",
             f"Fault-free load: p50 {quiet['p50_ms'] or 0:.1f} ms, p99 {quiet['p99_ms'] or 0:.1f} ms, errors {100 * (quiet['err'] or 0):.2f} %.",
             ""]
    if ALERTS_API["status"] != 200:
        lines += [f"**GET /v1/alerts did not answer 200 ({ALERTS_API['status'] or ALERTS_API['error']}): no detection figures.**", ""]
    rows, per, tot, false = score(scenarios, t_quiet, t_quiet_end, t_start, t_end)
    lines += ["| scenario | faulty | injected | detected | time to detect | first alert | suspects (top 3) | top-1 | top-3 | alerts | forecast lead | front p99 / errors during |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    goal = lambda v, g, ge=True: "-" if v is None else f"{v:.2f} ({'meets' if (v >= g if ge else v <= g) else 'misses'} {'≥' if ge else '≤'} {g})"
    lines += [
        "| total | figure |", "|---|---|",
        f"| recall | {goal(tot['recall'], 0.9)} |",
        f"| precision | {goal(tot['precision'], 0.8)}: {tot['matched']} of {tot['alerts']} alerts after the warm-up match a fault |",
        f"| false alerts per hour, fault-free period | {tot['false_per_h_quiet']:.1f} ({tot['false_quiet']} in {tot['quiet_h'] * 60:.0f} min) |",
        f"| false alerts per hour, all time outside faults | {tot['false_per_h_all']:.1f} ({tot['false']} in {tot['free_h'] * 60:.0f} min) |",
        f"| time to detect, median / max | {fmt_s(tot['ttd_median_s'])} / {fmt_s(tot['ttd_max_s'])}; detected within 60 s: "
        f"{pct(tot['within_60s'])} of faults |",
        f"| root cause top-1 | {goal(tot['top1'], 0.7)} |",
        f"| root cause top-3 | {pct(tot['top3'])} |",
        f"| alerts during the warm-up (not counted) | {tot['warmup_alerts']} |",
        f"| nimbus CPU (% of one core), mean / max; fault-free period mean | {statistics.mean(cpu) if cpu else 0:.0f} / {max(cpu) if cpu else 0:.0f}; "
        f"{statistics.mean(qcpu) if qcpu else 0:.0f} |",
        f"| nimbus RSS, mean / max | {statistics.mean(rss) if rss else 0:.0f} / {max(rss) if rss else 0:.0f} MB |",
        f"| machine CPU busy ({os.cpu_count()} cores, everything: load, app, other work), mean / max | "
        f"{statistics.mean(busy) if busy else 0:.0f} / {max(busy) if busy else 0:.0f} % |",
        f"| api service RSS, max | {max(api_rss) if api_rss else 0:.0f} MB |",
        "",
        "Recall: an alert detected in [inject, remove + 30 s]; root cause: `suspects` of the first such alert "
        "(its own component when it has none); forecast lead: the script's breach time (trailing-30 s p99 or availability "
        "over the SLO, or the service at 95 % of its memory limit or replaced) minus detected_at of the first matching forecast alert "
        "of that signal (`memory`, `slo_latency`); availability has no forecast.",
    ]
    slo_alerts = [a for a in sorted(ALERTS.values(), key=lambda a: a["detected_at"]) if a["kind"] == "slo"]
    if slo_alerts:
        def seen(a):
            w = window(a["detected_at"] / 1000 - 30, a["detected_at"] / 1000)
            return (f"{w['p99_ms'] or 0:.0f} ms" if a["signal"] == "slo_latency" else f"{100 * (1 - (w['err'] or 0)):.2f} %")
        lines += ["", "SLO alerts, the engine's value against what the load saw over the 30 s before detected_at: " + "; ".join(
            f"{a['signal']} at +{a['detected_at'] / 1000 - t_start:.0f} s: {a.get('value', 0):.4g} (objective {a.get('baseline', 0):.4g}), "
            f"seen {seen(a)}" for a in slo_alerts[:20])]
    def context(a):
        """What the load and the machine saw in the 20 s before an alert's detection."""
        t = a["detected_at"] / 1000
        w = window(t - 20, t)
        near = [x for x in SAMPLES if t - 20 <= x[0] <= t]
        io = [x[6] for x in near if len(x) > 6 and x[6] is not None]
        return (f"load p99 {w['p99_ms'] or 0:.0f} ms, machine busy max {max((x[5] for x in near), default=0):.0f} %"
                + (f", I/O pressure max {max(io):.0f} %" if io else ""))
    if false:
        lines += ["", f"False alerts (outside every fault window; fault-free p99 {quiet['p99_ms'] or 0:.0f} ms): " + "; ".join(
            f"{a['kind']}/{a['signal']} on {a['component']} at +{a['detected_at'] / 1000 - t_start:.0f} s (score {a.get('score', 0):.1f}, "
            f"value {a.get('value', 0):.3g} vs {a.get('baseline', 0):.3g}; {context(a)})" for a in false[:30])]
    text = "\n".join(lines)
    print("\n" + text)
    open(os.path.join(OUT, "results.md"), "w").write(text + "\n")
    json.dump(sorted(ALERTS.values(), key=lambda a: a["detected_at"]), open(os.path.join(OUT, "alerts.json"), "w"), indent=1)
    if not args.rescore:
        json.dump([[round(t, 3), round(d, 4), st] for t, d, st in RECORDS], open(os.path.join(OUT, "records.json"), "w"))
    json.dump({"seed": SEED, "args": vars(args), "t_start": t_start, "t_quiet": t_quiet, "t_quiet_end": t_quiet_end,
               "t_end": t_end, "step_s": step_used, "scenarios": per, "lags": LAGS,
               "samples": SAMPLES}, open(os.path.join(OUT, "timeline.json"), "w"), indent=1, default=str)
    log(f"results in {OUT}/results.md; alerts.json, timeline.json, series.json and server.log beside it")


def rescore(d):
    """Scores the run kept in `d` again (alerts.json, timeline.json, records.json), with its options."""
    global SEED, WARMUP
    tl = json.load(open(os.path.join(d, "timeline.json")))
    for k, v in tl["args"].items():
        if k not in ("rescore", "out"):
            setattr(args, k, v)
    SEED, WARMUP = tl["seed"], tl["t_quiet"] - tl["t_start"]
    for a in json.load(open(os.path.join(d, "alerts.json"))):
        ALERTS[a["id"]] = a
    ALERTS_API["status"] = 200
    RECORDS.extend(tuple(r) for r in json.load(open(os.path.join(d, "records.json"))))
    SAMPLES.extend(tuple(x) for x in tl["samples"])
    LAGS.extend(tuple(x) for x in tl["lags"])
    scenarios = []
    for r in tl["scenarios"]:
        s = Scenario(r["scenario"].split(" ")[0], r["target"], r["detail"])
        s.inject_t, s.remove_t, s.note = r["inject"], r["remove"], r["note"]
        scenarios.append(s)
    report(None, scenarios, tl["t_start"], tl["t_quiet"], tl["t_quiet_end"], tl["t_end"], tl["step_s"])


if __name__ == "__main__":
    if args.rescore:
        rescore(args.rescore)
    elif not (args.nimbus and args.chain_wasm):
        p.error("NIMBUS and CHAIN_WASM are needed (or --rescore DIR)")
    else:
        main()
