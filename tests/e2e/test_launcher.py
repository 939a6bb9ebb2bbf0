"""scripts/lumkey up: starts the whole stack with a demo provider, prints a working demo key once,
and on SIGTERM stops everything it started, PostgreSQL included, leaving no process behind."""

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import openai
import pytest

from lkstack import BUILD_DIR, SOURCE_DIR, _set_pdeathsig, free_port, http

BANNER_END = "Ctrl-C stops everything."


def _proc_table():
    """pid -> (ppid, starttime, state, cmdline, environ) for every visible process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            rest = stat[stat.rindex(")") + 2:].split()
            state, ppid, start = rest[0], int(rest[1]), int(rest[19])
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                env = Path(f"/proc/{d}/environ").read_bytes().decode(errors="replace")
            except OSError:
                env = ""
            out[int(d)] = (ppid, start, state, cmd, env)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _processes_of(state_dir: str, root_pid: int):
    """{(pid, starttime): cmdline} of the launcher's descendants and of anything mentioning state_dir
    (PostgreSQL is daemonized by pg_ctl: its postmaster names the state dir, its children descend from it)."""
    table = _proc_table()
    roots = {pid for pid, (_, _, _, cmd, env) in table.items() if state_dir in cmd or state_dir in env}
    roots.add(root_pid)
    found, frontier = set(), set(roots)
    while frontier:
        found |= frontier
        frontier = {pid for pid, (ppid, *_rest) in table.items() if ppid in found} - found
    return {(pid, table[pid][1]): table[pid][3] for pid in found if pid in table and table[pid][2] != "Z"}


def _still_running(procs):
    table = _proc_table()
    return {k: v for k, v in procs.items() if k[0] in table and table[k[0]][1] == k[1] and table[k[0]][2] != "Z"}


@pytest.fixture
def launcher():
    state = tempfile.mkdtemp(prefix="lk-up-", dir="/tmp")
    api, admin, mock, pg = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMKEY_", "OPENAI_"))}
    env.update({
        "LUMKEY_LISTEN": f"127.0.0.1:{api}", "LUMKEY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "LUMKEY_MOCK_LISTEN": f"127.0.0.1:{mock}", "LUMKEY_PG_PORT": str(pg),
        "LUMKEY_BUILD_DIR": str(BUILD_DIR),
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    })
    p = subprocess.Popen([str(SOURCE_DIR / "scripts" / "lumkey"), "up", "--no-build", "--no-deps", "--state", state],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, preexec_fn=_set_pdeathsig)
    info = {"proc": p, "state": state, "env": env, "api": f"127.0.0.1:{api}", "admin": f"127.0.0.1:{admin}",
            "out": []}
    try:
        yield info
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        # leave nothing behind even if the launcher failed to clean up
        leftovers = _processes_of(state, p.pid)
        for (pid, _), _cmd in leftovers.items():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(state, ignore_errors=True)


def _read_until(info, needle: str, timeout: float) -> str:
    """Reads the launcher's output until a line contains needle. Output kept in info['out']."""
    p = info["proc"]
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            if needle.encode() in buf:
                break
        elif p.poll() is not None:
            break
    text = buf.decode(errors="replace")
    info["out"].append(text)
    return text


def _redacted(text: str) -> str:
    return re.sub(r"lk_(?:live|test|adm)_[0-9A-Za-z]+", "<redacted>", text)


def test_up_serves_the_demo_and_stops_cleanly_on_sigterm(launcher):
    out = _read_until(launcher, BANNER_END, timeout=120)
    assert BANNER_END in out, "no banner from scripts/lumkey up:\n" + _redacted(out)[-3000:]
    assert f"http://{launcher['api']}/v1" in out
    assert f"http://{launcher['admin']}" in out
    tokens = re.findall(r"LUMKEY_TOKEN=(lk_adm_[0-9A-Za-z]+)", out)
    keys = re.findall(r"LUMKEY_DEMO_KEY=(lk_live_[0-9A-Za-z]+)", out)
    assert len(tokens) == 1, "the first start must print the bootstrap admin token exactly once"
    assert len(keys) == 1, "the first start must print the demo key exactly once"
    assert "curl" in out and "OPENAI_BASE_URL" in out

    st, _, _ = http("GET", f"http://{launcher['api']}/readyz")
    assert st == 200
    client = openai.OpenAI(base_url=f"http://{launcher['api']}/v1", api_key=keys[0], max_retries=0, timeout=30)
    comp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert comp.choices[0].message.content
    st, _, _ = http("GET", f"http://{launcher['admin']}/admin/v1/keys",
                    headers={"authorization": f"Bearer {tokens[0]}"})
    assert st == 200, "the printed admin token does not work"

    # secrets printed on the terminal, never written to the logs
    logs = "".join(p.read_text(errors="replace") for p in Path(launcher["state"], "logs").glob("*.log"))
    leaked = tokens[0] in logs or keys[0] in logs
    assert not leaked, "the admin token or the demo key is in the logs"

    p = launcher["proc"]
    procs = _processes_of(launcher["state"], p.pid)
    names = " ".join(procs.values())
    for exe in ("lumkey-edge", "lumkey-policy", "lumkey-vault", "lumkey-approval", "lumkey-audit", "lumkey-mock",
                "postgres"):
        assert exe in names, f"{exe} is not running under scripts/lumkey up"

    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/lumkey up did not exit within 30 s of SIGTERM")
    deadline = time.monotonic() + 5
    left = _still_running(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _still_running(procs)
    assert not left, "processes left after SIGTERM: " + _redacted("; ".join(left.values()))
    # and none appeared meanwhile
    again = {k: v for k, v in _processes_of(launcher["state"], p.pid).items() if k[0] != p.pid}
    assert not again, "processes of the state dir still running: " + _redacted("; ".join(again.values()))
    assert not Path(launcher["state"], "run", "lumkey.pid").exists()


def test_ctrl_c_then_second_start_shows_no_secret_again(launcher):
    """Ctrl-C stops everything; a restart on the same state comes up without printing a token or
    demo key again, and the demo key from the first start still works."""
    out = _read_until(launcher, BANNER_END, timeout=120)
    assert BANNER_END in out, "no banner:\n" + _redacted(out)[-3000:]
    keys = re.findall(r"LUMKEY_DEMO_KEY=(lk_live_[0-9A-Za-z]+)", out)
    assert len(keys) == 1
    # Ctrl-C in a terminal: SIGINT to the launcher's whole foreground process group
    p = launcher["proc"]
    procs = _processes_of(launcher["state"], p.pid)
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/lumkey up did not exit within 30 s of Ctrl-C (SIGINT)")
    deadline = time.monotonic() + 5
    left = _still_running(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _still_running(procs)
    assert not left, "processes left after Ctrl-C: " + _redacted("; ".join(left.values()))

    # start again on the same state directory and ports
    p2 = subprocess.Popen([str(SOURCE_DIR / "scripts" / "lumkey"), "up", "--no-build", "--no-deps", "--state",
                           launcher["state"]], env=launcher["env"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_set_pdeathsig)
    launcher["proc"] = p2
    out2 = _read_until(launcher, BANNER_END, timeout=120)
    assert BANNER_END in out2, "no banner at the second start:\n" + _redacted(out2)[-3000:]
    assert not re.search(r"lk_(?:adm|live)_[0-9A-Za-z]{20,}", out2), "a secret was printed again at the second start"
    assert "shown at the first start" in out2
    client = openai.OpenAI(base_url=f"http://{launcher['api']}/v1", api_key=keys[0], max_retries=0, timeout=30)
    comp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
    assert comp.choices[0].message.content
