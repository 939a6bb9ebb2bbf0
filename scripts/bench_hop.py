#!/usr/bin/env python3
"""bench_hop.py - the cost of one ZeroMQ hop between the edge and a worker (a benchmark, not a test).

    .venv/bin/python scripts/bench_hop.py [COUNT]

Starts a Lumkey stack (tests/e2e/lkstack.py) and runs tests/bench/bench_hop against each worker:
COUNT PINGs one at a time, each a full request/reply through the worker's loop with no work and no
database. Prints the round trip p50 / p99 and the CPU both ends spend per hop (user and system
apart). Every request through Lumkey makes three or four such hops (DECIDE, CRED_GET, AUDIT x2),
so this is the floor under the per-request CPU figure of scripts/bench. Build first.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from lkstack import Stack  # noqa: E402


def main():
    count = sys.argv[1] if len(sys.argv) > 1 else "20000"
    with Stack() as stack:
        bench = stack.build_dir / "tests" / "bench" / "bench_hop"
        for svc in ("approval", "policy", "vault", "audit"):
            endpoint = f"ipc://{stack.dir}/run/{svc}.ipc"
            out = subprocess.run([str(bench), endpoint, str(stack.procs[svc].pid), count], capture_output=True,
                                 text=True, timeout=600)
            print(f"{svc:9s} {out.stdout.strip() or out.stderr.strip()}")


if __name__ == "__main__":
    main()
