/*  bench_audit - throughput and latency of lumkey-audit's AUDIT (not a test).
 *
 *      bench_audit ENDPOINT [EVENTS] [WINDOW] [SEQ]
 *
 *  Connects a DEALER to the audit worker (e.g. ipc://RUN/audit.ipc), then
 *    1. sends SEQ (2000) events one at a time: round trip p50 / p99 (what the
 *       durable accept costs a request: the edge awaits it, overlapped with
 *       the credential fetch);
 *    2. sends EVENTS events (100000) with WINDOW (256) in flight: events/s
 *       durably recorded in PostgreSQL (group-committed, chained).
 *  Prints one line of key=value figures per phase. With BENCH_AUDIT_PAUSE=1 in
 *  the environment it waits for a line on stdin before the second phase (so
 *  that a driver can read counters between phases: scripts/bench_audit_pg.py).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "lk_buf.h"
#include "lk_proto.h"
#include "lk_util.h"

static int send_event(void *sock, uint64_t call_id, const char *tag, uint64_t n)
{
    char rid[64], eid[LK_UUID_LEN + 1];
    snprintf(rid, sizeof rid, "req_bench%s%016" PRIx64, tag, n);
    lk_uuid_derive(eid, rid, "request.accepted");
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_AUDIT;
    m.env.rid = lk_str(rid);
    m.env.call_id = call_id;
    m.env.deadline_ms = lk_now_ms() + 30000;
    lk_audit_t *a = &m.u.audit;
    a->event_id = lk_str(eid);
    a->kind = LK_STR_LIT("request.accepted");
    a->time_ms = lk_now_ms();
    a->tenant = LK_STR_LIT("default");
    a->key_id = LK_STR_LIT("key_bench");
    a->user = LK_STR_LIT("bench");
    a->source_ip = LK_STR_LIT("127.0.0.1");
    a->endpoint = LK_STR_LIT("chat.completions");
    a->model = LK_STR_LIT("mock-gpt");
    a->decision = LK_STR_LIT("allow");
    a->prompt_tokens = a->completion_tokens = a->total_tokens = -1;
    a->request_sha = LK_STR_LIT("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    lk_buf_t b;
    lk_buf_init(&b, 0);
    int rc = lk_proto_encode(&m, &b) == 0 && zmq_send(sock, b.data, b.len, 0) == (int)b.len ? 0 : -1;
    lk_buf_free(&b);
    return rc;
}

/* Waits for one reply; 0 ok, -1 error reply or timeout. */
static int recv_reply(void *sock)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int n = zmq_msg_recv(&msg, sock, 0);
    int rc = -1;
    lk_msg_t r;
    if (n > 0 && lk_proto_decode(zmq_msg_data(&msg), (size_t)n, &r) == 0 && r.env.type == LK_MSG_AUDIT_REP)
        rc = 0;
    zmq_msg_close(&msg);
    return rc;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: bench_audit ENDPOINT [EVENTS] [WINDOW] [SEQ]\n", stderr);
        return 2;
    }
    uint64_t total = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    uint64_t window = argc > 3 ? strtoull(argv[3], NULL, 10) : 256;
    int seq = argc > 4 ? atoi(argv[4]) : 2000;
    if (seq < 1) seq = 1;
    if (window < 1) window = 1;
    char tag[32];
    snprintf(tag, sizeof tag, "%08" PRIx64, (uint64_t)lk_now_ms() & 0xffffffffu);
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int tmo = 30000, zero = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "bench_audit: cannot connect %s\n", argv[1]);
        return 1;
    }
    const int SEQ = seq;
    int64_t *lat = calloc((size_t)SEQ, sizeof *lat);
    if (!lat) return 1;
    uint64_t call = 1, errors = 0;
    for (int i = 0; i < SEQ; i++) {
        int64_t t0 = lk_mono_us();
        if (send_event(sock, call++, "s", (uint64_t)i) != 0 || recv_reply(sock) != 0) errors++;
        lat[i] = lk_mono_us() - t0;
    }
    qsort(lat, (size_t)SEQ, sizeof *lat, cmp);
    printf("sequential events=%d p50_us=%" PRId64 " p90_us=%" PRId64 " p99_us=%" PRId64 " errors=%" PRIu64
           "\n",
           SEQ, lat[SEQ / 2], lat[SEQ * 9 / 10], lat[SEQ * 99 / 100], errors);
    free(lat);
    fflush(stdout);
    if (getenv("BENCH_AUDIT_PAUSE")) {
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 1;
    }

    errors = 0;
    uint64_t sent = 0, done = 0;
    int64_t t0 = lk_mono_us();
    while (done < total) {
        while (sent < total && sent - done < window) {
            if (send_event(sock, call++, tag, sent) != 0) {
                fputs("bench_audit: send failed\n", stderr);
                return 1;
            }
            sent++;
        }
        if (recv_reply(sock) != 0) errors++;
        done++;
    }
    double secs = (double)(lk_mono_us() - t0) / 1e6;
    printf("pipelined events=%" PRIu64 " window=%" PRIu64 " seconds=%.2f events_per_s=%.0f errors=%" PRIu64
           "\n",
           total, window, secs, (double)total / secs, errors);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return errors ? 1 : 0;
}
