"""run_console - the web console's browser tests (tests/console/console.test.mjs) against a whole stack.

Starts the same stack as the Python e2e fixtures (tests/e2e/lkstack.py) with
single sign-on against our local OpenID provider (tests/oidcmock/ssokit.py;
the admin listener addressed as localhost), provisions one SCIM user per role
(admin, approver, auditor), then runs `node --test console.test.mjs`, which drives the system Chromium
(/usr/bin/chromium, Debian's package) headless through playwright-core. The
Node side gets the addresses in its environment and the secrets it must look
for (admin token, provider credential, SCIM token, OIDC client secret) so that it can assert they never reach
the page or its network traffic; its output is redacted before it is printed.

LK_CONSOLE_SCREENSHOTS=DIR also saves screenshots of the main pages into DIR
(docs/console/ holds the committed ones).

Exit status: node's (non-zero also if a stack process died or a sanitizer
reported).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

sys.path.insert(0, str(HERE.parent / "oidcmock"))

from lkstack import MODEL, StackError, _set_pdeathsig  # noqa: E402
from ssokit import SsoStack  # noqa: E402

CHROMIUM = os.environ.get("LK_CHROMIUM", "/usr/bin/chromium")

# who signs in through the local OpenID provider, one SCIM user per role
USERS = {
    "admin": {"sub": "okta|ada", "email": "ada@example.com", "preferred_username": "ada@example.com",
              "name": "Ada Admin"},
    "approver": {"sub": "okta|avery", "email": "avery@example.com", "preferred_username": "avery@example.com",
                 "name": "Avery Approver"},
    "auditor": {"sub": "okta|audrey", "email": "audrey@example.com", "preferred_username": "audrey@example.com",
                "name": "Audrey Auditor"},
}


class ConsoleSso(SsoStack):
    """The SSO stack with the admin listener addressed as localhost: the session cookie is Secure and
    SameSite=Strict, the redirect URI and the browser must agree on the host."""

    @property
    def admin_base(self) -> str:
        return "http://localhost:" + self.stack.admin_addr.rsplit(":", 1)[1]


def main() -> int:
    if not (HERE / "node_modules" / "playwright-core").is_dir() or not (HERE / "node_modules" / "openai").is_dir():
        print("console: tests/console/node_modules is missing: run `npm ci` in tests/console "
              "(scripts/lumkey test does it)", file=sys.stderr)
        return 1
    if not os.access(CHROMIUM, os.X_OK):
        print(f"console: {CHROMIUM} is missing: install Debian's chromium package (scripts/deps.sh)",
              file=sys.stderr)
        return 1
    kit = ConsoleSso()
    stack = kit.stack
    try:
        kit.start()
        for role, u in USERS.items():
            kit.provision(u["email"], role, sub=u["sub"], email=u["email"], display=u["name"])
    except (StackError, AssertionError, RuntimeError, OSError) as e:
        print(kit.redact(f"console: could not start the Lumkey stack with SSO: {e}"), file=sys.stderr)
        kit.stop()
        return 1
    rc = 1
    try:
        api_port = stack.api_addr.rsplit(":", 1)[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update({
            # cookies are Secure + SameSite=Strict: the browser must see the host name localhost
            "LK_CONSOLE_BASE": kit.admin_base,
            "LK_OIDC_ISSUER": kit.issuer,
            "LK_USERS": json.dumps(USERS),
            # only so that the hygiene check can look for them
            "LK_SCIM_TOKEN": kit._scim_token,
            "LK_OIDC_CLIENT_SECRET": kit._client_secret,
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
        out = kit.redact(p.stdout.decode(errors="replace"))
        print(out, end="")
        rc = p.returncode
        dead = stack.dead_processes()
        if dead:
            print(f"console: processes died during the tests: {dead}\n{stack.log_tails()}", file=sys.stderr)
            rc = rc or 1
        logs = stack.all_logs_text()
        if any(sec in logs for sec in kit.secrets() if sec):
            print("console: a secret reached a service log", file=sys.stderr)
            rc = rc or 1
    finally:
        kit.stop()
        reports = stack.sanitizer_reports()
        if reports:
            print(kit.redact("console: sanitizer reports:\n" + "\n".join(
                f"=== {n}\n{t[:4000]}" for n, t in reports)), file=sys.stderr)
            rc = rc or 1
        else:
            stack.cleanup_dir()
    return rc


if __name__ == "__main__":
    sys.exit(main())
