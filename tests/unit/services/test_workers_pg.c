/*  test_workers_pg - the four worker binaries against a real PostgreSQL.
 *
 *  Needs the ctest fixture "pg" (scripts/pgctl.sh start under the build
 *  tree). Creates a fresh database, runs lumkey-migrate (twice), creates a
 *  master key and the bootstrap admin token with the real binaries, starts
 *  lumkey-{policy,vault,approval,audit} as children on ipc:// endpoints in a
 *  temporary directory, and talks to them as the edge does (DEALER + lk_proto):
 *  admin auth, providers and keys through ADMIN_REQ, KEY_HASH + DECIDE,
 *  CRED_GET (and tampered rows), AUDIT idempotency, HOLD, deadlines, malformed
 *  frames, retries, database loss, kill -9 and restart, sealed vaults. At the
 *  end no log and no database dump may contain a secret. Children never
 *  outlive the test (wtest_proc).
 *
 *  Secrets are compared with memcmp / memmem and never printed.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "lk_key.h"
#include "lk_proto.h"
#include "lk_test.h"
#include "lk_util.h"
#include "wtest_proc.h"

enum { W_POLICY, W_VAULT, W_APPROVAL, W_AUDIT, W_COUNT };
static const char *const NAMES[W_COUNT] = {"policy", "vault", "approval", "audit"};

typedef struct {
    void *sock;
    zmq_msg_t frame; /* the last reply; decoded messages borrow from it */
    char endpoint[256];
} client_t;

static struct {
    const char *pgctl, *pg_dir, *migrate, *bin[W_COUNT];
    char tmp[64], run_dir[128], log_dir[128], master[160];
    char dbname[64], conninfo[512];
    void *zctx;
    client_t cl[W_COUNT];
    client_t *override[W_COUNT]; /* talk to another instance of a worker for a while */
    wt_proc_t procs[W_COUNT];
    PGconn *pg;
    uint64_t call_id;
    /* secrets: compared, never printed */
    char token[LK_KEY_MAX_LEN];
    char provider_secret[64], provider2_secret[64];
    char keys[8][LK_KEY_MAX_LEN];
    int nkeys;
    /* ids */
    char prov1[64], cred1[64], prov2[64], cred2[64], key1_id[32], key2_id[32];
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

/* ---------------------------------------------------------------- client -- */

static void client_open(client_t *c, const char *endpoint)
{
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    c->sock = zmq_socket(T.zctx, ZMQ_DEALER);
    int zero = 0, one = 1, ivl = 50;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    if (zmq_connect(c->sock, endpoint) != 0) die("zmq_connect");
    zmq_msg_init(&c->frame);
}

static void client_close(client_t *c)
{
    zmq_msg_close(&c->frame);
    zmq_close(c->sock);
}

static int send_raw(client_t *c, const void *data, size_t len)
{
    return zmq_send(c->sock, data, len, ZMQ_DONTWAIT) == (int)len ? 0 : -1;
}

static int send_msg(client_t *c, lk_msg_t *m)
{
    lk_buf_t b;
    lk_buf_init(&b, lk_proto_is_secret(m->env.type));
    m->env.version = LK_PROTO_VERSION;
    int rc = lk_proto_encode(m, &b) == 0 ? send_raw(c, b.data, b.len) : -1;
    lk_buf_free(&b);
    return rc;
}

/* The next reply within ms, decoded into out. 0 / -1. */
static int recv_msg(client_t *c, lk_msg_t *out, int ms)
{
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    int64_t end = lk_now_ms() + ms;
    for (;;) {
        int left = (int)(end - lk_now_ms());
        if (left < 0 || zmq_poll(&it, 1, left) != 1) return -1;
        zmq_msg_close(&c->frame);
        zmq_msg_init(&c->frame);
        if (zmq_msg_recv(&c->frame, c->sock, 0) < 0) return -1;
        if (lk_proto_decode(zmq_msg_data(&c->frame), zmq_msg_size(&c->frame), out) == 0) return 0;
    }
}

static client_t *cl(int w)
{
    return T.override[w] ? T.override[w] : &T.cl[w];
}

/* Sends m (call id and, unless set, deadline filled in) and waits for its reply. 0 / -1. */
static int call_ms(int w, lk_msg_t *m, lk_msg_t *out, int ms)
{
    client_t *c = cl(w);
    m->env.call_id = ++T.call_id;
    if (!m->env.deadline_ms) m->env.deadline_ms = lk_now_ms() + ms;
    if (send_msg(c, m) != 0) return -1;
    int64_t end = lk_now_ms() + ms;
    while (lk_now_ms() < end) {
        if (recv_msg(c, out, (int)(end - lk_now_ms())) != 0) return -1;
        if (out->env.call_id == m->env.call_id) return 0; /* older replies (of timed-out calls) are skipped */
    }
    return -1;
}

static int call(int w, lk_msg_t *m, lk_msg_t *out)
{
    return call_ms(w, m, out, 5000);
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

/* PING until PONG (the worker may still be starting). */
static int wait_pong(int w, int ms)
{
    int64_t end = lk_now_ms() + ms;
    while (lk_now_ms() < end) {
        lk_msg_t m = msg_of(LK_MSG_PING), r;
        if (call_ms(w, &m, &r, 200) == 0 && r.env.type == LK_MSG_PONG)
            return lk_str_eq(r.u.ping.service, NAMES[w]) ? 0 : -1;
        msleep(50);
    }
    return -1;
}

/* ------------------------------------------------------------- processes -- */

static void start_worker(int w, const char *extra_flag, const char *extra_value)
{
    char log[256];
    snprintf(log, sizeof log, "%s/%s.log", T.log_dir, NAMES[w]);
    char *argv[] = {(char *)T.bin[w], (char *)extra_flag, (char *)extra_value, NULL};
    if (wt_proc_start(&T.procs[w], NAMES[w], argv, log) != 0) die("cannot start a worker");
}

static void sql(const char *q, const char *p1, const char *p2)
{
    const char *params[2] = {p1, p2};
    PGresult *r = PQexecParams(T.pg, q, p2 ? 2 : p1 ? 1 : 0, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "FAIL: SQL failed: %s", PQerrorMessage(T.pg));
        lk_test_failed++;
    }
    PQclear(r);
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

static int file_contains(const char *path, const void *needle, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[8 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n && memmem(buf, len, needle, n) != NULL;
}

static int log_contains(int w, const char *s)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.log", T.log_dir, NAMES[w]);
    return file_contains(path, s, strlen(s));
}

/* ---------------------------------------------------------------- admin -- */

/* ADMIN_REQ op with body; the reply's JSON parsed into *out (caller decrefs). Returns the status, -1 on
 * failure. */
static int admin(const char *op, const char *body, json_t **out)
{
    lk_msg_t m = msg_of(LK_MSG_ADMIN_REQ), r;
    m.u.admin_req.op = lk_str(op);
    m.u.admin_req.tenant = LK_STR_LIT("default");
    m.u.admin_req.actor = LK_STR_LIT("adm_test");
    m.u.admin_req.role = LK_STR_LIT("admin");
    m.u.admin_req.json = lk_str(body);
    *out = NULL;
    if (call(W_VAULT, &m, &r) != 0 || r.env.type != LK_MSG_ADMIN_REP) return -1;
    /* no answer may ever show a provider secret */
    lk_str_t j = r.u.admin_rep.json;
    LK_CHECK(!memmem(j.ptr, j.len, T.provider_secret, strlen(T.provider_secret)));
    LK_CHECK(!memmem(j.ptr, j.len, T.provider2_secret, strlen(T.provider2_secret)));
    *out = json_loadb(j.ptr, j.len, 0, NULL);
    LK_CHECK(*out != NULL);
    return (int)r.u.admin_rep.status;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int error_code_is(json_t *o, const char *code)
{
    json_t *e = json_object_get(o, "error");
    return json_is_object(e) && strcmp(jstr(e, "code"), code) == 0 && *jstr(e, "message") &&
           strcmp(jstr(e, "type"), "invalid_request_error") == 0;
}

static void test_admin_auth(void)
{
    lk_msg_t m = msg_of(LK_MSG_ADMIN_AUTH), r;
    m.u.admin_auth.token = lk_str(T.token);
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ADMIN_AUTH_REP);
    LK_CHECK(lk_str_eq(r.u.admin_auth_rep.tenant, "default"));
    LK_CHECK(lk_str_eq(r.u.admin_auth_rep.role, "admin"));
    LK_CHECK(r.u.admin_auth_rep.token_id.len > 4 && memcmp(r.u.admin_auth_rep.token_id.ptr, "adm_", 4) == 0);

    char wrong[LK_KEY_MAX_LEN], id[LK_KEY_ID_LEN + 1];
    lk_key_generate(LK_KEY_ADMIN, wrong, id);
    m = msg_of(LK_MSG_ADMIN_AUTH);
    m.u.admin_auth.token = lk_str(wrong);
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAUTHORIZED);
    m = msg_of(LK_MSG_ADMIN_AUTH);
    m.u.admin_auth.token = LK_STR_LIT("lk_adm_garbage");
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAUTHORIZED);
    /* a revoked token stops working */
    sql("UPDATE admin_tokens SET revoked_at = now()", NULL, NULL);
    m = msg_of(LK_MSG_ADMIN_AUTH);
    m.u.admin_auth.token = lk_str(T.token);
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAUTHORIZED);
    sql("UPDATE admin_tokens SET revoked_at = NULL", NULL, NULL);

    /* a non-admin role cannot run vault admin ops */
    m = msg_of(LK_MSG_ADMIN_REQ);
    m.u.admin_req.op = LK_STR_LIT("keys.list");
    m.u.admin_req.tenant = LK_STR_LIT("default");
    m.u.admin_req.role = LK_STR_LIT("auditor");
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ADMIN_REP &&
             r.u.admin_rep.status == LK_ST_FORBIDDEN);
}

/* tmpl with "@K@" replaced by secret. */
static void fill(char *out, size_t cap, const char *tmpl, const char *secret)
{
    const char *at = strstr(tmpl, "@K@");
    size_t pre = at ? (size_t)(at - tmpl) : strlen(tmpl);
    if (pre + strlen(secret) + strlen(tmpl) >= cap) die("fill: does not fit");
    memcpy(out, tmpl, pre);
    out[pre] = '\0';
    if (at) {
        strcat(out, secret);
        strcat(out, at + 3);
    }
}

static void check_provider_shape(json_t *p, const char *name, const char *secret)
{
    LK_CHECK(strncmp(jstr(p, "id"), "prov_", 5) == 0);
    LK_CHECK(strcmp(jstr(p, "name"), name) == 0);
    LK_CHECK(json_is_array(json_object_get(p, "models")));
    json_t *cred = json_object_get(p, "credential");
    LK_CHECK(strncmp(jstr(cred, "id"), "cred_", 5) == 0);
    char fp[16];
    snprintf(fp, sizeof fp, "\xe2\x80\xa6%s", secret + strlen(secret) - 4);
    LK_CHECK(strcmp(jstr(cred, "fingerprint"), fp) == 0);
    const char *ts = jstr(p, "created_at");
    LK_CHECK(strlen(ts) == 20 && ts[10] == 'T' && ts[19] == 'Z');
    LK_CHECK(json_object_size(p) == 7);
    LK_CHECK(!json_object_get(p, "api_key") && !json_object_get(p, "ciphertext"));
}

static void test_providers(void)
{
    json_t *o;
    char body[1024];
    snprintf(body, sizeof body,
             "{\"name\":\"mock\",\"kind\":\"openai-compatible\",\"base_url\":\"http://127.0.0.1:9/v1\","
             "\"allow_private\":true,\"api_key\":\"%s\",\"models\":[\"m1\",\"m2\"]}",
             T.provider_secret);
    LK_CHECK(admin("providers.create", body, &o) == LK_ST_OK);
    check_provider_shape(o, "mock", T.provider_secret);
    LK_CHECK(strcmp(jstr(o, "kind"), "openai-compatible") == 0);
    LK_CHECK(strcmp(jstr(o, "base_url"), "http://127.0.0.1:9/v1") == 0);
    LK_CHECK(json_array_size(json_object_get(o, "models")) == 2);
    snprintf(T.prov1, sizeof T.prov1, "%s", jstr(o, "id"));
    snprintf(T.cred1, sizeof T.cred1, "%s", jstr(json_object_get(o, "credential"), "id"));
    json_decref(o);

    /* the same name again: conflict */
    LK_CHECK(admin("providers.create", body, &o) == LK_ST_CONFLICT);
    json_decref(o);

    /* refused bodies: each names the problem, none echoes the secret */
    static const struct {
        const char *tmpl, *code;
    } bad[] = {
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://"
         "u:p@api.example.com\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://api.example.com/"
         "v1?x=1\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://api.example.com/"
         "#f\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"ftp://api.example.com\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"http://169.254.169.254/\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"http://2130706433/\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"http://[::ffff:127.0.0.1]/"
         "\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://\",\"api_key\":\"@K@\"}",
         "invalid_base_url"},
        {"{\"name\":\"x\",\"kind\":\"bedrock\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\"}",
         "invalid_field"},
        {"{\"name\":\"\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\"}",
         "invalid_field"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\","
         "\"ciphertext\":\"AA==\"}",
         "field_not_settable"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\","
         "\"hash\":\"00\"}",
         "field_not_settable"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\","
         "\"wrapped_dek\":\"00\"}",
         "field_not_settable"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\","
         "\"colour\":\"red\"}",
         "unknown_field"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\","
         "\"models\":\"m1\"}",
         "invalid_field"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@ x\"}",
         "invalid_field"},
        {"{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"@K@\"",
         "invalid_json"},
        {"[\"@K@\"]", "invalid_json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fill(body, sizeof body, bad[i].tmpl, T.provider_secret);
        int st = admin("providers.create", body, &o);
        LK_CHECK(st == LK_ST_BAD_REQUEST && error_code_is(o, bad[i].code));
        if (st != LK_ST_BAD_REQUEST || !error_code_is(o, bad[i].code))
            fprintf(stderr, "   case %zu (%s) got status %d\n", i, bad[i].code, st);
        json_decref(o);
    }
    /* the refused field is named */
    snprintf(body, sizeof body,
             "{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"k\","
             "\"colour\":1}");
    LK_CHECK(admin("providers.create", body, &o) == LK_ST_BAD_REQUEST);
    LK_CHECK(strstr(jstr(json_object_get(o, "error"), "message"), "colour") != NULL);
    json_decref(o);
    /* api_key over 4096 bytes */
    static char huge[5000], hbody[5200];
    memset(huge, 'a', 4097);
    huge[4097] = '\0';
    snprintf(hbody, sizeof hbody,
             "{\"name\":\"x\",\"kind\":\"openai\",\"base_url\":\"https://a.example.com\",\"api_key\":\"%s\"}",
             huge);
    LK_CHECK(admin("providers.create", hbody, &o) == LK_ST_BAD_REQUEST && error_code_is(o, "invalid_field"));
    json_decref(o);
    LK_CHECK(sql_long("SELECT count(*) FROM providers", NULL) == 1);
    LK_CHECK(sql_long("SELECT count(*) FROM credentials", NULL) == 1);

    /* providers.list: same shape, no secret */
    LK_CHECK(admin("providers.list", "", &o) == LK_ST_OK);
    json_t *data = json_object_get(o, "data");
    LK_CHECK(json_array_size(data) == 1);
    if (json_array_size(data) == 1) {
        check_provider_shape(json_array_get(data, 0), "mock", T.provider_secret);
        LK_CHECK(strcmp(jstr(json_array_get(data, 0), "id"), T.prov1) == 0);
    }
    json_decref(o);
}

/* keys.create; the key is kept in T.keys (secret). Returns the key's index, -1 on failure. */
static int create_key(const char *body, char *id_out, size_t id_cap)
{
    json_t *o;
    int st = admin("keys.create", body, &o);
    LK_CHECK(st == LK_ST_OK);
    if (st != LK_ST_OK || T.nkeys >= 8) {
        json_decref(o);
        return -1;
    }
    const char *key = jstr(o, "key");
    lk_key_info_t info;
    LK_CHECK(lk_key_parse(key, strlen(key), &info) == LK_KEY_OK);
    char pub[32];
    lk_key_public_id(&info, pub, sizeof pub);
    LK_CHECK(strcmp(jstr(o, "id"), pub) == 0);
    LK_CHECK(json_object_get(o, "metadata") && json_is_object(json_object_get(o, "metadata")));
    LK_CHECK(json_is_array(json_object_get(o, "models")));
    LK_CHECK(strlen(jstr(o, "created_at")) == 20);
    LK_CHECK(!json_object_get(o, "hash"));
    int i = T.nkeys++;
    snprintf(T.keys[i], sizeof T.keys[i], "%s", key);
    snprintf(id_out, id_cap, "%s", pub);
    json_decref(o);
    return i;
}

static void test_keys(void)
{
    json_t *o;
    int k1 =
        create_key("{\"name\":\"k1\",\"user\":\"alice\",\"models\":[\"m1\"],\"metadata\":{\"team\":\"a\"}}",
                   T.key1_id, sizeof T.key1_id);
    int k2 = create_key("{\"name\":\"k2\"}", T.key2_id, sizeof T.key2_id);
    char id3[32], id4[32], id5[32];
    int k3 = create_key("{\"name\":\"k3\",\"env\":\"test\",\"expires_at\":\"2099-01-31T13:30:00.5+01:30\"}",
                        id3, sizeof id3);
    int k4 = create_key("{\"name\":\"k4\",\"expires_at\":4102444800}", id4, sizeof id4);
    int k5 = create_key("{\"name\":\"to-revoke\"}", id5, sizeof id5);
    LK_CHECK(k1 == 0 && k2 == 1 && k3 == 2 && k4 == 3 && k5 == 4);
    LK_CHECK(k3 >= 0 && strncmp(T.keys[k3], "lk_test_", 8) == 0);
    LK_CHECK(k1 >= 0 && strncmp(T.keys[k1], "lk_live_", 8) == 0);
    LK_CHECK(sql_long("SELECT extract(epoch FROM expires_at)::bigint FROM api_keys WHERE id = $1", id3) ==
             4073544000L);

    static const struct {
        const char *body, *code;
    } bad[] = {
        {"{\"name\":\"x\",\"hash\":\"00\"}", "field_not_settable"},
        {"{\"name\":\"x\",\"key\":\"lk_live_x\"}", "field_not_settable"},
        {"{\"name\":\"x\",\"env\":\"prod\"}", "invalid_field"},
        {"{\"name\":\"x\",\"expires_at\":\"tomorrow\"}", "invalid_field"},
        {"{\"name\":\"x\",\"expires_at\":\"2020-02-30T00:00:00Z\"}", "invalid_field"},
        {"{\"name\":\"x\",\"expires_at\":1000}", "invalid_field"},
        {"{\"name\":\"x\",\"metadata\":[1]}", "invalid_field"},
        {"{\"user\":\"x\"}", "missing_field"},
        {"{\"name\":\"x\",\"owner\":\"y\"}", "unknown_field"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = admin("keys.create", bad[i].body, &o);
        LK_CHECK(st == LK_ST_BAD_REQUEST && error_code_is(o, bad[i].code));
        if (st != LK_ST_BAD_REQUEST || !error_code_is(o, bad[i].code))
            fprintf(stderr, "   case %zu (%s) got status %d\n", i, bad[i].code, st);
        json_decref(o);
    }

    /* keys.list never shows a key or a hash */
    LK_CHECK(admin("keys.list", "", &o) == LK_ST_OK);
    json_t *data = json_object_get(o, "data");
    LK_CHECK(json_array_size(data) == 5);
    char *text = json_dumps(o, 0);
    for (int i = 0; i < T.nkeys; i++)
        LK_CHECK(text && !strstr(text, T.keys[i]));
    LK_CHECK(text && !strstr(text, "\"key\"") && !strstr(text, "hash"));
    free(text);
    json_t *first = json_array_get(data, 0);
    LK_CHECK(strcmp(jstr(first, "id"), T.key1_id) == 0 && strcmp(jstr(first, "user"), "alice") == 0);
    LK_CHECK(strcmp(jstr(json_object_get(first, "metadata"), "team"), "a") == 0);
    json_decref(o);

    LK_CHECK(admin("widgets.create", "{}", &o) == LK_ST_NOT_FOUND);
    json_decref(o);

    sql("UPDATE api_keys SET revoked_at = now() WHERE id = $1", id5, NULL);
    sql("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", id4, NULL);
}

/* ---------------------------------------------------------------- decide -- */

static int key_hash(const char *key, uint8_t hash[32])
{
    lk_msg_t m = msg_of(LK_MSG_KEY_HASH), r;
    m.u.key_hash.key = lk_str(key);
    if (call(W_VAULT, &m, &r) != 0 || r.env.type != LK_MSG_KEY_HASH_REP) return -1;
    memcpy(hash, r.u.key_hash_rep.hash, 32);
    return 0;
}

/* DECIDE into r (borrowing the policy client's frame). 0 / -1. */
static int decide(const uint8_t hash[32], const char *model, lk_msg_t *r)
{
    lk_msg_t m = msg_of(LK_MSG_DECIDE);
    memcpy(m.u.decide.key_hash, hash, 32);
    m.u.decide.model = lk_str(model);
    m.u.decide.endpoint = LK_STR_LIT("chat.completions");
    m.u.decide.body = LK_STR_LIT("{\"model\":\"m\"}");
    return call(W_POLICY, &m, r) == 0 && r->env.type == LK_MSG_DECIDE_REP ? 0 : -1;
}

static int refused(const lk_msg_t *r, lk_status_t st, const char *code)
{
    return r->u.decide_rep.status == st && lk_str_eq(r->u.decide_rep.error_code, code) &&
           r->u.decide_rep.message.len;
}

static void test_decide(void)
{
    uint8_t h1[32], h2[32], h3[32], h4[32], h5[32], again[32];
    LK_CHECK(key_hash(T.keys[0], h1) == 0 && key_hash(T.keys[0], again) == 0 && memcmp(h1, again, 32) == 0);
    LK_CHECK(key_hash(T.keys[1], h2) == 0 && memcmp(h1, h2, 32) != 0);
    LK_CHECK(key_hash(T.keys[2], h3) == 0 && key_hash(T.keys[3], h4) == 0 && key_hash(T.keys[4], h5) == 0);
    /* the stored hash is the vault's */
    char hex[65];
    lk_hex(hex, h1, 32);
    char q[200];
    snprintf(q, sizeof q, "SELECT count(*) FROM api_keys WHERE hash = '\\x%s'::bytea AND id = $1", hex);
    LK_CHECK(sql_long(q, T.key1_id) == 1);
    /* malformed keys are refused by the vault too */
    lk_msg_t m = msg_of(LK_MSG_KEY_HASH), r;
    m.u.key_hash.key = LK_STR_LIT("lk_live_short");
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAUTHORIZED);

    LK_CHECK(decide(h1, "m1", &r) == 0);
    const lk_decide_rep_t *d = &r.u.decide_rep;
    LK_CHECK(d->status == LK_ST_OK && d->decision == LK_DECISION_ALLOW);
    LK_CHECK(lk_str_eq(d->tenant, "default") && lk_str_eq(d->key_id, T.key1_id) &&
             lk_str_eq(d->user, "alice"));
    LK_CHECK(lk_str_eq(d->provider_id, T.prov1) && lk_str_eq(d->provider_kind, "openai-compatible"));
    LK_CHECK(lk_str_eq(d->base_url, "http://127.0.0.1:9/v1") && lk_str_eq(d->cred_id, T.cred1));
    LK_CHECK(lk_str_eq(d->upstream_model, "m1") && d->policy_id.len == 0 && d->rule_id.len == 0);

    /* scope, revocation, expiry, unknown keys, unknown models */
    LK_CHECK(decide(h1, "m2", &r) == 0 && refused(&r, LK_ST_FORBIDDEN, "model_not_allowed"));
    LK_CHECK(lk_str_eq(r.u.decide_rep.key_id, T.key1_id)); /* identity kept for the audit */
    LK_CHECK(decide(h5, "m1", &r) == 0 && refused(&r, LK_ST_UNAUTHORIZED, "key_revoked"));
    LK_CHECK(decide(h4, "m1", &r) == 0 && refused(&r, LK_ST_UNAUTHORIZED, "key_expired"));
    uint8_t unknown[32];
    randombytes_buf(unknown, sizeof unknown);
    LK_CHECK(decide(unknown, "m1", &r) == 0 && refused(&r, LK_ST_UNAUTHORIZED, "invalid_api_key"));
    LK_CHECK(decide(h2, "nope", &r) == 0 && refused(&r, LK_ST_NOT_FOUND, "model_not_found"));
    LK_CHECK(lk_str_eq(r.u.decide_rep.message,
                       "The model `nope` does not exist or you do not have access to it."));
    LK_CHECK(decide(h2, "bad\xff", &r) == 0 && refused(&r, LK_ST_NOT_FOUND, "model_not_found"));
    LK_CHECK(decide(h2, "m2", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    LK_CHECK(decide(h3, "m2", &r) == 0 && r.u.decide_rep.status == LK_ST_OK); /* test key, far expiry */

    /* a catch-all provider: unknown models route there, explicit matches still win */
    char body[512];
    json_t *o;
    snprintf(body, sizeof body,
             "{\"name\":\"any\",\"kind\":\"anthropic\",\"base_url\":\"https://"
             "api.example.com\",\"api_key\":\"%s\"}",
             T.provider2_secret);
    LK_CHECK(admin("providers.create", body, &o) == LK_ST_OK);
    snprintf(T.prov2, sizeof T.prov2, "%s", jstr(o, "id"));
    snprintf(T.cred2, sizeof T.cred2, "%s", jstr(json_object_get(o, "credential"), "id"));
    json_decref(o);
    LK_CHECK(decide(h2, "nope", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    LK_CHECK(lk_str_eq(r.u.decide_rep.provider_id, T.prov2) &&
             lk_str_eq(r.u.decide_rep.provider_kind, "anthropic"));
    LK_CHECK(lk_str_eq(r.u.decide_rep.cred_id, T.cred2));
    LK_CHECK(decide(h2, "m1", &r) == 0 && lk_str_eq(r.u.decide_rep.provider_id, T.prov1));
    /* a provider without a credential is not a route */
    sql("INSERT INTO providers (id, tenant_id, name, kind, base_url, models, created_at) "
        "VALUES ('prov_nocred', 'default', 'nocred', 'openai', 'https://x.example.com', '{m9}', now() - "
        "interval '1 day')",
        NULL, NULL);
    LK_CHECK(decide(h2, "m9", &r) == 0 && lk_str_eq(r.u.decide_rep.provider_id, T.prov2));

    /* a retry (same rid, new call id) gets the same answer */
    lk_msg_t a = msg_of(LK_MSG_DECIDE), ra;
    memcpy(a.u.decide.key_hash, h1, 32);
    a.u.decide.model = LK_STR_LIT("m1");
    LK_CHECK(call(W_POLICY, &a, &ra) == 0 && ra.u.decide_rep.status == LK_ST_OK);
    uint64_t first = a.env.call_id;
    a.env.deadline_ms = 0;
    LK_CHECK(call(W_POLICY, &a, &ra) == 0 && ra.env.call_id != first && ra.u.decide_rep.status == LK_ST_OK);
    LK_CHECK(lk_str_eq(ra.u.decide_rep.cred_id, T.cred1));
}

/* --------------------------------------------------------- key lifecycle -- */

/* ADMIN_REQ op on one object (id), for tenant; like admin(). */
static int admin_obj(const char *op, const char *tenant, const char *id, const char *body, json_t **out)
{
    lk_msg_t m = msg_of(LK_MSG_ADMIN_REQ), r;
    m.u.admin_req.op = lk_str(op);
    m.u.admin_req.tenant = lk_str(tenant);
    m.u.admin_req.actor = LK_STR_LIT("adm_test");
    m.u.admin_req.role = LK_STR_LIT("admin");
    m.u.admin_req.object_id = lk_str(id);
    m.u.admin_req.json = lk_str(body);
    *out = NULL;
    if (call(W_VAULT, &m, &r) != 0 || r.env.type != LK_MSG_ADMIN_REP) return -1;
    lk_str_t j = r.u.admin_rep.json;
    for (int i = 0; i < T.nkeys; i++) /* an old key never reappears */
        LK_CHECK(!memmem(j.ptr, j.len, T.keys[i], strlen(T.keys[i])));
    if (r.u.admin_rep.status == LK_ST_OK) LK_CHECK(!memmem(j.ptr, j.len, "hash", 4));
    *out = json_loadb(j.ptr, j.len, 0, NULL);
    LK_CHECK(*out != NULL);
    return (int)r.u.admin_rep.status;
}

static void test_key_lifecycle(void)
{
    json_t *o;
    char id[32];
    int k = create_key("{\"name\":\"life\",\"models\":[\"m1\"]}", id, sizeof id);
    LK_CHECK(k >= 0);
    if (k < 0) return;

    /* get: the public view, never the key; another tenant or a malformed id: not found */
    LK_CHECK(admin_obj("keys.get", "default", id, "", &o) == LK_ST_OK);
    LK_CHECK(strcmp(jstr(o, "id"), id) == 0 && strcmp(jstr(o, "status"), "active") == 0);
    LK_CHECK(json_is_null(json_object_get(o, "revoked_at")) && !json_object_get(o, "key"));
    json_decref(o);
    sql("INSERT INTO tenants (id, name) VALUES ('other', 'Other') ON CONFLICT DO NOTHING", NULL, NULL);
    static const char *const ops[] = {"keys.get", "keys.update", "keys.rotate", "keys.revoke"};
    for (size_t i = 0; i < 4; i++) {
        LK_CHECK(admin_obj(ops[i], "other", id, i == 1 ? "{\"name\":\"x\"}" : "{}", &o) == LK_ST_NOT_FOUND &&
                 error_code_is(o, "not_found"));
        json_decref(o);
        LK_CHECK(admin_obj(ops[i], "default", "key_a-b", "{}", &o) == LK_ST_NOT_FOUND);
        json_decref(o);
        LK_CHECK(admin_obj(ops[i], "default", "", "{}", &o) == LK_ST_NOT_FOUND);
        json_decref(o);
    }
    LK_CHECK(sql_long("SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL AND name = 'life'",
                      id) == 1);

    /* update: scopes change; identity and secret fields are refused by name */
    LK_CHECK(admin_obj("keys.update", "default", id, "{\"models\":[\"m2\"],\"user\":\"zed\",\"metadata\":{}}",
                       &o) == LK_ST_OK);
    LK_CHECK(strcmp(jstr(o, "user"), "zed") == 0 && strcmp(jstr(o, "name"), "life") == 0);
    LK_CHECK(strcmp(json_string_value(json_array_get(json_object_get(o, "models"), 0)), "m2") == 0);
    json_decref(o);
    static const char *const refused_fields[] = {"id", "hash", "key", "tenant", "tenant_id"};
    for (size_t i = 0; i < 5; i++) {
        char body[100];
        snprintf(body, sizeof body, "{\"%s\":\"x\"}", refused_fields[i]);
        LK_CHECK(admin_obj("keys.update", "default", id, body, &o) == LK_ST_BAD_REQUEST &&
                 error_code_is(o, "field_not_settable"));
        json_t *e = json_object_get(o, "error");
        char want[40];
        snprintf(want, sizeof want, "`%s`", refused_fields[i]);
        LK_CHECK(strstr(jstr(e, "message"), want) != NULL);
        json_decref(o);
    }
    uint8_t h[32], hn[32];
    lk_msg_t r;
    LK_CHECK(key_hash(T.keys[k], h) == 0);
    LK_CHECK(decide(h, "m1", &r) == 0 && refused(&r, LK_ST_FORBIDDEN, "model_not_allowed"));
    LK_CHECK(decide(h, "m2", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);

    /* rotate: a new key with the same scopes, the old one until now + overlap */
    LK_CHECK(admin_obj("keys.rotate", "default", id, "{\"overlap_seconds\":2592001}", &o) ==
             LK_ST_BAD_REQUEST);
    json_decref(o);
    LK_CHECK(admin_obj("keys.rotate", "default", id, "{\"overlap_seconds\":100}", &o) == LK_ST_OK);
    json_t *nk = json_object_get(o, "key"), *prev = json_object_get(o, "previous");
    const char *secret = jstr(nk, "key");
    lk_key_info_t info;
    LK_CHECK(lk_key_parse(secret, strlen(secret), &info) == LK_KEY_OK);
    LK_CHECK(strcmp(jstr(prev, "id"), id) == 0 && strlen(jstr(prev, "expires_at")) == 20);
    LK_CHECK(strcmp(jstr(nk, "user"), "zed") == 0 && strcmp(jstr(nk, "id"), id) != 0);
    char new_id[32];
    snprintf(new_id, sizeof new_id, "%s", jstr(nk, "id"));
    if (T.nkeys < 8) snprintf(T.keys[T.nkeys++], sizeof T.keys[0], "%s", secret);
    LK_CHECK(key_hash(secret, hn) == 0);
    json_decref(o);
    long left =
        sql_long("SELECT extract(epoch FROM expires_at - now())::bigint FROM api_keys WHERE id = $1", id);
    LK_CHECK(left >= 95 && left <= 100);
    LK_CHECK(decide(h, "m2", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    LK_CHECK(decide(hn, "m2", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    LK_CHECK(decide(hn, "m1", &r) == 0 && refused(&r, LK_ST_FORBIDDEN, "model_not_allowed"));
    /* a longer overlap keeps the earlier expiry */
    LK_CHECK(admin_obj("keys.rotate", "default", id, "", &o) == LK_ST_OK);
    if (T.nkeys < 8)
        snprintf(T.keys[T.nkeys++], sizeof T.keys[0], "%s", jstr(json_object_get(o, "key"), "key"));
    json_decref(o);
    LK_CHECK(sql_long("SELECT extract(epoch FROM expires_at - now())::bigint FROM api_keys WHERE id = $1",
                      id) <= 100);

    /* revoke: at once, idempotent, and the revoked key cannot be rotated */
    LK_CHECK(admin_obj("keys.revoke", "default", new_id, "", &o) == LK_ST_OK);
    LK_CHECK(strcmp(jstr(o, "status"), "revoked") == 0 && strlen(jstr(o, "revoked_at")) == 20);
    char at[32];
    snprintf(at, sizeof at, "%s", jstr(o, "revoked_at"));
    json_decref(o);
    LK_CHECK(decide(hn, "m2", &r) == 0 && refused(&r, LK_ST_UNAUTHORIZED, "key_revoked"));
    LK_CHECK(admin_obj("keys.revoke", "default", new_id, "{}", &o) == LK_ST_OK &&
             strcmp(jstr(o, "revoked_at"), at) == 0);
    json_decref(o);
    LK_CHECK(admin_obj("keys.revoke", "default", new_id, "{\"when\":1}", &o) == LK_ST_BAD_REQUEST);
    json_decref(o);
    LK_CHECK(admin_obj("keys.rotate", "default", new_id, "{}", &o) == LK_ST_CONFLICT);
    json_decref(o);

    /* providers.get */
    LK_CHECK(admin_obj("providers.get", "default", T.prov1, "", &o) == LK_ST_OK &&
             strcmp(jstr(o, "id"), T.prov1) == 0 && json_is_object(json_object_get(o, "credential")));
    json_decref(o);
    LK_CHECK(admin_obj("providers.get", "other", T.prov1, "", &o) == LK_ST_NOT_FOUND);
    json_decref(o);
}

/* --------------------------------------------------------------- cred_get -- */

/* 1 if CRED_GET answers exactly secret, 0 if ERROR with want_status (and message), -1 otherwise. */
static int cred_get(const char *tenant, const char *cred, const char *secret, lk_status_t want_status)
{
    lk_msg_t m = msg_of(LK_MSG_CRED_GET), r;
    m.u.cred_get.tenant = lk_str(tenant);
    m.u.cred_get.cred_id = lk_str(cred);
    if (call(W_VAULT, &m, &r) != 0) return -1;
    int rc = -1;
    if (r.env.type == LK_MSG_CRED_GET_REP && secret) {
        lk_str_t s = r.u.cred_get_rep.secret;
        rc = s.len == strlen(secret) && memcmp(s.ptr, secret, s.len) == 0 ? 1 : -1;
    } else if (r.env.type == LK_MSG_ERROR && r.u.error.status == want_status) {
        rc = 0;
        if (want_status == LK_ST_INTEGRITY &&
            !lk_str_eq(r.u.error.message, "credential integrity check failed"))
            rc = -1;
    }
    sodium_memzero(zmq_msg_data(&cl(W_VAULT)->frame), zmq_msg_size(&cl(W_VAULT)->frame));
    return rc;
}

static void flip(const char *column, const char *cred)
{
    char q[256];
    snprintf(q, sizeof q, "UPDATE credentials SET %s = set_byte(%s, 3, get_byte(%s, 3) # 1) WHERE id = $1",
             column, column, column);
    sql(q, cred, NULL);
}

static void test_cred_get(void)
{
    LK_CHECK(cred_get("default", T.cred1, T.provider_secret, 0) == 1);
    LK_CHECK(cred_get("default", T.cred2, T.provider2_secret, 0) == 1);
    LK_CHECK(cred_get("other", T.cred1, NULL, LK_ST_NOT_FOUND) == 0); /* another tenant's credential */
    LK_CHECK(cred_get("default", "cred_nope", NULL, LK_ST_NOT_FOUND) == 0);
    LK_CHECK(cred_get("default", "cred_\xff", NULL, LK_ST_NOT_FOUND) == 0);

    /* one flipped byte in ciphertext, nonce or wrapped DEK: refused; flipped back: fine */
    static const char *const cols[] = {"ciphertext", "nonce", "wrapped_dek"};
    for (int i = 0; i < 3; i++) {
        flip(cols[i], T.cred1);
        LK_CHECK(cred_get("default", T.cred1, NULL, LK_ST_INTEGRITY) == 0);
        flip(cols[i], T.cred1);
        LK_CHECK(cred_get("default", T.cred1, T.provider_secret, 0) == 1);
    }
    /* another row's sealed secret moved into this row: refused */
    sql("CREATE TEMP TABLE saved AS SELECT * FROM credentials WHERE id = $1", T.cred1, NULL);
    sql("UPDATE credentials c SET ciphertext = o.ciphertext, nonce = o.nonce, wrapped_dek = o.wrapped_dek "
        "FROM credentials o WHERE c.id = $1 AND o.id = $2",
        T.cred1, T.cred2);
    LK_CHECK(cred_get("default", T.cred1, NULL, LK_ST_INTEGRITY) == 0);
    /* the row moved to another tenant or provider: refused too */
    sql("UPDATE credentials c SET ciphertext = s.ciphertext, nonce = s.nonce, wrapped_dek = s.wrapped_dek "
        "FROM saved s WHERE c.id = $1",
        T.cred1, NULL);
    LK_CHECK(cred_get("default", T.cred1, T.provider_secret, 0) == 1);
    sql("UPDATE credentials SET provider_id = $2 WHERE id = $1", T.cred1, T.prov2);
    LK_CHECK(cred_get("default", T.cred1, NULL, LK_ST_INTEGRITY) == 0);
    sql("UPDATE credentials SET provider_id = $2 WHERE id = $1", T.cred1, T.prov1);
    sql("INSERT INTO tenants (id, name) VALUES ('other', 'Other') ON CONFLICT DO NOTHING", NULL, NULL);
    sql("UPDATE credentials SET tenant_id = 'other' WHERE id = $1", T.cred1, NULL);
    LK_CHECK(cred_get("other", T.cred1, NULL, LK_ST_INTEGRITY) == 0);
    sql("UPDATE credentials SET tenant_id = 'default' WHERE id = $1", T.cred1, NULL);
    LK_CHECK(cred_get("default", T.cred1, T.provider_secret, 0) == 1);
    sql("DROP TABLE saved", NULL, NULL);
    char line[128];
    snprintf(line, sizeof line, "credential integrity check failed for credential %s", T.cred1);
    LK_CHECK(log_contains(W_VAULT, line));
}

/* ----------------------------------------------------------- audit, hold -- */

static int64_t audit(const char *rid, const char *event_id, const char *kind, int64_t ptok)
{
    lk_msg_t m = msg_of(LK_MSG_AUDIT), r;
    m.env.rid = lk_str(rid);
    lk_audit_t *a = &m.u.audit;
    a->event_id = lk_str(event_id);
    a->kind = lk_str(kind);
    a->time_ms = lk_now_ms();
    a->tenant = LK_STR_LIT("default");
    a->key_id = lk_str(T.key1_id);
    a->model = LK_STR_LIT("m1");
    a->decision = LK_STR_LIT("allow");
    a->http_status = 200;
    a->prompt_tokens = ptok;
    a->completion_tokens = 7;
    a->total_tokens = -1;
    a->stream = 1;
    if (call(W_AUDIT, &m, &r) != 0 || r.env.type != LK_MSG_AUDIT_REP) return -1;
    return r.u.audit_rep.seq;
}

static void test_audit_and_hold(void)
{
    char rid[LK_RID_LEN + 1], e1[LK_UUID_LEN + 1], e2[LK_UUID_LEN + 1];
    lk_rid_new(rid);
    lk_uuid_derive(e1, rid, "request.accepted");
    lk_uuid_derive(e2, rid, "request.completed");
    int64_t s1 = audit(rid, e1, "request.accepted", -1);
    int64_t s1b =
        audit(rid, e1, "request.accepted", -1); /* a retry (another time_ms: the database de-duplicates) */
    LK_CHECK(s1 > 0 && s1 == s1b);
    int64_t s2 = audit(rid, e2, "request.completed", 12); /* same rid, another event */
    LK_CHECK(s2 > s1);
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events WHERE request_id = $1", rid) == 2);
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events WHERE event_id = $1 AND prompt_tokens IS NULL "
                      "AND completion_tokens = 7 AND total_tokens IS NULL AND stream AND http_status = 200 "
                      "AND upstream_status IS NULL AND kind = 'request.accepted'",
                      e1) == 1);
    LK_CHECK(sql_long("SELECT prompt_tokens FROM audit_events WHERE event_id = $1", e2) == 12);
    /* the same event from another request id object, after the cache forgot it: the database de-duplicates */
    sql("UPDATE audit_events SET model = 'x' WHERE event_id = $1", e1, NULL);
    char rid2[LK_RID_LEN + 1];
    lk_rid_new(rid2);
    LK_CHECK(audit(rid2, e1, "request.accepted", -1) == s1);
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events WHERE event_id = $1", e1) == 1);
    /* a malformed event id is refused, not stored */
    lk_msg_t m = msg_of(LK_MSG_AUDIT), r;
    m.u.audit.event_id = LK_STR_LIT("not-a-uuid");
    m.u.audit.kind = LK_STR_LIT("request.accepted");
    LK_CHECK(call(W_AUDIT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_BAD_REQUEST);

    m = msg_of(LK_MSG_HOLD);
    m.u.hold.tenant = LK_STR_LIT("default");
    m.u.hold.key_id = lk_str(T.key1_id);
    m.u.hold.reason = LK_STR_LIT("test");
    LK_CHECK(call(W_APPROVAL, &m, &r) == 0 && r.env.type == LK_MSG_HOLD_REP &&
             r.u.hold_rep.outcome == LK_HOLD_PENDING && r.u.hold_rep.hold_id.len > 5 &&
             r.u.hold_rep.expires_ms > lk_now_ms()); /* holds: tests/unit/services/test_approval_pg.c */
    /* a message for another service is refused, not crashed on */
    m = msg_of(LK_MSG_DECIDE);
    LK_CHECK(call(W_APPROVAL, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_BAD_REQUEST);
    m = msg_of(LK_MSG_HOLD);
    m.u.hold.tenant = LK_STR_LIT("default");
    m.u.hold.key_id = LK_STR_LIT("k");
    LK_CHECK(call(W_AUDIT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_BAD_REQUEST);
}

/* ------------------------------------------- group commit (pipelined batches) -- */

#define BURST 48

typedef struct {
    char rid[LK_RID_LEN + 1], eid[LK_UUID_LEN + 1];
    const char *model, *tenant; /* tenant NULL: "default" */
    lk_msg_type_t type;
    lk_status_t status;
    int64_t seq;
} burst_ev_t;

/* Sends every event without waiting (so that they queue and are group-committed).
 * The call id of the first; 0 if a send failed. */
static uint64_t burst_send(burst_ev_t *ev, int n)
{
    uint64_t first = T.call_id + 1;
    for (int i = 0; i < n; i++) {
        lk_msg_t m = msg_of(LK_MSG_AUDIT);
        m.env.rid = lk_str(ev[i].rid);
        m.env.call_id = ++T.call_id;
        m.env.deadline_ms = lk_now_ms() + 10000;
        m.u.audit.event_id = lk_str(ev[i].eid);
        m.u.audit.kind = LK_STR_LIT("request.completed");
        m.u.audit.time_ms = lk_now_ms();
        m.u.audit.tenant = lk_str(ev[i].tenant ? ev[i].tenant : "default");
        m.u.audit.model = lk_str(ev[i].model);
        m.u.audit.decision = LK_STR_LIT("allow");
        m.u.audit.http_status = 200;
        m.u.audit.prompt_tokens = i;
        m.u.audit.completion_tokens = m.u.audit.total_tokens = -1;
        ev[i].type = LK_MSG_NONE;
        if (send_msg(cl(W_AUDIT), &m) != 0) return 0;
    }
    return first;
}

/* Collects the replies of a burst_send by call id. The number received. */
static int burst_collect(burst_ev_t *ev, int n, uint64_t first)
{
    int got = 0;
    lk_msg_t r;
    while (first && got < n && recv_msg(cl(W_AUDIT), &r, 10000) == 0) {
        if (r.env.call_id < first || r.env.call_id >= first + (uint64_t)n) continue;
        burst_ev_t *e = &ev[r.env.call_id - first];
        if (e->type != LK_MSG_NONE) continue; /* one reply per call */
        e->type = r.env.type;
        e->status = r.env.type == LK_MSG_ERROR ? r.u.error.status : LK_ST_OK;
        e->seq = r.env.type == LK_MSG_AUDIT_REP ? r.u.audit_rep.seq : 0;
        got++;
    }
    return got;
}

static int burst(burst_ev_t *ev, int n)
{
    return burst_collect(ev, n, burst_send(ev, n));
}

/* The chain_seq stored for an event id (what AUDIT_REP's seq is, proto/audit.md); 0 if
 * it is not stored, -1 if more than once. */
static long stored_seq(const char *eid)
{
    long n = sql_long("SELECT count(*) FROM audit_events WHERE event_id = $1", eid);
    return n == 0 ? 0 : n > 1 ? -1 : sql_long("SELECT chain_seq FROM audit_events WHERE event_id = $1", eid);
}

static void test_audit_group_commit(void)
{
    static burst_ev_t ev[BURST];
    for (int i = 0; i < BURST; i++) {
        lk_rid_new(ev[i].rid);
        lk_uuid_derive(ev[i].eid, ev[i].rid, "request.completed");
        ev[i].model = "m_burst";
    }
    memcpy(ev[5].eid, ev[4].eid, sizeof ev[4].eid);            /* the same event twice in one batch */
    snprintf(ev[7].eid, sizeof ev[7].eid, "%s", "not-a-uuid"); /* refused before the database */
    LK_CHECK(burst(ev, BURST) == BURST);
    int ok = 0;
    for (int i = 0; i < BURST; i++) {
        if (i == 7) {
            LK_CHECK(ev[i].type == LK_MSG_ERROR && ev[i].status == LK_ST_BAD_REQUEST);
            continue;
        }
        /* each reply carries its own event's seq: not a neighbour's */
        int right = ev[i].type == LK_MSG_AUDIT_REP && ev[i].seq > 0 && ev[i].seq == stored_seq(ev[i].eid);
        LK_CHECK(right);
        ok += right;
    }
    LK_CHECK(ok == BURST - 1);
    LK_CHECK(ev[4].seq == ev[5].seq);
    /* group-committed: the events share few transactions */
    char arr[BURST * (LK_UUID_LEN + 1) + 8], *p = arr;
    *p++ = '{';
    for (int i = 0; i < BURST; i++)
        if (i != 7) p += sprintf(p, "%s%s", p == arr + 1 ? "" : ",", ev[i].eid);
    strcpy(p, "}");
    long xacts =
        sql_long("SELECT count(DISTINCT xmin::text) FROM audit_events WHERE event_id = ANY($1::uuid[])", arr);
    fprintf(stderr, "   %d events of one burst were committed in %ld transactions\n", BURST - 2, xacts);
    LK_CHECK(xacts >= 1 && xacts <= BURST / 2);

    /* one statement failing inside a batch: nothing of that batch is answered as
     * recorded unless it is stored, and a retry stores each event once */
    sql("CREATE OR REPLACE FUNCTION lk_test_poison() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN IF NEW.model = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF; RETURN NEW; END$$",
        NULL, NULL);
    sql("CREATE TRIGGER lk_test_poison BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION "
        "lk_test_poison()",
        NULL, NULL);
    for (int i = 0; i < BURST; i++) {
        lk_rid_new(ev[i].rid);
        lk_uuid_derive(ev[i].eid, ev[i].rid, "request.completed");
        ev[i].model = i == 20 ? "poison" : "m_burst2";
    }
    LK_CHECK(burst(ev, BURST) == BURST);
    int refused = 0, consistent = 1;
    for (int i = 0; i < BURST; i++) {
        long st = stored_seq(ev[i].eid);
        if (ev[i].type == LK_MSG_AUDIT_REP)
            consistent &= st > 0 && st == ev[i].seq;
        else
            consistent &= ev[i].type == LK_MSG_ERROR && st == 0, refused++;
    }
    LK_CHECK(consistent); /* answered as recorded <=> stored */
    LK_CHECK(ev[20].type == LK_MSG_ERROR && stored_seq(ev[20].eid) == 0);
    fprintf(stderr, "   a poisoned event failed its batch: %d of %d events refused\n", refused, BURST);
    sql("DROP TRIGGER lk_test_poison ON audit_events", NULL, NULL);
    sql("DROP FUNCTION lk_test_poison()", NULL, NULL);
    ev[20].model = "m_burst2";
    LK_CHECK(burst(ev, BURST) == BURST); /* the retry, as the edge resends */
    int all = 1;
    for (int i = 0; i < BURST; i++) {
        int right = ev[i].type == LK_MSG_AUDIT_REP && ev[i].seq > 0 && ev[i].seq == stored_seq(ev[i].eid);
        all &= right;
    }
    LK_CHECK(all);

    /* the connection dies under a batch (held up by a lock on the default chain): nothing is
     * answered as recorded unless it is stored, the worker reconnects, and the retry stores
     * each event once */
    for (int i = 0; i < BURST; i++) {
        lk_rid_new(ev[i].rid);
        lk_uuid_derive(ev[i].eid, ev[i].rid, "request.completed");
        ev[i].model = "m_burst3";
        ev[i].tenant = i == 0 ? "t_burst" : NULL; /* a first event handled alone does not wait */
    }
    sql("BEGIN", NULL, NULL);
    sql("SELECT 1 FROM audit_chain WHERE chain = 'default' FOR UPDATE", NULL, NULL);
    uint64_t first = burst_send(ev, BURST);
    msleep(300);
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lumkey-audit'",
        NULL, NULL);
    msleep(100);
    sql("ROLLBACK", NULL, NULL);
    LK_CHECK(burst_collect(ev, BURST, first) == BURST);
    consistent = 1;
    for (int i = 0; i < BURST; i++) {
        long st = stored_seq(ev[i].eid);
        consistent &= ev[i].type == LK_MSG_AUDIT_REP
                          ? st > 0 && st == ev[i].seq
                          : ev[i].type == LK_MSG_ERROR && ev[i].status == LK_ST_UNAVAILABLE && st == 0;
    }
    LK_CHECK(consistent);
    refused = 0;
    for (int i = 0; i < BURST; i++)
        refused += ev[i].type == LK_MSG_ERROR;
    fprintf(stderr, "   connection terminated under a burst: %d of %d events refused, then retried\n",
            refused, BURST);
    LK_CHECK(refused >= 1); /* the batch that waited for the lock lost its connection */
    LK_CHECK(burst(ev, BURST) == BURST);
    all = 1;
    for (int i = 0; i < BURST; i++)
        all &= ev[i].type == LK_MSG_AUDIT_REP && ev[i].seq > 0 && ev[i].seq == stored_seq(ev[i].eid);
    LK_CHECK(all);
}

/* ------------------------------------------- issue 10: anomaly and hdp in the chain -- */

static int64_t audit_ext(const char *tenant, const char *rid, const char *kind, const char *anom,
                         const char *hdp, lk_msg_t *r)
{
    char eid[LK_UUID_LEN + 1];
    lk_uuid_derive(eid, rid, kind);
    lk_msg_t m = msg_of(LK_MSG_AUDIT);
    m.env.rid = lk_str(rid);
    m.u.audit.event_id = lk_str(eid);
    m.u.audit.kind = lk_str(kind);
    m.u.audit.time_ms = lk_now_ms();
    m.u.audit.tenant = lk_str(tenant);
    m.u.audit.decision = LK_STR_LIT("allow");
    m.u.audit.prompt_tokens = m.u.audit.completion_tokens = m.u.audit.total_tokens = -1;
    m.u.audit.anomaly = lk_str(anom);
    m.u.audit.hdp = lk_str(hdp);
    if (call(W_AUDIT, &m, r) != 0) return -1;
    return r->env.type == LK_MSG_AUDIT_REP ? r->u.audit_rep.seq : 0;
}

static int audit_admin(const char *tenant, const char *op, const char *body, json_t **out)
{
    lk_msg_t m = msg_of(LK_MSG_ADMIN_REQ), r;
    m.u.admin_req.op = lk_str(op);
    m.u.admin_req.tenant = lk_str(tenant);
    m.u.admin_req.actor = LK_STR_LIT("adm_test");
    m.u.admin_req.role = LK_STR_LIT("admin");
    m.u.admin_req.json = lk_str(body);
    *out = NULL;
    if (call(W_AUDIT, &m, &r) != 0 || r.env.type != LK_MSG_ADMIN_REP) return -1;
    *out = json_loadb(r.u.admin_rep.json.ptr, r.u.admin_rep.json.len, 0, NULL);
    return (int)r.u.admin_rep.status;
}

static void test_audit_anomaly_hdp(void)
{
    const char *ten = "anomchain";
    const char *anom = "{\"score\": 0.875, \"reasons\": [{\"k\": \"new_tool\", \"v\": \"delete_database\", "
                       "\"c\": 2.3}], \"cold\": false, \"n\": 120}";
    const char *hdp = "{\"ok\":true,\"principal\":\"alice@example.com\",\"scope\":[\"chat\"]}";
    char rid[3][LK_RID_LEN + 1];
    lk_msg_t r;
    for (int i = 0; i < 3; i++)
        lk_rid_new(rid[i]);
    /* an event without the fields (as before migration 0017), one with both, one with the score only */
    LK_CHECK(audit_ext(ten, rid[0], "request.accepted", NULL, NULL, &r) > 0);
    LK_CHECK(audit_ext(ten, rid[1], "request.accepted", anom, hdp, &r) > 0);
    LK_CHECK(audit_ext(ten, rid[2], "request.accepted", "{\"score\":0.01,\"reasons\":[]}", NULL, &r) > 0);
    LK_CHECK(
        sql_long(
            "SELECT count(*) FROM audit_events WHERE request_id = $1 AND anomaly IS NULL AND hdp IS NULL",
            rid[0]) == 1);
    LK_CHECK(
        sql_long("SELECT count(*) FROM audit_events WHERE request_id = $1 AND (anomaly->>'score')::float8 = "
                 "0.875 AND anomaly->'reasons'->0->>'v' = 'delete_database' AND hdp->>'principal' = "
                 "'alice@example.com'",
                 rid[1]) == 1);
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events WHERE request_id = $1 AND hdp IS NULL AND "
                      "anomaly->>'score' = '0.01'",
                      rid[2]) == 1);
    /* the SIEM shapes carry them */
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events e WHERE request_id = $1 AND "
                      "(audit_ocsf(e)::jsonb->'unmapped'->'anomaly'->>'score')::float8 = 0.875 AND "
                      "audit_ocsf(e)::jsonb->'unmapped'->'hdp'->>'ok' = 'true' AND "
                      "audit_ecs(e)::jsonb->'lumkey'->'anomaly'->'reasons'->0->>'k' = 'new_tool' AND "
                      "audit_ecs(e)::jsonb->'lumkey'->'hdp'->>'principal' = 'alice@example.com'",
                      rid[1]) == 1);
    /* the query API returns them as JSON objects */
    json_t *out = NULL;
    LK_CHECK(audit_admin(ten, "audit.query", "{\"limit\":10}", &out) == LK_ST_OK);
    json_t *ev = json_array_get(json_object_get(out, "events"), 1);
    LK_CHECK(json_is_object(json_object_get(ev, "anomaly")) &&
             json_real_value(json_object_get(json_object_get(ev, "anomaly"), "score")) == 0.875);
    LK_CHECK(json_is_object(json_object_get(ev, "hdp")));
    LK_CHECK(json_is_null(json_object_get(json_array_get(json_object_get(out, "events"), 0), "anomaly")));
    json_decref(out);
    /* the chain verifies in C, old-style row included */
    LK_CHECK(audit_admin(ten, "audit.verify", "{}", &out) == LK_ST_OK);
    LK_CHECK(json_is_true(json_object_get(out, "ok")) &&
             json_integer_value(json_object_get(out, "events_checked")) == 3);
    json_decref(out);
    /* and the database's canonical encoding agrees with the stored hashes */
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events e WHERE chain = $1 AND "
                      "row_hash = sha256(prev_hash || convert_to(audit_canonical(e), 'UTF8'))",
                      ten) == 3);
    /* not JSON objects: refused, nothing stored */
    char bad[LK_RID_LEN + 1];
    lk_rid_new(bad);
    LK_CHECK(audit_ext(ten, bad, "request.accepted", "{\"score\":", NULL, &r) == 0 &&
             r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_BAD_REQUEST);
    LK_CHECK(audit_ext(ten, bad, "request.accepted", NULL, "[1,2]", &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_BAD_REQUEST);
    LK_CHECK(sql_long("SELECT count(*) FROM audit_events WHERE request_id = $1", bad) == 0);
    /* a lowered score is named by verify */
    sql("UPDATE audit_events SET anomaly = jsonb_set(anomaly, '{score}', '0.1') WHERE request_id = $1",
        rid[1], NULL);
    LK_CHECK(audit_admin(ten, "audit.verify", "{}", &out) == LK_ST_OK);
    LK_CHECK(json_is_false(json_object_get(out, "ok")) &&
             json_integer_value(json_object_get(out, "first_bad_seq")) == 2);
    json_decref(out);
    /* so is a provenance result removed */
    sql("UPDATE audit_events SET anomaly = $2::text::jsonb WHERE request_id = $1", rid[1], anom);
    LK_CHECK(audit_admin(ten, "audit.verify", "{}", &out) == LK_ST_OK);
    LK_CHECK(json_is_true(json_object_get(out, "ok")));
    json_decref(out);
    sql("UPDATE audit_events SET hdp = NULL WHERE request_id = $1", rid[1], NULL);
    LK_CHECK(audit_admin(ten, "audit.verify", "{}", &out) == LK_ST_OK);
    LK_CHECK(json_is_false(json_object_get(out, "ok")) &&
             json_integer_value(json_object_get(out, "first_bad_seq")) == 2);
    json_decref(out);
}

/* ------------------------------------------------------- edge behaviour -- */

static void test_deadline_and_garbage(void)
{
    for (int w = 0; w < W_COUNT; w++) {
        lk_msg_t m = msg_of(LK_MSG_PING), r;
        m.env.deadline_ms = lk_now_ms() - 1000; /* nobody waits for this any more */
        m.env.call_id = ++T.call_id;
        LK_CHECK(send_msg(cl(w), &m) == 0);
        LK_CHECK(recv_msg(cl(w), &r, 300) != 0);
        LK_CHECK(send_raw(cl(w), "\x96\x01\x1e\xa1x\x01", 6) == 0); /* truncated */
        LK_CHECK(send_raw(cl(w), "\xdd\xff\xff\xff\xff", 5) == 0);  /* huge array header */
        LK_CHECK(send_raw(cl(w), "", 0) == 0);
        LK_CHECK(recv_msg(cl(w), &r, 300) != 0);
        LK_CHECK(wait_pong(w, 2000) == 0); /* still alive */
    }
    uint8_t h[32] = {0};
    lk_msg_t m = msg_of(LK_MSG_DECIDE), r;
    memcpy(m.u.decide.key_hash, h, 32);
    m.u.decide.model = LK_STR_LIT("m1");
    m.env.deadline_ms = lk_now_ms() - 1;
    m.env.call_id = ++T.call_id;
    LK_CHECK(send_msg(&T.cl[W_POLICY], &m) == 0);
    LK_CHECK(recv_msg(&T.cl[W_POLICY], &r, 300) != 0);
}

static void test_database_loss(void)
{
    /* the server drops the workers' connections: the next call reconnects transparently */
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'lumkey-%'", NULL,
        NULL);
    msleep(100);
    uint8_t h1[32];
    lk_msg_t r;
    LK_CHECK(key_hash(T.keys[0], h1) == 0);
    LK_CHECK(decide(h1, "m1", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    char rid[LK_RID_LEN + 1], e[LK_UUID_LEN + 1];
    lk_rid_new(rid);
    lk_uuid_derive(e, rid, "request.accepted");
    LK_CHECK(audit(rid, e, "request.accepted", 1) > 0);
    LK_CHECK(cred_get("default", T.cred1, T.provider_secret, 0) == 1);
    LK_CHECK(log_contains(W_POLICY, "database connection lost") ||
             log_contains(W_POLICY, "database connection restored"));

    /* no database at all: UNAVAILABLE, never a guess */
    char dead[600], log[256];
    snprintf(dead, sizeof dead, "host=127.0.0.1 port=1 user=postgres dbname=nope connect_timeout=1");
    static const int which[] = {W_POLICY, W_AUDIT, W_VAULT};
    setenv("LUMKEY_DB_WAIT_MS", "1", 1);
    for (int i = 0; i < 3; i++) {
        int w = which[i];
        char ep[200], name[32];
        snprintf(ep, sizeof ep, "ipc://%s/dead-%s.ipc", T.run_dir, NAMES[w]);
        snprintf(log, sizeof log, "%s/dead-%s.log", T.log_dir, NAMES[w]);
        snprintf(name, sizeof name, "dead-%s", NAMES[w]);
        char *argv[] = {(char *)T.bin[w], "--db", dead, "--endpoint", ep, NULL};
        wt_proc_t p = {0};
        LK_CHECK(wt_proc_start(&p, name, argv, log) == 0);
        client_t c;
        client_open(&c, ep);
        T.override[w] = &c;
        LK_CHECK(wait_pong(w, 10000) == 0);
        lk_msg_t m = msg_of(LK_MSG_PING);
        if (w == W_POLICY) {
            m = msg_of(LK_MSG_DECIDE);
            m.u.decide.model = LK_STR_LIT("m1");
        } else if (w == W_AUDIT) {
            m = msg_of(LK_MSG_AUDIT);
            m.u.audit.event_id = lk_str(e);
            m.u.audit.kind = LK_STR_LIT("request.accepted");
        } else {
            m = msg_of(LK_MSG_KEY_HASH);
            m.u.key_hash.key = lk_str(T.keys[0]);
        }
        LK_CHECK(call(w, &m, &r) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_UNAVAILABLE);
        T.override[w] = NULL;
        client_close(&c);
        LK_CHECK(wt_proc_stop(&p, SIGTERM, 5000) == 0);
    }
    setenv("LUMKEY_DB_WAIT_MS", "5000", 1);
}

static void test_kill9_restart(void)
{
    uint8_t h1[32];
    lk_msg_t r;
    LK_CHECK(key_hash(T.keys[0], h1) == 0);
    for (int w = 0; w < W_COUNT; w++) {
        if (w == W_VAULT) continue; /* the vault restarts below */
        LK_CHECK(wt_proc_stop(&T.procs[w], SIGKILL, 5000) == 128 + SIGKILL);
        start_worker(w, NULL, NULL);
        LK_CHECK(wait_pong(w, 10000) == 0);
    }
    LK_CHECK(decide(h1, "m1", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    char rid[LK_RID_LEN + 1], e[LK_UUID_LEN + 1];
    lk_rid_new(rid);
    lk_uuid_derive(e, rid, "request.completed");
    LK_CHECK(audit(rid, e, "request.completed", 3) > 0);
}

static void test_sealed_vault(void)
{
    uint8_t h[32];
    lk_msg_t m, r;
    /* another master key: sealed, and says why in its log */
    char other[200];
    snprintf(other, sizeof other, "%s/other.key", T.tmp);
    char *init[] = {(char *)T.bin[W_VAULT], "--init-master-key", other, NULL};
    LK_CHECK(wt_proc_run(init, NULL, 0, NULL) == 0);
    LK_CHECK(wt_proc_stop(&T.procs[W_VAULT], SIGKILL, 5000) == 128 + SIGKILL);
    start_worker(W_VAULT, "--master-key-file", other);
    LK_CHECK(wait_pong(W_VAULT, 10000) == 0);
    LK_CHECK(key_hash(T.keys[0], h) != 0);
    m = msg_of(LK_MSG_KEY_HASH);
    m.u.key_hash.key = lk_str(T.keys[0]);
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAVAILABLE && lk_str_eq(r.u.error.message, "vault is sealed"));
    LK_CHECK(cred_get("default", T.cred1, NULL, LK_ST_UNAVAILABLE) == 0);
    m = msg_of(LK_MSG_ADMIN_AUTH);
    m.u.admin_auth.token = lk_str(T.token);
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAVAILABLE);
    LK_CHECK(log_contains(W_VAULT, "master key does not match this database"));
    /* bootstrap with the wrong key refuses too */
    char *boot[] = {
        (char *)T.bin[W_VAULT], "--bootstrap-admin", "--tenant", "t2", "--master-key-file", other, NULL};
    char out[256];
    LK_CHECK(wt_proc_run(boot, out, sizeof out, NULL) == 1 && out[0] == '\0');
    LK_CHECK(wt_proc_stop(&T.procs[W_VAULT], SIGTERM, 5000) == 0);

    /* no key file at all: sealed */
    char missing[200];
    snprintf(missing, sizeof missing, "%s/missing.key", T.tmp);
    start_worker(W_VAULT, "--master-key-file", missing);
    LK_CHECK(wait_pong(W_VAULT, 10000) == 0);
    m = msg_of(LK_MSG_KEY_HASH);
    m.u.key_hash.key = lk_str(T.keys[0]);
    LK_CHECK(call(W_VAULT, &m, &r) == 0 && r.env.type == LK_MSG_ERROR &&
             r.u.error.status == LK_ST_UNAVAILABLE);
    LK_CHECK(wt_proc_stop(&T.procs[W_VAULT], SIGTERM, 5000) == 0);

    /* the right key again: unsealed, same hashes, same secrets */
    start_worker(W_VAULT, NULL, NULL);
    LK_CHECK(wait_pong(W_VAULT, 10000) == 0);
    uint8_t h1[32];
    LK_CHECK(key_hash(T.keys[0], h1) == 0);
    LK_CHECK(decide(h1, "m1", &r) == 0 && r.u.decide_rep.status == LK_ST_OK);
    LK_CHECK(cred_get("default", T.cred1, T.provider_secret, 0) == 1);
}

/* --------------------------------------------------------------- timings -- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Round-trip times of one call kind, one at a time (figures only: never a pass/fail criterion). */
static void time_calls(const char *what, int w, int n, void (*fill_msg)(lk_msg_t *, int), int same_rid)
{
    static int64_t us[2000];
    if (n > 2000) n = 2000;
    lk_msg_t m, r;
    int ok = 0;
    fill_msg(&m, 0);
    for (int i = 0; i < n; i++) {
        if (!same_rid) fill_msg(&m, i);
        m.env.deadline_ms = 0;
        int64_t t = lk_mono_us();
        ok += call(w, &m, &r) == 0 && r.env.type != LK_MSG_ERROR;
        us[i] = lk_mono_us() - t;
    }
    qsort(us, (size_t)n, sizeof us[0], cmp_i64);
    fprintf(stderr, "   %-34s n=%d ok=%d  p50 %5lld us  p99 %5lld us\n", what, n, ok, (long long)us[n / 2],
            (long long)us[n * 99 / 100]);
    LK_CHECK(ok == n);
}

static uint8_t s_h1[32];

static void fill_ping(lk_msg_t *m, int i)
{
    (void)i;
    *m = msg_of(LK_MSG_PING);
}

static void fill_key_hash(lk_msg_t *m, int i)
{
    (void)i;
    *m = msg_of(LK_MSG_KEY_HASH);
    m->u.key_hash.key = lk_str(T.keys[0]);
}

static void fill_decide(lk_msg_t *m, int i)
{
    (void)i;
    *m = msg_of(LK_MSG_DECIDE);
    memcpy(m->u.decide.key_hash, s_h1, 32);
    m->u.decide.model = LK_STR_LIT("m1");
    m->u.decide.endpoint = LK_STR_LIT("chat.completions");
    m->u.decide.body = LK_STR_LIT("{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
}

static void fill_cred_get(lk_msg_t *m, int i)
{
    (void)i;
    *m = msg_of(LK_MSG_CRED_GET);
    m->u.cred_get.tenant = LK_STR_LIT("default");
    m->u.cred_get.cred_id = lk_str(T.cred1);
}

static void fill_audit(lk_msg_t *m, int i)
{
    (void)i;
    static char eid[LK_UUID_LEN + 1];
    *m = msg_of(LK_MSG_AUDIT);
    lk_uuid_random(eid);
    m->u.audit.event_id = lk_str(eid);
    m->u.audit.kind = LK_STR_LIT("request.accepted");
    m->u.audit.tenant = LK_STR_LIT("default");
    m->u.audit.key_id = lk_str(T.key1_id);
    m->u.audit.model = LK_STR_LIT("m1");
    m->u.audit.prompt_tokens = -1;
    m->u.audit.completion_tokens = -1;
    m->u.audit.total_tokens = -1;
}

static void test_timings(void)
{
    LK_CHECK(key_hash(T.keys[0], s_h1) == 0);
    time_calls("KEY_HASH (vault, no database)", W_VAULT, 2000, fill_key_hash, 0);
    time_calls("DECIDE (policy, 1 prepared query)", W_POLICY, 2000, fill_decide, 0);
    time_calls("DECIDE retried (idempotency cache)", W_POLICY, 2000, fill_decide, 1);
    time_calls("CRED_GET (vault, query + 2 AEAD)", W_VAULT, 2000, fill_cred_get, 0);
    time_calls("AUDIT (insert, commit)", W_AUDIT, 2000, fill_audit, 0);
    time_calls("PING (worker loop only)", W_POLICY, 2000, fill_ping, 0);
}

/* ------------------------------------------------------------ no leaks -- */

static void check_no_secret_in(const char *path)
{
    LK_CHECK(!file_contains(path, T.provider_secret, strlen(T.provider_secret)));
    LK_CHECK(!file_contains(path, T.provider2_secret, strlen(T.provider2_secret)));
    LK_CHECK(!file_contains(path, T.token, strlen(T.token)));
    for (int i = 0; i < T.nkeys; i++)
        LK_CHECK(!file_contains(path, T.keys[i], strlen(T.keys[i])));
}

static void test_no_leaks(void)
{
    DIR *d = opendir(T.log_dir);
    int files = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[400];
        snprintf(path, sizeof path, "%s/%s", T.log_dir, e->d_name);
        check_no_secret_in(path);
        files++;
    }
    if (d) closedir(d);
    LK_CHECK(files >= 6);
    /* a database dump holds no secret either (only ciphertext and keyed hashes) */
    char cmd[1600], dump[300];
    snprintf(dump, sizeof dump, "%s/dump.sql", T.tmp);
    snprintf(cmd, sizeof cmd,
             "PGD=$(command -v pg_dump || ls -d /usr/lib/postgresql/*/bin/pg_dump 2>/dev/null | tail -n 1); "
             "[ -n \"$PGD\" ] && \"$PGD\" -d '%s' -f '%s' 2>/dev/null",
             T.conninfo, dump);
    if (system(cmd) == 0) {
        struct stat st;
        LK_CHECK(stat(dump, &st) == 0 && st.st_size > 1000);
        check_no_secret_in(dump);
        LK_CHECK(file_contains(dump, T.cred1, strlen(T.cred1))); /* the dump is real */
    } else {
        fprintf(stderr, "   (pg_dump not available: dump not checked)\n");
    }
}

/* ----------------------------------------------------------------- setup -- */

static void setup(void)
{
    snprintf(T.tmp, sizeof T.tmp, "/tmp/lkw-XXXXXX");
    if (!mkdtemp(T.tmp)) die("mkdtemp");
    snprintf(T.run_dir, sizeof T.run_dir, "%s/run", T.tmp);
    snprintf(T.log_dir, sizeof T.log_dir, "%s/logs", T.tmp);
    snprintf(T.master, sizeof T.master, "%s/master.key", T.tmp);
    mkdir(T.run_dir, 0700);
    mkdir(T.log_dir, 0700);

    snprintf(T.dbname, sizeof T.dbname, "lkw_%d_%u", (int)getpid(), randombytes_uniform(1000000));
    char *mk[] = {"/bin/bash", (char *)T.pgctl, "createdb", (char *)T.pg_dir, T.dbname, NULL};
    if (wt_proc_run(mk, T.conninfo, sizeof T.conninfo, NULL) != 0)
        die("pgctl.sh createdb failed (is the pg fixture up?)");
    T.conninfo[strcspn(T.conninfo, "\n")] = '\0';
    T.pg = PQconnectdb(T.conninfo);
    if (PQstatus(T.pg) != CONNECTION_OK) die("cannot connect to the test database");
    PQclear(PQexec(T.pg, "SET client_min_messages = warning"));

    setenv("LUMKEY_DB", T.conninfo, 1);
    setenv("LUMKEY_RUN_DIR", T.run_dir, 1);
    setenv("LUMKEY_MASTER_KEY_FILE", T.master, 1);
    setenv("LUMKEY_DB_WAIT_MS", "5000", 1);
    setenv("LK_LOG_LEVEL", "debug", 1);
    /* this test changes rows with SQL and asks the workers at once, faster than
     * PostgreSQL delivers the NOTIFY: it checks the uncached path; the caches
     * (and their invalidation) are tests/e2e/test_cache.py's */
    setenv("LUMKEY_CACHE_MAX_AGE_MS", "0", 1);
    unsetenv("LUMKEY_POLICY_ENDPOINT");
    unsetenv("LUMKEY_VAULT_ENDPOINT");
    unsetenv("LUMKEY_APPROVAL_ENDPOINT");
    unsetenv("LUMKEY_AUDIT_ENDPOINT");

    char pre[24], pre2[24];
    randombytes_buf(pre, 12);
    lk_hex(pre2, (const uint8_t *)pre, 10);
    snprintf(T.provider_secret, sizeof T.provider_secret, "sk-canary-%s", pre2);
    randombytes_buf(pre, 12);
    lk_hex(pre2, (const uint8_t *)pre, 10);
    snprintf(T.provider2_secret, sizeof T.provider2_secret, "sk-ant-canary-%s", pre2);
}

static void test_tools(void)
{
    char out[4096], log[256];
    snprintf(log, sizeof log, "%s/tools.log", T.log_dir);
    /* migrations: apply, apply again (idempotent), status */
    char *mig[] = {(char *)T.migrate, NULL};
    LK_CHECK(wt_proc_run(mig, NULL, 0, log) == 0);
    LK_CHECK(sql_long("SELECT count(*) FROM schema_migrations", NULL) >= 2);
    long applied = sql_long("SELECT count(*) FROM schema_migrations", NULL);
    LK_CHECK(wt_proc_run(mig, NULL, 0, log) == 0);
    LK_CHECK(sql_long("SELECT count(*) FROM schema_migrations", NULL) == applied);
    char *st[] = {(char *)T.migrate, "--status", NULL};
    LK_CHECK(wt_proc_run(st, out, sizeof out, log) == 0);
    LK_CHECK(strstr(out, "0001_init") && strstr(out, "applied") && !strstr(out, "pending"));
    /* a changed migration is refused */
    sql("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001_init'", NULL, NULL);
    LK_CHECK(wt_proc_run(mig, NULL, 0, log) == 1);
    LK_CHECK(wt_proc_run(st, out, sizeof out, log) == 0 && strstr(out, "CHANGED"));
    sql("DELETE FROM schema_migrations WHERE version = '0001_init'", NULL, NULL);
    LK_CHECK(wt_proc_run(mig, NULL, 0, log) == 1); /* 0001 again on an existing schema: fails, rolled back */
    LK_CHECK(sql_long("SELECT count(*) FROM schema_migrations WHERE version = '0001_init'", NULL) == 0);
    sql("DROP SCHEMA public CASCADE", NULL, NULL);
    sql("CREATE SCHEMA public", NULL, NULL);
    /* two migrators at once on an empty database: one applies, the other waits and finds nothing to do */
    wt_proc_t a = {0}, b = {0};
    LK_CHECK(wt_proc_start(&a, "migrate-a", mig, log) == 0 && wt_proc_start(&b, "migrate-b", mig, log) == 0);
    int ra = wt_proc_stop(&a, 0, 30000), rb = wt_proc_stop(&b, 0, 30000);
    LK_CHECK(ra == 0 && rb == 0);
    LK_CHECK(sql_long("SELECT count(*) FROM schema_migrations", NULL) == applied);

    /* master key: created 0600, a second run leaves it alone */
    char *init[] = {(char *)T.bin[W_VAULT], "--init-master-key", T.master, NULL};
    LK_CHECK(wt_proc_run(init, NULL, 0, log) == 0);
    struct stat sb;
    LK_CHECK(stat(T.master, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == 65);
    char before[80] = {0}, after[80] = {0};
    FILE *f = fopen(T.master, "r");
    if (f) {
        LK_CHECK(fread(before, 1, sizeof before - 1, f) == 65);
        fclose(f);
    }
    LK_CHECK(wt_proc_run(init, NULL, 0, log) == 0);
    f = fopen(T.master, "r");
    if (f) {
        LK_CHECK(fread(after, 1, sizeof after - 1, f) == 65);
        fclose(f);
    }
    LK_CHECK(memcmp(before, after, sizeof before) == 0);
    sodium_memzero(before, sizeof before);
    sodium_memzero(after, sizeof after);

    /* bootstrap: the token alone on stdout; a second run exits 3 and prints nothing */
    char *boot[] = {(char *)T.bin[W_VAULT], "--bootstrap-admin", NULL};
    LK_CHECK(wt_proc_run(boot, out, sizeof out, log) == 0);
    size_t n = strcspn(out, "\n");
    LK_CHECK(out[n] == '\n' && out[n + 1] == '\0');
    out[n] = '\0';
    lk_key_info_t info;
    LK_CHECK(lk_key_parse(out, n, &info) == LK_KEY_OK && info.kind == LK_KEY_ADMIN);
    if (n < sizeof T.token) memcpy(T.token, out, n + 1);
    sodium_memzero(out, sizeof out);
    LK_CHECK(wt_proc_run(boot, out, sizeof out, log) == 3 && out[0] == '\0');
    LK_CHECK(sql_long("SELECT count(*) FROM admin_tokens", NULL) == 1);
}

static void usage(void)
{
    fprintf(stderr, "usage: test_workers_pg --pgctl PATH --pg-dir DIR --migrate BIN --vault BIN --policy BIN "
                    "--approval BIN --audit BIN\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--pgctl"))
            T.pgctl = v;
        else if (!strcmp(k, "--pg-dir"))
            T.pg_dir = v;
        else if (!strcmp(k, "--migrate"))
            T.migrate = v;
        else if (!strcmp(k, "--vault"))
            T.bin[W_VAULT] = v;
        else if (!strcmp(k, "--policy"))
            T.bin[W_POLICY] = v;
        else if (!strcmp(k, "--approval"))
            T.bin[W_APPROVAL] = v;
        else if (!strcmp(k, "--audit"))
            T.bin[W_AUDIT] = v;
        else
            usage();
    }
    if (!T.pgctl || !T.pg_dir || !T.migrate || !T.bin[0] || !T.bin[1] || !T.bin[2] || !T.bin[3]) usage();
    if (sodium_init() < 0) return 1;
    wt_proc_init();
    setup();

    LK_RUN(test_tools);
    T.zctx = zmq_ctx_new();
    int64_t t0 = lk_mono_us();
    for (int w = 0; w < W_COUNT; w++) {
        char ep[200];
        snprintf(ep, sizeof ep, "ipc://%s/%s.ipc", T.run_dir, NAMES[w]);
        start_worker(w, NULL, NULL);
        client_open(&T.cl[w], ep);
    }
    int up = 1;
    for (int w = 0; w < W_COUNT; w++)
        up &= wait_pong(w, 15000) == 0;
    LK_CHECK(up);
    fprintf(stderr, "   four workers answered PING in %.0f ms\n", (double)(lk_mono_us() - t0) / 1000.0);
    if (up) {
        for (int w = 0; w < W_COUNT; w++)
            LK_CHECK(log_contains(w, "\"msg\":\"ready"));
        LK_RUN(test_admin_auth);
        LK_RUN(test_providers);
        LK_RUN(test_keys);
        LK_RUN(test_decide);
        LK_RUN(test_key_lifecycle);
        LK_RUN(test_cred_get);
        LK_RUN(test_audit_and_hold);
        LK_RUN(test_audit_group_commit);
        LK_RUN(test_audit_anomaly_hdp);
        LK_RUN(test_deadline_and_garbage);
        LK_RUN(test_database_loss);
        LK_RUN(test_kill9_restart);
        LK_RUN(test_sealed_vault);
        LK_RUN(test_timings);
    }
    /* a clean stop: SIGTERM, exit status 0 (sanitizer builds: no leak either) */
    for (int w = 0; w < W_COUNT; w++) {
        int rc = wt_proc_stop(&T.procs[w], SIGTERM, 10000);
        LK_CHECK(rc == 0);
        if (rc != 0) fprintf(stderr, "   %s exited with %d on SIGTERM\n", NAMES[w], rc);
        client_close(&T.cl[w]);
    }
    LK_RUN(test_no_leaks);
    zmq_ctx_term(T.zctx);

    int failed = lk_test_failed;
    PQfinish(T.pg);
    /* drop the database and the temporary directory (kept on failure, for the logs) */
    char ci[600];
    snprintf(ci, sizeof ci, "%s", T.conninfo);
    char *db = strstr(ci, "dbname=");
    if (db) {
        snprintf(db, sizeof ci - (size_t)(db - ci), "dbname=postgres");
        PGconn *pg = PQconnectdb(ci);
        char q[128];
        snprintf(q, sizeof q, "DROP DATABASE IF EXISTS %s", T.dbname);
        PQclear(PQexec(pg, q));
        PQfinish(pg);
    }
    if (!failed) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T.tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", T.tmp);
    } else {
        fprintf(stderr, "logs kept in %s/logs\n", T.tmp);
    }
    return LK_TEST_DONE();
}
