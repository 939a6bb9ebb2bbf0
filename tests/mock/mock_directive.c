/*  mock_directive - per-request behaviour switches for lumkey-mock. */
#include "mock_directive.h"

#include <stdio.h>
#include <string.h>

void mock_directive_init(mock_directive_t *d, int chunks, int interval_ms, int latency_ms)
{
    memset(d, 0, sizeof(*d));
    d->chunks = chunks;
    d->interval_ms = interval_ms;
    d->latency_ms = latency_ms;
    d->close_after = -1;
    d->bytes = -1;
}

/* Parses a decimal in [lo, hi]. 0 / -1. */
static int parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    if (n == 0 || n > 10) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int valid_tool_name(const char *s, size_t n)
{
    if (n == 0 || n > MOCK_MAX_TOOL_NAME) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && memcmp(k, name, kn) == 0;
}

static int apply_one(mock_directive_t *d, const char *k, size_t kn, const char *v, size_t vn, char *err,
                     size_t errcap)
{
    long x;
    struct {
        const char *name;
        long lo, hi;
        int *slot;
    } ints[] = {
        {"chunks", 1, MOCK_MAX_CHUNKS, &d->chunks},
        {"interval_ms", 0, MOCK_MAX_MS, &d->interval_ms},
        {"latency_ms", 0, MOCK_MAX_MS, &d->latency_ms},
        {"status", 100, 599, &d->status},
        {"echo", 0, 1, &d->echo},
        {"malformed_sse", 0, 1, &d->malformed_sse},
        {"close_after", 0, MOCK_MAX_CHUNKS, &d->close_after},
        {"hang", 0, 1, &d->hang},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (!key_is(k, kn, ints[i].name)) continue;
        if (parse_num(v, vn, ints[i].lo, ints[i].hi, &x) != 0) {
            snprintf(err, errcap, "mock directive %s: expected an integer in [%ld, %ld]", ints[i].name,
                     ints[i].lo, ints[i].hi);
            return -1;
        }
        *ints[i].slot = (int)x;
        return 0;
    }
    if (key_is(k, kn, "bytes")) {
        if (parse_num(v, vn, 0, MOCK_MAX_BYTES, &x) != 0) {
            snprintf(err, errcap, "mock directive bytes: expected an integer in [0, %u]", MOCK_MAX_BYTES);
            return -1;
        }
        d->bytes = x;
        return 0;
    }
    if (key_is(k, kn, "status_model")) {
        if (!valid_tool_name(v, vn)) {
            snprintf(err, errcap, "mock directive status_model: expected a model name [A-Za-z0-9_.-]");
            return -1;
        }
        d->status_model = v;
        d->status_model_len = vn;
        return 0;
    }
    if (key_is(k, kn, "tool")) {
        if (!valid_tool_name(v, vn)) {
            snprintf(err, errcap, "mock directive tool: expected a name of 1-%d chars [A-Za-z0-9_.-]",
                     MOCK_MAX_TOOL_NAME);
            return -1;
        }
        d->tool = v;
        d->tool_len = vn;
        return 0;
    }
    snprintf(err, errcap, "unknown mock directive '%.*s'", kn > 32 ? 32 : (int)kn, k);
    return -1;
}

void mock_directive_for_model(mock_directive_t *d, const char *model, size_t n)
{
    if (d->status_model && !(d->status_model_len == n && memcmp(d->status_model, model, n) == 0))
        d->status = d->hang = 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == ',' || c == '\n' || c == '\r';
}

int mock_directive_apply(mock_directive_t *d, const char *s, size_t n, char *err, size_t errcap)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && is_space(s[i]))
            i++;
        if (i == n) break;
        size_t start = i;
        while (i < n && !is_space(s[i]))
            i++;
        const char *eq = memchr(s + start, '=', i - start);
        if (eq == NULL) {
            snprintf(err, errcap, "mock directive '%.*s' is not key=value",
                     i - start > 32 ? 32 : (int)(i - start), s + start);
            return -1;
        }
        size_t kn = (size_t)(eq - (s + start));
        if (apply_one(d, s + start, kn, eq + 1, i - start - kn - 1, err, errcap) != 0) return -1;
    }
    return 0;
}

int mock_directive_scan(mock_directive_t *d, const char *text, size_t n, char *err, size_t errcap)
{
    static const char open[] = "[[mock";
    const char *p = text, *end = text + n;
    while ((size_t)(end - p) >= sizeof(open) - 1) {
        const char *hit = memmem(p, (size_t)(end - p), open, sizeof(open) - 1);
        if (hit == NULL) break;
        const char *args = hit + sizeof(open) - 1;
        /* "[[mockery" is not a directive: require "]]" or whitespace next */
        if (args < end && !is_space(*args) && *args != ']') {
            p = args;
            continue;
        }
        const char *close = memmem(args, (size_t)(end - args), "]]", 2);
        if (close == NULL) {
            snprintf(err, errcap, "unterminated [[mock ...]] directive");
            return -1;
        }
        if (mock_directive_apply(d, args, (size_t)(close - args), err, errcap) != 0) return -1;
        p = close + 2;
    }
    return 0;
}
