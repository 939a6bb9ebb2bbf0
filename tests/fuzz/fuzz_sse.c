/*  fuzz_sse - the SSE parser on arbitrary bytes, fed in arbitrary splits. */
#include <stddef.h>
#include <stdint.h>

#include "lk_sse.h"

static int on_event(void *ctx, const char *event, size_t event_len, const char *data, size_t data_len)
{
    volatile size_t sink = event_len + data_len;
    (void)sink;
    if (event_len) (void)event[event_len - 1];
    if (data_len) (void)data[data_len - 1];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    /* the first byte chooses the split size */
    size_t step = (size_t)data[0] % 17 + 1;
    lk_sse_t p;
    lk_sse_init(&p, 4096);
    for (size_t i = 1; i < size; i += step) {
        size_t n = size - i < step ? size - i : step;
        if (lk_sse_feed(&p, (const char *)data + i, n, on_event, NULL) != 0) break;
    }
    (void)lk_sse_pending(&p);
    lk_sse_free(&p);
    return 0;
}
