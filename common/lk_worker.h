/*  lk_worker - the worker side of the edge <-> service protocol.
 *
 *  Binds the service's ROUTER socket ([identity][frame]), answers PING with
 *  PONG, drops requests whose deadline has passed, and hands every other
 *  decoded request to the service's handler; then encodes and sends the reply.
 *  Knows the envelope (lk_proto), nothing of message bodies or databases.
 *
 *      handler(ctx, req, rep, scratch)
 *          rep is pre-filled with the reply envelope (same rid / call id,
 *          type = the request's _REP type); the handler fills the body, or
 *          calls lk_worker_error() to answer ERROR. Strings in rep must stay
 *          valid until the handler's next call: point them into scratch, into
 *          req, or into memory owned by ctx. Return -1 for "could not do it
 *          (bug, unexpected failure)": the worker answers ERROR INTERNAL.
 *
 *  scratch is emptied after every request. It is secure (sodium memory,
 *  wiped) when the request or its reply is SECRET. It may move when it grows:
 *  take pointers into it only after the last append.
 *
 *  Secrets: a SECRET request frame is wiped once handled; a SECRET reply is
 *  encoded into sodium memory that is wiped when ZeroMQ has sent it; SECRET
 *  replies (and replies to SECRET requests) are never cached.
 *
 *  Idempotency: successful replies to non-secret requests are kept for a few
 *  seconds, keyed by a digest of the request without its call id and deadline
 *  (so rid + type + content), and a retried request gets the same answer
 *  without running the handler again. ERROR replies are not cached.
 *
 *  Undecodable frames cannot be answered (no trustworthy call id): they are
 *  dropped with a warn log. On SIGINT / SIGTERM lk_worker_run keeps answering
 *  the requests already queued until the socket has been quiet for 200 ms
 *  (at most drain_ms), then returns: a request an edge sent just before is
 *  answered, one sent after is retried by the edge on another replica.
 *
 *  Links: over tcp:// the socket is a CURVE server (lk_curve.h) and a ZAP
 *  handler on the same thread admits only the listed client keys; ipc://
 *  needs none. Once bound, log lines go to stdout (lk_log_to_stdout).
 */
#ifndef LK_WORKER_H
#define LK_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "lk_buf.h"
#include "lk_proto.h"

typedef struct lk_worker lk_worker_t;

typedef int (*lk_worker_handler_fn)(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);
typedef void (*lk_worker_tick_fn)(void *ctx);

typedef struct {
    const char *service;          /* "policy", "vault", ... : PONG svc; borrowed until destroy */
    const char *endpoint;         /* where to bind; copied */
    lk_worker_handler_fn handler; /* required */
    void *ctx;                    /* handed to handler and tick; borrowed */
    lk_worker_tick_fn tick;       /* optional, called about every tick_ms */
    int tick_ms;                  /* 0 = 1000 */
    size_t cache_entries;         /* idempotency cache capacity; 0 = 16384 */
    int cache_ttl_ms;             /* 0 = 5000; < 0 disables the cache */
    /* Optional group commit. When both are set and requests are queued
     * behind the one being handled, the requests that arrive together (one
     * wake-up, up to 256) are handled between one batch_begin and one
     * batch_commit, and their replies are held back until batch_commit
     * returns 0: an answer is never sent for work that was not committed. If
     * batch_commit returns -1, every reply of the batch that was not already an
     * ERROR becomes ERROR UNAVAILABLE. If batch_begin returns -1, the batch's
     * requests are handled one by one as without these hooks. SECRET replies
     * are never held (a service that batches should not have any). */
    int (*batch_begin)(void *ctx);
    int (*batch_commit)(void *ctx);
    /* Optional, with the two above: for services whose replies carry what
     * only the commit knows (e.g. a sequence number from a pipelined
     * statement). A held reply of type batch_reply_type is then kept unencoded and,
     * once batch_commit returned 0, handed to batch_reply in the order the
     * requests were handled, to fill in; -1 (or an ERROR) makes it ERROR
     * UNAVAILABLE. Such a reply must not point into the handler's scratch:
     * only its request id (copied) and static strings survive the handler. */
    int (*batch_reply)(void *ctx, lk_msg_t *rep);
    lk_msg_type_t batch_reply_type;
    int drain_ms; /* at most this long answering queued requests after a signal; 0 = 2000 */
} lk_worker_opts_t;

typedef struct {
    uint64_t received, replied, errors, expired, malformed, cache_hits;
    uint64_t batches, batch_failures; /* group commits, and those that failed */
} lk_worker_stats_t;

/* Creates the socket and binds it (an ipc:// directory is created if
 * missing); logs "ready" once bound. NULL on failure (logged). */
lk_worker_t *lk_worker_new(const lk_worker_opts_t *opts);

/* Serves until SIGINT / SIGTERM or lk_worker_stop. 0 on a requested stop,
 * -1 on a fatal socket error (logged). */
int lk_worker_run(lk_worker_t *self) __attribute__((warn_unused_result));

/* Makes lk_worker_run return soon; callable from another thread. */
void lk_worker_stop(lk_worker_t *self);

/* Closes the socket, wipes and frees everything. NULL-safe; nullifies *self_p. */
void lk_worker_destroy(lk_worker_t **self_p);

lk_worker_stats_t lk_worker_stats(const lk_worker_t *self);

/* The --health mode: PINGs the worker bound at endpoint (a tcp://\*:PORT bind
 * is asked on 127.0.0.1, with the server's own CURVE keypair) and waits for
 * the PONG. 0 = healthy, 1 = not (logged on stderr). */
int lk_worker_health(const char *service, const char *endpoint, int timeout_ms);

/* Copies the strings *strs[0..n) into scratch with one reservation and
 * points them at their copies: the way to keep strings from a result that is
 * freed before the handler returns. Call it once per request, after any other
 * append to scratch (a later append may move scratch). 0 / -1 (no memory). */
int lk_worker_keep(lk_buf_t *scratch, lk_str_t *const strs[], size_t n) __attribute__((warn_unused_result));

/* Turns rep into ERROR {status, message}. message must be a static string
 * (or outlive the reply) and never contain a secret. Returns 0. */
int lk_worker_error(lk_msg_t *rep, lk_status_t status, const char *message);

#endif
