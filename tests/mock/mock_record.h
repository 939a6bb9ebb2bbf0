/*  mock_record - the last N requests lumkey-mock received, for test hooks.
 *
 *  A bounded ring shared by all loop threads (one mutex). Each entry is kept
 *  as ready-made JSON: {"seq","method","path","headers":{...},"body"} with
 *  every header (authorization included: that is how tests prove which
 *  credential reached the provider). Capacity 0 turns recording off and makes
 *  mock_record_add free (benchmarks).
 */
#ifndef MOCK_RECORD_H
#define MOCK_RECORD_H

#include <stddef.h>

#include <h2o.h>

#include "mock_sb.h"

/* 0 / -1 (out of memory). Call once, before the loop threads start. */
int mock_record_init(size_t capacity) __attribute__((warn_unused_result));
/* Copies what req carries (method, path, headers, body) into the ring. */
void mock_record_add(h2o_req_t *req);
/* Appends {"data":[...]} (oldest first, most recent last) to sb. */
void mock_record_dump(mock_sb_t *sb);
void mock_record_clear(void);
void mock_record_free(void);

#endif
