#!/usr/bin/env python3
"""Memory under a body of invalid tokens (issue 12, items 1 and 2).

Starts `pushgate demo` (the gateway wired to its mock upstreams) from the
binary given, then for each burst resets the peak RSS (/proc/PID/clear_refs),
sends it, and reads the peak (VmHWM) and, after a pause, the resting RSS:

  one:      a 6 MB POST /apns/send of 1,000,000 "zz" tokens
  four:     four of those in parallel
  valid:    one request of 900,000 valid tokens (the legitimate big job)

Prints one JSON line per burst. Compare binaries side by side in one run:
  bench/memory.py target/debug/pushgate /tmp/pushgate-before
"""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time


def rss_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else -1


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(port, body, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/apns/send", body, {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    out.append((r.status, len(data), data[:300]))
    conn.close()


def wait_ready(port, proc):
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("demo exited early")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/apns/report")
            r = conn.getresponse()
            r.read()
            if r.status == 200 and json.loads(conn and r and b"{}" or b"{}") is not None:
                # Wait until the demo's own sample jobs are done.
                conn.request("GET", "/apns/report")
                rep = json.loads(conn.getresponse().read())
                if rep.get("accepted", 0) > 0 and rep.get("pending", 1) == 0:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("demo not ready")


def measure(binary, label, settle_s):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "demo", "--listen", f"127.0.0.1:{port}", "--tokens", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PUSHGATE_LOG": "warn"},
    )
    try:
        wait_ready(port, proc)
        time.sleep(1)
        bad = json.dumps({"tokens": ["zz"] * 1_000_000, "payload": {"aps": {"alert": "hi"}}}).encode()
        valid = json.dumps(
            {"tokens": [f"{i:064x}" for i in range(1, 900_001)], "payload": {"aps": {"alert": "hi"}}}
        ).encode()
        idle = rss_kb(proc.pid, "VmRSS")
        for name, body, parallel in [("one", bad, 1), ("four", bad, 4), ("valid", valid, 1)]:
            reset_peak(proc.pid)
            before = rss_kb(proc.pid, "VmRSS")
            out = []
            threads = [threading.Thread(target=post, args=(port, body, out)) for _ in range(parallel)]
            started = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.time() - started
            peak = rss_kb(proc.pid, "VmHWM")
            time.sleep(settle_s)
            after = rss_kb(proc.pid, "VmRSS")
            print(
                json.dumps(
                    {
                        "binary": label,
                        "burst": name,
                        "body_mb": round(len(body) / 1e6, 1),
                        "status": sorted({s for s, _, _ in out}),
                        "answer_bytes": max(n for _, n, _ in out),
                        "idle_mb": round(idle / 1024),
                        "before_mb": round(before / 1024),
                        "peak_mb": round(peak / 1024),
                        "after_mb": round(after / 1024),
                        "took_s": round(took, 2),
                    }
                ),
                flush=True,
            )
            if name == "valid":
                # Delivery throughput of the 900,000 tokens through the mock.
                deadline = time.time() + 900
                while time.time() < deadline:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/apns/report")
                    rep = json.loads(conn.getresponse().read())
                    conn.close()
                    if rep.get("pending", 1) == 0:
                        break
                    time.sleep(0.2)
                done = time.time() - started
                time.sleep(settle_s)
                print(
                    json.dumps(
                        {
                            "binary": label,
                            "burst": "valid delivered",
                            "tokens_per_s": round(900_000 / done),
                            "delivered_s": round(done, 1),
                            "after_mb": round(rss_kb(proc.pid, "VmRSS") / 1024),
                        }
                    ),
                    flush=True,
                )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    settle = float(os.environ.get("SETTLE_S", "5"))
    for arg in sys.argv[1:]:
        label, _, binary = arg.rpartition("=")
        measure(binary, label or binary, settle)


if __name__ == "__main__":
    main()
