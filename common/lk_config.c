/*  lk_config - where the services find each other, and how a setting is read. */
#include "lk_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/stat.h>

#include "lk_log.h"

static const char *env_nonempty(const char *name)
{
    const char *v = name ? getenv(name) : NULL;
    return v && *v ? v : NULL;
}

int lk_config_load_file(void)
{
    static int loaded;
    const char *path = env_nonempty("LUMKEY_CONFIG_FILE");
    if (loaded || !path) return 0;
    loaded = 1;
    FILE *f = fopen(path, "r");
    if (!f) {
        lk_log_error("cannot read LUMKEY_CONFIG_FILE %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = '\0';
        char *k = line;
        while (*k == ' ' || *k == '\t')
            k++;
        if (!*k || *k == '#') continue;
        char *eq = strchr(k, '=');
        if (eq) *eq = '\0';
        size_t kl = eq ? strlen(k) : 0;
        while (kl && (k[kl - 1] == ' ' || k[kl - 1] == '\t'))
            k[--kl] = '\0';
        int ok = eq && kl > 0 && (strncmp(k, "LUMKEY_", 7) == 0 || strcmp(k, "LK_LOG_LEVEL") == 0);
        for (size_t i = 0; ok && i < kl; i++)
            ok = (k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_';
        if (!ok) { /* never echo the line: it may hold a secret */
            lk_log_error("%s line %d: expected LUMKEY_NAME=value", path, lineno);
            rc = -1;
            break;
        }
        if (strcmp(k, "LUMKEY_CONFIG_FILE") == 0) continue;
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (setenv(k, v, 0) != 0) { /* 0: the environment wins */
            rc = -1;
            break;
        }
    }
    fclose(f);
    sodium_memzero(line, sizeof line);
    return rc;
}

int lk_config_run_dir(char *out, size_t cap)
{
    const char *dir = env_nonempty("LUMKEY_RUN_DIR");
    int n = snprintf(out, cap, "%s", dir ? dir : LK_CONFIG_DEFAULT_RUN_DIR);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* "LUMKEY_<SERVICE><suffix>" into var[64]. 0 / -1 (bad service name). */
static int service_var(const char *service, const char *suffix, char var[64])
{
    if (!service || !*service || strlen(service) > 32 || strlen(suffix) > 16) return -1;
    memcpy(var, "LUMKEY_", 8);
    size_t p = 7;
    for (const char *s = service; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return -1;
        var[p++] = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    }
    memcpy(var + p, suffix, strlen(suffix) + 1);
    return 0;
}

int lk_config_endpoint(const char *service, char *out, size_t cap)
{
    char var[64];
    if (cap == 0 || service_var(service, "_ENDPOINT", var) != 0) return -1;
    const char *ep = env_nonempty(var);
    int n;
    if (ep) {
        n = snprintf(out, cap, "%s", ep);
    } else {
        char dir[400];
        if (lk_config_run_dir(dir, sizeof dir) != 0) return -1;
        n = snprintf(out, cap, "ipc://%s/%s.ipc", dir, service);
    }
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* The value of --flag in argv, or NULL. */
static const char *arg_value(int argc, char **argv, const char *flag)
{
    size_t fl = strlen(flag);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-' || strncmp(a + 2, flag, fl) != 0) continue;
        if (a[2 + fl] == '=') return a + 3 + fl;
        if (a[2 + fl] == '\0' && i + 1 < argc) return argv[i + 1];
    }
    return NULL;
}

const char *lk_config_get(int argc, char **argv, const char *flag, const char *env, const char *dflt)
{
    const char *v = flag ? arg_value(argc, argv, flag) : NULL;
    if (v) return v;
    v = env_nonempty(env);
    return v ? v : dflt;
}

int lk_config_has(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1] == '-' && strcmp(argv[i] + 2, flag) == 0) return 1;
    return 0;
}

int lk_config_get_int(int argc, char **argv, const char *flag, const char *env, long dflt, long max,
                      long *out)
{
    const char *v = lk_config_get(argc, argv, flag, env, NULL);
    if (!v) {
        *out = dflt;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 1 || x > max) {
        lk_log_error("%s%s must be an integer between 1 and %ld", flag ? "--" : "", flag ? flag : env, max);
        return -1;
    }
    *out = x;
    return 0;
}

static int in_list(const char *const *list, const char *name, size_t n)
{
    for (; list && *list; list++)
        if (strlen(*list) == n && strncmp(*list, name, n) == 0) return 1;
    return 0;
}

int lk_config_check_args(int argc, char **argv, const char *const *with_value, const char *const *switches)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') {
            lk_log_error("unexpected argument '%.64s' (see --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        if (in_list(with_value, name, n)) {
            if (!eq && ++i >= argc) {
                lk_log_error("--%.*s needs a value", (int)n, name);
                return -1;
            }
        } else if (!in_list(switches, name, n) || eq) {
            lk_log_error("unknown option --%.*s (see --help)", (int)(n > 64 ? 64 : n), name);
            return -1;
        }
    }
    return 0;
}

static int mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc != 0 && errno != EEXIST) return -1;
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

int lk_config_prepare_endpoint(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) != 0) return 0;
    char dir[512];
    int n = snprintf(dir, sizeof dir, "%s", endpoint + 6);
    if (n < 0 || (size_t)n >= sizeof dir) {
        lk_log_error("endpoint path too long");
        return -1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    if (mkdirs(dir) != 0) {
        lk_log_error("cannot create the directory %s for %s: %s", dir, endpoint, strerror(errno));
        return -1;
    }
    return 0;
}

int lk_config_bind(const char *service, int argc, char **argv, char *out, size_t cap)
{
    char bind_var[64];
    if (service_var(service, "_BIND", bind_var) != 0) return -1;
    const char *ep = lk_config_get(argc, argv, "endpoint", bind_var, NULL);
    int n = ep ? snprintf(out, cap, "%s", ep) : 0;
    if ((ep && (n < 0 || (size_t)n >= cap)) || (!ep && lk_config_endpoint(service, out, cap) != 0)) {
        lk_log_error("bad endpoint for %s (LUMKEY_*_BIND / LUMKEY_*_ENDPOINT / LUMKEY_RUN_DIR)", service);
        return -1;
    }
    if (strchr(out, ',') || strncmp(out, "dns+", 4) == 0) {
        lk_log_error("a worker binds one endpoint: set %s to e.g. tcp://*:5555", bind_var);
        return -1;
    }
    return 0;
}

int lk_config_worker(lk_config_worker_t *cfg, const char *service, int argc, char **argv,
                     const char *const *extra_with_value, const char *const *extra_switches)
{
    const char *with_value[16], *switches[16];
    size_t nv = 0, ns = 0;
    with_value[nv++] = "db";
    with_value[nv++] = "endpoint";
    switches[ns++] = "help";
    switches[ns++] = "health";
    for (; extra_with_value && *extra_with_value && nv < 15; extra_with_value++)
        with_value[nv++] = *extra_with_value;
    for (; extra_switches && *extra_switches && ns < 15; extra_switches++)
        switches[ns++] = *extra_switches;
    with_value[nv] = NULL;
    switches[ns] = NULL;
    if (lk_config_load_file() != 0 || lk_config_check_args(argc, argv, with_value, switches) != 0) return -1;
    long wait_ms, stmt_ms;
    if (lk_config_get_int(argc, argv, NULL, "LUMKEY_DB_WAIT_MS", 10000, 3600000, &wait_ms) != 0 ||
        lk_config_get_int(argc, argv, NULL, "LUMKEY_DB_STATEMENT_TIMEOUT_MS", 5000, 3600000, &stmt_ms) != 0)
        return -1;
    cfg->db_wait_ms = (int)wait_ms;
    cfg->statement_timeout_ms = (int)stmt_ms;
    cfg->db = lk_config_get(argc, argv, "db", "LUMKEY_DB", NULL);
    if (!cfg->db) {
        lk_log_error("LUMKEY_DB is not set (a libpq connection string)");
        return -1;
    }
    if (lk_config_bind(service, argc, argv, cfg->endpoint, sizeof cfg->endpoint) != 0) return -1;
    cfg->health = lk_config_has(argc, argv, "health");
    return 0;
}
