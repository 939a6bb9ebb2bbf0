"""Per-key source-address allowlist: a key used from an address outside its
list is refused (403 ip_not_allowed, audited); changes apply at once; rotation
keeps the list; bad entries are refused by the admin API."""

import json

import openai
import pytest

from lkstack import MODEL, http


def create(stack, *extra):
    return json.loads(stack.ctl("keys", "create", "--name", "ip", *extra, "--format", "json").stdout)


def call(stack, key):
    return stack.client(api_key=key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "from where?"}])


def test_outside_the_allowlist_is_refused_and_audited(stack):
    k = create(stack, "--allowed-ips", "10.9.9.0/24,2001:db8::/32")
    assert k["allowed_ips"] == ["10.9.9.0/24", "2001:db8::/32"]
    with pytest.raises(openai.PermissionDeniedError) as ei:
        call(stack, k["key"])
    assert ei.value.response.json()["error"]["code"] == "ip_not_allowed"
    row = stack.wait_closing_audit(ei.value.response.headers["x-request-id"])
    assert row["http_status"] == 403 and row["error_code"] == "ip_not_allowed" and row["key_id"] == k["id"]


def test_inside_the_allowlist_works_and_changes_apply_at_once(stack):
    ok = create(stack, "--allowed-ips", "127.0.0.1,::1")
    assert call(stack, ok["key"]).parse().choices[0].message.content

    k = create(stack, "--allowed-ips", "10.9.9.9")
    with pytest.raises(openai.PermissionDeniedError):
        call(stack, k["key"])
    stack.ctl("keys", "update", k["id"], "--allowed-ips", "127.0.0.0/8")
    assert call(stack, k["key"]).parse().choices[0].message.content    # no restart, no wait
    got = json.loads(stack.ctl("keys", "get", k["id"], "--format", "json").stdout)
    assert got["allowed_ips"] == ["127.0.0.0/8"]

    # rotation keeps the list: narrow it, rotate, the new key is refused too
    stack.ctl("keys", "update", k["id"], "--allowed-ips", "10.9.9.9")
    rot = json.loads(stack.ctl("keys", "rotate", k["id"], "--format", "json").stdout)
    with pytest.raises(openai.PermissionDeniedError):
        call(stack, rot["key"]["key"])


def test_no_list_means_any_address(stack):
    k = create(stack)
    assert k["allowed_ips"] == []
    assert call(stack, k["key"]).parse().choices[0].message.content


@pytest.mark.parametrize("bad", [["10.0.0.0/33"], ["not-an-ip"], ["1.2.3.4/x"], ["::1/129"], [""], [7],
                                 "10.0.0.1", ["1.2.3.4"] * 65])
def test_bad_entries_are_refused(stack, bad):
    auth = {"authorization": f"Bearer {stack.admin_token}", "content-type": "application/json"}
    st, _, body = http("POST", stack.admin_base + "/admin/v1/keys",
                       json.dumps({"name": "bad-ips", "allowed_ips": bad}).encode(), auth)
    assert st == 400, f"accepted allowed_ips={bad!r}"
    assert json.loads(body)["error"]["code"] == "invalid_field"
