/*  test_vault_scim - vault_identity_scim: SCIM filters, PATCH on documents
 *  (Okta and Entra ID shapes), and what is derived and dropped from a User
 *  or a Group. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lk_test.h"
#include "vault_identity_scim.h"

static int parse(const char *s, scim_filter_t *f)
{
    char err[200] = "";
    int rc = scim_filter_parse(s, strlen(s), f, err, sizeof err);
    if (rc != 0) LK_CHECK(err[0] != '\0');
    return rc;
}

static void test_filters(void)
{
    scim_filter_t f;
    LK_CHECK(parse("userName eq \"bjensen@example.com\"", &f) == 0 && f.n == 1);
    LK_CHECK_STR(f.c[0].attr, "username");
    LK_CHECK(f.c[0].kind == SCIM_V_STR);
    LK_CHECK_STR(f.c[0].str, "bjensen@example.com");
    LK_CHECK(parse("  UserName   EQ \"a\\\"b\\u00e9\"  ", &f) == 0 && f.n == 1);
    LK_CHECK_STR(f.c[0].str, "a\"b\xc3\xa9");
    LK_CHECK(parse("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"x\"", &f) == 0);
    LK_CHECK_STR(f.c[0].attr, "username");
    LK_CHECK(parse("active eq false", &f) == 0 && f.c[0].kind == SCIM_V_BOOL && f.c[0].b == 0);
    LK_CHECK(parse("active eq TRUE", &f) == 0 && f.c[0].kind == SCIM_V_BOOL && f.c[0].b == 1);
    LK_CHECK(parse("externalId eq null", &f) == 0 && f.c[0].kind == SCIM_V_NULL);
    /* Entra: a value path with a sub-attribute, and a membership check */
    LK_CHECK(parse("emails[type eq \"work\"].value eq \"a@b.c\"", &f) == 0 && f.n == 1);
    LK_CHECK_STR(f.c[0].attr, "emails.value");
    LK_CHECK_STR(f.c[0].str, "a@b.c");
    LK_CHECK(parse("id eq \"grp_1\" and members[value eq \"usr_2\"]", &f) == 0 && f.n == 2);
    LK_CHECK_STR(f.c[0].attr, "id");
    LK_CHECK_STR(f.c[1].attr, "members.value");
    LK_CHECK_STR(f.c[1].str, "usr_2");
    /* refused: other operators, or, not, parentheses, unquoted values, nesting, junk */
    static const char *bad[] = {"",
                                "userName",
                                "userName eq",
                                "userName co \"x\"",
                                "userName sw \"x\"",
                                "userName pr",
                                "userName eq x",
                                "userName eq \"x\" or userName eq \"y\"",
                                "not (userName eq \"x\")",
                                "(userName eq \"x\")",
                                "userName eq \"unterminated",
                                "userName eq \"x\" junk",
                                "a[b[c eq \"d\"] eq \"e\"]",
                                "emails[type eq \"work\"",
                                "members[value eq \"a\" and display eq \"b\"]",
                                "a eq \"1\" and b eq \"2\" and c eq \"3\" and d eq \"4\" and e eq \"5\"",
                                "userName eq \"\\u0000\"",
                                "userName eq \"\\ud800\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        LK_CHECK(parse(bad[i], &f) != 0);
    char with_nul[] = "userName eq \"a\0b\"";
    char err[100];
    LK_CHECK(scim_filter_parse(with_nul, sizeof with_nul - 1, &f, err, sizeof err) != 0);
}

static json_t *doc_of(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    LK_CHECK(j != NULL);
    return j;
}

static int patch(json_t *doc, const char *body, const char **st)
{
    json_t *b = doc_of(body);
    char err[300] = "";
    const char *t = NULL;
    int rc = scim_patch_apply(doc, b, err, sizeof err, &t);
    if (rc != 0) LK_CHECK(err[0] != '\0' && t != NULL);
    if (st) *st = t;
    json_decref(b);
    return rc;
}

static void test_patch_users(void)
{
    json_t *d =
        doc_of("{\"userName\":\"a@x\",\"active\":true,\"emails\":[{\"type\":\"work\",\"value\":\"a@x\","
               "\"primary\":true}],\"name\":{\"givenName\":\"A\"}}");
    /* Okta: no path, value object */
    LK_CHECK(patch(d,
                   "{\"Operations\":[{\"op\":\"replace\",\"value\":{\"active\":false,\"id\":\"ignored\"}}]}",
                   NULL) == 0);
    LK_CHECK(json_is_false(json_object_get(d, "active")) && !json_object_get(d, "id"));
    /* Entra: capitalised, string boolean, a value-filtered path, a sub-attribute, an extension */
    LK_CHECK(patch(d,
                   "{\"Operations\":[{\"op\":\"Replace\",\"path\":\"active\",\"value\":\"True\"},"
                   "{\"op\":\"Replace\",\"path\":\"emails[type eq \\\"work\\\"].value\",\"value\":\"new@x\"},"
                   "{\"op\":\"Add\",\"path\":\"emails[type eq \\\"home\\\"].value\",\"value\":\"home@x\"},"
                   "{\"op\":\"Replace\",\"path\":\"name.familyName\",\"value\":\"F\"},"
                   "{\"op\":\"Add\",\"path\":\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:"
                   "department\",\"value\":\"Sec\"},"
                   "{\"op\":\"replace\",\"path\":\"urn:ietf:params:scim:schemas:core:2.0:User:displayName\","
                   "\"value\":\"D\"}]}",
                   NULL) == 0);
    json_t *emails = json_object_get(d, "emails");
    LK_CHECK(json_array_size(emails) == 2);
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(emails, 0), "value")), "new@x");
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(emails, 1), "type")), "home");
    LK_CHECK_STR(json_string_value(json_object_get(json_object_get(d, "name"), "familyName")), "F");
    LK_CHECK_STR(json_string_value(json_object_get(json_object_get(d, "name"), "givenName")), "A");
    LK_CHECK_STR(
        json_string_value(json_object_get(
            json_object_get(d, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"), "department")),
        "Sec");
    LK_CHECK_STR(json_string_value(json_object_get(d, "displayName")), "D");
    scim_user_t u;
    char err[200];
    LK_CHECK(scim_user_derive(d, &u, err, sizeof err) == 0);
    LK_CHECK(u.active == 1 && json_is_true(json_object_get(d, "active"))); /* "True" normalized */
    LK_CHECK_STR(u.email, "new@x");                                        /* the primary one */
    LK_CHECK_STR(u.display_name, "D");
    /* remove: a filtered element, a sub-attribute, an attribute, an absent extension */
    LK_CHECK(
        patch(d,
              "{\"Operations\":[{\"op\":\"remove\",\"path\":\"emails[type eq \\\"home\\\"]\"},"
              "{\"op\":\"remove\",\"path\":\"name.familyName\"},{\"op\":\"remove\",\"path\":\"displayName\"},"
              "{\"op\":\"remove\",\"path\":\"urn:example:ext:2.0:User:x\"}]}",
              NULL) == 0);
    LK_CHECK(json_array_size(json_object_get(d, "emails")) == 1 && !json_object_get(d, "displayName"));
    LK_CHECK(!json_object_get(json_object_get(d, "name"), "familyName"));
    /* refusals */
    const char *st;
    LK_CHECK(patch(d, "{\"Operations\":[]}", &st) != 0 && strcmp(st, "invalidSyntax") == 0);
    LK_CHECK(patch(d, "{\"operations\":{}}", &st) != 0);
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"move\",\"path\":\"a\"}]}", &st) != 0 &&
             !strcmp(st, "invalidSyntax"));
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"remove\"}]}", &st) != 0 && !strcmp(st, "noTarget"));
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"replace\",\"path\":\"id\",\"value\":\"x\"}]}", &st) != 0 &&
             !strcmp(st, "mutability"));
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"replace\",\"path\":\"a[b eq \\\"c\\\"\",\"value\":1}]}",
                   &st) != 0 &&
             !strcmp(st, "invalidPath"));
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"replace\",\"path\":\"a b\",\"value\":1}]}", &st) != 0);
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"replace\",\"path\":7,\"value\":1}]}", &st) != 0);
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"replace\",\"path\":\"a\"}]}", &st) != 0 &&
             !strcmp(st, "invalidValue"));
    LK_CHECK(patch(d, "{\"Operations\":[{\"op\":\"add\",\"value\":5}]}", &st) != 0 &&
             !strcmp(st, "invalidValue"));
    LK_CHECK(
        patch(d,
              "{\"Operations\":[{\"op\":\"replace\",\"path\":\"userName[type eq \\\"x\\\"]\",\"value\":1}]}",
              &st) != 0);
    /* derive refusals */
    json_t *bad = doc_of("{\"userName\":\"x\",\"active\":\"maybe\"}");
    LK_CHECK(scim_user_derive(bad, &u, err, sizeof err) != 0);
    json_decref(bad);
    bad = doc_of("{\"name\":{}}");
    LK_CHECK(scim_user_derive(bad, &u, err, sizeof err) != 0);
    json_decref(bad);
    bad = doc_of("{\"userName\":\"x\",\"emails\":[{\"type\":\"work\"}]}");
    LK_CHECK(scim_user_derive(bad, &u, err, sizeof err) != 0);
    json_decref(bad);
    /* never stored: password, id, meta, schemas, groups */
    json_t *okta = doc_of("{\"schemas\":[\"x\"],\"id\":\"i\",\"meta\":{},\"groups\":[],\"userName\":\"o@x\","
                          "\"password\":\"1mz050nq\",\"name\":{\"formatted\":\"F L\"}}");
    LK_CHECK(scim_user_derive(okta, &u, err, sizeof err) == 0);
    LK_CHECK(!json_object_get(okta, "password") && !json_object_get(okta, "id") &&
             !json_object_get(okta, "meta") && !json_object_get(okta, "schemas") &&
             !json_object_get(okta, "groups"));
    LK_CHECK_STR(u.display_name, "F L");
    LK_CHECK(u.active == 1 && u.external_id == NULL && strcmp(u.email, "") == 0);
    json_decref(okta);
    json_decref(d);
}

static void test_patch_groups(void)
{
    json_t *g = doc_of("{\"displayName\":\"G\",\"members\":[{\"value\":\"usr_a\"}]}");
    /* Entra add (with $ref), duplicates ignored */
    LK_CHECK(
        patch(g,
              "{\"Operations\":[{\"op\":\"Add\",\"path\":\"members\",\"value\":[{\"$ref\":null,\"value\":"
              "\"usr_b\"},{\"value\":\"usr_a\"}]}]}",
              NULL) == 0);
    scim_group_t gr;
    char err[200];
    LK_CHECK(scim_group_derive(g, &gr, err, sizeof err) == 0 && json_array_size(gr.members) == 2);
    /* Entra remove by value list; Okta remove by filter; rename both ways */
    LK_CHECK(
        patch(g,
              "{\"Operations\":[{\"op\":\"Remove\",\"path\":\"members\",\"value\":[{\"value\":\"usr_a\"}]}]}",
              NULL) == 0);
    LK_CHECK(json_array_size(json_object_get(g, "members")) == 1);
    LK_CHECK(patch(g,
                   "{\"Operations\":[{\"op\":\"add\",\"path\":\"members\",\"value\":[{\"value\":\"usr_c\"}]},"
                   "{\"op\":\"remove\",\"path\":\"members[value eq \\\"usr_b\\\"]\"},"
                   "{\"op\":\"Replace\",\"path\":\"displayName\",\"value\":\"G2\"}]}",
                   NULL) == 0);
    LK_CHECK(scim_group_derive(g, &gr, err, sizeof err) == 0 && json_array_size(gr.members) == 1);
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(gr.members, 0), "value")), "usr_c");
    LK_CHECK_STR(gr.display_name, "G2");
    LK_CHECK(patch(g,
                   "{\"Operations\":[{\"op\":\"replace\",\"value\":{\"id\":\"grp_x\",\"displayName\":\"G3\","
                   "\"members\":[{\"value\":\"usr_d\"},{\"value\":\"usr_d\"}]}}]}",
                   NULL) == 0);
    LK_CHECK(scim_group_derive(g, &gr, err, sizeof err) == 0 && json_array_size(gr.members) == 1);
    LK_CHECK_STR(gr.display_name, "G3");
    /* a member without a string value, no displayName */
    json_t *bad = doc_of("{\"displayName\":\"G\",\"members\":[{\"display\":\"x\"}]}");
    LK_CHECK(scim_group_derive(bad, &gr, err, sizeof err) != 0);
    json_decref(bad);
    bad = doc_of("{\"members\":[]}");
    LK_CHECK(scim_group_derive(bad, &gr, err, sizeof err) != 0);
    json_decref(bad);
    json_decref(g);
}

int main(void)
{
    LK_RUN(test_filters);
    LK_RUN(test_patch_users);
    LK_RUN(test_patch_groups);
    return LK_TEST_DONE();
}
