/*  lumkey-approval - holds for human approval.
 *
 *  No hold exists yet: every HOLD is answered NO_HOLD ("nothing to hold, go
 *  on"), over the real protocol, so the edge's hold path runs end to end.
 *  Holds, their storage and Slack / webhook notifications come later.
 *
 *  Settings (environment, or the --flag in brackets): LUMKEY_APPROVAL_ENDPOINT
 *  [--endpoint] (default ipc://$LUMKEY_RUN_DIR/approval.ipc). LUMKEY_DB is read
 *  but not used yet.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "lk_config.h"
#include "lk_log.h"
#include "lk_worker.h"

static const char USAGE[] = "usage: lumkey-approval [--endpoint EP]\n"
                            "  LUMKEY_APPROVAL_ENDPOINT (ipc://$LUMKEY_RUN_DIR/approval.ipc)\n";

static int approval_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    (void)ctx;
    (void)scratch;
    if (req->env.type != LK_MSG_HOLD)
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "approval does not handle this message type");
    rep->u.hold_rep.outcome = LK_HOLD_NO_HOLD;
    return 0;
}

int main(int argc, char **argv)
{
    lk_log_init("approval");
    if (sodium_init() < 0) {
        lk_log_error("libsodium failed to initialise");
        return 1;
    }
    static const char *const with_value[] = {"endpoint", "db", NULL};
    static const char *const switches[] = {"help", "health", NULL};
    if (lk_config_has(argc, argv, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    char endpoint[512];
    if (lk_config_load_file() != 0 || lk_config_check_args(argc, argv, with_value, switches) != 0 ||
        lk_config_bind("approval", argc, argv, endpoint, sizeof endpoint) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (lk_config_has(argc, argv, "health")) return lk_worker_health("approval", endpoint, 2000);

    int rc = 1;
    lk_worker_opts_t opts = {.service = "approval", .endpoint = endpoint, .handler = approval_handle};
    lk_worker_t *worker = lk_worker_new(&opts);
    if (worker && lk_worker_run(worker) == 0) rc = 0;
    lk_worker_destroy(&worker);
    return rc;
}
