#!/usr/bin/env python3
"""bench_audit_pg.py - where an audit event's cost goes (a benchmark, not a test).

    .venv/bin/python scripts/bench_audit_pg.py [EVENTS] [--build-dir DIR] [--fsync-off] [--pre-sql FILE]

Starts a Lumkey stack (PostgreSQL with fsync ON unless --fsync-off, no Kafka), runs
tests/bench/bench_audit against lumkey-audit, and prints per phase (one event at a time, then
EVENTS pipelined with 256 in flight):
  - the AUDIT round trip p50 / p99 and events/s (bench_audit's own lines);
  - CPU microseconds per event of lumkey-audit and of all PostgreSQL processes (/proc utime+stime
    over the phase; 10 ms ticks, so use enough events);
  - write transactions per event (transaction ids taken: how well group commit works) and WAL
    bytes per event (WAL position);
  - the time PostgreSQL spent in the audit functions (pg_stat_user_functions, track_functions=pl;
    indicative: backends report those counters lazily, so a phase may miss its last second);
then --chat requests one at a time through the edge (lkload, no policy attached): the edge's audit
hop (mean of lumkey_edge_worker_call_seconds{service="audit"}: accepted + completed) and the
CPU per request of the Lumkey processes and of PostgreSQL.
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

import json  # noqa: E402

from bench import BenchStack, hop_delta, proc_cpu_ticks, scrape_hops  # noqa: E402
from lkstack import MODEL  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def snapshot(stack, cur):
    audit = stack.procs["audit"].pid
    # exact and immediate (pg_stat_* counters are flushed by backends lazily): every write
    # transaction takes one transaction id; WAL position in bytes
    cur.execute("SELECT pg_current_xact_id()::text::bigint AS x, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS w")
    row = cur.fetchone()
    commits, wal = row["x"], row["w"]
    cur.execute("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
                "WHERE funcname LIKE 'audit%'")
    funcs = {r["funcname"]: (r["calls"], r["total_time"], r["self_time"]) for r in cur.fetchall()}
    return {"audit": proc_cpu_ticks(audit), "pg": sum(proc_cpu_ticks(p) for p in stack.pg_pids()),
            "commits": commits, "wal": wal, "funcs": funcs}


def report(name, n, a, b):
    us = 1e6 / CLK_TCK / n
    print(f"{name}: audit_cpu_us_per_event={(b['audit'] - a['audit']) * us:.0f} "
          f"pg_cpu_us_per_event={(b['pg'] - a['pg']) * us:.0f} "
          f"transactions_per_event={(b['commits'] - a['commits'] - 1) / n:.3f} "
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
    ap.add_argument("--chat", type=int, default=1000, help="chat requests one at a time through the edge (1000)")
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
        if args.chat > 0:
            body = stack.dir / "chat.json"
            body.write_text(json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
            lkload = stack.build_dir / "tests" / "bench" / "lkload"
            h0 = scrape_hops(stack.admin_base)
            c0 = (sum(proc_cpu_ticks(q) for q in stack.lumkey_pids()), sum(proc_cpu_ticks(q) for q in stack.pg_pids()))
            out = subprocess.run([str(lkload), "--target", stack.api_addr, "--path", "/v1/chat/completions",
                                  "--body-file", str(body), "--header", f"Authorization: Bearer {stack.key}",
                                  "--mode", "closed", "--conns", "1", "--requests", str(args.chat)],
                                 stdout=subprocess.PIPE, text=True, timeout=600)
            c1 = (sum(proc_cpu_ticks(q) for q in stack.lumkey_pids()), sum(proc_cpu_ticks(q) for q in stack.pg_pids()))
            hops = hop_delta(h0, scrape_hops(stack.admin_base))
            r = json.loads(out.stdout)
            us = 1e6 / CLK_TCK / max(1, r["ok"])
            a = hops.get("audit", {})
            print(f"chat one at a time: requests={r['ok']} p50_us={r['latency']['p50_us']:.0f} "
                  f"p99_us={r['latency']['p99_us']:.0f} audit_hop_calls={a.get('calls')} "
                  f"audit_hop_mean_us={a.get('mean_us') or 0:.0f} "
                  f"lumkey_cpu_us_per_req={(c1[0] - c0[0]) * us:.0f} pg_cpu_us_per_req={(c1[1] - c0[1]) * us:.0f}")
        m = re.search(r"events_per_s=(\d+)", pipe_line or "")
        if p.returncode != 0 or not m:
            print("bench_audit failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
