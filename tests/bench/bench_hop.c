/*  bench_hop - what one ZeroMQ hop to a Lumkey worker costs (not a test).
 *
 *      bench_hop ENDPOINT WORKER_PID [COUNT]
 *
 *  Connects a DEALER to a worker (e.g. ipc://RUN/approval.ipc) and sends COUNT
 *  (20000) PINGs one at a time, each a full request/reply through the worker's
 *  loop (decode, deadline check, reply encode) with no work and no database.
 *  Prints the round trip p50 / p99 and the CPU both ends spent per hop
 *  (this process from getrusage, the worker from /proc/PID/stat, user and
 *  system apart): the floor under every hop the edge makes per request.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include "lk_buf.h"
#include "lk_proto.h"
#include "lk_util.h"

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* utime and stime of a process, in clock ticks; -1 if unreadable */
static int proc_ticks(long pid, long long *ut, long long *st)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* after ") ": state(3) ... utime is field 14, stime 15 */
    int field = 2;
    for (p++; *p && field < 14; p++)
        if (*p == ' ') field++;
    return sscanf(p, "%lld %lld", ut, st) == 2 ? 0 : -1;
}

static double self_us(int which)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru); /* includes ZeroMQ's I/O thread */
    const struct timeval *t = which ? &ru.ru_stime : &ru.ru_utime;
    return (double)t->tv_sec * 1e6 + (double)t->tv_usec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: bench_hop ENDPOINT WORKER_PID [COUNT]\n", stderr);
        return 2;
    }
    long pid = strtol(argv[2], NULL, 10);
    int count = argc > 3 ? atoi(argv[3]) : 20000;
    if (count < 100) count = 100;
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int tmo = 5000, zero = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "bench_hop: cannot connect %s\n", argv[1]);
        return 1;
    }
    int64_t *lat = calloc((size_t)count, sizeof *lat);
    lk_buf_t b;
    lk_buf_init(&b, 0);
    long long wu0 = 0, ws0 = 0, wu1 = 0, ws1 = 0;
    int errors = 0;
    for (int phase = 0; phase < 2; phase++) { /* a short warm-up, then the measured run */
        int n = phase ? count : 200;
        if (phase && proc_ticks(pid, &wu0, &ws0) != 0) {
            fprintf(stderr, "bench_hop: cannot read /proc/%ld/stat\n", pid);
            return 1;
        }
        double u0 = self_us(0), s0 = self_us(1);
        for (int i = 0; i < n; i++) {
            lk_msg_t m;
            memset(&m, 0, sizeof m);
            char rid[40];
            snprintf(rid, sizeof rid, "req_hop%08d", i);
            m.env.type = LK_MSG_PING;
            m.env.rid = lk_str(rid);
            m.env.call_id = (uint64_t)i + 1;
            m.env.deadline_ms = lk_now_ms() + 5000;
            b.len = 0;
            int64_t t0 = lk_mono_us();
            if (lk_proto_encode(&m, &b) != 0 || zmq_send(sock, b.data, b.len, 0) != (int)b.len) {
                errors++;
                continue;
            }
            zmq_msg_t r;
            zmq_msg_init(&r);
            lk_msg_t rep;
            int got = zmq_msg_recv(&r, sock, 0);
            if (got <= 0 || lk_proto_decode(zmq_msg_data(&r), (size_t)got, &rep) != 0 ||
                rep.env.type != LK_MSG_PONG)
                errors++;
            zmq_msg_close(&r);
            if (phase) lat[i] = lk_mono_us() - t0;
        }
        if (!phase) continue;
        double cu = self_us(0) - u0, cs = self_us(1) - s0;
        proc_ticks(pid, &wu1, &ws1);
        double hz = (double)sysconf(_SC_CLK_TCK);
        qsort(lat, (size_t)count, sizeof *lat, cmp);
        printf("hops=%d p50_us=%" PRId64 " p99_us=%" PRId64 " client_user_us=%.1f client_sys_us=%.1f "
               "worker_user_us=%.1f worker_sys_us=%.1f errors=%d\n",
               count, lat[count / 2], lat[count * 99 / 100], cu / count, cs / count,
               (double)(wu1 - wu0) * 1e6 / hz / count, (double)(ws1 - ws0) * 1e6 / hz / count, errors);
    }
    lk_buf_free(&b);
    free(lat);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return errors ? 1 : 0;
}
