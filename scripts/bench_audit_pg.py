#!/usr/bin/env python3
"""bench_audit_pg.py - where an audit event's cost goes (a benchmark, not a test).

    .venv/bin/python scripts/bench_audit_pg.py [EVENTS] [--build-dir DIR] [--fsync-off] [--pre-sql FILE]

Starts a Lumkey stack (PostgreSQL with fsync ON unless --fsync-off, no Kafka), runs
tests/bench/bench_audit against lumkey-audit, and prints per phase (one event at a time, then
EVENTS pipelined with 256 in flight):
  - the AUDIT round trip p50 / p99 and events/s (bench_audit's own lines);
  - CPU microseconds per event of lumkey-audit and of all PostgreSQL processes (/proc utime+stime
    over the phase; 10 ms ticks, so use enough events);
  - transactions committed per event (pg_stat_database xact_commit: how well group commit works)
    and WAL bytes per event (pg_stat_wal);
  - the time PostgreSQL spent in the audit functions (pg_stat_user_functions, track_functions=pl).
Run it twice back to back (before / after a change) on the same machine; the figures are noisy on a
shared machine, the CPU and transaction counts less so. Build first (cmake --build build).
"""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from bench import BenchStack, proc_cpu_ticks  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def snapshot(stack, cur):
    audit = stack.procs["audit"].pid
    cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    commits = cur.fetchone()["xact_commit"]
    cur.execute("SELECT wal_bytes FROM pg_stat_wal")
    wal = int(cur.fetchone()["wal_bytes"])
    cur.execute("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
                "WHERE funcname LIKE 'audit%'")
    funcs = {r["funcname"]: (r["calls"], r["total_time"], r["self_time"]) for r in cur.fetchall()}
    return {"audit": proc_cpu_ticks(audit), "pg": sum(proc_cpu_ticks(p) for p in stack.pg_pids()),
            "commits": commits, "wal": wal, "funcs": funcs}


def report(name, n, a, b):
    us = 1e6 / CLK_TCK / n
    print(f"{name}: audit_cpu_us_per_event={(b['audit'] - a['audit']) * us:.0f} "
          f"pg_cpu_us_per_event={(b['pg'] - a['pg']) * us:.0f} "
          f"commits_per_event={(b['commits'] - a['commits']) / n:.3f} "
          f"wal_bytes_per_event={(b['wal'] - a['wal']) / n:.0f}")
    for f, (calls, total, self_t) in sorted(b["funcs"].items()):
        c0, t0, s0 = a["funcs"].get(f, (0, 0.0, 0.0))
        if calls - c0:
            print(f"  {f}: calls={calls - c0} total_us_per_call={(total - t0) * 1000 / (calls - c0):.1f} "
                  f"self_us_per_call={(self_t - s0) * 1000 / (calls - c0):.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("events", nargs="?", type=int, default=30000)
    ap.add_argument("--seq", type=int, default=2000, help="events sent one at a time first (2000)")
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--fsync-off", action="store_true")
    ap.add_argument("--pre-sql", metavar="FILE",
                    help="SQL run on the stack's database before measuring (e.g. older function definitions, "
                         "for a before/after comparison on the same build)")
    args = ap.parse_args()
    stack = BenchStack(build_dir=Path(args.build_dir), fsync=not args.fsync_off, hop_timeout_ms=5000)
    with stack:
        db = stack.db()
        with db.cursor() as cur:
            cur.execute("ALTER SYSTEM SET track_functions = 'pl'")
            cur.execute("SELECT pg_reload_conf()")
            if args.pre_sql:
                cur.execute(Path(args.pre_sql).read_text())
        db.close()
        db = stack.db()
        endpoint = f"ipc://{stack.dir}/run/audit.ipc"
        bench = stack.build_dir / "tests" / "bench" / "bench_audit"
        with db.cursor() as cur:
            s0 = snapshot(stack, cur)
            p = subprocess.Popen([str(bench), endpoint, str(args.events), "256", str(args.seq)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "BENCH_AUDIT_PAUSE": "1"})
            seq_line = p.stdout.readline().strip()
            s1 = snapshot(stack, cur)
            p.stdin.write("go\n")
            p.stdin.flush()
            pipe_line = p.stdout.readline().strip()
            s2 = snapshot(stack, cur)
            p.wait(timeout=1800)
        print(seq_line)
        report("  one at a time", args.seq, s0, s1)
        print(pipe_line)
        report("  pipelined", args.events, s1, s2)
        m = re.search(r"events_per_s=(\d+)", pipe_line or "")
        if p.returncode != 0 or not m:
            print("bench_audit failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
