/*  vault_identity_scim - SCIM filters, PATCH and resource checks (see the header). */
#include "vault_identity_scim.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void set_err(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && cap) vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static int is_attr_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == ':' || c == '_' || c == '$' || c == '-';
}

/* Removes a core-schema URN prefix ("urn:...:core:2.0:User:") from a lower-cased name. */
static const char *strip_core_urn(const char *a)
{
    static const char *const pre[] = {"urn:ietf:params:scim:schemas:core:2.0:user:",
                                      "urn:ietf:params:scim:schemas:core:2.0:group:"};
    for (size_t i = 0; i < 2; i++)
        if (strncmp(a, pre[i], strlen(pre[i])) == 0) return a + strlen(pre[i]);
    return a;
}

/* --------------------------------------------------------------- filter -- */

typedef struct {
    const char *p, *end;
} cur_t;

static void skip_ws(cur_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int word_is(cur_t *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || strncasecmp(c->p, w, n) != 0) return 0;
    if (c->p + n < c->end && is_attr_char(c->p[n])) return 0;
    c->p += n;
    return 1;
}

/* A JSON string literal into out (UTF-8; \uXXXX for the BMP). */
static int parse_string(cur_t *c, char *out, size_t cap)
{
    size_t n = 0;
    if (c->p >= c->end || *c->p != '"') return -1;
    c->p++;
    while (c->p < c->end && *c->p != '"') {
        unsigned ch = (unsigned char)*c->p++;
        if (ch < 0x20) return -1;
        if (ch == '\\') {
            if (c->p >= c->end) return -1;
            char e = *c->p++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                ch = (unsigned)e;
                break;
            case 'b':
                ch = '\b';
                break;
            case 'f':
                ch = '\f';
                break;
            case 'n':
                ch = '\n';
                break;
            case 'r':
                ch = '\r';
                break;
            case 't':
                ch = '\t';
                break;
            case 'u': {
                if (c->end - c->p < 4) return -1;
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    char h = *c->p++;
                    v <<= 4;
                    if (h >= '0' && h <= '9')
                        v |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f')
                        v |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F')
                        v |= (unsigned)(h - 'A' + 10);
                    else
                        return -1;
                }
                if (v == 0 || (v >= 0xd800 && v <= 0xdfff)) return -1;
                char u[3];
                size_t k;
                if (v < 0x80) {
                    u[0] = (char)v;
                    k = 1;
                } else if (v < 0x800) {
                    u[0] = (char)(0xc0 | (v >> 6));
                    u[1] = (char)(0x80 | (v & 0x3f));
                    k = 2;
                } else {
                    u[0] = (char)(0xe0 | (v >> 12));
                    u[1] = (char)(0x80 | ((v >> 6) & 0x3f));
                    u[2] = (char)(0x80 | (v & 0x3f));
                    k = 3;
                }
                if (n + k >= cap) return -1;
                memcpy(out + n, u, k);
                n += k;
                continue;
            }
            default:
                return -1;
            }
        }
        if (n + 1 >= cap) return -1;
        out[n++] = (char)ch;
    }
    if (c->p >= c->end) return -1;
    c->p++;
    out[n] = '\0';
    return 0;
}

static int parse_conj_d(cur_t *c, scim_filter_t *out, int bracket, int depth, char *err, size_t cap);

static int parse_cmp(cur_t *c, scim_cmp_t *cmp, int depth, char *err, size_t cap)
{
    skip_ws(c);
    const char *a = c->p;
    while (c->p < c->end && is_attr_char(*c->p))
        c->p++;
    size_t al = (size_t)(c->p - a);
    char name[160];
    if (al == 0 || al >= sizeof name) {
        set_err(err, cap, "The filter must start with an attribute name.");
        return -1;
    }
    for (size_t i = 0; i < al; i++)
        name[i] = (char)tolower((unsigned char)a[i]);
    name[al] = '\0';
    const char *bare = strip_core_urn(name);
    if (strlen(bare) >= sizeof cmp->attr || !*bare) {
        set_err(err, cap, "Unsupported filter attribute.");
        return -1;
    }
    snprintf(cmp->attr, sizeof cmp->attr, "%s", bare);
    if (c->p < c->end && *c->p == '[') {
        /* a value path: emails[type eq "work"].value eq "x" (the inner filter narrows which email; we
         * compare against every email), or members[value eq "id"] (a filter of its own) */
        if (depth > 0) {
            set_err(err, cap, "Value filters do not nest.");
            return -1;
        }
        scim_filter_t inner;
        c->p++;
        if (parse_conj_d(c, &inner, 1, 1, err, cap) != 0) return -1;
        if (c->p >= c->end || *c->p != ']') {
            set_err(err, cap, "A value filter is not closed.");
            return -1;
        }
        c->p++;
        if (c->p < c->end && *c->p == '.') {
            const char *sb = ++c->p;
            while (c->p < c->end && is_attr_char(*c->p) && *c->p != '.' && *c->p != ':')
                c->p++;
            size_t sl = (size_t)(c->p - sb);
            if (sl == 0 || strlen(cmp->attr) + 1 + sl >= sizeof cmp->attr) {
                set_err(err, cap, "Unsupported filter attribute.");
                return -1;
            }
            size_t n = strlen(cmp->attr);
            cmp->attr[n] = '.';
            for (size_t i = 0; i < sl; i++)
                cmp->attr[n + 1 + i] = (char)tolower((unsigned char)sb[i]);
            cmp->attr[n + 1 + sl] = '\0';
        } else {
            if (inner.n != 1 || strlen(cmp->attr) + 1 + strlen(inner.c[0].attr) >= sizeof cmp->attr) {
                set_err(err, cap, "A value filter here must be a single comparison.");
                return -1;
            }
            char full[sizeof cmp->attr];
            size_t n = strlen(cmp->attr), m = strlen(inner.c[0].attr); /* n + 1 + m < sizeof full: checked */
            memcpy(full, cmp->attr, n);
            full[n] = '.';
            memcpy(full + n + 1, inner.c[0].attr, m + 1);
            *cmp = inner.c[0];
            memcpy(cmp->attr, full, n + m + 2);
            return 0;
        }
    }
    skip_ws(c);
    if (!word_is(c, "eq")) {
        set_err(err, cap, "Only the `eq` operator is supported in filters.");
        return -1;
    }
    skip_ws(c);
    if (c->p < c->end && *c->p == '"') {
        cmp->kind = SCIM_V_STR;
        if (parse_string(c, cmp->str, sizeof cmp->str) != 0) {
            set_err(err, cap, "The filter value must be a JSON string of at most %d bytes.", SCIM_VALUE_MAX);
            return -1;
        }
    } else if (word_is(c, "true")) {
        cmp->kind = SCIM_V_BOOL;
        cmp->b = 1;
    } else if (word_is(c, "false")) {
        cmp->kind = SCIM_V_BOOL;
        cmp->b = 0;
    } else if (word_is(c, "null")) {
        cmp->kind = SCIM_V_NULL;
    } else {
        set_err(err, cap, "The filter value must be a quoted string, true, false or null.");
        return -1;
    }
    return 0;
}

/* Comparisons joined by "and", up to the end or a closing bracket (when bracket). */
static int parse_conj_d(cur_t *c, scim_filter_t *out, int bracket, int depth, char *err, size_t cap)
{
    out->n = 0;
    for (;;) {
        if (out->n == SCIM_FILTER_MAX) {
            set_err(err, cap, "At most %d comparisons per filter.", SCIM_FILTER_MAX);
            return -1;
        }
        if (parse_cmp(c, &out->c[out->n], depth, err, cap) != 0) return -1;
        out->n++;
        skip_ws(c);
        if (c->p == c->end || (bracket && *c->p == ']')) return 0;
        if (!word_is(c, "and")) {
            set_err(err, cap, "Filters may join comparisons with `and` only.");
            return -1;
        }
    }
}

static int parse_conj(cur_t *c, scim_filter_t *out, int bracket, char *err, size_t cap)
{
    return parse_conj_d(c, out, bracket, 0, err, cap);
}

int scim_filter_parse(const char *s, size_t len, scim_filter_t *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    if (!s || len == 0 || len > 4096) {
        set_err(err, cap, "The filter is empty or too long.");
        return -1;
    }
    cur_t c = {s, s + len};
    if (memchr(s, '\0', len)) {
        set_err(err, cap, "The filter holds a NUL byte.");
        return -1;
    }
    return parse_conj(&c, out, 0, err, cap);
}

/* ---------------------------------------------------------------- patch -- */

/* The key of obj equal to name ignoring case, or NULL. */
static const char *obj_key(const json_t *obj, const char *name)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj)) return NULL;
    json_object_foreach((json_t *)obj, k, v)
    {
        (void)v;
        if (strcasecmp(k, name) == 0) return k;
    }
    return NULL;
}

static json_t *obj_get(const json_t *obj, const char *name)
{
    const char *k = obj_key(obj, name);
    return k ? json_object_get(obj, k) : NULL;
}

/* Sets obj[name] keeping an existing key's spelling. */
static int obj_set(json_t *obj, const char *name, json_t *v)
{
    const char *k = obj_key(obj, name);
    return json_object_set_new(obj, k ? k : name, v);
}

static void obj_del(json_t *obj, const char *name)
{
    const char *k = obj_key(obj, name);
    if (k) json_object_del(obj, k);
}

static int cmp_match(const json_t *elem, const scim_filter_t *f)
{
    for (int i = 0; i < f->n; i++) {
        const json_t *v = obj_get(elem, f->c[i].attr);
        switch (f->c[i].kind) {
        case SCIM_V_STR:
            if (!json_is_string(v) || strcasecmp(json_string_value(v), f->c[i].str) != 0) return 0;
            break;
        case SCIM_V_BOOL:
            if (!json_is_boolean(v) || json_is_true(v) != f->c[i].b) return 0;
            break;
        case SCIM_V_NULL:
            if (v && !json_is_null(v)) return 0;
            break;
        }
    }
    return 1;
}

typedef struct {
    json_t *container; /* the object holding attr (doc, or an extension object) */
    char attr[128];
    int has_filter;
    scim_filter_t filter;
    char sub[64];
} path_t;

static int parse_path(json_t *doc, const char *path, int create, path_t *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    out->container = doc;
    size_t len = strlen(path);
    if (len == 0 || len > 512) {
        set_err(err, cap, "The PATCH path is empty or too long.");
        return -1;
    }
    const char *p = path;
    if (strncasecmp(p, "urn:", 4) == 0) {
        /* urn:...:Schema:attr - the attribute follows the last ':' before any '[' */
        const char *br = strchr(p, '[');
        const char *stop = br ? br : p + len;
        const char *colon = NULL;
        for (const char *q = p; q < stop; q++)
            if (*q == ':') colon = q;
        if (!colon) {
            set_err(err, cap, "The PATCH path is not a valid attribute path.");
            return -1;
        }
        size_t ul = (size_t)(colon - p);
        char urn[256];
        if (ul >= sizeof urn) {
            set_err(err, cap, "The PATCH path's schema URN is too long.");
            return -1;
        }
        memcpy(urn, p, ul);
        urn[ul] = '\0';
        if (strcasecmp(urn, SCIM_URN_USER) != 0 && strcasecmp(urn, SCIM_URN_GROUP) != 0) {
            json_t *ext = obj_get(doc, urn);
            if (!json_is_object(ext)) {
                if (!create) {
                    out->container = NULL;
                } else {
                    ext = json_object();
                    obj_set(doc, urn, ext);
                }
            }
            if (out->container) out->container = ext;
        }
        p = colon + 1;
    }
    const char *a = p;
    while (*p && *p != '[' && *p != '.')
        p++;
    size_t al = (size_t)(p - a);
    if (al == 0 || al >= sizeof out->attr) {
        set_err(err, cap, "The PATCH path is not a valid attribute path.");
        return -1;
    }
    memcpy(out->attr, a, al);
    for (size_t i = 0; i < al; i++)
        if (!is_attr_char(a[i]) || a[i] == ':') {
            set_err(err, cap, "The PATCH path is not a valid attribute path.");
            return -1;
        }
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close) {
            set_err(err, cap, "The PATCH path's value filter is not closed.");
            return -1;
        }
        cur_t c = {p + 1, close};
        if (parse_conj_d(&c, &out->filter, 1, 1, err, cap) != 0) return -1;
        skip_ws(&c);
        if (c.p != close) {
            set_err(err, cap, "The PATCH path's value filter is malformed.");
            return -1;
        }
        out->has_filter = 1;
        p = close + 1;
    }
    if (*p == '.') {
        p++;
        size_t sl = strlen(p);
        if (sl == 0 || sl >= sizeof out->sub) {
            set_err(err, cap, "The PATCH path's sub-attribute is not valid.");
            return -1;
        }
        for (size_t i = 0; i < sl; i++)
            if (!is_attr_char(p[i]) || p[i] == ':' || p[i] == '.') {
                set_err(err, cap, "The PATCH path's sub-attribute is not valid.");
                return -1;
            }
        memcpy(out->sub, p, sl);
    } else if (*p) {
        set_err(err, cap, "The PATCH path is not a valid attribute path.");
        return -1;
    }
    return 0;
}

static int immutable_attr(const char *a)
{
    return strcasecmp(a, "id") == 0 || strcasecmp(a, "meta") == 0 || strcasecmp(a, "schemas") == 0;
}

/* Equal elements of a multi-valued attribute: same "value" (or same JSON). */
static int same_elem(const json_t *a, const json_t *b)
{
    const json_t *va = obj_get(a, "value"), *vb = obj_get(b, "value");
    if (json_is_string(va) && json_is_string(vb))
        return strcmp(json_string_value(va), json_string_value(vb)) == 0;
    return json_equal((json_t *)a, (json_t *)b);
}

static void array_add_unique(json_t *arr, json_t *v)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) if (same_elem(e, v)) return;
    json_array_append(arr, v);
}

/* One operation: op is "add", "replace" or "remove" (lower case). */
static int apply_one(json_t *doc, const char *op, const char *path, json_t *value, char *err, size_t cap,
                     const char **st)
{
    if (!path) { /* the value is an object of attributes */
        if (strcmp(op, "remove") == 0) {
            *st = "noTarget";
            set_err(err, cap, "A remove operation needs a path.");
            return -1;
        }
        if (!json_is_object(value)) {
            *st = "invalidValue";
            set_err(err, cap, "An operation without a path needs an object value.");
            return -1;
        }
        const char *k;
        json_t *v;
        json_object_foreach(value, k, v)
        {
            if (immutable_attr(k)) continue; /* Okta repeats id / schemas: ignored */
            if (strncasecmp(k, "urn:", 4) == 0 && json_is_object(v)) {
                /* an extension (or the core schema) given as an object: its attributes one by one */
                const char *k2;
                json_t *v2;
                json_object_foreach(v, k2, v2)
                {
                    char p2[512];
                    snprintf(p2, sizeof p2, "%s:%s", k, k2);
                    if (apply_one(doc, op, p2, v2, err, cap, st) != 0) return -1;
                }
                continue;
            }
            if (strlen(k) > 128 || apply_one(doc, op, k, v, err, cap, st) != 0) {
                if (strlen(k) > 128) {
                    *st = "invalidPath";
                    set_err(err, cap, "An attribute name is too long.");
                }
                return -1;
            }
        }
        return 0;
    }
    path_t pt;
    if (parse_path(doc, path, strcmp(op, "remove") != 0, &pt, err, cap) != 0) {
        *st = "invalidPath";
        return -1;
    }
    if (immutable_attr(pt.attr) && pt.container == doc) {
        *st = "mutability";
        set_err(err, cap, "The attributes id, meta and schemas cannot be changed.");
        return -1;
    }
    if (!pt.container) return 0; /* removing from an absent extension: nothing to do */
    json_t *cur = obj_get(pt.container, pt.attr);
    if (strcmp(op, "remove") == 0) {
        if (!pt.has_filter) {
            if (json_is_array(cur) && json_is_array(value) && !pt.sub[0]) { /* Entra: remove these members */
                size_t i;
                json_t *v;
                json_array_foreach(value, i, v)
                {
                    for (size_t j = json_array_size(cur); j-- > 0;)
                        if (same_elem(json_array_get(cur, j), v)) json_array_remove(cur, j);
                }
            } else if (pt.sub[0]) {
                if (json_is_object(cur)) obj_del(cur, pt.sub);
            } else {
                obj_del(pt.container, pt.attr);
            }
            return 0;
        }
        if (!json_is_array(cur)) return 0;
        for (size_t j = json_array_size(cur); j-- > 0;) {
            json_t *e = json_array_get(cur, j);
            if (!cmp_match(e, &pt.filter)) continue;
            if (pt.sub[0])
                obj_del(e, pt.sub);
            else
                json_array_remove(cur, j);
        }
        return 0;
    }
    if (!value) {
        *st = "invalidValue";
        set_err(err, cap, "An %s operation needs a value.", op);
        return -1;
    }
    int add = strcmp(op, "add") == 0;
    if (pt.has_filter) { /* emails[type eq "work"].value = v: set on the matching elements, else append one */
        if (!cur || json_is_null(cur)) {
            cur = json_array();
            obj_set(pt.container, pt.attr, cur);
        }
        if (!json_is_array(cur)) {
            *st = "invalidPath";
            set_err(err, cap, "A value filter applies to multi-valued attributes only.");
            return -1;
        }
        int matched = 0;
        size_t i;
        json_t *e;
        json_array_foreach(cur, i, e)
        {
            if (!json_is_object(e) || !cmp_match(e, &pt.filter)) continue;
            matched = 1;
            if (pt.sub[0])
                obj_set(e, pt.sub, json_deep_copy(value));
            else if (json_is_object(value))
                json_object_update(e, value);
        }
        if (!matched) {
            json_t *n = json_object();
            for (int k = 0; k < pt.filter.n; k++) {
                const scim_cmp_t *c = &pt.filter.c[k];
                json_object_set_new(n, c->attr,
                                    c->kind == SCIM_V_STR    ? json_string(c->str)
                                    : c->kind == SCIM_V_BOOL ? json_boolean(c->b)
                                                             : json_null());
            }
            if (pt.sub[0])
                obj_set(n, pt.sub, json_deep_copy(value));
            else if (json_is_object(value))
                json_object_update(n, value);
            json_array_append_new(cur, n);
        }
        return 0;
    }
    if (pt.sub[0]) { /* name.givenName */
        if (!json_is_object(cur)) {
            cur = json_object();
            obj_set(pt.container, pt.attr, cur);
        }
        obj_set(cur, pt.sub, json_deep_copy(value));
        return 0;
    }
    if (add && json_is_array(cur)) { /* add to a multi-valued attribute: append (no duplicates) */
        if (json_is_array(value)) {
            size_t i;
            json_t *v;
            json_array_foreach(value, i, v) array_add_unique(cur, v);
        } else {
            array_add_unique(cur, value);
        }
        return 0;
    }
    if (add && json_is_object(cur) && json_is_object(value)) {
        json_object_update(cur, value);
        return 0;
    }
    obj_set(pt.container, pt.attr, json_deep_copy(value));
    return 0;
}

int scim_patch_apply(json_t *doc, const json_t *body, char *err, size_t cap, const char **scim_type)
{
    const char *st_dummy;
    const char **st = scim_type ? scim_type : &st_dummy;
    *st = "invalidSyntax";
    json_t *ops = obj_get(body, "Operations");
    if (!json_is_object(doc) || !json_is_array(ops) || json_array_size(ops) == 0 ||
        json_array_size(ops) > SCIM_PATCH_OPS) {
        set_err(err, cap, "A PATCH body needs `Operations`: an array of 1 to %d operations.", SCIM_PATCH_OPS);
        return -1;
    }
    size_t i;
    json_t *o;
    json_array_foreach(ops, i, o)
    {
        json_t *jop = obj_get(o, "op"), *jpath = obj_get(o, "path"), *val = obj_get(o, "value");
        if (!json_is_string(jop)) {
            set_err(err, cap, "Operation %zu has no `op`.", i + 1);
            return -1;
        }
        const char *op = json_string_value(jop);
        const char *norm = strcasecmp(op, "add") == 0       ? "add"
                           : strcasecmp(op, "replace") == 0 ? "replace"
                           : strcasecmp(op, "remove") == 0  ? "remove"
                                                            : NULL;
        if (!norm) {
            set_err(err, cap, "Operation %zu: `op` must be add, replace or remove.", i + 1);
            return -1;
        }
        if (jpath && !json_is_null(jpath) && !json_is_string(jpath)) {
            *st = "invalidPath";
            set_err(err, cap, "Operation %zu: `path` must be a string.", i + 1);
            return -1;
        }
        const char *path =
            json_is_string(jpath) && json_string_length(jpath) ? json_string_value(jpath) : NULL;
        if (apply_one(doc, norm, path, val, err, cap, st) != 0) return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- derive -- */

static int opt_string(json_t *doc, const char *name, size_t max, const char **out, char *err, size_t cap)
{
    json_t *v = obj_get(doc, name);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || json_string_length(v) > max) {
        set_err(err, cap, "`%s` must be a string of at most %zu bytes.", name, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static void drop_readonly(json_t *doc)
{
    static const char *const drop[] = {"id", "meta", "schemas", "password", "groups"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        obj_del(doc, drop[i]);
}

int scim_user_derive(json_t *doc, scim_user_t *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(doc)) {
        set_err(err, cap, "A User must be a JSON object.");
        return -1;
    }
    drop_readonly(doc);
    if (opt_string(doc, "userName", SCIM_NAME_MAX, &out->user_name, err, cap) != 0) return -1;
    if (!out->user_name || !*out->user_name) {
        set_err(err, cap, "`userName` is required.");
        return -1;
    }
    if (opt_string(doc, "externalId", SCIM_NAME_MAX, &out->external_id, err, cap) != 0 ||
        opt_string(doc, "displayName", SCIM_NAME_MAX, &out->display_name, err, cap) != 0)
        return -1;
    if (!out->display_name) {
        json_t *name = obj_get(doc, "name");
        const char *f = NULL;
        if (json_is_object(name) && opt_string(name, "formatted", SCIM_NAME_MAX, &f, err, cap) == 0 && f)
            out->display_name = f;
    }
    if (!out->display_name) out->display_name = "";
    json_t *emails = obj_get(doc, "emails");
    out->email = "";
    if (emails && !json_is_null(emails)) {
        if (!json_is_array(emails)) {
            set_err(err, cap, "`emails` must be an array.");
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach(emails, i, e)
        {
            json_t *v = obj_get(e, "value");
            if (!json_is_string(v) || json_string_length(v) > SCIM_NAME_MAX) {
                set_err(err, cap, "Every email needs a string `value` of at most %d bytes.", SCIM_NAME_MAX);
                return -1;
            }
            json_t *primary = obj_get(e, "primary");
            int is_primary = json_is_true(primary) ||
                             (json_is_string(primary) && strcasecmp(json_string_value(primary), "true") == 0);
            if (!*out->email || is_primary) out->email = json_string_value(v);
        }
    }
    json_t *act = obj_get(doc, "active");
    out->active = 1;
    if (act && !json_is_null(act)) {
        if (json_is_boolean(act))
            out->active = json_is_true(act);
        else if (json_is_string(act) && strcasecmp(json_string_value(act), "true") == 0)
            out->active = 1;
        else if (json_is_string(act) && strcasecmp(json_string_value(act), "false") == 0)
            out->active = 0;
        else {
            set_err(err, cap, "`active` must be a boolean.");
            return -1;
        }
    }
    obj_set(doc, "active", json_boolean(out->active));
    return 0;
}

int scim_group_derive(json_t *doc, scim_group_t *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(doc)) {
        set_err(err, cap, "A Group must be a JSON object.");
        return -1;
    }
    drop_readonly(doc);
    if (opt_string(doc, "displayName", SCIM_NAME_MAX, &out->display_name, err, cap) != 0) return -1;
    if (!out->display_name || !*out->display_name) {
        set_err(err, cap, "`displayName` is required.");
        return -1;
    }
    if (opt_string(doc, "externalId", SCIM_NAME_MAX, &out->external_id, err, cap) != 0) return -1;
    json_t *m = obj_get(doc, "members");
    json_t *norm = json_array();
    if (m && !json_is_null(m)) {
        if (!json_is_array(m)) {
            json_decref(norm);
            set_err(err, cap, "`members` must be an array.");
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach(m, i, e)
        {
            json_t *v = obj_get(e, "value");
            if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 64) {
                json_decref(norm);
                set_err(err, cap, "Every member needs a string `value` (a User id).");
                return -1;
            }
            json_t *n = json_pack("{s:O}", "value", v);
            array_add_unique(norm, n);
            json_decref(n);
        }
    }
    if (json_array_size(norm) > 10000) {
        json_decref(norm);
        set_err(err, cap, "A group has at most 10000 members.");
        return -1;
    }
    obj_del(doc, "members");
    json_object_set_new(doc, "members", norm);
    out->members = norm;
    /* displayName / externalId may have been re-read by obj_del: fetch again */
    opt_string(doc, "displayName", SCIM_NAME_MAX, &out->display_name, err, cap);
    opt_string(doc, "externalId", SCIM_NAME_MAX, &out->external_id, err, cap);
    return 0;
}
