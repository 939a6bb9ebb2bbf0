/*  ctl_holds - `lumkeyctl holds ...`: held requests waiting for a human.
 *
 *      holds list [--status S] [--watch]   table of holds (newest first); --watch
 *                                          redraws every 2 s until interrupted
 *      holds show ID
 *      holds approve ID [--reason R]
 *      holds reject ID --reason R
 *
 *  Calls /admin/v1/holds[/ID[/approve|/reject]] on the edge (role approver
 *  or admin). A decision is taken once: a second one fails with HTTP 409.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

static const ctl_column_t HOLD_COLS[] = {{"ID", "id"},
                                         {"STATUS", "status"},
                                         {"KIND", "kind"},
                                         {"KEY", "key_id"},
                                         {"USER", "user"},
                                         {"MODEL", "model"},
                                         {"RULE", "rule_id"},
                                         {"REASON", "reason"},
                                         {"EXPIRES", "expires_at"},
                                         {"DECIDED BY", "decided_by"}};

static const char *const HOLD_FIELDS[] = {
    "id",         "status",     "kind",           "key_id",          "user",
    "agent",      "model",      "rule_id",        "reason",          "tool",
    "excerpt",    "policy_id",  "policy_version", "digest",          "created_at",
    "expires_at", "decided_at", "decided_by",     "decision_reason", NULL};

static int valid_status(const char *s)
{
    static const char *const ok[] = {"pending", "approved", "rejected", "timed_out", "abandoned", NULL};
    for (size_t i = 0; ok[i]; i++)
        if (strcmp(s, ok[i]) == 0) return 1;
    return 0;
}

static int list_once(ctl_t *c, const char *status)
{
    ctl_http_response_t res;
    json_t *out;
    int rc = admin_call(c, "GET", "/admin/v1/holds", NULL, &res, &out);
    if (rc == 0) {
        json_t *data = json_object_get(out, "data");
        if (!json_is_array(data)) {
            fprintf(stderr, "lumkeyctl: %s answered without a data array\n", c->addr);
            rc = EXIT_FAIL;
        } else {
            json_t *rows = json_array();
            size_t i;
            json_t *row;
            json_array_foreach(data, i, row)
            {
                const char *st = json_string_value(json_object_get(row, "status"));
                if (!status || (st && strcmp(st, status) == 0)) json_array_append(rows, row);
            }
            if (c->json) {
                json_t *wrap = json_pack("{s:O}", "data", rows);
                char *text = wrap ? json_dumps(wrap, JSON_COMPACT) : NULL;
                if (text) puts(text);
                ctl_out_json_free(text);
                json_decref(wrap);
            } else {
                ctl_out_table(stdout, HOLD_COLS, sizeof HOLD_COLS / sizeof HOLD_COLS[0], rows);
            }
            json_decref(rows);
        }
    }
    json_decref(out);
    ctl_http_response_free(&res);
    return rc;
}

static int holds_list(ctl_t *c)
{
    static const char *const allowed[] = {"status", "watch", NULL};
    if (check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    const char *status = opt(c, "status");
    if (status && !valid_status(status)) return usage_error("--status: '%s' is not a hold status", status);
    int rc = load_token(c);
    if (rc != EXIT_OK) return rc;
    if (!opt(c, "watch")) return list_once(c, status);
    for (;;) { /* until interrupted (or the edge says no) */
        time_t now = time(NULL);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        printf("--- holds at %s\n", when);
        rc = list_once(c, status);
        fflush(stdout);
        if (rc != EXIT_OK) return rc;
        struct timespec ts = {2, 0};
        nanosleep(&ts, NULL);
    }
}

static int holds_decide(ctl_t *c, int approve)
{
    static const char *const allowed[] = {"reason", NULL};
    const char *id = object_id(c, "hold_");
    if (id == NULL || check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    const char *reason = opt(c, "reason");
    if (!approve && (!reason || !*reason)) return usage_error("holds reject needs --reason R");
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/holds/%s/%s", id, approve ? "approve" : "reject");
    json_t *req = json_pack("{s:s}", "reason", reason ? reason : "");
    int rc = object_call(c, "POST", path, req, HOLD_FIELDS);
    json_decref(req);
    return rc;
}

int ctl_holds(ctl_t *c, const char *b)
{
    if (b == NULL) return usage_error("'holds' needs a subcommand: list, show, approve or reject");
    if (strcmp(b, "list") == 0) return holds_list(c);
    if (strcmp(b, "approve") == 0) return holds_decide(c, 1);
    if (strcmp(b, "reject") == 0) return holds_decide(c, 0);
    if (strcmp(b, "show") == 0) {
        const char *id = object_id(c, "hold_");
        if (id == NULL || check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
        char path[128];
        snprintf(path, sizeof path, "/admin/v1/holds/%s", id);
        return object_call(c, "GET", path, NULL, HOLD_FIELDS);
    }
    return usage_error("unknown command '%s'", b);
}
