"""lkstack - a whole Lumkey stack on one host, for end-to-end tests.

Starts, in a fresh temporary directory:
  a private PostgreSQL cluster (scripts/pgctl.sh), the migrations
  (lumkey-migrate), a master key (lumkey-vault --init-master-key), the
  bootstrap admin token (lumkey-vault --bootstrap-admin), the four workers on
  ipc:// endpoints, lumkey-edge on free ports, and lumkey-mock (with
  --expect-key set, through the environment, to the provider credential);
  then registers the mock as a provider and issues a Lumkey key through
  lumkeyctl.

Every long-running process runs in its own process group and is stopped by
group, and dies with the test process (PR_SET_PDEATHSIG). A small reaper
process (this file, run as a script, detached so that a runner killing the
test's process tree does not reach it) holds the read end of a pipe whose
write end only the test process holds: when the test process dies, however it
dies, the reaper sees EOF and stops every recorded process group and
PostgreSQL (which pg_ctl daemonized), so nothing is left behind.

Secrets (admin token, Lumkey key, provider credential) live in attributes that
start with an underscore or are only exposed through helpers; `redact()`
removes them from any text before it goes into an assertion message.

Used by tests/e2e/conftest.py and tests/e2e/run_node.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("LK_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BUILD_DIR = Path(os.environ.get("LK_BUILD_DIR") or SOURCE_DIR / "build")

WORKERS = ("vault", "policy", "approval", "audit")
SERVICES = WORKERS + ("edge",)
MODEL = "mock-gpt"          # served by the mock provider
MODEL_ALT = "gpt-4o-mini"   # also served by the mock provider
DEAD_MODEL = "dead-model"   # served by a provider whose base URL is a closed port
CLAUDE_MODEL = "claude-mock"  # served by the mock as an anthropic-kind provider
AZURE_MODEL = "azure-dep"     # served by the mock as an azure-kind provider (deployment azure-dep)

BINARIES = {
    "edge": "services/edge/lumkey-edge",
    "policy": "services/policy/lumkey-policy",
    "vault": "services/vault/lumkey-vault",
    "approval": "services/approval/lumkey-approval",
    "audit": "services/audit/lumkey-audit",
    "migrate": "services/migrate/lumkey-migrate",
    "ctl": "services/ctl/lumkeyctl",
    "mock": "tests/mock/lumkey-mock",
}

_SECRET_PATTERN = re.compile(r"lk_(?:live|test|adm)_[0-9A-Za-z]{20,}")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class StackError(RuntimeError):
    pass


# ------------------------------------------------------------------ helpers --

def binary(name: str, build_dir: Path | None = None) -> Path:
    return Path(build_dir or BUILD_DIR) / BINARIES[name]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b62_crc(v: int) -> str:
    out = []
    for _ in range(6):
        out.append(_B62[v % 62])
        v //= 62
    return "".join(reversed(out))


def make_key(prefix: str = "lk_live_", key_id: str | None = None) -> str:
    """A well-formed Lumkey key (right prefix, length, charset, CRC) that no one issued."""
    key_id = key_id or "".join(secrets.choice(_B62) for _ in range(16))
    body = prefix + key_id + "".join(secrets.choice(_B62) for _ in range(43))
    return body + _b62_crc(zlib.crc32(body.encode()))


def _set_pdeathsig(sig: int = signal.SIGTERM) -> None:
    """In a child: receive `sig` when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """(status, headers (lower-case keys), body bytes) without raising on HTTP errors."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# ------------------------------------------------------------------ process --

class Proc:
    """One long-running process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path, stdin_data: bytes | None = None):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.popen: subprocess.Popen | None = None
        self.expected_dead = False  # set while a test keeps it down on purpose

    def start(self, registry: Path | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_set_pdeathsig)
        finally:
            logf.close()
        self.expected_dead = False
        if registry is not None:
            with open(registry, "a") as f:
                f.write(f"{self.popen.pid}\n")

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self):
        return self.popen.poll() if self.popen else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signals the whole group, waits for the leader and every member; SIGKILL after timeout."""
        if self.popen is None:
            return None
        pgid = self.popen.pid
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.popen.returncode


# -------------------------------------------------------------------- stack --

class Stack:
    """A running Lumkey stack. Use start() / stop(), or as a context manager."""

    def __init__(self, build_dir: Path | None = None, source_dir: Path | None = None, hop_timeout_ms: int = 1000,
                 max_body_bytes: int = 256 * 1024, upstream_timeout_ms: int = 20000, extra_env: dict | None = None,
                 service_env: dict | None = None):
        self.build_dir = Path(build_dir or BUILD_DIR).resolve()
        self.source_dir = Path(source_dir or SOURCE_DIR).resolve()
        self.hop_timeout_ms = hop_timeout_ms
        self.max_body_bytes = max_body_bytes
        self.upstream_timeout_ms = upstream_timeout_ms
        self.extra_env = dict(extra_env or {})
        self.service_env = {k: dict(v) for k, v in (service_env or {}).items()}  # name -> env of that process only
        self.dir: Path | None = None
        self.procs: dict[str, Proc] = {}
        self.conninfo = ""
        self.api_addr = self.admin_addr = self.mock_addr = ""
        self.key_id = ""
        self.provider_id = ""
        self._admin_token = ""
        self._key = ""
        self._provider_cred = ""
        self._dead_cred = ""
        self._reaper_w: int | None = None
        self._pg_started = False
        self._db = None

    # -- secrets, kept out of reprs and messages
    @property
    def key(self) -> str:
        return self._key

    @property
    def provider_credential(self) -> str:
        return self._provider_cred

    @property
    def admin_token(self) -> str:
        return self._admin_token

    def secrets(self) -> list[str]:
        return [s for s in (self._admin_token, self._key, self._provider_cred, self._dead_cred) if s]

    def redact(self, text) -> str:
        text = str(text)
        for s in self.secrets():
            text = text.replace(s, "<redacted>")
        return _SECRET_PATTERN.sub("<redacted-key>", text)

    def __repr__(self) -> str:
        return f"<Stack dir={self.dir} api={self.api_addr}>"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- paths and env
    @property
    def api_base(self) -> str:
        return f"http://{self.api_addr}"

    @property
    def admin_base(self) -> str:
        return f"http://{self.admin_addr}"

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.api_addr}/v1"

    @property
    def mock_base(self) -> str:
        return f"http://{self.mock_addr}"

    @property
    def san_dir(self) -> Path:
        return self.dir / "san"

    def env(self, **more) -> dict:
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("LUMKEY_", "OPENAI_", "MOCK_", "ASAN_", "UBSAN_", "LSAN_"))}
        e.update({
            "LUMKEY_DB": self.conninfo,
            "LUMKEY_RUN_DIR": str(self.dir / "run"),
            "LUMKEY_MASTER_KEY_FILE": str(self.dir / "master.key"),
            "LUMKEY_LISTEN": self.api_addr,
            "LUMKEY_ADMIN_LISTEN": self.admin_addr,
            "LUMKEY_HOP_TIMEOUT_MS": str(self.hop_timeout_ms),
            "LUMKEY_UPSTREAM_TIMEOUT_MS": str(self.upstream_timeout_ms),
            "LUMKEY_MAX_BODY_BYTES": str(self.max_body_bytes),
            # Sanitizer builds: reports go to files that the tests check; a
            # daemon killed at the end is not a leak worth failing on.
            "ASAN_OPTIONS": f"detect_leaks=0:halt_on_error=1:log_path={self.san_dir}/asan",
            "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=1:log_path={self.san_dir}/ubsan",
        })
        e.update(self.extra_env)
        e.update(more)
        return e

    def _tool_env(self, **more) -> dict:
        """One-shot tools run with leak detection on: they exit normally."""
        e = self.env(**more)
        e["ASAN_OPTIONS"] = f"detect_leaks=1:halt_on_error=1:log_path={self.san_dir}/asan"
        return e

    def run_tool(self, name: str, args: list[str], input: bytes | None = None, env: dict | None = None,
                 timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        exe = binary(name, self.build_dir)
        if not exe.exists():
            raise StackError(f"{exe} is missing: build the tree first")
        p = subprocess.run([str(exe), *args], input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env or self._tool_env(), timeout=timeout, preexec_fn=_set_pdeathsig)
        if check and p.returncode != 0:
            raise StackError(self.redact(
                f"{name} {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout.decode(errors='replace')}\n"
                f"stderr: {p.stderr.decode(errors='replace')}"))
        return p

    def ctl(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = self._tool_env(LUMKEY_ADDR=self.admin_base, LUMKEY_TOKEN=self._admin_token)
        return self.run_tool("ctl", list(args), input=input, env=env, check=check)

    # -- start
    def start(self) -> "Stack":
        missing = [str(binary(n, self.build_dir)) for n in BINARIES if not binary(n, self.build_dir).exists()]
        if missing:
            raise StackError("missing binaries (build the tree first): " + ", ".join(missing))
        # short path: ipc:// endpoints live here (sun_path is 108 bytes)
        self.dir = Path(tempfile.mkdtemp(prefix="lk-e2e-", dir="/tmp"))
        os.chmod(self.dir, 0o755)  # PostgreSQL may run as another user
        (self.dir / "run").mkdir()
        (self.dir / "logs").mkdir()
        self.san_dir.mkdir()
        self.api_addr = f"127.0.0.1:{free_port()}"
        self.admin_addr = f"127.0.0.1:{free_port()}"
        self.mock_addr = f"127.0.0.1:{free_port()}"
        self._provider_cred = "sk-mock-" + secrets.token_urlsafe(24)
        self._dead_cred = "sk-dead-" + secrets.token_urlsafe(24)
        try:
            self._start_reaper()
            self._start_pg()
            self.run_tool("migrate", [])
            self.run_tool("vault", ["--init-master-key", str(self.dir / "master.key")])
            self._bootstrap_admin()
            for w in WORKERS:
                self.start_service(w, wait=False)
            self._start_listeners()
            self._provision()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_listeners(self, attempts: int = 5) -> None:
        """Starts the edge and the mock on their TCP ports and waits until ready. free_port() can
        race with another stack started in parallel (ctest -j): when a listener finds its port
        taken, both get fresh ports and start again."""
        for attempt in range(attempts):
            self.start_service("edge", wait=False)
            self._start_mock()
            try:
                self.wait_ready()
                return
            except StackError:
                clash = any("Address already in use" in _tail(self.procs[n].log, 20) for n in ("edge", "mock"))
                if not clash or attempt == attempts - 1:
                    raise
            for n in ("edge", "mock"):
                self.procs[n].expected_dead = True
                self.procs[n].stop(timeout=10)
                log = self.procs[n].log
                log.rename(log.with_name(f"{log.name}.port-clash-{attempt}"))
            self.api_addr = f"127.0.0.1:{free_port()}"
            self.admin_addr = f"127.0.0.1:{free_port()}"
            self.mock_addr = f"127.0.0.1:{free_port()}"

    def _start_reaper(self) -> None:
        r, w = os.pipe()
        try:
            # the launcher forks the reaper off and exits: the reaper is nobody's child
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--reaper", str(self.dir),
                            str(self.source_dir), str(r)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           pass_fds=(r,), start_new_session=True, check=True, timeout=30)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        self._reaper_w = w

    def _start_pg(self) -> None:
        pgctl = self.source_dir / "scripts" / "pgctl.sh"
        if not pgctl.exists():
            raise StackError(f"{pgctl} is missing")
        port = str(free_port())
        p = subprocess.run(["bash", str(pgctl), "start", str(self.dir / "pg"), port, "--fsync-off"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        self._pg_started = True
        if p.returncode != 0:
            raise StackError(f"pgctl.sh start failed ({p.returncode}):\n{p.stdout.decode(errors='replace')}")
        ci = self.dir / "pg" / "conninfo"
        if not ci.exists():
            raise StackError("pgctl.sh did not write pg/conninfo")
        self.conninfo = ci.read_text().strip()

    def _bootstrap_admin(self) -> None:
        p = self.run_tool("vault", ["--bootstrap-admin"])
        token = p.stdout.decode().strip().splitlines()
        token = token[-1].strip() if token else ""
        if not token.startswith("lk_adm_"):
            raise StackError("lumkey-vault --bootstrap-admin did not print an lk_adm_ token on stdout")
        self._admin_token = token

    def service_argv(self, name: str) -> list[str]:
        return [str(binary(name, self.build_dir))]

    def start_service(self, name: str, wait: bool = True) -> Proc:
        """Starts (or restarts) a worker or the edge with the stack's environment."""
        proc = Proc(name, self.service_argv(name), self.env(**self.service_env.get(name, {})),
                    self.dir / "logs" / f"{name}.log")
        proc.start(self.dir / "pgids")
        self.procs[name] = proc
        if wait:
            self.wait_ready()
        return proc

    def _start_mock(self) -> None:
        argv = [str(binary("mock", self.build_dir)), "--listen", self.mock_addr]
        # the expected key goes through the environment, not the command line (ps)
        proc = Proc("mock", argv, self.env(MOCK_EXPECT_KEY=self._provider_cred), self.dir / "logs" / "mock.log")
        proc.start(self.dir / "pgids")
        self.procs["mock"] = proc

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Stops one process (SIGKILL by default) and marks it as down on purpose."""
        proc = self.procs[name]
        proc.expected_dead = True
        proc.stop(sig=sig, timeout=10)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the edge's /readyz says 200 and the mock answers; fails early if a process died."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            dead = self.dead_processes()
            if dead:
                raise StackError(self.redact("process exited during start-up: " + "; ".join(
                    f"{n} (status {self.procs[n].returncode()}):\n{_tail(self.procs[n].log)}" for n in dead)))
            try:
                st, _, body = http("GET", self.api_base + "/readyz", timeout=2)
                mst, _, _ = http("GET", self.mock_base + "/_mock/requests", timeout=2)
                if st == 200 and mst == 200:
                    return
                last = f"/readyz {st} {body[:200]!r}, mock {mst}"
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise StackError(self.redact(f"stack not ready after {timeout:.0f}s: {last}\n" + self.log_tails()))
            time.sleep(0.05)

    def readiness(self) -> tuple[int, dict]:
        """(status of GET /readyz, its "services" map: name -> "up" | "down")."""
        st, _, body = http("GET", self.api_base + "/readyz", timeout=5)
        try:
            return st, json.loads(body).get("services", {})
        except ValueError:
            return st, {}

    def wait_service_down(self, name: str, timeout: float = 15.0) -> None:
        """Until the edge reports `name` down (its last pong is stale)."""
        deadline = time.monotonic() + timeout
        while True:
            _, svcs = self.readiness()
            if svcs.get(name) == "down":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz still reports {name} {svcs.get(name)!r} {timeout:.0f}s after it died")
            time.sleep(0.1)

    def _provision(self) -> None:
        # the mock provider (on loopback: explicitly allowed), and one whose base URL is a closed port
        p = self.ctl("providers", "create", "--name", "mock", "--kind", "openai-compatible", "--base-url",
                     self.mock_base + "/v1", "--api-key-stdin", "--models", f"{MODEL},{MODEL_ALT}",
                     "--allow-private", "--format", "json", input=self._provider_cred.encode())
        prov = json.loads(p.stdout)
        self.provider_id = prov.get("id", "")
        self.ctl("providers", "create", "--name", "dead", "--kind", "openai-compatible", "--base-url",
                 f"http://127.0.0.1:{free_port()}/v1", "--api-key-stdin", "--models", DEAD_MODEL,
                 "--allow-private", "--format", "json", input=self._dead_cred.encode())
        # the same mock as an Anthropic provider (base URL without /v1) and as an Azure one
        self.ctl("providers", "create", "--name", "mock-anthropic", "--kind", "anthropic", "--base-url",
                 self.mock_base, "--api-key-stdin", "--models", CLAUDE_MODEL, "--allow-private",
                 "--format", "json", input=self._provider_cred.encode())
        self.ctl("providers", "create", "--name", "mock-azure", "--kind", "azure", "--base-url",
                 self.mock_base, "--api-key-stdin", "--models", AZURE_MODEL, "--allow-private",
                 "--format", "json", input=self._provider_cred.encode())
        k = json.loads(self.ctl("keys", "create", "--name", "e2e", "--user", "e2e-user", "--format", "json").stdout)
        self._key = k["key"]
        self.key_id = k["id"]

    # -- state checks
    def dead_processes(self) -> list[str]:
        return [n for n, p in self.procs.items() if not p.expected_dead and not p.alive()]

    def sanitizer_reports(self, mark_seen: bool = False) -> list[tuple[str, str]]:
        """ASan/UBSan reports written since the last call with mark_seen (then renamed *.seen)."""
        if not self.dir or not self.san_dir.exists():
            return []
        out = []
        for f in sorted(self.san_dir.iterdir()):
            if f.suffix == ".seen":
                continue
            text = f.read_text(errors="replace")
            if text.strip():
                out.append((f.name, text))
                if mark_seen:
                    f.rename(f.with_name(f.name + ".seen"))
        return out

    def log_tails(self, n: int = 30) -> str:
        return self.redact("\n".join(f"--- {name} ({p.log}):\n{_tail(p.log, n)}" for name, p in self.procs.items()))

    def all_logs_text(self) -> str:
        parts = []
        for f in sorted((self.dir / "logs").glob("*")) + sorted(self.dir.glob("pg/**/*.log")):
            try:
                parts.append(f.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    # -- clients
    def client(self, api_key: str | None = None, **kw):
        import openai
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 60)
        return openai.OpenAI(base_url=self.openai_base_url, api_key=api_key or self._key, **kw)

    def anthropic(self, api_key: str | None = None, **kw):
        import anthropic
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 60)
        return anthropic.Anthropic(base_url=self.api_base, api_key=api_key or self._key, **kw)

    def chat_raw(self, body, api_key: str | None = None, headers: dict | None = None, use_key: bool = True,
                 timeout: float = 30):
        """POST /v1/chat/completions with raw bytes; (status, headers, body bytes)."""
        h = {"content-type": "application/json"}
        if use_key:
            h["authorization"] = f"Bearer {api_key or self._key}"
        h.update(headers or {})
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
        return http("POST", self.openai_base_url + "/chat/completions", data, h, timeout=timeout)

    # -- mock's request log
    def mock_requests(self) -> list[dict]:
        st, _, body = http("GET", self.mock_base + "/_mock/requests")
        if st != 200:
            raise StackError(f"GET /_mock/requests answered {st}")
        return json.loads(body)["data"]

    def clear_mock_requests(self) -> None:
        http("DELETE", self.mock_base + "/_mock/requests")

    # -- audit
    def db(self):
        import psycopg
        from psycopg.rows import dict_row
        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
        return self._db

    def audit_rows(self, request_id: str) -> list[dict]:
        with self.db().cursor() as cur:
            cur.execute("SELECT * FROM audit_events WHERE request_id = %s ORDER BY seq", (request_id,))
            return cur.fetchall()

    def wait_audit(self, request_id: str, kind: str | None = None, timeout: float = 10.0) -> dict:
        """The first audit row of request_id (of the given kind), polling until it is recorded."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.audit_rows(request_id) if kind is None or r["kind"] == kind]
            if rows:
                return rows[0]
            if time.monotonic() > deadline:
                have = [(r["kind"], r["http_status"]) for r in self.audit_rows(request_id)]
                raise AssertionError(f"no audit row of kind {kind} for request {request_id} after {timeout}s "
                                     f"(rows present: {have})")
            time.sleep(0.05)

    def wait_closing_audit(self, request_id: str, timeout: float = 10.0) -> dict:
        """The row that closes a request: request.completed or request.denied."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.audit_rows(request_id) if r["kind"] in ("request.completed", "request.denied")]
            if rows:
                return rows[-1]
            if time.monotonic() > deadline:
                have = [(r["kind"], r["http_status"]) for r in self.audit_rows(request_id)]
                raise AssertionError(f"no closing audit row for request {request_id} after {timeout}s "
                                     f"(rows present: {have})")
            time.sleep(0.05)

    # -- stop
    def stop(self) -> None:
        """Edge first, then workers, mock, then PostgreSQL. Idempotent."""
        if self._db is not None:
            try:
                self._db.close()
            except Exception:
                pass
            self._db = None
        order = ["edge"] + [w for w in WORKERS] + ["mock"]
        order += [n for n in self.procs if n not in order]  # extra processes a test added
        for name in order:
            p = self.procs.get(name)
            if p:
                p.stop(signal.SIGTERM, timeout=10)
        if self._pg_started and self.dir:
            pgctl = self.source_dir / "scripts" / "pgctl.sh"
            try:
                subprocess.run(["bash", str(pgctl), "stop", str(self.dir / "pg")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
            except Exception:
                pass
            _kill_postmasters(self.dir / "pg")
            self._pg_started = False
        if self._reaper_w is not None:
            try:
                os.write(self._reaper_w, b"done")  # all stopped: the reaper exits without acting
            except OSError:
                pass
            os.close(self._reaper_w)
            self._reaper_w = None

    def cleanup_dir(self) -> None:
        if self.dir and self.dir.exists() and not os.environ.get("LK_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)


def _kill_postmasters(pgdir: Path) -> None:
    """If a postmaster still runs from pgdir (pgctl stop failed), shut it down immediately."""
    if not pgdir.exists():
        return
    for pidfile in pgdir.glob("**/postmaster.pid"):
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _reaper_main(state_dir: str, source_dir: str, fd: int) -> None:
    """Detaches, then waits on the pipe: data means all is done, EOF means the test process died."""
    if os.fork() > 0:
        os._exit(0)  # the parent returns at once; the child is reparented away from the test's tree
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    while True:
        try:
            data = os.read(fd, 64)
            break
        except InterruptedError:
            continue
    if data:
        return
    d = Path(state_dir)
    try:
        pgids = [int(x) for x in (d / "pgids").read_text().split()]
    except OSError:
        pgids = []
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    try:
        subprocess.run(["bash", str(Path(source_dir) / "scripts" / "pgctl.sh"), "stop", str(d / "pg")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except Exception:
        pass
    _kill_postmasters(d / "pg")
    if not os.environ.get("LK_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--reaper":
        _reaper_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        print("usage: lkstack.py --reaper STATE_DIR SOURCE_DIR PIPE_FD (internal)", file=sys.stderr)
        sys.exit(2)
