/*  edge_rpc - calls from the edge to the workers, inside the h2o event loop. */
#include "edge_rpc.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "edge_metrics.h"
#include "lk_curve.h"
#include "lk_log.h"
#include "lk_util.h"

#define SLOT_BITS        16
#define SLOT_COUNT       (1u << SLOT_BITS)
#define PING_INTERVAL_MS 1000
#define MAX_PEERS        64 /* resolved replicas per service */
#define MAX_DNS          4  /* dns+tcp:// names per service */
#define PEER_LEN         96

struct edge_call {
    uint64_t call_id; /* 0 = free slot */
    edge_rpc_cb cb;
    void *data;
    h2o_timeout_entry_t timer;
    edge_rpc_t *rpc;
    uint32_t next_free;
    edge_svc_t svc;
    int64_t start_us;
    uint8_t *sent; /* the encoded request, kept for one retry (sodium memory if secret) */
    size_t sent_len;
    int secret, retried;
};

typedef struct {
    edge_rpc_t *rpc;
    edge_svc_t svc;
    void *zsock;
    h2o_socket_t *hsock;
    int64_t last_pong_ms;
    /* replicas found by DNS: names asked, the answers (under rpc->mu), what is connected */
    char dns[MAX_DNS][256];
    int ndns;
    char resolved[MAX_PEERS][PEER_LEN];
    int nresolved, resolved_ok;
    uint64_t resolved_gen, applied_gen;
    char peers[MAX_PEERS][PEER_LEN];
    int npeers, nstatic;
    int recheck; /* sent on since the last recheck: its ZMQ_FD may have been consumed */
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
    lk_curve_t curve;
    /* the resolver thread re-resolves dns+tcp:// names every dns_ms */
    pthread_t resolver;
    int resolver_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;
    int dns_ms;
    h2o_timeout_t dns_timeout;
    h2o_timeout_entry_t dns_timer;
};

static const char *SVC_NAMES[EDGE_SVC_COUNT] = {"policy", "vault", "approval", "audit"};

const char *edge_svc_name(edge_svc_t svc)
{
    return svc < EDGE_SVC_COUNT ? SVC_NAMES[svc] : "unknown";
}

static void forget_sent(edge_call_t *call)
{
    if (!call->sent) return;
    if (call->secret)
        sodium_free(call->sent); /* wipes */
    else
        free(call->sent);
    call->sent = NULL;
    call->sent_len = 0;
}

static void free_slot(edge_rpc_t *self, edge_call_t *call)
{
    if (h2o_timeout_is_linked(&call->timer)) h2o_timeout_unlink(&call->timer);
    forget_sent(call);
    call->call_id = 0;
    call->cb = NULL;
    call->data = NULL;
    call->next_free = self->free_head;
    self->free_head = (uint32_t)(call - self->slots);
}

static int send_msg(edge_rpc_t *self, svc_conn_t *conn, lk_msg_t *msg, edge_call_t *keep);

/* Sends a timed-out call once more, with a fresh deadline and the same rid and
 * call id, to every connected replica; a worker that already answered it
 * answers from its idempotency cache. 0 / -1 (not retried). */
static int retry(edge_rpc_t *self, edge_call_t *call)
{
    if (call->retried || !call->sent) return -1;
    lk_msg_t msg;
    if (lk_proto_decode(call->sent, call->sent_len, &msg) != 0) return -1;
    msg.env.deadline_ms = lk_now_ms() + (int64_t)self->timeout.timeout;
    /* the copy is re-made from the re-encoded message, so decode views must not outlive it */
    uint8_t *old = call->sent;
    int secret = call->secret;
    call->sent = NULL;
    /* The DEALER picks pipes round-robin, so a single resend could land on the
     * same hung replica again. npeers back-to-back copies reach every live
     * replica; the first answer wins, the others are dropped as late replies
     * (workers are idempotent on the request). Timeouts are rare: the extra
     * work is only on this path. */
    svc_conn_t *conn = &self->svcs[call->svc];
    int copies = conn->npeers < 1 ? 1 : (conn->npeers > 8 ? 8 : conn->npeers), rc = -1;
    for (int i = 0; i < copies; i++)
        if (send_msg(self, conn, &msg, NULL) == 0) rc = 0;
    if (secret) {
        sodium_free(old);
    } else {
        free(old);
    }
    call->sent_len = 0;
    if (rc != 0) return -1;
    call->retried = 1;
    self->stats.retries++;
    h2o_timeout_link(self->loop, &self->timeout, &call->timer);
    return 0;
}

static void on_call_timeout(h2o_timeout_entry_t *entry)
{
    edge_call_t *call = H2O_STRUCT_FROM_MEMBER(edge_call_t, timer, entry);
    edge_rpc_t *self = call->rpc;
    if (retry(self, call) == 0) {
        lk_log_debug("a call to %s timed out; retried on another replica", SVC_NAMES[call->svc]);
        return;
    }
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

/* Receives until EAGAIN. A receive that finds nothing reads the socket's
 * mailbox exactly as asking ZMQ_EVENTS does (libzmq runs process_commands
 * before giving up), so afterwards the edge-triggered ZMQ_FD is armed again;
 * asking ZMQ_EVENTS before each receive as well cost a mailbox read (a poll
 * and a getpid) per reply. A send on another socket made meanwhile (a reply's
 * callback sends the next call) schedules its own re-check (send_msg); one on
 * this socket is covered by the EAGAIN that ends this drain. */
static void drain(edge_rpc_t *self, svc_conn_t *conn)
{
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, conn->zsock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            if (errno == EAGAIN) conn->recheck = 0;
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
    /* only the sockets sent on: asking ZMQ_EVENTS costs a few system calls each */
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        if (!self->svcs[i].recheck) continue;
        self->svcs[i].recheck = 0;
        drain(self, &self->svcs[i]);
    }
}

static void schedule_recheck(edge_rpc_t *self)
{
    if (!h2o_timeout_is_linked(&self->recheck)) h2o_timeout_link(self->loop, &self->zero, &self->recheck);
}

/* Encodes and sends msg; with keep, a copy of the encoded bytes is kept in it for a retry. */
static int send_msg(edge_rpc_t *self, svc_conn_t *conn, lk_msg_t *msg, edge_call_t *keep)
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
    if (keep) {
        keep->secret = out != &self->out;
        keep->sent = keep->secret ? sodium_malloc(out->len) : malloc(out->len);
        if (keep->sent) {
            memcpy(keep->sent, out->data, out->len);
            keep->sent_len = out->len;
        }
    }
    rc = 0;
cleanup:
    if (out != &self->out) lk_buf_free(out); /* wipes */
    conn->recheck = 1;
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
        (void)send_msg(self, &self->svcs[i], &msg, NULL);
    }
    h2o_timeout_link(self->loop, &self->ping_timeout, &self->ping_timer);
}

/* Every address of a "dns+tcp://NAME:PORT" entry as tcp:// endpoints into out. -1 = lookup failed. */
static int resolve(const char *entry, char out[MAX_PEERS][PEER_LEN], int *n)
{
    const char *hp = entry + strlen("dns+tcp://");
    const char *colon = strrchr(hp, ':');
    *n = 0;
    if (!colon || colon == hp || (size_t)(colon - hp) >= 256) return -1;
    char host[256];
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) return -1;
    for (struct addrinfo *a = res; a && *n < MAX_PEERS; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof ip, NULL, 0, NI_NUMERICHOST) != 0) continue;
        char ep[PEER_LEN];
        snprintf(ep, sizeof ep, a->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", ip, colon + 1);
        int dup = 0;
        for (int i = 0; i < *n && !dup; i++)
            dup = strcmp(out[i], ep) == 0;
        if (!dup) snprintf(out[(*n)++], PEER_LEN, "%s", ep);
    }
    freeaddrinfo(res);
    return 0;
}

/* Resolves every dns+tcp:// name of every service; publishes the answers under mu. */
static void resolve_all(edge_rpc_t *self)
{
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        svc_conn_t *c = &self->svcs[i];
        if (!c->ndns) continue;
        char found[MAX_PEERS][PEER_LEN];
        int total = 0, ok = 1;
        for (int d = 0; d < c->ndns; d++) {
            char one[MAX_PEERS][PEER_LEN];
            int n;
            if (resolve(c->dns[d], one, &n) != 0) {
                ok = 0;
                continue;
            }
            for (int k = 0; k < n && total < MAX_PEERS; k++)
                memcpy(found[total++], one[k], PEER_LEN);
        }
        pthread_mutex_lock(&self->mu);
        if (ok || total) { /* a failed lookup keeps the replicas we had */
            memcpy(c->resolved, found, sizeof found[0] * (size_t)total);
            c->nresolved = total;
            c->resolved_ok = 1;
            c->resolved_gen++;
        }
        pthread_mutex_unlock(&self->mu);
    }
}

static void *resolver_main(void *arg)
{
    edge_rpc_t *self = arg;
    pthread_mutex_lock(&self->mu);
    while (!self->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += self->dns_ms / 1000;
        ts.tv_nsec += (long)(self->dns_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&self->cv, &self->mu, &ts);
        if (self->quit) break;
        pthread_mutex_unlock(&self->mu);
        resolve_all(self);
        pthread_mutex_lock(&self->mu);
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

/* In the loop thread: connects the DEALER to new replicas, disconnects vanished ones. */
static void apply_resolved(edge_rpc_t *self, svc_conn_t *c)
{
    char want[MAX_PEERS][PEER_LEN];
    int nwant;
    pthread_mutex_lock(&self->mu);
    if (c->resolved_gen == c->applied_gen) {
        pthread_mutex_unlock(&self->mu);
        return;
    }
    c->applied_gen = c->resolved_gen;
    nwant = c->nresolved;
    memcpy(want, c->resolved, sizeof want[0] * (size_t)nwant);
    pthread_mutex_unlock(&self->mu);
    for (int i = c->nstatic; i < c->npeers;) { /* vanished */
        int keep = 0;
        for (int k = 0; k < nwant && !keep; k++)
            keep = strcmp(want[k], c->peers[i]) == 0;
        if (keep) {
            i++;
            continue;
        }
        lk_log_info("%s replica %s is gone: disconnecting", SVC_NAMES[c->svc], c->peers[i]);
        (void)zmq_disconnect(c->zsock, c->peers[i]);
        memmove(c->peers[i], c->peers[c->npeers - 1], PEER_LEN);
        c->npeers--;
    }
    for (int k = 0; k < nwant; k++) { /* new */
        int have = 0;
        for (int i = 0; i < c->npeers && !have; i++)
            have = strcmp(want[k], c->peers[i]) == 0;
        if (have || c->npeers == MAX_PEERS) continue;
        if (zmq_connect(c->zsock, want[k]) != 0) {
            lk_log_warn("cannot connect to %s at %s: %s", SVC_NAMES[c->svc], want[k], zmq_strerror(errno));
            continue;
        }
        lk_log_info("%s replica %s found: connecting", SVC_NAMES[c->svc], want[k]);
        memcpy(c->peers[c->npeers++], want[k], PEER_LEN);
    }
}

static void on_dns_timer(h2o_timeout_entry_t *entry)
{
    edge_rpc_t *self = H2O_STRUCT_FROM_MEMBER(edge_rpc_t, dns_timer, entry);
    for (int i = 0; i < EDGE_SVC_COUNT; i++)
        apply_resolved(self, &self->svcs[i]);
    h2o_timeout_link(self->loop, &self->dns_timeout, &self->dns_timer);
}

/* Connects c to the entries of its endpoint list (a comma-separated list of
 * ZeroMQ endpoints and dns+tcp://NAME:PORT names). 0 / -1 (logged). */
static int connect_list(edge_rpc_t *self, svc_conn_t *c, const char *endpoints)
{
    char *list = strdup(endpoints), *save = NULL;
    if (!list) return -1;
    int rc = 0;
    for (char *ep = strtok_r(list, ",", &save); ep && rc == 0; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (strncmp(ep, "dns+tcp://", 10) == 0) {
            if (c->ndns == MAX_DNS || strlen(ep) >= sizeof c->dns[0]) {
                lk_log_error("too many or too long dns+tcp:// entries for %s", SVC_NAMES[c->svc]);
                rc = -1;
            } else {
                snprintf(c->dns[c->ndns++], sizeof c->dns[0], "%s", ep);
            }
        } else if (c->npeers == MAX_PEERS || strlen(ep) >= PEER_LEN || zmq_connect(c->zsock, ep) != 0) {
            lk_log_error("cannot connect to %s at %s: %s", SVC_NAMES[c->svc], ep, zmq_strerror(errno));
            rc = -1;
        } else {
            snprintf(c->peers[c->npeers++], PEER_LEN, "%s", ep);
            c->nstatic = c->npeers;
        }
    }
    free(list);
    return rc;
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
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    const char *dns_ms = getenv("LUMKEY_DNS_REFRESH_MS");
    self->dns_ms = dns_ms && atoi(dns_ms) > 0 ? atoi(dns_ms) : 5000;
    char all[4 * 512 + 8] = "";
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        strncat(all, endpoints[i], sizeof all - strlen(all) - 2);
        strcat(all, ",");
    }
    if (lk_curve_client_load(&self->curve, all) != 0) goto fail;

    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        svc_conn_t *c = &self->svcs[i];
        c->rpc = self;
        c->svc = (edge_svc_t)i;
        c->zsock = zmq_socket(self->zctx, ZMQ_DEALER);
        if (!c->zsock) goto fail;
        int one = 1, zero = 0, hwm = 100000, ivl = 100, ivl_max = 1000;
        zmq_setsockopt(c->zsock, ZMQ_IMMEDIATE, &one, sizeof one);
        zmq_setsockopt(c->zsock, ZMQ_IPV6, &one, sizeof one); /* AAAA records and tcp://[addr]:port */
        zmq_setsockopt(c->zsock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(c->zsock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(c->zsock, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(c->zsock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(c->zsock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
        if (lk_curve_client_apply(&self->curve, c->zsock) != 0) {
            lk_log_error("cannot set up CURVE for %s", SVC_NAMES[i]);
            goto fail;
        }
        /* endpoints may be a comma-separated list of replicas and dns+tcp:// names */
        if (connect_list(self, c, endpoints[i]) != 0) goto fail;
        int fd;
        size_t fdsz = sizeof fd;
        if (zmq_getsockopt(c->zsock, ZMQ_FD, &fd, &fdsz) != 0) goto fail;
        /* DONT_READ: h2o must not consume libzmq's signalling fd; dup: h2o closes its own */
        c->hsock = h2o_evloop_socket_create(loop, dup(fd), H2O_SOCKET_FLAG_DONT_READ);
        c->hsock->data = c;
        h2o_socket_read_start(c->hsock, on_readable);
    }
    /* the first lookup before serving, then the resolver thread every dns_ms */
    resolve_all(self);
    h2o_timeout_init(loop, &self->dns_timeout, 1000);
    self->dns_timer.cb = on_dns_timer;
    on_dns_timer(&self->dns_timer);
    int any_dns = 0;
    for (int i = 0; i < EDGE_SVC_COUNT; i++)
        any_dns |= self->svcs[i].ndns > 0;
    if (any_dns) {
        if (pthread_create(&self->resolver, NULL, resolver_main, self) != 0) goto fail;
        self->resolver_running = 1;
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
    if (self->resolver_running) {
        pthread_mutex_lock(&self->mu);
        self->quit = 1;
        pthread_cond_signal(&self->cv);
        pthread_mutex_unlock(&self->mu);
        pthread_join(self->resolver, NULL);
    }
    if (h2o_timeout_is_linked(&self->dns_timer)) h2o_timeout_unlink(&self->dns_timer);
    if (h2o_timeout_is_linked(&self->ping_timer)) h2o_timeout_unlink(&self->ping_timer);
    if (h2o_timeout_is_linked(&self->recheck)) h2o_timeout_unlink(&self->recheck);
    if (self->slots)
        for (uint32_t i = 0; i < SLOT_COUNT; i++) {
            if (h2o_timeout_is_linked(&self->slots[i].timer)) h2o_timeout_unlink(&self->slots[i].timer);
            forget_sent(&self->slots[i]);
        }
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        if (self->svcs[i].hsock) h2o_socket_close(self->svcs[i].hsock);
        if (self->svcs[i].zsock) zmq_close(self->svcs[i].zsock);
    }
    if (self->zctx) zmq_ctx_term(self->zctx);
    lk_buf_free(&self->out);
    lk_curve_clear(&self->curve);
    pthread_mutex_destroy(&self->mu);
    pthread_cond_destroy(&self->cv);
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
    call->retried = 0;
    if (send_msg(self, &self->svcs[svc], msg, call) != 0) {
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

int edge_rpc_replicas(edge_rpc_t *self, edge_svc_t svc)
{
    return self->svcs[svc].npeers;
}
