/*  test_lk_worker - the worker loop over a real ROUTER socket, no database.
 *
 *  A worker runs in a thread with a test handler; a DEALER plays the edge:
 *  PING/PONG, handler replies, handler failure -> ERROR INTERNAL, retries
 *  answered from the idempotency cache (with the new call id, handler not run
 *  again), SECRET requests never cached, expired deadlines and undecodable or
 *  multi-frame messages dropped without killing the worker, clean stop.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "lk_log.h"
#include "lk_test.h"
#include "lk_util.h"
#include "lk_worker.h"

static int s_calls;            /* handler invocations (worker thread; read after replies) */
static lk_str_t s_last_secret; /* what the handler saw */

static int test_handler(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    (void)ctx;
    __atomic_add_fetch(&s_calls, 1, __ATOMIC_SEQ_CST);
    switch (req->env.type) {
    case LK_MSG_HOLD:
        if (lk_str_eq(req->u.hold.reason, "fail")) return -1;
        rep->u.hold_rep.outcome = LK_HOLD_NO_HOLD;
        /* an answer that changes on every call: the cache must hide that on retries */
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "call-%d", s_calls);
        if (lk_buf_append(scratch, tmp, (size_t)n) != 0) return -1;
        rep->u.hold_rep.hold_id = (lk_str_t){(const char *)scratch->data, scratch->len};
        return 0;
    case LK_MSG_KEY_HASH:
        s_last_secret = req->u.key_hash.key;
        memset(rep->u.key_hash_rep.hash, (int)s_calls, sizeof rep->u.key_hash_rep.hash);
        return 0;
    default:
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "unsupported");
    }
}

static int calls(void)
{
    return __atomic_load_n(&s_calls, __ATOMIC_SEQ_CST);
}

static void *run_worker(void *w)
{
    int rc = lk_worker_run(w);
    return (void *)(intptr_t)rc;
}

/* --- a tiny edge ------------------------------------------------------------ */
static void *s_dealer;
static uint64_t s_call_id = 100;
static zmq_msg_t s_frame;

static int send_msg(lk_msg_t *m)
{
    lk_buf_t b;
    lk_buf_init(&b, lk_proto_is_secret(m->env.type));
    m->env.version = LK_PROTO_VERSION;
    int rc = lk_proto_encode(m, &b) == 0 && zmq_send(s_dealer, b.data, b.len, 0) == (int)b.len ? 0 : -1;
    lk_buf_free(&b);
    return rc;
}

/* Waits up to ms for a reply; decodes it into out (borrowing s_frame). 0 / -1 (nothing came). */
static int recv_msg(lk_msg_t *out, int ms)
{
    zmq_pollitem_t it = {s_dealer, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) != 1) return -1;
    zmq_msg_close(&s_frame);
    zmq_msg_init(&s_frame);
    if (zmq_msg_recv(&s_frame, s_dealer, 0) < 0) return -1;
    return lk_proto_decode(zmq_msg_data(&s_frame), zmq_msg_size(&s_frame), out);
}

static int call(lk_msg_t *m, lk_msg_t *out)
{
    m->env.call_id = ++s_call_id;
    if (send_msg(m) != 0 || recv_msg(out, 3000) != 0) return -1;
    return out->env.call_id == m->env.call_id ? 0 : -1;
}

static lk_msg_t hold(const char *rid, const char *reason)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_HOLD;
    m.env.rid = lk_str(rid);
    m.env.deadline_ms = lk_now_ms() + 5000;
    m.u.hold.tenant = LK_STR_LIT("t");
    m.u.hold.key_id = LK_STR_LIT("key_x");
    m.u.hold.reason = lk_str(reason);
    return m;
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    lk_log_init("test");
    char dir[] = "/tmp/lkwt-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/sub/w.ipc", dir);
    lk_worker_opts_t opts = {.service = "tester",
                             .endpoint = ep,
                             .handler = test_handler,
                             .cache_entries = 4,
                             .cache_ttl_ms = 60000};
    lk_worker_t *w = lk_worker_new(&opts);
    LK_CHECK(w != NULL); /* and the missing ipc directory was created */
    if (!w) return LK_TEST_DONE();
    pthread_t th;
    pthread_create(&th, NULL, run_worker, w);

    void *ctx = zmq_ctx_new();
    s_dealer = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s_dealer, ZMQ_LINGER, &zero, sizeof zero);
    LK_CHECK(zmq_connect(s_dealer, ep) == 0);
    zmq_msg_init(&s_frame);
    lk_msg_t m, r;

    fprintf(stderr, "-- ping\n");
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_PING;
    m.env.rid = LK_STR_LIT("ping");
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_PONG && lk_str_eq(r.u.ping.service, "tester"));
    LK_CHECK(calls() == 0); /* PING never reaches the handler */

    fprintf(stderr, "-- reply, then a retry from the cache\n");
    m = hold("req_1", "why");
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_HOLD_REP && lk_str_eq(r.u.hold_rep.hold_id, "call-1"));
    LK_CHECK(lk_str_eq(r.env.rid, "req_1"));
    m.env.deadline_ms += 10; /* a retry may carry a new deadline */
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_HOLD_REP && lk_str_eq(r.u.hold_rep.hold_id, "call-1"));
    LK_CHECK(calls() == 1);
    m = hold("req_1", "other content"); /* same rid and type, other request: not a retry */
    LK_CHECK(call(&m, &r) == 0 && lk_str_eq(r.u.hold_rep.hold_id, "call-2"));
    m = hold("req_2", "why");
    LK_CHECK(call(&m, &r) == 0 && lk_str_eq(r.u.hold_rep.hold_id, "call-3"));
    /* the cache holds 4: push req_1 out, then it runs again */
    for (int i = 0; i < 5; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "req_f%d", i);
        m = hold(rid, "fill");
        LK_CHECK(call(&m, &r) == 0);
    }
    int before = calls();
    m = hold("req_1", "why");
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_HOLD_REP);
    LK_CHECK(calls() == before + 1);

    fprintf(stderr, "-- handler failure -> ERROR INTERNAL, not cached\n");
    m = hold("req_fail", "fail");
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_INTERNAL);
    before = calls();
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_ERROR);
    LK_CHECK(calls() == before + 1);

    fprintf(stderr, "-- unsupported type -> ERROR BAD_REQUEST\n");
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_CRED_GET;
    m.env.rid = LK_STR_LIT("req_x");
    m.u.cred_get.tenant = LK_STR_LIT("t");
    m.u.cred_get.cred_id = LK_STR_LIT("c");
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_BAD_REQUEST);

    fprintf(stderr, "-- SECRET requests are never cached\n");
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_KEY_HASH;
    m.env.rid = LK_STR_LIT("req_k");
    m.u.key_hash.key = LK_STR_LIT("lk_live_secretish");
    before = calls();
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_KEY_HASH_REP);
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_KEY_HASH_REP);
    LK_CHECK(calls() == before + 2);

    fprintf(stderr, "-- expired deadline: dropped, handler not run\n");
    before = calls();
    m = hold("req_late", "late");
    m.env.deadline_ms = lk_now_ms() - 1000;
    m.env.call_id = ++s_call_id;
    LK_CHECK(send_msg(&m) == 0);
    LK_CHECK(recv_msg(&r, 300) != 0);
    LK_CHECK(calls() == before);

    fprintf(stderr, "-- garbage and multi-frame messages: dropped, worker alive\n");
    LK_CHECK(zmq_send(s_dealer, "\x96\x01\x01", 3, 0) == 3);
    LK_CHECK(zmq_send(s_dealer, "", 0, 0) == 0);
    LK_CHECK(zmq_send(s_dealer, "\xc1", 1, 0) == 1);
    LK_CHECK(zmq_send(s_dealer, "a", 1, ZMQ_SNDMORE) == 1 && zmq_send(s_dealer, "b", 1, 0) == 1);
    LK_CHECK(recv_msg(&r, 300) != 0);
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_PING;
    m.env.rid = LK_STR_LIT("ping");
    LK_CHECK(call(&m, &r) == 0 && r.env.type == LK_MSG_PONG);
    lk_worker_stats_t st = lk_worker_stats(w);
    LK_CHECK(st.malformed == 4);
    LK_CHECK(st.expired == 1);
    LK_CHECK(st.cache_hits == 1);

    fprintf(stderr, "-- stop\n");
    lk_worker_stop(w);
    void *ret = NULL;
    pthread_join(th, &ret);
    LK_CHECK(ret == NULL);
    lk_worker_destroy(&w);
    LK_CHECK(w == NULL);
    lk_worker_destroy(&w); /* NULL-safe */

    zmq_msg_close(&s_frame);
    zmq_close(s_dealer);
    zmq_ctx_term(ctx);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    (void)s_last_secret;
    return LK_TEST_DONE();
}
