#!/usr/bin/env python3
"""bench_audit.py - audit throughput and latency (a benchmark, not a test).

    .venv/bin/python scripts/bench_audit.py [EVENTS]

Starts a real Kafka broker (scripts/kafka.sh) and a Lumkey stack (tests/e2e/lkstack.py) whose
audit worker exports to it, then prints:
  - the AUDIT round trip one at a time (what the durable accept costs; the edge overlaps it with
    the credential fetch) - tests/bench/bench_audit;
  - events/s durably recorded in PostgreSQL (pipelined, group-committed, hash-chained, outbox row
    in the same transaction) - tests/bench/bench_audit;
  - events/s delivered to Kafka (acks=all, idempotent) while and after they are written;
  - chat requests one at a time through Lumkey (p50 / p99), for scale.
Build first (cmake --build build).
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from kafka import KafkaBroker  # noqa: E402
from lkstack import MODEL, Stack, http  # noqa: E402


def status(stack):
    h = {"authorization": f"Bearer {stack.admin_token}"}
    st, _, body = http("GET", stack.admin_base + "/admin/v1/audit/status", None, h)
    return json.loads(body)


def main():
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    with KafkaBroker() as kafka:
        stack = Stack(extra_env={"LUMKEY_KAFKA_BROKERS": kafka.brokers, "LUMKEY_KAFKA_TOPIC": "lumkey.audit.bench"})
        with stack:
            endpoint = f"ipc://{stack.dir}/run/audit.ipc"
            bench = stack.build_dir / "tests" / "bench" / "bench_audit"
            d0 = status(stack)["kafka"]["delivered"]
            t0 = time.monotonic()
            out = subprocess.run([str(bench), endpoint, str(events), "256"], capture_output=True, text=True,
                                 timeout=1800)
            t_pg = time.monotonic() - t0
            print(out.stdout.strip())
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
            while True:
                s = status(stack)
                if s["outbox_backlog"] == 0 and s["kafka"]["in_flight"] == 0:
                    break
                time.sleep(0.2)
            t_kafka = time.monotonic() - t0
            delivered = s["kafka"]["delivered"] - d0
            print(f"kafka delivered={delivered} seconds_from_first_write={t_kafka:.2f} "
                  f"events_per_s={delivered / t_kafka:.0f} (pg phase took {t_pg:.2f}s)")
            body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
            lat = []
            for _ in range(500):
                a = time.perf_counter()
                st, _, _ = stack.chat_raw(body)
                lat.append((time.perf_counter() - a) * 1e6)
                assert st == 200
            lat.sort()
            print(f"chat one-at-a-time requests=500 p50_us={statistics.median(lat):.0f} "
                  f"p99_us={lat[int(len(lat) * 0.99)]:.0f}")


if __name__ == "__main__":
    main()
