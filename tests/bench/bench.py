"""bench - Lumkey's benchmark harness (issue 9): direct-to-mock, through Lumkey and
through peer gateways, in alternating rounds within one run.

Started by scripts/bench (which builds first). Brings up a whole Lumkey stack
with tests/e2e/lkstack.py (private PostgreSQL, the four workers, the edge,
lumkey-mock with --record 0), attaches a 20-rule policy with PII detectors to
the benchmark key, starts the peers (Portkey's open-source gateway from an npm
cache outside the repo) against the same mock, and measures, each target
against direct-to-mock in the same round:

  one request at a time   lkload closed loop, 1 connection: p50 / p99
  fixed rate (open loop)  lkload open loop at each --rates value: p50 / p99
                          from the *scheduled* send time; CPU time of every
                          process of the target (utime+stime from /proc)
                          divided by the requests answered
  max throughput          wrk -t2 -c32 (closed loop), req/s
  streaming               lkload streams, one at a time: time to the first
                          event carrying text, gaps between text events (p99)
  concurrent streams      N streams open at once (default 1000): the whole
                          text (the mock's deterministic words, compared byte
                          for byte, in order), a finish event and [DONE]
                          received?; peak RSS of the target's processes
                          (sampled VmRSS and final VmHWM)

A stream is judged by its text, not its event count: Lumkey's answer-side
policy filter holds text back and merges deltas into fewer, longer events, so
counting events reported intact streams as lost.
  per hop                 deltas of the edge's /metrics worker-call
                          histograms over Lumkey's fixed-rate phases

Prints a table, writes JSON next to the markdown, rewrites the part of the
markdown file between the harness markers, and draws a latency plot.
Figures only: nothing here fails on a figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE.parents[1]
sys.path.insert(0, str(SOURCE_DIR / "tests" / "e2e"))
import lkstack  # noqa: E402

BEGIN = "<!-- bench:begin (written by scripts/bench; a rerun replaces everything up to bench:end) -->"
END = "<!-- bench:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOPS = ("policy", "vault", "approval", "audit")
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER = "2.1.9"
LITELLM_VERSION = "1.74.9"  # newer [proxy] extras need litellm-proxy, absent from the reachable index
# lumkey-mock's streamed answer without an echo/bytes directive: piece i is MOCK_WORDS[i % 10]
# (tests/mock/mock_openai.c, mock_chat_set_words); keep in step.
MOCK_WORDS = ("Hello", " from", " lumkey-mock", ".", " This", " is", " a", " canned", " answer", ".")


def mock_text(chunks: int) -> str:
    """The text lumkey-mock streams for [[mock chunks=N]]: what every stream must deliver, in order."""
    return "".join(MOCK_WORDS[i % len(MOCK_WORDS)] for i in range(chunks))


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- /proc --

def proc_cpu_ticks(pid: int) -> int:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    f = s[s.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)


def proc_status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(pids: set[int]) -> set[int]:
    """pids and all their descendants (one /proc scan, repeated to a fixed point)."""
    ppid = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                s = (d / "stat").read_text()
                ppid[int(d.name)] = int(s[s.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    out = set(p for p in pids if p in ppid)
    grew = True
    while grew:
        grew = False
        for p, pp in ppid.items():
            if pp in out and p not in out:
                out.add(p)
                grew = True
    return out


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of each group of pids every 50 ms; keeps the peak."""

    def __init__(self, groups: dict[str, callable]):
        super().__init__(daemon=True)
        self.groups = groups
        self.peak = {g: 0 for g in groups}
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            for g, pids_fn in self.groups.items():
                total = sum(proc_status_kb(p, "VmRSS") for p in pids_fn())
                self.peak[g] = max(self.peak[g], total)
            self.stop_ev.wait(0.05)

    def stop(self):
        self.stop_ev.set()
        self.join()


# ------------------------------------------------------------- targets --

class Target:
    """Something that answers POST /v1/chat/completions: the mock, Lumkey or a peer."""

    def __init__(self, name: str, addr: str, headers: list[str], pids_fn, label: str, pg_fn=None):
        self.name, self.addr, self.headers, self.pids_fn, self.label = name, addr, headers, pids_fn, label
        self.pg_fn = pg_fn or (lambda: set())  # the PostgreSQL behind it, if any

    def pids(self) -> set[int]:
        return self.pids_fn()


class BenchStack(lkstack.Stack):
    """lkstack.Stack with the mock's request log off and PostgreSQL fsync configurable."""

    def __init__(self, *a, fsync: bool = True, **kw):
        super().__init__(*a, **kw)
        self.fsync = fsync

    def _start_mock(self) -> None:
        argv = [str(lkstack.binary("mock", self.build_dir)), "--listen", self.mock_addr, "--record", "0"]
        proc = lkstack.Proc("mock", argv, self.env(MOCK_EXPECT_KEY=self._provider_cred),
                            self.dir / "logs" / "mock.log")
        proc.start(self.dir / "pgids")
        self.procs["mock"] = proc

    def _start_pg(self) -> None:
        pgctl = self.source_dir / "scripts" / "pgctl.sh"
        argv = ["bash", str(pgctl), "start", str(self.dir / "pg"), str(lkstack.free_port())]
        if not self.fsync:
            argv.append("--fsync-off")
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        self._pg_started = True
        if p.returncode != 0:
            raise lkstack.StackError(f"pgctl.sh start failed ({p.returncode}):\n{p.stdout.decode(errors='replace')}")
        self.conninfo = (self.dir / "pg" / "conninfo").read_text().strip()

    def lumkey_pids(self) -> set[int]:
        return {p.pid for n, p in self.procs.items() if n in lkstack.SERVICES and p.alive()}

    def pg_pids(self) -> set[int]:
        try:
            pm = int((self.dir / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return set()
        return children_of({pm})

    def mock_pids(self) -> set[int]:
        p = self.procs.get("mock")
        return {p.pid} if p and p.alive() else set()


def attach_policy(stack: BenchStack, policy_file: Path) -> dict:
    """policy create + keys update --policy; a clear note instead of a failure when not there yet."""
    p = stack.ctl("policy", "create", "--name", "bench-20-rules", "--file", str(policy_file), "--format", "json",
                  check=False)
    if p.returncode != 0:
        err = stack.redact((p.stderr or p.stdout).decode(errors="replace").strip().splitlines()[:2])
        return {"attached": False, "note": "policy commands not available in this build "
                f"(`lumkeyctl policy create` exited {p.returncode}: {err}); the key runs with no policy"}
    try:
        pol = json.loads(p.stdout)
        pol_id = pol.get("id") or pol.get("policy", {}).get("id")
    except ValueError:
        m = re.search(rb"pol_[0-9A-Za-z]+", p.stdout)
        pol_id = m.group(0).decode() if m else None
    if not pol_id:
        return {"attached": False, "note": "lumkeyctl policy create printed no pol_ id"}
    u = stack.ctl("keys", "update", stack.key_id, "--policy", pol_id, check=False)
    if u.returncode != 0:
        return {"attached": False, "note": f"policy {pol_id} created but `keys update --policy` exited "
                f"{u.returncode}: {stack.redact(u.stderr.decode(errors='replace').strip()[:200])}"}
    return {"attached": True, "id": pol_id, "note": f"policy {pol_id} (20 rules) attached to the key"}


class Portkey:
    """Portkey's open-source gateway from an npm cache outside the repo, pointed at the mock with
    x-portkey-provider: openai + x-portkey-custom-host."""

    def __init__(self, cache: Path, install: bool):
        self.dir = cache / "portkey"
        self.install = install
        self.proc = None
        self.port = 0
        self.note = ""

    @property
    def entry(self) -> Path:
        return self.dir / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"

    def ensure(self) -> bool:
        if self.entry.exists():
            return True
        if not self.install:
            self.note = f"Portkey not installed in {self.dir} (scripts/bench without --quick installs it)"
            return False
        if not shutil.which("npm"):
            self.note = "npm not found: Portkey skipped"
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "package.json").write_text(json.dumps({
            "name": "lumkey-bench-portkey", "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
            # the default @hono/node-server breaks streaming (a header bug); 2.1.9 fixes it
            "overrides": {"@hono/node-server": HONO_NODE_SERVER}}, indent=1) + "\n")
        log(f"installing @portkey-ai/gateway {PORTKEY_VERSION} into {self.dir}")
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=self.dir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=600)
        if p.returncode != 0 or not self.entry.exists():
            self.note = "npm install of @portkey-ai/gateway failed: " + p.stdout.decode(errors="replace")[-300:]
            return False
        return True

    def version(self) -> str:
        try:
            return json.loads((self.entry.parents[1] / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return "?"

    def start(self, logdir: Path) -> bool:
        if not shutil.which("node"):
            self.note = "node not found: Portkey skipped"
            return False
        if not self.ensure():
            return False
        for _ in range(5):
            self.port = lkstack.free_port()
            logf = open(logdir / "portkey.log", "ab")
            env = dict(os.environ, NODE_ENV="production")
            self.proc = subprocess.Popen(["node", str(self.entry), f"--port={self.port}", "--headless"], cwd=self.dir,
                                         env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=lkstack._set_pdeathsig)
            logf.close()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    st, _, _ = lkstack.http("GET", f"http://127.0.0.1:{self.port}/", timeout=1)
                    if st:
                        return True
                except OSError:
                    time.sleep(0.1)
            self.stop()
        self.note = "Portkey did not start (see its log)"
        return False

    def pids(self) -> set[int]:
        return children_of({self.proc.pid}) if self.proc and self.proc.poll() is None else set()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass


class LiteLLM:
    """LiteLLM's proxy (PyPI `litellm[proxy]`) in a venv in the cache outside the repo, one model
    routed to the mock as an OpenAI-compatible provider. No master key: any bearer is accepted."""

    def __init__(self, cache: Path, install: bool, mock_addr: str, mock_key: str):
        self.dir = cache / "litellm"
        self.install = install
        self.mock_addr, self.mock_key = mock_addr, mock_key
        self.proc = None
        self.port = 0
        self.note = ""

    @property
    def exe(self) -> Path:
        return self.dir / "venv" / "bin" / "litellm"

    def ensure(self) -> bool:
        if self.exe.exists():
            return True
        if not self.install:
            self.note = f"LiteLLM not installed in {self.dir} (scripts/bench without --quick installs it)"
            return False
        log(f"installing litellm[proxy] {LITELLM_VERSION} into {self.dir}/venv")
        self.dir.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([sys.executable, "-m", "venv", str(self.dir / "venv")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        if p.returncode == 0:
            p = subprocess.run([str(self.dir / "venv" / "bin" / "pip"), "install", "-q",
                                f"litellm[proxy]=={LITELLM_VERSION}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=900)
        if p.returncode != 0 or not self.exe.exists():
            self.note = "LiteLLM install failed: " + p.stdout.decode(errors="replace")[-300:]
            return False
        return True

    def version(self) -> str:
        try:
            out = subprocess.run([str(self.dir / "venv" / "bin" / "python"), "-c",
                                  "import importlib.metadata as m; print(m.version('litellm'))"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60).stdout
            return out.decode().strip() or "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    def start(self, logdir: Path) -> bool:
        if not self.ensure():
            return False
        cfg = logdir / "litellm.yaml"
        cfg.write_text("model_list:\n"
                       f"  - model_name: {lkstack.MODEL}\n"
                       "    litellm_params:\n"
                       f"      model: openai/{lkstack.MODEL}\n"
                       f"      api_base: http://{self.mock_addr}/v1\n"
                       "      api_key: os.environ/LK_BENCH_MOCK_KEY\n")
        self.port = lkstack.free_port()
        env = dict(os.environ, LK_BENCH_MOCK_KEY=self.mock_key, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
                   DISABLE_SCHEMA_UPDATE="True")
        logf = open(logdir / "litellm.log", "ab")
        self.proc = subprocess.Popen([str(self.exe), "--config", str(cfg), "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=logdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=lkstack._set_pdeathsig)
        logf.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                st, _, _ = lkstack.http("GET", f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2)
                if st == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.3)
        self.note = f"LiteLLM did not start (log: {lkstack._tail(logdir / 'litellm.log', 5)})"
        self.stop()
        return False

    def pids(self) -> set[int]:
        return children_of({self.proc.pid}) if self.proc and self.proc.poll() is None else set()

    def stop(self):
        Portkey.stop(self)


# ------------------------------------------------------------- running --

class Runner:
    def __init__(self, args, lkload: Path, workdir: Path):
        self.a = args
        self.lkload = lkload
        self.work = workdir

    def body(self, name: str, prompt: str, stream: bool = False) -> Path:
        doc = {"model": lkstack.MODEL, "messages": [
            {"role": "system", "content": "You are a helpful assistant for the lumkey benchmark."},
            {"role": "user", "content": prompt}]}
        if stream:
            doc["stream"] = True
        p = self.work / f"{name}.json"
        p.write_text(json.dumps(doc))
        return p

    def lkload_run(self, t: Target, body: Path, *opts: str) -> dict:
        argv = [str(self.lkload), "--target", t.addr, "--path", "/v1/chat/completions", "--body-file", str(body)]
        for h in t.headers:
            argv += ["--header", h]
        argv += list(opts)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"lkload failed on {t.name}: {p.stderr.decode(errors='replace')[:300]}")
        return json.loads(p.stdout)

    def wrk_run(self, t: Target, body: Path, secs: float) -> dict:
        if not shutil.which("wrk"):
            r = self.lkload_run(t, body, "--mode", "closed", "--conns", "32", "--duration", str(secs),
                                "--warmup", "0.5")
            return {"rps": r["achieved_rps"], "non2xx": r["non2xx"] + r["errors"], "tool": "lkload"}
        lua = self.work / f"wrk-{t.name}.lua"
        hdrs = {"Content-Type": "application/json"}
        for h in t.headers:
            k, v = h.split(":", 1)
            hdrs[k.strip()] = v.strip()
        lua.write_text("wrk.method = \"POST\"\nwrk.body = " + json.dumps(body.read_text()) + "\n" +
                       "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in hdrs.items()))
        p = subprocess.run(["wrk", "-t2", "-c32", f"-d{max(1, int(round(secs)))}s", "-s", str(lua),
                            f"http://{t.addr}/v1/chat/completions"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=600)
        out = p.stdout.decode(errors="replace")
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        return {"rps": float(m.group(1)) if m else 0.0, "non2xx": int(bad.group(1)) if bad else 0,
                "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0, "tool": "wrk -t2 -c32"}


def scrape_hops(admin_base: str) -> dict:
    """{service: (bucket bounds, cumulative counts, sum, count)} from the edge's /metrics."""
    st, _, body = lkstack.http("GET", admin_base + "/metrics", timeout=5)
    out = {}
    if st != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r'lumkey_edge_worker_call_seconds_(bucket|sum|count)\{service="(\w+)"(?:,le="([^"]+)")?\} (\S+)',
                     line)
        if not m:
            continue
        kind, svc, le, val = m.groups()
        d = out.setdefault(svc, {"le": [], "cum": [], "sum": 0.0, "count": 0})
        if kind == "bucket":
            d["le"].append(float("inf") if le == "+Inf" else float(le))
            d["cum"].append(float(val))
        elif kind == "sum":
            d["sum"] = float(val)
        else:
            d["count"] = int(float(val))
    return out


def hop_delta(before: dict, after: dict) -> dict:
    """Per service: calls, mean µs, and p50 / p99 µs interpolated inside the histogram buckets."""
    res = {}
    for svc in HOPS:
        a, b = after.get(svc), before.get(svc, {"le": [], "cum": [], "sum": 0.0, "count": 0})
        if not a:
            continue
        n = a["count"] - b["count"]
        row = {"calls": n, "mean_us": None, "p50_us": None, "p99_us": None}
        if n > 0:
            row["mean_us"] = (a["sum"] - b["sum"]) / n * 1e6
            cum = [x - (b["cum"][i] if i < len(b["cum"]) else 0) for i, x in enumerate(a["cum"])]
            for q, key in ((0.5, "p50_us"), (0.99, "p99_us")):
                want, lo = q * n, 0.0
                prev = 0.0
                for le, c in zip(a["le"], cum):
                    if c >= want:
                        if le == float("inf"):
                            row[key] = lo * 1e6
                        else:
                            frac = (want - prev) / (c - prev) if c > prev else 1.0
                            row[key] = (lo + (le - lo) * frac) * 1e6
                        break
                    lo, prev = le, c
        res[svc] = row
    return res


def cpu_sample(groups: dict[str, callable]) -> dict[str, int]:
    return {g: sum(proc_cpu_ticks(p) for p in fn()) for g, fn in groups.items()}


# ---------------------------------------------------------------- plan --

def plan(args) -> dict:
    if args.quick:
        return dict(rounds=1, one_s=0.5, rates=[200], rate_s=1.0, rate_warm=0.2, wrk_s=1, ttft_n=5, ttft_chunks=5,
                    ttft_interval=2, conc=min(args.streams or 50, 50), conc_chunks=5, conc_interval=20, conns=8,
                    held_n=2)
    return dict(rounds=args.rounds, one_s=args.one_seconds, rates=args.rates, rate_s=args.rate_seconds,
                rate_warm=1.0, wrk_s=args.wrk_seconds, ttft_n=args.ttft_streams, ttft_chunks=20, ttft_interval=5,
                conc=args.streams or 1000, conc_chunks=20, conc_interval=100, conns=args.conns, held_n=20)


def machine_facts(stack: BenchStack, portkey: Portkey | None, build_dir: Path) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def cmd(*argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20,
                                  cwd=SOURCE_DIR).stdout.decode().strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    commit = cmd("git", "rev-parse", "--short=12", "HEAD")
    if cmd("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    btype = "?"
    try:
        m = re.search(r"^CMAKE_BUILD_TYPE:\w+=(\w*)", (build_dir / "CMakeCache.txt").read_text(), re.M)
        btype = m.group(1) if m else "?"
    except OSError:
        pass
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except OSError:
        affinity = []
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    pgv = cmd("bash", "-c", "ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1")
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "affinity": affinity, "loadavg_at_start": load,
        "kernel": platform.release(), "os": cmd("bash", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "commit": commit, "build_type": btype,
        "h2o": cmd("dpkg-query", "-W", "-f=${Version}", "libh2o-evloop-dev") or cmd("pkg-config", "--modversion", "libh2o-evloop"), "libzmq": cmd("pkg-config", "--modversion", "libzmq"),
        "postgresql": pgv, "node": cmd("node", "--version"),
        "wrk": cmd("bash", "-c", "wrk -v 2>&1 | head -1 | cut -d' ' -f1-2"),
    }


# ------------------------------------------------------------- figures --

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def raise_fd_limit() -> None:
    """1,000 streams need ~2,000 descriptors in the edge and 1,000 in lkload: soft limit up to the hard one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def held_phase(stack: BenchStack, n: int) -> dict:
    """The approval hop: n requests, one at a time, held by a hold-everything policy (a key of its own)
    and approved with `lumkeyctl holds approve` as soon as they are pending. Counts every edge ->
    worker call meanwhile: for approval, opening the hold, the edge's status polls of it, and the admin
    API's `holds list` / `holds approve` that lumkeyctl sends (the human's time is not the hop's).
    {"n", "ok", "hops"} or {"note"}."""
    f = stack.dir / "policy-hold.json"
    f.write_text(json.dumps({"rules": [{"id": "hold-all", "on": "request", "when": {}, "action": "hold",
                                        "message": "benchmark: the approval hop"}]}))
    p = stack.ctl("policy", "create", "--name", "bench-hold", "--file", str(f), "--format", "json", check=False)
    if p.returncode != 0:
        return {"note": f"`lumkeyctl policy create` exited {p.returncode}: no approval hop measured"}
    pol_id = json.loads(p.stdout)["id"]
    key = json.loads(stack.ctl("keys", "create", "--name", "bench-held", "--user", "bench", "--policy", pol_id,
                               "--format", "json").stdout)["key"]
    body = json.dumps({"model": lkstack.MODEL, "messages": [{"role": "user", "content": "held for approval"}]}).encode()
    before, ok = scrape_hops(stack.admin_base), 0
    for _ in range(n):
        out = {}

        def call():
            try:
                out["status"] = lkstack.http("POST", stack.openai_base_url + "/chat/completions", body,
                                             {"content-type": "application/json", "authorization": f"Bearer {key}"},
                                             timeout=30)[0]
            except OSError as e:
                out["status"] = repr(e)
        t = threading.Thread(target=call)
        t.start()
        end = time.monotonic() + 15
        while time.monotonic() < end and "status" not in out:
            pending = [h for h in json.loads(stack.ctl("holds", "list", "--format", "json").stdout)["data"]
                       if h["status"] == "pending"]
            if pending:
                for h in pending:
                    stack.ctl("holds", "approve", h["id"], check=False)
                break
            time.sleep(0.02)
        t.join(timeout=30)
        ok += out.get("status") == 200
    return {"n": n, "ok": ok, "hops": hop_delta(before, scrape_hops(stack.admin_base))}


def run_all(args) -> dict:
    P = plan(args)
    raise_fd_limit()
    build_dir = Path(args.build_dir).resolve()
    lkload = Path(args.lkload).resolve()
    work = Path(tempfile.mkdtemp(prefix="lk-bench-"))
    R = Runner(args, lkload, work)
    res = {"plan": P, "notes": [], "rounds": [], "conc": {}, "hops": {}}
    stack = BenchStack(build_dir=build_dir, fsync=not args.pg_fsync_off, hop_timeout_ms=5000,
                       upstream_timeout_ms=60000)
    portkey = litellm = None
    stack_off = None
    try:
        log("starting PostgreSQL + Lumkey + lumkey-mock")
        stack.start()
        res["policy"] = attach_policy(stack, HERE / "policy-20rules.json")
        log(res["policy"]["note"])
        if not res["policy"]["attached"]:
            res["notes"].append(res["policy"]["note"])
        mock_auth = f"Authorization: Bearer {stack.provider_credential}"
        targets = [Target("direct", stack.mock_addr, [mock_auth], stack.mock_pids, "direct to mock"),
                   Target("lumkey", stack.api_addr, [f"Authorization: Bearer {stack.key}"], stack.lumkey_pids,
                          "through Lumkey", stack.pg_pids)]
        if args.audit_off_env:
            # a second stack whose services get the setting that turns durable audit off
            off_env = dict(e.partition("=")[::2] for e in args.audit_off_env)
            kv = " ".join(f"{k}={v}" for k, v in off_env.items())
            log(f"starting a second stack with {kv} (audit off)")
            stack_off = BenchStack(build_dir=build_dir, fsync=not args.pg_fsync_off, hop_timeout_ms=5000,
                                   upstream_timeout_ms=60000, extra_env=off_env)
            stack_off.start()
            attach_policy(stack_off, HERE / "policy-20rules.json")
            targets.append(Target("lumkey_audit_off", stack_off.api_addr, [f"Authorization: Bearer {stack_off.key}"],
                                  stack_off.lumkey_pids, "through Lumkey, audit off (LUMKEY_AUDIT_MODE=off)"
                                  if off_env.get("LUMKEY_AUDIT_MODE") == "off" else f"through Lumkey, audit off ({kv})",
                                  stack_off.pg_pids))
            res["audit_off"] = f"{kv} on a second stack (own PostgreSQL and mock)"
        else:
            res["audit_off"] = ("not run: no audit-off target in this run (scripts/bench --audit-off adds one: "
                                "LUMKEY_AUDIT_MODE=off, benchmark only, on a second stack)")
            res["notes"].append("audit off: " + res["audit_off"].split(": ", 1)[1])
        if "portkey" in args.peers:
            portkey = Portkey(Path(args.cache), install=not args.quick)
            if portkey.start(stack.dir / "logs"):
                targets.append(Target("portkey", f"127.0.0.1:{portkey.port}",
                                      [mock_auth, "x-portkey-provider: openai",
                                       f"x-portkey-custom-host: http://{stack.mock_addr}/v1"],
                                      portkey.pids, f"through Portkey {portkey.version()}"))
            else:
                res["notes"].append("Portkey: " + portkey.note)
                log(portkey.note)
        if "litellm" in args.peers:
            litellm = LiteLLM(Path(args.cache), not args.quick, stack.mock_addr, stack.provider_credential)
            if litellm.start(stack.dir / "logs"):
                targets.append(Target("litellm", f"127.0.0.1:{litellm.port}", ["Authorization: Bearer sk-bench"],
                                      litellm.pids, f"through LiteLLM {litellm.version()}"))
            else:
                res["notes"].append("LiteLLM: " + litellm.note)
                log(litellm.note)
        res["machine"] = machine_facts(stack, portkey, build_dir)
        res["targets"] = {t.name: t.label for t in targets}
        # a prompt the 20 rules scan: text, one e-mail address to redact, nothing to block or hold
        plain = R.body("plain", "Summarise the lumkey release notes in three bullet points. "
                                "Reply to ops@example.com if anything is unclear. " * 2)
        one = R.body("ttft", f"Stream a short answer. [[mock chunks={P['ttft_chunks']} "
                             f"interval_ms={P['ttft_interval']}]]", stream=True)
        conc = R.body("conc", f"Stream a long answer. [[mock chunks={P['conc_chunks']} "
                              f"interval_ms={P['conc_interval']}]]", stream=True)
        # sanity: every target answers 200 before anything is measured
        for t in targets:
            r = R.lkload_run(t, plain, "--mode", "closed", "--conns", "1", "--requests", "3")
            if r["ok"] != 3:
                raise RuntimeError(f"{t.label} does not answer 200 (ok={r['ok']} non2xx={r['non2xx']} "
                                   f"errors={r['errors']}); logs in {stack.dir}/logs")
        mock_fn = stack.mock_pids
        for rnd in range(P["rounds"]):
            log(f"round {rnd + 1}/{P['rounds']}")
            row = {}
            order = targets if rnd % 2 == 0 else [targets[0]] + targets[:0:-1]
            for t in order:
                f = row.setdefault(t.name, {})
                f["one"] = R.lkload_run(t, plain, "--mode", "closed", "--conns", "1", "--duration",
                                        str(P["one_s"]), "--warmup", str(min(0.5, P["one_s"])))
                for rate in P["rates"]:
                    groups = {"target": t.pids_fn, "pg": t.pg_fn, "mock": mock_fn}
                    before = cpu_sample(groups)
                    hops0 = scrape_hops(stack.admin_base) if t.name == "lumkey" else None
                    r = R.lkload_run(t, plain, "--mode", "open", "--rate", str(rate), "--conns", str(P["conns"]),
                                     "--duration", str(P["rate_s"]), "--warmup", str(P["rate_warm"]), "--drain", "5")
                    after = cpu_sample(groups)
                    n = max(1, r["completed_all"])
                    r["cpu_us_per_req"] = {g: (after[g] - before[g]) * 1e6 / CLK_TCK / n for g in groups}
                    if hops0 is not None:
                        res["hops"].setdefault(str(rate), []).append(hop_delta(hops0, scrape_hops(stack.admin_base)))
                    f[f"rate{rate}"] = r
                f["max"] = R.wrk_run(t, plain, P["wrk_s"])
                f["stream"] = R.lkload_run(t, one, "--mode", "streams", "--conns", "1", "--requests",
                                           str(P["ttft_n"]), "--expect-text", mock_text(P["ttft_chunks"]))
            res["rounds"].append(row)
        # concurrent streams: once per target, RSS sampled while they are open
        for t in targets:
            log(f"{P['conc']} concurrent streams: {t.label}")
            groups = {"target": t.pids_fn, "pg": t.pg_fn, "mock": mock_fn}
            sampler = RssSampler(groups)
            sampler.start()
            r = R.lkload_run(t, conc, "--mode", "streams", "--conns", str(P["conc"]), "--requests", str(P["conc"]),
                             "--expect-text", mock_text(P["conc_chunks"]))
            sampler.stop()
            r["rss_peak_kb"] = sampler.peak
            r["hwm_kb"] = {g: sum(proc_status_kb(p, "VmHWM") for p in fn()) for g, fn in groups.items()}
            res["conc"][t.name] = r
        log(f"{P['held_n']} held requests, approved with lumkeyctl (the approval hop)")
        res["held"] = held_phase(stack, P["held_n"])
    finally:
        if portkey:
            portkey.stop()
        if litellm:
            litellm.stop()
        if stack_off:
            stack_off.stop()
            stack_off.cleanup_dir()
        stack.stop()
        stack.cleanup_dir()
        shutil.rmtree(work, ignore_errors=True)
    return res


def summarize(res: dict) -> dict:
    """Medians over rounds of each figure and of each (target - direct) difference in the same round."""
    names = list(res["targets"])
    P = res["plan"]
    S = {}
    for n in names:
        s = {}

        def per_round(fn):
            out = []
            for row in res["rounds"]:
                try:
                    out.append(fn(row))
                except (KeyError, TypeError, ZeroDivisionError):
                    pass
            return out
        s["one_p50"] = med(per_round(lambda r: r[n]["one"]["latency"]["p50_us"]))
        s["one_p99"] = med(per_round(lambda r: r[n]["one"]["latency"]["p99_us"]))
        s["one_add_p50"] = med(per_round(lambda r: r[n]["one"]["latency"]["p50_us"] - r["direct"]["one"]["latency"]["p50_us"]))
        s["one_add_p99"] = med(per_round(lambda r: r[n]["one"]["latency"]["p99_us"] - r["direct"]["one"]["latency"]["p99_us"]))
        for rate in P["rates"]:
            k = f"rate{rate}"
            s[f"{k}_p50"] = med(per_round(lambda r: r[n][k]["latency"]["p50_us"]))
            s[f"{k}_p99"] = med(per_round(lambda r: r[n][k]["latency"]["p99_us"]))
            s[f"{k}_add_p50"] = med(per_round(lambda r: r[n][k]["latency"]["p50_us"] - r["direct"][k]["latency"]["p50_us"]))
            s[f"{k}_add_p99"] = med(per_round(lambda r: r[n][k]["latency"]["p99_us"] - r["direct"][k]["latency"]["p99_us"]))
            s[f"{k}_achieved"] = med(per_round(lambda r: r[n][k]["achieved_rps"]))
            # saturated: requests left unanswered, answers slower than the schedule (achieved < 90% of the
            # rate, the drained backlog included), or a backlog that needed over a second to drain
            s[f"{k}_saturated"] = any(per_round(lambda r: r[n][k]["saturated"] or r[n][k]["achieved_rps"] < 0.9 * rate
                                                or r[n][k]["elapsed_s"] > P["rate_s"] + P["rate_warm"] + 1.0))
            s[f"{k}_bad"] = sum(per_round(lambda r: r[n][k]["non2xx"] + r[n][k]["errors"]))
            s[f"{k}_cpu"] = med(per_round(lambda r: r[n][k]["cpu_us_per_req"]["target"]))
            s[f"{k}_cpu_pg"] = med(per_round(lambda r: r[n][k]["cpu_us_per_req"]["pg"]))
        s["max_rps"] = med(per_round(lambda r: r[n]["max"]["rps"]))
        s["max_ratio"] = med(per_round(lambda r: r[n]["max"]["rps"] / r["direct"]["max"]["rps"]))
        s["max_bad"] = sum(per_round(lambda r: r[n]["max"]["non2xx"] + r[n]["max"].get("socket_errors", 0)))
        s["ttft_p50"] = med(per_round(lambda r: r[n]["stream"]["ttft"]["p50_us"]))
        s["ttft_add_p50"] = med(per_round(lambda r: r[n]["stream"]["ttft"]["p50_us"] - r["direct"]["stream"]["ttft"]["p50_us"]))
        s["gap_p99"] = med(per_round(lambda r: r[n]["stream"]["gap"]["p99_us"]))
        s["gap_add_p99"] = med(per_round(lambda r: r[n]["stream"]["gap"]["p99_us"] - r["direct"]["stream"]["gap"]["p99_us"]))
        s["stream_bad"] = sum(per_round(lambda r: r[n]["stream"]["streams_bad"] + r[n]["stream"]["unfinished"]))
        c = res["conc"].get(n)
        if c:
            s["conc_ok"], s["conc_bad"] = c["streams_ok"], c["streams_bad"] + c["unfinished"]
            s["conc_rss_mb"] = c["rss_peak_kb"]["target"] / 1024
            s["conc_hwm_mb"] = c["hwm_kb"]["target"] / 1024
            s["conc_pg_mb"] = c["rss_peak_kb"]["pg"] / 1024
        S[n] = s
    # per hop: medians over rounds, per rate
    H = {}
    for rate, rows in res["hops"].items():
        H[rate] = {svc: {k: med([r.get(svc, {}).get(k) for r in rows]) for k in ("calls", "mean_us", "p50_us", "p99_us")}
                   for svc in HOPS}
    res["summary"], res["hop_summary"] = S, H
    return S


# -------------------------------------------------------------- output --

def fmt_us(v, signed=False):
    if v is None:
        return "–"
    if abs(v) >= 10000:
        s = f"{v / 1000:,.1f} ms" if not signed else f"{v / 1000:+,.1f} ms"
    elif abs(v) >= 1000:
        s = f"{v / 1000:,.2f} ms" if not signed else f"{v / 1000:+,.2f} ms"
    else:
        s = f"{v:,.0f} µs" if not signed else f"{v:+,.0f} µs"
    return s


def fmt(v, spec="{:,.0f}"):
    return "–" if v is None else spec.format(v)


def tables(res: dict) -> str:
    S, P, names = res["summary"], res["plan"], list(res["targets"])
    L = []
    hdr = "| figure | " + " | ".join(res["targets"][n] for n in names) + " |"
    L += [hdr, "|---" * (len(names) + 1) + "|"]

    def row(label, fn):
        L.append(f"| {label} | " + " | ".join(fn(S[n], n) for n in names) + " |")
    row("one at a time: p50 / p99", lambda s, n: f"{fmt_us(s['one_p50'])} / {fmt_us(s['one_p99'])}")
    row("**added**, one at a time: p50 / p99", lambda s, n: "—" if n == "direct" else
        f"**{fmt_us(s['one_add_p50'], True)}** / {fmt_us(s['one_add_p99'], True)}")
    for rate in P["rates"]:
        k = f"rate{rate}"
        row(f"{rate:,} req/s open loop: p50 / p99", lambda s, n, k=k: f"{fmt_us(s[k + '_p50'])} / {fmt_us(s[k + '_p99'])}"
            + (f" (saturated: {fmt(s[k + '_achieved'])}/s)" if s[k + "_saturated"] else "")
            + (f" ({s[k + '_bad']} failed)" if s[k + "_bad"] else ""))
        row(f"**added** at {rate:,} req/s: p50 / p99", lambda s, n, k=k: "—" if n == "direct" else
            f"**{fmt_us(s[k + '_add_p50'], True)}** / {fmt_us(s[k + '_add_p99'], True)}")
        row(f"CPU µs / request at {rate:,} req/s", lambda s, n, k=k:
            (f"{fmt(s[k + '_cpu'])} (mock)" if n == "direct" else
             f"**{fmt(s[k + '_cpu'])}**" + (f" (+ PostgreSQL {fmt(s[k + '_cpu_pg'])})" if n.startswith("lumkey") else "")))
    row("max throughput, 32 conns (req/s)", lambda s, n: fmt(s["max_rps"]) + (f" ({s['max_bad']} failed)" if s["max_bad"] else ""))
    row("**throughput ÷ direct**", lambda s, n: "100%" if n == "direct" else f"**{fmt(s['max_ratio'] and s['max_ratio'] * 100, '{:.1f}')}%**")
    row("stream: time to first token p50", lambda s, n: fmt_us(s["ttft_p50"])
        + (f" ({s['stream_bad']} streams broken)" if s["stream_bad"] else ""))
    row("**added** time to first token p50", lambda s, n: "—" if n == "direct" else f"**{fmt_us(s['ttft_add_p50'], True)}**")
    row(f"stream: gap between chunks p99 (paced {P['ttft_interval']} ms)", lambda s, n: fmt_us(s["gap_p99"]))
    row("**added** gap p99", lambda s, n: "—" if n == "direct" else f"**{fmt_us(s['gap_add_p99'], True)}**")
    row(f"{P['conc']:,} concurrent streams: complete / lost or broken", lambda s, n: f"{s.get('conc_ok', '–')} / {s.get('conc_bad', '–')}")
    row(f"peak RSS under {P['conc']:,} streams (sampled / VmHWM)", lambda s, n:
        f"{fmt(s.get('conc_rss_mb'), '{:.1f}')} / {fmt(s.get('conc_hwm_mb'), '{:.1f}')} MB"
        + (" (mock)" if n == "direct" else "") + (f" (+ PostgreSQL {fmt(s.get('conc_pg_mb'), '{:.0f}')} MB)" if n.startswith("lumkey") else ""))
    # ratios against each peer
    for peer in ("portkey", "litellm"):
        if peer not in S or "lumkey" not in S:
            continue
        sp, sl = S[peer], S["lumkey"]
        r1 = sl["max_rps"] / sp["max_rps"] if sl["max_rps"] and sp["max_rps"] else None
        r2 = (sp["one_add_p50"] / sl["one_add_p50"]) if sl["one_add_p50"] and sp["one_add_p50"] and sl["one_add_p50"] > 0 else None
        name = res["targets"][peer][len("through "):]
        L += ["", f"Lumkey vs {name} in this run: **{fmt(r1, '{:.1f}')}×** its throughput; its added p50 "
                  f"(one at a time) is **{fmt(r2, '{:.1f}')}×** Lumkey's."]
    # per hop
    H = res.get("hop_summary") or {}
    if H:
        L += ["", "Per hop inside Lumkey (edge `/metrics`, `lumkey_edge_worker_call_seconds`, over the fixed-rate "
                  "phases, and over a phase of held requests for the approval hop; p50/p99 interpolated inside the histogram's buckets, so coarse; mean is exact):", "",
              "| rate | " + " | ".join(f"{h} calls / mean / p50 / p99" for h in HOPS) + " |",
              "|---" * (len(HOPS) + 1) + "|"]
        for rate, hs in H.items():
            cells = []
            for h in HOPS:
                x = hs[h]
                cells.append("no calls" if not x["calls"] else
                             f"{fmt(x['calls'])} / {fmt_us(x['mean_us'])} / {fmt_us(x['p50_us'])} / {fmt_us(x['p99_us'])}")
            L.append(f"| {int(rate):,} req/s | " + " | ".join(cells) + " |")
    held = res.get("held") or {}
    if held.get("hops"):
        cells = []
        for h in HOPS:
            x = held["hops"].get(h) or {}
            cells.append("no calls" if not x.get("calls") else
                         f"{fmt(x['calls'])} / {fmt_us(x['mean_us'])} / {fmt_us(x['p50_us'])} / {fmt_us(x['p99_us'])}")
        L.append(f"| {held['n']} held requests, one at a time, approved with lumkeyctl ({held['ok']} answered 200) | "
                 + " | ".join(cells) + " |")
    elif held.get("note"):
        L += ["", f"Approval hop: {held['note']}."]
    return "\n".join(L)


def markdown(res: dict, png_rel: str | None) -> str:
    m, P = res["machine"], res["plan"]
    L = [BEGIN, "", f"## Latest harness run — {m['date']}{' (--quick)' if res['quick'] else ''}", ""]
    if res.get("banner"):
        L += [f"> **{res['banner']}**", ""]
    L += [f"- Machine: {m['cpu']}, {m['cores']} cores (affinity {m['affinity']}, no pinning), load average at "
          f"start {m['loadavg_at_start']}; {m['os']}, kernel {m['kernel']}.",
          f"- Lumkey commit {m['commit']}, {m['build_type']} build; h2o {m['h2o']}, libzmq {m['libzmq']}, "
          f"PostgreSQL {m['postgresql']} (fsync {'off' if res['pg_fsync_off'] else 'on'}).",
          "- Peers: " + ("; ".join(
              (f"{lbl[len('through '):]} on Node {m['node']} (`@hono/node-server` overridden to {HONO_NODE_SERVER})"
               if n == "portkey" else f"{lbl[len('through '):]} proxy (PyPI, one worker, no master key)")
              for n, lbl in res["targets"].items() if n in ("portkey", "litellm")) or "none") +
          "; mock: lumkey-mock, zero latency, 1 thread, request log off.",
          f"- Path: key check (edge key cache + policy), "
          f"{'the 20-rule policy ' + res['policy'].get('id', '') if res['policy']['attached'] else 'no policy (see the note)'}"
          ", vault credential decrypt, "
          "durable audit (`request.accepted` awaited before the provider call, then `request.completed`).",
          f"- Plan: {P['rounds']} alternating round(s); one at a time {P['one_s']} s; open loop "
          f"{', '.join(str(r) for r in P['rates'])} req/s for {P['rate_s']} s (+{P['rate_warm']} s warm-up) on "
          f"{P['conns']} connections; wrk {P['wrk_s']} s; {P['ttft_n']} streams of {P['ttft_chunks']} chunks one at "
          f"a time; {P['conc']} concurrent streams of {P['conc_chunks']} chunks × {P['conc_interval']} ms. "
          "Figures are medians over rounds; *added* = target − direct in the same round.", ""]
    for n in res["notes"]:
        L.append(f"- Note: {n}")
    if res["notes"]:
        L.append("")
    L += [tables(res), ""]
    if png_rel:
        L += [f"![latency percentiles]({png_rel})", ""]
    L += ["Raw figures of every round: the JSON file written next to this page's run "
          "(`scripts/bench --json FILE`).", "", END]
    return "\n".join(L)


def write_markdown(out: Path, section: str) -> None:
    if out.exists():
        text = out.read_text()
        if BEGIN.split(" (")[0] in text and END in text:
            a = text.index(BEGIN.split(" (")[0])
            b = text.index(END) + len(END)
            text = text[:a] + section + text[b:]
        else:
            # after the first heading's intro paragraph
            lines = text.split("\n")
            i = 1
            while i < len(lines) and not lines[i].startswith("## "):
                i += 1
            text = "\n".join(lines[:i]) + "\n" + section + "\n\n" + "\n".join(lines[i:])
    else:
        text = "# Benchmarks\n\n" + section + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def plot(res: dict, png: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        res["notes"].append("no plot: matplotlib is not installed (pip install -r tests/bench/requirements.txt)")
        return False
    last = res["rounds"][-1]
    phases = [("one", "one request at a time")] + [(f"rate{r}", f"open loop, {r:,} req/s") for r in res["plan"]["rates"]]
    fig, axes = plt.subplots(1, len(phases), figsize=(5.6 * len(phases), 4.6), squeeze=False)
    for ax, (k, title) in zip(axes[0], phases):
        for n, label in res["targets"].items():
            pct = last[n][k]["latency"]["pct"]
            xs = [1 / (1 - q) if q < 1 else 1e5 for q, _ in pct if q > 0]
            ys = [v / 1000 for q, v in pct if q > 0]
            ax.plot(xs, ys, marker="o", ms=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [2, 10, 100, 1000, 10000, 1e5]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%", "max"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    title = f"Lumkey benchmark {res['machine']['date']} — commit {res['machine']['commit']}"
    if res["quick"] or res.get("banner"):
        import textwrap
        title += "\n" + textwrap.fill(res.get("banner") or "", 150)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds in all (CI smoke): figures are noise")
    ap.add_argument("--out", default=str(SOURCE_DIR / "docs" / "benchmarks.md"), help="markdown file to update")
    ap.add_argument("--json", help="write every raw figure here (default: OUT with .json, unless OUT is under docs/)")
    ap.add_argument("--png", help="latency plot (default: <dir of OUT>/bench/latency.png)")
    ap.add_argument("--build-dir", default=str(lkstack.BUILD_DIR))
    ap.add_argument("--lkload", help="the load generator binary (default BUILD/tests/bench/lkload)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[200, 2000],
                    help="open-loop rates, req/s (default 200,2000)")
    ap.add_argument("--rate-seconds", type=float, default=5.0)
    ap.add_argument("--one-seconds", type=float, default=3.0)
    ap.add_argument("--wrk-seconds", type=float, default=5.0)
    ap.add_argument("--ttft-streams", type=int, default=50)
    ap.add_argument("--streams", type=int, default=0, help="concurrent streams (default 1000; --quick 50)")
    ap.add_argument("--conns", type=int, default=32, help="connections of the open-loop generator")
    ap.add_argument("--peers", help="comma-separated: portkey, litellm; or none (default: both; --quick: portkey, "
                    "only if already installed)")
    ap.add_argument("--cache", default=os.environ.get("LK_BENCH_CACHE", str(Path.home() / ".cache" / "lumkey-bench")))
    ap.add_argument("--audit-off-env", metavar="VAR=VALUE", action="append",
                    help="a service setting that turns durable audit off (repeatable): adds a second "
                         "Lumkey stack with them as one more target")
    ap.add_argument("--audit-off", action="store_true",
                    help="the same with Lumkey's own benchmark-only setting: LUMKEY_AUDIT_MODE=off "
                         "LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF=1 (docs/security.md)")
    ap.add_argument("--pg-fsync-off", action="store_true", help="PostgreSQL with fsync=off (default: on)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="measure nothing: redraw the table, page section and plot from a --json file")
    ap.add_argument("--banner", help="a line shown at the top of the written section (e.g. 'smoke run, busy machine')")
    a = ap.parse_args(argv)
    if a.audit_off:
        a.audit_off_env = (a.audit_off_env or []) + ["LUMKEY_AUDIT_MODE=off", "LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF=1"]
    a.peers = [p for p in (a.peers or ("portkey" if a.quick else "portkey,litellm")).split(",") if p and p != "none"]
    a.lkload = a.lkload or str(Path(a.build_dir) / "tests" / "bench" / "lkload")
    if not a.from_json and not Path(a.lkload).exists():
        print(f"bench: {a.lkload} is missing: build the tree first (scripts/bench does)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
        res["notes"] = [n for n in res["notes"] if not n.startswith("no plot")]
        if a.banner:
            res["banner"] = a.banner
    else:
        res = run_all(a)
        res["quick"], res["pg_fsync_off"], res["banner"] = a.quick, a.pg_fsync_off, a.banner
    if res["quick"] and not res.get("banner"):
        res["banner"] = "--quick smoke run: a few requests per phase, figures are noise"
    summarize(res)
    out = Path(a.out).resolve()
    png = Path(a.png).resolve() if a.png else out.parent / "bench" / "latency.png"
    png_rel = os.path.relpath(png, out.parent) if plot(res, png) else None
    md = markdown(res, png_rel)
    write_markdown(out, md)
    jpath = Path(a.json) if a.json else out.with_suffix(".json")
    if not a.from_json and (a.json or not str(out).startswith(str(SOURCE_DIR / "docs"))):
        jpath.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print()
    print(tables(res))
    print()
    for n in res["notes"]:
        print(f"note: {n}")
    print(f"\nbench: wrote {out}" + (f" and {png}" if png_rel else "") + f" in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
