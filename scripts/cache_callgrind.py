#!/usr/bin/env python3
"""cache_callgrind - user-space instructions per request of lumkey-policy and
lumkey-vault (valgrind --tool=callgrind), DECIDE / CRED_GET caches off vs on.
Instruction counts do not depend on the machine's load, unlike CPU time.

    .venv/bin/python scripts/cache_callgrind.py [--build build] [--requests 300]

For each setting: a stack (tests/e2e/lkstack.py), policy and vault restarted
under callgrind, warm-up requests, counters zeroed (callgrind_control -z),
N sequential chat requests, counters dumped (callgrind_control -d); prints
Ir per request of each worker. Kernel time (system calls, ZeroMQ wake-ups)
and PostgreSQL's work are not in these counts: see scripts/cache_measure.py.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "scripts"))
from cache_measure import run  # noqa: E402
from lkstack import Proc, Stack, binary  # noqa: E402

WORKERS = ("policy", "vault")


def total_ir(path):
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^(?:summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(1))
    return 0


def measure(build, age, n, out_dir):
    env = {"LUMKEY_CACHE_MAX_AGE_MS": str(age)} if age is not None else {}
    s = Stack(build_dir=build, extra_env=env, hop_timeout_ms=5000)
    s.start()
    try:
        for w in WORKERS:
            s.kill_service(w, sig=15)
            out = f"{out_dir}/{w}-{age}.cg"
            p = Proc(w, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                         str(binary(w, s.build_dir))], s.env(), s.dir / "logs" / f"{w}-cg.log")
            p.start(s.dir / "pgids")
            s.procs[w] = p
        s.wait_ready(timeout=120)
        deadline = time.monotonic() + 120
        while True:  # the edge's readiness may predate the restart: until a request goes through
            try:
                run(s, 1)
                break
            except SystemExit:
                assert time.monotonic() < deadline, "the stack did not come back under valgrind"
                time.sleep(0.5)
        run(s, 30)
        pids = {w: s.procs[w].pid for w in WORKERS}
        for w in WORKERS:
            subprocess.run(["callgrind_control", "-z", str(pids[w])], check=True, capture_output=True)
        run(s, n)
        res = {}
        for w in WORKERS:
            before = set(glob.glob(f"{out_dir}/{w}-{age}.cg.{pids[w]}*"))
            subprocess.run(["callgrind_control", "-d", str(pids[w])], check=True, capture_output=True)
            deadline = time.monotonic() + 30
            while not (set(glob.glob(f"{out_dir}/{w}-{age}.cg.{pids[w]}*")) - before):
                assert time.monotonic() < deadline, "no callgrind dump"
                time.sleep(0.2)
            time.sleep(0.5)
            dump = sorted(set(glob.glob(f"{out_dir}/{w}-{age}.cg.{pids[w]}*")) - before)[-1]
            res[w] = total_ir(dump) / n
        return res
    finally:
        s.stop()
        s.cleanup_dir()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--requests", type=int, default=300)
    a = ap.parse_args()
    out_dir = tempfile.mkdtemp(prefix="lkcg")
    off = measure(a.build, 0, a.requests, out_dir)
    on = measure(a.build, None, a.requests, out_dir)
    print(f"user-space instructions per request ({a.requests} sequential requests, callgrind)")
    print(f"{'worker':<10}{'cache off':>14}{'cache on':>14}")
    for w in WORKERS:
        print(f"{w:<10}{off[w]:>14,.0f}{on[w]:>14,.0f}")


if __name__ == "__main__":
    main()
