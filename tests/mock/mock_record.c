/*  mock_record - the last N requests lumkey-mock received, for test hooks. */
#include "mock_record.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static struct {
    pthread_mutex_t lock;
    mock_sb_t *ring; /* capacity entries; base NULL when empty */
    size_t capacity;
    size_t head; /* index of the oldest entry */
    size_t count;
} rec = {.lock = PTHREAD_MUTEX_INITIALIZER};

int mock_record_init(size_t capacity)
{
    rec.capacity = capacity;
    if (capacity == 0) return 0;
    rec.ring = calloc(capacity, sizeof(*rec.ring));
    return rec.ring ? 0 : -1;
}

static void add_header(mock_sb_t *sb, const h2o_headers_t *headers, size_t i, int *first)
{
    const h2o_iovec_t *name = headers->entries[i].name;
    for (size_t j = 0; j < i; j++) /* a repeated name was written with its first occurrence */
        if (h2o_memis(headers->entries[j].name->base, headers->entries[j].name->len, name->base, name->len))
            return;
    if (!*first) MOCK_SB_LIT(sb, ",");
    *first = 0;
    mock_sb_json_str(sb, name->base, name->len);
    MOCK_SB_LIT(sb, ":");
    /* join repeated headers the HTTP way: "a, b" */
    size_t total = 0, n = 0;
    for (size_t j = i; j < headers->size; j++)
        if (h2o_memis(headers->entries[j].name->base, headers->entries[j].name->len, name->base, name->len))
            total += headers->entries[j].value.len + 2, n++;
    if (n == 1) {
        mock_sb_json_str(sb, headers->entries[i].value.base, headers->entries[i].value.len);
        return;
    }
    mock_sb_t joined;
    mock_sb_init(&joined, NULL, total);
    for (size_t j = i; j < headers->size; j++) {
        if (!h2o_memis(headers->entries[j].name->base, headers->entries[j].name->len, name->base, name->len))
            continue;
        if (joined.len) MOCK_SB_LIT(&joined, ", ");
        mock_sb_add(&joined, headers->entries[j].value.base, headers->entries[j].value.len);
    }
    mock_sb_json_str(sb, joined.base, joined.len);
    free(joined.base);
}

void mock_record_add(h2o_req_t *req)
{
    if (rec.capacity == 0) return;
    mock_sb_t sb;
    mock_sb_init(&sb, NULL, 256 + req->entity.len + req->path.len);
    MOCK_SB_LIT(&sb, "{\"method\":");
    mock_sb_json_str(&sb, req->method.base, req->method.len);
    MOCK_SB_LIT(&sb, ",\"path\":");
    mock_sb_json_str(&sb, req->path.base, req->path.len);
    MOCK_SB_LIT(&sb, ",\"headers\":{");
    int first = 1;
    /* h2o keeps Host and Content-Length out of req->headers */
    if (req->authority.len) {
        MOCK_SB_LIT(&sb, "\"host\":");
        mock_sb_json_str(&sb, req->authority.base, req->authority.len);
        first = 0;
    }
    if (req->entity.base) {
        if (!first) MOCK_SB_LIT(&sb, ",");
        MOCK_SB_LIT(&sb, "\"content-length\":\"");
        mock_sb_u64(&sb, req->entity.len);
        MOCK_SB_LIT(&sb, "\"");
        first = 0;
    }
    for (size_t i = 0; i < req->headers.size; i++)
        add_header(&sb, &req->headers, i, &first);
    MOCK_SB_LIT(&sb, "},\"body\":");
    mock_sb_json_str(&sb, req->entity.base ? req->entity.base : "", req->entity.len);
    MOCK_SB_LIT(&sb, "}");

    char *evicted = NULL;
    pthread_mutex_lock(&rec.lock);
    size_t slot;
    if (rec.count == rec.capacity) {
        slot = rec.head;
        evicted = rec.ring[slot].base;
        rec.head = (rec.head + 1) % rec.capacity;
    } else {
        slot = (rec.head + rec.count) % rec.capacity;
        rec.count++;
    }
    rec.ring[slot] = sb;
    pthread_mutex_unlock(&rec.lock);
    free(evicted);
}

void mock_record_dump(mock_sb_t *sb)
{
    MOCK_SB_LIT(sb, "{\"data\":[");
    pthread_mutex_lock(&rec.lock);
    for (size_t i = 0; i < rec.count; i++) {
        const mock_sb_t *e = &rec.ring[(rec.head + i) % rec.capacity];
        if (i) MOCK_SB_LIT(sb, ",");
        mock_sb_add(sb, e->base, e->len);
    }
    pthread_mutex_unlock(&rec.lock);
    MOCK_SB_LIT(sb, "]}");
}

void mock_record_clear(void)
{
    pthread_mutex_lock(&rec.lock);
    for (size_t i = 0; i < rec.count; i++) {
        mock_sb_t *e = &rec.ring[(rec.head + i) % rec.capacity];
        free(e->base);
        e->base = NULL;
    }
    rec.head = rec.count = 0;
    pthread_mutex_unlock(&rec.lock);
}

void mock_record_free(void)
{
    mock_record_clear();
    free(rec.ring);
    rec.ring = NULL;
    rec.capacity = 0;
}
