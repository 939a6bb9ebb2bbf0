/*  lumkey-audit - records audit events (the only writer of audit tables and
 *  the only Kafka producer).
 *
 *  Settings (environment, or the --flag in brackets): LUMKEY_DB [--db],
 *  LUMKEY_AUDIT_ENDPOINT [--endpoint] (default ipc://$LUMKEY_RUN_DIR/audit.ipc),
 *  LUMKEY_DB_WAIT_MS, LUMKEY_DB_STATEMENT_TIMEOUT_MS,
 *  LUMKEY_AUDIT_SIGNING_KEY_FILE (default $LUMKEY_RUN_DIR/../audit-signing.key; created at first start),
 *  LUMKEY_AUDIT_CHECKPOINT_MS (60000), LUMKEY_AUDIT_RETENTION_MS (3600000),
 *  LUMKEY_KAFKA_BROKERS (none: no Kafka export), LUMKEY_KAFKA_TOPIC (lumkey.audit).
 *  --init-signing-key FILE writes a new signing key and exits;
 *  --print-public-key prints the hex public key of the signing key and exits.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "lk_config.h"
#include "lk_log.h"
#include "lk_worker.h"

static const char USAGE[] =
    "usage: lumkey-audit [--db CONNINFO] [--endpoint EP] | --init-signing-key FILE | --print-public-key\n"
    "  LUMKEY_DB, LUMKEY_AUDIT_ENDPOINT (ipc://$LUMKEY_RUN_DIR/audit.ipc),\n"
    "  LUMKEY_DB_WAIT_MS (10000), LUMKEY_DB_STATEMENT_TIMEOUT_MS (5000),\n"
    "  LUMKEY_AUDIT_SIGNING_KEY_FILE ($LUMKEY_RUN_DIR/../audit-signing.key), LUMKEY_AUDIT_CHECKPOINT_MS "
    "(60000),\n"
    "  LUMKEY_AUDIT_RETENTION_MS (3600000), LUMKEY_KAFKA_BROKERS, LUMKEY_KAFKA_TOPIC (lumkey.audit)\n";

static const char *default_key_file(char *buf, size_t cap)
{
    const char *f = getenv("LUMKEY_AUDIT_SIGNING_KEY_FILE");
    if (f && *f) return f;
    const char *run = getenv("LUMKEY_RUN_DIR");
    snprintf(buf, cap, "%s/../audit-signing.key", run && *run ? run : ".");
    return buf;
}

int main(int argc, char **argv)
{
    lk_log_init("audit");
    if (sodium_init() < 0) {
        lk_log_error("libsodium failed to initialise");
        return 1;
    }
    if (lk_config_has(argc, argv, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    char keybuf[1024];
    const char *init = lk_config_get(argc, argv, "init-signing-key", NULL, NULL);
    if (init) {
        audit_sign_t *s = audit_sign_open(init, 1);
        if (!s) return 1;
        printf("%s\n", audit_sign_public_hex(s));
        audit_sign_destroy(&s);
        return 0;
    }
    if (lk_config_has(argc, argv, "print-public-key")) {
        audit_sign_t *s = audit_sign_open(default_key_file(keybuf, sizeof keybuf), 0);
        if (!s) return 1;
        printf("%s\n", audit_sign_public_hex(s));
        audit_sign_destroy(&s);
        return 0;
    }
    lk_config_worker_t cfg;
    if (lk_config_worker(&cfg, "audit", argc, argv, NULL, NULL) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (cfg.health) return lk_worker_health("audit", cfg.endpoint, 2000);
    long cp_ms = 60000, ret_ms = 3600000;
    if (lk_config_get_int(argc, argv, NULL, "LUMKEY_AUDIT_CHECKPOINT_MS", 60000, 86400000L, &cp_ms) != 0 ||
        lk_config_get_int(argc, argv, NULL, "LUMKEY_AUDIT_RETENTION_MS", 3600000, 86400000L * 7, &ret_ms) !=
            0)
        return 2;
    audit_config_t acfg = {.conninfo = cfg.db,
                           .db_wait_ms = cfg.db_wait_ms,
                           .statement_timeout_ms = cfg.statement_timeout_ms,
                           .checkpoint_interval_ms = (int)cp_ms,
                           .retention_interval_ms = (int)ret_ms,
                           .signing_key_file = default_key_file(keybuf, sizeof keybuf),
                           .kafka_brokers = getenv("LUMKEY_KAFKA_BROKERS"),
                           .kafka_topic = getenv("LUMKEY_KAFKA_TOPIC")};

    int rc = 1;
    lk_worker_t *worker = NULL;
    audit_t *audit = audit_new(&acfg);
    if (!audit) goto cleanup;
    lk_worker_opts_t opts = {.service = "audit",
                             .endpoint = cfg.endpoint,
                             .handler = audit_handle,
                             .ctx = audit,
                             .tick = audit_tick,
                             .tick_ms = 1000,
                             .batch_begin = audit_batch_begin,
                             .batch_commit = audit_batch_commit,
                             .batch_reply = audit_batch_reply,
                             .batch_reply_type = LK_MSG_AUDIT_REP};
    worker = lk_worker_new(&opts);
    if (worker && lk_worker_run(worker) == 0) rc = 0;
cleanup:
    lk_worker_destroy(&worker);
    audit_destroy(&audit);
    return rc;
}
