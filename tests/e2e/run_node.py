"""run_node - the Node SDK tests (tests/node/*.test.mjs) against a whole Lumkey stack.

Starts the same stack as the Python e2e fixtures (lkstack.Stack), runs
`node --test` with OPENAI_BASE_URL, OPENAI_API_KEY, MOCK_URL, LK_MODEL and
LK_PROVIDER_AUTH in its environment, tears the stack down, and exits with
node's status (non-zero also if a process died or a sanitizer reported).
"""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lkstack import CLAUDE_MODEL, MODEL, SOURCE_DIR, Stack, StackError, _set_pdeathsig  # noqa: E402


def main() -> int:
    node_dir = SOURCE_DIR / "tests" / "node"
    if not (node_dir / "node_modules" / "openai").is_dir():
        print("node_sdk: tests/node/node_modules is missing: run `npm ci` in tests/node "
              "(scripts/lumkey test does it)", file=sys.stderr)
        return 1
    files = sorted(str(p) for p in node_dir.glob("*.test.mjs"))
    if not files:
        print("node_sdk: no tests/node/*.test.mjs", file=sys.stderr)
        return 1
    stack = Stack()
    try:
        stack.start()
    except StackError as e:
        print(f"node_sdk: could not start the Lumkey stack: {e}", file=sys.stderr)
        return 1
    rc = 1
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update({
            "OPENAI_BASE_URL": stack.openai_base_url,
            "OPENAI_API_KEY": stack.key,
            "MOCK_URL": stack.mock_base,
            "LK_MODEL": MODEL,
            "LK_PROVIDER_AUTH": f"Bearer {stack.provider_credential}",
            "LK_API_BASE": stack.api_base,
            "LK_CLAUDE_MODEL": CLAUDE_MODEL,
        })
        p = subprocess.run(["node", "--test", *files], cwd=node_dir, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig, timeout=500)
        print(stack.redact(p.stdout.decode(errors="replace")), end="")
        rc = p.returncode
        dead = stack.dead_processes()
        if dead:
            print(f"node_sdk: processes died during the tests: {dead}\n{stack.log_tails()}", file=sys.stderr)
            rc = rc or 1
    finally:
        stack.stop()
        reports = stack.sanitizer_reports()
        if reports:
            print(stack.redact("node_sdk: sanitizer reports:\n" + "\n".join(
                f"=== {n}\n{t[:4000]}" for n, t in reports)), file=sys.stderr)
            rc = rc or 1
        else:
            stack.cleanup_dir()
    return rc


if __name__ == "__main__":
    sys.exit(main())
