/*  edge_audit - the edge's side of the audit trail, apart from the request flow.
 *
 *  - Closing events (request.completed, request.denied, admin.*) are sent
 *    until audit acknowledges them: the event is encoded into a private copy,
 *    sent, and on a failure or timeout re-sent every 250 ms (audit stores it
 *    once: idempotent on the event id). A request's closing event waits up
 *    to 2 ms to go out with the next accept (edge_audit_send_closing). The copies are bounded
 *    (LUMKEY_EDGE_AUDIT_QUEUE_BYTES, 64 MiB): past that an event is dropped
 *    with an error log line and lumkey_edge_audit_dropped_total.
 *  - What audit said of each tenant's fail-open choice (AUDIT_REP fopen), so
 *    that a fail-open tenant's request still goes through when audit cannot
 *    record it: counted in lumkey_edge_audit_fail_open_total and logged.
 *  - The admin API's query strings for audit.* GET ops, turned into JSON, and
 *    the streaming export (page by page through audit.query, chunked).
 *  Single-threaded (the edge loop). Knows nothing of chat or HTTP answers.
 */
#ifndef EDGE_AUDIT_H
#define EDGE_AUDIT_H

#include "edge.h"
#include "lk_buf.h"
#include "lk_proto.h"

/* LUMKEY_AUDIT_MODE=off (benchmark only): the chat flow sends no request event; counted. */
int edge_audit_off(void);
void edge_audit_count_off(void);

/* Sends an AUDIT message until acknowledged (the message is copied). */
void edge_audit_send_reliable(const lk_msg_t *m);
/* The same for a request's closing event, which is not on any client's path:
 * it is kept (copied) and sent with the next "request.accepted" (the chat flow
 * calls edge_audit_flush just before sending one), or after 2 ms, or once 64
 * wait. Audit then commits it in the accept's group commit: one round trip
 * and one fsync for both, instead of a commit that the next accept queues
 * behind (issue 9: -260 us p50 one request at a time). */
void edge_audit_send_closing(const lk_msg_t *m);
/* Sends the deferred closing events now. */
void edge_audit_flush(void);
/* Closing events not yet acknowledged (deferred or in flight). */
size_t edge_audit_pending(void);

/* Remembers the tenant's fail-open setting as audit reported it. */
void edge_audit_learn(const char *tenant, int fail_open);
/* Whether tenant chose fail-open (as last reported by audit). */
int edge_audit_is_fail_open(const char *tenant);
/* A fail-open tenant's request went on without a confirmed accept event. */
void edge_audit_count_fail_open(const char *rid, const char *tenant);

/* The query string of req as a JSON object text in the request pool ("" if none). */
lk_str_t edge_audit_query_json(h2o_req_t *req);

/* GET /admin/v1/audit/export?from=&to=&format=jsonl|csv[&key=&decision=&model=&kind=]: streams
 * the range page by page (1000 events per audit.query call, chunked), after the
 * caller was authenticated as tenant / actor / role. Answers by itself. */
void edge_audit_export_start(h2o_req_t *req, const char *rid, lk_str_t tenant, lk_str_t actor, lk_str_t role);

/* Appends the edge_audit metrics to out. 0 / -1. */
int edge_audit_metrics_render(lk_buf_t *out) __attribute__((warn_unused_result));

#endif
