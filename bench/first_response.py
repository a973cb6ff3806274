#!/usr/bin/env python3
"""Process start -> first 200 response, for `nimbus up` with a warm compile cache, with no cache
(compiling at start), and for `wasmtime serve` (which compiles at every start) as the reference.

Usage: bench/first_response.py NIMBUS WASMTIME COMPONENT [RUNS]   (bench/first_response.sh wraps it)
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def first_response(cmd, port, env=None):
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    reply = s.recv(64)
                    if reply.startswith(b"HTTP/1.1 200"):
                        return (time.perf_counter() - started) * 1000
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited early with {proc.returncode}")
            if time.perf_counter() - started > 120:
                raise SystemExit("no response within 120 s")
            time.sleep(0.0005)
    finally:
        proc.terminate()
        proc.wait()


def main():
    nimbus, wasmtime, component = sys.argv[1:4]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    work = tempfile.mkdtemp()
    with open(os.path.join(work, "nimbus.toml"), "w") as f:
        f.write(f'[app]\nname = "first"\n[component.fn]\nsource = "{component}"\n'
                '[[trigger.http]]\nroute = "/..."\ncomponent = "fn"\n')
    cache = os.path.join(work, "cache")
    env = dict(os.environ, NIMBUS_LOG="warn")

    def nimbus_cmd(port, *extra):
        return [nimbus, "up", work, "--listen", f"127.0.0.1:{port}", "--cache-dir", cache, *extra]

    # Warm the cache once.
    p = free_port()
    first_response(nimbus_cmd(p), p, env)
    results = {}
    cases = [
        ("nimbus up, warm compile cache", lambda p: nimbus_cmd(p)),
        ("nimbus up --no-cache (compiles)", lambda p: nimbus_cmd(p, "--no-cache")),
    ]
    with open(component, "rb") as f:
        is_component = f.read(8)[4:8] != b"\x01\x00\x00\x00"
    if is_component:  # wasmtime serve runs components only, not WAGI modules
        cases.append(("wasmtime serve (own cache)", lambda p: [wasmtime, "serve", "-Scli", "--addr", f"127.0.0.1:{p}", component]))
    for name, make in cases:
        samples = []
        for _ in range(runs):
            p = free_port()
            samples.append(first_response(make(p), p, env))
        results[name] = samples
    print(f"process start -> first 200 response, {runs} runs each, component {os.path.basename(component)} "
          f"({os.path.getsize(component)} bytes)")
    print(f"{'':34} {'median ms':>10} {'min':>8} {'max':>8}")
    for name, s in results.items():
        print(f"{name:34} {statistics.median(s):10.1f} {min(s):8.1f} {max(s):8.1f}")


if __name__ == "__main__":
    main()
