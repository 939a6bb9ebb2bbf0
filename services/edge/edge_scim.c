/*  edge_scim - SCIM answers, errors and discovery documents (see the header). */
#include "edge_scim.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_http.h"

void edge_scim_send(h2o_req_t *req, int status, const char *rid, const char *body, size_t len)
{
    static h2o_generator_t gen = {NULL, NULL};
    req->res.status = status;
    req->res.reason = edge_http_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/scim+json"));
    edge_http_add_common_headers(req, status, rid);
    if (status == 204 || !body) {
        req->res.content_length = 0;
        h2o_start_response(req, &gen);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }
    h2o_iovec_t b = h2o_strdup(&req->pool, body, len);
    req->res.content_length = b.len;
    h2o_start_response(req, &gen);
    h2o_send(req, &b, 1, H2O_SEND_STATE_FINAL);
}

void edge_scim_send_error(h2o_req_t *req, int status, const char *rid, const char *scim_type,
                          const char *detail)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    json_t *b = json_pack("{s:[s],s:s,s:s}", "schemas", "urn:ietf:params:scim:api:messages:2.0:Error",
                          "status", st, "detail", detail);
    if (b && scim_type) json_object_set_new(b, "scimType", json_string(scim_type));
    char *s = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (status == 401)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
    edge_scim_send(req, status, rid, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

static const char SPC[] =
    "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig\"],"
    "\"documentationUri\":\"https://github.com/lumkey/lumkey/blob/main/docs/sso.md\","
    "\"patch\":{\"supported\":true},\"bulk\":{\"supported\":false,\"maxOperations\":0,\"maxPayloadSize\":0},"
    "\"filter\":{\"supported\":true,\"maxResults\":200},\"changePassword\":{\"supported\":false},"
    "\"sort\":{\"supported\":false},\"etag\":{\"supported\":false},"
    "\"authenticationSchemes\":[{\"type\":\"oauthbearertoken\",\"name\":\"OAuth Bearer Token\","
    "\"description\":\"An admin token of role scim (lumkeyctl tokens create --role "
    "scim)\",\"primary\":true}],"
    "\"meta\":{\"resourceType\":\"ServiceProviderConfig\",\"location\":\"/scim/v2/ServiceProviderConfig\"}}";

static const char RT[] =
    "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:ListResponse\"],\"totalResults\":2,\"startIndex\":"
    "1,"
    "\"itemsPerPage\":2,\"Resources\":["
    "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:ResourceType\"],\"id\":\"User\",\"name\":\"User\","
    "\"endpoint\":\"/Users\",\"schema\":\"urn:ietf:params:scim:schemas:core:2.0:User\","
    "\"meta\":{\"resourceType\":\"ResourceType\",\"location\":\"/scim/v2/ResourceTypes/User\"}},"
    "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:ResourceType\"],\"id\":\"Group\",\"name\":"
    "\"Group\","
    "\"endpoint\":\"/Groups\",\"schema\":\"urn:ietf:params:scim:schemas:core:2.0:Group\","
    "\"meta\":{\"resourceType\":\"ResourceType\",\"location\":\"/scim/v2/ResourceTypes/Group\"}}]}";

static const char SCHEMAS[] =
    "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:ListResponse\"],\"totalResults\":2,\"startIndex\":"
    "1,"
    "\"itemsPerPage\":2,\"Resources\":["
    "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:Schema\"],"
    "\"id\":\"urn:ietf:params:scim:schemas:core:2.0:User\",\"name\":\"User\",\"attributes\":["
    "{\"name\":\"userName\",\"type\":\"string\",\"multiValued\":false,\"required\":true,\"caseExact\":false,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"server\"},"
    "{\"name\":\"externalId\",\"type\":\"string\",\"multiValued\":false,\"required\":false,\"caseExact\":"
    "true,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"none\"},"
    "{\"name\":\"displayName\",\"type\":\"string\",\"multiValued\":false,\"required\":false,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"none\"},"
    "{\"name\":\"emails\",\"type\":\"complex\",\"multiValued\":true,\"required\":false,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"none\"},"
    "{\"name\":\"active\",\"type\":\"boolean\",\"multiValued\":false,\"required\":false,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"none\"}],"
    "\"meta\":{\"resourceType\":\"Schema\",\"location\":\"/scim/v2/Schemas/"
    "urn:ietf:params:scim:schemas:core:2.0:"
    "User\"}},"
    "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:Schema\"],"
    "\"id\":\"urn:ietf:params:scim:schemas:core:2.0:Group\",\"name\":\"Group\",\"attributes\":["
    "{\"name\":\"displayName\",\"type\":\"string\",\"multiValued\":false,\"required\":true,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"server\"},"
    "{\"name\":\"members\",\"type\":\"complex\",\"multiValued\":true,\"required\":false,"
    "\"mutability\":\"readWrite\",\"returned\":\"default\",\"uniqueness\":\"none\"}],"
    "\"meta\":{\"resourceType\":\"Schema\",\"location\":\"/scim/v2/Schemas/"
    "urn:ietf:params:scim:schemas:core:2.0:"
    "Group\"}}]}";

int edge_scim_discovery(h2o_req_t *req, const char *rid)
{
    h2o_iovec_t p = req->path_normalized;
    const char *doc = NULL;
    size_t len = 0;
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/scim/v2/ServiceProviderConfig"))) {
        doc = SPC;
        len = sizeof SPC - 1;
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/scim/v2/ResourceTypes"))) {
        doc = RT;
        len = sizeof RT - 1;
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/scim/v2/Schemas"))) {
        doc = SCHEMAS;
        len = sizeof SCHEMAS - 1;
    }
    if (!doc) return 0;
    edge_scim_send(req, 200, rid, doc, len);
    return 1;
}
