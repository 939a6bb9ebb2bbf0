"""run_console - the web console's browser tests (tests/console/console.test.mjs) against a whole stack.

Starts the same stack as the Python e2e fixtures (tests/e2e/lkstack.py), then
runs `node --test console.test.mjs`, which drives the system Chromium
(/usr/bin/chromium, Debian's package) headless through playwright-core. The
Node side gets the addresses in its environment and the secrets it must look
for (admin token, provider credential) so that it can assert they never reach
the page or its network traffic; its output is redacted before it is printed.

LK_CONSOLE_SCREENSHOTS=DIR also saves screenshots of the main pages into DIR
(docs/console/ holds the committed ones).

Exit status: node's (non-zero also if a stack process died or a sanitizer
reported).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from lkstack import MODEL, SOURCE_DIR, Stack, StackError, _set_pdeathsig  # noqa: E402

CHROMIUM = os.environ.get("LK_CHROMIUM", "/usr/bin/chromium")


def main() -> int:
    if not (HERE / "node_modules" / "playwright-core").is_dir() or not (HERE / "node_modules" / "openai").is_dir():
        print("console: tests/console/node_modules is missing: run `npm ci` in tests/console "
              "(scripts/lumkey test does it)", file=sys.stderr)
        return 1
    if not os.access(CHROMIUM, os.X_OK):
        print(f"console: {CHROMIUM} is missing: install Debian's chromium package (scripts/deps.sh)",
              file=sys.stderr)
        return 1
    stack = Stack()
    try:
        stack.start()
    except StackError as e:
        print(f"console: could not start the Lumkey stack: {e}", file=sys.stderr)
        return 1
    rc = 1
    try:
        admin_port = stack.admin_addr.rsplit(":", 1)[1]
        api_port = stack.api_addr.rsplit(":", 1)[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update({
            # cookies are Secure + SameSite=Strict: the browser must see the host name localhost
            "LK_CONSOLE_BASE": f"http://localhost:{admin_port}",
            "LK_OPENAI_BASE": f"http://127.0.0.1:{api_port}/v1",
            "LK_MODEL": MODEL,
            "LK_ADMIN_TOKEN": stack.admin_token,
            "LK_PROVIDER_CRED": stack.provider_credential,
            "LK_CHROMIUM": CHROMIUM,
        })
        shots = os.environ.get("LK_CONSOLE_SCREENSHOTS")
        if shots:
            env["LK_CONSOLE_SCREENSHOTS"] = str(Path(shots).resolve())
        p = subprocess.run(["node", "--test", "--test-concurrency=1", "console.test.mjs"], cwd=HERE, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig,
                           timeout=540)
        out = stack.redact(p.stdout.decode(errors="replace"))
        assert stack.provider_credential not in out
        print(out, end="")
        rc = p.returncode
        dead = stack.dead_processes()
        if dead:
            print(f"console: processes died during the tests: {dead}\n{stack.log_tails()}", file=sys.stderr)
            rc = rc or 1
        logs = stack.all_logs_text()
        if stack.provider_credential in logs or stack.admin_token in logs:
            print("console: a secret reached a service log", file=sys.stderr)
            rc = rc or 1
    finally:
        stack.stop()
        reports = stack.sanitizer_reports()
        if reports:
            print(stack.redact("console: sanitizer reports:\n" + "\n".join(
                f"=== {n}\n{t[:4000]}" for n, t in reports)), file=sys.stderr)
            rc = rc or 1
        else:
            stack.cleanup_dir()
    return rc


if __name__ == "__main__":
    sys.exit(main())
