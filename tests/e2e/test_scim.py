"""SCIM 2.0 provisioning (issue 11) with the request shapes Okta and Microsoft Entra ID send:
create, filter, paginate, PUT, PATCH (add / replace / remove, with and without a path, value
filters, capitalised ops and string booleans), deactivate, DELETE, groups and membership,
errors in SCIM's shape, authentication by an admin token of role scim, tenant scoping.
"""

import re
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oidcmock"))

from ssokit import SCIM_JSON, assert_healthy, module_stack  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


@pytest.fixture(scope="module")
def sso():
    yield from module_stack()


@pytest.fixture(autouse=True)
def _still_healthy(sso):
    """After every test: no process of the stack died, no sanitizer report (ASan builds)."""
    yield
    assert_healthy(sso)


def scim_error(r, status: int, scim_type: str | None = None):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith(SCIM_JSON)
    j = r.json()
    assert j["schemas"] == [ERROR] and j["status"] == str(status) and j["detail"]
    if scim_type:
        assert j.get("scimType") == scim_type, j


def okta_user(name: str, ext: str) -> dict:
    # Okta's "create user" (its SCIM 2.0 reference): password included, which Lumkey must not keep
    return {"schemas": [USER], "userName": name, "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": True, "value": name, "type": "work"}], "displayName": "Test User",
            "locale": "en-US", "externalId": ext, "groups": [], "password": "1mz050nq", "active": True}


def entra_user(name: str, ext: str) -> dict:
    return {"schemas": [USER, ENTERPRISE], "externalId": ext, "userName": name, "active": True,
            "emails": [{"primary": True, "type": "work", "value": f"work.{name}"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
            "roles": []}


def test_okta_user_lifecycle(sso):
    name = "okta.user@example.com"
    # Okta first looks the user up
    r = sso.scim("GET", "/Users", params={"filter": f'userName eq "{name}"', "startIndex": "1", "count": "100"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(SCIM_JSON)
    assert r.json() == {"schemas": [LIST], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []}
    r = sso.scim("POST", "/Users", okta_user(name, "00ujl29u0le5T6Aj10h7"))
    assert r.status_code == 201, r.text
    u = r.json()
    assert u["id"].startswith("usr_") and u["userName"] == name and u["active"] is True
    assert u["externalId"] == "00ujl29u0le5T6Aj10h7" and u["schemas"] == [USER]
    assert u["meta"]["resourceType"] == "User" and u["meta"]["location"] == f"/scim/v2/Users/{u['id']}"
    assert "password" not in u
    with sso.stack.db().cursor() as cur:
        cur.execute("SELECT resource::text AS r FROM scim_users WHERE id = %s", (u["id"],))
        assert "1mz050nq" not in cur.fetchone()["r"]  # the password is never stored
    # found by userName (any case), by id
    r = sso.scim("GET", "/Users", params={"filter": f'userName eq "{name.upper()}"'})
    assert r.json()["totalResults"] == 1 and r.json()["Resources"][0]["id"] == u["id"]
    r = sso.scim("GET", f"/Users/{u['id']}")
    assert r.status_code == 200 and r.json()["name"]["givenName"] == "Test"
    # PUT (Okta updates profiles with a full replace)
    body = okta_user(name, "00ujl29u0le5T6Aj10h7")
    body["name"]["givenName"] = "Changed"
    body["id"] = u["id"]
    r = sso.scim("PUT", f"/Users/{u['id']}", body)
    assert r.status_code == 200 and r.json()["name"]["givenName"] == "Changed"
    assert r.json()["meta"]["version"] != u["meta"]["version"]
    # deactivation: Okta's PATCH shape (no path, value object)
    r = sso.scim("PATCH", f"/Users/{u['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": False}}]})
    assert r.status_code == 200 and r.json()["active"] is False
    r = sso.scim("GET", "/Users", params={"filter": 'active eq false'})
    assert u["id"] in [x["id"] for x in r.json()["Resources"]]


def test_entra_user_shapes(sso):
    name = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
    r = sso.scim("POST", "/Users", entra_user(name, "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"))
    assert r.status_code == 201, r.text
    u = r.json()
    # Entra's lookups: by externalId, by the work email with a value filter
    r = sso.scim("GET", "/Users", params={"filter": 'externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'})
    assert [x["id"] for x in r.json()["Resources"]] == [u["id"]]
    r = sso.scim("GET", "/Users", params={"filter": f'emails[type eq "work"].value eq "work.{name}"'})
    assert [x["id"] for x in r.json()["Resources"]] == [u["id"]]
    # Entra's PATCH: capitalised ops, a value-filtered path, a sub-attribute, the enterprise extension
    r = sso.scim("PATCH", f"/Users/{u['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updatedEmail@microsoft.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Security"},
        {"op": "Add", "path": "displayName", "value": "Updated Display"}]})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["emails"] == [{"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}]
    assert j["name"]["familyName"] == "updatedFamilyName" and j["displayName"] == "Updated Display"
    assert j[ENTERPRISE]["department"] == "Security"
    r = sso.scim("GET", "/Users", params={"filter": 'emails.value eq "updatedemail@microsoft.com"'})
    assert [x["id"] for x in r.json()["Resources"]] == [u["id"]]
    # remove with a path
    r = sso.scim("PATCH", f"/Users/{u['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Remove", "path": f"{ENTERPRISE}:department"}]})
    assert r.status_code == 200 and "department" not in r.json().get(ENTERPRISE, {})
    # disable with a string boolean, then re-enable with a real one
    r = sso.scim("PATCH", f"/Users/{u['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]})
    assert r.status_code == 200 and r.json()["active"] is False
    r = sso.scim("PATCH", f"/Users/{u['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": True}]})
    assert r.status_code == 200 and r.json()["active"] is True
    # hard delete: 204, then 404
    r = sso.scim("DELETE", f"/Users/{u['id']}")
    assert r.status_code == 204 and r.content == b""
    scim_error(sso.scim("GET", f"/Users/{u['id']}"), 404)
    scim_error(sso.scim("DELETE", f"/Users/{u['id']}"), 404)


def test_pagination(sso):
    ids = []
    for i in range(5):
        r = sso.scim("POST", "/Users", okta_user(f"page{i}@example.com", f"ext-page-{i}"))
        assert r.status_code == 201
        ids.append(r.json()["id"])
    r = sso.scim("GET", "/Users", params={"count": "2"})
    total = r.json()["totalResults"]
    assert total >= 5 and r.json()["itemsPerPage"] == 2 and len(r.json()["Resources"]) == 2
    seen = []
    start = 1
    while start <= total:
        j = sso.scim("GET", "/Users", params={"startIndex": str(start), "count": "2"}).json()
        assert j["startIndex"] == start and j["totalResults"] == total
        seen += [x["id"] for x in j["Resources"]]
        start += 2
    assert len(seen) == total == len(set(seen)) and set(ids) <= set(seen)
    j = sso.scim("GET", "/Users", params={"count": "0"}).json()
    assert j["Resources"] == [] and j["itemsPerPage"] == 0


def test_groups_okta_and_entra(sso):
    a = sso.scim("POST", "/Users", okta_user("g.a@example.com", "ext-ga")).json()
    b = sso.scim("POST", "/Users", okta_user("g.b@example.com", "ext-gb")).json()
    # Entra creates the group bare, with its own extra schema
    r = sso.scim("POST", "/Groups", {"schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                                     "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "displayName": "Engineers",
                                     "meta": {"resourceType": "Group"}})
    assert r.status_code == 201, r.text
    g = r.json()
    assert g["id"].startswith("grp_") and g["members"] == [] and g["displayName"] == "Engineers"
    # Entra: add members
    r = sso.scim("PATCH", f"/Groups/{g['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": a["id"]}, {"$ref": None, "value": b["id"]}]}]})
    assert r.status_code == 200, r.text
    assert sorted(m["value"] for m in r.json()["members"]) == sorted([a["id"], b["id"]])
    # Entra: membership check and lookup without members
    r = sso.scim("GET", "/Groups", params={"filter": f'id eq "{g["id"]}" and members[value eq "{a["id"]}"]',
                                           "excludedAttributes": "members"})
    assert r.json()["totalResults"] == 1 and "members" not in r.json()["Resources"][0]
    r = sso.scim("GET", f"/Groups/{g['id']}", params={"excludedAttributes": "members"})
    assert r.status_code == 200 and "members" not in r.json()
    # Entra: remove a member with a value list; rename
    r = sso.scim("PATCH", f"/Groups/{g['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": b["id"]}]},
        {"op": "Replace", "path": "displayName", "value": "Engineers (renamed)"}]})
    assert r.status_code == 200
    assert [m["value"] for m in r.json()["members"]] == [a["id"]] and r.json()["displayName"] == "Engineers (renamed)"
    r = sso.scim("GET", "/Groups", params={"filter": f'id eq "{g["id"]}" and members[value eq "{b["id"]}"]'})
    assert r.json()["totalResults"] == 0
    # Okta: lookup by displayName, rename without a path, members add / remove by value filter
    r = sso.scim("GET", "/Groups", params={"filter": 'displayName eq "Engineers (renamed)"', "startIndex": "1",
                                           "count": "100"})
    assert [x["id"] for x in r.json()["Resources"]] == [g["id"]]
    r = sso.scim("PATCH", f"/Groups/{g['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"id": g["id"], "displayName": "Okta Engineers"}}]})
    assert r.status_code == 200 and r.json()["displayName"] == "Okta Engineers"
    r = sso.scim("PATCH", f"/Groups/{g['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": b["id"], "display": "g.b@example.com"}]},
        {"op": "remove", "path": f'members[value eq "{a["id"]}"]'}]})
    assert r.status_code == 200 and [m["value"] for m in r.json()["members"]] == [b["id"]]
    # Okta: replace all members (value object), PUT
    r = sso.scim("PATCH", f"/Groups/{g['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"members": [{"value": a["id"]}]}}]})
    assert r.status_code == 200 and [m["value"] for m in r.json()["members"]] == [a["id"]]
    r = sso.scim("PUT", f"/Groups/{g['id']}", {"schemas": [GROUP], "id": g["id"], "displayName": "Put Engineers",
                                               "members": [{"value": a["id"]}, {"value": b["id"]}]})
    assert r.status_code == 200 and len(r.json()["members"]) == 2
    # a user deleted leaves the group
    assert sso.scim("DELETE", f"/Users/{b['id']}").status_code == 204
    assert [m["value"] for m in sso.scim("GET", f"/Groups/{g['id']}").json()["members"]] == [a["id"]]
    # a member that is no user of this tenant is refused
    r = sso.scim("PATCH", f"/Groups/{g['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": "usr_doesnotexist0000000"}]}]})
    scim_error(r, 400, "invalidValue")
    assert sso.scim("DELETE", f"/Groups/{g['id']}").status_code == 204
    scim_error(sso.scim("GET", f"/Groups/{g['id']}"), 404)


def test_errors_in_scim_shape(sso):
    scim_error(sso.scim("GET", "/Users", params={"filter": 'userName co "x"'}), 400, "invalidFilter")
    scim_error(sso.scim("GET", "/Users", params={"filter": 'userName eq x'}), 400, "invalidFilter")
    scim_error(sso.scim("GET", "/Users", params={"filter": 'userName eq "x" or userName eq "y"'}), 400,
               "invalidFilter")
    scim_error(sso.scim("GET", "/Users", params={"filter": 'title eq "x"'}), 400, "invalidFilter")
    scim_error(sso.scim("GET", "/Groups", params={"filter": 'displayName eq "unterminated'}), 400, "invalidFilter")
    r = sso.scim("POST", "/Users", okta_user("dupe@example.com", "ext-dupe"))
    assert r.status_code == 201
    scim_error(sso.scim("POST", "/Users", okta_user("DUPE@example.com", "ext-dupe2")), 409, "uniqueness")
    assert sso.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Dupes"}).status_code == 201
    scim_error(sso.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "dupes"}), 409, "uniqueness")
    scim_error(sso.scim("POST", "/Users", {"schemas": [USER], "name": {"givenName": "x"}}), 400, "invalidValue")
    scim_error(sso.scim("POST", "/Users", {"schemas": [USER], "userName": "x@example.com", "active": "maybe"}), 400,
               "invalidValue")
    uid = r.json()["id"]
    scim_error(sso.scim("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [{"op": "move", "path": "x"}]}),
               400, "invalidSyntax")
    scim_error(sso.scim("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": []}), 400, "invalidSyntax")
    scim_error(sso.scim("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "id", "value": "usr_other"}]}), 400, "mutability")
    scim_error(sso.scim("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": 'emails[type eq "work"'}]}), 400, "invalidPath")
    scim_error(sso.scim("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": "userName"}]}), 400, "invalidValue")  # userName is required
    r = requests.post(f"{sso.admin_base}/scim/v2/Users", data=b"{not json",
                      headers={"Authorization": f"Bearer {sso._scim_token}", "Content-Type": SCIM_JSON}, timeout=10)
    scim_error(r, 400, "invalidSyntax")
    scim_error(sso.scim("GET", "/Users/usr_doesnotexist0000000"), 404)
    scim_error(sso.scim("GET", "/Users/not-an-id"), 404)
    # the user is unchanged by all of the refusals
    assert sso.scim("GET", f"/Users/{uid}").json()["userName"] == "dupe@example.com"


def test_authentication_and_roles(sso):
    scim_error(sso.scim("GET", "/Users", token=""), 401)
    scim_error(sso.scim("GET", "/Users", token="lk_adm_notatokenatall00000000000"), 401)
    r = requests.get(f"{sso.admin_base}/scim/v2/Users", timeout=10)
    scim_error(r, 401)
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    # an admin token is not a SCIM token, and a SCIM token is no admin token
    scim_error(sso.scim("GET", "/Users", token=sso.stack.admin_token), 403)
    r = requests.get(f"{sso.admin_base}/admin/v1/keys", headers={"Authorization": f"Bearer {sso._scim_token}"},
                     timeout=10)
    assert r.status_code == 403
    # lumkeyctl makes SCIM tokens too
    p = sso.stack.ctl("tokens", "create", "--name", "ctl-scim", "--role", "scim")
    m = re.search(r"lk_adm_[0-9A-Za-z]+", p.stdout.decode())
    assert m, "lumkeyctl printed no token"
    assert sso.scim("GET", "/Users", token=m.group(0)).status_code == 200
    # discovery documents
    r = sso.scim("GET", "/ServiceProviderConfig")
    assert r.status_code == 200 and r.json()["patch"]["supported"] is True and r.json()["filter"]["supported"]
    assert {x["id"] for x in sso.scim("GET", "/ResourceTypes").json()["Resources"]} == {"User", "Group"}
    assert len(sso.scim("GET", "/Schemas").json()["Resources"]) == 2


def test_tenant_scoping_and_audit(sso):
    s = sso.stack
    with s.db().cursor() as cur:
        cur.execute("INSERT INTO tenants (id, name) VALUES ('acme', 'Acme') ON CONFLICT DO NOTHING")
    p = s.run_tool("vault", ["--bootstrap-admin", "--tenant", "acme"])
    acme_admin = p.stdout.decode().strip().splitlines()[-1]
    r = requests.post(f"{s.admin_base}/admin/v1/tokens", json={"name": "acme-scim", "role": "scim"},
                      headers={"Authorization": f"Bearer {acme_admin}"}, timeout=10)
    assert r.status_code == 201
    acme_scim = r.json()["token"]
    mine = sso.scim("POST", "/Users", okta_user("scoped@example.com", "ext-scoped")).json()
    # the same userName in another tenant is no conflict; ids of one tenant are invisible to the other
    r = sso.scim("POST", "/Users", okta_user("scoped@example.com", "ext-scoped"), token=acme_scim)
    assert r.status_code == 201
    scim_error(sso.scim("GET", f"/Users/{mine['id']}", token=acme_scim), 404)
    scim_error(sso.scim("DELETE", f"/Users/{mine['id']}", token=acme_scim), 404)
    assert sso.scim("GET", f"/Users/{mine['id']}").status_code == 200
    r = sso.scim("GET", "/Users", params={"filter": 'userName eq "scoped@example.com"'}, token=acme_scim)
    assert [x["id"] for x in r.json()["Resources"]] == [r.json()["Resources"][0]["id"]] != [mine["id"]]
    # SCIM changes are audited with the acting token
    r = sso.scim("PATCH", f"/Users/{mine['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "displayName", "value": "Audited"}]})
    row = s.wait_audit(r.headers["x-request-id"], "admin.scim.users.patch")
    assert row["key_id"].startswith("adm_") and row["rule_id"] == mine["id"] and row["decision"] == "allow"
    # and a sign-in matches the user of the right tenant only (same userName in two tenants: refused)
    sso.add_to_group("Lumkey Admins", mine["id"])
    si = sso.sign_in({"sub": "nobody-sub", "email": "scoped@example.com"})
    assert si.callback.status_code == 403 and si.callback.json()["error"]["code"] == "ambiguous_user"
    si = sso.sign_in({"sub": "ext-scoped-not", "email": "other@example.com", "preferred_username": "x"})
    assert si.callback.status_code == 403


def test_an_identity_never_lands_in_another_tenant(sso):
    """Tenant acme's SCIM client makes a user whose externalId is the sub of a default-tenant admin:
    that admin's sign-in is refused (ambiguous), never silently placed in acme."""
    s = sso.stack
    with s.db().cursor() as cur:
        cur.execute("INSERT INTO tenants (id, name) VALUES ('other', 'Other') ON CONFLICT DO NOTHING")
    admin = s.run_tool("vault", ["--bootstrap-admin", "--tenant", "other"]).stdout.decode().strip().splitlines()[-1]
    r = requests.post(f"{s.admin_base}/admin/v1/tokens", json={"name": "other-scim", "role": "scim"},
                      headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    other_scim = r.json()["token"]
    victim = sso.provision("victim@example.com", "admin", sub="00u-victim")
    claims = {"sub": "00u-victim", "email": "victim@example.com"}
    si = sso.sign_in(claims)
    assert si.session and si.session_info().json()["tenant"] == "default"
    r = sso.scim("POST", "/Users", okta_user("squatter@other.example", "00u-victim"), token=other_scim)
    assert r.status_code == 201
    si = sso.sign_in(claims)
    assert si.callback.status_code == 403 and si.callback.json()["error"]["code"] == "ambiguous_user"
    assert si.session is None
    assert victim["id"]
