"""A tampered or moved credential ciphertext: the request is refused, nothing
reaches the provider, and the audit trail records the integrity failure."""

import openai
import pytest

from helpers import marker, mock_requests_with
from lkstack import MODEL


def credential_row(stack):
    with stack.db().cursor() as cur:
        cur.execute("SELECT id, ciphertext, nonce, wrapped_dek FROM credentials WHERE provider_id = %s "
                    "ORDER BY created_at DESC LIMIT 1", (stack.provider_id,))
        return cur.fetchone()


def set_column(stack, cred_id, column, value):
    with stack.db().cursor() as cur:
        cur.execute(f"UPDATE credentials SET {column} = %s WHERE id = %s", (value, cred_id))


@pytest.mark.parametrize("column", ["ciphertext", "nonce", "wrapped_dek"])
def test_tampered_credential_is_refused_and_audited(stack, column):
    row = credential_row(stack)
    original = bytes(row[column])
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    set_column(stack, row["id"], column, bytes(flipped))
    try:
        m = marker()
        with pytest.raises(openai.InternalServerError) as ei:
            stack.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": m}])
        err = ei.value.response.json()["error"]
        assert err["code"] == "credential_integrity_failed"
        assert not mock_requests_with(stack, m), "a request went to the provider without a valid credential"
        audit = stack.wait_closing_audit(ei.value.response.headers["x-request-id"])
        assert audit["error_code"] == "credential_integrity_failed"
        assert audit["http_status"] == 500 and not audit["upstream_status"]
    finally:
        set_column(stack, row["id"], column, original)
    # restored: the same credential works again
    assert stack.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "again"}]).choices[0].message.content


def test_credential_moved_from_another_row_is_refused(stack):
    """Another provider's (valid) sealed credential copied into this provider's row does not open:
    the additional data binds each ciphertext to its own row."""
    mine = credential_row(stack)
    with stack.db().cursor() as cur:
        cur.execute("SELECT ciphertext, nonce, wrapped_dek FROM credentials WHERE provider_id <> %s "
                    "ORDER BY created_at LIMIT 1", (stack.provider_id,))
        other = cur.fetchone()
    assert other, "the stack has a second provider with its own credential"
    saved = {c: bytes(mine[c]) for c in ("ciphertext", "nonce", "wrapped_dek")}
    try:
        for c in saved:
            set_column(stack, mine["id"], c, bytes(other[c]))
        m = marker()
        with pytest.raises(openai.InternalServerError) as ei:
            stack.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": m}])
        assert ei.value.response.json()["error"]["code"] == "credential_integrity_failed"
        assert not mock_requests_with(stack, m)
        audit = stack.wait_closing_audit(ei.value.response.headers["x-request-id"])
        assert audit["error_code"] == "credential_integrity_failed"
    finally:
        for c, v in saved.items():
            set_column(stack, mine["id"], c, v)
