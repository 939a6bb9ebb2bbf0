/*  edge_config - lumkey-edge settings from the environment (LUMKEY_*). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "lk_config.h"
#include "lk_curve.h"
#include "lk_log.h"

static void env_str(char *dst, size_t cap, const char *name, const char *dflt)
{
    const char *v = getenv(name);
    snprintf(dst, cap, "%s", v && *v ? v : dflt);
}

static int env_u64(uint64_t *dst, const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *dst = dflt;
        return 0;
    }
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x == 0) {
        lk_log_error("%s must be a positive integer", name);
        return -1;
    }
    *dst = x;
    return 0;
}

/* LUMKEY_AUDIT_MODE: "on" (default) or "off", the benchmark-only comparison with gateways that
 * publish figures without an audit trail (issue 9). Off is refused unless acknowledged, and loud:
 * logged at start here, lumkey_edge_audit_mode on /metrics (edge_audit.c). 0 / -1. */
static int audit_mode_load(edge_config_t *cfg)
{
    const char *mode = getenv("LUMKEY_AUDIT_MODE"), *ack = getenv("LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF");
    if (!mode || !*mode || strcmp(mode, "on") == 0) return 0;
    if (strcmp(mode, "off") != 0) {
        lk_log_error("LUMKEY_AUDIT_MODE must be on or off");
        return -1;
    }
    if (!ack || strcmp(ack, "1") != 0) {
        lk_log_error("LUMKEY_AUDIT_MODE=off is a benchmark-only setting that records no request in the audit "
                     "trail; refused unless LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF=1 is set as well");
        return -1;
    }
    cfg->audit_off = 1;
    lk_log_warn("AUDIT IS OFF (LUMKEY_AUDIT_MODE=off): requests are forwarded without any audit event; "
                "benchmark only, never in production (docs/security.md)");
    return 0;
}

int edge_config_load(edge_config_t *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof *cfg);
    if (argc == 3 && strcmp(argv[1], "--curve-keygen") == 0) /* a CLI mode: PATH and PATH_secret */
        exit(lk_curve_keygen(argv[2]) == 0 ? 0 : 1);
    if (lk_config_load_file() != 0) return -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("lumkey-edge: the HTTP edge of Lumkey.\n"
                   "Settings come from the environment:\n"
                   "  LUMKEY_LISTEN            agent API host:port (127.0.0.1:8080)\n"
                   "  LUMKEY_ADMIN_LISTEN      admin API host:port (127.0.0.1:8081)\n"
                   "  LUMKEY_TLS_CERT/KEY      serve the agent API over TLS (HTTP/1.1 and HTTP/2)\n"
                   "  LUMKEY_UPSTREAM_CA_FILE  extra CA bundle trusted for providers\n"
                   "  LUMKEY_HOP_TIMEOUT_MS    per worker call (2000)\n"
                   "  LUMKEY_UPSTREAM_TIMEOUT_MS  provider I/O timeout (600000)\n"
                   "  LUMKEY_MAX_BODY_BYTES    request body limit (4194304)\n"
                   "  LUMKEY_KEYCACHE_TTL_MS   how long a key's vault hash is reused (60000; 0 = off)\n"
                   "  LUMKEY_HOLD_TIMEOUT_MS   how long a held request waits for a human (300000)\n"
                   "  LUMKEY_RUN_DIR, LUMKEY_{POLICY,VAULT,APPROVAL,AUDIT}_ENDPOINT  worker endpoints: a\n"
                   "                           comma-separated list of ZeroMQ endpoints and "
                   "dns+tcp://NAME:PORT\n"
                   "  LUMKEY_DNS_REFRESH_MS    how often dns+tcp:// names are resolved again (5000)\n"
                   "  LUMKEY_CURVE_SECRET_FILE, LUMKEY_CURVE_SERVER_PUBLIC_FILE  CURVE on tcp:// links\n"
                   "  LUMKEY_SHUTDOWN_GRACE_MS after SIGTERM, /readyz fails but requests are served (2000)\n"
                   "  LUMKEY_SHUTDOWN_DRAIN_MS then requests in flight may finish this long (30000)\n"
                   "  LUMKEY_CONFIG_FILE       a file of LUMKEY_*=value lines (the environment wins)\n"
                   "  LUMKEY_AUDIT_MODE        on (default); off = BENCHMARK ONLY: requests are not audited\n"
                   "                           (refused unless LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF=1)\n"
                   "lumkey-edge --curve-keygen PATH   write a CURVE keypair: PATH and PATH_secret\n");
            exit(0);
        }
        lk_log_error("unknown argument %s (settings come from LUMKEY_* variables; see --help)", argv[i]);
        return -1;
    }
    env_str(cfg->listen, sizeof cfg->listen, "LUMKEY_LISTEN", "127.0.0.1:8080");
    env_str(cfg->admin_listen, sizeof cfg->admin_listen, "LUMKEY_ADMIN_LISTEN", "127.0.0.1:8081");
    env_str(cfg->tls_cert, sizeof cfg->tls_cert, "LUMKEY_TLS_CERT", "");
    env_str(cfg->tls_key, sizeof cfg->tls_key, "LUMKEY_TLS_KEY", "");
    env_str(cfg->upstream_ca_file, sizeof cfg->upstream_ca_file, "LUMKEY_UPSTREAM_CA_FILE", "");
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        if (lk_config_endpoint(edge_svc_name((edge_svc_t)i), cfg->endpoints[i], sizeof cfg->endpoints[i]) !=
            0) {
            lk_log_error("bad endpoint for %s", edge_svc_name((edge_svc_t)i));
            return -1;
        }
    }
    uint64_t body;
    const char *kc = getenv("LUMKEY_KEYCACHE_TTL_MS");
    cfg->keycache_ttl_ms = 60000;
    if (kc && strcmp(kc, "0") == 0)
        cfg->keycache_ttl_ms = 0;
    else if (env_u64(&cfg->keycache_ttl_ms, "LUMKEY_KEYCACHE_TTL_MS", 60000) != 0)
        return -1;
    if (env_u64(&cfg->hop_timeout_ms, "LUMKEY_HOP_TIMEOUT_MS", 2000) != 0 ||
        env_u64(&cfg->upstream_timeout_ms, "LUMKEY_UPSTREAM_TIMEOUT_MS", 600000) != 0 ||
        env_u64(&body, "LUMKEY_MAX_BODY_BYTES", 4u << 20) != 0 ||
        env_u64(&cfg->shutdown_grace_ms, "LUMKEY_SHUTDOWN_GRACE_MS", 2000) != 0 ||
        env_u64(&cfg->shutdown_drain_ms, "LUMKEY_SHUTDOWN_DRAIN_MS", 30000) != 0 ||
        env_u64(&cfg->hold_timeout_ms, "LUMKEY_HOLD_TIMEOUT_MS", 300000) != 0)
        return -1;
    cfg->max_body_bytes = body;
    if (audit_mode_load(cfg) != 0) return -1;
    cfg->max_response_bytes = 64u << 20;
    if ((cfg->tls_cert[0] != 0) != (cfg->tls_key[0] != 0)) {
        lk_log_error("LUMKEY_TLS_CERT and LUMKEY_TLS_KEY go together");
        return -1;
    }
    return 0;
}
