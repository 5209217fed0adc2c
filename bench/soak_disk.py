#!/usr/bin/env python3
"""Disk backend soak: does the data dir stay bounded over many tokens?

    python3 bench/soak_disk.py --bin target/release/pushgate [--tokens 10000000]

Starts a mock APNs and a gateway on `[queue] backend = "disk"` (fresh
data dir under bench/out/), sends `--tokens` tokens in jobs of `--job`
tokens, keeping at most `--window` tokens pending (so the store holds a
working set, not the whole run), samples the data dir's size after every
job, and prints the largest size seen, the size at the end, and the
throughput. Not part of CI (minutes of full load); its figures go in the
README. Reuses bench/common.py's process helpers.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--job", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=500_000, help="most tokens pending at once")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--streams", type=int, default=1000)
    args = ap.parse_args()
    args.tokens_total = args.tokens
    args.tokens = max(args.window, args.job)  # what gateway_config sizes capacity from
    os.makedirs(common.OUT, exist_ok=True)
    mock, port, ca = common.start_mock_apns(args, "soak")
    gw, gport = common.start_gateway(args, "soak", common.apns_section(args, port, ca), "disk")
    data = common.data_dir("soak")
    api = common.Api(gport)
    body = common.send_body(common.apns_tokens(args.job), common.APNS_PAYLOAD)
    sent, biggest, samples = 0, 0, []
    started = time.perf_counter()
    while sent < args.tokens_total:
        while api.report("/apns/report")["pending"] + args.job > args.window:
            time.sleep(0.05)
        _, accepted = api.post("/apns/send", body)
        sent += accepted
        size = common.dir_bytes(data)
        biggest = max(biggest, size)
        samples.append((sent, size))
        if len(samples) % 10 == 0:
            print(f"soak: {sent:,} tokens sent, data dir {size / 1e6:.1f} MB (max {biggest / 1e6:.1f} MB)",
                  file=sys.stderr)
    while api.report("/apns/report")["pending"] > 0:
        time.sleep(0.1)
    took = time.perf_counter() - started
    time.sleep(1.0)
    final = common.dir_bytes(data)
    report = api.report("/apns/report")
    common.stop(gw)
    common.stop(mock)
    first_half = max(s for n, s in samples[: len(samples) // 2]) if len(samples) > 1 else biggest
    second_half = max(s for n, s in samples[len(samples) // 2:]) if samples else biggest
    print(f"soak: {sent:,} tokens in {took:.0f} s ({sent / took:,.0f} tokens/s), window {args.window:,} pending")
    print(f"soak: data dir max {biggest / 1e6:.1f} MB (first half {first_half / 1e6:.1f} MB, "
          f"second half {second_half / 1e6:.1f} MB), at the end {final / 1e6:.1f} MB")
    print(f"soak: report accepted {report['accepted']:,}, successes {report['successes']:,}, pending {report['pending']}")


if __name__ == "__main__":
    main()
