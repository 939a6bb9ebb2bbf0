/*  mock_sb - an append-only byte string for building response bodies.
 *
 *  Lives in an h2o request pool (nothing to free: the pool goes with the
 *  request) or, with pool == NULL, on the heap (caller frees base). Knows how
 *  to write JSON string literals; knows nothing of HTTP or of what it builds.
 *
 *      mock_sb_t sb;
 *      mock_sb_init(&sb, &req->pool, 512);
 *      MOCK_SB_LIT(&sb, "{\"model\":");
 *      mock_sb_json_str(&sb, model, model_len);
 *
 *  Out of memory aborts (this is a test tool; h2o's own pool does the same).
 */
#ifndef MOCK_SB_H
#define MOCK_SB_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

typedef struct {
    char *base;
    size_t len;
    size_t cap;
    h2o_mem_pool_t *pool; /* NULL: heap, caller frees base */
} mock_sb_t;

void mock_sb_init(mock_sb_t *sb, h2o_mem_pool_t *pool, size_t cap);
/* Empties the string, keeps the memory. */
void mock_sb_reset(mock_sb_t *sb);
void mock_sb_add(mock_sb_t *sb, const void *s, size_t n);
void mock_sb_u64(mock_sb_t *sb, uint64_t v);
/* Appends s[0..n) as a quoted JSON string. Bytes that are not valid UTF-8
 * become U+FFFD, so the output is always valid JSON. */
void mock_sb_json_str(mock_sb_t *sb, const char *s, size_t n);
#define MOCK_SB_LIT(sb, lit) mock_sb_add((sb), (lit), sizeof(lit) - 1)

/* Length of the valid UTF-8 sequence starting at s (1..4), 0 if invalid. */
size_t mock_utf8_seq(const unsigned char *s, size_t n);

#endif
