"""Save-to-new-response time of `nimbus dev` for one app directory.

Usage: dev_reload.py NIMBUS APP_DIR SOURCE_FILE MARKER ROUNDS [NIMBUS_DEV_FLAG...]

Starts `nimbus dev APP_DIR` on a free loopback port, then ROUNDS times: rewrites SOURCE_FILE with
MARKER replaced by a new word, and polls the app (every 2 ms, on one keep-alive connection) until
the new word answers. The compile cache is a fresh directory, so every round compiles. Prints,
per round and as medians, the time from the write to the first new
response, and the build and load+swap times `nimbus dev` printed for that revision (the compiler's
own time is the build time).
"""

import http.client
import os
import re
import shutil
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


def get(conn):
    conn.request("GET", "/bench")
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def main():
    nimbus, app, source, marker, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    flags = sys.argv[6:]
    cache = tempfile.mkdtemp(prefix="nimbus-dev-bench-cache-")
    port = free_port()
    log = open(f"{app}/dev.log", "w+")
    # The templates' builds name their own target directory; a CARGO_TARGET_DIR would not matter,
    # but keep the build as a user's shell would run it.
    env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}
    env["NIMBUS_LOG"] = "warn"
    proc = subprocess.Popen(
        [nimbus, "dev", app, "--listen", f"127.0.0.1:{port}", "--cache-dir", cache, *flags],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.time() + 600
        while "Watching" not in open(f"{app}/dev.log").read():
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("nimbus dev did not start:\n" + open(f"{app}/dev.log").read())
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        current = marker
        results = []
        for i in range(1, rounds + 1):
            word = f"Round{i}x"
            text = open(source).read()
            time.sleep(0.5)
            start = time.perf_counter()
            with open(source, "w") as f:
                f.write(text.replace(current, word))
            current = word
            while True:
                status, body = get(conn)
                if status == 200 and word in body:
                    break
                time.sleep(0.002)
            took = (time.perf_counter() - start) * 1000
            revision = f"dev-{i + 1}"
            printed = None
            while printed is None:
                printed = re.search(rf"✓ {revision} serving, \d+ ms after the save \(build (\d+) ms, load and swap (\d+) ms\)", open(f"{app}/dev.log").read())
                time.sleep(0.01)
            build, load = int(printed.group(1)), int(printed.group(2))
            results.append((took, build, load))
            print(f"round {i}: save -> new response {took:.0f} ms (build {build} ms, load and swap {load} ms, rest {took - build - load:.0f} ms)")
        med = lambda k: statistics.median(r[k] for r in results)
        print(f"median ({' '.join(flags) or 'default'}): save -> new response {med(0):.0f} ms; build {med(1):.0f} ms; load and swap {med(2):.0f} ms; "
              f"without the compiler {med(0) - med(1):.0f} ms")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(cache, ignore_errors=True)


main()
