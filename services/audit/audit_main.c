/*  lumkey-audit - records audit events (the only writer of audit tables).
 *
 *  Settings (environment, or the --flag in brackets): LUMKEY_DB [--db],
 *  LUMKEY_AUDIT_ENDPOINT [--endpoint] (default ipc://$LUMKEY_RUN_DIR/audit.ipc),
 *  LUMKEY_DB_WAIT_MS, LUMKEY_DB_STATEMENT_TIMEOUT_MS.
 */
#include <sodium.h>
#include <stdio.h>

#include "audit.h"
#include "lk_config.h"
#include "lk_log.h"
#include "lk_worker.h"

static const char USAGE[] = "usage: lumkey-audit [--db CONNINFO] [--endpoint EP]\n"
                            "  LUMKEY_DB, LUMKEY_AUDIT_ENDPOINT (ipc://$LUMKEY_RUN_DIR/audit.ipc),\n"
                            "  LUMKEY_DB_WAIT_MS (10000), LUMKEY_DB_STATEMENT_TIMEOUT_MS (5000)\n";

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
    lk_config_worker_t cfg;
    if (lk_config_worker(&cfg, "audit", argc, argv, NULL, NULL) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (cfg.health) return lk_worker_health("audit", cfg.endpoint, 2000);

    int rc = 1;
    lk_worker_t *worker = NULL;
    audit_t *audit = audit_new(cfg.db, cfg.db_wait_ms, cfg.statement_timeout_ms);
    if (!audit) goto cleanup;
    lk_worker_opts_t opts = {.service = "audit",
                             .endpoint = cfg.endpoint,
                             .handler = audit_handle,
                             .ctx = audit,
                             .batch_begin = audit_batch_begin,
                             .batch_commit = audit_batch_commit};
    worker = lk_worker_new(&opts);
    if (worker && lk_worker_run(worker) == 0) rc = 0;
cleanup:
    lk_worker_destroy(&worker);
    audit_destroy(&audit);
    return rc;
}
