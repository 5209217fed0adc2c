#!/usr/bin/env python3
"""pushgate benchmark driver (run it through bench/run, which builds first).

Every figure comes from processes this script starts and stops itself:

1. APNs upstream capacity: a fresh `pushgate mock apns --auth none` process,
   driven by h2load with the gateway's connection count, stream count,
   headers, payload and token set. That is the most any client gets from
   this mock on this machine.
2. APNs queue memory and API latency: a gateway whose upstream port is not
   listening yet (nothing is delivered), 10 POSTs of 100k tokens: POST
   latency without delivery load, RSS idle and with 1M tokens queued.
3. APNs end to end: a fresh mock and a gateway with its connections open;
   10 POSTs of 100k tokens back to back, timed from the first POST to
   `pending == 0` on /apns/report; CPU seconds and RSS of the gateway.
4. Legacy GCM and FCM v1, each: h2load against a fresh `pushgate mock fcm`
   with the gateway's request bodies, then the gateway end to end as in 3.
5. Web Push: h2load against a fresh `pushgate mock webpush` replaying one
   request the gateway's own code encrypted and signed (the mock decrypts and
   verifies every one, as it does for the gateway), then the gateway end to
   end as in 3; beside them `examples/webpush_crypto` measures, on one core,
   what one message's encryption costs (ephemeral key, ECDH, HKDF, AES-GCM).

Only the Python standard library is used; RSS and CPU come from /proc.
"""

import argparse
import atexit
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The notification every platform sends: the same bytes in the gateway's
# requests and in h2load's.
APNS_PAYLOAD = b'{"aps":{"alert":{"title":"pushgate bench","body":"Hello from the benchmark"},"sound":"default"}}'
GOOGLE_PAYLOAD = b'{"title":"pushgate bench","body":"Hello from the benchmark"}'
APNS_TOPIC = "com.example.bench"
KEY_ID, TEAM_ID = "BENCHKEY01", "BENCHTEAM1"
GCM_SERVER_KEY = "bench-server-key"
FCM_PROJECT = "pushgate-bench"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

# ---------------------------------------------------------------- processes

CHILDREN = []  # every Popen started here; killed on exit, whatever happens


def kill_all():
    for p in reversed(CHILDREN):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 5
    for p in reversed(CHILDREN):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    CHILDREN.clear()


atexit.register(kill_all)
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, lambda signum, frame: sys.exit(128 + signum))


def spawn(argv, log_path, env=None):
    log = open(log_path, "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    log.close()
    CHILDREN.append(p)
    return p


def stop(p):
    """Stops one child started by spawn(); SIGTERM first, then SIGKILL."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout=30.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"bench: process for {what} exited early (code {proc.returncode}); see logs in {OUT}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}; see logs in {OUT}")


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid):
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0
    return values["VmRSS"], values["VmHWM"]


# ---------------------------------------------------------------- upstreams


def start_mock_apns(args, tag):
    port = free_port()
    ca = os.path.join(OUT, f"{tag}-apns-ca.pem")
    if os.path.exists(ca):
        os.remove(ca)
    p = spawn(
        [args.bin, "mock", "apns", "--listen", f"127.0.0.1:{port}", "--auth", "none",
         "--write-ca", ca, "--max-streams", str(args.streams)],
        os.path.join(OUT, f"{tag}-mock-apns.log"), env=child_env(args))
    wait_until("mock APNs", lambda: os.path.exists(ca) and port_open(port), proc=p)
    return p, port, ca


def start_mock_fcm(args, tag):
    port = free_port()
    ca = os.path.join(OUT, f"{tag}-fcm-ca.pem")
    account = os.path.join(OUT, f"{tag}-service-account.json")
    for f in (ca, account):
        if os.path.exists(f):
            os.remove(f)
    p = spawn(
        [args.bin, "mock", "fcm", "--listen", f"127.0.0.1:{port}", "--project", FCM_PROJECT,
         "--server-key", GCM_SERVER_KEY, "--write-service-account", account, "--write-ca", ca],
        os.path.join(OUT, f"{tag}-mock-fcm.log"), env=child_env(args))
    wait_until("mock FCM", lambda: os.path.exists(account) and os.path.getsize(account) > 0
               and port_open(port), proc=p)
    return p, port, ca, account


def child_env(args):
    env = dict(os.environ)
    env.setdefault("PUSHGATE_LOG", "info")
    # Never let the operator's PUSHGATE_* settings leak into the bench config.
    for k in list(env):
        if k.startswith("PUSHGATE_") and k not in ("PUSHGATE_LOG", "PUSHGATE_LOG_FORMAT"):
            del env[k]
    return env


def provider_key():
    path = os.path.join(OUT, f"AuthKey_{KEY_ID}.p8")
    if not os.path.exists(path):
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", path], check=True, capture_output=True)
    return path


# ---------------------------------------------------------------- gateway


def data_dir(tag):
    return os.path.join(OUT, f"{tag}-data")


def dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def gateway_config(args, tag, listen_port, section, backend="memory", queue=""):
    # Each run gets a fresh data_dir: a disk run never reads another's store.
    shutil.rmtree(data_dir(tag), ignore_errors=True)
    text = f"""# written by bench/driver.py
[server]
listen = "127.0.0.1:{listen_port}"
max_body_bytes = 268435456

[queue]
capacity = {max(2 * args.tokens, 1_000_000)}
backend = "{backend}"
data_dir = "{data_dir(tag)}"
{queue}

{section}
"""
    path = os.path.join(OUT, f"{tag}-gateway.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def apns_section(args, port, ca):
    return f"""[apns]
endpoint = "https://127.0.0.1:{port}"
ca_file = "{ca}"
topic = "{APNS_TOPIC}"
key_file = "{provider_key()}"
key_id = "{KEY_ID}"
team_id = "{TEAM_ID}"
min_connections = {args.connections}
max_connections = {args.connections}
"""


def start_gateway(args, tag, section, backend="memory", queue=""):
    port = free_port()
    config = gateway_config(args, tag, port, section, backend, queue)
    p = spawn([args.bin, "serve", "--config", config], os.path.join(OUT, f"{tag}-gateway.log"),
              env=child_env(args))
    wait_until("gateway /healthz", lambda: http_get(port, "/healthz")[0] == 200, proc=p)
    return p, port


class Api:
    """One keep-alive HTTP/1.1 connection to the gateway."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def request(self, method, path, body=None):
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
        return r.status, r.read()

    def post(self, path, body):
        started = time.perf_counter()
        status, answer = self.request("POST", path, body)
        took = time.perf_counter() - started
        if status != 202:
            raise SystemExit(f"bench: POST {path} answered {status}: {answer[:300]!r}")
        accepted = json.loads(answer)["accepted"]
        return took, accepted

    def report(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise SystemExit(f"bench: GET {path} answered {status}: {body[:300]!r}")
        return json.loads(body)


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def upstream_connections(port, platform):
    status, body = http_get(port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("pushgate_upstream_connections{") and f'"{platform}"' in line:
            return int(float(line.split()[-1]))
    return 0


# ---------------------------------------------------------------- tokens and bodies


def apns_tokens(n):
    # 64 hex digits; the prefix steers clear of the mock's outcome prefixes.
    return [f"cafe{i:060x}" for i in range(n)]


def google_tokens(n):
    # About the length of a real FCM registration token (~150 characters).
    return [f"bench{i:08d}:APA91b" + "x" * 136 for i in range(n)]


def send_body(tokens, payload):
    return b'{"tokens":[' + ",".join(f'"{t}"' for t in tokens).encode() + b'],"payload":' + payload + b"}"


# ---------------------------------------------------------------- h2load


def h2load(args, tag, url_or_file, n, clients, streams, headers, data_file, window=(20, 23)):
    argv = ["h2load", "-n", str(n), "-c", str(clients), "-m", str(streams), "-t", str(args.h2load_threads),
            "-w", str(window[0]), "-W", str(window[1]), "-d", data_file]
    for h in headers:
        argv += ["-H", h]
    if url_or_file.startswith("https://"):
        argv.append(url_or_file)
    else:
        argv += ["-i", url_or_file]
    log = os.path.join(OUT, f"{tag}-h2load.log")
    with open(log, "wb") as f:
        f.write((" ".join(argv) + "\n").encode())
        f.flush()
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        CHILDREN.append(p)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        CHILDREN.remove(p)
    text = open(log).read()
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    if p.returncode != 0 or not m or not done:
        raise SystemExit(f"bench: h2load failed (exit {p.returncode}); see {log}")
    elapsed = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    return {
        "command": " ".join(argv),
        "requests": int(done.group(1)),
        "succeeded": int(done.group(4)),
        "failed": int(done.group(5)),
        "status_2xx": int(codes.group(1)) if codes else 0,
        "seconds": elapsed,
        "requests_per_s": float(m.group(3)),
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def fake_jwt():
    """An ES256 JWT of the real shape and length; `--auth none` does not verify it."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "ES256", "kid": KEY_ID}, separators=(",", ":")).encode())
    claims = b64(json.dumps({"iss": TEAM_ID, "iat": int(time.time())}, separators=(",", ":")).encode())
    return f"{head}.{claims}.{b64(os.urandom(64))}"


# ---------------------------------------------------------------- APNs


def apns_h2load(args, tokens):
    mock, port, _ca = start_mock_apns(args, "apns-h2load")
    uris = os.path.join(OUT, "apns-uris.txt")
    with open(uris, "w") as f:
        for t in tokens:
            f.write(f"https://127.0.0.1:{port}/3/device/{t}\n")
    payload = os.path.join(OUT, "apns-payload.json")
    with open(payload, "wb") as f:
        f.write(APNS_PAYLOAD)
    headers = [
        f"apns-topic: {APNS_TOPIC}",
        "apns-push-type: alert",
        "apns-id: 123e4567-e89b-12d3-a456-426614174000",
        "content-type: application/json",
        f"authorization: bearer {fake_jwt()}",
    ]
    cpu0 = cpu_seconds(mock.pid)
    result = h2load(args, "apns", uris, args.tokens, args.connections, args.streams, headers, payload)
    result["mock_cpu_s"] = cpu_seconds(mock.pid) - cpu0
    stop(mock)
    if result["status_2xx"] != args.tokens:
        raise SystemExit(f"bench: h2load got {result['status_2xx']} 2xx of {args.tokens}; see {OUT}/apns-h2load.log")
    return result


def apns_memory(args, bodies, backend="memory"):
    """The gateway with its upstream not listening: nothing leaves the queue."""
    dead_port = free_port()
    tag = "apns-memory" if backend == "memory" else f"apns-memory-{backend}"
    # Any CA will do: no connection ever succeeds. Borrow one from a short-lived mock.
    mock, _port, ca = start_mock_apns(args, tag)
    stop(mock)
    gw, port = start_gateway(args, tag, apns_section(args, dead_port, ca), backend)
    time.sleep(args.settle)
    idle_rss, _ = memory_mb(gw.pid)
    api = Api(port)
    latencies = []
    for body in bodies:
        took, _ = api.post("/apns/send", body)
        latencies.append(took)
    time.sleep(args.settle)
    queued_rss, hwm = memory_mb(gw.pid)
    pending = api.report("/apns/report")["pending"]
    stored = dir_bytes(data_dir(tag))
    stop(gw)
    return {
        "data_dir_bytes": stored,
        "data_dir_bytes_per_token": stored / max(pending, 1),
        "idle_rss_mb": idle_rss,
        "queued_rss_mb": queued_rss,
        "queued_hwm_mb": hwm,
        "queued_tokens": pending,
        "queued_above_idle_mb": queued_rss - idle_rss,
        "post_s": latencies,
    }


def deliver(args, tag, section, route, report_path, bodies, platform, mock, profile=False, backend="memory"):
    """Runs one gateway end to end: returns throughput, latency, CPU and memory."""
    gw, port = start_gateway(args, tag, section, backend)
    if platform == "apns":
        wait_until("gateway's APNs connections",
                   lambda: upstream_connections(port, "apns") >= args.connections, proc=gw)
    time.sleep(args.settle)
    idle_rss, _ = memory_mb(gw.pid)
    api = Api(port)
    perf = None
    if profile:
        perf_data = os.path.join(OUT, f"{tag}-perf.data")
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "250", "--call-graph", "dwarf,8192",
                                 "-p", str(gw.pid), "-o", perf_data],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(OUT, f"{tag}-perf.log"), "wb"))
        CHILDREN.append(perf)
        time.sleep(1.0)
    total = 0
    latencies = []
    gw_cpu0, mock_cpu0 = cpu_seconds(gw.pid), cpu_seconds(mock.pid)
    started = time.perf_counter()
    for body in bodies:
        took, accepted = api.post(route, body)
        latencies.append(took)
        total += accepted
    posted = time.perf_counter() - started
    peak_rss = 0.0
    while True:
        report = api.report(report_path)
        peak_rss = max(peak_rss, memory_mb(gw.pid)[0])
        if report["pending"] == 0:
            break
        if gw.poll() is not None:
            raise SystemExit(f"bench: gateway exited during the {tag} run; see {OUT}/{tag}-gateway.log")
        if time.perf_counter() - started > args.timeout:
            raise SystemExit(f"bench: {tag}: {report['pending']} tokens still pending after {args.timeout}s")
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    gw_cpu = cpu_seconds(gw.pid) - gw_cpu0
    mock_cpu = cpu_seconds(mock.pid) - mock_cpu0
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait()
        CHILDREN.remove(perf)
    _, hwm = memory_mb(gw.pid)
    stored = dir_bytes(data_dir(tag))
    stop(gw)
    successes = report.get("successes", 0)
    if successes != total:
        print(f"bench: warning: {tag}: {successes} successes of {total} accepted: {report}", file=sys.stderr)
    return {
        "tokens": total,
        "seconds": elapsed,
        "post_phase_s": posted,
        "tokens_per_s": total / elapsed,
        "post_s": latencies,
        "idle_rss_mb": idle_rss,
        "peak_rss_mb": max(peak_rss, hwm),
        "cpu_s": gw_cpu,
        "cpu_s_per_100k": gw_cpu / total * 100_000,
        "mock_cpu_s": mock_cpu,
        "data_dir_bytes_after": stored,
        "report": report,
    }


def apns_deliver(args, bodies, profile=False, backend="memory"):
    tag = f"apns-profile-{backend}" if profile else "apns" if backend == "memory" else f"apns-{backend}"
    mock, port, ca = start_mock_apns(args, tag)
    try:
        return deliver(args, tag, apns_section(args, port, ca), "/apns/send", "/apns/report", bodies,
                       "apns", mock, profile=profile, backend=backend)
    finally:
        stop(mock)


# ---------------------------------------------------------------- queue backends


def start_redis(args, tag):
    """A redis-server of our own on a free port: AOF with `appendfsync everysec`
    (the usual production setting), no RDB snapshots, in bench/out/<tag>-redis/."""
    if shutil.which("redis-server") is None:
        raise SystemExit("bench: --backends needs redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    data = os.path.join(OUT, f"{tag}-redis")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    p = spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
               "--appendonly", "yes", "--appendfsync", "everysec", "--dir", data],
              os.path.join(OUT, f"{tag}-redis.log"))
    wait_until("redis-server", lambda: port_open(port), proc=p)
    return p, port


def deliver_backend(args, tag, backend, gateways, bodies):
    """One APNs run with `gateways` gateways on `backend` ("memory" or "redis"),
    one fresh mock, the POSTs spread round-robin over the gateways; timed from
    the first POST to `pending == 0` (cluster-wide with redis). With redis,
    Redis's own CPU seconds (utime + stime from /proc) are recorded too."""
    mock, mport, ca = start_mock_apns(args, tag)
    redis, rport = (None, None)
    procs = []
    try:
        if backend == "redis":
            redis, rport = start_redis(args, tag)
        for i in range(gateways):
            queue = ""
            if backend == "redis":
                queue = f'redis_url = "redis://127.0.0.1:{rport}"\nconsumer = "{tag}-{i}"\n'
            gw, port = start_gateway(args, f"{tag}-{i}", apns_section(args, mport, ca), backend, queue)
            procs.append((gw, port))
        for gw, port in procs:
            wait_until("gateway's APNs connections",
                       lambda: upstream_connections(port, "apns") >= args.connections, proc=gw)
        time.sleep(args.settle)
        apis = [Api(port) for _, port in procs]
        cpu0 = [cpu_seconds(gw.pid) for gw, _ in procs]
        mock_cpu0 = cpu_seconds(mock.pid)
        redis_cpu0 = cpu_seconds(redis.pid) if redis else 0.0
        total = 0
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            _, accepted = apis[i % len(apis)].post("/apns/send", body)
            total += accepted
        while True:
            report = apis[0].report("/apns/report")
            pending = report["pending"] if backend == "redis" else sum(
                a.report("/apns/report")["pending"] for a in apis)
            if pending == 0:
                break
            for gw, _ in procs:
                if gw.poll() is not None:
                    raise SystemExit(f"bench: gateway exited during the {tag} run; see {OUT}")
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"bench: {tag}: {pending} tokens still pending after {args.timeout}s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        gw_cpu = sum(cpu_seconds(gw.pid) - c for (gw, _), c in zip(procs, cpu0))
        result = {
            "backend": backend,
            "gateways": gateways,
            "tokens": total,
            "seconds": elapsed,
            "tokens_per_s": total / elapsed,
            "gateway_cpu_s": gw_cpu,
            "mock_cpu_s": cpu_seconds(mock.pid) - mock_cpu0,
            "redis_cpu_s": (cpu_seconds(redis.pid) - redis_cpu0) if redis else None,
            "successes": report.get("successes"),
        }
        if backend == "redis":
            result["redis_cpu_s_per_100k"] = result["redis_cpu_s"] / total * 100_000
        return result
    finally:
        for gw, _ in procs:
            stop(gw)
        if redis is not None:
            stop(redis)
        stop(mock)


BACKEND_SETUPS = (("memory", 1), ("redis", 1), ("redis", 2))


def backends(args):
    """memory ×1, redis ×1, redis ×2, interleaved per round, medians reported."""
    per_job = args.backend_tokens // args.jobs
    bodies = [send_body(apns_tokens(per_job), APNS_PAYLOAD)] * args.jobs
    runs = {f"{b}x{n}": [] for b, n in BACKEND_SETUPS}
    for r in range(args.rounds):
        for backend, n in BACKEND_SETUPS:
            key = f"{backend}x{n}"
            runs[key].append(deliver_backend(args, f"backend-{key}", backend, n, bodies))
        print(f"bench: backends round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1]['tokens_per_s']:.0f} tokens/s" for k, v in runs.items()), file=sys.stderr)
    out = {k: median_run(v, "tokens_per_s") for k, v in runs.items()}
    base = out["memoryx1"]["tokens_per_s"]
    for k, v in out.items():
        v["vs_memory"] = v["tokens_per_s"] / base
        v["rounds_tokens_per_s"] = [x["tokens_per_s"] for x in runs[k]]
    return out


# ---------------------------------------------------------------- Google


def access_token(account_file, ca):
    """Signs a service-account assertion (RS256, with openssl) and trades it at the mock's /token."""
    account = json.load(open(account_file))
    key = os.path.join(OUT, "fcm-account-key.pem")
    with open(key, "w") as f:
        f.write(account["private_key"])

    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    now = int(time.time())
    head = {"alg": "RS256", "typ": "JWT", "kid": account.get("private_key_id", "")}
    claims = {"iss": account["client_email"], "scope": FCM_SCOPE, "aud": account["token_uri"],
              "iat": now, "exp": now + 3600}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                         capture_output=True, check=True).stdout
    form = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                   "assertion": f"{signing_input}.{b64(sig)}"}).encode()
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(account["token_uri"], data=form, context=ctx, timeout=10) as r:
        return json.load(r)["access_token"]


def google_h2load(args, kind, tokens, total):
    """h2load with the gateway's request body for `total` tokens (in batches for legacy GCM)."""
    mock, port, ca, account = start_mock_fcm(args, f"{kind}-h2load")
    data = json.dumps(json.loads(GOOGLE_PAYLOAD), separators=(",", ":"))
    body_file = os.path.join(OUT, f"{kind}-h2load-body.json")
    if kind == "gcm":
        batch = args.gcm_batch
        with open(body_file, "w") as f:
            f.write('{"registration_ids":[' + ",".join(f'"{t}"' for t in tokens[:batch]) + '],"data":' + data + "}")
        url = f"https://127.0.0.1:{port}/fcm/send"
        headers = [f"authorization: key={GCM_SERVER_KEY}", "content-type: application/json"]
        n = max(1, total // batch)
        streams = args.gcm_concurrency
    else:
        with open(body_file, "w") as f:
            f.write('{"message":{"token":"' + tokens[0] + '","data":' + data + "}}")
        url = f"https://127.0.0.1:{port}/v1/projects/{FCM_PROJECT}/messages:send"
        headers = [f"authorization: Bearer {access_token(account, ca)}", "content-type: application/json"]
        n = total
        streams = args.fcm_concurrency
    cpu0 = cpu_seconds(mock.pid)
    result = h2load(args, kind, url, n, 1, streams, headers, body_file)
    result["mock_cpu_s"] = cpu_seconds(mock.pid) - cpu0
    result["tokens_per_s"] = result["requests_per_s"] * (args.gcm_batch if kind == "gcm" else 1)
    stop(mock)
    if result["status_2xx"] != n:
        raise SystemExit(f"bench: h2load {kind}: {result['status_2xx']} 2xx of {n}; see {OUT}/{kind}-h2load.log")
    return result


def google_deliver(args, kind, bodies):
    mock, port, ca, account = start_mock_fcm(args, kind)
    if kind == "gcm":
        section = f"""[gcm]
server_key = "{GCM_SERVER_KEY}"
endpoint = "https://127.0.0.1:{port}/fcm/send"
ca_file = "{ca}"
batch_size = {args.gcm_batch}
concurrency = {args.gcm_concurrency}
"""
    else:
        section = f"""[fcm]
service_account_file = "{account}"
endpoint = "https://127.0.0.1:{port}"
ca_file = "{ca}"
concurrency = {args.fcm_concurrency}
# The bench measures the client, not Firebase's quota (600,000/min = 10k/s).
max_per_minute = 1000000000
connections = {args.fcm_connections}
"""
    try:
        return deliver(args, kind, section, "/gcm/send", "/gcm/report", bodies, kind, mock)
    finally:
        stop(mock)


# ---------------------------------------------------------------- Web Push

WEBPUSH_SEED = "pushgate-bench"


def vapid_key():
    path = os.path.join(OUT, "vapid.pem")
    if not os.path.exists(path):
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path],
                       check=True, capture_output=True)
    return path


def start_mock_webpush(args, tag, subscriptions=0, sample=None):
    port = free_port()
    ca = os.path.join(OUT, f"{tag}-webpush-ca.pem")
    subs = os.path.join(OUT, "webpush-subscriptions.json")
    argv = [args.bin, "mock", "webpush", "--listen", f"127.0.0.1:{port}", "--seed", WEBPUSH_SEED,
            "--write-ca", ca, "--vapid-key-file", vapid_key()]
    waits = [ca]
    if subscriptions:
        # The same seed gives the same keys: made once, valid for every mock of the run.
        argv += ["--subscriptions", str(subscriptions), "--subscriptions-out", subs]
        waits.append(subs)
    if sample:
        argv += ["--write-sample", sample]
        waits.append(sample + ".url")
    for f in waits:
        if os.path.exists(f):
            os.remove(f)
    p = spawn(argv, os.path.join(OUT, f"{tag}-mock-webpush.log"), env=child_env(args))
    wait_until("mock Web Push", lambda: all(os.path.exists(f) and os.path.getsize(f) > 0 for f in waits)
               and port_open(port), timeout=120, proc=p)
    return p, port, ca, subs


def webpush_subscriptions(args, n):
    mock, port, _ca, subs = start_mock_webpush(args, "webpush-subs", subscriptions=n)
    stop(mock)
    with open(subs) as f:
        return json.load(f), port


def webpush_h2load(args, total):
    sample = os.path.join(OUT, "webpush-sample")
    mock, port, _ca, _ = start_mock_webpush(args, "webpush-h2load", sample=sample)
    url = open(sample + ".url").read().strip()
    headers = [line for line in open(sample + ".headers").read().splitlines() if line.strip()]
    cpu0 = cpu_seconds(mock.pid)
    result = h2load(args, "webpush", url, total, 1, args.webpush_concurrency, headers, sample + ".body")
    result["mock_cpu_s"] = cpu_seconds(mock.pid) - cpu0
    result["tokens_per_s"] = result["requests_per_s"]
    stop(mock)
    if result["status_2xx"] != total:
        raise SystemExit(f"bench: h2load webpush: {result['status_2xx']} 2xx of {total}; see {OUT}/webpush-h2load.log")
    return result


def webpush_deliver(args, bodies, subs_port):
    mock, port, ca, _ = start_mock_webpush(args, "webpush")
    # Keys derive from the endpoint path alone: point the subscriptions at this mock.
    bodies = [b.replace(f"127.0.0.1:{subs_port}/".encode(), f"127.0.0.1:{port}/".encode()) for b in bodies]
    section = f"""[webpush]
vapid_key_file = "{vapid_key()}"
subject = "mailto:bench@example.com"
ca_file = "{ca}"
allowed_origins = ["https://127.0.0.1:{port}"]
concurrency = {args.webpush_concurrency}
"""
    try:
        return deliver(args, "webpush", section, "/webpush/send", "/webpush/report", bodies, "webpush", mock)
    finally:
        stop(mock)


def webpush_crypto(args):
    if not args.crypto_bin or not os.path.exists(args.crypto_bin):
        return None
    out = subprocess.run([args.crypto_bin, "20000"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def perf_table(argv):
    """perf report's rows, highest first, symbols cut to 150 characters."""
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    rows = [line.rstrip()[:180] for line in out.splitlines() if line.strip() and not line.startswith("#")]
    rows.sort(key=lambda line: -float(line.split("%")[0]))
    return "\n".join(rows) + "\n"


def median_run(runs, key):
    """The run whose `key` is the median (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]


def rounds(h2_runs, gw_runs, h2_key):
    return [{"h2load": h[h2_key], "gateway_tokens_per_s": g["tokens_per_s"],
             "gateway_cpu_s_per_100k": g["cpu_s_per_100k"], "ratio": g["tokens_per_s"] / h[h2_key]}
            for h, g in zip(h2_runs, gw_runs)]


def pct(values, q):
    """Nearest-rank percentile: with 10 samples p99 is the slowest one."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def latency(values):
    return {"p50_ms": statistics.median(values) * 1000, "p99_ms": pct(values, 99) * 1000,
            "all_ms": [round(v * 1000, 1) for v in values]}


def machine():
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    h2v = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_mb": mem, "kernel": os.uname().release,
            "h2load": h2v, "git_commit": rev, "load_average_at_start": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the release pushgate binary")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="tokens per platform (default 1000000)")
    ap.add_argument("--jobs", type=int, default=10, help="POSTs the tokens are split over (default 10)")
    ap.add_argument("--connections", type=int, default=2,
                    help="APNs connections: gateway min=max_connections and h2load -c (default 2)")
    ap.add_argument("--streams", type=int, default=1000,
                    help="mock APNs SETTINGS_MAX_CONCURRENT_STREAMS and h2load -m (default 1000, Apple's)")
    ap.add_argument("--h2load-threads", type=int, default=1, help="h2load -t (default 1)")
    ap.add_argument("--gcm-batch", type=int, default=1000, help="legacy ids per request (default 1000)")
    ap.add_argument("--gcm-concurrency", type=int, default=16, help="gcm.concurrency and h2load -m (default 16)")
    ap.add_argument("--fcm-concurrency", type=int, default=256, help="fcm.concurrency and h2load -m (default 256)")
    ap.add_argument("--fcm-connections", type=int, default=1,
                    help="fcm.connections: HTTP/2 connections (default 1); 0 = the reqwest client, for comparison")
    ap.add_argument("--google-tokens", type=int, default=None, help="tokens for GCM and FCM v1 (default --tokens)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="h2load/gateway pairs per platform, interleaved; medians are reported (default 3)")
    ap.add_argument("--backends", action="store_true",
                    help="also compare queue backends on APNs: memory x1, redis x1, redis x2 (starts its own redis-server)")
    ap.add_argument("--backend-tokens", type=int, default=200_000,
                    help="tokens per backend run (default 200000)")
    ap.add_argument("--webpush-tokens", type=int, default=100_000,
                    help="Web Push subscriptions (default 100000: each one costs an ECDH on both sides)")
    ap.add_argument("--webpush-concurrency", type=int, default=256,
                    help="webpush.concurrency and h2load -m (default 256)")
    ap.add_argument("--crypto-bin", default=None, help="the release examples/webpush_crypto binary")
    ap.add_argument("--only", choices=["apns", "gcm", "fcm", "webpush", "none"], action="append",
                    help="run only these platforms (repeatable; default all)")
    ap.add_argument("--profile", action="store_true",
                    help="after the measured runs, repeat the APNs run under `perf record` and write bench/out/profile.txt")
    ap.add_argument("--profile-backend", choices=["disk", "memory"], default="disk",
                    help="the queue backend of the profiled APNs run (default disk, the default backend)")
    ap.add_argument("--profile-tokens", type=int, default=300_000,
                    help="tokens in the profiled APNs run (default 300000: perf's DWARF stacks are large)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to let RSS settle before reading it")
    ap.add_argument("--timeout", type=float, default=600, help="longest a delivery run may take")
    ap.add_argument("--no-disk", action="store_true",
                    help="skip the APNs runs on the disk queue backend (default: beside memory in every round)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = ap.parse_args()

    if args.profile and shutil.which("perf") is None:
        raise SystemExit("bench: --profile needs perf (Debian: apt-get install linux-perf)")
    global OUT
    OUT = os.path.join(HERE, "out")
    os.makedirs(OUT, exist_ok=True)
    platforms = args.only or ["apns", "gcm", "fcm", "webpush"]
    per_job = args.tokens // args.jobs
    global JOB_LABEL
    JOB_LABEL = f"{per_job // 1000}k" if per_job >= 1000 else str(per_job)
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "parameters": {k: v for k, v in vars(args).items() if k not in ("bin", "out")}}
    print(f"bench: {results['machine']['cores']} cores, {results['machine']['cpu_model']}; logs in {OUT}", file=sys.stderr)
    if os.getloadavg()[0] > 0.5:
        print(f"bench: warning: load average {os.getloadavg()[0]:.1f}: other work on this machine skews every figure",
              file=sys.stderr)

    if "apns" in platforms:
        tokens = apns_tokens(per_job)
        # Every job carries the same per_job distinct tokens, so the mock's
        # per-token ledger does the same work for h2load (cycling over the
        # same URIs) as for the gateway.
        body = send_body(tokens, APNS_PAYLOAD)
        bodies = [body] * args.jobs
        print(f"bench: APNs: queue memory run (upstream not listening)", file=sys.stderr)
        mem = apns_memory(args, bodies)
        disk = not args.no_disk
        mem_disk = apns_memory(args, bodies, "disk") if disk else None
        h2_runs, gw_runs, disk_runs = [], [], []
        for r in range(args.rounds):
            # Interleaved, so a burst of other work on the machine hits every side alike.
            h2_runs.append(apns_h2load(args, tokens))
            gw_runs.append(apns_deliver(args, bodies))
            if disk:
                disk_runs.append(apns_deliver(args, bodies, backend="disk"))
            print(f"bench: APNs round {r + 1}/{args.rounds}: h2load {h2_runs[-1]['requests_per_s']:.0f} req/s, "
                  f"gateway {gw_runs[-1]['tokens_per_s']:.0f} tokens/s"
                  + (f", disk backend {disk_runs[-1]['tokens_per_s']:.0f} tokens/s" if disk else ""), file=sys.stderr)
        h2, e2e = median_run(h2_runs, "requests_per_s"), median_run(gw_runs, "tokens_per_s")
        results["apns"] = {
            "h2load": h2,
            "gateway": e2e,
            "memory": mem,
            "ratio": e2e["tokens_per_s"] / h2["requests_per_s"],
            "rounds": rounds(h2_runs, gw_runs, "requests_per_s"),
            "post_latency_loaded": latency([t for g in gw_runs for t in g["post_s"]]),
            "post_latency_queue_only": latency(mem["post_s"]),
        }
        e2e["peak_rss_mb"] = max(g["peak_rss_mb"] for g in gw_runs)
        print(f"bench: APNs: gateway {e2e['tokens_per_s']:.0f} tokens/s = {results['apns']['ratio']:.0%} of h2load "
              f"(medians of {args.rounds})", file=sys.stderr)
        if disk:
            d = median_run(disk_runs, "tokens_per_s")
            d["peak_rss_mb"] = max(g["peak_rss_mb"] for g in disk_runs)
            results["apns_disk"] = {
                "gateway": d,
                "memory": mem_disk,
                "ratio_to_memory": d["tokens_per_s"] / e2e["tokens_per_s"],
                "rounds": [{"disk_tokens_per_s": x["tokens_per_s"], "memory_tokens_per_s": y["tokens_per_s"],
                            "ratio": x["tokens_per_s"] / y["tokens_per_s"]} for x, y in zip(disk_runs, gw_runs)],
                "post_latency_loaded": latency([t for g in disk_runs for t in g["post_s"]]),
                "post_latency_queue_only": latency(mem_disk["post_s"]),
            }

    gtokens = args.google_tokens or args.tokens
    for kind in ("gcm", "fcm"):
        if kind not in platforms:
            continue
        tokens = google_tokens(gtokens // args.jobs)
        bodies = [send_body(tokens, GOOGLE_PAYLOAD)] * args.jobs
        label = "legacy GCM" if kind == "gcm" else "FCM v1"
        h2_runs, gw_runs = [], []
        for r in range(args.rounds):
            h2_runs.append(google_h2load(args, kind, tokens, gtokens))
            gw_runs.append(google_deliver(args, kind, bodies))
            print(f"bench: {label} round {r + 1}/{args.rounds}: h2load {h2_runs[-1]['tokens_per_s']:.0f} tokens/s, "
                  f"gateway {gw_runs[-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
        h2, e2e = median_run(h2_runs, "tokens_per_s"), median_run(gw_runs, "tokens_per_s")
        results[kind] = {"h2load": h2, "gateway": e2e, "ratio": e2e["tokens_per_s"] / h2["tokens_per_s"],
                         "rounds": rounds(h2_runs, gw_runs, "tokens_per_s"),
                         "post_latency_loaded": latency([t for g in gw_runs for t in g["post_s"]])}
        e2e["peak_rss_mb"] = max(g["peak_rss_mb"] for g in gw_runs)

    if args.backends:
        print("bench: queue backends: memory x1, redis x1, redis x2 (APNs)", file=sys.stderr)
        results["backends"] = backends(args)

    if "webpush" in platforms:
        per = max(1, args.webpush_tokens // args.jobs)
        subs, subs_port = webpush_subscriptions(args, per)
        payload = json.dumps(json.loads(GOOGLE_PAYLOAD), separators=(",", ":"))
        body = ('{"subscriptions":' + json.dumps(subs, separators=(",", ":")) + ',"payload":' + payload
                + ',"ttl":3600}').encode()
        bodies = [body] * args.jobs
        crypto = webpush_crypto(args)
        h2_runs, gw_runs = [], []
        for r in range(args.rounds):
            h2_runs.append(webpush_h2load(args, per * args.jobs))
            gw_runs.append(webpush_deliver(args, bodies, subs_port))
            print(f"bench: Web Push round {r + 1}/{args.rounds}: h2load {h2_runs[-1]['tokens_per_s']:.0f} req/s, "
                  f"gateway {gw_runs[-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
        h2, e2e = median_run(h2_runs, "tokens_per_s"), median_run(gw_runs, "tokens_per_s")
        results["webpush"] = {"h2load": h2, "gateway": e2e, "ratio": e2e["tokens_per_s"] / h2["tokens_per_s"],
                              "rounds": rounds(h2_runs, gw_runs, "tokens_per_s"), "crypto": crypto,
                              "post_latency_loaded": latency([t for g in gw_runs for t in g["post_s"]])}
        e2e["peak_rss_mb"] = max(g["peak_rss_mb"] for g in gw_runs)

    if args.profile and "apns" in platforms:
        print("bench: APNs again under perf record (figures above are from the run without it)", file=sys.stderr)
        prof_job = args.profile_tokens // args.jobs
        bodies = [send_body(apns_tokens(prof_job), APNS_PAYLOAD)] * args.jobs
        prof = apns_deliver(args, bodies, profile=True, backend=args.profile_backend)
        data = os.path.join(OUT, f"apns-profile-{args.profile_backend}-perf.data")
        flat = perf_table(["perf", "report", "-i", data, "--no-children", "--sort", "sym,dso",
                           "-F", "overhead,sym,dso", "--stdio", "--percent-limit", "0.7", "-g", "none"])
        tree = perf_table(["perf", "report", "-i", data, "--children", "--sort", "sym",
                           "--stdio", "--percent-limit", "4", "-g", "none"])
        with open(os.path.join(OUT, "profile.txt"), "w") as f:
            f.write(f"# APNs run under perf (cpu-clock, 250 Hz, DWARF stacks), {args.profile_backend} backend: {prof['tokens']} tokens, "
                    f"{prof['tokens_per_s']:.0f} tokens/s, peak RSS {prof['peak_rss_mb']:.0f} MB\n# self time\n{flat}\n"
                    f"# with children (inclusive)\n{tree}")
        results["apns_profile_run_tokens_per_s"] = prof["tokens_per_s"]
        print(f"bench: profile in {OUT}/profile.txt", file=sys.stderr)

    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for section in ("apns", "apns_disk", "gcm", "fcm", "webpush"):
        if section in results:
            results[section]["gateway"].pop("post_s", None)
            results[section].get("memory", {}).pop("post_s", None)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")
    print_table(results)
    print(f"\nwrote {os.path.relpath(args.out)}")


def print_table(r):
    rows = []
    budget = lambda ok: "ok" if ok else "MISSED"
    if "apns" in r:
        a = r["apns"]
        g, h, m = a["gateway"], a["h2load"], a["memory"]
        rows += [
            ("APNs gateway end to end", f"{g['tokens_per_s']:,.0f} tokens/s", f"{g['tokens']:,} tokens in {g['seconds']:.2f} s (median of {len(a['rounds'])} rounds)"),
            ("APNs h2load, same mock", f"{h['requests_per_s']:,.0f} req/s", "mock capacity: the most a client gets"),
            ("ratio gateway / h2load", f"{a['ratio']:.0%}", f"budget >= 60%: {budget(a['ratio'] >= 0.60)}; rounds: "
             + ", ".join(f"{x['ratio']:.0%}" for x in a["rounds"])),
            (f"POST {JOB_LABEL} tokens, while delivering", f"p50 {a['post_latency_loaded']['p50_ms']:.0f} ms",
             f"p99 {a['post_latency_loaded']['p99_ms']:.0f} ms; budget p50 <= 100 ms: {budget(a['post_latency_loaded']['p50_ms'] <= 100)}"),
            (f"POST {JOB_LABEL} tokens, queue only", f"p50 {a['post_latency_queue_only']['p50_ms']:.0f} ms",
             f"p99 {a['post_latency_queue_only']['p99_ms']:.0f} ms; budget p50 <= 100 ms: {budget(a['post_latency_queue_only']['p50_ms'] <= 100)}"),
            ("idle RSS (APNs connections open)", f"{g['idle_rss_mb']:.1f} MB", f"budget <= 15 MB: {budget(g['idle_rss_mb'] <= 15)}"),
            (f"RSS with {m['queued_tokens']:,} tokens queued", f"{m['queued_rss_mb']:.1f} MB",
             f"+{m['queued_above_idle_mb']:.1f} MB over idle {m['idle_rss_mb']:.1f}; budget +150 MB: {budget(m['queued_above_idle_mb'] <= 150)}"),
            ("peak RSS during delivery", f"{g['peak_rss_mb']:.1f} MB", ""),
            ("APNs CPU per 100k tokens", f"{g['cpu_s_per_100k']:.2f} s",
             f"gateway {g['cpu_s']:.1f} s, mock {g['mock_cpu_s']:.1f} s; h2load run: h2load {h['cpu_s']:.1f} s, mock {h['mock_cpu_s']:.1f} s"),
        ]
    if "apns_disk" in r:
        d = r["apns_disk"]
        g, m = d["gateway"], d["memory"]
        rows += [
            ("APNs, disk backend, end to end", f"{g['tokens_per_s']:,.0f} tokens/s",
             f"{d['ratio_to_memory']:.0%} of memory (goal >= 90%: {budget(d['ratio_to_memory'] >= 0.90)}); rounds: "
             + ", ".join(f"{x['ratio']:.0%}" for x in d["rounds"])),
            (f"disk: POST {JOB_LABEL} tokens incl. fsync, delivering", f"p50 {d['post_latency_loaded']['p50_ms']:.0f} ms",
             f"p99 {d['post_latency_loaded']['p99_ms']:.0f} ms; budget p50 <= 100 ms: {budget(d['post_latency_loaded']['p50_ms'] <= 100)}"),
            (f"disk: POST {JOB_LABEL} tokens incl. fsync, queue only", f"p50 {d['post_latency_queue_only']['p50_ms']:.0f} ms",
             f"p99 {d['post_latency_queue_only']['p99_ms']:.0f} ms; budget p50 <= 100 ms: {budget(d['post_latency_queue_only']['p50_ms'] <= 100)}"),
            (f"disk: RSS with {m['queued_tokens']:,} tokens queued", f"{m['queued_rss_mb']:.1f} MB",
             f"+{m['queued_above_idle_mb']:.1f} MB over idle {m['idle_rss_mb']:.1f}"),
            ("disk: data_dir bytes per queued token", f"{m['data_dir_bytes_per_token']:.1f} B",
             f"{m['data_dir_bytes'] / 1e6:.1f} MB for {m['queued_tokens']:,} tokens; after delivery {g['data_dir_bytes_after'] / 1e6:.1f} MB"),
        ]
    for kind, label in (("gcm", "legacy GCM"), ("fcm", "FCM v1")):
        if kind not in r:
            continue
        s = r[kind]
        g, h = s["gateway"], s["h2load"]
        extra = f"budget >= 50,000: {budget(g['tokens_per_s'] >= 50_000)}" if kind == "gcm" else ""
        rows += [
            (f"{label} gateway end to end", f"{g['tokens_per_s']:,.0f} tokens/s", f"{g['tokens']:,} tokens in {g['seconds']:.2f} s {extra}"),
            (f"{label} h2load, same mock", f"{h['tokens_per_s']:,.0f} tokens/s", f"{h['requests_per_s']:,.0f} req/s; ratio {s['ratio']:.0%} (rounds: "
             + ", ".join(f"{x['ratio']:.0%}" for x in s["rounds"]) + ")"),
            (f"{label} POST {JOB_LABEL} tokens", f"p50 {s['post_latency_loaded']['p50_ms']:.0f} ms", f"p99 {s['post_latency_loaded']['p99_ms']:.0f} ms"),
            (f"{label} RSS idle / peak", f"{g['idle_rss_mb']:.1f} / {g['peak_rss_mb']:.1f} MB", ""),
            (f"{label} CPU per 100k tokens", f"{g['cpu_s_per_100k']:.2f} s", f"gateway {g['cpu_s']:.1f} s, mock {g['mock_cpu_s']:.1f} s"),
        ]
    if "backends" in r:
        for key, b in r["backends"].items():
            cpu = f"gateways {b['gateway_cpu_s']:.1f} s"
            if b.get("redis_cpu_s") is not None:
                cpu += f", redis-server {b['redis_cpu_s']:.1f} s ({b['redis_cpu_s_per_100k']:.2f} s per 100k)"
            rows.append((f"APNs {b['backend']} x{b['gateways']} gateway(s)", f"{b['tokens_per_s']:,.0f} tokens/s",
                         f"{b['vs_memory']:.2f} of memory x1; {cpu}; rounds: "
                         + ", ".join(f"{x:,.0f}" for x in b["rounds_tokens_per_s"])))
    if "webpush" in r:
        s = r["webpush"]
        g, h, c = s["gateway"], s["h2load"], s.get("crypto") or {}
        rows += [
            ("Web Push gateway end to end", f"{g['tokens_per_s']:,.0f} tokens/s", f"{g['tokens']:,} subscriptions in {g['seconds']:.2f} s (median of {len(s['rounds'])} rounds)"),
            ("Web Push h2load, same mock", f"{h['tokens_per_s']:,.0f} req/s", f"ratio {s['ratio']:.0%} (rounds: "
             + ", ".join(f"{x['ratio']:.0%}" for x in s["rounds"]) + "); mock decrypts every message"),
            ("Web Push CPU per 100k", f"{g['cpu_s_per_100k']:.2f} s", f"gateway {g['cpu_s']:.1f} s, mock {g['mock_cpu_s']:.1f} s; h2load run: h2load {h['cpu_s']:.1f} s, mock {h['mock_cpu_s']:.1f} s"),
            ("Web Push POST", f"p50 {s['post_latency_loaded']['p50_ms']:.0f} ms", f"p99 {s['post_latency_loaded']['p99_ms']:.0f} ms"),
        ]
        if c:
            rows.append(("Web Push crypto per message (1 core)", f"{c['encrypt_us']:.0f} us",
                         f"ephemeral key {c['ephemeral_keygen_us']:.0f} us + ECDH {c['ecdh_us']:.0f} us + HKDF/AES {c['rest_of_encrypt_us']:.0f} us; "
                         f"bound {c['encrypt_bound_msgs_per_core_s']:,.0f} msgs/core/s; VAPID cached {c['vapid_cached_us']:.2f} us, signing {c['vapid_sign_us']:.0f} us"))
    if not rows:
        return
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    print()
    print(f"{'figure':<{w0}}  {'value':>{w1}}  notes")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 5}")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c}")


OUT = os.path.join(HERE, "out")
JOB_LABEL = "100k"

if __name__ == "__main__":
    main()
