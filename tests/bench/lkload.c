/*  lkload - the benchmark's HTTP/1.1 load generator (open loop, closed loop, streams).
 *
 *  One thread, epoll, N keep-alive connections to one HOST:PORT, one request
 *  in flight per connection (no pipelining). Prints one JSON object on stdout.
 *
 *  Modes:
 *    open     requests are *scheduled* at a fixed rate (request k at t0 + k/rate)
 *             whatever the replies; a scheduled request waits for a free
 *             connection if none is idle, and its latency counts from its
 *             scheduled time (no coordinated omission). The first --warmup
 *             seconds are sent but not recorded. Requests still unanswered
 *             --drain seconds after the end are recorded at their lower-bound
 *             latency and the run is marked "saturated".
 *    closed   each connection sends its next request as soon as the previous
 *             answer is complete (conns=1: one request at a time); latency from
 *             the actual send.
 *    streams  like closed, but each answer is read as SSE: time to the first
 *             `data:` line (TTFT), gaps between `data:` lines, events per
 *             stream; a stream is "bad" if its event count differs from
 *             --expect-events or it has no `data: [DONE]`. With conns=N and
 *             --requests N, N streams are open at once.
 *             --expect-text T judges the *content* instead of the event
 *             count (a gateway that inspects answers may hold text back and
 *             merge deltas into fewer, longer events): the `"content"` strings
 *             of the data events, decoded and concatenated in order, must be T
 *             exactly, one event must carry a `"finish_reason"` string, and
 *             `data: [DONE]` must end the stream; a stream that differs is
 *             "bad" (lost or damaged text), counted in text_mismatch too.
 *             TTFT and gaps then count only the events that carry text.
 *
 *  Knows nothing about Lumkey: the body and headers are given.
 *
 *  lkload --target HOST:PORT --path P --body-file F [--header 'K: V']...
 *         [--mode open|closed|streams] [--conns N] [--rate R] [--duration S]
 *         [--warmup S] [--requests N] [--drain S] [--expect-events N] [--expect-text T]
 *         [--timeout S]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ histogram -- */
/* Log-linear buckets over nanoseconds: exact below 256 ns, then 128
 * sub-buckets per power of two (< 0.8% relative error), up to 2^48 ns. */
#define H_SUB  128
#define H_SIZE (256 + 41 * H_SUB)

typedef struct {
    uint64_t c[H_SIZE];
    uint64_t n, max;
    double sum;
} histo_t;

static int hidx(uint64_t v)
{
    if (v < 256) return (int)v;
    int m = 63 - __builtin_clzll(v);
    if (m > 48) m = 48, v = (1ULL << 49) - 1;
    int shift = m - 7;
    return 256 + (m - 8) * H_SUB + (int)((v >> shift) - H_SUB);
}

static double hval(int i) /* the middle of bucket i, ns */
{
    if (i < 256) return i;
    int m = (i - 256) / H_SUB + 8, sub = (i - 256) % H_SUB + H_SUB, shift = m - 7;
    return ((double)((uint64_t)sub << shift)) + (double)(1ULL << shift) / 2.0;
}

static void hadd(histo_t *h, uint64_t v)
{
    h->c[hidx(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max) h->max = v;
}

static double hq(const histo_t *h, double q) /* ns */
{
    if (!h->n) return 0;
    uint64_t want = (uint64_t)(q * (double)h->n + 0.5);
    if (want < 1) want = 1;
    if (want > h->n) want = h->n;
    uint64_t cum = 0;
    for (int i = 0; i < H_SIZE; i++) {
        cum += h->c[i];
        if (cum >= want) {
            double v = hval(i);
            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

static void hjson(const char *name, const histo_t *h, int last)
{
    static const double qs[] = {0.0,  0.1,   0.25,  0.5,    0.75,   0.9, 0.95,
                                0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0};
    printf("\"%s\":{\"n\":%" PRIu64 ",\"mean_us\":%.3f,\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,"
           "\"p999_us\":%.3f,\"max_us\":%.3f,\"pct\":[",
           name, h->n, h->n ? h->sum / (double)h->n / 1e3 : 0.0, hq(h, 0.5) / 1e3, hq(h, 0.9) / 1e3,
           hq(h, 0.99) / 1e3, hq(h, 0.999) / 1e3, (double)h->max / 1e3);
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        printf("%s[%g,%.3f]", i ? "," : "", qs[i], (qs[i] >= 1.0 ? (double)h->max : hq(h, qs[i])) / 1e3);
    printf("]}%s", last ? "" : ",");
}

/* ------------------------------------------------------------ settings -- */
enum { M_OPEN, M_CLOSED, M_STREAMS };
static struct {
    int mode, conns;
    double rate, duration, warmup, drain;
    long requests;
    int expect_events;
    const char *expect_text; /* NULL: judge streams by event count */
    size_t expect_text_len;
    double timeout; /* --requests runs: give up (unfinished) after this many seconds */
    struct sockaddr_in addr;
    char *req; /* the serialized request */
    size_t req_len;
} S = {.mode = M_OPEN,
       .conns = 16,
       .rate = 1000,
       .duration = 5,
       .warmup = 1,
       .drain = 5,
       .requests = 0,
       .expect_events = -1,
       .timeout = 120};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "lkload: %s\n", what);
    exit(2);
}

/* ---------------------------------------------------------- connection -- */
enum { P_HEAD, P_CL, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER, P_EOF };

typedef struct {
    int fd, idx, busy, connecting;
    size_t sent;      /* bytes of the request written */
    uint64_t sched;   /* scheduled (open) or actual (closed) send time */
    uint64_t send_at; /* actual send time */
    int record;       /* count this request in the histograms */
    /* response parser */
    int ps, status, chunked, close_after;
    int64_t remain;
    char head[8192];
    size_t head_len;
    char line[64]; /* start of the current body line (SSE) or chunk-size line */
    size_t line_len;
    char sline[24];
    size_t sline_len;
    /* SSE */
    int events, done_seen;
    uint64_t last_event;
    /* --expect-text: a small JSON scanner over each data line */
    int is_data;   /* the current line starts with "data:" */
    int js;        /* J_* below */
    int key;       /* K_*: the last string closed outside a value, when it was a key we want */
    int want;      /* K_*: a ':' followed that key, the next string is its value */
    int esc, uhex; /* in a string: after '\'; hex digits of \uXXXX still to read */
    uint32_t ucp;  /* the \uXXXX code point being read */
    char kbuf[16]; /* the current key string (first bytes) */
    size_t kbuf_len;
    size_t text_pos; /* bytes of expect_text matched so far */
    int text_bad;    /* a byte differed, or more text than expected */
    int line_text;   /* content bytes in the current line */
    int finish_seen; /* a "finish_reason" string value was seen */
} conn_t;

static conn_t *C;
static int EP;
static histo_t H_lat, H_ttft, H_gap;
static uint64_t n_ok, n_err, n_non2xx, n_all_done, n_streams_ok, n_streams_bad, n_events, n_reconnects,
    n_unfinished, n_text_events, n_text_mismatch;
static long n_started;
static uint64_t t_last_done;

/* queue of scheduled send times (open mode) */
static uint64_t *Q;
static size_t q_head, q_tail, q_cap;

static void q_push(uint64_t t)
{
    if (q_tail - q_head == q_cap) {
        size_t ncap = q_cap ? q_cap * 2 : 4096;
        uint64_t *nq = malloc(ncap * sizeof *nq);
        if (!nq) die("out of memory");
        for (size_t i = 0; i < q_tail - q_head; i++)
            nq[i] = Q[(q_head + i) % q_cap];
        q_tail -= q_head;
        q_head = 0;
        free(Q);
        Q = nq;
        q_cap = ncap;
    }
    Q[q_tail++ % q_cap] = t;
}

static void conn_open(conn_t *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket failed (raise ulimit -n?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(c->fd, (struct sockaddr *)&S.addr, sizeof S.addr);
    if (rc != 0 && errno != EINPROGRESS) die("connect failed");
    c->connecting = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(EP, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl failed");
}

static void want_out(conn_t *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(EP, EPOLL_CTL_MOD, c->fd, &ev);
}

static void reset_parser(conn_t *c)
{
    c->ps = P_HEAD;
    c->status = 0;
    c->chunked = 0;
    c->close_after = 0;
    c->remain = -1;
    c->head_len = c->line_len = c->sline_len = 0;
    c->events = c->done_seen = 0;
    c->last_event = 0;
    c->is_data = c->js = c->key = c->want = c->esc = c->uhex = 0;
    c->ucp = 0;
    c->kbuf_len = c->text_pos = 0;
    c->text_bad = c->line_text = c->finish_seen = 0;
}

static void try_send(conn_t *c)
{
    while (c->sent < S.req_len) {
        ssize_t n = write(c->fd, S.req + c->sent, S.req_len - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                want_out(c, 1);
                return;
            }
            return; /* the read side will see the error */
        }
        c->sent += (size_t)n;
    }
    want_out(c, 0);
}

static void start_request(conn_t *c, uint64_t sched, int record)
{
    c->busy = 1;
    c->sent = 0;
    c->sched = sched;
    c->send_at = now_ns();
    c->record = record;
    reset_parser(c);
    n_started++;
    if (!c->connecting) try_send(c);
}

/* ------------------------------------------------------------ SSE scan -- */
/* --expect-text: the JSON of a data line is scanned byte by byte (no line
 * buffer: events can be long); the decoded value of every "content" string is
 * compared with the expected text as it arrives. */
enum { J_OUT, J_STR };
enum { K_NONE, K_CONTENT, K_FINISH, K_OTHER };

/* One decoded byte of a "content" value. */
static void text_byte(conn_t *c, unsigned char b)
{
    if (c->text_pos < S.expect_text_len && (unsigned char)S.expect_text[c->text_pos] == b)
        c->text_pos++;
    else
        c->text_bad = 1;
    c->line_text++;
}

static void text_cp(conn_t *c, uint32_t cp)
{
    if (cp < 0x80) {
        text_byte(c, (unsigned char)cp);
    } else if (cp < 0x800) {
        text_byte(c, (unsigned char)(0xC0 | (cp >> 6)));
        text_byte(c, (unsigned char)(0x80 | (cp & 0x3F)));
    } else { /* surrogates are not paired: the mock's text does not need them */
        text_byte(c, (unsigned char)(0xE0 | (cp >> 12)));
        text_byte(c, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        text_byte(c, (unsigned char)(0x80 | (cp & 0x3F)));
    }
}

static void json_byte(conn_t *c, char ch)
{
    if (c->js == J_OUT) {
        if (ch == '"') {
            c->js = J_STR;
            c->esc = c->uhex = 0;
            c->kbuf_len = 0;
            c->key = K_NONE;
        } else if (ch == ':' && c->key != K_NONE) {
            c->want = c->key;
            c->key = K_NONE;
        } else if (ch != ' ' && ch != '\t') {
            c->key = c->want = K_NONE; /* a number, null, {, [, ',' ... */
        }
        return;
    }
    /* in a string: the value of a wanted key, or a possible key */
    int value = c->want;
    if (c->uhex) {
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0) d = 0, c->text_bad |= value == K_CONTENT;
        c->ucp = c->ucp * 16 + (uint32_t)d;
        if (--c->uhex == 0 && value == K_CONTENT) text_cp(c, c->ucp);
        return;
    }
    unsigned char b = (unsigned char)ch;
    if (c->esc) {
        c->esc = 0;
        switch (ch) {
        case 'n':
            b = '\n';
            break;
        case 't':
            b = '\t';
            break;
        case 'r':
            b = '\r';
            break;
        case 'b':
            b = '\b';
            break;
        case 'f':
            b = '\f';
            break;
        case 'u':
            c->uhex = 4;
            c->ucp = 0;
            return;
        default:
            break; /* \" \\ \/ */
        }
    } else if (ch == '\\') {
        c->esc = 1;
        return;
    } else if (ch == '"') { /* the string ends */
        c->js = J_OUT;
        if (value != K_NONE) {
            if (value == K_FINISH && c->kbuf_len > 0) c->finish_seen = 1;
            c->want = K_NONE;
            c->key = K_OTHER; /* a value is not a key: a ':' after it means nothing */
        } else {
            c->key = c->kbuf_len == 7 && memcmp(c->kbuf, "content", 7) == 0           ? K_CONTENT
                     : c->kbuf_len == 13 && memcmp(c->kbuf, "finish_reason", 13) == 0 ? K_FINISH
                                                                                      : K_NONE;
        }
        return;
    }
    if (value == K_CONTENT)
        text_byte(c, b);
    else if (c->kbuf_len < sizeof c->kbuf)
        c->kbuf[c->kbuf_len++] = (char)b;
}

static void sse_bytes(conn_t *c, const char *p, size_t n, uint64_t t)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n') {
            if (c->sline_len >= 5 && memcmp(c->sline, "data:", 5) == 0) {
                const char *d = c->sline + 5;
                size_t dl = c->sline_len - 5;
                while (dl && *d == ' ')
                    d++, dl--;
                if (dl >= 6 && memcmp(d, "[DONE]", 6) == 0) {
                    c->done_seen = 1;
                } else {
                    c->events++;
                    n_events++;
                    /* with --expect-text, only the events that carry text count for TTFT and gaps */
                    int counts = !S.expect_text || c->line_text > 0;
                    if (counts) {
                        if (S.expect_text) n_text_events++;
                        if (c->record) {
                            if (!c->last_event)
                                hadd(&H_ttft, t - c->send_at);
                            else
                                hadd(&H_gap, t - c->last_event);
                        }
                        c->last_event = t;
                    }
                }
            }
            c->sline_len = 0;
            c->is_data = c->js = c->key = c->want = c->esc = c->uhex = 0;
            c->line_text = 0;
            continue;
        }
        if (ch != '\r' && c->sline_len < sizeof c->sline) {
            c->sline[c->sline_len++] = ch;
            if (c->sline_len == 5 && memcmp(c->sline, "data:", 5) == 0) {
                c->is_data = 1;
                continue; /* the JSON starts after the colon */
            }
        }
        if (S.expect_text && c->is_data && ch != '\r') json_byte(c, ch);
    }
}

/* ------------------------------------------------------------- finish -- */
static void next_request(conn_t *c);

static void finish(conn_t *c, int ok, uint64_t t)
{
    c->busy = 0;
    n_all_done++;
    t_last_done = t;
    if (c->record) {
        if (!ok)
            n_err++;
        else if (c->status < 200 || c->status > 299)
            n_non2xx++;
        else
            n_ok++;
        hadd(&H_lat, t - c->sched);
        if (S.mode == M_STREAMS && ok && c->status / 100 == 2) {
            int text_ok =
                !S.expect_text || (!c->text_bad && c->text_pos == S.expect_text_len && c->finish_seen);
            if (S.expect_text && !text_ok) n_text_mismatch++;
            if (c->done_seen && text_ok && (S.expect_events < 0 || c->events == S.expect_events))
                n_streams_ok++;
            else
                n_streams_bad++;
        } else if (S.mode == M_STREAMS) {
            n_streams_bad++;
        }
    }
}

static void conn_reset(conn_t *c)
{
    epoll_ctl(EP, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    n_reconnects++;
    conn_open(c);
}

static int parse_head(conn_t *c)
{
    /* status line */
    char *sp = memchr(c->head, ' ', c->head_len);
    if (!sp) return -1;
    c->status = atoi(sp + 1);
    c->remain = -1;
    for (char *l = strstr(c->head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        char *h = l + 2;
        if (strncasecmp(h, "content-length:", 15) == 0) c->remain = strtoll(h + 15, NULL, 10);
        if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strcasestr(h, "chunked")) c->chunked = 1;
        if (strncasecmp(h, "connection:", 11) == 0 &&
            strncasecmp(h + 11 + strspn(h + 11, " "), "close", 5) == 0)
            c->close_after = 1;
    }
    if (c->chunked) {
        c->ps = P_CHUNK_SIZE;
        c->line_len = 0;
    } else if (c->remain >= 0) {
        c->ps = P_CL;
    } else {
        c->ps = P_EOF;
        c->close_after = 1;
    }
    return 0;
}

/* Feeds bytes; returns 1 when the response is complete, 0 to read more, -1 on a framing error. */
static int feed(conn_t *c, const char *p, size_t n, uint64_t t)
{
    size_t i = 0;
    while (i < n) {
        switch (c->ps) {
        case P_HEAD: {
            size_t take = n - i;
            if (take > sizeof c->head - 1 - c->head_len) take = sizeof c->head - 1 - c->head_len;
            if (!take) return -1;
            memcpy(c->head + c->head_len, p + i, take);
            size_t old = c->head_len;
            c->head_len += take;
            c->head[c->head_len] = 0;
            char *end = strstr(c->head, "\r\n\r\n");
            if (!end) {
                i += take;
                break;
            }
            size_t used = (size_t)(end + 4 - c->head) - old;
            i += used;
            c->head_len = (size_t)(end + 4 - c->head);
            c->head[c->head_len - 2] = 0; /* keep the last header's CRLF for the scan */
            if (parse_head(c) != 0) return -1;
            if (c->ps == P_CL && c->remain == 0) return 1;
            break;
        }
        case P_CL: {
            size_t take = n - i;
            if ((int64_t)take > c->remain) take = (size_t)c->remain;
            sse_bytes(c, p + i, take, t);
            i += take;
            c->remain -= (int64_t)take;
            if (c->remain == 0) return 1;
            break;
        }
        case P_EOF:
            sse_bytes(c, p + i, n - i, t);
            i = n;
            break;
        case P_CHUNK_SIZE:
        case P_TRAILER: {
            char ch = p[i++];
            if (ch != '\n') {
                if (c->line_len < sizeof c->line - 1) c->line[c->line_len++] = ch;
                break;
            }
            c->line[c->line_len] = 0;
            if (c->ps == P_TRAILER) {
                int empty = c->line_len == 0 || (c->line_len == 1 && c->line[0] == '\r');
                c->line_len = 0;
                if (empty) return 1;
                break;
            }
            char *e;
            long long sz = strtoll(c->line, &e, 16);
            if (e == c->line || sz < 0) return -1;
            c->line_len = 0;
            if (sz == 0) {
                c->ps = P_TRAILER;
            } else {
                c->remain = sz;
                c->ps = P_CHUNK_DATA;
            }
            break;
        }
        case P_CHUNK_DATA: {
            size_t take = n - i;
            if ((int64_t)take > c->remain) take = (size_t)c->remain;
            sse_bytes(c, p + i, take, t);
            i += take;
            c->remain -= (int64_t)take;
            if (c->remain == 0) {
                c->ps = P_CHUNK_CRLF;
                c->line_len = 0;
            }
            break;
        }
        case P_CHUNK_CRLF:
            if (p[i++] == '\n') c->ps = P_CHUNK_SIZE;
            break;
        }
    }
    return 0;
}

/* --------------------------------------------------------------- main -- */
static uint64_t T0, T_REC, T_END;
static int scheduling_done;

static void next_request(conn_t *c)
{
    uint64_t t = now_ns();
    if (S.mode == M_OPEN) {
        if (q_head == q_tail) return;
        uint64_t sched = Q[q_head++ % q_cap];
        start_request(c, sched, sched >= T_REC);
        return;
    }
    if (S.requests > 0 ? n_started >= S.requests : t >= T_END) return;
    start_request(c, t, S.requests > 0 || t >= T_REC);
}

static void on_event(conn_t *c, uint32_t events)
{
    if (c->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            if (c->busy) finish(c, 0, now_ns());
            conn_reset(c);
            return;
        }
        c->connecting = 0;
        if (c->busy)
            try_send(c);
        else
            want_out(c, 0);
        if (!c->busy) next_request(c);
        return;
    }
    if (events & EPOLLOUT && c->busy) try_send(c);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
        char buf[65536];
        for (;;) {
            ssize_t n = read(c->fd, buf, sizeof buf);
            uint64_t t = now_ns();
            if (n > 0) {
                if (!c->busy) continue; /* stray bytes */
                int r = feed(c, buf, (size_t)n, t);
                if (r == 1) {
                    int close_after = c->close_after;
                    finish(c, 1, t);
                    if (close_after) {
                        conn_reset(c);
                        return;
                    }
                    next_request(c);
                } else if (r < 0) {
                    finish(c, 0, t);
                    conn_reset(c);
                    return;
                }
                continue;
            }
            if (n < 0 && errno == EAGAIN) return;
            /* EOF or error */
            if (c->busy) {
                if (c->ps == P_EOF)
                    finish(c, 1, t);
                else
                    finish(c, 0, t);
            }
            conn_reset(c);
            return;
        }
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: lkload --target HOST:PORT --path P --body-file F [--header 'K: V']... [--mode "
            "open|closed|streams]\n  [--conns N] [--rate R] [--duration S] [--warmup S] [--requests N] "
            "[--drain S] [--expect-events N] [--expect-text T] [--timeout S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *target = NULL, *path = "/", *body_file = NULL;
    char headers[8192] = "";
    size_t hl = 0;
    static const struct option opts[] = {{"target", 1, 0, 't'},      {"path", 1, 0, 'p'},
                                         {"body-file", 1, 0, 'b'},   {"header", 1, 0, 'H'},
                                         {"mode", 1, 0, 'm'},        {"conns", 1, 0, 'c'},
                                         {"rate", 1, 0, 'r'},        {"duration", 1, 0, 'd'},
                                         {"warmup", 1, 0, 'w'},      {"requests", 1, 0, 'n'},
                                         {"drain", 1, 0, 'D'},       {"expect-events", 1, 0, 'e'},
                                         {"timeout", 1, 0, 'T'},     {"help", 0, 0, 'h'},
                                         {"expect-text", 1, 0, 'x'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            target = optarg;
            break;
        case 'p':
            path = optarg;
            break;
        case 'b':
            body_file = optarg;
            break;
        case 'H': {
            int n = snprintf(headers + hl, sizeof headers - hl, "%s\r\n", optarg);
            if (n < 0 || (size_t)n >= sizeof headers - hl) die("headers too long");
            hl += (size_t)n;
            break;
        }
        case 'm':
            S.mode = !strcmp(optarg, "open")      ? M_OPEN
                     : !strcmp(optarg, "closed")  ? M_CLOSED
                     : !strcmp(optarg, "streams") ? M_STREAMS
                                                  : -1;
            if (S.mode < 0) usage();
            break;
        case 'c':
            S.conns = atoi(optarg);
            break;
        case 'r':
            S.rate = atof(optarg);
            break;
        case 'd':
            S.duration = atof(optarg);
            break;
        case 'w':
            S.warmup = atof(optarg);
            break;
        case 'n':
            S.requests = atol(optarg);
            break;
        case 'D':
            S.drain = atof(optarg);
            break;
        case 'e':
            S.expect_events = atoi(optarg);
            break;
        case 'T':
            S.timeout = atof(optarg);
            break;
        case 'x':
            S.expect_text = optarg;
            S.expect_text_len = strlen(optarg);
            break;
        default:
            usage();
        }
    }
    if (!target || !body_file || S.conns < 1 || S.rate <= 0) usage();

    /* target */
    char host[256];
    const char *colon = strrchr(target, ':');
    if (!colon || (size_t)(colon - target) >= sizeof host) usage();
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = 0;
    S.addr.sin_family = AF_INET;
    S.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &S.addr.sin_addr) != 1) die("target must be IPv4:port");

    /* request */
    FILE *f = fopen(body_file, "rb");
    if (!f) die("cannot open the body file");
    static char body[1 << 20];
    size_t blen = fread(body, 1, sizeof body, f);
    fclose(f);
    size_t cap = blen + hl + strlen(path) + 512;
    S.req = malloc(cap);
    if (!S.req) die("out of memory");
    int n = snprintf(
        S.req, cap,
        "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
        path, target, blen, headers);
    if (n < 0 || (size_t)n >= cap) die("request too long");
    memcpy(S.req + n, body, blen);
    S.req_len = (size_t)n + blen;

    EP = epoll_create1(EPOLL_CLOEXEC);
    C = calloc((size_t)S.conns, sizeof *C);
    if (!C) die("out of memory");
    for (int i = 0; i < S.conns; i++) {
        C[i].idx = i;
        conn_open(&C[i]);
    }

    T0 = now_ns();
    double warm = S.mode == M_OPEN || S.requests <= 0 ? S.warmup : 0;
    T_REC = T0 + (uint64_t)(warm * 1e9);
    T_END = T_REC + (uint64_t)(S.duration * 1e9);
    uint64_t interval = (uint64_t)(1e9 / S.rate), next_due = T0, k = 0;
    uint64_t hard_end = T_END + (uint64_t)(S.drain * 1e9);
    if (S.mode != M_OPEN && S.requests > 0) hard_end = T0 + (uint64_t)(S.timeout * 1e9);

    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (S.mode == M_OPEN && !scheduling_done) {
            while (next_due <= t && next_due < T_END) {
                q_push(next_due);
                k++;
                next_due = T0 + k * interval;
            }
            if (next_due >= T_END) scheduling_done = 1;
            for (int i = 0; i < S.conns && q_head != q_tail; i++)
                if (!C[i].busy) next_request(&C[i]);
        }
        int busy = 0;
        for (int i = 0; i < S.conns; i++)
            busy += C[i].busy;
        if (S.mode == M_OPEN) {
            if (scheduling_done && q_head == q_tail && !busy) break;
        } else if (S.requests > 0) {
            if (n_started >= S.requests && !busy) break;
        } else if (t >= T_END && !busy) {
            break;
        }
        if (t >= hard_end) break;
        /* nanosecond timeout (epoll_pwait2): the next scheduled send is not delayed by ms rounding */
        struct timespec to = {0, 100000000};
        if (S.mode == M_OPEN && !scheduling_done) {
            int64_t d = (int64_t)(next_due - now_ns());
            if (d < 0) d = 0;
            to.tv_sec = d / 1000000000;
            to.tv_nsec = d % 1000000000;
        }
        int ne = epoll_pwait2(EP, evs, 256, &to, NULL);
        for (int i = 0; i < ne; i++)
            on_event(evs[i].data.ptr, evs[i].events);
    }
    uint64_t t_stop = now_ns();
    /* what never finished: record at its lower-bound latency */
    for (int i = 0; i < S.conns; i++)
        if (C[i].busy && C[i].record) {
            hadd(&H_lat, t_stop - C[i].sched);
            n_unfinished++;
        }
    while (q_head != q_tail) {
        uint64_t s = Q[q_head++ % q_cap];
        if (s >= T_REC) {
            hadd(&H_lat, t_stop - s);
            n_unfinished++;
        }
    }
    double rec_secs = (double)((t_stop < T_END ? t_stop : T_END) - T_REC) / 1e9;
    if (S.requests > 0 && S.mode != M_OPEN) rec_secs = (double)(t_stop - T0) / 1e9;
    /* achieved: answers over the time they took to come back (a backlog drained after the end counts) */
    double ach_secs = rec_secs;
    if (t_last_done > T_END && S.mode == M_OPEN) ach_secs = (double)(t_last_done - T_REC) / 1e9;
    printf("{\"mode\":\"%s\",\"conns\":%d,\"rate\":%g,\"duration_s\":%.3f,\"elapsed_s\":%.3f,"
           "\"ok\":%" PRIu64 ",\"non2xx\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"unfinished\":%" PRIu64
           ",\"completed_all\":%" PRIu64 ",\"reconnects\":%" PRIu64
           ",\"achieved_rps\":%.1f,\"saturated\":%s,",
           S.mode == M_OPEN     ? "open"
           : S.mode == M_CLOSED ? "closed"
                                : "streams",
           S.conns, S.rate, rec_secs, (double)(t_stop - T0) / 1e9, n_ok, n_non2xx, n_err, n_unfinished,
           n_all_done, n_reconnects, ach_secs > 0 ? (double)(n_ok + n_non2xx) / ach_secs : 0.0,
           n_unfinished ? "true" : "false");
    if (S.mode == M_STREAMS)
        printf("\"streams_ok\":%" PRIu64 ",\"streams_bad\":%" PRIu64 ",\"events\":%" PRIu64
               ",\"text_events\":%" PRIu64 ",\"text_mismatch\":%" PRIu64 ",",
               n_streams_ok, n_streams_bad, n_events, n_text_events, n_text_mismatch);
    hjson("latency", &H_lat, S.mode != M_STREAMS);
    if (S.mode == M_STREAMS) {
        hjson("ttft", &H_ttft, 0);
        hjson("gap", &H_gap, 1);
    }
    printf("}\n");
    return 0;
}
