#!/usr/bin/env python3
"""pushgate benchmark driver (run it through bench/run, which builds first).

Every figure comes from processes this script starts and stops itself, and
every figure is the median of `--rounds` rounds (default 3) whose steps are
interleaved, so a burst of other work on the machine hits every side alike.
Steps (`--only STEP`, repeatable; default all):

apns     h2load against a fresh `pushgate mock apns --auth none` with the
         gateway's connections, streams, headers, payload and tokens (the
         most any client gets from this mock here); the gateway with its
         upstream not listening (queue memory, POST latency without delivery
         load), on memory and disk; the gateway end to end (first POST to
         `pending == 0`), on memory and disk; CPU and RSS from /proc.
gcm/fcm  h2load against a fresh `pushgate mock fcm` with the gateway's bodies,
         then the gateway end to end.
webpush  h2load replaying one request the gateway's code encrypted, then the
         gateway end to end; `examples/webpush_crypto` for one message's
         crypto cost on one core.
stream   streamed intake: the same N APNs tokens as JSON POSTs, one NDJSON
         POST and one gRPC SendStream (intake and end-to-end tokens/s); then
         2M tokens in one NDJSON POST with `queue.capacity = 200000` (peak RSS
         over idle, every token delivered). See stream.py.
nginx    nginx HTTP/2 + TLS answering 200 on /3/device/ as the upstream:
         h2load with distinct paths and on one fixed path, then the gateway
         on disk and memory. See nginx_step.py.
node     baselines where node and npm exist: @parse/node-apn against the
         same nginx and node web-push against the same mock Web Push, each
         beside the gateway with the same tokens. See node_step.py.
backends memory x1, disk x1, redis x1, redis x2 gateways on APNs, mock upstream
         (redis only where redis-server is installed).

Results go to bench/results.json and to the generated section of
BENCHMARKS.md (between its `bench:results` markers), with the load average
at the start and the end. Only the Python standard library is used.
"""

import argparse
import json
import os
import shutil
import sys
import time
import traceback

import common
import node_step
import nginx_step
import platforms
import report
import stream
from common import (APNS_PAYLOAD, GOOGLE_PAYLOAD, HERE, OUT, ROOT, apns_tokens, google_tokens, latency,
                    load_average, machine, median_fields, send_body, symbol_order)

STEPS = ["apns", "gcm", "fcm", "webpush", "stream", "nginx", "node", "backends"]

# --quick: the defaults of a smoke run (any size given on the command line wins).
QUICK = dict(rounds=1, tokens=20_000, webpush_tokens=2_000, backend_tokens=20_000, profile_tokens=20_000,
             stream_big_tokens=40_000, stream_capacity=4_000, nginx_tokens=20_000, node_apn_tokens=2_000,
             node_webpush_tokens=500, out=os.path.join(OUT, "results-quick.json"))


def parse_args():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("what to run")
    g.add_argument("--only", choices=STEPS + ["none"], action="append",
                   help="run only these steps (repeatable; default all of: " + ", ".join(STEPS) + ")")
    g.add_argument("--rounds", type=int, default=3,
                   help="rounds of every step, their runs interleaved; every figure is the median (default 3)")
    g.add_argument("--backends", action="store_true",
                   help="add the backends step to --only (kept for `--only none --backends`)")
    g.add_argument("--quick", action="store_true",
                   help="a smoke run that the harness works, not a measurement: 1 round (unless --rounds), "
                        "every size shrunk (explicit sizes still win), results to bench/out/results-quick.json, "
                        "BENCHMARKS.md left alone; a few minutes once built")
    g.add_argument("--profile", action="store_true",
                   help="after the measured runs, an APNs run (--profile-backend, default disk) under `perf record`: bench/out/profile.txt, "
                        "its top entries in the results and BENCHMARKS.md")
    g = ap.add_argument_group("sizes")
    g.add_argument("--tokens", type=int, default=1_000_000, help="tokens per platform (default 1000000)")
    g.add_argument("--jobs", type=int, default=10, help="POSTs the tokens are split over (default 10)")
    g.add_argument("--google-tokens", type=int, default=None, help="tokens for GCM and FCM v1 (default --tokens)")
    g.add_argument("--webpush-tokens", type=int, default=100_000,
                   help="Web Push subscriptions (default 100000: each one costs an ECDH on both sides)")
    g.add_argument("--backend-tokens", type=int, default=200_000, help="tokens per --backends run (default 200000)")
    g.add_argument("--profile-backend", choices=["disk", "memory"], default="disk",
                   help="the queue backend of the profiled APNs run (default disk, the default backend)")
    g.add_argument("--profile-tokens", type=int, default=300_000,
                   help="tokens in the profiled APNs run (default 300000: perf's DWARF stacks are large)")
    g = ap.add_argument_group("APNs, GCM, FCM v1, Web Push")
    g.add_argument("--connections", type=int, default=2,
                   help="APNs connections: gateway min=max_connections and h2load -c (default 2)")
    g.add_argument("--streams", type=int, default=1000,
                   help="APNs upstream SETTINGS_MAX_CONCURRENT_STREAMS (mock and nginx) and h2load -m (default 1000, Apple's)")
    g.add_argument("--h2load-threads", type=int, default=1, help="h2load -t (default 1)")
    g.add_argument("--no-disk", action="store_true",
                   help="apns step: skip the disk backend runs (default: beside memory in every round)")
    g.add_argument("--gcm-batch", type=int, default=1000, help="legacy ids per request (default 1000)")
    g.add_argument("--gcm-concurrency", type=int, default=16, help="gcm.concurrency and h2load -m (default 16)")
    g.add_argument("--fcm-concurrency", type=int, default=256, help="fcm.concurrency and h2load -m (default 256)")
    g.add_argument("--fcm-connections", type=int, default=1,
                   help="fcm.connections: HTTP/2 connections (default 1); 0 = the reqwest client, for comparison")
    g.add_argument("--webpush-concurrency", type=int, default=256,
                   help="webpush.concurrency, h2load -m and node web-push's requests in flight (default 256)")
    g.add_argument("--webpush-decrypt-every", type=int, default=100,
                   help="the mock push service decrypts one message in N and checks the aes128gcm header of the "
                        "rest, as a real push service does (it never decrypts); 1 decrypts every one, which charges "
                        "an ECDH per message on the gateway's own cores to the gateway (default 100)")
    g = ap.add_argument_group("stream step (streamed intake, issue 21)")
    g.add_argument("--stream-tokens", type=int, default=None,
                   help="tokens sent each way: JSON, NDJSON, gRPC (default --tokens)")
    g.add_argument("--stream-variants", nargs="+", choices=list(stream.VARIANTS), default=list(stream.VARIANTS),
                   help="which ways to send them (default: json ndjson grpc)")
    g.add_argument("--stream-backend", choices=["disk", "memory"], default="disk",
                   help="queue backend of the intake comparison (default disk, the default backend)")
    g.add_argument("--stream-big-tokens", type=int, default=2_000_000,
                   help="tokens of the NDJSON volume run, on disk (default 2000000; 0 skips it)")
    g.add_argument("--stream-capacity", type=int, default=200_000,
                   help="queue.capacity of the volume run (default 200000)")
    g.add_argument("--stream-rss-target", type=float, default=100.0,
                   help="the volume run's target for peak RSS over idle, MB (default 100)")
    g.add_argument("--rss-interval", type=float, default=0.05,
                   help="seconds between RSS samples of the streaming gateway (default 0.05)")
    g = ap.add_argument_group("nginx step (APNs baseline, issue 23)")
    g.add_argument("--nginx-tokens", type=int, default=200_000,
                   help="tokens per nginx run: h2load distinct and fixed, gateway disk and memory (default 200000)")
    g.add_argument("--nginx-workers", type=int, default=1,
                   help="nginx worker_processes (default 1: the other core is the client's)")
    g = ap.add_argument_group("node step (optional baselines)")
    g.add_argument("--node-apn-tokens", type=int, default=100_000,
                   help="tokens for @parse/node-apn and the gateway beside it (default 100000)")
    g.add_argument("--node-webpush-tokens", type=int, default=20_000,
                   help="subscriptions for node web-push and the gateway beside it (default 20000)")
    g.add_argument("--no-node-install", action="store_true",
                   help="use the node cache (~/.cache/pushgate-bench/node, $BENCH_NODE_DIR) as it is; never run npm install")
    g = ap.add_argument_group("process and output")
    g.add_argument("--bin", required=True, help="the release pushgate binary (bench/run passes it)")
    g.add_argument("--crypto-bin", default=None, help="the release examples/webpush_crypto binary")
    g.add_argument("--settle", type=float, default=1.0, help="seconds to let RSS settle before reading it")
    g.add_argument("--timeout", type=float, default=600, help="longest a delivery run may take, seconds")
    g.add_argument("--out", default=os.path.join(HERE, "results.json"), help="results file (default bench/results.json)")
    g.add_argument("--markdown", default=os.path.join(ROOT, "BENCHMARKS.md"),
                   help="file whose generated section (between `<!-- bench:results begin/end -->`) is replaced "
                        "(default BENCHMARKS.md)")
    g.add_argument("--no-markdown", action="store_true", help="leave the markdown file alone")
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)
    args = ap.parse_args()
    if args.quick:
        args.no_markdown = True
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def apns_step(args, results):
    per_job = args.tokens // args.jobs
    tokens = apns_tokens(per_job)
    # Every job carries the same per_job distinct tokens, so the mock's
    # per-token ledger does the same work for h2load (cycling over the
    # same URIs) as for the gateway.
    bodies = [send_body(tokens, APNS_PAYLOAD)] * args.jobs
    disk = not args.no_disk
    h2_runs, gw_runs, disk_runs, mem_runs, mem_disk_runs = [], [], [], [], []
    for r in range(args.rounds):
        mem_runs.append(platforms.apns_memory(args, bodies))
        if disk:
            mem_disk_runs.append(platforms.apns_memory(args, bodies, "disk"))
        h2_runs.append(platforms.apns_h2load(args, tokens))
        gw_runs.append(platforms.apns_deliver(args, bodies))
        if disk:
            disk_runs.append(platforms.apns_deliver(args, bodies, backend="disk"))
        print(f"bench: APNs round {r + 1}/{args.rounds}: h2load {h2_runs[-1]['requests_per_s']:.0f} req/s, "
              f"gateway {gw_runs[-1]['tokens_per_s']:.0f} tokens/s"
              + (f", disk backend {disk_runs[-1]['tokens_per_s']:.0f} tokens/s" if disk else ""), file=sys.stderr)
    h2, e2e = median_fields(h2_runs, "requests_per_s"), median_fields(gw_runs, "tokens_per_s")
    mem = median_fields(mem_runs, "queued_above_idle_mb")
    results["apns"] = {
        "h2load": h2,
        "gateway": e2e,
        "memory": mem,
        "ratio": e2e["tokens_per_s"] / h2["requests_per_s"],
        "rounds": common.rounds(h2_runs, gw_runs, "requests_per_s"),
        "post_latency_loaded": latency([t for g in gw_runs for t in g["post_s"]]),
        "post_latency_queue_only": latency([t for m in mem_runs for t in m["post_s"]]),
    }
    e2e["peak_rss_mb"] = max(g["peak_rss_mb"] for g in gw_runs)
    print(f"bench: APNs: gateway {e2e['tokens_per_s']:.0f} tokens/s = {results['apns']['ratio']:.0%} of h2load "
          f"(medians of {args.rounds})", file=sys.stderr)
    if disk:
        d = median_fields(disk_runs, "tokens_per_s")
        d["peak_rss_mb"] = max(g["peak_rss_mb"] for g in disk_runs)
        results["apns_disk"] = {
            "gateway": d,
            "memory": median_fields(mem_disk_runs, "queued_above_idle_mb"),
            "ratio_to_memory": d["tokens_per_s"] / e2e["tokens_per_s"],
            "rounds": [{"disk_tokens_per_s": x["tokens_per_s"], "memory_tokens_per_s": y["tokens_per_s"],
                        "ratio": x["tokens_per_s"] / y["tokens_per_s"], "disk_cpu_s_per_100k": x["cpu_s_per_100k"]}
                       for x, y in zip(disk_runs, gw_runs)],
            "post_latency_loaded": latency([t for g in disk_runs for t in g["post_s"]]),
            "post_latency_queue_only": latency([t for m in mem_disk_runs for t in m["post_s"]]),
        }


def google_step(args, results, kind):
    gtokens = args.google_tokens or args.tokens
    tokens = google_tokens(gtokens // args.jobs)
    bodies = [send_body(tokens, GOOGLE_PAYLOAD)] * args.jobs
    label = "legacy GCM" if kind == "gcm" else "FCM v1"
    h2_runs, gw_runs = [], []
    for r in range(args.rounds):
        h2_runs.append(platforms.google_h2load(args, kind, tokens, gtokens))
        gw_runs.append(platforms.google_deliver(args, kind, bodies))
        print(f"bench: {label} round {r + 1}/{args.rounds}: h2load {h2_runs[-1]['tokens_per_s']:.0f} tokens/s, "
              f"gateway {gw_runs[-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    h2, e2e = median_fields(h2_runs, "tokens_per_s"), median_fields(gw_runs, "tokens_per_s")
    results[kind] = {"h2load": h2, "gateway": e2e, "ratio": e2e["tokens_per_s"] / h2["tokens_per_s"],
                     "rounds": common.rounds(h2_runs, gw_runs, "tokens_per_s"),
                     "post_latency_loaded": latency([t for g in gw_runs for t in g["post_s"]])}
    e2e["peak_rss_mb"] = max(g["peak_rss_mb"] for g in gw_runs)


def webpush_step(args, results):
    per = max(1, args.webpush_tokens // args.jobs)
    subs, subs_port = platforms.webpush_subscriptions(args, per)
    bodies = [platforms.webpush_body(subs)] * args.jobs
    crypto = platforms.webpush_crypto(args)
    h2_runs, gw_runs = [], []
    for r in range(args.rounds):
        h2_runs.append(platforms.webpush_h2load(args, per * args.jobs))
        gw_runs.append(platforms.webpush_deliver(args, bodies, subs_port))
        print(f"bench: Web Push round {r + 1}/{args.rounds}: h2load {h2_runs[-1]['tokens_per_s']:.0f} req/s, "
              f"gateway {gw_runs[-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    h2, e2e = median_fields(h2_runs, "tokens_per_s"), median_fields(gw_runs, "tokens_per_s")
    results["webpush"] = {"h2load": h2, "gateway": e2e, "ratio": e2e["tokens_per_s"] / h2["tokens_per_s"],
                          "rounds": common.rounds(h2_runs, gw_runs, "tokens_per_s"), "crypto": crypto,
                          "post_latency_loaded": latency([t for g in gw_runs for t in g["post_s"]])}
    e2e["peak_rss_mb"] = max(g["peak_rss_mb"] for g in gw_runs)


def profile_step(args, results):
    print(f"bench: APNs on {args.profile_backend} again, under perf record (figures above are from the runs "
          "without it)", file=sys.stderr)
    prof_job = args.profile_tokens // args.jobs
    bodies = [send_body(apns_tokens(prof_job), APNS_PAYLOAD)] * args.jobs
    prof = platforms.apns_deliver(args, bodies, profile=True, backend=args.profile_backend)
    data = os.path.join(OUT, f"apns-profile-{args.profile_backend}-perf.data")
    flat = common.perf_table(["perf", "report", "-i", data, "--no-children", "--sort", "sym,dso",
                                 "-F", "overhead,sym,dso", "--stdio", "--percent-limit", "0.7", "-g", "none"])
    tree = common.perf_table(["perf", "report", "-i", data, "--children", "--sort", "sym",
                                 "--stdio", "--percent-limit", "4", "-g", "none"])
    with open(os.path.join(OUT, "profile.txt"), "w") as f:
        f.write(f"# APNs run under perf (cpu-clock, 250 Hz, DWARF stacks), {args.profile_backend} backend: "
                f"{prof['tokens']} tokens, "
                f"{prof['tokens_per_s']:.0f} tokens/s, peak RSS {prof['peak_rss_mb']:.0f} MB\n# self time\n{flat}\n"
                f"# with children (inclusive)\n{tree}")
    results["profile"] = {"backend": args.profile_backend, "tokens": prof["tokens"], "tokens_per_s": prof["tokens_per_s"],
                          "self_top": [" ".join(line.split()) for line in flat.splitlines()[:15]]}
    print(f"bench: profile in {OUT}/profile.txt", file=sys.stderr)


def write_results(args, results):
    for section in ("apns", "apns_disk", "gcm", "fcm", "webpush"):
        if section in results:
            results[section]["gateway"].pop("post_s", None)
            results[section].get("memory", {}).pop("post_s", None)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, args.out)


def main():
    args = parse_args()
    if args.profile and shutil.which("perf") is None:
        raise SystemExit("bench: --profile needs perf (Debian: apt-get install linux-perf)")
    os.makedirs(OUT, exist_ok=True)
    steps = [s for s in (args.only or STEPS) if s != "none"]
    if args.backends and "backends" not in steps:
        steps.append("backends")
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--bin", "--crypto-bin"):
            skip = True
        elif not a.startswith(("--bin=", "--crypto-bin=")):
            argv.append(a)
    results = {"command": " ".join(["bench/run"] + argv), "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "load_average_start": load_average(), "steps": steps + (["profile"] if args.profile else []),
               "symbol_order": symbol_order(args.bin),
               "parameters": {k: v for k, v in vars(args).items() if k not in ("bin", "out", "crypto_bin")}}
    print(f"bench: {results['machine']['cores']} cores, {results['machine']['cpu_model']}; "
          f"steps {', '.join(steps) or 'none'}; {args.rounds} rounds; logs in {OUT}", file=sys.stderr)
    if os.getloadavg()[0] > 0.5:
        print(f"bench: warning: load average {os.getloadavg()[0]:.1f}: other work on this machine skews every figure",
              file=sys.stderr)

    def stream_step(args, results):
        print("bench: streamed intake: " + ", ".join(args.stream_variants) + " (APNs, mock upstream)", file=sys.stderr)
        results["stream"] = stream.run(args)

    plan = {
        "apns": apns_step,
        "gcm": lambda a, r: google_step(a, r, "gcm"),
        "fcm": lambda a, r: google_step(a, r, "fcm"),
        "webpush": webpush_step,
        "stream": stream_step,
        "nginx": lambda a, r: r.update(nginx=nginx_step.run(a)),
        "node": lambda a, r: r.update(node=node_step.run(a)),
        "backends": lambda a, r: r.update(backends=platforms.backends(a)),
        "profile": profile_step,
    }
    results["errors"], results["step_seconds"] = {}, {}
    run_started = time.perf_counter()
    for name in results["steps"]:
        started = time.perf_counter()
        try:
            plan[name](args, results)
        except (SystemExit, Exception) as e:
            if isinstance(e, SystemExit) and not isinstance(e.code, str):
                raise  # a signal or a plain exit: stop the whole run
            # One step failing (a process that would not start, a run that
            # timed out, a bug in the step) costs that step's figures, not the
            # whole run's.
            if isinstance(e, SystemExit):
                results["errors"][name] = e.code
            else:
                traceback.print_exc()
                results["errors"][name] = f"{type(e).__name__}: {e}"
            print(f"{results['errors'][name]}\nbench: step {name} failed; going on with the others", file=sys.stderr)
            common.kill_all()
        results["step_seconds"][name] = round(time.perf_counter() - started, 1)
        print(f"bench: step {name} took {results['step_seconds'][name]:.0f} s", file=sys.stderr)
        write_results(args, results)  # after every step: a run cut short keeps what it measured
    results["seconds"] = round(time.perf_counter() - run_started, 1)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["load_average_end"] = load_average()
    write_results(args, results)
    print(report.text_table(results))
    print(f"\nwrote {os.path.relpath(args.out)}")
    if not args.no_markdown:
        report.write_markdown(results, args.markdown)
        print(f"wrote the generated section of {os.path.relpath(args.markdown)}")


if __name__ == "__main__":
    main()
