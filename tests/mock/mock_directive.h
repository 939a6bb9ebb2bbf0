/*  mock_directive - per-request behaviour switches for lumkey-mock.
 *
 *  Tests drive the mock through the gateway (which forwards the JSON body
 *  untouched) by writing, anywhere in a message content string,
 *
 *      [[mock chunks=5 interval_ms=100 tool=get_weather]]
 *
 *  or, when talking to the mock directly, a request header
 *
 *      x-mock: status=429 latency_ms=50
 *
 *  Later settings override earlier ones. Unknown keys and out-of-range values
 *  are errors (the mock answers 400), so a typo never silently passes.
 *  Knows nothing of HTTP or JSON: it reads bytes and fills a struct.
 */
#ifndef MOCK_DIRECTIVE_H
#define MOCK_DIRECTIVE_H

#include <stddef.h>

#define MOCK_MAX_CHUNKS    100000
#define MOCK_MAX_MS        600000
#define MOCK_MAX_BYTES     (16u << 20)
#define MOCK_MAX_TOOL_NAME 64

typedef struct {
    int chunks;       /* content (or tool-argument) pieces in a stream */
    int interval_ms;  /* pause between stream events */
    int latency_ms;   /* pause before the response starts */
    int status;       /* 0: normal answer; else answer this HTTP status with an error body */
    const char *tool; /* tool name to call, borrowed from the scanned text; NULL: none */
    size_t tool_len;
    int echo;                 /* content = the last user message */
    int malformed_sse;        /* garbage after the first stream event */
    int close_after;          /* -1: off; else cut the stream after this many events */
    long bytes;               /* -1: off; else content of exactly this many bytes */
    int hang;                 /* never answer */
    const char *status_model; /* status and hang apply only when the request's model is this */
    size_t status_model_len;
} mock_directive_t;

/* Drops d->status and d->hang when status_model is set and the request's model differs. */
void mock_directive_for_model(mock_directive_t *d, const char *model, size_t n);

/* Fills d with "nothing requested" and the given server defaults. */
void mock_directive_init(mock_directive_t *d, int chunks, int interval_ms, int latency_ms);

/* Applies "k=v k=v ..." from s[0..n). 0, or -1 with a reason in err. */
int mock_directive_apply(mock_directive_t *d, const char *s, size_t n, char *err, size_t errcap)
    __attribute__((warn_unused_result));

/* Applies every "[[mock ...]]" found in text[0..n), in order. 0 / -1 as above. */
int mock_directive_scan(mock_directive_t *d, const char *text, size_t n, char *err, size_t errcap)
    __attribute__((warn_unused_result));

#endif
