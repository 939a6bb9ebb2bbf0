/*  edge_slack - where approvers' decisions come in on the API listener:
 *
 *      POST /slack/interactivity          Slack block_actions (Approve / Reject)
 *      GET|POST /approvals/v1/links/TOKEN one-time approve / reject links
 *
 *  Both turn into ADMIN_REQ holds.decide / holds.redeem_link (role "edge") to
 *  the approval worker, which takes a decision once. Slack requests are
 *  verified first (v0 HMAC-SHA256 over "v0:ts:body" with the signing secret,
 *  five-minute window, constant-time compare); link tokens are verified by
 *  the worker (it holds the link key). Knows nothing of holds' storage.
 */
#ifndef EDGE_SLACK_H
#define EDGE_SLACK_H

#include <h2o.h>

/* Reads LUMKEY_SLACK_SIGNING_SECRET_FILE (optional: without it the Slack
 * endpoint answers 404) and LUMKEY_APPROVAL_TENANT (default "default": the
 * tenant whose holds Slack and links decide). 0 / -1 (logged). */
int edge_slack_init(void) __attribute__((warn_unused_result));
int edge_slack_on_req(h2o_handler_t *handler, h2o_req_t *req);
int edge_links_on_req(h2o_handler_t *handler, h2o_req_t *req);

#endif
