"""Service figures, side by side in one run, loopback only:
1. proxy overhead: wrk against the Go template service directly, through nginx `proxy_pass` (upstream
   keep-alive), through `bench/hyper-proxy` (hyper and tokio proxying and nothing else: the floor of
   Nimbus's stack; $HYPER_PROXY) and through `nimbus up` (its own process of the same binary), with
   the service sandboxed (the default) and with `--unsandboxed-services`, interleaved rounds;
2. scale-from-zero first response for the Python and Java templates, cold (`initial = 0`) vs with a
   prewarmed spare (`warm = 1`).
Usage: services.py NIMBUS APPS_DIR RUNS (APPS_DIR holds bench-go, built, bench-python and bench-java
from `nimbus new service-LANG`; RUNS = 0 skips part 2). With BASELINE_NIMBUS=PATH, part 1 also
measures another nimbus binary (e.g. a build of an earlier commit) in the same rounds."""
import atexit, os, random, re, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

NIMBUS, APPS, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
GO_BIN = os.path.join(APPS, "bench-go", "service")
ENV = {**os.environ, "NIMBUS_LOG": "warn"}
STARTED = []  # every server this script starts, stopped when it exits (also on an error)


def start(args, **kwargs):
    p = subprocess.Popen(args, stdout=kwargs.pop("stdout", subprocess.DEVNULL), stderr=subprocess.DEVNULL, **kwargs)
    STARTED.append(p)
    return p


def stop(processes):
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        p.wait()


atexit.register(lambda: stop(STARTED))


def descendants(pid):
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return children + [d for c in children for d in descendants(c)]


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_http(url, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url).read(); return
        except Exception:
            time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {url}")


def cpu_ticks(pids):
    """User and system clock ticks used so far by the processes `pids` (all their threads)."""
    user = system = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def machine_ticks():
    """Clock ticks every core spent busy so far (all processes, the kernel's softirqs included)."""
    fields = [int(f) for f in open("/proc/stat").readline().split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]


def wrk(url, pids=(), backend=()):
    """wrk's figures, and per request in us: the CPU the proxy `pids` spent (user, system), the
    CPU its backend spent (user + system), and the CPU the whole machine spent."""
    before, backend_before, machine_before = cpu_ticks(pids), sum(cpu_ticks(backend)), machine_ticks()
    run = subprocess.run(["wrk", "-t2", "-c64", "-d10s", "--latency", url], capture_output=True, text=True)
    out = run.stdout
    after, backend_after, machine_after = cpu_ticks(pids), sum(cpu_ticks(backend)), machine_ticks()
    if "Requests/sec" not in out:
        raise SystemExit(f"wrk against {url} printed no figures:\n{out}{run.stderr}\nconfigs: {[(c[0], c[1]) for c in configs]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    cpu = tuple((a - b) * tick_us / n for a, b in zip(after, before))
    cpu += ((backend_after - backend_before) * tick_us / n, (machine_after - machine_before) * tick_us / n)
    lat = {p: re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1) for p in ("50", "99")}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return rps, lat["50"], lat["99"], (int(bad.group(1)) if bad else 0), (errs.group(1) if errs else "none"), cpu


def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000


def nimbus_up(app_dir, nimbus=NIMBUS, extra=()):
    port = free_port()
    p = start([nimbus, "up", app_dir, "--listen", f"127.0.0.1:{port}", "--no-cache", *extra], stdout=subprocess.PIPE, text=True, env=ENV)
    for line in p.stdout:
        if line.startswith("Health check"): break
    return p, port


# 1. Proxy overhead.
direct_port = free_port()
direct = start([GO_BIN], env={"PORT": str(direct_port), "PATH": os.environ["PATH"]})
wait_http(f"http://127.0.0.1:{direct_port}/healthz")

conf_dir = tempfile.mkdtemp()
nginx_port = free_port()
open(os.path.join(conf_dir, "nginx.conf"), "w").write(f"""
worker_processes auto;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream backend {{ server 127.0.0.1:{direct_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
""")
nginx = start(["nginx", "-c", os.path.join(conf_dir, "nginx.conf"), "-g", "daemon off;"])
wait_http(f"http://127.0.0.1:{nginx_port}/healthz")

app = tempfile.mkdtemp()
os.chmod(app, 0o755)  # the sandbox's user (`nobody`) reads the tree; mkdtemp makes it 0700
shutil.copy(GO_BIN, os.path.join(app, "service"))
open(os.path.join(app, "nimbus.toml"), "w").write("""[app]
name = "bench"
[component.api]
command = ["./service"]
readiness = { path = "/healthz" }
limits = { max_concurrency = 10000 }
scale = { min = 1, max = 1 }
[[trigger.http]]
route = "/..."
component = "api"
""")
up, up_port = nimbus_up(app)
# The same app without the service sandbox (bubblewrap, its network namespace and the gateway's
# connections opened inside it): the sandbox's cost on the proxy path.
plain_app = tempfile.mkdtemp()
os.chmod(plain_app, 0o755)
for f in ("service", "nimbus.toml"):
    shutil.copy(os.path.join(app, f), plain_app)
plain, plain_port = nimbus_up(plain_app, extra=["--unsandboxed-services"])
baseline_binary = os.environ.get("BASELINE_NIMBUS")
if baseline_binary:
    baseline_app = tempfile.mkdtemp()
    os.chmod(baseline_app, 0o755)
    for f in ("service", "nimbus.toml"):
        shutil.copy(os.path.join(app, f), baseline_app)
    baseline, baseline_port = nimbus_up(baseline_app, baseline_binary)
floor_port = free_port()
floor = start([os.environ["HYPER_PROXY"], str(floor_port), str(direct_port)])
wait_http(f"http://127.0.0.1:{floor_port}/healthz")

nginx_pids = [nginx.pid] + descendants(nginx.pid)
# Each config: name, port, the proxy's processes, its backend's (nimbus runs its own copy of the service).
configs = [("direct to the Go service", direct_port, [direct.pid], []),
           ("nginx proxy_pass", nginx_port, nginx_pids, [direct.pid]),
           ("hyper floor (hyper-proxy)", floor_port, [floor.pid], [direct.pid]),
           ("nimbus up", up_port, [up.pid], descendants(up.pid)),
           ("nimbus up, unsandboxed", plain_port, [plain.pid], descendants(plain.pid))]
if baseline_binary:
    configs.append(("nimbus up (BASELINE_NIMBUS)", baseline_port, [baseline.pid], descendants(baseline.pid)))
BASELINE = len(configs) - 1
ROUNDS = int(os.environ.get("ROUNDS", "3"))
results = {name: [] for name, _, _, _ in configs}
for i in range(ROUNDS):
    # Each round starts one config later, so that none always follows the same neighbour.
    for name, port, pids, backend in configs[i % len(configs):] + configs[:i % len(configs)]:
        results[name].append(wrk(f"http://127.0.0.1:{port}/orders/42", pids, backend))
stop(STARTED)

print(f"proxy overhead (wrk -t2 -c64 -d10s, GET /orders/42 on the Go template service; median of {ROUNDS} interleaved rounds;")
print("  cpu = CPU time per request of the process (the backend itself, or the proxy without its backend),")
print("  of its backend, and of the whole machine (wrk included), which is what bounds req/s on a saturated host):")
med = {}
for name, rs in results.items():
    med[name] = (statistics.median(r[0] for r in rs), statistics.median(ms(r[1]) for r in rs), statistics.median(ms(r[2]) for r in rs))
    user, system, backend, machine = (statistics.median(r[5][i] for r in rs) for i in range(4))
    print(f"  {name:<26} {med[name][0]:>9.0f} req/s  p50 {med[name][1]:.2f} ms  p99 {med[name][2]:.2f} ms  "
          f"cpu {user:.1f} us user + {system:.1f} us sys, backend {backend:.1f} us, machine {machine:.1f} us  "
          f"(rounds {', '.join(f'{r[0]:.0f}' for r in rs)}; non-2xx {sum(r[3] for r in rs)}; socket errors {rs[0][4]})")
d, n, h, u = (med[c[0]] for c in configs[:4])
print(f"  nimbus / nginx req/s: {u[0]/n[0]:.3f}x;  hyper floor / nginx: {h[0]/n[0]:.3f}x;  nimbus / hyper floor: "
      f"{u[0]/h[0]:.3f}x;  nimbus / direct: {u[0]/d[0]:.3f}x")
print(f"  added p99 vs direct: nimbus {u[2]-d[2]:+.2f} ms, nginx {n[2]-d[2]:+.2f} ms, hyper floor {h[2]-d[2]:+.2f} ms")
def interval(ratios):
    """The median of per-round ratios and a bootstrap 95 % interval of it."""
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), medians[50], medians[1949]


summaries = [("nimbus", configs[3][0]), ("nimbus unsandboxed", configs[4][0]), ("hyper floor", configs[2][0])]
if baseline_binary:
    summaries.append(("baseline", configs[BASELINE][0]))
for name, config in summaries:
    rounds = [a[0] / b[0] for a, b in zip(results[config], results[configs[1][0]])]
    mid, low, high = interval(rounds)
    print(f"  {name} / nginx req/s by round: median {mid:.3f} (95 % bootstrap interval {low:.3f}-{high:.3f}): "
          f"{', '.join(f'{r:.3f}' for r in rounds)}")
sandboxed = [a[0] / b[0] for a, b in zip(results[configs[3][0]], results[configs[4][0]])]
mid, low, high = interval(sandboxed)
p = med[configs[4][0]]
print(f"  sandbox cost: sandboxed / unsandboxed req/s {u[0]/p[0]:.3f}x (by round: median {mid:.3f}, 95 % bootstrap "
      f"interval {low:.3f}-{high:.3f}); added p99 {u[2]-p[2]:+.2f} ms")
if baseline_binary:
    b = med[configs[BASELINE][0]]
    print(f"  baseline / nginx req/s: {b[0]/n[0]:.3f}x;  nimbus / baseline: {u[0]/b[0]:.3f}x")

# 2. Scale from zero: the first request to a service with no process, vs with a prewarmed spare.
for language, command in [] if RUNS == 0 else (("python", '["python3", "server.py"]'), ("java", '["java", "-Xmx256m", "Server.java"]')):
    src = os.path.join(APPS, f"bench-{language}")
    for mode, scale in (("cold (initial = 0)", "min = 0, initial = 0"), ("prewarmed (warm = 1)", "min = 0, initial = 0, warm = 1")):
        times = []
        for _ in range(RUNS):
            app = tempfile.mkdtemp()
            os.chmod(app, 0o755)
            for f in os.listdir(src):
                if f not in ("nimbus.toml", ".gitignore"): shutil.copy(os.path.join(src, f), app)
            open(os.path.join(app, "nimbus.toml"), "w").write(f"""[app]
name = "zero"
[component.api]
command = {command}
readiness = {{ path = "/healthz", period_ms = 10 }}
limits = {{ memory_mb = 1024 }}
scale = {{ {scale}, max = 2, idle_timeout_s = 300 }}
[[trigger.http]]
route = "/..."
component = "api"
""")
            p, port = nimbus_up(app)
            if "warm" in scale:
                time.sleep(6 if language == "java" else 2)  # the spare starts on the autoscaler's first tick
            t0 = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/orders/1").read()
            times.append(time.perf_counter() - t0)
            stop([p])
        times.sort()
        print(f"first response, {language}, {mode}: median {statistics.median(times)*1e3:.1f} ms, min {times[0]*1e3:.1f} ms, max {times[-1]*1e3:.1f} ms ({RUNS} runs)")
