/*  lk_log - JSON log lines, one object per line.
 *
 *  On stderr until lk_log_to_stdout() is called: a service switches when it
 *  starts serving (lk_worker_new, the edge's main), so that container logs
 *  arrive on stdout, while CLI modes (--bootstrap-admin prints a token on
 *  stdout, --health, --curve-keygen, migrations) keep stdout for their output.
 *
 *  {"ts":"...","level":"info","svc":"edge","rid":"...","msg":"..."}
 *  Messages are escaped; never pass a secret (keys, credentials, tokens) to
 *  any of these functions. Knows nothing of the services.
 */
#ifndef LK_LOG_H
#define LK_LOG_H

typedef enum { LK_LOG_DEBUG = 0, LK_LOG_INFO, LK_LOG_WARN, LK_LOG_ERROR } lk_log_level_t;

/* Sets the service name and minimum level (LK_LOG_LEVEL env: debug|info|warn|error). */
void lk_log_init(const char *service);
void lk_log_set_level(lk_log_level_t level);

/* From now on, log lines go to stdout (line-buffered). */
void lk_log_to_stdout(void);

/* rid may be NULL. */
void lk_log(lk_log_level_t level, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define lk_log_debug(...) lk_log(LK_LOG_DEBUG, NULL, __VA_ARGS__)
#define lk_log_info(...)  lk_log(LK_LOG_INFO, NULL, __VA_ARGS__)
#define lk_log_warn(...)  lk_log(LK_LOG_WARN, NULL, __VA_ARGS__)
#define lk_log_error(...) lk_log(LK_LOG_ERROR, NULL, __VA_ARGS__)

#endif
