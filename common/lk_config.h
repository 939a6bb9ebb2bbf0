/*  lk_config - where the services find each other, and how a setting is read.
 *
 *  Every setting comes from an environment variable (LUMKEY_*) and may be
 *  overridden on the command line with the matching --flag VALUE (or
 *  --flag=VALUE). LUMKEY_CONFIG_FILE may name a file of KEY=VALUE lines with
 *  the same LUMKEY_* names (# comments, blank lines); a variable set in the
 *  environment wins over the file. Worker endpoints are resolved here so that the edge and the
 *  workers always agree:
 *
 *      LUMKEY_<SERVICE>_ENDPOINT     if set (any ZeroMQ endpoint, or a
 *                                    comma-separated list for the edge)
 *      ipc://$LUMKEY_RUN_DIR/<service>.ipc   otherwise
 *      LUMKEY_RUN_DIR                default /tmp/lumkey
 *
 *  For the edge an endpoint list may hold dns+tcp://NAME:PORT entries (every
 *  A/AAAA record of NAME, re-resolved; see edge_rpc.h). A worker binds
 *  LUMKEY_<SERVICE>_BIND if set (e.g. tcp://\*:5555 in a pod), else its
 *  LUMKEY_<SERVICE>_ENDPOINT / the ipc:// default.
 *
 *  Knows nothing of sockets or databases.
 */
#ifndef LK_CONFIG_H
#define LK_CONFIG_H

#include <stddef.h>

#define LK_CONFIG_DEFAULT_RUN_DIR "/tmp/lumkey"

/* The endpoint of a worker service ("policy", "vault", "approval", "audit":
 * any lower-case [a-z0-9_] name) into out. 0 / -1 (bad name, does not fit). */
int lk_config_endpoint(const char *service, char *out, size_t cap) __attribute__((warn_unused_result));

/* Reads LUMKEY_CONFIG_FILE (if set) into the environment, without
 * overriding variables already set. Only LUMKEY_* and LK_LOG_LEVEL keys are
 * accepted. Runs once; later calls return 0. 0 / -1 (logged, without the
 * offending line: it may hold a secret). */
int lk_config_load_file(void) __attribute__((warn_unused_result));

/* LUMKEY_RUN_DIR or its default into out. 0 / -1 (does not fit). */
int lk_config_run_dir(char *out, size_t cap) __attribute__((warn_unused_result));

/* A setting: "--flag VALUE" / "--flag=VALUE" in argv wins, then the
 * environment variable env (if non-empty), then dflt. flag and env may be
 * NULL. Returns a borrowed pointer (into argv, environ or dflt). */
const char *lk_config_get(int argc, char **argv, const char *flag, const char *env, const char *dflt);

/* Whether "--flag" appears in argv (a switch without a value). */
int lk_config_has(int argc, char **argv, const char *flag);

/* A positive integer setting (same lookup as lk_config_get). 0 / -1 (not a
 * number in [1, max]: logged). */
int lk_config_get_int(int argc, char **argv, const char *flag, const char *env, long dflt, long max,
                      long *out) __attribute__((warn_unused_result));

/* Checks that every argument is known: with_value lists the flags that take a
 * value, switches those that do not (both NULL-terminated, without "--").
 * 0 / -1 (the first unknown or incomplete argument is logged). */
int lk_config_check_args(int argc, char **argv, const char *const *with_value, const char *const *switches)
    __attribute__((warn_unused_result));

/* The settings every worker reads:
 *     --endpoint / LUMKEY_<SERVICE>_BIND / LUMKEY_<SERVICE>_ENDPOINT
 *                                            (else the ipc:// default)
 *     --health                               a switch: ping the own endpoint
 *                                            and exit (lk_worker_health)
 *     --db / LUMKEY_DB                       libpq conninfo (required)
 *     LUMKEY_DB_WAIT_MS                      wait for the database at start (10000)
 *     LUMKEY_DB_STATEMENT_TIMEOUT_MS         per statement (5000)
 * argv may also hold the service's own flags (extra_*, NULL-terminated or
 * NULL). 0 / -1 (logged). */
typedef struct {
    char endpoint[512];
    const char *db; /* borrowed from argv / environ */
    int db_wait_ms;
    int statement_timeout_ms;
    int health; /* --health was given */
} lk_config_worker_t;

int lk_config_worker(lk_config_worker_t *cfg, const char *service, int argc, char **argv,
                     const char *const *extra_with_value, const char *const *extra_switches)
    __attribute__((warn_unused_result));

/* Where a worker binds: --endpoint, else LUMKEY_<SERVICE>_BIND, else
 * lk_config_endpoint (which must then be a single endpoint). 0 / -1 (logged). */
int lk_config_bind(const char *service, int argc, char **argv, char *out, size_t cap)
    __attribute__((warn_unused_result));

/* For an ipc:// endpoint: creates its directory (mode 0700, parents too) if
 * missing. Other transports: nothing to do. 0 / -1 (logged). */
int lk_config_prepare_endpoint(const char *endpoint) __attribute__((warn_unused_result));

#endif
