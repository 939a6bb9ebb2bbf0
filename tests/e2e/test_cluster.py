"""One host that mimics the cluster: two edges and two replicas of every worker over tcp:// with
CURVE. Replica 1 of each worker is listed by address, replica 2 is found through a dns+tcp://
name (localhost), the way a headless Service is found in Kubernetes.

- Under load from both edges, one policy replica hangs (SIGSTOP) and is then killed (SIGKILL), and
  one audit replica is killed: every request is still answered 200 (the edge retries a timed-out
  call on the other replica), and every answered request has its closing audit row in PostgreSQL
  (nothing lost).
- An edge without an admitted CURVE key (a key the workers do not list, or no key at all) is
  refused: its /readyz reports the workers down and its requests get 503.
- /metrics of an edge parses with prometheus_client and shows both replicas and the retries.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lkstack import WORKERS, Proc, Stack, StackError, binary, free_port, http, MODEL


def _keygen(stack_build: Stack, path) -> None:
    subprocess.run([str(binary("edge", stack_build.build_dir)), "--curve-keygen", str(path)], check=True,
                   stdout=subprocess.DEVNULL, timeout=30)


def _edge_env(stack: Stack, api: str, admin: str, keyfile, endpoints: dict) -> dict:
    env = stack.env(LUMKEY_LISTEN=api, LUMKEY_ADMIN_LISTEN=admin,
                    LUMKEY_CURVE_SERVER_PUBLIC_FILE=str(stack.keys / "server"))
    for w in WORKERS:
        env[f"LUMKEY_{w.upper()}_ENDPOINT"] = endpoints[w]
    if keyfile:
        env["LUMKEY_CURVE_SECRET_FILE"] = str(keyfile)
    else:
        env.pop("LUMKEY_CURVE_SECRET_FILE", None)
    return env


def _start_edge(stack: Stack, name: str, keyfile, wait: bool = True):
    api, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = Proc(name, [str(binary("edge", stack.build_dir))],
                _edge_env(stack, api, admin, keyfile, stack.endpoints), stack.dir / "logs" / f"{name}.log")
    proc.start(stack.dir / "pgids")
    stack.procs[name] = proc
    deadline = time.monotonic() + 30
    while True:
        try:
            st, _, body = http("GET", f"http://{api}/readyz", timeout=2)
            if not wait or st == 200:
                return api, admin, proc
        except OSError:
            pass
        if not proc.alive() or time.monotonic() > deadline:
            raise StackError(f"{name} not ready:\n" + stack.log_tails())
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    keys = tmp_path_factory.mktemp("curve")
    (keys / "clients").mkdir()
    probe = Stack()
    for k in ("server", "edge1", "edge2", "rogue"):
        _keygen(probe, keys / k)
    for k in ("edge1", "edge2"):  # the workers admit these two, not "rogue"
        shutil.copy(keys / k, keys / "clients" / k)
    ports = {w: (free_port(), free_port()) for w in WORKERS}
    worker_env = {"LUMKEY_CURVE_SECRET_FILE": str(keys / "server_secret"),
                  "LUMKEY_CURVE_CLIENTS_DIR": str(keys / "clients")}
    endpoints = {w: f"tcp://127.0.0.1:{p1},dns+tcp://localhost:{p2}" for w, (p1, p2) in ports.items()}
    service_env = {w: {**worker_env, f"LUMKEY_{w.upper()}_BIND": f"tcp://*:{ports[w][0]}"} for w in WORKERS}
    service_env["edge"] = {"LUMKEY_CURVE_SECRET_FILE": str(keys / "edge1_secret"),
                           "LUMKEY_CURVE_SERVER_PUBLIC_FILE": str(keys / "server"),
                           **{f"LUMKEY_{w.upper()}_ENDPOINT": endpoints[w] for w in WORKERS}}
    # hop deadline 1 s: a call lost with a killed replica is retried after 1 s
    s = Stack(hop_timeout_ms=1000, extra_env={"LUMKEY_DNS_REFRESH_MS": "500"}, service_env=service_env)
    s.keys, s.endpoints = keys, endpoints
    try:
        s.start()
        for w in WORKERS:  # replica 2 of each worker
            env = s.env(**worker_env, **{f"LUMKEY_{w.upper()}_BIND": f"tcp://*:{ports[w][1]}"})
            p = Proc(f"{w}2", s.service_argv(w), env, s.dir / "logs" / f"{w}2.log")
            p.start(s.dir / "pgids")
            s.procs[f"{w}2"] = p
        s.edge2 = _start_edge(s, "edge2", keys / "edge2_secret")
    except StackError as e:
        s.stop()
        pytest.fail(f"could not start the cluster: {e}", pytrace=False)
    yield s
    s.stop()
    reports = s.sanitizer_reports()
    if reports:  # ASan/UBSan builds: a report from any process fails the file
        pytest.fail("sanitizer reports:\n" + s.redact("\n".join(f"=== {n}\n{t[:4000]}" for n, t in reports)),
                    pytrace=False)
    s.cleanup_dir()


def _metrics(admin_addr: str) -> dict:
    st, _, body = http("GET", f"http://{admin_addr}/metrics")
    assert st == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def _wait_replicas(admin_addr: str, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        m = _metrics(admin_addr)
        got = {w: m.get(("lumkey_edge_worker_replicas", (("service", w),))) for w in WORKERS}
        if all(v == n for v in got.values()):
            return
        assert time.monotonic() < deadline, f"replicas seen by the edge: {got}"
        time.sleep(0.2)


def test_workers_health_cli(cluster):
    """The exec probe of the chart: each worker binary's --health pings its own tcp:// bind."""
    for w in WORKERS:
        env = cluster.procs[w].env
        p = subprocess.run([str(binary(w, cluster.build_dir)), "--health"], env=env, capture_output=True, timeout=20)
        assert p.returncode == 0, cluster.redact(p.stderr.decode(errors="replace"))
        assert p.stdout == b"", "a CLI mode must keep stdout clean"


def test_both_edges_see_both_replicas(cluster):
    _wait_replicas(cluster.admin_addr, 2)
    _wait_replicas(cluster.edge2[1], 2)


def _ask(base: str, key: str, text: str) -> tuple[int, str]:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]}).encode()
    st, headers, _ = http("POST", base + "/v1/chat/completions", body,
                          {"content-type": "application/json", "authorization": f"Bearer {key}"}, timeout=30)
    return st, headers.get("x-request-id", "")


def test_replica_killed_under_load_nothing_lost(cluster):
    _wait_replicas(cluster.admin_addr, 2)
    _wait_replicas(cluster.edge2[1], 2)
    bases = [cluster.api_base, f"http://{cluster.edge2[0]}"]
    results, lock, stop = [], threading.Lock(), threading.Event()

    def load(i: int) -> None:
        n = 0
        while not stop.is_set():
            st, rid = _ask(bases[(i + n) % 2], cluster.key, f"load {i} {n} {uuid.uuid4()}")
            with lock:
                results.append((st, rid))
            n += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        # replica 1 of policy (listed by address) hangs first - its connection stays up, so the
        # calls it holds time out and are retried on replica 2 - and then dies
        os.kill(cluster.procs["policy"].pid, signal.SIGSTOP)
        time.sleep(1.5)
        cluster.kill_service("policy", signal.SIGKILL)
        time.sleep(1)
        cluster.kill_service("audit2", signal.SIGKILL)  # replica 2 of audit, found through DNS
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    failed = [(st, rid) for st, rid in results if st != 200]
    assert len(results) > 50, f"only {len(results)} requests made"
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:10]}"
    # nothing lost: every answered request has its closing audit row
    rids = [rid for _, rid in results]
    assert all(rids)
    deadline = time.monotonic() + 15
    while True:
        with cluster.db().cursor() as cur:
            cur.execute("SELECT DISTINCT request_id FROM audit_events WHERE kind = 'request.completed' "
                        "AND request_id = ANY(%s)", (rids,))
            have = {r["request_id"] for r in cur.fetchall()}
        missing = set(rids) - have
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"{len(missing)} answered requests have no request.completed audit row"
    m = _metrics(cluster.admin_addr)
    m2 = _metrics(cluster.edge2[1])
    retries = m.get(("lumkey_edge_worker_call_retries_total", ()), 0) + \
        m2.get(("lumkey_edge_worker_call_retries_total", ()), 0)
    # the killed replicas held calls in flight: at least one was answered by the retry
    assert retries >= 1, "no call was retried, so the kill did not test anything"


@pytest.mark.parametrize("key", ["rogue", None])
def test_edge_without_admitted_key_is_refused(cluster, key):
    name = f"edge-{key or 'nokey'}"
    keyfile = cluster.keys / f"{key}_secret" if key else None
    if key is None:
        # without any key a tcp:// endpoint list is refused at start-up, unless plaintext tcp is allowed
        env = _edge_env(cluster, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", None, cluster.endpoints)
        p = subprocess.run([str(binary("edge", cluster.build_dir))], env=env, capture_output=True, timeout=20)
        assert p.returncode != 0, "an edge started on tcp:// without CURVE"
        assert b"CURVE" in p.stdout + p.stderr
        cluster.extra_env["LUMKEY_CURVE_INSECURE_TCP"] = "1"
    try:
        api, admin, proc = _start_edge(cluster, name, keyfile, wait=False)
    finally:
        cluster.extra_env.pop("LUMKEY_CURVE_INSECURE_TCP", None)
    try:
        time.sleep(3)  # a few pings: none may be answered
        st, _, body = http("GET", f"http://{api}/readyz")
        assert st == 503, f"/readyz of a refused edge answered {st}"
        svcs = json.loads(body)["services"]
        assert all(v == "down" for v in svcs.values()), svcs
        st, _ = _ask(f"http://{api}", cluster.key, "refused")
        assert st == 503
        assert proc.alive()
    finally:
        proc.stop()
        cluster.procs.pop(name, None)
    if key:
        log = (cluster.dir / "logs" / "policy2.log").read_text(errors="replace")
        assert "not admitted" in log, "the worker did not log the refused key"


def test_config_file_and_log_streams(cluster, tmp_path):
    """LUMKEY_CONFIG_FILE supplies settings (the environment wins); a serving process logs JSON
    lines on stdout; a CLI mode keeps stdout for its output (the bootstrap token alone)."""
    conf = tmp_path / "lumkey.conf"
    conf.write_text(f"# settings\nLUMKEY_DB={cluster.conninfo}\nLUMKEY_APPROVAL_BIND=tcp://*:1\n")
    env = {k: v for k, v in cluster.env().items() if k != "LUMKEY_DB"}
    env["LUMKEY_CONFIG_FILE"] = str(conf)
    p = subprocess.run([str(binary("vault", cluster.build_dir)), "--bootstrap-admin", "--tenant", "conf-file"],
                       env=env, capture_output=True, timeout=30)
    assert p.returncode == 0, cluster.redact(p.stderr.decode(errors="replace"))
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lk_adm_"), "stdout must carry the token alone"
    # a serving worker: the environment's bind wins over the file's; logs on stdout, stderr empty
    port = free_port()
    env["LUMKEY_APPROVAL_BIND"] = f"tcp://127.0.0.1:{port}"
    env["LUMKEY_CURVE_INSECURE_TCP"] = "1"
    w = subprocess.Popen([str(binary("approval", cluster.build_dir))], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(0.7)
    finally:
        w.send_signal(signal.SIGTERM)
        out, err = w.communicate(timeout=10)
    assert w.returncode == 0
    assert err == b""
    logs = [json.loads(line) for line in out.decode().splitlines()]
    assert any(f"tcp://127.0.0.1:{port}" in entry["msg"] for entry in logs), logs
    assert all({"ts", "level", "svc", "msg"} <= set(entry) for entry in logs)
