/*  test_lk_worker_batch - group commit in the worker loop: replies wait for the
 *  commit, a failed commit turns them into ERROR UNAVAILABLE, a failed begin
 *  falls back to one-by-one handling, batch_reply fills in held replies after
 *  the commit (and its refusal is an ERROR UNAVAILABLE). Real ROUTER socket, no
 *  database.
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

static int s_begins, s_commits, s_begin_ok = 1, s_commit_ok = 1;

static int on_begin(void *ctx)
{
    if (!__atomic_load_n(&s_begin_ok, __ATOMIC_SEQ_CST)) return -1;
    __atomic_add_fetch(&s_begins, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int on_commit(void *ctx)
{
    usleep(100 * 1000); /* a reply sent before the commit would be seen before this count moves */
    __atomic_add_fetch(&s_commits, 1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&s_commit_ok, __ATOMIC_SEQ_CST) ? 0 : -1;
}

static int s_replies_patched, s_commits_at_patch = -1;

static int handler(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (lk_str_eq(req->u.hold.reason, "fail")) return -1;
    if (lk_str_eq(req->u.hold.reason, "slow")) usleep(200 * 1000); /* the others queue up meanwhile */
    rep->u.hold_rep.outcome = LK_HOLD_NO_HOLD;
    rep->u.hold_rep.expires_ms = 7; /* what only the handler knows */
    return 0;
}

/* Called for each held HOLD_REP once its batch committed: what only the commit knows. */
static int on_reply(void *ctx, lk_msg_t *rep)
{
    __atomic_store_n(&s_commits_at_patch, __atomic_load_n(&s_commits, __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST);
    if (rep->env.type != LK_MSG_HOLD_REP || rep->u.hold_rep.expires_ms != 7)
        return -1; /* not the held reply */
    if (lk_str_eq(rep->env.rid, "req_patchfail")) return -1;
    rep->u.hold_rep.expires_ms = 4242;
    __atomic_add_fetch(&s_replies_patched, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void *run_worker(void *w)
{
    return (void *)(intptr_t)lk_worker_run(w);
}

static void *s_dealer;
static uint64_t s_call_id;

static void send_hold(const char *rid, const char *reason)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.version = LK_PROTO_VERSION;
    m.env.type = LK_MSG_HOLD;
    m.env.rid = lk_str(rid);
    m.env.call_id = ++s_call_id;
    m.env.deadline_ms = lk_now_ms() + 5000;
    m.u.hold.tenant = LK_STR_LIT("t");
    m.u.hold.key_id = LK_STR_LIT("key_x");
    m.u.hold.reason = lk_str(reason);
    lk_buf_t b;
    lk_buf_init(&b, 0);
    LK_CHECK(lk_proto_encode(&m, &b) == 0 && zmq_send(s_dealer, b.data, b.len, 0) == (int)b.len);
    lk_buf_free(&b);
}

/* Receives one reply: its type, status (for ERROR) and request id; -1 type if none came. */
static int64_t s_last_expires;

static lk_msg_type_t recv_reply(lk_status_t *st, int *commits_seen, char *rid)
{
    zmq_pollitem_t it = {s_dealer, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 3000) != 1) return (lk_msg_type_t)-1;
    *commits_seen = __atomic_load_n(&s_commits, __ATOMIC_SEQ_CST);
    zmq_msg_t f;
    zmq_msg_init(&f);
    zmq_msg_recv(&f, s_dealer, 0);
    lk_msg_t r;
    lk_msg_type_t t = lk_proto_decode(zmq_msg_data(&f), zmq_msg_size(&f), &r) == 0 ? r.env.type : LK_MSG_NONE;
    *st = t == LK_MSG_ERROR ? r.u.error.status : LK_ST_OK;
    s_last_expires = t == LK_MSG_HOLD_REP ? r.u.hold_rep.expires_ms : -1;
    lk_str_copy(rid, 32, t != LK_MSG_NONE ? r.env.rid : LK_STR_LIT(""));
    zmq_msg_close(&f);
    return t;
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    lk_log_init("test");
    char dir[] = "/tmp/lkwb-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/w.ipc", dir);
    lk_worker_opts_t opts = {.service = "batcher",
                             .endpoint = ep,
                             .handler = handler,
                             .cache_ttl_ms = -1,
                             .batch_begin = on_begin,
                             .batch_commit = on_commit,
                             .batch_reply = on_reply,
                             .batch_reply_type = LK_MSG_HOLD_REP};
    lk_worker_t *w = lk_worker_new(&opts);
    LK_CHECK(w != NULL);
    if (!w) return LK_TEST_DONE();
    pthread_t th;
    pthread_create(&th, NULL, run_worker, w);
    void *ctx = zmq_ctx_new();
    s_dealer = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s_dealer, ZMQ_LINGER, &zero, sizeof zero);
    LK_CHECK(zmq_connect(s_dealer, ep) == 0);

    char rid[32];
    lk_status_t st;
    int seen;

    /* 1. a slow request is handled alone; the seven queued behind it form batches whose
     *    replies all leave after a commit */
    send_hold("req_slow", "slow");
    usleep(50 * 1000);
    for (int i = 0; i < 7; i++)
        send_hold("req_a", "ok");
    int early = 0, good = 0;
    for (int i = 0; i < 8; i++) {
        lk_msg_type_t t = recv_reply(&st, &seen, rid);
        good += t == LK_MSG_HOLD_REP;
        if (strcmp(rid, "req_a") == 0) early += seen == 0;
    }
    LK_CHECK(good == 8);
    LK_CHECK(early == 0); /* no batched reply before its commit */
    LK_CHECK(s_begins >= 1 && s_begins <= 7);
    LK_CHECK(s_commits == s_begins);
    lk_worker_stats_t stats = lk_worker_stats(w);
    LK_CHECK(stats.batches == (uint64_t)s_commits && stats.batch_failures == 0);

    /* 2. a failed commit: the batched success becomes UNAVAILABLE, a handler failure stays INTERNAL */
    __atomic_store_n(&s_commit_ok, 0, __ATOMIC_SEQ_CST);
    send_hold("req_slow", "slow");
    usleep(50 * 1000);
    send_hold("req_b", "ok");
    send_hold("req_c", "fail");
    int unavailable = 0, internal = 0, slow_ok = 0;
    for (int i = 0; i < 3; i++) {
        lk_msg_type_t t = recv_reply(&st, &seen, rid);
        unavailable += t == LK_MSG_ERROR && st == LK_ST_UNAVAILABLE && strcmp(rid, "req_b") == 0;
        internal += t == LK_MSG_ERROR && st == LK_ST_INTERNAL && strcmp(rid, "req_c") == 0;
        slow_ok += t == LK_MSG_HOLD_REP && strcmp(rid, "req_slow") == 0;
    }
    LK_CHECK(unavailable == 1 && internal == 1 && slow_ok == 1);
    LK_CHECK(lk_worker_stats(w).batch_failures >= 1);

    /* 3. begin fails: handled one by one, answered, commit never called */
    __atomic_store_n(&s_begin_ok, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s_commit_ok, 1, __ATOMIC_SEQ_CST);
    int commits_before = __atomic_load_n(&s_commits, __ATOMIC_SEQ_CST);
    send_hold("req_slow", "slow");
    usleep(50 * 1000);
    send_hold("req_d", "ok");
    send_hold("req_e", "ok");
    good = 0;
    for (int i = 0; i < 3; i++)
        good += recv_reply(&st, &seen, rid) == LK_MSG_HOLD_REP;
    LK_CHECK(good == 3);
    LK_CHECK(__atomic_load_n(&s_commits, __ATOMIC_SEQ_CST) == commits_before);

    /* 4. batch_reply: a batched reply is completed after its commit (handled alone, it is
     *    not: the handler's value stays); a refusal makes that one reply UNAVAILABLE */
    __atomic_store_n(&s_begin_ok, 1, __ATOMIC_SEQ_CST);
    int patched_before = __atomic_load_n(&s_replies_patched, __ATOMIC_SEQ_CST);
    send_hold("req_slow", "slow");
    usleep(50 * 1000);
    send_hold("req_p1", "ok");
    send_hold("req_patchfail", "ok");
    send_hold("req_p2", "ok");
    int patched = 0, refused = 0, alone = 0;
    for (int i = 0; i < 4; i++) {
        lk_msg_type_t t = recv_reply(&st, &seen, rid);
        if (strcmp(rid, "req_slow") == 0) alone += t == LK_MSG_HOLD_REP && s_last_expires == 7;
        if (strcmp(rid, "req_patchfail") == 0) refused += t == LK_MSG_ERROR && st == LK_ST_UNAVAILABLE;
        if (strncmp(rid, "req_p", 5) == 0 && rid[5] != 'a')
            patched += t == LK_MSG_HOLD_REP && s_last_expires == 4242;
    }
    LK_CHECK(alone == 1);
    LK_CHECK(refused == 1);
    LK_CHECK(patched == 2);
    LK_CHECK(__atomic_load_n(&s_replies_patched, __ATOMIC_SEQ_CST) - patched_before == 2);
    LK_CHECK(__atomic_load_n(&s_commits_at_patch, __ATOMIC_SEQ_CST) > commits_before); /* after a commit */

    lk_worker_stop(w);
    void *ret;
    pthread_join(th, &ret);
    LK_CHECK((intptr_t)ret == 0);
    lk_worker_destroy(&w);
    zmq_close(s_dealer);
    zmq_ctx_term(ctx);
    char path[160];
    snprintf(path, sizeof path, "%s/w.ipc", dir);
    unlink(path);
    rmdir(dir);
    return LK_TEST_DONE();
}
