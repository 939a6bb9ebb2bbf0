/*  ctl_out - how lumkeyctl shows server objects. */
#include "ctl_out.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CELL_MAX 512

void ctl_out_json_free(void *p)
{
    json_free_t release;
    json_get_alloc_funcs(NULL, &release);
    release(p);
}

json_t *ctl_out_get(json_t *obj, const char *path)
{
    const char *dot = strchr(path, '.');
    if (dot == NULL) return json_object_get(obj, path);
    char head[64];
    size_t n = (size_t)(dot - path);
    if (n >= sizeof(head)) return NULL;
    memcpy(head, path, n);
    head[n] = '\0';
    return json_object_get(json_object_get(obj, head), dot + 1);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Replaces control characters (terminal escapes, newlines) in place. */
static void sanitize(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
}

void ctl_out_format(char *buf, size_t cap, const char *field, json_t *v)
{
    buf[0] = '\0';
    if (v == NULL || json_is_null(v)) {
        snprintf(buf, cap, "%s", field && ends_with(field, "expires_at") ? "never" : "-");
    } else if (json_is_string(v)) {
        snprintf(buf, cap, "%s", json_string_value(v));
    } else if (json_is_integer(v) && field && ends_with(field, "_at")) {
        time_t t = (time_t)json_integer_value(v);
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
            snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_array(v)) {
        size_t i, at = 0;
        json_t *e;
        if (json_array_size(v) == 0) snprintf(buf, cap, "-");
        json_array_foreach(v, i, e)
        {
            char one[CELL_MAX];
            ctl_out_format(one, sizeof(one), NULL, e);
            int w = snprintf(buf + at, cap - at, "%s%s", i ? "," : "", one);
            if (w < 0 || (size_t)w >= cap - at) break;
            at += (size_t)w;
        }
    } else if (json_is_object(v) && json_object_size(v) == 0) {
        snprintf(buf, cap, "-");
    } else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(buf, cap, "%s", s ? s : "?");
        ctl_out_json_free(s);
    }
    sanitize(buf);
}

void ctl_out_safe(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, out);
}

/* Display width: UTF-8 code points (good enough for names and ids). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80) w++;
    return w;
}

static void pad(FILE *out, const char *s, size_t w, int last)
{
    fputs(s, out);
    if (!last)
        for (size_t n = width(s); n < w + 2; n++)
            fputc(' ', out);
}

void ctl_out_table(FILE *out, const ctl_column_t *cols, size_t ncols, json_t *rows)
{
    size_t nrows = json_array_size(rows);
    char *cells = calloc((nrows + 1) * ncols, CELL_MAX);
    size_t *w = calloc(ncols, sizeof(size_t));
    if (cells == NULL || w == NULL) {
        fprintf(stderr, "lumkeyctl: out of memory\n");
        goto cleanup;
    }
#define CELL(r, c) (cells + ((r)*ncols + (c)) * CELL_MAX)
    for (size_t c = 0; c < ncols; c++) {
        snprintf(CELL(0, c), CELL_MAX, "%s", cols[c].title);
        w[c] = width(CELL(0, c));
    }
    for (size_t r = 0; r < nrows; r++) {
        json_t *row = json_array_get(rows, r);
        for (size_t c = 0; c < ncols; c++) {
            ctl_out_format(CELL(r + 1, c), CELL_MAX, cols[c].field, ctl_out_get(row, cols[c].field));
            if (width(CELL(r + 1, c)) > w[c]) w[c] = width(CELL(r + 1, c));
        }
    }
    for (size_t r = 0; r <= nrows; r++) {
        for (size_t c = 0; c < ncols; c++)
            pad(out, CELL(r, c), w[c], c + 1 == ncols);
        fputc('\n', out);
    }
#undef CELL
cleanup:
    free(cells);
    free(w);
}

static int listed(const char *name, const char *const *names)
{
    for (; names && *names; names++)
        if (strcmp(*names, name) == 0) return 1;
    return 0;
}

static void kv(FILE *out, const char *key, const char *field, json_t *v, size_t kw)
{
    char buf[CELL_MAX * 2];
    ctl_out_format(buf, sizeof(buf), field, v);
    pad(out, key, kw, 0);
    fprintf(out, "%s\n", buf);
}

/* Collects the keys to show, in order: fields first, then the rest. */
static size_t collect(json_t *obj, const char *const *fields, const char *const *skip, const char **keys,
                      size_t cap)
{
    size_t n = 0;
    for (const char *const *f = fields; f && *f && n < cap; f++)
        if (json_object_get(obj, *f)) keys[n++] = *f;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (n < cap && !listed(k, fields) && !listed(k, skip)) keys[n++] = k;
    }
    return n;
}

void ctl_out_object(FILE *out, json_t *obj, const char *const *fields, const char *const *skip)
{
    const char *keys[64];
    size_t n = collect(obj, fields, skip, keys, 64), kw = 5; /* "Value" */
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(obj, keys[i]);
        if (json_is_object(v)) {
            const char *k;
            json_t *sub;
            json_object_foreach(v, k, sub)
            {
                if (strlen(keys[i]) + 1 + strlen(k) > kw) kw = strlen(keys[i]) + 1 + strlen(k);
            }
        } else if (strlen(keys[i]) > kw) {
            kw = strlen(keys[i]);
        }
    }
    pad(out, "Key", kw, 0);
    fputs("Value\n", out);
    pad(out, "---", kw, 0);
    fputs("-----\n", out);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(obj, keys[i]);
        if (!json_is_object(v) || json_object_size(v) == 0 || strcmp(keys[i], "metadata") == 0) {
            char safe[128];
            snprintf(safe, sizeof(safe), "%s", keys[i]);
            sanitize(safe);
            kv(out, safe, keys[i], v, kw);
            continue;
        }
        const char *k;
        json_t *sub;
        json_object_foreach(v, k, sub)
        {
            char name[128];
            snprintf(name, sizeof(name), "%s.%s", keys[i], k);
            sanitize(name);
            kv(out, name, k, sub, kw);
        }
    }
}
