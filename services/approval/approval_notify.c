/*  approval_notify - the sender thread of hold notifications (see the header). */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "approval_notify.h"
#include "lk_db.h"
#include "lk_log.h"
#include "lk_util.h"

#define MAX_ATTEMPTS 12
#define SECRET_MAX   512

struct approval_notify {
    lk_db_t *db;
    pthread_t thread;
    int running;
    volatile int stop;
    char slack_base[512], slack_channel[128], webhook_url[1024], link_base[512];
    char *slack_token;    /* sodium memory; NULL = Slack off */
    uint8_t *webhook_key; /* sodium memory, decoded from whsec_; NULL = webhooks off */
    size_t webhook_key_len;
    uint8_t *link_key; /* sodium memory; NULL = links off */
    size_t link_key_len;
    long retry_base_ms;
};

/* --------------------------------------------------------------- settings -- */

/* Reads a secret file into sodium memory (trailing whitespace cut). NULL on failure (logged, no content). */
static char *read_secret(const char *path, const char *what, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        lk_log_error("cannot open the %s file", what);
        return NULL;
    }
    char *buf = sodium_malloc(SECRET_MAX + 1);
    size_t n = buf ? fread(buf, 1, SECRET_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n > SECRET_MAX) {
        lk_log_error("the %s file is empty or too long", what);
        if (buf) sodium_free(buf);
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void copy_env(char *out, size_t cap, const char *name, const char *dflt)
{
    const char *v = getenv(name);
    snprintf(out, cap, "%s", v && *v ? v : dflt);
}

static void *run(void *arg);

approval_notify_t *approval_notify_start(const char *conninfo, int statement_timeout_ms)
{
    approval_notify_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    copy_env(self->slack_base, sizeof self->slack_base, "LUMKEY_SLACK_API_BASE", "https://slack.com/api");
    copy_env(self->slack_channel, sizeof self->slack_channel, "LUMKEY_SLACK_CHANNEL", "");
    copy_env(self->webhook_url, sizeof self->webhook_url, "LUMKEY_APPROVAL_WEBHOOK_URL", "");
    copy_env(self->link_base, sizeof self->link_base, "LUMKEY_APPROVAL_LINK_BASE", "");
    const char *rb = getenv("LUMKEY_APPROVAL_RETRY_BASE_MS");
    self->retry_base_ms = rb && atol(rb) > 0 ? atol(rb) : 1000;
    const char *tf = getenv("LUMKEY_SLACK_BOT_TOKEN_FILE"),
               *wf = getenv("LUMKEY_APPROVAL_WEBHOOK_SECRET_FILE"),
               *lf = getenv("LUMKEY_APPROVAL_LINK_KEY_FILE");
    size_t n = 0;
    if (tf && *tf && self->slack_channel[0]) {
        self->slack_token = read_secret(tf, "Slack bot token", &n);
        if (!self->slack_token) goto fail;
    }
    if (wf && *wf && self->webhook_url[0]) {
        char *s = read_secret(wf, "webhook secret", &n);
        if (!s) goto fail;
        const char *b64 = strncmp(s, "whsec_", 6) == 0 ? s + 6 : s;
        self->webhook_key = sodium_malloc(SECRET_MAX);
        if (!self->webhook_key ||
            sodium_base642bin(self->webhook_key, SECRET_MAX, b64, strlen(b64), NULL, &self->webhook_key_len,
                              NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
            self->webhook_key_len < 16) {
            lk_log_error("the webhook secret must be whsec_ + base64 of at least 16 bytes");
            sodium_free(s);
            goto fail;
        }
        sodium_free(s);
    }
    if (lf && *lf && self->link_base[0]) {
        self->link_key = (uint8_t *)read_secret(lf, "link key", &self->link_key_len);
        if (!self->link_key || self->link_key_len < 32) {
            lk_log_error("the link key file must hold at least 32 bytes");
            goto fail;
        }
    }
    self->db = lk_db_new(conninfo, "lumkey-approval-notify", statement_timeout_ms);
    if (!self->db) goto fail;
    if (pthread_create(&self->thread, NULL, run, self) != 0) goto fail;
    self->running = 1;
    lk_log_info("notifications: slack %s, webhooks %s, links %s", self->slack_token ? "on" : "off",
                self->webhook_key ? "on" : "off", self->link_key ? "on" : "off");
    return self;
fail:
    approval_notify_stop(&self);
    return NULL;
}

void approval_notify_stop(approval_notify_t **self_p)
{
    if (!self_p || !*self_p) return;
    approval_notify_t *self = *self_p;
    self->stop = 1;
    if (self->running) pthread_join(self->thread, NULL);
    lk_db_destroy(&self->db);
    if (self->slack_token) sodium_free(self->slack_token);
    if (self->webhook_key) sodium_free(self->webhook_key);
    if (self->link_key) sodium_free(self->link_key);
    free(self);
    *self_p = NULL;
}

/* ------------------------------------------------------------------ links -- */

static void link_mac(const approval_notify_t *self, const char *msg, size_t n, char out[64])
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, self->link_key, self->link_key_len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)msg, n);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2base64(out, 64, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* The URL of a one-time link, or "" when links are off. */
static void link_url(const approval_notify_t *self, const char *hold, const char *action, int64_t exp_s,
                     char *out, size_t cap)
{
    out[0] = '\0';
    if (!self->link_key) return;
    char msg[160], mac[64];
    int n = snprintf(msg, sizeof msg, "%s.%s.%lld", hold, action, (long long)exp_s);
    if (n <= 0 || (size_t)n >= sizeof msg) return;
    link_mac(self, msg, (size_t)n, mac);
    if (strlen(self->link_base) + strlen(msg) + strlen(mac) + 24 > cap) return;
    memcpy(out, self->link_base, strlen(self->link_base) + 1);
    strcat(out, "/approvals/v1/links/");
    strcat(out, msg);
    strcat(out, ".");
    strcat(out, mac);
}

approval_link_rc_t approval_link_verify(const approval_notify_t *self, lk_str_t token, char *hold,
                                        int *approve)
{
    if (!self || !self->link_key || token.len == 0 || token.len > 200) return LINK_BAD;
    char t[201];
    memcpy(t, token.ptr, token.len);
    t[token.len] = '\0';
    char *mac = strrchr(t, '.');
    if (!mac) return LINK_BAD;
    *mac++ = '\0';
    char want[64];
    link_mac(self, t, strlen(t), want);
    if (strlen(mac) != strlen(want) || sodium_memcmp(mac, want, strlen(want)) != 0) return LINK_BAD;
    char *a = strchr(t, '.');
    char *e = a ? strchr(a + 1, '.') : NULL;
    if (!a || !e || (size_t)(a - t) >= 64) return LINK_BAD;
    *a++ = '\0';
    *e++ = '\0';
    if (strcmp(a, "approve") != 0 && strcmp(a, "reject") != 0) return LINK_BAD;
    if (atoll(e) <= lk_now_ms() / 1000) return LINK_EXPIRED;
    snprintf(hold, 64, "%s", t);
    *approve = strcmp(a, "approve") == 0;
    return LINK_OK;
}

/* ------------------------------------------------------------------- HTTP -- */

typedef struct {
    char data[8192];
    size_t len;
} sink_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    sink_t *s = ud;
    size_t take = size * n;
    if (take > sizeof s->data - 1 - s->len) take = sizeof s->data - 1 - s->len;
    memcpy(s->data + s->len, p, take);
    s->len += take;
    s->data[s->len] = '\0';
    return size * n;
}

/* POSTs body; returns the HTTP status (0 on a transport failure), the answer in sink, Retry-After in
 * *retry_s. */
static long post(const char *url, struct curl_slist *headers, const char *body, sink_t *sink, long *retry_s)
{
    CURL *h = curl_easy_init();
    if (!h) return 0;
    sink->len = 0;
    sink->data[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* 3xx is a failure (and no redirect to elsewhere) */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
    long status = 0;
    curl_off_t ra = 0;
    if (curl_easy_perform(h) == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0) *retry_s = (long)ra;
    }
    curl_easy_cleanup(h);
    return status;
}

/* ------------------------------------------------------------------ Slack -- */

static const char *status_word(const char *st)
{
    if (!strcmp(st, "approved")) return "Approved";
    if (!strcmp(st, "rejected")) return "Rejected";
    if (!strcmp(st, "timed_out")) return "Timed out (denied)";
    if (!strcmp(st, "abandoned")) return "Abandoned (the request went away)";
    return "Waiting for approval";
}

static const char *js(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* The Block Kit message of a hold: who, model, rule + reason, redacted excerpt; buttons while pending. */
static json_t *slack_message(json_t *hold, const char *channel, const char *ts)
{
    char head[1200], text[300];
    const char *st = js(hold, "status");
    int pending = strcmp(st, "pending") == 0;
    snprintf(text, sizeof text, "%s: %s request held by Lumkey (%s)", status_word(st),
             strcmp(js(hold, "kind"), "answer") ? "a" : "a tool call in an answer to a", js(hold, "id"));
    snprintf(head, sizeof head,
             "*%s* `%s`\n*Who:* user `%s`, key `%s`%s%s\n*Model:* `%s`\n*Rule:* `%s` %s%s%s%s%s",
             status_word(st), js(hold, "id"), js(hold, "user"), js(hold, "key_id"),
             *js(hold, "agent") ? ", agent " : "", js(hold, "agent"), js(hold, "model"), js(hold, "rule_id"),
             js(hold, "reason"), *js(hold, "tool") ? "\n*Tool:* `" : "", js(hold, "tool"),
             *js(hold, "tool") ? "`" : "", pending ? "" : "");
    json_t *blocks = json_array();
    json_array_append_new(
        blocks, json_pack("{s:s,s:{s:s,s:s}}", "type", "section", "text", "type", "mrkdwn", "text", head));
    if (*js(hold, "excerpt"))
        json_array_append_new(blocks, json_pack("{s:s,s:[{s:s,s:s}]}", "type", "context", "elements", "type",
                                                "plain_text", "text", js(hold, "excerpt")));
    if (pending) {
        json_t *approve =
            json_pack("{s:s,s:{s:s,s:s},s:s,s:s,s:s}", "type", "button", "text", "type", "plain_text", "text",
                      "Approve", "action_id", "lumkey_approve", "value", js(hold, "id"), "style", "primary");
        json_t *reject = json_pack(
            "{s:s,s:{s:s,s:s},s:s,s:s,s:s,s:{s:{s:s,s:s},s:{s:s,s:s},s:{s:s,s:s},s:{s:s,s:s}}}", "type",
            "button", "text", "type", "plain_text", "text", "Reject", "action_id", "lumkey_reject", "value",
            js(hold, "id"), "style", "danger", "confirm", "title", "type", "plain_text", "text",
            "Reject this request?", "text", "type", "plain_text", "text", "The agent gets a 403.", "confirm",
            "type", "plain_text", "text", "Reject", "deny", "type", "plain_text", "text", "Cancel");
        json_array_append_new(blocks, json_pack("{s:s,s:s,s:[o,o]}", "type", "actions", "block_id",
                                                "lumkey_hold", "elements", approve, reject));
    } else {
        char done[300];
        snprintf(done, sizeof done, "%s%s%s%s%s", status_word(st), *js(hold, "decided_by") ? " by " : "",
                 js(hold, "decided_by"), *js(hold, "decision_reason") ? ": " : "",
                 js(hold, "decision_reason"));
        json_array_append_new(blocks, json_pack("{s:s,s:{s:s,s:s}}", "type", "section", "text", "type",
                                                "mrkdwn", "text", done));
    }
    json_t *m = json_pack("{s:s,s:s,s:o}", "channel", channel, "text", text, "blocks", blocks);
    if (ts && *ts) json_object_set_new(m, "ts", json_string(ts));
    return m;
}

/* ---------------------------------------------------------------- sender -- */

enum { SENT = 0, RETRY = 1, GIVE_UP = 2, DISABLE = 3, SKIP = 4, WAIT = 5 };

static int send_slack(approval_notify_t *self, const char *hold_id, const char *event, json_t *hold,
                      const char *channel, const char *ts, char *err, size_t errcap, long *retry_s)
{
    if (!self->slack_token) return SKIP;
    int created = strcmp(event, "hold.created") == 0;
    if (!created && !*ts) return WAIT; /* the post has not gone out yet */
    json_t *m = slack_message(hold, created ? self->slack_channel : channel, created ? NULL : ts);
    char *body = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    if (!body) return RETRY;
    char url[600], auth[SECRET_MAX + 32];
    snprintf(url, sizeof url, "%s/%s", self->slack_base, created ? "chat.postMessage" : "chat.update");
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", self->slack_token);
    struct curl_slist *hd = curl_slist_append(NULL, auth);
    hd = curl_slist_append(hd, "Content-Type: application/json; charset=utf-8");
    sink_t *sink = malloc(sizeof *sink);
    long status = sink ? post(url, hd, body, sink, retry_s) : 0;
    curl_slist_free_all(hd);
    sodium_memzero(auth, sizeof auth);
    free(body);
    int rc = RETRY;
    json_t *ans = status == 200 ? json_loads(sink->data, 0, NULL) : NULL;
    if (status != 200) {
        snprintf(err, errcap, "HTTP %ld", status);
    } else if (!json_is_true(json_object_get(ans, "ok"))) {
        snprintf(err, errcap, "slack: %.60s", js(ans, "error"));
    } else {
        rc = SENT;
        if (created) {
            lk_db_params_t p;
            lk_db_params_init(&p);
            lk_db_param_cstr(&p, hold_id);
            lk_db_param_cstr(&p, js(ans, "channel"));
            lk_db_param_cstr(&p, js(ans, "ts"));
            if (lk_db_exec(self->db, "slack_posted", &p, NULL) != LK_DB_OK) rc = RETRY;
        }
    }
    json_decref(ans);
    free(sink);
    return rc;
}

static int send_webhook(approval_notify_t *self, const char *msg_id, const char *event, json_t *hold,
                        int64_t exp_s, char *err, size_t errcap, long *retry_s)
{
    if (!self->webhook_key) return SKIP;
    char ts[24], iso[32];
    time_t now = time(NULL);
    snprintf(ts, sizeof ts, "%lld", (long long)now);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_t *data = json_deep_copy(hold);
    if (strcmp(event, "hold.created") == 0 && self->link_key) {
        char a[1024], r[1024];
        link_url(self, js(hold, "id"), "approve", exp_s, a, sizeof a);
        link_url(self, js(hold, "id"), "reject", exp_s, r, sizeof r);
        json_object_set_new(data, "approve_url", json_string(a));
        json_object_set_new(data, "reject_url", json_string(r));
    }
    json_t *ev = json_pack("{s:s,s:s,s:o}", "type", event, "timestamp", iso, "data", data);
    char *body = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!body) return RETRY;
    /* v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")) */
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, self->webhook_key, self->webhook_key_len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)msg_id, strlen(msg_id));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)body, strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
    char sig[80], h1[128], h2[64], h3[128];
    sodium_bin2base64(sig, sizeof sig, mac, sizeof mac, sodium_base64_VARIANT_ORIGINAL);
    snprintf(h1, sizeof h1, "webhook-id: %s", msg_id);
    snprintf(h2, sizeof h2, "webhook-timestamp: %s", ts);
    snprintf(h3, sizeof h3, "webhook-signature: v1,%s", sig);
    struct curl_slist *hd = curl_slist_append(NULL, h1);
    hd = curl_slist_append(hd, h2);
    hd = curl_slist_append(hd, h3);
    hd = curl_slist_append(hd, "Content-Type: application/json");
    sink_t *sink = malloc(sizeof *sink);
    long status = sink ? post(self->webhook_url, hd, body, sink, retry_s) : 0;
    curl_slist_free_all(hd);
    free(sink);
    free(body);
    if (status >= 200 && status <= 299) return SENT;
    snprintf(err, errcap, "HTTP %ld", status);
    return status == 410 ? DISABLE : RETRY;
}

static const char SQL_CLAIM[] =
    "UPDATE hold_deliveries d SET next_at = now() + interval '30 seconds', attempts = attempts + 1 "
    "WHERE d.id IN (SELECT id FROM hold_deliveries WHERE status = 'pending' AND next_at <= now() "
    "ORDER BY next_at LIMIT 16 FOR UPDATE SKIP LOCKED) RETURNING d.id, d.hold_id, d.channel, d.event, "
    "d.attempts";

/* One delivery: send, then record the outcome. */
static void deliver(approval_notify_t *self, const char *id, const char *hold_id, const char *channel,
                    const char *event, int attempts)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, hold_id);
    PGresult *res = NULL;
    if (lk_db_exec(self->db, "hold_for_notify", &p, &res) != LK_DB_OK) return; /* the lease retries it */
    if (PQntuples(res) != 1) {
        PQclear(res);
        return;
    }
    json_t *hold = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    char sch[128], sts[64];
    snprintf(sch, sizeof sch, "%s", PQgetvalue(res, 0, 1));
    snprintf(sts, sizeof sts, "%s", PQgetvalue(res, 0, 2));
    int64_t exp_s = atoll(PQgetvalue(res, 0, 3));
    PQclear(res);
    char err[100] = "";
    long retry_s = 0;
    int rc = !hold ? RETRY
             : strcmp(channel, "slack") == 0
                 ? send_slack(self, hold_id, event, hold, sch, sts, err, sizeof err, &retry_s)
                 : send_webhook(self, id, event, hold, exp_s, err, sizeof err, &retry_s);
    json_decref(hold);
    if ((rc == RETRY || rc == WAIT) && attempts >= MAX_ATTEMPTS) rc = GIVE_UP;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    const char *st = rc == SENT      ? "delivered"
                     : rc == GIVE_UP ? "failed"
                     : rc == DISABLE ? "disabled"
                     : rc == SKIP    ? "skipped"
                                     : "pending";
    lk_db_param_cstr(&p, st);
    /* backoff: base * 2^(attempts-1), capped at 10 min, plus up to 50 % jitter; Retry-After wins if later */
    int64_t delay = self->retry_base_ms << (attempts - 1 < 16 ? attempts - 1 : 16);
    if (delay > 600000) delay = 600000;
    delay += (int64_t)randombytes_uniform((uint32_t)(delay / 2 + 1));
    if (retry_s * 1000 > delay) delay = retry_s * 1000 > 3600000 ? 3600000 : retry_s * 1000;
    lk_db_param_i64(&p, delay);
    lk_db_param_cstr(&p, err);
    if (lk_db_exec(self->db, "delivery_done", &p, NULL) != LK_DB_OK) return;
    if (rc == SENT)
        lk_log_info("%s %s for %s delivered (attempt %d)", channel, event, hold_id, attempts);
    else if (rc != SKIP)
        lk_log_warn("%s %s for %s: %s (attempt %d, %s)", channel, event, hold_id, err[0] ? err : "not yet",
                    attempts, st);
}

static void *run(void *arg)
{
    approval_notify_t *self = arg;
    if (lk_db_prepare(self->db, "claim", SQL_CLAIM) != 0 ||
        lk_db_prepare(
            self->db, "hold_for_notify",
            "SELECT json_build_object('id', id, 'status', status, 'kind', kind, 'key_id', key_id, "
            "'user', requester, 'agent', agent, 'model', model, 'policy_id', policy_id, "
            "'policy_version', policy_version, 'rule_id', rule_id, 'reason', reason, 'tool', tool, "
            "'excerpt', excerpt, 'expires_at', to_char(expires_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'decided_by', decided_by, 'decision_reason', "
            "decision_reason)::text, slack_channel, slack_ts, extract(epoch FROM expires_at)::bigint "
            "FROM holds WHERE id = $1::text") != 0 ||
        lk_db_prepare(self->db, "slack_posted",
                      "UPDATE holds SET slack_channel = $2::text, slack_ts = $3::text WHERE id = $1::text") !=
            0 ||
        lk_db_prepare(self->db, "delivery_done",
                      "UPDATE hold_deliveries SET status = $2::text, last_error = $4::text, "
                      "delivered_at = CASE WHEN $2::text = 'delivered' THEN now() END, "
                      "next_at = now() + $3::bigint * interval '1 millisecond' WHERE id = $1::text") != 0) {
        lk_log_error("notifications: cannot prepare statements");
        return NULL;
    }
    if (lk_db_connect(self->db, 1000) != 0) lk_log_warn("notifications: database not reachable yet");
    while (!self->stop) {
        PGresult *res = NULL;
        int n = 0;
        if (lk_db_exec(self->db, "claim", NULL, &res) == LK_DB_OK) {
            n = PQntuples(res);
            for (int i = 0; i < n && !self->stop; i++)
                deliver(self, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                        PQgetvalue(res, i, 3), atoi(PQgetvalue(res, i, 4)));
            PQclear(res);
        }
        if (n == 0) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}
