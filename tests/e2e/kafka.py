"""A real Apache Kafka broker (KRaft, one node) for the audit tests, run by scripts/kafka.sh from
Maven Central's org.apache.kafka artifacts (fetched once into a cache), and a reader (kcat).

    with KafkaBroker() as k:
        k.brokers             -> "127.0.0.1:PORT"
        k.stop(); k.start()   # an outage, same data
        k.read(topic)         -> [{"key", "headers", "payload", "partition", "offset"}, ...]
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from lkstack import SOURCE_DIR, free_port

KAFKA_SH = Path(SOURCE_DIR) / "scripts" / "kafka.sh"


class KafkaError(Exception):
    pass


class KafkaBroker:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="lk-kafka-", dir="/tmp"))
        self.port = 0
        self.proc = None
        self.log = self.dir / "broker.log"

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, timeout: float = 120.0) -> None:
        if not self.port:
            self.port = free_port()
            while True:  # the controller listens on port + 1
                try:
                    import socket
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", self.port + 1))
                    break
                except OSError:
                    self.port = free_port()
        subprocess.run([str(KAFKA_SH), "fetch"], check=True, timeout=600)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(KAFKA_SH), "start", str(self.dir / "node"), str(self.port)],
                                     stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise KafkaError(f"the broker exited ({self.proc.returncode}):\n" + self.log.read_text()[-3000:])
            p = subprocess.run(["kcat", "-b", self.brokers, "-L", "-m", "2"], capture_output=True, timeout=20)
            if p.returncode == 0 and b"1 brokers" in p.stdout:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise KafkaError("the broker did not come up:\n" + self.log.read_text()[-3000:])
            time.sleep(0.3)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def read(self, topic: str, timeout: float = 30.0) -> list[dict]:
        """Every message of topic from the beginning (kcat, as a separate consumer)."""
        p = subprocess.run(["kcat", "-b", self.brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q"],
                           capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise KafkaError(f"kcat failed ({p.returncode}): {p.stderr.decode(errors='replace')[-500:]}")
        out = []
        for line in p.stdout.decode().splitlines():
            m = json.loads(line)
            hdrs = m.get("headers") or []
            m["headers"] = dict(zip(hdrs[0::2], hdrs[1::2]))
            m["body"] = json.loads(m["payload"])
            out.append(m)
        return out
