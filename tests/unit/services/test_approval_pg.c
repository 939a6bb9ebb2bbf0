/*  test_approval_pg - lumkey-approval against a real PostgreSQL.
 *
 *  Needs the ctest fixture "pg". Creates a fresh database, runs
 *  lumkey-migrate, starts lumkey-approval (two replicas on two ipc://
 *  endpoints, the same database) and talks to them as the edge does (DEALER
 *  + lk_proto): HOLD opens or joins a hold, HOLD_WAIT polls it, the holds.*
 *  admin ops decide it. Proves: same digest joins / other digest, version or
 *  kind opens a new hold; a decision takes effect once (replay 409); the
 *  requester cannot approve (403); timeout -> TIMED_OUT; a hold nobody polls
 *  is abandoned; a restarted worker (kill -9) and the other replica answer
 *  from the table; 100 holds opened at once and decided in random order
 *  each get their own outcome; excerpts are redacted.
 */
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "lk_proto.h"
#include "lk_test.h"
#include "lk_util.h"
#include "wtest_proc.h"

typedef struct {
    void *sock;
    zmq_msg_t frame;
} client_t;

static struct {
    const char *pgctl, *pg_dir, *migrate, *approval;
    char tmp[64], run_dir[128], log_dir[128], dbname[64], conninfo[512], ep[2][200];
    void *zctx;
    client_t cl[2];
    wt_proc_t procs[2];
    PGconn *pg;
    uint64_t call_id;
} T;

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void die(const char *what)
{
    fprintf(stderr, "FATAL: %s\n", what);
    wt_proc_kill_all();
    exit(2);
}

static void client_open(client_t *c, const char *endpoint)
{
    c->sock = zmq_socket(T.zctx, ZMQ_DEALER);
    int zero = 0, ivl = 50, hwm = 10000;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(c->sock, endpoint) != 0) die("zmq_connect");
    zmq_msg_init(&c->frame);
}

static void client_close(client_t *c)
{
    zmq_msg_close(&c->frame);
    zmq_close(c->sock);
}

static int send_msg(client_t *c, lk_msg_t *m)
{
    lk_buf_t b;
    lk_buf_init(&b, 0);
    m->env.version = LK_PROTO_VERSION;
    m->env.call_id = ++T.call_id;
    if (!m->env.deadline_ms) m->env.deadline_ms = lk_now_ms() + 10000;
    int rc = lk_proto_encode(m, &b) == 0 && zmq_send(c->sock, b.data, b.len, 0) == (int)b.len ? 0 : -1;
    lk_buf_free(&b);
    return rc;
}

static int recv_msg(client_t *c, lk_msg_t *out, int ms)
{
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) != 1) return -1;
    zmq_msg_close(&c->frame);
    zmq_msg_init(&c->frame);
    if (zmq_msg_recv(&c->frame, c->sock, 0) < 0) return -1;
    return lk_proto_decode(zmq_msg_data(&c->frame), zmq_msg_size(&c->frame), out);
}

/* Sends m to replica w and waits for its reply (older replies skipped). 0 / -1. */
static int call(int w, lk_msg_t *m, lk_msg_t *out)
{
    if (send_msg(&T.cl[w], m) != 0) return -1;
    int64_t end = lk_now_ms() + 5000;
    while (lk_now_ms() < end)
        if (recv_msg(&T.cl[w], out, (int)(end - lk_now_ms())) == 0 && out->env.call_id == m->env.call_id)
            return 0;
    return -1;
}

static lk_msg_t msg_of(lk_msg_type_t type)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = type;
    static char rids[64][LK_RID_LEN + 1];
    static int next;
    char *rid = rids[next++ % 64];
    lk_rid_new(rid);
    m.env.rid = lk_str(rid);
    return m;
}

static void start_worker(int w)
{
    char log[256];
    snprintf(log, sizeof log, "%s/approval%d.log", T.log_dir, w);
    char *argv[] = {(char *)T.approval, "--endpoint", T.ep[w], NULL};
    if (wt_proc_start(&T.procs[w], "approval", argv, log) != 0) die("cannot start lumkey-approval");
}

static int wait_pong(int w, int ms)
{
    int64_t end = lk_now_ms() + ms;
    while (lk_now_ms() < end) {
        lk_msg_t m = msg_of(LK_MSG_PING), r;
        m.env.deadline_ms = lk_now_ms() + 200;
        if (send_msg(&T.cl[w], &m) == 0 && recv_msg(&T.cl[w], &r, 200) == 0 && r.env.type == LK_MSG_PONG)
            return 0;
        msleep(50);
    }
    return -1;
}

static long sql_long(const char *q, const char *p1)
{
    const char *params[1] = {p1};
    PGresult *r = PQexecParams(T.pg, q, p1 ? 1 : 0, NULL, params, NULL, NULL, 0);
    long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                 ? atol(PQgetvalue(r, 0, 0))
                 : -999;
    PQclear(r);
    return v;
}

static void sql(const char *q)
{
    PGresult *r = PQexec(T.pg, q);
    LK_CHECK(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
}

/* ------------------------------------------------------------ helpers -- */

typedef struct {
    char id[64];
    lk_hold_outcome_t out;
    int64_t exp;
    char by[64];
} hold_t;

static void keep(hold_t *h, const lk_msg_t *r)
{
    memset(h, 0, sizeof *h);
    h->out = r->u.hold_rep.outcome;
    h->exp = r->u.hold_rep.expires_ms;
    lk_str_copy(h->id, sizeof h->id, r->u.hold_rep.hold_id);
    lk_str_copy(h->by, sizeof h->by, r->u.hold_rep.approver);
}

static lk_msg_t hold_msg(uint8_t dig_byte, int64_t pver, const char *kind, const char *user, int64_t tmo)
{
    lk_msg_t m = msg_of(LK_MSG_HOLD);
    m.u.hold.tenant = LK_STR_LIT("default");
    m.u.hold.key_id = LK_STR_LIT("key_test1");
    memset(m.u.hold.digest, dig_byte, sizeof m.u.hold.digest);
    m.u.hold.policy_id = LK_STR_LIT("pol_1");
    m.u.hold.policy_version = pver;
    m.u.hold.rule_id = LK_STR_LIT("rule_tools");
    m.u.hold.reason = LK_STR_LIT("shell tool needs a human");
    m.u.hold.kind = lk_str(kind);
    m.u.hold.user = lk_str(user);
    m.u.hold.model = LK_STR_LIT("gpt-test");
    m.u.hold.timeout_ms = tmo;
    return m;
}

/* HOLD on replica w; 0 / -1 (not a HOLD_REP). */
static int hold(int w, lk_msg_t *m, hold_t *h)
{
    lk_msg_t r;
    if (call(w, m, &r) != 0 || r.env.type != LK_MSG_HOLD_REP) return -1;
    keep(h, &r);
    return 0;
}

/* HOLD_WAIT on replica w: the outcome, or -1 (ERROR status negated - 100). */
static int wait_out(int w, const char *id, hold_t *h)
{
    lk_msg_t m = msg_of(LK_MSG_HOLD_WAIT), r;
    m.u.hold_wait.tenant = LK_STR_LIT("default");
    m.u.hold_wait.hold_id = lk_str(id);
    if (call(w, &m, &r) != 0) return -1;
    if (r.env.type == LK_MSG_ERROR) return -100 - (int)r.u.error.status;
    if (r.env.type != LK_MSG_HOLD_WAIT_REP) return -1;
    if (h) keep(h, &r);
    return (int)r.u.hold_rep.outcome;
}

/* An admin op on replica w; returns the status, *out the parsed JSON (caller decrefs; may be NULL). */
static int admin(int w, const char *op, const char *role, const char *actor, const char *obj,
                 const char *body, json_t **out)
{
    lk_msg_t m = msg_of(LK_MSG_ADMIN_REQ), r;
    m.u.admin_req.op = lk_str(op);
    m.u.admin_req.tenant = LK_STR_LIT("default");
    m.u.admin_req.actor = lk_str(actor);
    m.u.admin_req.role = lk_str(role);
    m.u.admin_req.object_id = lk_str(obj);
    m.u.admin_req.json = lk_str(body);
    if (out) *out = NULL;
    if (call(w, &m, &r) != 0 || r.env.type != LK_MSG_ADMIN_REP) return -1;
    json_t *j = json_loadb(r.u.admin_rep.json.ptr, r.u.admin_rep.json.len, 0, NULL);
    LK_CHECK(j != NULL);
    if (out)
        *out = j;
    else
        json_decref(j);
    return (int)r.u.admin_rep.status;
}

static int approve(int w, const char *id, const char *actor)
{
    return admin(w, "holds.approve", "approver", actor, id, "{\"reason\":\"looks fine\"}", NULL);
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* -------------------------------------------------------------- tests -- */

static void test_open_join(void)
{
    hold_t a, a2, b, c, d;
    lk_msg_t m = hold_msg(1, 3, "", "alice", 60000);
    int64_t t0 = lk_now_ms();
    LK_CHECK(hold(0, &m, &a) == 0);
    LK_CHECK(a.out == LK_HOLD_PENDING && strncmp(a.id, "hold_", 5) == 0 && strlen(a.id) == 29);
    LK_CHECK(a.exp >= t0 + 59000 && a.exp <= lk_now_ms() + 61000);
    m = hold_msg(1, 3, "request", "alice", 60000); /* an SDK retry: same digest -> same hold */
    LK_CHECK(hold(1, &m, &a2) == 0 && a2.out == LK_HOLD_PENDING && strcmp(a2.id, a.id) == 0 &&
             a2.exp == a.exp);
    m = hold_msg(2, 3, "", "alice", 60000); /* another payload */
    LK_CHECK(hold(0, &m, &b) == 0 && b.out == LK_HOLD_PENDING && strcmp(b.id, a.id) != 0);
    m = hold_msg(1, 4, "", "alice", 60000); /* another policy version */
    LK_CHECK(hold(0, &m, &c) == 0 && strcmp(c.id, a.id) != 0 && strcmp(c.id, b.id) != 0);
    m = hold_msg(1, 3, "answer", "alice", 60000); /* the answer side is its own hold */
    m.u.hold.tool = LK_STR_LIT("shell");
    LK_CHECK(hold(0, &m, &d) == 0 && strcmp(d.id, a.id) != 0 && strcmp(d.id, c.id) != 0);
    LK_CHECK(sql_long("SELECT count(*) FROM holds WHERE status = 'pending'", NULL) == 4);
    /* bad input */
    lk_msg_t r;
    m = hold_msg(1, 3, "tool", "", 0);
    LK_CHECK(call(0, &m, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_BAD_REQUEST);
    m = hold_msg(1, 3, "", "", -5);
    LK_CHECK(call(0, &m, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_BAD_REQUEST);
    m = hold_msg(1, 3, "", "", 0);
    m.u.hold.tenant = LK_STR_LIT("no_such_tenant");
    LK_CHECK(call(0, &m, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_NOT_FOUND);
    /* HOLD_WAIT: pending; unknown id or another tenant's -> NOT_FOUND */
    LK_CHECK(wait_out(0, a.id, NULL) == (int)LK_HOLD_PENDING);
    LK_CHECK(wait_out(0, "hold_000000000000000000000000", NULL) == -100 - LK_ST_NOT_FOUND);
    lk_msg_t w = msg_of(LK_MSG_HOLD_WAIT);
    w.u.hold_wait.tenant = LK_STR_LIT("other");
    w.u.hold_wait.hold_id = lk_str(a.id);
    LK_CHECK(call(0, &w, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_NOT_FOUND);
    sql("UPDATE holds SET status = 'rejected' WHERE status = 'pending'"); /* clean slate */
}

static void test_decide_once(void)
{
    hold_t h, got;
    lk_msg_t m = hold_msg(10, 1, "", "alice", 60000);
    LK_CHECK(hold(0, &m, &h) == 0 && h.out == LK_HOLD_PENDING);
    /* roles: an auditor reads but cannot decide; holds.decide is the edge's alone */
    json_t *o = NULL;
    LK_CHECK(admin(0, "holds.approve", "auditor", "adm_aud", h.id, "", NULL) == LK_ST_FORBIDDEN);
    LK_CHECK(admin(0, "holds.decide", "admin", "adm_x", "",
                   "{\"hold\":\"x\",\"action\":\"approve\",\"approver\":\"y\"}", NULL) == LK_ST_FORBIDDEN);
    LK_CHECK(admin(0, "holds.get", "auditor", "adm_aud", h.id, "", &o) == LK_ST_OK);
    LK_CHECK(strcmp(jstr(o, "status"), "pending") == 0 && strcmp(jstr(o, "id"), h.id) == 0 &&
             strcmp(jstr(o, "user"), "alice") == 0 && strcmp(jstr(o, "rule_id"), "rule_tools") == 0 &&
             strlen(jstr(o, "digest")) == 64 && strlen(jstr(o, "expires_at")) == 20);
    json_decref(o);
    /* approve once, through replica 1; the edge's poll on replica 0 sees it, with who decided */
    LK_CHECK(admin(1, "holds.approve", "approver", "adm_bob", h.id, "{\"reason\":\"ok\"}", &o) == LK_ST_OK);
    LK_CHECK(strcmp(jstr(o, "status"), "approved") == 0 && strcmp(jstr(o, "decided_by"), "adm_bob") == 0 &&
             strcmp(jstr(o, "decision_reason"), "ok") == 0);
    json_decref(o);
    LK_CHECK(wait_out(0, h.id, &got) == (int)LK_HOLD_APPROVED && strcmp(got.by, "adm_bob") == 0);
    /* a replayed approval, or a late rejection: 409, nothing changes */
    LK_CHECK(admin(0, "holds.approve", "approver", "adm_bob", h.id, "", &o) == LK_ST_CONFLICT);
    LK_CHECK(strcmp(jstr(json_object_get(o, "error"), "code"), "already_decided") == 0);
    json_decref(o);
    LK_CHECK(admin(0, "holds.reject", "admin", "adm_carol", h.id, "{\"reason\":\"no\"}", NULL) ==
             LK_ST_CONFLICT);
    LK_CHECK(wait_out(1, h.id, &got) == (int)LK_HOLD_APPROVED && strcmp(got.by, "adm_bob") == 0);
    /* the same payload after the decision opens a new hold (an approval covers one hold) */
    hold_t n;
    m = hold_msg(10, 1, "", "alice", 60000);
    LK_CHECK(hold(0, &m, &n) == 0 && n.out == LK_HOLD_PENDING && strcmp(n.id, h.id) != 0);
    LK_CHECK(admin(0, "holds.reject", "admin", "adm_carol", n.id, "{\"reason\":\"no\"}", NULL) == LK_ST_OK);
    LK_CHECK(wait_out(0, n.id, &got) == (int)LK_HOLD_REJECTED && strcmp(got.by, "adm_carol") == 0);
    LK_CHECK(admin(0, "holds.approve", "admin", "adm_bob", "hold_000000000000000000000000", "", NULL) ==
             LK_ST_NOT_FOUND);
    /* holds.decide (the edge's Slack / link path) */
    m = hold_msg(11, 1, "", "alice", 60000);
    LK_CHECK(hold(0, &m, &n) == 0);
    char body[256];
    snprintf(body, sizeof body, "{\"hold\":\"%s\",\"action\":\"approve\",\"approver\":\"slack:U777\"}", n.id);
    LK_CHECK(admin(0, "holds.decide", "edge", "", "", body, NULL) == LK_ST_OK);
    LK_CHECK(admin(0, "holds.decide", "edge", "", "", body, NULL) == LK_ST_CONFLICT);
    LK_CHECK(wait_out(0, n.id, &got) == (int)LK_HOLD_APPROVED && strcmp(got.by, "slack:U777") == 0);
}

static void test_self_approval(void)
{
    hold_t h, got;
    lk_msg_t m = hold_msg(20, 1, "", "alice", 60000);
    LK_CHECK(hold(0, &m, &h) == 0);
    /* an admin token named after the requester */
    sql("INSERT INTO admin_tokens (id, tenant_id, hash, role, name) VALUES ('adm_alice', 'default', "
        "'\\x0102', 'approver', 'alice')");
    LK_CHECK(approve(0, h.id, "adm_alice") == LK_ST_FORBIDDEN);
    LK_CHECK(admin(0, "holds.reject", "approver", "adm_alice", h.id, "", NULL) == LK_ST_FORBIDDEN);
    /* a Slack user whose name is the requester's */
    char body[256];
    snprintf(body, sizeof body,
             "{\"hold\":\"%s\",\"action\":\"approve\",\"approver\":\"slack:U1\",\"approver_name\":\"alice\"}",
             h.id);
    LK_CHECK(admin(0, "holds.decide", "edge", "", "", body, NULL) == LK_ST_FORBIDDEN);
    LK_CHECK(wait_out(0, h.id, NULL) == (int)LK_HOLD_PENDING);
    LK_CHECK(approve(0, h.id, "adm_bob") == LK_ST_OK);
    LK_CHECK(wait_out(0, h.id, &got) == (int)LK_HOLD_APPROVED);
}

static void test_timeout(void)
{
    hold_t h, got;
    lk_msg_t m = hold_msg(30, 1, "", "", 400);
    LK_CHECK(hold(0, &m, &h) == 0 && h.out == LK_HOLD_PENDING);
    msleep(600);
    LK_CHECK(wait_out(0, h.id, &got) == (int)LK_HOLD_TIMED_OUT); /* deny by default */
    LK_CHECK(approve(0, h.id, "adm_bob") == LK_ST_CONFLICT);     /* an approval expires with the hold */
    LK_CHECK(wait_out(1, h.id, NULL) == (int)LK_HOLD_TIMED_OUT);
    /* the tick times out holds nobody asks about either */
    m = hold_msg(31, 1, "", "", 300);
    LK_CHECK(hold(0, &m, &h) == 0);
    msleep(1500);
    LK_CHECK(sql_long("SELECT count(*) FROM holds WHERE id = $1 AND status = 'timed_out'", h.id) == 1);
}

static void test_abandoned(void)
{
    hold_t quiet, polled;
    lk_msg_t m = hold_msg(40, 1, "", "", 60000);
    LK_CHECK(hold(0, &m, &quiet) == 0);
    m = hold_msg(41, 1, "", "", 60000);
    LK_CHECK(hold(0, &m, &polled) == 0);
    /* the worker runs with LUMKEY_APPROVAL_ABANDON_MS=1500 */
    for (int i = 0; i < 10; i++) {
        LK_CHECK(wait_out(i % 2, polled.id, NULL) == (int)LK_HOLD_PENDING);
        msleep(300);
    }
    LK_CHECK(sql_long("SELECT count(*) FROM holds WHERE id = $1 AND status = 'abandoned'", quiet.id) == 1);
    LK_CHECK(wait_out(0, quiet.id, NULL) == (int)LK_HOLD_TIMED_OUT);
    LK_CHECK(approve(0, quiet.id, "adm_bob") == LK_ST_CONFLICT);
    LK_CHECK(wait_out(0, polled.id, NULL) == (int)LK_HOLD_PENDING);
    LK_CHECK(approve(0, polled.id, "adm_bob") == LK_ST_OK);
}

static void test_restart(void)
{
    hold_t h, got;
    lk_msg_t m = hold_msg(50, 1, "", "", 60000);
    LK_CHECK(hold(0, &m, &h) == 0);
    wt_proc_stop(&T.procs[0], SIGKILL, 1000);
    start_worker(0);
    LK_CHECK(wait_pong(0, 10000) == 0);
    LK_CHECK(wait_out(0, h.id, NULL) == (int)LK_HOLD_PENDING);
    m = hold_msg(50, 1, "", "", 60000); /* the retry after the restart still joins */
    LK_CHECK(hold(0, &m, &got) == 0 && strcmp(got.id, h.id) == 0);
    LK_CHECK(approve(1, h.id, "adm_bob") == LK_ST_OK);
    LK_CHECK(wait_out(0, h.id, &got) == (int)LK_HOLD_APPROVED);
}

static void test_hundred(void)
{
    enum { N = 100 };
    static hold_t h[N];
    int order[N], seen = 0;
    /* 100 HOLDs sent at once, split over the two replicas */
    for (int i = 0; i < N; i++) {
        lk_msg_t m = hold_msg(0, 7, "", "", 60000);
        m.u.hold.digest[0] = (uint8_t)i;
        m.u.hold.digest[1] = 0xee;
        m.env.rid = LK_STR_LIT("r");
        m.env.call_id = 0;
        LK_CHECK(send_msg(&T.cl[i % 2], &m) == 0);
        h[i].exp = (int64_t)T.call_id; /* remember which call is which */
    }
    int64_t end = lk_now_ms() + 20000;
    while (seen < N && lk_now_ms() < end) {
        for (int w = 0; w < 2; w++) {
            lk_msg_t r;
            if (recv_msg(&T.cl[w], &r, 20) != 0 || r.env.type != LK_MSG_HOLD_REP) continue;
            for (int i = 0; i < N; i++)
                if ((uint64_t)h[i].exp == r.env.call_id) {
                    keep(&h[i], &r);
                    seen++;
                }
        }
    }
    LK_CHECK(seen == N);
    for (int i = 0; i < N; i++) {
        LK_CHECK(h[i].out == LK_HOLD_PENDING);
        for (int j = 0; j < i; j++)
            if (strcmp(h[i].id, h[j].id) == 0) LK_CHECK(!"two holds share an id");
        order[i] = i;
    }
    for (int i = N - 1; i > 0; i--) { /* random order */
        int j = (int)randombytes_uniform((uint32_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < N; k++) {
        int i = order[k];
        int st = admin(k % 2, i % 3 == 0 ? "holds.reject" : "holds.approve", "approver", "adm_bob", h[i].id,
                       "", NULL);
        LK_CHECK(st == LK_ST_OK);
    }
    int right = 0;
    for (int i = 0; i < N; i++)
        right += wait_out(i % 2, h[i].id, NULL) == (int)(i % 3 == 0 ? LK_HOLD_REJECTED : LK_HOLD_APPROVED);
    LK_CHECK(right == N);
}

static void test_list_and_redaction(void)
{
    hold_t h;
    lk_msg_t m = hold_msg(60, 1, "answer", "", 60000);
    m.u.hold.tool = LK_STR_LIT("send_email");
    m.u.hold.excerpt =
        LK_STR_LIT("to bob@example.com with key sk-abcdefghij0123456789XYZ and Bearer abc.def\n");
    LK_CHECK(hold(0, &m, &h) == 0);
    json_t *o = NULL;
    LK_CHECK(admin(0, "holds.get", "approver", "adm_bob", h.id, "", &o) == LK_ST_OK);
    const char *ex = jstr(o, "excerpt");
    LK_CHECK(!strstr(ex, "bob@example.com") && !strstr(ex, "sk-abcdefghij") && !strstr(ex, "abc.def") &&
             strstr(ex, "[redacted]") && strstr(ex, "to ") && !strchr(ex, '\n'));
    LK_CHECK(strcmp(jstr(o, "kind"), "answer") == 0 && strcmp(jstr(o, "tool"), "send_email") == 0);
    json_decref(o);
    LK_CHECK(admin(0, "holds.list", "approver", "adm_bob", "", "{\"status\":\"pending\"}", &o) == LK_ST_OK);
    json_t *data = json_object_get(o, "data");
    LK_CHECK(json_is_array(data) && json_array_size(data) >= 1);
    size_t i;
    json_t *row;
    int found = 0;
    json_array_foreach(data, i, row)
    {
        LK_CHECK(strcmp(jstr(row, "status"), "pending") == 0);
        found |= strcmp(jstr(row, "id"), h.id) == 0;
    }
    LK_CHECK(found);
    json_decref(o);
    LK_CHECK(admin(0, "holds.list", "approver", "adm_bob", "", "{\"status\":\"maybe\"}", NULL) ==
             LK_ST_BAD_REQUEST);
    LK_CHECK(admin(0, "holds.list", "admin", "adm_bob", "", "", &o) == LK_ST_OK);
    LK_CHECK(json_array_size(json_object_get(o, "data")) > 100);
    json_decref(o);
    LK_CHECK(admin(0, "holds.nope", "admin", "adm_bob", "", "", NULL) == LK_ST_NOT_FOUND);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pgctl"))
            T.pgctl = argv[i + 1];
        else if (!strcmp(argv[i], "--pg-dir"))
            T.pg_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--migrate"))
            T.migrate = argv[i + 1];
        else if (!strcmp(argv[i], "--approval"))
            T.approval = argv[i + 1];
    }
    if (!T.pgctl || !T.pg_dir || !T.migrate || !T.approval) {
        fprintf(stderr, "usage: test_approval_pg --pgctl P --pg-dir D --migrate BIN --approval BIN\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;
    wt_proc_init();
    snprintf(T.tmp, sizeof T.tmp, "/tmp/lka-XXXXXX");
    if (!mkdtemp(T.tmp)) die("mkdtemp");
    snprintf(T.run_dir, sizeof T.run_dir, "%s/run", T.tmp);
    snprintf(T.log_dir, sizeof T.log_dir, "%s/logs", T.tmp);
    mkdir(T.run_dir, 0700);
    mkdir(T.log_dir, 0700);
    snprintf(T.dbname, sizeof T.dbname, "lka_%d_%u", (int)getpid(), randombytes_uniform(1000000));
    char *mk[] = {"/bin/bash", (char *)T.pgctl, "createdb", (char *)T.pg_dir, T.dbname, NULL};
    if (wt_proc_run(mk, T.conninfo, sizeof T.conninfo, NULL) != 0) die("pgctl.sh createdb failed");
    T.conninfo[strcspn(T.conninfo, "\n")] = '\0';
    T.pg = PQconnectdb(T.conninfo);
    if (PQstatus(T.pg) != CONNECTION_OK) die("cannot connect to the test database");
    PQclear(PQexec(T.pg, "SET client_min_messages = warning"));
    setenv("LUMKEY_DB", T.conninfo, 1);
    setenv("LUMKEY_RUN_DIR", T.run_dir, 1);
    setenv("LUMKEY_APPROVAL_ABANDON_MS", "1500", 1);
    unsetenv("LUMKEY_APPROVAL_ENDPOINT");
    char log[256];
    snprintf(log, sizeof log, "%s/migrate.log", T.log_dir);
    char *mig[] = {(char *)T.migrate, NULL};
    if (wt_proc_run(mig, NULL, 0, log) != 0) die("lumkey-migrate failed");

    T.zctx = zmq_ctx_new();
    for (int w = 0; w < 2; w++) {
        snprintf(T.ep[w], sizeof T.ep[w], "ipc://%s/approval%d.ipc", T.run_dir, w);
        start_worker(w);
        client_open(&T.cl[w], T.ep[w]);
    }
    int up = wait_pong(0, 15000) == 0 && wait_pong(1, 15000) == 0;
    LK_CHECK(up);
    if (up) {
        LK_RUN(test_open_join);
        LK_RUN(test_decide_once);
        LK_RUN(test_self_approval);
        LK_RUN(test_timeout);
        LK_RUN(test_abandoned);
        LK_RUN(test_restart);
        LK_RUN(test_hundred);
        LK_RUN(test_list_and_redaction);
    }
    for (int w = 0; w < 2; w++) {
        LK_CHECK(wt_proc_stop(&T.procs[w], SIGTERM, 10000) == 0);
        client_close(&T.cl[w]);
    }
    zmq_ctx_term(T.zctx);
    int failed = lk_test_failed;
    PQfinish(T.pg);
    if (!failed) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T.tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", T.tmp);
    } else {
        fprintf(stderr, "logs kept in %s/logs\n", T.tmp);
    }
    return LK_TEST_DONE();
}
