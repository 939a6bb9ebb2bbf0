/*  edge_rpc - calls from the edge to the workers, inside the h2o event loop. */
#include "edge_rpc.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "edge_metrics.h"
#include "lk_log.h"
#include "lk_util.h"

#define SLOT_BITS        16
#define SLOT_COUNT       (1u << SLOT_BITS)
#define PING_INTERVAL_MS 1000

struct edge_call {
    uint64_t call_id; /* 0 = free slot */
    edge_rpc_cb cb;
    void *data;
    h2o_timeout_entry_t timer;
    edge_rpc_t *rpc;
    uint32_t next_free;
    edge_svc_t svc;
    int64_t start_us;
};

typedef struct {
    edge_rpc_t *rpc;
    edge_svc_t svc;
    void *zsock;
    h2o_socket_t *hsock;
    int64_t last_pong_ms;
} svc_conn_t;

struct edge_rpc {
    h2o_loop_t *loop;
    void *zctx;
    svc_conn_t svcs[EDGE_SVC_COUNT];
    edge_call_t *slots;
    uint32_t free_head;
    uint64_t generation;
    h2o_timeout_t timeout;
    h2o_timeout_t zero;
    h2o_timeout_entry_t recheck;
    h2o_timeout_t ping_timeout;
    h2o_timeout_entry_t ping_timer;
    lk_buf_t out;
    edge_rpc_stats_t stats;
};

static const char *SVC_NAMES[EDGE_SVC_COUNT] = {"policy", "vault", "approval", "audit"};

const char *edge_svc_name(edge_svc_t svc)
{
    return svc < EDGE_SVC_COUNT ? SVC_NAMES[svc] : "unknown";
}

static void free_slot(edge_rpc_t *self, edge_call_t *call)
{
    if (h2o_timeout_is_linked(&call->timer)) h2o_timeout_unlink(&call->timer);
    call->call_id = 0;
    call->cb = NULL;
    call->data = NULL;
    call->next_free = self->free_head;
    self->free_head = (uint32_t)(call - self->slots);
}

static void on_call_timeout(h2o_timeout_entry_t *entry)
{
    edge_call_t *call = H2O_STRUCT_FROM_MEMBER(edge_call_t, timer, entry);
    edge_rpc_t *self = call->rpc;
    edge_rpc_cb cb = call->cb;
    void *data = call->data;
    self->stats.timeouts++;
    edge_metrics_call(call->svc, -1);
    free_slot(self, call);
    if (cb) cb(data, NULL);
}

static void dispatch_reply(edge_rpc_t *self, svc_conn_t *conn, zmq_msg_t *frame)
{
    uint8_t *buf = zmq_msg_data(frame);
    size_t len = zmq_msg_size(frame);
    lk_msg_t msg;
    if (lk_proto_decode(buf, len, &msg) != 0) {
        lk_log_warn("undecodable reply from %s (%zu bytes) dropped", SVC_NAMES[conn->svc], len);
        return;
    }
    if (msg.env.type == LK_MSG_PONG && msg.env.call_id == 0) {
        conn->last_pong_ms = lk_now_ms();
        return;
    }
    conn->last_pong_ms = lk_now_ms();
    uint64_t id = msg.env.call_id;
    edge_call_t *call = &self->slots[id & (SLOT_COUNT - 1)];
    if (id == 0 || call->call_id != id) {
        self->stats.late_replies++;
        lk_log_debug("late or unknown reply from %s dropped", SVC_NAMES[conn->svc]);
    } else {
        edge_rpc_cb cb = call->cb;
        void *data = call->data;
        self->stats.replies++;
        edge_metrics_call(call->svc, (double)(lk_mono_us() - call->start_us) / 1e6);
        free_slot(self, call);
        if (cb) cb(data, &msg);
    }
    if (lk_proto_is_secret(msg.env.type)) sodium_memzero(buf, len);
}

static void drain(edge_rpc_t *self, svc_conn_t *conn)
{
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(conn->zsock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, conn->zsock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return;
        }
        int more = zmq_msg_more(&frame);
        dispatch_reply(self, conn, &frame);
        zmq_msg_close(&frame);
        while (more) { /* unexpected extra frames: discard */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            if (zmq_msg_recv(&extra, conn->zsock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&extra);
                break;
            }
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
    }
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    svc_conn_t *conn = sock->data;
    drain(conn->rpc, conn);
}

static void on_recheck(h2o_timeout_entry_t *entry)
{
    edge_rpc_t *self = H2O_STRUCT_FROM_MEMBER(edge_rpc_t, recheck, entry);
    for (int i = 0; i < EDGE_SVC_COUNT; i++)
        drain(self, &self->svcs[i]);
}

static void schedule_recheck(edge_rpc_t *self)
{
    if (!h2o_timeout_is_linked(&self->recheck)) h2o_timeout_link(self->loop, &self->zero, &self->recheck);
}

static int send_msg(edge_rpc_t *self, svc_conn_t *conn, lk_msg_t *msg)
{
    lk_buf_t *out = &self->out;
    lk_buf_t secure;
    if (lk_proto_is_secret(msg->env.type)) {
        lk_buf_init(&secure, 1);
        out = &secure;
    }
    out->len = 0;
    int rc = -1;
    if (lk_proto_encode(msg, out) != 0) {
        lk_log_error("could not encode a %s message", lk_proto_type_name(msg->env.type));
        goto cleanup;
    }
    if (zmq_send(conn->zsock, out->data, out->len, ZMQ_DONTWAIT) < 0) {
        if (errno != EAGAIN) lk_log_warn("send to %s failed: %s", SVC_NAMES[conn->svc], zmq_strerror(errno));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (out != &self->out) lk_buf_free(out); /* wipes */
    schedule_recheck(self);
    return rc;
}

static void on_ping(h2o_timeout_entry_t *entry)
{
    edge_rpc_t *self = H2O_STRUCT_FROM_MEMBER(edge_rpc_t, ping_timer, entry);
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        lk_msg_t msg = {0};
        msg.env.version = LK_PROTO_VERSION;
        msg.env.type = LK_MSG_PING;
        msg.env.rid = LK_STR_LIT("ping");
        msg.env.call_id = 0;
        msg.env.deadline_ms = lk_now_ms() + PING_INTERVAL_MS;
        (void)send_msg(self, &self->svcs[i], &msg);
    }
    h2o_timeout_link(self->loop, &self->ping_timeout, &self->ping_timer);
}

edge_rpc_t *edge_rpc_new(h2o_loop_t *loop, const char *const endpoints[EDGE_SVC_COUNT], uint64_t timeout_ms)
{
    edge_rpc_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->loop = loop;
    self->zctx = zmq_ctx_new();
    self->slots = calloc(SLOT_COUNT, sizeof(edge_call_t));
    if (!self->zctx || !self->slots) goto fail;
    /* slot 0 is never used, so call id 0 means "no call" */
    self->free_head = 1;
    for (uint32_t i = 1; i < SLOT_COUNT; i++) {
        self->slots[i].rpc = self;
        self->slots[i].timer.cb = on_call_timeout;
        self->slots[i].next_free = i + 1 < SLOT_COUNT ? i + 1 : 0;
    }
    h2o_timeout_init(loop, &self->timeout, timeout_ms);
    h2o_timeout_init(loop, &self->zero, 0);
    self->recheck.cb = on_recheck;
    lk_buf_init(&self->out, 0);

    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        svc_conn_t *c = &self->svcs[i];
        c->rpc = self;
        c->svc = (edge_svc_t)i;
        c->zsock = zmq_socket(self->zctx, ZMQ_DEALER);
        if (!c->zsock) goto fail;
        int one = 1, zero = 0, hwm = 100000, ivl = 100, ivl_max = 1000;
        zmq_setsockopt(c->zsock, ZMQ_IMMEDIATE, &one, sizeof one);
        zmq_setsockopt(c->zsock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(c->zsock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(c->zsock, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(c->zsock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(c->zsock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
        /* endpoints may be a comma-separated list of replicas */
        char *list = strdup(endpoints[i]), *save = NULL;
        if (!list) goto fail;
        for (char *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
            if (zmq_connect(c->zsock, ep) != 0) {
                lk_log_error("cannot connect to %s at %s: %s", SVC_NAMES[i], ep, zmq_strerror(errno));
                free(list);
                goto fail;
            }
        }
        free(list);
        int fd;
        size_t fdsz = sizeof fd;
        if (zmq_getsockopt(c->zsock, ZMQ_FD, &fd, &fdsz) != 0) goto fail;
        /* DONT_READ: h2o must not consume libzmq's signalling fd; dup: h2o closes its own */
        c->hsock = h2o_evloop_socket_create(loop, dup(fd), H2O_SOCKET_FLAG_DONT_READ);
        c->hsock->data = c;
        h2o_socket_read_start(c->hsock, on_readable);
    }
    h2o_timeout_init(loop, &self->ping_timeout, PING_INTERVAL_MS);
    self->ping_timer.cb = on_ping;
    on_ping(&self->ping_timer);
    return self;
fail:
    edge_rpc_destroy(&self);
    return NULL;
}

void edge_rpc_destroy(edge_rpc_t **self_p)
{
    edge_rpc_t *self = *self_p;
    if (!self) return;
    if (h2o_timeout_is_linked(&self->ping_timer)) h2o_timeout_unlink(&self->ping_timer);
    if (h2o_timeout_is_linked(&self->recheck)) h2o_timeout_unlink(&self->recheck);
    if (self->slots)
        for (uint32_t i = 0; i < SLOT_COUNT; i++)
            if (h2o_timeout_is_linked(&self->slots[i].timer)) h2o_timeout_unlink(&self->slots[i].timer);
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        if (self->svcs[i].hsock) h2o_socket_close(self->svcs[i].hsock);
        if (self->svcs[i].zsock) zmq_close(self->svcs[i].zsock);
    }
    if (self->zctx) zmq_ctx_term(self->zctx);
    lk_buf_free(&self->out);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

edge_call_t *edge_rpc_call(edge_rpc_t *self, edge_svc_t svc, lk_msg_t *msg, edge_rpc_cb cb, void *data)
{
    if (self->free_head == 0) {
        lk_log_error("too many calls in flight");
        self->stats.send_failures++;
        return NULL;
    }
    uint32_t idx = self->free_head;
    edge_call_t *call = &self->slots[idx];
    self->generation++;
    uint64_t id = (self->generation << SLOT_BITS) | idx;
    msg->env.version = LK_PROTO_VERSION;
    msg->env.call_id = id;
    if (send_msg(self, &self->svcs[svc], msg) != 0) {
        self->stats.send_failures++;
        return NULL;
    }
    self->free_head = call->next_free;
    call->call_id = id;
    call->cb = cb;
    call->data = data;
    call->svc = svc;
    call->start_us = lk_mono_us();
    h2o_timeout_link(self->loop, &self->timeout, &call->timer);
    self->stats.calls++;
    return call;
}

void edge_rpc_cancel(edge_rpc_t *self, edge_call_t *call)
{
    if (call && call->call_id) free_slot(self, call);
}

int64_t edge_rpc_last_pong_ms(edge_rpc_t *self, edge_svc_t svc)
{
    return self->svcs[svc].last_pong_ms;
}

edge_rpc_stats_t edge_rpc_stats(edge_rpc_t *self)
{
    return self->stats;
}
