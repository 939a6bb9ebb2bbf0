/*  approval_notify - delivers hold notifications from the hold_deliveries
 *  outbox (migration 0016): Slack chat.postMessage / chat.update and
 *  Standard Webhooks (https://www.standardwebhooks.com).
 *
 *  Runs in its own thread with its own database connection and blocking
 *  libcurl calls (5 s timeout each), so HTTP never delays the worker's
 *  request handling. Rows are claimed with a lease (FOR UPDATE SKIP LOCKED,
 *  next_at pushed 30 s ahead), so two replicas never send the same delivery
 *  at once, and a delivery whose sender died is retried after the lease.
 *  Failures retry with exponential backoff + jitter (Retry-After honoured),
 *  up to 12 attempts; a webhook answering 410 is not retried. Also signs and
 *  verifies the one-time approve / reject links. Secrets (bot token, webhook
 *  secret, link key) live in sodium memory and are never logged.
 */
#ifndef APPROVAL_NOTIFY_H
#define APPROVAL_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#include "lk_str.h"

typedef struct approval_notify approval_notify_t;

/* Reads the settings from the environment:
 *   LUMKEY_SLACK_API_BASE (https://slack.com/api), LUMKEY_SLACK_BOT_TOKEN_FILE,
 *   LUMKEY_SLACK_CHANNEL (Slack is on when both are set);
 *   LUMKEY_APPROVAL_WEBHOOK_URL, LUMKEY_APPROVAL_WEBHOOK_SECRET_FILE (whsec_...);
 *   LUMKEY_APPROVAL_LINK_KEY_FILE (>= 32 bytes), LUMKEY_APPROVAL_LINK_BASE
 *   (the edge's public URL: links are on when both are set);
 *   LUMKEY_APPROVAL_RETRY_BASE_MS (1000).
 * Starts the sender thread (a delivery to a channel that is off is marked
 * skipped). NULL on a bad setting (logged). */
approval_notify_t *approval_notify_start(const char *conninfo, int statement_timeout_ms);
/* Stops the thread, wipes the secrets. NULL-safe; nullifies *self_p. */
void approval_notify_stop(approval_notify_t **self_p);

typedef enum { LINK_OK = 0, LINK_BAD = -1, LINK_EXPIRED = -2 } approval_link_rc_t;

/* Checks a link token "<hold id>.<approve|reject>.<exp unix s>.<mac>": the
 * MAC (constant time) and the expiry. On LINK_OK, hold (NUL-terminated, cap
 * 64) and *approve are set. LINK_BAD when links are off. */
approval_link_rc_t approval_link_verify(const approval_notify_t *self, lk_str_t token, char *hold,
                                        int *approve);

#endif
