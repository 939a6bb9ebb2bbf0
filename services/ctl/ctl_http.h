/*  ctl_http - one call to the Lumkey admin API (libcurl, blocking).
 *
 *  Sends an optional JSON body with the admin token as a Bearer header, never
 *  follows redirects (the token must not travel elsewhere), and keeps the
 *  response body in guarded memory (it may carry a new key). Transport
 *  failures are reported here, once, naming the address; HTTP errors are the
 *  caller's to explain. Knows nothing of the admin resources.
 */
#ifndef CTL_HTTP_H
#define CTL_HTTP_H

#include <stddef.h>

#include "lk_buf.h"

typedef struct {
    const char *addr;  /* base address, no trailing slash; borrowed */
    const char *token; /* admin token or NULL; borrowed, never printed */
} ctl_http_t;

typedef struct {
    long status;
    lk_buf_t body; /* secure buffer, NUL-terminated; ctl_http_response_free wipes it */
} ctl_http_response_t;

/* Process-wide libcurl setup; call once from main. */
void ctl_http_global_init(void);
void ctl_http_global_cleanup(void);

/* method + addr + path, body (JSON, may be NULL). Fills res (caller frees with
 * ctl_http_response_free even on failure). 0 if an HTTP answer came back
 * (any status), -1 if not (message already printed). */
int ctl_http_call(const ctl_http_t *self, const char *method, const char *path, const char *body,
                  size_t body_len, ctl_http_response_t *res) __attribute__((warn_unused_result));
void ctl_http_response_free(ctl_http_response_t *res);

#endif
