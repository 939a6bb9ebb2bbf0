"""Shared fixtures for the end-to-end tests.

`stack` (session): one whole Lumkey stack for the test file (each file is its
own ctest, so its own session): PostgreSQL, migrations, the four workers, the
edge, the mock provider, an admin token, a provider and a key made through
lumkeyctl. Torn down in order at the end, even on failure.

After every test that used the stack, an autouse check fails the test if a
process died that the test did not stop on purpose, or if a sanitizer
(ASan/UBSan builds) wrote a report.

Secrets never go into assertion messages: compare them into a boolean first,
and pass any text that could hold one through `stack.redact()`.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lkstack import Stack, StackError  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the Lumkey stack: {e}", pytrace=False)
    failed = False
    try:
        yield s
    finally:
        s.stop()
        reports = s.sanitizer_reports()
        failed = bool(reports)
        if not failed:
            s.cleanup_dir()
    if reports:
        pytest.fail("sanitizer reports at teardown:\n" + s.redact(
            "\n".join(f"=== {name}\n{text[:4000]}" for name, text in reports)), pytrace=False)


@pytest.fixture(autouse=True)
def _stack_still_healthy(request):
    yield
    if "stack" not in request.fixturenames:
        return
    s = request.getfixturevalue("stack")
    problems = []
    dead = s.dead_processes()
    if dead:
        problems.append("processes died: " + ", ".join(
            f"{n} (status {s.procs[n].returncode()})" for n in dead))
    reports = s.sanitizer_reports(mark_seen=True)
    if reports:
        problems.append("sanitizer reports:\n" + "\n".join(f"=== {n}\n{t[:4000]}" for n, t in reports))
    if problems:
        msg = s.redact("\n".join(problems) + "\n" + s.log_tails())
        # best effort: bring the dead back so the following tests test something
        for n in dead:
            try:
                if n == "mock":
                    s._start_mock()
                else:
                    s.start_service(n, wait=False)
            except Exception:
                pass
        pytest.fail(msg, pytrace=False)


def pytest_report_header(config):
    return [f"lumkey build dir: {os.environ.get('LK_BUILD_DIR', '(default build/)')}"]
