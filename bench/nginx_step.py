"""The APNs baseline of issue 23: nginx (HTTP/2 + TLS, `return 200` on
/3/device/) as the upstream, so the wire limit does not depend on our own
mock. Per round, each against a fresh nginx:

  h2load, distinct paths   the gateway's headers (a JWT-sized authorization),
                           payload, connections and streams; `/3/device/<token>`
                           over the same per-job token set the gateway sends
  h2load, one fixed path   the same, every request to one `/3/device/<token>`
  gateway, disk backend    (the default) `[apns] endpoint` = nginx, `ca_file` =
                           the bench CA that signed nginx's certificate
  gateway, memory backend  the same

nginx is Debian's (installed when missing); its config, certificate, logs
and temp files live in bench/out/nginx/.
"""

import os
import re
import shutil
import subprocess
import sys

from common import (APNS_PAYLOAD, OUT, apns_h2load_headers, apns_section, apns_tokens, deliver, ensure_tool,
                    free_port, h2load, median_fields, port_open, send_body, spawn, stop, tree_cpu_seconds, wait_until)

NGINX_DIR = os.path.join(OUT, "nginx")


def nginx_version():
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def pki():
    """A bench CA and a server certificate it signed for 127.0.0.1 (rustls
    will not take a self-signed CA certificate as the server's own)."""
    d = os.path.join(NGINX_DIR, "pki")
    ca, cert, key = (os.path.join(d, f) for f in ("ca.pem", "server.pem", "server.key"))
    if all(os.path.exists(f) for f in (ca, cert, key)):
        return ca, cert, key
    os.makedirs(d, exist_ok=True)
    ca_key, csr, ext = (os.path.join(d, f) for f in ("ca.key", "server.csr", "server.ext"))
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "30",
         "-subj", "/CN=pushgate bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "30", "-extfile", ext],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    return ca, cert, key


def start_nginx(args, tag):
    """A fresh nginx on a free port: HTTP/2 over TLS, 200 for anything under /3/device/."""
    ca, cert, key = pki()
    port = free_port()
    prefix = os.path.join(NGINX_DIR, tag)
    shutil.rmtree(prefix, ignore_errors=True)
    os.makedirs(os.path.join(prefix, "tmp"))
    version = nginx_version()
    # `http2 on;` arrived in 1.25.1; before it, `http2` is a parameter of `listen`.
    listen = (f"listen 127.0.0.1:{port} ssl;\n        http2 on;" if version >= (1, 25, 1)
              else f"listen 127.0.0.1:{port} ssl http2;")
    tmp = os.path.join(prefix, "tmp")
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""# written by bench/nginx_step.py
worker_processes {args.nginx_workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # One connection carries the whole run: no request cap, no idle close.
    keepalive_requests 2000000000;
    keepalive_timeout 3600s;
    http2_max_concurrent_streams {args.streams};
    server {{
        {listen}
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location /3/device/ {{ return 200; }}
    }}
}}
""")
    argv = ["nginx", "-p", prefix, "-c", conf, "-g", "daemon off;"]
    if version >= (1, 19, 5):
        argv[1:1] = ["-e", os.path.join(prefix, "error.log")]
    p = spawn(argv, os.path.join(OUT, f"{tag}-nginx.log"))
    wait_until("nginx", lambda: port_open(port), proc=p)
    return p, port, ca


def h2load_run(args, tag, tokens, fixed):
    nginx, port, _ca = start_nginx(args, tag)
    try:
        payload = os.path.join(OUT, "apns-payload.json")
        with open(payload, "wb") as f:
            f.write(APNS_PAYLOAD)
        if fixed:
            target = f"https://127.0.0.1:{port}/3/device/{tokens[0]}"
        else:
            target = os.path.join(OUT, f"{tag}-uris.txt")
            with open(target, "w") as f:
                for t in tokens:
                    f.write(f"https://127.0.0.1:{port}/3/device/{t}\n")
        cpu0 = tree_cpu_seconds(nginx.pid)
        result = h2load(args, tag, target, args.nginx_tokens, args.connections, args.streams,
                        apns_h2load_headers(), payload)
        result["mock_cpu_s"] = tree_cpu_seconds(nginx.pid) - cpu0
    finally:
        stop(nginx)
    if result["status_2xx"] != args.nginx_tokens:
        raise SystemExit(f"bench: h2load against nginx got {result['status_2xx']} 2xx of {args.nginx_tokens}; "
                         f"see {OUT}/{tag}-h2load.log")
    return result


def gateway_run(args, tag, bodies, backend):
    nginx, port, ca = start_nginx(args, tag)
    try:
        return deliver(args, tag, apns_section(args, port, ca), "/apns/send", "/apns/report", bodies,
                       "apns", nginx, backend=backend)
    finally:
        stop(nginx)


def run(args):
    if not ensure_tool("nginx", "nginx"):
        print("bench: nginx step skipped: nginx is not installed and could not be", file=sys.stderr)
        return {"error": "nginx not installed"}
    args.nginx_tokens = args.nginx_tokens or args.tokens
    per_job = args.nginx_tokens // args.jobs
    tokens = apns_tokens(per_job)
    bodies = [send_body(tokens, APNS_PAYLOAD)] * args.jobs
    runs = {"h2load_distinct": [], "h2load_fixed": [], "disk": [], "memory": []}
    for r in range(args.rounds):
        runs["h2load_distinct"].append(h2load_run(args, "nginx-h2load-distinct", tokens, fixed=False))
        runs["h2load_fixed"].append(h2load_run(args, "nginx-h2load-fixed", tokens, fixed=True))
        runs["disk"].append(gateway_run(args, "nginx-apns-disk", bodies, "disk"))
        runs["memory"].append(gateway_run(args, "nginx-apns-memory", bodies, "memory"))
        print(f"bench: nginx round {r + 1}/{args.rounds}: h2load distinct "
              f"{runs['h2load_distinct'][-1]['requests_per_s']:,.0f} req/s, fixed "
              f"{runs['h2load_fixed'][-1]['requests_per_s']:,.0f} req/s; gateway disk "
              f"{runs['disk'][-1]['tokens_per_s']:,.0f}, memory {runs['memory'][-1]['tokens_per_s']:,.0f} tokens/s",
              file=sys.stderr)
    out = {"tokens": args.nginx_tokens, "nginx": ".".join(map(str, nginx_version())),
           "workers": args.nginx_workers}
    for k in ("h2load_distinct", "h2load_fixed"):
        out[k] = median_fields(runs[k], "requests_per_s")
    for k in ("disk", "memory"):
        out[k] = median_fields(runs[k], "tokens_per_s")
        out[k].pop("post_s", None)
    d, m = out["disk"]["tokens_per_s"], out["memory"]["tokens_per_s"]
    out["disk_vs_distinct"] = d / out["h2load_distinct"]["requests_per_s"]
    out["disk_vs_fixed"] = d / out["h2load_fixed"]["requests_per_s"]
    out["memory_vs_distinct"] = m / out["h2load_distinct"]["requests_per_s"]
    out["disk_vs_memory"] = d / m
    out["rounds"] = [{
        "disk_vs_distinct": dk["tokens_per_s"] / hd["requests_per_s"],
        "disk_vs_fixed": dk["tokens_per_s"] / hf["requests_per_s"],
        "memory_vs_distinct": mm["tokens_per_s"] / hd["requests_per_s"],
        "disk_vs_memory": dk["tokens_per_s"] / mm["tokens_per_s"],
    } for hd, hf, dk, mm in zip(runs["h2load_distinct"], runs["h2load_fixed"], runs["disk"], runs["memory"])]
    return out
