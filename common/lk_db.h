/*  lk_db - one PostgreSQL connection for a worker: connect with backoff,
 *  reconnect after the server went away, prepared statements by name, and
 *  outcomes a handler can map to the protocol.
 *
 *      lk_db_t *db = lk_db_new(conninfo, "lumkey-policy", 5000);
 *      lk_db_prepare(db, "key_by_hash", "SELECT ... WHERE hash = $1");
 *      (void)lk_db_connect(db, 10000);       // waits up to 10 s at start
 *      ...
 *      lk_db_params_t p; lk_db_params_init(&p);
 *      lk_db_param_bytes(&p, hash, 32);
 *      PGresult *res = NULL;
 *      lk_db_rc_t rc = lk_db_exec(db, "key_by_hash", &p, &res);
 *      if (rc != LK_DB_OK) -> ERROR lk_db_status(rc)   (database unavailable, ...)
 *      else if (PQntuples(res) == 0) -> not found
 *      PQclear(res);
 *
 *  A lost connection is noticed by the call that fails; the connection is
 *  re-established at once and a statement run outside a transaction is
 *  retried once (so such statements must be idempotent). While the server
 *  stays away, calls fail fast with LK_DB_UNAVAILABLE and a reconnect is
 *  attempted at most every backoff interval (100 ms doubling to 2 s).
 *  Statements are prepared lazily on each connection, so a worker started
 *  before the migrations ran recovers by itself.
 *
 *  Parameters are sent as raw bytes (binary format) for text and bytea, so
 *  strings need no NUL terminator; write the SQL with casts ($1::text,
 *  $2::bytea, $3::bigint). Results come back in text format.
 *
 *  Logs connection changes and failed statements (SQLSTATE and primary
 *  message only: never parameters, never the conninfo). Knows nothing of the
 *  services' tables.
 */
#ifndef LK_DB_H
#define LK_DB_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "lk_proto.h"
#include "lk_str.h"

#define LK_DB_MAX_PARAMS     48
#define LK_DB_MAX_STATEMENTS 48

typedef struct lk_db lk_db_t;

typedef enum {
    LK_DB_OK = 0,
    LK_DB_UNAVAILABLE = -1, /* no connection, server went away, timeout, not migrated: retry later */
    LK_DB_CONFLICT = -2,    /* unique violation */
    LK_DB_BAD_INPUT = -3,   /* the server refused a value (invalid UTF-8, uuid, number) */
    LK_DB_ERROR = -4,       /* anything else: a bug */
} lk_db_rc_t;

typedef struct {
    int n;
    int overflow;
    const char *values[LK_DB_MAX_PARAMS];
    int lengths[LK_DB_MAX_PARAMS];
    int formats[LK_DB_MAX_PARAMS];
    char num[LK_DB_MAX_PARAMS][24];
} lk_db_params_t;

void lk_db_params_init(lk_db_params_t *p);
/* Borrowed until the statement ran. */
void lk_db_param_str(lk_db_params_t *p, lk_str_t s);
void lk_db_param_cstr(lk_db_params_t *p, const char *s);
void lk_db_param_bytes(lk_db_params_t *p, const void *data, size_t len);
void lk_db_param_i64(lk_db_params_t *p, int64_t v);
void lk_db_param_null(lk_db_params_t *p);
/* NULL when s is empty. */
void lk_db_param_str_or_null(lk_db_params_t *p, lk_str_t s);

/* conninfo: a libpq connection string (copied; may hold a password, never
 * logged). statement_timeout_ms: 0 = none. Does not connect. */
lk_db_t *lk_db_new(const char *conninfo, const char *app_name, int statement_timeout_ms);
/* NULL-safe; nullifies *self_p. */
void lk_db_destroy(lk_db_t **self_p);

/* Registers a named statement (name and sql are borrowed: use literals).
 * 0 / -1 (too many). */
int lk_db_prepare(lk_db_t *self, const char *name, const char *sql) __attribute__((warn_unused_result));

/* Connects now, retrying with backoff for up to wait_ms. 0 / -1. */
int lk_db_connect(lk_db_t *self, int wait_ms) __attribute__((warn_unused_result));

/* Runs a registered statement. On LK_DB_OK *res is the result (caller
 * PQclears it); otherwise *res is NULL. p may be NULL (no parameters). */
lk_db_rc_t lk_db_exec(lk_db_t *self, const char *name, const lk_db_params_t *p, PGresult **res)
    __attribute__((warn_unused_result));

/* Runs one SQL statement, not prepared. res may be NULL (result discarded). */
lk_db_rc_t lk_db_query(lk_db_t *self, const char *sql, const lk_db_params_t *p, PGresult **res)
    __attribute__((warn_unused_result));

/* Runs a script of several statements (no parameters), e.g. a migration. */
lk_db_rc_t lk_db_script(lk_db_t *self, const char *sql) __attribute__((warn_unused_result));

/* Transactions. Statements inside one are never retried. After an error,
 * call lk_db_rollback. */
lk_db_rc_t lk_db_begin(lk_db_t *self) __attribute__((warn_unused_result));
lk_db_rc_t lk_db_commit(lk_db_t *self) __attribute__((warn_unused_result));
void lk_db_rollback(lk_db_t *self);

/* Pipelined group commit (libpq pipeline mode): prepared statements are sent
 * one after another without waiting for their results, then one Sync commits
 * them together as the pipeline's implicit transaction and the results are
 * read in order. One round trip and one commit for the whole batch, instead of
 * a round trip per statement.
 *   lk_db_pipe_begin: connects if needed, prepares the statements not yet
 *     prepared on this connection, enters pipeline mode.
 *   lk_db_pipe_send: queues one prepared statement; -1 if it could not be sent
 *     (the pipeline then fails as a whole at lk_db_pipe_commit).
 *   lk_db_pipe_commit: syncs and reads every result in order, calling fn for
 *     each statement's (successful) result, which fn must not keep. LK_DB_OK
 *     only when every statement succeeded and the transaction committed; on any
 *     error nothing of the batch is committed (and fn may have been called for
 *     statements before the failing one: their results are void). Always
 *     leaves pipeline mode.
 * No lk_db_begin transaction may be open. */
typedef void (*lk_db_result_fn)(void *arg, size_t index, const PGresult *res);
lk_db_rc_t lk_db_pipe_begin(lk_db_t *self) __attribute__((warn_unused_result));
int lk_db_pipe_send(lk_db_t *self, const char *name, const lk_db_params_t *p)
    __attribute__((warn_unused_result));
lk_db_rc_t lk_db_pipe_commit(lk_db_t *self, lk_db_result_fn fn, void *arg)
    __attribute__((warn_unused_result));

/* SQLSTATE of the last failure ("" if none). */
const char *lk_db_sqlstate(const lk_db_t *self);

/* The protocol status for a failed call: UNAVAILABLE, CONFLICT, BAD_REQUEST, INTERNAL. */
lk_status_t lk_db_status(lk_db_rc_t rc);
/* A message safe for a client for a failed call ("database unavailable", ...). */
const char *lk_db_message(lk_db_rc_t rc);

/* --- reading text-format results ------------------------------------------ */
/* The value (empty for NULL); borrowed from res. */
lk_str_t lk_db_str(const PGresult *res, int row, int col);
int lk_db_is_null(const PGresult *res, int row, int col);
int64_t lk_db_i64(const PGresult *res, int row, int col);
/* 1 for 't'. */
int lk_db_bool(const PGresult *res, int row, int col);
/* Decodes a bytea ("\x..." text) into out. 0 / -1 (not bytea hex, does not fit). */
int lk_db_bytea(const PGresult *res, int row, int col, uint8_t *out, size_t cap, size_t *len)
    __attribute__((warn_unused_result));

/* --- LISTEN ------------------------------------------------------------------
 * A second connection that only listens on one channel, for caches that must
 * forget what changed. Polled, never blocking (except while connecting, like
 * lk_db_connect's attempts: connect_timeout 3 s, backoff 100 ms to 2 s).
 *
 *      lk_db_listen_t *l = lk_db_listen_new(conninfo, "lumkey-policy", "lumkey_cache");
 *      if (lk_db_listen_poll(l, on_change, cache)) -> listening: the cache may answer
 *      else -> not listening: bypass the cache
 *
 *  on_change(arg, payload) is called for every notification, and with payload
 *  NULL whenever notifications may have been missed (the connection was lost,
 *  or has just been (re)established): drop everything then. A change committed
 *  after a poll that returned 1 is reported by a later poll (PostgreSQL
 *  delivers it at commit; how soon it arrives is its delivery time, not
 *  bounded by this code). Any message the server sends unasked on this
 *  connection (e.g. "terminating connection") counts as a lost connection. */
typedef struct lk_db_listen lk_db_listen_t;
typedef void (*lk_db_notify_fn)(void *arg, const char *payload);

/* channel: a plain lower-case identifier (borrowed: use a literal). NULL when
 * out of memory. Does not connect. */
lk_db_listen_t *lk_db_listen_new(const char *conninfo, const char *app_name, const char *channel);
/* NULL-safe; nullifies *self_p. */
void lk_db_listen_destroy(lk_db_listen_t **self_p);
/* Connects if due, drains what arrived. 1 = listening, 0 = not. */
int lk_db_listen_poll(lk_db_listen_t *self, lk_db_notify_fn fn, void *arg);
/* Its socket (-1 when not connected), e.g. for a poll set. */
int lk_db_listen_fd(const lk_db_listen_t *self);

/* --- row cache ---------------------------------------------------------------
 * A bounded cache of result rows (text values) by a byte key: a table of
 * `slots` entries where a key may sit in one of two neighbouring slots (the
 * older one is replaced), so memory is bounded by construction and a lookup is
 * O(1). Every entry expires after its own ttl. Knows nothing of invalidation:
 * its owner flushes it (e.g. on an lk_db_listen event). Single-threaded. */
#define LK_DB_ROW_MAX_COLS 32

typedef struct {
    int ncols;
    lk_str_t v[LK_DB_ROW_MAX_COLS];
    uint8_t null[LK_DB_ROW_MAX_COLS];
} lk_db_row_t;

typedef struct lk_db_cache lk_db_cache_t;

typedef struct {
    uint64_t hits, misses, puts, flushes, expired;
} lk_db_cache_stats_t;

/* slots: rounded up to a power of two (>= 2). NULL when out of memory. */
lk_db_cache_t *lk_db_cache_new(size_t slots);
/* Frees every entry (wiped). NULL-safe; nullifies *self_p. */
void lk_db_cache_destroy(lk_db_cache_t **self_p);
void lk_db_cache_flush(lk_db_cache_t *self);
/* 1 with *row (its values stay valid until the next put, flush or destroy),
 * or 0 (absent or expired). */
int lk_db_cache_get(lk_db_cache_t *self, const void *key, size_t key_len, lk_db_row_t *row);
/* Stores row `row` of res under key for ttl_us (> 0) and fills *out from the
 * stored copy. 0, or -1 (out of memory or too many columns: *out is then
 * filled from res itself, which stays valid until PQclear). */
int lk_db_cache_put(lk_db_cache_t *self, const void *key, size_t key_len, const PGresult *res, int row,
                    int64_t ttl_us, lk_db_row_t *out);
lk_db_cache_stats_t lk_db_cache_stats(const lk_db_cache_t *self);

/* A row cache kept fresh by NOTIFY (issue 9; what is cached and why it is
 * safe: services/policy/policy_cache.h, services/vault/vault_cache.h): an
 * lk_db_cache whose rows live at most max_age_ms, plus a LISTEN connection on
 * channel. A notification whose payload is one of flush_on (NULL: any payload)
 * drops every row, and so does a lost or restored LISTEN connection (what
 * changed meanwhile is unknown); while it is down the cache is not used. */
typedef struct lk_db_live lk_db_live_t;
/* max_age_ms <= 0: off (sync answers 0, nothing listens). flush_on: NULL-terminated table
 * names, borrowed. NULL when out of memory. */
lk_db_live_t *lk_db_live_new(const char *conninfo, const char *app_name, const char *channel, int max_age_ms,
                             size_t slots, const char *const *flush_on);
/* NULL-safe; nullifies *self_p. */
void lk_db_live_destroy(lk_db_live_t **self_p);
/* Applies the notifications that arrived. 1 = the cache may answer now, 0 = bypass it. */
int lk_db_live_sync(lk_db_live_t *self);
/* Drops every row (e.g. a cached row that no longer opens). */
void lk_db_live_flush(lk_db_live_t *self);
/* 1 with *row (valid until the next put, flush or sync), or 0 (also when len is 0). */
int lk_db_live_get(lk_db_live_t *self, const void *key, size_t len, lk_db_row_t *row);
/* Stores row 0 of res for min(ttl_ms, max age), unless the cache is off, len is 0 or
 * ttl_ms <= 0, and fills *row (from the cache, or from res when not stored).
 * 0 / -1 (too many columns). */
int lk_db_live_put(lk_db_live_t *self, const void *key, size_t len, const PGresult *res, int64_t ttl_ms,
                   lk_db_row_t *row);
/* Longest time a row may live (0 when off). */
int64_t lk_db_live_max_age_ms(const lk_db_live_t *self);

/* Fills *out with row `row` of res (borrowed from res). 0 / -1 (too many columns). */
int lk_db_row_of(const PGresult *res, int row, lk_db_row_t *out);
/* lk_db_bytea for a column of a row. */
int lk_db_row_bytea(const lk_db_row_t *row, int col, uint8_t *out, size_t cap, size_t *len)
    __attribute__((warn_unused_result));

#endif
