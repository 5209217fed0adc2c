"""Streamed intake (issue 21's figures): the same N APNs tokens sent to a
fresh gateway and mock APNs as

  json    `--jobs` JSON POSTs back to back (each body built before the clock starts),
  ndjson  one `application/x-ndjson` POST, chunked, written from a generator
          4096 tokens at a time (the client never holds the whole body),
  grpc    one `pushgate.v1.Push/SendStream` call over h2c (bench/h2grpc.py),
          4096 tokens per TokenBatch,

timed from the first byte sent to the 202 / SendReply (intake) and to
`pending == 0` on /apns/report (end to end). Then the volume run: 2M tokens
in one NDJSON POST against `queue.capacity = 200000` on the disk backend,
the gateway's RSS read from /proc every 50 ms, every token checked delivered.
"""

import http.client
import json
import sys
import time

import h2grpc
from common import (APNS_PAYLOAD, OUT, Api, RssSampler, apns_section, cpu_seconds, free_port, http_get,
                    joined, json_bodies, median_fields, memory_mb, ndjson_stream, reset_peak, start_gateway,
                    start_mock_apns, stop, token_blocks, tree_cpu_seconds, upstream_connections, wait_until)

VARIANTS = ("json", "ndjson", "grpc")


def grpc_batches(n):
    """Encoded TokenBatch bodies, BLOCK tokens each (field 1, 64 bytes per token)."""
    for head, tails in token_blocks(n):
        yield joined(head, tails, b"\x0a\x40", b"")


def post_ndjson(port, n, timeout):
    """One streamed POST; returns (first byte time, 202 time, answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        # An iterable body without Content-Length goes out chunked, one chunk a block.
        conn.request("POST", "/apns/send", body=ndjson_stream(n, APNS_PAYLOAD),
                     headers={"content-type": "application/x-ndjson"}, encode_chunked=True)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway answered before the end: read what it said
    r = conn.getresponse()
    answered = time.perf_counter()
    body = r.read()
    conn.close()
    if r.status != 202:
        raise SystemExit(f"bench: NDJSON POST answered {r.status}: {body[:300]!r}")
    return started, answered, json.loads(body)


def intake_run(args, variant, n, tag, capacity=None, backend=None):
    """One fresh mock and gateway; `n` tokens sent the `variant` way."""
    backend = backend or args.stream_backend
    mock, mport, ca = start_mock_apns(args, tag)
    gw = None
    try:
        grpc_port = free_port() if variant == "grpc" else None
        extra = f'[grpc]\nlisten = "127.0.0.1:{grpc_port}"\n' if grpc_port else ""
        gw, port = start_gateway(args, tag, apns_section(args, mport, ca), backend, capacity=capacity, extra=extra)
        wait_until("gateway's APNs connections", lambda: upstream_connections(port, "apns") >= args.connections,
                   proc=gw)
        bodies = json_bodies(n, args.jobs, APNS_PAYLOAD) if variant == "json" else None
        time.sleep(args.settle)
        idle_rss, _ = memory_mb(gw.pid)
        hwm_reset = reset_peak(gw.pid)
        api = Api(port)
        sampler = RssSampler(gw.pid, args.rss_interval)
        sampler.start()
        gw_cpu0, mock_cpu0 = cpu_seconds(gw.pid), tree_cpu_seconds(mock.pid)
        job = None
        if variant == "json":
            started = time.perf_counter()
            accepted = 0
            for body in bodies:
                _took, got = api.post("/apns/send", body)
                accepted += got
            answered = time.perf_counter()
            bodies = None
        elif variant == "ndjson":
            started, answered, answer = post_ndjson(port, n, args.timeout)
            accepted, job = answer["accepted"], answer.get("job")
        else:
            message = {"payload": json.loads(APNS_PAYLOAD)}
            started, answered, reply = h2grpc.send_stream("127.0.0.1", grpc_port, "apns", message, grpc_batches(n))
            accepted, job = reply["accepted"], reply["job"]
        while True:
            report = api.report("/apns/report")
            if report["pending"] == 0:
                break
            if gw.poll() is not None:
                raise SystemExit(f"bench: gateway exited during the {tag} run; see {OUT}/{tag}-gateway.log")
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"bench: {tag}: {report['pending']} tokens still pending after {args.timeout}s")
            time.sleep(0.02)
        done = time.perf_counter()
        sampled = sampler.stop()
        gw_cpu = cpu_seconds(gw.pid) - gw_cpu0
        mock_cpu = tree_cpu_seconds(mock.pid) - mock_cpu0
        _, hwm = memory_mb(gw.pid)
        job_status = None
        if job:
            status, text = http_get(port, f"/jobs/{job}")
            job_status = json.loads(text) if status == 200 else {"status": status}
    finally:
        if gw is not None:
            stop(gw)
        stop(mock)
    successes = report.get("successes", 0)
    peak = max(sampled, hwm) if hwm_reset else sampled
    result = {
        "variant": variant,
        "backend": backend,
        "capacity": capacity,
        "tokens_sent": n,
        "tokens": accepted,
        "intake_s": answered - started,
        "intake_tokens_per_s": accepted / (answered - started),
        "seconds": done - started,
        "tokens_per_s": accepted / (done - started),
        "idle_rss_mb": idle_rss,
        "peak_rss_mb": peak,
        "peak_rss_sampled_mb": sampled,
        "peak_above_idle_mb": peak - idle_rss,
        "rss_samples": sampler.samples,
        "cpu_s": gw_cpu,
        "cpu_s_per_100k": gw_cpu / max(accepted, 1) * 100_000,
        "mock_cpu_s": mock_cpu,
        "successes": successes,
        "delivered_all": successes == n and accepted == n,
        "truncated": bool(job_status and job_status.get("truncated")),
        "job": job_status,
        "report": report,
    }
    if not result["delivered_all"]:
        print(f"bench: warning: {tag}: sent {n}, accepted {accepted}, successes {successes}: {report}",
              file=sys.stderr)
    return result


def run(args):
    """Every variant per round, interleaved; then the volume run's rounds."""
    n = args.stream_tokens or args.tokens
    runs = {v: [] for v in args.stream_variants}
    errors = {}
    for r in range(args.rounds):
        for v in args.stream_variants:
            if v in errors:
                continue
            try:
                runs[v].append(intake_run(args, v, n, f"stream-{v}"))
            except h2grpc.H2Error as e:
                errors[v] = str(e)
                print(f"bench: streamed intake {v}: {e} (left out; see {OUT}/stream-{v}-gateway.log)", file=sys.stderr)
        print(f"bench: streamed intake round {r + 1}/{args.rounds}: " + ", ".join(
            f"{v} {x[-1]['intake_tokens_per_s']:,.0f} intake / {x[-1]['tokens_per_s']:,.0f} end-to-end tokens/s"
            for v, x in runs.items() if x), file=sys.stderr)
    out = {"tokens": n, "backend": args.stream_backend, "errors": errors}
    for v, x in runs.items():
        if x:
            out[v] = median_fields(x, "intake_tokens_per_s")
            out[v]["rounds_tokens_per_s"] = [y["tokens_per_s"] for y in x]
    if "json" in out:
        for v in ("ndjson", "grpc"):
            if v in out:
                out[f"{v}_vs_json_intake"] = out[v]["intake_tokens_per_s"] / out["json"]["intake_tokens_per_s"]
                out[f"{v}_vs_json_end_to_end"] = out[v]["tokens_per_s"] / out["json"]["tokens_per_s"]
    if args.stream_big_tokens:
        big = []
        for r in range(args.rounds):
            big.append(intake_run(args, "ndjson", args.stream_big_tokens, "stream-big",
                                  capacity=args.stream_capacity, backend="disk"))
            b = big[-1]
            print(f"bench: NDJSON volume round {r + 1}/{args.rounds}: {b['tokens']:,} of {b['tokens_sent']:,} accepted, "
                  f"{b['successes']:,} delivered, idle {b['idle_rss_mb']:.1f} MB, peak {b['peak_rss_mb']:.1f} MB "
                  f"(+{b['peak_above_idle_mb']:.1f}), {b['rss_samples']} samples", file=sys.stderr)
        m = median_fields(big, "peak_above_idle_mb")
        m["rounds_peak_rss_mb"] = [x["peak_rss_mb"] for x in big]
        m["rounds_idle_rss_mb"] = [x["idle_rss_mb"] for x in big]
        m["delivered_all"] = all(x["delivered_all"] for x in big)
        m["truncated"] = any(x["truncated"] for x in big)
        m["max_peak_above_idle_mb"] = max(x["peak_above_idle_mb"] for x in big)
        m["target_mb"] = args.stream_rss_target
        out["big"] = m
    return out
