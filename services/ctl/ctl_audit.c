/*  ctl_audit - `lumkeyctl audit ...` (see ctl_audit.h).
 *
 *      lumkeyctl audit query  [--key K] [--decision D] [--model M] [--kind K] [--from T] [--to T]
 *                             [--limit N] [--cursor C]
 *      lumkeyctl audit tail   [-n N] [--follow] [--interval SECONDS] [--kind K]
 *      lumkeyctl audit export --from T --to T [--format jsonl|csv] [--output FILE] [filters]
 *      lumkeyctl audit verify
 *      lumkeyctl audit settings [--content on|off] [--fail-open on|off] [--retention "90 days"]
 *                               [--siem-format ocsf|ecs]
 *      lumkeyctl audit status | checkpoint | retention
 *
 *  T is anything PostgreSQL reads as a timestamp ("2026-11-27T01:00:00Z").
 *  export pages through the query API (1000 events a page, cursor paging)
 *  and reports progress on stderr; verify exits 1 when the chain is broken.
 */
#include "ctl_audit.h"

#include "lk_audit_cols.h"
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_http.h"
#include "ctl_out.h"
#include "lk_buf.h"

enum { OK = 0, FAIL = 1, USAGE = 2 };

#define MAX_OPTS 32

typedef struct {
    const char *words[4];
    int nwords;
    const char *names[MAX_OPTS], *values[MAX_OPTS];
    int nopts;
    char addr[1024];
    lk_buf_t token;
    int json;
} actl_t;

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const char *const switches[] = {"follow", "help", NULL};

static const char *opt(const actl_t *c, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i < c->nopts; i++)
        if (strcmp(c->names[i], name) == 0) v = c->values[i] ? c->values[i] : "";
    return v;
}

static int usage(const char *msg)
{
    fprintf(stderr, "lumkeyctl audit: %s\n(see the top of `lumkeyctl audit --help`)\n", msg);
    return USAGE;
}

static const char help_text[] =
    "usage: lumkeyctl audit <command>\n"
    "  query  [--key K] [--decision D] [--model M] [--kind K] [--from T] [--to T] [--limit N] [--cursor C]\n"
    "  tail   [-n N] [--follow] [--interval SECONDS] [--kind K]\n"
    "  export --from T --to T [--format jsonl|csv] [--output FILE] [--key K] [--decision D] [--model M]\n"
    "  verify                       check this tenant's hash chain and checkpoint signatures\n"
    "  settings [--content on|off] [--fail-open on|off] [--retention INTERVAL] [--siem-format ocsf|ecs]\n"
    "  status | checkpoint | retention\n";

static int parse(actl_t *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-n") == 0) a = "--lines";
        if (strncmp(a, "--", 2) != 0) {
            if (c->nwords == 4) return usage("too many arguments");
            c->words[c->nwords++] = a;
            continue;
        }
        if (c->nopts == MAX_OPTS) return usage("too many options");
        const char *name = a + 2, *eq = strchr(name, '=');
        static char buf[MAX_OPTS][48];
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        if (n >= sizeof buf[0]) return usage("unknown option");
        memcpy(buf[c->nopts], name, n);
        buf[c->nopts][n] = '\0';
        int sw = 0;
        for (const char *const *s = switches; *s; s++)
            sw |= strcmp(*s, buf[c->nopts]) == 0;
        const char *value = NULL;
        if (eq)
            value = eq + 1;
        else if (!sw && i + 1 < argc)
            value = argv[++i];
        else if (!sw)
            return usage("an option needs a value");
        c->names[c->nopts] = buf[c->nopts];
        c->values[c->nopts++] = value;
    }
    return OK;
}

static int configure(actl_t *c)
{
    const char *addr = opt(c, "addr");
    if (!addr || !*addr) addr = getenv("LUMKEY_ADDR");
    if (!addr || !*addr) addr = "http://127.0.0.1:8081";
    if (strncmp(addr, "http://", 7) != 0 && strncmp(addr, "https://", 8) != 0)
        return usage("the address must start with http:// or https://");
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    for (size_t n = strlen(c->addr); n > 0 && c->addr[n - 1] == '/'; n--)
        c->addr[n - 1] = '\0';
    const char *file = opt(c, "token-file"), *env = getenv("LUMKEY_TOKEN");
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            fputs("lumkeyctl: cannot read the token file\n", stderr);
            return FAIL;
        }
        char tmp[512];
        size_t n = fread(tmp, 1, sizeof tmp - 1, f);
        fclose(f);
        while (n && (tmp[n - 1] == '\n' || tmp[n - 1] == '\r' || tmp[n - 1] == ' '))
            n--;
        int rc = lk_buf_append(&c->token, tmp, n) == 0 && lk_buf_append(&c->token, "", 1) == 0;
        sodium_memzero(tmp, sizeof tmp);
        if (!rc) return FAIL;
        c->token.len--;
    } else if (env && *env) {
        if (lk_buf_append(&c->token, env, strlen(env) + 1) != 0) return FAIL;
        c->token.len--;
    } else {
        fputs("lumkeyctl: no admin token: set LUMKEY_TOKEN or pass --token-file FILE\n", stderr);
        return USAGE;
    }
    return OK;
}

/* One call; *out is the parsed JSON object on success. */
static int call(actl_t *c, const char *method, const char *path, json_t *body, json_t **out)
{
    *out = NULL;
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    ctl_http_t http = {c->addr, (const char *)c->token.data};
    ctl_http_response_t res;
    int rc = ctl_http_call(&http, method, path, s, s ? strlen(s) : 0, &res);
    ctl_out_json_free(s);
    if (rc != 0) {
        ctl_http_response_free(&res);
        return FAIL;
    }
    json_t *parsed = res.body.len ? json_loadb((const char *)res.body.data, res.body.len, 0, NULL) : NULL;
    if (res.status < 200 || res.status > 299 || !json_is_object(parsed)) {
        const char *msg = json_string_value(json_object_get(json_object_get(parsed, "error"), "message"));
        fprintf(stderr, "lumkeyctl: error: ");
        ctl_out_safe(stderr, msg ? msg : "unexpected answer");
        fprintf(stderr, " (HTTP %ld)\n", res.status);
        json_decref(parsed);
        ctl_http_response_free(&res);
        return FAIL;
    }
    ctl_http_response_free(&res);
    *out = parsed;
    return OK;
}

/* Appends ?a=b&... of the filter options (URL-escaped) to path. */
static void query_path(const actl_t *c, char *path, size_t cap, const char *cursor, const char *limit,
                       const char *last)
{
    static const char *const filters[] = {"key", "decision", "model", "kind", "from", "to", NULL};
    size_t o = (size_t)snprintf(path, cap, "/admin/v1/audit/events?limit=%s", limit);
    for (const char *const *f = filters; *f && o < cap; f++) {
        const char *v = opt(c, *f);
        if (!v) continue;
        o += (size_t)snprintf(path + o, cap - o, "&%s=", *f);
        for (const unsigned char *p = (const unsigned char *)v; *p && o + 4 < cap; p++) {
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr("-._~:", *p))
                path[o++] = (char)*p;
            else
                o += (size_t)snprintf(path + o, cap - o, "%%%02X", *p);
        }
        path[o] = '\0';
    }
    if (cursor && o < cap) o += (size_t)snprintf(path + o, cap - o, "&cursor=%s", cursor);
    if (last && o < cap) snprintf(path + o, cap - o, "&last=%s", last);
}

static const ctl_column_t EVENT_COLS[] = {
    {"SEQ", "seq"},    {"TIME", "time"},   {"KIND", "kind"},         {"REQUEST", "request_id"},
    {"KEY", "key_id"}, {"MODEL", "model"}, {"DECISION", "decision"}, {"HTTP", "http_status"}};

static void print_events(actl_t *c, json_t *events)
{
    if (c->json) {
        size_t i;
        json_t *e;
        json_array_foreach(events, i, e)
        {
            char *s = json_dumps(e, JSON_COMPACT);
            if (s) puts(s);
            ctl_out_json_free(s);
        }
    } else {
        ctl_out_table(stdout, EVENT_COLS, sizeof EVENT_COLS / sizeof EVENT_COLS[0], events);
    }
    fflush(stdout);
}

static int cmd_query(actl_t *c)
{
    char path[2048];
    const char *limit = opt(c, "limit");
    query_path(c, path, sizeof path, opt(c, "cursor"), limit ? limit : "100", NULL);
    json_t *res;
    if (call(c, "GET", path, NULL, &res) != OK) return FAIL;
    if (c->json) {
        char *s = json_dumps(res, JSON_COMPACT);
        if (s) puts(s);
        ctl_out_json_free(s);
    } else {
        print_events(c, json_object_get(res, "events"));
        if (json_is_true(json_object_get(res, "has_more")))
            fprintf(stderr, "more: --cursor %s\n", json_string_value(json_object_get(res, "next_cursor")));
    }
    json_decref(res);
    return OK;
}

static int cmd_tail(actl_t *c)
{
    const char *n = opt(c, "lines"), *iv = opt(c, "interval");
    int follow = opt(c, "follow") != NULL;
    double interval = iv ? atof(iv) : 1.0;
    if (interval <= 0) interval = 1.0;
    char path[2048], cursor[32] = "";
    query_path(c, path, sizeof path, NULL, "1000", n ? n : "10");
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    json_t *res;
    if (call(c, "GET", path, NULL, &res) != OK) return FAIL;
    for (;;) {
        print_events(c, json_object_get(res, "events"));
        snprintf(cursor, sizeof cursor, "%s", json_string_value(json_object_get(res, "next_cursor")));
        int more = json_is_true(json_object_get(res, "has_more"));
        json_decref(res);
        if (!follow || g_stop) return OK;
        if (!more) usleep((useconds_t)(interval * 1e6));
        if (g_stop) return OK;
        query_path(c, path, sizeof path, cursor, "1000", NULL);
        if (call(c, "GET", path, NULL, &res) != OK) {
            if (g_stop) return OK;
            sleep(1); /* keep following through a restart */
            res = json_pack("{s:[],s:s,s:b}", "events", "next_cursor", cursor, "has_more", 0);
        }
    }
}

static void csv_cell(FILE *out, json_t *v)
{
    if (!v || json_is_null(v)) return;
    char buf[64];
    const char *s;
    char *dumped = NULL;
    if (json_is_string(v))
        s = json_string_value(v);
    else if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        s = buf;
    } else if (json_is_boolean(v))
        s = json_is_true(v) ? "true" : "false";
    else
        s = dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) return;
    /* quoted when needed; a leading = + - @ is defused for spreadsheets */
    int quote = strpbrk(s, ",\"\r\n") != NULL || strchr("=+-@", s[0]) != NULL;
    if (!quote) {
        fputs(s, out);
    } else {
        fputc('"', out);
        if (s[0] && strchr("=+-@", s[0]) && !(s[0] == '-' && s[1] >= '0' && s[1] <= '9')) fputc('\'', out);
        for (const char *p = s; *p; p++) {
            if (*p == '"') fputc('"', out);
            fputc(*p, out);
        }
        fputc('"', out);
    }
    ctl_out_json_free(dumped);
}

static int cmd_export(actl_t *c)
{
    const char *fmt = opt(c, "format");
    if (!fmt) fmt = "jsonl";
    int csv = strcmp(fmt, "csv") == 0;
    if (!csv && strcmp(fmt, "jsonl") != 0) return usage("export --format is jsonl or csv");
    if (!opt(c, "from") || !opt(c, "to")) return usage("export needs --from and --to");
    FILE *out = stdout;
    const char *file = opt(c, "output");
    if (file && !(out = fopen(file, "w"))) {
        fprintf(stderr, "lumkeyctl: cannot write %s\n", file);
        return FAIL;
    }
    if (csv) {
        for (int i = 0; LK_AUDIT_EXPORT_COLS[i]; i++)
            fprintf(out, "%s%s", i ? "," : "", LK_AUDIT_EXPORT_COLS[i]);
        fputs("\r\n", out);
    }
    char path[2048], cursor[32] = "0";
    long long total = 0;
    int pages = 0, rc = OK;
    for (;;) {
        query_path(c, path, sizeof path, cursor, "1000", NULL);
        json_t *res;
        if (call(c, "GET", path, NULL, &res) != OK) {
            rc = FAIL;
            break;
        }
        json_t *events = json_object_get(res, "events"), *e;
        size_t i;
        json_array_foreach(events, i, e)
        {
            if (csv) {
                for (int k = 0; LK_AUDIT_EXPORT_COLS[k]; k++) {
                    if (k) fputc(',', out);
                    csv_cell(out, json_object_get(e, LK_AUDIT_EXPORT_COLS[k]));
                }
                fputs("\r\n", out);
            } else {
                char *s = json_dumps(e, JSON_COMPACT);
                if (s) {
                    fputs(s, out);
                    fputc('\n', out);
                }
                ctl_out_json_free(s);
            }
        }
        total += (long long)json_array_size(events);
        pages++;
        fprintf(stderr, "lumkeyctl: exported %lld events (%d pages)\n", total, pages);
        snprintf(cursor, sizeof cursor, "%s", json_string_value(json_object_get(res, "next_cursor")));
        int more = json_is_true(json_object_get(res, "has_more"));
        json_decref(res);
        if (!more) break;
    }
    if (fflush(out) != 0) rc = FAIL;
    if (out != stdout) fclose(out);
    if (rc == OK) fprintf(stderr, "lumkeyctl: export done: %lld events\n", total);
    return rc;
}

static int cmd_verify(actl_t *c)
{
    json_t *res;
    if (call(c, "POST", "/admin/v1/audit/verify", NULL, &res) != OK) return FAIL;
    int ok = json_is_true(json_object_get(res, "ok"));
    if (c->json) {
        char *s = json_dumps(res, JSON_COMPACT);
        if (s) puts(s);
        ctl_out_json_free(s);
    } else if (ok) {
        printf("audit chain OK: %lld events (seq %lld..%lld), %lld checkpoints verified, public key %s\n",
               (long long)json_integer_value(json_object_get(res, "events_checked")),
               (long long)json_integer_value(json_object_get(res, "first_seq")),
               (long long)json_integer_value(json_object_get(res, "last_seq")),
               (long long)json_integer_value(json_object_get(res, "checkpoints_checked")),
               json_string_value(json_object_get(res, "public_key")));
    } else {
        json_t *bad = json_object_get(res, "first_bad_seq");
        if (json_is_integer(bad))
            printf("audit chain BROKEN at sequence %lld: %s\n", (long long)json_integer_value(bad),
                   json_string_value(json_object_get(res, "reason")));
        size_t i;
        json_t *cp;
        json_array_foreach(json_object_get(res, "bad_checkpoints"), i, cp) printf(
            "checkpoint at sequence %lld: %s\n", (long long)json_integer_value(json_object_get(cp, "seq")),
            json_string_value(json_object_get(cp, "reason")));
    }
    json_decref(res);
    return ok ? OK : FAIL;
}

static int on_off(const char *v, json_t *body, const char *name)
{
    if (!v) return OK;
    if (strcmp(v, "on") == 0 || strcmp(v, "true") == 0)
        return json_object_set_new(body, name, json_true()), OK;
    if (strcmp(v, "off") == 0 || strcmp(v, "false") == 0)
        return json_object_set_new(body, name, json_false()), OK;
    return usage("--content and --fail-open take on or off");
}

static int show(actl_t *c, json_t *res)
{
    if (c->json) {
        char *s = json_dumps(res, JSON_COMPACT);
        if (s) puts(s);
        ctl_out_json_free(s);
    } else {
        ctl_out_object(stdout, res, NULL, NULL);
    }
    json_decref(res);
    return OK;
}

static int cmd_settings(actl_t *c)
{
    json_t *body = json_object(), *res;
    if (on_off(opt(c, "content"), body, "content") != OK ||
        on_off(opt(c, "fail-open"), body, "fail_open") != OK) {
        json_decref(body);
        return USAGE;
    }
    if (opt(c, "retention")) json_object_set_new(body, "retention", json_string(opt(c, "retention")));
    if (opt(c, "siem-format")) json_object_set_new(body, "siem_format", json_string(opt(c, "siem-format")));
    int rc = json_object_size(body) ? call(c, "PATCH", "/admin/v1/audit/settings", body, &res)
                                    : call(c, "GET", "/admin/v1/audit/settings", NULL, &res);
    json_decref(body);
    return rc == OK ? show(c, res) : rc;
}

static int simple(actl_t *c, const char *method, const char *path)
{
    json_t *res;
    return call(c, method, path, NULL, &res) == OK ? show(c, res) : FAIL;
}

int ctl_audit_wants(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            if (!strchr(argv[i], '=') && strcmp(argv[i], "--help") != 0 && i + 1 < argc) i++;
            continue;
        }
        return strcmp(argv[i], "audit") == 0;
    }
    return 0;
}

int ctl_audit_main(int argc, char **argv)
{
    static actl_t c;
    lk_buf_init(&c.token, 1);
    int rc = parse(&c, argc, argv);
    const char *cmd = c.nwords > 1 ? c.words[1] : NULL;
    if (rc != OK) goto done;
    if (opt(&c, "help") || !cmd) {
        fputs(help_text, cmd || opt(&c, "help") ? stdout : stderr);
        rc = opt(&c, "help") ? OK : USAGE;
        goto done;
    }
    const char *fmt = opt(&c, "format");
    c.json = fmt && strcmp(fmt, "json") == 0;
    if ((rc = configure(&c)) != OK) goto done;
    if (strcmp(cmd, "query") == 0)
        rc = cmd_query(&c);
    else if (strcmp(cmd, "tail") == 0)
        rc = cmd_tail(&c);
    else if (strcmp(cmd, "export") == 0)
        rc = cmd_export(&c);
    else if (strcmp(cmd, "verify") == 0)
        rc = cmd_verify(&c);
    else if (strcmp(cmd, "settings") == 0)
        rc = cmd_settings(&c);
    else if (strcmp(cmd, "status") == 0)
        rc = simple(&c, "GET", "/admin/v1/audit/status");
    else if (strcmp(cmd, "checkpoint") == 0)
        rc = simple(&c, "POST", "/admin/v1/audit/checkpoint");
    else if (strcmp(cmd, "retention") == 0)
        rc = simple(&c, "POST", "/admin/v1/audit/retention");
    else
        rc = usage("unknown audit command");
done:
    lk_buf_free(&c.token);
    return rc;
}
