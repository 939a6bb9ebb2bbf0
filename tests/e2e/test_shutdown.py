"""SIGTERM, the way Kubernetes sends it, under load.

The edge: /readyz answers 503 at once while /livez stays 200 and requests are still served for
LUMKEY_SHUTDOWN_GRACE_MS; then the listeners close, a stream in flight runs to its end, and the
process exits 0. No request that was sent before the signal fails; after the signal a client may
only see the documented outcomes: 200 during the grace period, then 200, a retryable 503, or a
refused or reset connection (never accepted). Every answered request's closing audit event is
recorded (the edge sends its deferred closing events and waits for their acknowledgements before
it exits).
Workers: SIGTERM answers what is queued and exits 0.
"""

import json
import signal
import threading
import time
import urllib.error

import pytest

from lkstack import MODEL, Stack, StackError, http

GRACE_MS = 1500


@pytest.fixture(scope="module")
def stack():
    s = Stack(extra_env={"LUMKEY_SHUTDOWN_GRACE_MS": str(GRACE_MS), "LUMKEY_SHUTDOWN_DRAIN_MS": "15000"})
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the stack: {e}", pytrace=False)
    yield s
    s.stop()
    reports = s.sanitizer_reports()
    if reports:  # ASan/UBSan builds: a report from any process fails the file
        pytest.fail("sanitizer reports:\n" + s.redact("\n".join(f"=== {n}\n{t[:4000]}" for n, t in reports)),
                    pytrace=False)
    s.cleanup_dir()


def _post(stack, text: str, timeout: float = 30):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]}).encode()
    return http("POST", stack.openai_base_url + "/chat/completions", body,
                {"content-type": "application/json", "authorization": f"Bearer {stack.key}"}, timeout=timeout)


def test_edge_sigterm_under_load(stack):
    edge = stack.procs["edge"]
    results, lock, stop = [], threading.Lock(), threading.Event()
    answered = []  # request ids of the 200s

    def load(i: int) -> None:
        n = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                st, headers, _ = _post(stack, f"load {i} {n}")
                outcome = st
                if st == 200:
                    with lock:
                        answered.append(headers["x-request-id"])
            except ConnectionRefusedError:
                outcome = "refused"
            except urllib.error.URLError as e:
                outcome = "refused" if isinstance(e.reason, ConnectionRefusedError) else f"error: {e!r}"
            except OSError as e:  # reset, timeout, ...: must never happen to an accepted request
                outcome = f"error: {e!r}"
            with lock:
                results.append((t0, outcome))
            n += 1
            if outcome == "refused":
                time.sleep(0.05)

    stream_result = {}
    stream_started = threading.Event()

    def stream() -> None:
        client = stack.client()
        try:
            s = client.chat.completions.create(
                model=MODEL, stream=True,
                messages=[{"role": "user", "content": "a long answer [[mock chunks=20 interval_ms=200]]"}])
            pieces, finish = 0, None
            for chunk in s:
                stream_started.set()
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            stream_result.update(pieces=pieces, finish=finish, ended=time.monotonic())
        except Exception as e:  # noqa: BLE001 - reported below
            stream_result.update(error=f"{e!r} caused by {e.__cause__!r}", at=time.monotonic())
            stream_started.set()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    streamer = threading.Thread(target=stream)
    streamer.start()
    for t in threads:
        t.start()
    # the stream must be under way (the SDK's import and first request can take a while)
    assert stream_started.wait(timeout=30), "the stream did not start"
    time.sleep(1.0)
    edge.expected_dead = True
    t_sig = time.monotonic()
    edge.popen.send_signal(signal.SIGTERM)

    # not ready at once, still alive, still serving
    time.sleep(0.3)
    st_ready, _, body = http("GET", stack.api_base + "/readyz", timeout=5)
    st_live, _, _ = http("GET", stack.api_base + "/livez", timeout=5)
    st_served, _, _ = _post(stack, "during the grace period")
    assert st_ready == 503 and json.loads(body)["status"] == "stopping", (st_ready, body)
    assert st_live == 200
    assert st_served == 200, "a request during the grace period was not served"

    rc = edge.popen.wait(timeout=30)
    t_exit = time.monotonic()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    streamer.join(timeout=30)

    assert rc == 0, f"the edge exited {rc}"
    before = [o for t0, o in results if t0 < t_sig]
    assert len(before) > 10, f"only {len(before)} requests before the signal"
    assert all(o == 200 for o in before), [o for o in before if o != 200][:10]
    # during the grace period (with a margin for the client's own scheduling): still served
    grace = [o for t0, o in results if t_sig <= t0 < t_sig + GRACE_MS / 1000 - 0.3]
    assert grace and all(o == 200 for o in grace), [o for o in grace if o != 200][:10]
    # once the listeners close a client may see: 200, a retryable 503 (kept-alive connection), a
    # refused connection, or a reset one (it sat in the kernel's accept queue: never accepted)
    after = [o for t0, o in results if t0 >= t_sig + GRACE_MS / 1000 - 0.3]
    bad = [o for o in after if o not in (200, 503, "refused") and "ConnectionResetError" not in str(o)]
    assert not bad, f"after SIGTERM: {bad[:10]}"
    assert "error" not in stream_result, stack.redact(
        f"{stream_result} (signal at {t_sig}, exit at {t_exit})\n{stack.log_tails()}")
    assert stream_result.get("finish") == "stop" and stream_result.get("pieces", 0) >= 20, stream_result
    # the stream (4 s) outlived the grace period: the edge waited for it, then exited
    assert stream_result["ended"] - t_sig > GRACE_MS / 1000
    assert t_exit >= stream_result["ended"] - 0.5
    # nothing lost: each answered request has its closing event (audit is still up)
    assert len(answered) == sum(1 for _, o in results if o == 200) > 10
    with stack.db().cursor() as cur:
        cur.execute("SELECT count(DISTINCT request_id) AS n FROM audit_events "
                    "WHERE kind = 'request.completed' AND request_id = ANY(%s)", (answered,))
        closed = cur.fetchone()["n"]
    assert closed == len(set(answered)), f"{len(set(answered)) - closed} answered requests have no closing event"


@pytest.mark.parametrize("worker", ["policy", "vault", "approval", "audit"])
def test_worker_sigterm_exits_0(stack, worker):
    proc = stack.procs[worker]
    proc.expected_dead = True
    t0 = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    rc = proc.popen.wait(timeout=15)
    assert rc == 0, f"{worker} exited {rc}"
    assert time.monotonic() - t0 < 5
    log = proc.log.read_text(errors="replace")
    assert "answering the requests already queued" in log
