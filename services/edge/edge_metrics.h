/*  edge_metrics - the edge's Prometheus metrics (text exposition format 0.0.4).
 *
 *  One prefix (lumkey_edge_), base units (seconds), _total counters, _seconds
 *  histograms, low-cardinality labels only (endpoint, decision, status code,
 *  service). Single-threaded like the rest of the edge loop.
 *
 *  Not here yet, by design: the audit backlog and Kafka delivery errors belong
 *  to the audit worker (it owns the producer), which is to export them; held
 *  requests are a gauge that stays 0 until approvals hold requests.
 */
#ifndef EDGE_METRICS_H
#define EDGE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "edge_rpc.h"
#include "lk_buf.h"

/* A finished agent request: endpoint ("chat.completions"), decision ("allow",
 * "deny", ...; NULL = "none"), HTTP status, and its duration. */
void edge_metrics_request(const char *endpoint, const char *decision, int status, double seconds);
/* Time from sending the provider request to its response head. */
void edge_metrics_upstream(double seconds);
/* A worker call: its reply time, or a timeout (seconds < 0). */
void edge_metrics_call(edge_svc_t svc, double seconds);

/* Agent requests begun (edge stats) and not yet finished: what SIGTERM waits for. */
uint64_t edge_metrics_inflight(void);

/* Requests (or answers) waiting for a human decision right now: +1 / -1. */
void edge_metrics_held_add(int delta);
uint64_t edge_metrics_held(void);

/* Appends the whole exposition to out. 0 / -1 (out of memory). */
int edge_metrics_render(lk_buf_t *out) __attribute__((warn_unused_result));

#endif
