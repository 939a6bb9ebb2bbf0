/*  audit_kafka - drains the audit outbox into Kafka, on its own thread. */
#include "audit_kafka.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lk_db.h"
#include "lk_log.h"

#define MAX_IN_FLIGHT 2000
#define PAGE          500

static const char SQL_LOCK[] =
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 1263001 AND classid = 0 "
    "AND granted AND pid = pg_backend_pid()) OR pg_try_advisory_lock(1263001)";
static const char SQL_FETCH[] =
    "SELECT o.id, o.chain, e.event_id::text, "
    "CASE WHEN e.seq IS NULL THEN NULL WHEN t.audit_siem_format = 'ecs' THEN audit_ecs(e) ELSE audit_ocsf(e) "
    "END "
    "FROM audit_outbox o LEFT JOIN audit_events e ON e.seq = o.event_seq AND e.time = o.event_time "
    "LEFT JOIN tenants t ON t.id = o.chain WHERE NOT (o.id = ANY ($1::text::bigint[])) ORDER BY o.id LIMIT "
    "500";
static const char SQL_DONE[] = "DELETE FROM audit_outbox WHERE id = ANY ($1::text::bigint[])";

struct audit_kafka {
    pthread_t thread;
    atomic_int stop;
    char *conninfo, *topic;
    rd_kafka_t *rk;
    lk_db_t *db;
    /* loop thread only */
    int64_t in_flight[MAX_IN_FLIGHT];
    size_t n_in_flight;
    int64_t *done;
    size_t n_done, cap_done;
    atomic_uint_fast64_t delivered, errors, inflight_count;
    atomic_int draining;
};

static void forget(audit_kafka_t *self, int64_t id)
{
    for (size_t i = 0; i < self->n_in_flight; i++)
        if (self->in_flight[i] == id) {
            self->in_flight[i] = self->in_flight[--self->n_in_flight];
            return;
        }
}

static void push_done(audit_kafka_t *self, int64_t id)
{
    if (self->n_done == self->cap_done) {
        size_t cap = self->cap_done ? self->cap_done * 2 : 1024;
        int64_t *d = realloc(self->done, cap * sizeof *d);
        if (!d) return; /* stays in flight; re-sent after a restart */
        self->done = d;
        self->cap_done = cap;
    }
    self->done[self->n_done++] = id;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    audit_kafka_t *self = opaque;
    int64_t id = (int64_t)(intptr_t)m->_private;
    atomic_fetch_sub(&self->inflight_count, 1);
    if (m->err) {
        atomic_fetch_add(&self->errors, 1);
        lk_log_warn("kafka delivery failed (will re-send): %s", rd_kafka_err2str(m->err));
        forget(self, id); /* fetched again from the outbox */
        return;
    }
    atomic_fetch_add(&self->delivered, 1);
    push_done(self, id);
}

/* "{1,2,3}" of ids into buf (malloc'd). */
static char *id_array(const int64_t *ids, size_t n)
{
    char *s = malloc(n * 21 + 3);
    if (!s) return NULL;
    size_t o = 0;
    s[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(s + o, i ? ",%lld" : "%lld", (long long)ids[i]);
    s[o++] = '}';
    s[o] = '\0';
    return s;
}

static void mark_done(audit_kafka_t *self)
{
    if (self->n_done == 0) return;
    char *arr = id_array(self->done, self->n_done);
    if (!arr) return;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, arr);
    PGresult *res = NULL;
    if (lk_db_exec(self->db, "ob_done", &p, &res) == LK_DB_OK) {
        for (size_t i = 0; i < self->n_done; i++)
            forget(self, self->done[i]);
        self->n_done = 0;
    }
    PQclear(res);
    free(arr);
}

/* Produces the next page of the outbox. Returns how many were produced. */
static int produce_page(audit_kafka_t *self)
{
    if (self->n_in_flight >= MAX_IN_FLIGHT - PAGE) return 0;
    PGresult *res = NULL;
    if (lk_db_exec(self->db, "ob_lock", NULL, &res) != LK_DB_OK) return 0;
    int mine = lk_db_bool(res, 0, 0);
    PQclear(res);
    atomic_store(&self->draining, mine);
    if (!mine) return 0;
    char *arr = id_array(self->in_flight, self->n_in_flight);
    if (!arr) return 0;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, arr);
    lk_db_rc_t rc = lk_db_exec(self->db, "ob_fetch", &p, &res);
    free(arr);
    if (rc != LK_DB_OK) return 0;
    int n = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t id = lk_db_i64(res, i, 0);
        if (lk_db_is_null(res, i, 3)) { /* the event is gone (retention): nothing to send */
            self->in_flight[self->n_in_flight++] = id;
            push_done(self, id);
            continue;
        }
        lk_str_t chain = lk_db_str(res, i, 1), eid = lk_db_str(res, i, 2), body = lk_db_str(res, i, 3);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            self->rk, RD_KAFKA_V_TOPIC(self->topic), RD_KAFKA_V_KEY((void *)chain.ptr, chain.len),
            RD_KAFKA_V_VALUE((void *)body.ptr, body.len),
            RD_KAFKA_V_HEADER("lumkey-event-id", eid.ptr, (ssize_t)eid.len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)(intptr_t)id),
            RD_KAFKA_V_END);
        if (err) {
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                lk_log_warn("kafka produce failed: %s", rd_kafka_err2str(err));
            break; /* this and later rows are fetched again: order kept */
        }
        self->in_flight[self->n_in_flight++] = id;
        atomic_fetch_add(&self->inflight_count, 1);
        n++;
    }
    PQclear(res);
    return n;
}

/* Every 10 s while there is something to say: the export's progress, for the log. */
static void report(audit_kafka_t *self, int64_t *next_ms, uint64_t *last_delivered, uint64_t *last_errors)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now < *next_ms) return;
    *next_ms = now + 10000;
    uint64_t d = atomic_load(&self->delivered), e = atomic_load(&self->errors);
    uint64_t f = atomic_load(&self->inflight_count);
    if (d == *last_delivered && e == *last_errors && f == 0) return;
    lk_log(
        f > 0 && d == *last_delivered ? LK_LOG_WARN : LK_LOG_INFO, NULL,
        "kafka export: %llu delivered (+%llu), %llu in flight, %llu delivery errors%s", (unsigned long long)d,
        (unsigned long long)(d - *last_delivered), (unsigned long long)f, (unsigned long long)e,
        f > 0 && d == *last_delivered ? " - the broker is not taking events; they wait in the outbox" : "");
    *last_delivered = d;
    *last_errors = e;
}

static void *run(void *arg)
{
    audit_kafka_t *self = arg;
    int64_t next_report = 0;
    uint64_t last_delivered = 0, last_errors = 0;
    while (!atomic_load(&self->stop)) {
        report(self, &next_report, &last_delivered, &last_errors);
        int n = produce_page(self);
        rd_kafka_poll(self->rk, n > 0 ? 0 : 50);
        mark_done(self);
        if (n == 0 && self->n_in_flight == 0) rd_kafka_poll(self->rk, 50);
    }
    rd_kafka_flush(self->rk, 5000);
    rd_kafka_poll(self->rk, 0);
    mark_done(self);
    return NULL;
}

audit_kafka_t *audit_kafka_start(const char *conninfo, const char *brokers, const char *topic)
{
    audit_kafka_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    char err[512];
    self->topic = strdup(topic && *topic ? topic : "lumkey.audit");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {{"bootstrap.servers", brokers},
                           {"enable.idempotence", "true"},
                           {"acks", "all"},
                           {"message.timeout.ms", "0"},
                           {"linger.ms", "5"},
                           {"reconnect.backoff.max.ms", "1000"},
                           {"client.id", "lumkey-audit"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            lk_log_error("kafka setting %s: %s", kv[i][0], err);
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, self);
    self->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!self->rk) {
        lk_log_error("kafka producer: %s", err);
        goto fail;
    }
    self->db = lk_db_new(conninfo, "lumkey-audit-kafka", 30000);
    if (!self->db || lk_db_prepare(self->db, "ob_lock", SQL_LOCK) != 0 ||
        lk_db_prepare(self->db, "ob_fetch", SQL_FETCH) != 0 ||
        lk_db_prepare(self->db, "ob_done", SQL_DONE) != 0)
        goto fail;
    if (pthread_create(&self->thread, NULL, run, self) != 0) goto fail;
    lk_log_info("kafka export on (topic %s)", self->topic);
    return self;
fail:
    if (self->rk) rd_kafka_destroy(self->rk);
    lk_db_destroy(&self->db);
    free(self->topic);
    free(self);
    return NULL;
}

void audit_kafka_stop(audit_kafka_t **self_p)
{
    if (!self_p || !*self_p) return;
    audit_kafka_t *self = *self_p;
    atomic_store(&self->stop, 1);
    pthread_join(self->thread, NULL);
    rd_kafka_destroy(self->rk);
    lk_db_destroy(&self->db);
    free(self->done);
    free(self->topic);
    free(self);
    *self_p = NULL;
}

audit_kafka_stats_t audit_kafka_stats(const audit_kafka_t *self)
{
    audit_kafka_t *s = (audit_kafka_t *)self;
    return (audit_kafka_stats_t){atomic_load(&s->delivered), atomic_load(&s->errors),
                                 atomic_load(&s->inflight_count), atomic_load(&s->draining)};
}
