/*  vault_identity_scim - the pure part of SCIM 2.0 (RFC 7644): filters,
 *  PATCH operations on a resource document, and what the vault stores of a
 *  User or a Group.
 *
 *  Filters: one or more `attr eq value` comparisons joined by `and` (the
 *  shapes Okta and Microsoft Entra ID send: `userName eq "x"`,
 *  `externalId eq "x"`, `displayName eq "x"`, `members[value eq "x"]` in
 *  paths); anything else is refused (invalidFilter), never guessed.
 *  PATCH: `Operations` with add / replace / remove in any letter case, with
 *  or without a path, paths with a value filter (`emails[type eq "work"].value`,
 *  `members[value eq "id"]`) and URN-qualified attributes; string booleans
 *  ("True"/"False", as Entra sends) are accepted for `active`.
 *  Pure: no database, no I/O; jansson documents in and out. Fuzzed by
 *  tests/fuzz/fuzz_scim.c.
 */
#ifndef VAULT_IDENTITY_SCIM_H
#define VAULT_IDENTITY_SCIM_H

#include <jansson.h>
#include <stddef.h>

#define SCIM_FILTER_MAX 4
#define SCIM_VALUE_MAX  512
#define SCIM_PATCH_OPS  100
#define SCIM_NAME_MAX   256
#define SCIM_URN_USER   "urn:ietf:params:scim:schemas:core:2.0:User"
#define SCIM_URN_GROUP  "urn:ietf:params:scim:schemas:core:2.0:Group"
#define SCIM_URN_LIST   "urn:ietf:params:scim:api:messages:2.0:ListResponse"
#define SCIM_URN_PATCH  "urn:ietf:params:scim:api:messages:2.0:PatchOp"
#define SCIM_URN_ERROR  "urn:ietf:params:scim:api:messages:2.0:Error"

typedef enum { SCIM_V_STR = 0, SCIM_V_BOOL, SCIM_V_NULL } scim_vkind_t;

typedef struct {
    char attr[64]; /* lower case, core-schema URN removed: "username", "emails.value", "members.value" */
    scim_vkind_t kind;
    char str[SCIM_VALUE_MAX + 1];
    int b;
} scim_cmp_t;

typedef struct {
    int n;
    scim_cmp_t c[SCIM_FILTER_MAX];
} scim_filter_t;

/* Parses a filter expression. 0, or -1 with a message (no input quoted) in err. */
int scim_filter_parse(const char *s, size_t len, scim_filter_t *out, char *err, size_t cap);

/* Applies the PATCH body ({"Operations":[...]}) to doc (a User or Group
 * resource, modified in place). 0, or -1 with err and *scim_type set
 * ("invalidSyntax", "invalidPath", "invalidValue", "noTarget", "mutability"). */
int scim_patch_apply(json_t *doc, const json_t *body, char *err, size_t cap, const char **scim_type);

/* What the vault stores of a User, derived from (and normalizing) its document:
 * `active` becomes a JSON boolean, `password`, `id`, `meta`, `schemas` and
 * `groups` are dropped (never stored). Pointers borrow from doc. */
typedef struct {
    const char *user_name;
    const char *external_id; /* NULL if absent */
    const char *display_name;
    const char *email;
    int active;
} scim_user_t;
int scim_user_derive(json_t *doc, scim_user_t *out, char *err, size_t cap);

/* Same for a Group: displayName, externalId, members (array of objects with a
 * string "value", normalized to [{"value":...}], duplicates removed). */
typedef struct {
    const char *display_name;
    const char *external_id;
    json_t *members; /* borrowed from doc */
} scim_group_t;
int scim_group_derive(json_t *doc, scim_group_t *out, char *err, size_t cap);

#endif
