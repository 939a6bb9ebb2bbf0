#!/usr/bin/env python3
"""cache_measure - CPU per request of lumkey-policy and lumkey-vault, and of
their PostgreSQL backends, with the DECIDE / CRED_GET caches off and on, in
alternating rounds on one stack build (issue 9; docs/benchmarks.md lead notes).

    .venv/bin/python scripts/cache_measure.py [--build build] [--requests 400] [--rounds 2]

Starts two stacks (tests/e2e/lkstack.py: LUMKEY_CACHE_MAX_AGE_MS=0, then the
default), sends sequential chat requests through the edge to the mock with
one key, and reads utime+stime from /proc for every Lumkey process and for the
PostgreSQL backends of each process (by application_name). Prints a table.
CPU figures are what a process burned, so they hold on a busy machine far
better than wall-clock ones; the latency column is wall clock (noisy).
"""
import argparse
import http.client
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from lkstack import MODEL, Stack  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_us(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) * 1e6 / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def pg_backends(s):
    with s.db().cursor() as cur:
        cur.execute("SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE 'lumkey%'")
        out = {}
        for r in cur.fetchall():
            out.setdefault(r["application_name"], []).append(r["pid"])
        return out


def snapshot(s):
    snap = {n: cpu_us(p.pid) for n, p in s.procs.items() if p.pid and n != "mock"}
    for app, pids in pg_backends(s).items():
        snap["pg:" + app] = sum(cpu_us(p) for p in pids)
    return snap


def hops(s):
    """{service: (sum seconds, count)} of the edge's worker call histograms."""
    host, port = s.admin_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for m in re.finditer(r'^lumkey_edge_worker_call_seconds_(sum|count)\{service="(\w+)"\} (\S+)', text, re.M):
        d = out.setdefault(m.group(2), [0.0, 0.0])
        d[0 if m.group(1) == "sum" else 1] = float(m.group(3))
    return out


def run(s, n):
    host, port = s.api_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello"}]})
    h = {"content-type": "application/json", "authorization": f"Bearer {s._key}"}
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, h)
        r = conn.getresponse()
        r.read()
        lat.append((time.perf_counter() - t0) * 1e6)
        if r.status != 200:
            raise SystemExit(f"request answered {r.status}")
    conn.close()
    return lat


def measure(build, age, n):
    s = Stack(build_dir=build, extra_env={"LUMKEY_CACHE_MAX_AGE_MS": str(age)} if age is not None else {})
    s.start()
    try:
        run(s, 50)  # warm-up: key hash cached by the edge, connections up, caches filled
        a, ha = snapshot(s), hops(s)
        lat = run(s, n)
        b, hb = snapshot(s), hops(s)
        d = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in b}
        for svc, (sm, cnt) in hb.items():
            calls = cnt - ha.get(svc, [0, 0])[1]
            if calls > 0:
                d["hop mean us: " + svc] = (sm - ha.get(svc, [0, 0])[0]) * 1e6 / calls
        return d, statistics.median(lat)
    finally:
        s.stop()
        s.cleanup_dir()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    res = {"off": [], "on": []}
    for _ in range(a.rounds):
        for label, age in (("off", 0), ("on", None)):
            res[label].append(measure(a.build, age, a.requests))
    keys = sorted({k for runs in res.values() for d, _ in runs for k in d})
    print(f"CPU microseconds per request ({a.requests} sequential requests x {a.rounds} rounds, mean of rounds);")
    print("'hop mean us': the edge's mean round trip per worker call (wall clock)")
    print(f"{'process':<34}{'cache off':>12}{'cache on':>12}")
    for k in keys:
        off = statistics.mean(d.get(k, 0) for d, _ in res["off"])
        on = statistics.mean(d.get(k, 0) for d, _ in res["on"])
        print(f"{k:<34}{off:>12.0f}{on:>12.0f}")
    for label in ("off", "on"):
        tot = statistics.mean(sum(v for k, v in d.items() if not k.startswith(("pg:", "hop"))) for d, _ in res[label])
        pg = statistics.mean(sum(v for k, v in d.items() if k.startswith("pg:")) for d, _ in res[label])
        p50 = statistics.mean(l for _, l in res[label])
        print(f"cache {label:<4}: Lumkey processes {tot:.0f} us/request, their PostgreSQL backends {pg:.0f} "
              f"us/request, wall-clock p50 {p50:.0f} us (client included, noisy)")


if __name__ == "__main__":
    main()
