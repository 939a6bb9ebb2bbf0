"""Budgets and rate limits cannot be overshot: N concurrent requests against a
limit that allows exactly k, spread over two edges with a policy worker each
(sharing one PostgreSQL), and exactly k succeed. Spend budgets reserve the
maximum cost first and settle to the real usage after."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from helpers import marker
from lkstack import MODEL, Proc, binary, free_port, http


@pytest.fixture(scope="module")
def second_edge(stack):
    """A second edge with its own policy worker: requests to either edge are decided by different processes."""
    ep = f"ipc://{stack.dir}/run/policy2.ipc"
    api, adm = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    pol = Proc("policy2", [str(binary("policy", stack.build_dir))], stack.env(LUMKEY_POLICY_ENDPOINT=ep),
               stack.dir / "logs" / "policy2.log")
    pol.start(stack.dir / "pgids")
    stack.procs["policy2"] = pol
    edge = Proc("edge2", [str(binary("edge", stack.build_dir))],
                stack.env(LUMKEY_POLICY_ENDPOINT=ep, LUMKEY_LISTEN=api, LUMKEY_ADMIN_LISTEN=adm),
                stack.dir / "logs" / "edge2.log")
    edge.start(stack.dir / "pgids")
    stack.procs["edge2"] = edge
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            st, _, body = http("GET", f"http://{adm}/readyz", timeout=2)
            if st == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        raise AssertionError("the second edge never became ready")
    return f"http://{api}/v1"


def policy(stack, tmp_path, doc):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc))
    return json.loads(stack.ctl("policy", "create", "--name", marker(), "--file", str(f), "--format", "json").stdout)


def key_with(stack, pid, **meta):
    args = ["keys", "create", "--name", marker(), "--policy", pid, "--format", "json"]
    for k, v in meta.items():
        args += ["--meta", f"{k}={v}"]
    return json.loads(stack.ctl(*args).stdout)


def burst(bases, key, n, latency_ms=0, **kw):
    """n requests at once, alternating between the edges; returns (successes, refusals with their codes).
    latency_ms holds every admitted request at the provider, so that none settles (and gives budget back)
    before all have been decided."""
    start = threading.Barrier(n)

    def one(i):
        c = openai.OpenAI(base_url=bases[i % len(bases)], api_key=key, max_retries=0, timeout=30)
        start.wait()
        try:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"[[mock latency_ms={latency_ms}]] n{i}"}], **kw)
            return "ok"
        except openai.RateLimitError as e:
            return e.response.json()["error"]["code"]

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    return results.count("ok"), [r for r in results if r != "ok"]


def test_requests_per_minute_exactly_k_of_n_across_two_policy_workers(stack, tmp_path, second_edge):
    pol = policy(stack, tmp_path, {"limits": {"requests_per_minute": 7}})
    k = key_with(stack, pol["id"])
    ok, refused = burst([stack.openai_base_url, second_edge], k["key"], 24)
    if ok != 7:
        pytest.fail(f"{ok} requests passed a limit of 7 (refusals: {refused})")
    assert set(refused) == {"rate_limit_exceeded"}
    # both policy workers took part
    for name in ("policy.log", "policy2.log"):
        assert (stack.dir / "logs" / name).exists()


def test_spend_per_day_exactly_k_and_settled_to_real_usage(stack, tmp_path, second_edge):
    # each request reserves at most (prompt estimate + 100 output tokens) at 10 000 USD/Mtok output:
    # about 1.0x USD per request; a budget of 5.5 USD admits exactly 5 at once
    doc = {"limits": {"usd_per_day": 5.5},
           "prices": {"mock-*": {"input_per_mtok": 0, "output_per_mtok": 10000}}}
    pol = policy(stack, tmp_path, doc)
    k = key_with(stack, pol["id"])
    ok, refused = burst([stack.openai_base_url, second_edge], k["key"], 16, latency_ms=2000, max_tokens=100)
    assert ok == 5, f"{ok} requests passed a budget that admits 5 (refusals: {refused})"
    assert set(refused) == {"budget_exceeded"}
    # settled: the mock's answers are ~3 tokens, so the day's counter drops far below the reserved 5 USD
    deadline = time.monotonic() + 10
    while True:
        with stack.db().cursor() as cur:
            cur.execute("SELECT used FROM budget_counters WHERE scope = %s AND kind = 'usd_day'", (f"key:{k['id']}",))
            used = cur.fetchone()["used"]
            cur.execute("SELECT count(*) AS n FROM budget_reservations WHERE scope = %s AND settled_at IS NOT NULL",
                        (f"key:{k['id']}",))
            settled = cur.fetchone()["n"]
        if settled == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert settled == 5, f"{settled} of 5 reservations settled"
    assert 0 < used < 1_000_000, f"day counter {used} micro-USD after settling"
    # the audit trail records each request's real cost from the policy's prices
    with stack.db().cursor() as cur:
        cur.execute("SELECT completion_tokens, cost_micros FROM audit_events WHERE key_id = %s "
                    "AND kind = 'request.completed'", (k["id"],))
        rows = cur.fetchall()
    assert len(rows) == 5 and all(r["completion_tokens"] and r["cost_micros"] == r["completion_tokens"] * 10000
                                  for r in rows), rows
    # with the budget settled, more requests fit again
    assert burst([stack.openai_base_url], k["key"], 1, max_tokens=100)[0] == 1


def test_spend_limit_without_a_price_is_refused(stack, tmp_path):
    pol = policy(stack, tmp_path, {"limits": {"usd_per_month": 100}})
    k = key_with(stack, pol["id"])
    with pytest.raises(openai.RateLimitError) as ei:
        stack.client(api_key=k["key"], max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert ei.value.response.json()["error"]["code"] == "budget_exceeded"


def test_team_limits_are_shared_by_the_team(stack, tmp_path, second_edge):
    pol = policy(stack, tmp_path, {"limits": {"requests_per_minute": 4, "per": "team"}})
    a = key_with(stack, pol["id"], team=marker())
    team = json.loads(stack.ctl("keys", "get", a["id"], "--format", "json").stdout)["metadata"]["team"]
    b = key_with(stack, pol["id"], team=team)
    ok_a, _ = burst([stack.openai_base_url, second_edge], a["key"], 6)
    ok_b, refused = burst([stack.openai_base_url, second_edge], b["key"], 6)
    assert ok_a + ok_b == 4 and ok_a == 4 and set(refused) == {"rate_limit_exceeded"}
