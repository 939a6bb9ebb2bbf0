/*  test_sse - the incremental SSE parser: splits, terminators, bounds, strictness. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_sse.h"
#include "lk_test.h"

typedef struct {
    char log[4096];
    int n;
} sink_t;

static int on_event(void *ctx, const char *event, size_t event_len, const char *data, size_t data_len)
{
    sink_t *s = ctx;
    size_t used = strlen(s->log);
    snprintf(s->log + used, sizeof s->log - used, "[%.*s|%.*s]", (int)event_len, event, (int)data_len, data);
    s->n++;
    return 0;
}

static const char STREAM[] = "data: {\"a\":1}\n\n"
                             ": keep-alive\n\n"
                             "event: message_start\r\ndata: {\"b\":2}\r\n\r\n"
                             "id: 7\nretry: 10\ndata: line1\ndata: line2\n\n"
                             "data: [DONE]\n\n";
static const char EXPECT[] = "[|{\"a\":1}][message_start|{\"b\":2}][|line1\nline2][|[DONE]]";

static void whole_stream(void)
{
    sink_t s = {{0}, 0};
    lk_sse_t p;
    lk_sse_init(&p, 0);
    LK_CHECK(lk_sse_feed(&p, STREAM, sizeof STREAM - 1, on_event, &s) == 0);
    LK_CHECK_STR(s.log, EXPECT);
    LK_CHECK(s.n == 4);
    LK_CHECK(!lk_sse_pending(&p));
    lk_sse_free(&p);
}

/* Every way of cutting the stream into two or three pieces gives the same events. */
static void every_split(void)
{
    size_t n = sizeof STREAM - 1;
    int bad = 0;
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j += 7) {
            sink_t s = {{0}, 0};
            lk_sse_t p;
            lk_sse_init(&p, 0);
            int rc = lk_sse_feed(&p, STREAM, i, on_event, &s) |
                     lk_sse_feed(&p, STREAM + i, j - i, on_event, &s) |
                     lk_sse_feed(&p, STREAM + j, n - j, on_event, &s);
            if (rc != 0 || strcmp(s.log, EXPECT) != 0) bad++;
            lk_sse_free(&p);
        }
    }
    LK_CHECK(bad == 0);
}

static void byte_by_byte_crlf(void)
{
    const char crlf[] = "data: x\r\n\r\ndata: y\r\r";
    sink_t s = {{0}, 0};
    lk_sse_t p;
    lk_sse_init(&p, 0);
    for (size_t i = 0; i < sizeof crlf - 1; i++)
        LK_CHECK(lk_sse_feed(&p, crlf + i, 1, on_event, &s) == 0);
    LK_CHECK_STR(s.log, "[|x][|y]");
    lk_sse_free(&p);
}

static void truncated_is_pending(void)
{
    sink_t s = {{0}, 0};
    lk_sse_t p;
    lk_sse_init(&p, 0);
    LK_CHECK(lk_sse_feed(&p, "data: {\"partial\":", 17, on_event, &s) == 0);
    LK_CHECK(s.n == 0);
    LK_CHECK(lk_sse_pending(&p));
    lk_sse_free(&p);
    lk_sse_init(&p, 0);
    LK_CHECK(lk_sse_feed(&p, "data: {}\n", 9, on_event, &s) == 0); /* no blank line yet */
    LK_CHECK(s.n == 0);
    LK_CHECK(lk_sse_pending(&p));
    lk_sse_free(&p);
}

static void strict_and_bounded(void)
{
    sink_t s = {{0}, 0};
    lk_sse_t p;
    lk_sse_init(&p, 0);
    LK_CHECK(lk_sse_feed(&p, "garbage line\n\n", 14, on_event, &s) == -1);
    LK_CHECK(p.error != NULL);
    LK_CHECK(lk_sse_feed(&p, "data: {}\n\n", 10, on_event, &s) == -1); /* stays failed */
    lk_sse_free(&p);

    lk_sse_init(&p, 64);
    char big[200];
    memset(big, 'a', sizeof big);
    memcpy(big, "data: ", 6);
    LK_CHECK(lk_sse_feed(&p, big, sizeof big, on_event, &s) == -1);
    lk_sse_free(&p);

    lk_sse_init(&p, 64);
    int rc = 0;
    for (int i = 0; i < 20 && rc == 0; i++)
        rc = lk_sse_feed(&p, "data: 0123456789\n", 17, on_event, &s);
    LK_CHECK(rc == -1); /* many data lines add up past the bound */
    lk_sse_free(&p);

    lk_sse_init(&p, 0);
    char name[200] = "event: ";
    memset(name + 7, 'e', 150);
    strcpy(name + 157, "\n");
    LK_CHECK(lk_sse_feed(&p, name, strlen(name), on_event, &s) == -1);
    lk_sse_free(&p);
}

static int stop_cb(void *ctx, const char *e, size_t el, const char *d, size_t dl)
{
    return -1;
}

static void consumer_can_stop(void)
{
    lk_sse_t p;
    lk_sse_init(&p, 0);
    LK_CHECK(lk_sse_feed(&p, "data: 1\n\n", 9, stop_cb, NULL) == -1);
    lk_sse_free(&p);
}

int main(void)
{
    LK_RUN(whole_stream);
    LK_RUN(every_split);
    LK_RUN(byte_by_byte_crlf);
    LK_RUN(truncated_is_pending);
    LK_RUN(strict_and_bounded);
    LK_RUN(consumer_can_stop);
    return LK_TEST_DONE();
}
