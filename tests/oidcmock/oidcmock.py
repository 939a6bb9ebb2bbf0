#!/usr/bin/env python3
"""oidcmock - a local OpenID Connect provider for Lumkey's tests (loopback only).

Serves discovery, a JWKS with an RSA and an EC key, /authorize (no UI: it
auto-approves the configured test user and redirects back with code + state),
/token (checks the client's credentials, the code, the redirect URI and the
PKCE S256 verifier) and signs real ID tokens (RS256 by default, ES256 on
request). It can be told to misbehave, to test that the relying party refuses
what it must: see MODES.

Control (test-only, loopback): POST /_mock/config with a JSON object:
  {"user": {"sub", "email", "preferred_username", "name"},   # who signs in
   "mode": one of MODES,                                     # "ok" by default
   "alg": "RS256" | "ES256"}
GET /_mock/log: the token requests seen (no secrets: flags only).

Usage: oidcmock.py [--host 127.0.0.1] [--port 0] [--client-id lumkey]
                   [--client-secret-file F]  (else OIDCMOCK_CLIENT_SECRET)
Prints one JSON line on stdout once listening: {"issuer": ..., "port": ...}.
See README.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

MODES = (
    "ok",             # a valid ID token
    "wrong_key",      # signed by a key not in the JWKS, with the JWKS key's kid
    "unknown_kid",    # signed by another key with a kid the JWKS never has
    "wrong_iss",      # iss is another issuer
    "expired",        # exp in the past
    "not_yet",        # iat / nbf an hour ahead
    "wrong_aud",      # aud is another client
    "multi_aud_no_azp",  # aud lists the client and another one, no azp
    "alg_none",       # {"alg":"none"}, no signature
    "hs256",          # HS256 with the RSA public key (PEM) as the HMAC secret
    "bad_signature",  # a valid token with its signature altered
    "wrong_nonce",    # nonce of another sign-in
    "no_id_token",    # the token response has no id_token
    "token_error",    # the token endpoint answers 400 invalid_grant
)


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int_b64(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Provider:
    def __init__(self, issuer: str, client_id: str, client_secret: str):
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.lock = threading.Lock()
        self.codes: dict[str, dict] = {}
        self.user = {"sub": "00u-test-admin", "email": "admin@example.com",
                     "preferred_username": "admin@example.com", "name": "Test Admin"}
        self.mode = "ok"
        self.alg = "RS256"
        self.log: list[dict] = []
        self.jwks_fetches = 0

    def jwks(self) -> dict:
        rn = self.rsa.public_key().public_numbers()
        en = self.ec.public_key().public_numbers()
        return {"keys": [
            {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": _int_b64(rn.n), "e": _int_b64(rn.e)},
            {"kty": "EC", "kid": "ec1", "use": "sig", "alg": "ES256", "crv": "P-256",
             "x": b64u(en.x.to_bytes(32, "big")), "y": b64u(en.y.to_bytes(32, "big"))},
        ]}

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        mode = self.mode
        claims = dict(self.user)
        claims.update({"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300, "nonce": nonce,
                       "email_verified": True})
        if mode == "wrong_iss":
            claims["iss"] = "http://127.0.0.1:1/other-issuer"
        elif mode == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 1800
        elif mode == "not_yet":
            claims["iat"], claims["nbf"] = now + 3600, now + 3600
            claims["exp"] = now + 7200
        elif mode == "wrong_aud":
            claims["aud"] = "another-client"
        elif mode == "multi_aud_no_azp":
            claims["aud"] = [self.client_id, "another-client"]
        elif mode == "wrong_nonce":
            claims["nonce"] = b64u(secrets.token_bytes(32))
        if mode == "alg_none":
            head = b64u(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa1"}).encode())
            body = b64u(json.dumps(claims).encode())
            return f"{head}.{body}."
        if mode == "hs256":
            pem = self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
            head = b64u(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}).encode())
            body = b64u(json.dumps(claims).encode())
            sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
            return f"{head}.{body}.{b64u(sig)}"
        if self.alg == "ES256" and mode == "ok":
            return jwt.encode(claims, self.ec, algorithm="ES256", headers={"kid": "ec1"})
        key, kid = self.rsa, "rsa1"
        if mode == "wrong_key":
            key = self.rsa_other
        elif mode == "unknown_kid":
            key, kid = self.rsa_other, "rsa-rotated-" + secrets.token_hex(4)
        tok = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        if mode == "bad_signature":
            head, body, sig = tok.split(".")
            raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
            raw[10] ^= 0x01
            tok = f"{head}.{body}.{b64u(bytes(raw))}"
        return tok


def make_handler(p: Provider):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: nothing secret, but noisy
            pass

        def _send(self, status: int, body: dict | None = None, headers: dict | None = None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query))
            if u.path == "/.well-known/openid-configuration":
                return self._send(200, p.discovery())
            if u.path == "/jwks":
                with p.lock:
                    p.jwks_fetches += 1
                return self._send(200, p.jwks())
            if u.path == "/_mock/log":
                with p.lock:
                    return self._send(200, {"token_requests": list(p.log), "jwks_fetches": p.jwks_fetches})
            if u.path == "/authorize":
                need = ("response_type", "client_id", "redirect_uri", "state", "nonce", "code_challenge",
                        "code_challenge_method")
                missing = [k for k in need if not q.get(k)]
                if missing or q["response_type"] != "code" or q["client_id"] != p.client_id \
                        or q["code_challenge_method"] != "S256" or "openid" not in q.get("scope", "").split():
                    return self._send(400, {"error": "invalid_request", "missing": missing})
                code = b64u(secrets.token_bytes(24))
                with p.lock:
                    p.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"],
                                     "redirect_uri": q["redirect_uri"], "at": time.time()}
                sep = "&" if "?" in q["redirect_uri"] else "?"
                loc = q["redirect_uri"] + sep + urllib.parse.urlencode({"code": code, "state": q["state"]})
                return self._send(302, None, {"Location": loc})
            return self._send(404, {"error": "not_found"})

        def do_POST(self):
            u = urllib.parse.urlsplit(self.path)
            body = self._body()
            if u.path == "/_mock/config":
                cfg = json.loads(body or b"{}")
                with p.lock:
                    if "user" in cfg:
                        p.user = dict(cfg["user"])
                    if "mode" in cfg:
                        if cfg["mode"] not in MODES:
                            return self._send(400, {"error": "unknown mode"})
                        p.mode = cfg["mode"]
                    if "alg" in cfg:
                        p.alg = cfg["alg"]
                return self._send(200, {"ok": True})
            if u.path != "/token":
                return self._send(404, {"error": "not_found"})
            form = dict(urllib.parse.parse_qsl(body.decode()))
            cid, csec, how = form.get("client_id"), form.get("client_secret"), "post"
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                try:
                    raw = base64.b64decode(auth[6:]).decode()
                    a, b = raw.split(":", 1)
                    cid, csec, how = urllib.parse.unquote_plus(a), urllib.parse.unquote_plus(b), "basic"
                except ValueError:
                    return self._send(401, {"error": "invalid_client"})
            entry = {"client_auth": how, "client_ok": cid == p.client_id and hmac.compare_digest(
                (csec or "").encode(), p.client_secret.encode()), "pkce_ok": False, "code_ok": False}
            with p.lock:
                p.log.append(entry)
                rec = p.codes.pop(form.get("code", ""), None)  # one use only
                mode = p.mode
            if not entry["client_ok"]:
                return self._send(401, {"error": "invalid_client"})
            if form.get("grant_type") != "authorization_code" or not rec or time.time() - rec["at"] > 120 \
                    or form.get("redirect_uri") != rec["redirect_uri"]:
                return self._send(400, {"error": "invalid_grant"})
            entry["code_ok"] = True
            verifier = form.get("code_verifier", "")
            if not (43 <= len(verifier) <= 128) or b64u(hashlib.sha256(verifier.encode()).digest()) != rec["challenge"]:
                return self._send(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
            entry["pkce_ok"] = True
            if mode == "token_error":
                return self._send(400, {"error": "invalid_grant"})
            out = {"access_token": b64u(secrets.token_bytes(24)), "token_type": "Bearer", "expires_in": 300}
            if mode != "no_id_token":
                with p.lock:
                    out["id_token"] = p.id_token(rec["nonce"])
            return self._send(200, out)

    return H


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client-id", default="lumkey")
    ap.add_argument("--client-secret-file")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        print("oidcmock: loopback only", file=sys.stderr)
        return 2
    secret = open(a.client_secret_file).read().strip() if a.client_secret_file else \
        os.environ.get("OIDCMOCK_CLIENT_SECRET", "")
    if not secret:
        print("oidcmock: a client secret is required (--client-secret-file or OIDCMOCK_CLIENT_SECRET)",
              file=sys.stderr)
        return 2
    srv = ThreadingHTTPServer((a.host, a.port), None)  # type: ignore[arg-type]
    port = srv.server_address[1]
    p = Provider(f"http://{a.host}:{port}", a.client_id, secret)
    srv.RequestHandlerClass = make_handler(p)
    print(json.dumps({"issuer": p.issuer, "port": port}), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
