/*  lumkey-approval - holds for human approval (proto/approval.md).
 *
 *  Settings (environment, or the --flag in brackets): LUMKEY_DB [--db],
 *  LUMKEY_APPROVAL_ENDPOINT [--endpoint] (ipc://$LUMKEY_RUN_DIR/approval.ipc),
 *  LUMKEY_DB_WAIT_MS, LUMKEY_DB_STATEMENT_TIMEOUT_MS,
 *  LUMKEY_APPROVAL_TIMEOUT_MS (300000: a HOLD without tmo),
 *  LUMKEY_APPROVAL_MAX_TIMEOUT_MS (3600000), LUMKEY_APPROVAL_ABANDON_MS
 *  (10000: a hold nobody polled for this long is abandoned); notifications:
 *  see approval_notify.h (Slack, webhooks, one-time links).
 *
 *  The worker's idempotency cache is off: HOLD_WAIT polls repeat the same
 *  request and must see the current outcome, and HOLD is idempotent by
 *  itself (it joins the open hold).
 */
#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "approval.h"
#include "lk_config.h"
#include "lk_log.h"
#include "lk_worker.h"

static const char USAGE[] =
    "usage: lumkey-approval [--db CONNINFO] [--endpoint EP]\n"
    "  LUMKEY_DB, LUMKEY_APPROVAL_ENDPOINT (ipc://$LUMKEY_RUN_DIR/approval.ipc),\n"
    "  LUMKEY_DB_WAIT_MS (10000), LUMKEY_DB_STATEMENT_TIMEOUT_MS (5000),\n"
    "  LUMKEY_APPROVAL_TIMEOUT_MS (300000), LUMKEY_APPROVAL_MAX_TIMEOUT_MS (3600000),\n"
    "  LUMKEY_APPROVAL_ABANDON_MS (10000)\n"
    "  LUMKEY_SLACK_API_BASE, LUMKEY_SLACK_BOT_TOKEN_FILE, LUMKEY_SLACK_CHANNEL,\n"
    "  LUMKEY_APPROVAL_WEBHOOK_URL, LUMKEY_APPROVAL_WEBHOOK_SECRET_FILE,\n"
    "  LUMKEY_APPROVAL_LINK_KEY_FILE, LUMKEY_APPROVAL_LINK_BASE, LUMKEY_APPROVAL_RETRY_BASE_MS (1000)\n";

int main(int argc, char **argv)
{
    lk_log_init("approval");
    if (sodium_init() < 0) {
        lk_log_error("libsodium failed to initialise");
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        lk_log_error("libcurl failed to initialise");
        return 1;
    }
    if (lk_config_has(argc, argv, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    lk_config_worker_t cfg;
    long tmo, max_tmo, abandon;
    if (lk_config_worker(&cfg, "approval", argc, argv, NULL, NULL) != 0 ||
        lk_config_get_int(argc, argv, NULL, "LUMKEY_APPROVAL_TIMEOUT_MS", 300000, 86400000L, &tmo) != 0 ||
        lk_config_get_int(argc, argv, NULL, "LUMKEY_APPROVAL_MAX_TIMEOUT_MS", 3600000, 86400000L, &max_tmo) !=
            0 ||
        lk_config_get_int(argc, argv, NULL, "LUMKEY_APPROVAL_ABANDON_MS", 10000, 86400000L, &abandon) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (cfg.health) return lk_worker_health("approval", cfg.endpoint, 2000);
    lk_log_to_stdout(); /* serving from here on: every log line on stdout */

    int rc = 1;
    lk_worker_t *worker = NULL;
    approval_opts_t opts = {.default_timeout_ms = tmo, .max_timeout_ms = max_tmo, .abandon_ms = abandon};
    approval_t *approval = approval_new(cfg.db, cfg.db_wait_ms, cfg.statement_timeout_ms, &opts);
    if (!approval) goto cleanup;
    lk_worker_opts_t wopts = {.service = "approval",
                              .endpoint = cfg.endpoint,
                              .handler = approval_handle,
                              .ctx = approval,
                              .tick = approval_tick,
                              .tick_ms = 500,
                              .cache_ttl_ms = -1};
    worker = lk_worker_new(&wopts);
    if (worker && lk_worker_run(worker) == 0) rc = 0;
cleanup:
    lk_worker_destroy(&worker);
    approval_destroy(&approval);
    curl_global_cleanup();
    return rc;
}
