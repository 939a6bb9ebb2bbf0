/*  lumkeyctl - the Lumkey admin CLI (in the spirit of the vault CLI).
 *
 *      lumkeyctl status
 *      lumkeyctl providers create --name N --kind K --base-url URL [--models a,b]
 *                                 (--api-key-stdin | --api-key-file F)
 *      lumkeyctl providers list
 *      lumkeyctl keys create --name N [--user U] [--env live|test] [--models a,b] [--allowed-ips a,b]
 *                            [--expires-at UNIX] [--meta k=v ...]
 *      lumkeyctl keys list
 *      lumkeyctl keys get ID
 *      lumkeyctl keys update ID [--name N] [--user U] [--models a,b] [--expires-at UNIX] [--meta k=v ...]
 *      lumkeyctl keys rotate ID [--overlap SECONDS]
 *      lumkeyctl keys revoke ID
 *      lumkeyctl providers get ID
 *      lumkeyctl tokens create --name N --role admin|approver|auditor|scim
 *      lumkeyctl tokens list
 *      lumkeyctl sso status | sso users
 *      lumkeyctl tokens revoke ID
 *      lumkeyctl policy validate FILE                   (local: no server needed)
 *      lumkeyctl policy test FILE --request REQ.json [--answer ANS.json] [--api A] [--context CTX.json]
 *      lumkeyctl policy create --name N --file F [--default]
 *      lumkeyctl policy update ID --file F
 *      lumkeyctl policy list | get ID | versions ID
 *      lumkeyctl policy default ID|none
 *      lumkeyctl holds list [--status S] [--watch] | show ID | approve ID [--reason R] | reject ID --reason R
 *
 *  Address: --addr or LUMKEY_ADDR (default http://127.0.0.1:8081). Admin
 *  token: LUMKEY_TOKEN or --token-file F, never argv (argv shows in ps).
 *  Secrets (the admin token, a provider key) are never printed; a new agent
 *  key is printed once, as the result of `keys create` or `keys rotate`; a
 *  new admin token once, as the result of `tokens create`.
 *  Exit: 0 ok, 1 the server or the network said no, 2 usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "ctl_audit.h"
#include "ctl_http.h"
#include "ctl.h"
#include "ctl_out.h"
#include "lk_buf.h"
#include "lk_policy.h"

static const char usage_text[] =
    "usage: lumkeyctl [--addr URL] [--format table|json] [--token-file F] <command>\n"
    "\n"
    "commands:\n"
    "  status                       is the edge ready?\n"
    "  providers create --name N --kind openai|anthropic|azure|openai-compatible --base-url URL\n"
    "                   [--allow-private] (a loopback/private base URL, for a local provider)\n"
    "                   [--models a,b] (--api-key-stdin | --api-key-file F)\n"
    "  providers replace-credential ID (--api-key-stdin | --api-key-file F)\n"
    "  providers list\n"
    "  providers get ID\n"
    "  keys create --name N [--user U] [--env live|test] [--models a,b] [--allowed-ips 10.0.0.0/8,...]\n"
    "              [--expires-at UNIX] [--meta k=v ...]\n"
    "  keys list\n"
    "  keys get ID\n"
    "  keys update ID [--name N] [--user U] [--models a,b] [--allowed-ips a,b] [--expires-at UNIX]\n"
    "                 [--meta k=v ...]\n"
    "  keys rotate ID [--overlap SECONDS]   new key (shown once); the old one works SECONDS more\n"
    "                                       (default 86400)\n"
    "  keys revoke ID                       the key stops working at once\n"
    "  routes create --alias A --provider PROV_ID [--upstream-model M]\n"
    "                [--fallback-provider PROV_ID [--fallback-model M]]   model alias, optional fallback\n"
    "  routes list\n"
    "  routes delete ID\n"
    "  tokens create --name N --role admin|approver|auditor|scim   new admin token (shown once;\n"
    "                                          scim: for the identity provider's SCIM client)\n"
    "  tokens list\n"
    "  sso status                           single sign-on settings and counts (role admin)\n"
    "  sso users                            SCIM-provisioned users, their role and sessions\n"
    "  tokens revoke ID                     the admin token stops working at once\n"
    "  policy validate FILE                 check a policy document locally (exit 1 if invalid)\n"
    "  policy test FILE --request REQ.json [--answer ANS.json] [--api chat.completions|messages|\n"
    "              responses|embeddings] [--context CTX.json]\n"
    "                                       the decision, computed locally; no provider is called\n"
    "  policy create --name N --file F [--default]\n"
    "  policy update ID --file F            a new version, active at once on every worker\n"
    "  policy list\n"
    "  policy get ID\n"
    "  policy versions ID                   who changed what, and when\n"
    "  policy default ID|none               the tenant's default policy (keys without their own)\n"
    "  keys create/update ... --policy ID|none   attach a policy to a key\n"
    "  audit query|tail|export|verify|settings|status   the audit trail (lumkeyctl audit --help)\n"
    "  holds list [--status pending|approved|rejected|timed_out|abandoned] [--watch]\n"
    "  holds show ID\n"
    "  holds approve ID [--reason R]\n"
    "  holds reject ID --reason R\n"
    "  hdp issuers create --name N (--public-key K | --public-key-file F) [--kid KID]\n"
    "  hdp issuers list\n"
    "  hdp issuers revoke ID\n"
    "  help\n"
    "\n"
    "environment:\n"
    "  LUMKEY_ADDR    edge admin address (default " CTL_DEFAULT_ADDR ")\n"
    "  LUMKEY_TOKEN   admin token (or --token-file F; never on the command line)\n";

int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lumkeyctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nrun 'lumkeyctl help' for usage\n", stderr);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------ arguments */

static int is_flag(const char *name, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(name, *set) == 0) return 1;
    return 0;
}

static const char *const bool_flags[] = {"api-key-stdin", "allow-private", "help", "default", "watch", NULL};
static const char *const secret_flags[] = {"token", "api-key", "key", "admin-token", NULL};

/* Splits argv into command words and --name value options (anywhere). */
static int parse_argv(ctl_t *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0) a = "--help";
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (c->nwords == sizeof(c->words) / sizeof(c->words[0]))
                return usage_error("too many arguments (at '%s')", a);
            c->words[c->nwords++] = a;
            continue;
        }
        if (c->nopts == CTL_MAX_OPTS) return usage_error("too many options (at '%s')", a);
        static char names[CTL_MAX_OPTS][48];
        const char *eq = strchr(a + 2, '=');
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n >= sizeof(names[0])) return usage_error("unknown option '%s'", a);
        char *name = names[c->nopts];
        memcpy(name, a + 2, n);
        name[n] = '\0';
        if (is_flag(name, secret_flags))
            return usage_error("--%s: secrets are never taken on the command line (argv is visible in ps); "
                               "use LUMKEY_TOKEN / --token-file for the admin token, "
                               "--api-key-stdin / --api-key-file for a provider key",
                               name);
        const char *value = NULL;
        if (is_flag(name, bool_flags)) {
            if (eq) return usage_error("--%s takes no value", name);
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return usage_error("--%s needs a value", name);
        }
        c->opts[c->nopts++] = (opt_t){name, value};
    }
    return EXIT_OK;
}

/* The last value of --name, or NULL. */
const char *opt(const ctl_t *c, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < c->nopts; i++)
        if (strcmp(c->opts[i].name, name) == 0) v = c->opts[i].value ? c->opts[i].value : "";
    return v;
}

static const char *const global_flags[] = {"addr", "format", "token-file", "help", NULL};

/* Rejects options the command does not know. */
int check_opts(const ctl_t *c, const char *const *allowed)
{
    for (size_t i = 0; i < c->nopts; i++)
        if (!is_flag(c->opts[i].name, global_flags) && !(allowed && is_flag(c->opts[i].name, allowed)))
            return usage_error("unknown option --%s for this command", c->opts[i].name);
    return EXIT_OK;
}

/* Reads a whole small file (or stdin when fd is given) into buf, trimming
 * trailing whitespace. 0 / -1 (message printed). */
static int read_secret_fd(int fd, const char *what, lk_buf_t *buf)
{
    char chunk[4096];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            fprintf(stderr, "lumkeyctl: cannot read %s: %s\n", what, strerror(errno));
            sodium_memzero(chunk, sizeof(chunk));
            return -1;
        }
        if (r == 0) break;
        if (buf->len + (size_t)r > CTL_MAX_SECRET || lk_buf_append(buf, chunk, (size_t)r) != 0) {
            fprintf(stderr, "lumkeyctl: %s is too large\n", what);
            sodium_memzero(chunk, sizeof(chunk));
            return -1;
        }
    }
    sodium_memzero(chunk, sizeof(chunk));
    while (buf->len && (buf->data[buf->len - 1] == '\n' || buf->data[buf->len - 1] == '\r' ||
                        buf->data[buf->len - 1] == ' ' || buf->data[buf->len - 1] == '\t'))
        buf->data[--buf->len] = '\0';
    if (buf->len == 0) {
        fprintf(stderr, "lumkeyctl: %s is empty\n", what);
        return -1;
    }
    if (memchr(buf->data, '\0', buf->len) || memchr(buf->data, '\n', buf->len)) {
        fprintf(stderr, "lumkeyctl: %s must be a single line\n", what);
        return -1;
    }
    if (lk_buf_reserve(buf, 1) != 0) return -1;
    buf->data[buf->len] = '\0';
    return 0;
}

static int read_secret_file(const char *path, const char *what, lk_buf_t *buf)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "lumkeyctl: cannot open %s %s: %s\n", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 0077))
        fprintf(stderr, "lumkeyctl: warning: %s %s is readable by group or others\n", what, path);
    int rc = read_secret_fd(fd, what, buf);
    close(fd);
    return rc;
}

/* Reads a secret from stdin; on a terminal, prompts without echo. */
static int read_secret_stdin(const char *prompt, lk_buf_t *buf)
{
    struct termios old, quiet;
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s (input hidden, end with Enter then Ctrl-D): ", prompt);
        quiet = old;
        quiet.c_lflag &= (tcflag_t)~ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    int rc = read_secret_fd(STDIN_FILENO, "the key on stdin", buf);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    return rc;
}

/* Sets up address, format and token from flags and environment. */
static int configure(ctl_t *c)
{
    const char *addr = opt(c, "addr");
    if (addr == NULL) addr = getenv("LUMKEY_ADDR");
    if (addr == NULL || *addr == '\0') addr = CTL_DEFAULT_ADDR;
    if (strncmp(addr, "http://", 7) != 0 && strncmp(addr, "https://", 8) != 0)
        return usage_error("address '%s' must start with http:// or https://", addr);
    if (strlen(addr) >= sizeof(c->addr)) return usage_error("address too long: %s", addr);
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    for (size_t n = strlen(c->addr); n > 0 && c->addr[n - 1] == '/'; n--)
        c->addr[n - 1] = '\0';

    const char *format = opt(c, "format");
    if (format && strcmp(format, "json") != 0 && strcmp(format, "table") != 0)
        return usage_error("--format must be table or json, not '%s'", format);
    c->json = format && strcmp(format, "json") == 0;
    return EXIT_OK;
}

int load_token(ctl_t *c)
{
    const char *file = opt(c, "token-file");
    if (file) return read_secret_file(file, "token file", &c->token) == 0 ? EXIT_OK : EXIT_FAIL;
    const char *env = getenv("LUMKEY_TOKEN");
    if (env && *env) {
        if (lk_buf_append(&c->token, env, strlen(env) + 1) != 0) return EXIT_FAIL;
        c->token.len--;
        return EXIT_OK;
    }
    fputs("lumkeyctl: no admin token: set LUMKEY_TOKEN or pass --token-file FILE\n", stderr);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------- requests */

/* Explains a failed answer: the server's error message when it sent one. */
static void print_http_error(const ctl_t *c, const ctl_http_response_t *res, json_t *body)
{
    json_t *err = json_object_get(body, "error");
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *code = json_string_value(json_object_get(err, "code"));
    if (msg == NULL && json_is_string(err)) msg = json_string_value(err);
    fputs("lumkeyctl: error: ", stderr);
    if (msg) {
        ctl_out_safe(stderr, msg);
        fprintf(stderr, " (HTTP %ld", res->status);
        if (code) {
            fputs(", ", stderr);
            ctl_out_safe(stderr, code);
        }
        fputs(")\n", stderr);
        return;
    }
    char snippet[201];
    snprintf(snippet, sizeof(snippet), "%s", res->body.len ? (const char *)res->body.data : "(empty body)");
    fprintf(stderr, "HTTP %ld from %s: ", res->status, c->addr);
    ctl_out_safe(stderr, snippet);
    fputc('\n', stderr);
}

/* One admin call. On success *out holds the parsed body (caller decrefs) and
 * the raw body stays in res for --format json. Returns an exit code. */
int admin_call(ctl_t *c, const char *method, const char *path, json_t *req, ctl_http_response_t *res,
               json_t **out)
{
    *out = NULL;
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    if (req && body == NULL) {
        fputs("lumkeyctl: cannot encode the request\n", stderr);
        return EXIT_FAIL;
    }
    ctl_http_t http = {c->addr, c->token.len ? (const char *)c->token.data : NULL};
    int rc = ctl_http_call(&http, method, path, body, body ? strlen(body) : 0, res);
    ctl_out_json_free(body); /* wiped by the jansson allocator */
    if (rc != 0) return EXIT_FAIL;
    json_error_t jerr;
    json_t *parsed = res->body.len ? json_loadb((const char *)res->body.data, res->body.len, 0, &jerr) : NULL;
    if (res->status < 200 || res->status > 299) {
        print_http_error(c, res, parsed);
        json_decref(parsed);
        return EXIT_FAIL;
    }
    if (!json_is_object(parsed)) {
        fprintf(stderr, "lumkeyctl: %s answered HTTP %ld with a body that is not a JSON object\n", c->addr,
                res->status);
        json_decref(parsed);
        return EXIT_FAIL;
    }
    *out = parsed;
    return EXIT_OK;
}

void print_raw(const ctl_http_response_t *res)
{
    fwrite(res->body.data, 1, res->body.len, stdout);
    if (res->body.len == 0 || res->body.data[res->body.len - 1] != '\n') fputc('\n', stdout);
}

/* "a,b,,c" -> ["a","b","c"]. */
static json_t *csv_array(const char *s)
{
    json_t *arr = json_array();
    while (arr && *s) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        while (n && s[0] == ' ')
            s++, n--;
        while (n && s[n - 1] == ' ')
            n--;
        if (n) json_array_append_new(arr, json_stringn(s, n));
        s += n;
        while (*s == ' ' || *s == ',')
            s++;
    }
    return arr;
}

static int require(const ctl_t *c, const char *name)
{
    const char *v = opt(c, name);
    if (v == NULL || *v == '\0') return usage_error("missing --%s", name);
    return EXIT_OK;
}

/* ------------------------------------------------------------- commands */

static int cmd_status(ctl_t *c)
{
    if (check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    ctl_http_t http = {c->addr, NULL}; /* /readyz needs no token */
    ctl_http_response_t res;
    int rc = ctl_http_call(&http, "GET", "/readyz", NULL, 0, &res);
    if (rc == 0) {
        int ready = res.status == 200;
        if (c->json) {
            json_t *o = json_pack("{s:s, s:b, s:I}", "addr", c->addr, "ready", ready, "http_status",
                                  (json_int_t)res.status);
            char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
            puts(s ? s : "{}");
            ctl_out_json_free(s);
            json_decref(o);
        } else if (ready)
            printf("Lumkey at %s: ready\n", c->addr);
        else
            printf("Lumkey at %s: not ready (HTTP %ld)\n", c->addr, res.status);
        rc = ready ? EXIT_OK : EXIT_FAIL;
    } else {
        rc = EXIT_FAIL;
    }
    ctl_http_response_free(&res);
    return rc;
}

static int cmd_providers_create(ctl_t *c)
{
    static const char *const allowed[] = {"name",          "kind",         "base-url",      "models",
                                          "api-key-stdin", "api-key-file", "allow-private", NULL};
    static const char *const kinds[] = {"openai", "anthropic", "azure", "openai-compatible", NULL};
    if (check_opts(c, allowed) || require(c, "name") || require(c, "kind") || require(c, "base-url"))
        return EXIT_USAGE;
    if (!is_flag(opt(c, "kind"), kinds))
        return usage_error("--kind must be openai, anthropic, azure or openai-compatible, not '%s'",
                           opt(c, "kind"));
    const char *file = opt(c, "api-key-file");
    int from_stdin = opt(c, "api-key-stdin") != NULL;
    if (!!file == from_stdin)
        return usage_error("%s",
                           "give the provider key with exactly one of --api-key-stdin or --api-key-file F");
    int rc = load_token(c);
    if (rc != EXIT_OK) return rc;

    lk_buf_t key;
    lk_buf_init(&key, 1);
    if ((file ? read_secret_file(file, "api key file", &key) : read_secret_stdin("Provider API key", &key)) !=
        0) {
        lk_buf_free(&key);
        return EXIT_FAIL;
    }
    json_t *req = json_pack("{s:s, s:s, s:s, s:s%}", "name", opt(c, "name"), "kind", opt(c, "kind"),
                            "base_url", opt(c, "base-url"), "api_key", (const char *)key.data, key.len);
    lk_buf_free(&key);
    if (req && opt(c, "models")) json_object_set_new(req, "models", csv_array(opt(c, "models")));
    if (req && opt(c, "allow-private")) json_object_set_new(req, "allow_private", json_true());
    if (req == NULL) {
        fputs("lumkeyctl: arguments are not valid UTF-8\n", stderr);
        return EXIT_USAGE;
    }
    ctl_http_response_t res;
    json_t *out;
    rc = admin_call(c, "POST", "/admin/v1/providers", req, &res, &out);
    json_decref(req);
    if (rc == EXIT_OK) {
        static const char *const fields[] = {"id",     "name",       "kind",       "base_url",
                                             "models", "credential", "created_at", NULL};
        static const char *const skip[] = {"api_key", NULL};
        if (c->json)
            print_raw(&res);
        else
            ctl_out_object(stdout, out, fields, skip);
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

int cmd_list(ctl_t *c, const char *path, const ctl_column_t *cols, size_t ncols)
{
    if (check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    int rc = load_token(c);
    if (rc != EXIT_OK) return rc;
    ctl_http_response_t res;
    json_t *out;
    rc = admin_call(c, "GET", path, NULL, &res, &out);
    if (rc == EXIT_OK) {
        json_t *data = json_object_get(out, "data");
        if (c->json) {
            print_raw(&res);
        } else if (!json_is_array(data)) {
            fprintf(stderr, "lumkeyctl: %s answered without a data array\n", c->addr);
            rc = EXIT_FAIL;
        } else {
            ctl_out_table(stdout, cols, ncols, data);
        }
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

static int cmd_providers_list(ctl_t *c)
{
    static const ctl_column_t cols[] = {{"ID", "id"},
                                        {"NAME", "name"},
                                        {"KIND", "kind"},
                                        {"BASE URL", "base_url"},
                                        {"MODELS", "models"},
                                        {"FINGERPRINT", "credential.fingerprint"},
                                        {"CREATED", "created_at"}};
    return cmd_list(c, "/admin/v1/providers", cols, sizeof(cols) / sizeof(cols[0]));
}

static int cmd_keys_list(ctl_t *c)
{
    static const ctl_column_t cols[] = {
        {"ID", "id"},         {"NAME", "name"},          {"USER", "user"},     {"ENV", "env"},
        {"MODELS", "models"}, {"EXPIRES", "expires_at"}, {"STATUS", "status"}, {"CREATED", "created_at"}};
    return cmd_list(c, "/admin/v1/keys", cols, sizeof(cols) / sizeof(cols[0]));
}

/* Builds the keys create body from the options; NULL after a usage message. */
static json_t *keys_create_body(const ctl_t *c)
{
    json_t *meta = NULL, *req = json_object();
    if (req == NULL) return NULL;
    if (opt(c, "name") && json_object_set_new(req, "name", json_string(opt(c, "name"))) != 0) {
        usage_error("%s", "--name is not valid UTF-8");
        json_decref(req);
        return NULL;
    }
    const char *user = opt(c, "user"), *env = opt(c, "env"), *models = opt(c, "models"),
               *exp = opt(c, "expires-at");
    if (user && json_object_set_new(req, "user", json_string(user)) != 0) goto bad_utf8;
    if (env) {
        if (strcmp(env, "live") != 0 && strcmp(env, "test") != 0) {
            usage_error("--env must be live or test, not '%s'", env);
            goto fail;
        }
        json_object_set_new(req, "env", json_string(env));
    }
    if (models) json_object_set_new(req, "models", csv_array(models));
    const char *ips = opt(c, "allowed-ips");
    if (ips) json_object_set_new(req, "allowed_ips", csv_array(ips));
    const char *pol = opt(c, "policy");
    if (pol) json_object_set_new(req, "policy", strcmp(pol, "none") == 0 ? json_null() : json_string(pol));
    if (exp) {
        char *end;
        errno = 0;
        long long t = strtoll(exp, &end, 10);
        if (errno || *exp == '\0' || *end != '\0' || t <= 0) {
            usage_error("--expires-at wants unix seconds, not '%s'", exp);
            goto fail;
        }
        json_object_set_new(req, "expires_at", json_integer(t));
    }
    for (size_t i = 0; i < c->nopts; i++) {
        if (strcmp(c->opts[i].name, "meta") != 0) continue;
        const char *kv = c->opts[i].value, *eq = strchr(kv, '=');
        if (eq == NULL || eq == kv) {
            usage_error("--meta wants key=value, not '%s'", kv);
            goto fail;
        }
        if (meta == NULL && ((meta = json_object()) == NULL || json_object_set(req, "metadata", meta) != 0))
            goto fail;
        char key[256];
        if ((size_t)(eq - kv) >= sizeof(key)) {
            usage_error("--meta key too long in '%s'", kv);
            goto fail;
        }
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        json_t *v = json_string(eq + 1);
        if (v == NULL || json_object_set_new(meta, key, v) != 0) goto bad_utf8;
    }
    json_decref(meta);
    return req;
bad_utf8:
    usage_error("%s", "arguments are not valid UTF-8");
fail:
    json_decref(meta);
    json_decref(req);
    return NULL;
}

static int cmd_keys_create(ctl_t *c)
{
    static const char *const allowed[] = {"name", "user",        "env",    "models", "expires-at",
                                          "meta", "allowed-ips", "policy", NULL};
    if (check_opts(c, allowed) || require(c, "name")) return EXIT_USAGE;
    json_t *req = keys_create_body(c);
    if (req == NULL) return EXIT_USAGE;
    int rc = load_token(c);
    if (rc != EXIT_OK) {
        json_decref(req);
        return rc;
    }
    ctl_http_response_t res;
    json_t *out;
    rc = admin_call(c, "POST", "/admin/v1/keys", req, &res, &out);
    json_decref(req);
    if (rc == EXIT_OK) {
        static const char *const fields[] = {"id",         "name",     "user",       "env",         "models",
                                             "expires_at", "metadata", "created_at", "allowed_ips", NULL};
        static const char *const skip[] = {"key", NULL};
        const char *key = json_string_value(json_object_get(out, "key"));
        if (c->json) {
            print_raw(&res);
        } else {
            ctl_out_object(stdout, out, fields, skip);
            if (key) {
                fputs("\nAPI key (shown once, store it now: it cannot be retrieved again):\n\n    ", stdout);
                ctl_out_safe(stdout, key);
                fputs("\n", stdout);
            } else {
                fputs("\nlumkeyctl: warning: the server returned no key\n", stderr);
            }
        }
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

/* The id word of `keys get ID` etc.: prefix + letters and digits only (it
 * goes into the URL path). NULL after a usage message. */
const char *object_id(const ctl_t *c, const char *prefix)
{
    const char *id = c->nwords > 2 ? c->words[2] : NULL;
    if (id == NULL) {
        usage_error("missing the %s... id", prefix);
        return NULL;
    }
    size_t n = strlen(id), pl = strlen(prefix);
    int ok = n > pl && n <= 64 && strncmp(id, prefix, pl) == 0;
    for (size_t i = pl; ok && i < n; i++)
        ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') ||
             (id[i] >= 'A' && id[i] <= 'Z');
    if (!ok) {
        usage_error("'%s' is not a %s... id", id, prefix);
        return NULL;
    }
    return id;
}

/* One call on one object; shows the answer (or its "key" member) as an object. */
int object_call(ctl_t *c, const char *method, const char *path, json_t *req, const char *const *fields)
{
    int rc = load_token(c);
    if (rc != EXIT_OK) return rc;
    ctl_http_response_t res;
    json_t *out;
    rc = admin_call(c, method, path, req, &res, &out);
    if (rc == EXIT_OK) {
        static const char *const skip[] = {"key", NULL};
        if (c->json)
            print_raw(&res);
        else
            ctl_out_object(stdout, out, fields, skip);
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

static const char *const key_fields[] = {"id",          "name",       "user",     "env",    "models",
                                         "allowed_ips", "expires_at", "metadata", "policy", "created_at",
                                         "revoked_at",  "status",     NULL};

static int cmd_keys_get(ctl_t *c)
{
    const char *id = object_id(c, "key_");
    if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/keys/%s", id);
    return object_call(c, "GET", path, NULL, key_fields);
}

static int cmd_providers_get(ctl_t *c)
{
    static const char *const fields[] = {"id",     "name",       "kind",       "base_url",
                                         "models", "credential", "created_at", NULL};
    const char *id = object_id(c, "prov_");
    if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/providers/%s", id);
    return object_call(c, "GET", path, NULL, fields);
}

static int cmd_providers_replace_credential(ctl_t *c)
{
    static const char *const allowed[] = {"api-key-stdin", "api-key-file", NULL};
    static const char *const fields[] = {"id",     "name",       "kind",       "base_url",
                                         "models", "credential", "created_at", NULL};
    const char *id = object_id(c, "prov_");
    if (id == NULL || check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    const char *file = opt(c, "api-key-file");
    int from_stdin = opt(c, "api-key-stdin") != NULL;
    if (!!file == from_stdin)
        return usage_error(
            "%s", "give the new provider key with exactly one of --api-key-stdin or --api-key-file F");
    lk_buf_t key;
    lk_buf_init(&key, 1);
    if ((file ? read_secret_file(file, "api key file", &key)
              : read_secret_stdin("New provider API key", &key)) != 0) {
        lk_buf_free(&key);
        return EXIT_FAIL;
    }
    json_t *req = json_pack("{s:s%}", "api_key", (const char *)key.data, key.len);
    lk_buf_free(&key);
    if (req == NULL) {
        fputs("lumkeyctl: the key is not valid UTF-8\n", stderr);
        return EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/providers/%s/credential", id);
    int rc = object_call(c, "PUT", path, req, fields);
    json_decref(req);
    return rc;
}

static int cmd_keys_update(ctl_t *c)
{
    static const char *const allowed[] = {"name", "user",        "models", "expires-at",
                                          "meta", "allowed-ips", "policy", NULL};
    const char *id = object_id(c, "key_");
    if (id == NULL || check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    json_t *req = keys_create_body(c);
    if (req == NULL) return EXIT_USAGE;
    if (json_object_size(req) == 0) {
        json_decref(req);
        return usage_error("%s",
                           "nothing to update: give --name, --user, --models, --allowed-ips, --expires-at, "
                           "--meta or --policy");
    }
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/keys/%s", id);
    int rc = object_call(c, "PATCH", path, req, key_fields);
    json_decref(req);
    return rc;
}

static int cmd_keys_revoke(ctl_t *c)
{
    const char *id = object_id(c, "key_");
    if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/keys/%s/revoke", id);
    return object_call(c, "POST", path, NULL, key_fields);
}

static const char *const token_fields[] = {"id", "name", "role", "created_at", "revoked_at", "status", NULL};

/* ---- routes: model aliases and fallbacks (POST/GET /admin/v1/routes, DELETE /admin/v1/routes/ID) */

static const char *const route_fields[] = {
    "id",         "alias", "provider_id", "upstream_model", "fallback_provider_id", "fallback_upstream_model",
    "created_at", NULL};

static int cmd_routes_create(ctl_t *c)
{
    static const char *const allowed[] = {"alias",          "provider", "upstream-model", "fallback-provider",
                                          "fallback-model", NULL};
    if (check_opts(c, allowed) || require(c, "alias") || require(c, "provider")) return EXIT_USAGE;
    if (opt(c, "fallback-model") && !opt(c, "fallback-provider"))
        return usage_error("%s", "--fallback-model needs --fallback-provider");
    json_t *req = json_pack("{s:s, s:s}", "alias", opt(c, "alias"), "provider_id", opt(c, "provider"));
    static const char *const map[][2] = {{"upstream-model", "upstream_model"},
                                         {"fallback-provider", "fallback_provider_id"},
                                         {"fallback-model", "fallback_upstream_model"}};
    for (size_t i = 0; req && i < sizeof map / sizeof map[0]; i++)
        if (opt(c, map[i][0])) json_object_set_new(req, map[i][1], json_string(opt(c, map[i][0])));
    if (req == NULL) {
        fputs("lumkeyctl: arguments are not valid UTF-8\n", stderr);
        return EXIT_USAGE;
    }
    int rc = object_call(c, "POST", "/admin/v1/routes", req, route_fields);
    json_decref(req);
    return rc;
}

static int cmd_routes_list(ctl_t *c)
{
    static const ctl_column_t cols[] = {{"ID", "id"},
                                        {"ALIAS", "alias"},
                                        {"PROVIDER", "provider_id"},
                                        {"UPSTREAM MODEL", "upstream_model"},
                                        {"FALLBACK", "fallback_provider_id"},
                                        {"FALLBACK MODEL", "fallback_upstream_model"},
                                        {"CREATED", "created_at"}};
    return cmd_list(c, "/admin/v1/routes", cols, sizeof(cols) / sizeof(cols[0]));
}

static int cmd_routes_delete(ctl_t *c)
{
    const char *id = object_id(c, "rt_");
    if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/routes/%s", id);
    return object_call(c, "DELETE", path, NULL, route_fields);
}

static int cmd_tokens_list(ctl_t *c)
{
    static const ctl_column_t cols[] = {
        {"ID", "id"},         {"NAME", "name"},          {"ROLE", "role"},
        {"STATUS", "status"}, {"CREATED", "created_at"}, {"REVOKED", "revoked_at"}};
    return cmd_list(c, "/admin/v1/tokens", cols, sizeof(cols) / sizeof(cols[0]));
}

static int cmd_sso_status(ctl_t *c)
{
    static const char *const fields[] = {"oidc",           "group_roles",     "session_ttl_s",
                                         "session_idle_s", "users",           "active_users",
                                         "groups",         "active_sessions", NULL};
    if (check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    return object_call(c, "GET", "/admin/v1/sso/status", NULL, fields);
}

static int cmd_sso_users(ctl_t *c)
{
    static const ctl_column_t cols[] = {{"ID", "id"},
                                        {"USER", "user_name"},
                                        {"ROLE", "role"},
                                        {"ACTIVE", "active"},
                                        {"SESSIONS", "active_sessions"}};
    return cmd_list(c, "/admin/v1/sso/users", cols, sizeof(cols) / sizeof(cols[0]));
}

static int cmd_tokens_create(ctl_t *c)
{
    static const char *const allowed[] = {"name", "role", NULL};
    if (check_opts(c, allowed) || require(c, "name") || require(c, "role")) return EXIT_USAGE;
    const char *role = opt(c, "role");
    if (strcmp(role, "admin") != 0 && strcmp(role, "approver") != 0 && strcmp(role, "auditor") != 0 &&
        strcmp(role, "scim") != 0)
        return usage_error("--role must be admin, approver, auditor or scim, not '%s'", role);
    json_t *req = json_pack("{s:s, s:s}", "name", opt(c, "name"), "role", role);
    if (req == NULL) return usage_error("%s", "arguments are not valid UTF-8");
    int rc = load_token(c);
    if (rc != EXIT_OK) {
        json_decref(req);
        return rc;
    }
    ctl_http_response_t res;
    json_t *out;
    rc = admin_call(c, "POST", "/admin/v1/tokens", req, &res, &out);
    json_decref(req);
    if (rc == EXIT_OK) {
        static const char *const skip[] = {"token", NULL};
        const char *token = json_string_value(json_object_get(out, "token"));
        if (c->json) {
            print_raw(&res);
        } else {
            ctl_out_object(stdout, out, token_fields, skip);
            if (token) {
                fputs("\nAdmin token (shown once, store it now: it cannot be retrieved again):\n\n    ",
                      stdout);
                ctl_out_safe(stdout, token);
                fputs("\n", stdout);
            } else {
                fputs("\nlumkeyctl: warning: the server returned no token\n", stderr);
            }
        }
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

static int cmd_tokens_revoke(ctl_t *c)
{
    const char *id = object_id(c, "adm_");
    if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/tokens/%s/revoke", id);
    return object_call(c, "POST", path, NULL, token_fields);
}

static int cmd_keys_rotate(ctl_t *c)
{
    static const char *const allowed[] = {"overlap", NULL};
    const char *id = object_id(c, "key_");
    if (id == NULL || check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    json_t *req = json_object();
    const char *ov = opt(c, "overlap");
    if (ov) {
        char *end;
        errno = 0;
        long long t = strtoll(ov, &end, 10);
        if (errno || *ov == '\0' || *end != '\0' || t < 0) {
            json_decref(req);
            return usage_error("--overlap wants seconds, not '%s'", ov);
        }
        json_object_set_new(req, "overlap_seconds", json_integer(t));
    }
    int rc = load_token(c);
    if (rc != EXIT_OK) {
        json_decref(req);
        return rc;
    }
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/keys/%s/rotate", id);
    ctl_http_response_t res;
    json_t *out;
    rc = admin_call(c, "POST", path, req, &res, &out);
    json_decref(req);
    if (rc == EXIT_OK) {
        static const char *const skip[] = {"key", NULL};
        json_t *key = json_object_get(out, "key");
        const char *secret = json_string_value(json_object_get(key, "key"));
        if (c->json) {
            print_raw(&res);
        } else {
            fputs("New key:\n", stdout);
            ctl_out_object(stdout, key, key_fields, skip);
            fputs("\nPrevious key (works until its expiry):\n", stdout);
            ctl_out_object(stdout, json_object_get(out, "previous"), NULL, NULL);
            if (secret) {
                fputs("\nNEW API key (shown once, store it now: it cannot be retrieved again):\n\n    ",
                      stdout);
                ctl_out_safe(stdout, secret);
                fputs("\n", stdout);
            } else {
                fputs("\nlumkeyctl: warning: the server returned no key\n", stderr);
            }
        }
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

/* ----------------------------------------------------------------- main */

/* jansson memory is wiped when freed: request bodies carry provider keys,
 * responses carry new agent keys. */
/* ---------------------------------------------------------------- policy */

/* Reads a whole file (at most 16 MiB) into a malloc'd NUL-terminated string. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "lumkeyctl: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
        if (n + 1 == cap) {
            if (cap >= (16u << 20)) {
                fprintf(stderr, "lumkeyctl: %s is larger than 16 MiB\n", path);
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (buf && err) {
        fprintf(stderr, "lumkeyctl: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

/* Compiles FILE; prints why not. NULL on failure (reported). */
static lk_policy_t *compile_file(const char *path)
{
    size_t n;
    char *text = read_file(path, &n);
    if (text == NULL) return NULL;
    lk_policy_error_t err;
    memset(&err, 0, sizeof err);
    lk_policy_t *p = lk_policy_compile(text, n, &err);
    free(text);
    if (p == NULL) {
        if (err.line > 0)
            fprintf(stderr, "%s:%d:%d: error: %s\n", path, err.line, err.column, err.msg);
        else
            fprintf(stderr, "%s: error: %s: %s\n", path, err.path[0] ? err.path : "(document)", err.msg);
    }
    return p;
}

static const char *policy_file_arg(const ctl_t *c)
{
    if (c->nwords < 3) {
        usage_error("%s", "missing the policy FILE");
        return NULL;
    }
    return c->words[2];
}

static int cmd_policy_validate(ctl_t *c)
{
    const char *path = policy_file_arg(c);
    if (path == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    lk_policy_t *p = compile_file(path);
    if (p == NULL) return EXIT_FAIL;
    printf("%s: valid%s\n", path, lk_policy_has_answer_rules(p) ? " (has answer-side rules)" : "");
    lk_policy_free(&p);
    return EXIT_OK;
}

static int cmd_policy_test(ctl_t *c)
{
    static const char *const allowed[] = {"request", "answer", "api", "context", NULL};
    const char *path = policy_file_arg(c);
    if (path == NULL || check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    const char *files[2] = {opt(c, "request"), opt(c, "answer")};
    if (!files[0] && !files[1])
        return usage_error("%s", "give --request REQ.json (and/or --answer ANS.json)");
    lk_api_t api = opt(c, "api") ? lk_policy_api_of(opt(c, "api")) : LK_API_CHAT;
    if (!api)
        return usage_error("--api must be chat.completions, messages, responses or embeddings, not '%s'",
                           opt(c, "api"));
    json_t *cx = NULL;
    if (opt(c, "context")) {
        size_t n;
        char *t = read_file(opt(c, "context"), &n);
        if (t == NULL) return EXIT_FAIL;
        json_error_t jerr;
        cx = json_loadb(t, n, 0, &jerr);
        free(t);
        if (!json_is_object(cx)) {
            fprintf(stderr, "lumkeyctl: %s: not a JSON object (line %d, column %d)\n", opt(c, "context"),
                    jerr.line, jerr.column);
            json_decref(cx);
            return EXIT_FAIL;
        }
    }
    lk_policy_t *p = compile_file(path);
    if (p == NULL) {
        json_decref(cx);
        return EXIT_FAIL;
    }
    const char *hdr[LK_POLICY_CTX_MAX_HEADERS][2];
    lk_policy_ctx_t ctx;
    lk_policy_ctx_from_json(cx, api, &ctx, hdr);
    json_t *out = json_object();
    int rc = EXIT_OK;
    for (int side = 0; side < 2 && rc == EXIT_OK; side++) {
        if (!files[side]) continue;
        size_t n;
        char *body = read_file(files[side], &n);
        if (body == NULL) {
            rc = EXIT_FAIL;
            break;
        }
        lk_policy_result_t r;
        memset(&r, 0, sizeof r);
        int e =
            side ? lk_policy_eval_answer(p, &ctx, body, n, &r) : lk_policy_eval_request(p, &ctx, body, n, &r);
        free(body);
        if (e != 0) {
            fprintf(stderr, "lumkeyctl: %s: ", files[side]);
            ctl_out_safe(stderr, r.message[0] ? r.message : "not a valid body for this API");
            fputc('\n', stderr);
            rc = EXIT_FAIL;
        } else {
            json_object_set_new(out, side ? "answer" : "request", lk_policy_result_json(&r, side));
        }
        lk_policy_result_clear(&r);
    }
    if (rc == EXIT_OK) {
        char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text) {
            if (c->json) {
                puts(text);
            } else {
                static const char *const fields[] = {"action",     "would",     "rule", "message",
                                                     "redactions", "estimates", "body", NULL};
                const char *k;
                json_t *v;
                json_object_foreach(out, k, v)
                {
                    printf("%s:\n", k);
                    ctl_out_object(stdout, v, fields, NULL);
                }
            }
            ctl_out_json_free(text);
        }
    }
    json_decref(out);
    json_decref(cx);
    lk_policy_free(&p);
    return rc;
}

static const char *const policy_fields[] = {"id",     "name",       "version",    "default",  "keys",
                                            "digest", "created_at", "updated_at", "document", NULL};

/* The body {"document": <file as JSON text>} (plus name / default for create). */
static json_t *policy_body(const ctl_t *c, int create)
{
    const char *path = opt(c, "file");
    if (path == NULL) {
        usage_error("%s", "give the policy document with --file F");
        return NULL;
    }
    size_t n;
    char *text = read_file(path, &n);
    if (text == NULL) return NULL;
    json_t *req = json_pack("{s:s%}", "document", text, n);
    free(text);
    if (req == NULL) {
        fprintf(stderr, "lumkeyctl: %s is not valid UTF-8\n", path);
        return NULL;
    }
    if (create) {
        if (opt(c, "name") == NULL || json_object_set_new(req, "name", json_string(opt(c, "name"))) != 0) {
            usage_error("%s", "give the policy a --name");
            json_decref(req);
            return NULL;
        }
        if (opt(c, "default")) json_object_set_new(req, "default", json_true());
    }
    return req;
}

static int cmd_policy_create(ctl_t *c)
{
    static const char *const allowed[] = {"name", "file", "default", NULL};
    if (check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    json_t *req = policy_body(c, 1);
    if (req == NULL) return EXIT_USAGE;
    int rc = object_call(c, "POST", "/admin/v1/policies", req, policy_fields);
    json_decref(req);
    return rc;
}

static int cmd_policy_update(ctl_t *c)
{
    static const char *const allowed[] = {"file", NULL};
    const char *id = object_id(c, "pol_");
    if (id == NULL || check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    json_t *req = policy_body(c, 0);
    if (req == NULL) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/policies/%s", id);
    int rc = object_call(c, "PUT", path, req, policy_fields);
    json_decref(req);
    return rc;
}

static int cmd_policy_get(ctl_t *c)
{
    const char *id = object_id(c, "pol_");
    if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/policies/%s", id);
    return object_call(c, "GET", path, NULL, policy_fields);
}

static int cmd_policy_list(ctl_t *c)
{
    static const ctl_column_t cols[] = {{"ID", "id"},           {"NAME", "name"}, {"VERSION", "version"},
                                        {"DEFAULT", "default"}, {"KEYS", "keys"}, {"UPDATED", "updated_at"}};
    return cmd_list(c, "/admin/v1/policies", cols, sizeof(cols) / sizeof(cols[0]));
}

static int cmd_policy_versions(ctl_t *c)
{
    static const ctl_column_t cols[] = {{"VERSION", "version"},
                                        {"BY", "created_by"},
                                        {"AT", "created_at"},
                                        {"ADDED", "diff.rules_added"},
                                        {"REMOVED", "diff.rules_removed"},
                                        {"CHANGED", "diff.rules_changed"},
                                        {"SETTINGS", "diff.settings_changed"}};
    const char *id = object_id(c, "pol_");
    if (id == NULL) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/policies/%s/versions", id);
    return cmd_list(c, path, cols, sizeof(cols) / sizeof(cols[0]));
}

static int cmd_policy_default(ctl_t *c)
{
    if (c->nwords < 3) return usage_error("%s", "give a policy id, or none");
    const char *id = c->words[2];
    if (strcmp(id, "none") != 0 && object_id(c, "pol_") == NULL) return EXIT_USAGE;
    if (check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    json_t *req = json_pack("{s:o}", "policy", strcmp(id, "none") == 0 ? json_null() : json_string(id));
    static const char *const fields[] = {"default_policy", NULL};
    int rc = object_call(c, "PUT", "/admin/v1/policies/default", req, fields);
    json_decref(req);
    return rc;
}

static int dispatch_policy(ctl_t *c, const char *b)
{
    if (b == NULL)
        return usage_error("%s", "'policy' needs a subcommand: validate, test, create, update, list, get, "
                                 "versions or default");
    size_t want = strcmp(b, "list") == 0 || strcmp(b, "create") == 0 ? 2 : 3;
    if (c->nwords > want) return usage_error("unexpected argument '%s'", c->words[want]);
    if (strcmp(b, "validate") == 0) return cmd_policy_validate(c);
    if (strcmp(b, "test") == 0) return cmd_policy_test(c);
    if (strcmp(b, "create") == 0) return cmd_policy_create(c);
    if (strcmp(b, "update") == 0) return cmd_policy_update(c);
    if (strcmp(b, "list") == 0) return cmd_policy_list(c);
    if (strcmp(b, "get") == 0) return cmd_policy_get(c);
    if (strcmp(b, "versions") == 0) return cmd_policy_versions(c);
    if (strcmp(b, "default") == 0) return cmd_policy_default(c);
    return usage_error("unknown command '%s'", b);
}

static void *json_alloc(size_t n)
{
    size_t *p = malloc(n + 16);
    if (p == NULL) return NULL;
    p[0] = n;
    return (char *)p + 16;
}

static void json_release(void *ptr)
{
    if (ptr == NULL) return;
    char *p = (char *)ptr - 16;
    sodium_memzero(ptr, *(size_t *)p);
    free(p);
}

static int dispatch(ctl_t *c)
{
    const char *a = c->nwords > 0 ? c->words[0] : NULL, *b = c->nwords > 1 ? c->words[1] : NULL;
    if (opt(c, "help") || (a && strcmp(a, "help") == 0)) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (a == NULL) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    int rc = configure(c);
    if (rc != EXIT_OK) return rc;
    if (strcmp(a, "policy") == 0) return dispatch_policy(c, b);
    if (strcmp(a, "hdp") == 0) return ctl_hdp(c, b);
    int with_id =
        b && (strcmp(b, "get") == 0 || strcmp(b, "update") == 0 || strcmp(b, "rotate") == 0 ||
              strcmp(b, "revoke") == 0 || strcmp(b, "replace-credential") == 0 || strcmp(b, "show") == 0 ||
              strcmp(b, "approve") == 0 || strcmp(b, "reject") == 0 || strcmp(b, "delete") == 0);
    size_t want = strcmp(a, "status") == 0 ? 1 : with_id ? 3 : 2;
    if (c->nwords > want) return usage_error("unexpected argument '%s'", c->words[want]);
    if (strcmp(a, "status") == 0) return cmd_status(c);
    if (strcmp(a, "providers") == 0 && b && strcmp(b, "create") == 0) return cmd_providers_create(c);
    if (strcmp(a, "providers") == 0 && b && strcmp(b, "list") == 0) return cmd_providers_list(c);
    if (strcmp(a, "keys") == 0 && b && strcmp(b, "create") == 0) return cmd_keys_create(c);
    if (strcmp(a, "keys") == 0 && b && strcmp(b, "list") == 0) return cmd_keys_list(c);
    if (strcmp(a, "keys") == 0 && b && strcmp(b, "get") == 0) return cmd_keys_get(c);
    if (strcmp(a, "keys") == 0 && b && strcmp(b, "update") == 0) return cmd_keys_update(c);
    if (strcmp(a, "keys") == 0 && b && strcmp(b, "rotate") == 0) return cmd_keys_rotate(c);
    if (strcmp(a, "keys") == 0 && b && strcmp(b, "revoke") == 0) return cmd_keys_revoke(c);
    if (strcmp(a, "providers") == 0 && b && strcmp(b, "get") == 0) return cmd_providers_get(c);
    if (strcmp(a, "providers") == 0 && b && strcmp(b, "replace-credential") == 0)
        return cmd_providers_replace_credential(c);
    if (strcmp(a, "tokens") == 0 && b && strcmp(b, "create") == 0) return cmd_tokens_create(c);
    if (strcmp(a, "tokens") == 0 && b && strcmp(b, "list") == 0) return cmd_tokens_list(c);
    if (strcmp(a, "tokens") == 0 && b && strcmp(b, "revoke") == 0) return cmd_tokens_revoke(c);
    if (strcmp(a, "holds") == 0) return ctl_holds(c, b);
    if (strcmp(a, "sso") == 0 && b && strcmp(b, "status") == 0) return cmd_sso_status(c);
    if (strcmp(a, "sso") == 0 && b && strcmp(b, "users") == 0) return cmd_sso_users(c);
    if (strcmp(a, "routes") == 0 && b && strcmp(b, "create") == 0) return cmd_routes_create(c);
    if (strcmp(a, "routes") == 0 && b && strcmp(b, "list") == 0) return cmd_routes_list(c);
    if (strcmp(a, "routes") == 0 && b && strcmp(b, "delete") == 0) return cmd_routes_delete(c);
    int group = strcmp(a, "providers") == 0 || strcmp(a, "keys") == 0 || strcmp(a, "tokens") == 0 ||
                strcmp(a, "routes") == 0 || strcmp(a, "sso") == 0;
    if (group && b == NULL)
        return usage_error("'%s' needs a subcommand: %s", a,
                           strcmp(a, "keys") == 0     ? "create, list, get, update, rotate or revoke"
                           : strcmp(a, "tokens") == 0 ? "create, list or revoke"
                           : strcmp(a, "routes") == 0 ? "create, list or delete"
                           : strcmp(a, "sso") == 0    ? "status or users"
                                                      : "create, list or get");
    return usage_error("unknown command '%s'", b && group ? b : a);
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0) {
        fputs("lumkeyctl: cannot initialise libsodium\n", stderr);
        return EXIT_FAIL;
    }
    json_set_alloc_funcs(json_alloc, json_release);
    ctl_http_global_init();
    static ctl_t ctl;
    lk_buf_init(&ctl.token, 1);
    int rc = ctl_audit_wants(argc, argv) ? ctl_audit_main(argc, argv) : parse_argv(&ctl, argc, argv);
    if (rc == EXIT_OK && !ctl_audit_wants(argc, argv)) rc = dispatch(&ctl);
    lk_buf_free(&ctl.token);
    ctl_http_global_cleanup();
    if (fflush(stdout) != 0 && rc == EXIT_OK) rc = EXIT_FAIL;
    return rc;
}
