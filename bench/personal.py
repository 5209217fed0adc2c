#!/usr/bin/env python3
"""What per-target data costs on POST /send (issue 22): 100k APNs targets
with ~1 KB of shared data, once without and once with a small `data` per
target, on the disk default with the upstream down (so every token stays
queued). Prints RSS over idle and data_dir growth per target.

    python3 bench/personal.py --bin target/release/pushgate
"""
import argparse, http.client, json, os, shutil, socket, subprocess, tempfile, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def run(binary, work, personal, targets):
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    port = free_port()
    config = os.path.join(work, "gateway.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
max_body_bytes = 268435456
[queue]
backend = "disk"
data_dir = "{data}"
[apns]
endpoint = "https://127.0.0.1:{free_port()}"
topic = "com.example.bench"
key_file = "{work}/key.p8"
key_id = "BENCHKEY01"
team_id = "BENCHTEAM1"
""")
    proc = subprocess.Popen([binary, "serve", "--config", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2)
        idle, idle_disk = rss_mb(proc.pid), dir_bytes(data)
        body = {"targets": [], "notification": {"title": "T", "body": "B"},
                "data": {"blob": "x" * 900, "order": "42"}}
        for i in range(targets):
            t = {"apns": "%064x" % (i + 1)}
            if personal:
                t["data"] = {"n": str(i)}
            body["targets"].append(t)
        text = json.dumps(body)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/send", text, {"content-type": "application/json"})
        answer = conn.getresponse()
        accepted = json.loads(answer.read()).get("accepted")
        time.sleep(3)
        queued, disk = rss_mb(proc.pid), dir_bytes(data)
        print(f"{'per-target data' if personal else 'shared data only':16}: {answer.status}, accepted {accepted}; "
              f"RSS {idle:.1f} -> {queued:.1f} MB (+{queued - idle:.1f}); data_dir +{(disk - idle_disk) / 1e6:.1f} MB "
              f"({(disk - idle_disk) / targets:.0f} B/target); body {len(text) / 1e6:.1f} MB")
    finally:
        proc.terminate()
        proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/pushgate")
    p.add_argument("--targets", type=int, default=100_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", os.path.join(work, "key.p8")], check=True, capture_output=True)
        run(args.bin, work, False, args.targets)
        run(args.bin, work, True, args.targets)


if __name__ == "__main__":
    main()
