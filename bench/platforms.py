"""The platform steps of bench/run: APNs against the mock (h2load, queue
memory, end to end on memory and disk), queue backends, legacy GCM, FCM v1
and Web Push. Each starts its own mock and gateway processes."""

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from common import (APNS_PAYLOAD, Api, FCM_PROJECT, FCM_SCOPE, GCM_SERVER_KEY, GOOGLE_PAYLOAD, OUT, apns_section,
                    apns_h2load_headers, apns_tokens, child_env, cpu_seconds, data_dir, deliver, dir_bytes, free_port,
                    h2load, median_fields,
                    memory_mb, port_open, send_body, spawn, start_gateway, start_mock_apns, start_mock_fcm, stop,
                    upstream_connections, wait_until)


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
    headers = apns_h2load_headers()
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
    """One APNs run with `gateways` gateways on `backend` ("memory", "disk" or "redis"),
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


BACKEND_SETUPS = (("memory", 1), ("disk", 1), ("redis", 1), ("redis", 2))


def backends(args):
    """memory ×1, disk ×1, redis ×1, redis ×2, interleaved per round, medians
    reported; the redis setups only where redis-server is installed."""
    setups = BACKEND_SETUPS
    if shutil.which("redis-server") is None:
        setups = [s for s in setups if s[0] != "redis"]
        print("bench: backends: redis-server not found (Debian: apt-get install redis-server); "
              "memory and disk only", file=sys.stderr)
    print("bench: queue backends: " + ", ".join(f"{b} x{n}" for b, n in setups) + " (APNs, mock upstream)",
          file=sys.stderr)
    per_job = args.backend_tokens // args.jobs
    bodies = [send_body(apns_tokens(per_job), APNS_PAYLOAD)] * args.jobs
    runs = {f"{b}x{n}": [] for b, n in setups}
    for r in range(args.rounds):
        for backend, n in setups:
            key = f"{backend}x{n}"
            runs[key].append(deliver_backend(args, f"backend-{key}", backend, n, bodies))
        print(f"bench: backends round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1]['tokens_per_s']:.0f} tokens/s" for k, v in runs.items()), file=sys.stderr)
    out = {k: median_fields(v, "tokens_per_s") for k, v in runs.items()}
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
            "--write-ca", ca, "--vapid-key-file", vapid_key(), "--decrypt-every", str(args.webpush_decrypt_every)]
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
    loaded = []

    def parsed():
        # The mock writes the file while we wait: not empty is not complete
        # (20k subscriptions are past one 4 MiB write).
        try:
            with open(subs) as f:
                loaded.append(json.load(f))
            return True
        except ValueError:
            return False
    try:
        wait_until("the mock's subscriptions file", parsed, timeout=120, proc=mock)
    finally:
        stop(mock)
    return loaded[0], port


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


def webpush_deliver(args, bodies, subs_port, backend="memory"):
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
        return deliver(args, "webpush", section, "/webpush/send", "/webpush/report", bodies, "webpush", mock,
                       backend=backend)
    finally:
        stop(mock)


def webpush_body(subs):
    payload = json.dumps(json.loads(GOOGLE_PAYLOAD), separators=(",", ":"))
    return ('{"subscriptions":' + json.dumps(subs, separators=(",", ":")) + ',"payload":' + payload
            + ',"ttl":3600}').encode()


def webpush_crypto(args):
    if not args.crypto_bin or not os.path.exists(args.crypto_bin):
        return None
    out = subprocess.run([args.crypto_bin, "20000"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


