/*  lumkey-mock - a fast OpenAI-shaped model provider for tests and benchmarks.
 *
 *  One h2o event loop per thread, each with its own SO_REUSEPORT listener.
 *  Plain HTTP and, with --tls-cert/--tls-key, HTTPS on the same port (the
 *  first byte of a connection tells them apart). Answers
 *
 *      POST /v1/chat/completions   JSON or SSE (stream: true), tool calls, errors
 *      POST /v1/embeddings         small fixed vectors
 *      GET  /v1/models             a fixed list
 *      GET|DELETE /_mock/requests  the recorded requests (loopback only)
 *      GET  /_mock/stats           {"requests": total}   (loopback only)
 *
 *  Per-request behaviour comes from [[mock k=v ...]] in a message or an
 *  x-mock header (see mock_directive.h). Nothing here allocates per request
 *  outside the h2o request pool, except request recording (--record 0 for
 *  benchmarks).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <openssl/ssl.h>

#include "lk_log.h"
#include "mock_directive.h"
#include "mock_record.h"
#include "mock_server.h"

#define MOCK_MAX_THREADS      64
#define MOCK_MAX_BODY         (64u << 20)
#define MOCK_SNIFF_TIMEOUT_MS 10000
mock_config_t mock_cfg = {.host = "127.0.0.1", .port = "9100", .threads = 1, .chunks = 3, .record = 1000};

static h2o_globalconf_t h2o_config;
static SSL_CTX *ssl_ctx;
static mock_thread_t threads[MOCK_MAX_THREADS];

/* ------------------------------------------------------ accept and loops */

typedef struct {
    mock_thread_t *thr;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timeout;
} sniff_t;

static void sniff_done(sniff_t *s)
{
    h2o_timeout_unlink(&s->timeout);
    s->sock->data = NULL;
    free(s);
}

static void on_sniff_timeout(h2o_timeout_entry_t *entry)
{
    sniff_t *s = H2O_STRUCT_FROM_MEMBER(sniff_t, timeout, entry);
    h2o_socket_t *sock = s->sock;
    sniff_done(s);
    h2o_socket_close(sock);
}

/* The first byte of a TLS connection is a handshake record (0x16); an HTTP
 * request starts with a letter. h2o keeps the bytes read so far. */
static void on_sniff(h2o_socket_t *sock, const char *err)
{
    sniff_t *s = sock->data;
    mock_thread_t *thr = s->thr;
    if (err != NULL) {
        sniff_done(s);
        h2o_socket_close(sock);
        return;
    }
    if (sock->input->size == 0) return;
    h2o_socket_read_stop(sock);
    int tls = (unsigned char)sock->input->bytes[0] == 0x16;
    sniff_done(s);
    h2o_accept(tls ? &thr->accept_tls : &thr->accept_plain, sock);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    mock_thread_t *thr = listener->data;
    h2o_socket_t *sock;
    if (err != NULL || (sock = h2o_evloop_socket_accept(listener)) == NULL) return;
    if (ssl_ctx == NULL) {
        h2o_accept(&thr->accept_plain, sock);
        return;
    }
    sniff_t *s = malloc(sizeof(*s));
    if (s == NULL) {
        h2o_socket_close(sock);
        return;
    }
    *s = (sniff_t){thr, sock, {0}};
    s->timeout.cb = on_sniff_timeout;
    sock->data = s;
    h2o_timeout_link(thr->ctx.loop, &thr->sniff_timeout, &s->timeout);
    h2o_socket_read_start(sock, on_sniff);
}

static void *run_loop(void *arg)
{
    mock_thread_t *thr = arg;
    h2o_context_init(&thr->ctx, h2o_evloop_create(), &h2o_config);
    thr->accept_plain = (h2o_accept_ctx_t){.ctx = &thr->ctx, .hosts = h2o_config.hosts};
    thr->accept_tls = (h2o_accept_ctx_t){.ctx = &thr->ctx, .hosts = h2o_config.hosts, .ssl_ctx = ssl_ctx};
    h2o_timeout_init(thr->ctx.loop, &thr->sniff_timeout, MOCK_SNIFF_TIMEOUT_MS);
    h2o_socket_t *listener = h2o_evloop_socket_create(thr->ctx.loop, thr->fd, H2O_SOCKET_FLAG_DONT_READ);
    listener->data = thr;
    h2o_socket_read_start(listener, on_accept);
    while (h2o_evloop_run(thr->ctx.loop, INT32_MAX) == 0)
        ;
    return NULL;
}

static int open_listener(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0) return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (mock_cfg.threads > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 || bind(fd, sa, len) != 0 ||
        listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Binds one listener per thread; port 0 picks a free port for all of them. 0 / -1. */
static int open_listeners(char *bound, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
                    *ai;
    int rc = getaddrinfo(mock_cfg.host, mock_cfg.port, &hints, &ai);
    if (rc != 0) {
        lk_log_error("cannot resolve %s: %s", mock_cfg.host, gai_strerror(rc));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    for (int i = 0; i < mock_cfg.threads; i++) {
        if ((threads[i].fd = open_listener((struct sockaddr *)&ss, len)) < 0) {
            lk_log_error("cannot listen on %s:%s: %s", mock_cfg.host, mock_cfg.port, strerror(errno));
            return -1;
        }
        if (i == 0 && getsockname(threads[0].fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    }
    char host[INET6_ADDRSTRLEN];
    uint16_t port;
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(bound, cap, "[%s]:%u", host, port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(bound, cap, "%s:%u", host, port);
    }
    return 0;
}

static int setup_tls(void)
{
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (ssl_ctx == NULL) return -1;
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, mock_cfg.tls_cert) != 1) {
        lk_log_error("cannot load TLS certificate %s", mock_cfg.tls_cert);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, mock_cfg.tls_key, SSL_FILETYPE_PEM) != 1) {
        lk_log_error("cannot load TLS key %s", mock_cfg.tls_key);
        return -1;
    }
    h2o_ssl_register_alpn_protocols(ssl_ctx, h2o_http2_alpn_protocols);
    return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *out)
{
    fputs(
        "usage: lumkey-mock [options]\n"
        "  --listen HOST:PORT   address (default 127.0.0.1:9100; port 0 picks one)\n"
        "  --threads N          event loops, one SO_REUSEPORT listener each (default 1)\n"
        "  --tls-cert F --tls-key F   also serve HTTPS on the same port\n"
        "  --expect-key KEY     require 'Authorization: Bearer KEY' (env MOCK_EXPECT_KEY)\n"
        "  --chunks N           stream pieces (default 3)\n"
        "  --interval-ms M      pause between stream events (default 0)\n"
        "  --latency-ms L       pause before answering (default 0)\n"
        "  --record N           keep the last N requests for GET /_mock/requests (default 1000, 0 = off)\n"
        "Per request: [[mock k=v ...]] in a message, or header 'x-mock: k=v ...'. Keys: chunks interval_ms\n"
        "latency_ms status tool echo malformed_sse close_after bytes hang.\n",
        out);
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int set_expect_key(const char *key)
{
    if (key == NULL || *key == '\0') return 0;
    mock_cfg.expect_auth_len = strlen(key) + 7;
    mock_cfg.expect_auth = malloc(mock_cfg.expect_auth_len + 1);
    if (mock_cfg.expect_auth == NULL) return -1;
    snprintf(mock_cfg.expect_auth, mock_cfg.expect_auth_len + 1, "Bearer %s", key);
    return 0;
}

static int parse_args(int argc, char **argv)
{
    const char *expect = getenv("MOCK_EXPECT_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        char name[32];
        const char *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) != 0 || (eq && (size_t)(eq - a) >= sizeof(name))) {
            fprintf(stderr, "lumkey-mock: unexpected argument '%s'\n", a);
            return -1;
        }
        static const char *const known[] = {"--listen",     "--threads", "--tls-cert",    "--tls-key",
                                            "--expect-key", "--chunks",  "--interval-ms", "--latency-ms",
                                            "--record",     NULL};
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        int found = 0;
        for (const char *const *k = known; *k; k++)
            found |= strlen(*k) == nlen && strncmp(*k, a, nlen) == 0;
        if (!found) {
            fprintf(stderr, "lumkey-mock: unknown option %.*s\n", (int)nlen, a);
            return -1;
        }
        if (eq) {
            snprintf(name, sizeof(name), "%.*s", (int)(eq - a), a);
            v = eq + 1;
        } else {
            snprintf(name, sizeof(name), "%s", a);
            if (i + 1 >= argc) {
                fprintf(stderr, "lumkey-mock: %s needs a value\n", name);
                return -1;
            }
            v = argv[++i];
        }
        long n;
        if (strcmp(name, "--listen") == 0) {
            const char *colon = strrchr(v, ':');
            if (colon == NULL || colon == v || colon[1] == '\0' ||
                (size_t)(colon - v) >= sizeof(mock_cfg.host) || strlen(colon + 1) >= sizeof(mock_cfg.port))
                goto bad;
            const char *h = v;
            size_t hl = (size_t)(colon - v);
            if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') h++, hl -= 2;
            snprintf(mock_cfg.host, sizeof(mock_cfg.host), "%.*s", (int)hl, h);
            snprintf(mock_cfg.port, sizeof(mock_cfg.port), "%s", colon + 1);
        } else if (strcmp(name, "--threads") == 0) {
            if (parse_int(v, 1, MOCK_MAX_THREADS, &n) != 0) goto bad;
            mock_cfg.threads = (int)n;
        } else if (strcmp(name, "--tls-cert") == 0) {
            mock_cfg.tls_cert = v;
        } else if (strcmp(name, "--tls-key") == 0) {
            mock_cfg.tls_key = v;
        } else if (strcmp(name, "--expect-key") == 0) {
            expect = v;
        } else if (strcmp(name, "--chunks") == 0) {
            if (parse_int(v, 1, MOCK_MAX_CHUNKS, &n) != 0) goto bad;
            mock_cfg.chunks = (int)n;
        } else if (strcmp(name, "--interval-ms") == 0) {
            if (parse_int(v, 0, MOCK_MAX_MS, &n) != 0) goto bad;
            mock_cfg.interval_ms = (int)n;
        } else if (strcmp(name, "--latency-ms") == 0) {
            if (parse_int(v, 0, MOCK_MAX_MS, &n) != 0) goto bad;
            mock_cfg.latency_ms = (int)n;
        } else if (strcmp(name, "--record") == 0) {
            if (parse_int(v, 0, 10000000, &n) != 0) goto bad;
            mock_cfg.record = (size_t)n;
        } else {
            fprintf(stderr, "lumkey-mock: unknown option %s\n", name);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "lumkey-mock: bad value for %s\n", name);
        return -1;
    }
    if (!mock_cfg.tls_cert != !mock_cfg.tls_key) {
        fputs("lumkey-mock: --tls-cert and --tls-key go together\n", stderr);
        return -1;
    }
    return set_expect_key(expect);
}

int main(int argc, char **argv)
{
    char bound[300];
    signal(SIGPIPE, SIG_IGN);
    lk_log_init("mock");
    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        return 2;
    }
    mock_cfg.boot = (uint16_t)(time(NULL) ^ getpid());
    mock_handler_init();
    if (mock_record_init(mock_cfg.record) != 0) return 1;

    h2o_config_init(&h2o_config);
    h2o_config.max_request_entity_size = MOCK_MAX_BODY;
    h2o_hostconf_t *host =
        h2o_config_register_host(&h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = mock_handler_on_req;
    if (mock_cfg.tls_cert && setup_tls() != 0) return 1;
    if (open_listeners(bound, sizeof(bound)) != 0) return 1;

    lk_log_info("listening on %s (%d thread%s%s%s)", bound, mock_cfg.threads, mock_cfg.threads > 1 ? "s" : "",
                ssl_ctx ? ", http+https" : ", http", mock_cfg.expect_auth ? ", key required" : "");
    printf("lumkey-mock listening on http://%s\n", bound);
    if (ssl_ctx) printf("lumkey-mock listening on https://%s\n", bound);
    fflush(stdout);

    for (int i = 0; i < mock_cfg.threads; i++)
        threads[i].index = i;
    for (int i = 1; i < mock_cfg.threads; i++) {
        if (pthread_create(&threads[i].tid, NULL, run_loop, &threads[i]) != 0) {
            lk_log_error("cannot start thread %d", i);
            return 1;
        }
    }
    run_loop(&threads[0]);
    return 0;
}
