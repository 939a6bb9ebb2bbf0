/*  lumkey-policy - authenticates keys, checks their scope and routes requests.
 *
 *  Settings (environment, or the --flag in brackets): LUMKEY_DB [--db],
 *  LUMKEY_POLICY_ENDPOINT [--endpoint] (default ipc://$LUMKEY_RUN_DIR/policy.ipc),
 *  LUMKEY_DB_WAIT_MS, LUMKEY_DB_STATEMENT_TIMEOUT_MS, LUMKEY_POLICY_REPLICA_ID (this process's
 *  name in anomaly_baselines; default: random per start), LUMKEY_ANOMALY_MAX_SUBJECTS (20000).
 *  LUMKEY_CACHE_MAX_AGE_MS (policy_cache.h).
 */
#include <sodium.h>
#include <stdio.h>

#include "lk_config.h"
#include "lk_log.h"
#include "lk_worker.h"
#include "policy.h"

static const char USAGE[] = "usage: lumkey-policy [--db CONNINFO] [--endpoint EP]\n"
                            "  LUMKEY_DB, LUMKEY_POLICY_ENDPOINT (ipc://$LUMKEY_RUN_DIR/policy.ipc),\n"
                            "  LUMKEY_DB_WAIT_MS (10000), LUMKEY_DB_STATEMENT_TIMEOUT_MS (5000),\n"
                            "  LUMKEY_POLICY_REPLICA_ID (anomaly baselines; default: random per start)\n"
                            "  LUMKEY_CACHE_MAX_AGE_MS (1000; 0 = no DECIDE cache)\n";

int main(int argc, char **argv)
{
    lk_log_init("policy");
    if (sodium_init() < 0) {
        lk_log_error("libsodium failed to initialise");
        return 1;
    }
    if (lk_config_has(argc, argv, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    lk_config_worker_t cfg;
    if (lk_config_worker(&cfg, "policy", argc, argv, NULL, NULL) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (cfg.health) return lk_worker_health("policy", cfg.endpoint, 2000);
    lk_log_to_stdout(); /* serving from here on: every log line on stdout */

    int rc = 1;
    lk_worker_t *worker = NULL;
    policy_t *policy = policy_new(cfg.db, cfg.db_wait_ms, cfg.statement_timeout_ms);
    if (!policy) goto cleanup;
    lk_worker_opts_t opts = {.service = "policy",
                             .endpoint = cfg.endpoint,
                             .handler = policy_handle,
                             .ctx = policy,
                             .tick = policy_tick,
                             .tick_ms = 1000};
    worker = lk_worker_new(&opts);
    if (worker && lk_worker_run(worker) == 0) rc = 0;
cleanup:
    lk_worker_destroy(&worker);
    policy_destroy(&policy);
    return rc;
}
