#!/usr/bin/env python3
"""A datacenter of three members on one SeaweedFS bucket: benchmarks and a
failover soak, with real daemons and a real object store on loopback.

Measures, in one run (lease --lease seconds, 5 by default):
  * UpdateImage latency (p50, p99) with remote durability, on the writer;
  * follower lag: from an acknowledged activation to the image being
    served by every follower (p50, p99);
  * a follower's download of a cached image against the writer's;
  * --trials failover trials: while a client writes through the survivors
    and another reads known images from the followers, the writer is
    killed (-9) or stopped past its lease (SIGSTOP, resumed after); the
    time to the first write acknowledged through a survivor, the reads
    that failed, and a check that every acknowledged image is on every
    member afterwards. The seed (printed) decides the order of kills and
    stops, and when they land.

Usage: tools/bench-cluster.py [--trials N] [--seed S] [--lease S]
           [--big-mib M] [--bin target/debug/imgstore]
Needs `weed` (tools/prereqs) and a built imgstore. Exits 1 if a check
fails (an acknowledged image missing, a member that never came back).
"""

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

KEY, SECRET = "imgstore-bench", "imgstore-bench-secret"
ALICE = "00000000-0000-0000-0000-00000000a11c"


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 55000:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                pass


def call(method, url, body=None, timeout=60, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, (json.loads(text) if text[:1] in (b"{", b"[") else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return 0, str(e)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


class Cluster:
    def __init__(self, binary, lease, tmp):
        self.binary, self.lease, self.tmp = binary, lease, tmp
        s3 = free_port()
        args = ["mini", f"-dir={tmp}/weed", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={s3}", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-bucket=images"]
        for svc in ["master", "volume", "filer", "admin", "webdav"]:
            args.append(f"-{svc}.port={free_port()}")
        os.makedirs(f"{tmp}/weed")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
        self.weed = subprocess.Popen(["weed"] + args, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.members = {}
        self.procs = {}
        for name in "abc":
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cfg = {"listen": f"127.0.0.1:{port}", "dataDir": f"{tmp}/{name}",
                   "storage": {"type": "s3", "endpoint": self.endpoint, "bucket": "images",
                               "prefix": "dc1/", "accessKeyId": KEY, "secretAccessKey": SECRET,
                               "durability": "remote", "requestTimeoutSeconds": 5, "retries": 1},
                   "cluster": {"advertiseUrl": url, "leaseSeconds": lease}}
            path = f"{tmp}/{name}.json"
            with open(path, "w") as f:
                json.dump(cfg, f)
            self.members[name] = (path, url)

    def start(self, name, deadline=120):
        path, url = self.members[name]
        log = open(f"{self.tmp}/{name}.log", "a")
        self.procs[name] = subprocess.Popen([self.binary, "serve", "--config", path],
                                            stdout=log, stderr=log)
        t0 = time.time()
        while call("GET", f"{url}/ping", timeout=2)[0] != 200:
            if self.procs[name].poll() is not None:
                # SeaweedFS may still be starting: try again.
                if time.time() - t0 > deadline:
                    raise SystemExit(f"member {name} did not start: see {self.tmp}/{name}.log")
                time.sleep(1)
                self.procs[name] = subprocess.Popen([self.binary, "serve", "--config", path],
                                                    stdout=log, stderr=log)
            time.sleep(0.05)

    def url(self, name):
        return self.members[name][1]

    def role(self, name):
        s, v = call("GET", f"{self.url(name)}/state", timeout=5)
        return v.get("cluster", {}).get("role") if s == 200 and isinstance(v, dict) else None

    def writer(self):
        for n in "abc":
            if n in self.procs and self.procs[n].poll() is None and self.role(n) == "writer":
                return n
        return None

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait()
        self.weed.kill()
        self.weed.wait()


def create(url, name, data, activate=True, timeout=60):
    """Some(uuid) once every step was acknowledged."""
    s, img = call("POST", f"{url}/images?account={ALICE}",
                  {"name": name, "version": "1.0.0", "type": "other", "os": "other"}, timeout)
    if s != 200:
        return None
    uuid = img["uuid"]
    s, _ = call("PUT", f"{url}/images/{uuid}/file?compression=none&account={ALICE}",
                raw=data, timeout=timeout)
    if s != 200:
        return None
    if activate:
        s, _ = call("POST", f"{url}/images/{uuid}?action=activate&account={ALICE}", {}, timeout)
        if s != 200:
            return None
    return uuid


def wait_served(urls, uuid, limit=30.0):
    t0 = time.time()
    pending = set(urls)
    while pending:
        for u in list(pending):
            s, v = call("GET", f"{u}/images/{uuid}", timeout=5)
            if s == 200 and v.get("state") == "active":
                pending.discard(u)
        if time.time() - t0 > limit:
            return None
        if pending:
            time.sleep(0.01)
    return time.time() - t0


def bench_update(c, w, n=200):
    uuid = create(c.url(w), "upd", b"x" * 1000)
    lat = []
    for i in range(n):
        t0 = time.time()
        s, _ = call("POST", f"{c.url(w)}/images/{uuid}?action=update&account={ALICE}",
                    {"description": f"d{i}"})
        lat.append(time.time() - t0)
        assert s == 200, s
    return lat


def bench_lag(c, w, n=30):
    followers = [c.url(m) for m in "abc" if m != w]
    lags = []
    for i in range(n):
        uuid = create(c.url(w), f"lag{i}", os.urandom(4096))
        lag = wait_served(followers, uuid)
        if lag is None:
            raise SystemExit(f"image {uuid} never reached the followers")
        lags.append(lag)
    return lags


def timed_download(url):
    t0 = time.time()
    out = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
                         capture_output=True, text=True)
    return time.time() - t0, int(out.stdout or 0)


def bench_download(c, w, mib):
    path = f"{c.tmp}/big"
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    with open(path, "rb") as f:
        data = f.read()
    uuid = create(c.url(w), "big", data, timeout=600)
    del data
    follower = next(m for m in "abc" if m != w)
    wait_served([c.url(follower)], uuid, 60)
    url = lambda m: f"{c.url(m)}/images/{uuid}/file"
    timed_download(url(w))
    tw, n = timed_download(url(w))
    timed_download(url(follower))  # fills the follower's cache
    # The cache fill is placed by the follower's cache chore (2 s).
    time.sleep(3)
    tf, m = timed_download(url(follower))
    assert n == m == mib << 20, (n, m)
    return n / tw, m / tf


def trial(c, rng, known, acked, stats):
    w = c.writer()
    if w is None:
        raise SystemExit("no writer before a trial")
    survivors = [m for m in "abc" if m != w]
    stop = threading.Event()
    failed_reads = [0]
    reads = [0]

    def reader():
        while not stop.is_set():
            for m in survivors:
                for uuid in known:
                    s, _ = call("GET", f"{c.url(m)}/images/{uuid}", timeout=10)
                    reads[0] += 1
                    if s != 200:
                        failed_reads[0] += 1
            time.sleep(0.05)

    first_write = [None]
    t_fault = [None]

    def writer():
        i = 0
        while not stop.is_set():
            m = survivors[i % 2]
            # A client that gives up after 5 s and tries again (a request
            # forwarded to a stopped writer hangs until it resumes).
            u = create(c.url(m), f"soak-{len(acked)}", os.urandom(2048), timeout=5)
            if u:
                acked.append(u)
                if t_fault[0] is not None and first_write[0] is None:
                    first_write[0] = time.time() - t_fault[0]
            i += 1

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.2, 1.5))
    how = rng.choice(["kill", "stop"])
    p = c.procs[w]
    t_fault[0] = time.time()
    if how == "kill":
        p.kill()
        p.wait()
    else:
        p.send_signal(signal.SIGSTOP)
    deadline = time.time() + 20 * c.lease
    while first_write[0] is None and time.time() < deadline:
        time.sleep(0.05)
    took = first_write[0]
    if how == "stop":
        p.send_signal(signal.SIGCONT)
    else:
        c.start(w)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    stats.append({"how": how, "writer": w, "first_write_s": took,
                  "failed_reads": failed_reads[0], "reads": reads[0]})
    return took is not None


def check_all(c, acked):
    urls = [c.url(m) for m in "abc"]
    missing = [u for u in acked if wait_served(urls, u, 60) is None]
    return missing


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--lease", type=int, default=5)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target",
                                                  "debug", "imgstore"))
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed} (rerun with --seed {seed})", flush=True)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="bench-cluster-")
    c = Cluster(os.path.abspath(a.bin), a.lease, tmp)
    ok = True
    try:
        c.start("a")
        t0 = time.time()
        while c.role("a") != "writer" and time.time() - t0 < 60:
            time.sleep(0.1)
        c.start("b")
        c.start("c")
        w = c.writer()
        lat = bench_update(c, w)
        print(f"UpdateImage (remote durability, group commit): p50 {pct(lat, 50) * 1000:.1f} ms, "
              f"p99 {pct(lat, 99) * 1000:.1f} ms over {len(lat)}", flush=True)
        lags = bench_lag(c, w)
        print(f"follower lag (activation acknowledged -> served by both followers): "
              f"p50 {pct(lags, 50):.2f} s, p99 {pct(lags, 99):.2f} s over {len(lags)}", flush=True)
        if a.big_mib > 0:
            rw, rf = bench_download(c, w, a.big_mib)
            print(f"download of a cached {a.big_mib} MiB image: writer {rw / 1e6:.0f} MB/s, "
                  f"follower {rf / 1e6:.0f} MB/s ({rf / rw:.2f}x)", flush=True)
        known = [create(c.url(w), f"known{i}", os.urandom(2048)) for i in range(3)]
        wait_served([c.url(m) for m in "abc"], known[-1])
        acked, stats = list(known), []
        for t in range(a.trials):
            if not trial(c, rng, known, acked, stats):
                print(f"trial {t}: no write was acknowledged within {20 * a.lease} s", flush=True)
                ok = False
                break
            s = stats[-1]
            print(f"trial {t}: {s['how']} of writer {s['writer']}: first write through a "
                  f"survivor after {s['first_write_s']:.2f} s, {s['failed_reads']} of "
                  f"{s['reads']} reads failed", flush=True)
        if stats:
            times = [s["first_write_s"] for s in stats if s["first_write_s"] is not None]
            failed = sum(s["failed_reads"] for s in stats)
            print(f"failover ({len(stats)} trials, lease {a.lease} s): first write after "
                  f"p50 {pct(times, 50):.2f} s, p99 {pct(times, 99):.2f} s, max {max(times):.2f} s; "
                  f"failed reads {failed} of {sum(s['reads'] for s in stats)}", flush=True)
        missing = check_all(c, acked)
        print(f"checker: {len(acked)} acknowledged images, {len(missing)} missing on some member"
              + (f": {missing[:5]}" if missing else ""), flush=True)
        ok = ok and not missing
    finally:
        c.stop()
    print(f"logs in {tmp}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
