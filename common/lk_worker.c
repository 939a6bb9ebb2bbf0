/*  lk_worker - the worker side of the edge <-> service protocol. */
#include "lk_worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "lk_config.h"
#include "lk_curve.h"
#include "lk_log.h"
#include "lk_util.h"

#define CACHE_KEY_LEN 16
#define BATCH_MAX     256   /* messages handled per wake-up before the tick is checked */
#define ZAP_CHECK_US  10000 /* under steady load, look at the ZAP socket this often */

/* ------------------------------------------------------------ the cache -- */

typedef struct {
    uint8_t key[CACHE_KEY_LEN];
    int64_t expires_us;
    uint8_t *data; /* encoded reply, malloc'd */
    size_t len;
    uint32_t next; /* bucket chain: index + 1, 0 = end */
} cache_entry_t;

typedef struct {
    cache_entry_t *e;
    uint32_t cap, head, count;
    uint32_t *buckets; /* index + 1, 0 = empty */
    uint32_t nbuckets; /* power of two */
    int64_t ttl_us;
} cache_t;

static int cache_init(cache_t *c, size_t entries, int ttl_ms)
{
    memset(c, 0, sizeof *c);
    if (ttl_ms < 0) return 0; /* disabled */
    if (entries > (1u << 24)) entries = 1u << 24;
    c->cap = (uint32_t)entries;
    c->nbuckets = 1;
    while (c->nbuckets < 2 * c->cap)
        c->nbuckets <<= 1;
    c->e = calloc(c->cap, sizeof *c->e);
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    c->ttl_us = (int64_t)ttl_ms * 1000;
    return c->e && c->buckets ? 0 : -1;
}

static uint32_t *cache_bucket(cache_t *c, const uint8_t *key)
{
    uint32_t h;
    memcpy(&h, key, sizeof h);
    return &c->buckets[h & (c->nbuckets - 1)];
}

static void cache_evict_head(cache_t *c)
{
    uint32_t idx = c->head;
    cache_entry_t *e = &c->e[idx];
    for (uint32_t *p = cache_bucket(c, e->key); *p; p = &c->e[*p - 1].next) {
        if (*p == idx + 1) {
            *p = e->next;
            break;
        }
    }
    free(e->data);
    memset(e, 0, sizeof *e);
    c->head = (c->head + 1) % c->cap;
    c->count--;
}

static const cache_entry_t *cache_find(cache_t *c, const uint8_t *key, int64_t now_us)
{
    if (!c->cap) return NULL;
    for (uint32_t i = *cache_bucket(c, key); i; i = c->e[i - 1].next) {
        const cache_entry_t *e = &c->e[i - 1];
        if (memcmp(e->key, key, CACHE_KEY_LEN) == 0) return e->expires_us > now_us ? e : NULL;
    }
    return NULL;
}

static void cache_put(cache_t *c, const uint8_t *key, const uint8_t *data, size_t len, int64_t now_us)
{
    if (!c->cap) return;
    while (c->count && (c->count == c->cap || c->e[c->head].expires_us <= now_us))
        cache_evict_head(c);
    uint8_t *copy = malloc(len);
    if (!copy) return; /* a cache miss later is harmless */
    memcpy(copy, data, len);
    uint32_t idx = (c->head + c->count) % c->cap;
    cache_entry_t *e = &c->e[idx];
    memcpy(e->key, key, CACHE_KEY_LEN);
    e->expires_us = now_us + c->ttl_us;
    e->data = copy;
    e->len = len;
    uint32_t *b = cache_bucket(c, key);
    e->next = *b;
    *b = idx + 1;
    c->count++;
}

static void cache_free(cache_t *c)
{
    while (c->count)
        cache_evict_head(c);
    free(c->e);
    free(c->buckets);
    memset(c, 0, sizeof *c);
}

/* ----------------------------------------------------------- the worker -- */

/* A request as received: [identity][frame]. */
typedef struct {
    zmq_msg_t identity;
    zmq_msg_t frame;
} inmsg_t;

/* A reply held back until its batch commits. */
typedef struct {
    zmq_msg_t identity;
    lk_buf_t encoded;
    lk_msg_t msg; /* unencoded until the commit when opts.batch_reply is set */
    int deferred;
    char rid[LK_PROTO_MAX_RID + 1];
    uint64_t call_id;
    int64_t deadline_ms;
    int is_error;
    int cacheable;
    uint8_t key[CACHE_KEY_LEN];
} held_t;

struct lk_worker {
    lk_worker_opts_t opts;
    held_t *held; /* BATCH_MAX entries when group commit is on */
    inmsg_t *in;  /* BATCH_MAX received messages when group commit is on, else 1 */
    size_t n_held;
    int batch_open; /* batch_begin succeeded for the current wake-up */
    char endpoint[512];
    void *zctx;
    void *sock;
    void *zap; /* REP on inproc://zeromq.zap.01 when CURVE is on */
    lk_curve_t curve;
    atomic_int stop;
    cache_t cache;
    lk_buf_t scratch;        /* plain */
    lk_buf_t scratch_secure; /* sodium memory */
    lk_buf_t out;            /* encoded non-secret replies */
    lk_buf_t keybuf;         /* canonical request encoding for the cache key */
    lk_worker_stats_t stats;
    int64_t next_tick_us;
};

static volatile sig_atomic_t s_signalled;

static void on_signal(int sig)
{
    (void)sig;
    s_signalled = 1;
}

int lk_worker_error(lk_msg_t *rep, lk_status_t status, const char *message)
{
    rep->env.type = LK_MSG_ERROR;
    memset(&rep->u, 0, sizeof rep->u);
    rep->u.error.status = status;
    rep->u.error.message = lk_str(message);
    return 0;
}

int lk_worker_keep(lk_buf_t *scratch, lk_str_t *const strs[], size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strs[i]->len;
    if (lk_buf_reserve(scratch, total) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        lk_str_t *s = strs[i];
        char *dst = (char *)scratch->data + scratch->len;
        if (s->len) memcpy(dst, s->ptr, s->len);
        scratch->len += s->len;
        s->ptr = dst;
    }
    return 0;
}

lk_worker_t *lk_worker_new(const lk_worker_opts_t *opts)
{
    if (!opts || !opts->service || !opts->endpoint || !opts->handler || sodium_init() < 0) return NULL;
    lk_worker_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->opts = *opts;
    if (self->opts.tick_ms <= 0) self->opts.tick_ms = 1000;
    if (self->opts.drain_ms <= 0) {
        const char *d = getenv("LUMKEY_WORKER_DRAIN_MS");
        self->opts.drain_ms = d && atoi(d) > 0 ? atoi(d) : 2000;
    }
    snprintf(self->endpoint, sizeof self->endpoint, "%s", opts->endpoint);
    self->opts.endpoint = self->endpoint;
    lk_buf_init(&self->scratch, 0);
    lk_buf_init(&self->scratch_secure, 1);
    lk_buf_init(&self->out, 0);
    lk_buf_init(&self->keybuf, 0);
    if (cache_init(&self->cache, opts->cache_entries ? opts->cache_entries : 16384,
                   opts->cache_ttl_ms ? opts->cache_ttl_ms : 5000) != 0) {
        lk_log_error("out of memory for the idempotency cache");
        goto fail;
    }
    if (opts->batch_begin && opts->batch_commit) {
        self->held = calloc(BATCH_MAX, sizeof(held_t));
        if (!self->held) goto fail;
        for (size_t i = 0; i < BATCH_MAX; i++)
            lk_buf_init(&self->held[i].encoded, 0);
    }
    self->in = calloc(self->held ? BATCH_MAX : 1, sizeof(inmsg_t));
    if (!self->in) goto fail;
    if (lk_config_prepare_endpoint(self->endpoint) != 0) goto fail;
    if (lk_curve_server_load(&self->curve, self->endpoint) != 0) goto fail;
    self->zctx = zmq_ctx_new();
    if (!self->zctx) goto fail;
    if (self->curve.on) { /* the ZAP handler must be bound before the CURVE socket */
        self->zap = zmq_socket(self->zctx, ZMQ_REP);
        if (!self->zap || zmq_bind(self->zap, "inproc://zeromq.zap.01") != 0) goto fail;
    }
    self->sock = zmq_socket(self->zctx, ZMQ_ROUTER);
    if (!self->sock) goto fail;
    if (lk_curve_server_apply(&self->curve, self->sock) != 0) {
        lk_log_error("cannot set up CURVE on %s", self->endpoint);
        goto fail;
    }
    int linger = 200, hwm = 100000, one = 1;
    if (strncmp(self->endpoint, "tcp://[", 7) == 0) /* e.g. tcp://[::]:5555 on an IPv6 pod */
        zmq_setsockopt(self->sock, ZMQ_IPV6, &one, sizeof one);
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(self->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(self->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(self->sock, self->endpoint) != 0) {
        lk_log_error("cannot bind %s: %s", self->endpoint, zmq_strerror(errno));
        goto fail;
    }
    lk_log_to_stdout();
    lk_log_info("ready: %s bound to %s%s", opts->service, self->endpoint, self->curve.on ? " (CURVE)" : "");
    return self;
fail:
    lk_worker_destroy(&self);
    return NULL;
}

void lk_worker_destroy(lk_worker_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_worker_t *self = *self_p;
    if (self->sock) zmq_close(self->sock);
    if (self->zap) zmq_close(self->zap);
    if (self->zctx) zmq_ctx_term(self->zctx);
    lk_curve_clear(&self->curve);
    cache_free(&self->cache);
    if (self->held) {
        for (size_t i = 0; i < BATCH_MAX; i++)
            lk_buf_free(&self->held[i].encoded);
        free(self->held);
    }
    free(self->in);
    lk_buf_free(&self->scratch);
    lk_buf_free(&self->scratch_secure);
    lk_buf_free(&self->out);
    lk_buf_free(&self->keybuf);
    free(self);
    *self_p = NULL;
}

void lk_worker_stop(lk_worker_t *self)
{
    if (self) atomic_store(&self->stop, 1);
}

lk_worker_stats_t lk_worker_stats(const lk_worker_t *self)
{
    return self->stats;
}

/* Runs in ZeroMQ's I/O thread once a secret reply is sent: the block is wiped
 * and parked in lk_buf's shared pool, where the next secret reply finds it. */
static void free_secure(void *data, void *hint)
{
    lk_buf_secure_release(data, (size_t)(uintptr_t)hint);
}

/* Sends [identity][data]. A secure buffer is handed to ZeroMQ and wiped when sent. */
static void send_reply(lk_worker_t *self, zmq_msg_t *identity, lk_buf_t *buf, int secure)
{
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_copy(&id, identity);
    if (secure) {
        if (zmq_msg_init_data(&body, buf->data, buf->len, free_secure, (void *)(uintptr_t)buf->cap) != 0) {
            lk_buf_free(buf);
            zmq_msg_close(&id);
            return;
        }
        buf->data = NULL; /* now owned by body */
        buf->len = buf->cap = 0;
    } else if (zmq_msg_init_size(&body, buf->len) == 0) {
        memcpy(zmq_msg_data(&body), buf->data, buf->len);
    } else {
        zmq_msg_close(&id);
        return;
    }
    if (zmq_msg_send(&id, self->sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_msg_send(&body, self->sock, ZMQ_DONTWAIT) < 0) {
        lk_log_warn("reply not sent: %s", zmq_strerror(errno));
        zmq_msg_close(&id);
        zmq_msg_close(&body); /* frees (and wipes) */
        return;
    }
    self->stats.replied++;
}

/* Encodes rep and sends it. 0, or -1 if it could not be encoded (logged). */
static int encode_and_send(lk_worker_t *self, zmq_msg_t *identity, const lk_msg_t *rep)
{
    if (lk_proto_is_secret(rep->env.type)) {
        lk_buf_t sb;
        lk_buf_init(&sb, 1);
        if (lk_proto_encode(rep, &sb) != 0) {
            lk_buf_free(&sb);
            lk_log_error("could not encode a %s reply", lk_proto_type_name(rep->env.type));
            return -1;
        }
        send_reply(self, identity, &sb, 1);
        lk_buf_free(&sb);
        return 0;
    }
    self->out.len = 0;
    if (lk_proto_encode(rep, &self->out) != 0) {
        lk_log_error("could not encode a %s reply", lk_proto_type_name(rep->env.type));
        return -1;
    }
    send_reply(self, identity, &self->out, 0);
    return 0;
}

/* Digest of the request without its call id and deadline. 0 / -1. */
static int request_key(lk_worker_t *self, const lk_msg_t *req, uint8_t key[CACHE_KEY_LEN])
{
    lk_msg_t canon = *req;
    canon.env.call_id = 0;
    canon.env.deadline_ms = 0;
    self->keybuf.len = 0;
    if (lk_proto_encode(&canon, &self->keybuf) != 0) return -1;
    crypto_generichash(key, CACHE_KEY_LEN, self->keybuf.data, self->keybuf.len, NULL, 0);
    return 0;
}

/* Answers a retried request from the cache. 1 = answered, 0 = not cached. */
static int answer_from_cache(lk_worker_t *self, zmq_msg_t *identity, const lk_msg_t *req, const uint8_t *key)
{
    const cache_entry_t *e = cache_find(&self->cache, key, lk_mono_us());
    if (!e) return 0;
    lk_msg_t rep;
    if (lk_proto_decode(e->data, e->len, &rep) != 0) return 0;
    rep.env.call_id = req->env.call_id;
    rep.env.deadline_ms = req->env.deadline_ms;
    self->stats.cache_hits++;
    return encode_and_send(self, identity, &rep) == 0;
}

/* Encodes rep and keeps it until the batch commits. 0, or -1 (send it now instead). */
static int hold_reply(lk_worker_t *self, zmq_msg_t *identity, const lk_msg_t *rep, int cacheable,
                      const uint8_t *key)
{
    if (self->n_held == BATCH_MAX) return -1;
    held_t *h = &self->held[self->n_held];
    h->encoded.len = 0;
    h->deferred = self->opts.batch_reply && rep->env.type == self->opts.batch_reply_type;
    if (h->deferred)
        h->msg = *rep; /* its strings: the request id (copied below) and static ones */
    else if (lk_proto_encode(rep, &h->encoded) != 0)
        return -1;
    zmq_msg_init(&h->identity);
    zmq_msg_copy(&h->identity, identity);
    lk_str_copy(h->rid, sizeof h->rid, rep->env.rid);
    h->msg.env.rid = lk_str(h->rid);
    h->call_id = rep->env.call_id;
    h->deadline_ms = rep->env.deadline_ms;
    h->is_error = rep->env.type == LK_MSG_ERROR;
    h->cacheable = cacheable && !h->is_error;
    if (h->cacheable) memcpy(h->key, key, CACHE_KEY_LEN);
    self->n_held++;
    return 0;
}

/* Commits the open batch and sends its replies, or turns them into ERROR UNAVAILABLE. */
static void flush_batch(lk_worker_t *self)
{
    if (!self->batch_open) return;
    self->batch_open = 0;
    int ok = self->opts.batch_commit(self->opts.ctx) == 0;
    self->stats.batches++;
    if (!ok) {
        self->stats.batch_failures++;
        lk_log_error("group commit failed: %zu replies turned into errors", self->n_held);
    }
    for (size_t i = 0; i < self->n_held; i++) {
        held_t *h = &self->held[i];
        if (ok && h->deferred) { /* the commit's outcome goes into the reply, then it is encoded */
            int patched = self->opts.batch_reply(self->opts.ctx, &h->msg) == 0;
            if (!patched || h->msg.env.type == LK_MSG_ERROR || lk_proto_encode(&h->msg, &h->encoded) != 0) {
                h->encoded.len = 0;
                h->is_error = 1;
                h->cacheable = 0;
                lk_worker_error(&h->msg, LK_ST_UNAVAILABLE, "not committed; please retry");
                self->stats.errors++;
                (void)encode_and_send(self, &h->identity, &h->msg);
                zmq_msg_close(&h->identity);
                continue;
            }
        }
        if (ok || h->is_error) {
            send_reply(self, &h->identity, &h->encoded, 0);
            if (ok && h->cacheable)
                cache_put(&self->cache, h->key, h->encoded.data, h->encoded.len, lk_mono_us());
        } else {
            lk_msg_t err;
            memset(&err, 0, sizeof err);
            err.env.version = LK_PROTO_VERSION;
            err.env.rid = lk_str(h->rid);
            err.env.call_id = h->call_id;
            err.env.deadline_ms = h->deadline_ms;
            lk_worker_error(&err, LK_ST_UNAVAILABLE, "not committed; please retry");
            self->stats.errors++;
            (void)encode_and_send(self, &h->identity, &err);
        }
        zmq_msg_close(&h->identity);
        h->encoded.len = 0;
    }
    self->n_held = 0;
}

/* more: another request was received with this one and waits behind it. */
static void handle(lk_worker_t *self, zmq_msg_t *identity, const lk_msg_t *req, int more)
{
    lk_msg_t rep;
    memset(&rep, 0, sizeof rep);
    char rid[LK_PROTO_MAX_RID + 1];
    lk_str_copy(rid, sizeof rid, req->env.rid);

    if (req->env.type == LK_MSG_PING) {
        lk_proto_reply_env(&rep, req, LK_MSG_PONG);
        rep.u.ping.service = lk_str(self->opts.service);
        (void)encode_and_send(self, identity, &rep);
        return;
    }
    lk_msg_type_t rep_type = (lk_msg_type_t)(req->env.type + 1);
    int secret = lk_proto_is_secret(req->env.type) || lk_proto_is_secret(rep_type);
    uint8_t key[CACHE_KEY_LEN];
    int cacheable = !secret && self->cache.cap && request_key(self, req, key) == 0;
    if (cacheable && answer_from_cache(self, identity, req, key)) return;

    lk_buf_t *scratch = secret ? &self->scratch_secure : &self->scratch;
    /* group commit only when more requests are already waiting: alone, a request
     * is cheaper as one statement than as BEGIN + statement + COMMIT */
    if (self->held && !secret && !self->batch_open && more && self->opts.batch_begin(self->opts.ctx) == 0)
        self->batch_open = 1;
    lk_proto_reply_env(&rep, req, rep_type);
    if (self->opts.handler(self->opts.ctx, req, &rep, scratch) != 0) {
        lk_log(LK_LOG_ERROR, rid, "%s failed", lk_proto_type_name(req->env.type));
        lk_worker_error(&rep, LK_ST_INTERNAL, "internal error");
    }
    if (rep.env.type == LK_MSG_ERROR) self->stats.errors++;
    /* the handler may only choose its reply type or ERROR */
    if (rep.env.type != rep_type && rep.env.type != LK_MSG_ERROR) {
        lk_log(LK_LOG_ERROR, rid, "handler answered %s to %s", lk_proto_type_name(rep.env.type),
               lk_proto_type_name(req->env.type));
        lk_worker_error(&rep, LK_ST_INTERNAL, "internal error");
    }
    rep.env.rid = req->env.rid;
    rep.env.call_id = req->env.call_id;
    rep.env.deadline_ms = req->env.deadline_ms;
    if (self->batch_open && !secret && hold_reply(self, identity, &rep, cacheable, key) == 0) {
        lk_buf_reset(scratch);
        return;
    }
    if (self->batch_open && self->opts.batch_reply && rep.env.type == self->opts.batch_reply_type) {
        /* not held, so never completed by the commit: must not be answered as done */
        lk_worker_error(&rep, LK_ST_UNAVAILABLE, "not committed; please retry");
        self->stats.errors++;
    }
    int sent = encode_and_send(self, identity, &rep);
    if (sent != 0 && rep.env.type != LK_MSG_ERROR) {
        /* e.g. a field over the codec's limits: the edge still gets an answer */
        lk_worker_error(&rep, LK_ST_INTERNAL, "internal error");
        self->stats.errors++;
        (void)encode_and_send(self, identity, &rep);
    } else if (sent == 0 && cacheable && rep.env.type != LK_MSG_ERROR)
        cache_put(&self->cache, key, self->out.data, self->out.len, lk_mono_us());
    lk_buf_reset(scratch);         /* wipes when secure */
    if (scratch->cap > (1u << 20)) /* do not keep a huge buffer after one big request */
        lk_buf_free(scratch);
}

/* Discards the rest of a multipart message. */
static void drain_more(lk_worker_t *self, int more)
{
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, self->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&extra);
            return;
        }
        more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
}

/* Receives the messages already queued, up to max, without waiting: stops at
 * EAGAIN, so that when it returns fewer than max the socket's mailbox has been
 * read and its ZMQ_FD can be waited on (until something is sent on it).
 * The number received, or -1 on a socket error. */
static int receive_batch(lk_worker_t *self, size_t max)
{
    size_t n = 0;
    while (n < max) {
        inmsg_t *m = &self->in[n];
        zmq_msg_init(&m->identity);
        if (zmq_msg_recv(&m->identity, self->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m->identity);
            if (errno == EAGAIN || errno == EINTR) break;
            return n ? (int)n : -1;
        }
        if (!zmq_msg_more(&m->identity)) { /* a lone frame: nothing to answer */
            zmq_msg_close(&m->identity);
            continue;
        }
        zmq_msg_init(&m->frame);
        if (zmq_msg_recv(&m->frame, self->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m->frame);
            zmq_msg_close(&m->identity);
            continue;
        }
        if (zmq_msg_more(&m->frame)) {
            drain_more(self, 1);
            self->stats.received++;
            self->stats.malformed++;
            lk_log_warn("a message with extra frames was dropped");
            if (zmq_msg_size(&m->frame)) sodium_memzero(zmq_msg_data(&m->frame), zmq_msg_size(&m->frame));
            zmq_msg_close(&m->frame);
            zmq_msg_close(&m->identity);
            continue;
        }
        n++;
    }
    return (int)n;
}

/* Handles one received message and releases it. more: others wait behind it. */
static void process_msg(lk_worker_t *self, inmsg_t *m, int more)
{
    self->stats.received++;
    uint8_t *data = zmq_msg_data(&m->frame);
    size_t len = zmq_msg_size(&m->frame);
    int wipe = 1; /* unless known not to hold a secret */
    lk_msg_t req;
    if (lk_proto_decode(data, len, &req) != 0) {
        self->stats.malformed++;
        lk_log_warn("an undecodable message (%zu bytes) was dropped", len);
    } else {
        wipe = lk_proto_is_secret(req.env.type);
        if (req.env.deadline_ms > 0 && req.env.deadline_ms < lk_now_ms()) {
            self->stats.expired++;
            char rid[LK_PROTO_MAX_RID + 1];
            lk_log(LK_LOG_DEBUG, lk_str_copy(rid, sizeof rid, req.env.rid), "%s past its deadline dropped",
                   lk_proto_type_name(req.env.type));
        } else {
            handle(self, &m->identity, &req, more);
        }
    }
    if (wipe && len) sodium_memzero(data, len);
    zmq_msg_close(&m->frame);
    zmq_msg_close(&m->identity);
}

/* Answers one ZAP request (RFC 27): admits a CURVE client whose public key is
 * listed, refuses any other. */
static void answer_zap(lk_worker_t *self)
{
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], self->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        more = zmq_msg_more(&f[n]);
        n++;
    }
    if (more) { /* malformed: cannot answer in step; drop (REP resets on the next request) */
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        return;
    }
    /* version, request id, domain, address, identity, mechanism, credentials... */
    int ok = n >= 7 && zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
             lk_curve_admits(&self->curve, zmq_msg_data(&f[6]), zmq_msg_size(&f[6]));
    if (!ok) {
        char addr[64] = "?";
        if (n >= 4)
            snprintf(addr, sizeof addr, "%.*s", (int)zmq_msg_size(&f[3]), (char *)zmq_msg_data(&f[3]));
        lk_log_warn("refused a peer at %s: its CURVE public key is not admitted", addr);
    }
    const char *code = ok ? "200" : "400", *text = ok ? "OK" : "key not admitted";
    zmq_send(self->zap, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2)
        zmq_send(self->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else
        zmq_send(self->zap, "", 0, ZMQ_SNDMORE);
    zmq_send(self->zap, code, 3, ZMQ_SNDMORE);
    zmq_send(self->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(self->zap, "", 0, ZMQ_SNDMORE); /* user id */
    zmq_send(self->zap, "", 0, 0);           /* metadata */
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

static void run_tick(lk_worker_t *self)
{
    int64_t now = lk_mono_us();
    if (now < self->next_tick_us) return;
    self->next_tick_us = now + (int64_t)self->opts.tick_ms * 1000;
    if (self->opts.tick) self->opts.tick(self->opts.ctx);
}

/* Answers the ZAP requests queued. Ends on a ZMQ_EVENTS read after the last
 * send, so the ZAP socket's ZMQ_FD can be waited on again. */
static void answer_zaps(lk_worker_t *self)
{
    for (int i = 0; i < BATCH_MAX; i++) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(self->zap, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
        answer_zap(self);
    }
}

/* The loop calls libzmq as little as it can: each of its calls that finds
 * nothing to do reads the socket's mailbox (a poll and a getpid system call).
 * It drains the queued requests with non-blocking receives until EAGAIN,
 * answers them, and only waits (poll(2) on ZMQ_FD) after a receive found
 * nothing with no send since: ZMQ_FD is edge-triggered and a send may read
 * the mailbox, so a reply sent after the last EAGAIN means one more
 * non-blocking receive before waiting. */
int lk_worker_run(lk_worker_t *self)
{
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = 0;
    struct pollfd pfd[2];
    memset(pfd, 0, sizeof pfd);
    size_t fdsz = sizeof pfd[0].fd;
    int nfds = self->zap ? 2 : 1;
    if (zmq_getsockopt(self->sock, ZMQ_FD, &pfd[0].fd, &fdsz) != 0 ||
        (self->zap && (fdsz = sizeof pfd[1].fd, zmq_getsockopt(self->zap, ZMQ_FD, &pfd[1].fd, &fdsz)) != 0)) {
        lk_log_error("cannot read the socket's ZMQ_FD: %s", zmq_strerror(errno));
        rc = -1;
        goto out;
    }
    pfd[0].events = pfd[1].events = POLLIN;
    size_t max = self->held ? BATCH_MAX : 1; /* look ahead only to open a group commit */
    self->next_tick_us = lk_mono_us() + (int64_t)self->opts.tick_ms * 1000;
    int64_t drain_until = 0, idle_since = 0, zap_checked = 0;
    int quiet = 0;   /* the last receive found nothing and nothing was sent since */
    int zap_due = 1; /* the ZAP socket may have requests */
    for (;;) {
        if ((s_signalled || atomic_load(&self->stop)) && !drain_until) {
            /* finish what is already queued: keep answering until the socket
             * stays quiet for 200 ms (at most LUMKEY_SHUTDOWN_DRAIN_MS) */
            lk_log_info("stopping: answering the requests already queued");
            drain_until = lk_mono_us() + (int64_t)self->opts.drain_ms * 1000;
            idle_since = lk_mono_us();
        }
        if (drain_until) {
            int64_t now = lk_mono_us();
            if (now >= drain_until || now - idle_since >= 200000) break;
        }
        if (quiet) {
            long wait_ms = (long)((self->next_tick_us - lk_mono_us()) / 1000);
            if (wait_ms < 0) wait_ms = 0;
            if (wait_ms > 100) wait_ms = 100; /* notice lk_worker_stop from another thread */
            if (drain_until && wait_ms > 50) wait_ms = 50;
            pfd[0].revents = pfd[1].revents = 0;
            if (poll(pfd, (nfds_t)nfds, (int)wait_ms) < 0) {
                if (errno == EINTR) continue;
                lk_log_error("poll failed: %s", strerror(errno));
                rc = -1;
                break;
            }
            if (pfd[1].revents) zap_due = 1;
            if (!pfd[0].revents) { /* nothing new on the socket: its ZMQ_FD state still holds */
                if (self->zap && zap_due) {
                    answer_zaps(self);
                    zap_due = 0;
                }
                run_tick(self);
                continue;
            }
        } else if (self->zap && lk_mono_us() - zap_checked >= ZAP_CHECK_US) {
            /* busy: no wait, but a new peer's handshake must not starve */
            struct pollfd z = pfd[1];
            z.revents = 0;
            if (poll(&z, 1, 0) > 0) zap_due = 1;
            zap_checked = lk_mono_us();
        }
        if (self->zap && zap_due) {
            answer_zaps(self);
            zap_due = 0;
            zap_checked = lk_mono_us();
        }
        int n = receive_batch(self, max);
        if (n < 0) {
            lk_log_error("receive failed: %s", zmq_strerror(errno));
            rc = -1;
            break;
        }
        quiet = n == 0;
        if (n > 0) {
            if (drain_until) idle_since = lk_mono_us();
            /* while a group commit is open, the requests that arrived in the
             * meantime join it (up to BATCH_MAX in all), as they queue behind
             * the transaction anyway */
            for (size_t total = 0; n > 0;) {
                for (int i = 0; i < n; i++)
                    process_msg(self, &self->in[i], i + 1 < n);
                total += (size_t)n;
                if (!self->batch_open || total >= BATCH_MAX) break;
                n = receive_batch(self, BATCH_MAX - total);
                if (n < 0) break; /* seen again by the next receive */
            }
            flush_batch(self);
        }
        run_tick(self);
    }
out:
    flush_batch(self);
    if (s_signalled) lk_log_info("stopping on a signal");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

int lk_worker_health(const char *service, const char *endpoint, int timeout_ms)
{
    char ep[512];
    const char *star = strstr(endpoint, "://*:");
    if (star) /* a wildcard bind: ask over loopback */
        snprintf(ep, sizeof ep, "%.*s://127.0.0.1:%s", (int)(star - endpoint), endpoint, star + 5);
    else
        snprintf(ep, sizeof ep, "%s", endpoint);
    lk_curve_t curve;
    memset(&curve, 0, sizeof curve);
    int rc = 1;
    void *ctx = zmq_ctx_new(), *sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    lk_buf_t out;
    lk_buf_init(&out, 0);
    if (!sock) goto cleanup;
    /* as a client with the server's own keypair, which the ZAP handler admits */
    if (lk_curve_server_load(&curve, ep) != 0 || lk_curve_client_apply(&curve, sock) != 0) goto cleanup;
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(sock, ep) != 0) goto cleanup;
    lk_msg_t ping;
    memset(&ping, 0, sizeof ping);
    ping.env.version = LK_PROTO_VERSION;
    ping.env.type = LK_MSG_PING;
    ping.env.rid = LK_STR_LIT("health");
    ping.env.call_id = 1;
    ping.env.deadline_ms = lk_now_ms() + timeout_ms;
    if (lk_proto_encode(&ping, &out) != 0 || zmq_send(sock, out.data, out.len, 0) < 0) goto cleanup;
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) == 1) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        lk_msg_t rep;
        if (zmq_msg_recv(&m, sock, 0) >= 0 &&
            lk_proto_decode(zmq_msg_data(&m), zmq_msg_size(&m), &rep) == 0 && rep.env.type == LK_MSG_PONG &&
            rep.env.call_id == 1)
            rc = 0;
        zmq_msg_close(&m);
    }
cleanup:
    if (rc != 0) lk_log_error("%s at %s did not answer a ping", service, ep);
    lk_buf_free(&out);
    if (sock) zmq_close(sock);
    if (ctx) zmq_ctx_term(ctx);
    lk_curve_clear(&curve);
    return rc;
}
