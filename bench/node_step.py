"""Optional baselines (issue 23), run only where `node` and `npm` exist:

  @parse/node-apn   a MultiProvider with `--connections` clients sends the
                    same notification to N distinct tokens against a fresh
                    nginx (bench/nginx_step.py), one warm-up push first so the
                    connections are open, as the gateway's are; send() takes
                    100 tokens at a time, connections x streams in flight
                    (all N at once overflow node's http2 session memory and
                    most fail with ENHANCE_YOUR_CALM); beside it the
                    gateway (disk, the default) delivers the same N tokens,
                    one POST, to a fresh nginx.
  web-push          node web-push sends to N subscriptions of the mock Web
                    Push service, `--webpush-concurrency` requests in flight
                    over keep-alive HTTPS; beside it the gateway (disk, the
                    default) delivers the same N subscriptions, one POST, to
                    a fresh mock.

Both packages are installed with npm, at pinned versions, into a cache
directory (~/.cache/pushgate-bench/node, or $BENCH_NODE_DIR; never globally);
without node or npm, or when the install fails, the table says so and the
rest of the run goes on. Each round runs node first, then the gateway.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys

import nginx_step
import platforms
from common import (APNS_PAYLOAD, APNS_TOPIC, GOOGLE_PAYLOAD, KEY_ID, OUT, TEAM_ID, apns_section, apns_tokens, deliver,
                    median_fields, provider_key, send_body, stop)

# npm installs into a cache outside the tree (BENCH_NODE_DIR moves it): one
# install serves every clone and worktree and survives `git clean`.
NODE_DIR = os.environ.get("BENCH_NODE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pushgate-bench", "node")
# Pinned, so runs months apart compare the same baselines (the version goes in the results).
PACKAGES = {"apn": ("@parse/node-apn", "8.1.0"), "webpush": ("web-push", "3.6.7")}

APN_JS = r"""
// written by bench/node_step.py: @parse/node-apn against the bench's nginx
const apn = require('@parse/node-apn');
const fs = require('fs');
const [address, port, ca, key, keyId, teamId, topic, tokensFile, payloadFile, clients, inflight] = process.argv.slice(2);
const tokens = fs.readFileSync(tokensFile, 'utf8').split('\n').filter(Boolean);
const provider = new apn.MultiProvider({
  token: { key, keyId, teamId }, address: `${address}:${port}`, port: +port, ca: [fs.readFileSync(ca)],
  production: false, clientCount: +clients, requestTimeout: 600000,
});
const note = new apn.Notification();
note.rawPayload = JSON.parse(fs.readFileSync(payloadFile, 'utf8'));
note.topic = topic;
note.pushType = 'alert';
(async () => {
  // Warm up every client's connection (the gateway's are open before its clock starts).
  await Promise.all(Array.from({ length: +clients }, () => provider.send(note, tokens[0])));
  // All N in one send() opens N streams at once: past node's maxSessionMemory
  // the session refuses them (ENHANCE_YOUR_CALM). Send as a careful user
  // would: slices of CHUNK, at most `inflight` tokens (clients x streams) out.
  const CHUNK = 100;
  let next = 0, sent = 0, failed = 0, firstFailure = null;
  async function worker() {
    while (next < tokens.length) {
      const slice = tokens.slice(next, next += CHUNK);
      const res = await provider.send(note, slice);
      sent += res.sent.length;
      failed += res.failed.length;
      if (!firstFailure && res.failed[0]) {
        firstFailure = String(res.failed[0].error || JSON.stringify(res.failed[0].response));
      }
    }
  }
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.max(1, Math.floor(+inflight / CHUNK)) }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage();
  console.log(JSON.stringify({ sent, failed, seconds, first_failure: firstFailure,
    cpu_s: (cpu.user + cpu.system) / 1e6 }));
  provider.shutdown();
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
"""

WEBPUSH_JS = r"""
// written by bench/node_step.py: node web-push against the bench's mock push service
const webpush = require('web-push');
const https = require('https');
const fs = require('fs');
const [subsFile, publicKey, privateKey, subject, concurrency, payload] = process.argv.slice(2);
const subs = JSON.parse(fs.readFileSync(subsFile, 'utf8'));
const agent = new https.Agent({ keepAlive: true, maxSockets: +concurrency });
const options = { vapidDetails: { subject, publicKey, privateKey }, TTL: 3600, agent };
let next = 0, ok = 0, failed = 0, firstFailure = null;
async function worker() {
  while (next < subs.length) {
    const s = subs[next++];
    try { await webpush.sendNotification(s, payload, options); ok++; }
    catch (e) { failed++; if (!firstFailure) firstFailure = `${e.statusCode} ${e.body || e.message}`; }
  }
}
(async () => {
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: +concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage();
  console.log(JSON.stringify({ sent: ok, failed, seconds, first_failure: firstFailure,
    cpu_s: (cpu.user + cpu.system) / 1e6 }));
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
"""


def installed_version(package):
    path = os.path.join(NODE_DIR, "node_modules", *package.split("/"), "package.json")
    try:
        with open(path) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return None


def install(args):
    """{key: version or None}; installs what is missing into NODE_DIR unless told not to;
    None without node or npm."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    os.makedirs(NODE_DIR, exist_ok=True)
    missing = [f"{name}@{version}" for name, version in PACKAGES.values() if installed_version(name) != version]
    if missing and not args.no_node_install:
        print(f"bench: npm install {' '.join(missing)} into {NODE_DIR}", file=sys.stderr)
        log = os.path.join(OUT, "node-npm-install.log")
        with open(log, "wb") as f:
            done = subprocess.run(["npm", "install", "--prefix", NODE_DIR, "--no-audit", "--no-fund",
                                   "--loglevel=error", *missing], stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=600)
        if done.returncode != 0:
            print(f"bench: npm install failed (see {log}); node baselines not measured", file=sys.stderr)
    return {k: installed_version(name) for k, (name, _) in PACKAGES.items()}


def run_node(script_name, script, argv, env=None):
    path = os.path.join(NODE_DIR, script_name)
    with open(path, "w") as f:
        f.write(script)
    log = os.path.join(OUT, script_name.replace(".js", ".log"))
    with open(log, "ab") as f:
        done = subprocess.run(["node", path, *argv], cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=f,
                              stdin=subprocess.DEVNULL, env=env, timeout=3600)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench: node {script_name} failed (exit {done.returncode}); see {log}")
    result = json.loads(lines[-1])
    result["tokens_per_s"] = result["sent"] / result["seconds"]
    if result["failed"]:
        print(f"bench: warning: node {script_name}: {result['failed']} failed, first: {result['first_failure']}",
              file=sys.stderr)
    return result


def node_apn_round(args, tokens_file, n):
    nginx, port, ca = nginx_step.start_nginx(args, "node-apn-nginx")
    try:
        payload = os.path.join(OUT, "apns-payload.json")
        with open(payload, "wb") as f:
            f.write(APNS_PAYLOAD)
        return run_node("apn-bench.js", APN_JS, ["127.0.0.1", str(port), ca, provider_key(), KEY_ID, TEAM_ID,
                                                 APNS_TOPIC, tokens_file, payload, str(args.connections),
                                                 str(args.connections * args.streams)])
    finally:
        stop(nginx)


def gateway_apn_round(args, body):
    nginx, port, ca = nginx_step.start_nginx(args, "node-apn-gateway-nginx")
    try:
        return deliver(args, "node-apn-gateway", apns_section(args, port, ca), "/apns/send", "/apns/report",
                       [body], "apns", nginx, backend="disk")
    finally:
        stop(nginx)


def vapid_raw():
    """The bench VAPID key (SEC1 PEM) as web-push wants it: base64url raw public point and private scalar."""
    der = subprocess.run(["openssl", "ec", "-in", platforms.vapid_key(), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    if der[5:7] != b"\x04\x20":
        raise SystemExit("bench: unexpected VAPID key encoding")
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return b64(der[-65:]), b64(der[7:39])


def node_webpush_round(args, subs, subs_port):
    mock, port, ca, _ = platforms.start_mock_webpush(args, "node-webpush")
    try:
        subs_file = os.path.join(OUT, "node-webpush-subscriptions.json")
        with open(subs_file, "w") as f:
            f.write(json.dumps(subs).replace(f"127.0.0.1:{subs_port}/", f"127.0.0.1:{port}/"))
        public, private = vapid_raw()
        payload = json.dumps(json.loads(GOOGLE_PAYLOAD), separators=(",", ":"))
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=ca)
        return run_node("webpush-bench.js", WEBPUSH_JS, [subs_file, public, private, "mailto:bench@example.com",
                                                         str(args.webpush_concurrency), payload], env=env)
    finally:
        stop(mock)


def compare(args, label, node_round, gateway_round, n, version, wire_round=None):
    """Node and the gateway, round by round; with `wire_round`, h2load against the same upstream too:
    the ratio no client can beat there (the wire limit over node)."""
    node_runs, gw_runs, wire_runs = [], [], []
    for r in range(args.rounds):
        node_runs.append(node_round())
        gw_runs.append(gateway_round())
        wire = ""
        if wire_round:
            wire_runs.append(wire_round())
            wire = f", h2load {wire_runs[-1]['requests_per_s']:,.0f}/s"
        print(f"bench: {label} round {r + 1}/{args.rounds}: node {node_runs[-1]['tokens_per_s']:,.0f}/s, "
              f"gateway {gw_runs[-1]['tokens_per_s']:,.0f}/s{wire}", file=sys.stderr)
    node, gw = median_fields(node_runs, "tokens_per_s"), median_fields(gw_runs, "tokens_per_s")
    gw.pop("post_s", None)
    out = {"status": "ok", "version": version, "tokens": n, "node": node, "gateway": gw,
           "ratio": gw["tokens_per_s"] / node["tokens_per_s"],
           "rounds": [{"node_tokens_per_s": a["tokens_per_s"], "gateway_tokens_per_s": b["tokens_per_s"],
                       "ratio": b["tokens_per_s"] / a["tokens_per_s"]} for a, b in zip(node_runs, gw_runs)]}
    if wire_runs:
        out["h2load"] = median_fields(wire_runs, "requests_per_s")
        out["wire_ratio"] = out["h2load"]["requests_per_s"] / node["tokens_per_s"]
        for row, w in zip(out["rounds"], wire_runs):
            row["h2load_requests_per_s"] = w["requests_per_s"]
    return out


def h2load_apn_round(args, tokens):
    """h2load with node-apn's token count, distinct paths, against the same nginx setup."""
    return nginx_step.h2load_run(argparse.Namespace(**{**vars(args), "nginx_tokens": len(tokens)}),
                                 "node-apn-h2load", tokens, fixed=False)


def run(args):
    versions = install(args)
    if versions is None:
        why = "skipped: node and npm not found on PATH (install Node.js to measure this baseline)"
        print(f"bench: node baselines: {why}", file=sys.stderr)
        return {"apn": {"status": why}, "webpush": {"status": why}}
    out = {}
    if versions["apn"]:
        if not nginx_step.ensure_tool("nginx", "nginx"):
            out["apn"] = {"status": "not measured: nginx missing"}
        else:
            n = args.node_apn_tokens
            tokens = apns_tokens(n)
            tokens_file = os.path.join(OUT, "node-apn-tokens.txt")
            with open(tokens_file, "w") as f:
                f.write("\n".join(tokens) + "\n")
            body = send_body(tokens, APNS_PAYLOAD)
            out["apn"] = compare(args, "@parse/node-apn", lambda: node_apn_round(args, tokens_file, n),
                                 lambda: gateway_apn_round(args, body), n, versions["apn"],
                                 wire_round=lambda: h2load_apn_round(args, tokens))
    else:
        out["apn"] = {"status": f"skipped: npm install @parse/node-apn failed (see {OUT}/node-npm-install.log)"}
    if versions["webpush"]:
        n = args.node_webpush_tokens
        subs, subs_port = platforms.webpush_subscriptions(args, n)
        body = platforms.webpush_body(subs)
        out["webpush"] = compare(args, "node web-push", lambda: node_webpush_round(args, subs, subs_port),
                                 lambda: platforms.webpush_deliver(args, [body], subs_port, "disk"), n, versions["webpush"])
    else:
        out["webpush"] = {"status": f"skipped: npm install web-push failed (see {OUT}/node-npm-install.log)"}
    return out
