/*  ctl - what the lumkeyctl command modules share: the parsed command line
 *  and the admin call helpers of lumkeyctl.c. Knows nothing of HTTP details
 *  (ctl_http) or output formats (ctl_out).
 */
#ifndef CTL_H
#define CTL_H

#include <stddef.h>

#include <jansson.h>

#include "ctl_http.h"
#include "ctl_out.h"
#include "lk_buf.h"

#define CTL_DEFAULT_ADDR "http://127.0.0.1:8081"
#define CTL_MAX_OPTS     64
#define CTL_MAX_SECRET   (64u << 10)

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

typedef struct {
    const char *name; /* without the leading "--" */
    const char *value;
} opt_t;

typedef struct {
    const char *words[8]; /* command words, e.g. "keys", "create" */
    size_t nwords;
    opt_t opts[CTL_MAX_OPTS];
    size_t nopts;
    char addr[1024];
    int json;
    lk_buf_t token; /* secure, NUL-terminated; empty: none */
} ctl_t;

/* Prints "lumkeyctl: ..." and the usage hint; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last value of --name, or NULL. */
const char *opt(const ctl_t *c, const char *name);
/* EXIT_OK if every option is global or in allowed (NULL-terminated, may be NULL). */
int check_opts(const ctl_t *c, const char *const *allowed);
/* Loads the admin token (LUMKEY_TOKEN / --token-file). An exit code. */
int load_token(ctl_t *c);
/* One admin call; on success *out is the parsed body (caller decrefs). An exit code. */
int admin_call(ctl_t *c, const char *method, const char *path, json_t *req, ctl_http_response_t *res,
               json_t **out);
void print_raw(const ctl_http_response_t *res);
/* words[2] checked as prefix + alphanumerics; NULL after a usage message. */
const char *object_id(const ctl_t *c, const char *prefix);
/* GET path and show its data array as a table (or raw with --format json). */
int cmd_list(ctl_t *c, const char *path, const ctl_column_t *cols, size_t ncols);
/* One call on one object, shown as fields (or raw). */
int object_call(ctl_t *c, const char *method, const char *path, json_t *req, const char *const *fields);

/* `lumkeyctl holds ...` (ctl_holds.c). b: the subcommand word or NULL. */
int ctl_holds(ctl_t *c, const char *b);
/* `lumkeyctl hdp issuers ...` (ctl_hdp.c). b: the second word or NULL. */
int ctl_hdp(ctl_t *c, const char *b);

#endif
