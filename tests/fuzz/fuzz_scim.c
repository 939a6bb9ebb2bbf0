/*  fuzz_scim - vault_identity_scim on arbitrary bytes. First byte % 3 == 0:
 *  the rest is a filter; 1: a PATCH body applied to a fixed User document,
 *  then derived; 2: the same on a fixed Group. Never crashes or leaks; what
 *  parses stays within the documented bounds; a derived User has a userName
 *  and a boolean `active`, and never keeps a password. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vault_identity_scim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    char err[300];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] % 3 == 0) {
        scim_filter_t f;
        if (scim_filter_parse(s, n, &f, err, sizeof err) == 0) {
            if (f.n < 1 || f.n > SCIM_FILTER_MAX) abort();
            for (int i = 0; i < f.n; i++)
                if (!f.c[i].attr[0] || strlen(f.c[i].str) > SCIM_VALUE_MAX) abort();
        } else if (!err[0]) {
            abort();
        }
        return 0;
    }
    json_t *body = json_loadb(s, n, 0, NULL);
    if (!body) return 0;
    int user = data[0] % 3 == 1;
    json_t *doc = json_loads(user ? "{\"userName\":\"a@x\",\"active\":true,\"emails\":[{\"type\":\"work\","
                                    "\"value\":\"a@x\",\"primary\":true}],\"name\":{\"givenName\":\"A\"}}"
                                  : "{\"displayName\":\"G\",\"members\":[{\"value\":\"usr_a\"}]}",
                             0, NULL);
    const char *st = NULL;
    if (scim_patch_apply(doc, body, err, sizeof err, &st) == 0) {
        if (user) {
            scim_user_t u;
            if (scim_user_derive(doc, &u, err, sizeof err) == 0) {
                if (!u.user_name || !u.user_name[0] || !json_is_boolean(json_object_get(doc, "active")) ||
                    json_object_get(doc, "password"))
                    abort();
            }
        } else {
            scim_group_t g;
            if (scim_group_derive(doc, &g, err, sizeof err) == 0 && !json_is_array(g.members)) abort();
        }
    } else if (!st || !err[0]) {
        abort();
    }
    json_decref(doc);
    json_decref(body);
    return 0;
}
