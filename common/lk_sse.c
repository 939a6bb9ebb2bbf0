/*  lk_sse - an incremental, bounded parser for server-sent events. */
#include "lk_sse.h"

#include <string.h>

void lk_sse_init(lk_sse_t *self, size_t max_event)
{
    memset(self, 0, sizeof(*self));
    lk_buf_init(&self->line, 0);
    lk_buf_init(&self->data, 0);
    self->max_event = max_event ? max_event : LK_SSE_DEFAULT_MAX_EVENT;
}

void lk_sse_free(lk_sse_t *self)
{
    lk_buf_free(&self->line);
    lk_buf_free(&self->data);
}

int lk_sse_pending(const lk_sse_t *self)
{
    return self->line.len > 0 || self->has_data || self->event_len > 0;
}

static int fail(lk_sse_t *self, const char *why)
{
    self->error = why;
    return -1;
}

static int dispatch(lk_sse_t *self, lk_sse_event_cb cb, void *ctx)
{
    int rc = 0;
    if (self->has_data)
        rc = cb(ctx, self->event, self->event_len, self->data.len ? (const char *)self->data.data : "",
                self->data.len);
    self->data.len = 0;
    self->has_data = 0;
    self->event_len = 0;
    self->event[0] = '\0';
    return rc == 0 ? 0 : fail(self, "stopped by the consumer");
}

/* Handles one complete line (without its terminator). */
static int on_line(lk_sse_t *self, const char *p, size_t n, lk_sse_event_cb cb, void *ctx)
{
    if (n == 0) return dispatch(self, cb, ctx);
    if (p[0] == ':') return 0; /* comment / keep-alive */
    const char *colon = memchr(p, ':', n);
    size_t flen = colon ? (size_t)(colon - p) : n;
    const char *val = colon ? colon + 1 : p + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (flen == 4 && memcmp(p, "data", 4) == 0) {
        if (self->data.len + vlen + 1 > self->max_event) return fail(self, "event too large");
        if (self->has_data && lk_buf_append(&self->data, "\n", 1) != 0) return fail(self, "out of memory");
        if (lk_buf_append(&self->data, val, vlen) != 0) return fail(self, "out of memory");
        self->has_data = 1;
        return 0;
    }
    if (flen == 5 && memcmp(p, "event", 5) == 0) {
        if (vlen >= sizeof self->event) return fail(self, "event name too long");
        memcpy(self->event, val, vlen);
        self->event[vlen] = '\0';
        self->event_len = vlen;
        return 0;
    }
    if ((flen == 2 && memcmp(p, "id", 2) == 0) || (flen == 5 && memcmp(p, "retry", 5) == 0)) return 0;
    return fail(self, "unexpected line in event stream");
}

int lk_sse_feed(lk_sse_t *self, const char *buf, size_t len, lk_sse_event_cb cb, void *ctx)
{
    if (self->error) return -1;
    size_t i = 0;
    if (self->last_cr && len > 0) {
        if (buf[0] == '\n') i = 1;
        self->last_cr = 0;
    }
    while (i < len) {
        /* find the next line terminator (LF, CR or CRLF) */
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j == len) {
            if (self->line.len + (len - i) > self->max_event) return fail(self, "line too long");
            if (lk_buf_append(&self->line, buf + i, len - i) != 0) return fail(self, "out of memory");
            return 0;
        }
        int rc;
        if (self->line.len) {
            if (self->line.len + (j - i) > self->max_event) return fail(self, "line too long");
            if (lk_buf_append(&self->line, buf + i, j - i) != 0) return fail(self, "out of memory");
            rc = on_line(self, (const char *)self->line.data, self->line.len, cb, ctx);
            self->line.len = 0;
        } else {
            rc = on_line(self, buf + i, j - i, cb, ctx);
        }
        if (rc != 0) return -1;
        if (buf[j] == '\r') {
            if (j + 1 < len) {
                if (buf[j + 1] == '\n') j++;
            } else {
                self->last_cr = 1;
            }
        }
        i = j + 1;
    }
    return 0;
}
