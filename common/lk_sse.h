/*  lk_sse - an incremental, bounded parser for server-sent events.
 *
 *  Feed it bytes as they arrive from an upstream, in any split; it calls back
 *  once per complete event (blank-line terminated) with the event name and
 *  the joined data lines. Strict where providers are strict: a line whose
 *  field is not one of data / event / id / retry (or a ":" comment) is
 *  malformed, and so is an event larger than the configured bound.
 *  Knows nothing of JSON or of what the events mean.
 */
#ifndef LK_SSE_H
#define LK_SSE_H

#include <stddef.h>

#include "lk_buf.h"

#define LK_SSE_DEFAULT_MAX_EVENT (1u << 20)

/* Returns 0 to go on, -1 to stop parsing (lk_sse_feed then returns -1). */
typedef int (*lk_sse_event_cb)(void *ctx, const char *event, size_t event_len, const char *data,
                               size_t data_len);

typedef struct {
    lk_buf_t line;  /* current partial line */
    lk_buf_t data;  /* data lines of the current event, joined with \n */
    char event[64]; /* event name of the current event */
    size_t event_len;
    int has_data; /* a data field was seen in the current event */
    int last_cr;  /* previous chunk ended in CR: swallow a following LF */
    size_t max_event;
    const char *error; /* why parsing stopped, static string */
} lk_sse_t;

void lk_sse_init(lk_sse_t *self, size_t max_event);
/* 0 / -1 (malformed, oversize, or the callback stopped). self->error says why. */
int lk_sse_feed(lk_sse_t *self, const char *buf, size_t len, lk_sse_event_cb cb, void *ctx)
    __attribute__((warn_unused_result));
/* Whether bytes of an unfinished event are buffered (a stream that ends now was cut). */
int lk_sse_pending(const lk_sse_t *self);
void lk_sse_free(lk_sse_t *self);

#endif
