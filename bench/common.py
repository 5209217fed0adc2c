"""What every bench step shares: the processes it starts and stops, /proc
readings, the gateway's config and API, token sets and bodies, h2load, and
the statistics (medians, percentiles). Python standard library only.
"""

import atexit
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import threading


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Logs, keys, configs, data dirs; ignored by git. BENCH_OUT moves it, so two
# runs (a smoke run beside a long one) do not delete each other's data dirs.
OUT = os.environ.get("BENCH_OUT") or os.path.join(HERE, "out")
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


def children_of(pid):
    """The pids of `pid`'s children, from the ppid field of /proc/*/stat."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


def tree_cpu_seconds(pid):
    """cpu_seconds of `pid` and of its living children (nginx's workers)."""
    total = cpu_seconds(pid)
    for kid in children_of(pid):
        try:
            total += cpu_seconds(kid)
        except OSError:
            pass
    return total


def reset_peak(pid):
    """Resets VmHWM to the current RSS (clear_refs 5), so a later VmHWM is this run's peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler(threading.Thread):
    """Reads VmRSS of `pid` every `interval` seconds until stop(); keeps the highest."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_mb, self.samples = 0.0, 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.peak_mb = max(self.peak_mb, memory_mb(self.pid)[0])
                self.samples += 1
            except (OSError, KeyError):
                return
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        return self.peak_mb


def symbol_order(binary):
    """How many names of linker/symbol-order.txt the binary has ({"listed", "found"}), or None
    without `nm`. Few found means the list did not apply: a build that also built examples or
    tests (dev-dependency features change every symbol hash), or a new toolchain or dependency
    (run scripts/symbol-order). Idle RSS then reads about 4 MB higher."""
    listed_path = os.path.join(ROOT, "linker", "symbol-order.txt")
    if shutil.which("nm") is None or not os.path.exists(listed_path):
        return None
    with open(listed_path) as f:
        listed = {line.strip() for line in f if line.strip()}
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    names = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
    return {"listed": len(listed), "found": len(listed & names)}


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


def gateway_config(args, tag, listen_port, section, backend="memory", queue="", capacity=None, extra=""):
    # Each run gets a fresh data_dir: a disk run never reads another's store.
    shutil.rmtree(data_dir(tag), ignore_errors=True)
    if capacity is None:
        capacity = max(2 * args.tokens, 1_000_000)
    text = f"""# written by bench/driver.py
[server]
listen = "127.0.0.1:{listen_port}"
max_body_bytes = 268435456

[queue]
capacity = {capacity}
backend = "{backend}"
data_dir = "{data_dir(tag)}"
{queue}

{section}
{extra}
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


def start_gateway(args, tag, section, backend="memory", queue="", capacity=None, extra=""):
    port = free_port()
    config = gateway_config(args, tag, port, section, backend, queue, capacity, extra)
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


# Streamed sends: the N tokens `cafe` + 60 hex digits of 0..N-1 (apns_tokens(N)'s
# tokens, in order), rendered 4096 at a time from one shared tail table with a
# single bytes.join per block, so a client never holds more than one block and
# spends little CPU beside the gateway it measures.
BLOCK = 4096
_TAILS = [f"{j:03x}".encode() for j in range(BLOCK)]


def token_blocks(n):
    """(head, tails) per block: the tokens are head + tail for each tail."""
    for start in range(0, n, BLOCK):
        yield f"cafe{start // BLOCK:057x}".encode(), _TAILS[:min(BLOCK, n - start)]


def joined(head, tails, before, after, between=b""):
    """before + head + tail + after for every tail, `between` between them, as one bytes."""
    sep = after + between + before + head
    return before + head + sep.join(tails) + after


def ndjson_stream(n, payload, chunk_tokens=BLOCK):
    """Line 1, then one quoted token a line: yields one block of lines at a time."""
    yield b'{"payload":' + payload + b"}\n"
    for head, tails in token_blocks(n):
        yield joined(head, tails, b'"', b'"\n')


def json_bodies(n, jobs, payload):
    """The same N tokens as `jobs` JSON send bodies (each built whole, as a JSON client must)."""
    per = -(-n // jobs)
    bodies = []
    for start in range(0, n, per):
        count = min(per, n - start)
        parts = []
        i = start
        while i < start + count:
            blk, off = divmod(i, BLOCK)
            take = min(BLOCK - off, start + count - i)
            parts.append(joined(f"cafe{blk:057x}".encode(), _TAILS[off:off + take], b'"', b'"', b","))
            i += take
        bodies.append(b'{"tokens":[' + b",".join(parts) + b'],"payload":' + payload + b"}")
    return bodies


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


def apns_h2load_headers():
    """The gateway's APNs request headers, for h2load."""
    return [
        f"apns-topic: {APNS_TOPIC}",
        "apns-push-type: alert",
        "apns-id: 123e4567-e89b-12d3-a456-426614174000",
        "content-type: application/json",
        f"authorization: bearer {fake_jwt()}",
    ]


def fake_jwt():
    """An ES256 JWT of the real shape and length; `--auth none` does not verify it."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "ES256", "kid": KEY_ID}, separators=(",", ":")).encode())
    claims = b64(json.dumps({"iss": TEAM_ID, "iat": int(time.time())}, separators=(",", ":")).encode())
    return f"{head}.{claims}.{b64(os.urandom(64))}"




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
    gw_cpu0, mock_cpu0 = cpu_seconds(gw.pid), tree_cpu_seconds(mock.pid)
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
    mock_cpu = tree_cpu_seconds(mock.pid) - mock_cpu0
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


def median_fields(runs, key):
    """One dict for `runs`: every number is the median of its rounds (the mean
    of the middle two for an even count); what is not a number (a report, a
    command) comes from the run whose `key` is the median. `rounds_<field>`
    keeps the per-round values of `key` for the table."""
    base = dict(median_run(runs, key))
    for field, value in base.items():
        values = [r.get(field) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            base[field] = statistics.median(values)
    base["rounds"] = len(runs)
    base[f"rounds_{key}"] = [r[key] for r in runs]
    base["per_round"] = {f: [r.get(f) for r in runs] for f, v in base.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool) and f != "rounds"}
    return base


def pct(values, q):
    """Nearest-rank percentile: with 10 samples p99 is the slowest one."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def latency(values):
    return {"p50_ms": statistics.median(values) * 1000, "p99_ms": pct(values, 99) * 1000,
            "all_ms": [round(v * 1000, 1) for v in values]}


def load_average():
    one, five, fifteen = os.getloadavg()
    return {"1m": one, "5m": five, "15m": fifteen}


def ensure_tool(command, package):
    """Installs Debian's `package` when `command` is missing (as bench/run does for
    h2load); returns False, without failing the run, when that is not possible."""
    if shutil.which(command):
        return True
    print(f"bench: {command} missing, installing Debian {package}", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    try:
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bench: could not install {package}: {e}", file=sys.stderr)
    return shutil.which(command) is not None


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

