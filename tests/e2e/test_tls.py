"""HTTPS to providers: the certificate chain AND the host name are verified.

h2o 2.2.5's client does not check the upstream host name on TLS 1.3; the edge
pins it per provider origin. Three TLS providers (our mock, serving HTTPS) are
registered, each behind a certificate made here with the openssl CLI:
  good      - signed by the test CA, for "localhost"      -> the call succeeds
  wrongname - signed by the test CA, for "wrong.example"   -> refused, nothing sent
  untrusted - self-signed, for "localhost"                 -> refused, nothing sent
The edge trusts the test CA through LUMKEY_UPSTREAM_CA_FILE.
"""

import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from helpers import header, marker
from lkstack import Proc, Stack, StackError, binary, free_port


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _make_certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=lumkey test CA",
             "-days", "2", cwd=d)
    for name, san in (("good", "DNS:localhost,IP:127.0.0.1"), ("wrongname", "DNS:wrong.example")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={san.split(',')[0][4:]}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "untrusted.key", "-out", "untrusted.crt", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost", "-days", "2", cwd=d)


class TlsProviders:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="lk-tls-"))
        _make_certs(self.dir)
        self.stack = Stack(extra_env={"LUMKEY_UPSTREAM_CA_FILE": str(self.dir / "ca.crt")})
        self.mocks = {}   # name -> (port, credential)

    def start(self):
        self.stack.start()
        for name in ("good", "wrongname", "untrusted"):
            port = free_port()
            cred = "sk-tls-" + secrets.token_hex(16)
            argv = [str(binary("mock", self.stack.build_dir)), "--listen", f"127.0.0.1:{port}",
                    "--tls-cert", str(self.dir / f"{name}.crt"), "--tls-key", str(self.dir / f"{name}.key")]
            proc = Proc(f"mock-{name}", argv, self.stack.env(MOCK_EXPECT_KEY=cred),
                        self.stack.dir / "logs" / f"mock-{name}.log")
            proc.start(self.stack.dir / "pgids")
            self.stack.procs[f"mock-{name}"] = proc
            self.mocks[name] = (port, cred)
            self.stack.ctl("providers", "create", "--name", f"tls-{name}", "--kind", "openai-compatible",
                           "--base-url", f"https://localhost:{port}/v1", "--allow-private", "--api-key-stdin",
                           "--models", f"tls-{name}-model", input=cred.encode())
        for name in self.mocks:
            self.wait_mock(name)
        return self

    def mock_requests(self, name):
        """The request log of one TLS mock (read over HTTPS, trusting the test CA)."""
        port, _ = self.mocks[name]
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        if name != "good":  # these certificates are wrong on purpose; only read the log
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://localhost:{port}/_mock/requests", context=ctx, timeout=5) as r:
            return json.loads(r.read())["data"]

    def wait_mock(self, name, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.mock_requests(name)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise StackError(f"TLS mock {name} did not come up")
                time.sleep(0.05)

    def stop(self):
        self.stack.stop()
        if not self.stack.sanitizer_reports():
            self.stack.cleanup_dir()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tls():
    t = TlsProviders()
    try:
        t.start()
    except (StackError, subprocess.CalledProcessError) as e:
        t.stop()
        pytest.fail(f"could not start the TLS providers: {e}", pytrace=False)
    yield t
    t.stop()


def test_verified_provider_gets_the_call(tls):
    m = marker()
    comp = tls.stack.client(max_retries=0).chat.completions.create(
        model="tls-good-model", messages=[{"role": "user", "content": f"over tls {m}"}])
    assert comp.choices[0].message.content
    seen = [r for r in tls.mock_requests("good") if m in (r.get("body") or "")]
    assert len(seen) == 1, "the TLS provider did not receive exactly one request"
    ok = header(seen[0], "authorization") == f"Bearer {tls.mocks['good'][1]}"
    assert ok, "the TLS provider did not receive its stored credential"


@pytest.mark.parametrize("name", ["wrongname", "untrusted"])
def test_bad_certificate_is_refused_and_nothing_is_sent(tls, name):
    m = marker()
    with pytest.raises(openai.APIStatusError) as ei:
        tls.stack.client(max_retries=0).chat.completions.create(
            model=f"tls-{name}-model", messages=[{"role": "user", "content": f"must not arrive {m}"}])
    assert ei.value.status_code == 502
    body = ei.value.response.json()["error"]
    assert body["code"] == "upstream_unreachable"
    # the TLS handshake failed: no request, so no credential, ever reached that server
    assert tls.mock_requests(name) == [], f"the {name} server received a request"
    rid = ei.value.response.headers.get("x-request-id")
    row = tls.stack.wait_closing_audit(rid)
    assert row["http_status"] == 502 and row["error_code"] == "upstream_unreachable"
    assert not row["upstream_status"], "audit claims the provider answered"
