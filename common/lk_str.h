/*  lk_str - borrowed byte strings (pointer + length).
 *
 *  An lk_str_t never owns its bytes: it points into a buffer someone else
 *  keeps alive (a received message, a request pool). Knows nothing else.
 */
#ifndef LK_STR_H
#define LK_STR_H

#include <stddef.h>
#include <string.h>

typedef struct {
    const char *ptr;
    size_t len;
} lk_str_t;

#define LK_STR_NULL   ((lk_str_t){NULL, 0})
#define LK_STR_LIT(s) ((lk_str_t){(s), sizeof(s) - 1})

static inline lk_str_t lk_str(const char *s)
{
    return (lk_str_t){s, s ? strlen(s) : 0};
}

static inline int lk_str_eq(lk_str_t a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && (n == 0 || memcmp(a.ptr, b, n) == 0);
}

static inline int lk_str_empty(lk_str_t a)
{
    return a.len == 0;
}

/* Copies s into dst (NUL-terminated, truncated to cap-1). Returns dst. */
static inline char *lk_str_copy(char *dst, size_t cap, lk_str_t s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n) memcpy(dst, s.ptr, n);
    dst[n] = '\0';
    return dst;
}

#endif
