"""Small checks shared by the end-to-end tests. None of them puts a secret in a message."""

import json
import time
import uuid


def marker() -> str:
    """A unique word to find one request in the mock's log."""
    return "m" + uuid.uuid4().hex[:16]


def mock_requests_with(stack, text: str) -> list[dict]:
    return [r for r in stack.mock_requests() if text in (r.get("body") or "")]


def wait_mock_request(stack, text: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = mock_requests_with(stack, text)
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"the mock never received the request marked {text}")
        time.sleep(0.05)


def header(req: dict, name: str):
    for k, v in (req.get("headers") or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def error_body(body: bytes) -> dict:
    """Checks OpenAI's error shape {"error":{"message","type","param","code"}}; returns error."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {body[:300]!r}")
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), f"not OpenAI's error shape: {doc}"
    err = doc["error"]
    for field in ("message", "type", "param", "code"):
        assert field in err, f"error object lacks {field!r}: {err}"
    assert isinstance(err["message"], str) and err["message"], f"empty error message: {err}"
    assert isinstance(err["type"], str) and err["type"], f"empty error type: {err}"
    return err


def sdk_error_parts(exc):
    """(status, headers, body bytes) of an openai.APIStatusError."""
    r = exc.response
    return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content
