"""Malformed keys are refused before any lookup: 401, and zero queries on the key table.

The counter is PostgreSQL's own: the number of scans of api_keys
(pg_stat_user_tables.seq_scan + idx_scan), which every key lookup moves. A
valid request is the positive control: it must move the counter by exactly
its own lookups, while hundreds of malformed keys sent before it move it by
nothing. (The server publishes these statistics lazily, so the test waits for
them to settle.)
"""

import json
import time

import openai
import pytest

from lkstack import MODEL, make_key


def scans(stack) -> int:
    with stack.db().cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT coalesce(seq_scan,0) + coalesce(idx_scan,0) AS n FROM pg_stat_user_tables "
                    "WHERE relname = 'api_keys'")
        return cur.fetchone()["n"]


def settled(stack, quiet: float = 11.0, timeout: float = 60.0) -> int:
    """The scan count once it has not moved for `quiet` seconds. A busy backend
    publishes its statistics only about 10 s after its last flush, so anything
    shorter could read a count that is still on its way."""
    deadline = time.monotonic() + timeout
    last, since = scans(stack), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = scans(stack)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError("api_keys scan statistics never settled")


def moved_past(stack, n: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = scans(stack)
        if now > n:
            return now
        time.sleep(0.25)
    raise AssertionError("api_keys scan statistics did not move after a valid request")


def malformed_keys(good: str) -> dict:
    body = good[len("lk_live_"):]
    swapped = good[:-7] + ("1" if good[-7] != "1" else "2") + good[-6:]     # checksum no longer matches
    return {
        "bad checksum": swapped,
        "wrong prefix": "lk_prod_" + body,
        "openai-style": "sk-" + body,
        "truncated": good[:-1],
        "extended": good + "A",
        "leading space": " " + good,
        "trailing space": good + " ",
        "inner space": good[:20] + " " + good[21:],
        "cyrillic o": good[:30] + "\u043e" + good[31:],
        "zero for O": good.replace("O", "0", 1) if "O" in good else good[:-1] + ("O" if good[-1] != "O" else "0"),
        "dash": good[:25] + "-" + good[26:],
        "empty": "",
        "prefix only": "lk_live_",
        "admin token shape": "lk_adm_" + body,
    }


def send(stack, key: str) -> int:
    st, _, body = stack.chat_raw({"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                                 headers={"authorization": "Bearer " + key} if key is not None else None,
                                 use_key=False)
    return st


def test_malformed_keys_cost_no_lookup(stack):
    # positive control first: a valid request moves the counter
    base = settled(stack)
    assert send(stack, stack.key) == 200
    one = moved_past(stack, base)  # the counter works, and sees a lookup
    per_request = one - base

    cases = malformed_keys(stack.key)
    for _ in range(20):
        for name, key in cases.items():
            if name == "cyrillic o":
                # not representable in an HTTP/1 header as latin-1 text: send the UTF-8 bytes raw
                key = key.encode("utf-8").decode("latin-1")
            st = send(stack, key)
            assert st == 401, f"malformed key ({name}) answered {st}"
    # a well-formed key that nobody issued DOES need a lookup: it is the control for "shape only"
    assert send(stack, make_key()) == 401
    moved_past(stack, one)
    after_unknown = settled(stack)
    assert after_unknown - one == per_request, (
        f"{(after_unknown - one) - per_request} api_keys scans beyond the one unknown key's lookup: "
        "a malformed key reached the database")


def test_malformed_keys_raise_authentication_error(stack):
    for name, key in malformed_keys(stack.key).items():
        if not key or not key.isascii() or key != key.strip():
            continue  # the SDK's HTTP client refuses to send these itself (covered by the raw test above)
        with pytest.raises(openai.AuthenticationError) as ei:
            stack.client(api_key=key).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}])
        err = ei.value.response.json()["error"]
        assert err["code"] in ("invalid_api_key", "missing_api_key"), (name, err["code"])
        echoed = key in json.dumps(err)
        assert not echoed, f"the error body echoes the presented key ({name})"
