/*  edge_http - answers in the API's own shape, and request helpers.
 *
 *  Every answer carries x-request-id. Errors use OpenAI's shape
 *  {"error":{"message","type","param","code"}}; denials (4xx other than 408,
 *  409, 429) carry x-should-retry: false so the SDKs do not retry them.
 */
#ifndef EDGE_HTTP_H
#define EDGE_HTTP_H

#include <h2o.h>

#include "lk_proto.h"

/* Sends a complete JSON answer (body copied). */
void edge_http_send_json(h2o_req_t *req, int status, const char *rid, const char *body, size_t len);
/* Same, and the body copy is wiped when the request ends (for shown-once secrets). */
void edge_http_send_json_secret(h2o_req_t *req, int status, const char *rid, const char *body, size_t len);
/* OpenAI-shaped error. type e.g. "invalid_request_error"; code may be NULL. */
void edge_http_send_error(h2o_req_t *req, int status, const char *rid, const char *type, const char *code,
                          const char *message);
/* Adds x-request-id (and x-should-retry for non-retryable statuses) to req->res. */
void edge_http_add_common_headers(h2o_req_t *req, int status, const char *rid);
/* Standard reason phrase for a status ("" if unknown). */
const char *edge_http_reason(int status);
/* HTTP status for a worker status code. */
int edge_http_status_of(lk_status_t st);
/* OpenAI error type for an HTTP status. */
const char *edge_http_error_type(int status);

/* Returns the value of the header name (lower case), or {NULL,0}. Rejects
 * (returns {NULL,0} and sets *dup) when the header appears more than once. */
h2o_iovec_t edge_http_header(h2o_req_t *req, const char *name, int *dup);
/* HTTP/1 framing check on the raw request head (h2o drops Content-Length and
 * Transfer-Encoding from req->headers, taking the first or last one): refuses
 * a duplicate Content-Length, Content-Length together with Transfer-Encoding,
 * more than one Transfer-Encoding, folded lines, and control characters in
 * header values. Returns NULL when the head is clean, else a reason (static
 * string) and marks the connection to close after the answer. */
const char *edge_http_framing_error(h2o_req_t *req);
/* Extracts the presented key from Authorization: Bearer or x-api-key. */
h2o_iovec_t edge_http_bearer(h2o_req_t *req);
/* The peer address as text into buf. */
void edge_http_peer(h2o_req_t *req, char *buf, size_t cap);

#endif
